//! `mcp-shim --direct` (issue 18, docs/SHIM.md "Direct mode"): the shim hands the client's
//! stdin and stdout to `mcpd` and leaves the data path; the session is otherwise the same, and
//! ends with the daemon.

use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Instant;

use mcpd_proto::ServerState;
use mcpd_tests::fixture::{self, BIG_STRUCTURED};
use mcpd_tests::process::{Captured, line_channel, run_with_timeout, wait_timeout};
use mcpd_tests::{
    PEER_TIMEOUT, Sdk, SdkClient, ShimClient, TIMEOUT, TestDaemon, bin, process_alive, wait_until,
};
use serde_json::{Value, json};

/// A daemon serving the fixture as `fx` (with `flags`), ready.
fn daemon_with_fixture(flags: &[&str]) -> TestDaemon {
    let daemon = TestDaemon::start(fixture::config(&[("fx", flags)]));
    daemon.wait_server_state("fx", ServerState::Ready);
    daemon
}

/// `mcp-shim --direct` for `daemon`, past the MCP handshake.
fn direct_client(daemon: &TestDaemon) -> ShimClient {
    let mut cmd = ShimClient::command(daemon);
    cmd.arg("--direct");
    let mut shim = ShimClient::from_command(cmd);
    shim.initialize();
    shim
}

fn text_of(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap_or_default()
}

/// Where descriptor `fd` of process `pid` leads (`/dev/null`, `pipe:[123]`).
fn fd_target(pid: u32, fd: u32) -> String {
    fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Every descriptor target of process `pid`.
fn fd_targets(pid: u32) -> Vec<String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| fs::read_link(e.path()).ok())
                .map(|p| p.display().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The daemon holds the client's pipes and the shim holds only `/dev/null` where its stdio
/// was: the shim is out of the data path.
fn assert_handed_over(daemon: &TestDaemon, shim: &ShimClient, client_stdin: &str) {
    // The shim lets go of them right after sending them: the daemon may be faster.
    let null = |fd| fd_target(shim.pid(), fd) == "/dev/null";
    assert!(
        wait_until(TIMEOUT, || null(0) && null(1)),
        "the shim kept its stdio: {:?}",
        fd_targets(shim.pid())
    );
    assert!(
        fd_targets(daemon.pid()).iter().any(|t| t == client_stdin),
        "the daemon does not hold the client's stdin {client_stdin}: {:?}",
        fd_targets(daemon.pid())
    );
}

#[test]
fn direct_mode_carries_messages_byte_for_byte_and_the_shim_leaves_the_data_path() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let record = dir.path().join("received");
    let daemon = daemon_with_fixture(&["--blob", "--record", record.to_str().expect("UTF-8")]);
    let mut cmd = ShimClient::command(&daemon);
    cmd.arg("--direct");
    let mut shim = ShimClient::from_command(cmd);
    // The pipe behind the shim's stdin, before it hands it over.
    let stdin_pipe = shim.stdin_pipe();
    assert!(stdin_pipe.starts_with("pipe:"), "{stdin_pipe}");
    shim.initialize();
    daemon.wait_log("direct: serving the client's own stdio", TIMEOUT);
    assert_handed_over(&daemon, &shim, &stdin_pipe);

    let line = shim.request_line(
        "tools/call",
        Some(json!({"name": "fx__big", "arguments": {}})),
    );
    assert!(
        line.contains(&format!(r#""structuredContent":{BIG_STRUCTURED}"#)),
        "the result was re-encoded: {line}"
    );

    // A 30-digit id and 1.50 arrive and come back as written.
    let id = "123456789012345678901234567890";
    shim.send_raw(&format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"fx__echo","arguments":{{"message":"n","price":1.50,"big":{id}}}}}}}"#
    ));
    let answer = loop {
        let line = shim
            .recv_line_timeout(TIMEOUT)
            .expect("an answer to the 30-digit id");
        if line.contains(r#""result""#) {
            break line;
        }
    };
    assert!(
        answer.contains(&format!(r#""id":{id}"#)),
        "the id was re-encoded: {answer}"
    );
    let received = fs::read_to_string(&record).expect("the fixture's record");
    assert!(
        received.contains(&format!(
            r#""arguments":{{"message":"n","price":1.50,"big":{id}}}"#
        )),
        "the request was re-encoded on its way upstream:\n{received}"
    );

    // A 300 KB line each way.
    let big = "x".repeat(300_000);
    let echoed = shim.call_tool("fx__echo", json!({"message": big}));
    assert_eq!(text_of(&echoed).len(), 300_000);
    let blob = shim.call_tool("fx__blob", json!({"bytes": 300_000}));
    assert_eq!(text_of(&blob), big);

    // Closing stdin ends the session: the shim exits 0 and is gone, the daemon forgets it.
    let pid = shim.pid();
    let status = shim.close();
    assert!(status.success(), "the shim exited with {status}");
    assert!(!process_alive(pid), "the shim is still there");
    assert!(
        wait_until(TIMEOUT, || daemon.status().sessions.is_empty()),
        "the daemon kept the session: {:?}",
        daemon.status().sessions
    );
}

#[test]
fn mcp_shim_direct_in_the_environment_turns_direct_mode_on() {
    let daemon = daemon_with_fixture(&[]);
    let mut cmd = ShimClient::command(&daemon);
    cmd.env("MCP_SHIM_DIRECT", "1");
    let mut shim = ShimClient::from_command(cmd);
    let stdin_pipe = shim.stdin_pipe();
    shim.initialize();
    daemon.wait_log("direct: serving the client's own stdio", TIMEOUT);
    assert_handed_over(&daemon, &shim, &stdin_pipe);
    assert_eq!(
        text_of(&shim.call_tool("fx__echo", json!({"message": "env"}))),
        "env"
    );

    // `0` leaves it off: the shim relays.
    let mut cmd = ShimClient::command(&daemon);
    cmd.env("MCP_SHIM_DIRECT", "0");
    let mut relayed = ShimClient::from_command(cmd);
    relayed.initialize();
    assert!(fd_target(relayed.pid(), 0).starts_with("pipe:"));
    assert!(shim.close().success());
    assert!(relayed.close().success());
}

#[test]
fn mcpctl_status_says_which_sessions_are_direct() {
    let daemon = daemon_with_fixture(&[]);
    let mut relayed = ShimClient::spawn(&daemon, None);
    relayed.initialize();
    let direct = direct_client(&daemon);
    daemon.wait_log("direct: serving the client's own stdio", TIMEOUT);

    let out = daemon.mcpctl(&["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    assert_eq!(
        status["sessions"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );
    assert!(
        status["sessions"].as_array().is_some_and(|s| {
            s.iter().filter(|s| s["direct"] == json!(true)).count() == 1
                && s.iter().filter(|s| s["direct"] == json!(false)).count() == 1
        }),
        "one direct and one relayed session: {status}"
    );

    let out = daemon.mcpctl(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("IN-FLIGHT  MODE\n"), "{text}");
    let rows: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("ID "))
        .skip(1)
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(rows.iter().any(|r| r.ends_with(" direct")), "{text}");
    assert!(rows.iter().any(|r| r.ends_with(" relay")), "{text}");
    assert!(relayed.close().success());
    assert!(direct.close().success());
}

#[test]
fn a_killed_daemon_ends_a_direct_session_and_the_shim_exits_1_saying_why() {
    let mut daemon = daemon_with_fixture(&[]);
    let mut shim = direct_client(&daemon);
    assert_eq!(
        text_of(&shim.call_tool("fx__echo", json!({"message": "before"}))),
        "before"
    );
    // A request in flight at the crash gets no answer: the daemon held it.
    shim.send_request(
        "tools/call",
        Some(json!({"name": "fx__sleep", "arguments": {"ms": 60_000}})),
    );
    daemon.kill();

    let status = shim
        .wait_exit(TIMEOUT)
        .unwrap_or_else(|| panic!("the shim outlived the daemon: {}", shim.stderr()));
    assert_eq!(status.code(), Some(1), "{}", shim.stderr());
    let stderr = shim.stderr();
    assert!(
        stderr.contains("mcp-shim: lost the connection to mcpd")
            && stderr.contains("cannot be resumed"),
        "{stderr}"
    );
    // The client's stdout ends with the daemon: no answer, no half line.
    loop {
        match shim.recv_line_timeout(TIMEOUT) {
            Ok(line) => assert!(
                !line.contains(r#""result""#),
                "an answer came after the crash: {line}"
            ),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => panic!("the client's stdout stayed open"),
        }
    }
}

/// `mcp-shim --direct` for `daemon`, past the MCP handshake, and the client's stdin pipe.
fn direct_client_and_pipe(daemon: &TestDaemon) -> (ShimClient, String) {
    let mut cmd = ShimClient::command(daemon);
    cmd.arg("--direct");
    let mut shim = ShimClient::from_command(cmd);
    let stdin_pipe = shim.stdin_pipe();
    shim.initialize();
    assert_handed_over(daemon, &shim, &stdin_pipe);
    (shim, stdin_pipe)
}

/// Whether descriptor `fd` of process `pid` is `O_NONBLOCK` (from `/proc/PID/fdinfo`).
fn nonblocking(pid: u32, fd: u32) -> Option<bool> {
    let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?;
    let flags = i64::from_str_radix(flags.trim(), 8).ok()?;
    Some(flags & i64::from(libc::O_NONBLOCK) != 0)
}

/// After a planned stop the shim holds the client's pipes again.
fn assert_handed_back(shim: &ShimClient, client_stdin: &str) {
    assert!(
        wait_until(TIMEOUT, || fd_target(shim.pid(), 0) == client_stdin),
        "the shim did not get the client's stdin {client_stdin} back: {:?}",
        fd_targets(shim.pid())
    );
}

#[test]
fn a_direct_session_goes_on_across_a_sigterm_and_a_new_daemon_and_is_direct_again() {
    let mut daemon = daemon_with_fixture(&[]);
    let (mut shim, stdin_pipe) = direct_client_and_pipe(&daemon);
    let echo = |shim: &mut ShimClient, m: &str| {
        text_of(&shim.call_tool("fx__echo", json!({"message": m}))).to_owned()
    };
    assert_eq!(echo(&mut shim, "before"), "before");

    let stopping = Instant::now();
    daemon.terminate();
    assert_handed_back(&shim, &stdin_pipe);
    println!(
        "direct hand-back: the shim held the client's pipes again {:.1} ms after SIGTERM",
        stopping.elapsed().as_secs_f64() * 1000.0
    );
    daemon.wait_log(
        "direct: handed the client's stdio back to its shim",
        TIMEOUT,
    );
    // The daemon made the client's pipes non-blocking; they come back as the client gave them.
    assert_eq!(
        (nonblocking(shim.pid(), 0), nonblocking(shim.pid(), 1)),
        (Some(false), Some(false))
    );
    let starting = Instant::now();
    daemon.start_again();
    // The same client, without a new initialize: the shim resumed, and handed over again.
    assert_eq!(echo(&mut shim, "after"), "after");
    println!(
        "direct hand-back: the next call was answered {:.1} ms after the new mcpd started",
        starting.elapsed().as_secs_f64() * 1000.0
    );
    assert_handed_over(&daemon, &shim, &stdin_pipe);
    let sessions = daemon.status().sessions;
    assert!(sessions.len() == 1 && sessions[0].direct, "{sessions:?}");
    // Twice.
    daemon.terminate();
    daemon.start_again();
    assert_eq!(echo(&mut shim, "again"), "again");
    assert_eq!(
        shim.stderr(),
        "",
        "the client noticed nothing, nor did the shim say anything"
    );
    assert!(shim.close().success());
}

#[test]
fn a_call_in_flight_when_the_daemon_stops_gets_an_error_answer_and_the_next_call_succeeds() {
    let mut daemon = daemon_with_fixture(&[]);
    let (mut shim, _) = direct_client_and_pipe(&daemon);
    let id = fixture::sleep_held_in_flight(&daemon, &mut shim);
    daemon.terminate();
    // Never silence: the daemon's own error while it stopped, or -32012 from the shim.
    let answer: Value =
        serde_json::from_str(&shim.response_line(&json!(id))).expect("a JSON answer");
    assert!(answer["error"]["code"].is_i64(), "{answer}");
    println!("in flight at the stop: {answer}");
    daemon.start_again();
    assert_eq!(
        text_of(&shim.call_tool("fx__echo", json!({"message": "next"}))),
        "next"
    );
    assert!(shim.close().success());
}

#[test]
fn a_call_still_running_after_the_stop_grace_is_answered_32012_by_the_shim() {
    // A server that outlives its stop sequence's first steps (5 s until SIGKILL), so the call
    // is still running when the session goes back to the shim, 2 s into the stop.
    let mut daemon = daemon_with_fixture(&["--linger", "--ignore-sigterm"]);
    let (mut shim, _) = direct_client_and_pipe(&daemon);
    let id = fixture::sleep_held_in_flight(&daemon, &mut shim);
    daemon.terminate();
    let answer = shim.response_line(&json!(id));
    assert!(
        answer.contains(r#""code":-32012"#)
            && answer.contains("mcpd restarted while this request was in flight"),
        "{answer}"
    );
    daemon.start_again();
    assert_eq!(
        text_of(&shim.call_tool("fx__echo", json!({"message": "next"}))),
        "next"
    );
    assert!(shim.close().success());
}

#[test]
fn the_part_of_a_line_the_daemon_had_read_when_it_stopped_is_not_lost() {
    let mut daemon = daemon_with_fixture(&[]);
    let (mut shim, stdin_pipe) = direct_client_and_pipe(&daemon);
    let line = r#"{"jsonrpc":"2.0","id":77,"method":"tools/call","params":{"name":"fx__echo","arguments":{"message":"split 1.50"}}}"#;
    let (first, rest) = line.split_at(40);
    shim.send_bytes(first);
    // The daemon has read it (the pipe is empty) but cannot handle half a line.
    assert!(
        wait_until(TIMEOUT, || shim.unread_input() == 0),
        "the daemon did not read the client's bytes"
    );
    daemon.terminate();
    assert_handed_back(&shim, &stdin_pipe);
    daemon.start_again();
    shim.send_raw(rest);
    let answer = shim.response_line(&json!(77));
    assert!(answer.contains("split 1.50"), "{answer}");
    assert!(shim.close().success());
}

#[test]
fn an_answer_the_client_had_only_begun_to_read_is_finished_by_the_shim_after_the_hand_back() {
    use std::io::{BufRead, BufReader};

    let mut daemon = daemon_with_fixture(&["--blob"]);
    let mut child = daemon
        .command("mcp-shim")
        .arg("--direct")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mcp-shim");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = Captured::start(child.stderr.take().expect("piped stderr"));
    let mut out = BufReader::new(stdout);
    writeln!(stdin, "{INITIALIZE}").expect("initialize");
    let mut line = String::new();
    out.read_line(&mut line).expect("the initialize answer");
    assert!(line.contains("serverInfo"), "{line}");
    daemon.wait_log("direct: serving the client's own stdio", TIMEOUT);

    // A 1 MiB answer, and a client that reads none of it: the daemon fills the pipe and waits.
    let size = 1024 * 1024;
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"fx__blob","arguments":{{"bytes":{size}}}}}}}"#
    )
    .expect("the call");
    let fd = out.get_ref().as_raw_fd();
    // SAFETY: F_GETPIPE_SZ and FIONREAD on our own pipe's descriptor; FIONREAD writes one int.
    let capacity = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
    let unread = || {
        let mut n: libc::c_int = 0;
        // SAFETY: as above.
        unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
        n
    };
    assert!(
        wait_until(TIMEOUT, || unread() >= capacity),
        "the daemon did not fill the client's stdout ({} of {capacity} bytes)",
        unread()
    );

    daemon.terminate();
    // The rest of the answer went back with the descriptors: the client reads it whole.
    let reader = std::thread::spawn(move || {
        let mut line = String::new();
        out.read_line(&mut line).map(|_| (line, out))
    });
    assert!(
        wait_until(TIMEOUT, || reader.is_finished()),
        "the answer never ended: {}",
        stderr.text()
    );
    let (mut line, mut out) = reader
        .join()
        .expect("the reader")
        .expect("the whole answer");
    let answer: Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("a broken answer ({e}): {} bytes", line.len()));
    assert_eq!(answer["id"], 2);
    assert_eq!(text_of(&answer["result"]).len(), size);

    daemon.start_again();
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"fx__echo","arguments":{{"message":"after"}}}}}}"#
    )
    .expect("the next call");
    line.clear();
    out.read_line(&mut line).expect("its answer");
    assert!(
        line.contains(r#""id":3"#) && line.contains("after"),
        "{line}"
    );
    drop(stdin);
    let status = wait_timeout(&mut child, TIMEOUT).expect("the shim exits");
    assert!(status.success(), "{status} {}", stderr.text());
}

#[test]
fn without_reconnecting_a_handed_back_shim_exits_1_after_answering_what_was_in_flight() {
    let mut daemon = daemon_with_fixture(&[]);
    let mut cmd = ShimClient::command(&daemon);
    cmd.args(["--direct", "--reconnect-timeout", "0"]);
    let mut shim = ShimClient::from_command(cmd);
    shim.initialize();
    let id = fixture::sleep_held_in_flight(&daemon, &mut shim);
    daemon.terminate();
    let answer = shim.response_line(&json!(id));
    assert!(answer.contains(r#""error""#), "{answer}");
    let status = shim
        .wait_exit(TIMEOUT)
        .unwrap_or_else(|| panic!("the shim outlived the daemon: {}", shim.stderr()));
    assert_eq!(status.code(), Some(1), "{}", shim.stderr());
    assert!(
        shim.stderr()
            .contains("mcp-shim: the daemon closed the session (is mcpd stopping or restarting?)"),
        "{}",
        shim.stderr()
    );
}

#[test]
fn a_shim_that_does_not_take_the_descriptors_back_gets_the_old_end_line() {
    use std::io::{BufRead, BufReader, Read};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    let mut daemon = daemon_with_fixture(&[]);
    // An older mcp-shim: a direct hello without "handback".
    let shim = UnixStream::connect(daemon.socket()).expect("connect");
    shim.set_read_timeout(Some(TIMEOUT)).expect("a timeout");
    (&shim)
        .write_all(b"{\"op\":\"attach\",\"v\":1,\"direct\":true}\n")
        .expect("hello");
    let mut from_daemon = BufReader::new(&shim);
    let mut welcome = String::new();
    from_daemon.read_line(&mut welcome).expect("welcome");
    assert!(welcome.contains(r#""direct":true"#), "{welcome}");
    let (mut client, theirs) = UnixStream::pair().expect("a socket pair");
    mcpd_proto::direct::send_stdio(&shim, theirs.as_fd(), theirs.as_fd()).expect("handover");
    drop(theirs);
    client.set_read_timeout(Some(TIMEOUT)).expect("a timeout");
    writeln!(client, "{INITIALIZE}").expect("initialize");
    let mut answer = String::new();
    BufReader::new(&client)
        .read_line(&mut answer)
        .expect("an answer");
    assert!(answer.contains("serverInfo"), "{answer}");

    daemon.terminate();
    let mut end = String::new();
    from_daemon.read_line(&mut end).expect("the end line");
    assert!(
        end.contains(r#""op":"end""#)
            && end.contains("mcpd is shutting down; a direct session does not survive that"),
        "{end}"
    );
    let mut rest = Vec::new();
    assert_eq!(
        client.read_to_end(&mut rest).expect("the end"),
        0,
        "{rest:?}"
    );
}

#[test]
fn stopping_a_direct_shim_ends_its_session() {
    let daemon = daemon_with_fixture(&[]);
    let mut shim = direct_client(&daemon);
    assert_eq!(daemon.status().sessions.len(), 1);
    mcpd_tests::process::signal(shim.pid(), libc::SIGTERM);
    let status = shim.wait_exit(TIMEOUT).expect("the shim exits on SIGTERM");
    assert!(status.success(), "{status}");
    assert!(
        wait_until(TIMEOUT, || daemon.status().sessions.is_empty()),
        "the daemon kept the session of a stopped shim"
    );
    // The daemon closed the client's stdout too.
    assert!(matches!(
        shim.recv_line_timeout(TIMEOUT),
        Err(RecvTimeoutError::Disconnected)
    ));
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

#[test]
fn a_regular_file_as_stdin_falls_back_to_the_relay_and_says_so() {
    let daemon = daemon_with_fixture(&[]);
    let dir = tempfile::tempdir().expect("a temp dir");
    let input = dir.path().join("input");
    fs::write(&input, format!("{INITIALIZE}\n")).expect("write the input");
    let mut child = daemon
        .command("mcp-shim")
        .arg("--direct")
        .stdin(fs::File::open(&input).expect("open the input"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mcp-shim");
    let stdout = Captured::start(child.stdout.take().expect("piped stdout"));
    let stderr = Captured::start(child.stderr.take().expect("piped stderr"));
    let status = wait_timeout(&mut child, TIMEOUT);
    assert!(stderr.wait_closed(TIMEOUT) && stdout.wait_closed(TIMEOUT));
    let (stdout, stderr) = (stdout.text(), stderr.text());
    assert!(status.is_some_and(|s| s.success()), "{status:?} {stderr}");
    assert_eq!(
        stderr, "mcp-shim: --direct: stdin is a regular file; relaying instead\n",
        "one line, once"
    );
    assert!(
        stdout.contains(r#""serverInfo""#),
        "the relay did not answer: {stdout}"
    );
}

#[test]
fn dev_null_as_stdin_falls_back_to_the_relay_and_says_so() {
    let daemon = daemon_with_fixture(&[]);
    // `run_with_timeout` gives it /dev/null as stdin.
    let out = run_with_timeout(daemon.command("mcp-shim").arg("--direct"), TIMEOUT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr,
        "mcp-shim: --direct: stdin is a device; relaying instead\n"
    );
}

/// A pseudo-terminal: (the controlling side, the terminal a program reads).
fn pty() -> (fs::File, fs::File) {
    use std::os::unix::fs::OpenOptionsExt;
    // SAFETY: posix_openpt/grantpt/unlockpt/ptsname_r on the descriptor just opened, owned
    // once; the name buffer is writable, its length passed, and ptsname_r NUL-terminates it.
    let (master, name) = unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(master >= 0, "no pseudo-terminal");
        // Not inherited by the shim: only this test holds the controlling side.
        assert_eq!(libc::fcntl(master, libc::F_SETFD, libc::FD_CLOEXEC), 0);
        let master = fs::File::from(OwnedFd::from_raw_fd(master));
        assert_eq!(libc::grantpt(master.as_raw_fd()), 0);
        assert_eq!(libc::unlockpt(master.as_raw_fd()), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(
            libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()),
            0
        );
        let name = std::ffi::CStr::from_ptr(name.as_ptr())
            .to_string_lossy()
            .into_owned();
        (master, name)
    };
    let terminal = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&name)
        .expect("open the terminal");
    (master, terminal)
}

#[test]
fn a_terminal_as_stdin_falls_back_to_the_relay_and_says_so() {
    let daemon = daemon_with_fixture(&[]);
    let (mut master, terminal) = pty();
    let mut cmd = daemon.command("mcp-shim");
    let mut child = cmd
        .arg("--direct")
        .stdin(terminal)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mcp-shim");
    let lines = line_channel(child.stdout.take().expect("piped stdout"));
    let errors = line_channel(child.stderr.take().expect("piped stderr"));
    assert_eq!(
        errors.recv_timeout(TIMEOUT).ok().as_deref(),
        Some("mcp-shim: --direct: stdin is a terminal; relaying instead")
    );
    master
        .write_all(format!("{INITIALIZE}\n").as_bytes())
        .expect("type into the terminal");
    let answer = lines
        .recv_timeout(TIMEOUT)
        .expect("an answer through the relay");
    assert!(answer.contains(r#""serverInfo""#), "{answer}");
    // The terminal going away is the end of input.
    drop(master);
    let status = wait_timeout(&mut child, TIMEOUT);
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    // Nothing else was said.
    assert!(matches!(
        errors.recv_timeout(TIMEOUT),
        Err(RecvTimeoutError::Disconnected)
    ));
}

#[test]
fn another_user_cannot_hand_its_descriptors_to_the_daemon() {
    let daemon = daemon_with_fixture(&[]);
    daemon.open_socket_to_other_users();

    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin("mcpd-socket-peer"))
        .arg("direct")
        .arg(daemon.socket())
        .env_clear();
    let out = run_with_timeout(&mut cmd, TIMEOUT);
    let said = String::from_utf8_lossy(&out.stdout);
    let reply = said.lines().next().unwrap_or_default();
    assert!(
        reply.contains(r#""op":"error""#) && reply.contains("uid"),
        "the daemon did not refuse another uid: {said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.lines().any(|l| l == "answered 0"),
        "the daemon served the intruder's pipes: {said}"
    );
    daemon.wait_log("refused a connection from another user", TIMEOUT);
    assert!(
        !daemon.log().contains("direct: serving"),
        "a direct session started for another user"
    );
    assert!(daemon.status().sessions.is_empty());
}

/// An SDK client lists and calls tools through `mcp-shim --direct`.
fn sdk_lists_and_calls_tools_through_a_direct_shim(sdk: Sdk) {
    let daemon = daemon_with_fixture(&[]);
    let steps = json!([
        {"op": "list_tools"},
        {"op": "call_tool", "name": "fx__echo", "arguments": {"message": "direct 1.50"}},
    ]);
    let client = SdkClient::spawn_with(sdk, &daemon, &steps, &["--shim-arg=--direct"]);
    let lines = client.finish(PEER_TIMEOUT);
    let tools = &lines[1]["tools"];
    assert!(
        tools
            .as_array()
            .is_some_and(|t| t.iter().any(|n| n == "fx__echo")),
        "{lines:?}"
    );
    assert_eq!(lines[2]["content"][0]["text"], "direct 1.50", "{lines:?}");
    daemon.wait_log("direct: serving the client's own stdio", TIMEOUT);
    assert!(
        wait_until(TIMEOUT, || daemon.status().sessions.is_empty()),
        "the session outlived the client"
    );
}

/// An SDK client in direct mode keeps its session across `stop` and a new daemon: calls before
/// and after succeed on the same session (one `initialize`), its stdout never closes, and the
/// session is direct again on the new daemon.
fn sdk_keeps_a_direct_session_across_a_daemon_stop(sdk: Sdk, stop: fn(&mut TestDaemon)) {
    let mut daemon = daemon_with_fixture(&[]);
    let steps = json!([
        {"op": "call_tool", "name": "fx__echo", "arguments": {"message": "before"}},
        {"op": "wait_stdin"},
        {"op": "call_tool", "name": "fx__echo", "arguments": {"message": "after"}},
        {"op": "wait_stdin"},
        {"op": "list_tools"},
    ]);
    // `--no-autostart`: the test starts the next daemon itself, and one the shim
    // revived while this one still stopped (over the shim's 300 ms on a loaded machine) would
    // have the SDK's stripped environment, another configuration, and take the session.
    let shim_args = ["--shim-arg=--direct", "--shim-arg=--no-autostart"];
    let mut client = SdkClient::spawn_with(sdk, &daemon, &steps, &shim_args);
    let before = client.wait_for_op("call_tool", PEER_TIMEOUT);
    assert_eq!(before["content"][0]["text"], "before", "{before}");
    client.wait_for_op("wait_stdin", PEER_TIMEOUT);
    let direct = |daemon: &TestDaemon| {
        let sessions = daemon.status().sessions;
        assert!(sessions.len() == 1 && sessions[0].direct, "{sessions:?}");
    };
    direct(&daemon);

    stop(&mut daemon);
    daemon.start_again();
    client.release();
    let after = client.wait_for_op("call_tool", PEER_TIMEOUT);
    assert_eq!(after["content"][0]["text"], "after", "{after}");
    client.wait_for_op("wait_stdin", PEER_TIMEOUT);
    direct(&daemon);
    client.release();
    let lines = client.finish(PEER_TIMEOUT);
    let tools = &lines.last().expect("the last step")["tools"];
    assert!(
        tools
            .as_array()
            .is_some_and(|t| t.iter().any(|n| n == "fx__echo")),
        "{lines:?}"
    );
    let inits = lines.iter().filter(|l| l["op"] == "initialize").count();
    assert_eq!(inits, 1, "{lines:?}");
}

/// `mcpctl shutdown`, then the daemon is gone.
fn shutdown(daemon: &mut TestDaemon) {
    let out = daemon.mcpctl(&["shutdown"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(daemon.wait_exit(TIMEOUT).is_some(), "mcpd did not stop");
}

#[test]
fn peer_python_sdk_keeps_a_direct_session_across_a_sigterm_and_a_new_daemon() {
    sdk_keeps_a_direct_session_across_a_daemon_stop(Sdk::Python, |d| {
        d.terminate();
    });
}

#[test]
fn peer_typescript_sdk_keeps_a_direct_session_across_mcpctl_shutdown_and_a_new_daemon() {
    sdk_keeps_a_direct_session_across_a_daemon_stop(Sdk::TypeScript, shutdown);
}

#[test]
fn peer_python_sdk_keeps_a_direct_session_across_mcpctl_shutdown_and_a_new_daemon() {
    sdk_keeps_a_direct_session_across_a_daemon_stop(Sdk::Python, shutdown);
}

#[test]
fn peer_python_sdk_lists_and_calls_tools_through_a_direct_shim() {
    sdk_lists_and_calls_tools_through_a_direct_shim(Sdk::Python);
}

#[test]
fn peer_typescript_sdk_lists_and_calls_tools_through_a_direct_shim() {
    sdk_lists_and_calls_tools_through_a_direct_shim(Sdk::TypeScript);
}

#[test]
fn an_overlong_line_gets_an_error_and_the_direct_session_goes_on() {
    let daemon = daemon_with_fixture(&[]);
    let mut shim = direct_client(&daemon);
    let over = mcpd_proto::line::MAX_MESSAGE_LINE + 1;
    shim.send_raw(&format!(
        r#"{{"jsonrpc":"2.0","id":9,"method":"x","params":"{}"}}"#,
        "y".repeat(over)
    ));
    let error = loop {
        let line = shim
            .recv_line_timeout(TIMEOUT)
            .expect("an answer to the overlong line");
        if line.contains(r#""error""#) {
            break serde_json::from_str::<Value>(&line).expect("JSON");
        }
    };
    assert_eq!(error["error"]["code"], -32600, "{error}");
    assert_eq!(
        text_of(&shim.call_tool("fx__echo", json!({"message": "still here"}))),
        "still here"
    );
    assert!(shim.close().success());
}

#[test]
fn a_direct_client_that_does_not_read_is_closed_like_any_other_and_its_shim_says_why() {
    const MIB: usize = 1024 * 1024;
    let daemon = TestDaemon::start(json!({
        "mcpd": {"sessionBufferBytes": MIB, "clientStallMs": 1_000},
        "mcpServers": {"fx": fixture::server(&["--blob"])},
    }));
    daemon.wait_server_state("fx", ServerState::Ready);
    let mut child = daemon
        .command("mcp-shim")
        .arg("--direct")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mcp-shim");
    let stderr = Captured::start(child.stderr.take().expect("piped stderr"));
    // Its stdout is never read.
    let _unread = child.stdout.take();
    let mut stdin = child.stdin.take().expect("piped stdin");
    std::thread::spawn(move || {
        let _ = writeln!(stdin, "{INITIALIZE}");
        for id in 2..=200 {
            let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                              "params": {"name": "fx__blob", "arguments": {"bytes": MIB}}});
            if writeln!(stdin, "{call}").is_err() {
                return;
            }
        }
    });
    daemon.wait_log("closed the session: its client read nothing", TIMEOUT);
    let status = wait_timeout(&mut child, TIMEOUT).expect("the shim exits with its session");
    assert_eq!(status.code(), Some(1));
    assert!(stderr.wait_closed(TIMEOUT));
    assert!(
        stderr
            .text()
            .contains("mcp-shim: mcpd ended the direct session: the client read nothing"),
        "{}",
        stderr.text()
    );
}

#[test]
fn one_socket_as_both_stdin_and_stdout_is_handed_over_and_half_closing_it_ends_the_session() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixStream;

    let daemon = daemon_with_fixture(&[]);
    let (client, shim_end) = UnixStream::pair().expect("a socket pair");
    let stdout_end = shim_end.try_clone().expect("a second descriptor");
    let mut child = daemon
        .command("mcp-shim")
        .arg("--direct")
        .stdin(Stdio::from(OwnedFd::from(shim_end)))
        .stdout(Stdio::from(OwnedFd::from(stdout_end)))
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mcp-shim");
    let stderr = Captured::start(child.stderr.take().expect("piped stderr"));
    client
        .set_read_timeout(Some(TIMEOUT))
        .expect("a read timeout");
    let mut lines = BufReader::new(client.try_clone().expect("a reader"));
    let mut writer = &client;
    writeln!(writer, "{INITIALIZE}").expect("send initialize");
    let mut answer = String::new();
    lines.read_line(&mut answer).expect("the initialize answer");
    assert!(answer.contains(r#""serverInfo""#), "{answer}");
    writeln!(
        writer,
        r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"fx__echo","arguments":{{"message":"one socket"}}}}}}"#
    )
    .expect("send a call");
    answer.clear();
    lines.read_line(&mut answer).expect("the call's answer");
    assert!(answer.contains("one socket"), "{answer}");
    daemon.wait_log("direct: serving the client's own stdio", TIMEOUT);

    client
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    let status = wait_timeout(&mut child, TIMEOUT).expect("the shim exits");
    assert!(status.success(), "{status} {}", stderr.text());
    answer.clear();
    assert_eq!(
        lines.read_line(&mut answer).expect("the end"),
        0,
        "{answer}"
    );
}
