//! `mcp-shim` relaying over a pair of pipes (docs/SHIM.md "The relay's pipes"), against a fake
//! daemon that takes them: the client's lines come out of one pipe, the daemon's go into the
//! other, the socket carries nothing after the handover; the pipes closing is the daemon going
//! away, answered and resumed as over the socket; a daemon that does not take them (an older
//! one) gets the relay over the socket.

// Helpers outside `#[test]` functions panic on broken test setup, like the tests themselves.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Child;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{Place, shim, stderr_of, wait_exit};
use mcpd_proto::{AttachHello, Hello};

const WAIT: Duration = Duration::from_secs(5);
const WELCOME_PIPES: &str = r#"{"op":"welcome","v":1,"daemon":"0.1.0","session":1,"pipes":true}"#;
const WELCOME_OLD: &str = r#"{"op":"welcome","v":1,"daemon":"0.1.0","session":2}"#;

/// One session on the fake daemon: its socket and, once taken, the shim's pipes.
struct Session {
    socket: BufReader<UnixStream>,
    hello: AttachHello,
    /// Client lines come out of this one.
    input: Option<BufReader<File>>,
    /// Lines for the client go into this one.
    output: Option<File>,
}

impl Session {
    fn accept(listener: &UnixListener) -> Self {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut socket = BufReader::new(stream);
        let mut hello = String::new();
        socket.read_line(&mut hello).unwrap();
        let hello = match serde_json::from_str(&hello).unwrap() {
            Hello::Attach(a) => a,
            other => panic!("not an attach hello: {other:?}"),
        };
        Self {
            socket,
            hello,
            input: None,
            output: None,
        }
    }

    /// Welcomes the offer and takes the pipes (the handover byte with two descriptors).
    fn take_pipes(&mut self) {
        assert!(
            self.hello.pipes,
            "the hello offers no pipes: {:?}",
            self.hello
        );
        self.reply(WELCOME_PIPES);
        assert!(self.socket.buffer().is_empty());
        let mut byte = [0u8; 1];
        let got = mcpd_proto::direct::recv_with_fds(self.socket.get_ref().as_fd(), &mut byte, true)
            .unwrap();
        assert_eq!((got.len, byte[0], got.fds.len()), (1, b'D', 2));
        let mut fds = got.fds.into_iter();
        let (input, output) = (fds.next().unwrap(), fds.next().unwrap());
        mcpd_proto::direct::usable(input.as_fd(), false).unwrap();
        mcpd_proto::direct::usable(output.as_fd(), true).unwrap();
        self.input = Some(BufReader::new(File::from(input)));
        self.output = Some(File::from(output));
    }

    fn reply(&mut self, line: &str) {
        let stream = self.socket.get_mut();
        stream.write_all(line.as_bytes()).unwrap();
        stream.write_all(b"\n").unwrap();
    }

    /// The next client line, from the pipe if the daemon took them, else from the socket.
    fn line(&mut self) -> String {
        let mut line = String::new();
        match self.input.as_mut() {
            Some(pipe) => pipe.read_line(&mut line).unwrap(),
            None => self.socket.read_line(&mut line).unwrap(),
        };
        assert!(line.ends_with('\n'), "not a whole line: {line:?}");
        line.pop();
        line
    }

    /// A line for the client, into the pipe if the daemon took them, else into the socket.
    fn send(&mut self, line: &str) {
        let data = format!("{line}\n");
        match self.output.as_mut() {
            Some(pipe) => pipe.write_all(data.as_bytes()).unwrap(),
            None => self.socket.get_mut().write_all(data.as_bytes()).unwrap(),
        }
    }

    /// Nothing was sent on the socket after the handover (and it is still open).
    fn assert_socket_idle(&mut self) {
        assert!(self.socket.buffer().is_empty());
        let stream = self.socket.get_ref();
        stream.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        match (&*stream).read(&mut byte) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => panic!("the socket carried something after the handover: {other:?}"),
        }
        stream.set_nonblocking(false).unwrap();
    }
}

/// The client's side: the shim's stdin and its stdout, line by line.
struct Client {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Client {
    fn spawn(place: &Place, env: &[(&str, &str)]) -> Self {
        let mut child = if env.is_empty() {
            shim(&place.socket, &[])
        } else {
            let mut cmd = std::process::Command::new(common::SHIM);
            cmd.env("MCPD_NO_AUTOSTART", "1")
                .env_remove("MCP_SHIM_DIRECT")
                .envs(env.iter().copied())
                .arg("--socket")
                .arg(&place.socket)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().unwrap()
        };
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
        Self { child, lines }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
    }

    fn line(&mut self) -> String {
        self.lines
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("no line from the shim: {e}"))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The client closes its input, which reaches a session relayed over the socket as the
/// socket's end; the daemon closes it and the shim exits 0. What the shim said on stderr.
fn end_over_the_socket(mut client: Client, mut daemon: Session) -> String {
    drop(client.child.stdin.take());
    let mut rest = String::new();
    daemon.socket.read_to_string(&mut rest).unwrap();
    drop(daemon);
    assert_eq!(wait_exit(&mut client.child, WAIT).code(), Some(0));
    stderr_of(&mut client.child)
}

#[test]
fn a_daemon_that_takes_the_pipes_gets_the_clients_lines_on_them_and_the_socket_stays_idle() {
    let place = Place::new();
    let listener = place.listen();
    let mut client = Client::spawn(&place, &[]);
    let mut daemon = Session::accept(&listener);
    daemon.take_pipes();

    for line in common::exact_lines() {
        let line = line.as_str();
        client.send(line);
        assert_eq!(daemon.line(), line);
        daemon.send(line);
        assert_eq!(client.line(), line);
    }
    daemon.assert_socket_idle();

    // The client's end of input is the end of the pipe, not of the socket.
    drop(client.child.stdin.take());
    let mut rest = String::new();
    daemon
        .input
        .as_mut()
        .unwrap()
        .read_to_string(&mut rest)
        .unwrap();
    assert_eq!(rest, "");
    daemon.assert_socket_idle();
    // The daemon answers what it can, then closes its pipe: the shim is done.
    daemon.send(r#"{"jsonrpc":"2.0","id":9,"result":{}}"#);
    assert_eq!(client.line(), r#"{"jsonrpc":"2.0","id":9,"result":{}}"#);
    drop(daemon.output.take());
    let status = wait_exit(&mut client.child, WAIT);
    assert_eq!(status.code(), Some(0));
    assert_eq!(stderr_of(&mut client.child), "");
}

#[test]
fn pipes_that_close_are_a_daemon_gone_and_the_session_resumes_on_an_older_daemon_over_the_socket() {
    let place = Place::new();
    let listener = place.listen();
    let mut client = Client::spawn(&place, &[]);
    let mut daemon = Session::accept(&listener);
    daemon.take_pipes();
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}"#;
    client.send(init);
    assert_eq!(daemon.line(), init);
    daemon.send(r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-11-25"}}"#);
    client.line();
    let call =
        r#"{"jsonrpc":"2.0","id":"in-flight","method":"tools/call","params":{"name":"slow"}}"#;
    client.send(call);
    assert_eq!(daemon.line(), call);

    // The daemon dies: its pipes and its socket close with it, half an answer unsent.
    daemon
        .output
        .as_mut()
        .unwrap()
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":\"in-flight\",\"res")
        .unwrap();
    drop(daemon);
    drop(listener);
    assert_eq!(
        client.line(),
        r#"{"jsonrpc":"2.0","id":"in-flight","error":{"code":-32012,"message":"mcpd restarted while this request was in flight; try again"}}"#
    );

    // An older daemon comes back: the resume hello offers pipes again, and its plain welcome
    // gets the relay over the socket.
    let listener = place.listen();
    let mut daemon = Session::accept(&listener);
    assert!(daemon.hello.pipes);
    let resume = daemon.hello.resume.clone().expect("a resume hello");
    assert_eq!(resume.previous_session, Some(1));
    daemon.reply(WELCOME_OLD);
    let next = r#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#;
    client.send(next);
    assert_eq!(daemon.line(), next);
    daemon.send(r#"{"jsonrpc":"2.0","id":5,"result":{}}"#);
    assert_eq!(client.line(), r#"{"jsonrpc":"2.0","id":5,"result":{}}"#);
}

#[test]
fn mcp_shim_pipes_0_offers_no_pipes() {
    let place = Place::new();
    let listener = place.listen();
    let mut client = Client::spawn(&place, &[("MCP_SHIM_PIPES", "0")]);
    let mut daemon = Session::accept(&listener);
    assert!(!daemon.hello.pipes, "{:?}", daemon.hello);
    daemon.reply(WELCOME_OLD);
    client.send(r#"{"id":1}"#);
    assert_eq!(daemon.line(), r#"{"id":1}"#);
}

#[test]
fn without_pipes_the_shim_says_why_when_asked_to() {
    // A daemon that predates the pipes: with MCP_SHIM_DEBUG the shim says it relays over the
    // socket, and why; without it, nothing.
    for (debug, says) in [("1", true), ("0", false)] {
        let place = Place::new();
        let listener = place.listen();
        let mut client = Client::spawn(&place, &[("MCP_SHIM_DEBUG", debug)]);
        let mut daemon = Session::accept(&listener);
        daemon.reply(WELCOME_OLD);
        client.send(r#"{"id":1}"#);
        assert_eq!(daemon.line(), r#"{"id":1}"#);
        // The client's end of input reaches the daemon as the socket's end; then it closes.
        let err = end_over_the_socket(client, daemon);
        assert_eq!(
            err.contains("mcp-shim: debug: relaying over the socket: this mcpd does not take the relay's pipes"),
            says,
            "{err}"
        );
    }
}

#[test]
fn a_daemon_that_refuses_the_pipes_gets_the_relay_over_the_socket_from_the_next_attach_on() {
    let place = Place::new();
    let listener = place.listen();
    let mut client = Client::spawn(&place, &[("MCP_SHIM_DEBUG", "1")]);
    let mut daemon = Session::accept(&listener);
    daemon.take_pipes();
    // It refuses what it got (as mcpd does when a descriptor fails its checks): closes them,
    // says why on the socket and closes it.
    daemon.input = None;
    daemon.output = None;
    daemon.reply(r#"{"op":"end","ok":false,"reason":"mcpd refused the relay's pipes: stdin is a regular file"}"#);
    drop(daemon);

    let mut daemon = Session::accept(&listener);
    assert!(!daemon.hello.pipes, "{:?}", daemon.hello);
    daemon.reply(WELCOME_OLD);
    client.send(r#"{"id":1}"#);
    assert_eq!(daemon.line(), r#"{"id":1}"#);
    daemon.send(r#"{"id":1,"result":{}}"#);
    assert_eq!(client.line(), r#"{"id":1,"result":{}}"#);

    let err = end_over_the_socket(client, daemon);
    assert!(
        err.contains("mcp-shim: debug: relaying over the socket from now on: mcpd refused the relay's pipes: stdin is a regular file"),
        "{err}"
    );
}
