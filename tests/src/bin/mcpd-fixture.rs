//! `mcpd-fixture`: a small, deterministic MCP stdio server for mcpd's integration tests.
//!
//! JSON lines on stdin/stdout, like any MCP stdio server. Behaviour is chosen by flags:
//!
//! | flag | effect |
//! |---|---|
//! | `--name NAME` | `serverInfo.name` (default `mcpd-fixture`) |
//! | `--tools N` | also offer `tool_0` .. `tool_{N-1}` (each answers its own name) |
//! | `--page-size K` | paginate `tools/list`, K tools a page, with `nextCursor` |
//! | `--ignore-sigterm` | SIGTERM is ignored (the daemon must escalate to SIGKILL) |
//! | `--fork-grandchildren` | at start, run `sh -c 'sleep 600 & sleep 600'` and never reap it |
//! | `--escape-grandchild` | at start, run `sleep 601` in a new session (`setsid()`) with SIGTERM ignored: a descendant that left the server's process group and does not stop when asked |
//! | `--list-changed-after-ms MS` | MS after `notifications/initialized`, add tool `late` and send `notifications/tools/list_changed` |
//! | `--stderr-lines N` | write N lines to stderr at start |
//! | `--exit-after-init` | exit 0 as soon as `notifications/initialized` arrives |
//! | `--record PATH` | append every line received, byte for byte, to PATH |
//! | `--prompts N` | offer prompts `prompt_0` .. `prompt_{N-1}` (and the `prompts` capability) |
//! | `--resources N` | offer resources `fixture://r/0` .. `fixture://r/{N-1}`, the template `fixture://t/{id}` (and the `resources` capability with `subscribe`) |
//! | `--uri-prefix P` | resources are `P0` .. instead of `fixture://r/0` .. (to make two servers list the same URIs) |
//! | `--logging` | declare the `logging` capability (`logging/setLevel` is recorded and answered) |
//! | `--completions` | declare the `completions` capability (`completion/complete` answers the argument value with `-done` appended) |
//! | `--instructions TEXT` | `instructions` in the `initialize` result |
//! | `--delay-init-ms MS` | answer `initialize` only MS milliseconds after it arrives (a slow server) |
//! | `--flags-file PATH` | more flags, whitespace-separated, from PATH if it exists (so that a test can change the server's behaviour without changing its definition, e.g. for the catalog cache) |
//! | `--app` | also offer `show_app`, an MCP App tool: `_meta.ui.resourceUri` is `ui://fixture/app` on the tool and its result |
//! | `--linger` | keep running after stdin closes (only signals stop it) |
//! | `--modern` | speak only MCP 2026-07-28: `server/discover` answers a `DiscoverResult` (after `--delay-init-ms`), `initialize` gets -32022 |
//! | `--ignore-unknown` | never answer a request for a method it does not know (a legacy server that ignores a `server/discover` probe) |
//! | `--sloppy` | also offer what real servers get wrong: `draft7 {n}` (a Draft-07 `inputSchema` with `$schema`, `definitions` and `$ref`; answers `n`), `string_code`, `no_message` and `bare_error` (answer errors whose code is a string, without a message, or a string instead of an object) |
//! | `--extra-tool NAME` | also offer tool NAME (repeatable), which answers `NAME of SERVER` (SERVER from `--name`) |
//! | `--template T` | the resource template is T instead of `fixture://t/{id}` |
//! | `--blob` | also offer tool `blob {bytes}`, which answers a text of `bytes` `x`s in one line (big or over-limit answers) |
//! | `--echo-description-file PATH` | the `echo` tool's description is the text of PATH, read at start, if it exists (a server whose definition changes after a restart) |
//! | `--notify-tool` | also offer `notify {method, params}`: sends that notification to the client, then answers `sent` (`notifications/tools/list_changed` also adds tool `late`, so the list really changes) |
//! | `--tasks` | declare 2025-11-25 tasks (`tasks.requests.tools.call`, `list`, `cancel`) and list a tool `task` whose `execution.taskSupport` is `required`: a `tools/call` with `params.task` creates task `fx-task-<n>` (status `working`) and answers its `CreateTaskResult`; `tasks/list` lists every task created, `tasks/get` answers one. Each task carries raw numbers written by hand (`"pollInterval":1.50` and `"x-fixture":{"big":123456789012345678901234567890,"tiny":1.0e-7}`), so any re-encoding on the way to the client shows |
//! | `--probe-tools` | also offer `read_file {path}`, `write_file {path, text}` and `connect {port}` (TCP to 127.0.0.1), each answering `ok: ...` or `error: <errno text>` (to test the sandbox), `alloc {mb}` (allocates and touches that much memory, keeps it) and `spawn {n}` (starts up to n `sleep 600` children, answers how many started) |
//!
//! `--page-size` paginates every list (tools, prompts, resources, templates). Prompts answer
//! `prompts/get` with one user message naming them; resources answer `resources/read` with the
//! text `contents of <uri>`; `resources/subscribe` and `resources/unsubscribe` answer `{}` (see
//! `--record` to learn what arrived), except that a subscription to a URI containing `refuse`
//! is refused with an error (an upstream that says no).
//!
//! Tools always offered:
//!
//! - `echo {message}`: text `message`.
//! - `add {a, b}`: text and `structuredContent.sum` of `a + b`.
//! - `sleep {ms}`: answers after `ms` milliseconds without blocking other requests; with a
//!   `_meta.progressToken` it sends `notifications/progress` (0 of 1) before sleeping.
//! - `pid`: text of this process's pid.
//! - `big`: a result whose `structuredContent` holds the raw numbers `1.50`,
//!   `123456789012345678901234567890`, `1.0e-7` and `-0.0`, written by hand so that any
//!   re-encoding on the way to the client shows. The exact bytes are
//!   `mcpd_tests::fixture::BIG_STRUCTURED`.
//! - `crash`: exits with status 3 at once, without answering.
//! - `ask {method, params}`: sends that request to the client (sampling, elicitation, roots)
//!   and answers with the client's result as `structuredContent` (or the client's error).
//!
//! Protocol versions are negotiated as a real server does: a version the client asks for that
//! this server knows is echoed, anything else gets `2025-11-25`.

use std::collections::HashMap;
use std::io::{self, BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use mcpd_tests::fixture::BIG_STRUCTURED;
use serde_json::{Value, json};

const KNOWN_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
const DEFAULT_VERSION: &str = "2025-11-25";

#[derive(Debug, Default)]
struct Options {
    name: Option<String>,
    tools: usize,
    page_size: Option<usize>,
    ignore_sigterm: bool,
    fork_grandchildren: bool,
    escape_grandchild: bool,
    list_changed_after_ms: Option<u64>,
    notify_tool: bool,
    stderr_lines: usize,
    exit_after_init: bool,
    record: Option<String>,
    prompts: usize,
    resources: usize,
    uri_prefix: Option<String>,
    logging: bool,
    completions: bool,
    instructions: Option<String>,
    delay_init_ms: Option<u64>,
    linger: bool,
    extra_tools: Vec<String>,
    template: Option<String>,
    blob: bool,
    echo_description: Option<String>,
    probe_tools: bool,
    sloppy: bool,
    app: bool,
    ignore_unknown: bool,
    modern: bool,
    tasks: bool,
}

fn parse_options() -> Result<Options, String> {
    let mut o = Options::default();
    let mut args: std::collections::VecDeque<String> = std::env::args().skip(1).collect();
    while let Some(arg) = args.pop_front() {
        if arg == "--flags-file" {
            let path = args.pop_front().ok_or("--flags-file needs a value")?;
            // Missing file: no extra flags. Its flags take the place of this one.
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for flag in text.split_whitespace().rev() {
                args.push_front(flag.to_owned());
            }
            continue;
        }
        let mut value = |flag: &str| args.pop_front().ok_or(format!("{flag} needs a value"));
        let number = |flag: &str, v: String| {
            v.parse::<u64>()
                .map_err(|e| format!("{flag}: {v:?} is not a number: {e}"))
        };
        match arg.as_str() {
            "--name" => o.name = Some(value("--name")?),
            "--tools" => o.tools = number("--tools", value("--tools")?)? as usize,
            "--page-size" => {
                let k = number("--page-size", value("--page-size")?)? as usize;
                o.page_size = Some(k.max(1));
            }
            "--ignore-sigterm" => o.ignore_sigterm = true,
            "--fork-grandchildren" => o.fork_grandchildren = true,
            "--escape-grandchild" => o.escape_grandchild = true,
            "--list-changed-after-ms" => {
                let flag = "--list-changed-after-ms";
                o.list_changed_after_ms = Some(number(flag, value(flag)?)?);
            }
            "--stderr-lines" => {
                o.stderr_lines = number("--stderr-lines", value("--stderr-lines")?)? as usize;
            }
            "--exit-after-init" => o.exit_after_init = true,
            "--record" => o.record = Some(value("--record")?),
            "--prompts" => o.prompts = number("--prompts", value("--prompts")?)? as usize,
            "--resources" => o.resources = number("--resources", value("--resources")?)? as usize,
            "--uri-prefix" => o.uri_prefix = Some(value("--uri-prefix")?),
            "--logging" => o.logging = true,
            "--completions" => o.completions = true,
            "--instructions" => o.instructions = Some(value("--instructions")?),
            "--delay-init-ms" => {
                let flag = "--delay-init-ms";
                o.delay_init_ms = Some(number(flag, value(flag)?)?);
            }
            "--linger" => o.linger = true,
            "--ignore-unknown" => o.ignore_unknown = true,
            "--modern" => o.modern = true,
            "--extra-tool" => o.extra_tools.push(value("--extra-tool")?),
            "--template" => o.template = Some(value("--template")?),
            "--blob" => o.blob = true,
            "--notify-tool" => o.notify_tool = true,
            "--echo-description-file" => {
                let path = value("--echo-description-file")?;
                o.echo_description = std::fs::read_to_string(path).ok();
            }
            "--probe-tools" => o.probe_tools = true,
            "--sloppy" => o.sloppy = true,
            "--app" => o.app = true,
            "--tasks" => o.tasks = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(o)
}

/// Writes whole lines to stdout from any thread; exits quietly when the reader has gone.
#[derive(Clone)]
struct Out(Arc<Mutex<io::Stdout>>);

impl Out {
    fn send(&self, line: &str) {
        let stdout = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut w = stdout.lock();
        if w.write_all(line.as_bytes())
            .and_then(|()| w.write_all(b"\n"))
            .and_then(|()| w.flush())
            .is_err()
        {
            std::process::exit(0);
        }
    }

    fn result(&self, id: &Value, result: &Value) {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string());
    }

    fn error(&self, id: &Value, code: i64, message: &str) {
        self.send(
            &json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
                .to_string(),
        );
    }
}

fn text_result(text: &str) -> Value {
    json!({"content": [{"type": "text", "text": text}]})
}

fn tool(name: &str, description: &str, properties: Value) -> Value {
    json!({
        "name": name,
        "description": description,
        "inputSchema": {"type": "object", "properties": properties},
    })
}

fn tool_list(o: &Options, late: bool) -> Vec<Value> {
    let mut tools: Vec<Value> = (0..o.tools)
        .map(|i| tool(&format!("tool_{i}"), "Answers its own name", json!({})))
        .collect();
    let text = json!({"type": "string"});
    let number = json!({"type": "number"});
    tools.extend([
        tool(
            "echo",
            o.echo_description.as_deref().unwrap_or("Echoes `message`"),
            json!({"message": text}),
        ),
        tool("add", "Adds `a` and `b`", json!({"a": number, "b": number})),
        tool(
            "sleep",
            "Answers after `ms` milliseconds",
            json!({"ms": number}),
        ),
        tool("pid", "Answers this server's process id", json!({})),
        tool(
            "big",
            "Answers numbers that re-encoding would change",
            json!({}),
        ),
        tool("crash", "Exits with status 3 without answering", json!({})),
        tool(
            "ask",
            "Sends request `method` with `params` to the client and answers its result",
            json!({"method": text, "params": {"type": "object"}}),
        ),
    ]);
    if late {
        tools.push(tool("late", "Added after initialization", json!({})));
    }
    if o.tasks {
        let mut task = tool("task", "Runs only as a task", json!({}));
        task["execution"] = json!({"taskSupport": "required"});
        tools.push(task);
    }
    for name in &o.extra_tools {
        tools.push(tool(name, "Answers its name and its server's", json!({})));
    }
    if o.sloppy {
        tools.push(json!({
            "name": "draft7",
            "description": "A Draft-07 schema",
            "inputSchema": {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "definitions": {"count": {"type": "integer", "minimum": 0}},
                "properties": {"n": {"$ref": "#/definitions/count"}},
                "required": ["n"],
                "additionalProperties": false
            }
        }));
        for name in ["string_code", "no_message", "bare_error"] {
            tools.push(tool(name, "Answers a malformed error", json!({})));
        }
    }
    if o.notify_tool {
        tools.push(tool(
            "notify",
            "Sends notification `method` with `params` to the client",
            json!({"method": text, "params": {"type": "object"}}),
        ));
    }
    if o.blob {
        tools.push(tool(
            "blob",
            "Answers a text of `bytes` x characters",
            json!({"bytes": number}),
        ));
    }
    if o.probe_tools {
        tools.extend([
            tool("read_file", "Reads `path`", json!({"path": text})),
            tool(
                "write_file",
                "Writes `text` to `path`",
                json!({"path": text, "text": text}),
            ),
            tool(
                "connect",
                "Opens a TCP connection to 127.0.0.1:`port`",
                json!({"port": number}),
            ),
            tool(
                "alloc",
                "Allocates and keeps `mb` MiB",
                json!({"mb": number}),
            ),
            tool(
                "spawn",
                "Starts up to `n` children, answers how many started",
                json!({"n": number}),
            ),
        ]);
    }
    if o.app {
        let mut app = tool("show_app", "Shows the fixture's app", json!({}));
        app["_meta"] = json!({"ui": {"resourceUri": "ui://fixture/app"}});
        tools.push(app);
    }
    tools
}

/// `ok: <what>` or `error: <the OS error>` for the probe tools.
fn probe(result: std::io::Result<String>) -> String {
    match result {
        Ok(what) => format!("ok: {what}"),
        Err(e) => format!("error: {e}"),
    }
}

fn prompt_list(o: &Options) -> Vec<Value> {
    (0..o.prompts)
        .map(|i| {
            json!({"name": format!("prompt_{i}"), "description": "Answers one message naming itself",
                   "arguments": [{"name": "arg", "required": false}]})
        })
        .collect()
}

fn resource_uri(o: &Options, i: usize) -> String {
    format!("{}{i}", o.uri_prefix.as_deref().unwrap_or("fixture://r/"))
}

fn resource_list(o: &Options) -> Vec<Value> {
    (0..o.resources)
        .map(|i| json!({"uri": resource_uri(o, i), "name": format!("resource_{i}"), "mimeType": "text/plain"}))
        .collect()
}

/// State shared by the reader loop and the threads it starts.
struct Server {
    options: Options,
    out: Out,
    late: Mutex<bool>,
    /// Requests this server sent to the client, by their id, with the tool call to answer.
    asked: Mutex<HashMap<String, Value>>,
    next_ask: Mutex<u64>,
    /// Tasks created (`--tasks`), in order.
    tasks: Mutex<Vec<String>>,
}

/// Task `id` as the fixture writes it, by hand: numbers a re-encoding would rewrite.
fn task_json(id: &str) -> String {
    format!(
        r#"{{"taskId":{},"status":"working","createdAt":"2026-01-01T00:00:00Z","lastUpdatedAt":"2026-01-01T00:00:00Z","ttl":60000,"pollInterval":1.50,"x-fixture":{{"big":123456789012345678901234567890,"tiny":1.0e-7}}}}"#,
        json!(id)
    )
}

impl Server {
    fn handle(self: &Arc<Self>, line: &str) {
        let msg: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                self.out
                    .error(&Value::Null, -32700, &format!("parse error: {e}"));
                return;
            }
        };
        let id = msg.get("id").cloned();
        let Some(method) = msg.get("method").and_then(Value::as_str) else {
            if let Some(id) = id {
                self.answer_ask(&id, &msg);
            }
            return;
        };
        let params = msg.get("params").cloned().unwrap_or(Value::Null);
        let Some(id) = id else {
            self.notification(method);
            return;
        };
        match method {
            "initialize" if self.options.modern => self.out.error(
                &id,
                -32022,
                "this server speaks only MCP 2026-07-28; send server/discover",
            ),
            "server/discover" if self.options.modern => {
                let result = json!({"resultType": "complete", "supportedVersions": ["2026-07-28"],
                        "capabilities": {"tools": {}},
                        "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "mcpd-fixture", "version": "0"}}});
                // `--delay-init-ms` delays the discovery of a modern fixture instead.
                let out = self.out.clone();
                let delay = self.options.delay_init_ms.unwrap_or(0);
                thread::spawn(move || {
                    thread::sleep(Duration::from_millis(delay));
                    out.result(&id, &result);
                });
            }
            "initialize" => self.initialize(id, &params),
            "ping" => self.out.result(&id, &json!({})),
            "tools/list" => self.list_tools(&id, &params),
            "tools/call" => self.call_tool(id, &params),
            "prompts/list" if self.options.prompts > 0 => {
                self.paginate(&id, &params, "prompts", &prompt_list(&self.options));
            }
            "prompts/get" if self.options.prompts > 0 => self.get_prompt(&id, &params),
            "resources/list" if self.options.resources > 0 => {
                self.paginate(&id, &params, "resources", &resource_list(&self.options));
            }
            "resources/templates/list" if self.options.resources > 0 => {
                let template = self
                    .options
                    .template
                    .as_deref()
                    .unwrap_or("fixture://t/{id}");
                let templates = vec![json!({"uriTemplate": template, "name": "template"})];
                self.paginate(&id, &params, "resourceTemplates", &templates);
            }
            "resources/read" if self.options.resources > 0 => {
                let uri = params.get("uri").and_then(Value::as_str).unwrap_or("");
                self.out.result(
                    &id,
                    &json!({"contents": [{"uri": uri, "mimeType": "text/plain", "text": format!("contents of {uri}"),
                                          "_meta": {"server": self.options.name.as_deref().unwrap_or("mcpd-fixture")}}]}),
                );
            }
            "resources/subscribe"
                if self.options.resources > 0
                    && params
                        .get("uri")
                        .and_then(Value::as_str)
                        .is_some_and(|u| u.contains("refuse")) =>
            {
                self.out
                    .error(&id, -32602, "this resource cannot be subscribed to");
            }
            "resources/subscribe" | "resources/unsubscribe" if self.options.resources > 0 => {
                self.out.result(&id, &json!({}));
            }
            "logging/setLevel" if self.options.logging => self.out.result(&id, &json!({})),
            "tasks/list" if self.options.tasks => {
                let tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
                let listed: Vec<String> = tasks.iter().map(|t| task_json(t)).collect();
                self.out.send(&format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"result":{{"tasks":[{}]}}}}"#,
                    listed.join(",")
                ));
            }
            "tasks/get" if self.options.tasks => {
                let task = params.get("taskId").and_then(Value::as_str).unwrap_or("");
                let known = self
                    .tasks
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .any(|t| t == task);
                if known {
                    let task = task_json(task);
                    self.out
                        .send(&format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{task}}}"#));
                } else {
                    self.out.error(&id, -32602, &format!("no task {task}"));
                }
            }
            "completion/complete" if self.options.completions => {
                let value = params
                    .pointer("/argument/value")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                self.out.result(
                    &id,
                    &json!({"completion": {"values": [format!("{value}-done")], "total": 1, "hasMore": false}}),
                );
            }
            _ if self.options.ignore_unknown => {}
            _ => self
                .out
                .error(&id, -32601, &format!("method not found: {method}")),
        }
    }

    fn notification(self: &Arc<Self>, method: &str) {
        if method != "notifications/initialized" {
            return;
        }
        if self.options.exit_after_init {
            std::process::exit(0);
        }
        if let Some(ms) = self.options.list_changed_after_ms {
            let server = Arc::clone(self);
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(ms));
                *server.late.lock().unwrap_or_else(PoisonError::into_inner) = true;
                server
                    .out
                    .send(r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#);
            });
        }
    }

    fn initialize(&self, id: Value, params: &Value) {
        let asked = params
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let version = KNOWN_VERSIONS
            .iter()
            .find(|v| **v == asked)
            .copied()
            .unwrap_or(DEFAULT_VERSION);
        let o = &self.options;
        let name = o.name.as_deref().unwrap_or("mcpd-fixture");
        let mut capabilities = json!({"tools": {"listChanged": true}});
        if o.prompts > 0 {
            capabilities["prompts"] = json!({"listChanged": true});
        }
        if o.resources > 0 {
            capabilities["resources"] = json!({"listChanged": true, "subscribe": true});
        }
        if o.logging {
            capabilities["logging"] = json!({});
        }
        if o.completions {
            capabilities["completions"] = json!({});
        }
        if o.tasks {
            capabilities["tasks"] =
                json!({"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}});
        }
        let mut result = json!({
            "protocolVersion": version,
            "capabilities": capabilities,
            "serverInfo": {"name": name, "version": env!("CARGO_PKG_VERSION")},
        });
        if let Some(text) = &o.instructions {
            result["instructions"] = json!(text);
        }
        match o.delay_init_ms {
            None => self.out.result(&id, &result),
            Some(ms) => {
                let out = self.out.clone();
                thread::spawn(move || {
                    thread::sleep(Duration::from_millis(ms));
                    out.result(&id, &result);
                });
            }
        }
    }

    fn list_tools(&self, id: &Value, params: &Value) {
        let late = *self.late.lock().unwrap_or_else(PoisonError::into_inner);
        self.paginate(id, params, "tools", &tool_list(&self.options, late));
    }

    /// Answers a list request with `items` under `field`, a page at a time with `--page-size`.
    fn paginate(&self, id: &Value, params: &Value, field: &str, items: &[Value]) {
        let Some(page) = self.options.page_size else {
            self.out.result(id, &json!({ field: items }));
            return;
        };
        let start = match params.get("cursor").and_then(Value::as_str) {
            None => 0,
            Some(c) => match c.parse::<usize>() {
                Ok(n) if n <= items.len() => n,
                _ => {
                    self.out.error(id, -32602, &format!("invalid cursor {c:?}"));
                    return;
                }
            },
        };
        let end = (start + page).min(items.len());
        let mut result = json!({ field: items[start..end] });
        if end < items.len() {
            result["nextCursor"] = json!(end.to_string());
        }
        self.out.result(id, &result);
    }

    fn get_prompt(&self, id: &Value, params: &Value) {
        let name = params.get("name").and_then(Value::as_str).unwrap_or("");
        let known = name
            .strip_prefix("prompt_")
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n < self.options.prompts && name == format!("prompt_{n}"));
        if !known {
            self.out
                .error(id, -32602, &format!("unknown prompt {name:?}"));
            return;
        }
        self.out.result(
            id,
            &json!({"messages": [{"role": "user", "content": {"type": "text", "text": format!("prompt {name}")}}]}),
        );
    }

    fn call_tool(self: &Arc<Self>, id: Value, params: &Value) {
        if self.options.tasks && params.get("task").is_some() {
            let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
            let task = format!("fx-task-{}", tasks.len() + 1);
            tasks.push(task.clone());
            let task = task_json(&task);
            self.out.send(&format!(
                r#"{{"jsonrpc":"2.0","id":{id},"result":{{"task":{task}}}}}"#
            ));
            return;
        }
        let name = params.get("name").and_then(Value::as_str).unwrap_or("");
        let args = params.get("arguments").cloned().unwrap_or(json!({}));
        let num = |key: &str| args.get(key).and_then(Value::as_f64).unwrap_or(0.0);
        match name {
            "draft7" => self.out.result(&id, &text_result(&num("n").to_string())),
            "string_code" => self.out.send(
                &json!({"jsonrpc": "2.0", "id": id, "error": {"code": "-32000", "message": "went wrong", "data": {"why": "a string code"}}}).to_string(),
            ),
            "no_message" => self
                .out
                .send(&json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32000}}).to_string()),
            "bare_error" => self
                .out
                .send(&json!({"jsonrpc": "2.0", "id": id, "error": "it broke"}).to_string()),
            "echo" => {
                let message = args.get("message").and_then(Value::as_str).unwrap_or("");
                self.out.result(&id, &text_result(message));
            }
            "add" => {
                let sum = num("a") + num("b");
                let mut r = text_result(&sum.to_string());
                r["structuredContent"] = json!({"sum": sum});
                self.out.result(&id, &r);
            }
            "sleep" => {
                let ms = num("ms").max(0.0) as u64;
                let token = params.pointer("/_meta/progressToken").cloned();
                let out = self.out.clone();
                thread::spawn(move || {
                    if let Some(token) = token {
                        out.send(
                            &json!({"jsonrpc": "2.0", "method": "notifications/progress",
                                    "params": {"progressToken": token, "progress": 0, "total": 1}})
                            .to_string(),
                        );
                    }
                    thread::sleep(Duration::from_millis(ms));
                    out.result(&id, &text_result(&format!("slept {ms} ms")));
                });
            }
            "pid" => self
                .out
                .result(&id, &text_result(&std::process::id().to_string())),
            "big" => {
                let text = serde_json::to_string(BIG_STRUCTURED).unwrap_or_default();
                self.out.send(&format!(
                    r#"{{"jsonrpc":"2.0","id":{},"result":{{"content":[{{"type":"text","text":{text}}}],"structuredContent":{BIG_STRUCTURED}}}}}"#,
                    id
                ));
            }
            "crash" => std::process::exit(3),
            "blob" if self.options.blob => {
                let text = "x".repeat(num("bytes").max(0.0) as usize);
                self.out.result(&id, &text_result(&text));
            }
            _ if self.options.extra_tools.iter().any(|t| t == name) => {
                let server = self.options.name.as_deref().unwrap_or("mcpd-fixture");
                self.out
                    .result(&id, &text_result(&format!("{name} of {server}")));
            }
            "read_file" if self.options.probe_tools => {
                let path = args["path"].as_str().unwrap_or_default();
                let r = std::fs::read_to_string(path);
                self.out.result(&id, &text_result(&probe(r)));
            }
            "write_file" if self.options.probe_tools => {
                let path = args["path"].as_str().unwrap_or_default();
                let text = args["text"].as_str().unwrap_or_default();
                let r = std::fs::write(path, text).map(|()| "written".to_owned());
                self.out.result(&id, &text_result(&probe(r)));
            }
            "alloc" if self.options.probe_tools => {
                let mb = num("mb") as usize;
                let mut kept = Vec::with_capacity(mb);
                for _ in 0..mb {
                    // Touched, so that it is resident.
                    kept.push(vec![1u8; 1 << 20]);
                }
                std::mem::forget(kept);
                self.out
                    .result(&id, &text_result(&format!("ok: allocated {mb} MiB")));
            }
            "spawn" if self.options.probe_tools => {
                let n = num("n") as usize;
                let mut started = 0;
                let mut error = String::new();
                for _ in 0..n {
                    match Command::new("sleep")
                        .arg("600")
                        .stdin(Stdio::null())
                        .spawn()
                    {
                        Ok(child) => {
                            std::mem::forget(child);
                            started += 1;
                        }
                        Err(e) => {
                            error = format!(" ({e})");
                            break;
                        }
                    }
                }
                self.out
                    .result(&id, &text_result(&format!("started {started}{error}")));
            }
            "connect" if self.options.probe_tools => {
                let port = num("port") as u16;
                let r = std::net::TcpStream::connect(("127.0.0.1", port))
                    .map(|_| "connected".to_owned());
                self.out.result(&id, &text_result(&probe(r)));
            }
            "show_app" if self.options.app => self.out.send(&format!(
                r#"{{"jsonrpc":"2.0","id":{id},"result":{{"content":[{{"type":"text","text":"app"}}],"_meta":{{"ui":{{"resourceUri":"ui://fixture/app"}},"n":1.50}}}}}}"#
            )),
            "ask" => self.ask(id, &args),
            "notify" if self.options.notify_tool => {
                let method = args["method"].as_str().unwrap_or_default();
                if method == "notifications/tools/list_changed" {
                    *self.late.lock().unwrap_or_else(PoisonError::into_inner) = true;
                }
                let params = args.get("params").cloned().unwrap_or(json!({}));
                self.out.send(
                    &json!({"jsonrpc": "2.0", "method": method, "params": params}).to_string(),
                );
                self.out.result(&id, &text_result("sent"));
            }
            _ if self.is_numbered_tool(name) => self.out.result(&id, &text_result(name)),
            _ if name == "late" && *self.late.lock().unwrap_or_else(PoisonError::into_inner) => {
                self.out.result(&id, &text_result("late"));
            }
            _ => self
                .out
                .error(&id, -32602, &format!("unknown tool {name:?}")),
        }
    }

    fn is_numbered_tool(&self, name: &str) -> bool {
        name.strip_prefix("tool_")
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n < self.options.tools && name == format!("tool_{n}"))
    }

    fn ask(&self, call_id: Value, args: &Value) {
        let Some(method) = args.get("method").and_then(Value::as_str) else {
            self.out.error(&call_id, -32602, "ask needs `method`");
            return;
        };
        let ask_id = {
            let mut n = self.next_ask.lock().unwrap_or_else(PoisonError::into_inner);
            *n += 1;
            format!("fixture-ask-{n}")
        };
        self.asked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(ask_id.clone(), call_id);
        let mut request = json!({"jsonrpc": "2.0", "id": ask_id, "method": method});
        if let Some(p) = args.get("params") {
            request["params"] = p.clone();
        }
        self.out.send(&request.to_string());
    }

    fn answer_ask(&self, id: &Value, response: &Value) {
        let Some(key) = id.as_str() else { return };
        let Some(call_id) = self
            .asked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key)
        else {
            return;
        };
        if let Some(result) = response.get("result") {
            let mut r = text_result(&result.to_string());
            r["structuredContent"] = result.clone();
            self.out.result(&call_id, &r);
        } else {
            let error = response.get("error").cloned().unwrap_or(Value::Null);
            let mut r = text_result(&format!("client error: {error}"));
            r["isError"] = json!(true);
            self.out.result(&call_id, &r);
        }
    }
}

fn main() {
    let options = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("mcpd-fixture: {e}");
            std::process::exit(2);
        }
    };
    if options.ignore_sigterm {
        // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code; it is
        // done before any other thread exists.
        unsafe {
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
        }
    }
    if options.fork_grandchildren {
        // Deliberately never waited for: these are the processes a supervisor must not orphan.
        let spawned = Command::new("sh")
            .args(["-c", "sleep 600 & sleep 600"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn();
        if let Err(e) = spawned {
            eprintln!("mcpd-fixture: cannot start grandchildren: {e}");
            std::process::exit(2);
        }
    }
    if options.escape_grandchild {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("sleep");
        cmd.arg("601").stdin(Stdio::null()).stdout(Stdio::null());
        // SAFETY: between fork and exec the closure only calls setsid and signal, both
        // async-signal-safe; it allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                libc::signal(libc::SIGTERM, libc::SIG_IGN);
                Ok(())
            });
        }
        if let Err(e) = cmd.spawn() {
            eprintln!("mcpd-fixture: cannot start the escaping grandchild: {e}");
            std::process::exit(2);
        }
    }
    for i in 0..options.stderr_lines {
        eprintln!("mcpd-fixture stderr line {i}");
    }
    let mut record = options.record.as_ref().map(|path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|e| {
                eprintln!("mcpd-fixture: cannot open {path}: {e}");
                std::process::exit(2);
            })
    });

    let server = Arc::new(Server {
        options,
        out: Out(Arc::new(Mutex::new(io::stdout()))),
        late: Mutex::new(false),
        asked: Mutex::new(HashMap::new()),
        next_ask: Mutex::new(0),
        tasks: Mutex::new(Vec::new()),
    });
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let mut line = String::new();
    loop {
        line.clear();
        match input.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("mcpd-fixture: reading stdin: {e}");
                std::process::exit(1);
            }
        }
        if let Some(f) = record.as_mut() {
            // Best effort: a test that reads the record fails on its own if lines are missing.
            let _ = f.write_all(line.as_bytes()).and_then(|()| f.flush());
        }
        let trimmed = line.trim_end_matches(['\n', '\r']);
        if !trimmed.trim().is_empty() {
            server.handle(trimmed);
        }
    }
    if server.options.linger {
        loop {
            thread::park();
        }
    }
}
