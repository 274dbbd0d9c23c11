//! What the shim remembers of the MCP session so that it can resume it on a new connection:
//! the client's `initialize` params, whether it sent `notifications/initialized`, and which of
//! its requests are still unanswered. Also the line splitting that needs.
//!
//! Lines are only looked at, never re-encoded: [`Envelope::parse`] borrows from the line and the
//! original bytes are what gets forwarded.

use std::collections::HashSet;
use std::io::Write as _;

use crate::scan;
use mcpd_proto::Resume;
use mcpd_proto::envelope::{Envelope, Kind, field};
use serde_json::value::RawValue;

/// A JSON-RPC id as the client wrote it. Plain non-negative integers (what most clients use)
/// are kept without an allocation; anything else keeps its exact text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// An integer written in its canonical form (no sign, no leading zero, no fraction).
    Int(u64),
    /// Any other id, as its JSON text.
    Text(Box<str>),
}

impl Key {
    /// The key of a raw id.
    pub fn of(raw: &RawValue) -> Self {
        Self::of_text(raw.get())
    }

    /// The key of an id's JSON text.
    pub fn of_text(text: &str) -> Self {
        let canonical = !text.is_empty()
            && text.bytes().all(|b| b.is_ascii_digit())
            && (text == "0" || !text.starts_with('0'));
        match text.parse::<u64>() {
            Ok(n) if canonical => Self::Int(n),
            _ => Self::Text(text.into()),
        }
    }

    /// Appends the id's JSON text, byte for byte as the client wrote it.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            // Writing to a Vec cannot fail.
            Self::Int(n) => {
                let _ = write!(out, "{n}");
            }
            Self::Text(t) => out.extend_from_slice(t.as_bytes()),
        }
    }
}

/// What one line from the client means for the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromClient {
    /// A request that will be answered: remember its id until the answer passes.
    Request(Key),
    /// The `initialize` request, with its params as JSON text (`{}` if it had none).
    Initialize(Key, Box<str>),
    /// `notifications/initialized`.
    Initialized,
    /// `notifications/cancelled` for this request: no answer will come.
    Cancelled(Key),
    /// Anything else (other notifications, answers to the server's requests, garbage).
    Other,
}

/// Classifies one line from the client (with or without its line ending).
pub fn from_client(line: &[u8]) -> FromClient {
    let Some(msg) = envelope(line) else {
        return FromClient::Other;
    };
    match (msg.kind(), msg.id) {
        (Kind::Request, Some(id)) if msg.method() == "initialize" => {
            let params = msg.params.map_or("{}", RawValue::get);
            FromClient::Initialize(Key::of(id), params.into())
        }
        (Kind::Request, Some(id)) => FromClient::Request(Key::of(id)),
        (Kind::Notification, _) => match msg.method() {
            "notifications/initialized" => FromClient::Initialized,
            "notifications/cancelled" => msg
                .params
                .and_then(|p| field(p, "requestId").ok().flatten())
                .map_or(FromClient::Other, |id| FromClient::Cancelled(Key::of(id))),
            _ => FromClient::Other,
        },
        _ => FromClient::Other,
    }
}

/// The id of a response from the daemon, and whether it is an error; `None` for requests and
/// notifications (the daemon's own requests to the client are not tracked).
pub fn response_from_daemon(line: &[u8]) -> Option<(Key, bool)> {
    let bare = line.strip_suffix(b"\n").unwrap_or(line);
    let bare = bare.strip_suffix(b"\r").unwrap_or(bare);
    match scan::response_id(bare) {
        scan::Quick::Response(id, error) => return Some((Key::of_text(id), error)),
        scan::Quick::Other => return None,
        scan::Quick::Unknown => {}
    }
    let msg = envelope(line)?;
    match (msg.kind(), msg.id) {
        (Kind::Response, Some(id)) => Some((Key::of(id), msg.error.is_some())),
        _ => None,
    }
}

fn envelope(line: &[u8]) -> Option<Envelope<'_>> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return None;
    }
    Envelope::parse(std::str::from_utf8(line).ok()?).ok()
}

/// The session as the client sees it, kept across connections.
#[derive(Debug, Default)]
pub struct Session {
    /// The params of the client's `initialize`, once it was answered or while it is in flight.
    initialize: Option<Box<str>>,
    /// The id of that `initialize` while its answer has not passed.
    initialize_id: Option<Key>,
    /// Whether the client sent `notifications/initialized`.
    initialized: bool,
    /// Requests sent on the current connection and not answered yet.
    in_flight: HashSet<Key>,
    /// The session id the daemon gave the current (or last) connection.
    pub daemon_session: Option<u64>,
}

impl Session {
    /// The session a daemon handed back (direct mode, `crate::handback`): the client's
    /// `initialize` params as it wrote them, whether it sent `initialized`, its requests the
    /// daemon left unanswered, and that daemon's session id.
    pub fn handed_back(
        initialize: Option<&RawValue>,
        initialized: bool,
        in_flight: &[Box<RawValue>],
        daemon_session: Option<u64>,
    ) -> Self {
        Self {
            initialize: initialize.map(|p| p.get().into()),
            initialize_id: None,
            initialized,
            in_flight: in_flight.iter().map(|id| Key::of(id)).collect(),
            daemon_session,
        }
    }

    /// Takes note of a line from the client. `sent`: it went to the daemon (a request is in
    /// flight now); otherwise it is held for the next connection and `held` gets its id.
    pub fn on_client(&mut self, what: FromClient, held: Option<&mut Vec<Key>>) {
        let id = match what {
            FromClient::Request(id) => id,
            FromClient::Initialize(id, params) => {
                self.initialize = Some(params);
                self.initialize_id = Some(id.clone());
                id
            }
            FromClient::Initialized => {
                self.initialized = true;
                return;
            }
            FromClient::Cancelled(id) => {
                self.in_flight.remove(&id);
                if let Some(held) = held {
                    held.retain(|h| *h != id);
                }
                return;
            }
            FromClient::Other => return,
        };
        match held {
            Some(held) => held.push(id),
            None => {
                self.in_flight.insert(id);
            }
        }
    }

    /// Held requests that were now sent to the daemon.
    pub fn sent(&mut self, ids: impl IntoIterator<Item = Key>) {
        self.in_flight.extend(ids);
    }

    /// A response from the daemon passed to the client.
    pub fn answered(&mut self, id: &Key, error: bool) {
        self.in_flight.remove(id);
        if self.initialize_id.as_ref() == Some(id) {
            self.initialize_id = None;
            if error {
                // The client knows it is not initialized; a resume must not pretend it is.
                self.initialize = None;
            }
        }
    }

    /// The connection was lost: every request in flight will never be answered by the daemon.
    /// Returns them, for the shim to answer. An `initialize` among them is forgotten, since the
    /// client is told it failed.
    pub fn lost(&mut self) -> Vec<Key> {
        if let Some(id) = self.initialize_id.take() {
            if self.in_flight.contains(&id) {
                self.initialize = None;
            } else {
                // Still held: it will be sent on the next connection.
                self.initialize_id = Some(id);
            }
        }
        self.in_flight.drain().collect()
    }

    /// How many requests are in flight (zero: daemon lines need not be parsed).
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// What to hand a new connection so that the session continues: `None` if the client has
    /// not initialized (or its `initialize` is still held, to be sent as is).
    pub fn resume(&self) -> Option<Resume> {
        let params = self.initialize.as_deref()?;
        if self
            .initialize_id
            .as_ref()
            .is_some_and(|id| !self.in_flight.contains(id))
        {
            return None;
        }
        Some(Resume {
            initialize: serde_json::from_str(params).ok()?,
            initialized: self.initialized,
            previous_session: self.daemon_session,
        })
    }
}

/// The JSON-RPC error line (newline included) that answers request `id`.
pub fn error_line(out: &mut Vec<u8>, id: &Key, code: i64, message: &str) {
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    id.write_json(out);
    // `message` is a constant of ours: plain ASCII without quotes or backslashes.
    let _ = writeln!(
        out,
        ",\"error\":{{\"code\":{code},\"message\":\"{message}\"}}}}"
    );
}

/// Splits a byte stream into lines of at most `max` bytes (line ending excluded).
///
/// Whole lines inside a chunk are handed back as a slice of that chunk, so forwarding them costs
/// no copy; only a line that spans chunks is assembled in a buffer. A line over `max` is not
/// kept: its length is reported once its end arrives.
#[derive(Debug)]
pub struct Splitter {
    max: usize,
    /// The start of the current unfinished line, while it is within `max`.
    carry: Vec<u8>,
    /// Length of the current unfinished line, including bytes dropped because it is too long.
    carry_len: usize,
    /// The line completed by the last [`feed`](Self::feed), newline included.
    done: Vec<u8>,
}

/// What one chunk completed.
#[derive(Debug)]
pub struct Fed<'a> {
    /// The line that began in an earlier chunk and ended in this one.
    pub first: Option<First<'a>>,
    /// Whole lines that lie in this chunk, each with its newline.
    pub body: &'a [u8],
}

/// A line that began in an earlier chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum First<'a> {
    /// The whole line, newline included.
    Line(&'a [u8]),
    /// A line over the limit, dropped; its length without the newline.
    TooLong(usize),
}

/// Buffers above this size are freed once their line has been handled.
const KEEP_CAPACITY: usize = 256 * 1024;

impl Splitter {
    /// A splitter for lines of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            carry: Vec::new(),
            carry_len: 0,
            done: Vec::new(),
        }
    }

    /// Forgets an unfinished line (its sender went away).
    pub fn reset(&mut self) {
        self.carry_len = 0;
        self.carry.clear();
        if self.carry.capacity() > KEEP_CAPACITY {
            self.carry = Vec::new();
        }
    }

    /// Splits `chunk`, keeping an unfinished last line for the next call.
    pub fn feed<'a>(&'a mut self, chunk: &'a [u8]) -> Fed<'a> {
        if self.done.capacity() > KEEP_CAPACITY {
            self.done = Vec::new();
        }
        let Some(first_end) = scan::find_newline(chunk) else {
            self.push_partial(chunk);
            return Fed {
                first: None,
                body: &[],
            };
        };
        let last_end = scan::rfind_newline(chunk).unwrap_or(first_end);
        let mut first = false;
        let mut too_long = None;
        let mut body_start = 0;
        if self.carry_len > 0 {
            self.push_partial(&chunk[..first_end]);
            if self.carry_len > self.max {
                too_long = Some(self.carry_len);
            } else {
                self.done.clear();
                std::mem::swap(&mut self.done, &mut self.carry);
                self.done.push(b'\n');
                first = true;
            }
            self.reset();
            body_start = first_end + 1;
        }
        self.push_partial(&chunk[last_end + 1..]);
        let first = match (first, too_long) {
            (true, _) => Some(First::Line(&self.done)),
            (false, Some(len)) => Some(First::TooLong(len)),
            (false, None) => None,
        };
        let body = chunk.get(body_start..=last_end).unwrap_or_default();
        Fed { first, body }
    }

    /// At the end of input: the unfinished last line, if any (no newline), or its length if it
    /// is over the limit.
    pub fn finish(&mut self) -> Option<First<'_>> {
        let len = std::mem::take(&mut self.carry_len);
        if len == 0 {
            None
        } else if len > self.max {
            Some(First::TooLong(len))
        } else {
            std::mem::swap(&mut self.done, &mut self.carry);
            self.carry.clear();
            Some(First::Line(&self.done))
        }
    }

    fn push_partial(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.carry_len = self.carry_len.saturating_add(bytes.len());
        if self.carry_len <= self.max {
            self.carry.extend_from_slice(bytes);
        } else if !self.carry.is_empty() {
            self.carry = Vec::new();
        }
    }
}

impl<'a> Fed<'a> {
    /// Every whole line, the first one included, each with its newline.
    pub fn lines(&self) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        let first = match self.first {
            Some(First::Line(line)) => Some(line),
            _ => None,
        };
        first.into_iter().chain(scan::lines(self.body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    fn key(text: &str) -> Key {
        Key::of(&raw(text))
    }

    fn json(key: &Key) -> String {
        let mut out = Vec::new();
        key.write_json(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn ids_keep_their_exact_text() {
        assert_eq!(key("17"), Key::Int(17));
        assert_eq!(key("0"), Key::Int(0));
        for text in [
            "-0",
            "-3",
            "1.0",
            "1e3",
            "\"7\"",
            "\"a\\u0062\"",
            "123456789012345678901234567890",
            "null",
        ] {
            let k = key(text);
            assert!(matches!(k, Key::Text(_)), "{text}: {k:?}");
            assert_eq!(json(&k), text);
        }
        assert_eq!(json(&key("18446744073709551615")), "18446744073709551615");
    }

    #[test]
    fn client_lines_are_classified() {
        let init = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","n":1.50}}"#;
        assert_eq!(
            from_client(init),
            FromClient::Initialize(
                Key::Int(0),
                r#"{"protocolVersion":"2025-11-25","n":1.50}"#.into()
            )
        );
        assert_eq!(
            from_client(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\r\n"),
            FromClient::Initialized
        );
        assert_eq!(
            from_client(br#"{"id":"x","method":"tools/call","params":{}}"#),
            FromClient::Request(key("\"x\""))
        );
        assert_eq!(
            from_client(br#"{"method":"notifications/cancelled","params":{"requestId":4}}"#),
            FromClient::Cancelled(Key::Int(4))
        );
        // The client answering the server's request, garbage, an empty line.
        for line in [
            &br#"{"id":9,"result":{}}"#[..],
            b"{not json",
            b"\n",
            b"\xff",
        ] {
            assert_eq!(from_client(line), FromClient::Other);
        }
        assert_eq!(
            response_from_daemon(br#"{"jsonrpc":"2.0","id":3,"error":{"code":1,"message":"m"}}"#),
            Some((Key::Int(3), true))
        );
        assert_eq!(
            response_from_daemon(br#"{"jsonrpc":"2.0","id":3,"method":"sampling/createMessage"}"#),
            None
        );
    }

    #[test]
    fn in_flight_requests_are_returned_when_the_connection_is_lost() {
        let mut s = Session::default();
        s.on_client(
            FromClient::Initialize(Key::Int(0), "{\"a\":1}".into()),
            None,
        );
        s.answered(&Key::Int(0), false);
        s.on_client(FromClient::Initialized, None);
        s.on_client(FromClient::Request(Key::Int(1)), None);
        s.on_client(FromClient::Request(Key::Int(2)), None);
        s.on_client(FromClient::Request(Key::Int(3)), None);
        s.answered(&Key::Int(2), false);
        s.on_client(FromClient::Cancelled(Key::Int(3)), None);
        s.daemon_session = Some(5);
        assert_eq!(s.lost(), vec![Key::Int(1)]);
        assert_eq!(s.in_flight(), 0);
        let resume = s.resume().unwrap();
        assert_eq!(resume.initialize, serde_json::json!({"a": 1}));
        assert!(resume.initialized);
        assert_eq!(resume.previous_session, Some(5));
    }

    #[test]
    fn an_initialize_that_failed_or_was_lost_is_not_resumed() {
        let mut s = Session::default();
        assert!(s.resume().is_none());
        s.on_client(FromClient::Initialize(Key::Int(0), "{}".into()), None);
        assert!(s.resume().is_some());
        assert_eq!(s.lost(), vec![Key::Int(0)]);
        assert!(s.resume().is_none());

        s.on_client(FromClient::Initialize(Key::Int(1), "{}".into()), None);
        s.answered(&Key::Int(1), true);
        assert!(s.resume().is_none());

        // Held for the next connection: sent as it is, not resumed.
        let mut held = Vec::new();
        s.on_client(
            FromClient::Initialize(Key::Int(2), "{}".into()),
            Some(&mut held),
        );
        assert_eq!(held, vec![Key::Int(2)]);
        assert!(s.resume().is_none());
        assert!(s.lost().is_empty());
        s.sent(held);
        assert!(s.resume().is_some());
    }

    #[test]
    fn error_lines_carry_the_original_id() {
        let mut out = Vec::new();
        error_line(&mut out, &key("\"r-1\""), -32012, "gone; try again");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"jsonrpc\":\"2.0\",\"id\":\"r-1\",\"error\":{\"code\":-32012,\"message\":\"gone; try again\"}}\n"
        );
    }

    /// Feeds `chunks` and describes what came out: lines as strings, too-long lines as `!N`.
    fn split(max: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut s = Splitter::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            let fed = s.feed(chunk);
            if let Some(First::TooLong(n)) = fed.first {
                out.push(format!("!{n}"));
            }
            out.extend(fed.lines().map(|l| String::from_utf8_lossy(l).into_owned()));
        }
        match s.finish() {
            Some(First::Line(l)) => out.push(format!("end:{}", String::from_utf8_lossy(l))),
            Some(First::TooLong(n)) => out.push(format!("end:!{n}")),
            None => {}
        }
        out
    }

    #[test]
    fn lines_are_split_across_chunks() {
        assert_eq!(
            split(100, &[b"a\nb", b"c\nd\ne", b"", b"f", b"\n"]),
            ["a\n", "bc\n", "d\n", "ef\n"]
        );
        assert_eq!(split(100, &[b"x\n\n"]), ["x\n", "\n"]);
        assert_eq!(split(100, &[b"ab", b"c"]), ["end:abc"]);
    }

    #[test]
    fn an_overlong_line_is_reported_and_the_next_ones_kept() {
        assert_eq!(
            split(4, &[b"ok\n12", b"345", b"67\nfine\n"]),
            ["ok\n", "!7", "fine\n"]
        );
        assert_eq!(split(4, &[b"1234", b"\n"]), ["1234\n"]);
        assert_eq!(split(4, &[b"12", b"345"]), ["end:!5"]);
    }

    #[test]
    fn whole_lines_of_a_chunk_are_not_copied() {
        let chunk = b"p\nq\nr";
        let mut s = Splitter::new(10);
        let fed = s.feed(chunk);
        assert_eq!(fed.body.as_ptr(), chunk.as_ptr());
        assert_eq!(fed.body, b"p\nq\n");
    }
}
