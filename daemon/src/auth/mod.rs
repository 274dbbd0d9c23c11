//! OAuth 2.1 for remote servers: discovery, client registration, the authorization code flow
//! with PKCE, token refresh and revocation, and the encrypted credential store.
//!
//! One [`AuthManager`] per daemon holds one [`ServerAuth`] per remote server. The HTTP
//! transport needs three calls:
//!
//! - [`AuthManager::bearer`] before each request: the access token, refreshed first when it
//!   expires within [`REFRESH_MARGIN`] (single-flight per server: concurrent callers wait for
//!   the one refresh under way and all get its token);
//! - [`AuthManager::on_unauthorized`] on a 401: refresh (once for all the requests that saw
//!   the same token refused) and retry, or `auth-required`;
//! - [`AuthManager::on_forbidden`] on a 403 `insufficient_scope`: remember the scopes for the
//!   next `mcpctl login` (step-up needs the user), at most [`MAX_STEP_UPS`] times.
//!
//! Login (`mcpctl login`) runs here too: [`AuthManager::login`] discovers, registers, binds the
//! loopback callback and returns the authorization URL; the flow then finishes in a task of its
//! own when the browser (or a pasted URL) brings the code back.
//!
//! Why not `rmcp`'s `auth` module: it keeps tokens in plain `String`s inside `oauth2` types,
//! proceeds when the metadata lists no PKCE method (the specification says refuse), and its
//! manager owns storage and refresh in ways that do not allow single-flight per server or our
//! encrypted store. The protocol parts used here are small; they are written against
//! `reqwest` directly and tested against the MCP SDKs' own authorization servers.
//!
//! Tokens never leave this module except as the `Authorization` header value handed to the
//! transport: not in logs, errors, status or the control socket.

pub(crate) mod callback;
pub(crate) mod challenge;
pub(crate) mod clock;
pub(crate) mod discovery;
mod error;
pub(crate) mod grant;
pub(crate) mod http;
pub(crate) mod import;
pub(crate) mod keyring;
pub(crate) mod pkce;
pub(crate) mod store;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use url::Url;

use self::callback::{Expected, Listener, Verdict};
use self::clock::Clock;
use self::discovery::{Challenge, Discovered};
pub use self::error::{AuthError, LoginError};
use self::grant::{AuthMethod, Client, ClientKind, Grant, GrantError};
use self::http::Http;
use self::store::{CredentialStore, Store, StoreError};
use crate::config::oauth::{OAuthSpec, RemoteAuth};

/// An access token is refreshed when it expires within this margin, before a request uses it.
pub(crate) const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// How long a login waits for the browser to come back.
pub(crate) const LOGIN_TIMEOUT: Duration = Duration::from_secs(600);
/// Step-up requests (403 `insufficient_scope`) answered with a login hint before further ones
/// are plain errors: with the first login, at most three authorization requests in a row.
pub(crate) const MAX_STEP_UPS: u32 = 2;
/// A token refused within this time after it was issued is not refreshed again.
const FRESH: Duration = Duration::from_secs(2);

/// What to do after a 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unauthorized {
    /// New credentials are in place: send the request again (once).
    Retry,
    /// No usable credentials: the server waits for `mcpctl login`.
    AuthRequired(String),
    /// The authorization server could not be reached; the tokens are kept. Fail this request.
    Unavailable(String),
}

/// What to do after a 403.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Forbidden {
    /// More scopes are needed: the message tells the user to log in again, which will ask
    /// for them.
    StepUp(String),
    /// A refusal that a new login will not fix (or too many step-ups already).
    Denied(String),
}

/// One server's authorization state.
#[derive(Debug)]
pub(crate) struct ServerAuth {
    name: String,
    /// The tokens. A `std` mutex: every critical section is a field copy; never held across
    /// an `.await`.
    grant: Mutex<Option<Grant>>,
    /// Bumped whenever `grant` changes, so a waiter can tell that a refresh happened.
    generation: AtomicU64,
    /// When `grant`'s access token was obtained.
    obtained: Mutex<Option<Instant>>,
    /// Held while refreshing: the single flight.
    refreshing: tokio::sync::Mutex<()>,
    /// The last 401/403 challenge, for the next login.
    challenge: Mutex<Option<Challenge>>,
    /// Scopes asked for by 403 `insufficient_scope`, and how many times.
    step_up: Mutex<(Vec<String>, u32)>,
    /// The login under way.
    pending: Mutex<Option<Pending>>,
    /// Whether mcp-remote's files were looked at (once per server and daemon run).
    import_tried: std::sync::atomic::AtomicBool,
    /// The manager's clock.
    clock: Clock,
}

/// A pasted redirect URL on its way to the login under way, and where its verdict goes
/// ([`AuthError::PasteRefused`] with the callback page's words when refused).
type Paste = (String, oneshot::Sender<Result<(), AuthError>>);

#[derive(Debug)]
struct Pending {
    id: u64,
    paste: mpsc::Sender<Paste>,
    cancel: CancellationToken,
}

/// A login that was started: the URL to open, and its outcome later.
#[derive(Debug)]
pub struct LoginStarted {
    /// The authorization URL.
    pub url: String,
    /// `Ok(summary)` or why not, when the login ends.
    pub done: oneshot::Receiver<Result<String, LoginError>>,
    /// Cancelling it abandons the login (the control connection closed).
    pub cancel: CancellationToken,
}

/// The daemon's OAuth state.
#[derive(Debug)]
pub struct AuthManager {
    http: Http,
    store: Arc<Store>,
    store_error: Option<StoreError>,
    targets: Mutex<BTreeMap<String, RemoteAuth>>,
    servers: Mutex<BTreeMap<String, Arc<ServerAuth>>>,
    logins: broadcast::Sender<String>,
    next_login: AtomicU64,
    clock: Clock,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ServerAuth {
    fn new(name: &str, clock: Clock) -> Self {
        Self {
            clock,
            name: name.to_owned(),
            grant: Mutex::new(None),
            generation: AtomicU64::new(0),
            obtained: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            challenge: Mutex::new(None),
            step_up: Mutex::new((Vec::new(), 0)),
            pending: Mutex::new(None),
            import_tried: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn set_grant(&self, grant: Option<Grant>) {
        // The tokens are redacted from everything mcpd writes or shows (`crate::redact`).
        let known = grant
            .iter()
            .flat_map(|g| std::iter::once(&g.access).chain(g.refresh.as_ref()))
            .map(|token| (format!("oauth:{}", self.name), token.clone()))
            .collect();
        crate::redact::Redactor::process().set(&format!("oauth:{}", self.name), known);
        *lock(&self.grant) = grant;
        *lock(&self.obtained) = Some(self.clock.instant());
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn access(&self) -> Option<SecretString> {
        lock(&self.grant).as_ref().map(|g| g.access.clone())
    }
}

impl AuthManager {
    /// Opens the credential store in `state_dir/credentials` and loads the stored logins of
    /// `targets`. A store that cannot be opened leaves the daemon working with memory only;
    /// the reason is logged and shown by `mcpctl status`.
    pub fn new(
        kind: CredentialStore,
        state_dir: &Path,
        targets: BTreeMap<String, RemoteAuth>,
    ) -> Result<Arc<Self>, AuthError> {
        let (store, store_error) = match Store::open(kind, &state_dir.join("credentials")) {
            Ok(store) => (store, None),
            Err(e) => {
                tracing::error!("{e}; logins are kept in memory only");
                (Store::memory(), Some(e))
            }
        };
        let manager = Arc::new(Self {
            http: Http::new()?,
            store: Arc::new(store),
            store_error,
            targets: Mutex::new(BTreeMap::new()),
            servers: Mutex::new(BTreeMap::new()),
            logins: broadcast::channel(16).0,
            next_login: AtomicU64::new(1),
            clock: Clock::default(),
        });
        manager.set_targets(targets);
        Ok(manager)
    }

    /// The credential store in use and why (`keyring (Secret Service)`, `file (no session
    /// bus)`, `memory`), with the reason when it fell back to memory.
    pub(crate) fn store_description(&self) -> String {
        match &self.store_error {
            None => self.store.description().to_owned(),
            Some(e) => format!("memory ({e})"),
        }
    }

    /// The credential store (directory and key), shared with the secret store.
    pub fn credential_store(&self) -> Arc<Store> {
        Arc::clone(&self.store)
    }

    /// The clock that decides when tokens are renewed (see [`Clock`]).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Names of servers whose login just completed (to start them again).
    pub fn logins(&self) -> broadcast::Receiver<String> {
        self.logins.subscribe()
    }

    /// Applies a (re)loaded configuration: new servers get their stored logins loaded;
    /// servers whose URL changed lose their tokens (they are for another server).
    ///
    /// Stored logins are read and decrypted with no lock held (file I/O); callers on the
    /// runtime run it on a blocking thread.
    pub(crate) fn set_targets(&self, targets: BTreeMap<String, RemoteAuth>) {
        let old = std::mem::replace(&mut *lock(&self.targets), targets.clone());
        let keep: Vec<String> = {
            let servers = lock(&self.servers);
            targets
                .iter()
                .filter(|(name, target)| {
                    old.get(*name).is_some_and(|o| o.url == target.url)
                        && servers.contains_key(*name)
                })
                .map(|(name, _)| name.clone())
                .collect()
        };
        let mut loaded = Vec::new();
        for (name, target) in targets.iter().filter(|(n, _)| !keep.contains(n)) {
            let auth = Arc::new(ServerAuth::new(name, self.clock.clone()));
            match self.load_grant(name, &target.url) {
                Ok(Some(grant)) => {
                    tracing::info!(server = %name, "using the stored login");
                    auth.set_grant(Some(grant));
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(server = %name, "{e}"),
            }
            loaded.push((name.clone(), auth));
        }
        let mut servers = lock(&self.servers);
        servers.retain(|name, _| keep.contains(name));
        servers.extend(loaded);
    }

    fn load_grant(&self, name: &str, url: &Url) -> Result<Option<Grant>, AuthError> {
        let Some(bytes) = self.store.read(&grant::grant_entry(name))? else {
            return Ok(None);
        };
        let mut grant = Grant::from_plaintext(&bytes)?;
        if grant.server_url != url.as_str() {
            // Tokens are only ever sent to the server they were issued for.
            return Err(AuthError::OtherServer {
                server: name.to_owned(),
                stored: std::mem::take(&mut grant.server_url),
                configured: crate::net::redact_url(url),
            });
        }
        Ok(Some(grant))
    }

    fn server(&self, name: &str) -> Option<Arc<ServerAuth>> {
        lock(&self.servers).get(name).cloned()
    }

    fn target(&self, name: &str) -> Option<RemoteAuth> {
        lock(&self.targets).get(name).cloned()
    }

    fn persist(&self, auth: &ServerAuth) {
        let result = match lock(&auth.grant).as_ref() {
            Some(grant) => grant
                .to_plaintext()
                .and_then(|bytes| Ok(self.store.write(&grant::grant_entry(&auth.name), &bytes)?)),
            None => self
                .store
                .remove(&grant::grant_entry(&auth.name))
                .map_err(AuthError::from),
        };
        if let Err(e) = result {
            tracing::error!(server = %auth.name, "cannot store the login: {e}");
        }
    }

    /// The access token for a request to `server`, refreshed first when it is about to
    /// expire. `None`: not logged in (send no `Authorization`; the 401 leads to
    /// `auth-required`).
    pub async fn bearer(&self, server: &str) -> Option<SecretString> {
        let auth = self.server(server)?;
        let (needs_refresh, generation) = {
            let grant = lock(&auth.grant);
            let grant = grant.as_ref()?;
            let renewable = grant.refresh.is_some();
            // A token is used for at least FRESH before it is renewed: one that lasts less
            // than the margin is not renewed on every request.
            let now = self.clock.unix();
            let lifetime = grant
                .expires_at
                .zip(*lock(&auth.obtained))
                .map(|(at, obtained)| {
                    Duration::from_secs(at.saturating_sub(now)) + self.clock.since(obtained)
                });
            let margin = lifetime.map_or(REFRESH_MARGIN, |l| {
                REFRESH_MARGIN.min(l.saturating_sub(FRESH))
            });
            if !grant.expires_within(margin, now) {
                return Some(grant.access.clone());
            }
            if !renewable {
                return (!grant.expired(now)).then(|| grant.access.clone());
            }
            (true, auth.generation())
        };
        debug_assert!(needs_refresh);
        let _flight = auth.refreshing.lock().await;
        if auth.generation() != generation {
            // Someone else refreshed (or logged in or out) while this caller waited.
            return auth.access();
        }
        match self.refresh(&auth).await {
            Ok(()) => auth.access(),
            Err(GrantError::Rejected(_)) => None,
            Err(GrantError::Unavailable(_)) => {
                let grant = lock(&auth.grant);
                grant
                    .as_ref()
                    .filter(|g| !g.expired(self.clock.unix()))
                    .map(|g| g.access.clone())
            }
        }
    }

    /// Refreshes `auth`'s grant; the caller holds the single-flight lock. A rejected refresh
    /// drops the tokens; an unreachable server keeps them.
    async fn refresh(&self, auth: &ServerAuth) -> Result<(), GrantError> {
        // A copy: callers keep seeing the current token while the refresh is under way.
        let Some(mut grant) = lock(&auth.grant).clone() else {
            return Err(GrantError::Rejected("not logged in".into()));
        };
        tracing::debug!(server = %auth.name, "refreshing the access token");
        let result = grant.refresh(&self.http, self.clock.unix()).await;
        match &result {
            Ok(()) => {
                tracing::info!(server = %auth.name, "access token refreshed");
                auth.set_grant(Some(grant));
                self.persist(auth);
            }
            Err(GrantError::Rejected(why)) => {
                tracing::warn!(server = %auth.name, "the refresh was refused ({why}); the login is dropped: run `mcpctl login {}`", auth.name);
                auth.set_grant(None);
                self.persist(auth);
            }
            Err(GrantError::Unavailable(why)) => {
                tracing::warn!(server = %auth.name, "cannot refresh the access token now ({why}); keeping the login");
            }
        }
        result
    }

    /// Handles a 401 from `server`. `sent` is the token the refused request carried.
    pub async fn on_unauthorized(
        &self,
        server: &str,
        www_authenticate: Option<&str>,
        sent: Option<&SecretString>,
    ) -> Unauthorized {
        let need_login = || {
            Unauthorized::AuthRequired(format!(
                "server `{server}` needs authorization: run `mcpctl login {server}`"
            ))
        };
        let Some(auth) = self.server(server) else {
            return need_login();
        };
        if let Some(header) = www_authenticate {
            *lock(&auth.challenge) = Some(Challenge::parse(header));
        }
        let generation = auth.generation();
        let Some(current) = auth.access() else {
            // A first 401 without a login: a login made with mcp-remote for this URL is used.
            if self.import_mcp_remote(&auth).await {
                return Unauthorized::Retry;
            }
            return need_login();
        };
        if let Some(sent) = sent
            && !bool::from(
                sent.expose_secret()
                    .as_bytes()
                    .ct_eq(current.expose_secret().as_bytes()),
            )
        {
            // The request went out with an older token; the current one is newer.
            return Unauthorized::Retry;
        }
        let _flight = auth.refreshing.lock().await;
        if auth.generation() != generation {
            return if auth.access().is_some() {
                Unauthorized::Retry
            } else {
                need_login()
            };
        }
        let fresh = lock(&auth.obtained).is_some_and(|at| self.clock.since(at) < FRESH);
        let renewable = lock(&auth.grant)
            .as_ref()
            .is_some_and(|g| g.refresh.is_some());
        if fresh || !renewable {
            tracing::warn!(
                server,
                "the server refused the access token; a new login is needed"
            );
            auth.set_grant(None);
            self.persist(&auth);
            return need_login();
        }
        match self.refresh(&auth).await {
            Ok(()) => Unauthorized::Retry,
            Err(GrantError::Rejected(_)) => need_login(),
            Err(GrantError::Unavailable(why)) => Unauthorized::Unavailable(format!(
                "cannot renew the authorization of `{server}` now: {why}"
            )),
        }
    }

    /// Handles a 403 from `server`: an `insufficient_scope` challenge is remembered for the
    /// next login.
    pub(crate) fn on_forbidden(&self, server: &str, www_authenticate: Option<&str>) -> Forbidden {
        let challenge = www_authenticate.map(Challenge::parse).unwrap_or_default();
        let denied =
            || Forbidden::Denied(format!("server `{server}` refused the request (HTTP 403)"));
        let Some(auth) = self.server(server) else {
            return denied();
        };
        if challenge.error.as_deref() != Some("insufficient_scope") {
            return denied();
        }
        let wanted = challenge.scopes();
        let granted = lock(&auth.grant)
            .as_ref()
            .map(|g| g.scopes.clone())
            .unwrap_or_default();
        if !wanted.is_empty() && wanted.iter().all(|s| granted.contains(s)) {
            // The token already has every scope asked for: another login would get the same.
            return Forbidden::Denied(format!(
                "server `{server}` refused the request although the login has the scopes it asks for ({})",
                wanted.join(" ")
            ));
        }
        let mut step_up = lock(&auth.step_up);
        if step_up.1 >= MAX_STEP_UPS {
            return Forbidden::Denied(format!(
                "server `{server}` still wants more scopes ({}) after {MAX_STEP_UPS} logins; giving up",
                wanted.join(" ")
            ));
        }
        step_up.1 += 1;
        for scope in wanted {
            if !step_up.0.contains(&scope) {
                step_up.0.push(scope);
            }
        }
        *lock(&auth.challenge) = Some(challenge);
        Forbidden::StepUp(format!(
            "server `{server}` needs more permissions ({}): run `mcpctl login {server}`",
            step_up.0.join(" ")
        ))
    }

    /// What `mcpctl status` shows for `server`; never a token.
    pub fn status(&self, server: &str) -> Option<mcpd_proto::AuthStatus> {
        let auth = self.server(server)?;
        let pending = lock(&auth.pending).is_some();
        let grant = lock(&auth.grant);
        Some(match grant.as_ref() {
            Some(g) => mcpd_proto::AuthStatus {
                logged_in: true,
                expires_at: g.expires_at,
                scopes: g.scopes.clone(),
                issuer: Some(g.client.issuer.clone()),
                refreshable: g.refresh.is_some(),
                login_pending: pending,
            },
            None => mcpd_proto::AuthStatus {
                login_pending: pending,
                ..Default::default()
            },
        })
    }

    /// Whether `server` has tokens.
    pub fn logged_in(&self, server: &str) -> bool {
        self.server(server).is_some_and(|a| a.access().is_some())
    }

    /// Forgets `server`'s tokens (memory and disk) and revokes them where supported.
    pub async fn logout(&self, server: &str) -> Result<String, AuthError> {
        let auth = self.server(server).ok_or_else(|| self.unknown(server))?;
        let _flight = auth.refreshing.lock().await;
        let grant = lock(&auth.grant).take();
        auth.set_grant(None);
        self.persist(&auth);
        *lock(&auth.step_up) = (Vec::new(), 0);
        let Some(grant) = grant else {
            return Ok(format!("{server}: was not logged in"));
        };
        Ok(match grant.revoke(&self.http).await {
            Ok(true) => format!("{server}: logged out; the tokens were revoked"),
            Ok(false) => format!(
                "{server}: logged out (the authorization server offers no revocation; the tokens expire on their own)"
            ),
            Err(e) => {
                tracing::warn!(server, "{e}");
                format!("{server}: logged out; revoking the tokens failed: {e}")
            }
        })
    }

    fn unknown(&self, server: &str) -> AuthError {
        let known: Vec<String> = lock(&self.targets).keys().cloned().collect();
        AuthError::UnknownServer {
            server: server.to_owned(),
            known: if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            },
        }
    }

    /// Hands a URL pasted by the user to `server`'s login under way.
    pub async fn paste(&self, server: &str, redirect_url: String) -> Result<(), AuthError> {
        let auth = self.server(server).ok_or_else(|| self.unknown(server))?;
        let sender = lock(&auth.pending)
            .as_ref()
            .map(|p| p.paste.clone())
            .ok_or_else(|| AuthError::NoLoginUnderWay {
                server: server.to_owned(),
            })?;
        let (tx, rx) = oneshot::channel();
        sender
            .send((redirect_url, tx))
            .await
            .map_err(|_| AuthError::LoginEnded)?;
        // A pasted URL the login refused: its reason, as the callback page would say it.
        rx.await.map_err(|_| AuthError::LoginEnded)?
    }

    /// Starts a login to `server`: discovery, registration, the callback listener. Returns
    /// the URL for the browser; the rest happens in a task.
    pub async fn login(self: &Arc<Self>, server: &str) -> Result<LoginStarted, AuthError> {
        let target = self.target(server).ok_or_else(|| self.unknown(server))?;
        let auth = self.server(server).ok_or_else(|| self.unknown(server))?;
        let mut challenge = lock(&auth.challenge).clone();
        if challenge.is_none() {
            challenge = self.http.probe(&target.url).await;
        }
        let discovered = discovery::discover(&self.http, &target.url, challenge.as_ref()).await?;
        let issuer = discovered.metadata.issuer.clone();
        let stored_client = self.stored_client(&issuer);
        let port = target.oauth.callback_port.or_else(|| {
            stored_client
                .as_ref()
                .and_then(|c| c.redirect_uri.as_deref())
                .and_then(|u| Url::parse(u).ok())
                .and_then(|u| u.port())
        });
        let listener = match Listener::bind(port).await {
            Ok(l) => l,
            Err(source) if target.oauth.callback_port.is_some() => {
                return Err(AuthError::CallbackPort {
                    port: port.unwrap_or(0),
                    source,
                });
            }
            Err(_) => Listener::bind(None).await.map_err(AuthError::Callback)?,
        };
        let redirect_uri = listener.redirect_uri();
        let scopes = self.scopes_for(&auth, &target.oauth, &discovered);
        let client = self
            .client_for(
                &target.oauth,
                &discovered,
                stored_client,
                &redirect_uri,
                &scopes,
            )
            .await?;
        let pkce = pkce::Pkce::new()?;
        let state = SecretString::from(pkce::random_token(32)?);
        let mut url = Url::parse(&discovered.metadata.authorization_endpoint)
            .map_err(AuthError::AuthorizationEndpoint)?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &client.id)
                .append_pair("redirect_uri", &redirect_uri)
                .append_pair("code_challenge", &pkce.challenge)
                .append_pair("code_challenge_method", "S256")
                .append_pair("state", state.expose_secret())
                .append_pair("resource", &discovered.resource);
            if !scopes.is_empty() {
                q.append_pair("scope", &scopes.join(" "));
            }
        }
        let expected = Arc::new(Expected {
            state,
            issuer: issuer.clone(),
            iss_required: discovered
                .metadata
                .authorization_response_iss_parameter_supported,
        });
        let (paste_tx, paste_rx) = mpsc::channel(4);
        let cancel = CancellationToken::new();
        let id = self.next_login.fetch_add(1, Ordering::Relaxed);
        if let Some(old) = lock(&auth.pending).replace(Pending {
            id,
            paste: paste_tx,
            cancel: cancel.clone(),
        }) {
            tracing::info!(server, "a new login replaces the one under way");
            old.cancel.cancel();
        }
        let (done_tx, done) = oneshot::channel();
        let flow = Flow {
            manager: Arc::clone(self),
            auth: Arc::clone(&auth),
            target,
            discovered,
            client,
            verifier: pkce.verifier,
            redirect_uri,
            scopes,
            expected,
        };
        let cancel_task = cancel.clone();
        tokio::spawn(async move {
            let result = flow.run(listener, paste_rx, cancel_task).await;
            let mut pending = lock(&flow.auth.pending);
            if pending.as_ref().is_some_and(|p| p.id == id) {
                *pending = None;
            }
            drop(pending);
            let _ = done_tx.send(result);
        });
        tracing::info!(server, issuer = %issuer, "login started; waiting for the browser");
        Ok(LoginStarted {
            url: url.to_string(),
            done,
            cancel,
        })
    }

    fn scopes_for(&self, auth: &ServerAuth, spec: &OAuthSpec, d: &Discovered) -> Vec<String> {
        let mut scopes = if spec.scopes.is_empty() {
            d.scopes.clone()
        } else {
            spec.scopes.clone()
        };
        for s in &lock(&auth.step_up).0 {
            if !scopes.contains(s) {
                scopes.push(s.clone());
            }
        }
        if let Some(g) = lock(&auth.grant).as_ref() {
            // A step-up keeps what was granted before.
            if !lock(&auth.step_up).0.is_empty() {
                for s in &g.scopes {
                    if !scopes.contains(s) {
                        scopes.push(s.clone());
                    }
                }
            }
        }
        scopes
    }

    fn stored_client(&self, issuer: &str) -> Option<Client> {
        match self.store.read(&grant::client_entry(issuer)) {
            Ok(Some(bytes)) => Client::from_plaintext(&bytes)
                .map_err(|e| tracing::warn!("{e}"))
                .ok()
                .filter(|c| c.issuer == issuer),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!("{e}");
                None
            }
        }
    }

    /// Picks the client identity: pre-registered, client ID metadata document, a stored
    /// dynamic registration for this issuer and redirect URI, or a new registration.
    async fn client_for(
        &self,
        spec: &OAuthSpec,
        d: &Discovered,
        stored: Option<Client>,
        redirect_uri: &str,
        scopes: &[String],
    ) -> Result<Client, AuthError> {
        let issuer = &d.metadata.issuer;
        if let Some(id) = &spec.client_id {
            let secret = spec
                .client_secret
                .as_ref()
                .map(|s| SecretString::from(s.0.clone()));
            let methods = d.metadata.token_endpoint_auth_methods_supported.as_deref();
            // `client_secret_post` when offered (servers built on the Python SDK accept only
            // that in practice), else Basic, which RFC 6749 requires every server to support.
            let auth = match (&secret, methods) {
                (None, _) => AuthMethod::None,
                (Some(_), Some(m)) if m.iter().any(|x| x == "client_secret_post") => {
                    AuthMethod::ClientSecretPost
                }
                (Some(_), _) => AuthMethod::ClientSecretBasic,
            };
            return Ok(Client {
                kind: ClientKind::Preregistered,
                issuer: issuer.clone(),
                id: id.clone(),
                secret,
                auth,
                redirect_uri: None,
                scope: None,
            });
        }
        if let Some(url) = &spec.client_metadata_url
            && d.metadata.client_id_metadata_document_supported
        {
            return Ok(Client {
                kind: ClientKind::MetadataDocument,
                issuer: issuer.clone(),
                id: url.clone(),
                secret: None,
                auth: AuthMethod::None,
                redirect_uri: None,
                scope: None,
            });
        }
        if let Some(client) = stored
            && client.redirect_uri.as_deref() == Some(redirect_uri)
            && client.scope.as_deref().is_none_or(|registered| {
                let registered: Vec<&str> = registered.split_whitespace().collect();
                scopes.iter().all(|s| registered.contains(&s.as_str()))
            })
        {
            tracing::debug!(issuer = %issuer, "reusing the stored client registration");
            return Ok(client);
        }
        let Some(endpoint) = &d.metadata.registration_endpoint else {
            return Err(AuthError::NoRegistration {
                issuer: issuer.clone(),
            });
        };
        let mut body = serde_json::json!({
            "client_name": "mcpd",
            "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
            "application_type": "native",
        });
        if !scopes.is_empty() {
            body["scope"] = serde_json::Value::String(scopes.join(" "));
        }
        #[derive(serde::Deserialize)]
        struct Registered {
            client_id: String,
            #[serde(default)]
            client_secret: Option<String>,
            #[serde(default)]
            token_endpoint_auth_method: Option<String>,
            #[serde(default)]
            scope: Option<String>,
        }
        let registered: Registered =
            self.http
                .post_json(endpoint, &body)
                .await
                .map_err(|e| AuthError::Registration {
                    endpoint: endpoint.clone(),
                    why: e.to_string(),
                })?;
        let secret = registered.client_secret.map(SecretString::from);
        let client = Client {
            kind: ClientKind::Dynamic,
            issuer: issuer.clone(),
            auth: AuthMethod::from_name(
                registered.token_endpoint_auth_method.as_deref(),
                secret.is_some(),
            ),
            id: registered.client_id,
            secret,
            redirect_uri: Some(redirect_uri.to_owned()),
            scope: registered
                .scope
                .or_else(|| (!scopes.is_empty()).then(|| scopes.join(" "))),
        };
        tracing::info!(issuer = %issuer, "registered mcpd as a client");
        if let Err(e) = client
            .to_plaintext()
            .and_then(|b| Ok(self.store.write(&grant::client_entry(issuer), &b)?))
        {
            tracing::warn!("cannot store the client registration: {e}");
        }
        Ok(client)
    }
}

/// One login under way.
struct Flow {
    manager: Arc<AuthManager>,
    auth: Arc<ServerAuth>,
    target: RemoteAuth,
    discovered: Discovered,
    client: Client,
    verifier: SecretString,
    redirect_uri: String,
    scopes: Vec<String>,
    expected: Arc<Expected>,
}

impl Flow {
    async fn run(
        &self,
        listener: Listener,
        mut paste: mpsc::Receiver<Paste>,
        cancel: CancellationToken,
    ) -> Result<String, LoginError> {
        let server = self.auth.name.clone();
        // Every connection to the port is served in a task of its own: an idle one cannot
        // hold the browser's redirect back.
        let mut listener = listener.serve(Arc::clone(&self.expected), server.clone());
        let deadline = tokio::time::sleep(LOGIN_TIMEOUT);
        tokio::pin!(deadline);
        let code = loop {
            tokio::select! {
                () = cancel.cancelled() => {
                    tracing::info!(server = %server, "login cancelled");
                    return Err(LoginError::Cancelled);
                }
                () = &mut deadline => {
                    return Err(LoginError::TimedOut { minutes: LOGIN_TIMEOUT.as_secs() / 60 });
                }
                verdict = listener.next() => match verdict {
                    Verdict::Code(code) => break code,
                    Verdict::Refused(why) => tracing::warn!(server = %server, "refused a request to the login callback: {why}"),
                    Verdict::Failed(why) => return Err(LoginError::Redirect(why)),
                },
                Some((url, reply)) = paste.recv() => match callback::judge_pasted(&url, listener.port(), &self.expected) {
                    Verdict::Code(code) => {
                        let _ = reply.send(Ok(()));
                        break code;
                    }
                    Verdict::Refused(why) => {
                        let _ = reply.send(Err(AuthError::PasteRefused(why)));
                    }
                    Verdict::Failed(why) => {
                        let _ = reply.send(Err(AuthError::PasteRefused(why.clone())));
                        return Err(LoginError::Redirect(why));
                    }
                },
            }
        };
        // The listener closes here: one login, one port.
        drop(listener);
        let issued = grant::exchange_code(
            &self.manager.http,
            &self.discovered.metadata.token_endpoint,
            &self.client,
            &code,
            &self.verifier,
            &self.redirect_uri,
            &self.discovered.resource,
        )
        .await
        .map_err(LoginError::Exchange)?;
        // The server granted what was asked unless it said otherwise (RFC 6749 §5.1).
        let scopes = issued.scopes.unwrap_or_else(|| self.scopes.clone());
        let grant = Grant {
            access: issued.access,
            refresh: issued.refresh,
            expires_at: issued
                .expires_in
                .map(|s| self.manager.clock.unix().saturating_add(s)),
            scopes,
            server_url: self.target.url.to_string(),
            resource: self.discovered.resource.clone(),
            token_endpoint: self.discovered.metadata.token_endpoint.clone(),
            revocation_endpoint: self.discovered.metadata.revocation_endpoint.clone(),
            client: self.client.clone(),
        };
        let summary = describe_grant(&server, &grant, self.manager.clock.unix());
        {
            let _flight = self.auth.refreshing.lock().await;
            self.auth.set_grant(Some(grant));
        }
        self.manager.persist(&self.auth);
        *lock(&self.auth.challenge) = None;
        {
            // The step-up count survives a login that did not get the scopes asked for, so
            // that a server that keeps asking is not logged in to again and again.
            let granted = lock(&self.auth.grant)
                .as_ref()
                .map(|g| g.scopes.clone())
                .unwrap_or_default();
            let mut step_up = lock(&self.auth.step_up);
            if step_up.0.iter().all(|s| granted.contains(s)) {
                *step_up = (Vec::new(), 0);
            }
        }
        tracing::info!(server = %server, "logged in");
        let _ = self.manager.logins.send(server);
        Ok(summary)
    }
}

fn describe_grant(server: &str, grant: &Grant, now: u64) -> String {
    let mut text = format!("logged in to {server}");
    if !grant.scopes.is_empty() {
        text.push_str(&format!(" (scopes: {})", grant.scopes.join(" ")));
    }
    if let Some(at) = grant.expires_at {
        let left = at.saturating_sub(now);
        text.push_str(&format!("; the access token lasts {left} s"));
        if grant.refresh.is_some() {
            text.push_str(" and is renewed automatically");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manager() -> (tempfile::TempDir, Arc<AuthManager>) {
        let dir = tempfile::tempdir().unwrap();
        let targets = BTreeMap::from([(
            "remote".to_owned(),
            RemoteAuth {
                url: Url::parse("https://mcp.example/mcp").unwrap(),
                oauth: OAuthSpec::default(),
            },
        )]);
        let auth = AuthManager::new(CredentialStore::Memory, dir.path(), targets).unwrap();
        (dir, auth)
    }

    #[tokio::test]
    async fn without_a_login_a_401_asks_for_one() {
        let (_dir, auth) = manager();
        assert!(auth.bearer("remote").await.is_none());
        let outcome = auth
            .on_unauthorized(
                "remote",
                Some(r#"Bearer resource_metadata="https://mcp.example/prm""#),
                None,
            )
            .await;
        assert_eq!(
            outcome,
            Unauthorized::AuthRequired(
                "server `remote` needs authorization: run `mcpctl login remote`".into()
            )
        );
        let status = auth.status("remote").unwrap();
        assert!(!status.logged_in && !status.login_pending);
        assert!(auth.status("other").is_none());
        assert_eq!(auth.store_description(), "memory");
    }

    #[test]
    fn insufficient_scope_asks_for_a_step_up_a_limited_number_of_times() {
        let (_dir, auth) = manager();
        let header = r#"Bearer error="insufficient_scope", scope="files:read files:write""#;
        for _ in 0..MAX_STEP_UPS {
            let outcome = auth.on_forbidden("remote", Some(header));
            assert!(
                matches!(&outcome, Forbidden::StepUp(m) if m.contains("files:read files:write") && m.contains("mcpctl login remote")),
                "{outcome:?}"
            );
        }
        assert!(matches!(
            auth.on_forbidden("remote", Some(header)),
            Forbidden::Denied(_)
        ));
        assert!(matches!(
            auth.on_forbidden("remote", Some("Bearer error=\"invalid_token\"")),
            Forbidden::Denied(_)
        ));
        // The next login asks for the wanted scopes.
        let server = auth.server("remote").unwrap();
        assert_eq!(lock(&server.step_up).0, ["files:read", "files:write"]);
    }

    #[tokio::test]
    async fn unknown_servers_are_named_in_errors() {
        let (_dir, auth) = manager();
        let e = auth.login("nope").await.unwrap_err();
        assert!(
            matches!(&e, AuthError::UnknownServer { server, known } if server == "nope" && known == "remote"),
            "{e:?}"
        );
        let e = e.to_string();
        assert!(e.contains("`nope`") && e.contains("remote"), "{e}");
        assert!(matches!(
            auth.logout("nope").await,
            Err(AuthError::UnknownServer { .. })
        ));
        let e = auth.paste("remote", "x".into()).await.unwrap_err();
        assert!(matches!(e, AuthError::NoLoginUnderWay { .. }), "{e:?}");
        assert!(e.to_string().contains("no login"));
    }

    #[test]
    fn a_changed_url_drops_the_server_state() {
        let (_dir, auth) = manager();
        let before = auth.server("remote").unwrap();
        auth.set_targets(BTreeMap::from([(
            "remote".to_owned(),
            RemoteAuth {
                url: Url::parse("https://elsewhere.example/mcp").unwrap(),
                oauth: OAuthSpec::default(),
            },
        )]));
        assert!(!Arc::ptr_eq(&before, &auth.server("remote").unwrap()));
        auth.set_targets(BTreeMap::new());
        assert!(auth.server("remote").is_none());
    }
}
