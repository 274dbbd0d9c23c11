//! What an upstream actor talks through. The actor sees only messages out ([`Transport::send`])
//! and events in ([`Transport::next`]); how they travel (a child's pipes, HTTP) is decided here.

use bytes::BytesMut;
use futures_util::StreamExt;

use super::http::HttpTransport;
use super::process::{Process, StopTimeouts, describe_exit};
use crate::codec::Frame;
use crate::config::{ServerSpec, TransportSpec};

/// Something that happened on the transport.
#[derive(Debug)]
pub enum Event {
    /// One JSON-RPC message from the server.
    Message(BytesMut),
    /// A message over the size limit was dropped.
    TooLong(usize),
    /// The transport is gone (the process exited, the connection broke), and why.
    Closed(String),
    /// The server wants credentials that mcpd does not have (HTTP 401 without configured
    /// headers); it is not restarted until `mcpctl login` or a reload.
    AuthRequired(String),
    /// The state of the connection changed, for `mcpctl status` (an HTTP session).
    Session(String),
    /// Something failed without ending the transport (one request's HTTP error), for logs and
    /// `mcpctl status`.
    Warning(String),
}

/// A live connection to one upstream server.
// One per upstream, owned by its actor: the size of the stdio variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Transport {
    /// A child process.
    Stdio(Process),
    /// A remote server over streamable HTTP or HTTP+SSE.
    Http(HttpTransport),
}

impl Transport {
    /// Starts the server (spawns it, or connects to it).
    /// Child processes are recorded in `records` (see [`super::process::ChildRecord`]).
    pub async fn start(
        server: &str,
        spec: &ServerSpec,
        records: Option<&std::path::Path>,
        auth: Option<&std::sync::Arc<crate::auth::AuthManager>>,
    ) -> Result<Self, String> {
        match &spec.transport {
            TransportSpec::Stdio(stdio) => Process::spawn(server, stdio, records)
                .map(Transport::Stdio)
                .map_err(|e| format!("cannot start `{}`: {e}", stdio.command)),
            TransportSpec::Http(http) => {
                HttpTransport::start(server, http, auth.cloned()).map(Transport::Http)
            }
        }
    }

    /// Pid of the child process, for stdio servers.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Self::Stdio(p) => p.child.id(),
            Self::Http(_) => None,
        }
    }

    /// The last lines the server wrote to stderr, shared with the reader that collects them.
    pub fn stderr_tail(
        &self,
    ) -> Option<std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>> {
        match self {
            Self::Stdio(p) => Some(std::sync::Arc::clone(&p.stderr_tail)),
            Self::Http(_) => None,
        }
    }

    /// How the server's process ended, once it has.
    pub fn last_exit(&self) -> Option<String> {
        match self {
            Self::Stdio(p) => p.exit.clone(),
            Self::Http(_) => None,
        }
    }

    /// Queues one message without waiting; `Err` says why it cannot be sent.
    pub fn send(&self, line: String) -> Result<(), String> {
        match self {
            Self::Stdio(p) => p.send(line),
            Self::Http(h) => h.send(line),
        }
    }

    /// The next event. Cancel-safe: it can be raced in `select!`.
    pub async fn next(&mut self) -> Event {
        match self {
            Self::Stdio(p) => {
                if p.exited.is_none() {
                    tokio::select! {
                        // What the server wrote before it exited is read first.
                        biased;
                        frame = p.stdout.next() => return stdio_frame(p, frame).await,
                        status = p.child.wait() => {
                            // Answers it wrote just before exiting may still be in the pipe:
                            // they are delivered (briefly) before the transport closes.
                            p.exited = Some((status.ok(), tokio::time::Instant::now() + EXIT_DRAIN));
                        }
                    }
                }
                let Some((status, deadline)) = p.exited else {
                    return Event::Closed(String::new());
                };
                match tokio::time::timeout_at(deadline, p.stdout.next()).await {
                    Ok(Some(Ok(Frame::Line(line)))) => Event::Message(line),
                    Ok(Some(Ok(Frame::TooLong(len)))) => Event::TooLong(len),
                    _ => {
                        p.reap(StopTimeouts::default()).await;
                        p.exit = Some(describe_exit(status));
                        Event::Closed(with_stderr(p, describe_exit(status)))
                    }
                }
            }
            Self::Http(h) => h.next().await,
        }
    }

    /// Ends the connection: for a child, the stop sequence. Returns what happened.
    pub async fn stop(&mut self, timeouts: StopTimeouts) -> String {
        match self {
            Self::Stdio(p) => {
                let how = describe_exit(p.stop(timeouts).await);
                p.exit = Some(how.clone());
                how
            }
            Self::Http(h) => h.stop(timeouts).await,
        }
    }
}

/// How long the output of a server that exited is still read.
const EXIT_DRAIN: std::time::Duration = std::time::Duration::from_millis(200);

async fn stdio_frame(p: &mut Process, frame: Option<Result<Frame, std::io::Error>>) -> Event {
    match frame {
        Some(Ok(Frame::Line(line))) => Event::Message(line),
        Some(Ok(Frame::TooLong(len))) => Event::TooLong(len),
        Some(Err(e)) => Event::Closed(format!("cannot read its stdout: {e}")),
        None => {
            let status = p.stop(StopTimeouts::default()).await;
            p.exit = Some(describe_exit(status));
            Event::Closed(with_stderr(
                p,
                format!("closed its stdout; {}", describe_exit(status)),
            ))
        }
    }
}

fn with_stderr(p: &Process, what: String) -> String {
    let tail = p.stderr_summary();
    if tail.is_empty() {
        what
    } else {
        format!("{what}; last stderr: {tail}")
    }
}
