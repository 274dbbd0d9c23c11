//! The time OAuth reads: token expiry (Unix seconds) and how long ago a token was obtained.
//!
//! The daemon uses the system's clock as it is. A program that drives an [`AuthManager`]
//! (`super::AuthManager::clock`) may move it forward with [`Clock::advance`] instead of
//! waiting: the tests of proactive and reactive refresh do, against a real authorization
//! server. Nothing outside the library can reach it; the daemon never advances its clock.
//!
//! [`AuthManager`]: super::AuthManager

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The system clock plus an offset that only [`Clock::advance`] changes (zero in the daemon).
/// Clones share the offset.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Milliseconds added to the system's time.
    ahead_ms: Arc<AtomicU64>,
}

impl Clock {
    /// Moves this clock (and its clones) forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.ahead_ms.fetch_add(ms, Ordering::SeqCst);
    }

    fn ahead(&self) -> Duration {
        Duration::from_millis(self.ahead_ms.load(Ordering::SeqCst))
    }

    /// Now, in Unix seconds.
    pub fn unix(&self) -> u64 {
        super::grant::now().saturating_add(self.ahead().as_secs())
    }

    /// Now, as an instant to measure elapsed time from.
    pub fn instant(&self) -> Instant {
        Instant::now() + self.ahead()
    }

    /// The time since `then` (an [`instant`](Self::instant) of this clock).
    pub fn since(&self, then: Instant) -> Duration {
        self.instant().saturating_duration_since(then)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_both_readings_and_every_clone() {
        let clock = Clock::default();
        let copy = clock.clone();
        let (unix, then) = (clock.unix(), clock.instant());
        copy.advance(Duration::from_secs(90));
        assert!(clock.unix() >= unix + 90);
        assert!(clock.since(then) >= Duration::from_secs(90));
    }
}
