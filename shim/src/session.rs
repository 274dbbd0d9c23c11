//! Connecting to the daemon and the attach handshake.

use std::io::{self, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use mcpd_proto::line::{Line, MAX_CONTROL_LINE, read_line_bounded};
use mcpd_proto::{AttachHello, ClientProcess, Hello, HelloReply, PROTOCOL_VERSION};

use crate::Exit;

/// How long the daemon may take to answer the hello.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How to start the daemon, for the "no daemon" message.
const START_HINT: &str = "start it with 'mcpd' or 'systemctl --user start mcpd.socket'";

/// A session the daemon welcomed.
#[derive(Debug)]
pub struct Attached {
    /// The connection, with no timeouts set.
    pub stream: UnixStream,
    /// Bytes the daemon sent after its welcome line, read along with it; they go to stdout first.
    pub early: Vec<u8>,
}

/// Connects to the daemon at `socket` and attaches to `profile`.
pub fn attach(socket: &Path, profile: &str) -> Result<Attached, Exit> {
    let stream = UnixStream::connect(socket).map_err(|e| connect_error(socket, &e))?;
    let lost = |e: io::Error| {
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            Exit::fail(format!(
                "the daemon at {} did not answer within {} s",
                socket.display(),
                HANDSHAKE_TIMEOUT.as_secs()
            ))
        } else {
            Exit::fail(format!(
                "lost the connection to the daemon at {} during the handshake: {e}",
                socket.display()
            ))
        }
    };
    stream
        .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT)))
        .map_err(lost)?;

    let mut hello = serde_json::to_vec(&hello(profile))
        .map_err(|e| Exit::fail(format!("cannot encode the hello: {e}")))?;
    hello.push(b'\n');
    (&stream).write_all(&hello).map_err(lost)?;

    let mut reader = BufReader::new(&stream);
    let reply = match read_line_bounded(&mut reader, MAX_CONTROL_LINE).map_err(lost)? {
        Some(Line::Complete(line)) => line,
        Some(Line::TooLong { len }) => {
            return Err(Exit::fail(format!(
                "the daemon at {} answered the hello with a {len}-byte line; is it really mcpd?",
                socket.display()
            )));
        }
        None => {
            return Err(Exit::fail(format!(
                "the daemon at {} closed the connection without answering the hello",
                socket.display()
            )));
        }
    };
    let early = reader.buffer().to_vec();
    drop(reader);

    match serde_json::from_slice::<HelloReply>(&reply) {
        // Any protocol version is fine here: a welcome means the daemon accepted ours.
        Ok(HelloReply::Welcome(_)) => {}
        Ok(HelloReply::Error(refusal)) => {
            return Err(Exit::fail(format!(
                "the daemon refused the session: {}",
                refusal.message
            )));
        }
        Ok(HelloReply::Unknown) => {
            return Err(Exit::fail(format!(
                "the daemon answered the hello with a reply this shim (protocol {PROTOCOL_VERSION}) \
                 does not know; upgrade mcp-shim to match mcpd"
            )));
        }
        Err(e) => {
            return Err(Exit::fail(format!(
                "the daemon at {} sent an unreadable answer to the hello ({e}); is it really mcpd?",
                socket.display()
            )));
        }
    }

    stream
        .set_read_timeout(None)
        .and_then(|()| stream.set_write_timeout(None))
        .map_err(lost)?;
    Ok(Attached { stream, early })
}

/// The attach hello for `profile`, describing the client that launched us.
fn hello(profile: &str) -> Hello {
    Hello::Attach(AttachHello {
        v: PROTOCOL_VERSION,
        profile: profile.to_owned(),
        client: ClientProcess {
            pid: Some(std::os::unix::process::parent_id()),
            cwd: std::env::current_dir()
                .ok()
                .map(|dir| dir.to_string_lossy().into_owned()),
            shim_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        },
        resume: None,
    })
}

/// One line naming the socket, what went wrong and what to do about it.
fn connect_error(socket: &Path, e: &io::Error) -> Exit {
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
