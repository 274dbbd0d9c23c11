//! Containment (issue 14): a server's process tree cannot escape. A grandchild that calls
//! `setsid()` (so it leaves the server's process group) and ignores SIGTERM is ended by
//! `mcpctl stop`, by a daemon SIGTERM, and by the next daemon after a daemon SIGKILL.

use mcpd_proto::ServerState;
use mcpd_tests::fixture;
use mcpd_tests::process::{ProcessId, cmdline, descendants_of, stat};
use mcpd_tests::{TIMEOUT, TestDaemon, wait_until};
use serde_json::json;

/// The fixture's escaping grandchild runs `sleep 601`.
const ESCAPEE: &str = "sleep 601";

/// A daemon with one fixture server `fx` that starts an escaping grandchild, and that grandchild.
fn daemon_with_escapee() -> (TestDaemon, ProcessId) {
    let mut server = fixture::server(&["--escape-grandchild"]);
    server["stopTimeoutMs"] = json!(200);
    server["killTimeoutMs"] = json!(300);
    let daemon = TestDaemon::start(json!({"mcpServers": {"fx": server}}));
    daemon.wait_server_state("fx", ServerState::Ready);
    let escapee = mcpd_tests::eventually(TIMEOUT, "the escaping grandchild", || {
        descendants_of(daemon.pid())
            .into_iter()
            .find(|&p| cmdline(p).is_some_and(|c| c == ESCAPEE))
            .and_then(ProcessId::of)
    });
    let leader = daemon.server("fx").pid.expect("fx has a pid");
    let s = stat(escapee.pid).expect("the grandchild runs");
    assert_ne!(
        s.pgrp, leader,
        "the grandchild left the server's process group"
    );
    (daemon, escapee)
}

#[test]
fn a_setsid_grandchild_that_ignores_sigterm_is_gone_after_mcpctl_stop() {
    let (daemon, escapee) = daemon_with_escapee();
    let out = daemon.mcpctl(&["stop", "fx"]);
    assert!(out.status.success(), "mcpctl stop failed: {out:?}");
    daemon.wait_server_state("fx", ServerState::Stopped);
    assert!(
        wait_until(TIMEOUT, || !escapee.alive()),
        "the setsid() grandchild survived `mcpctl stop`"
    );
}

#[test]
fn a_setsid_grandchild_that_ignores_sigterm_is_gone_after_a_daemon_sigterm() {
    let (mut daemon, escapee) = daemon_with_escapee();
    let status = daemon.terminate();
    assert!(status.success(), "mcpd exited with {status}");
    assert!(
        wait_until(TIMEOUT, || !escapee.alive()),
        "the setsid() grandchild survived the daemon's SIGTERM"
    );
}

#[test]
fn a_setsid_grandchild_left_by_a_sigkilled_daemon_is_ended_by_the_next_start() {
    let (mut daemon, escapee) = daemon_with_escapee();
    daemon.kill();
    // The leader dies with the daemon (PR_SET_DEATHSIG); the grandchild is in another session
    // and ignores SIGTERM: it outlives both.
    assert!(
        escapee.alive(),
        "the grandchild should have outlived the SIGKILLed daemon (nothing to test otherwise)"
    );
    daemon.start_again();
    assert!(
        wait_until(TIMEOUT, || !escapee.alive()),
        "the next daemon did not end the grandchild its predecessor left"
    );
    daemon.wait_log("left outside their groups", TIMEOUT);
}

#[test]
fn an_orphaned_grandchild_is_reparented_to_mcpd_and_ended_with_its_server() {
    let mut server = fixture::server(&["--escape-grandchild"]);
    server["restartDelayMs"] = json!(60_000);
    let daemon = TestDaemon::start(json!({"mcpServers": {"fx": server}}));
    daemon.wait_server_state("fx", ServerState::Ready);
    let escapee = mcpd_tests::eventually(TIMEOUT, "the escaping grandchild", || {
        descendants_of(daemon.pid())
            .into_iter()
            .find(|&p| cmdline(p).is_some_and(|c| c == ESCAPEE))
            .and_then(ProcessId::of)
    });
    let leader = daemon.server("fx").pid.expect("fx has a pid");
    // The server crashes: its grandchild is orphaned, goes to mcpd (the subreaper), not to
    // init, and is ended as part of what the dead server left.
    mcpd_tests::process::signal(leader, libc::SIGKILL);
    let reparented = wait_until(TIMEOUT, || {
        !escapee.alive() || stat(escapee.pid).is_some_and(|s| s.ppid == daemon.pid())
    });
    assert!(reparented, "the orphan was not reparented to mcpd");
    assert!(
        wait_until(TIMEOUT, || !escapee.alive()),
        "the orphaned grandchild of a crashed server survived"
    );
    // And nothing it left is a zombie under mcpd: orphans are reaped.
    let zombies = || {
        mcpd_tests::process::all_pids()
            .into_iter()
            .filter_map(|p| stat(p).map(|s| (p, s)))
            .filter(|(_, s)| s.ppid == daemon.pid() && s.state == 'Z')
            .count()
    };
    assert!(
        wait_until(TIMEOUT, || zombies() == 0),
        "zombies left under mcpd"
    );
}
