//! What flows through the daemon, made visible: tool pinning against rug pulls ([`pins`]),
//! poisoning checks ([`poison`]), the audit log ([`audit`]), live traffic ([`traffic`]),
//! statistics ([`stats`]), and the control commands that show them ([`control`]).
//!
//! Sessions call in on their hot path only through [`Call`] (one per client request: a few
//! clones, then a `try_send` and a histogram increment when it is answered) and
//! [`traffic::Traffic::publish`] (one atomic load while nobody watches). Everything slow
//! (files, JSON, redaction) happens in the audit thread or the viewer's task.
//!
//! Nothing here alters a forwarded message (invariant 1): pinning only decides whether an item
//! is listed, and every check reads copies.

pub mod audit;
mod audit_line;
pub mod control;
mod host;
pub mod pins;
pub mod poison;
pub mod stats;
mod text;
pub mod traffic;

pub use host::Host;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mcpd_proto::envelope::{Envelope, member};
use mcpd_proto::observe::CheckReport;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ServerSpec};
use crate::upstream::{ListKind, Snapshot};
use pins::{PinStore, Withheld};
use text::Text;

/// The daemon's observers, shared as `Arc<Observer>`.
#[derive(Debug)]
pub struct Observer {
    /// Tool and prompt pins.
    pub pins: Arc<PinStore>,
    /// Poisoning findings per server at the last catalog rebuild, for `mcpctl status`.
    findings: Mutex<BTreeMap<String, usize>>,
    /// The audit log's sending side.
    pub audit: audit::AuditLog,
    /// Calls, errors, latency.
    pub stats: stats::Stats,
    /// Live traffic for viewers.
    pub traffic: traffic::Traffic,
}

/// Who a session is, for audit lines.
#[derive(Debug, Clone, Default)]
pub struct ClientTag {
    /// `clientInfo.name`.
    pub name: Option<Arc<str>>,
    /// `clientInfo.version`.
    pub version: Option<Arc<str>>,
    /// Pid of the client process.
    pub pid: Option<u32>,
}

/// One client request from its arrival to its answer. Dropped unanswered (the client
/// cancelled it, or the session ended), it is recorded as `cancelled`.
#[derive(Debug)]
pub struct Call {
    observer: Arc<Observer>,
    started: Instant,
    /// The audit entry being filled (its texts inline: no allocation per call).
    entry: audit::Entry,
    done: bool,
}

impl Call {
    /// Records an answer mcpd built itself and knows to be a success (a list page): only its
    /// size is needed, so nothing reads it again.
    pub fn finish_ok(mut self, bytes: usize) {
        self.entry.bytes_out = bytes;
        self.entry.outcome = "ok";
        self.done = true;
        self.close(false);
    }

    /// Who the client is (known only once its `initialize` is read).
    pub fn set_client(&mut self, client: &ClientTag) {
        self.entry.who.client.clone_from(&client.name);
        self.entry.who.client_version.clone_from(&client.version);
        self.entry.pid = client.pid;
    }

    /// The upstream server the request goes to.
    pub fn set_server(&mut self, server: &str) {
        self.entry.server = Some(Text::new(server));
    }

    /// Records the answer sent to the client.
    pub fn finish(mut self, answer: &str) {
        let (error_code, tool_error) = outcome(answer);
        self.entry.bytes_out = answer.len();
        self.entry.tool_error = tool_error;
        self.entry.outcome = if error_code.is_some() { "error" } else { "ok" };
        self.entry.error_code = error_code;
        self.done = true;
        self.close(error_code.is_some() || tool_error);
    }

    fn close(&mut self, error: bool) {
        let took = self.started.elapsed();
        self.entry.duration_ms = took.as_secs_f64() * 1000.0;
        if let Some(server) = &self.entry.server {
            let method = &self.entry.method;
            let named = matches!(method.as_bytes(), b"tools/call" | b"prompts/get");
            let name = match &self.entry.name {
                Some(name) if named => name.as_str(),
                // Resource URIs are too many to keep apart: count them by method.
                _ => method.as_str(),
            };
            self.observer.stats.add(server.as_str(), name, took, error);
        }
        if self.observer.audit.enabled() {
            self.observer.audit.record(std::mem::take(&mut self.entry));
        }
    }
}

/// The error code of an answer, and whether it is a tool's error result. Answers are lines mcpd
/// built from checked parts, so a scan finds the members (`peek`); the parser decides the rest.
fn outcome(answer: &str) -> (Option<i64>, bool) {
    use mcpd_proto::peek::members;
    // Most answers are plain successes: an `error` or `isError` member needs the bytes `rror`
    // in its key, or a `\u` escape spelling them, so an answer with neither has no such member
    // (two substring searches instead of scanning the answer's members, 1,500 instructions
    // per call).
    if !answer.contains("rror") && !answer.contains("\\u") {
        return (None, false);
    }
    let code = |error: &str| Some(members(error, ["code"])?[0].and_then(|c| c.parse().ok()));
    let is_error = |result: &str| Some(members(result, ["isError"])?[0] == Some("true"));
    if let Some([error, result]) = members(answer, ["error", "result"]) {
        let error_code = match error {
            Some(e) => code(e),
            None => Some(None),
        };
        let tool_error = match result {
            Some(r) => is_error(r),
            None => Some(false),
        };
        if let (Some(error_code), Some(tool_error)) = (error_code, tool_error) {
            return (error_code, tool_error);
        }
    }
    match Envelope::parse(answer) {
        Ok(msg) => (
            msg.error
                .and_then(|e| member(e, "code"))
                .and_then(|c| c.get().parse::<i64>().ok()),
            msg.result
                .and_then(|r| member(r, "isError"))
                .is_some_and(|v| v.get() == "true"),
        ),
        Err(_) => (None, false),
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            self.entry.outcome = "cancelled";
            self.close(true);
        }
    }
}

impl Observer {
    /// Loads the pins from `state_dir` and starts the task that writes them and the audit
    /// log's writer thread.
    pub fn start(
        state_dir: &Path,
        redactor: crate::redact::Redactor,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let pins = Arc::new(PinStore::load(state_dir.join("pins.json")));
        tokio::spawn(Arc::clone(&pins).writer(shutdown));
        Arc::new(Self {
            pins,
            findings: Mutex::new(BTreeMap::new()),
            audit: audit::AuditLog::start(state_dir.join("audit"), redactor),
            stats: stats::Stats::default(),
            traffic: traffic::Traffic::default(),
        })
    }

    /// A client request arrived (`line` is the whole request).
    pub fn begin(
        self: &Arc<Self>,
        session: u64,
        client: &ClientTag,
        profile: &Arc<str>,
        msg: &Envelope<'_>,
        line: &str,
    ) -> Call {
        let time_ms = mcpd_proto::observe::now_ms();
        let param = |key: &str| msg.param(key);
        let name = param("name")
            .or_else(|| param("uri"))
            .or_else(|| param("ref").and_then(|r| member(r, "name")))
            .and_then(|v| mcpd_proto::envelope::decode_str(v).ok())
            .map(|s| Text::new(&s));
        let arguments = if self.audit.arguments() {
            param("arguments").map(|a| a.get().to_owned())
        } else {
            None
        };
        Call {
            observer: Arc::clone(self),
            started: Instant::now(),
            entry: audit::Entry {
                // The line's `time` is written by the audit thread from `time_ms`
                // (`audit_line::Clock`).
                time_ms,
                session,
                // The client and profile are `who`'s: Arc clones, not copies.
                pid: client.pid,
                method: Text::new(msg.method()),
                name,
                bytes_in: line.len(),
                outcome: "cancelled",
                arguments,
                who: audit::Who {
                    client: client.name.clone(),
                    client_version: client.version.clone(),
                    profile: Some(Arc::clone(profile)),
                },
                ..audit::Entry::default()
            },
            done: false,
        }
    }

    /// Called by the catalog task before each rebuild: applies the pinning policies and
    /// counts poisoning findings. Returns what the catalog must leave out. `namespaced`: the
    /// name clients see for a server's tool or prompt.
    pub fn review(
        &self,
        views: &BTreeMap<String, (ServerSpec, Snapshot)>,
        config: &Config,
        namespaced: &dyn Fn(&str, &str) -> String,
    ) -> Withheld {
        self.audit.set_options(&config.observe.audit);
        let withheld = self
            .pins
            .review(views, |server| config.observe.policy(server));
        let report = check(views, namespaced, None);
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
    namespaced: &dyn Fn(&str, &str) -> String,
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
                    namespaced(server, &item.key),
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

#[cfg(test)]
mod outcome_tests {
    use super::outcome;

    #[test]
    fn an_answer_s_outcome_is_read_whatever_its_shape() {
        assert_eq!(
            outcome(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
            (None, false)
        );
        assert_eq!(
            outcome(r#"{"result":{"content":[],"isError":true},"jsonrpc":"2.0","id":"a"}"#),
            (None, true)
        );
        assert_eq!(
            outcome(r#"{"jsonrpc":"2.0","id":1,"result":{"isError":false,"x":{"isError":true}}}"#),
            (None, false)
        );
        assert_eq!(
            outcome(r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32601,"message":"m"}}"#),
            (Some(-32601), false)
        );
        // Escaped keys are left to the parser, which decodes them.
        assert_eq!(
            outcome(r#"{"jsonrpc":"2.0","id":1,"\u0065rror":{"\u0063ode":-32000,"message":"m"}}"#),
            (Some(-32000), false)
        );
        assert_eq!(outcome("not json"), (None, false));
        // The quick answer for answers with no `rror` or `\u` anywhere, and the scans for the rest.
        assert_eq!(
            outcome(
                r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hello"}]}}"#
            ),
            (None, false)
        );
        assert_eq!(
            outcome(
                r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"an error"}]}}"#
            ),
            (None, false)
        );
        assert_eq!(
            outcome(r#"{"jsonrpc":"2.0","id":1,"result":{"\u0069sError":true}}"#),
            (None, true)
        );
        assert_eq!(
            outcome(
                r#"{"jsonrpc":"2.0","id":1,"\u0065\u0072\u0072\u006f\u0072":{"code":-1,"message":"m"}}"#
            ),
            (Some(-1), false)
        );
    }
}
