//! `mcpctl logs` against a scripted daemon: the request it sends, batches, and old daemons.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::process::{Command, Output};
use std::thread;

/// Serves one connection: welcome, then `replies` after the first request; returns what the
/// client sent.
fn with_daemon(replies: &'static [&'static str], args: &[&str]) -> (Output, Vec<String>) {
    let dir = tempfile::Builder::new()
        .prefix("mcpctl-logs-")
        .tempdir_in("/tmp")
        .unwrap();
    let socket = dir.path().join("s.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        let mut received = Vec::new();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        received.push(line.trim_end().to_owned());
        writer
            .write_all(b"{\"op\":\"welcome\",\"v\":1,\"daemon\":\"0.1.0\"}\n")
            .unwrap();
        line.clear();
        reader.read_line(&mut line).unwrap();
        received.push(line.trim_end().to_owned());
        for reply in replies {
            writer.write_all(reply.as_bytes()).unwrap();
            writer.write_all(b"\n").unwrap();
        }
        received
    });
    let out = Command::new(env!("CARGO_BIN_EXE_mcpctl"))
        .arg("--socket")
        .arg(&socket)
        .args(args)
        .output()
        .unwrap();
    (out, server.join().unwrap())
}

#[test]
fn logs_prints_every_batch_of_the_snapshot() {
    let (out, received) = with_daemon(
        &[
            r#"{"reply":"logs","lines":[{"seq":1,"time_ms":0,"level":"INFO","target":"mcpd","message":"mcpd ready"}],"more":true}"#,
            r#"{"reply":"logs","lines":[{"seq":2,"time_ms":1000,"level":"WARN","target":"mcpd::upstream","server":"gh","session":3,"message":"rate limited","future":1}],"more":false}"#,
        ],
        &["logs", "-n", "50", "gh"],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        received[1],
        r#"{"cmd":"logs","server":"gh","follow":false,"limit":50}"#
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout,
        "1970-01-01T00:00:00.000Z INFO  mcpd ready\n\
         1970-01-01T00:00:01.000Z WARN  [gh] (session 3) rate limited\n"
    );
}

#[test]
fn an_older_daemon_without_logs_gets_a_clear_message() {
    // Decided by the error's code, whatever the daemon's wording.
    let (out, _) = with_daemon(
        &[r#"{"reply":"error","message":"unheard of","code":"unknown-command"}"#],
        &["logs"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("does not serve logs yet (unheard of)") && stderr.contains("journalctl"),
        "{stderr}"
    );
    // A daemon older than the codes: its own words are shown.
    let (out, _) = with_daemon(
        &[
            r#"{"reply":"error","message":"this mcpd (version 0.1.0, protocol 1) does not know that command; is mcpctl newer than the daemon?"}"#,
        ],
        &["logs"],
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("does not know that command"), "{stderr}");
}
