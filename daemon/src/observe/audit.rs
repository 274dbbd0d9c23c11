//! The audit log: one JSON line per client request mcpd handled or forwarded, in
//! `$XDG_STATE_HOME/mcpd/audit/` (directory 0700, files 0600).
//!
//! Sessions never wait for it: a finished request is pushed onto a bounded queue (a vector
//! under a mutex the writer swaps out whole, so a record costs no allocation and crosses to
//! the writer by value); when the writer falls behind the line is counted as dropped, and the
//! next line written is preceded by one that says how many were lost. The writer is a thread of
//! its own (plain blocking file I/O): every [`GATHER`] while lines keep coming (woken only by
//! the first line after a quiet spell), it serialises what gathered, redacts arguments (only
//! recorded with `"audit": {"arguments": true}`), appends them to `audit.jsonl` with one
//! `write`, renames the file to `audit-<ms>.jsonl` when it reaches `maxFileBytes`, and deletes
//! rotated files older than `keepDays`.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use mcpd_proto::observe::AuditRecord;

use super::audit_line::Line;
use super::text::Text;
use crate::config::observe::AuditOptions;

/// Lines queued for the writer before new ones are dropped. The queue grows to what a spell
/// of calls needs (not to this bound at once: a queue of whole entries made of preallocated
/// slots would be megabytes of the daemon's resident memory, idle or not), and the writer gives
/// back a batch vector of more than [`KEEP_BATCH`] entries when a quiet spell begins.
pub const QUEUE: usize = 8192;
/// Entries a batch vector keeps room for between busy spells (see `Writer::trim`).
const KEEP_BATCH: usize = 1024;
/// How long the writer lets lines gather before it writes them (see `Writer::run`): also about
/// the most a crash of the daemon loses of the lines it had queued (those of the last GATHER,
/// and of a batch being written). Each batch costs a wake-up and a spell of writing that a call
/// waiting for the same CPU waits out, so the gathering trades how many calls wait (one in
/// every GATHER of calls) against how long (the batch's spell, about 0.35 µs a line): 3 ms of
/// the cheaper lines cost what 2 ms of the earlier ones did; 5 ms and 10 ms moved the batch
/// from p99 to p99.9, and writing a batch in chunks with a yield between them raised the p99
/// of calls under load (docs/BENCHMARKS.md "The audit writer, session 6").
const GATHER: Duration = Duration::from_millis(3);

/// How long a stopping daemon waits for the writer to write its last lines.
const LAST_WRITE: Duration = Duration::from_secs(2);
/// The largest batch buffer (the lines of one batch, written at once) the writer keeps between
/// busy spells; during one it keeps what the spell's batches need (at 100k calls/s, 3 ms of
/// lines are about 80 KiB).
const BATCH_BUFFER: usize = 64 * 1024;
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
    options: Arc<Options>,
    /// The writer thread, waited for when the log is dropped.
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The settings in force, read without a lock: by sessions twice per request (`enabled`,
/// `arguments`), by the writer once per batch.
#[derive(Debug)]
struct Options {
    enabled: AtomicBool,
    arguments: AtomicBool,
    keep_days: AtomicU64,
    max_file_bytes: AtomicU64,
}

impl Options {
    fn new(options: &AuditOptions) -> Self {
        Self {
            enabled: AtomicBool::new(options.enabled),
            arguments: AtomicBool::new(options.arguments),
            keep_days: AtomicU64::new(options.keep_days),
            max_file_bytes: AtomicU64::new(options.max_file_bytes),
        }
    }

    fn store(&self, options: &AuditOptions) {
        self.enabled.store(options.enabled, Ordering::Relaxed);
        self.arguments.store(options.arguments, Ordering::Relaxed);
        self.keep_days.store(options.keep_days, Ordering::Relaxed);
        self.max_file_bytes
            .store(options.max_file_bytes, Ordering::Relaxed);
    }

    fn load(&self) -> AuditOptions {
        AuditOptions {
            enabled: self.enabled.load(Ordering::Relaxed),
            arguments: self.arguments.load(Ordering::Relaxed),
            keep_days: self.keep_days.load(Ordering::Relaxed),
            max_file_bytes: self.max_file_bytes.load(Ordering::Relaxed),
        }
    }
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
    /// The writer waits on `ready` (it found the queue empty): the next entry wakes it.
    /// Otherwise it is sleeping or writing and comes back for the queue by itself, so a
    /// session pushes without a wake-up (a `futex` call on its thread, and on one CPU a switch
    /// to the writer and back in the middle of a call).
    idle: bool,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `entry`, waking the writer only if it waits for one (the first entry after a
    /// quiet spell): `Ok(true)` if it woke it, `Err` if the queue is full.
    fn push(&self, entry: Entry) -> Result<bool, ()> {
        let mut queued = self.lock();
        if queued.entries.len() >= QUEUE {
            return Err(());
        }
        queued.entries.push(entry);
        let wake = std::mem::take(&mut queued.idle);
        drop(queued);
        if wake {
            self.ready.notify_one();
        }
        Ok(wake)
    }
}

impl AuditLog {
    /// Starts the writer thread for `dir`.
    pub fn start(dir: PathBuf, redactor: crate::redact::Redactor) -> Self {
        let queue = Arc::new(Queue::default());
        let dropped = Arc::new(AtomicU64::new(0));
        let options = Arc::new(Options::new(&AuditOptions::default()));
        let writer = Writer::new(dir, Arc::clone(&dropped), Arc::clone(&options), redactor);
        let theirs = Arc::clone(&queue);
        let spawned = std::thread::Builder::new()
            .name("mcpd-audit".into())
            .spawn(move || writer.run(&theirs));
        let (queue, writer) = match spawned {
            Ok(handle) => (Some(queue), Some(handle)),
            Err(e) => {
                tracing::error!("cannot start the audit writer: {e}; no audit log is written");
                (None, None)
            }
        };
        Self {
            queue,
            dropped,
            options,
            writer: std::sync::Mutex::new(writer),
        }
    }

    /// The settings in force (the catalog task updates them after each load).
    pub fn set_options(&self, options: &AuditOptions) {
        self.options.store(options);
    }

    /// Whether arguments are to be recorded.
    pub fn arguments(&self) -> bool {
        self.options.enabled.load(Ordering::Relaxed)
            && self.options.arguments.load(Ordering::Relaxed)
    }

    /// Whether the log is written at all.
    pub fn enabled(&self) -> bool {
        self.options.enabled.load(Ordering::Relaxed)
    }

    /// Queues one line; never waits (but for the writer taking a batch: a swap of vectors).
    pub fn record(&self, entry: Entry) {
        let Some(queue) = &self.queue else { return };
        if queue.push(entry).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped since the daemon started.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for AuditLog {
    /// Has the writer write what it gathered and waits for it (at most [`LAST_WRITE`]): the
    /// daemon drops the log as it stops, and the lines of its last calls are written before
    /// the process exits (`observe::the_audit_lines_of_the_last_calls_before_a_sigterm_are_written`).
    fn drop(&mut self) {
        if let Some(queue) = &self.queue {
            queue.lock().closed = true;
            queue.ready.notify_one();
        }
        let writer = self
            .writer
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(writer) = writer {
            let deadline = std::time::Instant::now() + LAST_WRITE;
            while !writer.is_finished() {
                if std::time::Instant::now() >= deadline {
                    tracing::warn!(
                        "the audit writer did not finish within {}s; its last lines may be lost",
                        LAST_WRITE.as_secs()
                    );
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = writer.join();
        }
    }
}

struct Writer {
    dir: PathBuf,
    file: Option<File>,
    /// Bytes in the file, those of `batch` included.
    size: u64,
    dropped: Arc<AtomicU64>,
    /// Drops already reported in the file.
    reported: u64,
    options: Arc<Options>,
    redactor: crate::redact::Redactor,
    last_prune: Option<SystemTime>,
    /// The lines being written, reused (see `audit_line`): written to the file with one
    /// `write` when the batch is done (or before a rotation).
    batch: Vec<u8>,
    /// Writes the `time` of records (see `audit_line::Clock`).
    clock: super::audit_line::Clock,
    /// The members from `session` to `profile` of recent sessions' lines, already written.
    whos: Vec<Written>,
    /// The next of `whos` to be replaced when it is full.
    next_who: usize,
}

/// Sessions whose `who` members the writer keeps written (a batch of eight sessions' calls
/// finds all of theirs).
const WHOS: usize = 16;

/// A session's members from `session` to `profile`, as `audit_line::write_who` wrote them.
struct Written {
    session: u64,
    pid: Option<u32>,
    /// Holds the texts, so that a pointer equal to theirs is theirs (not a later allocation
    /// at the same address).
    who: Who,
    bytes: Vec<u8>,
}

impl Written {
    fn is_of(&self, entry: &Entry) -> bool {
        fn same(a: Option<&Arc<str>>, b: Option<&Arc<str>>) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
        }
        self.session == entry.session
            && self.pid == entry.pid
            && same(self.who.client.as_ref(), entry.who.client.as_ref())
            && same(
                self.who.client_version.as_ref(),
                entry.who.client_version.as_ref(),
            )
            && same(self.who.profile.as_ref(), entry.who.profile.as_ref())
    }
}

impl Writer {
    fn new(
        dir: PathBuf,
        dropped: Arc<AtomicU64>,
        options: Arc<Options>,
        redactor: crate::redact::Redactor,
    ) -> Self {
        Self {
            dir,
            file: None,
            size: 0,
            dropped,
            reported: 0,
            options,
            redactor,
            last_prune: None,
            batch: Vec::new(),
            clock: Default::default(),
            whos: Vec::new(),
            next_who: 0,
        }
    }

    fn run(mut self, queue: &Queue) {
        let mut entries = Vec::new();
        loop {
            let closed = {
                let mut queued = queue.lock();
                if queued.entries.is_empty() && !queued.closed {
                    // A quiet spell begins: give back what a busy one grew (kept while lines
                    // keep coming, so a busy spell does not allocate and free them per batch).
                    drop(queued);
                    self.trim(&mut entries);
                    queued = queue.lock();
                }
                while queued.entries.is_empty() && !queued.closed {
                    queued.idle = true;
                    queued = queue.ready.wait(queued).unwrap_or_else(|e| e.into_inner());
                }
                queued.idle = false;
                if queued.entries.is_empty() {
                    break;
                }
                queued.closed
            };
            // Let the lines of a busy spell gather before writing them: while this thread
            // sleeps or writes, sessions queue lines without waking it, and it comes back for
            // them every GATHER for as long as they keep coming (one wake-up and one `write`
            // per batch, none per call: docs/BENCHMARKS.md "The audit writer, session 6"). An
            // idle daemon never wakes it.
            if !closed {
                std::thread::sleep(GATHER);
            }
            std::mem::swap(&mut queue.lock().entries, &mut entries);
            self.write_batch(&mut entries);
        }
        self.flush();
    }

    /// Frees a batch vector or buffer a busy spell grew past what is kept between spells.
    fn trim(&mut self, entries: &mut Vec<Entry>) {
        if entries.capacity() > KEEP_BATCH {
            *entries = Vec::new();
        }
        if self.batch.capacity() > BATCH_BUFFER {
            self.batch = Vec::new();
        }
    }

    /// Writes `entries` (and empties it) with the settings in force.
    fn write_batch(&mut self, entries: &mut Vec<Entry>) {
        let options = self.options.load();
        if !options.enabled {
            entries.clear();
            return;
        }
        for entry in entries.drain(..) {
            self.write(entry, &options);
        }
        self.flush();
    }

    fn write(&mut self, entry: Entry, options: &AuditOptions) {
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
            self.append(&Line::of(&note, &who), options);
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
        let at = self.who_of(&entry);
        let written = std::mem::take(&mut self.whos[at].bytes);
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
            who: Some(&written),
        };
        self.append(&line, options);
        self.whos[at].bytes = written;
    }

    /// The index in `whos` of `entry`'s session's members, written now if they were not.
    fn who_of(&mut self, entry: &Entry) -> usize {
        if let Some(at) = self.whos.iter().position(|w| w.is_of(entry)) {
            return at;
        }
        let who = &entry.who;
        let mut bytes = Vec::new();
        super::audit_line::write_who(
            &mut bytes,
            &Line {
                session: entry.session,
                client: who.client.as_deref(),
                client_version: who.client_version.as_deref(),
                pid: entry.pid,
                profile: who.profile.as_deref().unwrap_or_default(),
                ..Line::default()
            },
        );
        let written = Written {
            session: entry.session,
            pid: entry.pid,
            who: who.clone(),
            bytes,
        };
        if self.whos.len() < WHOS {
            self.whos.push(written);
            return self.whos.len() - 1;
        }
        let at = self.next_who;
        self.next_who = (at + 1) % WHOS;
        self.whos[at] = written;
        at
    }

    /// Adds `line` to the batch; the file is rotated first when the line would take it past
    /// `maxFileBytes` (the batch's lines before it are written to the file they were counted
    /// in).
    fn append(&mut self, line: &Line<'_>, options: &AuditOptions) {
        let start = self.batch.len();
        super::audit_line::write_line(&mut self.batch, line, &mut self.clock);
        self.batch.push(b'\n');
        let len = (self.batch.len() - start) as u64;
        if self.size + len > options.max_file_bytes && self.size > 0 {
            self.write_out(start);
            self.rotate(options);
        }
        if self.file.is_none() {
            self.open(options);
        }
        if self.file.is_none() {
            // Not written (said in the daemon's log): the line is lost, the next one tries again.
            self.batch.truncate(start);
            return;
        }
        self.size += len;
    }

    /// Writes the batch's first `end` bytes to the file, at once, and keeps the rest.
    fn write_out(&mut self, end: usize) {
        if end == 0 {
            return;
        }
        if let Some(file) = self.file.as_mut()
            && let Err(e) = file.write_all(&self.batch[..end])
        {
            tracing::warn!("cannot write the audit log: {e}");
            self.file = None;
        }
        self.batch.drain(..end);
    }

    /// Writes the whole batch to the file.
    fn flush(&mut self) {
        self.write_out(self.batch.len());
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
                self.file = Some(file);
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
        self.file = None;
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
    fn files_rotate_by_size_keeping_lines_in_order_and_arguments_are_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit");
        let redactor = crate::redact::Redactor::new();
        redactor.set(
            "test",
            vec![("api".into(), secrecy::SecretString::from("s3cr3t-value"))],
        );
        let options = Arc::new(Options::new(&AuditOptions {
            arguments: true,
            max_file_bytes: 4096,
            ..AuditOptions::default()
        }));
        let mut writer = Writer::new(audit.clone(), Arc::default(), options, redactor);
        // In batches of 7, then one of a hundred: rotations fall inside batches too.
        let total = 205;
        let mut entries: Vec<Entry> = Vec::new();
        for n in 0..total {
            entries.push(entry(n));
            if entries.len() == 7 && n < 100 {
                writer.write_batch(&mut entries);
            }
        }
        writer.write_batch(&mut entries);
        let files = std::fs::read_dir(&audit).unwrap().count();
        assert!(files > 2, "too few rotations: {files} file(s)");
        let all = lines(&audit);
        assert_eq!(all.len() as u64, total);
        // In order across the files, none past the size.
        for (n, line) in all.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["time_ms"], n, "{line}");
        }
        for file in std::fs::read_dir(&audit).unwrap().flatten() {
            let size = file.metadata().unwrap().len();
            assert!(size <= 4096, "{}: {size} bytes", file.path().display());
        }
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
    fn each_line_names_its_own_session_s_client_and_profile_however_sessions_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = Writer::new(
            dir.path().to_owned(),
            Arc::default(),
            Arc::new(Options::new(&AuditOptions::default())),
            crate::redact::Redactor::new(),
        );
        // More sessions than the writer keeps written; each session's texts shared by its
        // lines, until the client is known (none before its `initialize`) or a new text with
        // a new value replaces them.
        let sessions = WHOS as u64 + 5;
        let text = |s: &str| Some(Arc::<str>::from(s));
        let mut expected = Vec::new();
        let mut entries = Vec::new();
        for round in 0..4u64 {
            let shared: Vec<Who> = (0..sessions)
                .map(|s| Who {
                    client: (round > 0)
                        .then(|| format!("client-{s}-{}", round / 3))
                        .and_then(|c| text(&c)),
                    client_version: text("1.0"),
                    profile: text(if s % 2 == 0 { "work" } else { "home" }),
                })
                .collect();
            for s in 0..sessions {
                for _ in 0..2 {
                    let who = &shared[s as usize];
                    expected.push((
                        s,
                        who.client.as_deref().map(str::to_owned),
                        who.profile.as_deref().unwrap_or_default().to_owned(),
                    ));
                    entries.push(Entry {
                        session: s,
                        pid: Some(1000 + s as u32),
                        method: Text::new("tools/call"),
                        outcome: "ok",
                        who: who.clone(),
                        ..Entry::default()
                    });
                }
            }
            writer.write_batch(&mut entries);
        }
        let all = lines(dir.path());
        assert_eq!(all.len(), expected.len());
        for (line, (session, client, profile)) in all.iter().zip(&expected) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["session"], *session, "{line}");
            assert_eq!(v["pid"], 1000 + session, "{line}");
            assert_eq!(
                v.get("client").and_then(|c| c.as_str()),
                client.as_deref(),
                "{line}"
            );
            assert_eq!(v["profile"], profile.as_str(), "{line}");
            assert_eq!(v["client_version"], "1.0", "{line}");
        }
    }

    #[test]
    fn a_line_wakes_the_writer_only_when_it_waits_for_one() {
        let queue = Queue::default();
        // Busy (sleeping or writing): it comes back for the queue by itself.
        assert_eq!(queue.push(entry(1)), Ok(false));
        assert_eq!(queue.push(entry(2)), Ok(false));
        // It found the queue empty and waits: the next line wakes it, the ones after do not.
        queue.lock().idle = true;
        assert_eq!(queue.push(entry(3)), Ok(true));
        assert_eq!(queue.push(entry(4)), Ok(false));
        let times: Vec<u64> = queue.lock().entries.iter().map(|e| e.time_ms).collect();
        assert_eq!(times, [1, 2, 3, 4]);
        // Full: dropped, nothing woken.
        queue.lock().entries.resize_with(QUEUE, Entry::default);
        queue.lock().idle = true;
        assert_eq!(queue.push(entry(5)), Err(()));
        assert_eq!(queue.lock().entries.len(), QUEUE);
    }

    #[test]
    fn drops_are_counted_and_written_down() {
        let dir = tempfile::tempdir().unwrap();
        let dropped = Arc::new(AtomicU64::new(0));
        let mut writer = Writer::new(
            dir.path().to_owned(),
            Arc::clone(&dropped),
            Arc::new(Options::new(&AuditOptions::default())),
            crate::redact::Redactor::new(),
        );
        dropped.store(7, Ordering::Relaxed);
        writer.write_batch(&mut vec![entry(1)]);
        let all = lines(dir.path());
        assert!(all[0].contains(r#""dropped":7"#), "{all:?}");
        assert!(
            !all[1].contains("arguments"),
            "arguments recorded by default: {all:?}"
        );
    }
}
