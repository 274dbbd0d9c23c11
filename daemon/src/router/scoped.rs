//! Request-scoped notifications for modern (2026-07-28) clients.
//!
//! In 2026-07-28 the log level is set per request (`io.modelcontextprotocol/logLevel` in its
//! `_meta`) and `notifications/message` is request-scoped: a server MUST NOT send one for a
//! request that did not ask, and only on that request's stream. Over streamable HTTP a message
//! on a request's stream is tied to it exactly (`Hub::log_of_request`); over stdio nothing ties
//! a log message to a request, so mcpd scopes them by time and server: while a modern
//! session has a request with a log level in flight to a server (a [`LogScope`]), that server's
//! log messages at or above the level go to the session, ahead of the request's answer on the
//! same stream; at any other time, none do. Progress notifications are already per request
//! (their token is the upstream request id, mapped back to the one client that asked).
//!
//! Legacy sessions are unchanged: what `logging/setLevel` admits, from every server they see.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;

use super::hub::Hub;
use super::hub::{LOG_LEVELS, SessionLink};
use crate::upstream::UpstreamHandle;

/// One session's log scopes: the levels of its modern requests in flight, by server.
#[derive(Debug, Default)]
pub struct LogScopes {
    /// The session speaks 2026-07-28 (its requests carry the modern `_meta`).
    modern: AtomicBool,
    /// By server: the ranks of the requests in flight there that asked for log messages.
    open: Mutex<HashMap<String, Vec<u8>>>,
}

impl LogScopes {
    /// Records the era the session's client speaks.
    pub fn set_modern(&self, modern: bool) {
        self.modern.store(modern, Ordering::Relaxed);
    }

    /// Whether the session's client speaks 2026-07-28.
    pub fn is_modern(&self) -> bool {
        self.modern.load(Ordering::Relaxed)
    }

    fn enter(&self, server: &str, rank: u8) {
        self.lock().entry(server.to_owned()).or_default().push(rank);
    }

    fn leave(&self, server: &str, rank: u8) {
        let mut open = self.lock();
        if let Some(ranks) = open.get_mut(server) {
            if let Some(i) = ranks.iter().position(|r| *r == rank) {
                ranks.swap_remove(i);
            }
            if ranks.is_empty() {
                open.remove(server);
            }
        }
    }

    /// Whether a log message of `server` at `rank` belongs to a request in flight.
    pub fn admits(&self, server: &str, rank: u8) -> bool {
        self.lock()
            .get(server)
            .is_some_and(|ranks| ranks.iter().any(|min| rank >= *min))
    }

    /// The most verbose level a request in flight asked for.
    pub fn most_verbose(&self) -> Option<u8> {
        self.lock().values().flatten().copied().min()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<u8>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A modern request with a log level, in flight to one server; its log messages reach the
/// session until this is dropped (after the answer was queued).
#[derive(Debug)]
pub struct LogScope {
    link: SessionLink,
    server: String,
    rank: u8,
}

impl LogScope {
    /// Opens the scope of a request to `upstream` that asked for messages at `rank` and above.
    /// When that is more verbose than any session wanted so far, the upstream is told to log at
    /// that level (it stays there; sessions filter).
    pub fn enter(hub: &Hub, link: &SessionLink, upstream: &UpstreamHandle, rank: u8) -> Self {
        let server = upstream.name().to_owned();
        let before = hub.most_verbose_level();
        link.scopes().enter(&server, rank);
        if before.is_none_or(|b| rank < b) && upstream.snapshot().caps.logging {
            upstream.internal(
                "logging/setLevel",
                json!({"level": LOG_LEVELS[rank as usize]}),
            );
        }
        Self {
            link: link.clone(),
            server,
            rank,
        }
    }
}

impl Drop for LogScope {
    fn drop(&mut self) {
        self.link.scopes().leave(&self.server, self.rank);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::hub::log_rank;

    #[test]
    fn a_scope_admits_its_servers_messages_at_or_above_its_level_only() {
        let scopes = LogScopes::default();
        let (warning, info, error) = (
            log_rank("warning").unwrap(),
            log_rank("info").unwrap(),
            log_rank("error").unwrap(),
        );
        assert!(!scopes.admits("a", error), "no request in flight");
        scopes.enter("a", warning);
        assert!(scopes.admits("a", error));
        assert!(scopes.admits("a", warning));
        assert!(!scopes.admits("a", info));
        assert!(!scopes.admits("b", error), "another server");
        scopes.enter("a", info);
        assert!(scopes.admits("a", info));
        assert_eq!(scopes.most_verbose(), Some(info));
        scopes.leave("a", info);
        assert!(!scopes.admits("a", info));
        scopes.leave("a", warning);
        assert!(!scopes.admits("a", error));
        assert_eq!(scopes.most_verbose(), None);
    }
}
