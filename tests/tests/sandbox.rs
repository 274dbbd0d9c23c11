//! The servers' Landlock sandbox (issue 14): what a server can read, write and connect to under
//! the default `protect` policy, with `"sandbox": false`, `allow`, `strict` and `network`; and
//! that real servers (node, a Python SDK server, npx) still work under the default policy.
//!
//! The machine's kernel must offer Landlock (ABI 4 or later, for the network rules): without
//! it these tests fail, since they would prove nothing.

use std::fs;
use std::path::{Path, PathBuf};

use mcpd_proto::ServerState;
use mcpd_tests::{ShimClient, TestDaemon, fixture, peers};
use serde_json::{Value, json};

/// A daemon with one fixture `fx` offering the probe tools, sandboxed as `sandbox` says
/// (`Value::Null`: the key is left out, the default policy).
fn daemon_with(sandbox: Value) -> TestDaemon {
    let mut server = fixture::server(&["--probe-tools"]);
    if !sandbox.is_null() {
        server["sandbox"] = sandbox;
    }
    let daemon = TestDaemon::start(json!({"mcpServers": {"fx": server}}));
    daemon.wait_server_state("fx", ServerState::Ready);
    daemon
}

/// Files a server must not read: a planted SSH key, mcpd's credential key file, another
/// server's state (mcp-remote's tokens) and an AWS credentials file.
struct Planted {
    ssh_key: PathBuf,
    credential_key: PathBuf,
    other_state: PathBuf,
    aws: PathBuf,
}

fn plant(daemon: &TestDaemon) -> Planted {
    let home = daemon.root().join("home");
    let write = |p: &Path, text: &str| {
        fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
        fs::write(p, text).expect("plant a file");
    };
    let planted = Planted {
        ssh_key: home.join(".ssh/id_ed25519"),
        credential_key: daemon.root().join("state/mcpd/credentials/key"),
        other_state: home.join(".mcp-auth/mcp-remote-0.1.0/abc_tokens.json"),
        aws: home.join(".aws/credentials"),
    };
    write(&planted.ssh_key, "PRIVATE KEY");
    write(&planted.credential_key, "KEY");
    write(&planted.other_state, "{\"access_token\":\"t\"}");
    write(&planted.aws, "[default]");
    write(&home.join("work/notes.txt"), "notes");
    // The sandbox is built when a server starts, from what exists then.
    let before = daemon.server("fx").pid;
    let out = daemon.mcpctl(&["restart", "fx"]);
    assert!(out.status.success(), "mcpctl restart: {out:?}");
    mcpd_tests::eventually(mcpd_tests::TIMEOUT, "fx restarted", || {
        let s = daemon.server("fx");
        (s.state == ServerState::Ready && s.pid.is_some() && s.pid != before).then_some(())
    });
    planted
}

fn client(daemon: &TestDaemon) -> ShimClient {
    let mut shim = ShimClient::spawn(daemon, None);
    shim.initialize();
    shim
}

fn call(shim: &mut ShimClient, tool: &str, args: Value) -> String {
    let result = shim.call_tool(&format!("fx__{tool}"), args);
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn read(shim: &mut ShimClient, path: &Path) -> String {
    call(shim, "read_file", json!({"path": path}))
}

fn assert_denied(answer: &str, what: &str) {
    assert!(
        answer.contains("Permission denied (os error 13)"),
        "{what}: expected EACCES, got {answer:?}"
    );
}

fn assert_ok(answer: &str, what: &str) {
    assert!(
        answer.starts_with("ok:"),
        "{what}: expected success, got {answer:?}"
    );
}

#[test]
fn under_the_default_policy_keys_credentials_and_other_servers_state_are_unreadable() {
    let daemon = daemon_with(Value::Null);
    let planted = plant(&daemon);
    let mut shim = client(&daemon);
    assert_denied(&read(&mut shim, &planted.ssh_key), "~/.ssh/id_ed25519");
    assert_denied(
        &read(&mut shim, &planted.credential_key),
        "mcpd's credential key",
    );
    assert_denied(
        &read(&mut shim, &planted.other_state),
        "mcp-remote's tokens",
    );
    assert_denied(&read(&mut shim, &planted.aws), "~/.aws/credentials");
    // What is not protected stays usable: a file elsewhere in $HOME, the server's own binary.
    let notes = daemon.root().join("home/work/notes.txt");
    assert_eq!(read(&mut shim, &notes), "ok: notes");
    let status = daemon.server("fx");
    let sandbox = status.contain.expect("containment in status").sandbox;
    assert!(
        sandbox.starts_with("landlock ABI ") && sandbox.contains("protect"),
        "status should name the sandbox in force: {sandbox:?}"
    );
}

#[test]
fn with_sandbox_false_the_same_files_are_readable_and_status_says_off() {
    let daemon = daemon_with(json!(false));
    let planted = plant(&daemon);
    let mut shim = client(&daemon);
    assert_eq!(read(&mut shim, &planted.ssh_key), "ok: PRIVATE KEY");
    assert_eq!(read(&mut shim, &planted.credential_key), "ok: KEY");
    assert_ok(
        &read(&mut shim, &planted.other_state),
        "mcp-remote's tokens",
    );
    let status = daemon.server("fx");
    let sandbox = status.contain.expect("containment").sandbox;
    assert!(sandbox.starts_with("off"), "{sandbox:?}");
    // Even unsandboxed, no child gains privileges through exec (set-uid binaries).
    let pid = status.pid.expect("fx runs");
    let proc_status = fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    assert!(
        proc_status.contains("NoNewPrivs:\t1"),
        "no_new_privs is not set on the server"
    );
    daemon.wait_log("runs without a sandbox", mcpd_tests::TIMEOUT);
}

#[test]
fn allow_hands_back_exactly_the_protected_path_it_names() {
    let daemon = daemon_with(json!({"allow": ["~/.aws"]}));
    let planted = plant(&daemon);
    let mut shim = client(&daemon);
    assert_eq!(read(&mut shim, &planted.aws), "ok: [default]");
    assert_denied(
        &read(&mut shim, &planted.ssh_key),
        "~/.ssh with only ~/.aws allowed",
    );
}

#[test]
fn strict_mode_allows_writes_only_where_it_says() {
    let out = tempfile::tempdir().expect("temp dir");
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let daemon = daemon_with(json!({"mode": "strict", "write": [out.path()]}));
    let mut shim = client(&daemon);
    let inside = out.path().join("result.txt");
    assert_ok(
        &call(
            &mut shim,
            "write_file",
            json!({"path": inside, "text": "x"}),
        ),
        "a write to the allowed directory",
    );
    assert_eq!(fs::read_to_string(&inside).expect("written"), "x");
    let outside = elsewhere.path().join("result.txt");
    assert_denied(
        &call(
            &mut shim,
            "write_file",
            json!({"path": outside, "text": "x"}),
        ),
        "a write outside the allowed paths",
    );
    assert!(!outside.exists());
    // Its private TMPDIR (under mcpd's runtime directory) is writable; another server's is not.
    let tmp = daemon.root().join("run/mcpd/tmp");
    assert_ok(
        &call(
            &mut shim,
            "write_file",
            json!({"path": tmp.join("fx/t"), "text": "x"}),
        ),
        "a write to its own TMPDIR",
    );
    fs::create_dir_all(tmp.join("other")).expect("mkdir");
    assert_denied(
        &call(
            &mut shim,
            "write_file",
            json!({"path": tmp.join("other/t"), "text": "x"}),
        ),
        "a write to another server's TMPDIR",
    );
    // Not even reading the home directory's files.
    let notes = daemon.root().join("home/notes.txt");
    fs::write(&notes, "notes").expect("write");
    assert_denied(&read(&mut shim, &notes), "a read outside strict's read set");
}

#[test]
fn network_false_refuses_tcp_and_a_listed_port_is_allowed() {
    let allowed = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let other = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = |l: &std::net::TcpListener| l.local_addr().expect("addr").port();

    let daemon = daemon_with(json!({"network": false}));
    let mut shim = client(&daemon);
    assert_denied(
        &call(&mut shim, "connect", json!({"port": port(&allowed)})),
        "TCP with network false",
    );
    drop(shim);
    drop(daemon);

    let daemon = daemon_with(json!({"network": [port(&allowed)]}));
    let mut shim = client(&daemon);
    assert_eq!(
        call(&mut shim, "connect", json!({"port": port(&allowed)})),
        "ok: connected"
    );
    assert_denied(
        &call(&mut shim, "connect", json!({"port": port(&other)})),
        "TCP to a port that is not listed",
    );
    let sandbox = daemon.server("fx").contain.expect("containment").sandbox;
    assert!(
        sandbox.contains(&format!("TCP only to ports {}", port(&allowed))),
        "{sandbox:?}"
    );
}

fn assert_works_sandboxed(daemon: &TestDaemon, server: &str) {
    daemon.wait_server_state(server, ServerState::Ready);
    let status = daemon.server(server);
    let sandbox = status.contain.expect("containment in status").sandbox;
    assert!(
        sandbox.contains("protect"),
        "{server} runs under {sandbox:?}"
    );
    let mut shim = client(daemon);
    let tools = shim.result("tools/list", None);
    assert!(
        tools["tools"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(&format!("{server}__"))))),
        "{server} offers no tools: {tools}"
    );
}

#[test]
fn peer_server_everything_works_under_the_default_sandbox() {
    let daemon =
        TestDaemon::start(json!({"mcpServers": {"everything": peers().everything_server()}}));
    assert_works_sandboxed(&daemon, "everything");
    let mut shim = client(&daemon);
    let r = shim.call_tool("everything__echo", json!({"message": "hi"}));
    assert!(r.to_string().contains("hi"), "{r}");
}

#[test]
fn peer_a_python_sdk_server_from_a_venv_works_under_the_default_sandbox() {
    let script = "from mcp.server.fastmcp import FastMCP\n\
                  mcp = FastMCP('py')\n\
                  @mcp.tool()\n\
                  def shout(text: str) -> str:\n    return text.upper()\n\
                  mcp.run()\n";
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("server.py");
    fs::write(&path, script).expect("write the server");
    let daemon = TestDaemon::start(json!({"mcpServers": {"py": {
        "command": peers().python(), "args": [path]
    }}}));
    assert_works_sandboxed(&daemon, "py");
    let mut shim = client(&daemon);
    let r = shim.call_tool("py__shout", json!({"text": "hi"}));
    assert!(r.to_string().contains("HI"), "{r}");
}

#[test]
fn peer_a_server_started_through_npx_works_under_the_default_sandbox_with_its_cache() {
    // npx resolves the locally installed package (no download) and keeps its cache in the
    // temp HOME's ~/.npm, which must stay usable under the sandbox.
    let daemon = TestDaemon::start(json!({"mcpServers": {"npx": {
        "command": "npx",
        "args": ["--no-install", "mcp-server-everything", "stdio"],
        "cwd": peers().dir(),
    }}}));
    assert_works_sandboxed(&daemon, "npx");
    let cache = daemon.root().join("home/.npm");
    assert!(cache.is_dir(), "npm's cache directory {}", cache.display());
}
