//! Socket protocol versions (`mcpd_proto::version`): the daemon serves only hellos of a version
//! it speaks, and the shim and `mcpctl` only a welcome of a version they speak; each refusal
//! says which side to upgrade. Raw peers play the other side (`mcpd-socket-peer`).

use std::process::{Child, Command, Stdio};

use mcpd_proto::PROTOCOL_VERSION;
use mcpd_proto::version::MIN_PROTOCOL_VERSION;
use mcpd_tests::process::{line_channel, run_with_timeout};
use mcpd_tests::{TIMEOUT, TestDaemon, bin, fixture};
use serde_json::{Value, json};

/// Sends `hello` to the daemon as a raw peer; its one-line answer.
fn answer_to(daemon: &TestDaemon, hello: &Value) -> Value {
    let mut cmd = Command::new(bin("mcpd-socket-peer"));
    cmd.arg("send").arg(daemon.socket()).arg(hello.to_string());
    let out = run_with_timeout(&mut cmd, TIMEOUT);
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[test]
fn the_daemon_refuses_hellos_of_a_protocol_it_does_not_speak() {
    let daemon = TestDaemon::start(fixture::config(&[]));
    for op in ["attach", "control"] {
        let peer = if op == "attach" { "mcp-shim" } else { "mcpctl" };
        let newer = answer_to(&daemon, &json!({"op": op, "v": PROTOCOL_VERSION + 1}));
        assert_eq!(newer["op"], "error", "{op}: {newer}");
        assert_eq!(newer["v"], PROTOCOL_VERSION, "{newer}");
        let message = newer["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!(
                "{peer} speaks socket protocol {}",
                PROTOCOL_VERSION + 1
            )) && message.ends_with("upgrade mcpd"),
            "{message}"
        );
        let older = answer_to(&daemon, &json!({"op": op, "v": MIN_PROTOCOL_VERSION - 1}));
        let message = older["message"].as_str().unwrap_or_default();
        assert!(message.ends_with(&format!("upgrade {peer}")), "{older}");

        let current = answer_to(&daemon, &json!({"op": op, "v": PROTOCOL_VERSION}));
        assert_eq!(current["op"], "welcome", "{op}: {current}");
        assert_eq!(current["v"], PROTOCOL_VERSION);
    }
}

/// A fake daemon whose welcome says socket protocol `v`, listening at the returned path.
fn daemon_speaking(v: u32, dir: &std::path::Path) -> (Child, std::path::PathBuf) {
    let socket = dir.join("mcpd.sock");
    let mut child = Command::new(bin("mcpd-socket-peer"))
        .arg("welcome")
        .arg(&socket)
        .arg(v.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the socket peer starts");
    let lines = line_channel(child.stdout.take().expect("its stdout"));
    let first = lines.recv_timeout(TIMEOUT).expect("it says it listens");
    assert_eq!(first, "listening");
    (child, socket)
}

#[test]
fn mcpctl_and_the_shim_refuse_a_daemon_of_a_newer_protocol() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (mut peer, socket) = daemon_speaking(PROTOCOL_VERSION + 1, dir.path());

    let mut ctl = Command::new(bin("mcpctl"));
    ctl.arg("status").env("MCPD_SOCKET", &socket);
    let out = run_with_timeout(&mut ctl, TIMEOUT);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "mcpctl accepted it: {said}");
    assert!(
        said.contains(&format!(
            "mcpd speaks socket protocol {}",
            PROTOCOL_VERSION + 1
        )) && said.contains("upgrade mcpctl"),
        "{said}"
    );

    let mut shim = Command::new(bin("mcp-shim"));
    shim.env("MCPD_SOCKET", &socket);
    let out = run_with_timeout(&mut shim, TIMEOUT);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the shim accepted it: {said}");
    assert!(
        said.contains(&format!("speaks socket protocol {}", PROTOCOL_VERSION + 1))
            && said.contains("upgrade mcp-shim"),
        "{said}"
    );
    let _ = peer.kill();
    let _ = peer.wait();
}
