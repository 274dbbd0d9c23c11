//! The audit log: one JSON line per client request mcpd handled or forwarded, in
//! `$XDG_STATE_HOME/mcpd/audit/` (directory 0700, files 0600).
//!
//! Sessions never wait for it: a finished request is pushed onto a bounded queue (a vector
//! under a mutex the writer swaps out whole, so a record costs no allocation and crosses to
//! the writer by value); when the writer falls behind the line is counted as dropped, and the
//! next line written is preceded by one that says how many were lost. The writer is a thread of
//! its own (plain blocking file I/O): it serialises, redacts arguments (only recorded with
//! `"audit": {"arguments": true}`), appends to `audit.jsonl`, flushes whenever the queue is
//! empty, renames the file to `audit-<ms>.jsonl` when it reaches `maxFileBytes`, and deletes
//! rotated files older than `keepDays`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use mcpd_proto::observe::AuditRecord;

use super::audit_line::Line;
use super::text::Text;
use crate::config::observe::AuditOptions;

/// Lines queued for the writer before new ones are dropped. The queue grows to what a spell
/// of calls needs (not to this bound at once: a queue of whole entries made of preallocated
/// slots would be megabytes of the daemon's resident memory, idle or not), and the writer gives
/// back a batch vector of more than [`KEEP_BATCH`] entries once it is written.
pub const QUEUE: usize = 8192;
/// Entries a batch vector keeps room for between spells.
const KEEP_BATCH: usize = 1024;
/// How long the writer lets lines gather after the first one of a spell (see `Writer::run`).
const GATHER: Duration = Duration::from_millis(2);
/// The largest line buffer the writer keeps between lines.
const LINE_BUFFER: usize = 16 * 1024;
/// The file being written.
pub const CURRENT: &str = "audit.jsonl";

/// One finished request, as the session hands it over: the members of its line, the texts
/// inline (see `text`), the client and profile `who`'s.
#[derive(Debug, Default)]
pub struct Entry {
    /// When the request arrived (its `time` is written from it).
    pub time_ms: u64,
    /// The daemon's session id.
    pub session: u64,
    /// Pid of the client process.
    pub pid: Option<u32>,
    /// The JSON-RPC method.
    pub method: Text,
    /// Tool or prompt name (as the client named it) or resource URI.
    pub name: Option<Text>,
    /// The upstream server the request went to.
    pub server: Option<Text>,
    /// Milliseconds from the request to its answer.
    pub duration_ms: f64,
    /// `ok`, `error` or `cancelled`.
    pub outcome: &'static str,
    /// The JSON-RPC error code, for errors.
    pub error_code: Option<i64>,
    /// A tool result with `isError: true`.
    pub tool_error: bool,
    /// Bytes of the request.
    pub bytes_in: usize,
    /// Bytes of the answer.
    pub bytes_out: usize,
    /// The request's raw arguments, when they are to be recorded.
    pub arguments: Option<String>,
    /// Who asked: the session's, shared by its records rather than copied into each.
    pub who: Who,
}

/// The client and profile of a session, written into each of its records' lines (where the
/// record leaves them empty: see `audit_line::write`).
#[derive(Debug, Clone, Default)]
pub struct Who {
    /// `clientInfo.name`.
    pub client: Option<Arc<str>>,
    /// `clientInfo.version`.
    pub client_version: Option<Arc<str>>,
    /// The profile the session attached to.
    pub profile: Option<Arc<str>>,
}

/// The sending side, shared by every session.
#[derive(Debug)]
pub struct AuditLog {
    queue: Option<Arc<Queue>>,
    dropped: Arc<AtomicU64>,
    options: Arc<RwLock<AuditOptions>>,
}

/// Entries on their way to the writer.
#[derive(Debug, Default)]
struct Queue {
    state: Mutex<Queued>,
    /// Signalled when the first entry of a spell arrives, and when the log closes.
    ready: Condvar,
}

#[derive(Debug, Default)]
struct Queued {
    entries: Vec<Entry>,
    /// The sending side is gone: the writer writes what is left and ends.
    closed: bool,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl AuditLog {
    /// Starts the writer thread for `dir`.
    pub fn start(dir: PathBuf, redactor: crate::redact::Redactor) -> Self {
        let queue = Arc::new(Queue::default());
        let dropped = Arc::new(AtomicU64::new(0));
        let options = Arc::new(RwLock::new(AuditOptions::default()));
        let writer = Writer {
            dir,
            file: None,
            size: 0,
            dropped: Arc::clone(&dropped),
            reported: 0,
            options: Arc::clone(&options),
            redactor,
            last_prune: None,
            line: Vec::new(),
            clock: Default::default(),
        };
        let theirs = Arc::clone(&queue);
        let spawned = std::thread::Builder::new()
            .name("mcpd-audit".into())
            .spawn(move || writer.run(&theirs));
        let queue = match spawned {
            Ok(_) => Some(queue),
            Err(e) => {
                tracing::error!("cannot start the audit writer: {e}; no audit log is written");
                None
            }
        };
        Self {
            queue,
            dropped,
            options,
        }
    }

    /// The settings in force (the catalog task updates them after each load).
    pub fn set_options(&self, options: &AuditOptions) {
        let mut current = self.options.write().unwrap_or_else(|e| e.into_inner());
        if *current != *options {
            *current = options.clone();
        }
    }

    /// Whether arguments are to be recorded.
    pub fn arguments(&self) -> bool {
        let options = self.options.read().unwrap_or_else(|e| e.into_inner());
        options.enabled && options.arguments
    }

    /// Whether the log is written at all.
    pub fn enabled(&self) -> bool {
        self.options
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .enabled
    }

    /// Queues one line; never waits (but for the writer taking a batch: a swap of vectors).
    pub fn record(&self, entry: Entry) {
        let Some(queue) = &self.queue else { return };
        let mut queued = queue.lock();
        if queued.entries.len() >= QUEUE {
            drop(queued);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let first = queued.entries.is_empty();
        queued.entries.push(entry);
        drop(queued);
        if first {
            // The writer waits for a spell's first line only (see `Writer::run`).
            queue.ready.notify_one();
        }
    }

    /// Lines dropped since the daemon started.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        if let Some(queue) = &self.queue {
            queue.lock().closed = true;
            queue.ready.notify_one();
        }
    }
}

struct Writer {
    dir: PathBuf,
    file: Option<BufWriter<File>>,
    size: u64,
    dropped: Arc<AtomicU64>,
    /// Drops already reported in the file.
    reported: u64,
    options: Arc<RwLock<AuditOptions>>,
    redactor: crate::redact::Redactor,
    last_prune: Option<SystemTime>,
    /// The line being written, reused (see `audit_line`).
    line: Vec<u8>,
    /// Writes the `time` of records (see `audit_line::Clock`).
    clock: super::audit_line::Clock,
}

impl Writer {
    fn run(mut self, queue: &Queue) {
        let mut batch = Vec::new();
        loop {
            {
                let mut queued = queue.lock();
                while queued.entries.is_empty() && !queued.closed {
                    queued = queue.ready.wait(queued).unwrap_or_else(|e| e.into_inner());
                }
                if queued.entries.is_empty() {
                    break;
                }
            }
            // Let the lines of a busy spell gather before writing them: while this thread
            // sleeps rather than waits, sessions queue lines without waking it (one futex
            // wake-up and one write per call otherwise, callgrind and strace of the daemon:
            // docs/BENCHMARKS.md "Hot path"). An idle daemon never wakes it.
            std::thread::sleep(GATHER);
            std::mem::swap(&mut queue.lock().entries, &mut batch);
            for entry in batch.drain(..) {
                self.write(entry);
            }
            if batch.capacity() > KEEP_BATCH {
                batch = Vec::new();
            }
            if let Some(file) = self.file.as_mut()
                && let Err(e) = file.flush()
            {
                tracing::warn!("cannot write the audit log: {e}");
                self.file = None;
            }
        }
        if let Some(mut file) = self.file.take() {
            let _ = file.flush();
        }
    }

    fn options(&self) -> AuditOptions {
        self.options
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn write(&mut self, entry: Entry) {
        let options = self.options();
        if !options.enabled {
            return;
        }
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > self.reported {
            let note = AuditRecord {
                time_ms: entry.time_ms,
                method: "(audit)".into(),
                outcome: "dropped".into(),
                dropped: Some(dropped - self.reported),
                ..AuditRecord::default()
            };
            self.reported = dropped;
            let who = Who::default();
            self.append(&Line::of(&note, &who), &options);
        }
        let arguments = entry
            .arguments
            .as_deref()
            .filter(|_| options.arguments)
            .map(|arguments| {
                let redacted = self.redactor.redact(arguments);
                serde_json::from_str(&redacted)
                    .unwrap_or_else(|_| serde_json::Value::String(redacted.into_owned()))
            });
        let who = &entry.who;
        let line = Line {
            time: "",
            time_ms: entry.time_ms,
            session: entry.session,
            client: who.client.as_deref(),
            client_version: who.client_version.as_deref(),
            pid: entry.pid,
            profile: who.profile.as_deref().unwrap_or_default(),
            server: entry.server.as_ref().map(Text::as_bytes),
            method: entry.method.as_bytes(),
            name: entry.name.as_ref().map(Text::as_bytes),
            duration_ms: entry.duration_ms,
            outcome: entry.outcome,
            error_code: entry.error_code,
            tool_error: entry.tool_error,
            bytes_in: entry.bytes_in,
            bytes_out: entry.bytes_out,
            arguments: arguments.as_ref(),
            dropped: None,
        };
        self.append(&line, &options);
    }

    fn append(&mut self, line: &Line<'_>, options: &AuditOptions) {
        self.line.clear();
        super::audit_line::write_line(&mut self.line, line, &mut self.clock);
        self.line.push(b'\n');
        let len = self.line.len() as u64;
        if self.size + len > options.max_file_bytes && self.size > 0 {
            self.rotate(options);
        }
        if self.file.is_none() {
            self.open(options);
        }
        let Some(file) = self.file.as_mut() else {
            return;
        };
        match file.write_all(&self.line) {
            Ok(()) => self.size += len,
            Err(e) => {
                tracing::warn!("cannot write the audit log: {e}");
                self.file = None;
            }
        }
        if self.line.capacity() > LINE_BUFFER {
            // A record with large arguments: its buffer is not kept.
            self.line = Vec::new();
        }
    }

    fn open(&mut self, options: &AuditOptions) {
        if let Err(e) = super::create_private_dir(&self.dir) {
            tracing::warn!("cannot create {}: {e}", self.dir.display());
            return;
        }
        let path = self.dir.join(CURRENT);
        let opened = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path);
        match opened {
            Ok(file) => {
                let _ = file.set_permissions(std::fs::Permissions::from_mode(0o600));
                self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
                self.file = Some(BufWriter::with_capacity(64 * 1024, file));
            }
            Err(e) => tracing::warn!("cannot open {}: {e}", path.display()),
        }
        let hourly = self
            .last_prune
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|e| e > Duration::from_secs(3600));
        if hourly {
            prune(&self.dir, options.keep_days);
            self.last_prune = Some(SystemTime::now());
        }
    }

    fn rotate(&mut self, options: &AuditOptions) {
        if let Some(mut file) = self.file.take() {
            let _ = file.flush();
        }
        let from = self.dir.join(CURRENT);
        // Named by the time; two rotations within one millisecond take the next free one.
        let mut ms = mcpd_proto::observe::now_ms();
        let mut to = self.dir.join(format!("audit-{ms}.jsonl"));
        while to.exists() {
            ms += 1;
            to = self.dir.join(format!("audit-{ms}.jsonl"));
        }
        if let Err(e) = std::fs::rename(&from, &to) {
            tracing::warn!("cannot rotate {}: {e}", from.display());
        }
        self.size = 0;
        prune(&self.dir, options.keep_days);
        self.last_prune = Some(SystemTime::now());
    }
}

/// Deletes rotated files last written more than `keep_days` ago.
fn prune(dir: &Path, keep_days: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let keep = Duration::from_secs(keep_days.saturating_mul(86_400));
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("audit-") && name.ends_with(".jsonl")) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > keep);
        if old {
            if let Err(e) = std::fs::remove_file(entry.path()) {
                tracing::warn!("cannot delete the old audit file {name}: {e}");
            } else {
                tracing::info!("deleted the audit file {name} (older than {keep_days} days)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn entry(n: u64) -> Entry {
        Entry {
            time_ms: n,
            method: Text::new("tools/call"),
            outcome: "ok",
            name: Some(Text::new(&format!("t{n}"))),
            arguments: Some(r#"{"token":"s3cr3t-value"}"#.into()),
            ..Entry::default()
        }
    }

    fn lines(dir: &Path) -> Vec<String> {
        let mut all = Vec::new();
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        for f in files {
            all.extend(
                std::fs::read_to_string(f)
                    .unwrap()
                    .lines()
                    .map(str::to_owned),
            );
        }
        all
    }

    #[test]
    fn files_rotate_by_size_and_arguments_are_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit");
        let redactor = crate::redact::Redactor::new();
        redactor.set(
            "test",
            vec![("api".into(), secrecy::SecretString::from("s3cr3t-value"))],
        );
        let mut writer = Writer {
            dir: audit.clone(),
            file: None,
            size: 0,
            dropped: Arc::new(AtomicU64::new(0)),
            reported: 0,
            options: Arc::new(RwLock::new(AuditOptions {
                arguments: true,
                max_file_bytes: 4096,
                ..AuditOptions::default()
            })),
            redactor,
            last_prune: None,
            line: Vec::new(),
            clock: Default::default(),
        };
        for n in 0..100 {
            writer.write(entry(n));
        }
        writer.file.take().unwrap().flush().unwrap();
        let files = std::fs::read_dir(&audit).unwrap().count();
        assert!(files > 1, "no rotation: {files} file(s)");
        let all = lines(&audit);
        assert_eq!(all.len(), 100);
        assert!(
            all.iter()
                .all(|l| l.contains("[redacted:api]") && !l.contains("s3cr3t"))
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&audit).unwrap().mode() & 0o777, 0o700);
        assert_eq!(
            std::fs::metadata(audit.join(CURRENT)).unwrap().mode() & 0o777,
            0o600
        );
    }

    /// Waits (at most 10 s) until the audit file in `dir` has `n` lines, and returns them.
    fn wait_lines(dir: &Path, n: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let found = std::fs::read_to_string(dir.join(CURRENT)).unwrap_or_default();
            let lines: Vec<String> = found.lines().map(str::to_owned).collect();
            if lines.len() >= n || std::time::Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn entries_queued_in_two_spells_are_written_in_order_each_with_only_its_own_texts() {
        let dir = tempfile::tempdir().unwrap();
        let audit = AuditLog::start(dir.path().to_owned(), crate::redact::Redactor::new());
        let named = |n: u64, name: &str| Entry {
            time_ms: n,
            session: n,
            method: Text::new(if n.is_multiple_of(2) {
                "tools/call"
            } else {
                "prompts/get"
            }),
            name: Some(Text::new(name)),
            server: (n.is_multiple_of(2)).then(|| Text::new("a-server-with-a-long-name")),
            outcome: "ok",
            ..Entry::default()
        };
        // The first spell's names are long, the second's short: a reused batch or slot that
        // kept bytes of the one before would show them.
        for n in 0..3 {
            audit.record(named(n, &format!("{}-{n}", "long".repeat(12))));
        }
        let first = wait_lines(dir.path(), 3);
        assert_eq!(first.len(), 3, "{first:?}");
        for n in 3..6 {
            audit.record(named(n, &format!("s{n}")));
        }
        let all = wait_lines(dir.path(), 6);
        assert_eq!(all.len(), 6, "{all:?}");
        for (n, line) in all.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["session"], n, "{line}");
            let name = if n < 3 {
                format!("{}-{n}", "long".repeat(12))
            } else {
                format!("s{n}")
            };
            assert_eq!(v["name"], name.as_str(), "{line}");
            let method = if n % 2 == 0 {
                "tools/call"
            } else {
                "prompts/get"
            };
            assert_eq!(v["method"], method, "{line}");
            assert_eq!(v.get("server").is_some(), n % 2 == 0, "{line}");
        }
        assert_eq!(audit.dropped(), 0);
    }

    #[test]
    fn drops_are_counted_and_written_down() {
        let dir = tempfile::tempdir().unwrap();
        let dropped = Arc::new(AtomicU64::new(0));
        let mut writer = Writer {
            dir: dir.path().to_owned(),
            file: None,
            size: 0,
            dropped: Arc::clone(&dropped),
            reported: 0,
            options: Arc::new(RwLock::new(AuditOptions::default())),
            redactor: crate::redact::Redactor::new(),
            last_prune: None,
            line: Vec::new(),
            clock: Default::default(),
        };
        dropped.store(7, Ordering::Relaxed);
        writer.write(entry(1));
        writer.file.take().unwrap().flush().unwrap();
        let all = lines(dir.path());
        assert!(all[0].contains(r#""dropped":7"#), "{all:?}");
        assert!(
            !all[1].contains("arguments"),
            "arguments recorded by default: {all:?}"
        );
    }
}
