//! When a forwarded request last made progress: its timeout counts from then.
//!
//! The request's waiting side (a session's `Sent`, `mrtr`'s `InFlight`) used to wait on a
//! `Notify` beside its answer and its deadline, which locked the `Notify`'s waiter list at
//! every poll and needed no notification in nearly every call: about 300 instructions per
//! call (callgrind: docs/BENCHMARKS.md "Hot path, session 5"). Now the actor only stamps the
//! time of a progress notification, and the waiting side reads it when its deadline comes:
//! a request with progress since then gets the later deadline (as each notification extended
//! it before), up to its maximum.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Progress {
    /// A std mutex: held only to read or write the instant, never across an `.await`.
    last: Mutex<Option<Instant>>,
}

impl Progress {
    /// A progress notification for the request arrived now.
    pub fn mark(&self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// The request's deadline after `deadline` passed: `None` when it made no progress that
    /// moves it (it timed out), else the later one, `timeout` after its last progress and at
    /// most `max` after `started`.
    pub fn extended(
        &self,
        deadline: Instant,
        started: Instant,
        timeout: Duration,
        max: Duration,
    ) -> Option<Instant> {
        let last = (*self.last.lock().unwrap_or_else(|e| e.into_inner()))?;
        let next = (last + timeout).min(started + max);
        (next > deadline).then_some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn progress_moves_the_deadline_to_a_timeout_after_it_up_to_the_maximum() {
        let (timeout, max) = (Duration::from_secs(10), Duration::from_secs(25));
        let started = Instant::now();
        let progress = Progress::default();
        let deadline = started + timeout;
        assert_eq!(progress.extended(deadline, started, timeout, max), None);
        tokio::time::advance(Duration::from_secs(4)).await;
        progress.mark();
        let next = progress.extended(deadline, started, timeout, max);
        assert_eq!(next, Some(started + Duration::from_secs(14)));
        // No progress since: the next deadline is final.
        let next = next.unwrap_or(deadline);
        assert_eq!(progress.extended(next, started, timeout, max), None);
        // Progress at 16 s: 10 s after it is past the maximum of 25 s.
        tokio::time::advance(Duration::from_secs(12)).await;
        progress.mark();
        assert_eq!(
            progress.extended(next, started, timeout, max),
            Some(started + max),
            "at most the maximum"
        );
        assert_eq!(
            progress.extended(started + max, started, timeout, max),
            None
        );
    }
}
