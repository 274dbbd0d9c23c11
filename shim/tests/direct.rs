//! `mcp-shim --direct` against a fake daemon that takes the client's stdio over the socket
//! (`SCM_RIGHTS`) the way `mcpd` does. No real `mcpd` is needed.

#![allow(clippy::unwrap_used)]

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{SHIM, shim, stderr_of, wait_exit};
use std::os::fd::{AsRawFd, BorrowedFd};

use mcpd_proto::direct::{recv_stdio, send_with_fds};
use mcpd_proto::{AttachHello, Hello};

const DIRECT_WELCOME: &str = r#"{"op":"welcome","v":1,"daemon":"0.1.0","session":1,"direct":true}"#;
const WELCOME: &str = r#"{"op":"welcome","v":1,"daemon":"0.1.0","session":1}"#;
const HANDBACK_WELCOME: &str =
    r#"{"op":"welcome","v":1,"daemon":"0.1.0","session":2,"direct":true,"handback":true}"#;
const WITHIN: Duration = Duration::from_secs(5);

/// One accepted session of the fake daemon: the connection past the welcome and the hello.
struct Conn {
    stream: UnixStream,
    hello: AttachHello,
}

/// Listens in a short temp dir; each test accepts one shim.
struct FakeDaemon {
    dir: tempfile::TempDir,
    listener: UnixListener,
}

impl FakeDaemon {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("s")
            .tempdir_in("/tmp")
            .unwrap();
        let listener = UnixListener::bind(dir.path().join("d.sock")).unwrap();
        Self { dir, listener }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("d.sock")
    }

    /// Accepts the shim, reads its hello and answers `welcome`.
    fn accept(&self, welcome: &str) -> Conn {
        let (stream, _) = self.listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(
            reader.buffer().is_empty(),
            "the shim sent more than its hello"
        );
        let Hello::Attach(hello) = serde_json::from_str(&line).unwrap() else {
            panic!("not an attach hello: {line}")
        };
        (&stream)
            .write_all(format!("{welcome}\n").as_bytes())
            .unwrap();
        Conn { stream, hello }
    }
}

impl Conn {
    /// Takes the client's stdin and stdout, as `mcpd` does after a direct welcome.
    fn take_stdio(&self) -> (File, File) {
        self.stream.set_read_timeout(Some(WITHIN)).unwrap();
        // recv_stdio does not wait: poll until the handover arrives.
        let deadline = Instant::now() + WITHIN;
        loop {
            match recv_stdio(self.stream.as_fd()) {
                Ok((stdin, stdout)) => return (File::from(stdin), File::from(stdout)),
                Err(mcpd_proto::direct::RecvError::WouldBlock) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("no handover: {e}"),
            }
        }
    }

    fn end(&self, line: &str) {
        (&self.stream)
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }
}

/// Reads `stdin` (the client's, as the daemon got it) to its end, on a thread.
fn read_all(mut stdin: File) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut all = Vec::new();
        let _ = stdin.read_to_end(&mut all);
        let _ = tx.send(all);
    });
    rx
}

#[test]
fn the_client_talks_to_the_daemon_over_its_own_pipes_and_its_end_of_input_reaches_the_daemon() {
    let daemon = FakeDaemon::new();
    let mut child = shim(&daemon.socket(), &["--direct"]);
    let conn = daemon.accept(DIRECT_WELCOME);
    assert!(conn.hello.direct, "the hello did not ask for direct mode");
    assert!(
        conn.hello.handback,
        "the hello did not offer to take the stdio back"
    );
    let (stdin, mut stdout) = conn.take_stdio();

    let answer = r#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"result":{"n":1.50}}"#;
    stdout.write_all(format!("{answer}\n").as_bytes()).unwrap();
    let mut client_out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    client_out.read_line(&mut line).unwrap();
    assert_eq!(line.trim_end(), answer);

    let got = read_all(stdin);
    let mut client_in = child.stdin.take().unwrap();
    let request = format!(
        r#"{{"jsonrpc":"2.0","id":1,"params":"{}"}}"#,
        "x".repeat(300_000)
    );
    client_in.write_all(request.as_bytes()).unwrap();
    client_in.write_all(b"\n").unwrap();
    // The shim holds no copy of the client's stdin: its close is the daemon's end of file.
    drop(client_in);
    let got = got
        .recv_timeout(WITHIN)
        .expect("the daemon saw the end of input");
    assert_eq!(got, format!("{request}\n").into_bytes());

    // Nor of its stdout: once the daemon closes it, the client sees the end.
    drop(stdout);
    let mut rest = String::new();
    client_out.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "");

    conn.end(r#"{"op":"end","ok":true,"reason":"the client closed its input"}"#);
    assert_eq!(wait_exit(&mut child, WITHIN).code(), Some(0));
    assert_eq!(stderr_of(&mut child), "");
}

#[test]
fn an_end_the_client_did_not_choose_exits_1_with_the_daemons_reason() {
    let daemon = FakeDaemon::new();
    let mut child = shim(&daemon.socket(), &["--direct"]);
    let conn = daemon.accept(DIRECT_WELCOME);
    let _stdio = conn.take_stdio();
    conn.end(r#"{"op":"end","ok":false,"reason":"mcpd is shutting down"}"#);
    assert_eq!(wait_exit(&mut child, WITHIN).code(), Some(1));
    assert_eq!(
        stderr_of(&mut child),
        "mcp-shim: mcpd ended the direct session: mcpd is shutting down\n"
    );
}

#[test]
fn the_daemon_vanishing_after_the_handover_exits_1_and_says_the_session_is_lost() {
    let daemon = FakeDaemon::new();
    let mut child = shim(&daemon.socket(), &["--direct"]);
    let conn = daemon.accept(DIRECT_WELCOME);
    let stdio = conn.take_stdio();
    drop((conn, stdio));
    assert_eq!(wait_exit(&mut child, WITHIN).code(), Some(1));
    let err = stderr_of(&mut child);
    assert!(
        err.starts_with("mcp-shim: lost the connection to mcpd") && err.contains("--direct"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn sigterm_leaves_at_once_and_closes_the_socket() {
    let daemon = FakeDaemon::new();
    let mut child = shim(&daemon.socket(), &["--direct"]);
    let conn = daemon.accept(DIRECT_WELCOME);
    let _stdio = conn.take_stdio();
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert_eq!(wait_exit(&mut child, WITHIN).code(), Some(0));
    conn.stream.set_read_timeout(Some(WITHIN)).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        (&conn.stream).read(&mut buf).unwrap(),
        0,
        "the socket is closed"
    );
}

#[test]
fn a_daemon_that_does_not_take_stdio_gets_the_relay_and_a_note() {
    let daemon = FakeDaemon::new();
    let mut child = shim(&daemon.socket(), &["--direct"]);
    let conn = daemon.accept(WELCOME);
    // An older daemon: it expects relayed lines, and gets them.
    let mut client_in = child.stdin.take().unwrap();
    client_in.write_all(b"{\"id\":1}\n").unwrap();
    let mut reader = BufReader::new(&conn.stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "{\"id\":1}\n");
    drop(client_in);
    drop(reader);
    drop(conn);
    assert_eq!(wait_exit(&mut child, WITHIN).code(), Some(0));
    assert_eq!(
        stderr_of(&mut child),
        "mcp-shim: --direct: this mcpd does not take the client's stdio (upgrade it); relaying \
         instead\n"
    );
}

#[test]
fn without_the_flag_the_hello_does_not_ask() {
    let daemon = FakeDaemon::new();
    let mut child = shim(&daemon.socket(), &[]);
    let conn = daemon.accept(WELCOME);
    assert!(!conn.hello.direct && !conn.hello.handback);
    drop(child.stdin.take());
    drop(conn);
    assert_eq!(wait_exit(&mut child, WITHIN).code(), Some(0));
}

#[test]
fn the_shim_leaves_when_its_parent_dies_even_with_stdin_held_open_and_the_daemon_sees_it() {
    let daemon = FakeDaemon::new();
    // An asynchronous command's stdin is /dev/null unless redirected: pass ours through fd 3.
    // The shim's stdout is the pipe its pid is read from.
    let mut client = Command::new("sh")
        .env("MCPD_NO_AUTOSTART", "1")
        .arg("-c")
        .arg(r#"exec 3<&0; "$0" --direct --socket "$1" <&3 3<&- & echo $!; exec sleep 60"#)
        .arg(SHIM)
        .arg(daemon.socket())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let _stdin_kept_open = client.stdin.take();
    let mut pid = String::new();
    let mut out = BufReader::new(client.stdout.take().unwrap());
    out.read_line(&mut pid).unwrap();
    let shim_pid: i32 = pid.trim().parse().unwrap();
    let conn = daemon.accept(DIRECT_WELCOME);
    assert_eq!(conn.hello.client.pid, Some(client.id()));
    let _stdio = conn.take_stdio();

    client.kill().unwrap();
    client.wait().unwrap();
    conn.stream.set_read_timeout(Some(WITHIN)).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        (&conn.stream).read(&mut buf).unwrap(),
        0,
        "the shim's socket closes with it"
    );
    let deadline = Instant::now() + WITHIN;
    // SAFETY: kill(pid, 0) only checks for existence.
    while unsafe { libc::kill(shim_pid, 0) } == 0 && !zombie(shim_pid) {
        assert!(Instant::now() < deadline, "mcp-shim {shim_pid} still runs");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `pid` is a zombie nobody has reaped yet.
fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

impl Conn {
    /// Hands the client's descriptors `fds` back with a hand-back line announcing `input` and
    /// `output`, which follow it; then closes the connection.
    fn hand_back(self, fds: &[BorrowedFd<'_>], extra: &str, input: &[u8], output: &[u8]) {
        let line = format!(
            r#"{{"op":"handback","session":1{extra},"input":{},"output":{}}}"#,
            input.len(),
            output.len()
        );
        let line = format!("{line}\n");
        let sent = send_with_fds(self.stream.as_fd(), line.as_bytes(), fds).unwrap();
        let mut stream = &self.stream;
        stream.write_all(&line.as_bytes()[sent..]).unwrap();
        stream.write_all(input).unwrap();
        stream.write_all(output).unwrap();
    }
}

/// Reads exactly `n` bytes of `from`.
fn read_n(from: &mut impl Read, n: usize) -> Vec<u8> {
    let mut got = vec![0u8; n];
    from.read_exact(&mut got).unwrap();
    got
}

const PARTIAL: &[u8] = br#"{"jsonrpc":"2.0","id":8,"#;
const REST: &[u8] = b"\"method\":\"ping\"}\n";
const STATE: &str = r#","initialize":{"protocolVersion":"2025-11-25","n":1.50},"initialized":true,"in_flight":[7,"s"]"#;

#[test]
fn a_session_handed_back_goes_on_in_direct_mode_on_the_next_daemon_and_nothing_is_lost() {
    let daemon = FakeDaemon::new();
    let mut child = shim(&daemon.socket(), &["--direct"]);
    let conn = daemon.accept(HANDBACK_WELCOME);
    let (mut stdin, mut stdout) = conn.take_stdio();
    let mut client_in = child.stdin.take().unwrap();
    let mut client_out = BufReader::new(child.stdout.take().unwrap());
    // The daemon has read half a request and written half an answer when it stops.
    client_in.write_all(PARTIAL).unwrap();
    assert_eq!(read_n(&mut stdin, PARTIAL.len()), PARTIAL);
    stdout.write_all(br#"{"result":{},"#).unwrap();
    conn.hand_back(
        &[stdin.as_fd(), stdout.as_fd()],
        STATE,
        PARTIAL,
        b"\"jsonrpc\":\"2.0\",\"id\":5}\n",
    );
    drop((stdin, stdout));

    // The shim comes back resuming, in direct mode, bringing the input the daemon had read.
    let conn = daemon.accept(HANDBACK_WELCOME);
    let hello = &conn.hello;
    assert!(hello.direct && hello.handback, "{hello:?}");
    assert_eq!(hello.direct_input, PARTIAL.len() as u64);
    let resume = hello.resume.as_ref().expect("a resume");
    assert_eq!(
        resume.initialize,
        serde_json::json!({"protocolVersion": "2025-11-25", "n": 1.50})
    );
    assert!(resume.initialized);
    assert_eq!(resume.previous_session, Some(1));
    let (mut stdin, _stdout) = conn.take_stdio();
    conn.stream.set_read_timeout(Some(WITHIN)).unwrap();
    assert_eq!(read_n(&mut &conn.stream, PARTIAL.len()), PARTIAL);
    // The rest of the line the client writes now is in its pipe, which the new daemon holds.
    client_in.write_all(REST).unwrap();
    assert_eq!(read_n(&mut stdin, REST.len()), REST);

    // The client got the rest of the half-written answer, then -32012 for what was in flight.
    let mut line = String::new();
    client_out.read_line(&mut line).unwrap();
    assert_eq!(line, "{\"result\":{},\"jsonrpc\":\"2.0\",\"id\":5}\n");
    let mut errors = Vec::new();
    for _ in 0..2 {
        let mut line = String::new();
        client_out.read_line(&mut line).unwrap();
        assert!(line.contains("\"code\":-32012"), "{line}");
        errors.push(line);
    }
    errors.sort();
    assert!(
        errors[0].contains(r#""id":"s""#) && errors[1].contains(r#""id":7"#),
        "{errors:?}"
    );

    conn.end(r#"{"op":"end","ok":true,"reason":"the client closed its input"}"#);
    assert_eq!(wait_exit(&mut child, WITHIN).code(), Some(0));
    assert_eq!(stderr_of(&mut child), "");
}

#[test]
fn a_session_handed_back_to_a_daemon_that_does_not_take_stdio_is_relayed_input_first() {
    let daemon = FakeDaemon::new();
    let mut child = shim(&daemon.socket(), &["--direct"]);
    let conn = daemon.accept(HANDBACK_WELCOME);
    let (mut stdin, stdout) = conn.take_stdio();
    let mut client_in = child.stdin.take().unwrap();
    client_in.write_all(PARTIAL).unwrap();
    assert_eq!(read_n(&mut stdin, PARTIAL.len()), PARTIAL);
    conn.hand_back(&[stdin.as_fd(), stdout.as_fd()], STATE, PARTIAL, b"");
    drop((stdin, stdout));

    // An older daemon: it relays, and the partial line is completed by what the client sends.
    let conn = daemon.accept(WELCOME);
    assert!(conn.hello.resume.is_some());
    client_in.write_all(REST).unwrap();
    let mut reader = BufReader::new(&conn.stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line.as_bytes(), [PARTIAL, REST].concat());
    drop(client_in);
    drop(reader);
    drop(conn);
    assert_eq!(wait_exit(&mut child, WITHIN).code(), Some(0));
}

#[test]
fn stdin_closing_while_no_daemon_has_the_session_ends_the_shim_with_0() {
    let daemon = FakeDaemon::new();
    let mut child = shim(&daemon.socket(), &["--direct"]);
    let conn = daemon.accept(HANDBACK_WELCOME);
    let (stdin, stdout) = conn.take_stdio();
    conn.hand_back(&[stdin.as_fd(), stdout.as_fd()], STATE, b"", b"");
    drop((stdin, stdout));
    // No daemon comes back (the shim would try for 30 s); the client closes its stdin.
    drop(daemon);
    drop(child.stdin.take());
    assert_eq!(wait_exit(&mut child, WITHIN).code(), Some(0));
}

#[test]
fn a_hand_back_cut_short_ends_the_session_in_one_line() {
    let daemon = FakeDaemon::new();
    let mut child = shim(&daemon.socket(), &["--direct"]);
    let conn = daemon.accept(HANDBACK_WELCOME);
    let (stdin, stdout) = conn.take_stdio();
    let line = "{\"op\":\"handback\",\"session\":1,\"input\":0,\"output\":100}\n";
    send_with_fds(
        conn.stream.as_fd(),
        line.as_bytes(),
        &[stdin.as_fd(), stdout.as_fd()],
    )
    .unwrap();
    (&conn.stream).write_all(b"{\"jsonrpc\"").unwrap();
    drop((conn, stdin, stdout));
    assert_eq!(wait_exit(&mut child, WITHIN).code(), Some(1));
    let err = stderr_of(&mut child);
    assert!(
        err.contains("in the middle of handing the direct session back (10 of 100 bytes came)"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn a_hand_back_without_exactly_the_clients_two_stdio_descriptors_is_refused() {
    let file = tempfile::tempfile().unwrap();
    type Pick = fn(&File, &File, &File) -> Vec<i32>;
    let cases: [(&str, Pick, &str); 4] = [
        (
            "one",
            |i, _, _| vec![i.as_raw_fd()],
            "1 descriptors instead of 2",
        ),
        (
            "three",
            |i, o, _| vec![i.as_raw_fd(), o.as_raw_fd(), o.as_raw_fd()],
            "3 descriptors instead of 2",
        ),
        (
            "a file",
            |_, o, f| vec![f.as_raw_fd(), o.as_raw_fd()],
            "stdin is a regular file",
        ),
        (
            "swapped",
            |i, o, _| vec![o.as_raw_fd(), i.as_raw_fd()],
            "stdin is not open for reading",
        ),
    ];
    for (name, pick, why) in cases {
        let daemon = FakeDaemon::new();
        let mut child = shim(&daemon.socket(), &["--direct"]);
        let conn = daemon.accept(HANDBACK_WELCOME);
        let (stdin, stdout) = conn.take_stdio();
        let raw = pick(&stdin, &stdout, &file);
        // SAFETY: each raw descriptor belongs to a File alive for this whole iteration.
        let fds: Vec<BorrowedFd<'_>> = raw
            .iter()
            .map(|&fd| unsafe { BorrowedFd::borrow_raw(fd) })
            .collect();
        conn.hand_back(&fds, STATE, b"", b"");
        assert_eq!(wait_exit(&mut child, WITHIN).code(), Some(1), "{name}");
        let err = stderr_of(&mut child);
        assert!(
            err.contains("handed the direct session back with")
                && err.contains(why)
                && err.contains("refused"),
            "{name}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
    }
}
