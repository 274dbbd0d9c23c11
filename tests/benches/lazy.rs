//! Issue 16: what `"start": "lazy"` saves and what it costs (docs/BENCHMARKS.md, `lazy`).
//!
//! ```sh
//! cargo build --workspace --bins && cargo bench -p mcpd-tests --profile dev --bench lazy
//! ```
//!
//! Ten configured servers (server-everything under node, the pinned test peer), five clients
//! that each call a tool of two of them (client i uses servers i mod 3 and i+1 mod 3: three
//! servers in use, as when a few servers are used every day and the rest now and then):
//!
//! - memory (the sum of VmRSS of mcpd and every process below it) and processes, eager versus
//!   lazy, measured once the five clients have made their calls;
//! - first-call latency: a call to a lazy server that is not running (cold: the process starts,
//!   initializes and answers) versus the next call to it (running), five servers each.
//!
//! It runs the binaries next to the bench executable (`target/debug/` with `--profile dev`), or
//! those in `$MCPD_BIN_DIR`, and needs the pinned peers (`npm ci` in `tests/peers`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::missing_panics_doc,
    clippy::cast_precision_loss
)]

use std::time::{Duration, Instant};

use mcpd_proto::ServerState;
use mcpd_tests::process::descendants_of;
use mcpd_tests::{ShimClient, TestDaemon, eventually, peers};
use serde_json::{Value, json};

const SERVERS: usize = 10;
const CLIENTS: usize = 5;
const WAIT: Duration = Duration::from_secs(120);

fn config(lazy: bool) -> Value {
    let (command, args) = peers().everything_stdio_cmd();
    let mut servers = serde_json::Map::new();
    for i in 0..SERVERS {
        let mut server = json!({"command": command, "args": args});
        if lazy {
            server["start"] = json!("lazy");
        }
        servers.insert(format!("s{i}"), server);
    }
    json!({"mcpServers": servers})
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Processes below mcpd and the memory of mcpd and all of them.
fn footprint(daemon: &TestDaemon) -> (usize, u64) {
    let below = descendants_of(daemon.pid());
    let rss = rss_kib(daemon.pid()) + below.iter().map(|p| rss_kib(*p)).sum::<u64>();
    (below.len(), rss)
}

fn clients_call(daemon: &TestDaemon) -> Vec<ShimClient> {
    (0..CLIENTS)
        .map(|i| {
            let mut shim = ShimClient::spawn(daemon, None);
            shim.set_timeout(WAIT);
            shim.initialize();
            for s in [i % 3, (i + 1) % 3] {
                let r = shim.call_tool(&format!("s{s}__echo"), json!({"message": "hi"}));
                assert_eq!(r["content"][0]["text"], "Echo: hi", "{r}");
            }
            shim
        })
        .collect()
}

fn wait_all(daemon: &TestDaemon, state: ServerState) {
    for i in 0..SERVERS {
        daemon.wait_server_state_timeout(&format!("s{i}"), state, WAIT);
    }
}

fn main() {
    println!("## `lazy`: 10 servers (server-everything), 5 clients using two each\n");
    // Eager.
    let eager = TestDaemon::builder()
        .ready_timeout(WAIT)
        .start(config(false));
    wait_all(&eager, ServerState::Ready);
    let _clients = clients_call(&eager);
    let (eager_procs, eager_rss) = footprint(&eager);
    drop(_clients);
    drop(eager);

    // Lazy: a first run fills the catalog cache (each server starts once), the next start
    // serves the lists from it and starts only what the clients call.
    let mut lazy = TestDaemon::builder()
        .ready_timeout(WAIT)
        .start(config(true));
    wait_all(&lazy, ServerState::Ready);
    let cache = lazy.root().join("cache").join("mcpd").join("catalog.json");
    eventually(WAIT, "every server in the catalog cache", || {
        let text = std::fs::read_to_string(&cache).ok()?;
        (0..SERVERS)
            .all(|i| text.contains(&format!("\"s{i}\"")))
            .then_some(())
    });
    assert!(lazy.terminate().success());
    lazy.start_again();
    wait_all(&lazy, ServerState::Idle);
    let (idle_procs, idle_rss) = footprint(&lazy);
    let clients = clients_call(&lazy);
    let (lazy_procs, lazy_rss) = footprint(&lazy);

    println!("| start | processes below mcpd | memory (VmRSS, mcpd and below) |");
    println!("|---|---:|---:|");
    println!(
        "| eager, 5 clients done | {eager_procs} | {:.0} MiB |",
        eager_rss as f64 / 1024.0
    );
    println!(
        "| lazy, before any client | {idle_procs} | {:.0} MiB |",
        idle_rss as f64 / 1024.0
    );
    println!(
        "| lazy, 5 clients done (3 servers used) | {lazy_procs} | {:.0} MiB |",
        lazy_rss as f64 / 1024.0
    );

    // First-call latency: servers 5..9 are still idle.
    let mut shim = clients.into_iter().next().unwrap();
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for s in 5..SERVERS {
        let name = format!("s{s}__echo");
        let started = Instant::now();
        shim.call_tool(&name, json!({"message": "cold"}));
        cold.push(started.elapsed());
        let started = Instant::now();
        shim.call_tool(&name, json!({"message": "warm"}));
        warm.push(started.elapsed());
    }
    cold.sort();
    warm.sort();
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    println!(
        "\nFirst call to a lazy server that is not running: median {:.0} ms (min {:.0}, max {:.0}); \
         the next call to it, running: median {:.1} ms (min {:.1}, max {:.1}). {} servers each.",
        ms(&cold[cold.len() / 2]),
        ms(&cold[0]),
        ms(&cold[cold.len() - 1]),
        ms(&warm[warm.len() / 2]),
        ms(&warm[0]),
        ms(&warm[warm.len() - 1]),
        cold.len()
    );
    println!(
        "\n(load average: {})",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}
