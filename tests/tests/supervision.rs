//! Supervision (issue 4, daemon side): restarts, crash loops, operator start/stop/restart,
//! health pings, idle stops, per-client instances, and cleanup after a daemon crash. Each test
//! kills or stops real processes and checks `/proc`.

use std::time::{Duration, Instant};

use mcpd_proto::{ControlRequest, ControlResponse, ServerState};
use mcpd_tests::fixture;
use mcpd_tests::process::{ProcessId, descendants_of, pids_of_cmdline_containing, signal};
use mcpd_tests::{ShimClient, TIMEOUT, TestDaemon, wait_until};
use serde_json::{Value, json};

fn fixture_with(args: &[&str], extra: Value) -> Value {
    let mut server = fixture::server(args);
    if let (Some(s), Some(e)) = (server.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    server
}

fn echo_text(shim: &mut ShimClient, tool: &str, message: &str) -> Result<String, Value> {
    let id = shim.send_request(
        "tools/call",
        Some(json!({"name": tool, "arguments": {"message": message}})),
    );
    let line = shim.response_line(&json!(id));
    let v: Value = serde_json::from_str(&line).expect("a JSON response");
    match v.get("result") {
        Some(r) => Ok(r["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned()),
        None => Err(v["error"].clone()),
    }
}

#[test]
fn an_upstream_killed_20_times_under_load_comes_back_and_no_call_hangs() {
    let daemon = TestDaemon::start(json!({"mcpServers": {
        "fx": fixture_with(&[], json!({"restartDelayMs": 50, "maxRestartDelayMs": 200, "crashLoopAfter": 1000, "requestTimeoutMs": 5000}))
    }}));
    daemon.wait_server_state("fx", ServerState::Ready);
    let clients: Vec<_> = (0..2)
        .map(|c| {
            let mut shim = ShimClient::spawn(&daemon, None);
            shim.initialize();
            (c, shim)
        })
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = clients
        .into_iter()
        .map(|(c, mut shim)| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failed, mut slowest) = (0u32, 0u32, Duration::ZERO);
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let message = format!("c{c}-{n}");
                    let started = Instant::now();
                    match echo_text(&mut shim, "fx__echo", &message) {
                        Ok(text) => {
                            assert!(
                                text.contains(&message),
                                "{text} is not the answer to {message}"
                            );
                            ok += 1;
                        }
                        Err(_) => failed += 1,
                    }
                    slowest = slowest.max(started.elapsed());
                }
                (ok, failed, slowest)
            })
        })
        .collect();

    for round in 0..20 {
        let fx = daemon.wait_server_state("fx", ServerState::Ready);
        let pid = fx.pid.expect("a ready server has a pid");
        std::thread::sleep(Duration::from_millis(100));
        signal(pid, libc::SIGKILL);
        assert!(
            wait_until(TIMEOUT, || daemon.server("fx").pid != Some(pid)),
            "round {round}: the killed server was not noticed"
        );
    }
    let fx = daemon.wait_server_state("fx", ServerState::Ready);
    assert_eq!(fx.restarts, 20, "{fx:?}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for worker in workers {
        let (ok, failed, slowest) = worker.join().expect("a client thread panicked");
        // Every call finished (the loop ended); none waited anywhere near the timeout.
        assert!(ok > 0, "no call succeeded ({failed} failed)");
        assert!(slowest < Duration::from_secs(5), "a call took {slowest:?}");
        println!(
            "client: {ok} calls answered, {failed} failed while the server was down, slowest {slowest:?}"
        );
    }
}

#[test]
fn a_server_that_exits_at_once_reaches_crash_loop_and_is_left_alone_until_restart() {
    let daemon = TestDaemon::start(json!({"mcpServers": {
        "bad": {"command": "sh", "args": ["-c", "echo 'no such module' >&2; exit 3"], "restartDelayMs": 20, "crashLoopAfter": 3},
    }}));
    let bad = daemon.wait_server_state("bad", ServerState::CrashLoop);
    assert!(
        bad.last_error
            .as_deref()
            .unwrap_or("")
            .contains("exited with status 3"),
        "{bad:?}"
    );
    assert_eq!(bad.last_exit.as_deref(), Some("exited with status 3"));
    assert!(
        bad.stderr_tail.iter().any(|l| l.contains("no such module")),
        "{bad:?}"
    );
    // It stays down: no more restarts, so no CPU spent on it.
    let restarts = bad.restarts;
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(daemon.server("bad").restarts, restarts);
    assert!(
        descendants_of(daemon.pid()).is_empty(),
        "a crash-looping server still has processes"
    );

    // A call says why and what to do, though the server never listed its tools.
    let mut shim = ShimClient::spawn(&daemon, None);
    shim.initialize();
    let error = echo_text(&mut shim, "bad__anything", "x").expect_err("nothing can answer");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("mcpctl restart bad") && message.contains("exited with status 3"),
        "{error}"
    );
    // `mcpctl status` shows it.
    let out = daemon.mcpctl(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("crash-loop"), "{text}");

    // `mcpctl restart` tries again (and it fails again).
    let out = daemon.mcpctl(&["restart", "bad"]);
    assert!(out.status.success(), "{out:?}");
    assert!(wait_until(TIMEOUT, || daemon.server("bad").restarts > restarts));
}

#[test]
fn mcpctl_stop_and_start_a_server_and_stop_leaves_no_process_of_its_group() {
    let daemon = TestDaemon::start(json!({"mcpServers": {
        "fx": fixture_with(&["--ignore-sigterm", "--fork-grandchildren"], json!({"stopTimeoutMs": 200, "killTimeoutMs": 300})),
    }}));
    let fx = daemon.wait_server_state("fx", ServerState::Ready);
    let pid = fx.pid.expect("pid");
    let group: Vec<ProcessId> = std::iter::once(pid)
        .chain(descendants_of(pid))
        .filter_map(ProcessId::of)
        .collect();
    assert!(
        group.len() >= 3,
        "the fixture forked no grandchildren: {group:?}"
    );

    let out = daemon.mcpctl(&["stop", "fx"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(daemon.server("fx").state, ServerState::Stopped);
    assert!(
        wait_until(TIMEOUT, || group.iter().all(|p| !p.alive())),
        "survivors: {group:?}"
    );

    let mut shim = ShimClient::spawn(&daemon, None);
    shim.initialize();
    // Its tools stay listed; a call says it was stopped.
    assert!(shim.tool_names().contains(&"fx__echo".to_owned()));
    let error = echo_text(&mut shim, "fx__echo", "x").expect_err("a stopped server cannot answer");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .contains("mcpctl start"),
        "{error}"
    );

    let out = daemon.mcpctl(&["start", "fx"]);
    assert!(out.status.success(), "{out:?}");
    daemon.wait_server_state("fx", ServerState::Ready);
    assert_eq!(
        echo_text(&mut shim, "fx__echo", "back").as_deref(),
        Ok("back")
    );

    let out = daemon.mcpctl(&["stop", "nope"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no server named `nope`"),
        "{out:?}"
    );
}

#[test]
fn a_server_that_stops_answering_pings_is_restarted() {
    let daemon = TestDaemon::start(json!({"mcpServers": {
        "fx": fixture_with(&[], json!({"pingIntervalMs": 200, "pingTimeoutMs": 500, "stopTimeoutMs": 100, "killTimeoutMs": 100, "restartDelayMs": 50})),
    }}));
    let fx = daemon.wait_server_state("fx", ServerState::Ready);
    let pid = fx.pid.expect("pid");
    // Frozen, it cannot answer anything; its pipes stay open.
    signal(pid, libc::SIGSTOP);
    let status = daemon.wait_status(
        Duration::from_secs(30),
        "fx restarted with a new pid",
        |s| {
            s.servers.iter().any(|x| {
                x.name == "fx" && x.state == ServerState::Ready && x.pid.is_some_and(|p| p != pid)
            })
        },
    );
    let fx = status.servers.iter().find(|s| s.name == "fx").expect("fx");
    assert!(fx.restarts >= 1);
    assert!(
        daemon.log().contains("did not answer a health ping"),
        "{}",
        daemon.log()
    );
    assert!(
        wait_until(TIMEOUT, || !mcpd_tests::process_alive(pid)),
        "the frozen server was not killed"
    );
}

#[test]
fn an_idle_server_is_stopped_and_the_next_call_starts_it_again() {
    let daemon = TestDaemon::start(json!({"mcpServers": {
        "fx": fixture_with(&[], json!({"idleTimeoutMs": 300})),
    }}));
    let mut shim = ShimClient::spawn(&daemon, None);
    shim.initialize();
    assert_eq!(
        echo_text(&mut shim, "fx__echo", "one").as_deref(),
        Ok("one")
    );
    let idle = daemon.wait_server_state("fx", ServerState::Idle);
    assert_eq!(idle.pid, None);
    assert!(
        pids_of_cmdline_containing("mcpd-fixture")
            .iter()
            .all(|p| !descendants_of(daemon.pid()).contains(p))
    );
    // The catalog is still served while it is idle.
    assert!(shim.tool_names().contains(&"fx__echo".to_owned()));
    // The call waits for it to start.
    assert_eq!(
        echo_text(&mut shim, "fx__echo", "two").as_deref(),
        Ok("two")
    );
    let fx = daemon.server("fx");
    assert_eq!(fx.state, ServerState::Ready);
    // Waking up is not a restart: `restarts` counts failures.
    assert_eq!(fx.restarts, 0, "{fx:?}");
}

#[test]
fn per_client_servers_get_one_instance_per_session_stopped_when_it_ends() {
    let daemon = TestDaemon::start(json!({"mcpServers": {
        "own": fixture_with(&[], json!({"share": "per-client"})),
        "shared": fixture::server(&[]),
    }}));
    daemon.wait_server_state("shared", ServerState::Ready);
    // Listed before any session uses it, with no process.
    let own = daemon.server("own");
    assert_eq!((own.state, own.pid), (ServerState::Idle, None), "{own:?}");
    let own_pid = |shim: &mut ShimClient| -> String {
        let line = shim.request_line(
            "tools/call",
            Some(json!({"name": "own__pid", "arguments": {}})),
        );
        let v: Value = serde_json::from_str(&line).expect("json");
        v["result"]["content"][0]["text"]
            .as_str()
            .expect("pid text")
            .to_owned()
    };
    let mut a = ShimClient::spawn(&daemon, None);
    a.initialize();
    let mut b = ShimClient::spawn(&daemon, None);
    b.initialize();
    assert!(a.tool_names().contains(&"own__pid".to_owned()));
    let (pa, pb) = (own_pid(&mut a), own_pid(&mut b));
    assert_ne!(pa, pb, "two sessions share a per-client server");
    assert_eq!(
        own_pid(&mut a),
        pa,
        "a session's instance changed between calls"
    );
    let pa: u32 = pa.trim().parse().expect("a pid");
    assert!(a.close().success());
    assert!(
        wait_until(TIMEOUT, || !mcpd_tests::process_alive(pa)),
        "the ended session's instance still runs"
    );
    assert_eq!(own_pid(&mut b).trim(), pb.trim());
}

#[test]
fn after_the_daemon_is_killed_the_next_one_kills_what_it_left() {
    let mut daemon = TestDaemon::start(fixture::config(&[(
        "fx",
        &["--ignore-sigterm", "--fork-grandchildren"],
    )]));
    let fx = daemon.wait_server_state("fx", ServerState::Ready);
    let pid = fx.pid.expect("pid");
    let group: Vec<ProcessId> = std::iter::once(pid)
        .chain(descendants_of(pid))
        .filter_map(ProcessId::of)
        .collect();
    assert!(group.len() >= 3, "{group:?}");
    daemon.kill();
    // PR_SET_PDEATHSIG takes the direct child; its grandchildren are left...
    assert!(
        wait_until(TIMEOUT, || !group[0].alive()),
        "the direct child outlived the daemon"
    );
    // ...until the next daemon starts and sweeps the recorded group.
    daemon.start_again();
    assert!(
        wait_until(TIMEOUT, || group.iter().all(|p| !p.alive())),
        "survivors after restart: {group:?}"
    );
    assert!(
        daemon
            .log()
            .contains("killed what a previous mcpd left running"),
        "{}",
        daemon.log()
    );
    // The control request still works on the new daemon.
    assert!(matches!(
        daemon.control(&ControlRequest::Status),
        ControlResponse::Status(_)
    ));
}

#[test]
fn per_client_instances_are_subscribed_each_on_their_own() {
    let record = tempfile::tempdir().unwrap();
    let path = record.path().join("received");
    let path_arg = path.display().to_string();
    let daemon = TestDaemon::start(json!({"mcpServers": {
        "own": fixture_with(&["--resources", "2", "--record", &path_arg], json!({"share": "per-client"})),
    }}));
    let subscribes = || {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"resources/subscribe\""))
            .count()
    };
    let mut a = ShimClient::spawn(&daemon, None);
    a.initialize();
    let mut b = ShimClient::spawn(&daemon, None);
    b.initialize();
    for shim in [&mut a, &mut b] {
        shim.result("resources/subscribe", Some(json!({"uri": "fixture://r/0"})));
    }
    // Each session's own instance got its own subscription: one count shared by the instances
    // would have sent only the first one upstream. (An instance that finishes starting after
    // the hub counted its session's subscription may be subscribed twice, which is harmless.)
    assert!(
        wait_until(TIMEOUT, || subscribes() >= 2),
        "subscribes seen: {}",
        subscribes()
    );
}

#[test]
fn mcpctl_stop_during_a_restart_delay_keeps_the_server_stopped() {
    let daemon = TestDaemon::start(json!({"mcpServers": {
        "bad": {"command": "sh", "args": ["-c", "exit 3"], "restartDelayMs": 300, "crashLoopAfter": 1000},
    }}));
    daemon.wait_server_state("bad", ServerState::Failed);
    let out = daemon.mcpctl(&["stop", "bad"]);
    assert!(out.status.success(), "{out:?}");
    let restarts = daemon.server("bad").restarts;
    std::thread::sleep(Duration::from_millis(1000));
    let bad = daemon.server("bad");
    assert_eq!(
        (bad.state, bad.restarts),
        (ServerState::Stopped, restarts),
        "{bad:?}"
    );
}

#[test]
fn an_answer_written_just_before_the_server_exits_still_reaches_the_client() {
    // A server that answers one tools/call and exits at once, as one-shot scripts do.
    let script = r#"
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if "id" not in m:
        continue
    if m["method"] == "initialize":
        r = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "once", "version": "1"}}
    elif m["method"] == "tools/list":
        r = {"tools": [{"name": "last", "inputSchema": {"type": "object"}}]}
    elif m["method"] == "tools/call":
        print(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": {"content": [{"type": "text", "text": "bye"}]}}), flush=True)
        sys.exit(0)
    else:
        r = {}
    print(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": r}), flush=True)
"#;
    let daemon = TestDaemon::start(json!({"mcpServers": {
        "once": {"command": "python3", "args": ["-c", script], "restartDelayMs": 50, "maxRestartDelayMs": 100, "crashLoopAfter": 1000},
    }}));
    let mut shim = ShimClient::spawn(&daemon, None);
    shim.initialize();
    for round in 0..10 {
        // The previous instance has exited and its successor is up.
        daemon.wait_status(TIMEOUT, "the next instance of `once`", |s| {
            s.servers
                .iter()
                .any(|x| x.name == "once" && x.state == ServerState::Ready && x.restarts == round)
        });
        let line = shim.request_line(
            "tools/call",
            Some(json!({"name": "once__last", "arguments": {}})),
        );
        assert!(line.contains("\"bye\""), "round {round}: {line}");
    }
}

#[test]
fn a_server_named_like_a_per_client_instance_keeps_its_own_subscriptions() {
    // `a` runs one instance per session; `a#1` is another server, whose name reads like the
    // instance of `a` that session 1 uses. Each keeps its own subscriptions.
    let record = tempfile::tempdir().unwrap();
    let a_record = record.path().join("a");
    let b_record = record.path().join("a#1");
    let (a_arg, b_arg) = (
        a_record.display().to_string(),
        b_record.display().to_string(),
    );
    let daemon = TestDaemon::start(json!({
        "mcpServers": {
            "a": fixture_with(&["--resources", "1", "--record", &a_arg], json!({"share": "per-client"})),
            "a#1": fixture::server(&["--resources", "1", "--record", &b_arg]),
        },
        "profiles": {"one": {"servers": ["a"]}, "two": {"servers": ["a#1"]}},
    }));
    daemon.wait_server_state("a#1", ServerState::Ready);
    let subscribes = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"resources/subscribe\""))
            .count()
    };
    let mut one = ShimClient::spawn(&daemon, Some("one"));
    one.initialize();
    let sessions = daemon.status().sessions;
    assert_eq!(
        sessions.iter().map(|s| s.id).collect::<Vec<_>>(),
        [1],
        "the daemon numbers sessions from 1"
    );
    one.result("resources/subscribe", Some(json!({"uri": "fixture://r/0"})));
    assert!(wait_until(TIMEOUT, || subscribes(&a_record) >= 1));
    let mut two = ShimClient::spawn(&daemon, Some("two"));
    two.initialize();
    two.result("resources/subscribe", Some(json!({"uri": "fixture://r/0"})));
    assert!(
        wait_until(TIMEOUT, || subscribes(&b_record) >= 1),
        "`a#1` was never subscribed: its subscription was counted as session 1's of `a`"
    );
}

/// Sends `n` calls of `fx__echo` without waiting, then reads their answers: the texts, or the
/// errors.
fn calls_at_once(shim: &mut ShimClient, n: usize, tag: &str) -> Vec<Result<String, Value>> {
    let ids: Vec<u64> = (0..n)
        .map(|i| {
            shim.send_request(
                "tools/call",
                Some(json!({"name": "fx__echo", "arguments": {"message": format!("{tag}-{i}")}})),
            )
        })
        .collect();
    ids.into_iter()
        .map(|id| {
            let v: Value = serde_json::from_str(&shim.response_line(&json!(id))).expect("json");
            match v.get("result") {
                Some(r) => Ok(r["content"][0]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()),
                None => Err(v["error"].clone()),
            }
        })
        .collect()
}

#[test]
fn calls_during_an_idle_wake_up_or_a_start_wait_for_it_and_neither_is_a_restart() {
    // Slow to start (300 ms for `initialize`) and slow to stop (it outlives its stdin), so that
    // calls arrive while it is on its way.
    let daemon = TestDaemon::start(json!({"mcpServers": {
        "fx": fixture_with(&["--delay-init-ms", "300", "--linger"], json!({"idleTimeoutMs": 300, "stopTimeoutMs": 200, "killTimeoutMs": 500})),
    }}));
    let mut shim = ShimClient::spawn(&daemon, None);
    shim.initialize();
    let mut other = ShimClient::spawn(&daemon, None);
    other.initialize();
    daemon.wait_server_state("fx", ServerState::Idle);
    // Waking from idle: every call waits for the start, none is refused.
    let (a, b) = (
        calls_at_once(&mut shim, 8, "wake-a"),
        calls_at_once(&mut other, 8, "wake-b"),
    );
    for (i, answer) in a.iter().enumerate() {
        assert_eq!(answer.as_deref(), Ok(format!("wake-a-{i}").as_str()));
    }
    for (i, answer) in b.iter().enumerate() {
        assert_eq!(answer.as_deref(), Ok(format!("wake-b-{i}").as_str()));
    }

    let out = daemon.mcpctl(&["stop", "fx"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(daemon.server("fx").state, ServerState::Stopped);
    let out = daemon.mcpctl(&["start", "fx"]);
    assert!(out.status.success(), "{out:?}");
    // Started, not yet ready (it answers `initialize` 300 ms late): calls wait for it.
    for (i, answer) in calls_at_once(&mut shim, 8, "start").iter().enumerate() {
        assert_eq!(answer.as_deref(), Ok(format!("start-{i}").as_str()));
    }
    let fx = daemon.server("fx");
    assert_eq!(fx.state, ServerState::Ready);
    assert_eq!(
        fx.restarts, 0,
        "waking and starting are not restarts: {fx:?}"
    );
}
