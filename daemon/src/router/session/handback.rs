//! Handing a direct session's descriptors back to its shim when the daemon stops on purpose
//! (docs/SHIM.md "Direct mode"): a shim that announced `handback` in its hello gets the
//! client's stdin and stdout back over the same accepted socket (`SCM_RIGHTS`), with what the
//! session knew and the bytes in transit, and resumes the session on the next daemon as a
//! relaying shim does.
//!
//! No byte is lost on the way: what the session had read from the client but not handled (a
//! partial line, lines not routed yet) goes back as the hand-back's `input`; output the client
//! had not taken yet (the rest of a line half written, lines queued after it) as its `output`,
//! which the shim writes before anything of its own. The [`Valve`] in front of the client's
//! stdout makes that possible: once closed, whatever the session's writer still writes lands in
//! its buffer instead of the pipe, starting exactly where the client's pipe stopped.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use mcpd_proto::direct::{self, Handback, MAX_HANDBACK_INPUT, MAX_HANDBACK_OUTPUT};
use serde_json::value::RawValue;
use tokio::io::{AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::UnixStream;

/// How long the hand-back may take to reach the shim (the daemon waits at most 5 s for its
/// connections once it stops).
const HANDBACK_TIMEOUT: Duration = Duration::from_secs(3);

/// What a shim needs to resume a session on another daemon (see `Session::resumable`).
#[derive(Debug, Default)]
pub(crate) struct Resumable {
    /// The `params` of the client's `initialize`, as it wrote them.
    pub initialize: Option<Box<RawValue>>,
    /// The client sent `notifications/initialized`.
    pub initialized: bool,
    /// The raw ids of the client's requests still unanswered.
    pub in_flight: Vec<Arc<str>>,
}

/// A direct session whose shim takes the descriptors back: filled in by the session loop
/// (`unix::run`) when the daemon shuts down.
#[derive(Debug)]
pub(super) struct Planned {
    /// The valve in front of the client's stdout.
    pub valve: Arc<ValveState>,
    /// What the session knew when it stopped; `None` until it stopped for a shutdown.
    pub resumable: Option<Resumable>,
}

/// The shared side of a [`Valve`].
#[derive(Debug, Default)]
pub(super) struct ValveState {
    closed: AtomicBool,
    /// The writer waiting on the client's pipe, woken when the valve closes. A std mutex: held
    /// only to swap a waker or append bytes, never across an await.
    waker: Mutex<Option<Waker>>,
    /// What was written after the valve closed.
    captured: Mutex<Vec<u8>>,
}

impl ValveState {
    /// From now on, writes land in the buffer; a writer waiting on the pipe is woken to do so.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let waker = self
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The bytes written since the valve closed.
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.captured.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn capture(&self, bytes: &[u8]) {
        self.captured
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
    }
}

/// The client's stdout, until [`ValveState::close`]: then every byte still written (the rest of
/// a line, then whole lines) is kept for the hand-back instead.
#[derive(Debug)]
pub(super) struct Valve<W> {
    inner: W,
    state: Arc<ValveState>,
}

impl<W> Valve<W> {
    /// A valve in front of `inner`, and its shared side.
    pub fn new(inner: W) -> (Self, Arc<ValveState>) {
        let state = Arc::new(ValveState::default());
        (
            Self {
                inner,
                state: Arc::clone(&state),
            },
            state,
        )
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Valve<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if !self.state.closed.load(Ordering::SeqCst) {
            *self
                .state
                .waker
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
            // Closed meanwhile: the close found no waker yet, so look again.
            if !self.state.closed.load(Ordering::SeqCst) {
                return Pin::new(&mut self.inner).poll_write(cx, buf);
            }
        }
        self.state.capture(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.state.closed.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.state.closed.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Why a hand-back could not be made (the session then ends with the end line, as for a shim
/// that did not announce it).
#[derive(Debug, thiserror::Error)]
pub(super) enum HandbackError {
    #[error("{what} of {len} bytes is over the {max} bytes a hand-back carries")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: u64,
    },
    #[error("cannot encode the hand-back line: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("cannot keep the client's stdin to hand it back: {0}")]
    Keep(#[source] io::Error),
    #[error("cannot send the descriptors back: {0}")]
    Send(#[source] io::Error),
    #[error("the shim did not take the hand-back within {}s", HANDBACK_TIMEOUT.as_secs())]
    TimedOut,
}

/// What goes back to the shim.
pub(super) struct Parcel {
    pub session: u64,
    pub resumable: Resumable,
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    /// The client's input read and not handled.
    pub input: Vec<u8>,
    /// Output the client did not take.
    pub output: Vec<u8>,
}

/// Checks that `parcel` fits a hand-back; the error says why not.
pub(super) fn check(parcel: &Parcel) -> Result<(), HandbackError> {
    for (what, len, max) in [
        ("the unread input", parcel.input.len(), MAX_HANDBACK_INPUT),
        (
            "the unwritten output",
            parcel.output.len(),
            MAX_HANDBACK_OUTPUT,
        ),
    ] {
        if len as u64 > max {
            return Err(HandbackError::TooLarge { what, len, max });
        }
    }
    Ok(())
}

/// Sends the hand-back line with the client's descriptors attached, then the input and output
/// bytes it announces. Our copies of the descriptors are closed when this returns.
pub(super) async fn send(stream: &mut UnixStream, parcel: Parcel) -> Result<(), HandbackError> {
    check(&parcel)?;
    let Parcel {
        session,
        resumable,
        stdin,
        stdout,
        input,
        output,
    } = parcel;
    let in_flight = resumable
        .in_flight
        .iter()
        .filter_map(|id| RawValue::from_string(id.to_string()).ok())
        .collect();
    let line = Handback {
        op: Handback::OP.into(),
        session: Some(session),
        initialize: resumable.initialize,
        initialized: resumable.initialized,
        in_flight,
        input: input.len() as u64,
        output: output.len() as u64,
        reason: "mcpd is stopping; the shim resumes the session on the next one".into(),
    };
    let mut line = serde_json::to_vec(&line).map_err(HandbackError::Encode)?;
    line.push(b'\n');
    let sending = async {
        let sent = stream
            .async_io(Interest::WRITABLE, || {
                direct::send_with_fds(stream.as_fd(), &line, &[stdin.as_fd(), stdout.as_fd()])
            })
            .await?;
        stream.write_all(&line[sent..]).await?;
        stream.write_all(&input).await?;
        stream.write_all(&output).await?;
        stream.flush().await
    };
    match tokio::time::timeout(HANDBACK_TIMEOUT, sending).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(HandbackError::Send(e)),
        Err(_) => Err(HandbackError::TimedOut),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn once_closed_the_valve_keeps_the_rest_of_a_blocked_write_for_the_hand_back() {
        let (client, daemon) = tokio::io::duplex(8);
        let (mut valve, state) = Valve::new(daemon);
        let writer = tokio::spawn(async move {
            valve.write_all(b"first line\nsecond").await.unwrap();
            valve.write_all(b" line\n").await.unwrap();
        });
        // The client takes 8 bytes and no more: the writer is blocked in the first line.
        let mut client = client;
        let mut taken = [0u8; 8];
        client.read_exact(&mut taken).await.unwrap();
        tokio::task::yield_now().await;
        state.close();
        writer.await.unwrap();
        let mut rest = state.take();
        // Whatever the pipe had room for reached the client (the writer is gone now, so the
        // client reads to the end); the rest was kept, starting where the pipe stopped.
        let mut delivered = taken.to_vec();
        client.read_to_end(&mut delivered).await.unwrap();
        assert!(delivered.len() < 23, "the valve let everything through");
        delivered.append(&mut rest);
        assert_eq!(delivered, b"first line\nsecond line\n");
    }
}
