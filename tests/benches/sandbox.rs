//! What the servers' sandbox costs (issue 14): server-everything's start time (`mcpctl
//! start` to `ready`) and the tools/call round trip through mcpd, each with the
//! default Landlock `protect` sandbox and with `"sandbox": false`. Printed as Markdown tables;
//! nothing is asserted.
//!
//! ```sh
//! cargo build --release --workspace --bins
//! cargo bench -p mcpd-tests --bench sandbox [-- --quick]
//! ```
//!
//! It runs the binaries next to the bench executable (`target/release/`) or in
//! `$MCPD_BIN_DIR`, and server-everything from `tests/peers` (`MCPD_PEERS`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::cast_precision_loss)]

use std::time::{Duration, Instant};

use mcpd_proto::ServerState;
use mcpd_tests::{ShimClient, TestDaemon, fixture, peers};
use serde_json::{Value, json};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn row(what: &str, mut samples: Vec<Duration>) -> String {
    samples.sort();
    format!(
        "| {what} | {} | {} | {} | {} |",
        samples.len(),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.9)),
        ms(percentile(&samples, 0.99))
    )
}

/// Stops `server`, then measures `mcpctl start` to `ready` (spawn, sandbox, `initialize`), `n`
/// times.
fn start_times(daemon: &TestDaemon, server: &str, n: usize) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let out = daemon.mcpctl(&["stop", server]);
            assert!(out.status.success(), "stop failed: {out:?}");
            daemon.wait_server_state(server, ServerState::Stopped);
            let t = Instant::now();
            let out = daemon.mcpctl(&["start", server]);
            assert!(out.status.success(), "start failed: {out:?}");
            loop {
                let s = daemon.server(server);
                if s.state == ServerState::Ready && s.pid.is_some() {
                    break t.elapsed();
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
        .collect()
}

/// `n` sequential tools/call round trips of `tool`.
fn call_times(daemon: &TestDaemon, tool: &str, args: &Value, n: usize) -> Vec<Duration> {
    let mut shim = ShimClient::spawn(daemon, None);
    shim.initialize();
    for _ in 0..20 {
        shim.call_tool(tool, args.clone());
    }
    (0..n)
        .map(|_| {
            let t = Instant::now();
            shim.call_tool(tool, args.clone());
            t.elapsed()
        })
        .collect()
}

fn with_sandbox(mut server: Value, sandboxed: bool) -> Value {
    if !sandboxed {
        server["sandbox"] = json!(false);
    }
    server
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (starts, calls) = if quick { (3, 100) } else { (15, 2000) };
    println!("## Sandbox cost (`cargo bench -p mcpd-tests --bench sandbox`)\n");
    println!("Kernel Landlock ABI: {}\n", landlock_abi());
    println!("| what | samples | median ms | p90 ms | p99 ms |");
    println!("|---|---|---|---|---|");
    for sandboxed in [true, false] {
        let label = if sandboxed {
            "protect"
        } else {
            "sandbox: false"
        };
        let daemon = TestDaemon::start(json!({"mcpServers": {
            "everything": with_sandbox(peers().everything_server(), sandboxed),
            "fx": with_sandbox(fixture::server(&[]), sandboxed),
        }}));
        daemon.wait_server_state("everything", ServerState::Ready);
        daemon.wait_server_state("fx", ServerState::Ready);
        println!(
            "{}",
            row(
                &format!("server-everything start, `mcpctl start` to ready ({label})"),
                start_times(&daemon, "everything", starts)
            )
        );
        println!(
            "{}",
            row(
                &format!("tools/call server-everything echo ({label})"),
                call_times(
                    &daemon,
                    "everything__echo",
                    &json!({"message": "hi"}),
                    calls
                )
            )
        );
        println!(
            "{}",
            row(
                &format!("tools/call fixture echo ({label})"),
                call_times(&daemon, "fx__echo", &json!({"message": "hi"}), calls)
            )
        );
    }
}

fn landlock_abi() -> i64 {
    // SAFETY: landlock_create_ruleset(NULL, 0, VERSION) reads no memory.
    unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32,
        )
    }
}
