//! What flows through the daemon, made visible: tool pinning against rug pulls ([`pins`]),
//! poisoning checks ([`poison`]), and the control commands that show them ([`control`]).
//!
//! Nothing here alters a forwarded message (invariant 1): pinning only decides whether an item
//! is listed, and every check reads copies.

pub mod control;
pub mod pins;
pub mod poison;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};

use mcpd_proto::observe::CheckReport;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ServerSpec};
use crate::router::names::namespaced;
use crate::upstream::{ListKind, Snapshot};
use pins::{PinStore, Withheld};

/// The daemon's observers, shared as `Arc<Observer>`.
#[derive(Debug)]
pub struct Observer {
    /// Tool and prompt pins.
    pub pins: Arc<PinStore>,
    /// Poisoning findings per server at the last catalog rebuild, for `mcpctl status`.
    findings: Mutex<BTreeMap<String, usize>>,
}

impl Observer {
    /// Loads the pins from `state_dir` and starts the task that writes them.
    pub fn start(state_dir: &Path, shutdown: CancellationToken) -> Arc<Self> {
        let pins = Arc::new(PinStore::load(state_dir.join("pins.json")));
        tokio::spawn(Arc::clone(&pins).writer(shutdown));
        Arc::new(Self {
            pins,
            findings: Mutex::new(BTreeMap::new()),
        })
    }

    /// Called by the catalog task before each rebuild: applies the pinning policies and
    /// counts poisoning findings. Returns what the catalog must leave out.
    pub fn review(
        &self,
        views: &BTreeMap<String, (ServerSpec, Snapshot)>,
        config: &Config,
    ) -> Withheld {
        let withheld = self
            .pins
            .review(views, |server| config.observe.policy(server));
        let report = check(views, &config.options.separator, None);
        let mut counts = BTreeMap::new();
        for f in &report.findings {
            *counts.entry(f.server.clone()).or_insert(0) += 1;
        }
        *self.findings.lock().unwrap_or_else(|e| e.into_inner()) = counts;
        withheld
    }

    /// What `mcpctl status` flags about `server`.
    pub fn flags(&self, server: &str) -> Vec<String> {
        let mut flags = self.pins.flags(server);
        let findings = self
            .findings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(server)
            .copied()
            .unwrap_or(0);
        if findings > 0 {
            flags.push(format!(
                "{findings} possible poisoning finding(s): `mcpctl tools check {server}`"
            ));
        }
        flags
    }
}

/// The error a client gets when it calls a withheld tool or prompt.
pub fn blocked_message(what: &str, name: &str, server: &str, original: &str, new: bool) -> String {
    let why = if new {
        format!("is new since `{server}` was pinned and onNewTool is block")
    } else {
        format!("changed since it was pinned and `{server}` has onToolChange block")
    };
    format!(
        "{what} {name} is blocked: it {why}. Review it with `mcpctl tools diff {server}`, accept it with `mcpctl tools approve {server} {original}`"
    )
}

/// Runs the poisoning checks over the servers' current definitions.
pub fn check(
    views: &BTreeMap<String, (ServerSpec, Snapshot)>,
    separator: &str,
    only: Option<&str>,
) -> CheckReport {
    let mut names = Vec::new();
    for (server, (_, snapshot)) in views {
        for kind in [ListKind::Tools, ListKind::Prompts] {
            for item in snapshot.lists[kind.index()].iter() {
                names.push((
                    server.as_str(),
                    kind,
                    item.key.as_str(),
                    namespaced(server, separator, &item.key),
                    item.raw.get(),
                ));
            }
        }
    }
    let subjects: Vec<poison::Subject<'_>> = names
        .iter()
        .map(|(server, kind, name, namespaced, raw)| poison::Subject {
            server,
            kind: *kind,
            name,
            namespaced,
            raw,
        })
        .collect();
    let findings = poison::check(&subjects, only);
    CheckReport {
        servers: views
            .keys()
            .filter(|s| only.is_none_or(|o| o == s.as_str()))
            .cloned()
            .collect(),
        items: subjects
            .iter()
            .filter(|s| only.is_none_or(|o| o == s.server))
            .count(),
        findings,
    }
}

/// Writes `bytes` to `path` atomically and privately: the directory is created 0700, a
/// temporary file 0600 is written and synced, then renamed over `path`.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

/// Creates `dir` (and its parents) with mode 0700 when missing; an existing one of ours that
/// others may read is made 0700 (it holds what servers offered and what clients asked).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            if meta.mode() & 0o077 != 0 && meta.uid() == nix::unistd::geteuid().as_raw() {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            }
            Ok(())
        }
        Ok(_) => Err(std::io::Error::other(format!(
            "{} is not a directory",
            dir.display()
        ))),
        Err(_) => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir),
    }
}
