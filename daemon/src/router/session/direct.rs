//! The direct front end of a session (`mcp-shim --direct`, docs/SHIM.md): after the welcome the
//! shim hands over the client's stdin and stdout (`SCM_RIGHTS`, `mcpd_proto::direct`), and the
//! session reads and writes them itself, two process hops fewer per message. The same session
//! core, limits, output budget and stall check as the socket front end apply (`unix::run`);
//! only the descriptors differ.
//!
//! The shim's socket stays open for the session's life and carries nothing after the
//! handover, except one [`DirectEnd`] line from here at the end: the shim turns it into its exit
//! status. Its closing (the shim was stopped, or its client died) ends the session. When the
//! daemon shuts down and the shim announced `handback`, the session goes back to the shim
//! instead (`handback.rs`). A shim that resumes a session handed back by the previous daemon
//! brings the input that daemon had read and not handled, right after the handover byte; it is
//! read before the pipe.
//!
//! The peer was checked like every connection (`server.rs`: its uid must be ours) before its
//! hello was read, so descriptors are only ever taken from the daemon's own user; they must be
//! pipes or stream sockets, open for reading (stdin) and writing (stdout). A descriptor that is
//! anything else is closed unused and the session ends before it starts.

use std::fs::File;
use std::io::{self, Cursor, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use mcpd_proto::direct::{self, DirectEnd, MAX_HANDBACK_INPUT, RecvError};
use mcpd_proto::line::MAX_MESSAGE_LINE;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Chain, Interest, ReadBuf};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::FramedRead;

use super::handback::{self, Planned, Valve};
use super::unix::{Ended, Started, run};
use crate::codec::LineCodec;

/// How long the shim may take to send its descriptors after the welcome.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the end line may take to reach the shim.
const END_TIMEOUT: Duration = Duration::from_secs(1);

/// What the shim's direct hello asked for beside the handover.
#[derive(Debug, Clone, Copy, Default)]
pub struct Asked {
    /// The shim takes the descriptors back when the daemon stops on purpose.
    pub handback: bool,
    /// Bytes of the client's input that follow the handover byte (handed back by the previous
    /// daemon), ahead of what is still in the client's pipe.
    pub input: u64,
    /// The descriptors are not the client's but a relaying shim's pipe pair (docs/SHIM.md,
    /// "The relay's pipes"): the shim still copies every line, so the session is a relayed one
    /// (`relay` in `mcpctl status`), it is never handed back and no end line is written (the
    /// shim sees the pipe close, as it saw the socket close before, and resumes).
    pub pipes: bool,
}

/// The client's input: what the shim brought along with the handover, then its pipe.
type Input = Chain<Cursor<Vec<u8>>, Stdio>;

/// Takes the client's stdio from the shim that was just welcomed on `reader` + `writer` and
/// serves the session on it until it ends; then tells the shim why, or, when the daemon stops
/// and the shim can take them, hands the descriptors back (`handback.rs`).
pub async fn serve(
    started: Started,
    reader: FramedRead<OwnedReadHalf, LineCodec>,
    writer: OwnedWriteHalf,
    asked: Asked,
) {
    let id = started.id;
    let (stream, taken) = if reader.read_buffer().is_empty() {
        match reader.into_inner().reunite(writer) {
            Ok(mut stream) => {
                let taken = take_stdio(&mut stream, asked.input).await;
                (Some(stream), taken)
            }
            Err(e) => (None, Err(HandoverError::Rejoin(e))),
        }
    } else {
        (None, Err(HandoverError::BytesBeforeHandover))
    };
    let what = if asked.pipes {
        "relayed session's pipes"
    } else {
        "direct session"
    };
    let (mut stream, (stdin, stdout, brought)) = match (stream, taken) {
        (Some(stream), Ok(taken)) => (stream, taken),
        (stream, taken) => {
            let why = taken
                .err()
                .map_or_else(|| "no socket".to_owned(), |e| e.to_string());
            tracing::warn!(session = id, "{what} refused: {why}");
            started.services.hub.unregister(id);
            if asked.pipes
                && let Some(mut stream) = stream
            {
                // The shim relays over the socket from its next attach on (docs/SHIM.md).
                let end = DirectEnd::new(false, format!("mcpd refused the relay's pipes: {why}"));
                if let Ok(mut line) = serde_json::to_vec(&end) {
                    line.push(b'\n');
                    let _ = tokio::time::timeout(END_TIMEOUT, stream.write_all(&line)).await;
                }
            }
            return;
        }
    };
    if asked.pipes {
        tracing::debug!(session = id, "relay: serving the shim's pipes");
    } else {
        tracing::debug!(session = id, "direct: serving the client's own stdio");
        started.services.hub.set_direct(id);
    }
    // A second descriptor on the client's stdout, kept to hand it back: the first goes into
    // the session's writer, which closes it when it ends. Only kept while it may go back.
    let mut stdout_back = if asked.handback && !asked.pipes {
        match stdout.0.get_ref().as_fd().try_clone_to_owned() {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::warn!(
                    session = id,
                    "direct: cannot keep the client's stdout to hand it back ({e}); the session ends with the daemon"
                );
                None
            }
        }
    } else {
        None
    };
    let stdout_flags = stdout.1;
    let (valve, valve_state) = Valve::new(stdout);
    let mut planned = stdout_back.as_ref().map(|_| Planned {
        valve: valve_state,
        resumable: None,
    });
    let mut lines = FramedRead::new(
        AsyncReadExt::chain(Cursor::new(brought), stdin),
        LineCodec::new(MAX_MESSAGE_LINE),
    );
    let ended = run(
        started,
        &mut lines,
        valve,
        hangup(&stream),
        planned.as_mut(),
    )
    .await;
    if asked.pipes {
        // The shim sees its pipe close (the session's writer is gone) as it saw the socket
        // close before: what it had in flight gets `-32012` and it resumes, unless the
        // client is gone.
        tracing::debug!(session = id, "relay: pipes closed ({ended:?})");
        return;
    }
    let resumable = planned.as_mut().and_then(|p| p.resumable.take());
    let end = match (ended, resumable, stdout_back.take()) {
        (Ended::Shutdown, Some(resumable), Some(stdout)) => {
            let stdout = (stdout, stdout_flags);
            match give_back(&mut stream, id, resumable, lines, stdout, planned).await {
                Ok(()) => {
                    tracing::info!(
                        session = id,
                        "direct: handed the client's stdio back to its shim"
                    );
                    return;
                }
                Err(why) => {
                    tracing::warn!(
                        session = id,
                        "direct: cannot hand the client's stdio back: {why}"
                    );
                    DirectEnd::new(
                        false,
                        format!(
                            "mcpd is shutting down and could not hand the session back ({why})"
                        ),
                    )
                }
            }
        }
        (Ended::ClientClosed, ..) => DirectEnd::new(true, "the client closed its input"),
        (Ended::WriteFailed, ..) => DirectEnd::new(true, "the client stopped reading"),
        (Ended::Hangup, ..) => return,
        (Ended::ReadFailed, ..) => DirectEnd::new(false, "reading the client's input failed"),
        (Ended::Stalled, ..) => DirectEnd::new(
            false,
            "the client read nothing while output waited for it; see mcpd's log",
        ),
        (Ended::Shutdown, ..) => DirectEnd::new(
            false,
            "mcpd is shutting down; a direct session does not survive that",
        ),
    };
    if let Ok(mut line) = serde_json::to_vec(&end) {
        line.push(b'\n');
        let _ = tokio::time::timeout(END_TIMEOUT, stream.write_all(&line)).await;
    }
}

/// Hands the client's stdin (inside `lines`, with what was read of it and not handled) and
/// `stdout` (with its flags as the client gave them) back to the shim on `stream`, with the
/// output the valve kept. Both get their file status flags back (blocking, if they were).
async fn give_back(
    stream: &mut UnixStream,
    id: u64,
    resumable: handback::Resumable,
    lines: FramedRead<Input, LineCodec>,
    (stdout, stdout_flags): (OwnedFd, OFlag),
    planned: Option<Planned>,
) -> Result<(), handback::HandbackError> {
    // What was read and not framed yet, then what the shim had brought and was not read yet.
    let mut input = lines.read_buffer().to_vec();
    let (brought, stdin) = lines.into_inner().into_inner();
    let at = usize::try_from(brought.position()).unwrap_or(usize::MAX);
    input.extend_from_slice(brought.get_ref().get(at..).unwrap_or_default());
    let stdin_flags = stdin.1;
    // A second descriptor on it: the `Stdio` restores the flags as it closes its own.
    let stdin = match stdin.0.get_ref().as_fd().try_clone_to_owned() {
        Ok(fd) => fd,
        Err(e) => return Err(handback::HandbackError::Keep(e)),
    };
    for (fd, flags) in [(&stdin, stdin_flags), (&stdout, stdout_flags)] {
        if let Err(e) = fcntl(fd, FcntlArg::F_SETFL(flags)) {
            tracing::debug!(
                session = id,
                "direct: cannot restore a descriptor's flags: {e}"
            );
        }
    }
    let output = planned.map(|p| p.valve.take()).unwrap_or_default();
    let parcel = handback::Parcel {
        session: id,
        resumable,
        stdin,
        stdout,
        input,
        output,
    };
    handback::send(stream, parcel).await
}

/// Receives the descriptors on `stream` and checks them, then the `input` bytes the shim brings
/// along: `(stdin, stdout, input)`.
async fn take_stdio(
    stream: &mut UnixStream,
    input: u64,
) -> Result<(Stdio, Stdio, Vec<u8>), HandoverError> {
    if input > MAX_HANDBACK_INPUT {
        return Err(HandoverError::TooMuchInput(input));
    }
    let received = tokio::time::timeout(
        HANDOVER_TIMEOUT,
        stream.async_io(Interest::READABLE, || {
            match direct::recv_stdio(stream.as_fd()) {
                Err(RecvError::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
                other => Ok(other),
            }
        }),
    )
    .await;
    let (stdin, stdout) = match received {
        Err(_) => return Err(HandoverError::TimedOut),
        Ok(Err(e)) => return Err(HandoverError::Receive(e)),
        Ok(Ok(Err(e))) => return Err(HandoverError::Handover(e)),
        Ok(Ok(Ok(fds))) => fds,
    };
    let stdin = Stdio::new(stdin, Interest::READABLE).map_err(HandoverError::Stdin)?;
    let stdout = Stdio::new(stdout, Interest::WRITABLE).map_err(HandoverError::Stdout)?;
    // The length was checked above: at most a line of the largest size and a little more.
    let mut brought = vec![0u8; usize::try_from(input).unwrap_or_default()];
    match tokio::time::timeout(HANDOVER_TIMEOUT, stream.read_exact(&mut brought)).await {
        Ok(Ok(_)) => Ok((stdin, stdout, brought)),
        Ok(Err(e)) => Err(HandoverError::Receive(e)),
        Err(_) => Err(HandoverError::TimedOut),
    }
}

/// Completes when the shim closes its socket (or sends anything, which it never does).
async fn hangup(stream: &UnixStream) {
    let mut buf = [0u8; 64];
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        match stream.try_read(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            _ => return,
        }
    }
}

/// Why a direct session could not start; logged with the session's id, and the session ends
/// before it began (the shim sees its socket close without an end line).
#[derive(Debug, thiserror::Error)]
enum HandoverError {
    #[error("cannot rejoin the socket: {0}")]
    Rejoin(#[source] tokio::net::unix::ReuniteError),
    #[error("the shim sent bytes after its hello instead of its descriptors")]
    BytesBeforeHandover,
    #[error("no descriptors within {}s of the welcome", HANDOVER_TIMEOUT.as_secs())]
    TimedOut,
    #[error("cannot receive the descriptors: {0}")]
    Receive(#[source] io::Error),
    #[error("{0}")]
    Handover(#[source] RecvError),
    #[error("the shim brings {0} bytes of input, over the {MAX_HANDBACK_INPUT} a handover takes")]
    TooMuchInput(u64),
    #[error("stdin {0}")]
    Stdin(#[source] StdioError),
    #[error("stdout {0}")]
    Stdout(#[source] StdioError),
}

/// What is wrong with one handed-over descriptor; the text completes "stdin ..." / "stdout ...".
#[derive(Debug, thiserror::Error)]
enum StdioError {
    #[error("{0}")]
    Unusable(#[source] direct::Unusable),
    #[error("cannot be inspected: {0}")]
    Inspect(#[source] nix::Error),
    #[error("cannot be made non-blocking: {0}")]
    NonBlocking(#[source] nix::Error),
    #[error("cannot be waited on: {0}")]
    Register(#[source] io::Error),
}

/// One of the client's descriptors, non-blocking, waited on by the runtime; and its file status
/// flags as the client gave them. However the session ends, the open file description gets
/// them back when this is dropped: it is the client's, and the client's other children (or
/// whatever else shares it) would otherwise find it non-blocking.
#[derive(Debug)]
struct Stdio(AsyncFd<File>, OFlag);

impl Drop for Stdio {
    fn drop(&mut self) {
        if let Err(e) = fcntl(self.0.get_ref(), FcntlArg::F_SETFL(self.1)) {
            tracing::debug!("direct: cannot restore a descriptor's flags: {e}");
        }
    }
}

impl Stdio {
    /// Checks that `fd` is a pipe or a stream socket open for `interest`, makes it non-blocking and
    /// registers it. The error says what is wrong with it.
    fn new(fd: OwnedFd, interest: Interest) -> Result<Self, StdioError> {
        direct::usable(fd.as_fd(), !interest.is_readable()).map_err(StdioError::Unusable)?;
        let flags = fcntl(&fd, FcntlArg::F_GETFL)
            .map(OFlag::from_bits_truncate)
            .map_err(StdioError::Inspect)?;
        // The flag is on the open file description, which the client's other children may
        // share while the session runs (the relay copes with a non-blocking stdio it inherits,
        // and so must they); dropping the `Stdio` clears it again.
        fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))
            .map_err(StdioError::NonBlocking)?;
        // SAFETY: the `File` owns the open descriptor and moves into the `AsyncFd`, which
        // keeps it (same descriptor, same description) until it is dropped; nothing else
        // closes or replaces it.
        unsafe { AsyncFd::register_with_interest(File::from(fd), interest) }
            .map(|fd| Self(fd, flags))
            .map_err(|e| StdioError::Register(e.into()))
    }
}

impl AsyncRead for Stdio {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            // Read into the buffer's uninitialised room as tokio's own pipes and sockets do:
            // `initialize_unfilled` zeroed all of it (the codec's spare capacity) before every
            // read, a `memset` of ~4k instructions per message (callgrind, docs/BENCHMARKS.md).
            // SAFETY: nothing below de-initialises any of it; `read` only writes into it.
            let unfilled = unsafe { buf.unfilled_mut() };
            let wanted = unfilled.len();
            let read = |fd: &AsyncFd<File>| {
                // SAFETY: `read(2)` writes at most `wanted` bytes to `unfilled`, which is valid
                // for writes of that many bytes, and never reads from it.
                let n = unsafe {
                    libc::read(
                        fd.get_ref().as_raw_fd(),
                        unfilled.as_mut_ptr().cast(),
                        wanted,
                    )
                };
                usize::try_from(n).map_err(|_| io::Error::last_os_error())
            };
            match guard.try_io(read) {
                Ok(Ok(n)) => {
                    // SAFETY: `read(2)` initialised the first `n` bytes of the unfilled room.
                    unsafe { buf.assume_init(n) };
                    // A short read emptied the pipe or socket: it is not readable until more
                    // comes, which the runtime's edge-triggered epoll reports as a new event.
                    // Forgetting the readiness now saves the read that would fail with EAGAIN,
                    // one system call per message (as tokio's own sockets and pipes do).
                    if n > 0 && n < wanted {
                        guard.clear_ready();
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => {}
            }
        }
    }
}

impl AsyncWrite for Stdio {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| fd.get_ref().write(buf)) {
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Ok(n)) => {
                    // A short write filled the pipe: the same, for writing.
                    if n > 0 && n < buf.len() {
                        guard.clear_ready();
                    }
                    return Poll::Ready(Ok(n));
                }
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => {}
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Closing the descriptor (dropping it) is the end of output for a pipe.
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::fd::FromRawFd;

    use tokio::io::AsyncReadExt;

    use super::*;

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: pipe just created both; each is owned once.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    #[tokio::test]
    async fn a_pipe_is_read_and_written_without_blocking_the_runtime() {
        let (r, w) = pipe();
        let mut reader = Stdio::new(r, Interest::READABLE).unwrap();
        let mut writer = Stdio::new(w, Interest::WRITABLE).unwrap();
        let big = vec![b'x'; 300_000];
        let write = tokio::spawn(async move {
            writer.write_all(&big).await.unwrap();
        });
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await.unwrap();
        write.await.unwrap();
        assert_eq!(got.len(), 300_000);
    }

    /// `what`, or a failure after 5 s (a missed wake-up would otherwise hang the test).
    async fn within<F: std::future::Future>(what: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(5), what)
            .await
            .expect("done within 5 s")
    }

    #[tokio::test]
    async fn reads_that_fill_the_buffer_go_on_and_a_short_read_waits_for_the_next_write() {
        let (r, w) = pipe();
        let mut reader = Stdio::new(r, Interest::READABLE).unwrap();
        let mut writer = std::fs::File::from(w);
        std::io::Write::write_all(&mut writer, b"0123456789").unwrap();
        // Reads that fill the buffer keep the readiness: the rest is read without a new event.
        let mut four = [0u8; 4];
        for expected in [b"0123", b"4567"] {
            within(reader.read_exact(&mut four)).await.unwrap();
            assert_eq!(&four, expected);
        }
        // A short read drains the pipe and forgets the readiness...
        let mut rest = [0u8; 16];
        let n = within(reader.read(&mut rest)).await.unwrap();
        assert_eq!(&rest[..n], b"89");
        // ...and the next write is a new event: it is read, not missed.
        let later = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            std::io::Write::write_all(&mut writer, b"abc").unwrap();
            writer
        });
        let n = within(reader.read(&mut rest)).await.unwrap();
        assert_eq!(&rest[..n], b"abc");
        drop(later.await.unwrap());
        let n = within(reader.read(&mut rest)).await.unwrap();
        assert_eq!(n, 0, "the writer's close is the end of input");
    }

    /// Whether `fd`'s open file description is non-blocking.
    fn non_blocking(fd: &OwnedFd) -> bool {
        let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).unwrap());
        flags.contains(OFlag::O_NONBLOCK)
    }

    #[tokio::test]
    async fn the_clients_descriptors_are_blocking_again_when_the_session_lets_them_go() {
        let (r, w) = pipe();
        // What the client (or another of its children) keeps of the same descriptions.
        let (r_kept, w_kept) = (r.try_clone().unwrap(), w.try_clone().unwrap());
        let reader = Stdio::new(r, Interest::READABLE).unwrap();
        let writer = Stdio::new(w, Interest::WRITABLE).unwrap();
        assert!(non_blocking(&r_kept) && non_blocking(&w_kept));
        drop(reader);
        drop(writer);
        assert!(!non_blocking(&r_kept), "stdin is given back blocking");
        assert!(!non_blocking(&w_kept), "stdout is given back blocking");
    }

    #[test]
    fn the_wrong_end_of_a_pipe_or_a_file_is_refused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let (r, w) = pipe();
        let err = Stdio::new(w, Interest::READABLE).unwrap_err();
        assert_eq!(err.to_string(), "is not open for reading");
        let err = Stdio::new(r, Interest::WRITABLE).unwrap_err();
        assert_eq!(err.to_string(), "is not open for writing");
        let file = OwnedFd::from(tempfile::tempfile().unwrap());
        let err = Stdio::new(file, Interest::READABLE).unwrap_err();
        assert_eq!(
            err.to_string(),
            "is a regular file; only pipes and stream sockets are taken"
        );
    }
}
