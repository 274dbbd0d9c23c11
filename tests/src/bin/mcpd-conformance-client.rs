//! `mcpd-conformance-client URL`: the client command for the official conformance suite's
//! client scenarios (`tests/tests/oauth_conformance.rs`). The suite's runner starts an MCP
//! server (and its authorization server) for one scenario and runs this with the server's URL
//! as the last argument, the scenario's name in `MCP_CONFORMANCE_SCENARIO` and, for some
//! scenarios, JSON in `MCP_CONFORMANCE_CONTEXT` (pre-registered client credentials).
//!
//! What a user of mcpd would do, headlessly:
//!
//! 1. configure the server (`"type": "http"`, the URL; an `oauth` object only for what a user
//!    would configure: the pre-registered client of the context, or for `auth/basic-cimd` the
//!    client ID metadata document URL the scenario expects) and start `mcpd` in temp dirs;
//! 2. `mcpctl login NAME --browser <py_browser.py>`: the stand-in browser fetches the
//!    authorization URL and follows the runner's immediate redirect to mcpd's callback;
//! 3. through `mcp-shim`: `initialize`, `tools/list` until `NAME__test-tool` is listed, then
//!    `tools/call`; a call error or a server status that asks for `mcpctl login NAME` (a
//!    step-up) is answered by logging in again, at most [`MAX_LOGINS`] logins in all; a status
//!    saying that mcpd gave up (a refusal) ends it with exit status 1;
//! 4. stop everything.
//!
//! It prints one line per step on stdout and exits 0 when the tool answered; on a failure it
//! panics, and the daemon's log tail goes to stderr (the runner keeps both).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use mcpd_tests::oauth::browser_command;
use mcpd_tests::process::run_with_timeout;
use mcpd_tests::{PEER_TIMEOUT, ShimClient, TestDaemon, eventually};
use serde_json::{Value, json};

/// The name of the server in mcpd's configuration.
const NAME: &str = "conf";
/// The client ID metadata document URL `auth/basic-cimd` expects as the client ID.
const CIMD_URL: &str = "https://conformance-test.local/client-metadata.json";
/// Logins in all, the first one included (a user would give up after a few step-ups).
const MAX_LOGINS: usize = 4;

fn login(daemon: &TestDaemon) -> bool {
    let log = daemon.root().join("browser.log");
    let out = run_with_timeout(
        daemon
            .command("mcpctl")
            .args(["login", NAME, "--browser", &browser_command(&log)]),
        PEER_TIMEOUT,
    );
    println!(
        "mcpctl login {NAME}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.success()
}

fn text_of(result: &Value) -> String {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn main() {
    let url = std::env::args().next_back().expect("the server URL");
    let scenario = std::env::var("MCP_CONFORMANCE_SCENARIO").unwrap_or_default();
    let context: Value = std::env::var("MCP_CONFORMANCE_CONTEXT")
        .ok()
        .and_then(|c| serde_json::from_str(&c).ok())
        .unwrap_or(Value::Null);
    println!("scenario {scenario:?}, server {url}");

    let mut server = json!({"type": "http", "url": url});
    let mut oauth = serde_json::Map::new();
    if let Some(id) = context["client_id"].as_str() {
        oauth.insert("clientId".into(), json!(id));
    }
    if let Some(secret) = context["client_secret"].as_str() {
        oauth.insert("clientSecret".into(), json!(secret));
    }
    if scenario == "auth/basic-cimd" {
        oauth.insert("clientMetadataUrl".into(), json!(CIMD_URL));
    }
    if !oauth.is_empty() {
        server["oauth"] = Value::Object(oauth);
    }
    let daemon = TestDaemon::start(json!({"mcpServers": {NAME: server}}));
    let outcome = run(&daemon);
    // Stops the daemon (and its children) before exiting.
    drop(daemon);
    match outcome {
        Ok(()) => println!("done"),
        Err(why) => {
            println!("{why}");
            std::process::exit(1);
        }
    }
}

/// Logs in and calls the tool; `Err` when mcpd (rightly or not) gave up.
fn run(daemon: &TestDaemon) -> Result<(), String> {
    let tool = format!("{NAME}__test-tool");
    let mut logins = 0;
    let mut shim: Option<ShimClient> = None;
    loop {
        assert!(logins < MAX_LOGINS, "gave up after {MAX_LOGINS} logins");
        logins += 1;
        if !login(daemon) {
            // A refused login ends the scenario (the runner judges what came before).
            return Err("the login failed".into());
        }
        let shim = shim.get_or_insert_with(|| {
            let mut shim = ShimClient::spawn(daemon, None);
            shim.set_timeout(PEER_TIMEOUT);
            shim.initialize();
            shim
        });
        // The tool is listed, or the daemon says (in `mcpctl status`) to log in again, or
        // that it gave up.
        let mut seen = None;
        let listed = eventually(PEER_TIMEOUT, "the tool, or a request to log in", || {
            if shim.tool_names().contains(&tool) {
                return Some(Ok(true));
            }
            let error = daemon.server(NAME).last_error;
            if error != seen {
                println!("status: {error:?}");
                seen.clone_from(&error);
            }
            let error = error?;
            if error.contains(&format!("mcpctl login {NAME}")) {
                return Some(Ok(false));
            }
            if error.contains("refused") || error.contains("giving up") {
                return Some(Err(error));
            }
            None
        });
        match listed {
            Ok(true) => {}
            Ok(false) => continue,
            Err(error) => return Err(format!("mcpd gave up: {error}")),
        }
        println!("tools/list lists {tool}");
        let answer = shim.request("tools/call", Some(json!({"name": tool, "arguments": {}})));
        let result = &answer["result"];
        let message = if result.is_null() {
            answer["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        } else {
            text_of(result)
        };
        println!("tools/call {tool}: {answer}");
        if result["isError"] != true && !result.is_null() {
            assert_eq!(message, "test", "the tool's answer");
            return Ok(());
        }
        if !message.contains(&format!("mcpctl login {NAME}")) {
            return Err(format!("tools/call failed: {message}"));
        }
        // A step-up: log in again (mcpd asks for the scopes the server named).
    }
}
