//! The router's side of the upstream port (`upstream::port`): the routing policy for what
//! upstreams send towards clients, and the one owner of server-to-client routes.
//!
//! - Which session answers a server-to-client request (`sampling/createMessage`,
//!   `elicitation/create`, `roots/list`): among the sessions able to answer it, the one whose
//!   request to that upstream started last; with none in flight, a `roots/list` goes to the
//!   session that last said its roots changed ([`choose`]).
//! - Routes: the request reaches the client under an id of mcpd's own (`upstream/ids.rs`
//!   rewrites every id); the client's answer is routed back by that id to the upstream that
//!   asked ([`ServerRequests`], capped at [`MAX_SERVER_REQUESTS`] outstanding requests).
//! - Fan-out of notifications: log messages to the sessions that see the server at their
//!   level, `resources/updated` to the subscribed sessions, task status to the task's owner,
//!   URL-mode elicitation completions to the session that got the elicitation.

use std::collections::HashMap;
use std::sync::Mutex;

use mcpd_proto::envelope::{self, Envelope, member};
use serde_json::value::RawValue;

use super::hub::{Hub, LOG_LEVELS, log_rank};
use super::listen;
use crate::upstream::{
    CallerRef, Candidate, ClientCaps, Downstream, InstanceKey, RouteError, UpstreamRef, ids,
};

/// Requests of upstreams waiting for clients' answers, beyond which an upstream's request is
/// refused at once (a client that never answers cannot grow the table without bound).
pub const MAX_SERVER_REQUESTS: usize = 1024;
/// URL-mode elicitations remembered for their completion notification.
const MAX_ELICITATIONS: usize = 1024;

/// Where a client's answer to a server-to-client request goes.
#[derive(Debug)]
pub struct Route {
    /// The session that got the request.
    session: CallerRef,
    /// The upstream that asked.
    pub upstream: UpstreamRef,
    /// The id the upstream gave its request, as JSON text.
    pub upstream_id: String,
}

/// The requests upstreams sent to clients, by the id the client saw: the one owner of those
/// routes. A std mutex: every use is a few map operations, never across an `.await`.
#[derive(Debug, Default)]
pub struct ServerRequests {
    inner: Mutex<Routes>,
}

#[derive(Debug, Default)]
struct Routes {
    by_id: HashMap<String, Route>,
    /// URL-mode elicitations by `elicitationId`: the session to tell when it completes, and
    /// the upstream it came from.
    elicitations: HashMap<String, (CallerRef, UpstreamRef)>,
}

impl ServerRequests {
    fn lock(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a route under a fresh client-side id (JSON text) and returns it; refused when
    /// [`MAX_SERVER_REQUESTS`] requests already wait.
    fn add(
        &self,
        session: &CallerRef,
        upstream: &UpstreamRef,
        upstream_id: &str,
    ) -> Result<String, RouteError> {
        let mut routes = self.lock();
        if routes.by_id.len() >= MAX_SERVER_REQUESTS {
            return Err(RouteError {
                code: envelope::UPSTREAM_BUSY,
                message: format!(
                    "{MAX_SERVER_REQUESTS} requests of servers already wait for clients' answers"
                ),
            });
        }
        let downstream = ids::downstream_id(&upstream.key().server);
        routes.by_id.insert(
            downstream.clone(),
            Route {
                session: CallerRef::clone(session),
                upstream: upstream.clone(),
                upstream_id: upstream_id.to_owned(),
            },
        );
        Ok(downstream)
    }

    /// Takes the route of the request session `session` answered with id `downstream_id`; a
    /// session cannot answer a request sent to another.
    pub fn take(&self, downstream_id: &str, session: u64) -> Option<Route> {
        let mut routes = self.lock();
        if routes.by_id.get(downstream_id)?.session.id() != session {
            return None;
        }
        routes.by_id.remove(downstream_id)
    }

    /// Takes every route of a session that ends.
    pub fn drain_session(&self, session: u64) -> Vec<Route> {
        let mut routes = self.lock();
        let ids: Vec<String> = routes
            .by_id
            .iter()
            .filter(|(_, r)| r.session.id() == session)
            .map(|(id, _)| id.clone())
            .collect();
        routes
            .elicitations
            .retain(|_, (caller, _)| caller.id() != session);
        ids.iter()
            .filter_map(|id| routes.by_id.remove(id))
            .collect()
    }

    /// Takes the routes of `upstream`'s requests that `pick` selects, with their client-side
    /// ids.
    fn take_where(
        &self,
        upstream: &UpstreamRef,
        mut pick: impl FnMut(&Route) -> bool,
    ) -> Vec<(String, Route)> {
        let mut routes = self.lock();
        let ids: Vec<String> = routes
            .by_id
            .iter()
            .filter(|(_, r)| r.upstream.same(upstream) && pick(r))
            .map(|(id, _)| id.clone())
            .collect();
        ids.into_iter()
            .filter_map(|id| routes.by_id.remove(&id).map(|r| (id, r)))
            .collect()
    }

    /// How many requests wait for an answer.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }
}

impl Route {
    /// Sends the client's answer `msg` to the upstream, with the upstream's id put back.
    pub fn answer(self, msg: &Envelope<'_>) {
        let line = ids::answer_to_upstream(msg, &self.upstream_id);
        self.upstream.client_response(self.upstream_id, line);
    }

    /// Answers the upstream with an error: the session went away before answering.
    pub fn abandon(self) {
        let Ok(id) = RawValue::from_string(self.upstream_id.clone()) else {
            return;
        };
        let answer = envelope::error_response(
            Some(&id),
            envelope::INTERNAL_ERROR,
            "the client went away before answering",
        );
        self.upstream.client_response(self.upstream_id, answer);
    }
}

/// Whether a client with `caps` can answer `method`.
fn able(method: &str, url_mode: bool, caps: &ClientCaps) -> bool {
    match method {
        "sampling/createMessage" => caps.sampling,
        "elicitation/create" if url_mode => caps.elicitation_url,
        "elicitation/create" => caps.elicitation_form,
        "roots/list" => caps.roots,
        _ => false,
    }
}

/// The policy of [`Downstream::choose`] (see the module documentation).
pub fn choose(method: &str, url_mode: bool, candidates: &[Candidate<'_>]) -> Option<usize> {
    let fit = |c: &Candidate<'_>| able(method, url_mode, &c.caps) && !c.caller.is_closed();
    let in_flight = candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| fit(c))
        .filter_map(|(i, c)| Some((c.started?, i)))
        .max_by_key(|(started, _)| *started)
        .map(|(_, i)| i);
    in_flight.or_else(|| {
        (method == "roots/list")
            .then(|| {
                candidates
                    .iter()
                    .position(|c| c.started.is_none() && fit(c))
            })
            .flatten()
    })
}

impl Downstream for Hub {
    fn choose(&self, method: &str, url_mode: bool, candidates: &[Candidate<'_>]) -> Option<usize> {
        choose(method, url_mode, candidates)
    }

    fn send_request(
        &self,
        to: &CallerRef,
        from: &UpstreamRef,
        upstream_id: &str,
        msg: &Envelope<'_>,
    ) -> Result<(), RouteError> {
        let downstream = self.requests().add(to, from, upstream_id)?;
        if !to.try_send(ids::request_to_client(msg, &downstream)) {
            self.requests().lock().by_id.remove(&downstream);
            return Err(RouteError {
                code: envelope::UPSTREAM_BUSY,
                message: "the client is not reading its messages".to_owned(),
            });
        }
        let url_elicitation = (msg.method() == "elicitation/create")
            .then_some(msg.params)
            .flatten()
            .filter(|p| {
                member(p, "mode")
                    .and_then(|m| envelope::decode_str(m).ok())
                    .as_deref()
                    == Some("url")
            })
            .and_then(|p| member(p, "elicitationId"))
            .and_then(|i| envelope::decode_str(i).ok());
        if let Some(elicitation) = url_elicitation {
            let mut routes = self.requests().lock();
            if routes.elicitations.len() >= MAX_ELICITATIONS {
                routes.elicitations.clear();
            }
            routes.elicitations.insert(
                elicitation.into_owned(),
                (CallerRef::clone(to), from.clone()),
            );
        }
        Ok(())
    }

    fn request_cancelled(&self, from: &UpstreamRef, upstream_id: &str, msg: &Envelope<'_>) {
        let Some(request) = msg.params.and_then(|p| member(p, "requestId")) else {
            return;
        };
        for (downstream, route) in self
            .requests()
            .take_where(from, |r| r.upstream_id == upstream_id)
        {
            route
                .session
                .try_send(ids::cancelled_to_client(msg, request, &downstream));
        }
    }

    fn upstream_gone(&self, from: &UpstreamRef) {
        for (downstream, route) in self.requests().take_where(from, |_| true) {
            // The client is told that the request it may be showing its user is void.
            let cancelled = format!(
                r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{downstream},"reason":"the server went away"}}}}"#
            );
            route.session.try_send(cancelled);
        }
        self.requests()
            .lock()
            .elicitations
            .retain(|_, (_, upstream)| !upstream.same(from));
    }

    fn owes(&self, from: &UpstreamRef) -> bool {
        self.requests()
            .lock()
            .by_id
            .values()
            .any(|r| r.upstream.same(from))
    }

    fn notify(&self, from: &InstanceKey, msg: &Envelope<'_>) -> bool {
        let params = msg.params;
        match msg.method() {
            "notifications/message" => {
                let level = params
                    .and_then(|p| member(p, "level"))
                    .and_then(|l| envelope::decode_str(l).ok());
                let rank = level.as_deref().and_then(log_rank).unwrap_or(0);
                self.broadcast_log(&from.server, from.owner(), rank, msg.text());
            }
            "notifications/resources/updated" => {
                let uri = params
                    .and_then(|p| member(p, "uri"))
                    .and_then(|u| envelope::decode_str(u).ok());
                if let Some(uri) = uri {
                    for session in self.subscribers(from, &uri) {
                        listen::resource_updated(&session, &from.server, &uri, msg.text());
                    }
                }
            }
            "notifications/tasks/status" => {
                super::session::tasks::status_notification(self, &from.server, msg);
            }
            "notifications/elicitation/complete" => {
                let id = params
                    .and_then(|p| member(p, "elicitationId"))
                    .and_then(|i| envelope::decode_str(i).ok());
                let session = id.and_then(|id| {
                    self.requests()
                        .lock()
                        .elicitations
                        .remove(id.as_ref())
                        .map(|(caller, _)| caller)
                });
                if let Some(session) = session {
                    session.try_send(msg.text().to_owned());
                }
            }
            _ => return false,
        }
        true
    }

    fn request_log(&self, from: &InstanceKey, to: &CallerRef, msg: &Envelope<'_>) {
        let level = msg
            .params
            .and_then(|p| member(p, "level"))
            .and_then(|l| envelope::decode_str(l).ok());
        let rank = level.as_deref().and_then(log_rank).unwrap_or(0);
        self.log_of_request(&from.server, from.owner(), to.id(), rank, msg.text());
    }

    fn log_level(&self) -> Option<&'static str> {
        self.most_verbose_level()
            .and_then(|rank| LOG_LEVELS.get(usize::from(rank)).copied())
    }

    fn subscribed_uris(&self, key: &InstanceKey) -> Vec<String> {
        Hub::subscribed_uris(self, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::hub::SessionLink;
    use crate::router::outbox::Outbox;

    fn session(id: u64) -> (SessionLink, tokio::sync::mpsc::Receiver<String>) {
        let (out, rx) = Outbox::new(id, 1 << 30);
        (SessionLink::new(id, out), rx)
    }

    fn request(n: usize) -> String {
        format!(r#"{{"jsonrpc":"2.0","id":{n},"method":"roots/list"}}"#)
    }

    #[test]
    fn outstanding_server_requests_are_capped_and_an_answer_frees_a_place() {
        let hub = Hub::default();
        let (link, mut rx) = session(1);
        let caller = link.caller();
        let upstream = UpstreamRef::detached("s");
        for n in 0..MAX_SERVER_REQUESTS {
            let line = request(n);
            let msg = Envelope::parse(&line).unwrap();
            hub.send_request(&caller, &upstream, &n.to_string(), &msg)
                .expect("under the cap");
        }
        let line = request(MAX_SERVER_REQUESTS);
        let msg = Envelope::parse(&line).unwrap();
        let refused = hub
            .send_request(&caller, &upstream, "x", &msg)
            .expect_err("over the cap");
        assert_eq!(refused.code, envelope::UPSTREAM_BUSY);
        assert_eq!(hub.requests().len(), MAX_SERVER_REQUESTS);

        // The client answers the first request: its place is free again.
        let first: serde_json::Value = serde_json::from_str(&rx.try_recv().unwrap()).unwrap();
        let id = first["id"].to_string();
        assert!(id.starts_with("\"mcpd:s:"), "{id}");
        assert!(
            hub.requests().take(&id, 2).is_none(),
            "another session's answer"
        );
        assert!(hub.requests().take(&id, 1).is_some());
        hub.send_request(&caller, &upstream, "x", &msg)
            .expect("a place is free");
    }

    #[test]
    fn a_gone_upstream_voids_its_requests_and_a_cancelled_one_reaches_its_client() {
        let hub = Hub::default();
        let (link, mut rx) = session(1);
        let caller = link.caller();
        let (a, b) = (UpstreamRef::detached("a"), UpstreamRef::detached("b"));
        for (upstream, n) in [(&a, 1), (&a, 2), (&b, 3)] {
            let line = request(n);
            hub.send_request(
                &caller,
                upstream,
                &n.to_string(),
                &Envelope::parse(&line).unwrap(),
            )
            .unwrap();
        }
        assert!(hub.owes(&a) && hub.owes(&b));
        let cancel =
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":2}}"#;
        hub.request_cancelled(&a, "2", &Envelope::parse(cancel).unwrap());
        hub.upstream_gone(&a);
        assert!(!hub.owes(&a) && hub.owes(&b));
        let lines: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        let cancelled = lines
            .iter()
            .filter(|l| l.contains("notifications/cancelled"))
            .count();
        assert_eq!(cancelled, 2, "{lines:?}");
    }

    #[test]
    fn the_session_whose_request_started_last_answers_else_the_roots_session() {
        let (one, _r1) = session(1);
        let (two, _r2) = session(2);
        let (one, two) = (one.caller(), two.caller());
        let t0 = tokio::time::Instant::now();
        let able = ClientCaps {
            sampling: true,
            roots: true,
            ..ClientCaps::default()
        };
        let candidates = [
            Candidate {
                caller: &one,
                caps: able,
                started: Some(t0),
            },
            Candidate {
                caller: &two,
                caps: able,
                started: Some(t0 + std::time::Duration::from_millis(1)),
            },
        ];
        assert_eq!(
            choose("sampling/createMessage", false, &candidates),
            Some(1)
        );
        assert_eq!(choose("elicitation/create", false, &candidates), None);
        let roots = [Candidate {
            caller: &one,
            caps: able,
            started: None,
        }];
        assert_eq!(choose("roots/list", false, &roots), Some(0));
        assert_eq!(choose("sampling/createMessage", false, &roots), None);
    }
}
