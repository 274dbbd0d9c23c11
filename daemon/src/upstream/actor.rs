//! The upstream actor: owns one server's transport, its pending-request table and the routes of
//! the requests it sends to clients; restarts it with backoff when it dies; publishes its state.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mcpd_proto::ServerState;
use mcpd_proto::envelope::{self, Envelope, Kind, field, member};
use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::modern::{self, Era, Probe};
use super::transport::{Event, HandshakeError, OutKind, Outbound, Transport};
use super::{
    CallerRef, Candidate, ClientCaps, Command, Context, Forward, InstanceKey, Item, ListKind,
    Reply, RouteError, Snapshot, UpstreamCaps, UpstreamRef,
};
use crate::config::ServerSpec;

/// The protocol revision mcpd asks upstreams for.
pub const UPSTREAM_PROTOCOL: &str = "2025-11-25";
/// Requests held while the server is starting, beyond which callers are told it is busy.
const MAX_DEFERRED: usize = 1024;
/// Pages of a list followed before the listing is cut off (a server that loops).
const MAX_LIST_PAGES: usize = 1000;
/// A run this long resets the backoff.
const STABLE_RUN: Duration = Duration::from_secs(60);
/// Why calls fail while an operator keeps a server stopped.
const STOPPED_BY_OPERATOR: &str = "was stopped with `mcpctl stop`; `mcpctl start` starts it";
/// The restart delay of a server that ran longer than [`QUICK_FAILURE`] before it failed.
const IMMEDIATE_RESTART: Duration = Duration::from_millis(100);
/// A failure this soon after a start counts towards a crash loop.
const QUICK_FAILURE: Duration = Duration::from_secs(10);

enum Pending {
    Client {
        client_id: Box<RawValue>,
        progress_token: Option<Box<RawValue>>,
        session: CallerRef,
        progress: Arc<super::Progress>,
        started: Instant,
        reply: oneshot::Sender<Reply>,
        /// What a modern client declared in the request itself.
        caps: Option<ClientCaps>,
        /// Where a modern client's call takes the requests the upstream sends during it.
        asks: Option<mpsc::Sender<super::Ask>>,
    },
    Initialize,
    /// `server/discover` at the start: the probe of an `auto` server, or the handshake of a
    /// modern one (`probe: false`: nothing to fall back to).
    Discover {
        probe: bool,
    },
    /// A probe that timed out while `initialize` was sent; a `DiscoverResult` that still
    /// comes before the `initialize` answer makes the server modern.
    LateDiscover,
    List {
        kind: ListKind,
        acc: Vec<Item>,
        pages: usize,
    },
    Internal {
        method: &'static str,
    },
    Ping,
    /// `subscriptions/listen` to a modern server (`actor_listen.rs`).
    Listen,
}

enum Outcome {
    /// Stopped for good (the daemon stops or the server was removed); the actor ends.
    Stopped,
    /// Stopped after its idle timeout; the next request starts it.
    Idle,
    /// The server died or misbehaved; it is started again after a delay.
    Failed(String),
    /// The server wants credentials; it waits for `mcpctl login` (or a reload).
    AuthRequired(String),
}

/// How a wait while the server is down ended.
enum Held {
    /// Start it, then handle these commands (the request that woke an idle server).
    Start(Vec<Command>),
    /// Stop for good.
    Stop,
}

/// A delay of about `base` (±20%), so that servers that failed together do not all restart in
/// the same instant.
fn jitter(base: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.8 + 0.4 * f64::from(nanos % 1000) / 1000.0;
    base.mul_f64(factor)
}

enum LineEffect {
    None,
    Ready,
    Fail(String),
}

#[derive(Default, Clone, Copy)]
struct Listing {
    busy: bool,
    again: bool,
}

pub(super) struct Actor {
    name: Arc<str>,
    /// Which instance it is: a per-client instance's subscriptions and log messages are its
    /// session's alone.
    key: Arc<InstanceKey>,
    spec: Arc<ServerSpec>,
    rx: mpsc::Receiver<Command>,
    me: UpstreamRef,
    snapshot: watch::Sender<Snapshot>,
    /// The hub, the catalog's dirty flag, child records and OAuth.
    context: Context,
    next_id: Arc<AtomicU64>,
    pending: HashMap<u64, Pending>,
    listing: [Listing; 4],
    /// The session that last said its roots changed: a candidate for `roots/list` when no
    /// request is in flight (the router decides).
    roots_session: Option<CallerRef>,
    /// The current process finished its handshake.
    ready: bool,
    /// The current process speaks MCP 2026-07-28 (per-request `_meta`, no handshake).
    modern: bool,
    /// Requests that arrived while the last process was ending and were never sent to it:
    /// they go to the next one, or are answered with why there is none.
    leftover: Vec<Command>,
    /// The `subscriptions/listen` of a modern process.
    listen: listen::UpstreamListen,
    /// The request whose response stream carried the message being handled (HTTP).
    related: Option<u64>,
}

impl Actor {
    pub(super) fn new(
        key: Arc<InstanceKey>,
        spec: Arc<ServerSpec>,
        rx: mpsc::Receiver<Command>,
        me: UpstreamRef,
        snapshot: watch::Sender<Snapshot>,
        context: Context,
        next_id: Arc<AtomicU64>,
    ) -> Self {
        Self {
            name: key.server.as_str().into(),
            key,
            spec,
            rx,
            me,
            snapshot,
            context,
            next_id,
            pending: HashMap::new(),
            listing: [Listing::default(); 4],
            roots_session: None,
            ready: false,
            modern: false,
            leftover: Vec::new(),
            listen: listen::UpstreamListen::default(),
            related: None,
        }
    }

    /// Runs the server until it is stopped for good. With a `gate`, it starts only when the
    /// gate opens (the instance it replaces has stopped); requests wait for it meanwhile.
    /// `eager`: start even a lazy server at once (an operator's restart). `stopped`: stay
    /// stopped (`mcpctl stop`) until replaced.
    pub(super) async fn run(
        mut self,
        gate: Option<oneshot::Receiver<()>>,
        eager: bool,
        stopped: bool,
    ) {
        let mut backoff = self.spec.restart.initial_delay;
        let mut quick_failures = 0u32;
        let mut carried: Vec<Command> = match gate {
            Some(gate) => match self.wait_for_gate(gate).await {
                Some(waiting) => waiting,
                None => return,
            },
            None => Vec::new(),
        };
        if stopped {
            match self
                .hold(ServerState::Stopped, STOPPED_BY_OPERATOR, false)
                .await
            {
                Held::Stop => {
                    self.publish(|s| s.state = ServerState::Stopped);
                    return;
                }
                Held::Start(commands) => carried = commands,
            }
        } else if carried.is_empty() && !eager && self.starts_lazily() {
            // Its lists are served from the cache until a request needs the process.
            tracing::info!(server = %self.name, "lazy: not started until a request needs it");
            match self.hold(ServerState::Idle, "is idle", true).await {
                Held::Stop => {
                    self.publish(|s| s.state = ServerState::Stopped);
                    return;
                }
                Held::Start(commands) => carried = commands,
            }
        }
        loop {
            if let Some(why) = self.spec.secrets.missing_reason() {
                // Starting it would only fail: its calls fail at once, saying what to set.
                let held = self.hold_secret_missing(&why, &mut carried).await;
                match held {
                    Held::Stop => break,
                    Held::Start(commands) => {
                        carried = commands;
                        continue;
                    }
                }
            }
            let started = Instant::now();
            let outcome = self.run_once(std::mem::take(&mut carried)).await;
            // `restarts` counts starts after a failure; waking from idle or an operator's
            // start is not one.
            let failed = matches!(outcome, Outcome::Failed(_));
            let held = match outcome {
                Outcome::Stopped => break,
                Outcome::Idle => self.hold(ServerState::Idle, "is idle", true).await,
                Outcome::AuthRequired(why) => {
                    tracing::warn!(server = %self.name, "{why}");
                    self.publish(|s| s.last_error = Some(why.clone()));
                    let message = format!("needs authorization: run `mcpctl login {}`", self.name);
                    self.hold(ServerState::AuthRequired, &message, false).await
                }
                Outcome::Failed(failure) => {
                    let failure = crate::redact::Redactor::process().redact_owned(failure);
                    let ran = started.elapsed();
                    // A server that never finished its handshake (it hung in `initialize`
                    // until the startup timeout, however long that is) failed as it started.
                    if ran < QUICK_FAILURE || !self.ready {
                        quick_failures += 1;
                    } else {
                        quick_failures = 0;
                    }
                    if ran >= STABLE_RUN {
                        backoff = self.spec.restart.initial_delay;
                    }
                    if quick_failures >= self.spec.restart.crash_loop_after {
                        tracing::error!(server = %self.name, "{failure}; it failed {quick_failures} times in a row within {}s of starting: not restarting it until `mcpctl restart {}`", QUICK_FAILURE.as_secs(), self.name);
                        self.publish(|s| {
                            s.state = ServerState::CrashLoop;
                            s.pid = None;
                            s.last_error = Some(failure.clone());
                        });
                        let message = format!(
                            "keeps failing right after it starts ({failure}); fix it and run `mcpctl restart {}`",
                            self.name
                        );
                        self.reject_leftover(&message);
                        self.hold(ServerState::CrashLoop, &message, false).await
                    } else {
                        // A server that ran a while before it failed is started again at
                        // once; failures right after a start back off.
                        let delay = if quick_failures == 0 {
                            IMMEDIATE_RESTART
                        } else {
                            let delay = jitter(backoff);
                            backoff = (backoff * 2).min(self.spec.restart.max_delay);
                            delay
                        };
                        tracing::warn!(server = %self.name, "{failure}; restarting in {:.1}s", delay.as_secs_f64());
                        self.publish(|s| {
                            s.state = ServerState::Failed;
                            s.pid = None;
                            s.last_error = Some(failure.clone());
                        });
                        let message =
                            format!("is restarting after it failed ({failure}); try again shortly");
                        // Requests wait for the restart as they wait for a start, each bounded
                        // by its own request timeout (the session cancels it then); a crash
                        // loop answers those still waiting.
                        self.hold_for(delay, &message, true).await
                    }
                }
            };
            match held {
                Held::Stop => break,
                Held::Start(commands) => {
                    carried = commands;
                    if self.snapshot.borrow().state == ServerState::CrashLoop {
                        quick_failures = 0;
                        backoff = self.spec.restart.initial_delay;
                    }
                    if failed {
                        self.publish(|s| s.restarts += 1);
                    }
                }
            }
        }
        self.publish(|s| {
            s.state = ServerState::Stopped;
            s.pid = None;
        });
    }

    /// Waits in `secret-missing`: requests fail at once with `why` (which names the secret and
    /// the command that sets it). A changed secret replaces this instance.
    async fn hold_secret_missing(&mut self, why: &str, carried: &mut Vec<Command>) -> Held {
        tracing::warn!(server = %self.name, "{why}");
        self.publish(|s| s.last_error = Some(why.to_owned()));
        for cmd in carried.drain(..) {
            reject(
                cmd,
                RouteError {
                    code: envelope::UPSTREAM_UNAVAILABLE,
                    message: format!("server `{}` {why}", self.name),
                },
            );
        }
        self.hold(ServerState::SecretMissing, why, false).await
    }

    /// Whether the server waits for its first request: `"start": "lazy"` and its lists are
    /// known from the catalog cache (without them it starts once to fill it).
    fn starts_lazily(&self) -> bool {
        self.spec.exposure.start == crate::config::exposure::Start::Lazy
            && self.snapshot.borrow().cached
    }

    /// Holds requests until `gate` opens; `None` when told to stop first.
    async fn wait_for_gate(&mut self, mut gate: oneshot::Receiver<()>) -> Option<Vec<Command>> {
        let mut waiting = Vec::new();
        loop {
            let cmd = tokio::select! {
                _ = &mut gate => return Some(waiting),
                cmd = self.rx.recv() => cmd,
            };
            match cmd {
                None => return None,
                Some(Command::Stop { done }) => {
                    let _ = done.send(());
                    for cmd in waiting {
                        reject(
                            cmd,
                            RouteError {
                                code: envelope::UPSTREAM_UNAVAILABLE,
                                message: format!("server `{}` was stopped", self.name),
                            },
                        );
                    }
                    return None;
                }
                Some(Command::Cancel { upstream_id, .. }) => {
                    waiting.retain(
                        |c| !matches!(c, Command::Request(f, _) if f.upstream_id == upstream_id),
                    );
                }
                Some(cmd @ Command::Request(..)) if waiting.len() < MAX_DEFERRED => {
                    waiting.push(cmd)
                }
                Some(cmd @ Command::Request(..)) => reject(
                    cmd,
                    RouteError {
                        code: envelope::UPSTREAM_BUSY,
                        message: format!(
                            "server `{}` is being replaced and has too many requests waiting",
                            self.name
                        ),
                    },
                ),
                Some(_) => {}
            }
        }
    }

    /// Waits while the server is down, answering requests with an error that says why, until
    /// it is told to start (or, if `wake_on_request`, a request arrives) or to stop for good.
    async fn hold(&mut self, state: ServerState, why: &str, wake_on_request: bool) -> Held {
        self.publish(|s| {
            s.state = state;
            s.pid = None;
        });
        self.hold_until(None, why, wake_on_request, None).await
    }

    /// Waits `delay` before a restart; a start or restart command cuts it short. With `defer`,
    /// requests (and those left over from the process that ended) wait for the restart.
    async fn hold_for(&mut self, delay: Duration, why: &str, defer: bool) -> Held {
        let mut waiting = std::mem::take(&mut self.leftover);
        let held = self
            .hold_until(
                Some(Instant::now() + delay),
                why,
                false,
                defer.then_some(&mut waiting),
            )
            .await;
        match held {
            Held::Start(mut commands) => {
                waiting.append(&mut commands);
                Held::Start(waiting)
            }
            Held::Stop => {
                let message = format!("server `{}` was stopped", self.name);
                for cmd in waiting {
                    reject(
                        cmd,
                        RouteError {
                            code: envelope::UPSTREAM_UNAVAILABLE,
                            message: message.clone(),
                        },
                    );
                }
                Held::Stop
            }
        }
    }

    /// Answers the requests left over from the process that ended with why it is not there.
    fn reject_leftover(&mut self, why: &str) {
        for cmd in std::mem::take(&mut self.leftover) {
            reject(
                cmd,
                RouteError {
                    code: envelope::UPSTREAM_UNAVAILABLE,
                    message: format!("server `{}` {why}", self.name),
                },
            );
        }
    }

    async fn hold_until(
        &mut self,
        until: Option<Instant>,
        why: &str,
        wake_on_request: bool,
        mut defer: Option<&mut Vec<Command>>,
    ) -> Held {
        loop {
            let timer = async {
                match until {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let cmd = tokio::select! {
                _ = timer => return Held::Start(Vec::new()),
                cmd = self.rx.recv() => cmd,
            };
            match cmd {
                None => return Held::Stop,
                Some(Command::Stop { done }) => {
                    let _ = done.send(());
                    return Held::Stop;
                }
                Some(cmd @ Command::Request(..))
                    if defer.as_ref().is_some_and(|d| d.len() < MAX_DEFERRED) =>
                {
                    if let Some(waiting) = defer.as_mut() {
                        waiting.push(cmd);
                    }
                }
                Some(Command::Cancel { upstream_id, .. }) if defer.is_some() => {
                    if let Some(waiting) = defer.as_mut() {
                        waiting.retain(|c| {
                            !matches!(c, Command::Request(f, _) if f.upstream_id == upstream_id)
                        });
                    }
                }
                Some(cmd @ Command::Request(..)) if wake_on_request => {
                    return Held::Start(vec![cmd]);
                }
                Some(Command::Request(_, reply)) => {
                    let _ = reply.send(Err(RouteError {
                        code: envelope::UPSTREAM_UNAVAILABLE,
                        message: format!("server `{}` {why}", self.name),
                    }));
                }
                Some(_) => {}
            }
        }
    }

    fn publish(&self, change: impl FnOnce(&mut Snapshot)) {
        self.snapshot.send_modify(|s| {
            let before = s.state;
            change(s);
            if s.state != before {
                s.since = Some(std::time::Instant::now());
            }
        });
        self.context.catalog_dirty.notify_one();
    }

    fn allocate_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    async fn run_once(&mut self, carried: Vec<Command>) -> Outcome {
        self.ready = false;
        self.listen = listen::UpstreamListen::default();
        self.publish(|s| {
            s.state = ServerState::Starting;
            s.pid = None;
        });
        let mut transport = match Transport::start(
            &self.name,
            &self.spec,
            self.context.records.as_deref(),
            self.context.auth.as_ref(),
        )
        .await
        {
            Ok(t) => t,
            Err(why) => return Outcome::Failed(why.to_string()),
        };
        let pid = transport.pid();
        tracing::info!(server = %self.name, pid, "started `{}`", self.spec.describe());
        let stderr = transport.stderr_tail();
        let contain = transport.in_force();
        self.publish(|s| {
            s.pid = pid;
            s.stderr = stderr;
            s.contain = contain;
        });

        if let Err(why) = self.handshake(&transport) {
            transport.stop(self.spec.stop).await;
            return self.fail_pending(why.to_string());
        }
        let probe_deadline =
            tokio::time::sleep(modern::PROBE_TIMEOUT.min(self.spec.startup_timeout));
        tokio::pin!(probe_deadline);
        let mut ready = false;
        let mut deferred: VecDeque<Command> = carried.into();
        let startup_deadline = tokio::time::sleep(self.spec.startup_timeout);
        tokio::pin!(startup_deadline);
        let mut ping_sent: Option<Instant> = None;
        let ping_every = self.spec.ping_interval.unwrap_or(Duration::from_secs(3600));
        let mut ping_timer = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        ping_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_use = Instant::now();

        loop {
            tokio::select! {
                event = transport.next() => match event {
                    Event::Message(bytes) => match self.on_line(&bytes, &transport) {
                        LineEffect::None => {}
                        LineEffect::Ready => {
                            ready = true;
                            // The idle timeout counts from here, not from the spawn.
                            last_use = Instant::now();
                            while let Some(cmd) = deferred.pop_front() {
                                self.on_command(cmd, &transport);
                            }
                        }
                        LineEffect::Fail(why) => {
                            transport.stop(self.spec.stop).await;
                            return self.fail_pending(why);
                        }
                    },
                    Event::Related(bytes, id) => {
                        // A notification or request on a request's own stream: no handshake.
                        self.related = Some(id);
                        let effect = self.on_line(&bytes, &transport);
                        self.related = None;
                        if let LineEffect::Fail(why) = effect {
                            transport.stop(self.spec.stop).await;
                            return self.fail_pending(why);
                        }
                    }
                    Event::TooLong(len, id) => self.on_too_long(len, id),
                    Event::Closed(why) => {
                        if self.is_probing() {
                            // Lenient with servers that die of an unknown request: the next
                            // start sends `initialize`.
                            self.publish(|s| s.era = Some(Era::Legacy));
                        }
                        // Requests never sent go to the next process.
                        self.leftover.extend(deferred.drain(..));
                        let why = crate::redact::Redactor::process().redact_owned(why);
                        let exit = transport.last_exit();
                        self.publish(|s| s.last_exit = exit);
                        return self.fail_pending(why);
                    }
                    Event::AuthRequired(why) => {
                        self.fail_pending(why.clone());
                        return Outcome::AuthRequired(why);
                    }
                    Event::Session(what) => self.publish(|s| s.session = Some(what)),
                    Event::Warning(why) => {
                        // Redacted before the journal sees it (an HTTP error may echo a header).
                        let why = crate::redact::Redactor::process().redact_owned(why);
                        tracing::warn!(server = %self.name, "{why}");
                        self.publish(|s| s.last_error = Some(why));
                    }
                },
                // While the process ends by itself, requests wait in the queue: reading them
                // would interrupt the stop sequence, and the process can no longer take them.
                cmd = self.rx.recv(), if !transport.closing() => match cmd {
                    None | Some(Command::Stop { .. }) => {
                        self.publish(|s| s.state = ServerState::Stopping);
                        let how = transport.stop(self.spec.stop).await;
                        tracing::info!(server = %self.name, "stopped: {how}");
                        let stopped = format!("server `{}` was stopped", self.name);
                        self.fail_pending(stopped.clone());
                        for cmd in deferred.drain(..) {
                            reject(cmd, RouteError { code: envelope::UPSTREAM_UNAVAILABLE, message: stopped.clone() });
                        }
                        if let Some(Command::Stop { done }) = cmd {
                            let _ = done.send(());
                        }
                        return Outcome::Stopped;
                    }
                    Some(cmd) if ready && !transport.closing() => {
                        if matches!(cmd, Command::Request(..)) {
                            last_use = Instant::now();
                        }
                        self.on_command(cmd, &transport);
                    }
                    Some(Command::Cancel { upstream_id, .. }) => {
                        deferred.retain(|c| !matches!(c, Command::Request(f, _) if f.upstream_id == upstream_id));
                    }
                    Some(cmd) if deferred.len() < MAX_DEFERRED => deferred.push_back(cmd),
                    Some(cmd) => reject(cmd, RouteError {
                        code: envelope::UPSTREAM_BUSY,
                        message: format!("server `{}` is starting and has too many requests waiting", self.name),
                    }),
                },
                _ = ping_timer.tick(), if ready && self.spec.ping_interval.is_some() => {
                    if !self.ping_outstanding() {
                        ping_sent = None;
                    }
                    if ping_sent.is_none() {
                        let id = self.allocate_id();
                        let ping = if self.modern {
                            // 2026-07-28 has no ping: the discovery request stands in.
                            modern::request(id, "server/discover", None)
                        } else {
                            envelope::request::<()>(id, "ping", None)
                        };
                        if transport.send(Outbound::request(id, ping)).is_ok() {
                            self.pending.insert(id, Pending::Ping);
                            ping_sent = Some(Instant::now());
                        }
                    }
                }
                // A server busy with a client's request may answer late: its requests time out
                // on their own, and the ping decides once it is unused again.
                _ = deadline(ping_sent.map(|sent| sent + self.spec.ping_timeout)), if self.is_unused() => {
                    if self.ping_outstanding() {
                        let why = format!("did not answer a health ping within {}s", self.spec.ping_timeout.as_secs());
                        transport.stop(self.spec.stop).await;
                        return self.fail_pending(why);
                    }
                    ping_sent = None;
                }
                _ = idle_deadline(self.spec.idle_timeout, last_use), if ready && self.is_unused() && !self.is_listing() => {
                    tracing::info!(server = %self.name, "idle for {}s: stopping it until it is needed", self.spec.idle_timeout.map_or(0, |d| d.as_secs()));
                    transport.stop(self.spec.stop).await;
                    self.fail_pending(String::new());
                    return Outcome::Idle;
                }
                _ = deadline(self.listen.retry_at), if ready => self.open_listen(&transport),
                _ = &mut probe_deadline, if self.is_probing() => {
                    // A slow server may still answer the probe: its answer is taken if it comes
                    // before the `initialize` answer (`Pending::LateDiscover`).
                    for p in self.pending.values_mut() {
                        if matches!(p, Pending::Discover { probe: true }) {
                            *p = Pending::LateDiscover;
                        }
                    }
                    if let Err(why) = self.fall_back(&transport, "no answer to server/discover") {
                        transport.stop(self.spec.stop).await;
                        return self.fail_pending(why.to_string());
                    }
                }
                _ = &mut startup_deadline, if !ready => {
                    let why = format!("did not answer initialize within {}s", self.spec.startup_timeout.as_secs());
                    for cmd in deferred.drain(..) {
                        reject(cmd, RouteError { code: envelope::UPSTREAM_UNAVAILABLE, message: format!("server `{}` {why}", self.name) });
                    }
                    transport.stop(self.spec.stop).await;
                    return self.fail_pending(why);
                }
            }
        }
    }

    /// A health ping is waiting for its answer.
    fn ping_outstanding(&self) -> bool {
        self.pending.values().any(|p| matches!(p, Pending::Ping))
    }

    /// No client request is waiting on the server and it waits on no client.
    fn is_unused(&self) -> bool {
        !self.context.downstream.owes(&self.me)
            && !self
                .pending
                .values()
                .any(|p| matches!(p, Pending::Client { .. }))
    }

    /// A list is being fetched (an idle stop would leave the catalog without it).
    fn is_listing(&self) -> bool {
        self.pending
            .values()
            .any(|p| matches!(p, Pending::List { .. }))
    }

    /// Fails what was pending on a transport that is gone.
    fn fail_pending(&mut self, why: String) -> Outcome {
        for (_, pending) in self.pending.drain() {
            if let Pending::Client { reply, .. } = pending {
                let _ = reply.send(Err(RouteError {
                    code: envelope::UPSTREAM_LOST,
                    message: format!("server `{}` went away before answering: {why}", self.name),
                }));
            }
        }
        // The clients are told that the requests they may be showing their users are void.
        self.context.downstream.upstream_gone(&self.me);
        self.listing = [Listing::default(); 4];
        Outcome::Failed(why)
    }

    fn on_command(&mut self, cmd: Command, transport: &Transport) {
        match cmd {
            Command::Request(forward, reply) => self.forward(forward, reply, transport),
            Command::Cancel {
                upstream_id,
                reason,
            } => {
                if self.pending.remove(&upstream_id).is_some() {
                    let params = json!({"requestId": upstream_id, "reason": reason});
                    let note = if self.modern {
                        modern::notification("notifications/cancelled", &params)
                    } else {
                        envelope::notification("notifications/cancelled", Some(&params))
                    };
                    let _ = transport.send(Outbound {
                        kind: OutKind::Cancelled(upstream_id),
                        line: note,
                    });
                }
            }
            Command::ClientResponse { upstream_id, line } => {
                tracing::trace!(server = %self.name, id = %upstream_id, "a client answered");
                let _ = transport.send(Outbound::response(line));
            }
            Command::RootsChanged { line, from } => {
                self.roots_session = Some(from);
                let _ = transport.send(Outbound::notification(line));
            }
            Command::Internal { method, params } => self.internal(method, params, transport),
            Command::Retoken { upstream_id, token } => {
                if let Some(Pending::Client { progress_token, .. }) =
                    self.pending.get_mut(&upstream_id)
                {
                    // The upstream keeps the token it got (the upstream id) only if it had one.
                    if progress_token.is_some() {
                        *progress_token = token;
                    }
                }
            }
            Command::Stop { done } => {
                // The run loop handles Stop before dispatching; answer it anyway.
                let _ = done.send(());
            }
        }
    }

    fn forward(&mut self, f: Forward, reply: oneshot::Sender<Reply>, transport: &Transport) {
        let line = if self.modern {
            // The capabilities of the client making this call (per request for a modern
            // client, its `initialize` for a legacy one), restricted to what mcpd routes.
            let caps = f.caps.unwrap_or_else(|| f.session.caps());
            tracing::trace!(server = %self.name, ?caps, "modern request");
            let level = match f.caps {
                Some(_) => f.log_level.as_deref(),
                None => f.session.log_level(),
            };
            modern::stamp(&f.line, &caps, level)
        } else {
            f.line
        };
        match transport.send(Outbound::request(f.upstream_id, line)) {
            Ok(()) => {
                self.pending.insert(
                    f.upstream_id,
                    Pending::Client {
                        client_id: f.client_id,
                        progress_token: f.progress_token,
                        session: f.session,
                        progress: f.progress,
                        started: Instant::now(),
                        reply,
                        caps: f.caps,
                        asks: f.asks,
                    },
                );
            }
            Err(why) => {
                let _ = reply.send(Err(RouteError {
                    code: envelope::UPSTREAM_BUSY,
                    message: format!("server `{}` cannot take the request: {why}", self.name),
                }));
            }
        }
    }

    fn internal(&mut self, method: &'static str, params: serde_json::Value, transport: &Transport) {
        if self.modern && modern_removed(method) {
            // The level goes with each request; resource updates come on the listen.
            if method != "logging/setLevel" {
                self.listen_uris_changed(transport);
            }
            return;
        }
        let id = self.allocate_id();
        if transport
            .send(Outbound::request(
                id,
                self.own_request(id, method, Some(&params)),
            ))
            .is_ok()
        {
            self.pending.insert(id, Pending::Internal { method });
        }
    }

    fn on_line(&mut self, bytes: &[u8], transport: &Transport) -> LineEffect {
        let Ok(text) = std::str::from_utf8(bytes) else {
            tracing::warn!(server = %self.name, "dropped a message that is not UTF-8");
            return LineEffect::None;
        };
        let msg = match Envelope::parse(text) {
            Ok(msg) => msg,
            Err(e) => {
                // Servers that print banners on stdout are common.
                tracing::warn!(server = %self.name, "dropped a line that is not JSON-RPC ({e}): {}", preview(text));
                return LineEffect::None;
            }
        };
        match msg.kind() {
            Kind::Response => self.on_response(&msg, transport),
            Kind::Notification => {
                self.on_notification(&msg, transport);
                LineEffect::None
            }
            Kind::Request => {
                self.on_server_request(&msg, transport);
                LineEffect::None
            }
        }
    }

    /// A message over the line limit was dropped. When it answered a client's request, that
    /// client is told at once (rather than after its request timeout).
    fn on_too_long(&mut self, len: usize, id: Option<u64>) {
        let limit = mcpd_proto::line::MAX_MESSAGE_LINE;
        let answered = id.and_then(|id| match self.pending.get(&id) {
            Some(Pending::Client { .. }) => self.pending.remove(&id),
            _ => None,
        });
        if let Some(Pending::Client { reply, .. }) = answered {
            let message = format!(
                "server `{}` answered with a message of {len} bytes, over mcpd's limit of {limit} bytes; the answer was dropped",
                self.name
            );
            tracing::warn!(server = %self.name, "{message}");
            let _ = reply.send(Err(RouteError {
                code: envelope::INTERNAL_ERROR,
                message,
            }));
            return;
        }
        tracing::warn!(server = %self.name, "dropped a message of {len} bytes, over the {limit} byte limit");
    }

    fn on_response(&mut self, msg: &Envelope<'_>, transport: &Transport) -> LineEffect {
        let Some(id) = msg.id.and_then(|id| id.get().parse::<u64>().ok()) else {
            tracing::debug!(server = %self.name, "response with an id mcpd never sent");
            return LineEffect::None;
        };
        match self.pending.remove(&id) {
            Some(Pending::Client {
                client_id, reply, ..
            }) => {
                let answer = super::lenient::malformed_error(msg, &client_id, &self.name)
                    .unwrap_or_else(|| super::ids::answer_to_client(msg, &client_id));
                let _ = reply.send(Ok(answer));
                LineEffect::None
            }
            Some(Pending::Initialize) => self.on_initialized(msg, transport),
            Some(Pending::Discover { probe }) => self.on_discovered(msg, transport, probe),
            Some(Pending::LateDiscover) => self.on_late_discovery(msg, transport),
            Some(Pending::List { kind, acc, pages }) => {
                self.on_list_page(msg, transport, kind, acc, pages);
                LineEffect::None
            }
            Some(Pending::Ping) => LineEffect::None,
            Some(Pending::Listen) => {
                self.on_listen_ended(id, msg);
                LineEffect::None
            }
            Some(Pending::Internal { method }) => {
                if let Some(error) = msg.error {
                    tracing::warn!(server = %self.name, "{method} failed: {}", preview(error.get()));
                }
                LineEffect::None
            }
            None => {
                tracing::debug!(server = %self.name, id, "response to a cancelled or unknown request dropped");
                LineEffect::None
            }
        }
    }

    fn on_initialized(&mut self, msg: &Envelope<'_>, transport: &Transport) -> LineEffect {
        let Some(result) = msg.result else {
            let error = msg.error.map(RawValue::get).unwrap_or("?");
            if self
                .pending
                .values()
                .any(|p| matches!(p, Pending::LateDiscover))
            {
                // A modern server refusing the fallback: its late probe answer decides.
                tracing::info!(server = %self.name, "initialize was refused while the probe is unanswered: waiting for it");
                return LineEffect::None;
            }
            if self.spec.protocol == crate::config::protocol::Protocol::Auto {
                // Maybe it was modern after all (a probe that went unanswered): probe again
                // at the next start.
                self.publish(|s| s.era = None);
            }
            return LineEffect::Fail(format!("refused initialize: {}", preview(error)));
        };
        let info = member(result, "serverInfo")
            .and_then(|i| serde_json::from_str::<ServerInfo>(i.get()).ok());
        let caps = member(result, "capabilities")
            .map(parse_caps)
            .unwrap_or_default();
        let instructions = member(result, "instructions")
            .and_then(|i| serde_json::from_str::<String>(i.get()).ok());
        let version = member(result, "protocolVersion")
            .and_then(|v| envelope::decode_str(v).ok())
            .map(|v| v.into_owned());
        let _ = transport.send(Outbound {
            kind: OutKind::Initialized,
            line: envelope::notification::<()>("notifications/initialized", None),
        });
        let info = info.map(|i| (i.name, i.version));
        self.become_ready(info, caps, instructions, version.as_deref(), transport)
    }

    /// The handshake is done (`initialize` answered, or a modern server discovered): publish
    /// what it offers and fetch its lists.
    fn become_ready(
        &mut self,
        info: Option<(String, String)>,
        caps: UpstreamCaps,
        instructions: Option<String>,
        version: Option<&str>,
        transport: &Transport,
    ) -> LineEffect {
        self.ready = true;
        let era = if self.modern {
            Era::Modern
        } else {
            Era::Legacy
        };
        tracing::info!(server = %self.name, protocol = version.unwrap_or("?"), "ready");
        self.publish(|s| {
            s.state = ServerState::Ready;
            s.era = Some(era);
            s.server_info =
                info.map(|(name, version)| format!("{name} {version}").trim().to_owned());
            s.last_error = None;
            s.caps = caps;
            s.instructions = instructions;
            for kind in ListKind::ALL {
                if !caps.offers(kind) {
                    s.lists[kind.index()] = Arc::new(Vec::new());
                    s.known[kind.index()] = true;
                }
            }
            s.cached = s.cached && !s.known.iter().all(|k| *k);
        });
        for kind in ListKind::ALL {
            if caps.offers(kind) {
                self.fetch_list(kind, transport);
            }
        }
        if caps.logging
            && !self.modern
            && let Some(level) = self.context.downstream.log_level()
        {
            self.internal("logging/setLevel", json!({"level": level}), transport);
        }
        if caps.subscribe && !self.modern {
            for uri in self.context.downstream.subscribed_uris(&self.key) {
                self.internal("resources/subscribe", json!({"uri": uri}), transport);
            }
        }
        self.open_listen(transport);
        LineEffect::Ready
    }

    /// Starts the handshake of a new process in its era (see `upstream::modern`): `initialize`,
    /// or `server/discover` for a modern server and as the probe of an `auto` one whose era
    /// the catalog cache does not know.
    fn handshake(&mut self, transport: &Transport) -> Result<(), HandshakeError> {
        use crate::config::protocol::Protocol;
        let known = self.snapshot.borrow().era;
        self.modern = false;
        let probe = match (self.spec.protocol, known) {
            (Protocol::Legacy, _) | (Protocol::Auto, Some(Era::Legacy)) => {
                return self.send_initialize(transport);
            }
            (Protocol::Modern, _) | (Protocol::Auto, Some(Era::Modern)) => false,
            (Protocol::Auto, None) => true,
        };
        let id = self.allocate_id();
        self.pending.insert(id, Pending::Discover { probe });
        transport
            .send(Outbound::request(
                id,
                modern::request(id, "server/discover", None),
            ))
            .map_err(|source| HandshakeError {
                method: "server/discover",
                source,
            })
    }

    fn send_initialize(&mut self, transport: &Transport) -> Result<(), HandshakeError> {
        self.modern = false;
        let init_id = self.allocate_id();
        let init = envelope::request(
            init_id,
            "initialize",
            Some(&json!({
                "protocolVersion": UPSTREAM_PROTOCOL,
                // What mcpd can route to clients that declared them.
                "capabilities": {
                    "roots": {"listChanged": true},
                    "sampling": {},
                    "elicitation": {"form": {}, "url": {}},
                },
                "clientInfo": {"name": "mcpd", "version": env!("CARGO_PKG_VERSION")},
            })),
        );
        self.pending.insert(init_id, Pending::Initialize);
        transport
            .send(Outbound {
                kind: OutKind::Initialize(init_id),
                line: init,
            })
            .map_err(|source| HandshakeError {
                method: "initialize",
                source,
            })
    }

    /// Whether the `server/discover` probe of an `auto` server is still unanswered.
    fn is_probing(&self) -> bool {
        self.pending
            .values()
            .any(|p| matches!(p, Pending::Discover { probe: true }))
    }

    /// The probe found no modern server: the `initialize` handshake follows.
    fn fall_back(&mut self, transport: &Transport, why: &str) -> Result<(), HandshakeError> {
        tracing::info!(server = %self.name, "not a {} server ({why}); sending initialize", modern::MODERN_VERSION);
        self.publish(|s| s.era = Some(Era::Legacy));
        self.send_initialize(transport)
    }

    fn on_discovered(
        &mut self,
        msg: &Envelope<'_>,
        transport: &Transport,
        probe: bool,
    ) -> LineEffect {
        match modern::probe_outcome(msg) {
            Probe::Modern => {}
            Probe::Legacy(why) if probe => {
                return match self.fall_back(transport, &why) {
                    Ok(()) => LineEffect::None,
                    Err(why) => LineEffect::Fail(why.to_string()),
                };
            }
            Probe::Legacy(why) | Probe::Refused(why) => {
                if !probe {
                    // Configured as modern: say what to change.
                    return LineEffect::Fail(format!(
                        "is configured with \"protocol\": \"{}\" but {why}; set \"protocol\": \"auto\" or \"legacy\" in its definition",
                        modern::MODERN_VERSION
                    ));
                }
                return LineEffect::Fail(why);
            }
        }
        let Some(result) = msg.result else {
            return LineEffect::Fail("server/discover answered without a result".into());
        };
        self.modern = true;
        let (caps, instructions, info) = modern::discovered(result);
        self.note_list_changes(caps);
        let caps = caps.map(parse_caps).unwrap_or_default();
        self.become_ready(
            info,
            caps,
            instructions,
            Some(modern::MODERN_VERSION),
            transport,
        )
    }

    /// The answer to a probe that had timed out: a modern server that was slow to start (it
    /// will refuse the `initialize` sent meanwhile, whose answer is then dropped).
    fn on_late_discovery(&mut self, msg: &Envelope<'_>, transport: &Transport) -> LineEffect {
        if self.ready || modern::probe_outcome(msg) != Probe::Modern {
            return LineEffect::None;
        }
        tracing::info!(server = %self.name, "the server answered server/discover late: it is modern");
        self.pending
            .retain(|_, p| !matches!(p, Pending::Initialize));
        self.on_discovered(msg, transport, false)
    }

    /// A request of mcpd's own, in the server's era.
    fn own_request(&self, id: u64, method: &str, params: Option<&serde_json::Value>) -> String {
        if self.modern {
            modern::request(id, method, params)
        } else {
            envelope::request(id, method, params)
        }
    }

    /// Asks for the first page of a list; pages accumulate until there is no `nextCursor`.
    fn fetch_list(&mut self, kind: ListKind, transport: &Transport) {
        let state = &mut self.listing[kind.index()];
        if state.busy {
            state.again = true;
            return;
        }
        state.busy = true;
        self.request_page(kind, None, Vec::new(), 0, transport);
    }

    fn request_page(
        &mut self,
        kind: ListKind,
        cursor: Option<String>,
        acc: Vec<Item>,
        pages: usize,
        transport: &Transport,
    ) {
        let id = self.allocate_id();
        let params = cursor.map(|c| json!({"cursor": c}));
        self.pending.insert(id, Pending::List { kind, acc, pages });
        let line = self.own_request(id, kind.method(), params.as_ref());
        if let Err(why) = transport.send(Outbound::request(id, line)) {
            self.pending.remove(&id);
            self.listing[kind.index()] = Listing::default();
            tracing::warn!(server = %self.name, "cannot ask for {}: {why}", kind.method());
        }
    }

    fn on_list_page(
        &mut self,
        msg: &Envelope<'_>,
        transport: &Transport,
        kind: ListKind,
        mut acc: Vec<Item>,
        pages: usize,
    ) {
        let page = match msg.result {
            Some(result) => parse_page(result, kind),
            None => Err(PageError::Failed {
                method: kind.method(),
                error: preview(msg.error.map(RawValue::get).unwrap_or("?")),
            }),
        };
        let next = match page {
            Ok((items, next)) => {
                acc.extend(items);
                next
            }
            Err(why) => {
                tracing::warn!(server = %self.name, "{why}");
                None
            }
        };
        if let Some(cursor) = next {
            if pages + 1 < MAX_LIST_PAGES {
                self.request_page(kind, Some(cursor), acc, pages + 1, transport);
                return;
            }
            tracing::warn!(server = %self.name, "{} still had more pages after {MAX_LIST_PAGES}; the rest is ignored", kind.method());
        }
        tracing::debug!(server = %self.name, count = acc.len(), "{} listed", kind.field());
        let again = std::mem::take(&mut self.listing[kind.index()]).again;
        self.publish(|s| {
            s.lists[kind.index()] = Arc::new(acc);
            s.known[kind.index()] = true;
            if s.known.iter().all(|k| *k) {
                s.cached = false;
            }
        });
        if again {
            self.fetch_list(kind, transport);
        }
    }

    fn on_notification(&mut self, msg: &Envelope<'_>, transport: &Transport) {
        let params = msg.params;
        match msg.method() {
            "notifications/progress" => {
                let token = params.and_then(|p| member(p, "progressToken"));
                let Some(id) = token.and_then(|t| t.get().parse::<u64>().ok()) else {
                    return;
                };
                if let (
                    Some(Pending::Client {
                        progress_token: Some(original),
                        session,
                        progress,
                        ..
                    }),
                    Some(token),
                ) = (self.pending.get(&id), token)
                {
                    session.try_send(super::ids::progress_to_client(msg, token, original));
                    progress.mark();
                }
            }
            "notifications/message"
                if let Some(Pending::Client { session, .. }) =
                    self.related.and_then(|id| self.pending.get(&id)) =>
            {
                self.context.downstream.request_log(&self.key, session, msg);
            }
            "notifications/subscriptions/acknowledged" => {
                self.on_listen_acknowledged(msg, transport);
            }
            "notifications/cancelled" => {
                if let Some(request) = params.and_then(|p| member(p, "requestId")) {
                    self.context
                        .downstream
                        .request_cancelled(&self.me, request.get(), msg);
                }
            }
            // Log messages, resource updates, task status, elicitation completions: the router
            // decides which sessions get them.
            _ if self.context.downstream.notify(&self.key, msg) => {}
            method => {
                let kinds: Vec<ListKind> = ListKind::ALL
                    .into_iter()
                    .filter(|k| k.changed_notification() == method)
                    .collect();
                if kinds.is_empty() {
                    tracing::debug!(server = %self.name, method, "notification not routed");
                }
                if !self.ready {
                    // Lists are fetched once the handshake is done anyway.
                    return;
                }
                for kind in kinds {
                    self.fetch_list(kind, transport);
                }
            }
        }
    }

    fn on_server_request(&mut self, msg: &Envelope<'_>, transport: &Transport) {
        let id = msg.id.unwrap_or(RawValue::NULL);
        let method = msg.method();
        let url_mode = method == "elicitation/create"
            && msg
                .params
                .and_then(|p| member(p, "mode"))
                .and_then(|m| envelope::decode_str(m).ok())
                .as_deref()
                == Some("url");
        match method {
            "ping" => {
                let _ = transport.send(Outbound::response(envelope::response(id, &json!({}))));
                return;
            }
            "sampling/createMessage" | "elicitation/create" | "roots/list" => {}
            _ => {
                let answer = envelope::error_response(
                    Some(id),
                    envelope::METHOD_NOT_FOUND,
                    &format!("Method not found: {method}"),
                );
                let _ = transport.send(Outbound::response(answer));
                return;
            }
        }
        let Some((session, asks)) = self.choose_session(method, url_mode) else {
            tracing::debug!(server = %self.name, method, "no attached client can answer");
            let answer = envelope::error_response(
                Some(id),
                envelope::METHOD_NOT_FOUND,
                &format!(
                    "no client attached to mcpd that supports {method} is waiting on server `{}`",
                    self.name
                ),
            );
            let _ = transport.send(Outbound::response(answer));
            return;
        };
        if let Some(asks) = asks {
            // A modern client's call: its task asks the client (`router::mrtr`).
            let ask = super::Ask {
                id: id.get().to_owned(),
                method: method.to_owned(),
                params: msg.params.map(RawValue::to_owned),
                upstream: self.me.clone(),
            };
            if asks.try_send(ask).is_err() {
                let answer = envelope::error_response(
                    Some(id),
                    envelope::UPSTREAM_BUSY,
                    "the call this request belongs to is not waiting any more",
                );
                let _ = transport.send(Outbound::response(answer));
            }
            return;
        }
        if let Err(e) = self
            .context
            .downstream
            .send_request(&session, &self.me, id.get(), msg)
        {
            let answer = envelope::error_response(Some(id), e.code, &e.message);
            let _ = transport.send(Outbound::response(answer));
        }
    }

    /// The session a server-to-client request goes to, chosen by the router among the
    /// sessions with a request in flight here and the one that last said its roots changed.
    ///
    /// A modern client's call (it declared its capabilities in the request) takes the request
    /// through its `asks` channel instead.
    fn choose_session(
        &self,
        method: &str,
        url_mode: bool,
    ) -> Option<(CallerRef, Option<mpsc::Sender<super::Ask>>)> {
        let mut callers = Vec::new();
        let mut candidates = Vec::new();
        for p in self.pending.values() {
            if let Pending::Client {
                session,
                started,
                caps,
                asks,
                ..
            } = p
            {
                callers.push((session, asks.clone()));
                candidates.push(Candidate {
                    caller: session,
                    caps: caps.unwrap_or_else(|| session.caps()),
                    started: Some(*started),
                });
            }
        }
        if let Some(roots) = &self.roots_session {
            candidates.push(Candidate {
                caller: roots,
                caps: roots.caps(),
                started: None,
            });
        }
        let chosen = self
            .context
            .downstream
            .choose(method, url_mode, &candidates)?;
        match callers.get(chosen) {
            Some((session, asks)) => Some((CallerRef::clone(session), asks.clone())),
            None => self.roots_session.clone().map(|s| (s, None)),
        }
    }
}

/// `serverInfo` of an `InitializeResult` (or the `DiscoverResult`'s `_meta` entry).
#[derive(serde::Deserialize)]
pub(super) struct ServerInfo {
    #[serde(default)]
    pub(super) name: String,
    #[serde(default)]
    pub(super) version: String,
}

fn parse_caps(caps: &RawValue) -> UpstreamCaps {
    let resources = member(caps, "resources");
    UpstreamCaps {
        tools: member(caps, "tools").is_some(),
        prompts: member(caps, "prompts").is_some(),
        resources: resources.is_some(),
        subscribe: resources
            .and_then(|r| member(r, "subscribe"))
            .is_some_and(|s| s.get() == "true"),
        logging: member(caps, "logging").is_some(),
        completions: member(caps, "completions").is_some(),
        tasks: member(caps, "tasks")
            .and_then(|t| member(t, "requests"))
            .and_then(|r| member(r, "tools"))
            .and_then(|t| member(t, "call"))
            .is_some(),
    }
}

/// Why a page of a list brought nothing (logged; the list keeps what earlier pages brought).
#[derive(Debug, thiserror::Error)]
enum PageError {
    /// The upstream answered the list request with an error.
    #[error("{method} failed: {error}")]
    Failed {
        method: &'static str,
        /// The error object, shortened.
        error: String,
    },
    #[error("{method} result is not an object: {source}")]
    NotAnObject {
        method: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{method} `{field}` is not an array: {source}")]
    NotAnArray {
        method: &'static str,
        field: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// Parses one list result page: the items and the next cursor.
fn parse_page(result: &RawValue, kind: ListKind) -> Result<(Vec<Item>, Option<String>), PageError> {
    let items = field(result, kind.field()).map_err(|source| PageError::NotAnObject {
        method: kind.method(),
        source,
    })?;
    let items = match items {
        Some(t) => serde_json::from_str::<Vec<&RawValue>>(t.get()).map_err(|source| {
            PageError::NotAnArray {
                method: kind.method(),
                field: kind.field(),
                source,
            }
        })?,
        None => Vec::new(),
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match member(item, kind.key_field()).and_then(|n| envelope::decode_str(n).ok()) {
            Some(key) => out.push(Item {
                key: key.into_owned(),
                raw: item.to_owned(),
            }),
            None => tracing::warn!(
                "skipped an item of {} without a string `{}`: {}",
                kind.method(),
                kind.key_field(),
                preview(item.get())
            ),
        }
    }
    let next = member(result, "nextCursor").and_then(|c| {
        serde_json::from_str::<Option<String>>(c.get())
            .ok()
            .flatten()
    });
    Ok((out, next))
}

/// Requests of mcpd's own that MCP 2026-07-28 removed.
fn modern_removed(method: &str) -> bool {
    matches!(
        method,
        "logging/setLevel" | "resources/subscribe" | "resources/unsubscribe"
    )
}

fn reject(cmd: Command, error: RouteError) {
    match cmd {
        Command::Request(_, reply) => {
            let _ = reply.send(Err(error));
        }
        Command::Stop { done } => {
            let _ = done.send(());
        }
        _ => {}
    }
}

/// Fires at `at`; never without it.
async fn deadline(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Fires when the server has been unused for its idle timeout; never without one.
async fn idle_deadline(idle: Option<Duration>, last_use: Instant) {
    match idle {
        Some(idle) => tokio::time::sleep_until(last_use + idle).await,
        None => std::future::pending().await,
    }
}

fn preview(text: &str) -> String {
    let cut: String = text.chars().take(200).collect();
    super::process::escape_control(&cut)
}

#[path = "actor_listen.rs"]
mod listen;

#[cfg(test)]
#[path = "actor_tests.rs"]
mod tests;
