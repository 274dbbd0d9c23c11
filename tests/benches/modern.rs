//! What the modern era (MCP 2026-07-28, issue 12) costs a client: the round trip of a
//! `tools/call` sent statelessly with `_meta` (no `initialize`) against the same call on a legacy
//! session, to the fixture's `echo` through `mcp-shim` and `mcpd`; the same legacy call to the
//! fixture speaking 2026-07-28 (`--modern`: mcpd stamps the per-request `_meta` upstream) against
//! the legacy fixture, and the stamping itself (`upstream::modern::stamp`, in process); the time of a dual-era
//! client's `server/discover` probe through a fresh `mcp-shim` with a warm daemon (spawn the shim,
//! probe, answer read; the shim is then killed, as probing clients do) and with a starting one
//! (no daemon runs: the shim autostarts `mcpd`, which answers from the catalog cache without
//! waiting for its servers); and the same two as the TypeScript SDK v2 client sees them
//! (`connect()` in `auto` mode: the probe on a throw-away shim, then the session's shim; node's
//! own start is not counted). Printed as Markdown; nothing is asserted.
//!
//! ```sh
//! cargo build --release --workspace --bins
//! MCPD_PEERS=$PWD/tests/peers cargo bench -p mcpd-tests --bench modern [-- --quick]
//! ```
//!
//! It runs the binaries next to the bench executable (`target/release/`) or in `$MCPD_BIN_DIR`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::cast_precision_loss)]

use std::time::{Duration, Instant};

use mcpd_proto::ServerState;
use std::process::Command;

use mcpd_proto::wire::{ControlRequest, ControlResponse};
use mcpd_tests::process::{run_with_timeout, signal};
use mcpd_tests::{ShimClient, TestDaemon, bin, fixture, peers, wait_until};
use serde_json::{Value, json};

const META: &str = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"bench","version":"0"},"io.modelcontextprotocol/clientCapabilities":{}}"#;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn us(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

fn row(what: &str, mut samples: Vec<Duration>) -> (String, Duration) {
    if samples.is_empty() {
        return (format!("| {what} | 0 | - | - | - |"), Duration::ZERO);
    }
    samples.sort();
    let p50 = percentile(&samples, 0.5);
    let line = format!(
        "| {what} | {} | {} | {} | {} |",
        samples.len(),
        us(p50),
        us(percentile(&samples, 0.9)),
        us(percentile(&samples, 0.99))
    );
    (line, p50)
}

/// `n` echo calls on `shim`, each a raw line built by `call(id)`, timed from write to answer.
fn calls(shim: &mut ShimClient, n: usize, call: impl Fn(u64) -> String) -> Vec<Duration> {
    (0..n as u64)
        .map(|i| {
            let id = 1_000_000 + i;
            let line = call(id);
            let t = Instant::now();
            shim.send_raw(&line);
            let answer = shim.response_line(&json!(id));
            let d = t.elapsed();
            assert!(answer.contains("\"result\""), "{answer}");
            d
        })
        .collect()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 200 } else { 2000 };
    let probes = if quick { 10 } else { 100 };
    let daemon = TestDaemon::start(fixture::config(&[("fx", &[]), ("mfx", &["--modern"])]));
    daemon.wait_server_state("fx", ServerState::Ready);
    daemon.wait_server_state("mfx", ServerState::Ready);

    let mut legacy = ShimClient::spawn(&daemon, None);
    legacy.initialize();
    let mut modern = ShimClient::spawn(&daemon, None);
    let legacy_call = |id: u64| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"fx__echo","arguments":{{"message":"x"}}}}}}"#
        )
    };
    let modern_call = |id: u64| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"fx__echo","arguments":{{"message":"x"}},{META}}}}}"#
        )
    };
    // Warm both paths, then interleave rounds so drift in machine load hits both alike.
    calls(&mut legacy, 50, legacy_call);
    calls(&mut modern, 50, modern_call);
    let upstream_call = |id: u64| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"mfx__echo","arguments":{{"message":"x"}}}}}}"#
        )
    };
    calls(&mut legacy, 50, upstream_call);
    let (mut l, mut m, mut u) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..10 {
        l.extend(calls(&mut legacy, n / 10, legacy_call));
        m.extend(calls(&mut modern, n / 10, modern_call));
        u.extend(calls(&mut legacy, n / 10, upstream_call));
    }
    // The per-request `_meta` alone, in process.
    let line = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"message":"x"},"_meta":{"progressToken":7}}}"#;
    let caps = mcpd::router::hub::ClientCaps {
        sampling: true,
        elicitation_form: true,
        elicitation_url: true,
        roots: true,
    };
    let reps = if quick { 20_000 } else { 200_000 };
    let t = Instant::now();
    let mut bytes = 0;
    for _ in 0..reps {
        bytes += std::hint::black_box(mcpd::upstream::modern::stamp(
            std::hint::black_box(line),
            &caps,
            Some("info"),
        ))
        .len();
    }
    let stamp = t.elapsed().as_secs_f64() / f64::from(reps) * 1e6;
    assert!(bytes > 0);

    let mut probe_times = Vec::new();
    for _ in 0..probes {
        let t = Instant::now();
        let mut shim = ShimClient::spawn(&daemon, None);
        shim.send_raw(&format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{{{META}}}}}"#
        ));
        let answer = shim.response_line(&json!(1));
        probe_times.push(t.elapsed());
        assert!(answer.contains("supportedVersions"), "{answer}");
        signal(shim.pid(), libc::SIGKILL);
        let _ = shim.wait_exit(Duration::from_secs(10));
    }

    let ts_warm: Vec<Duration> = (0..probes / 2)
        .map(|_| ts_connect(&daemon, false))
        .collect();

    // A starting daemon: none runs, the probing shim starts it.
    let mut daemon = daemon;
    drop((legacy, modern));
    daemon.terminate();
    let mut cold = Vec::new();
    let mut ts_cold = Vec::new();
    let cold_runs = if std::env::var_os("SKIP_COLD").is_some() {
        0
    } else {
        probes / 2
    };
    for i in 0..cold_runs {
        if i % 2 == 0 {
            let t = Instant::now();
            let mut cmd = ShimClient::command(&daemon);
            cmd.env("MCPD_NO_AUTOSTART", "0");
            let mut shim = ShimClient::from_command(cmd);
            // A loaded machine may take a while to start a daemon; this measures, not judges.
            shim.set_timeout(Duration::from_secs(60));
            shim.send_raw(&format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{{{META}}}}}"#
            ));
            let answer = shim.response_line(&json!(1));
            cold.push(t.elapsed());
            assert!(answer.contains("supportedVersions"), "{answer}");
            signal(shim.pid(), libc::SIGKILL);
            let _ = shim.wait_exit(Duration::from_secs(10));
        } else {
            ts_cold.push(ts_connect(&daemon, true));
        }
        stop_autostarted(&daemon);
    }

    println!("## Modern era through mcpd (fixture echo, one session each, µs)\n");
    println!("| what | n | p50 | p90 | p99 |\n|---|---|---|---|---|");
    let (line, lp50) = row("legacy tools/call (after initialize)", l);
    println!("{line}");
    let (line, mp50) = row("modern tools/call (_meta, no initialize)", m);
    println!("{line}");
    let (line, _) = row(
        "server/discover probe: spawn mcp-shim, answer read (warm daemon)",
        probe_times,
    );
    println!("{line}");
    let (line, _) = row(
        "server/discover probe: spawn mcp-shim, answer read (starting daemon: the shim autostarts mcpd)",
        cold,
    );
    println!("{line}");
    let (line, _) = row(
        "TS SDK v2 connect(), auto mode (probe shim + session shim), warm daemon",
        ts_warm,
    );
    println!("{line}");
    let (line, _) = row(
        "TS SDK v2 connect(), auto mode, starting daemon (the probe's shim autostarts mcpd)",
        ts_cold,
    );
    println!("{line}");
    let (line, up50) = row(
        "legacy tools/call to a 2026-07-28 upstream (fixture --modern)",
        u,
    );
    println!("{line}");
    let added = mp50.as_secs_f64() - lp50.as_secs_f64();
    println!("\nmodern minus legacy client, p50: {:.1} µs", added * 1e6);
    let added = up50.as_secs_f64() - lp50.as_secs_f64();
    println!("modern minus legacy upstream, p50: {:.1} µs", added * 1e6);
    println!("upstream::modern::stamp (the per-request _meta), mean of {reps}: {stamp:.2} µs");
}

/// The TypeScript SDK v2 client's `connect()` in `auto` mode through the shim, as it timed it
/// (`connectMs`: the probe on a throw-away shim and the session's shim; node's start excluded).
fn ts_connect(daemon: &TestDaemon, autostart: bool) -> Duration {
    let peers = peers();
    let mut cmd = Command::new(peers.node());
    cmd.arg(peers.ts_modern_client())
        .env_clear()
        .envs(daemon.env())
        .arg("--shim")
        .arg(bin("mcp-shim"))
        .args(["--mode", "auto", "--", "[]"])
        .current_dir(peers.dir());
    if autostart {
        cmd.env("MCPD_NO_AUTOSTART", "0");
    }
    let output = run_with_timeout(&mut cmd, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line: Value = serde_json::from_str(stdout.lines().next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&output.stderr)));
    assert_eq!(line["era"], "modern", "{line}");
    Duration::from_secs_f64(line["connectMs"].as_f64().unwrap_or_default() / 1000.0)
}

/// Stops the daemon a shim autostarted (found over the control socket) and waits until it is gone.
fn stop_autostarted(daemon: &TestDaemon) {
    // Gone means the process is gone: a daemon still shutting down may yet accept a shim.
    if let Ok(ControlResponse::Status(s)) = daemon.try_control(&ControlRequest::Status) {
        signal(s.pid, libc::SIGTERM);
        assert!(
            wait_until(Duration::from_secs(30), || !mcpd_tests::process_alive(
                s.pid
            )),
            "the autostarted mcpd did not stop"
        );
    }
}
