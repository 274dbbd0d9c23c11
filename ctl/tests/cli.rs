//! `mcpctl`'s control commands against a scripted fake daemon on a temporary socket.

// Helpers here are test code too; a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::thread::{self, JoinHandle};

/// A one-connection daemon: answers the hello with `hello_reply`, then each request line with
/// the next of `replies`, then hangs up after the next request. Joining it returns the lines it
/// received.
struct FakeDaemon {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    handle: JoinHandle<Vec<String>>,
}

impl FakeDaemon {
    fn start(hello_reply: &str, replies: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("mcpctl-test-")
            .tempdir_in("/tmp")
            .unwrap();
        let socket = dir.path().join("mcpd.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let hello_reply = hello_reply.to_owned();
        let replies: Vec<String> = replies.iter().map(|r| (*r).to_owned()).collect();
        let handle = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            let mut received = Vec::new();
            for reply in std::iter::once(&hello_reply).chain(&replies) {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                received.push(line.trim_end().to_owned());
                writer.write_all(reply.as_bytes()).unwrap();
                writer.write_all(b"\n").unwrap();
            }
            // Wait for one more request (or the client's exit) so that hanging up is
            // deterministic: the client sees end of input, never a failed write.
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() > 0 {
                received.push(line.trim_end().to_owned());
            }
            received
        });
        Self {
            _dir: dir,
            socket,
            handle,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        mcpctl(&[&["--socket", self.socket.to_str().unwrap()], args].concat())
    }

    fn received(self) -> Vec<String> {
        self.handle.join().unwrap()
    }
}

const WELCOME: &str = r#"{"op":"welcome","v":1,"daemon":"0.1.0"}"#;

fn mcpctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mcpctl"))
        .args(args)
        .env_remove("MCPD_SOCKET")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

const STATUS: &str = r#"{"reply":"status","version":"0.1.0","protocol":1,"pid":1234,"uptime_ms":192000,"config_path":"/home/u/.config/mcpd/config.json","config_loaded":true,"servers":[{"name":"everything","transport":"stdio","state":"ready","pid":5678,"tools":11,"restarts":0,"server_info":"mcp-servers/everything 2.0.0"}],"sessions":[],"from_the_future":{"x":1}}"#;

#[test]
fn without_a_daemon_the_error_names_the_socket_and_how_to_start_mcpd() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("absent.sock");
    let out = mcpctl(&["--socket", socket.to_str().unwrap(), "status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("mcpctl: mcpd is not running"), "{err}");
    assert!(err.contains(socket.to_str().unwrap()), "{err}");
    assert!(err.contains("`mcpd`"), "{err}");
    assert!(err.contains("systemctl --user start mcpd.socket"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn status_sends_a_control_hello_and_prints_the_table() {
    let daemon = FakeDaemon::start(WELCOME, &[STATUS]);
    let out = daemon.run(&["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "\
mcpd 0.1.0 (pid 1234), up 3m 12s, protocol 1
config: /home/u/.config/mcpd/config.json
SERVER      STATE  PID   TOOLS  RESTARTS  INFO
everything  ready  5678  11     0         mcp-servers/everything 2.0.0
no sessions
"
    );
    assert_eq!(
        daemon.received(),
        [r#"{"op":"control","v":1}"#, r#"{"cmd":"status"}"#]
    );
}

#[test]
fn status_json_prints_the_daemons_fields_including_unknown_ones() {
    let daemon = FakeDaemon::start(WELCOME, &[STATUS]);
    let out = daemon.run(&["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let value: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(value["pid"], 1234);
    assert_eq!(value["servers"][0]["name"], "everything");
    assert_eq!(value["from_the_future"]["x"], 1);
    assert!(value.get("reply").is_none(), "{value}");
}

#[test]
fn a_refused_hello_is_reported_with_the_daemons_message() {
    let daemon = FakeDaemon::start(
        r#"{"op":"error","v":2,"message":"protocol 1 is too old, this mcpd speaks 2"}"#,
        &[],
    );
    let out = daemon.run(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("refused the control connection"), "{err}");
    assert!(
        err.contains("protocol 1 is too old, this mcpd speaks 2"),
        "{err}"
    );
}

#[test]
fn reload_prints_what_changed() {
    let daemon = FakeDaemon::start(
        WELCOME,
        &[
            r#"{"reply":"reloaded","config_path":"/c.json","added":["new"],"changed":["x"],"unchanged":["a","b"],"warnings":["unknown key `colour`"]}"#,
        ],
    );
    let out = daemon.run(&["reload"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "\
reloaded /c.json
added:     new
removed:   -
changed:   x
unchanged: a, b
warning: unknown key `colour`
"
    );
    assert_eq!(daemon.received()[1], r#"{"cmd":"reload"}"#);
}

#[test]
fn a_failed_reload_says_the_running_configuration_is_kept_and_exits_1() {
    let daemon = FakeDaemon::start(
        WELCOME,
        &[r#"{"reply":"error","message":"mcpServers.x.args[2]: expected a string"}"#],
    );
    let out = daemon.run(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "mcpctl: reload failed, the running configuration is kept: \
         mcpServers.x.args[2]: expected a string\n"
    );
}

#[test]
fn shutdown_sends_shutdown_and_accepts_ok() {
    let daemon = FakeDaemon::start(WELCOME, &[r#"{"reply":"ok"}"#]);
    let out = daemon.run(&["shutdown"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(daemon.received()[1], r#"{"cmd":"shutdown"}"#);
}

#[test]
fn a_reply_from_a_newer_daemon_is_an_error_not_a_crash() {
    let daemon = FakeDaemon::start(WELCOME, &[r#"{"reply":"hologram"}"#]);
    let out = daemon.run(&["shutdown"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("does not understand"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_daemon_that_hangs_up_is_reported() {
    let daemon = FakeDaemon::start(WELCOME, &[]);
    let out = daemon.run(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("closed the connection without answering"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn help_lists_the_commands_but_not_the_example_server() {
    let out = mcpctl(&["--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    for cmd in ["status", "reload", "shutdown", "demo", "--socket"] {
        assert!(help.contains(cmd), "{cmd} missing from:\n{help}");
    }
    assert!(!help.contains("example-server"), "{help}");
}

#[test]
fn version_prints_the_package_version() {
    let out = mcpctl(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        stdout(&out),
        format!("mcpctl {}\n", env!("CARGO_PKG_VERSION"))
    );
}
