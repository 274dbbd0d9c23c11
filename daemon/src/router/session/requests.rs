//! A session's forwarded requests in flight, run inside the session's own task.
//!
//! Each forwarded request used to be a task of its own (a `JoinSet`): spawning it, scheduling
//! it and joining it were about a tenth of the daemon's instructions per call (callgrind,
//! docs/BENCHMARKS.md "Hot path"), and every answer crossed one more task before it went out.
//! Here the requests are futures the session polls beside its reads ([`Session::next_event`]
//! polls [`Requests::next`]): they still run concurrently (a slow tool never holds up the
//! others or the session), each can be aborted by its handle (a client's
//! `notifications/cancelled`), and dropping the set drops them all, so their guards cancel
//! them upstream when the session ends. The price: they make progress only while the session
//! polls them, so what the session awaits itself holds them up meanwhile (an `initialize` that
//! waits, at most `mcpd.listWaitMs`, for servers still starting), and a panic in one would end
//! the session rather than that request.
//!
//! [`Session::next_event`]: super::core::Session::next_event

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use futures_util::future::{AbortHandle, Abortable, Aborted};
use futures_util::stream::FuturesUnordered;
use sync_wrapper::SyncWrapper;

type Request = Abortable<Pin<Box<dyn Future<Output = (Arc<str>, u64)> + Send>>>;

/// See the module documentation.
#[derive(Default)]
pub(crate) struct Requests {
    /// Reached only through `&mut self`, so the session stays `Sync` (it is borrowed across
    /// awaits) although the futures are only `Send`.
    running: SyncWrapper<FuturesUnordered<Request>>,
}

impl Requests {
    /// Adds a request; its handle aborts it.
    pub(crate) fn push(
        &mut self,
        request: impl Future<Output = (Arc<str>, u64)> + Send + 'static,
    ) -> AbortHandle {
        let (abort, registration) = AbortHandle::new_pair();
        self.running
            .get_mut()
            .push(Abortable::new(Box::pin(request), registration));
        abort
    }

    /// Requests not finished yet.
    pub(crate) fn len(&mut self) -> usize {
        self.running.get_mut().len()
    }

    pub(crate) fn is_empty(&mut self) -> bool {
        self.running.get_mut().is_empty()
    }

    /// Drops every request (their guards cancel them upstream).
    pub(crate) fn clear(&mut self) {
        self.running.get_mut().clear();
    }
}

impl Stream for Requests {
    type Item = Result<(Arc<str>, u64), Aborted>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(self.running.get_mut()).poll_next(cx)
    }
}
