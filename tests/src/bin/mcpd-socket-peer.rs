//! A hostile peer on a Unix socket, for the tests of docs/SECURITY.md (run as another uid with
//! `setpriv`). Std only.
//!
//! - `listen PATH`: poses as mcpd. Creates PATH's directory (mode 0755) if missing, binds PATH
//!   (mode 0777), prints `listening`, then for each connection sends a welcome line at once, reads
//!   whatever the peer sends until it closes (or 2 s of silence) and prints
//!   `received <bytes>`.
//! - `flood PATH N`: keeps N connections to PATH open, sending nothing, and opens a new one
//!   whenever one is closed; prints `flooding` once N are open, and runs until killed.
//! - `hello PATH`: connects, sends a control hello and prints the first line it gets back.
//! - `send PATH LINE`: connects, sends LINE and prints the first line it gets back (hellos of
//!   any version).
//! - `welcome PATH V`: `listen`, but the welcome carries socket protocol V (a daemon of another
//!   version).
//! - `direct PATH`: plays `mcp-shim --direct` whatever the answer: sends a direct attach hello,
//!   prints the reply line, hands over a stdin and a stdout pipe of its own (prints `sent` or
//!   `send failed: ...`), writes an `initialize` into that stdin and prints `answered N` with
//!   the bytes that came out of that stdout (until it closed, or 2 s of silence).
//! - `pipes PATH`: the same as a relaying `mcp-shim` that offers its pipes (`"pipes":true`
//!   instead of `"direct":true`), handing them over whatever the answer.
//! - `pipes-file PATH`: offers pipes, then hands over a regular file twice instead; prints the
//!   reply to the hello and the next line the daemon sends (or `closed`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["listen", path] => listen(Path::new(path), 1),
        ["welcome", path, v] => listen(Path::new(path), v.parse().expect("V is a number")),
        ["send", path, line] => send(Path::new(path), line),
        ["flood", path, n] => flood(Path::new(path), n.parse().expect("N is a number")),
        ["hello", path] => hello(Path::new(path)),
        ["direct", path] => direct(Path::new(path), "direct"),
        ["pipes", path] => direct(Path::new(path), "pipes"),
        ["pipes-file", path] => pipes_file(Path::new(path)),
        _ => {
            eprintln!(
                "usage: mcpd-socket-peer listen PATH | welcome PATH V | flood PATH N | hello PATH | send PATH LINE | direct PATH | pipes PATH | pipes-file PATH"
            );
            std::process::exit(2);
        }
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn listen(path: &Path, v: u32) {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .expect("create the directory");
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).expect("bind");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    say("listening");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        std::thread::spawn(move || {
            let welcome = format!("{{\"op\":\"welcome\",\"v\":{v},\"daemon\":\"fake\"}}\n");
            let _ = stream.write_all(welcome.as_bytes());
            stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            let mut total = 0usize;
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => total += n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            say(&format!("received {total}"));
        });
    }
}

fn flood(path: &Path, n: usize) {
    let mut open: Vec<UnixStream> = Vec::with_capacity(n);
    let mut announced = false;
    loop {
        // Drop the connections the daemon closed.
        open.retain(|s| {
            let mut byte = [0u8; 1];
            s.set_nonblocking(true).expect("nonblocking");
            match (&*s).read(&mut byte) {
                Ok(0) => false,
                Ok(_) => true,
                Err(e) => e.kind() == ErrorKind::WouldBlock,
            }
        });
        while open.len() < n {
            match UnixStream::connect(path) {
                Ok(s) => open.push(s),
                Err(e) => {
                    eprintln!(
                        "mcpd-socket-peer: connect failed with {} open: {e}",
                        open.len()
                    );
                    break;
                }
            }
        }
        if !announced && open.len() >= n {
            say("flooding");
            announced = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn hello(path: &Path) {
    send(path, r#"{"op":"control","v":1}"#);
}

fn send(path: &Path, line: &str) {
    let mut stream = UnixStream::connect(path).expect("connect");
    stream
        .write_all(format!("{line}\n").as_bytes())
        .expect("send");
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).expect("read");
    say(line.trim_end());
}

/// Hands over two pipes after a hello that asks with `field` (`direct` or `pipes`).
fn direct(path: &Path, field: &str) {
    use std::os::fd::AsFd;

    let mut stream = UnixStream::connect(path).expect("connect");
    stream
        .write_all(format!("{{\"op\":\"attach\",\"v\":1,\"{field}\":true}}\n").as_bytes())
        .expect("send the hello");
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .expect("read the reply");
    say(reply.trim_end());
    let (stdin_r, mut stdin_w) = std::io::pipe().expect("a pipe");
    let (mut stdout_r, stdout_w) = std::io::pipe().expect("a pipe");
    match mcpd_proto::direct::send_stdio(&stream, stdin_r.as_fd(), stdout_w.as_fd()) {
        Ok(()) => say("sent"),
        Err(e) => say(&format!("send failed: {e}")),
    }
    drop((stdin_r, stdout_w));
    let _ = stdin_w.write_all(
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-11-25\",\"capabilities\":{},\"clientInfo\":{\"name\":\"intruder\",\"version\":\"1\"}}}\n",
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match stdout_r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(n).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut total = 0usize;
    while let Ok(n) = rx.recv_timeout(Duration::from_secs(2)) {
        total += n;
    }
    say(&format!("answered {total}"));
}

fn pipes_file(path: &Path) {
    use std::os::fd::AsFd;

    let mut stream = UnixStream::connect(path).expect("connect");
    stream
        .write_all(b"{\"op\":\"attach\",\"v\":1,\"pipes\":true}\n")
        .expect("send the hello");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut reply = String::new();
    reader.read_line(&mut reply).expect("read the reply");
    say(reply.trim_end());
    let file = std::fs::File::open("/proc/self/exe").expect("a regular file");
    if let Err(e) = mcpd_proto::direct::send_stdio(&stream, file.as_fd(), file.as_fd()) {
        say(&format!("send failed: {e}"));
    }
    let mut next = String::new();
    match reader.read_line(&mut next) {
        Ok(0) | Err(_) => say("closed"),
        Ok(_) => say(next.trim_end()),
    }
}
