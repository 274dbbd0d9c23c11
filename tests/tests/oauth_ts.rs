//! OAuth end to end against the TypeScript SDK's example server (`@modelcontextprotocol/sdk`
//! 1.32.2, `dist/esm/examples/server/simpleStreamableHttp.js --oauth`): its MCP endpoint on
//! `MCP_PORT` checks bearer tokens by introspection at the SDK's demo authorization server,
//! which the same process starts on `MCP_AUTH_PORT` (in-memory, approving every authorization
//! at once). Both names are `localhost` URLs built from the ports, so the ports are chosen
//! before the start; `tests/peers/loopback.mjs` makes both listen on 127.0.0.1 only.
//!
//! mcpd logs in with `mcpctl login --browser <stand-in browser>`; then two SDK clients at once
//! (Python and TypeScript, each through its own `mcp-shim`) use the server's tools over the one
//! upstream session.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use mcpd_proto::ServerState;
use mcpd_tests::oauth::browser_command;
use mcpd_tests::process::{Captured, run_with_timeout};
use mcpd_tests::{PEER_TIMEOUT, Sdk, SdkClient, TestDaemon, eventually, peers};
use serde_json::{Value, json};

/// The example server with `--oauth`, its process group killed on drop.
struct ExampleServer {
    child: Child,
    stdout: Captured,
    stderr: Captured,
    port: u16,
}

/// A port that was free a moment ago (the example takes its ports from the environment and
/// puts them in its metadata, so they are chosen before it starts).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl ExampleServer {
    fn start() -> Self {
        let peers = peers();
        let script = peers
            .dir()
            .join("node_modules/@modelcontextprotocol/sdk/dist/esm/examples/server/simpleStreamableHttp.js");
        assert!(
            script.exists(),
            "{} is missing: run scripts/test",
            script.display()
        );
        let (port, auth_port) = (free_port(), free_port());
        let mut cmd = Command::new(peers.node());
        cmd.arg("--import")
            .arg(peers.loopback_preload())
            .arg(&script)
            .arg("--oauth")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("MCP_PORT", port.to_string())
            .env("MCP_AUTH_PORT", auth_port.to_string())
            .current_dir(peers.dir())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stdout = Captured::start(child.stdout.take().expect("piped stdout"));
        let stderr = Captured::start(child.stderr.take().expect("piped stderr"));
        let server = Self {
            child,
            stdout,
            stderr,
            port,
        };
        eventually(
            PEER_TIMEOUT,
            "the example server and its AS to listen",
            || {
                let text = server.stderr.text();
                let listening =
                    |p: u16| text.contains(&format!("mcpd-peer-listening 127.0.0.1:{p}\n"));
                (listening(port) && listening(auth_port)).then_some(())
            },
        );
        server
    }

    fn url(&self) -> String {
        format!("http://localhost:{}/mcp", self.port)
    }

    /// The MCP sessions it created ("Session initialized with ID: ..." on its stdout).
    fn sessions(&self) -> usize {
        self.stdout
            .text()
            .lines()
            .filter(|l| l.starts_with("Session initialized with ID:"))
            .count()
    }
}

impl Drop for ExampleServer {
    fn drop(&mut self) {
        if let Ok(pgid) = i32::try_from(self.child.id()) {
            // SAFETY: killpg(2) has no memory-safety preconditions; the group is our child's.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- example server stdout ---\n{}\n--- stderr ---\n{}",
                self.stdout.text(),
                self.stderr.text()
            );
        }
    }
}

fn texts(line: &Value) -> Vec<String> {
    line["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["text"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn peer_the_ts_sdk_oauth_example_serves_two_clients_over_one_session_after_mcpctl_login() {
    let server = ExampleServer::start();
    let daemon =
        TestDaemon::start(json!({"mcpServers": {"ts": {"type": "http", "url": server.url()}}}));
    daemon.wait_server_state("ts", ServerState::AuthRequired);
    assert_eq!(server.sessions(), 0, "no session without a token");

    let log = daemon.root().join("browser.log");
    let out = run_with_timeout(
        daemon
            .command("mcpctl")
            .args(["login", "ts", "--browser", &browser_command(&log)]),
        PEER_TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mcpctl login: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("logged in to ts"), "{stdout}");
    let ready = daemon.wait_server_state("ts", ServerState::Ready);
    assert!(ready.auth.is_some_and(|a| a.logged_in));

    // Two clients at once, each through its own shim, both attached before either calls.
    let steps = |name: &str| {
        json!([
            {"op": "list_tools"},
            {"op": "wait_stdin"},
            {"op": "call_tool", "name": "ts__greet", "arguments": {"name": name}},
            {"op": "call_tool", "name": "ts__multi-greet", "arguments": {"name": name}},
        ])
    };
    let mut python = SdkClient::spawn(Sdk::Python, &daemon, &steps("Python"));
    let mut typescript = SdkClient::spawn(Sdk::TypeScript, &daemon, &steps("TypeScript"));
    for client in [&mut python, &mut typescript] {
        let listed = client.wait_for_op("list_tools", PEER_TIMEOUT);
        let tools: Vec<&str> = listed["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            tools.contains(&"ts__greet") && tools.contains(&"ts__multi-greet"),
            "{tools:?}"
        );
        client.wait_for_op("wait_stdin", PEER_TIMEOUT);
    }
    python.release();
    typescript.release();
    for (client, name) in [(python, "Python"), (typescript, "TypeScript")] {
        let lines = client.finish(PEER_TIMEOUT);
        let calls: Vec<&Value> = lines.iter().filter(|l| l["op"] == "call_tool").collect();
        assert_eq!(texts(calls[0]), [format!("Hello, {name}!")]);
        assert_eq!(texts(calls[1]), [format!("Good morning, {name}!")]);
    }
    assert_eq!(
        server.sessions(),
        1,
        "one upstream session for both clients"
    );
}
