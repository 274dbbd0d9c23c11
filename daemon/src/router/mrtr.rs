//! Multi Round-Trip Requests (MCP 2026-07-28) across the protocol eras.
//!
//! - Modern client, modern upstream: the upstream's `InputRequiredResult` goes to the client
//!   with its `requestState` wrapped in state mcpd mints (below); the client's retry is
//!   checked and carries the upstream's own state again, unchanged.
//! - Legacy client, modern upstream ([`legacy_rounds`]): each of the upstream's `inputRequests`
//!   becomes an ordinary server-to-client request to the calling client (only if it declared
//!   the capability); mcpd collects the answers and retries upstream with `inputResponses`, the
//!   upstream's `requestState` unchanged, the upstream's own tool name and identical arguments.
//! - Modern client, legacy upstream ([`park`], [`Prepared::Resume`]): a `sampling/createMessage`,
//!   `elicitation/create` or `roots/list` the upstream sends during the call becomes an
//!   `InputRequiredResult` to the client while the upstream call stays open (parked); the
//!   retry's `inputResponses` answer the upstream's waiting requests and the call's final result
//!   answers the retry.
//!
//! `requestState` that mcpd mints is `mcpd1.<claims>.<HMAC-SHA256>`: the key is 32 random bytes
//! held only in the daemon's memory; the claims bind it to the session, to the request (a
//! digest of method, name or URI and arguments), a nonce used once, and an expiry
//! ([`STATE_TTL`]). Unsigned, tampered, replayed, expired or misplaced state is answered with an
//! error before anything is routed.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use mcpd_proto::envelope::{self, Envelope, field, member, member_at};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::hub::{ClientCaps, SessionLink};
use crate::upstream::{Ask, Forward, Reply, UpstreamHandle, ids};
use std::sync::Arc;
use tokio::sync::mpsc;

/// How long state mcpd minted stays valid (and a parked upstream call waits for its retry).
pub const STATE_TTL: Duration = Duration::from_secs(120);
/// Rounds of input one call may take before mcpd gives up (a server that never finishes).
const MAX_ROUNDS: usize = 16;
/// MCP 2026-07-28: `MissingRequiredClientCapabilityError`.
pub const MISSING_CAPABILITY: i64 = -32021;
const PREFIX: &str = "mcpd1.";
/// Answers to requests mcpd sent a legacy client on behalf of a modern upstream.
static NEXT_ASK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Whether `method` may be answered with an `InputRequiredResult`.
pub fn carries_input(method: &str) -> bool {
    matches!(method, "tools/call" | "prompts/get" | "resources/read")
}

/// Whether `answer` (a response line) is an `InputRequiredResult`.
pub fn is_input_required(answer: &str) -> bool {
    answer.contains("input_required")
        && Envelope::parse(answer)
            .ok()
            .and_then(|m| m.result)
            .and_then(|r| member(r, "resultType"))
            .is_some_and(|t| t.get() == "\"input_required\"")
}

// ---- signed state ---------------------------------------------------------------------------

fn key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut key = [0u8; 32];
        if let Err(e) = getrandom::fill(&mut key) {
            // Never seen on Linux; a key from the process's hash seeds still stays in memory.
            tracing::warn!("no randomness for the requestState key ({e}); using hash seeds");
            for (i, chunk) in key.chunks_mut(8).enumerate() {
                use std::hash::{BuildHasher, Hasher};
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_usize(i);
                chunk.copy_from_slice(&h.finish().to_le_bytes());
            }
        }
        key
    })
}

fn mac() -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    <Hmac<Sha256> as Mac>::new_from_slice(key()).unwrap_or_else(|_| unreachable!())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What mcpd's `requestState` says, under its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The session it was given to.
    pub s: u64,
    /// A nonce, used once.
    pub n: String,
    /// The digest of the request it belongs to ([`request_digest`]).
    pub d: String,
    /// Expiry, milliseconds since the epoch.
    pub e: u64,
    /// The upstream's own `requestState` (modern upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub u: Option<String>,
    /// A parked upstream call waits under the nonce (legacy upstream).
    #[serde(default)]
    pub p: bool,
}

/// Why a `requestState` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Not one mcpd minted.
    Unsigned,
    /// Its signature does not match its contents.
    Tampered,
    /// Past its expiry.
    Expired,
    /// Given to another session.
    OtherSession,
    /// Given for another request (method, name or arguments differ).
    OtherRequest,
    /// Already used.
    Replayed,
}

impl Rejected {
    fn why(self) -> &'static str {
        match self {
            Self::Unsigned => "it was not issued by this mcpd",
            Self::Tampered => "its signature does not match",
            Self::Expired => "it has expired; call again without it",
            Self::OtherSession => "it was issued to another session",
            Self::OtherRequest => "it was issued for another request",
            Self::Replayed => "it was already used",
        }
    }
}

/// Mints the `requestState` for `claims`.
pub fn mint(claims: &Claims) -> String {
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signed = format!("{PREFIX}{payload}");
    let mut mac = mac();
    mac.update(signed.as_bytes());
    let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signed}.{tag}")
}

/// Fresh claims for session `session` and request `digest`, valid for [`STATE_TTL`].
pub fn claims(session: u64, digest: String, upstream: Option<String>, parked: bool) -> Claims {
    let mut nonce = [0u8; 16];
    if getrandom::fill(&mut nonce).is_err() {
        nonce[..8].copy_from_slice(&now_ms().to_le_bytes());
        nonce[8..].copy_from_slice(
            &NEXT_ASK
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .to_le_bytes(),
        );
    }
    Claims {
        s: session,
        n: URL_SAFE_NO_PAD.encode(nonce),
        d: digest,
        e: now_ms() + STATE_TTL.as_millis() as u64,
        u: upstream,
        p: parked,
    }
}

/// Checks `state` against its signature, then session, request, expiry (at `now`), without
/// using it up.
pub fn check(state: &str, session: u64, digest: &str, now: u64) -> Result<Claims, Rejected> {
    let rest = state.strip_prefix(PREFIX).ok_or(Rejected::Unsigned)?;
    let (payload, tag) = rest.rsplit_once('.').ok_or(Rejected::Unsigned)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| Rejected::Tampered)?;
    let mut mac = mac();
    mac.update(PREFIX.as_bytes());
    mac.update(payload.as_bytes());
    mac.verify_slice(&tag).map_err(|_| Rejected::Tampered)?;
    let claims: Claims = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(Rejected::Tampered)?;
    if claims.s != session {
        return Err(Rejected::OtherSession);
    }
    if claims.d != digest {
        return Err(Rejected::OtherRequest);
    }
    if claims.e <= now {
        return Err(Rejected::Expired);
    }
    Ok(claims)
}

/// Uses up a nonce; `false` if it was used before. Remembered until it would have expired.
fn consume(claims: &Claims) -> bool {
    static USED: OnceLock<Mutex<HashMap<String, u64>>> = OnceLock::new();
    let mut used = USED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let now = now_ms();
    used.retain(|_, expiry| *expiry > now);
    used.insert(claims.n.clone(), claims.e).is_none()
}

/// The digest that binds state to a request: method, name (or URI) and the arguments, as JSON
/// values (so a client that re-encodes the same arguments still matches).
pub fn request_digest(msg: &Envelope<'_>) -> String {
    let params = msg.params;
    let get = |key: &str| params.and_then(|p| member(p, key));
    let target = get("name")
        .or_else(|| get("uri"))
        .and_then(|t| envelope::decode_str(t).ok())
        .unwrap_or_default();
    let arguments = get("arguments")
        .and_then(|a| serde_json::from_str::<serde_json::Value>(a.get()).ok())
        .unwrap_or(serde_json::Value::Null);
    let mut hash = Sha256::new();
    hash.update(msg.method().as_bytes());
    hash.update([0]);
    hash.update(target.as_bytes());
    hash.update([0]);
    hash.update(arguments.to_string().as_bytes());
    URL_SAFE_NO_PAD.encode(&hash.finalize()[..16])
}

// ---- the modern client's side ---------------------------------------------------------------

/// What to do with a modern client's request before it is routed.
#[derive(Debug)]
pub enum Prepared {
    /// Route it as it is.
    AsIs,
    /// Route this line instead (the upstream's own `requestState` put back).
    Line(Bytes),
    /// Answer the client with this line; nothing is routed.
    Answer(String),
    /// Resume the parked upstream call the state names.
    Resume(Box<Parked>),
}

/// Checks the `requestState` of a modern client's `tools/call`, `prompts/get` or
/// `resources/read` on session `session`.
pub fn prepare(line: &Bytes, session: u64) -> Prepared {
    let Some(msg) = std::str::from_utf8(line)
        .ok()
        .and_then(|t| Envelope::parse(t).ok())
    else {
        return Prepared::AsIs;
    };
    if !carries_input(msg.method()) {
        return Prepared::AsIs;
    }
    let id = msg.id.unwrap_or(RawValue::NULL);
    let refuse = |why: &str| {
        Prepared::Answer(envelope::error_response(
            Some(id),
            envelope::INVALID_PARAMS,
            &format!("Invalid requestState: {why}"),
        ))
    };
    let raw = match msg.params.map(|p| field(p, "requestState")) {
        None | Some(Ok(None)) => return Prepared::AsIs,
        Some(Ok(Some(raw))) => raw,
        Some(Err(_)) => return refuse("params carry it more than once"),
    };
    let Ok(state) = envelope::decode_str(raw) else {
        return refuse("it is not a string");
    };
    let claims = match check(&state, session, &request_digest(&msg), now_ms()) {
        Ok(c) => c,
        Err(r) => {
            tracing::info!(session, "refused a requestState: {}", r.why());
            return refuse(r.why());
        }
    };
    if !consume(&claims) {
        tracing::info!(
            session,
            "refused a requestState: {}",
            Rejected::Replayed.why()
        );
        return refuse(Rejected::Replayed.why());
    }
    if claims.p {
        return match take_parked(&claims.n, session) {
            Some(parked) => Prepared::Resume(Box::new(parked)),
            None => refuse("the call it continues is gone (it expired or its server restarted)"),
        };
    }
    let Some(upstream) = claims.u else {
        return refuse("it carries nothing to continue");
    };
    Prepared::Line(Bytes::from(ids::request_state_to_upstream(
        &msg, raw, &upstream,
    )))
}

/// A modern upstream's answer to a modern client: an `InputRequiredResult`'s `requestState` is
/// wrapped in state mcpd signs for this session and request.
fn wrap_answer(answer: String, msg: &Envelope<'_>, session: u64) -> String {
    if !is_input_required(&answer) {
        return answer;
    }
    let Ok(reply) = Envelope::parse(&answer) else {
        return answer;
    };
    let Some(raw) = reply.result.and_then(|r| member(r, "requestState")) else {
        return answer;
    };
    let upstream = envelope::decode_str(raw)
        .map(|s| s.into_owned())
        .unwrap_or_else(|_| raw.get().to_owned());
    let state = mint(&claims(session, request_digest(msg), Some(upstream), false));
    ids::request_state_to_client(&reply, raw, &state)
}

// ---- parked upstream calls (legacy upstream, modern client) ---------------------------------

/// A legacy upstream's call that waits for a modern client's retry.
#[derive(Debug)]
pub struct Parked {
    session: u64,
    expires: u64,
    /// The upstream's waiting requests by the key the client saw.
    asks: Vec<(String, Ask)>,
    /// The call itself.
    call: InFlight,
}

/// A modern client's call in flight upstream: its reply, the requests the upstream sends
/// during it, and its progress. Dropped before it is answered, it cancels the call upstream.
#[derive(Debug)]
pub struct InFlight {
    upstream: UpstreamHandle,
    upstream_id: u64,
    /// The id of the client's request that began the call: the upstream's answer comes under it.
    client_id: Box<RawValue>,
    reply: oneshot::Receiver<Reply>,
    asks: mpsc::Receiver<Ask>,
    progress: Arc<crate::upstream::Progress>,
    done: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.done {
            self.upstream
                .cancel(self.upstream_id, "cancelled by the client");
        }
    }
}

enum Step {
    /// The upstream's answer (with the first request's client id).
    Done(String),
    /// Requests the upstream sent the client.
    Asked(Vec<Ask>),
}

impl InFlight {
    /// Waits for the answer or for requests to the client, within the server's timeout (each
    /// progress notification extends it up to the maximum).
    async fn wait(&mut self, client_id: &RawValue) -> Step {
        let error = |code, message: &str| envelope::error_response(Some(client_id), code, message);
        let (timeout, max) = self.upstream.timeouts();
        let started = tokio::time::Instant::now();
        let mut deadline = started + timeout;
        loop {
            tokio::select! {
                reply = &mut self.reply => {
                    self.done = true;
                    return Step::Done(match reply {
                        Ok(Ok(answer)) => answer,
                        Ok(Err(e)) => error(e.code, &e.message),
                        Err(_) => error(envelope::UPSTREAM_LOST, &format!("server `{}` dropped the request", self.upstream.name())),
                    });
                }
                Some(ask) = self.asks.recv() => {
                    let mut asks = vec![ask];
                    while let Ok(more) = self.asks.try_recv() {
                        asks.push(more);
                    }
                    return Step::Asked(asks);
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if let Some(later) = self.progress.extended(deadline, started, timeout, max) {
                        deadline = later;
                        continue;
                    }
                    let waited = started.elapsed().as_secs();
                    return Step::Done(error(envelope::REQUEST_TIMEOUT, &format!("server `{}` did not answer within {waited}s", self.upstream.name())));
                }
            }
        }
    }
}

/// Sends a modern client's request (`msg`, its name replaced by `rename`) to `upstream` and
/// waits for the answer. `caps` and `log_level` (a rank) are what the request declared in its
/// `_meta` (read once, by the session: `session::modern::era`). A request the upstream sends
/// the client during the call (a legacy upstream) parks the call and answers the client with
/// an `InputRequiredResult`.
pub async fn call_modern(
    upstream: &UpstreamHandle,
    msg: &Envelope<'_>,
    rename: Option<(&RawValue, String)>,
    session: SessionLink,
    caps: ClientCaps,
    log_level: Option<u8>,
) -> String {
    match send_modern(upstream, msg, rename, &session, caps, log_level) {
        Ok(call) => drive(call, msg, session.id()).await,
        Err(answer) => answer,
    }
}

/// The first half of [`call_modern`]: the request handed to the upstream's actor at once, while
/// the session holds the client's envelope; [`finish`] waits for it. `Err`: the answer to a
/// request the upstream refused at once.
pub fn send_modern(
    upstream: &UpstreamHandle,
    msg: &Envelope<'_>,
    rename: Option<(&RawValue, String)>,
    session: &SessionLink,
    caps: ClientCaps,
    log_level: Option<u8>,
) -> Result<InFlight, String> {
    let level = log_level
        .and_then(|rank| super::hub::LOG_LEVELS.get(usize::from(rank)))
        .map(|level| (*level).to_owned());
    let rename = rename.as_ref().map(|(raw, name)| (*raw, name.as_str()));
    let mut forward = Forward::new(upstream, msg, rename, session.caller(), Some(caps), level);
    let (asks_tx, asks) = mpsc::channel(16);
    forward.asks = Some(asks_tx);
    let (upstream_id, client_id) = (forward.upstream_id, forward.client_id.clone());
    let progress = Arc::clone(&forward.progress);
    let reply = upstream
        .request(forward)
        .map_err(|e| envelope::error_response(Some(&client_id), e.code, &e.message))?;
    Ok(InFlight {
        upstream: upstream.clone(),
        upstream_id,
        client_id,
        reply,
        asks,
        progress,
        done: false,
    })
}

/// The second half of [`call_modern`] for a call [`send_modern`] sent for the client's request
/// `line` on session `session`: its answer, or the `InputRequiredResult` that parks it. The line
/// is parsed again only when the upstream asks for input.
pub async fn finish(mut call: InFlight, line: &Bytes, session: u64) -> String {
    let id = call.client_id.clone();
    let step = match call.wait(&id).await {
        // The actor answered under the client's id already.
        Step::Done(answer) if !is_input_required(&answer) => return answer,
        step => step,
    };
    let Some(msg) = std::str::from_utf8(line)
        .ok()
        .and_then(|t| Envelope::parse(t).ok())
    else {
        return envelope::error_response(Some(&id), envelope::INTERNAL_ERROR, "unreadable request");
    };
    settle(step, call, &msg, session)
}

/// Waits on `call` for the client's request `msg`: its answer (under `msg`'s id), or an
/// `InputRequiredResult` whose state names the call, parked meanwhile.
async fn drive(mut call: InFlight, msg: &Envelope<'_>, session: u64) -> String {
    let id = msg.id.unwrap_or(RawValue::NULL);
    let step = call.wait(id).await;
    settle(step, call, msg, session)
}

/// What `step` of `call` answers the client's request `msg`.
fn settle(step: Step, call: InFlight, msg: &Envelope<'_>, session: u64) -> String {
    let id = msg.id.unwrap_or(RawValue::NULL);
    match step {
        Step::Done(answer) => {
            // A resumed call answers the retry, under the retry's id.
            let answer = if call.client_id.get() == id.get() {
                answer
            } else {
                match Envelope::parse(&answer) {
                    Ok(reply) => ids::answer_to_client(&reply, id),
                    Err(_) => answer,
                }
            };
            // A modern upstream's own `InputRequiredResult`: its state goes under mcpd's.
            wrap_answer(answer, msg, session)
        }
        Step::Asked(asks) => {
            let claims = claims(session, request_digest(msg), None, true);
            let state = mint(&claims);
            let keyed: Vec<(String, Ask)> = asks
                .into_iter()
                .enumerate()
                .map(|(i, ask)| (format!("mcpd-{i}"), ask))
                .collect();
            let listed: Vec<(String, String, Option<Box<RawValue>>)> = keyed
                .iter()
                .map(|(key, ask)| (key.clone(), ask.method.clone(), ask.params.clone()))
                .collect();
            let answer = input_required(id, &listed, &state);
            tracing::debug!(
                session,
                asks = listed.len(),
                "a legacy upstream asks a modern client: input required"
            );
            park(&claims, keyed, call);
            answer
        }
    }
}

/// The retry (`line`) of a parked call: its `inputResponses` answer the upstream's waiting
/// requests (one without a response is refused), then the call goes on.
pub async fn resume(parked: Parked, line: &Bytes) -> String {
    let responses = input_responses(line);
    tracing::debug!(
        session = parked.session,
        responses = responses.len(),
        "a modern client's retry resumes a parked call"
    );
    let Some(msg) = std::str::from_utf8(line)
        .ok()
        .and_then(|t| Envelope::parse(t).ok())
    else {
        return String::new();
    };
    // Progress from here on belongs to the retry (the first request is answered).
    let token = msg
        .params
        .and_then(|p| member_at(p, &["_meta", "progressToken"]))
        .map(RawValue::to_owned);
    parked.call.upstream.retoken(parked.call.upstream_id, token);
    for (key, ask) in &parked.asks {
        match responses.get(key) {
            Some(result) => ask.answer(result.get()),
            None => ask.refuse(
                envelope::INVALID_PARAMS,
                "the client's retry carried no response to this request",
            ),
        }
    }
    drive(parked.call, &msg, parked.session).await
}

fn parked() -> &'static Mutex<HashMap<String, Parked>> {
    static PARKED: OnceLock<Mutex<HashMap<String, Parked>>> = OnceLock::new();
    PARKED.get_or_init(Default::default)
}

/// Parks `call` with `asks` until the retry of `claims`; expired ones are dropped (which
/// cancels them upstream).
fn park(claims: &Claims, asks: Vec<(String, Ask)>, call: InFlight) {
    let now = now_ms();
    let expired: Vec<Parked> = {
        let mut table = parked().lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<String> = table
            .iter()
            .filter(|(_, p)| p.expires <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let expired = gone.iter().filter_map(|k| table.remove(k)).collect();
        table.insert(
            claims.n.clone(),
            Parked {
                session: claims.s,
                expires: claims.e,
                asks,
                call,
            },
        );
        expired
    };
    // Dropped outside the lock: each cancels its upstream request.
    drop(expired);
    // A retry that never comes: the call is cancelled upstream when its state expires.
    let nonce = claims.n.clone();
    tokio::spawn(async move {
        tokio::time::sleep(STATE_TTL).await;
        let gone = parked()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&nonce);
        if gone.is_some() {
            tracing::debug!("a parked call expired without its retry; cancelled upstream");
        }
        drop(gone);
    });
}

fn take_parked(nonce: &str, session: u64) -> Option<Parked> {
    let mut table = parked().lock().unwrap_or_else(|e| e.into_inner());
    match table.get(nonce) {
        Some(p) if p.session == session && p.expires > now_ms() => table.remove(nonce),
        _ => None,
    }
}

/// The `InputRequiredResult` answering `id` for the upstream's requests `asks` (key, method,
/// params) with `state`.
pub fn input_required(
    id: &RawValue,
    asks: &[(String, String, Option<Box<RawValue>>)],
    state: &str,
) -> String {
    let mut requests = String::from("{");
    for (i, (key, method, params)) in asks.iter().enumerate() {
        if i > 0 {
            requests.push(',');
        }
        requests.push_str(&serde_json::to_string(key).unwrap_or_default());
        requests.push_str(r#":{"method":"#);
        requests.push_str(&serde_json::to_string(method).unwrap_or_default());
        if let Some(params) = params {
            requests.push_str(r#","params":"#);
            requests.push_str(params.get());
        }
        requests.push('}');
    }
    requests.push('}');
    format!(
        r#"{{"jsonrpc":"2.0","id":{},"result":{{"resultType":"input_required","inputRequests":{requests},"requestState":{}}}}}"#,
        id.get(),
        serde_json::to_string(state).unwrap_or_default()
    )
}

/// The `inputResponses` of a retry, by key, as raw JSON.
pub fn input_responses(line: &[u8]) -> HashMap<String, Box<RawValue>> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|t| Envelope::parse(t).ok())
        .and_then(|m| {
            m.params
                .and_then(|p| member(p, "inputResponses"))
                .map(|r| r.get().to_owned())
        })
        .and_then(|r| serde_json::from_str::<HashMap<String, Box<RawValue>>>(&r).ok())
        .unwrap_or_default()
}

// ---- legacy client, modern upstream ---------------------------------------------------------

/// Whether `caps` covers an input request of `method` with `params`.
fn able(caps: &ClientCaps, method: &str, params: Option<&RawValue>) -> Result<(), &'static str> {
    let url = params
        .and_then(|p| member(p, "mode"))
        .is_some_and(|m| m.get() == "\"url\"");
    let ok = match method {
        "sampling/createMessage" => caps.sampling,
        "elicitation/create" if url => caps.elicitation_url,
        "elicitation/create" => caps.elicitation_form,
        "roots/list" => caps.roots,
        _ => return Err("an input request mcpd does not know"),
    };
    if ok {
        Ok(())
    } else {
        Err(match method {
            "sampling/createMessage" => "sampling",
            "elicitation/create" if url => "elicitation (url mode)",
            "elicitation/create" => "elicitation (form mode)",
            _ => "roots",
        })
    }
}

/// A modern upstream answered a legacy client's call with an `InputRequiredResult`
/// (`answer`): asks the client each input request as an ordinary server-to-client request,
/// retries upstream with the answers, and repeats until the upstream answers for good. The
/// retry is the client's request as routed (the upstream's own name via `original`, identical
/// arguments) with `inputResponses` and the upstream's `requestState` unchanged.
pub async fn legacy_rounds(
    mut answer: String,
    upstream: &UpstreamHandle,
    client_line: &str,
    original: Option<String>,
    link: &SessionLink,
) -> String {
    let Ok(client) = Envelope::parse(client_line) else {
        return answer;
    };
    let client_id = client.id.unwrap_or(RawValue::NULL);
    let fail = |code: i64, message: &str| envelope::error_response(Some(client_id), code, message);
    for _ in 0..MAX_ROUNDS {
        if !is_input_required(&answer) {
            return answer;
        }
        let Ok(reply) = Envelope::parse(&answer) else {
            return answer;
        };
        let Some(result) = reply.result else {
            return answer;
        };
        let listed = member(result, "inputRequests")
            .map(pairs)
            .unwrap_or_default();
        let requests: Vec<(String, &RawValue)> = serde_json::from_str(&listed).unwrap_or_default();
        let state = member(result, "requestState").map(|s| s.get().to_owned());
        let caps = link.caps();
        let (timeout, _) = upstream.timeouts();
        let mut waits = Vec::new();
        // URL-mode elicitations asked this round: (key, the elicitationId the client got).
        let mut url_asks = Vec::new();
        for (key, request) in &requests {
            let method = member(request, "method")
                .and_then(|m| envelope::decode_str(m).ok())
                .unwrap_or_default()
                .into_owned();
            let params = member(request, "params");
            if let Err(missing) = able(&caps, &method, params) {
                return fail(
                    MISSING_CAPABILITY,
                    &format!(
                        "server `{}` needs {missing} from the client for this call, and this client did not declare it (in its initialize capabilities)",
                        upstream.name()
                    ),
                );
            }
            let n = NEXT_ASK.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let id = serde_json::to_string(&format!("mcpd:mrtr:{n}")).unwrap_or_default();
            let (tx, rx) = oneshot::channel();
            link.add_waiter(id.clone(), tx);
            let mut line = format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":{}"#,
                serde_json::to_string(&method).unwrap_or_default()
            );
            if let Some(params) = params {
                line.push_str(r#","params":"#);
                let params = legacy_params(&method, params, n);
                if let Some(elicitation) = url_elicitation_id(&method, &params) {
                    url_asks.push((key.clone(), elicitation));
                }
                line.push_str(&params);
            }
            line.push('}');
            if !link.try_send(line) {
                link.take_waiter(&id);
                return fail(
                    envelope::UPSTREAM_BUSY,
                    "the client is not reading its messages",
                );
            }
            waits.push((key.clone(), id, rx));
        }
        let mut responses = Vec::new();
        let mut accepted = Vec::new();
        for (key, id, rx) in waits {
            let reply = match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(reply)) => reply,
                _ => {
                    link.take_waiter(&id);
                    return fail(
                        envelope::REQUEST_TIMEOUT,
                        &format!(
                            "the client did not answer server `{}`'s request in time",
                            upstream.name()
                        ),
                    );
                }
            };
            let Ok(msg) = Envelope::parse(&reply) else {
                return fail(
                    envelope::INTERNAL_ERROR,
                    "the client's answer was not JSON-RPC",
                );
            };
            match (msg.result, msg.error) {
                (Some(result), _) => {
                    let accept = member(result, "action").is_some_and(|a| a.get() == "\"accept\"");
                    if let Some((_, elicitation)) = url_asks.iter().find(|(k, _)| *k == key)
                        && accept
                    {
                        accepted.push((key.clone(), elicitation.clone()));
                    }
                    responses.push((key, result.get().to_owned()));
                }
                (None, Some(error)) => {
                    let message = member(error, "message")
                        .and_then(|m| envelope::decode_str(m).ok())
                        .unwrap_or_default();
                    return fail(
                        envelope::INTERNAL_ERROR,
                        &format!(
                            "the client refused server `{}`'s request: {message}",
                            upstream.name()
                        ),
                    );
                }
                (None, None) => {
                    return fail(envelope::INTERNAL_ERROR, "the client's answer was empty");
                }
            }
        }
        let mut members = String::from(r#""inputResponses":{"#);
        for (i, (key, result)) in responses.iter().enumerate() {
            if i > 0 {
                members.push(',');
            }
            members.push_str(&serde_json::to_string(key).unwrap_or_default());
            members.push(':');
            members.push_str(result);
        }
        members.push('}');
        if let Some(state) = &state {
            members.push_str(r#","requestState":"#);
            members.push_str(state);
        }
        let retry = with_params(&client, &members);
        let Ok(msg) = Envelope::parse(&retry) else {
            return fail(envelope::INTERNAL_ERROR, "cannot build the retry");
        };
        let rename = original.clone().and_then(|o| {
            msg.params
                .and_then(|p| member(p, "name"))
                .map(|raw| (raw, o))
        });
        answer = super::session::forward(upstream, &msg, rename, link.clone()).await;
        elicitations_complete(link, &accepted, &answer);
    }
    fail(
        envelope::INTERNAL_ERROR,
        &format!(
            "server `{}` kept asking for input after {MAX_ROUNDS} rounds",
            upstream.name()
        ),
    )
}

/// The `elicitationId` of a URL-mode `elicitation/create` with `params` (as the client gets
/// them).
fn url_elicitation_id(method: &str, params: &str) -> Option<String> {
    if method != "elicitation/create" {
        return None;
    }
    let params = RawValue::from_string(params.to_owned()).ok()?;
    if member(&params, "mode").is_none_or(|m| m.get() != "\"url\"") {
        return None;
    }
    member(&params, "elicitationId")
        .and_then(|i| envelope::decode_str(i).ok())
        .map(std::borrow::Cow::into_owned)
}

/// A modern upstream answered the retry that carried the client's acceptance of URL-mode
/// elicitations (`accepted`: key and elicitationId): the out-of-band interaction is over for
/// the upstream (2026-07-28 tells the outcome by the retry, and dropped the notification), so
/// the legacy client, which 2025-11-25 tells by `notifications/elicitation/complete`, gets it,
/// before the call's answer. Not for an elicitation the upstream asks again under the same key.
fn elicitations_complete(link: &SessionLink, accepted: &[(String, String)], answer: &str) {
    if accepted.is_empty() {
        return;
    }
    let asked_again: Vec<String> = Envelope::parse(answer)
        .ok()
        .filter(|_| is_input_required(answer))
        .and_then(|a| a.result.and_then(|r| member(r, "inputRequests")).map(pairs))
        .and_then(|p| {
            serde_json::from_str::<Vec<(String, &RawValue)>>(&p)
                .ok()
                .map(|v| v.into_iter().map(|(k, _)| k).collect())
        })
        .unwrap_or_default();
    for (key, elicitation) in accepted {
        if asked_again.contains(key) {
            continue;
        }
        link.try_send(envelope::notification(
            "notifications/elicitation/complete",
            Some(&serde_json::json!({ "elicitationId": elicitation })),
        ));
    }
}

/// An input request's params as a legacy client must get them: a URL-mode elicitation needs
/// an `elicitationId` in 2025-11-25 (2026-07-28 dropped it), so mcpd gives it one.
fn legacy_params(method: &str, params: &RawValue, n: u64) -> String {
    let url = member(params, "mode").is_some_and(|m| m.get() == "\"url\"");
    let text = params.get();
    if method != "elicitation/create" || !url || member(params, "elicitationId").is_some() {
        return text.to_owned();
    }
    format!(r#"{{"elicitationId":"mcpd-{n}",{}"#, &text[1..])
}

/// `msg` with `members` (JSON object members text) added at the front of its params, and any
/// `inputResponses`/`requestState` it had left out.
fn with_params(msg: &Envelope<'_>, members: &str) -> String {
    let mut rw = msg.rewrite();
    match msg.params.filter(|p| p.get().starts_with('{')) {
        Some(params) => {
            let inner = params.get()[1..].trim_start();
            let sep = if inner.starts_with('}') { "" } else { "," };
            rw.replace(params, format!("{{{members}{sep}{}", &params.get()[1..]));
        }
        None => return msg.text().to_owned(),
    }
    rw.finish()
}

/// The members of a JSON object as a JSON array of `[key, value]` pairs, in order.
fn pairs(object: &RawValue) -> String {
    use serde::de::{Deserializer as _, MapAccess, Visitor};
    struct Pairs;
    impl<'de> Visitor<'de> for Pairs {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<String, A::Error> {
            let mut out = String::from("[");
            while let Some((key, value)) = map.next_entry::<String, &'de RawValue>()? {
                if out.len() > 1 {
                    out.push(',');
                }
                out.push('[');
                out.push_str(&serde_json::to_string(&key).unwrap_or_default());
                out.push(',');
                out.push_str(value.get());
                out.push(']');
            }
            out.push(']');
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_str(object.get());
    de.deserialize_map(Pairs).unwrap_or_else(|_| "[]".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(text: &str) -> String {
        request_digest(&Envelope::parse(text).expect("message"))
    }

    #[test]
    fn state_is_bound_to_session_request_and_time_and_refused_otherwise() {
        let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"m__ask","arguments":{"q":"a","n":1.50}}}"#;
        let same = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"arguments":{"n":1.5,"q":"a"},"name":"m__ask"}}"#;
        let other = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"m__ask","arguments":{"q":"b"}}}"#;
        let digest = digest_of(call);
        assert_eq!(digest, digest_of(same), "the same arguments, re-encoded");
        let claims = claims(7, digest.clone(), Some("up".into()), false);
        let state = mint(&claims);
        let now = now_ms();
        assert_eq!(check(&state, 7, &digest, now), Ok(claims.clone()));
        assert_eq!(check(&state, 8, &digest, now), Err(Rejected::OtherSession));
        assert_eq!(
            check(&state, 7, &digest_of(other), now),
            Err(Rejected::OtherRequest)
        );
        assert_eq!(check(&state, 7, &digest, claims.e), Err(Rejected::Expired));
        assert_eq!(check("up", 7, &digest, now), Err(Rejected::Unsigned));
        // Another payload under the old signature, or the signature cut.
        let (payload, tag) = state.rsplit_once('.').expect("signed");
        let forged = mint(&Claims {
            s: 7,
            ..claims.clone()
        })
        .replace(tag, "x");
        assert_eq!(check(&forged, 7, &digest, now), Err(Rejected::Tampered));
        let swapped = format!(
            "{PREFIX}{}.{tag}",
            &mint(&Claims {
                u: Some("evil".into()),
                ..claims.clone()
            })[PREFIX.len()..]
                .split('.')
                .next()
                .unwrap_or_default()
        );
        assert_eq!(check(&swapped, 7, &digest, now), Err(Rejected::Tampered));
        assert_eq!(check(payload, 7, &digest, now), Err(Rejected::Unsigned));
        assert!(consume(&claims));
        assert!(!consume(&claims), "a nonce is used once");
    }

    #[test]
    fn a_retry_with_request_state_twice_is_refused_before_anything_is_routed() {
        let line = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"m__ask","requestState":"a","requestState":"b"}}"#,
        );
        match prepare(&line, 1) {
            Prepared::Answer(answer) => {
                assert!(answer.contains("more than once"), "{answer}");
                assert!(answer.contains(r#""id":3"#), "{answer}");
            }
            other => panic!("routed: {other:?}"),
        }
        let unsigned = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"m__ask","request\u0053tate":"up"}}"#,
        );
        assert!(
            matches!(prepare(&unsigned, 1), Prepared::Answer(a) if a.contains("not issued by this mcpd"))
        );
    }

    #[test]
    fn input_required_results_are_recognised_by_their_result_type_only() {
        assert!(is_input_required(
            r#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required","requestState":"x"}}"#
        ));
        assert!(!is_input_required(
            r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"input_required"}]}}"#
        ));
    }

    #[test]
    fn the_retry_adds_members_in_front_of_the_params_and_keeps_the_rest() {
        let msg = Envelope::parse(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"n":1.50}}}"#,
        )
        .expect("message");
        assert_eq!(
            with_params(&msg, r#""inputResponses":{"k":{}},"requestState":"s""#),
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"inputResponses":{"k":{}},"requestState":"s","name":"a","arguments":{"n":1.50}}}"#
        );
    }
}
