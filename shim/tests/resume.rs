//! `mcp-shim` surviving a daemon restart, against fake daemons that come and go on one socket
//! path: requests in flight get an error, the shim reconnects and resumes the session with the
//! client's `initialize`, lines sent during the gap arrive after the new welcome.

// Helpers outside `#[test]` functions panic on broken test setup, like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use mcpd_proto::{AttachHello, Hello, PROTOCOL_VERSION};
use serde_json::Value;

mod common;

use common::{Place, SHIM};
const WAIT: Duration = Duration::from_secs(5);

/// One session on a fake daemon, seen from the daemon's side.
struct Conn {
    reader: BufReader<UnixStream>,
    hello: AttachHello,
}

impl Conn {
    /// Accepts the next session and reads its hello (without answering it).
    fn accept(listener: &UnixListener) -> Self {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + WAIT;
        let stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "the shim did not connect");
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut reader = BufReader::new(stream);
        let mut hello = String::new();
        reader.read_line(&mut hello).unwrap();
        let hello = match serde_json::from_str(&hello).unwrap() {
            Hello::Attach(a) => a,
            other => panic!("not an attach hello: {other:?}"),
        };
        Self { reader, hello }
    }

    fn welcome(&mut self, session: u64) {
        self.send(&format!(
            r#"{{"op":"welcome","v":1,"daemon":"0.1.0","session":{session}}}"#
        ));
    }

    fn send(&mut self, line: &str) {
        let stream = self.reader.get_mut();
        stream.write_all(line.as_bytes()).unwrap();
        stream.write_all(b"\n").unwrap();
    }

    /// The next line from the shim, exactly (newline removed).
    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(line.ends_with('\n'), "not a whole line: {line:?}");
        line.pop();
        line
    }

    /// Whether the shim has sent anything that was not read yet, waiting up to `within`.
    fn has_pending(&mut self, within: Duration) -> bool {
        if !self.reader.buffer().is_empty() {
            return true;
        }
        let mut pollfd = libc::pollfd {
            fd: self.reader.get_ref().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(within.as_millis()).unwrap();
        // SAFETY: `pollfd` is a valid array of one element for the duration of the call.
        unsafe { libc::poll(&mut pollfd, 1, ms) > 0 }
    }
}

/// The MCP client's side: the shim's stdin and its stdout, line by line.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Client {
    fn spawn(place: &Place, extra: &[&str]) -> Self {
        // Autostart off: a real `mcpd` sits next to the shim, and these daemons are fakes.
        let mut child = Command::new(SHIM)
            .env("MCPD_NO_AUTOSTART", "1")
            .arg("--socket")
            .arg(&place.socket)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            stdin: child.stdin.take(),
            child,
            lines,
        }
    }

    /// Waits until the shim has read everything written to its stdin (the pipe is empty).
    fn wait_stdin_read(&self) {
        let fd = self.stdin.as_ref().unwrap().as_raw_fd();
        let deadline = Instant::now() + WAIT;
        loop {
            let mut unread: libc::c_int = 0;
            // SAFETY: FIONREAD on a pipe we own writes one int, the bytes not yet read.
            let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut unread) };
            assert_eq!(rc, 0, "FIONREAD: {}", io::Error::last_os_error());
            if unread == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "the shim did not read its stdin");
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The sockets among the shim's open files.
    fn sockets(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("socket:"))
            .count()
    }

    /// Waits until the shim holds fewer sockets than `connected` (it closed its connection to
    /// the daemon that went away and is reconnecting).
    fn wait_disconnected(&self, connected: usize) {
        let deadline = Instant::now() + WAIT;
        while self.sockets() >= connected {
            assert!(Instant::now() < deadline, "the shim kept its connection");
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    fn line(&mut self) -> String {
        self.lines
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("no line from the shim: {e}"))
    }

    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("mcp-shim did not exit within {within:?}");
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn stderr(&mut self) -> String {
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        err
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const INIT_PARAMS: &str = r#"{"protocolVersion":"2025-11-25","capabilities":{"roots":{"listChanged":true}},"clientInfo":{"name":"c","version":"1.0"},"x":{"price":1.50}}"#;

/// Starts a session on a first daemon: initialize (answered), initialized.
fn initialized_session(place: &Place, extra: &[&str]) -> (UnixListener, Conn, Client) {
    let listener = place.listen();
    let mut client = Client::spawn(place, extra);
    let mut daemon = Conn::accept(&listener);
    assert!(daemon.hello.resume.is_none());
    daemon.welcome(1);
    let init =
        format!(r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{INIT_PARAMS}}}"#);
    client.send(&init);
    assert_eq!(daemon.line(), init);
    daemon.send(r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-11-25"}}"#);
    assert_eq!(
        client.line(),
        r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-11-25"}}"#
    );
    client.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    assert_eq!(
        daemon.line(),
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#
    );
    (listener, daemon, client)
}

fn lost_error(id: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":-32012,"message":"mcpd restarted while this request was in flight; try again"}}}}"#
    )
}

#[test]
fn in_flight_requests_get_an_error_and_the_session_resumes_on_the_next_daemon() {
    let place = Place::new();
    let (listener, mut daemon, mut client) = initialized_session(&place, &[]);

    // Two requests in flight, one answered, and a request from the daemon that the client
    // answers: none of the last two may get an error later.
    let calls = [
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"slow"}}"#,
        r#"{"jsonrpc":"2.0","id":"s-3","method":"tools/call","params":{"name":"slow"}}"#,
        r#"{"jsonrpc":"2.0","id":4,"method":"ping"}"#,
    ];
    for call in calls {
        client.send(call);
        assert_eq!(daemon.line(), call);
    }
    daemon.send(r#"{"jsonrpc":"2.0","id":4,"result":{}}"#);
    assert_eq!(client.line(), r#"{"jsonrpc":"2.0","id":4,"result":{}}"#);
    daemon.send(r#"{"jsonrpc":"2.0","id":"srv-1","method":"roots/list"}"#);
    assert_eq!(
        client.line(),
        r#"{"jsonrpc":"2.0","id":"srv-1","method":"roots/list"}"#
    );
    let answer = r#"{"jsonrpc":"2.0","id":"srv-1","result":{"roots":[]}}"#;
    client.send(answer);
    assert_eq!(daemon.line(), answer);

    // The daemon restarts: it goes away, with half a line unsent.
    daemon
        .reader
        .get_mut()
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":2,\"res")
        .unwrap();
    drop(daemon);
    place.stop(listener);

    let mut errors = [client.line(), client.line()];
    errors.sort();
    assert_eq!(errors, [lost_error("\"s-3\""), lost_error("2")]);

    // The client goes on during the gap; this is held until the next daemon welcomes the shim.
    let gap = [
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo","arguments":{"n":1.50}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/roots/list_changed"}"#,
    ];
    for line in gap {
        client.send(line);
    }
    client.wait_stdin_read();

    let listener = place.listen();
    let mut daemon = Conn::accept(&listener);
    let resume = daemon.hello.resume.clone().expect("a resume in the hello");
    let params: Value = serde_json::from_str(INIT_PARAMS).unwrap();
    assert_eq!(resume.initialize, params);
    assert!(resume.initialized);
    assert_eq!(resume.previous_session, Some(1));
    assert_eq!(daemon.hello.v, PROTOCOL_VERSION);
    assert!(
        !daemon.has_pending(Duration::from_millis(200)),
        "the shim sent lines before the welcome"
    );
    daemon.welcome(2);
    for line in gap {
        assert_eq!(daemon.line(), line);
    }
    daemon.send(r#"{"jsonrpc":"2.0","id":5,"result":{"n":1.50}}"#);
    assert_eq!(
        client.line(),
        r#"{"jsonrpc":"2.0","id":5,"result":{"n":1.50}}"#
    );

    // Traffic flows directly again.
    let call = r#"{"jsonrpc":"2.0","id":6,"method":"tools/list"}"#;
    client.send(call);
    assert_eq!(daemon.line(), call);

    // And a second restart resumes from the second session.
    drop(daemon);
    place.stop(listener);
    assert_eq!(client.line(), lost_error("6"));
    let listener = place.listen();
    let daemon = Conn::accept(&listener);
    let resume = daemon.hello.resume.clone().expect("a resume in the hello");
    assert_eq!(resume.previous_session, Some(2));
    assert_eq!(resume.initialize, params);

    drop(client.stdin.take());
    drop(daemon);
    assert_eq!(client.wait_exit(WAIT).code(), Some(0));
    assert_eq!(client.stderr(), "");
}

#[test]
fn a_daemon_that_does_not_come_back_ends_the_shim_with_one_line_after_the_timeout() {
    let place = Place::new();
    let (listener, mut daemon, mut client) =
        initialized_session(&place, &["--reconnect-timeout", "0.6"]);
    let call = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call"}"#;
    client.send(call);
    assert_eq!(daemon.line(), call);
    drop(daemon);
    place.stop(listener);
    let lost = Instant::now();
    assert_eq!(client.line(), lost_error("7"));
    let status = client.wait_exit(WAIT);
    let took = lost.elapsed();
    assert_eq!(status.code(), Some(1));
    assert!(
        took >= Duration::from_millis(550) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let err = client.stderr();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(
            "mcp-shim: lost the connection to mcpd and it did not come back within 0.6 s; \
             giving up (last attempt: no mcpd daemon at "
        ),
        "{err}"
    );
}

#[test]
fn a_restarted_daemon_that_speaks_a_newer_protocol_is_named_clearly() {
    let place = Place::new();
    let (listener, daemon, mut client) = initialized_session(&place, &[]);
    drop(daemon);
    place.stop(listener);
    let listener = place.listen();
    let mut daemon = Conn::accept(&listener);
    daemon.send(
        r#"{"op":"error","v":2,"message":"socket protocol 1 is not supported; this mcpd speaks 2"}"#,
    );
    assert_eq!(client.wait_exit(WAIT).code(), Some(1));
    assert_eq!(
        client.stderr(),
        "mcp-shim: the daemon now speaks socket protocol 2 and this mcp-shim speaks 1; upgrade \
         mcp-shim (the daemon said: socket protocol 1 is not supported; this mcpd speaks 2)\n"
    );
}

#[test]
fn a_restarted_daemon_that_refuses_the_session_is_reported() {
    let place = Place::new();
    let (listener, daemon, mut client) = initialized_session(&place, &["--profile", "work"]);
    drop(daemon);
    place.stop(listener);
    let listener = place.listen();
    let mut daemon = Conn::accept(&listener);
    assert_eq!(daemon.hello.profile, "work");
    daemon.send(r#"{"op":"error","v":1,"message":"unknown profile `work`"}"#);
    assert_eq!(client.wait_exit(WAIT).code(), Some(1));
    assert_eq!(
        client.stderr(),
        "mcp-shim: the daemon refused the session: unknown profile `work`\n"
    );
}

/// A daemon that accepts but closes before answering is restarting too: try again.
#[test]
fn a_daemon_closing_during_the_handshake_is_retried() {
    let place = Place::new();
    let (listener, daemon, mut client) = initialized_session(&place, &[]);
    drop(daemon);
    drop(Conn::accept(&listener));
    let mut daemon = Conn::accept(&listener);
    assert!(daemon.hello.resume.is_some());
    daemon.welcome(3);
    let call = r#"{"jsonrpc":"2.0","id":8,"method":"ping"}"#;
    client.send(call);
    assert_eq!(daemon.line(), call);
}

#[test]
fn a_client_that_had_not_initialized_gets_a_plain_hello_and_its_initialize_is_resent() {
    let place = Place::new();
    let listener = place.listen();
    let mut client = Client::spawn(&place, &[]);
    let mut daemon = Conn::accept(&listener);
    daemon.welcome(1);
    // The initialize is lost in flight: the client is told, and not resumed as initialized.
    let init =
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{INIT_PARAMS}}}"#);
    client.send(&init);
    assert_eq!(daemon.line(), init);
    drop(daemon);
    place.stop(listener);
    assert_eq!(client.line(), lost_error("1"));
    // It tries again during the gap: that initialize is held and sent as it is.
    let again = init.replace(r#""id":1"#, r#""id":2"#);
    client.send(&again);
    let listener = place.listen();
    let mut daemon = Conn::accept(&listener);
    assert!(daemon.hello.resume.is_none(), "{:?}", daemon.hello.resume);
    daemon.welcome(2);
    assert_eq!(daemon.line(), again);
    daemon.send(r#"{"jsonrpc":"2.0","id":2,"result":{}}"#);
    assert_eq!(client.line(), r#"{"jsonrpc":"2.0","id":2,"result":{}}"#);
    // Answered: the next restart resumes with it.
    drop(daemon);
    place.stop(listener);
    let listener = place.listen();
    let daemon = Conn::accept(&listener);
    let resume = daemon.hello.resume.clone().expect("a resume in the hello");
    assert_eq!(
        resume.initialize,
        serde_json::from_str::<Value>(INIT_PARAMS).unwrap()
    );
    assert!(!resume.initialized);
}

#[test]
fn requests_beyond_what_the_shim_holds_are_answered_at_once() {
    let place = Place::new();
    let (listener, mut daemon, mut client) = initialized_session(&place, &[]);
    let pre = r#"{"jsonrpc":"2.0","id":"pre","method":"ping"}"#;
    client.send(pre);
    assert_eq!(daemon.line(), pre);
    drop(daemon);
    place.stop(listener);
    // Its error shows that the shim noticed: what follows is held.
    assert_eq!(client.line(), lost_error("\"pre\""));
    client.send(r#"{"jsonrpc":"2.0","id":"first","method":"ping"}"#);
    let note = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#;
    let mut burst = String::new();
    for _ in 0..1023 {
        burst.push_str(note);
        burst.push('\n');
    }
    burst.push_str(r#"{"jsonrpc":"2.0","id":"over","method":"ping"}"#);
    client.send(&burst);
    let reply: Value = serde_json::from_str(&client.line()).unwrap();
    assert_eq!(reply["id"], "over");
    assert_eq!(reply["error"]["code"], -32010);

    let listener = place.listen();
    let mut daemon = Conn::accept(&listener);
    daemon.welcome(2);
    assert_eq!(
        daemon.line(),
        r#"{"jsonrpc":"2.0","id":"first","method":"ping"}"#
    );
    for _ in 0..1023 {
        assert_eq!(daemon.line(), note);
    }
    let after = r#"{"jsonrpc":"2.0","id":9,"method":"ping"}"#;
    client.send(after);
    assert_eq!(daemon.line(), after);
    daemon.send(r#"{"jsonrpc":"2.0","id":"first","result":{}}"#);
    assert_eq!(
        client.line(),
        r#"{"jsonrpc":"2.0","id":"first","result":{}}"#
    );
}

#[test]
fn stdin_closing_while_reconnecting_ends_the_shim_quietly() {
    let place = Place::new();
    let (listener, daemon, mut client) = initialized_session(&place, &[]);
    let connected = client.sockets();
    drop(daemon);
    place.stop(listener);
    client.wait_disconnected(connected);
    drop(client.stdin.take());
    assert_eq!(client.wait_exit(Duration::from_secs(2)).code(), Some(0));
    assert_eq!(client.stderr(), "");
}
