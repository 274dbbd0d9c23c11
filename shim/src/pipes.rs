//! The relay's pipes (docs/SHIM.md, "The relay's pipes"): the session's data goes over a pair
//! of pipes instead of the socket, which costs the daemon less per message (a pipe's read and
//! write are cheaper than a Unix socket's; docs/BENCHMARKS.md, "The floor").
//!
//! The shim makes two pipes before its hello and offers them (`"pipes":true`). When the welcome
//! takes them (`"pipes":true`) it sends the daemon its two ends, the read end of the pipe the
//! client's lines go into and the write end of the pipe the daemon's lines come out of, as
//! `SCM_RIGHTS` on the socket right after the welcome ([`mcpd_proto::direct::send_stdio`], as
//! `--direct` hands over the client's stdio), and closes its own copies of them: the daemon
//! alone holds them then, so its end (a crash included) is an end of file on the shim's read
//! end at once, and the shim's closing its write end is the end of input for the daemon.
//! The shim keeps the other two ends and copies lines exactly as over the socket; the socket
//! stays open, carrying nothing, and its closing tells the daemon that the shim is gone.
//!
//! An older daemon ignores the offer and welcomes a plain session: the shim then closes the
//! pipes and relays over the socket. Pipes that cannot be made, or `MCP_SHIM_PIPES=0`, mean
//! the socket too; `MCP_SHIM_DEBUG=1` has the shim say why on stderr.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

/// Set to `0`, the relay carries the session's data over the socket (as a shim before pipes did).
pub const ENV: &str = "MCP_SHIM_PIPES";

/// Set to anything but empty or `0`, the shim says on stderr why it relays over the socket.
pub const DEBUG_ENV: &str = "MCP_SHIM_DEBUG";

/// Whether [`ENV`] leaves the pipes on (the default).
pub fn enabled() -> bool {
    std::env::var_os(ENV).is_none_or(|v| v != "0")
}

/// One line on stderr when [`DEBUG_ENV`] asks for it.
pub fn debug(message: impl std::fmt::Display) {
    if std::env::var_os(DEBUG_ENV).is_some_and(|v| !v.is_empty() && v != "0") {
        eprintln!("mcp-shim: debug: {message}");
    }
}

/// Two pipes made for a session, offered in the hello and not handed over yet.
#[derive(Debug)]
pub struct Offer {
    /// The daemon's: the read end of the pipe client lines go into.
    daemon_input: OwnedFd,
    /// The daemon's: the write end of the pipe its lines come out of.
    daemon_output: OwnedFd,
    /// Ours, once handed over.
    ends: Pipes,
}

/// The shim's ends of a session's pipes.
#[derive(Debug)]
pub struct Pipes {
    /// Client lines go in here.
    pub to_daemon: File,
    /// The daemon's lines come out here.
    pub from_daemon: File,
}

impl Offer {
    /// Makes the two pipes, close-on-exec (a daemon the shim starts must not inherit them).
    pub fn new() -> io::Result<Self> {
        let (daemon_input, to_daemon) = pipe()?;
        let (from_daemon, daemon_output) = pipe()?;
        Ok(Self {
            daemon_input,
            daemon_output,
            ends: Pipes {
                to_daemon: File::from(to_daemon),
                from_daemon: File::from(from_daemon),
            },
        })
    }

    /// Sends the daemon its two ends over `socket`, which just welcomed the offer, and closes
    /// ours of them; returns the shim's.
    pub fn hand_over(self, socket: &UnixStream) -> io::Result<Pipes> {
        mcpd_proto::direct::send_stdio(
            socket,
            self.daemon_input.as_fd(),
            self.daemon_output.as_fd(),
        )?;
        Ok(self.ends)
    }
}

/// `(read end, write end)` of a new pipe, both close-on-exec.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    if new_pipe(&mut fds) != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the pipe call just made both descriptors; each is owned here once.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    for fd in [&r, &w] {
        use std::os::fd::AsRawFd;
        // SAFETY: F_SETFD on a descriptor owned here; no memory is touched.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((r, w))
}

/// `pipe2(O_CLOEXEC)` where it exists (no moment when a fork elsewhere could inherit the pipe).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn new_pipe(fds: &mut [libc::c_int; 2]) -> libc::c_int {
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }
}

/// `pipe`, made close-on-exec by the caller.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn new_pipe(fds: &mut [libc::c_int; 2]) -> libc::c_int {
    // SAFETY: `fds` has room for the two descriptors pipe writes.
    unsafe { libc::pipe(fds.as_mut_ptr()) }
}

/// Closes the pipe behind `fd` for writing while other threads may still hold `fd`: it is
/// pointed at `/dev/null` (`dup2` replaces it atomically), so the daemon sees the end of input
/// once no write is under way, and a late write from another thread goes nowhere instead of to
/// a descriptor the number was reused for.
pub fn end_input(fd: &File) {
    use std::os::fd::AsRawFd;
    let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") else {
        return;
    };
    // SAFETY: dup2 onto a descriptor this process owns (kept open by `fd`'s owner until it is
    // dropped, when it closes whatever the number then refers to: /dev/null); no memory is
    // touched.
    unsafe {
        libc::dup2(null.as_raw_fd(), fd.as_raw_fd());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn ending_the_input_is_an_end_of_file_for_the_reader_while_the_writer_stays_open() {
        let (r, w) = pipe().unwrap();
        let (mut r, w) = (File::from(r), File::from(w));
        (&w).write_all(b"last\n").unwrap();
        end_input(&w);
        let mut got = String::new();
        r.read_to_string(&mut got).unwrap();
        assert_eq!(got, "last\n");
        // A late write goes nowhere and does not fail.
        (&w).write_all(b"late\n").unwrap();
    }

    #[test]
    fn pipes_are_close_on_exec() {
        use std::os::fd::AsRawFd;
        let offer = Offer::new().unwrap();
        for fd in [
            offer.daemon_input.as_raw_fd(),
            offer.daemon_output.as_raw_fd(),
            offer.ends.to_daemon.as_raw_fd(),
            offer.ends.from_daemon.as_raw_fd(),
        ] {
            // SAFETY: F_GETFD only reads the flags of a descriptor the offer owns.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        }
    }
}
