//! A stalled `mcpctl traffic` viewer must not slow the traffic (issue 15).
//!
//! ```sh
//! cargo build --release --workspace --bins
//! cargo bench -p mcpd-tests --bench traffic [-- CALLS STALL_SECS]
//! ```
//!
//! One daemon with the fixture server, one client through `mcp-shim`. It times CALLS (10000)
//! sequential `tools/call echo` round trips twice: with no viewer, and while a viewer attached
//! with `--full` stops reading for STALL_SECS (10) from the start of the calls. Then the viewer
//! reads again; it reports how many messages it was told it missed and how many it got. It
//! prints p50/p99/max of both runs; it asserts nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::time::{Duration, Instant};

use mcpd_proto::ServerState;
use mcpd_tests::{ShimClient, TestDaemon, fixture};
use serde_json::{Value, json};

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn run(shim: &mut ShimClient, calls: usize) -> Vec<Duration> {
    let mut took = Vec::with_capacity(calls);
    for i in 0..calls {
        let started = Instant::now();
        let id = shim.send_request(
            "tools/call",
            Some(json!({"name": "fixture__echo", "arguments": {"message": format!("m{i}")}})),
        );
        let line = shim.response_line(&json!(id));
        took.push(started.elapsed());
        assert!(line.contains("\"result\""), "{line}");
    }
    took.sort();
    took
}

fn row(what: &str, took: &[Duration]) {
    println!(
        "| {what} | {} | {:.3} | {:.3} | {:.3} |",
        took.len(),
        percentile(took, 0.50),
        percentile(took, 0.99),
        took.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let calls: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let stall = Duration::from_secs(args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10));

    let daemon = TestDaemon::start(fixture::config(&[("fixture", &[])]));
    daemon.wait_server_state("fixture", ServerState::Ready);
    let mut shim = ShimClient::spawn(&daemon, None);
    shim.set_timeout(Duration::from_secs(60));
    shim.initialize();
    run(&mut shim, 500); // warm up

    let quiet = run(&mut shim, calls);

    let mut viewer = daemon
        .try_control_connection()
        .expect("a control connection");
    viewer
        .send_raw(r#"{"cmd":"traffic","full":true}"#)
        .expect("send");
    viewer.read_line().expect("attached");
    let stalled_from = Instant::now();
    let watched = run(&mut shim, calls);
    let calls_took = stalled_from.elapsed();
    // The viewer wakes up after the stall and reads what it can.
    std::thread::sleep(stall.saturating_sub(calls_took));
    let (mut missed, mut received) = (0u64, 0usize);
    while let Ok(line) = viewer.read_line() {
        let reply: Value = serde_json::from_str(&line).expect("a traffic reply");
        missed += reply["missed"].as_u64().unwrap_or(0);
        received += reply["messages"].as_array().map_or(0, Vec::len);
        if received as u64 + missed >= 2 * calls as u64 {
            break;
        }
    }

    println!("| run | calls | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    row("no viewer", &quiet);
    row(
        &format!(
            "viewer stalled {} s (calls took {:.1} s)",
            stall.as_secs(),
            calls_took.as_secs_f64()
        ),
        &watched,
    );
    println!();
    println!(
        "stalled viewer: told it missed {missed} messages, received {received} (of {} sent both ways)",
        2 * calls
    );
}
