//! The cheapest process hop a JSON-RPC line can take, as a floor for the benchmarks of issue 18.
//!
//! `mcpd-hop [--socket] COMMAND [ARGS...]` starts COMMAND with piped stdin and stdout (with
//! `--socket`: both one end of a Unix stream socket pair, as between `mcp-shim` and mcpd) and
//! copies lines both ways: one thread reads its stdin and writes each line to COMMAND, the main thread reads
//! COMMAND's stdout and writes each line to its own stdout. Blocking reads, one `write` per line,
//! nothing parsed, nothing checked. A message through it costs what any process between a
//! client and a server must pay at least: one wake-up, one `read` and one `write`.
//!
//! `client → mcpd-hop → server` is the floor of `mcp-shim --direct → mcpd` (one process between
//! client and server); `client → mcpd-hop --socket → mcpd-hop → server` that of
//! `mcp-shim → mcpd` (two, a socket between them).
//! The benchmarks compare mcpd with these floors to show what mcpd's work costs beyond its hops.
//! Std only. Exits when either side closes, with COMMAND's status.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

fn main() {
    let mut args = std::env::args_os().skip(1).peekable();
    let socket = args.next_if(|a| a == "--socket").is_some();
    let Some(program) = args.next() else {
        eprintln!("usage: mcpd-hop [--socket] COMMAND [ARGS...]");
        std::process::exit(2);
    };
    let mut command = Command::new(program);
    command.args(args);
    // With a socket, the end of the client's input is a shutdown of our side's writing.
    let mut shutdown: Option<UnixStream> = None;
    let (mut child, mut to_child, from_child): (_, Box<dyn Write + Send>, Box<dyn Read>) = if socket
    {
        let (ours, theirs) = UnixStream::pair().expect("a socket pair");
        let theirs_too = theirs.try_clone().expect("dup the socket");
        let child = command
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::from(OwnedFd::from(theirs_too)))
            .spawn()
            .expect("start COMMAND");
        let reader = ours.try_clone().expect("dup the socket");
        shutdown = Some(ours.try_clone().expect("dup the socket"));
        (child, Box::new(ours), Box::new(reader))
    } else {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start COMMAND");
        let to = child.stdin.take().expect("piped stdin");
        let from = child.stdout.take().expect("piped stdout");
        (child, Box::new(to), Box::new(from))
    };
    // The command holds the child's ends of the socket pair until dropped: without that, the
    // child's exit would never reach us as an end of file.
    drop(command);
    std::thread::spawn(move || {
        copy_lines(BufReader::new(std::io::stdin().lock()), &mut to_child);
        // COMMAND sees the client's end of input: the pipe closes when to_child drops.
        if let Some(socket) = shutdown {
            let _ = socket.shutdown(std::net::Shutdown::Write);
        }
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
