//! A session's way out to its client, bounded by bytes.
//!
//! Every line for a client (answers, notifications, server requests) goes through its
//! [`Outbox`] to the session's writer task. The [`Budget`] counts the bytes queued for the
//! client and the bytes of the client's requests in flight. Past the budget the session stops
//! reading the client's requests (backpressure: the client, or its shim, blocks on a full
//! socket), and a client that still does not read for `clientStallMs` has its session closed.
//! Answers already on their way when the budget is crossed are queued up to twice the budget;
//! past that each is replaced by a short error for its id, so that a client that never reads
//! costs the daemon a bounded amount of memory whatever it asked for. Other sessions never
//! wait on this one: upstream actors only ever `try_send`, and the counters are per session.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use mcpd_proto::envelope::{self, Envelope};
use serde_json::value::RawValue;
use tokio::sync::{Notify, mpsc};

/// Lines queued for the client before senders wait (or, for notifications, drop), whatever
/// their size: room for the answers of every request in flight (at most 1024) on top of
/// [`PAUSE_LINES`], so that the session loop itself never waits on a full queue.
const OUT_QUEUE: usize = 4096;
/// Lines queued at which the session stops reading its client, however small they are (a
/// client that sends `ping`s and never reads).
const PAUSE_LINES: usize = 2048;
/// What a request in flight holds of the budget at least: its answer's size is not known
/// until it comes. A budget of 4 MiB lets 16 requests of a session run at once, which bounds
/// the upstream work a client that does not read can leave queued before others' requests.
const REQUEST_RESERVE: usize = 256 * 1024;
/// Lines shorter than this are always queued (errors, small answers, notifications): the
/// replacement of a dropped answer must get through.
const SMALL_LINE: usize = 4096;

/// Byte accounting of one session.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    /// Bytes handed to the outbox and not yet written to the socket.
    queued: AtomicUsize,
    /// Lines handed to the outbox and not yet written.
    lines: AtomicUsize,
    /// Bytes of the client's requests in flight.
    requests: AtomicUsize,
    /// Bytes written to the socket so far (progress, for the stall check).
    written: AtomicU64,
    /// Woken when bytes were written or released.
    progress: Notify,
    /// An answer was already dropped in this session (logged once).
    dropped_once: AtomicBool,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            queued: AtomicUsize::new(0),
            lines: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            written: AtomicU64::new(0),
            progress: Notify::new(),
            dropped_once: AtomicBool::new(false),
        })
    }

    /// The budget in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held for the client: queued output and requests in flight.
    pub fn used(&self) -> usize {
        self.queued.load(Ordering::Relaxed) + self.requests.load(Ordering::Relaxed)
    }

    /// Whether the session should stop reading its client's requests.
    pub fn over(&self) -> bool {
        self.used() >= self.limit || self.lines.load(Ordering::Relaxed) >= PAUSE_LINES
    }

    /// Bytes written to the client so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Waits until bytes were written or released.
    pub async fn progressed(&self) {
        self.progress.notified().await;
    }

    /// Whether output is waiting for the client.
    pub fn has_output(&self) -> bool {
        self.lines.load(Ordering::Relaxed) > 0
    }

    /// Counts a request of `bytes` in flight (at least [`REQUEST_RESERVE`], for its answer)
    /// until the returned guard is dropped.
    pub fn request(self: &Arc<Self>, bytes: usize) -> RequestBytes {
        let bytes = bytes.max(REQUEST_RESERVE);
        self.requests.fetch_add(bytes, Ordering::Relaxed);
        RequestBytes {
            budget: Arc::clone(self),
            bytes,
        }
    }

    fn hold(&self, bytes: usize) {
        self.queued.fetch_add(bytes, Ordering::Relaxed);
        self.lines.fetch_add(1, Ordering::Relaxed);
    }

    fn unhold(&self, bytes: usize) {
        self.queued.fetch_sub(bytes, Ordering::Relaxed);
        self.lines.fetch_sub(1, Ordering::Relaxed);
    }

    fn release_queued(&self, bytes: usize) {
        self.unhold(bytes);
        self.written.fetch_add(bytes as u64, Ordering::Relaxed);
        self.progress.notify_one();
    }
}

/// A request's bytes, counted while it is in flight.
#[derive(Debug)]
pub struct RequestBytes {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Drop for RequestBytes {
    fn drop(&mut self) {
        self.budget
            .requests
            .fetch_sub(self.bytes, Ordering::Relaxed);
        self.budget.progress.notify_one();
    }
}

/// The sending side of a session's output. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<String>,
    budget: Arc<Budget>,
    session: u64,
}

impl Outbox {
    /// An outbox for session `session` with a budget of `limit` bytes, and the receiver its
    /// writer task reads (see [`write_lines`]).
    pub fn new(session: u64, limit: usize) -> (Self, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel(OUT_QUEUE);
        let outbox = Self {
            tx,
            budget: Budget::new(limit),
            session,
        };
        (outbox, rx)
    }

    /// The session's byte accounting.
    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    /// Queues a line (an answer) for the client, waiting while the line queue is full. An
    /// answer that would take the queue past twice the budget is replaced by an error for its
    /// id: the client is not reading, and memory stays bounded.
    pub async fn send(&self, line: String) {
        self.send_answer(line, None).await;
    }

    /// [`Outbox::send`] for an answer whose `id` the caller knows (so that a dropped one is
    /// not parsed to find it).
    pub async fn send_answer(&self, line: String, id: Option<&RawValue>) {
        let line = self.admit(line, id);
        let len = line.len() + 1;
        self.budget.hold(len);
        if self.tx.send(line).await.is_err() {
            // The writer only goes away with the connection, when nobody is left to tell.
            self.budget.unhold(len);
        }
    }

    /// Queues a line without waiting; `false` if the queue is full, over twice the budget or
    /// gone. Used for notifications and server requests, which must never block an upstream.
    pub fn try_send(&self, line: String) -> bool {
        let len = line.len() + 1;
        if len > SMALL_LINE
            && self.budget.queued.load(Ordering::Relaxed) + len > 2 * self.budget.limit
        {
            return false;
        }
        self.budget.hold(len);
        if self.tx.try_send(line).is_err() {
            self.budget.unhold(len);
            return false;
        }
        true
    }

    /// Whether the session is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    fn admit(&self, line: String, id: Option<&RawValue>) -> String {
        let queued = self.budget.queued.load(Ordering::Relaxed);
        if line.len() < SMALL_LINE || queued + line.len() <= 2 * self.budget.limit {
            return line;
        }
        let message = format!(
            "mcpd dropped this answer of {} bytes: the client is not reading what it asked for ({queued} bytes are waiting for it; the session's budget is {} bytes)",
            line.len(),
            self.budget.limit
        );
        if !self.budget.dropped_once.swap(true, Ordering::Relaxed) {
            tracing::warn!(session = self.session, "{message}");
        }
        let parsed;
        let id = match id {
            Some(id) => Some(id),
            None => {
                parsed = Envelope::parse(&line)
                    .ok()
                    .and_then(|m| m.id.map(RawValue::to_owned));
                parsed.as_deref()
            }
        };
        envelope::error_response(id, envelope::INTERNAL_ERROR, &message)
    }
}

/// How many bytes of queued lines the writer gathers into one write.
const WRITE_BATCH: usize = 64 * 1024;
/// The largest buffer the writer keeps while its client is quiet.
const KEPT_BUFFER: usize = 4 * 1024;

/// The writer task: writes queued lines to the client, batching what is already queued into one
/// write, and releases their bytes as they go out. Its buffer grows with the batch and is let
/// go after a large one (a session used to hold a 64 KiB buffer for its whole life); a line
/// of a batch's size or more is written from where it is, not copied.
pub async fn write_lines<W: tokio::io::AsyncWrite + Unpin>(
    mut writer: W,
    mut rx: mpsc::Receiver<String>,
    budget: Arc<Budget>,
    tap: impl Fn(&str),
) {
    use tokio::io::AsyncWriteExt;
    let mut buf: Vec<u8> = Vec::new();
    while let Some(mut line) = rx.recv().await {
        loop {
            tap(&line);
            let len = line.len() + 1;
            if line.len() >= WRITE_BATCH {
                // Too large to copy: what is gathered goes first, then the line itself.
                let ok = writer.write_all(&buf).await.is_ok()
                    && writer.write_all(line.as_bytes()).await.is_ok()
                    && writer.write_all(b"\n").await.is_ok();
                buf.clear();
                drop(line);
                budget.release_queued(len);
                if !ok {
                    return;
                }
            } else {
                buf.extend_from_slice(line.as_bytes());
                buf.push(b'\n');
                drop(line);
                budget.release_queued(len);
            }
            if buf.len() >= WRITE_BATCH {
                break;
            }
            match rx.try_recv() {
                Ok(next) => line = next,
                Err(_) => break,
            }
        }
        if !buf.is_empty() && writer.write_all(&buf).await.is_err() {
            return;
        }
        buf.clear();
        if buf.capacity() > KEPT_BUFFER {
            buf = Vec::new();
        }
    }
    let _ = writer.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn past_twice_the_budget_an_answer_becomes_an_error_for_its_id() {
        let (outbox, mut rx) = Outbox::new(1, 10_000);
        let big = format!(
            r#"{{"jsonrpc":"2.0","id":7,"result":{{"t":"{}"}}}}"#,
            "x".repeat(15_000)
        );
        outbox.send(big.clone()).await;
        assert_eq!(rx.recv().await.as_deref(), Some(big.as_str()));
        assert!(outbox.budget().over(), "queued until written");
        outbox.send(big.clone()).await;
        let replaced = rx.recv().await.unwrap();
        assert!(
            replaced.contains(r#""id":7"#) && replaced.contains("-32603"),
            "{replaced}"
        );
        // Notifications past the limit are dropped; small ones still go.
        assert!(!outbox.try_send(big));
        assert!(outbox.try_send("{}".into()));
    }

    #[test]
    fn request_bytes_count_while_in_flight() {
        let budget = Budget::new(REQUEST_RESERVE);
        let guard = budget.request(150);
        assert!(budget.over(), "a request reserves room for its answer");
        drop(guard);
        assert!(!budget.over());
    }
}
