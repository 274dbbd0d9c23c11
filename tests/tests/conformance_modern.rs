//! The official conformance suite's 2026-07-28 requirement set (`@modelcontextprotocol/conformance`
//! 0.2.0-alpha, pinned as the npm alias `conformance-next`, run with `--requirements 2026-07-28`
//! on the pinned Node 22) against mcpd, with a checked-in baseline of known failures,
//! `tests/conformance/known-failures-2026-07-28.yml`, that may only shrink: the suite's own
//! `--expected-failures` fails the run when an unlisted scenario (or check) fails **and** when a
//! listed one passes (a stale entry must be removed).
//!
//! Server scenarios: the suite speaks streamable HTTP; `tests/peers/http_shim.mjs` serves POST
//! in front of one `mcp-shim` attached to an `mcpd` whose upstream is server-everything (legacy).
//! Most scenarios call the suite's own reference tools (`test_simple_text`, ...), which
//! server-everything does not have; the baseline says which fail and why.
//!
//! Client scenarios: mcpd is the client under test. The suite runs
//! `tests/peers/conformance_client.mjs <url>`, which starts a private `mcpd` whose one upstream
//! is the suite's server and calls its tools through `mcp-shim` with the TypeScript SDK v2
//! client; the suite judges what mcpd sent upstream.
//!
//! The legacy suite (0.1.16) stays in `conformance.rs`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use mcpd_proto::ServerState;
use mcpd_tests::process::{Captured, run_with_timeout};
use mcpd_tests::{BIN_DIR_ENV, PEER_TIMEOUT, TestDaemon, bin, eventually, peers, repo_root};
use serde_json::{Value, json};

fn baseline() -> PathBuf {
    repo_root().join("tests/conformance/known-failures-2026-07-28.yml")
}

/// `http_shim.mjs` in front of `mcp-shim`, killed when dropped.
struct Front {
    child: Child,
    stderr: Captured,
    url: String,
}

impl Front {
    fn start(daemon: &TestDaemon) -> Self {
        let peers = peers();
        let mut cmd = Command::new(peers.node());
        cmd.arg(peers.http_shim())
            .arg("--")
            .arg(bin("mcp-shim"))
            .env_clear()
            .envs(daemon.env())
            .env("PORT", "0")
            .current_dir(peers.dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stderr = Captured::start(child.stderr.take().expect("piped stderr"));
        let port = eventually(PEER_TIMEOUT, "http_shim to listen", || {
            let text = stderr.text();
            let line = text
                .lines()
                .find(|l| l.starts_with("mcpd-peer-listening "))?;
            line.rsplit(':').next().map(str::to_owned)
        });
        Self {
            child,
            stderr,
            url: format!("http://127.0.0.1:{port}/mcp"),
        }
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- http_shim stderr ---\n{}", self.stderr.text());
        }
    }
}

/// Each scenario's failing checks, from the results directory.
fn failing_checks(out: &Path) -> Vec<String> {
    let mut failing = Vec::new();
    for entry in std::fs::read_dir(out).into_iter().flatten().flatten() {
        let dir = entry.path();
        let Ok(text) = std::fs::read_to_string(dir.join("checks.json")) else {
            continue;
        };
        let checks: Vec<Value> = serde_json::from_str(&text).unwrap_or_default();
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        for check in checks {
            if check["status"] != "SUCCESS" {
                failing.push(format!(
                    "{name}: {} {}: {}",
                    check["status"].as_str().unwrap_or_default(),
                    check["id"].as_str().unwrap_or_default(),
                    check["errorMessage"].as_str().unwrap_or_default()
                ));
            }
        }
    }
    failing.sort();
    failing
}

#[test]
fn peer_conformance_2026_07_28_server_scenarios_fail_only_as_the_baseline_says() {
    let peers = peers();
    let (node22, cli) = peers.conformance_next();
    let daemon =
        TestDaemon::start(json!({"mcpServers": {"everything": peers.everything_server()}}));
    daemon.wait_server_state("everything", ServerState::Ready);
    let front = Front::start(&daemon);
    let out = tempfile::tempdir().expect("a temp dir");
    let output = run_with_timeout(
        Command::new(&node22)
            .arg(&cli)
            .args([
                "server",
                "--url",
                &front.url,
                "--requirements",
                "2026-07-28",
            ])
            .arg("--expected-failures")
            .arg(baseline())
            .arg("-o")
            .arg(out.path())
            .current_dir(out.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default()),
        PEER_TIMEOUT * 4,
    );
    let log = String::from_utf8_lossy(&output.stdout);
    if let Some(keep) = std::env::var_os("MCPD_CONFORMANCE_LOG") {
        let _ = std::fs::write(keep, log.as_bytes());
    }
    let tail: Vec<&str> = log.lines().rev().take(60).collect();
    assert!(
        output.status.success(),
        "the 2026-07-28 server scenarios differ from {} ({}):\n{}\nfailing checks:\n{}\nstderr:\n{}",
        baseline().display(),
        output.status,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        failing_checks(out.path()).join("\n"),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn peer_conformance_2026_07_28_client_scenarios_fail_only_as_the_baseline_says() {
    let peers = peers();
    let (node22, cli) = peers.conformance_next();
    let out = tempfile::tempdir().expect("a temp dir");
    let client = format!(
        "{} {}",
        peers.node().display(),
        peers.dir().join("conformance_client.mjs").display()
    );
    let bins = bin("mcpd")
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let output = run_with_timeout(
        Command::new(&node22)
            .arg(&cli)
            .args([
                "client",
                "--command",
                &client,
                "--requirements",
                "2026-07-28",
            ])
            .args(["--timeout", "15000", "--expected-failures"])
            .arg(baseline())
            .arg("-o")
            .arg(out.path())
            .current_dir(peers.dir())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(BIN_DIR_ENV, &bins),
        PEER_TIMEOUT * 4,
    );
    let log = String::from_utf8_lossy(&output.stdout);
    let tail: Vec<&str> = log.lines().rev().take(60).collect();
    assert!(
        output.status.success(),
        "the 2026-07-28 client scenarios differ from {} ({}):\n{}\nfailing checks:\n{}\nstderr:\n{}",
        baseline().display(),
        output.status,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        failing_checks(out.path()).join("\n"),
        String::from_utf8_lossy(&output.stderr)
    );
}
