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
    ) -> Result<Self, String> {
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
    pub fn send(&self, line: String) -> Result<(), String> {
        match self {
            Self::Stdio(p) => p.send(line),
            Self::Http(h) => h.send(line),
            #[cfg(test)]
            Self::Fake(f) => f.send(line),
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
                    Ok(Some(Ok(Frame::TooLong(len)))) => too_long(p, len),
                    _ => {
                        p.reap(p.stop_timeouts).await;
                        p.exit = Some(p.describe_end(status));
                        Event::Closed(with_stderr(p, p.describe_end(status)))
                    }
                }
            }
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

/// How long the output of a server that exited is still read.
const EXIT_DRAIN: std::time::Duration = std::time::Duration::from_millis(200);

async fn stdio_frame(p: &mut Process, frame: Option<Result<Frame, std::io::Error>>) -> Event {
    match frame {
        Some(Ok(Frame::Line(line))) => Event::Message(line),
        Some(Ok(Frame::TooLong(len))) => too_long(p, len),
        Some(Err(e)) => Event::Closed(format!("cannot read its stdout: {e}")),
        None => {
            let status = p.stop(p.stop_timeouts).await;
            p.exit = Some(p.describe_end(status));
            Event::Closed(with_stderr(
                p,
                format!("closed its stdout; {}", p.describe_end(status)),
            ))
        }
    }
}

fn too_long(p: &mut Process, len: usize) -> Event {
    let id = p
        .stdout
        .decoder_mut()
        .take_ends()
        .and_then(|ends| answer_id(&ends.head, &ends.tail));
    Event::TooLong(len, id)
}

/// The numeric `id` of a JSON-RPC answer known only by its first and last bytes: a top-level
/// `"id":N` member near the start (`{"jsonrpc":"2.0","id":N,"result":...`, as most SDKs write)
/// or as the last member (`...,"id":N}`, as the TypeScript SDK writes). Ids mcpd sends upstream
/// are integers; anything else is not ours to answer.
pub fn answer_id(head: &[u8], tail: &[u8]) -> Option<u64> {
    head_id(head).or_else(|| tail_id(tail))
}

fn head_id(head: &[u8]) -> Option<u64> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < head.len() {
        match head[i] {
            b'"' => {
                let start = i;
                i += 1;
                while i < head.len() && head[i] != b'"' {
                    i += if head[i] == b'\\' { 2 } else { 1 };
                }
                if depth == 1 && &head[start..(i + 1).min(head.len())] == b"\"id\"" {
                    let rest = head.get(i + 1..)?.trim_ascii_start();
                    let value = rest.strip_prefix(b":")?.trim_ascii_start();
                    let digits = value.iter().take_while(|b| b.is_ascii_digit()).count();
                    let after = value.get(digits).copied();
                    if digits > 0
                        && matches!(after, Some(b',' | b'}' | b' ' | b'\n' | b'\r' | b'\t'))
                    {
                        return std::str::from_utf8(&value[..digits]).ok()?.parse().ok();
                    }
                    return None;
                }
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

fn tail_id(tail: &[u8]) -> Option<u64> {
    let rest = tail.trim_ascii_end().strip_suffix(b"}")?.trim_ascii_end();
    let digits = rest.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let (before, number) = rest.split_at(rest.len() - digits);
    let before = before.trim_ascii_end().strip_suffix(b":")?.trim_ascii_end();
    let before = before.strip_suffix(b"\"id\"")?.trim_ascii_end();
    // The member before it ends the value before; a `{` would mean `id` is a nested object's.
    if !before.ends_with(b",") {
        return None;
    }
    std::str::from_utf8(number).ok()?.parse().ok()
}

fn with_stderr(p: &Process, what: String) -> String {
    let tail = p.stderr_summary();
    if tail.is_empty() {
        what
    } else {
        format!("{what}; last stderr: {tail}")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::{Event, Transport, answer_id};

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
