//! `mcp-shim` against a fake daemon: a `UnixListener` in a temp dir that plays the daemon's side
//! of the handshake and then echoes. No real `mcpd` is needed.

// Helpers outside `#[test]` functions panic on broken test setup, like the tests themselves.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{SHIM, shim, stderr_of, wait_exit};
use mcpd_proto::{Hello, PROTOCOL_VERSION};

/// Set on every shim here (see [`shim`]).
const NO_AUTOSTART: &str = "MCPD_NO_AUTOSTART";
const WELCOME: &str = r#"{"op":"welcome","v":1,"daemon":"0.1.0","session":1}"#;

/// A fake daemon listening in its own short temp dir (`sun_path` is 108 bytes).
struct FakeDaemon {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    listener: UnixListener,
}

/// What the fake daemon saw of one session.
#[derive(Debug)]
enum Seen {
    Hello(Hello),
    /// The shim closed its write side (or the whole connection).
    Eof,
}

impl FakeDaemon {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("s")
            .tempdir_in("/tmp")
            .unwrap();
        let socket = dir.path().join("d.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        Self {
            _dir: dir,
            socket,
            listener,
        }
    }

    /// Accepts one session, reads its hello, answers `reply` (raw bytes, newline included),
    /// reports the hello and then runs `after` on the connection, which reports the shim's end
    /// of file.
    fn serve(
        self,
        reply: impl Into<String>,
        after: impl FnOnce(BufReader<UnixStream>, &mpsc::Sender<Seen>) + Send + 'static,
    ) -> (PathBuf, mpsc::Receiver<Seen>, thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel();
        let socket = self.socket.clone();
        let reply = reply.into();
        let handle = thread::spawn(move || {
            let (conn, _) = self.listener.accept().unwrap();
            let mut reader = BufReader::new(conn);
            let mut hello = String::new();
            reader.read_line(&mut hello).unwrap();
            // The reply goes out before the hello is reported: a test that acts on the hello
            // (kills the shim's parent, say) acts on a shim that was answered.
            reader.get_mut().write_all(reply.as_bytes()).unwrap();
            tx.send(Seen::Hello(serde_json::from_str(&hello).unwrap()))
                .unwrap();
            after(reader, &tx);
            // Keep the temp dir (and so the socket) until the session is over.
            drop(self._dir);
        });
        (socket, rx, handle)
    }
}

/// Echoes every line back until the shim closes its side, then closes.
fn echo(mut reader: BufReader<UnixStream>, seen: &mpsc::Sender<Seen>) {
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).unwrap() == 0 {
            let _ = seen.send(Seen::Eof);
            return;
        }
        reader.get_mut().write_all(&line).unwrap();
    }
}

/// Reads until the shim closes its side, reports that, then holds the connection open.
fn hold_open(mut reader: BufReader<UnixStream>, seen: &mpsc::Sender<Seen>) {
    let mut sink = Vec::new();
    let _ = reader.read_to_end(&mut sink);
    let _ = seen.send(Seen::Eof);
    thread::sleep(Duration::from_secs(30));
}

fn expect_hello(seen: &mpsc::Receiver<Seen>) -> mcpd_proto::AttachHello {
    match seen.recv_timeout(Duration::from_secs(5)).unwrap() {
        Seen::Hello(Hello::Attach(a)) => a,
        other => panic!("expected an attach hello, got {other:?}"),
    }
}

fn expect_eof(seen: &mpsc::Receiver<Seen>, within: Duration) {
    match seen.recv_timeout(within) {
        Ok(Seen::Eof) => {}
        other => panic!("expected the shim to close its side, got {other:?}"),
    }
}

/// Whether `pid` is gone (or a zombie nobody has reaped yet).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn wait_gone(pid: u32, within: Duration) {
    let deadline = Instant::now() + within;
    while !gone(pid) {
        assert!(
            Instant::now() < deadline,
            "mcp-shim {pid} still runs after {within:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn hello_describes_the_client_and_bytes_are_relayed_unchanged() {
    let (socket, seen, daemon) = FakeDaemon::new().serve(format!("{WELCOME}\n"), echo);
    let mut child = shim(&socket, &["--profile", "work"]);

    let hello = expect_hello(&seen);
    assert_eq!(hello.v, PROTOCOL_VERSION);
    assert_eq!(hello.profile, "work");
    assert_eq!(hello.client.pid, Some(std::process::id()));
    assert_eq!(
        hello.client.shim_version.as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(hello.client.cwd.as_deref(), cwd.to_str());

    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    for line in common::exact_lines() {
        let line = line.as_str();
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        let mut back = String::new();
        stdout.read_line(&mut back).unwrap();
        assert_eq!(back.strip_suffix('\n'), Some(line));
    }

    drop(stdin);
    expect_eof(&seen, Duration::from_secs(5));
    let status = wait_exit(&mut child, Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    assert_eq!(stderr_of(&mut child), "");
    daemon.join().unwrap();
}

#[test]
fn a_welcome_of_another_version_is_refused() {
    // Since `mcpd_proto::version`: a daemon that welcomes a protocol this shim does not speak
    // would misread everything that follows.
    let (socket, seen, _daemon) = FakeDaemon::new().serve(
        concat!(r#"{"op":"welcome","v":7,"daemon":"9.0.0"}"#, "\n"),
        echo,
    );
    let mut child = shim(&socket, &[]);
    expect_hello(&seen);
    let status = wait_exit(&mut child, Duration::from_secs(5));
    assert_eq!(status.code(), Some(1));
    let said = stderr_of(&mut child);
    assert!(
        said.contains("speaks socket protocol 7") && said.contains("upgrade mcp-shim"),
        "{said}"
    );
}

#[test]
fn a_welcome_with_extra_fields_is_accepted() {
    let (socket, seen, _daemon) = FakeDaemon::new().serve(
        concat!(
            r#"{"op":"welcome","v":1,"daemon":"9.0.0","features":["x"]}"#,
            "\n"
        ),
        echo,
    );
    let mut child = shim(&socket, &[]);
    assert_eq!(expect_hello(&seen).profile, "default");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdin.write_all(b"{\"id\":1}\n").unwrap();
    let mut back = String::new();
    stdout.read_line(&mut back).unwrap();
    assert_eq!(back, "{\"id\":1}\n");
    drop(stdin);
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(5)).code(),
        Some(0)
    );
}

#[test]
fn bytes_sent_together_with_the_welcome_are_relayed() {
    let note = r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"v":1.50}}"#;
    let reply = format!("{WELCOME}\n{note}\n");
    let (socket, _seen, _daemon) = FakeDaemon::new().serve(reply, echo);
    let mut child = shim(&socket, &[]);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert_eq!(first.strip_suffix('\n'), Some(note));
    drop(child.stdin.take());
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(5)).code(),
        Some(0)
    );
}

#[test]
fn a_refused_hello_exits_1_with_the_daemons_message() {
    let (socket, _seen, _daemon) = FakeDaemon::new().serve(
        concat!(r#"{"op":"error","v":1,"message":"unknown profile"}"#, "\n"),
        |_, _| {},
    );
    let mut child = shim(&socket, &["--profile", "nope"]);
    let status = wait_exit(&mut child, Duration::from_secs(5));
    assert_eq!(status.code(), Some(1));
    assert_eq!(
        stderr_of(&mut child),
        "mcp-shim: the daemon refused the session: unknown profile\n"
    );
}

#[test]
fn an_unknown_or_garbled_reply_exits_1() {
    for (reply, expect) in [
        ("{\"op\":\"teleport\",\"v\":9}\n", "does not know"),
        ("HTTP/1.1 400 Bad Request\r\n", "unreadable answer"),
        ("", "without answering"),
    ] {
        let (socket, _seen, _daemon) = FakeDaemon::new().serve(reply, |_, _| {});
        let mut child = shim(&socket, &[]);
        let status = wait_exit(&mut child, Duration::from_secs(5));
        let err = stderr_of(&mut child);
        assert_eq!(status.code(), Some(1), "{reply:?}: {err}");
        assert!(
            err.starts_with("mcp-shim: ") && err.contains(expect),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn no_daemon_exits_1_with_one_line_naming_the_socket_and_how_to_start_mcpd() {
    let dir = tempfile::Builder::new()
        .prefix("s")
        .tempdir_in("/tmp")
        .unwrap();
    let missing = dir.path().join("none.sock");
    // A socket file left behind by a dead daemon: connection refused.
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());

    for (socket, reason) in [(&missing, "no such socket"), (&stale, "connection refused")] {
        // Autostart turned off by the flag, then by the environment (each alone).
        let by_flag = || {
            Command::new(SHIM)
                .env_remove(NO_AUTOSTART)
                .args(["--no-autostart", "--socket"])
                .arg(socket)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        for mut child in [by_flag(), shim(socket, &[])] {
            let status = wait_exit(&mut child, Duration::from_secs(5));
            let err = stderr_of(&mut child);
            assert_eq!(status.code(), Some(1));
            assert_eq!(
                err,
                format!(
                    "mcp-shim: no mcpd daemon at {} ({reason}); start it with 'mcpd' or \
                     'systemctl --user start mcpd.socket'\n",
                    socket.display()
                )
            );
        }
    }
    // Nothing was created next to the sockets.
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["stale.sock"]);
}

#[test]
fn the_socket_comes_from_mcpd_socket_when_no_flag_is_given() {
    let (socket, seen, _daemon) =
        FakeDaemon::new().serve(concat!(r#"{"op":"welcome","v":1}"#, "\n"), echo);
    let mut child = Command::new(SHIM)
        .env(NO_AUTOSTART, "1")
        .env("MCPD_SOCKET", &socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    expect_hello(&seen);
    drop(child.stdin.take());
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(5)).code(),
        Some(0)
    );
}

#[test]
fn closing_stdin_ends_the_shim_even_if_the_daemon_keeps_its_side_open() {
    let reply = format!("{WELCOME}\n");
    let (socket, seen, _daemon) = FakeDaemon::new().serve(reply, hold_open);
    let mut child = shim(&socket, &[]);
    expect_hello(&seen);
    drop(child.stdin.take());
    // The daemon is told at once (our write side is shut down) ...
    expect_eof(&seen, Duration::from_secs(1));
    // ... and the shim leaves after its grace period although the daemon never closes.
    let status = wait_exit(&mut child, Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
}

/// With reconnection turned off, the daemon closing the session ends the shim at once. (With it
/// on, see `resume.rs`.)
#[test]
fn the_daemon_closing_the_session_exits_1_when_reconnecting_is_off() {
    let reply = format!("{WELCOME}\n");
    let (socket, _seen, _daemon) = FakeDaemon::new().serve(reply, |_, _| {});
    let mut child = shim(&socket, &["--reconnect-timeout", "0"]);
    // stdin stays open: the client is still talking.
    let status = wait_exit(&mut child, Duration::from_secs(5));
    assert_eq!(status.code(), Some(1));
    assert_eq!(
        stderr_of(&mut child),
        "mcp-shim: the daemon closed the session (is mcpd stopping or restarting?)\n"
    );
}

/// The client (here `sh`, which becomes `sleep`) dies while a grandchild still holds the pipe
/// that is the shim's stdin: the shim must leave anyway.
#[test]
fn the_shim_exits_when_its_parent_dies_even_with_stdin_open() {
    let reply = format!("{WELCOME}\n");
    let (socket, seen, _daemon) = FakeDaemon::new().serve(reply, hold_open);
    // An asynchronous command's stdin is /dev/null unless redirected: pass ours through fd 3.
    let mut client = Command::new("sh")
        .env(NO_AUTOSTART, "1")
        .arg("-c")
        .arg(r#"exec 3<&0; "$0" --socket "$1" <&3 3<&- >/dev/null & echo $!; exec sleep 60"#)
        .arg(SHIM)
        .arg(&socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let _stdin_kept_open = client.stdin.take();
    let mut pid = String::new();
    BufReader::new(client.stdout.take().unwrap())
        .read_line(&mut pid)
        .unwrap();
    let shim_pid: u32 = pid.trim().parse().unwrap();

    let hello = expect_hello(&seen);
    assert_eq!(hello.client.pid, Some(client.id()));
    assert!(!gone(shim_pid));

    client.kill().unwrap();
    client.wait().unwrap();
    expect_eof(&seen, Duration::from_secs(3));
    wait_gone(shim_pid, Duration::from_secs(3));
}

/// `PR_SET_PDEATHSIG` fires when the parent *thread* ends; a client that spawns from a worker
/// thread must not lose its session when that thread exits.
#[test]
fn the_end_of_the_thread_that_spawned_the_shim_does_not_end_the_session() {
    let (socket, seen, _daemon) =
        FakeDaemon::new().serve(concat!(r#"{"op":"welcome","v":1}"#, "\n"), echo);
    // The spawning thread lives until the shim has armed its parent-death signal (it has once
    // it sends its hello), then ends.
    let (child_tx, child_rx) = mpsc::channel();
    let (end_tx, end_rx) = mpsc::channel::<()>();
    let spawner = thread::spawn(move || {
        child_tx.send(shim(&socket, &[])).unwrap();
        let _ = end_rx.recv();
    });
    let mut child = child_rx.recv().unwrap();
    expect_hello(&seen);
    drop(end_tx);
    spawner.join().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    // Round trips over a while, so that a wrongly handled parent-death signal has time to land.
    for i in 0..5 {
        thread::sleep(Duration::from_millis(100));
        writeln!(stdin, "{{\"id\":{i}}}").unwrap();
        let mut back = String::new();
        stdout.read_line(&mut back).unwrap();
        assert_eq!(back, format!("{{\"id\":{i}}}\n"));
    }
    assert!(child.try_wait().unwrap().is_none());
    drop(stdin);
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(5)).code(),
        Some(0)
    );
}

/// A client may start us with SIGTERM ignored (dispositions survive exec); we still stop on it.
#[test]
fn sigterm_ends_the_shim_even_if_the_client_ignored_it() {
    let reply = format!("{WELCOME}\n");
    let (socket, seen, _daemon) = FakeDaemon::new().serve(reply, hold_open);
    let mut child = Command::new("sh")
        .env(NO_AUTOSTART, "1")
        .arg("-c")
        .arg(r#"trap '' TERM HUP; exec "$0" --socket "$1""#)
        .arg(SHIM)
        .arg(&socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    expect_hello(&seen);
    // SAFETY: sending a signal to our own child, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = wait_exit(&mut child, Duration::from_secs(3));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    let out = Command::new(SHIM).arg("--frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "mcp-shim: unknown option '--frobnicate'; see --help\n"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn version_and_help_exit_0() {
    let out = Command::new(SHIM).arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!(
            "mcp-shim {} (socket protocol {PROTOCOL_VERSION})\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    let out = Command::new(SHIM).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("--profile NAME")
    );
}
