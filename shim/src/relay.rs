//! Copying bytes between stdio and the daemon, untouched and without delay.
//!
//! A thread copies stdin to the socket; the main thread copies the socket to stdout. Each read
//! takes whatever is there (up to 64 KiB) and writes it at once, unbuffered: MCP clients wait for
//! each line, so nothing may sit in a buffer waiting for more.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::Exit;
use crate::session::Attached;

/// Size of one read.
const CHUNK: usize = 64 * 1024;

/// After stdin closes, how long the daemon may take to finish answering and close its side.
const LINGER: Duration = Duration::from_secs(2);

/// After the session is cut, how long stdout may take to take the last chunk before we leave.
const LAST_WRITE: Duration = Duration::from_secs(1);

/// Set once the client closed our stdin, before the socket's write side is shut down: the end
/// of the session the daemon then causes is the expected one.
static STDIN_CLOSED: AtomicBool = AtomicBool::new(false);

/// Relays until the session ends and says how the shim should exit.
pub fn run(attached: Attached) -> Exit {
    let Attached { stream, early } = attached;
    let (stdin, mut stdout) = match (dup(io::stdin().as_fd()), dup(io::stdout().as_fd())) {
        (Ok(stdin), Ok(stdout)) => (stdin, stdout),
        (Err(e), _) | (_, Err(e)) => {
            return Exit::fail(format!("stdin or stdout is unusable: {e}"));
        }
    };
    // Allocated here, not in the thread: a first allocation there would create a second malloc
    // arena (64 MiB of address space, some resident pages) for nothing.
    let stdin_buf = vec![0u8; CHUNK];
    let pump = stream
        .try_clone()
        .and_then(|to_daemon| {
            std::thread::Builder::new()
                .name("stdin".into())
                .stack_size(128 * 1024)
                .spawn(move || copy_stdin(stdin, to_daemon, stdin_buf))
        })
        .map_err(|e| Exit::fail(format!("cannot start the stdin relay: {e}")));
    if let Err(exit) = pump {
        return exit;
    }

    if let Err(e) = write_all(&mut stdout, &early) {
        return stdout_failed(e);
    }
    let mut from_daemon = &stream;
    let mut buf = vec![0u8; CHUNK];
    let ended = loop {
        match from_daemon.read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => {
                if let Err(e) = write_all(&mut stdout, &buf[..n]) {
                    return stdout_failed(e);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Some(e),
        }
    };
    if STDIN_CLOSED.load(Ordering::SeqCst) {
        return Exit::done();
    }
    match ended {
        None => Exit::fail("the daemon closed the session (is mcpd stopping or restarting?)"),
        Some(e) => Exit::fail(format!("lost the connection to the daemon: {e}")),
    }
}

/// Copies stdin to the daemon. When stdin closes, tells the daemon (shutdown of our write side)
/// and gives it [`LINGER`] to finish; then, or when the daemon stops reading, cuts the session
/// so that the main thread sees its end.
fn copy_stdin(mut stdin: File, to_daemon: UnixStream, mut buf: Vec<u8>) {
    let mut sink = &to_daemon;
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if write_all(&mut sink, &buf[..n]).is_err() {
                    // The daemon went away; the main thread sees the same and reports it.
                    cut(&to_daemon, 1);
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_for(stdin.as_fd(), libc::POLLIN)
            }
            // An unreadable stdin is a closed one.
            Err(_) => break,
        }
    }
    STDIN_CLOSED.store(true, Ordering::SeqCst);
    let _ = to_daemon.shutdown(Shutdown::Write);
    std::thread::sleep(LINGER);
    // The daemon kept its side open. Shutting ours wakes the main thread's read with an end of
    // file, so a chunk it is writing to stdout still goes out whole.
    cut(&to_daemon, 0);
}

/// Ends the session from our side, which lets the main thread finish and choose the exit code;
/// if it is stuck writing to a stdout nobody reads, leaves anyway with `code`.
fn cut(to_daemon: &UnixStream, code: i32) {
    let _ = to_daemon.shutdown(Shutdown::Both);
    std::thread::sleep(LAST_WRITE);
    // SAFETY: `_exit` has no preconditions; nothing is left to flush (stdout is unbuffered).
    unsafe { libc::_exit(code) }
}

/// Writes all of `data`, waiting instead of failing if the descriptor is non-blocking (a client
/// may hand us a pipe with O_NONBLOCK set on its shared file description).
fn write_all<W: Write + AsFd>(out: &mut W, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match out.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_for(out.as_fd(), libc::POLLOUT),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Blocks until `fd` is ready for `events` (or has hung up, which the next call reports).
fn wait_for(fd: BorrowedFd<'_>, events: libc::c_short) {
    let mut pollfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: `pollfd` is a valid, initialised array of one element for the duration of the call.
    unsafe {
        libc::poll(&mut pollfd, 1, -1);
    }
}

/// The client stopped reading our stdout: that is the client hanging up, a normal end. (Rust's
/// runtime ignores SIGPIPE, so a closed stdout shows up here as EPIPE rather than killing us.)
fn stdout_failed(e: io::Error) -> Exit {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Exit::done()
    } else {
        Exit::fail(format!("cannot write to stdout: {e}"))
    }
}

/// An unbuffered handle on a standard stream (std's stdout buffers by line, stdin by 8 KiB).
fn dup(fd: BorrowedFd<'_>) -> io::Result<File> {
    fd.try_clone_to_owned().map(File::from)
}
