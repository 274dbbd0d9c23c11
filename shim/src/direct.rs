//! Direct mode (`--direct`, docs/SHIM.md): the client's stdin and stdout go to the daemon and
//! the shim leaves the data path.
//!
//! After a direct welcome the shim sends descriptors 0 and 1 over the socket (`SCM_RIGHTS`),
//! replaces its own copies with `/dev/null` (so that the client's end of input reaches the
//! daemon alone, and the daemon's close of stdout reaches the client), and waits: for the
//! daemon's end line, for the socket to close, for a signal or for its parent to die
//! ([`crate::parent`]). Nothing can be resumed: the daemon holds the client's bytes.

use std::io::{self, BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;

use mcpd_proto::direct::{self, DirectEnd, NotHandable};
use mcpd_proto::line::{Line, MAX_CONTROL_LINE, read_line_bounded};

use crate::Exit;
use crate::session::Attached;

/// What the shim says when the daemon went away without ending the session.
const LOST: &str = "lost the connection to mcpd (it stopped, restarted or crashed): a direct \
                    session (--direct) cannot be resumed; requests in flight got no answer and \
                    the client must start a new session";

/// Set to anything but empty or `0`, it turns `--direct` on.
pub const ENV: &str = "MCP_SHIM_DIRECT";

/// Whether [`ENV`] asks for direct mode.
pub fn asked_by_env() -> bool {
    std::env::var_os(ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Whether stdin and stdout can be handed over; if not, why (for the one line on stderr).
pub fn eligible() -> Result<(), String> {
    let check = |name: &str, fd: BorrowedFd<'_>| {
        direct::handable(fd).map_err(|why| match why {
            NotHandable::Closed => format!("{name} is closed"),
            other => format!("{name} is {other}"),
        })
    };
    check("stdin", io::stdin().as_fd())?;
    check("stdout", io::stdout().as_fd())
}

/// Hands stdio to the daemon of `attached` and waits for the session to end.
pub fn run(attached: Attached) -> Exit {
    let stream = attached.stream;
    if let Err(e) = direct::send_stdio(&stream, io::stdin().as_fd(), io::stdout().as_fd()) {
        return Exit::fail(format!(
            "cannot hand stdin and stdout to mcpd (--direct): {e}"
        ));
    }
    leave_data_path();
    wait(&attached.early, &stream)
}

/// Points descriptors 0 and 1 at `/dev/null`: the daemon has the client's pipes now, and any
/// copy kept here would hide the client's end of input from it (or the daemon's end of output
/// from the client).
fn leave_data_path() {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null");
    for fd in [libc::STDIN_FILENO, libc::STDOUT_FILENO] {
        // SAFETY: dup2 onto descriptors 0 and 1, which nothing in this process uses any more
        // (no stdio handle is read or written after the handover); close of the same when
        // /dev/null is missing. Neither touches memory.
        unsafe {
            match &null {
                Ok(null) => libc::dup2(null.as_raw_fd(), fd),
                Err(_) => libc::close(fd),
            };
        }
    }
}

/// Waits for the daemon's end line (or the socket's end) and turns it into the exit.
fn wait(early: &[u8], stream: &UnixStream) -> Exit {
    let mut reader = BufReader::new(early.chain(stream));
    match read_line_bounded(&mut reader, MAX_CONTROL_LINE) {
        Ok(Some(Line::Complete(line))) => ended(&line),
        Ok(Some(Line::TooLong { len })) => Exit::fail(format!(
            "mcpd ended the direct session with an unreadable {len}-byte line"
        )),
        Ok(None) => Exit::fail(LOST),
        Err(e) => Exit::fail(format!("{LOST} ({e})")),
    }
}

/// The exit for the daemon's end line.
fn ended(line: &[u8]) -> Exit {
    match serde_json::from_slice::<DirectEnd>(line) {
        Ok(end) if end.op == "end" && end.ok => Exit::done(),
        Ok(end) if end.op == "end" => {
            Exit::fail(format!("mcpd ended the direct session: {}", end.reason))
        }
        _ => Exit::fail(format!(
            "mcpd ended the direct session with a line this mcp-shim does not know: {}",
            String::from_utf8_lossy(line)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(exit: &Exit) -> &str {
        exit.message.as_deref().unwrap_or_default()
    }

    #[test]
    fn a_clean_end_is_exit_0_and_any_other_says_why() {
        let done = ended(br#"{"op":"end","ok":true,"reason":"the client closed its input"}"#);
        assert_eq!((done.code, done.message.is_none()), (0, true));
        let stop = ended(br#"{"op":"end","ok":false,"reason":"mcpd is shutting down"}"#);
        assert_eq!(stop.code, 1);
        assert_eq!(
            message(&stop),
            "mcpd ended the direct session: mcpd is shutting down"
        );
        let odd = ended(br#"{"op":"bye"}"#);
        assert_eq!(odd.code, 1);
        assert!(message(&odd).contains("does not know"), "{}", message(&odd));
    }

    #[test]
    fn the_socket_closing_without_an_end_line_is_a_lost_daemon() {
        let (shim, daemon) = UnixStream::pair().unwrap_or_else(|e| panic!("{e}"));
        drop(daemon);
        let exit = wait(&[], &shim);
        assert_eq!(exit.code, 1);
        assert!(message(&exit).starts_with("lost the connection to mcpd"));
    }

    #[test]
    fn an_end_line_read_along_with_the_welcome_counts() {
        let (shim, daemon) = UnixStream::pair().unwrap_or_else(|e| panic!("{e}"));
        drop(daemon);
        let exit = wait(
            br#"{"op":"end","ok":true,"reason":"x"}
"#,
            &shim,
        );
        assert_eq!(exit.code, 0);
    }
}
