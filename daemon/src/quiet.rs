//! Waits that a loop polls again only after they woke it.
//!
//! `select!` polls every branch at every turn of a loop, and the hot loops turn a few times per
//! call: a session's (the daemon's shutdown, the end of the writer task, the catalog's next
//! change) and an upstream actor's (the child's SIGCHLD). Those waits nearly never end, and
//! polling one that is still pending costs a lock of its waiter list (tokio's `Notify`, the
//! watch channel a signal is delivered on) or a look at a task's state, every time: about
//! 1,800 instructions per call together (callgrind: docs/BENCHMARKS.md "Hot path, session 5").
//! A [`Gate`] polls its wait with a waker of its own that records the wake-up; until that
//! happens it answers `Pending` at once. The loop's waker is kept current in an
//! [`AtomicWaker`] (a compare of wakers when it is the same), so a wake-up always reaches
//! whoever polled last.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// A future behind a [`Gate`].
pub(crate) struct Quiet<F> {
    future: F,
    gate: Gate,
}

/// Lets a wait be polled only once it woke (see the module documentation).
pub(crate) struct Gate {
    flag: Arc<Flag>,
    /// The wait's own waker (the flag's), made once.
    waker: Waker,
}

struct Flag {
    /// The future woke since it was last polled (set at first, so that it is polled once).
    woken: AtomicBool,
    /// Who to wake: the task that polled [`Quiet`] last.
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Gate {
    pub(crate) fn new() -> Self {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(Arc::clone(&flag));
        Self { flag, waker }
    }

    /// `poll` (the wait's own poll), called only when the wait woke since it was last called
    /// (and the first time); `Pending` otherwise.
    pub(crate) fn poll<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        // Registered before the flag is read: a wake-up in between is not lost.
        self.flag.task.register(cx.waker());
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        poll(&mut Context::from_waker(&self.waker))
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gate")
    }
}

impl<F: Future + Unpin> Quiet<F> {
    pub(crate) fn new(future: F) -> Self {
        Self {
            future,
            gate: Gate::new(),
        }
    }
}

impl<F: Future + Unpin> Future for Quiet<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let future = &mut this.future;
        this.gate.poll(cx, |cx| Pin::new(future).poll(cx))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; ready once `open`.
    struct Gate {
        polls: Arc<AtomicUsize>,
        open: Arc<AtomicBool>,
        waker: Arc<std::sync::Mutex<Option<Waker>>>,
    }

    impl Future for Gate {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.open.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[test]
    fn a_pending_wait_is_polled_again_only_after_it_woke_and_its_wake_up_reaches_the_task() {
        let polls = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicBool::new(false));
        let inner_waker = Arc::new(std::sync::Mutex::new(None::<Waker>));
        let mut quiet = Quiet::new(Gate {
            polls: Arc::clone(&polls),
            open: Arc::clone(&open),
            waker: Arc::clone(&inner_waker),
        });
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let task = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&task));
        let mut cx = Context::from_waker(&waker);
        for _ in 0..5 {
            assert!(Pin::new(&mut quiet).poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1, "polled once until it woke");
        // A spurious wake-up of the inner future: polled once more, still pending.
        inner_waker.lock().unwrap().take().unwrap().wake();
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "the task was woken");
        assert!(Pin::new(&mut quiet).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut quiet).poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
        open.store(true, Ordering::SeqCst);
        inner_waker.lock().unwrap().take().unwrap().wake();
        assert_eq!(task.0.load(Ordering::SeqCst), 2);
        assert!(Pin::new(&mut quiet).poll(&mut cx).is_ready());
    }
}
