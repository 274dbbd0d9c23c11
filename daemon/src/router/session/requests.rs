//! A session's forwarded requests in flight, run inside the session's own task.
//!
//! Each forwarded request used to be a task of its own (a `JoinSet`): spawning it, scheduling
//! it and joining it were about a tenth of the daemon's instructions per call (callgrind,
//! docs/BENCHMARKS.md "Hot path"), and every answer crossed one more task before it went out.
//! Here the requests are futures the session polls beside its reads ([`Session::next_event`]
//! polls [`Requests::next`]): they still run concurrently (a slow tool never holds up the
//! others or the session), each can be aborted by its sequence number (a client's
//! `notifications/cancelled`), and dropping the set drops them all, so their guards cancel
//! them upstream when the session ends. The price: they make progress only while the session
//! polls them, so what the session awaits itself holds them up meanwhile (an `initialize` that
//! waits, at most `mcpd.listWaitMs`, for servers still starting), and a panic in one would end
//! the session rather than that request.
//!
//! A request costs the set two allocations: its future (boxed: the paths differ in type) and
//! the set's own node for it. An abort finds the request by a walk over those in flight (a
//! client's cancellation is rare; an `AbortHandle` per request was an allocation and an atomic
//! waker registered at every poll), drops its future at once and wakes it to leave the set. The
//! client's id is kept inline when it is short ([`RequestKey`]): no allocation for it either.
//!
//! [`Session::next_event`]: super::core::Session::next_event

use std::borrow::Borrow;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use futures_util::Stream;
use futures_util::future::Aborted;
use futures_util::stream::FuturesUnordered;
use sync_wrapper::SyncWrapper;

type Body = Pin<Box<dyn Future<Output = ()> + Send>>;

/// See the module documentation.
#[derive(Default)]
pub(crate) struct Requests {
    /// Reached only through `&mut self`, so the session stays `Sync` (it is borrowed across
    /// awaits) although the futures are only `Send`.
    running: SyncWrapper<FuturesUnordered<Running>>,
}

/// One request in the set: what it ends with (its key and sequence number), its future until
/// it ends or is aborted, and the set's waker of it (to end it when aborted).
struct Running {
    key: Option<RequestKey>,
    seq: u64,
    body: Option<Body>,
    waker: Option<Waker>,
}

impl Future for Running {
    type Output = Result<(RequestKey, u64), Aborted>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(Err(Aborted));
        };
        match body.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.body = None;
                match this.key.take() {
                    Some(key) => Poll::Ready(Ok((key, this.seq))),
                    None => Poll::Ready(Err(Aborted)),
                }
            }
            Poll::Pending => {
                // The set gives each of its futures one waker for its life: cloned once.
                if !this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    this.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

impl Requests {
    /// Adds request `seq` of the client's id `key`.
    pub(crate) fn push(
        &mut self,
        key: RequestKey,
        seq: u64,
        request: impl Future<Output = ()> + Send + 'static,
    ) {
        self.running.get_mut().push(Running {
            key: Some(key),
            seq,
            body: Some(Box::pin(request)),
            waker: None,
        });
    }

    /// Aborts request `seq`: its future is dropped now (its guards cancel it upstream) and it
    /// leaves the set, with [`Aborted`], when the set is polled next. `false`: no such request.
    pub(crate) fn abort(&mut self, seq: u64) -> bool {
        let Some(running) = self
            .running
            .get_mut()
            .iter_mut()
            .find(|r| r.seq == seq && r.body.is_some())
        else {
            return false;
        };
        running.body = None;
        if let Some(waker) = running.waker.take() {
            waker.wake();
        }
        true
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
    type Item = Result<(RequestKey, u64), Aborted>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(self.running.get_mut()).poll_next(cx)
    }
}

/// The longest id kept inline.
const INLINE: usize = 22;

/// A client's request id (its JSON text, as the session keys its requests in flight): inline
/// when it is short (numbers, most strings), shared otherwise. Compared, hashed and borrowed
/// as the `str` it holds, so a map of them is looked up by a `&str`.
#[derive(Clone)]
pub(crate) enum RequestKey {
    Inline(u8, [u8; INLINE]),
    Shared(Arc<str>),
}

impl RequestKey {
    pub(crate) fn new(id: &str) -> Self {
        if id.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..id.len()].copy_from_slice(id.as_bytes());
            // At most `INLINE` (22): fits.
            Self::Inline(id.len() as u8, bytes)
        } else {
            Self::Shared(id.into())
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            // Whole characters of a `&str` copied as they were: always UTF-8.
            Self::Inline(len, bytes) => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Self::Shared(id) => id,
        }
    }
}

impl std::fmt::Debug for RequestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq for RequestKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for RequestKey {}

impl Hash for RequestKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl Borrow<str> for RequestKey {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&RequestKey> for Arc<str> {
    fn from(key: &RequestKey) -> Self {
        match key {
            RequestKey::Inline(..) => key.as_str().into(),
            RequestKey::Shared(id) => Arc::clone(id),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};

    use futures_util::StreamExt;

    use super::*;

    #[test]
    fn a_key_is_the_id_it_was_made_of_whatever_its_length() {
        let long = format!("\"{}\"", "é".repeat(30));
        let mut map = HashMap::new();
        for (n, id) in ["7", "\"a\"", "\"\"", "\"exactly twenty-two b\"", &long]
            .iter()
            .enumerate()
        {
            let key = RequestKey::new(id);
            assert_eq!(key.as_str(), *id);
            assert_eq!(Arc::<str>::from(&key).as_ref(), *id);
            map.insert(key, n);
        }
        assert!(matches!(RequestKey::new(&long), RequestKey::Shared(_)));
        assert!(matches!(
            RequestKey::new("\"exactly twenty-two b\""),
            RequestKey::Inline(..)
        ));
        assert_eq!(map.get("\"a\""), Some(&1));
        assert_eq!(map.get(long.as_str()), Some(&4));
        assert_eq!(map.get("8"), None);
    }

    /// Sets its flag when dropped (as a request's guard cancels it upstream).
    struct Guard(Arc<AtomicBool>);

    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn an_aborted_request_is_dropped_at_once_and_leaves_the_set() {
        let mut set = Requests::default();
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = Guard(Arc::clone(&dropped));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        set.push(RequestKey::new("1"), 1, async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        set.push(RequestKey::new("2"), 2, async move {
            let _ = rx.await;
        });
        // Both wait.
        let polled = futures_util::poll!(set.next());
        assert!(polled.is_pending());
        assert!(set.abort(1));
        assert!(
            dropped.load(Ordering::SeqCst),
            "dropped by the abort itself"
        );
        assert!(!set.abort(1), "aborted once");
        assert!(!set.abort(3), "no such request");
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), set.next())
            .await
            .expect("the aborted request leaves the set without another wake-up");
        assert!(matches!(next, Some(Err(Aborted))));
        assert_eq!(set.len(), 1);
        tx.send(()).unwrap();
        let (key, seq) = set.next().await.unwrap().unwrap();
        assert_eq!((key.as_str(), seq), ("2", 2));
        assert!(set.is_empty());
    }

    #[tokio::test]
    async fn a_request_aborted_before_it_was_polled_leaves_the_set_too() {
        let mut set = Requests::default();
        set.push(RequestKey::new("1"), 1, std::future::pending());
        assert!(set.abort(1));
        assert!(matches!(set.next().await, Some(Err(Aborted))));
        assert!(set.is_empty());
    }
}
