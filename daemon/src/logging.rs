//! Where the daemon's log goes: the journal (with `SERVER=` and `SESSION=` fields) or stderr,
//! and always an in-memory ring of recent lines that `mcpctl logs` reads over the control socket,
//! so that it works with or without journald.
//!
//! [`init`] installs the subscriber once, in the binary. [`ring`] is the process-wide buffer;
//! it exists (empty) even when [`init`] was never called, as in tests that run the daemon
//! in-process.

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing::span;
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Lines the ring keeps; older ones are dropped first.
pub(crate) const RING_CAPACITY: usize = 2000;
/// Lines a `mcpctl logs -f` follower may fall behind before it is told some were dropped.
pub(crate) const FOLLOW_CAPACITY: usize = 512;
/// Longest message kept in the ring, in bytes; longer ones are cut (the journal gets them whole).
pub(crate) const MAX_MESSAGE: usize = 4096;

/// Where log lines go besides the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogTarget {
    /// The journal when stderr is connected to it (`JOURNAL_STREAM`), stderr otherwise.
    #[default]
    Auto,
    /// The journal, with structured fields; stderr if journald cannot be reached.
    Journald,
    /// Plain lines on stderr.
    Stderr,
}

pub use mcpd_proto::LogLine;

/// The bounded buffer of recent lines and the feed of new ones.
#[derive(Debug)]
pub(crate) struct LogRing {
    // A std mutex: it is held only to push or copy lines, never across an `.await`, and the
    // tracing layer that pushes runs in synchronous code.
    lines: Mutex<VecDeque<LogLine>>,
    capacity: usize,
    next_seq: AtomicU64,
    feed: broadcast::Sender<LogLine>,
}

impl LogRing {
    /// An empty ring that keeps at most `capacity` lines.
    pub fn new(capacity: usize) -> Self {
        let (feed, _) = broadcast::channel(FOLLOW_CAPACITY);
        Self {
            lines: Mutex::new(VecDeque::with_capacity(capacity.min(256))),
            capacity,
            next_seq: AtomicU64::new(1),
            feed,
        }
    }

    /// Adds a line (its `seq` is assigned here) and hands it to the followers.
    pub fn push(&self, mut line: LogLine) {
        line.seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        {
            let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
            if lines.len() >= self.capacity {
                lines.pop_front();
            }
            lines.push_back(line.clone());
        }
        // No follower is not an error.
        let _ = self.feed.send(line);
    }

    /// The lines in the ring, oldest first; only those about `server` when one is given.
    pub(crate) fn snapshot(&self, server: Option<&str>) -> Vec<LogLine> {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines
            .iter()
            .filter(|line| matches_server(line, server))
            .cloned()
            .collect()
    }

    /// The `limit` most recent lines about `server` (all when `None`), cut into batches whose
    /// JSON encodings each stay under `max_bytes` (leave room for the reply envelope), so that
    /// every control reply line respects the line cap. Always at least one (maybe empty) batch.
    pub(crate) fn snapshot_batches(
        &self,
        server: Option<&str>,
        limit: Option<usize>,
        max_bytes: usize,
    ) -> Vec<Vec<LogLine>> {
        let mut lines = self.snapshot(server);
        if let Some(limit) = limit {
            let skip = lines.len().saturating_sub(limit);
            lines.drain(..skip);
        }
        let mut batches = vec![Vec::new()];
        let mut size = 0;
        for line in lines {
            let len = serde_json::to_string(&line).map_or(MAX_MESSAGE, |s| s.len()) + 1;
            if size + len > max_bytes && batches.last().is_some_and(|b| !b.is_empty()) {
                batches.push(Vec::new());
                size = 0;
            }
            size += len;
            if let Some(batch) = batches.last_mut() {
                batch.push(line);
            }
        }
        batches
    }

    /// A feed of the lines pushed from now on. A follower that falls more than
    /// [`FOLLOW_CAPACITY`] lines behind gets `RecvError::Lagged(n)` and then the newer lines.
    /// Subscribe before taking the [`snapshot`](Self::snapshot) and skip lines whose `seq` the
    /// snapshot already had, so that nothing falls between the two.
    pub fn subscribe(&self) -> broadcast::Receiver<LogLine> {
        self.feed.subscribe()
    }
}

/// Whether `line` is about `server` (every line is, when no server is given).
pub(crate) fn matches_server(line: &LogLine, server: Option<&str>) -> bool {
    server.is_none_or(|s| line.server.as_deref() == Some(s))
}

/// The process-wide ring that [`init`]'s layer fills and the control socket reads.
pub(crate) fn ring() -> &'static LogRing {
    static RING: OnceLock<LogRing> = OnceLock::new();
    RING.get_or_init(|| LogRing::new(RING_CAPACITY))
}

/// Installs the process-wide subscriber: `RUST_LOG` or the `-v` level, the ring, and the
/// journal or stderr as `target` says. Returns what was chosen, for the first log line.
pub fn init(target: LogTarget, verbose: u8) -> &'static str {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let journald = match target {
        LogTarget::Stderr => None,
        LogTarget::Auto if !stderr_is_journal() => None,
        LogTarget::Auto | LogTarget::Journald => match tracing_journald::layer() {
            // `server` becomes SERVER=, `session` SESSION= (no `F_` prefix).
            Ok(layer) => Some(
                layer
                    .with_field_prefix(None)
                    .with_syslog_identifier("mcpd".into()),
            ),
            Err(e) => {
                eprintln!("mcpd: cannot reach journald ({e}); logging to stderr");
                None
            }
        },
    };
    let chosen = if journald.is_some() {
        "journald"
    } else {
        "stderr"
    };
    let stderr = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(|| RedactingWriter(std::io::stderr()))
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
    });
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(RingLayer { ring: ring() })
        .with(journald)
        .with(stderr)
        .try_init();
    if let Err(e) = installed {
        eprintln!("mcpd: logging was set up already: {e}");
    }
    chosen
}

/// Writes what the `fmt` layer formats (one whole line per write) with every known secret
/// redacted ([`crate::redact`]).
struct RedactingWriter<W>(W);

impl<W: std::io::Write> std::io::Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) => {
                let redacted = crate::redact::Redactor::process().redact(text);
                self.0.write_all(redacted.as_bytes())?;
                Ok(buf.len())
            }
            Err(_) => self.0.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Whether stderr is the journal's stream: `JOURNAL_STREAM` is `DEV:INODE` of the stream
/// systemd connected, and it must be stderr itself (not a pipe something else set up later).
pub(crate) fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2")
        .or_else(|_| std::fs::metadata("/dev/fd/2"))
        .or_else(|_| std::fs::metadata("/dev/stderr"))
    else {
        return false;
    };
    journal_stream_matches(&value.to_string_lossy(), meta.dev(), meta.ino())
}

/// Whether a `JOURNAL_STREAM` value (`DEV:INODE`, decimal) names the file `dev`/`ino`.
pub(crate) fn journal_stream_matches(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.trim().split_once(':') else {
        return false;
    };
    d.parse::<u64>() == Ok(dev) && i.parse::<u64>() == Ok(ino)
}

/// The tracing layer that copies each event into a [`LogRing`].
#[derive(Debug)]
pub(crate) struct RingLayer {
    ring: &'static LogRing,
}

impl RingLayer {
    /// A layer that fills `ring`.
    #[cfg(test)]
    pub fn new(ring: &'static LogRing) -> Self {
        Self { ring }
    }
}

/// `server` and `session` recorded on a span, so that events inside it carry them too.
#[derive(Debug, Default, Clone)]
struct SpanTags {
    server: Option<String>,
    session: Option<u64>,
}

impl<S> Layer<S> for RingLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let mut visitor = LineVisitor::default();
        attrs.record(&mut visitor);
        if visitor.server.is_none() && visitor.session.is_none() {
            return;
        }
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanTags {
                server: visitor.server,
                session: visitor.session,
            });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut visitor = LineVisitor::default();
        event.record(&mut visitor);
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                if let Some(tags) = span.extensions().get::<SpanTags>() {
                    visitor.server = visitor.server.or_else(|| tags.server.clone());
                    visitor.session = visitor.session.or(tags.session);
                }
            }
        }
        let meta = event.metadata();
        let mut message = visitor.message;
        if !visitor.fields.is_empty() {
            if !message.is_empty() {
                message.push(' ');
            }
            message.push_str(&visitor.fields);
        }
        let mut message = crate::redact::Redactor::process().redact_owned(message);
        truncate(&mut message, MAX_MESSAGE);
        self.ring.push(LogLine {
            seq: 0,
            time_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            level: meta.level().as_str().to_owned(),
            target: meta.target().to_owned(),
            server: visitor.server,
            session: visitor.session,
            message,
        });
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut.
fn truncate(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(" [cut]");
}

#[derive(Debug, Default)]
struct LineVisitor {
    message: String,
    fields: String,
    server: Option<String>,
    session: Option<u64>,
}

impl LineVisitor {
    fn other(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if !self.fields.is_empty() {
            self.fields.push(' ');
        }
        let _ = write!(self.fields, "{}={}", field.name(), value);
    }
}

impl Visit for LineVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            "server" => self.server = Some(value.to_owned()),
            "session" => match value.parse() {
                Ok(id) => self.session = Some(id),
                Err(_) => self.other(field, format_args!("{value}")),
            },
            _ => self.other(field, format_args!("{value}")),
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "session" => self.session = Some(value),
            _ => self.other(field, format_args!("{value}")),
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        match (field.name(), u64::try_from(value)) {
            ("session", Ok(id)) => self.session = Some(id),
            _ => self.other(field, format_args!("{value}")),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            // `server = %name` arrives here as Display wrapped in Debug.
            "server" => self.server = Some(format!("{value:?}")),
            "session" => {
                let text = format!("{value:?}");
                match text.parse() {
                    Ok(id) => self.session = Some(id),
                    Err(_) => self.other(field, format_args!("{text}")),
                }
            }
            _ => self.other(field, format_args!("{value:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    fn leaked_ring(capacity: usize) -> &'static LogRing {
        Box::leak(Box::new(LogRing::new(capacity)))
    }

    #[test]
    fn events_are_captured_with_server_and_session() {
        let ring = leaked_ring(10);
        let subscriber = tracing_subscriber::registry().with(RingLayer::new(ring));
        tracing::subscriber::with_default(subscriber, || {
            let name = String::from("github");
            tracing::info!(server = %name, pid = 42, "started `{}`", "npx");
            tracing::warn!(session = 7u64, "client went away");
            let span = tracing::info_span!("session", session = 9u64, server = "notion");
            let _entered = span.enter();
            tracing::debug!("inside a span");
        });
        let lines = ring.snapshot(None);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].server.as_deref(), Some("github"));
        assert_eq!(lines[0].message, "started `npx` pid=42");
        assert_eq!(lines[0].level, "INFO");
        assert_eq!(
            (lines[1].session, lines[1].server.as_deref()),
            (Some(7), None)
        );
        assert_eq!(
            (lines[2].session, lines[2].server.as_deref()),
            (Some(9), Some("notion"))
        );
        assert_eq!(
            lines.iter().map(|l| l.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(ring.snapshot(Some("github")).len(), 1);
    }

    #[test]
    fn known_secrets_are_redacted_from_ring_lines() {
        let ring = leaked_ring(10);
        let redactor = crate::redact::Redactor::process();
        redactor.set(
            "logging-test",
            vec![(
                "LOG_TEST_KEY".into(),
                secrecy::SecretString::from("sk-logging-test-1234567".to_owned()),
            )],
        );
        let subscriber = tracing_subscriber::registry().with(RingLayer::new(ring));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                server = "s",
                "upstream said: key sk-logging-test-1234567 refused"
            );
        });
        redactor.set("logging-test", Vec::new());
        assert_eq!(
            ring.snapshot(None)[0].message,
            "upstream said: key [redacted:LOG_TEST_KEY] refused"
        );
    }

    #[test]
    fn the_ring_is_bounded_and_drops_the_oldest() {
        let ring = leaked_ring(3);
        let subscriber = tracing_subscriber::registry().with(RingLayer::new(ring));
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..5 {
                tracing::info!("line {i}");
            }
        });
        let messages: Vec<String> = ring.snapshot(None).into_iter().map(|l| l.message).collect();
        assert_eq!(messages, ["line 2", "line 3", "line 4"]);
    }

    #[test]
    fn followers_get_new_lines() {
        let ring = leaked_ring(3);
        let mut feed = ring.subscribe();
        let subscriber = tracing_subscriber::registry().with(RingLayer::new(ring));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(server = "a", "hello");
        });
        let line = feed.try_recv().unwrap();
        assert_eq!((line.message.as_str(), line.seq), ("hello", 1));
    }

    #[test]
    fn snapshots_are_limited_and_batched_under_a_byte_cap() {
        let ring = leaked_ring(100);
        let subscriber = tracing_subscriber::registry().with(RingLayer::new(ring));
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..50 {
                tracing::info!(server = "s", "line {i:02}");
            }
        });
        let one = serde_json::to_string(&ring.snapshot(None)[49])
            .unwrap()
            .len()
            + 1;
        let batches = ring.snapshot_batches(Some("s"), Some(10), one * 4);
        assert_eq!(
            batches.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![4, 4, 2]
        );
        assert_eq!(batches[0][0].message, "line 40");
        assert_eq!(
            ring.snapshot_batches(Some("other"), None, 1000),
            vec![Vec::new()]
        );
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let mut s = "é".repeat(10);
        truncate(&mut s, 5);
        assert_eq!(s, "éé [cut]");
    }

    #[test]
    fn journal_stream_must_name_stderr() {
        assert!(journal_stream_matches("8:1234", 8, 1234));
        assert!(!journal_stream_matches("8:1234", 8, 1235));
        assert!(!journal_stream_matches("garbage", 8, 1234));
        assert!(!journal_stream_matches("", 0, 0));
    }
}
