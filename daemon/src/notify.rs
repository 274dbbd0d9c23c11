//! Readiness, reload and stop notices for systemd (`Type=notify`), over `$NOTIFY_SOCKET`.
//!
//! Every function is a no-op when the daemon was not started by a service manager (no
//! `NOTIFY_SOCKET`); a failure to send is logged and otherwise ignored, because a missing notice
//! must never take the daemon down. `NOTIFY_SOCKET` stays in the environment (the notices are sent
//! all through the daemon's life); upstream children never see it, they start from a cleared
//! environment.

use sd_notify::NotifyState;

/// `READY=1` and a first `STATUS=`: the socket accepts connections.
pub fn notify_ready(status: &str) {
    send(
        "READY=1",
        &[NotifyState::Ready, NotifyState::Status(status)],
    );
}

/// `RELOADING=1` with `MONOTONIC_USEC=` (systemd 253 and later want both for
/// `Type=notify-reload`; older ones ignore the timestamp). Follow it with [`notify_reloaded`].
pub(crate) fn notify_reloading() {
    let mut states = vec![NotifyState::Reloading];
    match NotifyState::monotonic_usec_now() {
        Ok(now) => states.push(now),
        Err(e) => tracing::debug!("cannot read the monotonic clock for MONOTONIC_USEC: {e}"),
    }
    states.push(NotifyState::Status("reloading the configuration"));
    send("RELOADING=1", &states);
}

/// `READY=1` after a reload, with a `STATUS=` that says how it went.
pub(crate) fn notify_reloaded(status: &str) {
    send(
        "READY=1",
        &[NotifyState::Ready, NotifyState::Status(status)],
    );
}

/// `STOPPING=1`: the daemon is stopping its upstreams and will exit.
pub fn notify_stopping() {
    send(
        "STOPPING=1",
        &[
            NotifyState::Stopping,
            NotifyState::Status("stopping the servers"),
        ],
    );
}

/// `STATUS=` with the numbers `systemctl --user status mcpd` should show. Call it whenever one of
/// them changes; it costs one datagram.
pub(crate) fn notify_status(servers_up: usize, servers_total: usize, sessions: usize) {
    send(
        "STATUS=",
        &[NotifyState::Status(&status_line(
            servers_up,
            servers_total,
            sessions,
        ))],
    );
}

/// The `STATUS=` text for [`notify_status`].
pub(crate) fn status_line(servers_up: usize, servers_total: usize, sessions: usize) -> String {
    let plural = |n: usize, one: &str, many: &str| {
        if n == 1 {
            format!("{n} {one}")
        } else {
            format!("{n} {many}")
        }
    };
    format!(
        "{servers_up}/{} up, {}",
        plural(servers_total, "server", "servers"),
        plural(sessions, "session", "sessions")
    )
}

fn send(what: &str, states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!("cannot tell the service manager {what}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_counts_servers_and_sessions() {
        assert_eq!(status_line(2, 3, 1), "2/3 servers up, 1 session");
        assert_eq!(status_line(1, 1, 0), "1/1 server up, 0 sessions");
    }
}
