//! A blocking control connection to the daemon: one hello, then request/response line pairs.

use std::io::{self, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mcpd_proto::line::{Line, MAX_CONTROL_LINE, read_line_bounded};
use mcpd_proto::trust::{self, ConnectError};
use mcpd_proto::{
    ControlHello, ControlRequest, ControlResponse, Hello, HelloReply, PROTOCOL_VERSION, version,
};

/// One control connection to mcpd.
#[derive(Debug)]
pub struct ControlClient {
    socket: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl ControlClient {
    /// Connects to the daemon at `socket` and completes the control hello within `timeout`.
    /// Before the hello is written, the socket's directory and the daemon's uid are checked
    /// ([`trust::connect`]): a daemon that is not ours gets nothing.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Self> {
        let stream = trust::connect(socket).map_err(|e| match e {
            ConnectError::Io(e) => connect_error(socket, e),
            ConnectError::Untrusted(why) => anyhow::anyhow!(why),
        })?;
        let writer = stream
            .try_clone()
            .with_context(|| format!("failed to set up the connection to {}", socket.display()))?;
        let mut client = Self {
            socket: socket.to_path_buf(),
            reader: BufReader::new(stream),
            writer,
        };
        let hello = Hello::Control(ControlHello {
            v: PROTOCOL_VERSION,
        });
        let line = client
            .exchange(&hello, timeout)
            .with_context(|| format!("control hello to mcpd at {} failed", socket.display()))?;
        match serde_json::from_str::<HelloReply>(&line) {
            Ok(HelloReply::Welcome(w)) => match version::mismatch(w.v, "mcpctl", "mcpd") {
                None => Ok(client),
                Some(why) => bail!("mcpd at {}: {why}", socket.display()),
            },
            Ok(HelloReply::Error(e)) if !version::supported(e.v) => bail!(
                "mcpd at {} refused the control connection: {} (mcpd said: {})",
                socket.display(),
                version::mismatch(e.v, "mcpctl", "mcpd").unwrap_or_default(),
                e.message
            ),
            Ok(HelloReply::Error(e)) => bail!(
                "mcpd at {} refused the control connection: {}",
                socket.display(),
                e.message
            ),
            Ok(HelloReply::Unknown) => bail!(
                "mcpd at {} answered the hello with a reply this mcpctl does not understand",
                socket.display()
            ),
            Err(e) => bail!(
                "mcpd at {} sent an invalid hello reply ({e}): {}",
                socket.display(),
                abbreviate(&line)
            ),
        }
    }

    /// Sends one request and decodes its response.
    pub fn request(
        &mut self,
        request: &ControlRequest,
        timeout: Duration,
    ) -> Result<ControlResponse> {
        self.request_raw(request, timeout)
            .map(|(response, _)| response)
    }

    /// Sends one request; returns its decoded response and the line it was decoded from.
    pub fn request_raw(
        &mut self,
        request: &ControlRequest,
        timeout: Duration,
    ) -> Result<(ControlResponse, String)> {
        let line = self.exchange(request, timeout).with_context(|| {
            format!(
                "control request to mcpd at {} failed",
                self.socket.display()
            )
        })?;
        let response = serde_json::from_str(&line).with_context(|| {
            format!(
                "mcpd at {} sent an invalid control reply: {}",
                self.socket.display(),
                abbreviate(&line)
            )
        })?;
        Ok((response, line))
    }

    /// Sends any serialisable request (for requests this build's `ControlRequest` lacks) and
    /// returns the reply line.
    pub fn request_line(
        &mut self,
        request: &impl serde::Serialize,
        timeout: Duration,
    ) -> Result<String> {
        self.exchange(request, timeout).with_context(|| {
            format!(
                "control request to mcpd at {} failed",
                self.socket.display()
            )
        })
    }

    /// The next line the daemon sends, waiting at most `timeout` (`None`: forever); `None` at
    /// the end of the connection.
    pub fn next_line(&mut self, timeout: Option<Duration>) -> Result<Option<String>> {
        self.reader
            .get_ref()
            .set_read_timeout(timeout)
            .context("failed to set a read timeout")?;
        match read_line_bounded(&mut self.reader, MAX_CONTROL_LINE) {
            Ok(Some(Line::Complete(bytes))) => String::from_utf8(bytes)
                .map(Some)
                .context("the reply is not UTF-8"),
            Ok(Some(Line::TooLong { len })) => {
                bail!("a reply is {len} bytes long, over the limit of {MAX_CONTROL_LINE}")
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e).context("failed to read from mcpd"),
        }
    }

    /// Splits the connection for a reader thread: the buffered reading half and a writing
    /// half.
    pub fn into_parts(self) -> (BufReader<UnixStream>, UnixStream) {
        (self.reader, self.writer)
    }

    /// Writes `message` as one line and reads one line back within `timeout`.
    fn exchange(&mut self, message: &impl serde::Serialize, timeout: Duration) -> Result<String> {
        let mut line = serde_json::to_string(message).context("failed to encode the message")?;
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .and_then(|()| self.writer.flush())
            .context("failed to send")?;
        self.reader
            .get_ref()
            .set_read_timeout(Some(timeout))
            .context("failed to set a read timeout")?;
        match read_line_bounded(&mut self.reader, MAX_CONTROL_LINE) {
            Ok(Some(Line::Complete(bytes))) => {
                String::from_utf8(bytes).context("the reply is not UTF-8")
            }
            Ok(Some(Line::TooLong { len })) => {
                bail!("the reply is {len} bytes long, over the limit of {MAX_CONTROL_LINE}")
            }
            Ok(None) => bail!("mcpd closed the connection without answering"),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                bail!("mcpd did not answer within {} s", timeout.as_secs())
            }
            Err(e) => Err(e).context("failed to read the reply"),
        }
    }
}

/// The error for a failed connect: for "nobody is listening" it says how to start the daemon.
fn connect_error(socket: &Path, e: io::Error) -> anyhow::Error {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => anyhow::anyhow!(
            "mcpd is not running: nothing is listening on {} ({e}); start it with `mcpd`, \
             or with `systemctl --user start mcpd.socket` if the systemd units are installed",
            socket.display()
        ),
        _ => anyhow::Error::new(e)
            .context(format!("failed to connect to mcpd at {}", socket.display())),
    }
}

/// A line shortened for an error message.
fn abbreviate(line: &str) -> String {
    const MAX: usize = 200;
    match line.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line.to_owned(),
    }
}
