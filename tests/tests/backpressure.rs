//! Issue 10 §2, bounded by bytes: a client that asks for big answers and never reads them is no
//! longer read once its session holds its byte budget (`mcpd.sessionBufferBytes`), and is
//! closed with a logged reason when it still reads nothing (`mcpd.clientStallMs`). Other
//! sessions keep being served meanwhile.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;

use mcpd_proto::{PROTOCOL_VERSION, ServerState};
use mcpd_tests::{ShimClient, TIMEOUT, TestDaemon, fixture};
use serde_json::json;

const PAUSED: &str = "bytes wait for a client that does not read them";
const CLOSED: &str = "closed the session: its client read nothing";
const MIB: usize = 1024 * 1024;

fn daemon(stall_ms: u64) -> TestDaemon {
    let daemon = TestDaemon::start(json!({
        "mcpd": {"sessionBufferBytes": MIB, "clientStallMs": stall_ms},
        "mcpServers": {"fx": fixture::server(&["--blob"])},
    }));
    daemon.wait_server_state("fx", ServerState::Ready);
    daemon
}

/// A client attached straight to the socket that asks for 200 answers of 1 MiB and never reads
/// them. Its requests are written by a thread of their own, which blocks when mcpd stops
/// reading them (and ends when mcpd closes the connection).
fn non_reader(daemon: &TestDaemon) -> UnixStream {
    let stream = UnixStream::connect(daemon.socket()).expect("connect to the daemon");
    let mut writer = stream.try_clone().expect("a second handle");
    writeln!(
        writer,
        r#"{{"op":"attach","v":{PROTOCOL_VERSION},"profile":"default","client":{{}}}}"#
    )
    .expect("hello");
    let mut welcome = String::new();
    BufReader::new(stream.try_clone().expect("a reader"))
        .read_line(&mut welcome)
        .expect("welcome");
    assert!(welcome.contains("welcome"), "{welcome}");
    std::thread::spawn(move || {
        let _ = writeln!(
            writer,
            r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"2025-11-25","capabilities":{{}},"clientInfo":{{"name":"non-reader","version":"1"}}}}}}"#
        );
        for id in 1..=200 {
            let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                              "params": {"name": "fx__blob", "arguments": {"bytes": MIB}}});
            if writeln!(writer, "{call}").is_err() {
                return;
            }
        }
    });
    stream
}

#[test]
fn a_client_that_does_not_read_stops_being_read_while_other_sessions_keep_working() {
    // It is never closed during this test: what it shows holds while the client is stuck.
    let daemon = daemon(600_000);
    let _stuck = non_reader(&daemon);
    daemon.wait_log(PAUSED, TIMEOUT);

    let mut other = ShimClient::spawn(&daemon, None);
    other.initialize();
    for i in 0..10 {
        let message = format!("call {i}");
        let echo = other.call_tool("fx__echo", json!({"message": message}));
        assert_eq!(echo["content"][0]["text"], message);
        let blob = other.call_tool("fx__blob", json!({"bytes": MIB}));
        assert_eq!(blob["content"][0]["text"].as_str().map(str::len), Some(MIB));
    }
    let status = daemon.status();
    assert_eq!(status.sessions.len(), 2, "{status:?}");
    assert!(!daemon.log().contains(CLOSED), "{}", daemon.log());
}

#[test]
fn a_client_that_still_does_not_read_has_its_session_closed_with_the_reason_logged() {
    let daemon = daemon(1_000);
    let mut stuck = non_reader(&daemon);
    daemon.wait_log(PAUSED, TIMEOUT);
    daemon.wait_log(CLOSED, TIMEOUT);
    // The connection is closed: what the kernel still held is read, then the end.
    stuck
        .set_read_timeout(Some(TIMEOUT))
        .expect("a read timeout");
    // A peer that closes with our requests still unread in its receive queue ends the stream
    // with a reset instead of an end of file (Linux, Unix stream sockets): both mean closed.
    let mut rest = Vec::new();
    match stuck.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the daemon closes the connection: {e}"),
    }
    let status = daemon.wait_status(TIMEOUT, "the session to be gone", |s| s.sessions.is_empty());
    assert!(status.sessions.is_empty());
}
