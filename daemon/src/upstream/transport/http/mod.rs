//! Remote upstreams: the streamable HTTP transport (MCP 2025-11-25) and the legacy HTTP+SSE
//! transport (2024-11-05), behind the same [`Event`] interface as a child process.
//!
//! One [`HttpTransport`] is one connection to one server: one `reqwest` client (connection
//! reuse, HTTP/2 where TLS offers it), one MCP session. Inside it:
//!
//! - the *dispatcher* task takes the lines the actor queued, in order. `initialize` and
//!   notifications and responses are POSTed one after the other (a server must see
//!   `notifications/initialized` before the requests that follow it); each request gets a task
//!   of its own that reads its answer, a JSON body or an SSE stream that may carry requests and
//!   notifications before the response and may be resumed with `Last-Event-ID`;
//! - the *listener* task holds the GET stream for server-initiated messages and resumes it after
//!   a drop;
//! - everything received goes into one bounded channel that [`HttpTransport::next`] reads, so the
//!   actor routes it exactly as it routes a child's stdout.
//!
//! The session: `Mcp-Session-Id` from the `initialize` response is sent on every request, and
//! `MCP-Protocol-Version` (the version the server answered) on every request after
//! `initialize`. When the server no longer knows the session (404), the transport replays the
//! `initialize` and `notifications/initialized` the actor sent, swallows the replayed answer,
//! and retries the request once: clients never notice. Stopping ends the session with `DELETE`.
//!
//! A 401 from a server without configured headers ends the transport with
//! [`Event::AuthRequired`]; the actor then waits for `mcpctl login`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use mcpd_proto::envelope::{self, Envelope, Kind};
use mcpd_proto::line::MAX_MESSAGE_LINE;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Response, StatusCode, Url};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Event, HttpStartError, OutKind, Outbound};
use crate::config::{HttpKind, HttpSpec, redact_url};
use crate::upstream::process::escape_control;
use crate::upstream::sse::{SseDecoder, SseItem};

// The jobs, each an `impl Link` of its own (the helpers they share are re-exported here):
/// Sending with the configured credentials or OAuth, and what a refusal means.
mod client;
/// POSTing messages and reading their answers (JSON bodies, SSE streams).
mod exchange;
/// The legacy HTTP+SSE transport (2024-11-05).
mod legacy;
/// Session renewal and the GET stream for server-initiated messages.
mod session;

use client::*;
use exchange::*;
use session::*;

/// Lines queued for the server before [`HttpTransport::send`] refuses more.
const SEND_QUEUE: usize = 1024;
/// Messages received and not yet taken by the actor before the streams wait.
const EVENT_QUEUE: usize = 1024;
/// Redirects followed for one request (same origin only).
const MAX_REDIRECTS: usize = 5;
/// Reconnection delay when the server set no `retry`.
const DEFAULT_RETRY: Duration = Duration::from_secs(1);
/// Longest wait between attempts to reopen the GET stream.
const MAX_STREAM_BACKOFF: Duration = Duration::from_secs(30);
/// Resumptions of one request's stream that brought nothing new before it is given up.
const MAX_IDLE_RESUMES: u32 = 5;
/// Times a modern request is sent again after its response stream broke before the answer.
const MAX_REISSUES: u32 = 2;
/// Bytes of an error body shown in messages.
const ERROR_PREVIEW: usize = 300;
/// How long a notification or response POST may take.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stop waits for the requests still in flight to wind down after they were
/// cancelled, and how long the `DELETE` that ends the session may take. The stop timeouts of
/// the configuration are a child process's (stdin, SIGTERM) and say nothing about HTTP.
const STOP_GRACE: Duration = Duration::from_secs(2);
const END_SESSION_TIMEOUT: Duration = Duration::from_secs(5);

static SESSION_HEADER: HeaderName = HeaderName::from_static("mcp-session-id");
static PROTOCOL_HEADER: HeaderName = HeaderName::from_static("mcp-protocol-version");
static LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
const ACCEPT_POST: HeaderValue = HeaderValue::from_static("application/json, text/event-stream");
const ACCEPT_SSE: HeaderValue = HeaderValue::from_static("text/event-stream");
const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A live connection to one remote server.
#[derive(Debug)]
pub struct HttpTransport {
    out: mpsc::Sender<Outbound>,
    events: mpsc::Receiver<Event>,
    link: Arc<Link>,
}

impl HttpTransport {
    /// Prepares the connection; nothing is sent before the actor's `initialize`.
    pub fn start(
        server: &str,
        spec: &HttpSpec,
        auth: Option<Arc<crate::auth::AuthManager>>,
    ) -> Result<Self, HttpStartError> {
        let client = build_client(spec)?;
        let mut headers = HeaderMap::new();
        for (name, value) in &spec.headers.0 {
            // Checked when the configuration was read.
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|source| {
                HttpStartError::HeaderName {
                    name: name.clone(),
                    source,
                }
            })?;
            let mut value =
                HeaderValue::from_str(value).map_err(|_| HttpStartError::HeaderValue {
                    name: name.to_string(),
                })?;
            value.set_sensitive(true);
            headers.append(name, value);
        }
        if spec.insecure_skip_verify {
            tracing::warn!(
                server,
                "TLS certificate validation is off for {} (insecureSkipVerify)",
                redact_url(&spec.url)
            );
        }
        let (out, out_rx) = mpsc::channel(SEND_QUEUE);
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let link = Arc::new(Link {
            server: server.into(),
            spec: spec.clone(),
            client,
            // Configured headers are the escape hatch: with them OAuth never starts.
            auth: auth.filter(|_| headers.is_empty()),
            headers,
            events: events_tx,
            state: Mutex::new(LinkState::default()),
            generation: watch::channel(0).0,
            renewing: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            in_flight: Mutex::new(HashMap::new()),
            last_end: Mutex::new(None),
        });
        link.tasks.spawn(Arc::clone(&link).dispatch(out_rx));
        link.show();
        Ok(Self { out, events, link })
    }

    /// Queues one message without waiting.
    pub fn send(&self, message: Outbound) -> Result<(), super::SendError> {
        self.out.try_send(message).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => super::SendError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => super::SendError::ConnectionClosed,
        })
    }

    /// The next event. Cancel-safe: messages already received come before the end.
    pub async fn next(&mut self) -> Event {
        tokio::select! {
            biased;
            event = self.events.recv() => event.unwrap_or_else(|| Event::Closed("the connection is closed".into())),
            () = self.link.shutdown.cancelled() => {
                // Messages queued while the end was signalled still come first.
                if let Ok(event) = self.events.try_recv() {
                    return event;
                }
                self.link
                    .lock_end()
                    .take()
                    .unwrap_or_else(|| Event::Closed("the connection was closed".into()))
            }
        }
    }

    /// Ends the session (`DELETE`, for streamable HTTP) and the connection.
    pub async fn stop(&mut self) -> String {
        let (session, protocol, legacy) = {
            let state = self.link.lock();
            (
                state.session.clone(),
                state.protocol.clone(),
                matches!(state.mode, Mode::Legacy { .. }),
            )
        };
        self.link.shutdown.cancel();
        self.link.tasks.close();
        let _ = tokio::time::timeout(STOP_GRACE, self.link.tasks.wait()).await;
        let Some(session) = session.filter(|_| !legacy) else {
            return "disconnected".to_owned();
        };
        let mut request = self
            .link
            .client
            .delete(self.link.spec.url.clone())
            .headers(self.link.headers.clone())
            .header(SESSION_HEADER.clone(), session)
            .timeout(END_SESSION_TIMEOUT);
        if let Some(protocol) = protocol {
            request = request.header(PROTOCOL_HEADER.clone(), protocol);
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => "ended the session".to_owned(),
            Ok(r) if r.status() == StatusCode::METHOD_NOT_ALLOWED => {
                "disconnected (the server does not end sessions on request)".to_owned()
            }
            Ok(r) => format!("disconnected (ending the session got HTTP {})", r.status()),
            Err(e) => format!(
                "disconnected (cannot end the session: {})",
                describe_error(e)
            ),
        }
    }
}

impl Drop for HttpTransport {
    fn drop(&mut self) {
        self.link.shutdown.cancel();
    }
}

/// How the transport ended, as the actor will hear it.
#[derive(Debug)]
enum End {
    Closed(String),
    Auth(String),
}

/// Why one message failed.
#[derive(Debug)]
enum Failure {
    /// This request fails (the caller gets the message as an error); the connection stays.
    Reply(String),
    /// The connection is unusable.
    End(End),
}

impl Failure {
    /// For `initialize` and session renewal any failure ends the connection.
    fn fatal(self) -> End {
        match self {
            Self::Reply(why) => End::Closed(why),
            Self::End(end) => end,
        }
    }
}

#[derive(Debug, Default)]
enum Mode {
    /// Before the answer to `initialize` (a server being probed may be either kind).
    #[default]
    Unknown,
    Streamable,
    /// The 2024-11-05 transport: messages are POSTed to `endpoint`, answers come on the
    /// SSE stream.
    Legacy {
        endpoint: Url,
    },
}

/// The GET stream for server-initiated messages.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
enum Stream {
    #[default]
    Closed,
    Open,
    Reconnecting(String),
    NotOffered,
}

#[derive(Debug, Default)]
struct LinkState {
    mode: Mode,
    session: Option<HeaderValue>,
    protocol: Option<HeaderValue>,
    /// Incremented when the session is renewed; streams of an older one end.
    generation: u64,
    /// The actor's `initialize` line and its id, replayed to renew the session.
    initialize: Option<(String, String)>,
    /// The actor's `notifications/initialized` line.
    initialized: Option<String>,
    renewals: u32,
    stream: Stream,
    shown: String,
}

#[derive(Debug)]
struct Link {
    server: Arc<str>,
    spec: HttpSpec,
    client: reqwest::Client,
    /// The configured headers, marked sensitive (never logged).
    headers: HeaderMap,
    /// OAuth, when no headers are configured: the bearer token and 401/403 handling.
    auth: Option<Arc<crate::auth::AuthManager>>,
    events: mpsc::Sender<Event>,
    // A std mutex: every critical section is a few field accesses, never across an `.await`.
    state: Mutex<LinkState>,
    /// The session generation, for tasks waiting for a renewal.
    generation: watch::Sender<u64>,
    renewing: AtomicBool,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// Requests whose answers are being read, by id (JSON text), to stop reading when the
    /// actor cancels one.
    in_flight: Mutex<HashMap<String, CancellationToken>>,
    last_end: Mutex<Option<Event>>,
}

impl Link {
    fn lock(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_end(&self) -> std::sync::MutexGuard<'_, Option<Event>> {
        self.last_end.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn url(&self) -> String {
        redact_url(&self.spec.url)
    }

    /// Ends the transport; the first end wins.
    fn end(&self, end: End) {
        if self.shutdown.is_cancelled() {
            return;
        }
        *self.lock_end() = Some(match end {
            End::Closed(why) => Event::Closed(why),
            End::Auth(why) => Event::AuthRequired(why),
        });
        self.shutdown.cancel();
    }

    async fn emit(&self, event: Event) {
        let _ = self.events.send(event).await;
    }

    /// Publishes the session description when it changed.
    fn show(&self) {
        let text = {
            let mut state = self.lock();
            let text = describe_state(&state);
            if text == state.shown {
                return;
            }
            state.shown.clone_from(&text);
            text
        };
        let _ = self.events.try_send(Event::Session(text));
    }

    /// Fails one request: its caller gets `why` as a JSON-RPC error, and status shows it.
    async fn fail_request(&self, id: &str, why: String) {
        let message = format!("server `{}`: {why}", self.server);
        // Status first: by the time the caller has the error, status shows it.
        self.emit(Event::Warning(why)).await;
        if let Ok(id) = RawValue::from_string(id.to_owned()) {
            let line =
                envelope::error_response(Some(&id), envelope::UPSTREAM_UNAVAILABLE, &message);
            self.emit(Event::Message(BytesMut::from(line.as_bytes())))
                .await;
        }
    }

    async fn dispatch(self: Arc<Self>, mut lines: mpsc::Receiver<Outbound>) {
        if self.spec.kind == HttpKind::Sse
            && let Err(f) = self.connect_legacy().await
        {
            return self.end(f.fatal());
        }
        loop {
            let Outbound { kind, line } = tokio::select! {
                () = self.shutdown.cancelled() => return,
                message = lines.recv() => match message {
                    Some(message) => message,
                    None => return,
                },
            };
            let legacy = matches!(self.lock().mode, Mode::Legacy { .. });
            match kind {
                OutKind::Initialize(id) => {
                    let id = id.to_string();
                    self.lock().initialize = Some((line.clone(), id.clone()));
                    let result = if legacy {
                        self.post_legacy(&line, Some(&id)).await
                    } else {
                        self.initialize(&line, &id).await
                    };
                    if let Err(f) = result {
                        return self.end(f.fatal());
                    }
                }
                OutKind::Request(id) if !legacy => {
                    let id = id.to_string();
                    let cancel = self.shutdown.child_token();
                    self.in_flight
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id.clone(), cancel.clone());
                    self.tasks
                        .spawn(Arc::clone(&self).request(line, id, cancel));
                }
                OutKind::Request(id) => {
                    let id = id.to_string();
                    if let Err(Failure::End(end)) = self.post_legacy(&line, Some(&id)).await {
                        return self.end(end);
                    }
                }
                OutKind::Cancelled(request)
                    if crate::upstream::modern::is_modern_request(&line) =>
                {
                    // MCP 2026-07-28 over HTTP: a request is cancelled by closing its stream.
                    if let Some(token) = self
                        .in_flight
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&request.to_string())
                    {
                        token.cancel();
                    }
                }
                other => {
                    let result = if legacy {
                        self.post_legacy(&line, None).await
                    } else {
                        self.notify(&line).await
                    };
                    match result {
                        Err(Failure::End(end)) => return self.end(end),
                        Err(Failure::Reply(why)) => self.emit(Event::Warning(why)).await,
                        Ok(()) => {}
                    }
                    match other {
                        OutKind::Initialized => {
                            let generation = {
                                let mut state = self.lock();
                                state.initialized = Some(line);
                                state.generation
                            };
                            if !legacy {
                                self.tasks.spawn(Arc::clone(&self).listen(generation));
                            }
                        }
                        OutKind::Cancelled(request) => {
                            let token = self
                                .in_flight
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .remove(&request.to_string());
                            if let Some(token) = token {
                                token.cancel();
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}
