//! The memory a client that never reads can cost the daemon (issue 10 §2).
//!
//! ```sh
//! cargo build --release --workspace --bins
//! cargo bench -p mcpd-tests --bench backpressure -- [CLIENTS] [REQUESTS]
//! ```
//!
//! CLIENTS (default 8) attach straight to the socket, each sends REQUESTS (default 300)
//! `tools/call`s for 1 MiB answers of the fixture's `blob` tool and never reads a byte. Meanwhile
//! one more client, which reads, calls `echo` 20 times. The harness prints the daemon's VmRSS
//! before, its peak (VmHWM) and after the stuck sessions were closed (after `clientStallMs`,
//! default 30 s), and the reading client's calls. It asserts nothing.
//!
//! It runs the binaries next to this bench executable (`target/release/`), or those in
//! `$MCPD_BIN_DIR`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::missing_panics_doc,
    clippy::cast_precision_loss
)]

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use mcpd_proto::{PROTOCOL_VERSION, ServerState};
use mcpd_tests::{TestDaemon, fixture};
use serde_json::json;

const MIB: u64 = 1024 * 1024;

fn status_kib(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn attach(daemon: &TestDaemon) -> (UnixStream, BufReader<UnixStream>) {
    let mut stream = UnixStream::connect(daemon.socket()).expect("connect");
    writeln!(
        stream,
        r#"{{"op":"attach","v":{PROTOCOL_VERSION},"profile":"default","client":{{}}}}"#
    )
    .expect("hello");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut welcome = String::new();
    reader.read_line(&mut welcome).expect("welcome");
    assert!(welcome.contains("welcome"), "{welcome}");
    writeln!(
        stream,
        r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"2025-11-25","capabilities":{{}},"clientInfo":{{"name":"bench","version":"1"}}}}}}"#
    )
    .expect("initialize");
    (stream, reader)
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let clients = args.first().copied().unwrap_or(8);
    let requests = args.get(1).copied().unwrap_or(300);
    let daemon = TestDaemon::builder()
        .env("RUST_LOG", "info")
        .ready_timeout(Duration::from_secs(30))
        .start(json!({"mcpServers": {"fx": fixture::server(&["--blob"])}}));
    daemon.wait_server_state("fx", ServerState::Ready);
    let pid = daemon.pid();
    let before = status_kib(pid, "VmRSS:");

    let mut stuck = Vec::new();
    for _ in 0..clients {
        let (stream, reader) = attach(&daemon);
        let mut writer = stream.try_clone().expect("clone");
        std::thread::spawn(move || {
            for id in 1..=requests {
                let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                                  "params": {"name": "fx__blob", "arguments": {"bytes": MIB}}});
                if writeln!(writer, "{call}").is_err() {
                    return;
                }
            }
        });
        stuck.push((stream, reader));
    }

    // Every stuck session stops being read; meanwhile a client that reads is served.
    let paused = |d: &TestDaemon| {
        d.log()
            .matches("bytes wait for a client that does not read them")
            .count() as u64
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while paused(&daemon) < clients && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (mut reading, mut replies) = attach(&daemon);
    let mut line = String::new();
    replies.read_line(&mut line).expect("initialize answer");
    let mut took = Vec::new();
    for id in 1..=20 {
        let started = Instant::now();
        let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                          "params": {"name": "fx__echo", "arguments": {"message": "hi"}}});
        writeln!(reading, "{call}").expect("call");
        loop {
            line.clear();
            replies.read_line(&mut line).expect("answer");
            if line.contains(&format!(r#""id":{id}"#)) {
                break;
            }
        }
        took.push(started.elapsed());
    }
    took.sort();
    // Let what was in flight arrive, then wait for the stuck sessions to be closed.
    let closed = |d: &TestDaemon| {
        d.log()
            .matches("closed the session: its client read nothing")
            .count() as u64
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    while closed(&daemon) < clients && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let peak = status_kib(pid, "VmHWM:");
    let after = status_kib(pid, "VmRSS:");
    let dropped = daemon.log().matches("mcpd dropped this answer").count();

    println!(
        "## backpressure: {clients} clients x {requests} requests for 1 MiB answers, never read\n"
    );
    println!(
        "| daemon VmRSS before | peak (VmHWM) | after the stuck sessions were closed | sessions paused | sessions closed | sessions that had answers dropped | reading client's 20 echo calls (median / max) |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} (+{}) | {} | {} of {clients} | {} of {clients} | {dropped} | {:.1} ms / {:.1} ms |",
        mib(before),
        mib(peak),
        mib(peak.saturating_sub(before)),
        mib(after),
        paused(&daemon),
        closed(&daemon),
        took[took.len() / 2].as_secs_f64() * 1000.0,
        took[took.len() - 1].as_secs_f64() * 1000.0,
    );
    drop(stuck);
}
