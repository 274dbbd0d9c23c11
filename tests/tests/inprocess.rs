//! Routing with the daemon in the test's own process, as pueue and mini-redis test theirs:
//! `mcpd::run` on a listener in a temporary directory, clients speaking the socket protocol
//! (hello, then JSON-RPC lines) over tokio's `UnixStream`, and the fixture server as real
//! upstream processes. No `mcpd` or `mcp-shim` process: a failure shows the daemon's own
//! stack, and each test costs the upstreams' start only.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::path::PathBuf;

use mcpd::DaemonConfig;
use mcpd_proto::{AttachHello, Hello, PROTOCOL_VERSION};
use mcpd_tests::{TIMEOUT, fixture};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A daemon running in this process, stopped (its upstreams too) by [`Daemon::stop`].
struct Daemon {
    dir: tempfile::TempDir,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Daemon {
    /// Runs `mcpd::run` with `config` and temporary XDG directories.
    async fn start(config: Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| -> PathBuf {
            let p = dir.path().join(name);
            std::fs::create_dir_all(&p).unwrap();
            p
        };
        let (runtime, state, cache, home) =
            (path("run"), path("state"), path("cache"), path("config"));
        let config_path = home.join("config.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let listener = tokio::net::UnixListener::bind(runtime.join("mcpd.sock")).unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(mcpd::run(
            DaemonConfig {
                config_path,
                reload_requests: None,
                runtime_dir: runtime,
                cache_file: cache.join("catalog.json"),
                state_dir: state,
                cut_short: CancellationToken::new(),
            },
            listener,
            shutdown.clone(),
        ));
        Self {
            dir,
            shutdown,
            task,
        }
    }

    /// A new session that has done the `initialize` handshake with `capabilities`.
    async fn client(&self, capabilities: Value) -> Client {
        let stream = UnixStream::connect(self.dir.path().join("run/mcpd.sock"))
            .await
            .unwrap();
        let (read, write) = stream.into_split();
        let mut client = Client {
            lines: BufReader::new(read).lines(),
            write,
            next_id: 1,
            seen: Vec::new(),
        };
        let hello = Hello::Attach(AttachHello {
            v: PROTOCOL_VERSION,
            profile: mcpd_proto::DEFAULT_PROFILE.to_owned(),
            client: Default::default(),
            resume: None,
            direct: false,
            handback: false,
            direct_input: 0,
            pipes: false,
        });
        client.send(serde_json::to_value(&hello).unwrap()).await;
        let welcome = client.next().await;
        assert_eq!(welcome["op"], "welcome", "{welcome}");
        let init = client
            .request(
                "initialize",
                json!({"protocolVersion": "2025-11-25", "capabilities": capabilities, "clientInfo": {"name": "inprocess", "version": "1"}}),
            )
            .await;
        assert!(init["result"].is_object(), "{init}");
        client
            .send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        client
    }

    /// Stops the daemon as SIGTERM does and waits until it has stopped every upstream.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(TIMEOUT, self.task)
            .await
            .expect("the daemon stops in time")
            .unwrap()
            .unwrap();
    }
}

/// One session over the socket.
struct Client {
    lines: Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
    next_id: u64,
    /// Messages read while waiting for something else.
    seen: Vec<Value>,
}

impl Client {
    async fn send(&mut self, message: Value) {
        let mut line = message.to_string();
        line.push('\n');
        self.write.write_all(line.as_bytes()).await.unwrap();
    }

    /// The next line from the daemon, as JSON.
    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(TIMEOUT, self.lines.next_line())
            .await
            .expect("the daemon says something in time")
            .unwrap()
            .expect("the daemon keeps the connection");
        serde_json::from_str(&line).unwrap()
    }

    /// The first message (seen already or next) that `wanted` accepts.
    async fn wait_for(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.seen.iter().position(&wanted) {
            return self.seen.remove(i);
        }
        loop {
            let message = self.next().await;
            if wanted(&message) {
                return message;
            }
            self.seen.push(message);
        }
    }

    /// Sends a request and returns its id.
    async fn send_request(&mut self, method: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        id
    }

    /// The answer to request `id`.
    async fn answer(&mut self, id: u64) -> Value {
        self.wait_for(|m| m["id"] == id && m.get("method").is_none())
            .await
    }

    async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.send_request(method, params).await;
        self.answer(id).await
    }

    /// The text of a `tools/call` of `name`, or the error.
    async fn call(&mut self, name: &str, arguments: Value) -> Result<String, Value> {
        let answer = self
            .request("tools/call", json!({"name": name, "arguments": arguments}))
            .await;
        match answer.get("result") {
            Some(r) => Ok(r["content"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned()),
            None => Err(answer["error"].clone()),
        }
    }

    /// Whether a message `wanted` accepts was read while waiting for others: for checking
    /// that one did not come before one that was sent after it.
    fn has_seen(&self, wanted: impl Fn(&Value) -> bool) -> bool {
        self.seen.iter().any(wanted)
    }
}

fn two_servers() -> Value {
    json!({"mcpServers": {
        "a": fixture::server(&["--name", "a", "--resources", "2", "--notify-tool"]),
        "b": fixture::server(&["--name", "b"]),
    }})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_reach_each_server_and_the_list_merges_both() {
    let daemon = Daemon::start(two_servers()).await;
    let mut client = daemon.client(json!({})).await;
    assert_eq!(
        client.call("a__echo", json!({"message": "to a"})).await,
        Ok("to a".into())
    );
    assert_eq!(
        client.call("b__echo", json!({"message": "to b"})).await,
        Ok("to b".into())
    );
    // Each call went to its own process.
    let (pa, pb) = (
        client.call("a__pid", json!({})).await.unwrap(),
        client.call("b__pid", json!({})).await.unwrap(),
    );
    assert_ne!(pa, pb);
    let list = client.request("tools/list", json!({})).await;
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for name in ["a__echo", "a__notify", "b__echo", "b__pid"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    assert!(!names.contains(&"b__notify"), "{names:?}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_update_goes_to_the_subscribed_sessions_only() {
    let daemon = Daemon::start(two_servers()).await;
    let mut first = daemon.client(json!({})).await;
    let mut second = daemon.client(json!({})).await;
    let mut other = daemon.client(json!({})).await;
    let uri = "fixture://r/0";
    for client in [&mut first, &mut second] {
        let answer = client
            .request("resources/subscribe", json!({"uri": uri}))
            .await;
        assert!(answer["result"].is_object(), "{answer}");
    }
    let sent = other
        .call(
            "a__notify",
            json!({"method": "notifications/resources/updated", "params": {"uri": uri}}),
        )
        .await;
    assert_eq!(sent, Ok("sent".into()));
    let updated =
        |m: &Value| m["method"] == "notifications/resources/updated" && m["params"]["uri"] == uri;
    first.wait_for(updated).await;
    second.wait_for(updated).await;
    // The session that did not subscribe: the answer to its call came after the
    // notification was sent, and a ping answered after that; no update among them.
    let pong = other.request("ping", json!({})).await;
    assert!(pong["result"].is_object());
    assert!(
        !other.has_seen(updated),
        "an unsubscribed session got the update"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_request_goes_to_the_session_whose_call_is_waiting_for_it() {
    let daemon = Daemon::start(two_servers()).await;
    let sampling = json!({"sampling": {}});
    let mut idle = daemon.client(sampling.clone()).await;
    let mut calling = daemon.client(sampling).await;
    let call = calling
        .send_request(
            "tools/call",
            json!({"name": "a__ask", "arguments": {"method": "sampling/createMessage", "params": {"messages": [], "maxTokens": 1}}}),
        )
        .await;
    let asked = calling
        .wait_for(|m| m["method"] == "sampling/createMessage")
        .await;
    calling
        .send(json!({"jsonrpc": "2.0", "id": asked["id"], "result": {"role": "assistant", "content": {"type": "text", "text": "from the caller"}, "model": "m"}}))
        .await;
    let answer = calling.answer(call).await;
    assert_eq!(
        answer["result"]["structuredContent"]["content"]["text"], "from the caller",
        "{answer}"
    );
    // The other session, capable too, was not asked.
    let pong = idle.request("ping", json!({})).await;
    assert!(pong["result"].is_object());
    assert!(!idle.has_seen(|m| m["method"] == "sampling/createMessage"));
    daemon.stop().await;
}

/// A server that holds the first `resources/subscribe` until its tool `release` is called,
/// then refuses it, and refuses every later one.
const HOLDS_THE_FIRST_SUBSCRIBE: &str = r#"
import json, sys
held, released = None, False
def send(o):
    sys.stdout.write(json.dumps(o) + "\n"); sys.stdout.flush()
def refuse(i):
    send({"jsonrpc": "2.0", "id": i, "error": {"code": -32603, "message": "refused"}})
for line in sys.stdin:
    m = json.loads(line); method, i = m.get("method"), m.get("id")
    if method == "initialize":
        send({"jsonrpc": "2.0", "id": i, "result": {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}, "resources": {"subscribe": True}}, "serverInfo": {"name": "holds", "version": "1"}}})
    elif method == "tools/list":
        send({"jsonrpc": "2.0", "id": i, "result": {"tools": [{"name": "release", "inputSchema": {"type": "object"}}]}})
    elif method == "resources/list":
        send({"jsonrpc": "2.0", "id": i, "result": {"resources": [{"uri": "holds://r", "name": "r"}]}})
    elif method == "resources/templates/list":
        send({"jsonrpc": "2.0", "id": i, "result": {"resourceTemplates": []}})
    elif method == "resources/subscribe":
        if held is None and not released:
            held = i
        else:
            refuse(i)
    elif method == "tools/call":
        if held is not None:
            refuse(held)
        held, released = None, True
        send({"jsonrpc": "2.0", "id": i, "result": {"content": [{"type": "text", "text": "released"}]}})
    elif i is not None:
        send({"jsonrpc": "2.0", "id": i, "error": {"code": -32601, "message": "unknown"}})
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_subscriber_is_not_told_subscribed_before_the_upstream_answered_the_first() {
    let daemon = Daemon::start(json!({"mcpServers": {
        "holds": {"command": "python3", "args": ["-c", HOLDS_THE_FIRST_SUBSCRIBE], "protocol": "legacy"},
    }}))
    .await;
    let mut first = daemon.client(json!({})).await;
    let mut second = daemon.client(json!({})).await;
    let listed = first.request("resources/list", json!({})).await;
    assert_eq!(
        listed["result"]["resources"][0]["uri"], "holds://r",
        "{listed}"
    );
    let a = first
        .send_request("resources/subscribe", json!({"uri": "holds://r"}))
        .await;
    let b = second
        .send_request("resources/subscribe", json!({"uri": "holds://r"}))
        .await;
    // The upstream refuses the subscribe it held: neither session is subscribed.
    assert_eq!(
        first.call("holds__release", json!({})).await,
        Ok("released".into())
    );
    let (a, b) = (first.answer(a).await, second.answer(b).await);
    assert!(a["error"].is_object(), "the first subscriber: {a}");
    assert!(
        b["error"].is_object(),
        "the second subscriber was told subscribed: {b}"
    );
    daemon.stop().await;
}
