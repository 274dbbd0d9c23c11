//! Tasks: task-augmented `tools/call` and `tasks/*`, routed to the server that owns the task.
//!
//! Upstreams speak the 2025-11-25 (experimental, legacy) form: a `tools/call` with a `task`
//! parameter answers a `CreateTaskResult` (`result.task`), and `tasks/get`, `tasks/result`,
//! `tasks/list` and `tasks/cancel` follow it up. Clients get it in their era:
//!
//! - Legacy clients: the same form, as mcpd's `tasks` capability (declared when a server of
//!   the profile declares `tasks.requests.tools.call`).
//! - Modern clients (2026-07-28) that declare the `io.modelcontextprotocol/tasks` extension in
//!   a request's client capabilities: mcpd, as the server, decides to create a task when the
//!   tool requires one (`execution.taskSupport: "required"`), asks the upstream for it, and
//!   answers `resultType: "task"` with the task inline (`ttl` → `ttlMs`, `pollInterval` →
//!   `pollIntervalMs`); `tasks/get` answers the detailed task, with the upstream's
//!   `tasks/result` inlined as `result` (or `error`) once it is terminal; `tasks/cancel`
//!   acknowledges. A tool that requires a task, called by a modern client without the
//!   extension, gets `-32021` naming it.
//!
//! Task ids are mapped like request ids: the client sees an id mcpd minted (random, so not
//! guessable), bound to the session that created the task and to the server that owns it; a
//! `tasks/*` request with an id this session did not get is refused before anything reaches an
//! upstream, so two servers' ids cannot collide and no session reaches another's tasks.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use mcpd_proto::envelope::{self, Envelope, member};
use mcpd_proto::peek;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::Services;
use super::core::forward;
use super::modern::Declared;
use crate::router::catalog::Catalog;
use crate::router::hub::{Hub, SessionLink};
use crate::upstream::{ListKind, ids};

/// The 2026-07-28 tasks extension.
pub const EXTENSION: &str = "io.modelcontextprotocol/tasks";
/// `_meta` key tying a message to a task (2025-11-25).
const RELATED: &str = "io.modelcontextprotocol/related-task";
/// Pages of one server's `tasks/list` followed before the rest is left out (a server that
/// loops).
const MAX_TASK_PAGES: usize = 100;
/// MCP 2026-07-28: `MissingRequiredClientCapabilityError`.
const MISSING_CAPABILITY: i64 = -32021;

/// Tasks handed to clients, by the id mcpd minted.
#[derive(Debug, Default)]
pub struct TaskTable(Mutex<HashMap<String, Owned>>);

#[derive(Debug, Clone)]
struct Owned {
    session: u64,
    server: String,
    upstream: String,
}

impl TaskTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Owned>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a task `upstream` of `server` created for `session`; the id the client sees.
    pub fn register(&self, session: u64, server: &str, upstream: &str) -> String {
        let mut bytes = [0u8; 12];
        // Without randomness the id is still unique (the counter), only guessable; ownership
        // is checked on every use either way.
        let _ = getrandom::fill(&mut bytes);
        let mut table = self.lock();
        let id = format!(
            "mcpd-{}-{}",
            table.len() + 1,
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        table.insert(
            id.clone(),
            Owned {
                session,
                server: server.to_owned(),
                upstream: upstream.to_owned(),
            },
        );
        id
    }

    /// `(server, upstream id)` of task `id`, if `session` owns it.
    fn lookup(&self, session: u64, id: &str) -> Option<(String, String)> {
        self.lock()
            .get(id)
            .filter(|o| o.session == session)
            .map(|o| (o.server.clone(), o.upstream.clone()))
    }

    /// The owner and client-side id of `server`'s task `upstream`.
    fn by_upstream(&self, server: &str, upstream: &str) -> Option<(u64, String)> {
        self.lock()
            .iter()
            .find(|(_, o)| o.server == server && o.upstream == upstream)
            .map(|(id, o)| (o.session, id.clone()))
    }

    /// Forgets the tasks of a session that ended.
    pub fn forget_session(&self, session: u64) {
        self.lock().retain(|_, o| o.session != session);
    }
}

/// The legacy `tasks` server capability mcpd declares when a server offers task-augmented
/// `tools/call`.
pub fn legacy_capability() -> Value {
    json!({"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}})
}

/// Whether a modern request's client capabilities declare the tasks extension.
fn declares_extension(msg: &Envelope<'_>) -> bool {
    msg.params
        .and_then(|p| member(p, "_meta"))
        .and_then(|m| member(m, "io.modelcontextprotocol/clientCapabilities"))
        .and_then(|c| member(c, "extensions"))
        .and_then(|e| member(e, EXTENSION))
        .is_some()
}

/// How a `tools/call` relates to tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallMode {
    /// An ordinary call.
    Plain,
    /// A legacy client asked for a task (`params.task`): map the task id in the answer.
    Legacy,
    /// mcpd creates a task for a modern client: ask the upstream for one, answer the modern form.
    Modern,
}

/// A modern client called a tool that requires a task (or sent a `tasks/*` request) without
/// declaring the tasks extension in its request's client capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Missing required client capability: the tasks extension ({EXTENSION})")]
pub struct MissingExtension;

impl MissingExtension {
    /// The `-32021` answer to the request `id`, naming the capability it lacks.
    pub fn answer(&self, id: Option<&RawValue>) -> String {
        json!({
            "jsonrpc": "2.0",
            "id": id.unwrap_or(RawValue::NULL),
            "error": {
                "code": MISSING_CAPABILITY,
                "message": self.to_string(),
                "data": {"requiredCapabilities": {"extensions": {EXTENSION: {}}}},
            },
        })
        .to_string()
    }
}

/// How `msg` (a `tools/call` of the tool `name`, its raw `params.name` when the caller has
/// found it already) is handled: `modern` is what a modern request declared (`None`: a legacy
/// request). Refused when a modern client calls a tool that requires a task without the
/// extension.
pub fn call_mode(
    catalog: &Catalog,
    msg: &Envelope<'_>,
    name: Option<&RawValue>,
    modern: Option<&Declared>,
) -> Result<CallMode, MissingExtension> {
    if msg.params.is_none() {
        return Ok(CallMode::Plain);
    }
    let Some(declared) = modern else {
        return Ok(if msg.param("task").is_some() {
            CallMode::Legacy
        } else {
            CallMode::Plain
        });
    };
    let required = name
        .or_else(|| msg.param("name"))
        .and_then(|n| envelope::decode_str(n).ok())
        .and_then(|name| catalog.get(ListKind::Tools, &name))
        .is_some_and(|tool| requires_task(&tool.json));
    if !required {
        Ok(CallMode::Plain)
    } else if declared.tasks {
        Ok(CallMode::Modern)
    } else {
        Err(MissingExtension)
    }
}

/// Whether a tool (its JSON as listed) requires a task: `execution.taskSupport` is
/// `"required"`.
fn requires_task(tool: &str) -> bool {
    // Without the word, and without an escape that could spell it, there is nothing to read.
    if !tool.contains("taskSupport") && !tool.contains('\\') {
        return false;
    }
    let scanned = peek::members(tool, ["execution"]).and_then(|[execution]| match execution {
        Some(e) => peek::members(e, ["taskSupport"]).and_then(|[t]| match t {
            // An escaped string may still spell it.
            Some(t) if t.contains('\\') => None,
            t => Some(t == Some("\"required\"")),
        }),
        None => Some(false),
    });
    // Escaped keys or duplicates: as the decoded value says.
    scanned.unwrap_or_else(|| {
        serde_json::from_str::<Value>(tool)
            .is_ok_and(|tool| tool["execution"]["taskSupport"] == "required")
    })
}

/// `line` (a `tools/call`) asking the upstream for a task: `"task":{}` spliced into its params.
pub fn with_task(line: &str) -> Option<String> {
    let msg = Envelope::parse(line).ok()?;
    let params = msg.params.filter(|p| p.get().starts_with('{'))?;
    let range = envelope::span(line, params)?;
    let at = range.start + 1;
    let empty = params.get()[1..].trim_start().starts_with('}');
    Some(format!(
        "{}\"task\":{{}}{}{}",
        &line[..at],
        if empty { "" } else { "," },
        &line[at..]
    ))
}

/// The answer to a task-creating `tools/call` (`mode` not plain) as the client must see it:
/// the upstream's task id replaced by one minted for this session, and for a modern client the
/// 2026-07-28 `CreateTaskResult`.
pub fn created(hub: &Hub, session: u64, server: &str, answer: String, mode: CallMode) -> String {
    let Ok(msg) = Envelope::parse(&answer) else {
        return answer;
    };
    let task = msg.result.and_then(|r| member(r, "task"));
    let Some(raw_id) = task.and_then(|t| member(t, "taskId")) else {
        return answer;
    };
    let Ok(upstream_id) = envelope::decode_str(raw_id) else {
        return answer;
    };
    let id = hub.tasks().register(session, server, &upstream_id);
    if mode == CallMode::Legacy {
        return ids::task_id_to_client(&msg, raw_id, &id);
    }
    let Some(task) = task else {
        return answer;
    };
    let mut result = modern_task(task, &id, None);
    result.push("resultType", "\"task\"");
    envelope::response(msg.id.unwrap_or(RawValue::NULL), &result.finish())
}

/// A JSON object written member by member, each value as raw JSON text: what mcpd builds
/// from an upstream's members reaches the client byte for byte (`1.50` stays `1.50`).
struct RawObject {
    text: String,
    keys: Vec<&'static str>,
}

impl RawObject {
    fn new() -> Self {
        Self {
            text: String::from("{"),
            keys: Vec::new(),
        }
    }

    /// Adds `key` (plain ASCII, nothing to escape) with `raw`, which must be JSON text.
    fn push(&mut self, key: &'static str, raw: &str) {
        if !self.keys.is_empty() {
            self.text.push(',');
        }
        self.keys.push(key);
        self.text.push('"');
        self.text.push_str(key);
        self.text.push_str("\":");
        self.text.push_str(raw);
    }

    fn has(&self, key: &str) -> bool {
        self.keys.contains(&key)
    }

    /// The object; its members were each JSON text, so it is too (`null` if one was not).
    fn finish(mut self) -> Box<RawValue> {
        self.text.push('}');
        RawValue::from_string(self.text).unwrap_or_default()
    }
}

/// A legacy `Task` (raw, as the upstream wrote it) in the 2026-07-28 shape, with the client's
/// id; the members it keeps are passed on byte for byte.
/// `status`, when given, replaces the upstream's.
fn modern_task(task: &RawValue, id: &str, status: Option<&str>) -> RawObject {
    let mut out = RawObject::new();
    out.push("taskId", &json!(id).to_string());
    if let Some(status) = status {
        out.push("status", status);
    }
    for (from, to) in [
        ("status", "status"),
        ("statusMessage", "statusMessage"),
        ("createdAt", "createdAt"),
        ("lastUpdatedAt", "lastUpdatedAt"),
        ("ttl", "ttlMs"),
        ("pollInterval", "pollIntervalMs"),
    ] {
        if let Some(v) = member(task, from).filter(|_| !out.has(to)) {
            out.push(to, v.get());
        }
    }
    if !out.has("ttlMs") {
        out.push("ttlMs", "null");
    }
    out
}

/// A `tasks/result` answer's result with mcpd's related-task member taken out of its
/// `_meta`; every other byte is the upstream's.
fn without_related(done: &RawValue) -> String {
    let Some(meta) = member(done, "_meta") else {
        return done.get().to_owned();
    };
    if member(meta, RELATED).is_none() {
        return done.get().to_owned();
    }
    let Ok(mut members) = serde_json::from_str::<BTreeMap<String, &RawValue>>(meta.get()) else {
        return done.get().to_owned();
    };
    members.remove(RELATED);
    let mut kept = String::from("{");
    for (i, (key, value)) in members.iter().enumerate() {
        if i > 0 {
            kept.push(',');
        }
        kept.push_str(&json!(key).to_string());
        kept.push(':');
        kept.push_str(value.get());
    }
    kept.push('}');
    let mut rewrite = envelope::Rewrite::new(done.get());
    rewrite.replace(meta, kept);
    rewrite.finish()
}

/// Sends an upstream's `notifications/tasks/status` to the legacy session that owns the task,
/// with its id; modern sessions poll (their status stream is not served).
pub fn status_notification(hub: &Hub, server: &str, msg: &Envelope<'_>) {
    let Some(raw_id) = msg.params.and_then(|p| member(p, "taskId")) else {
        return;
    };
    let Ok(upstream) = envelope::decode_str(raw_id) else {
        return;
    };
    let Some((session, id)) = hub.tasks().by_upstream(server, &upstream) else {
        return;
    };
    if let Some(link) = hub.session(session).filter(|l| !l.scopes().is_modern()) {
        link.try_send(ids::task_id_to_client(msg, raw_id, &id));
    }
}

/// What a `tasks/*` request needs from its session.
pub(crate) struct TaskRequest<'a> {
    pub(crate) services: &'a Services,
    /// The session's profile (which instance of a server it uses).
    pub(crate) profile: &'a str,
    pub(crate) link: &'a SessionLink,
    pub(crate) servers: &'a [String],
    pub(crate) catalog: &'a Catalog,
    pub(crate) modern: bool,
}

impl TaskRequest<'_> {
    /// Answers `msg`, a `tasks/*` request.
    pub(crate) async fn answer(&self, msg: &Envelope<'_>) -> String {
        let id = msg.id.unwrap_or(RawValue::NULL);
        let error = |code, message: &str| envelope::error_response(Some(id), code, message);
        let method = msg.method();
        if self.modern && !declares_extension(msg) {
            return MissingExtension.answer(msg.id);
        }
        match (method, self.modern) {
            ("tasks/list", false) => return self.list(msg).await,
            ("tasks/get" | "tasks/cancel", _) | ("tasks/result", false) => {}
            ("tasks/update", true) => {
                return error(
                    envelope::INVALID_PARAMS,
                    "tasks/update: mcpd's servers take a task's input through their own requests (2025-11-25 tasks), not through tasks/update",
                );
            }
            _ => {
                return error(
                    envelope::METHOD_NOT_FOUND,
                    &format!("Method not found: {method}"),
                );
            }
        }
        let raw = msg.params.and_then(|p| member(p, "taskId"));
        let Some(task_id) = raw.and_then(|r| envelope::decode_str(r).ok()) else {
            return error(envelope::INVALID_PARAMS, "params.taskId must be a string");
        };
        let Some((server, upstream_id)) =
            self.services.hub.tasks().lookup(self.link.id(), &task_id)
        else {
            return error(
                envelope::INVALID_PARAMS,
                &format!(
                    "Unknown task {task_id}: no task with that id was created in this session"
                ),
            );
        };
        let Some(upstream) =
            self.services
                .supervisor
                .upstream_for(&server, self.link.id(), self.profile, false)
        else {
            return error(
                envelope::UPSTREAM_UNAVAILABLE,
                &format!("server `{server}` that runs task {task_id} is not running"),
            );
        };
        let upstream_json = json!(upstream_id).to_string();
        let client_json = json!(task_id.as_ref()).to_string();
        let ask = |method: &str| -> String {
            format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"{method}\",\"params\":{{\"taskId\":{upstream_json}}}}}",
                id.get()
            )
        };
        let send = |line: String| {
            let link = self.link.clone();
            let upstream = upstream.clone();
            async move {
                match Envelope::parse(&line) {
                    Ok(msg) => forward(&upstream, &msg, None, link).await,
                    Err(e) => envelope::error_response(Some(id), e.code(), &e.to_string()),
                }
            }
        };
        if !self.modern {
            // The same request with the upstream's id; the answer with the client's.
            let line = match raw {
                Some(raw) => ids::task_id_to_upstream(msg, raw, &upstream_json),
                None => ask(method),
            };
            let answer = send(line).await;
            return ids::task_ids_to_client(&answer, &upstream_json, &client_json);
        }
        let answer = send(ask(method)).await;
        let Ok(reply) = Envelope::parse(&answer) else {
            return answer;
        };
        let Some(task) = reply.result else {
            return answer;
        };
        if method == "tasks/cancel" {
            return envelope::response(id, &json!({"resultType": "complete"}));
        }
        let status = member(task, "status").and_then(|s| envelope::decode_str(s).ok());
        // What is inlined once the task is terminal (or asks for input), raw.
        let mut inline: Option<(&'static str, String)> = None;
        let mut failed = None;
        match status.as_deref() {
            Some(done @ ("completed" | "failed")) => {
                let outcome = send(ask("tasks/result")).await;
                if let Ok(outcome) = Envelope::parse(&outcome) {
                    if let Some(result) = outcome.result {
                        let key = if done == "failed" { "error" } else { "result" };
                        inline = Some((key, without_related(result)));
                    } else if let Some(error) = outcome.error {
                        failed = Some("\"failed\"");
                        inline = Some(("error", error.get().to_owned()));
                    }
                }
            }
            Some("input_required") => {
                // The upstream asks through its own requests; none are carried here yet.
                inline = Some(("inputRequests", "{}".to_owned()));
            }
            _ => {}
        }
        let mut result = modern_task(task, &task_id, failed);
        result.push("resultType", "\"complete\"");
        if let Some((key, raw)) = inline {
            result.push(key, &raw);
        }
        envelope::response(id, &result.finish())
    }

    /// `tasks/list`: this session's tasks, from each server that offers tasks.
    async fn list(&self, msg: &Envelope<'_>) -> String {
        let id = msg.id.unwrap_or(RawValue::NULL);
        let table = self.services.hub.tasks();
        let mut tasks = Vec::new();
        for server in self.servers {
            if !self
                .catalog
                .servers
                .get(server)
                .is_some_and(|f| f.caps.tasks)
            {
                continue;
            }
            let Some(upstream) =
                self.services
                    .supervisor
                    .upstream_for(server, self.link.id(), self.profile, false)
            else {
                continue;
            };
            // Every page of the server's list (mcpd answers with all of this session's tasks
            // at once, without a cursor).
            let mut cursor: Option<String> = None;
            for _ in 0..MAX_TASK_PAGES {
                let params = match &cursor {
                    Some(c) => json!({ "cursor": c }),
                    None => json!({}),
                };
                let line = format!(
                    "{{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"tasks/list\",\"params\":{params}}}",
                    id.get()
                );
                let Ok(ask) = Envelope::parse(&line) else {
                    break;
                };
                let answer = forward(&upstream, &ask, None, self.link.clone()).await;
                let Some(result) = Envelope::parse(&answer).ok().and_then(|a| a.result) else {
                    break;
                };
                // Each task as the upstream wrote it, with only its id replaced (invariant 1).
                let listed: Vec<&RawValue> = member(result, "tasks")
                    .and_then(|t| serde_json::from_str(t.get()).ok())
                    .unwrap_or_default();
                for task in listed {
                    let Some(raw_id) = member(task, "taskId") else {
                        continue;
                    };
                    let Ok(upstream_id) = envelope::decode_str(raw_id) else {
                        continue;
                    };
                    match table.by_upstream(server, &upstream_id) {
                        Some((session, mine)) if session == self.link.id() => {
                            tasks.push(ids::task_id_in(task, raw_id, &mine));
                        }
                        _ => {}
                    }
                }
                let next = member(result, "nextCursor").and_then(|c| envelope::decode_str(c).ok());
                match next {
                    Some(next) if Some(next.as_ref()) != cursor.as_deref() => {
                        cursor = Some(next.into_owned());
                    }
                    _ => break,
                }
            }
        }
        format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{},\"result\":{{\"tasks\":[{}]}}}}",
            id.get(),
            tasks.join(",")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> &RawValue {
        serde_json::from_str(text).expect("test JSON")
    }

    #[test]
    fn a_legacy_task_in_the_modern_shape_keeps_the_upstreams_bytes() {
        let task = raw(
            r#"{"taskId":"up-1","status":"working","ttl":60000,"pollInterval":1.50,"x":{"big":123456789012345678901234567890}}"#,
        );
        let out = modern_task(task, "mcpd-1", None).finish();
        assert_eq!(
            out.get(),
            r#"{"taskId":"mcpd-1","status":"working","ttlMs":60000,"pollIntervalMs":1.50}"#
        );
        let failed = modern_task(raw(r#"{"status":"completed"}"#), "m", Some(r#""failed""#));
        assert_eq!(
            failed.finish().get(),
            r#"{"taskId":"m","status":"failed","ttlMs":null}"#,
            "the given status replaces the upstream's, and ttlMs is always there"
        );
    }

    #[test]
    fn only_the_related_task_member_leaves_a_results_meta() {
        let text = format!(
            r#"{{"content":[],"structuredContent":{{"n":1.50}},"_meta":{{"{RELATED}":{{"taskId":"up-1"}},"keep":1.0e-7}}}}"#
        );
        let done = raw(&text);
        assert_eq!(
            without_related(done),
            r#"{"content":[],"structuredContent":{"n":1.50},"_meta":{"keep":1.0e-7}}"#
        );
        let plain = raw(r#"{"content":[],"_meta":{"keep":1.50}}"#);
        assert_eq!(without_related(plain), plain.get(), "nothing to take out");
    }

    #[test]
    fn task_ids_are_bound_to_their_session_and_server() {
        let table = TaskTable::default();
        let a = table.register(1, "one", "t-1");
        let b = table.register(2, "two", "t-1");
        assert_ne!(a, b, "the same upstream id of two servers maps to two ids");
        assert_eq!(table.lookup(1, &a), Some(("one".into(), "t-1".into())));
        assert_eq!(table.lookup(2, &a), None, "another session's task");
        assert_eq!(table.by_upstream("two", "t-1"), Some((2, b.clone())));
        table.forget_session(2);
        assert_eq!(table.lookup(2, &b), None);
    }

    #[test]
    fn a_tool_requires_a_task_only_when_its_execution_says_so() {
        assert!(requires_task(
            r#"{"name":"t","inputSchema":{"type":"object"},"execution":{"taskSupport":"required"}}"#
        ));
        assert!(!requires_task(
            r#"{"name":"t","execution":{"taskSupport":"optional"}}"#
        ));
        assert!(!requires_task(r#"{"name":"t","inputSchema":{}}"#));
        assert!(!requires_task(r#"{"name":"t","execution":null}"#));
        // Escapes are decoded (the byte scan leaves them to the parser).
        assert!(requires_task(
            r#"{"name":"t","ex\u0065cution":{"taskSupport":"requir\u0065d"}}"#
        ));
        assert!(requires_task(
            r#"{"name":"t","execution":{"taskSupport":"requir\u0065d"}}"#
        ));
    }

    #[test]
    fn a_modern_call_of_a_tool_that_requires_a_task_needs_the_extension() {
        let missing =
            MissingExtension.answer(Some(&RawValue::from_string("4".into()).expect("id")));
        let answer: Value = serde_json::from_str(&missing).expect("json");
        assert_eq!(answer["id"], 4);
        assert_eq!(answer["error"]["code"], MISSING_CAPABILITY);
        assert_eq!(
            answer["error"]["data"]["requiredCapabilities"]["extensions"][EXTENSION],
            json!({})
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(EXTENSION))
        );
    }

    #[test]
    fn asking_for_a_task_splices_an_empty_task_into_params() {
        let line = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"n":1.50}}}"#;
        assert_eq!(
            with_task(line).as_deref(),
            Some(
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"task":{},"name":"x","arguments":{"n":1.50}}}"#
            )
        );
    }
}
