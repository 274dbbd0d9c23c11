//! Tokens and clients: what a login yields, how it is renewed and revoked, and how it is
//! written to the credential store.
//!
//! Tokens live in [`SecretString`]s from the moment a token response is parsed. The only
//! places they are exposed: the `Authorization` header (by the transport), the token and
//! revocation request forms, and [`Grant::to_plaintext`], which serialises them for the
//! encrypted store (grep for `expose_secret` to find each).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::error::AuthError;
use super::http::{Http, HttpError, json_answer, read_body};

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A public client: `client_id` in the form.
    None,
    /// HTTP Basic with the client ID and secret.
    ClientSecretBasic,
    /// The client ID and secret in the form.
    ClientSecretPost,
}

impl AuthMethod {
    /// The method named in registration metadata (RFC 7591).
    pub fn from_name(name: Option<&str>, has_secret: bool) -> Self {
        match (name, has_secret) {
            (_, false) | (Some("none"), _) => Self::None,
            (Some("client_secret_post"), true) => Self::ClientSecretPost,
            _ => Self::ClientSecretBasic,
        }
    }
}

/// Where a client identity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientKind {
    /// `oauth.clientId` in the configuration.
    Preregistered,
    /// A client ID metadata document URL.
    MetadataDocument,
    /// RFC 7591 dynamic registration, stored per issuer.
    Dynamic,
}

/// A client identity at one authorization server.
#[derive(Debug, Clone)]
pub struct Client {
    /// Where it came from.
    pub kind: ClientKind,
    /// The issuer it belongs to.
    pub issuer: String,
    /// `client_id`.
    pub id: String,
    /// `client_secret`, for confidential clients.
    pub secret: Option<SecretString>,
    /// Token endpoint authentication.
    pub auth: AuthMethod,
    /// The redirect URI it was registered with (dynamic registrations).
    pub redirect_uri: Option<String>,
    /// The scope it was registered with, when the server recorded one.
    pub scope: Option<String>,
}

/// Everything needed to use and renew the tokens of one server.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The access token.
    pub access: SecretString,
    /// The refresh token, if the server issued one.
    pub refresh: Option<SecretString>,
    /// When the access token expires (Unix seconds), if the server said.
    pub expires_at: Option<u64>,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// The MCP endpoint these tokens are for; they are never sent anywhere else.
    pub server_url: String,
    /// The RFC 8707 resource.
    pub resource: String,
    /// The token endpoint.
    pub token_endpoint: String,
    /// The RFC 7009 revocation endpoint, if any.
    pub revocation_endpoint: Option<String>,
    /// The client the tokens were issued to.
    pub client: Client,
}

/// A token request failed.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// The grant is dead (`invalid_grant` and other OAuth refusals): drop the tokens.
    #[error("{0}")]
    Rejected(String),
    /// Nothing was decided (network, 5xx): keep the tokens.
    #[error("{0}")]
    Unavailable(String),
}

/// Revoking a grant's tokens failed (best effort: the login is gone either way).
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// The revocation request did not get an answer, or an OAuth error.
    #[error("revoking at {endpoint}: {source}")]
    Request {
        /// The revocation endpoint.
        endpoint: String,
        /// Why.
        #[source]
        source: HttpError,
    },
    /// The revocation endpoint answered with an unsuccessful status.
    #[error("revoking at {endpoint}: HTTP {status}")]
    Status {
        /// The revocation endpoint.
        endpoint: String,
        /// The answer's status.
        status: reqwest::StatusCode,
    },
}

impl From<HttpError> for GrantError {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::Network(m) => Self::Unavailable(m),
            e @ (HttpError::OAuth { .. } | HttpError::Protocol(_)) => Self::Rejected(e.to_string()),
        }
    }
}

/// A token endpoint answer (RFC 6749 §5.1); zeroed when dropped.
#[derive(Deserialize, Zeroize, ZeroizeOnDrop)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: String,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

/// What a token request yields before it becomes part of a [`Grant`].
#[derive(Debug)]
pub struct Issued {
    /// The access token.
    pub access: SecretString,
    /// A new refresh token, if one came.
    pub refresh: Option<SecretString>,
    /// Lifetime of the access token in seconds, if the server said.
    pub expires_in: Option<u64>,
    /// Granted scopes, if the server said.
    pub scopes: Option<Vec<String>>,
}

/// Now, in Unix seconds.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Client {
    /// The form fields and Basic credentials of the client's authentication.
    fn authenticate<'a>(
        &'a self,
        form: &mut Vec<(&'static str, &'a str)>,
    ) -> Option<(&'a str, &'a SecretString)> {
        match (self.auth, &self.secret) {
            (AuthMethod::ClientSecretBasic, Some(secret)) => Some((&self.id, secret)),
            (AuthMethod::ClientSecretPost, Some(secret)) => {
                form.push(("client_id", &self.id));
                form.push(("client_secret", secret.expose_secret()));
                None
            }
            _ => {
                form.push(("client_id", &self.id));
                None
            }
        }
    }
}

/// Sends a token request and parses the answer.
async fn token_request(
    http: &Http,
    endpoint: &str,
    client: &Client,
    mut form: Vec<(&'static str, &str)>,
) -> Result<Issued, GrantError> {
    let basic = client.authenticate(&mut form);
    let response = http.post_form(endpoint, &form, basic).await?;
    let mut answer: TokenResponse = json_answer(response).await?;
    if !answer.token_type.eq_ignore_ascii_case("bearer") {
        return Err(GrantError::Rejected(format!(
            "the token endpoint issued a {:?} token; mcpd uses Bearer tokens only",
            answer.token_type.chars().take(20).collect::<String>()
        )));
    }
    if answer.access_token.is_empty() {
        return Err(GrantError::Rejected(
            "the token endpoint issued an empty access token".into(),
        ));
    }
    Ok(Issued {
        access: SecretString::from(std::mem::take(&mut answer.access_token)),
        refresh: answer
            .refresh_token
            .take()
            .filter(|r| !r.is_empty())
            .map(SecretString::from),
        expires_in: answer.expires_in,
        scopes: answer
            .scope
            .as_deref()
            .map(|s| s.split_whitespace().map(str::to_owned).collect()),
    })
}

/// Exchanges an authorization code (with its PKCE verifier and the resource).
pub async fn exchange_code(
    http: &Http,
    endpoint: &str,
    client: &Client,
    code: &SecretString,
    verifier: &SecretString,
    redirect_uri: &str,
    resource: &str,
) -> Result<Issued, GrantError> {
    let form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.expose_secret()),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier.expose_secret()),
        ("resource", resource),
    ];
    token_request(http, endpoint, client, form).await
}

impl Grant {
    /// Whether the access token expires within `margin` of `now` (Unix seconds) or has
    /// expired.
    pub fn expires_within(&self, margin: Duration, now: u64) -> bool {
        self.expires_at
            .is_some_and(|at| at <= now.saturating_add(margin.as_secs()))
    }

    /// Whether the access token has expired at `now` (Unix seconds).
    pub fn expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Renews the access token with the refresh token; a rotated refresh token replaces the
    /// old one, a missing one keeps it.
    /// `now`: Unix seconds, the start of the new token's lifetime.
    pub async fn refresh(&mut self, http: &Http, now: u64) -> Result<(), GrantError> {
        let Some(refresh) = &self.refresh else {
            return Err(GrantError::Rejected("there is no refresh token".into()));
        };
        let form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.expose_secret()),
            ("resource", &self.resource),
        ];
        let issued = token_request(http, &self.token_endpoint, &self.client, form).await?;
        self.access = issued.access;
        if let Some(r) = issued.refresh {
            self.refresh = Some(r);
        }
        self.expires_at = issued.expires_in.map(|s| now.saturating_add(s));
        if let Some(scopes) = issued.scopes {
            self.scopes = scopes;
        }
        Ok(())
    }

    /// RFC 7009: revokes the refresh token (which ends the grant) and the access token.
    /// Best effort: failures are reported, never fatal.
    pub async fn revoke(&self, http: &Http) -> Result<bool, RevokeError> {
        let Some(endpoint) = &self.revocation_endpoint else {
            return Ok(false);
        };
        let mut tokens = vec![(self.access.expose_secret(), "access_token")];
        if let Some(r) = &self.refresh {
            tokens.insert(0, (r.expose_secret(), "refresh_token"));
        }
        for (token, hint) in tokens {
            let mut form = vec![("token", token), ("token_type_hint", hint)];
            let basic = self.client.authenticate(&mut form);
            let response = http
                .post_form(endpoint, &form, basic)
                .await
                .map_err(|source| RevokeError::Request {
                    endpoint: endpoint.clone(),
                    source,
                })?;
            let status = response.status();
            let _ = read_body(response).await;
            if !status.is_success() {
                return Err(RevokeError::Status {
                    endpoint: endpoint.clone(),
                    status,
                });
            }
        }
        Ok(true)
    }

    /// The grant as JSON for the encrypted store. This is the one place tokens are
    /// serialised; the bytes are zeroed when dropped.
    pub fn to_plaintext(&self) -> Result<Zeroizing<Vec<u8>>, AuthError> {
        let stored = StoredGrant {
            v: 1,
            access_token: self.access.expose_secret().to_owned(),
            refresh_token: self.refresh.as_ref().map(|r| r.expose_secret().to_owned()),
            expires_at: self.expires_at,
            scopes: self.scopes.clone(),
            server_url: self.server_url.clone(),
            resource: self.resource.clone(),
            token_endpoint: self.token_endpoint.clone(),
            revocation_endpoint: self.revocation_endpoint.clone(),
            client: StoredClient::from_client(&self.client),
        };
        serde_json::to_vec(&stored)
            .map(Zeroizing::new)
            .map_err(|source| AuthError::Encode {
                what: "a login",
                source,
            })
    }

    /// Reads a grant written by [`Grant::to_plaintext`].
    pub fn from_plaintext(bytes: &[u8]) -> Result<Self, AuthError> {
        let mut stored: StoredGrant =
            serde_json::from_slice(bytes).map_err(|source| AuthError::Damaged {
                what: "login",
                source,
            })?;
        Ok(Self {
            access: SecretString::from(std::mem::take(&mut stored.access_token)),
            refresh: stored.refresh_token.take().map(SecretString::from),
            expires_at: stored.expires_at,
            scopes: std::mem::take(&mut stored.scopes),
            server_url: std::mem::take(&mut stored.server_url),
            resource: std::mem::take(&mut stored.resource),
            token_endpoint: std::mem::take(&mut stored.token_endpoint),
            revocation_endpoint: stored.revocation_endpoint.take(),
            client: stored.client.to_client(),
        })
    }
}

impl Client {
    /// The client as JSON for the encrypted store (its secret included).
    pub fn to_plaintext(&self) -> Result<Zeroizing<Vec<u8>>, AuthError> {
        serde_json::to_vec(&StoredClient::from_client(self))
            .map(Zeroizing::new)
            .map_err(|source| AuthError::Encode {
                what: "a client registration",
                source,
            })
    }

    /// Reads a client written by [`Client::to_plaintext`].
    pub fn from_plaintext(bytes: &[u8]) -> Result<Self, AuthError> {
        serde_json::from_slice::<StoredClient>(bytes)
            .map(|s| s.to_client())
            .map_err(|source| AuthError::Damaged {
                what: "client registration",
                source,
            })
    }
}

#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct StoredGrant {
    v: u32,
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_at: Option<u64>,
    #[serde(default)]
    scopes: Vec<String>,
    server_url: String,
    resource: String,
    token_endpoint: String,
    #[serde(default)]
    revocation_endpoint: Option<String>,
    client: StoredClient,
}

#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct StoredClient {
    #[zeroize(skip)]
    kind: ClientKind,
    issuer: String,
    id: String,
    #[serde(default)]
    secret: Option<String>,
    #[zeroize(skip)]
    auth: AuthMethod,
    #[serde(default)]
    redirect_uri: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

impl StoredClient {
    fn from_client(c: &Client) -> Self {
        Self {
            kind: c.kind,
            issuer: c.issuer.clone(),
            id: c.id.clone(),
            secret: c.secret.as_ref().map(|s| s.expose_secret().to_owned()),
            auth: c.auth,
            redirect_uri: c.redirect_uri.clone(),
            scope: c.scope.clone(),
        }
    }

    fn to_client(&self) -> Client {
        Client {
            kind: self.kind,
            issuer: self.issuer.clone(),
            id: self.id.clone(),
            secret: self.secret.clone().map(SecretString::from),
            auth: self.auth,
            redirect_uri: self.redirect_uri.clone(),
            scope: self.scope.clone(),
        }
    }
}

/// The store entry name of a server's login.
pub fn grant_entry(server: &str) -> String {
    format!("login-{}", short_hash(server))
}

/// The store entry name of the dynamic registration at `issuer`.
pub fn client_entry(issuer: &str) -> String {
    format!("client-{}", short_hash(issuer))
}

fn short_hash(s: &str) -> String {
    Sha256::digest(s.as_bytes())[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        Grant {
            access: SecretString::from("acc-123".to_owned()),
            refresh: Some(SecretString::from("ref-456".to_owned())),
            expires_at: Some(now() + 30),
            scopes: vec!["a".into()],
            server_url: "https://mcp.example/mcp".into(),
            resource: "https://mcp.example/mcp".into(),
            token_endpoint: "https://as.example/token".into(),
            revocation_endpoint: None,
            client: Client {
                kind: ClientKind::Dynamic,
                issuer: "https://as.example".into(),
                id: "cid".into(),
                secret: None,
                auth: AuthMethod::None,
                redirect_uri: Some("http://127.0.0.1:1/callback".into()),
                scope: None,
            },
        }
    }

    #[test]
    fn grants_round_trip_and_debug_hides_tokens() {
        let g = grant();
        let shown = format!("{g:?}");
        assert!(
            !shown.contains("acc-123") && !shown.contains("ref-456"),
            "{shown}"
        );
        let back = Grant::from_plaintext(&g.to_plaintext().unwrap()).unwrap();
        assert_eq!(back.access.expose_secret(), "acc-123");
        assert_eq!(back.refresh.unwrap().expose_secret(), "ref-456");
        assert_eq!(back.client.id, "cid");
        assert_eq!(back.expires_at, g.expires_at);
    }

    #[test]
    fn expiry_margins() {
        let g = grant();
        let now = now();
        assert!(!g.expired(now));
        assert!(!g.expires_within(Duration::from_secs(10), now));
        assert!(g.expires_within(Duration::from_secs(60), now));
        assert!(g.expired(now + 30));
    }

    #[test]
    fn auth_methods_follow_the_registration() {
        assert_eq!(AuthMethod::from_name(None, false), AuthMethod::None);
        assert_eq!(
            AuthMethod::from_name(None, true),
            AuthMethod::ClientSecretBasic
        );
        assert_eq!(
            AuthMethod::from_name(Some("client_secret_post"), true),
            AuthMethod::ClientSecretPost
        );
        assert_eq!(AuthMethod::from_name(Some("none"), true), AuthMethod::None);
    }
}
