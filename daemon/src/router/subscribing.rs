//! Upstream `resources/subscribe` requests under way: the first subscriber to a URI asks the
//! upstream; one arriving meanwhile waits for that answer instead of being told "subscribed"
//! before the upstream said so, and asks the upstream itself if the first was refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::upstream::InstanceKey;

type Key = (InstanceKey, String);

/// The subscriptions being asked for upstream (part of the `Hub`).
#[derive(Debug, Default)]
pub struct Subscribing {
    flights: Arc<Flights>,
}

type Flights = Mutex<HashMap<Key, watch::Receiver<Option<bool>>>>;

fn lock(
    flights: &Flights,
) -> std::sync::MutexGuard<'_, HashMap<Key, watch::Receiver<Option<bool>>>> {
    flights.lock().unwrap_or_else(|e| e.into_inner())
}

/// One upstream `resources/subscribe` under way; its outcome is told to the waiters by
/// [`Flight::finish`], or as a failure when it is dropped unfinished.
#[derive(Debug)]
pub struct Flight {
    flights: Arc<Flights>,
    key: Key,
    outcome: watch::Sender<Option<bool>>,
}

impl Subscribing {
    fn flights(&self) -> std::sync::MutexGuard<'_, HashMap<Key, watch::Receiver<Option<bool>>>> {
        lock(&self.flights)
    }

    /// The subscription of `uri` on instance `key` is being asked for upstream now.
    pub fn begin(&self, key: &InstanceKey, uri: &str) -> Flight {
        let (outcome, waiting) = watch::channel(None);
        let key = (key.clone(), uri.to_owned());
        self.flights().insert(key.clone(), waiting);
        Flight {
            flights: Arc::clone(&self.flights),
            key,
            outcome,
        }
    }

    /// Waits for the upstream's answer to a subscription of `uri` on `key` under way:
    /// `true` when there is none or it was accepted, `false` when it was refused (the caller
    /// then asks the upstream itself).
    pub async fn settled(&self, key: &InstanceKey, uri: &str) -> bool {
        let waiting = self.flights().get(&(key.clone(), uri.to_owned())).cloned();
        let Some(mut waiting) = waiting else {
            return true;
        };
        waiting
            .wait_for(Option::is_some)
            .await
            .is_ok_and(|outcome| *outcome == Some(true))
    }
}

impl Flight {
    /// The upstream answered: `accepted` or not.
    pub fn finish(self, accepted: bool) {
        let _ = self.outcome.send(Some(accepted));
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        // Unfinished (no upstream, the request was cancelled): a failure for the waiters.
        self.outcome.send_if_modified(|outcome| {
            let unset = outcome.is_none();
            if unset {
                *outcome = Some(false);
            }
            unset
        });
        // An accepted subscription needs no entry (a later subscriber is told at once). A
        // refused one stays until the next attempt replaces it: a subscriber counted before
        // the refusal was undone, and asking only now, must learn of it too.
        if *self.outcome.borrow() == Some(true) {
            let mut flights = lock(&self.flights);
            if flights
                .get(&self.key)
                .is_some_and(|w| w.same_channel(&self.outcome.subscribe()))
            {
                flights.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_learn_the_outcome_and_nothing_under_way_is_settled() {
        let subs = Subscribing::default();
        let key = InstanceKey::shared("s");
        assert!(subs.settled(&key, "u").await);
        // A waiter that asks before the answer, and one that asks after it.
        let flight = subs.begin(&key, "u");
        let (early, ()) = tokio::join!(subs.settled(&key, "u"), async {
            tokio::task::yield_now().await;
            flight.finish(false);
        });
        assert!(!early);
        assert!(!subs.settled(&key, "u").await);
        let flight = subs.begin(&key, "u");
        drop(flight);
        assert!(
            !subs.settled(&key, "u").await,
            "dropped unfinished is a failure"
        );
        subs.begin(&key, "u").finish(true);
        assert!(subs.settled(&key, "u").await);
        assert!(subs.flights().is_empty());
    }
}
