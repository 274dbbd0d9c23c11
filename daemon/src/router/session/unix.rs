//! The Unix-socket front end of a session: a client attached through `mcp-shim`. It owns the
//! socket's halves, the line framing and the writer task, holds the client back while its
//! output is over budget (and closes a client that stalls), and hands each line to the
//! session core (`core.rs`), which knows nothing of sockets.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use mcpd_proto::Resume;
use mcpd_proto::observe::Direction;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use super::Services;
use super::core::Session;
use crate::codec::{Frame, LineCodec};
use crate::quiet::Quiet;
use crate::router::outbox::{Budget, Outbox, write_lines};

/// How long requests in flight may still be answered after the client closed its side (the
/// shim waits as long before it answers the rest with errors itself).
const CLIENT_EOF_GRACE: Duration = Duration::from_secs(2);
/// How long requests in flight may still be answered while the daemon shuts down: the daemon
/// stops its servers only after that (`server.rs`). With the writer's flush, the servers' stop
/// sequence and the sweep it fits systemd's `TimeoutStopSec` (systemd/mcpd.service).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The same for a direct session that goes back to its shim: shorter, because its client's
/// input is not read meanwhile (it goes back with the hand-back, and on to the next daemon), so
/// that the client's new requests are held up for 2 s at most; what is still in flight then is
/// answered `-32012` by the shim. The hand-back is made before the servers stop.
const HANDBACK_GRACE: Duration = Duration::from_secs(2);

/// Serves one attached session until the client goes away or the daemon shuts down.
pub async fn serve(
    session: Started,
    reader: FramedRead<OwnedReadHalf, LineCodec>,
    writer: OwnedWriteHalf,
) {
    let mut reader = reader;
    run(session, &mut reader, writer, std::future::pending(), None).await;
}

/// A session the daemon welcomed, before its front end runs it.
pub struct Started {
    pub services: Services,
    pub id: u64,
    pub profile: String,
    pub resume: Option<Resume>,
    pub in_flight: Arc<AtomicUsize>,
}

/// Why [`run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    /// The client closed its input (after the grace for its requests in flight).
    ClientClosed,
    /// Reading from the client failed.
    ReadFailed,
    /// Writing to the client failed: it stopped reading.
    WriteFailed,
    /// The client read nothing for the stall time while output waited for it.
    Stalled,
    /// The daemon shuts down.
    Shutdown,
    /// `hangup` completed (the direct front end: the shim went away).
    Hangup,
}

/// Runs a session whose client lines come from `reader` and whose output goes to `writer`
/// (the shim's socket, or the client's own pipes in direct mode), until the client goes away,
/// `hangup` completes or the daemon shuts down. With `planned` (a direct session whose shim
/// takes the descriptors back), a shutdown fills in what the session knew and closes the valve
/// in front of `writer`, so that the output still queued is kept for the hand-back; what was
/// read and not handled stays in `reader`'s buffer.
pub(super) async fn run<R, W>(
    started: Started,
    reader: &mut FramedRead<R, LineCodec>,
    writer: W,
    hangup: impl Future<Output = ()>,
    planned: Option<&mut super::handback::Planned>,
) -> Ended
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let Started {
        services,
        id,
        profile,
        resume,
        in_flight,
    } = started;
    let services = Arc::new(services);
    let (limit, stall) = {
        let options = &services.supervisor.config().options;
        (options.session_buffer, options.client_stall)
    };
    let (out, out_rx) = Outbox::new(id, limit);
    let budget = Arc::clone(out.budget());
    let observer = Arc::clone(&services.observer);
    let tap = move |line: &str| {
        if observer.traffic.watched() {
            let line = Bytes::copy_from_slice(line.as_bytes());
            observer.traffic.publish(id, Direction::Out, line);
        }
    };
    let mut writer = tokio::spawn(write_lines(writer, out_rx, Arc::clone(&budget), tap));
    let mut session = Session::start(Arc::clone(&services), id, profile, out, in_flight, resume);
    // While the client holds more than its budget, its requests are not read; since when, and
    // how much had been written to it then.
    let mut paused: Option<(Instant, u64)> = None;
    let mut writer_done = false;
    // The waits that nearly never end (the daemon's shutdown, a hang-up, the writer's end) are
    // one future, polled only when one of them woke the session (`quiet`). One wait for the
    // shutdown for the session's life, not one registered at every turn.
    let mut hangup = std::pin::pin!(hangup);
    let mut shutdown = std::pin::pin!(services.shutdown.clone().cancelled_owned());
    let writer_end = &mut writer;
    let mut rare = Quiet::new(std::future::poll_fn(|cx| {
        if shutdown.as_mut().poll(cx).is_ready() {
            Poll::Ready(Rare::Shutdown)
        } else if hangup.as_mut().poll(cx).is_ready() {
            Poll::Ready(Rare::Hangup)
        } else if std::pin::Pin::new(&mut *writer_end).poll(cx).is_ready() {
            Poll::Ready(Rare::WriterEnded)
        } else {
            Poll::Pending
        }
    }));
    let ended = loop {
        if budget.over() {
            // The stall clock runs only while output waits and none of it goes out: a client
            // that reads, but has many slow requests in flight, is only held back.
            let written = budget.written();
            match paused {
                Some((_, seen)) if seen == written && budget.has_output() => {}
                Some(_) => paused = Some((Instant::now(), written)),
                None => {
                    tracing::warn!(
                        session = id,
                        "{} bytes wait for a client that does not read them (budget {} bytes): its requests are not read until it does",
                        budget.used(),
                        budget.limit()
                    );
                    paused = Some((Instant::now(), written));
                }
            }
        } else if paused.take().is_some() {
            tracing::info!(
                session = id,
                "the client reads again: its requests are read again"
            );
        }
        let stall_at = paused
            .filter(|_| budget.has_output())
            .map(|(since, _)| since + stall);
        tokio::select! {
            rare = &mut rare => match rare {
                Rare::Shutdown => {
                    session.end_listens().await;
                    if planned.is_some() {
                        session.drain(HANDBACK_GRACE).await;
                    } else {
                        grace(&mut session, reader, &budget, id).await;
                    }
                    break Ended::Shutdown;
                }
                Rare::Hangup => break Ended::Hangup,
                Rare::WriterEnded => {
                    // The client stopped reading (its end of the connection or pipe is gone).
                    writer_done = true;
                    break Ended::WriteFailed;
                }
            },
            _ = budget.progressed(), if paused.is_some() => {}
            _ = sleep_until_some(stall_at), if stall_at.is_some() => {
                tracing::warn!(session = id, "closed the session: its client read nothing for {}s while {} bytes waited for it (budget {} bytes)", stall.as_secs(), budget.used(), budget.limit());
                break Ended::Stalled;
            }
            frame = reader.next(), if paused.is_none() => match frame {
                Some(Ok(Frame::Line(line))) => session.on_line(line.freeze()).await,
                Some(Ok(Frame::TooLong(len))) => session.on_too_long(len).await,
                Some(Err(e)) => {
                    tracing::debug!(session = id, "read error: {e}");
                    break Ended::ReadFailed;
                }
                None => {
                    // The client closed its side: in MCP that ends the session, so what is
                    // still in flight is cancelled; a client that still reads (`printf ... |
                    // mcp-shim`) gets what is answered within a short grace first.
                    session.drain(CLIENT_EOF_GRACE).await;
                    break Ended::ClientClosed;
                }
            },
            event = session.next_event() => {
                if !session.on_event(event).await {
                    break Ended::Shutdown;
                }
            }
        }
    };
    drop(rare);
    if ended == Ended::Shutdown
        && let Some(planned) = planned
    {
        planned.resumable = Some(session.resumable());
        planned.valve.close();
    }
    session.close();
    // A client that does not read would hold the writer (and what it queued) forever.
    let grace = if ended == Ended::Stalled {
        Duration::ZERO
    } else {
        Duration::from_secs(2)
    };
    if !writer_done && tokio::time::timeout(grace, &mut writer).await.is_err() {
        writer.abort();
    }
    tracing::debug!(session = id, "detached");
    ended
}

/// The shutdown's grace for a relayed session: its requests in flight get their answers for up
/// to [`SHUTDOWN_GRACE`] (the daemon stops its servers only after that, see `server.rs`), while
/// the client's lines are still read so that they can finish: its answers to server requests,
/// its cancels. A request for a server is not started (`Session::on_line_stopping`). Returns
/// at once when nothing is in flight; what is still in flight at the grace's end is left to the
/// session's close (the client's `mcp-shim` answers it `-32012` when the connection closes, and
/// resumes the session on the next daemon).
async fn grace<R: AsyncRead + Unpin>(
    session: &mut Session,
    reader: &mut FramedRead<R, LineCodec>,
    budget: &Budget,
    id: u64,
) {
    let mut deadline = Instant::now() + SHUTDOWN_GRACE;
    let mut reading = true;
    let cut_short = session.cut_short();
    while session.in_flight() > 0 {
        tokio::select! {
            () = session.finish_one() => {}
            () = cut_short.cancelled() => {
                tracing::info!(
                    session = id,
                    "the grace was cut short with {} requests unanswered",
                    session.in_flight()
                );
                break;
            }
            () = tokio::time::sleep_until(deadline) => {
                tracing::info!(
                    session = id,
                    "the grace ended with {} requests unanswered: they are cut short",
                    session.in_flight()
                );
                break;
            }
            () = budget.progressed(), if reading && budget.over() => {}
            frame = reader.next(), if reading && !budget.over() => match frame {
                Some(Ok(Frame::Line(line))) => session.on_line_stopping(line.freeze()).await,
                Some(Ok(Frame::TooLong(len))) => session.on_too_long(len).await,
                Some(Err(_)) | None => {
                    // The client went away meanwhile: its usual, shorter grace.
                    reading = false;
                    deadline = deadline.min(Instant::now() + CLIENT_EOF_GRACE);
                }
            },
        }
    }
}

/// Which of the session's rare waits ended.
enum Rare {
    Shutdown,
    Hangup,
    WriterEnded,
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
