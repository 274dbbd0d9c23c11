//! The audit log: one JSON line per client request mcpd handled or forwarded, in
//! `$XDG_STATE_HOME/mcpd/audit/` (directory 0700, files 0600).
//!
//! Sessions never wait for it: a finished request is handed to a bounded channel with
//! `try_send`; when the writer falls behind the line is counted as dropped, and the next line
//! written is preceded by one that says how many were lost. The writer is a thread of its own
//! (plain blocking file I/O): it serialises, redacts arguments (only recorded with
//! `"audit": {"arguments": true}`), appends to `audit.jsonl`, flushes whenever the channel is
//! empty, renames the file to `audit-<ms>.jsonl` when it reaches `maxFileBytes`, and deletes
//! rotated files older than `keepDays`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use mcpd_proto::observe::AuditRecord;

use crate::config::observe::AuditOptions;

/// Lines queued for the writer before new ones are dropped. The queue holds boxes: a bounded
/// std channel allocates and writes every slot when it is created, so slots of a whole
/// [`Entry`] (about 340 bytes) made 2.7 MiB of the daemon's resident memory, idle or not.
pub const QUEUE: usize = 8192;
/// How long the writer lets lines gather after the first one of a spell (see `Writer::run`).
const GATHER: Duration = Duration::from_millis(2);
/// The largest line buffer the writer keeps between lines.
const LINE_BUFFER: usize = 16 * 1024;
/// The file being written.
pub const CURRENT: &str = "audit.jsonl";

/// One finished request, as the session hands it over.
#[derive(Debug)]
pub struct Entry {
    /// The record, `arguments` not yet filled; its client and profile are `who`'s.
    pub record: AuditRecord,
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
    tx: Option<SyncSender<Box<Entry>>>,
    dropped: Arc<AtomicU64>,
    options: Arc<RwLock<AuditOptions>>,
}

impl AuditLog {
    /// Starts the writer thread for `dir`.
    pub fn start(dir: PathBuf, redactor: crate::redact::Redactor) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
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
        let spawned = std::thread::Builder::new()
            .name("mcpd-audit".into())
            .spawn(move || writer.run(rx));
        let tx = match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::error!("cannot start the audit writer: {e}; no audit log is written");
                None
            }
        };
        Self {
            tx,
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

    /// Queues one line; never waits.
    pub fn record(&self, entry: Entry) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(Box::new(entry)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Lines dropped since the daemon started.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
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
    fn run(mut self, rx: Receiver<Box<Entry>>) {
        while let Ok(entry) = rx.recv() {
            // Let the lines of a busy spell gather before writing them: while this thread
            // sleeps rather than waits in `recv`, sessions queue lines without waking it (one
            // futex wake-up and one write per call otherwise, callgrind and strace of the
            // daemon: docs/BENCHMARKS.md "Hot path"). An idle daemon never wakes it.
            std::thread::sleep(GATHER);
            self.write(*entry);
            while let Ok(entry) = rx.try_recv() {
                self.write(*entry);
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
                time_ms: entry.record.time_ms,
                time: entry.record.time.clone(),
                method: "(audit)".into(),
                outcome: "dropped".into(),
                dropped: Some(dropped - self.reported),
                ..AuditRecord::default()
            };
            self.reported = dropped;
            self.append(&note, &Who::default(), &options);
        }
        let mut record = entry.record;
        if let Some(arguments) = entry.arguments.filter(|_| options.arguments) {
            let redacted = self.redactor.redact(&arguments);
            record.arguments = Some(
                serde_json::from_str(&redacted)
                    .unwrap_or_else(|_| serde_json::Value::String(redacted.into_owned())),
            );
        }
        self.append(&record, &entry.who, &options);
    }

    fn append(&mut self, record: &AuditRecord, who: &Who, options: &AuditOptions) {
        self.line.clear();
        super::audit_line::write(&mut self.line, record, who, &mut self.clock);
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
            record: AuditRecord {
                time_ms: n,
                method: "tools/call".into(),
                outcome: "ok".into(),
                name: Some(format!("t{n}")),
                ..AuditRecord::default()
            },
            arguments: Some(r#"{"token":"s3cr3t-value"}"#.into()),
            who: Who::default(),
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
