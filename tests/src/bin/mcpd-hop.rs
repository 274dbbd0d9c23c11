//! The cheapest process hop a JSON-RPC line can take, as a floor for the benchmarks of issue 18.
//!
//! `mcpd-hop COMMAND [ARGS...]` starts COMMAND with piped stdin and stdout and copies lines both
//! ways: one thread reads its stdin and writes each line to COMMAND, the main thread reads
//! COMMAND's stdout and writes each line to its own stdout. Blocking reads, one `write` per line,
//! nothing parsed, nothing checked. A message through it costs what any process between a
//! client and a server must pay at least: one wake-up, one `read` and one `write`.
//!
//! `client → mcpd-hop → server` is the floor of `mcp-shim --direct → mcpd` (one process between
//! client and server); `client → mcpd-hop → mcpd-hop → server` that of `mcp-shim → mcpd` (two).
//! The benchmarks compare mcpd with these floors to show what mcpd's work costs beyond its hops.
//! Std only. Exits when either side closes, with COMMAND's status.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

fn main() {
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: mcpd-hop COMMAND [ARGS...]");
        std::process::exit(2);
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start COMMAND");
    let mut to_child = child.stdin.take().expect("piped stdin");
    let from_child = child.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        copy_lines(BufReader::new(std::io::stdin().lock()), &mut to_child);
        // Dropping to_child closes COMMAND's stdin: it sees the client's end of input.
    });
    copy_lines(BufReader::new(from_child), &mut std::io::stdout().lock());
    let status = child.wait().expect("wait for COMMAND");
    std::process::exit(status.code().unwrap_or(1));
}

/// Copies whole lines from `from` to `to`, one `write` per line, until either side closes.
fn copy_lines(mut from: impl BufRead, to: &mut impl Write) {
    let mut line = Vec::with_capacity(64 * 1024);
    loop {
        line.clear();
        match from.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if to.write_all(&line).and_then(|()| to.flush()).is_err() {
                    return;
                }
            }
        }
    }
}
