//! Why an OAuth operation of the [`AuthManager`](super::AuthManager) failed: logging in,
//! pasting a redirect, logging out, opening the store or a stored login. Each variant says
//! which server, file or endpoint and what to do; `Display` is the whole message `mcpctl`
//! shows (the cause included), and the cause is also the error's `source()`.

use super::discovery::DiscoveryError;
use super::grant::GrantError;
use super::store::StoreError;

impl From<getrandom::Error> for AuthError {
    fn from(e: getrandom::Error) -> Self {
        Self::Random(e)
    }
}

/// An OAuth error of the manager's API (see the module doc).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The credential store failed (its own message names the file and what to do).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A login or client registration could not be serialised for the store.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// `a login`, `a client registration`.
        what: &'static str,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored login or client registration opened but is not what mcpd wrote.
    #[error("a stored {what} is damaged: {source}")]
    Damaged {
        /// `login`, `client registration`.
        what: &'static str,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// No randomness for PKCE or `state`.
    #[error("no randomness from the system: {0}")]
    Random(getrandom::Error),
    /// The HTTP client could not be built (TLS set-up).
    #[error("cannot set up the OAuth HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// The stored login was issued for another URL than the one configured now.
    #[error(
        "the stored login was for {stored}, not {configured}; it is ignored (run `mcpctl login {server}`)"
    )]
    OtherServer {
        /// The server's name.
        server: String,
        /// The URL the tokens were issued for.
        stored: String,
        /// The configured URL (redacted).
        configured: String,
    },
    /// No remote server of that name can log in.
    #[error(
        "no remote server named `{server}` that can log in (servers with a \"url\" and no \"headers\": {known})"
    )]
    UnknownServer {
        /// The name asked for.
        server: String,
        /// The servers that can, comma-separated, or `none`.
        known: String,
    },
    /// `mcpctl login --paste` (or a pasted URL) with no login under way.
    #[error("no login to `{server}` is under way; run `mcpctl login {server}` first")]
    NoLoginUnderWay {
        /// The server.
        server: String,
    },
    /// The login ended while a pasted URL was on its way to it.
    #[error("the login has ended")]
    LoginEnded,
    /// The configured `oauth.callbackPort` cannot be listened on.
    #[error(
        "cannot listen on 127.0.0.1:{port} (oauth.callbackPort) for the login callback: {source}"
    )]
    CallbackPort {
        /// The configured port.
        port: u16,
        /// Why (in use, ...).
        #[source]
        source: std::io::Error,
    },
    /// No loopback port at all for the callback.
    #[error("cannot listen on 127.0.0.1 for the login callback: {0}")]
    Callback(#[source] std::io::Error),
    /// The authorization server's metadata names an authorization endpoint that is no URL.
    #[error("the authorization endpoint is not a URL: {0}")]
    AuthorizationEndpoint(#[source] url::ParseError),
    /// Discovery of the authorization server failed (the message says where and why).
    #[error("{0}")]
    Discovery(#[from] DiscoveryError),
    /// A pasted redirect URL was refused by the login under way (the message says why, as
    /// the callback page would).
    #[error("{0}")]
    PasteRefused(String),
    /// No client identity could be had from the authorization server.
    #[error(
        "the authorization server {issuer} offers no dynamic client registration; register a client there and set \"oauth\": {{\"clientId\": ...}} for this server"
    )]
    NoRegistration {
        /// The authorization server.
        issuer: String,
    },
    /// Dynamic client registration was refused or failed.
    #[error("client registration at {endpoint} failed: {why}")]
    Registration {
        /// The registration endpoint.
        endpoint: String,
        /// What went wrong.
        why: String,
    },
}

/// Why a login under way ended without logging in: the outcome `mcpctl login` shows
/// (`login-finished` with `ok: false` and this message).
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// A newer login replaced it, or the control connection that started it closed.
    #[error("the login was cancelled")]
    Cancelled,
    /// The browser did not come back in time.
    #[error("no answer from the browser within {minutes} minutes")]
    TimedOut {
        /// [`LOGIN_TIMEOUT`](super::LOGIN_TIMEOUT) in minutes.
        minutes: u64,
    },
    /// The awaited redirect carried an error, a wrong issuer or no code (the callback page's
    /// words).
    #[error("{0}")]
    Redirect(String),
    /// The authorization server did not give tokens for the code.
    #[error("the code exchange failed: {0}")]
    Exchange(#[source] GrantError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_login_says_why_in_the_words_mcpctl_shows() {
        assert_eq!(LoginError::Cancelled.to_string(), "the login was cancelled");
        assert_eq!(
            LoginError::TimedOut { minutes: 10 }.to_string(),
            "no answer from the browser within 10 minutes"
        );
        let exchange =
            LoginError::Exchange(GrantError::Rejected("HTTP 400, error invalid_grant".into()));
        assert_eq!(
            exchange.to_string(),
            "the code exchange failed: HTTP 400, error invalid_grant"
        );
        let source = std::error::Error::source(&exchange).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("HTTP 400, error invalid_grant"));
    }
}
