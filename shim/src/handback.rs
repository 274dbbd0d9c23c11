//! A direct session handed back (docs/SHIM.md "Direct mode"): the daemon stops on purpose and
//! gives the client's stdin and stdout back to this shim (`SCM_RIGHTS` on the same socket,
//! with a [`Handback`] line), and the shim carries the session on as a relaying shim does
//! across a daemon restart: it writes the output the client had not taken yet, answers the
//! requests the daemon left unanswered with `-32012`, reconnects and resumes, and goes back to
//! direct mode if the new daemon takes the descriptors (handing it the input the old one had
//! read and not handled); otherwise it relays, starting with that input.
//!
//! While no daemon has the session, stdin is not read: what the client writes meanwhile waits
//! in its pipe for whoever takes the session next, so no byte can be lost or reordered.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use mcpd_proto::direct::{self, Handback};
use mcpd_proto::envelope::UPSTREAM_LOST;

use crate::Exit;
use crate::relay::{self, BACKOFF_FIRST, BACKOFF_MAX, LOST_MESSAGE, Target};
use crate::session::{self, Attached, Failure, HANDSHAKE_TIMEOUT};
use crate::track::{self, Session};

/// What the daemon handed back: the line, the descriptors that came with it, and the bytes
/// that followed it.
#[derive(Debug)]
pub struct HandedBack {
    /// The hand-back line.
    pub line: Handback,
    /// The descriptors that came with it (checked in [`resume`]).
    pub fds: Vec<OwnedFd>,
    /// More descriptors came than there was room for.
    pub truncated: bool,
    /// The client's input the daemon had read and not handled.
    pub input: Vec<u8>,
    /// Output the client had not taken yet.
    pub output: Vec<u8>,
}

/// How a hand-back goes on.
#[derive(Debug)]
pub enum Resumed {
    /// A new daemon takes the descriptors: hand them over again, with this input first.
    Direct(Attached, Vec<u8>),
    /// The session is over (relayed to its end, or it could not go on).
    Exit(Exit),
}

/// Takes the descriptors back and carries the session on (see the module documentation).
pub fn resume(back: HandedBack, target: &Target) -> Resumed {
    let HandedBack {
        line,
        fds,
        truncated,
        input,
        output,
    } = back;
    let checked = if truncated {
        Err("more descriptors than there was room for".to_owned())
    } else {
        direct::handed_back(fds)
    };
    let (stdin, stdout) = match checked {
        Ok(fds) => fds,
        Err(why) => {
            return Resumed::Exit(Exit::fail(format!(
                "mcpd stopped and handed the direct session back with {why}; refused, the \
                 session cannot go on"
            )));
        }
    };
    if let Err(e) = restore(&stdin, &stdout) {
        return Resumed::Exit(Exit::fail(format!(
            "cannot take the client's stdio back from mcpd: {e}"
        )));
    }
    drop((stdin, stdout));
    let mut session = Session::handed_back(
        line.initialize.as_deref(),
        line.initialized,
        &line.in_flight,
        line.session,
    );
    if let Err(e) = answer_what_was_left(&mut session, &output) {
        return Resumed::Exit(relay::stdout_failed(e));
    }
    reconnect(target, session, input)
}

/// Puts the client's stdin and stdout back on descriptors 0 and 1 (where `/dev/null` was).
fn restore(stdin: &OwnedFd, stdout: &OwnedFd) -> io::Result<()> {
    for (fd, onto) in [(stdin, libc::STDIN_FILENO), (stdout, libc::STDOUT_FILENO)] {
        // SAFETY: dup2 of a descriptor we own onto 0 or 1, which nothing else in this process
        // uses while the session is handed over (they lead to /dev/null); no memory involved.
        if unsafe { libc::dup2(fd.as_raw_fd(), onto) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Writes the output the daemon had not delivered (it continues exactly where the client's
/// stdout stopped), then `-32012` for each request still unanswered, as after a lost
/// connection.
fn answer_what_was_left(session: &mut Session, output: &[u8]) -> io::Result<()> {
    for line in crate::scan::lines(output) {
        if let Some((id, error)) = track::response_from_daemon(line) {
            session.answered(&id, error);
        }
    }
    let mut out = output.to_vec();
    for id in session.lost() {
        track::error_line(&mut out, &id, UPSTREAM_LOST, LOST_MESSAGE);
    }
    let stdout = io::stdout();
    let mut stdout = stdout
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)?;
    relay::write_all(&mut stdout, &out)
}

/// Whether the client closed its stdin and nothing of it is left to read (a pipe).
fn stdin_gone() -> bool {
    let mut pollfd = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call; a zero timeout does not block.
    let ready = unsafe { libc::poll(&mut pollfd, 1, 0) };
    if ready <= 0 || pollfd.revents & libc::POLLHUP == 0 {
        return false;
    }
    let mut left: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to the valid pointer.
    let rc = unsafe { libc::ioctl(libc::STDIN_FILENO, libc::FIONREAD, &mut left) };
    rc == 0 && left == 0
}

/// Attaches to the next daemon, with backoff, as the relay does after a lost connection
/// (`relay::reconnect`): direct again if the descriptors can go, with the resume.
fn reconnect(target: &Target, session: Session, input: Vec<u8>) -> Resumed {
    let now = Instant::now();
    let deadline = now
        .checked_add(target.reconnect_timeout)
        .unwrap_or(now + Duration::from_secs(24 * 3600));
    let mut delay = BACKOFF_FIRST;
    let mut revive = crate::revive::Reviver::new(target.autostart);
    // A daemon that takes the descriptors but not the input we hold (one older than this
    // shim) gets a relayed session instead.
    let mut relay_only = false;
    loop {
        if stdin_gone() {
            return Resumed::Exit(Exit::done());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if target.reconnect_timeout.is_zero() {
            return Resumed::Exit(Exit::fail(
                "the daemon closed the session (is mcpd stopping or restarting?)",
            ));
        }
        let direct = !relay_only && crate::direct::eligible().is_ok();
        let req = session::Request {
            socket: &target.socket,
            profile: &target.profile,
            timeout: HANDSHAKE_TIMEOUT.min(left).max(Duration::from_millis(100)),
            again: true,
            direct,
            direct_input: input.len() as u64,
            pipes: target.pipes,
        };
        let why = match session::attach(req, session.resume()) {
            Ok(conn) if conn.direct && (conn.handback || input.is_empty()) => {
                return Resumed::Direct(conn, input);
            }
            Ok(conn) if conn.direct => {
                drop(conn);
                relay_only = true;
                continue;
            }
            Ok(conn) => return Resumed::Exit(relay::run_resumed(conn, target, session, input)),
            Err(Failure::Refused(exit)) => return Resumed::Exit(exit),
            Err(Failure::Unreachable(why)) => why,
        };
        if revive.maybe_start(&target.socket) {
            delay = BACKOFF_FIRST;
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Resumed::Exit(relay::gave_up(target, &why));
        }
        std::thread::sleep(delay.min(left));
        delay = (delay * 2).min(BACKOFF_MAX);
    }
}
