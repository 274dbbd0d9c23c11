//! Servers' resource limits (issue 14). Where the test (and so the daemon it starts) runs in a
//! writable cgroup v2 directory with the memory, pids and cpu controllers, it asserts that
//! `memory.max` kills a memory hog (reported as `killed: memory limit ...`, then restarted) and
//! that `pids.max` stops a fork loop. Elsewhere it asserts the rlimits mcpd sets in
//! `/proc/PID/limits` and the status lines that name what is not enforced. One of the two
//! always runs: never a silent pass.

use std::path::PathBuf;

use mcpd_proto::ServerState;
use mcpd_tests::{ShimClient, TIMEOUT, TestDaemon, eventually, fixture};
use serde_json::{Value, json};

/// The cgroup v2 directory this process is in, when mcpd could give servers cgroups there.
fn delegated_cgroup() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    if rel == "/" {
        return None;
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
    })?;
    let dir = mount.join(rel.trim_start_matches('/'));
    let controllers = std::fs::read_to_string(dir.join("cgroup.controllers")).ok()?;
    let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
    let c_dir = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: access(2) with a NUL-terminated path.
    let writable = unsafe { libc::access(c_dir.as_ptr(), libc::W_OK) } == 0;
    (has("memory") && has("pids") && has("cpu") && writable).then_some(dir)
}

fn daemon_with_limits(limits: Value) -> TestDaemon {
    let mut server = fixture::server(&["--probe-tools"]);
    server["limits"] = limits;
    server["restartDelayMs"] = json!(100);
    let daemon = TestDaemon::start(json!({"mcpServers": {"fx": server}}));
    daemon.wait_server_state("fx", ServerState::Ready);
    daemon
}

fn call(shim: &mut ShimClient, tool: &str, args: Value) -> Value {
    let id = shim.send_request(
        "tools/call",
        Some(json!({"name": format!("fx__{tool}"), "arguments": args})),
    );
    serde_json::from_str(&shim.response_line(&json!(id))).expect("a JSON response")
}

#[test]
fn limits_are_enforced_by_a_cgroup_where_delegated_and_otherwise_status_says_what_is_not() {
    match delegated_cgroup() {
        Some(dir) => cgroup_limits_kill_a_memory_hog_and_stop_a_fork_loop(&dir),
        None => without_a_cgroup_rlimits_apply_and_status_names_the_rest(),
    }
}

fn cgroup_limits_kill_a_memory_hog_and_stop_a_fork_loop(dir: &std::path::Path) {
    eprintln!(
        "a delegated cgroup v2 at {}: testing cgroup limits",
        dir.display()
    );
    let daemon = daemon_with_limits(json!({"memory": "64M", "tasks": 16}));
    let status = daemon.server("fx");
    let contain = status.contain.expect("containment in status");
    assert!(
        contain.limits.iter().any(|l| l == "memory 64M (cgroup)"),
        "{contain:?}"
    );
    let mut shim = ShimClient::spawn(&daemon, None);
    shim.initialize();

    let before = status.pid;
    let answer = call(&mut shim, "alloc", json!({"mb": 256}));
    assert!(
        answer.get("error").is_some(),
        "the hog was not killed: {answer}"
    );
    let killed = eventually(TIMEOUT, "the OOM kill reported", || {
        let s = daemon.server("fx");
        let said = [s.last_exit.clone(), s.last_error.clone()];
        said.into_iter()
            .flatten()
            .find(|t| t.contains("killed: memory limit 64M"))
    });
    eprintln!("reported: {killed}");
    // The usual restart policy brings it back.
    eventually(TIMEOUT, "fx restarted", || {
        let s = daemon.server("fx");
        (s.state == ServerState::Ready && s.pid.is_some() && s.pid != before).then_some(())
    });

    let answer = call(&mut shim, "spawn", json!({"n": 100}));
    let text = answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let started: u32 = text
        .strip_prefix("started ")
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected answer {answer}"));
    assert!(
        started < 16,
        "pids.max 16 did not stop the fork loop: {text}"
    );
}

fn without_a_cgroup_rlimits_apply_and_status_names_the_rest() {
    eprintln!("no delegated cgroup v2 here: testing rlimits and the not-enforced report");
    let daemon =
        daemon_with_limits(json!({"memory": "1G", "tasks": 256, "cpu": 0.5, "openFiles": 4096}));
    let status = daemon.server("fx");
    let pid = status.pid.expect("fx runs");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("proc limits");
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let values: Vec<&str> = nofile.split_whitespace().collect();
    assert_eq!(&values[3..5], ["4096", "4096"], "{nofile}");

    let contain = status.contain.expect("containment in status");
    assert_eq!(contain.limits, ["openFiles 4096 (rlimit)"]);
    for prefix in ["memory 1G: ", "tasks 256: ", "cpu 0.5: "] {
        assert!(
            contain.not_enforced.iter().any(|l| l.starts_with(prefix)),
            "status does not say that `{prefix}` is not enforced: {:?}",
            contain.not_enforced
        );
    }
    let out = daemon.mcpctl(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("fx: not enforced: memory 1G"),
        "mcpctl status does not say it:\n{text}"
    );
    assert!(
        text.contains("fx: limits: openFiles 4096 (rlimit)"),
        "{text}"
    );
    // And the server's memory and CPU time are shown.
    assert!(contain.memory_bytes.is_some_and(|m| m > 0), "{contain:?}");
    assert!(text.contains("fx: uses memory "), "{text}");
}

/// mcpd holds up to three descriptors per session (its socket and two pipes), more than the
/// usual soft limit of 1024 lets 512 sessions have: it raises its own soft limit to the hard
/// one, and its servers get back the limit it was started with.
#[test]
fn mcpd_raises_its_own_open_files_limit_and_its_servers_get_the_one_it_was_given() {
    let hard = read_nofile("self").1;
    assert!(
        hard > 1024,
        "the hard open-files limit here is {hard}: this test needs one above 1024"
    );
    let mut server = fixture::server(&[]);
    server["restartDelayMs"] = json!(100);
    let daemon = TestDaemon::builder()
        .wrapper(&["sh", "-c", r#"ulimit -Sn 1024 && exec "$0" "$@""#])
        .start(json!({"mcpServers": {"fx": server}}));
    daemon.wait_server_state("fx", ServerState::Ready);
    assert_eq!(
        read_nofile(&daemon.pid().to_string()),
        (hard, hard),
        "mcpd's own limits"
    );
    let pid = daemon.server("fx").pid.expect("fx runs");
    assert_eq!(
        read_nofile(&pid.to_string()),
        (1024, hard),
        "the server's limits"
    );
}

/// (soft, hard) `Max open files` of `/proc/<pid>/limits`.
fn read_nofile(pid: &str) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("proc limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(3)
        .take(2)
        .map(|v| v.parse().expect("a number"))
        .collect();
    (values[0], values[1])
}
