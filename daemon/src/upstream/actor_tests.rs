//! The actor's lifecycle on tokio's paused clock, against a transport the test drives
//! ([`super::super::fake`]): the clock jumps to the next timer whenever every task waits, so
//! each test runs in milliseconds and the times it reads are exactly the actor's.

use std::sync::Arc;
use std::time::Duration;

use mcpd_proto::ServerState;
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::super::fake::{self, FakeServer};
use super::super::transport::Event;
use super::super::transport::tests::spec;
use super::super::{
    Begin, Caller, CallerRef, Candidate, ClientCaps, Context, Downstream, Forward, InstanceKey,
    Reply, RouteError, Snapshot, UpstreamHandle, UpstreamRef,
};

/// A sessions side with no session: nothing to route to, nothing asked of upstreams.
#[derive(Debug)]
struct NoSessions;

impl Downstream for NoSessions {
    fn choose(&self, _: &str, _: bool, _: &[Candidate<'_>]) -> Option<usize> {
        None
    }
    fn send_request(
        &self,
        _: &CallerRef,
        _: &UpstreamRef,
        _: &str,
        _: &mcpd_proto::envelope::Envelope<'_>,
    ) -> Result<(), RouteError> {
        Err(RouteError {
            code: mcpd_proto::envelope::METHOD_NOT_FOUND,
            message: "no session".to_owned(),
        })
    }
    fn request_cancelled(&self, _: &UpstreamRef, _: &str, _: &mcpd_proto::envelope::Envelope<'_>) {}
    fn upstream_gone(&self, _: &UpstreamRef) {}
    fn owes(&self, _: &UpstreamRef) -> bool {
        false
    }
    fn notify(&self, _: &InstanceKey, _: &mcpd_proto::envelope::Envelope<'_>) -> bool {
        false
    }
    fn log_level(&self) -> Option<&'static str> {
        None
    }
    fn subscribed_uris(&self, _: &InstanceKey) -> Vec<String> {
        Vec::new()
    }
}

/// The client of the test's calls.
#[derive(Debug)]
struct Client;

impl Caller for Client {
    fn id(&self) -> u64 {
        1
    }
    fn try_send(&self, _: String) -> bool {
        true
    }
    fn caps(&self) -> ClientCaps {
        ClientCaps::default()
    }
    fn log_level(&self) -> Option<&'static str> {
        None
    }
    fn is_closed(&self) -> bool {
        false
    }
}

/// Starts the actor of server `name` (unique per test) with the configuration `server`.
fn spawn(name: &str, server: Value) -> UpstreamHandle {
    let mut server = server;
    server["command"] = json!("fake-server-that-is-never-spawned");
    // The fake speaks the handshake era (no `server/discover` probe first).
    server["protocol"] = json!("legacy");
    let context = Context {
        downstream: Arc::new(NoSessions),
        catalog_dirty: Arc::new(Notify::new()),
        records: None,
        auth: None,
    };
    let begin = Begin {
        initial: Snapshot::default(),
        gate: None,
        eager: false,
        stopped: false,
    };
    UpstreamHandle::spawn(InstanceKey::shared(name), spec(server), &context, begin)
}

/// Waits until the server's published state satisfies `done`.
async fn wait_for(handle: &UpstreamHandle, done: impl FnMut(&Snapshot) -> bool) -> Snapshot {
    let mut snapshot = handle.snapshot.clone();
    let seen = snapshot.wait_for(done).await.expect("the actor runs");
    seen.clone()
}

/// Sends a client's `tools/call` with JSON-RPC id 7.
fn call(handle: &UpstreamHandle) -> oneshot::Receiver<Reply> {
    let upstream_id = handle.allocate_id();
    let line = json!({"jsonrpc": "2.0", "id": upstream_id, "method": "tools/call", "params": {"name": "t"}});
    handle
        .request(Forward {
            upstream_id,
            line: line.to_string(),
            client_id: serde_json::value::to_raw_value(&7).expect("a number"),
            progress_token: None,
            session: Arc::new(Client),
            progress: Arc::new(crate::upstream::Progress::default()),
            caps: None,
            asks: None,
            log_level: None,
        })
        .expect("the actor takes it")
}

/// A fake that is up and has done its handshake.
async fn ready(name: &str, handle: &UpstreamHandle) -> FakeServer {
    let mut server = fake::expect(name);
    server.handshake().await;
    wait_for(handle, |s| s.state == ServerState::Ready).await;
    let _ = handle;
    server
}

#[tokio::test(start_paused = true)]
async fn a_hung_server_is_restarted_a_ping_timeout_after_its_ping() {
    // The defaults: a ping every 30 s, answered within 10 s.
    let mut first = fake::expect("ping-hung");
    let handle = spawn("ping-hung", json!({}));
    first.handshake().await;
    let _next = fake::expect("ping-hung");
    let ping = first.request("ping").await;
    let sent = Instant::now();
    first.stopped().await;
    let waited = sent.elapsed();
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_secs(30),
        "restarted {waited:?} after the unanswered ping {ping}, not 10 s"
    );
    let failed = wait_for(&handle, |s| s.last_error.is_some()).await;
    let why = failed.last_error.unwrap_or_default();
    assert!(
        why.contains("did not answer a health ping within 10s"),
        "{why}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_server_that_answers_its_pings_is_kept() {
    let mut server = fake::expect("ping-ok");
    let handle = spawn(
        "ping-ok",
        json!({"pingIntervalMs": 1000, "pingTimeoutMs": 500}),
    );
    server.handshake().await;
    for _ in 0..5 {
        let ping = server.request("ping").await;
        server.answer(&ping, json!({}));
    }
    let snapshot = handle.snapshot();
    assert_eq!(snapshot.state, ServerState::Ready);
    assert_eq!(snapshot.restarts, 0);
}

#[tokio::test(start_paused = true)]
async fn a_request_arriving_while_the_server_ends_by_itself_waits_for_the_restart() {
    let handle = spawn("self-exit", json!({}));
    let first = ready("self-exit", &handle).await;
    // It ran a while (so it is restarted at once, without backoff), then its process exits;
    // a request arrives while the transport is still ending.
    tokio::time::sleep(Duration::from_secs(20)).await;
    first.start_closing();
    let reply = call(&handle);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut second = fake::expect("self-exit");
    first.event(Event::Closed("exited with status 0".to_owned()));
    second.handshake().await;
    let request = second.request("tools/call").await;
    second.answer(&request, json!({"content": []}));
    let answer = reply.await.expect("answered").expect("not an error");
    let answer: Value = serde_json::from_str(&answer).expect("JSON");
    assert_eq!(answer["id"], 7, "{answer}");
    assert_eq!(handle.snapshot().restarts, 1);
}

#[tokio::test(start_paused = true)]
async fn failures_right_after_a_start_back_off_doubling_then_stop_as_a_crash_loop() {
    let handle = spawn(
        "crashing",
        json!({"restartDelayMs": 1000, "maxRestartDelayMs": 60000, "crashLoopAfter": 4}),
    );
    let mut starts = Vec::new();
    for _ in 0..4 {
        let mut server = fake::expect("crashing");
        server.request("initialize").await;
        starts.push(Instant::now());
        server.event(Event::Closed("exited with status 1".to_owned()));
    }
    let looping = wait_for(&handle, |s| s.state == ServerState::CrashLoop).await;
    assert!(looping.last_error.is_some_and(|e| e.contains("status 1")));
    // 1 s, 2 s, 4 s apart, each ±20% so that servers that failed together spread out.
    for (i, pair) in starts.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let base = Duration::from_secs(1 << i);
        assert!(
            gap >= base.mul_f64(0.8) && gap <= base.mul_f64(1.2),
            "restart {} came {gap:?} after the failure, not about {base:?}",
            i + 1
        );
    }
    // A crash loop waits for a replacement (`mcpctl start|restart`, a reload): no start is
    // attempted meanwhile, so the fake queued for one is still there.
    let _unused = fake::expect("crashing");
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(handle.snapshot().state, ServerState::CrashLoop);
    assert!(fake::take("crashing").is_some(), "a start was attempted");
}

#[tokio::test(start_paused = true)]
async fn an_unused_server_stops_after_its_idle_timeout_and_a_request_wakes_it() {
    let handle = spawn("idle", json!({"idleTimeoutMs": 60000, "pingIntervalMs": 0}));
    let mut first = ready("idle", &handle).await;
    let up = Instant::now();
    first.stopped().await;
    assert!(
        up.elapsed() >= Duration::from_secs(60),
        "{:?}",
        up.elapsed()
    );
    wait_for(&handle, |s| s.state == ServerState::Idle).await;
    let mut second = fake::expect("idle");
    let reply = call(&handle);
    second.handshake().await;
    let request = second.request("tools/call").await;
    second.answer(&request, json!({"content": []}));
    assert!(reply.await.expect("answered").is_ok());
    // Waking up is not a restart: `restarts` counts failures.
    assert_eq!(handle.snapshot().restarts, 0);
}

#[tokio::test(start_paused = true)]
async fn the_idle_timeout_counts_from_the_handshake_and_waits_for_the_lists() {
    let handle = spawn(
        "idle-slow",
        json!({"idleTimeoutMs": 60000, "pingIntervalMs": 0, "startupTimeoutMs": 300000}),
    );
    let mut server = fake::expect("idle-slow");
    let init = server.request("initialize").await;
    // It answers `initialize` later than its idle timeout, and its list later still.
    tokio::time::sleep(Duration::from_secs(90)).await;
    server.answer(
        &init,
        json!({"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "fake", "version": "1"}}),
    );
    assert_eq!(server.recv().await["method"], "notifications/initialized");
    let handshake = Instant::now();
    let list = server.request("tools/list").await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(handle.snapshot().state, ServerState::Ready);
    server.answer(
        &list,
        json!({"tools": [{"name": "t", "inputSchema": {"type": "object"}}]}),
    );
    let listed = wait_for(&handle, |s| s.known[0]).await;
    assert_eq!(listed.lists[0].len(), 1);
    assert_eq!(listed.state, ServerState::Ready);
    // It is stopped a full idle timeout after its handshake.
    server.stopped().await;
    assert!(
        handshake.elapsed() >= Duration::from_secs(60),
        "{:?}",
        handshake.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_during_the_backoff_after_a_quick_failure_waits_for_the_restart() {
    let handle = spawn(
        "backoff",
        json!({"restartDelayMs": 1000, "crashLoopAfter": 5}),
    );
    let mut first = fake::expect("backoff");
    first.request("initialize").await;
    let mut second = fake::expect("backoff");
    // It dies as it starts: a quick failure, restarted after about a second.
    first.event(Event::Closed("exited with status 1".to_owned()));
    wait_for(&handle, |s| s.state == ServerState::Failed).await;
    let reply = call(&handle);
    second.handshake().await;
    let request = second.request("tools/call").await;
    second.answer(&request, json!({"content": []}));
    let answer = reply.await.expect("answered");
    assert!(
        answer.is_ok(),
        "the call waited for the restart: {answer:?}"
    );
    assert_eq!(handle.snapshot().restarts, 1);
}

#[test]
fn a_list_page_gives_its_named_items_and_cursor_or_says_what_is_wrong_with_it() {
    use super::super::ListKind;
    use super::{PageError, parse_page};
    use serde_json::value::RawValue;
    let raw = |t: &str| RawValue::from_string(t.to_owned()).unwrap();
    let page = raw(r#"{"tools":[{"name":"a","x":1.50},{"title":"nameless"}],"nextCursor":"c2"}"#);
    let (items, next) = parse_page(&page, ListKind::Tools).unwrap();
    // The item without a name is skipped; the other is kept byte for byte.
    assert_eq!(items.len(), 1);
    assert_eq!(
        (items[0].key.as_str(), items[0].raw.get()),
        ("a", r#"{"name":"a","x":1.50}"#)
    );
    assert_eq!(next.as_deref(), Some("c2"));
    let e = parse_page(&raw(r#"{"tools":{}}"#), ListKind::Tools).unwrap_err();
    assert!(matches!(e, PageError::NotAnArray { field: "tools", .. }));
    assert!(
        e.to_string()
            .starts_with("tools/list `tools` is not an array: "),
        "{e}"
    );
    let e = parse_page(&raw("[]"), ListKind::Prompts).unwrap_err();
    assert!(matches!(
        e,
        PageError::NotAnObject {
            method: "prompts/list",
            ..
        }
    ));
    assert!(std::error::Error::source(&e).is_some());
}
