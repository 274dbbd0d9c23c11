//! Connecting to the daemon and the attach handshake.

use std::io::{self, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use mcpd_proto::line::{Line, MAX_CONTROL_LINE, read_line_bounded};
use mcpd_proto::trust::{self, ConnectError};
use mcpd_proto::{
    AttachHello, ClientProcess, Hello, HelloReply, PROTOCOL_VERSION, Resume, version,
};

use crate::Exit;
use crate::pipes::{Offer, Pipes};

/// How long the daemon may take to answer the hello.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How to start the daemon, for the "no daemon" message.
const START_HINT: &str = "start it with 'mcpd' or 'systemctl --user start mcpd.socket'";

/// A session the daemon welcomed.
#[derive(Debug)]
pub struct Attached {
    /// The connection, with no timeouts set.
    pub stream: UnixStream,
    /// Bytes the daemon sent after its welcome line, read along with it; they go to stdout first.
    pub early: Vec<u8>,
    /// The session id the daemon gave us, if it said.
    pub session: Option<u64>,
    /// The daemon takes the client's stdio (it answered a direct hello with a direct welcome).
    pub direct: bool,
    /// It also hands them back when it stops on purpose, and reads the input we bring.
    pub handback: bool,
    /// The relay's pipes, when the daemon took them: the session's data goes over these and
    /// the socket carries nothing more ([`crate::pipes`]).
    pub pipes: Option<Pipes>,
}

/// Why an attach failed.
#[derive(Debug)]
pub enum Failure {
    /// Nobody answered, or the daemon went away before it answered: a daemon that is restarting
    /// looks like this, so a reconnect tries again.
    Unreachable(Exit),
    /// The daemon answered and refused, or answered something this shim cannot speak: trying
    /// again would get the same answer.
    Refused(Exit),
}

impl Failure {
    /// The exit this failure stands for.
    pub fn into_exit(self) -> Exit {
        match self {
            Self::Unreachable(exit) | Self::Refused(exit) => exit,
        }
    }
}

/// What an attach asks for.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The daemon's socket.
    pub socket: &'a Path,
    /// Profile to attach to.
    pub profile: &'a str,
    /// How long the daemon may take to answer the hello.
    pub timeout: Duration,
    /// Whether this is a re-attach after the connection was lost (for the wording of errors).
    pub again: bool,
    /// Offer the client's stdio to the daemon (`--direct`).
    pub direct: bool,
    /// With `direct`: bytes of the client's input the shim sends after the handover byte (a
    /// session handed back by the previous daemon, see [`crate::handback`]).
    pub direct_input: u64,
    /// Offer the relay's pipes (without `direct`; [`crate::pipes`]).
    pub pipes: bool,
}

/// Connects to the daemon and attaches, resuming the session described by `resume` if given.
/// The socket's directory and the daemon's uid are checked before the hello is sent
/// ([`trust::connect`]); a daemon that is not ours is refused, not retried.
pub fn attach(req: Request<'_>, resume: Option<Resume>) -> Result<Attached, Failure> {
    let stream = trust::connect(req.socket).map_err(|e| match e {
        ConnectError::Io(e) => Failure::Unreachable(connect_error(req.socket, &e)),
        ConnectError::Untrusted(why) => Failure::Refused(Exit::fail(why)),
    })?;
    handshake(stream, req, resume)
}

/// Attaches over `stream`, a fresh connection to the daemon at `req.socket`.
pub fn handshake(
    stream: UnixStream,
    req: Request<'_>,
    resume: Option<Resume>,
) -> Result<Attached, Failure> {
    let socket = req.socket;
    let lost = |e: io::Error| {
        Failure::Unreachable(
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) {
                Exit::fail(format!(
                    "the daemon at {} did not answer within {} s",
                    socket.display(),
                    req.timeout.as_secs_f64()
                ))
            } else {
                Exit::fail(format!(
                    "lost the connection to the daemon at {} during the handshake: {e}",
                    socket.display()
                ))
            },
        )
    };
    stream
        .set_read_timeout(Some(req.timeout))
        .and_then(|()| stream.set_write_timeout(Some(req.timeout)))
        .map_err(lost)?;

    // Made before the hello, so that pipes that cannot be made are simply not offered.
    let offer = if req.pipes && !req.direct {
        match Offer::new() {
            Ok(offer) => Some(offer),
            Err(e) => {
                crate::pipes::debug(format_args!(
                    "relaying over the socket: cannot make the relay's pipes: {e}"
                ));
                None
            }
        }
    } else {
        None
    };
    let mut hello = serde_json::to_vec(&hello(req, resume, offer.is_some()))
        .map_err(|e| Failure::Refused(Exit::fail(format!("cannot encode the hello: {e}"))))?;
    hello.push(b'\n');
    (&stream).write_all(&hello).map_err(lost)?;

    let mut reader = BufReader::new(&stream);
    let reply = match read_line_bounded(&mut reader, MAX_CONTROL_LINE).map_err(lost)? {
        Some(Line::Complete(line)) => line,
        Some(Line::TooLong { len }) => {
            return Err(Failure::Refused(Exit::fail(format!(
                "the daemon at {} answered the hello with a {len}-byte line; is it really mcpd?",
                socket.display()
            ))));
        }
        None => {
            return Err(Failure::Unreachable(Exit::fail(format!(
                "the daemon at {} closed the connection without answering the hello",
                socket.display()
            ))));
        }
    };
    let early = reader.buffer().to_vec();
    drop(reader);

    let reply = serde_json::from_slice::<HelloReply>(&reply).map_err(|e| {
        Failure::Refused(Exit::fail(format!(
            "the daemon at {} sent an unreadable answer to the hello ({e}); is it really mcpd?",
            socket.display()
        )))
    })?;
    let (direct, handback, took_pipes) = match &reply {
        HelloReply::Welcome(w) => (w.direct, w.handback, w.pipes),
        _ => (false, false, false),
    };
    let session = check_reply(reply, req.again).map_err(Failure::Refused)?;
    let pipes = match offer {
        Some(offer) if took_pipes => Some(offer.hand_over(&stream).map_err(|e| {
            Failure::Unreachable(Exit::fail(format!(
                "cannot hand the relay's pipes to the daemon at {}: {e}",
                socket.display()
            )))
        })?),
        Some(_) => {
            crate::pipes::debug(
                "relaying over the socket: this mcpd does not take the relay's pipes (it predates them)",
            );
            None
        }
        None => None,
    };

    stream
        .set_read_timeout(None)
        .and_then(|()| stream.set_write_timeout(None))
        .map_err(lost)?;
    Ok(Attached {
        stream,
        early,
        session,
        direct: direct && req.direct,
        handback: direct && req.direct && handback,
        pipes,
    })
}

/// Whether this shim can go on with the daemon that sent `reply`; the session id if so.
///
/// The rule (`mcpd_proto::version`): a `welcome` or an `error` whose `v` this shim does not
/// speak is a version mismatch and says which side to upgrade; any other `error` is a refusal,
/// printed as the daemon wrote it. (A daemon that cannot speak our version refuses the hello.)
fn check_reply(reply: HelloReply, again: bool) -> Result<Option<u64>, Exit> {
    match reply {
        HelloReply::Welcome(w) if version::supported(w.v) => Ok(w.session),
        HelloReply::Welcome(w) => Err(mismatch(w.v, again, None)),
        HelloReply::Error(refusal) if !version::supported(refusal.v) => {
            Err(mismatch(refusal.v, again, Some(&refusal.message)))
        }
        HelloReply::Error(refusal) => Err(Exit::fail(format!(
            "the daemon refused the session: {}",
            refusal.message
        ))),
        HelloReply::Unknown => Err(Exit::fail(format!(
            "the daemon answered the hello with a reply this shim (protocol {PROTOCOL_VERSION}) \
             does not know; upgrade mcp-shim to match mcpd"
        ))),
    }
}

/// `the daemon now speaks socket protocol 2 and this mcp-shim speaks 1; upgrade mcp-shim`.
fn mismatch(theirs: u32, again: bool, message: Option<&str>) -> Exit {
    let upgrade = if theirs > PROTOCOL_VERSION {
        "mcp-shim"
    } else {
        "mcpd"
    };
    let now = if again { "now " } else { "" };
    let said = message.map_or_else(String::new, |m| format!(" (the daemon said: {m})"));
    Exit::fail(format!(
        "the daemon {now}speaks socket protocol {theirs} and this mcp-shim speaks \
         {PROTOCOL_VERSION}; upgrade {upgrade}{said}"
    ))
}

/// The attach hello `req` asks for, describing the client that launched us. A direct one also
/// says that this shim takes the client's stdio back when the daemon stops on purpose.
fn hello(req: Request<'_>, resume: Option<Resume>, pipes: bool) -> Hello {
    Hello::Attach(AttachHello {
        v: PROTOCOL_VERSION,
        profile: req.profile.to_owned(),
        client: ClientProcess {
            pid: Some(std::os::unix::process::parent_id()),
            cwd: std::env::current_dir()
                .ok()
                .map(|dir| dir.to_string_lossy().into_owned()),
            shim_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        },
        resume,
        direct: req.direct,
        handback: req.direct,
        direct_input: if req.direct { req.direct_input } else { 0 },
        pipes,
    })
}

/// The exit for a failed [`trust::connect`]: a refusal as it is, an OS error via
/// [`connect_error`].
pub fn connect_failure(socket: &Path, e: &ConnectError) -> Exit {
    match e {
        ConnectError::Io(e) => connect_error(socket, e),
        ConnectError::Untrusted(why) => Exit::fail(why),
    }
}

/// One line naming the socket, what went wrong and what to do about it.
pub fn connect_error(socket: &Path, e: &io::Error) -> Exit {
    let path = socket.display();
    let missing = match e.raw_os_error() {
        Some(libc::ENOENT) => Some("no such socket"),
        Some(libc::ECONNREFUSED) => Some("connection refused"),
        Some(libc::ENOTDIR) => Some("a parent is not a directory"),
        _ => None,
    };
    match (missing, e.raw_os_error()) {
        (Some(reason), _) => {
            Exit::fail(format!("no mcpd daemon at {path} ({reason}); {START_HINT}"))
        }
        (None, Some(libc::EACCES | libc::EPERM)) => Exit::fail(format!(
            "cannot connect to mcpd at {path}: permission denied; the socket must belong to you \
             (check the owner and mode of it and its directory)"
        )),
        (None, _) => Exit::fail(format!("cannot connect to mcpd at {path}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcpd_proto::{HelloError, Welcome};

    fn message(exit: Exit) -> String {
        exit.message.unwrap_or_default()
    }

    #[test]
    fn only_a_welcome_of_a_version_this_shim_speaks_is_accepted() {
        let welcome = |v| {
            HelloReply::Welcome(Welcome {
                v,
                daemon: "9".into(),
                session: Some(4),
                direct: false,
                handback: false,
                pipes: false,
            })
        };
        for v in version::MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION {
            assert_eq!(check_reply(welcome(v), true).ok(), Some(Some(4)));
        }
        let err = message(check_reply(welcome(PROTOCOL_VERSION + 1), false).unwrap_err());
        assert!(err.ends_with("upgrade mcp-shim"), "{err}");
    }

    #[test]
    fn version_mismatches_say_which_side_to_upgrade() {
        let newer = HelloReply::Error(HelloError {
            v: PROTOCOL_VERSION + 1,
            message: "socket protocol 1 is not supported; this mcpd speaks 2".into(),
        });
        let err = message(check_reply(newer, true).unwrap_err());
        assert_eq!(
            err,
            format!(
                "the daemon now speaks socket protocol {} and this mcp-shim speaks {}; upgrade \
                 mcp-shim (the daemon said: socket protocol 1 is not supported; this mcpd speaks 2)",
                PROTOCOL_VERSION + 1,
                PROTOCOL_VERSION
            )
        );
        let ancient = HelloReply::Welcome(Welcome {
            v: 0,
            daemon: String::new(),
            session: None,
            direct: false,
            handback: false,
            pipes: false,
        });
        let err = message(check_reply(ancient, false).unwrap_err());
        assert!(
            err.starts_with("the daemon speaks socket protocol 0") && err.ends_with("upgrade mcpd"),
            "{err}"
        );
    }

    #[test]
    fn a_refusal_in_our_version_is_printed_as_is() {
        let reply = HelloReply::Error(HelloError {
            v: PROTOCOL_VERSION,
            message: "unknown profile `x`".into(),
        });
        assert_eq!(
            message(check_reply(reply, true).unwrap_err()),
            "the daemon refused the session: unknown profile `x`"
        );
    }
}
