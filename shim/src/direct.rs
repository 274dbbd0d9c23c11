//! Direct mode (`--direct`, docs/SHIM.md): the client's stdin and stdout go to the daemon and
//! the shim leaves the data path.
//!
//! After a direct welcome the shim sends descriptors 0 and 1 over the socket (`SCM_RIGHTS`),
//! replaces its own copies with `/dev/null` (so that the client's end of input reaches the
//! daemon alone, and the daemon's close of stdout reaches the client), and waits: for the
//! daemon's end line, for the socket to close, for a signal or for its parent to die
//! ([`crate::parent`]). When the daemon stops on purpose it hands the descriptors back and the
//! session goes on ([`crate::handback`]); a daemon that crashed held the client's bytes, and
//! nothing can be resumed then.

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;

use mcpd_proto::direct::{
    self, DirectEnd, Handback, MAX_HANDBACK_INPUT, MAX_HANDBACK_OUTPUT, NotHandable,
};
use mcpd_proto::line::{MAX_CONTROL_LINE, MAX_MESSAGE_LINE};

use crate::Exit;
use crate::handback::{self, HandedBack, Resumed};
use crate::relay::Target;
use crate::session::Attached;

/// What the shim says when the daemon went away without ending the session.
const LOST: &str = "lost the connection to mcpd without a hand-back (it was killed or crashed): a direct \
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

/// Hands stdio to the daemon of `attached` and waits for the session to end; when the daemon
/// hands it back on a planned stop, carries the session on ([`crate::handback`]), in direct
/// mode again if the next daemon takes it.
pub fn run(attached: Attached, target: &Target) -> Exit {
    let mut attached = attached;
    let mut input = Vec::new();
    loop {
        let back = match serve(&attached, &input) {
            Waited::Exit(exit) => return exit,
            Waited::HandedBack(back) => back,
        };
        match handback::resume(back, target) {
            Resumed::Direct(next, held) => {
                attached = next;
                input = held;
            }
            Resumed::Exit(exit) => return exit,
        }
    }
}

/// Hands stdin and stdout over, with `input` (client bytes a previous daemon handed back)
/// after them, and waits.
fn serve(attached: &Attached, input: &[u8]) -> Waited {
    let stream = &attached.stream;
    if let Err(e) = direct::send_stdio(stream, io::stdin().as_fd(), io::stdout().as_fd()) {
        return Waited::Exit(Exit::fail(format!(
            "cannot hand stdin and stdout to mcpd (--direct): {e}"
        )));
    }
    if let Err(e) = (&mut &*stream).write_all(input) {
        return Waited::Exit(Exit::fail(format!(
            "cannot hand the client's pending input to mcpd (--direct): {e}"
        )));
    }
    leave_data_path();
    wait(&attached.early, stream)
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

/// How waiting for the daemon ended.
#[derive(Debug)]
enum Waited {
    /// The session is over.
    Exit(Exit),
    /// The daemon stopped and handed the session back.
    HandedBack(HandedBack),
}

/// The longest last line the daemon may send (a hand-back carries the client's `initialize`
/// params and the ids in flight).
const MAX_LAST_LINE: usize = MAX_MESSAGE_LINE + MAX_CONTROL_LINE;

/// Waits for the daemon's last line (or the socket's end) and turns it into the exit, or into
/// the session handed back. Everything is read with `recvmsg`: a plain read would have the
/// kernel close the descriptors of a hand-back unseen.
fn wait(early: &[u8], stream: &UnixStream) -> Waited {
    let mut got = early.to_vec();
    let mut fds = Vec::new();
    let mut truncated = false;
    let mut chunk = vec![0u8; 16 * 1024];
    let end = loop {
        if let Some(end) = got.iter().position(|&b| b == b'\n') {
            break end;
        }
        if got.len() > MAX_LAST_LINE {
            return Waited::Exit(Exit::fail(format!(
                "mcpd ended the direct session with an unreadable {}-byte line",
                got.len()
            )));
        }
        match direct::recv_with_fds(stream.as_fd(), &mut chunk, true) {
            Ok(r) if r.len == 0 && r.fds.is_empty() => return Waited::Exit(Exit::fail(LOST)),
            Ok(r) => {
                got.extend_from_slice(&chunk[..r.len]);
                fds.extend(r.fds);
                truncated |= r.truncated;
            }
            Err(e) => return Waited::Exit(Exit::fail(format!("{LOST} ({e})"))),
        }
    };
    let line = &got[..end];
    // Every field of a hand-back line but `op` has a default: an end line parses too.
    let line = match serde_json::from_slice::<Handback>(line) {
        Ok(back) if back.op == Handback::OP => back,
        _ => {
            // Descriptors that came with anything else are closed unused.
            drop(fds);
            return Waited::Exit(ended(line));
        }
    };
    if line.input > MAX_HANDBACK_INPUT || line.output > MAX_HANDBACK_OUTPUT {
        return Waited::Exit(Exit::fail(format!(
            "mcpd handed the direct session back with {} bytes of input and {} of output, over \
             the limits ({MAX_HANDBACK_INPUT} and {MAX_HANDBACK_OUTPUT}); refused",
            line.input, line.output
        )));
    }
    // Both were checked against limits that fit in memory.
    let (input_len, output_len) = (line.input as usize, line.output as usize);
    let mut rest = got.split_off(end + 1);
    while rest.len() < input_len + output_len {
        match direct::recv_with_fds(stream.as_fd(), &mut chunk, true) {
            Ok(r) if r.len == 0 && r.fds.is_empty() => {
                return Waited::Exit(Exit::fail(format!(
                    "mcpd stopped in the middle of handing the direct session back ({} of {} \
                     bytes came); the session cannot go on",
                    rest.len(),
                    input_len + output_len
                )));
            }
            Ok(r) => {
                rest.extend_from_slice(&chunk[..r.len]);
                fds.extend(r.fds);
                truncated |= r.truncated;
            }
            Err(e) => return Waited::Exit(Exit::fail(format!("{LOST} ({e})"))),
        }
    }
    let output = rest.split_off(input_len);
    rest.truncate(input_len);
    let mut output = output;
    output.truncate(output_len);
    Waited::HandedBack(HandedBack {
        line,
        fds,
        truncated,
        input: rest,
        output,
    })
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
        let Waited::Exit(exit) = wait(&[], &shim) else {
            panic!("nothing was handed back")
        };
        assert_eq!(exit.code, 1);
        assert!(message(&exit).starts_with("lost the connection to mcpd"));
    }

    #[test]
    fn an_end_line_read_along_with_the_welcome_counts() {
        let (shim, daemon) = UnixStream::pair().unwrap_or_else(|e| panic!("{e}"));
        drop(daemon);
        let Waited::Exit(exit) = wait(
            br#"{"op":"end","ok":true,"reason":"x"}
"#,
            &shim,
        ) else {
            panic!("nothing was handed back")
        };
        assert_eq!(exit.code, 0);
    }
}
