//! The catalog cache, `$XDG_CACHE_HOME/mcpd/catalog.json`: each server's lists, capabilities and
//! instructions as last seen live, so that a client attaching while servers are still starting
//! gets a complete catalog at once (and `list_changed` if the live one differs).
//!
//! It holds no tokens, but descriptions, instructions and resource names can be private, so it
//! is kept like the credentials: directory 0700, file 0600 (looser modes found on disk are
//! tightened when the cache is read or written). An entry is used only while the server's
//! definition is unchanged (a fingerprint of its transport settings).
//!
//! Writing it is behind the catalog: [`CatalogCache::store`] only updates the copy in memory
//! (under a short lock, no I/O), and [`CatalogCache::write_behind`] writes the file once a
//! burst of changes has settled ([`WRITE_DELAY`]), on a blocking thread, never on the runtime's
//! workers. The daemon flushes it when it stops.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use serde::{Deserialize, Serialize};

use super::names::fnv1a;
use crate::config::ServerSpec;
use crate::upstream::{Item, ListKind, Snapshot, UpstreamCaps};

const FORMAT: u32 = 1;
/// Largest cache file read; a larger one is ignored (and rewritten).
const MAX_CACHE_BYTES: u64 = 256 * 1024 * 1024;
/// How long changes are collected before the file is written: servers starting together
/// change the catalog many times within a moment, and one write covers them all.
pub const WRITE_DELAY: Duration = Duration::from_millis(500);

#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    format: u32,
    #[serde(default)]
    servers: BTreeMap<String, CachedServer>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CachedServer {
    fingerprint: String,
    caps: UpstreamCaps,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    lists: [Vec<Item>; 4],
    /// The protocol era it speaks, so that an `auto` server is probed only once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    era: Option<crate::upstream::modern::Era>,
}

/// The cache file and what it held when read.
#[derive(Debug)]
pub struct CatalogCache {
    path: PathBuf,
    servers: Mutex<BTreeMap<String, CachedServer>>,
    /// Changes made in memory, and how many of them are on disk.
    changes: AtomicU64,
    written: AtomicU64,
    /// Files written, for tests and logs.
    files: AtomicU64,
    /// Notified on each change, for [`CatalogCache::write_behind`].
    changed: Notify,
    /// One write at a time (the writer and a flush).
    writing: tokio::sync::Mutex<()>,
}

/// Which definition a cached entry belongs to: a hash of an explicit, stable rendering of
/// the transport settings (not of their `Debug` text, which a new Rust or `url` release may
/// change, and which printed a URL's password). Header values are left out (they are
/// secrets; their names are in). The `2-` prefix sets it apart from the 16 hex digits older
/// daemons wrote, whose entries are simply not used (the server starts and lists live).
fn fingerprint(spec: &ServerSpec) -> String {
    use crate::config::{HttpKind, TransportSpec};
    // Arrays only: their order is fixed whatever serde_json's map order is.
    let rendered = match &spec.transport {
        TransportSpec::Stdio(s) => serde_json::json!([
            "stdio",
            s.command,
            s.args,
            s.env.iter().collect::<Vec<_>>(),
            s.cwd.as_ref().map(|c| c.to_string_lossy()),
        ]),
        TransportSpec::Http(h) => serde_json::json!([
            "http",
            h.url.as_str(),
            match h.kind {
                HttpKind::Streamable => "streamable",
                HttpKind::Sse => "sse",
                HttpKind::Probe => "probe",
            },
            h.headers.0.iter().map(|(name, _)| name).collect::<Vec<_>>(),
            h.insecure_skip_verify,
            h.connect_timeout.as_millis() as u64,
        ]),
    };
    format!("2-{:016x}", fnv1a(rendered.to_string().as_bytes()))
}

impl CatalogCache {
    /// Reads the cache at `path`; a missing or unreadable file is an empty cache. A cache
    /// directory or file that others may read is made private first.
    pub fn load(path: PathBuf) -> Self {
        if let Some(dir) = path.parent() {
            tighten(dir, 0o700);
        }
        tighten(&path, 0o600);
        let servers = match crate::config::read_bounded(&path, MAX_CACHE_BYTES) {
            Ok(text) => match serde_json::from_str::<CacheFile>(&text) {
                Ok(file) if file.format == FORMAT => file.servers,
                Ok(_) => BTreeMap::new(),
                Err(e) => {
                    tracing::warn!("ignoring the catalog cache {}: {e}", path.display());
                    BTreeMap::new()
                }
            },
            Err(_) => BTreeMap::new(),
        };
        Self {
            path,
            servers: Mutex::new(servers),
            changes: AtomicU64::new(0),
            written: AtomicU64::new(0),
            files: AtomicU64::new(0),
            changed: Notify::new(),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    /// The first snapshot of a server: its cached catalog if the cache has it for this spec.
    pub fn initial_snapshot(&self, name: &str, spec: &ServerSpec) -> Snapshot {
        let servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        let mut snapshot = Snapshot::default();
        if let Some(cached) = servers
            .get(name)
            .filter(|c| c.fingerprint == fingerprint(spec))
        {
            snapshot.cached = true;
            snapshot.caps = cached.caps;
            snapshot.instructions = cached.instructions.clone();
            snapshot.era = cached.era;
            for kind in ListKind::ALL {
                snapshot.lists[kind.index()] =
                    std::sync::Arc::new(cached.lists[kind.index()].clone());
            }
        }
        snapshot
    }

    /// Records the live catalogs of `upstreams`; if anything changed, the file is written
    /// behind ([`CatalogCache::write_behind`]). Servers not in `upstreams` any more are
    /// forgotten.
    pub fn store(&self, upstreams: &BTreeMap<String, (ServerSpec, Snapshot)>) {
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        let mut changed = false;
        servers.retain(|name, _| {
            let keep = upstreams.contains_key(name);
            changed |= !keep;
            keep
        });
        for (name, (spec, s)) in upstreams {
            if s.cached || !s.known.iter().all(|k| *k) {
                continue;
            }
            let entry = CachedServer {
                fingerprint: fingerprint(spec),
                caps: s.caps,
                instructions: s.instructions.clone(),
                lists: ListKind::ALL.map(|k| s.lists[k.index()].as_ref().clone()),
                era: s.era,
            };
            if servers.get(name) != Some(&entry) {
                servers.insert(name.clone(), entry);
                changed = true;
            }
        }
        if changed {
            drop(servers);
            self.changes.fetch_add(1, Ordering::AcqRel);
            self.changed.notify_one();
        }
    }

    /// Writes the file whenever changes have settled for [`WRITE_DELAY`]; runs until the task
    /// is dropped (the daemon then calls [`CatalogCache::flush`]).
    pub async fn write_behind(self: std::sync::Arc<Self>) {
        loop {
            self.changed.notified().await;
            // Each further change within the delay starts it again (a burst is one write).
            loop {
                tokio::select! {
                    () = tokio::time::sleep(WRITE_DELAY) => break,
                    () = self.changed.notified() => {}
                }
            }
            self.flush().await;
        }
    }

    /// Writes what changed since the last write, now (off the runtime's worker threads).
    pub async fn flush(&self) {
        let _one = self.writing.lock().await;
        let changes = self.changes.load(Ordering::Acquire);
        if changes == self.written.load(Ordering::Acquire) {
            return;
        }
        let file = CacheFile {
            format: FORMAT,
            servers: self
                .servers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        };
        let path = self.path.clone();
        let wrote = tokio::task::spawn_blocking(move || {
            let wrote = write_atomically(&path, &file);
            drop(file);
            // The burst that changed the catalog is over: give back what it freed.
            crate::memory::release_free();
            wrote
        })
        .await;
        match wrote {
            Ok(Ok(())) => {
                self.written.store(changes, Ordering::Release);
                self.files.fetch_add(1, Ordering::AcqRel);
            }
            Ok(Err(e)) => tracing::warn!(
                "cannot write the catalog cache {}: {e}",
                self.path.display()
            ),
            Err(e) => tracing::warn!("the catalog cache writer failed: {e}"),
        }
    }

    /// Times the file was written.
    #[cfg(test)]
    pub fn files_written(&self) -> u64 {
        self.files.load(Ordering::Acquire)
    }
}

/// Sets `mode` on `path` if it is a file or directory of ours (not a symlink: `lstat`) whose
/// mode is looser; anything else is left as it is.
fn tighten(path: &Path, mode: u32) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    let ours = meta.uid() == mcpd_proto::trust::our_uid();
    if ours && !meta.file_type().is_symlink() && meta.mode() & 0o777 & !mode != 0 {
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
            Ok(()) => tracing::info!(
                "made the catalog cache {} private (mode {:04o} was {:04o})",
                path.display(),
                mode,
                meta.mode() & 0o777
            ),
            Err(e) => tracing::warn!("cannot chmod {:o} {}: {e}", mode, path.display()),
        }
    }
}

fn write_atomically(path: &Path, file: &CacheFile) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    tighten(dir, 0o700);
    let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
    // A server may put a secret it was given into a description or its instructions: the
    // file gets every known secret value redacted (still JSON: values are matched in their
    // JSON-escaped spelling too, and names need no escaping).
    let text = serde_json::to_string(file).map_err(std::io::Error::other)?;
    let text = crate::redact::Redactor::process().redact_owned(text);
    serde_json::from_str::<serde::de::IgnoredAny>(&text).map_err(|_| {
        std::io::Error::other("the catalog would not be JSON once redacted; not cached")
    })?;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .and_then(|mut f| {
            // A temp file left by an earlier run keeps its mode on open: set it.
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            f.write_all(text.as_bytes())
        })?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o777
    }

    /// One server whose tools are `tools`, known live.
    fn views(tools: &[&str]) -> BTreeMap<String, (ServerSpec, Snapshot)> {
        let spec = crate::upstream::transport::tests::spec(serde_json::json!({"command": "x"}));
        let mut snapshot = Snapshot {
            known: [true; 4],
            ..Snapshot::default()
        };
        let items = tools
            .iter()
            .map(|t| Item {
                key: (*t).to_owned(),
                raw: serde_json::value::to_raw_value(&serde_json::json!({"name": t})).unwrap(),
            })
            .collect();
        snapshot.lists[ListKind::Tools.index()] = std::sync::Arc::new(items);
        BTreeMap::from([("s".to_owned(), (spec, snapshot))])
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_changes_is_written_once_and_the_file_holds_the_last() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("mcpd").join("catalog.json");
        let cache = std::sync::Arc::new(CatalogCache::load(path.clone()));
        let writer = tokio::spawn(std::sync::Arc::clone(&cache).write_behind());
        // Servers starting together: the catalog changes many times within a moment. Storing
        // does no I/O.
        for n in 1..=20 {
            let tools: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
            let tools: Vec<&str> = tools.iter().map(String::as_str).collect();
            cache.store(&views(&tools));
            tokio::time::sleep(WRITE_DELAY / 10).await;
        }
        assert!(!path.exists(), "written while the changes kept coming");
        tokio::time::sleep(WRITE_DELAY * 2).await;
        // The writer is writing by now (on a blocking thread); a flush waits for that write
        // and, finding nothing newer, writes nothing itself.
        cache.flush().await;
        assert_eq!(cache.files_written(), 1);
        let reread = CatalogCache::load(path.clone());
        let snapshot = reread.initial_snapshot("s", &views(&[])["s"].0);
        assert_eq!(snapshot.lists[ListKind::Tools.index()].len(), 20);
        // A change followed by a flush (the daemon stopping) is written at once.
        cache.store(&views(&["only"]));
        cache.flush().await;
        assert_eq!(cache.files_written(), 2);
        writer.abort();
    }

    #[test]
    fn the_cache_is_written_private_and_loose_modes_found_are_tightened() {
        let tmp = tempfile::Builder::new()
            .prefix("c")
            .tempdir_in("/tmp")
            .unwrap();
        let dir = tmp.path().join("mcpd");
        let path = dir.join("catalog.json");
        write_atomically(&path, &CacheFile::default()).unwrap();
        assert_eq!((mode(&dir), mode(&path)), (0o700, 0o600));

        // A cache written by an older mcpd with the default umask.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let _cache = CatalogCache::load(path.clone());
        assert_eq!((mode(&dir), mode(&path)), (0o700, 0o600));

        // A symlink in the file's place is not followed to chmod its target.
        let target = tmp.path().join("elsewhere");
        std::fs::write(&target, "{}").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let _cache = CatalogCache::load(path.clone());
        assert_eq!(mode(&target), 0o644);
    }

    /// The checked-in fixtures of `tests/fixtures/formats/` (see its README).
    pub(crate) fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/formats")
            .join(name)
    }

    #[test]
    fn the_catalog_cache_of_format_1_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("catalog.json");
        std::fs::copy(fixture("catalog-v1.json"), &path).unwrap();
        let cache = CatalogCache::load(path);
        let servers = cache.servers.lock().unwrap();
        let fx = &servers["fx"];
        assert_eq!(fx.fingerprint, "00000000deadbeef");
        assert!(fx.caps.tools && fx.caps.resources && fx.caps.subscribe && !fx.caps.prompts);
        assert_eq!(fx.instructions.as_deref(), Some("use me"));
        assert_eq!(fx.lists[ListKind::Tools.index()][0].key, "echo");
        assert_eq!(
            fx.lists[ListKind::Resources.index()][0].raw.get(),
            r#"{"uri":"fixture://r/0","name":"r0"}"#
        );
        assert_eq!(fx.era, None);
        // Its fingerprint is of the older kind (a hash of `Debug` text): not used, no error.
        drop(servers);
        let spec = crate::upstream::transport::tests::spec(serde_json::json!({"command": "sh"}));
        assert!(!cache.initial_snapshot("fx", &spec).cached);
    }

    #[test]
    fn a_cached_entry_is_found_by_its_pinned_fingerprint() {
        // `catalog-v1-fingerprint-2.json` holds the fingerprints of these two definitions as
        // this build writes them: a change of their rendering must not go unnoticed (every
        // user's cache would be a miss after an upgrade).
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("catalog.json");
        std::fs::copy(fixture("catalog-v1-fingerprint-2.json"), &path).unwrap();
        let cache = CatalogCache::load(path);
        let stdio = crate::upstream::transport::tests::spec(serde_json::json!({
            "command": "sh", "args": ["-c", "exec server"], "env": {"B": "2", "A": "1"}, "cwd": "/tmp",
        }));
        let http = crate::upstream::transport::tests::spec(serde_json::json!({
            "type": "http", "url": "https://mcp.example/mcp?x=1", "headers": {"X-Key": "secret"},
        }));
        assert_eq!(fingerprint(&stdio), "2-2314a2e1ae6d09dd");
        assert_eq!(fingerprint(&http), "2-d4082035252e8508");
        assert!(cache.initial_snapshot("fx", &stdio).cached);
        assert!(cache.initial_snapshot("remote", &http).cached);
        // Any change of the definition is a miss.
        let moved = crate::upstream::transport::tests::spec(serde_json::json!({
            "command": "sh", "args": ["-c", "exec server"], "env": {"B": "2", "A": "1"}, "cwd": "/var",
        }));
        assert!(!cache.initial_snapshot("fx", &moved).cached);
    }
}
