//! What an upstream actor talks through. The actor sees only messages out ([`Transport::send`])
//! and events in ([`Transport::next`]); how they travel (a child's pipes, HTTP) is decided here.

//!
//! - [`stdio`]: a child process's pipes (the process itself is [`super::process::Process`]);
//! - [`http`]: streamable HTTP and the legacy HTTP+SSE transport, split by job.

mod error;
pub mod http;
pub mod stdio;

pub use error::{HandshakeError, HttpStartError, SendError, StartError};

use bytes::BytesMut;

use super::process::{Process, StopTimeouts, describe_exit};
use crate::config::{ServerSpec, TransportSpec};
use http::HttpTransport;

/// Something that happened on the transport.
#[derive(Debug)]
pub enum Event {
    /// One JSON-RPC message from the server.
    Message(BytesMut),
    /// A message that came on the response stream of the request with this id (streamable
    /// HTTP), other than its answer: it belongs to that request.
    Related(BytesMut, u64),
    /// A message over the size limit was dropped: its length and, when it could be read from
    /// the message's ends, the id of the request it answered.
    TooLong(usize, Option<u64>),
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

/// One message for the server, said by whoever wrote it (the actor knows what it sends), so that
/// no transport parses the line again to learn it.
#[derive(Debug)]
pub struct Outbound {
    /// What the message is.
    pub kind: OutKind,
    /// The message: one line of JSON, without its newline.
    pub line: String,
}

/// What an [`Outbound`] message is. Ids are those mcpd gives its requests upstream (integers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutKind {
    /// The `initialize` request, with its id.
    Initialize(u64),
    /// Any other request, with its id.
    Request(u64),
    /// `notifications/initialized`.
    Initialized,
    /// `notifications/cancelled` of the request with this id.
    Cancelled(u64),
    /// Any other notification.
    Notification,
    /// An answer to a request of the server.
    Response,
}

impl Outbound {
    /// A request other than `initialize`.
    pub fn request(id: u64, line: String) -> Self {
        Self {
            kind: OutKind::Request(id),
            line,
        }
    }

    /// A notification other than `notifications/initialized` and `notifications/cancelled`.
    pub fn notification(line: String) -> Self {
        Self {
            kind: OutKind::Notification,
            line,
        }
    }

    /// An answer to a request of the server.
    pub fn response(line: String) -> Self {
        Self {
            kind: OutKind::Response,
            line,
        }
    }
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
    /// A transport a unit test drives.
    #[cfg(test)]
    Fake(super::fake::Fake),
}

impl Transport {
    /// Starts the server (spawns it, or connects to it).
    /// Child processes are recorded in `records` (see [`super::process::ChildRecord`]).
    pub async fn start(
        server: &str,
        spec: &ServerSpec,
        records: Option<&std::path::Path>,
        auth: Option<&std::sync::Arc<crate::auth::AuthManager>>,
    ) -> Result<Self, StartError> {
        #[cfg(test)]
        if let Some(fake) = super::fake::take(server) {
            return Ok(Transport::Fake(fake));
        }
        // `${secret:NAME}` filled in for this start only; the copy is wiped when dropped.
        let resolved;
        let spec = if spec.secrets.names.is_empty() {
            spec
        } else {
            resolved = crate::config::secret_refs::resolve(server, spec)?;
            &resolved.0
        };
        match &spec.transport {
            TransportSpec::Stdio(stdio) => Process::spawn(server, stdio, &spec.contain, records)
                .map(|mut p| {
                    p.stop_timeouts = spec.stop;
                    Transport::Stdio(p)
                })
                .map_err(|source| StartError::Spawn {
                    command: stdio.command.clone(),
                    source,
                }),
            TransportSpec::Http(http) => Ok(Transport::Http(HttpTransport::start(
                server,
                http,
                auth.cloned(),
            )?)),
        }
    }

    /// Pid of the child process, for stdio servers.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Self::Stdio(p) => p.child.id(),
            Self::Http(_) => None,
            #[cfg(test)]
            Self::Fake(_) => None,
        }
    }

    /// Its sandbox, limits and tree, for stdio servers.
    pub fn in_force(&self) -> Option<std::sync::Arc<super::process::InForce>> {
        match self {
            Self::Stdio(p) => Some(std::sync::Arc::clone(&p.in_force)),
            Self::Http(_) => None,
            #[cfg(test)]
            Self::Fake(_) => None,
        }
    }

    /// The last lines the server wrote to stderr, shared with the reader that collects them.
    pub fn stderr_tail(
        &self,
    ) -> Option<std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>> {
        match self {
            Self::Stdio(p) => Some(std::sync::Arc::clone(&p.stderr_tail)),
            Self::Http(_) => None,
            #[cfg(test)]
            Self::Fake(_) => None,
        }
    }

    /// How the server's process ended, once it has.
    pub fn last_exit(&self) -> Option<String> {
        match self {
            Self::Stdio(p) => p.exit.clone(),
            Self::Http(_) => None,
            #[cfg(test)]
            Self::Fake(_) => None,
        }
    }

    /// The transport is ending by itself (the process exited or closed its stdout): it takes
    /// no more messages, and [`Transport::next`] is finishing the stop.
    pub fn closing(&self) -> bool {
        match self {
            Self::Stdio(p) => p.exited.is_some() || p.stdin.is_none(),
            Self::Http(_) => false,
            #[cfg(test)]
            Self::Fake(f) => f.closing(),
        }
    }

    /// Queues one message without waiting; `Err` says why it cannot be sent.
    pub fn send(&self, message: Outbound) -> Result<(), SendError> {
        match self {
            Self::Stdio(p) => p.send(message.line),
            Self::Http(h) => h.send(message),
            #[cfg(test)]
            Self::Fake(f) => f.send(message.line),
        }
    }

    /// The next event. Cancel-safe: it can be raced in `select!`.
    pub async fn next(&mut self) -> Event {
        match self {
            Self::Stdio(p) => stdio::next(p).await,
            Self::Http(h) => h.next().await,
            #[cfg(test)]
            Self::Fake(f) => f.next().await,
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
            Self::Http(h) => h.stop().await,
            #[cfg(test)]
            Self::Fake(f) => f.stop(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::stdio::answer_id;
    use super::{Event, Transport};

    /// A server from a one-server configuration.
    pub(crate) fn spec(server: serde_json::Value) -> crate::config::ServerSpec {
        let text = serde_json::json!({"mcpServers": {"s": server}}).to_string();
        let loaded = crate::config::parse(std::path::Path::new("/c/config.json"), &text, |_| None)
            .expect("the configuration parses");
        loaded.config.servers["s"].clone()
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_closes_its_stdout_gets_the_configured_stop_sequence() {
        // It closes its stdout and lingers; closing its stdin does not end it either. The
        // paused clock jumps over the grace periods, so the time that passed is theirs.
        let spec = spec(serde_json::json!({
            "command": "sh",
            "args": ["-c", "exec >&-; exec sleep 600"],
            "stopTimeoutMs": 40000,
            "killTimeoutMs": 1000,
        }));
        let mut transport = Transport::start("s", &spec, None, None)
            .await
            .expect("sh starts");
        let start = tokio::time::Instant::now();
        let closed = loop {
            if let Event::Closed(why) = transport.next().await {
                break why;
            }
        };
        assert!(closed.contains("closed its stdout"), "{closed}");
        assert!(
            start.elapsed() >= std::time::Duration::from_secs(40),
            "signalled after {:?} ({closed}), not after the configured 40 s",
            start.elapsed()
        );
    }

    #[test]
    fn the_id_of_an_overlong_answer_is_read_from_either_end() {
        assert_eq!(
            answer_id(
                br#"{"jsonrpc":"2.0","id":42,"result":{"content":[{"te"#,
                b"x\"}]}}"
            ),
            Some(42)
        );
        assert_eq!(
            answer_id(
                br#"{"result":{"content":[{"id":5,"te"#,
                br#"xx"}]},"jsonrpc":"2.0","id":77}"#
            ),
            Some(77)
        );
        // Nested ids are not the answer's.
        assert_eq!(
            answer_id(br#"{"result":{"id":5,"x":"#, br#"x","y":{"id":6}}}"#),
            None
        );
        assert_eq!(
            answer_id(br#"{"jsonrpc":"2.0","id":"s-1","result":"#, b"x\"}"),
            None
        );
        assert_eq!(answer_id(br#"{"a":"\"id\":3","#, b"x"), None);
    }
}
