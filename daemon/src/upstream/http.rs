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
use std::error::Error as _;
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

use super::process::escape_control;
use super::sse::{SseDecoder, SseItem};
use super::transport::Event;
use crate::config::{HttpKind, HttpSpec, redact_url};

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
    out: mpsc::Sender<String>,
    events: mpsc::Receiver<Event>,
    link: Arc<Link>,
}

impl HttpTransport {
    /// Prepares the connection; nothing is sent before the actor's `initialize`.
    pub fn start(
        server: &str,
        spec: &HttpSpec,
        auth: Option<Arc<crate::auth::AuthManager>>,
    ) -> Result<Self, String> {
        let client = build_client(spec)?;
        let mut headers = HeaderMap::new();
        for (name, value) in &spec.headers.0 {
            // Checked when the configuration was read.
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| format!("header `{name}`: {e}"))?;
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| format!("header `{name}` has an invalid value"))?;
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
    pub fn send(&self, line: String) -> Result<(), String> {
        self.out.try_send(line).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                "too many messages are waiting to be sent".to_owned()
            }
            mpsc::error::TrySendError::Closed(_) => "the connection is closed".to_owned(),
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

/// What the dispatcher needs to know about an outgoing line.
enum Outgoing {
    Initialize { id: String },
    Initialized,
    Request { id: String },
    Cancelled { request: Option<String> },
    Other,
}

fn classify(line: &str) -> Outgoing {
    let Ok(msg) = Envelope::parse(line) else {
        return Outgoing::Other;
    };
    match (msg.kind(), msg.method()) {
        (Kind::Request, "initialize") => Outgoing::Initialize {
            id: msg.id.map(|i| i.get().to_owned()).unwrap_or_default(),
        },
        (Kind::Request, _) => Outgoing::Request {
            id: msg.id.map(|i| i.get().to_owned()).unwrap_or_default(),
        },
        (Kind::Notification, "notifications/initialized") => Outgoing::Initialized,
        (Kind::Notification, "notifications/cancelled") => Outgoing::Cancelled {
            request: msg
                .params
                .and_then(|p| envelope::field(p, "requestId").ok().flatten())
                .map(|r| r.get().to_owned()),
        },
        _ => Outgoing::Other,
    }
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

    async fn dispatch(self: Arc<Self>, mut lines: mpsc::Receiver<String>) {
        if self.spec.kind == HttpKind::Sse
            && let Err(f) = self.connect_legacy().await
        {
            return self.end(f.fatal());
        }
        loop {
            let line = tokio::select! {
                () = self.shutdown.cancelled() => return,
                line = lines.recv() => match line {
                    Some(line) => line,
                    None => return,
                },
            };
            let legacy = matches!(self.lock().mode, Mode::Legacy { .. });
            match classify(&line) {
                Outgoing::Initialize { id } => {
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
                Outgoing::Request { id } if !legacy => {
                    let cancel = self.shutdown.child_token();
                    self.in_flight
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id.clone(), cancel.clone());
                    self.tasks
                        .spawn(Arc::clone(&self).request(line, id, cancel));
                }
                Outgoing::Request { id } => {
                    if let Err(Failure::End(end)) = self.post_legacy(&line, Some(&id)).await {
                        return self.end(end);
                    }
                }
                outgoing => {
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
                    match outgoing {
                        Outgoing::Initialized => {
                            let generation = {
                                let mut state = self.lock();
                                state.initialized = Some(line);
                                state.generation
                            };
                            if !legacy {
                                self.tasks.spawn(Arc::clone(&self).listen(generation));
                            }
                        }
                        Outgoing::Cancelled {
                            request: Some(request),
                        } => {
                            let token = self
                                .in_flight
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .remove(&request);
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

    /// A request to the MCP endpoint with the configured headers, the session and the
    /// protocol version.
    fn request_builder(&self, method: Method) -> reqwest::RequestBuilder {
        let (session, protocol) = {
            let state = self.lock();
            (state.session.clone(), state.protocol.clone())
        };
        let mut request = self
            .client
            .request(method, self.spec.url.clone())
            .headers(self.headers.clone());
        if let Some(session) = session {
            request = request.header(SESSION_HEADER.clone(), session);
        }
        if let Some(protocol) = protocol {
            request = request.header(PROTOCOL_HEADER.clone(), protocol);
        }
        request
    }

    async fn post(&self, line: &str) -> Result<Response, Failure> {
        let mut request = self
            .request_builder(Method::POST)
            .header(ACCEPT, ACCEPT_POST)
            .header(CONTENT_TYPE, JSON);
        if super::modern::is_modern_request(line) {
            // MCP 2026-07-28: the version, method and name as headers; no session.
            for (name, value) in super::modern::http_headers(line) {
                request = request.header(name, value);
            }
        }
        let request = request.body(line.to_owned());
        self.send(request).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Response, Failure> {
        let Some(auth) = self.auth.clone() else {
            return self.send_once(request).await;
        };
        // Kept to send again once after a 401 that a refresh fixed (bodies here are strings).
        let again = request.try_clone();
        let (request, sent) = self.authorize(&auth, request).await;
        let response = self.send_once(request).await?;
        match response.status() {
            StatusCode::UNAUTHORIZED => {
                let challenge = www_authenticate(&response);
                match auth
                    .on_unauthorized(&self.server, challenge.as_deref(), sent.as_ref())
                    .await
                {
                    crate::auth::Unauthorized::Retry => match again {
                        Some(again) => {
                            let (again, _) = self.authorize(&auth, again).await;
                            // A second 401 goes the usual way: `auth-required`.
                            self.send_once(again).await
                        }
                        None => Ok(response),
                    },
                    // The refusal path turns the 401 into `auth-required`.
                    crate::auth::Unauthorized::AuthRequired(_) => Ok(response),
                    crate::auth::Unauthorized::Unavailable(why) => Err(Failure::Reply(why)),
                }
            }
            StatusCode::FORBIDDEN => {
                let challenge = www_authenticate(&response);
                match auth.on_forbidden(&self.server, challenge.as_deref()) {
                    crate::auth::Forbidden::StepUp(why) | crate::auth::Forbidden::Denied(why) => {
                        Err(Failure::Reply(why))
                    }
                }
            }
            _ => Ok(response),
        }
    }

    /// Adds `Authorization: Bearer` (marked sensitive) when mcpd holds a token.
    async fn authorize(
        &self,
        auth: &crate::auth::AuthManager,
        request: reqwest::RequestBuilder,
    ) -> (reqwest::RequestBuilder, Option<secrecy::SecretString>) {
        let Some(token) = auth.bearer(&self.server).await else {
            return (request, None);
        };
        let value = {
            use secrecy::ExposeSecret;
            HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
        };
        match value {
            Ok(mut value) => {
                value.set_sensitive(true);
                (
                    request.header(reqwest::header::AUTHORIZATION, value),
                    Some(token),
                )
            }
            Err(_) => (request, None),
        }
    }

    async fn send_once(&self, request: reqwest::RequestBuilder) -> Result<Response, Failure> {
        tokio::select! {
            () = self.shutdown.cancelled() => Err(Failure::Reply("the connection was closed".into())),
            response = request.send() => response.map_err(|e| self.transport_error(e)),
        }
    }

    fn transport_error(&self, e: reqwest::Error) -> Failure {
        if e.is_connect() {
            Failure::End(End::Closed(format!(
                "cannot connect to {}: {}",
                self.url(),
                describe_error(e)
            )))
        } else if e.is_timeout() {
            Failure::Reply(format!("{} did not answer in time", self.url()))
        } else {
            Failure::Reply(format!(
                "HTTP request to {} failed: {}",
                self.url(),
                describe_error(e)
            ))
        }
    }

    /// The failure for a 401: `auth-required` when no headers are configured (OAuth is the
    /// way in), otherwise the configured credentials are wrong.
    fn unauthorized(&self) -> Failure {
        Failure::End(if self.headers.is_empty() {
            End::Auth(format!(
                "{} requires authorization (HTTP 401); run `mcpctl login {}`",
                self.url(),
                self.server
            ))
        } else {
            End::Closed(format!(
                "{} refused the configured headers (HTTP 401 Unauthorized); check their values",
                self.url()
            ))
        })
    }

    /// What an error status means: the session is gone (404 as the specification says, or
    /// the 400 "No valid session ID provided" that servers built from the TypeScript SDK's
    /// example answer instead), or a failure to report.
    async fn refusal(&self, what: &str, response: Response) -> Refusal {
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            return Refusal::Failed(self.unauthorized());
        }
        let had_session = self.lock().session.is_some();
        let preview = error_preview(response).await;
        if had_session
            && (status == StatusCode::NOT_FOUND
                || (status == StatusCode::BAD_REQUEST
                    && preview.to_ascii_lowercase().contains("session")))
        {
            return Refusal::SessionLost;
        }
        Refusal::Failed(Failure::Reply(format!(
            "{} answered {what} with HTTP {status}{preview}",
            self.url()
        )))
    }

    async fn initialize(self: &Arc<Self>, line: &str, id: &str) -> Result<(), Failure> {
        {
            let mut state = self.lock();
            state.session = None;
            state.protocol = None;
        }
        let response = self.post(line).await?;
        let status = response.status();
        if !status.is_success() {
            if self.spec.kind == HttpKind::Probe
                && matches!(
                    status,
                    StatusCode::BAD_REQUEST
                        | StatusCode::NOT_FOUND
                        | StatusCode::METHOD_NOT_ALLOWED
                )
            {
                tracing::info!(server = %self.server, "{} answered initialize with HTTP {status}; trying the legacy HTTP+SSE transport", self.url());
                self.connect_legacy().await?;
                return self.post_legacy(line, Some(id)).await;
            }
            return Err(match self.refusal("initialize", response).await {
                Refusal::SessionLost => Failure::Reply("initialize was refused".into()),
                Refusal::Failed(f) => f,
            });
        }
        let session = session_id(&response)?;
        {
            let mut state = self.lock();
            state.mode = Mode::Streamable;
            state.session = session;
        }
        let Some(answer) = self.read_answer(response, Some(id)).await? else {
            return Err(Failure::Reply(format!(
                "{} did not answer initialize",
                self.url()
            )));
        };
        self.lock().protocol = negotiated_protocol(&answer);
        self.show();
        self.emit(Event::Message(answer)).await;
        Ok(())
    }

    /// POSTs a notification or a response (the server answers 202), renewing the session once
    /// if it expired.
    async fn notify(self: &Arc<Self>, line: &str) -> Result<(), Failure> {
        let mut renewed = false;
        loop {
            let generation = self.lock().generation;
            let request = self
                .request_builder(Method::POST)
                .header(ACCEPT, ACCEPT_POST)
                .header(CONTENT_TYPE, JSON)
                .timeout(NOTIFY_TIMEOUT)
                .body(line.to_owned());
            let response = self.send(request).await?;
            if response.status().is_success() {
                return Ok(());
            }
            let refusal = self.refusal("a notification", response).await;
            self.retry_after(refusal, generation, &mut renewed).await?;
        }
    }

    async fn request(self: Arc<Self>, line: String, id: String, cancel: CancellationToken) {
        let result = tokio::select! {
            () = cancel.cancelled() => Ok(None),
            result = self.exchange(&line, &id) => result,
        };
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        match result {
            Ok(Some(answer)) => self.emit(Event::Message(answer)).await,
            Ok(None) => {}
            Err(Failure::Reply(why)) => self.fail_request(&id, why).await,
            Err(Failure::End(end)) => self.end(end),
        }
    }

    /// POSTs a request and reads its answer, renewing the session once if it expired.
    async fn exchange(self: &Arc<Self>, line: &str, id: &str) -> Result<Option<BytesMut>, Failure> {
        let mut renewed = false;
        loop {
            let generation = self.lock().generation;
            let response = self.post(line).await?;
            if response.status().is_success() {
                return self.read_answer(response, Some(id)).await;
            }
            let refusal = self.refusal("the request", response).await;
            self.retry_after(refusal, generation, &mut renewed).await?;
        }
    }

    /// Reads a successful response: a JSON body or an SSE stream. Messages other than the
    /// answer to `id` are passed on as they come; the answer is returned.
    async fn read_answer(
        &self,
        response: Response,
        id: Option<&str>,
    ) -> Result<Option<BytesMut>, Failure> {
        let content_type = media_type(&response);
        match content_type.as_str() {
            "text/event-stream" => self.read_stream(response, id).await,
            "application/json" => {
                let body = read_limited(response)
                    .await
                    .map_err(|e| Failure::Reply(format!("{}: {e}", self.url())))?;
                self.split_json(body, id).await
            }
            "" if response.status() == StatusCode::ACCEPTED
                || response.content_length() == Some(0) =>
            {
                // Accepted with nothing to say: an answer, if any, comes on the GET stream.
                Ok(None)
            }
            other => {
                let other = if other.is_empty() {
                    "no content type".to_owned()
                } else {
                    other.to_owned()
                };
                let preview = error_preview(response).await;
                Err(Failure::Reply(format!(
                    "{} answered with {other} instead of JSON or an event stream{preview}",
                    self.url()
                )))
            }
        }
    }

    /// A JSON body: one message, or a batch of them from an older server.
    async fn split_json(
        &self,
        body: BytesMut,
        id: Option<&str>,
    ) -> Result<Option<BytesMut>, Failure> {
        let text = std::str::from_utf8(&body).map_err(|_| {
            Failure::Reply(format!(
                "{} answered with JSON that is not UTF-8",
                self.url()
            ))
        })?;
        if text.trim_start().starts_with('[') {
            let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| {
                Failure::Reply(format!(
                    "{} answered with a malformed batch: {e}",
                    self.url()
                ))
            })?;
            let mut answer = None;
            for item in items {
                let bytes = BytesMut::from(item.get().as_bytes());
                if answer.is_none() && id.is_some_and(|id| answers(&bytes, id)) {
                    answer = Some(bytes);
                } else {
                    self.emit(Event::Message(bytes)).await;
                }
            }
            return Ok(answer);
        }
        if id.is_some_and(|id| answers(&body, id)) {
            return Ok(Some(body));
        }
        self.emit(Event::Message(body)).await;
        Ok(None)
    }

    /// Reads one request's SSE stream until its answer, resuming it with `Last-Event-ID` when
    /// the connection drops before the answer.
    async fn read_stream(
        &self,
        mut response: Response,
        id: Option<&str>,
    ) -> Result<Option<BytesMut>, Failure> {
        let mut decoder = SseDecoder::new(MAX_MESSAGE_LINE);
        let mut items = Vec::new();
        let mut idle_resumes = 0;
        loop {
            let mut progressed = false;
            let dropped = loop {
                let chunk = tokio::select! {
                    () = self.shutdown.cancelled() => return Err(closed()),
                    chunk = response.chunk() => chunk,
                };
                match chunk {
                    Ok(Some(bytes)) => decoder.feed(&bytes, &mut items),
                    Ok(None) => break None,
                    Err(e) => break Some(describe_error(e)),
                }
                for item in items.drain(..) {
                    progressed = true;
                    match item {
                        SseItem::Event { data, .. } => {
                            if id.is_some_and(|id| answers(&data, id)) {
                                return Ok(Some(data));
                            }
                            self.emit(Event::Message(data)).await;
                        }
                        SseItem::TooLong(len) => return Err(Failure::Reply(too_long(len))),
                    }
                }
            };
            if id.is_none() {
                return Ok(None);
            }
            let how = dropped.map_or_else(
                || "ended the event stream".to_owned(),
                |e| format!("dropped the event stream ({e})"),
            );
            let Some(last) = decoder.last_event_id().map(str::to_owned) else {
                return Err(Failure::Reply(format!(
                    "{} {how} without answering",
                    self.url()
                )));
            };
            idle_resumes = if progressed { 0 } else { idle_resumes + 1 };
            if idle_resumes > MAX_IDLE_RESUMES {
                return Err(Failure::Reply(format!(
                    "{} {how} without answering, {MAX_IDLE_RESUMES} times in a row",
                    self.url()
                )));
            }
            self.pause(decoder.retry().unwrap_or(DEFAULT_RETRY)).await?;
            tracing::debug!(server = %self.server, "resuming a response stream after event {last}");
            let request = self
                .request_builder(Method::GET)
                .header(ACCEPT, ACCEPT_SSE)
                .header(LAST_EVENT_ID.clone(), header_value(&last)?);
            response = self.send(request).await?;
            if !response.status().is_success() {
                return Err(
                    match self.refusal("the resumption of a stream", response).await {
                        Refusal::SessionLost => Failure::Reply(format!(
                            "{} forgot the session while a request was in flight",
                            self.url()
                        )),
                        Refusal::Failed(f) => f,
                    },
                );
            }
            decoder.reset_connection();
        }
    }

    async fn pause(&self, delay: Duration) -> Result<(), Failure> {
        tokio::select! {
            () = self.shutdown.cancelled() => Err(closed()),
            () = tokio::time::sleep(delay) => Ok(()),
        }
    }

    /// After a refusal: renews a lost session once (the caller then retries the request),
    /// else fails with why.
    async fn retry_after(
        self: &Arc<Self>,
        refusal: Refusal,
        generation: u64,
        renewed: &mut bool,
    ) -> Result<(), Failure> {
        match refusal {
            Refusal::SessionLost if !*renewed => {
                self.renew(generation).await?;
                *renewed = true;
                Ok(())
            }
            Refusal::SessionLost => Err(Failure::Reply(format!(
                "{} does not know the new session either",
                self.url()
            ))),
            Refusal::Failed(f) => Err(f),
        }
    }

    /// Starts a new session after the server forgot ours (the one of generation `seen`). One
    /// renewal at a time: a caller that finds one under way waits for it.
    async fn renew(self: &Arc<Self>, seen: u64) -> Result<(), Failure> {
        let mut generation = self.generation.subscribe();
        if self.lock().generation != seen {
            return Ok(());
        }
        if !self.renewing.swap(true, Ordering::AcqRel) {
            let result = self.replay_initialize().await;
            self.renewing.store(false, Ordering::Release);
            return result.map_err(|f| {
                let end = f.fatal();
                let why = match &end {
                    End::Closed(w) | End::Auth(w) => w.clone(),
                };
                self.end(end);
                Failure::Reply(why)
            });
        }
        tokio::select! {
            () = self.shutdown.cancelled() => Err(Failure::Reply("the session could not be renewed".into())),
            _ = generation.wait_for(|g| *g != seen) => Ok(()),
        }
    }

    /// Replays the actor's `initialize` (its answer is not passed on: the actor has it) and
    /// `notifications/initialized`, then opens the new session's GET stream.
    async fn replay_initialize(self: &Arc<Self>) -> Result<(), Failure> {
        let (initialize, initialized) = {
            let mut state = self.lock();
            state.session = None;
            state.protocol = None;
            (state.initialize.clone(), state.initialized.clone())
        };
        let Some((line, id)) = initialize else {
            return Err(Failure::Reply(
                "the session expired before it was set up".into(),
            ));
        };
        let response = self.post(&line).await?;
        if !response.status().is_success() {
            return Err(match self.refusal("a new initialize", response).await {
                Refusal::SessionLost => Failure::Reply("a new initialize was refused".into()),
                Refusal::Failed(f) => f,
            });
        }
        let session = session_id(&response)?;
        self.lock().session = session;
        let Some(answer) = self.read_answer(response, Some(&id)).await? else {
            return Err(Failure::Reply(format!(
                "{} did not answer the new initialize",
                self.url()
            )));
        };
        self.lock().protocol = negotiated_protocol(&answer);
        if let Some(initialized) = initialized {
            let request = self
                .request_builder(Method::POST)
                .header(ACCEPT, ACCEPT_POST)
                .header(CONTENT_TYPE, JSON)
                .timeout(NOTIFY_TIMEOUT)
                .body(initialized);
            let response = self.send(request).await?;
            if !response.status().is_success() {
                return Err(
                    match self.refusal("notifications/initialized", response).await {
                        Refusal::SessionLost => {
                            Failure::Reply("the new session was lost at once".into())
                        }
                        Refusal::Failed(f) => f,
                    },
                );
            }
        }
        let generation = {
            let mut state = self.lock();
            state.renewals += 1;
            state.generation += 1;
            state.stream = Stream::Closed;
            state.generation
        };
        tracing::info!(server = %self.server, "started a new session");
        self.generation.send_replace(generation);
        self.tasks.spawn(Arc::clone(self).listen(generation));
        self.show();
        Ok(())
    }

    fn set_stream(&self, stream: Stream, generation: u64) {
        {
            let mut state = self.lock();
            if state.generation != generation {
                return;
            }
            state.stream = stream;
        }
        self.show();
    }

    /// Holds the GET stream for server-initiated messages of session `generation`: reopens it
    /// when it drops, with `Last-Event-ID` so that the server can replay what was missed.
    fn listen(self: Arc<Self>, generation: u64) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        // Boxed: a renewal started here spawns the next session's listener.
        Box::pin(self.listen_inner(generation))
    }

    async fn listen_inner(self: Arc<Self>, generation: u64) {
        let mut decoder = SseDecoder::new(MAX_MESSAGE_LINE);
        let mut items = Vec::new();
        let mut failures: u32 = 0;
        loop {
            if self.lock().generation != generation {
                return;
            }
            let mut request = self.request_builder(Method::GET).header(ACCEPT, ACCEPT_SSE);
            if let Some(last) = decoder
                .last_event_id()
                .and_then(|l| HeaderValue::from_str(l).ok())
            {
                request = request.header(LAST_EVENT_ID.clone(), last);
            }
            let problem = match self.send(request).await {
                Err(Failure::End(End::Closed(why)) | Failure::Reply(why)) => why,
                Err(Failure::End(end)) => return self.end(end),
                Ok(response) if response.status() == StatusCode::METHOD_NOT_ALLOWED => {
                    tracing::debug!(server = %self.server, "the server offers no GET stream");
                    return self.set_stream(Stream::NotOffered, generation);
                }
                Ok(response) if response.status().is_success() => {
                    if media_type(&response) != "text/event-stream" {
                        tracing::debug!(server = %self.server, "the GET stream is not an event stream; not reopened");
                        return self.set_stream(Stream::NotOffered, generation);
                    }
                    self.set_stream(Stream::Open, generation);
                    decoder.reset_connection();
                    let mut response = response;
                    let mut received = false;
                    let ended = loop {
                        let chunk = tokio::select! {
                            () = self.shutdown.cancelled() => return,
                            _ = wait_generation_change(&self.generation, generation) => return,
                            chunk = response.chunk() => chunk,
                        };
                        match chunk {
                            Ok(Some(bytes)) => {
                                received = true;
                                decoder.feed(&bytes, &mut items);
                            }
                            Ok(None) => break "the server closed it".to_owned(),
                            Err(e) => break describe_error(e),
                        }
                        for item in items.drain(..) {
                            match item {
                                SseItem::Event { data, .. } => {
                                    self.emit(Event::Message(data)).await
                                }
                                SseItem::TooLong(len) => self.emit(Event::TooLong(len, None)).await,
                            }
                        }
                    };
                    if received {
                        failures = 0;
                    }
                    ended
                }
                Ok(response) => match self.refusal("the GET stream", response).await {
                    Refusal::SessionLost => {
                        tracing::info!(server = %self.server, "the server no longer knows the session; starting a new one");
                        let link = Arc::clone(&self);
                        // The renewal opens the next session's stream.
                        let _ = link.renew(generation).await;
                        return;
                    }
                    Refusal::Failed(Failure::End(end)) => return self.end(end),
                    Refusal::Failed(Failure::Reply(why)) => why,
                },
            };
            failures = failures.saturating_add(1);
            let delay = decoder
                .retry()
                .unwrap_or(DEFAULT_RETRY)
                .saturating_mul(1 << failures.min(5).saturating_sub(1))
                .min(MAX_STREAM_BACKOFF);
            tracing::debug!(server = %self.server, "GET stream: {problem}; reopening in {}ms", delay.as_millis());
            self.set_stream(Stream::Reconnecting(problem), generation);
            if self.pause(delay).await.is_err() {
                return;
            }
        }
    }

    /// The legacy transport: GETs the SSE endpoint, waits for the `endpoint` event naming
    /// where to POST, and leaves a task reading the stream.
    async fn connect_legacy(self: &Arc<Self>) -> Result<(), Failure> {
        let request = self
            .client
            .get(self.spec.url.clone())
            .headers(self.headers.clone())
            .header(ACCEPT, ACCEPT_SSE);
        let mut response = self.send(request).await?;
        if !response.status().is_success() {
            return Err(match self.refusal("the SSE connection", response).await {
                Refusal::SessionLost => Failure::Reply("the SSE connection was refused".into()),
                Refusal::Failed(f) => f,
            });
        }
        if media_type(&response) != "text/event-stream" {
            let what = media_type(&response);
            return Err(Failure::Reply(format!(
                "{} answered the SSE connection with {what}, not an event stream{}",
                self.url(),
                error_preview(response).await
            )));
        }
        let mut decoder = SseDecoder::new(MAX_MESSAGE_LINE);
        let mut items = Vec::new();
        let endpoint = 'found: loop {
            let chunk = tokio::select! {
                () = self.shutdown.cancelled() => return Err(closed()),
                chunk = response.chunk() => chunk,
            };
            match chunk {
                Ok(Some(bytes)) => decoder.feed(&bytes, &mut items),
                Ok(None) => {
                    return Err(Failure::Reply(format!(
                        "{} closed the SSE stream before naming its endpoint",
                        self.url()
                    )));
                }
                Err(e) => {
                    return Err(Failure::Reply(format!(
                        "{} dropped the SSE stream: {}",
                        self.url(),
                        describe_error(e)
                    )));
                }
            }
            for item in items.drain(..) {
                if let SseItem::Event { event, data } = item
                    && event == "endpoint"
                {
                    break 'found data;
                }
            }
        };
        let endpoint = std::str::from_utf8(&endpoint)
            .ok()
            .and_then(|e| self.spec.url.join(e.trim()).ok())
            .ok_or_else(|| Failure::Reply(format!("{} named an invalid endpoint", self.url())))?;
        if endpoint.origin() != self.spec.url.origin() {
            return Err(Failure::Reply(format!(
                "{} named an endpoint on another origin ({}); refused",
                self.url(),
                redact_url(&endpoint)
            )));
        }
        tracing::info!(server = %self.server, "legacy HTTP+SSE transport, posting to {}", redact_url(&endpoint));
        self.lock().mode = Mode::Legacy { endpoint };
        self.show();
        self.tasks
            .spawn(Arc::clone(self).read_legacy(response, decoder, items));
        Ok(())
    }

    async fn read_legacy(
        self: Arc<Self>,
        mut response: Response,
        mut decoder: SseDecoder,
        mut items: Vec<SseItem>,
    ) {
        loop {
            for item in items.drain(..) {
                match item {
                    SseItem::Event { event, data } if event == "message" => {
                        self.emit(Event::Message(data)).await;
                    }
                    SseItem::Event { .. } => {}
                    SseItem::TooLong(len) => self.emit(Event::TooLong(len, None)).await,
                }
            }
            let chunk = tokio::select! {
                () = self.shutdown.cancelled() => return,
                chunk = response.chunk() => chunk,
            };
            match chunk {
                Ok(Some(bytes)) => decoder.feed(&bytes, &mut items),
                Ok(None) => {
                    return self.end(End::Closed(format!("{} closed the SSE stream", self.url())));
                }
                Err(e) => {
                    return self.end(End::Closed(format!(
                        "{} dropped the SSE stream: {}",
                        self.url(),
                        describe_error(e)
                    )));
                }
            }
        }
    }

    /// POSTs one message to the legacy endpoint; answers come on the SSE stream.
    async fn post_legacy(&self, line: &str, id: Option<&str>) -> Result<(), Failure> {
        let endpoint = match &self.lock().mode {
            Mode::Legacy { endpoint } => endpoint.clone(),
            _ => return Err(Failure::Reply("no legacy endpoint".into())),
        };
        let request = self
            .client
            .post(endpoint)
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, JSON)
            .timeout(NOTIFY_TIMEOUT)
            .body(line.to_owned());
        let result = match self.send(request).await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) if response.status() == StatusCode::NOT_FOUND => {
                Err(Failure::End(End::Closed(format!(
                    "{} no longer knows the SSE session (HTTP 404)",
                    self.url()
                ))))
            }
            Ok(response) => match self.refusal("a message", response).await {
                Refusal::SessionLost => Err(Failure::End(End::Closed(format!(
                    "{} no longer knows the SSE session",
                    self.url()
                )))),
                Refusal::Failed(f) => Err(f),
            },
            Err(f) => Err(f),
        };
        match (result, id) {
            (Err(Failure::Reply(why)), Some(id)) => {
                self.fail_request(id, why).await;
                Ok(())
            }
            (result, _) => result,
        }
    }
}

/// What an error status meant.
enum Refusal {
    SessionLost,
    Failed(Failure),
}

fn closed() -> Failure {
    Failure::Reply("the connection was closed".into())
}

async fn wait_generation_change(generation: &watch::Sender<u64>, current: u64) {
    let mut rx = generation.subscribe();
    let _ = rx.wait_for(|g| *g != current).await;
}

fn describe_state(state: &LinkState) -> String {
    let mut text = match &state.mode {
        Mode::Unknown => return "connecting".to_owned(),
        Mode::Legacy { endpoint } => {
            return format!("legacy SSE stream open, posting to {}", endpoint.path());
        }
        Mode::Streamable if state.session.is_some() => "session active".to_owned(),
        Mode::Streamable => "no session (stateless server)".to_owned(),
    };
    if let Some(protocol) = state.protocol.as_ref().and_then(|p| p.to_str().ok()) {
        text.push_str(&format!(", protocol {protocol}"));
    }
    if state.renewals > 0 {
        text.push_str(&format!(", renewed {} times", state.renewals));
    }
    text.push_str(match &state.stream {
        Stream::Closed => "",
        Stream::Open => ", server stream open",
        Stream::Reconnecting(_) => ", server stream reconnecting",
        Stream::NotOffered => ", no server stream",
    });
    text
}

/// The `Mcp-Session-Id` of an `initialize` response: visible ASCII only.
fn session_id(response: &Response) -> Result<Option<HeaderValue>, Failure> {
    match response.headers().get(&SESSION_HEADER) {
        None => Ok(None),
        Some(v) if !v.is_empty() && v.as_bytes().iter().all(|b| (0x21..=0x7e).contains(b)) => {
            let mut v = v.clone();
            v.set_sensitive(true);
            Ok(Some(v))
        }
        Some(_) => Err(Failure::Reply(
            "the server sent a session id with characters outside visible ASCII".into(),
        )),
    }
}

/// The `protocolVersion` of an `initialize` answer.
fn negotiated_protocol(answer: &[u8]) -> Option<HeaderValue> {
    let text = std::str::from_utf8(answer).ok()?;
    let msg = Envelope::parse(text).ok()?;
    let version = envelope::field(msg.result?, "protocolVersion").ok()??;
    let version = envelope::decode_str(version).ok()?;
    HeaderValue::from_str(&version).ok()
}

/// Whether `message` is the response to the request with id `id` (JSON text).
fn answers(message: &[u8], id: &str) -> bool {
    let Ok(text) = std::str::from_utf8(message) else {
        return false;
    };
    match Envelope::parse(text) {
        Ok(msg) => msg.kind() == Kind::Response && msg.id.is_some_and(|i| i.get() == id),
        Err(_) => false,
    }
}

fn header_value(text: &str) -> Result<HeaderValue, Failure> {
    HeaderValue::from_str(text).map_err(|_| {
        Failure::Reply("the server sent an event id that is not a valid header".into())
    })
}

/// The media type of a response, lowercased, without parameters.
fn media_type(response: &Response) -> String {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

fn too_long(len: usize) -> String {
    format!(
        "the server's answer is over the {MAX_MESSAGE_LINE} byte message limit (at least {len} bytes); it was dropped"
    )
}

/// Reads a JSON body of at most [`MAX_MESSAGE_LINE`] bytes, never buffering more.
async fn read_limited(mut response: Response) -> Result<BytesMut, String> {
    if let Some(len) = response.content_length()
        && len > MAX_MESSAGE_LINE as u64
    {
        return Err(too_long(usize::try_from(len).unwrap_or(usize::MAX)));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("cannot read the answer: {}", describe_error(e)))?
    {
        if body.len() + chunk.len() > MAX_MESSAGE_LINE {
            return Err(too_long(body.len() + chunk.len()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `": <the start of the body>"` for error messages, or nothing.
async fn error_preview(mut response: Response) -> String {
    let mut body = Vec::new();
    while body.len() < ERROR_PREVIEW {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_PREVIEW)]);
    let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        return String::new();
    }
    let more = if body.len() > ERROR_PREVIEW {
        "…"
    } else {
        ""
    };
    format!(": {}{more}", escape_control(&text))
}

/// A reqwest error with its causes, without the URL (its query may hold a secret).
fn describe_error(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The `WWW-Authenticate` value of a response (the Bearer challenge, if several).
fn www_authenticate(response: &Response) -> Option<String> {
    let values: Vec<&str> = response
        .headers()
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    values
        .iter()
        .find(|v| v.to_ascii_lowercase().contains("bearer"))
        .or(values.first())
        .map(|v| (*v).to_owned())
}

/// One client per server: connection reuse, HTTP/2 by ALPN, certificate validation unless
/// explicitly turned off, redirects only within the server's origin.
fn build_client(spec: &HttpSpec) -> Result<reqwest::Client, String> {
    crate::net::install_tls_provider();
    let origin = spec.url.origin();
    let https = spec.url.scheme() == "https";
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
        } else if attempt.url().origin() != origin {
            attempt.error("a redirect to another origin was refused")
        } else if https && attempt.url().scheme() != "https" {
            attempt.error("a redirect from https to http was refused")
        } else {
            attempt.follow()
        }
    });
    reqwest::Client::builder()
        .user_agent(concat!("mcpd/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(spec.connect_timeout)
        .redirect(redirects)
        .tls_danger_accept_invalid_certs(spec.insecure_skip_verify)
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {}", describe_error(e)))
}
