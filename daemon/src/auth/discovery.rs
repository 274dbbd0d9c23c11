//! Finding the authorization server (from the `WWW-Authenticate` challenge, `challenge.rs`):
//! RFC 9728 protected resource metadata, RFC 8414 / OpenID Connect metadata in the order the MCP specification
//! gives, with an exact issuer match and the PKCE S256 requirement.

use serde::Deserialize;
use url::Url;

pub use super::challenge::Challenge;
use super::http::{Http, HttpError};

/// The canonical URI of an MCP server (RFC 8707 §2, as the MCP specification defines it):
/// lowercase scheme and host, no fragment, no trailing slash on an empty path.
pub fn canonical_resource(url: &Url) -> String {
    let mut url = url.clone();
    url.set_fragment(None);
    let mut text = url.to_string();
    if url.path() == "/" && url.query().is_none() {
        text.pop();
    }
    text
}

/// The RFC 9728 well-known URLs for `server`, in the order to try: the path-aware one (when
/// the endpoint has a path), then the root.
pub fn protected_resource_urls(server: &Url) -> Vec<Url> {
    let mut urls = Vec::new();
    let path = server.path().trim_end_matches('/');
    let mut base = server.clone();
    base.set_query(None);
    base.set_fragment(None);
    if !path.is_empty() {
        let mut u = base.clone();
        u.set_path(&format!("/.well-known/oauth-protected-resource{path}"));
        urls.push(u);
    }
    let mut root = base;
    root.set_path("/.well-known/oauth-protected-resource");
    urls.push(root);
    urls
}

/// The authorization server metadata URLs for `issuer`, in the specification's order.
pub fn authorization_server_urls(issuer: &Url) -> Vec<Url> {
    let path = issuer.path().trim_end_matches('/');
    let mut base = issuer.clone();
    base.set_query(None);
    base.set_fragment(None);
    let at = |p: String| {
        let mut u = base.clone();
        u.set_path(&p);
        u
    };
    if path.is_empty() {
        vec![
            at("/.well-known/oauth-authorization-server".into()),
            at("/.well-known/openid-configuration".into()),
        ]
    } else {
        vec![
            at(format!("/.well-known/oauth-authorization-server{path}")),
            at(format!("/.well-known/openid-configuration{path}")),
            at(format!("{path}/.well-known/openid-configuration")),
        ]
    }
}

/// RFC 9728 protected resource metadata (the fields mcpd uses).
#[derive(Debug, Clone, Deserialize)]
pub struct ResourceMetadata {
    /// The resource identifier.
    #[serde(default)]
    pub resource: Option<String>,
    /// Issuer identifiers of the authorization servers.
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    /// Scopes for basic use.
    #[serde(default)]
    pub scopes_supported: Option<Vec<String>>,
}

/// Why the authorization server of a remote server could not be found or is refused.
/// `Display` is the whole message `mcpctl login` shows; a fetch's or parse's cause is also
/// the error's `source()`.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The server's `WWW-Authenticate` names a `resource_metadata` that is no URL.
    #[error("the server's resource_metadata {url:?} is not a URL: {source}")]
    ResourceMetadataUrl {
        /// As the challenge gave it.
        url: String,
        /// The parser's error.
        #[source]
        source: url::ParseError,
    },
    /// The challenge points at resource metadata over plain http elsewhere.
    #[error(
        "the server's challenge points at resource metadata {url}, which is neither https nor on this machine; refusing it"
    )]
    InsecureResourceMetadata {
        /// The refused URL.
        url: String,
    },
    /// Fetching the protected resource metadata failed.
    #[error("protected resource metadata at {url}: {source}")]
    ResourceMetadataFetch {
        /// Where it was fetched.
        url: String,
        /// Why.
        #[source]
        source: HttpError,
    },
    /// The resource metadata names no `resource` (RFC 9728 §3.3).
    #[error(
        "the protected resource metadata at {at} names no `resource`, so it cannot be shown to be for {resource}; refusing it (RFC 9728 §3.3)"
    )]
    NoResource {
        /// Where the document was found.
        at: String,
        /// This server's canonical resource URI.
        resource: String,
    },
    /// The resource metadata is for another resource (RFC 9728 §3.3).
    #[error(
        "the protected resource metadata at {at} is for {stated}, not for {resource}; refusing it (RFC 9728 §3.3)"
    )]
    OtherResource {
        /// Where the document was found.
        at: String,
        /// The `resource` it states.
        stated: String,
        /// This server's canonical resource URI.
        resource: String,
    },
    /// The resource metadata lists no authorization server.
    #[error("the protected resource metadata names no authorization server")]
    NoAuthorizationServer {
        /// Where the document was found.
        at: String,
    },
    /// The issuer is no URL.
    #[error("the authorization server {issuer:?} is not a URL: {source}")]
    IssuerNotUrl {
        /// As named.
        issuer: String,
        /// The parser's error.
        #[source]
        source: url::ParseError,
    },
    /// The issuer is plain http elsewhere.
    #[error("the authorization server {issuer} is neither https nor on this machine")]
    InsecureIssuer {
        /// The issuer.
        issuer: String,
    },
    /// Fetching the authorization server metadata failed.
    #[error("authorization server metadata at {url}: {source}")]
    ServerMetadataFetch {
        /// Where it was fetched.
        url: String,
        /// Why.
        #[source]
        source: HttpError,
    },
    /// No well-known URL had the authorization server's metadata.
    #[error("no authorization server metadata for {issuer} (tried {tried})")]
    NoServerMetadata {
        /// The issuer.
        issuer: String,
        /// The URLs tried, comma-separated.
        tried: String,
    },
    /// RFC 8414 §3.3: the document names another issuer.
    #[error(
        "the authorization server metadata names issuer {found:?}, not {expected:?}; refusing it"
    )]
    IssuerMismatch {
        /// The document's issuer.
        found: String,
        /// The issuer it was looked up for.
        expected: String,
    },
    /// PKCE offered, but not S256.
    #[error(
        "the authorization server {issuer} does not support PKCE with S256 (it lists: {listed}); mcpd refuses to log in without it"
    )]
    NoS256 {
        /// The issuer.
        issuer: String,
        /// The methods it lists, comma-separated.
        listed: String,
    },
    /// No PKCE advertised at all.
    #[error(
        "the authorization server {issuer} does not advertise PKCE (no code_challenge_methods_supported); mcpd refuses to log in without S256"
    )]
    NoPkce {
        /// The issuer.
        issuer: String,
    },
    /// An endpoint is no URL.
    #[error("the authorization server lists a bad endpoint {endpoint}: {source}")]
    BadEndpoint {
        /// As listed.
        endpoint: String,
        /// The parser's error.
        #[source]
        source: url::ParseError,
    },
    /// An endpoint is plain http elsewhere.
    #[error(
        "the authorization server lists {endpoint}, which is neither https nor on this machine"
    )]
    InsecureEndpoint {
        /// As listed.
        endpoint: String,
    },
}

/// RFC 8414 / OpenID Connect provider metadata (the fields mcpd uses).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct ServerMetadata {
    /// Must equal the issuer the document was looked up for.
    pub issuer: String,
    /// Where the user is sent.
    pub authorization_endpoint: String,
    /// Where codes and refresh tokens are exchanged.
    pub token_endpoint: String,
    /// RFC 7591 dynamic registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_endpoint: Option<String>,
    /// RFC 7009 token revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<String>,
    /// PKCE methods; without `S256` mcpd refuses to go on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_challenge_methods_supported: Option<Vec<String>>,
    /// Scopes the server knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes_supported: Option<Vec<String>>,
    /// RFC 9207: the authorization response carries `iss`.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    /// Client ID metadata documents are accepted as client IDs.
    #[serde(default)]
    pub client_id_metadata_document_supported: bool,
    /// Token endpoint client authentication methods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

impl ServerMetadata {
    /// Refuses an authorization server that does not offer PKCE S256.
    pub fn require_s256(&self) -> Result<(), DiscoveryError> {
        match &self.code_challenge_methods_supported {
            Some(methods) if methods.iter().any(|m| m == "S256") => Ok(()),
            Some(methods) => Err(DiscoveryError::NoS256 {
                issuer: self.issuer.clone(),
                listed: methods.join(", "),
            }),
            None => Err(DiscoveryError::NoPkce {
                issuer: self.issuer.clone(),
            }),
        }
    }

    /// Checks that every endpoint is https, or http on this machine.
    fn check_endpoints(&self) -> Result<(), DiscoveryError> {
        let mut all = vec![&self.authorization_endpoint, &self.token_endpoint];
        all.extend(self.registration_endpoint.iter());
        all.extend(self.revocation_endpoint.iter());
        for endpoint in all {
            let url = Url::parse(endpoint).map_err(|source| DiscoveryError::BadEndpoint {
                endpoint: endpoint.clone(),
                source,
            })?;
            if !secure_enough(&url) {
                return Err(DiscoveryError::InsecureEndpoint {
                    endpoint: endpoint.clone(),
                });
            }
        }
        Ok(())
    }
}

pub use crate::net::secure_enough;

/// What discovery found for one server.
#[derive(Debug, Clone)]
pub struct Discovered {
    /// The `resource` to send (RFC 8707).
    pub resource: String,
    /// The authorization server's validated metadata.
    pub metadata: ServerMetadata,
    /// Scopes to ask for: the challenge's, else the resource metadata's.
    pub scopes: Vec<String>,
}

/// Finds the authorization server of `server`. `challenge` is the last 401's, if any.
pub async fn discover(
    http: &Http,
    server: &Url,
    challenge: Option<&Challenge>,
) -> Result<Discovered, DiscoveryError> {
    let resource_url = canonical_resource(server);
    let mut candidates = Vec::new();
    if let Some(url) = challenge.and_then(|c| c.resource_metadata.as_deref()) {
        let url = server
            .join(url)
            .map_err(|source| DiscoveryError::ResourceMetadataUrl {
                url: url.to_owned(),
                source,
            })?;
        // The challenge comes from the server, over whatever it answered on: metadata that
        // decides where the user logs in is fetched over https only (or on this machine).
        if !secure_enough(&url) {
            return Err(DiscoveryError::InsecureResourceMetadata { url: url.into() });
        }
        candidates.push(url);
    } else {
        candidates.extend(protected_resource_urls(server));
    }
    let mut resource_metadata = None;
    let mut tried = Vec::new();
    for url in candidates {
        match http.get_json::<ResourceMetadata>(&url).await {
            Ok(Some(doc)) => {
                resource_metadata = Some((doc, url));
                break;
            }
            Ok(None) => tried.push(url.to_string()),
            Err(source) => {
                return Err(DiscoveryError::ResourceMetadataFetch {
                    url: url.into(),
                    source,
                });
            }
        }
    }
    let (resource, issuer, prm_scopes) = match resource_metadata {
        Some((doc, at)) => {
            let at = String::from(at);
            // RFC 9728 §3.3: metadata whose `resource` is not this server's must not be used;
            // without a `resource` it cannot be shown to be this server's either.
            let Some(r) = doc.resource else {
                return Err(DiscoveryError::NoResource {
                    at,
                    resource: resource_url,
                });
            };
            if !resource_matches(&r, &resource_url) {
                return Err(DiscoveryError::OtherResource {
                    at,
                    stated: r,
                    resource: resource_url,
                });
            }
            let issuer = doc
                .authorization_servers
                .first()
                .cloned()
                .ok_or(DiscoveryError::NoAuthorizationServer { at })?;
            (r, issuer, doc.scopes_supported)
        }
        None => {
            // Servers of the 2025-03-26 revision have no resource metadata: their origin is
            // the authorization server.
            tracing::debug!(
                "no protected resource metadata (tried {}); trying the server's origin as its authorization server",
                tried.join(", ")
            );
            let origin = server.origin().ascii_serialization();
            (resource_url, origin, None)
        }
    };
    let metadata = server_metadata(http, &issuer).await?;
    metadata.require_s256()?;
    metadata.check_endpoints()?;
    let scopes = challenge
        .map(Challenge::scopes)
        .filter(|s| !s.is_empty())
        .or(prm_scopes)
        .unwrap_or_default();
    Ok(Discovered {
        resource,
        metadata,
        scopes,
    })
}

/// Whether resource metadata for `stated` may serve the server at `ours`: the same
/// canonical URI, or a prefix of it at a path boundary.
fn resource_matches(stated: &str, ours: &str) -> bool {
    let stated = stated.trim_end_matches('/');
    let ours_trimmed = ours.trim_end_matches('/');
    let (Ok(a), Ok(b)) = (Url::parse(stated), Url::parse(ours_trimmed)) else {
        return false;
    };
    if a.origin() != b.origin() {
        return false;
    }
    let (pa, pb) = (
        a.path().trim_end_matches('/'),
        b.path().trim_end_matches('/'),
    );
    pb == pa || pb.starts_with(&format!("{pa}/"))
}

/// Fetches the metadata of `issuer` from the well-known URLs in order; the first document
/// found must carry exactly that issuer.
pub async fn server_metadata(http: &Http, issuer: &str) -> Result<ServerMetadata, DiscoveryError> {
    let issuer_url = Url::parse(issuer).map_err(|source| DiscoveryError::IssuerNotUrl {
        issuer: issuer.to_owned(),
        source,
    })?;
    if !secure_enough(&issuer_url) {
        return Err(DiscoveryError::InsecureIssuer {
            issuer: issuer.to_owned(),
        });
    }
    let mut tried = Vec::new();
    for url in authorization_server_urls(&issuer_url) {
        match http.get_json::<ServerMetadata>(&url).await {
            Ok(Some(doc)) => {
                check_issuer(&doc.issuer, issuer)?;
                return Ok(doc);
            }
            Ok(None) => tried.push(url.to_string()),
            Err(source) => {
                return Err(DiscoveryError::ServerMetadataFetch {
                    url: url.into(),
                    source,
                });
            }
        }
    }
    Err(DiscoveryError::NoServerMetadata {
        issuer: issuer.to_owned(),
        tried: tried.join(", "),
    })
}

/// RFC 8414 §3.3: the document's issuer is identical to the one it was looked up for, compared
/// as strings without any normalisation.
pub fn check_issuer(found: &str, expected: &str) -> Result<(), DiscoveryError> {
    if found == expected {
        Ok(())
    } else {
        Err(DiscoveryError::IssuerMismatch {
            found: found.to_owned(),
            expected: expected.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(v: Vec<Url>) -> Vec<String> {
        v.into_iter().map(|u| u.to_string()).collect()
    }

    #[test]
    fn protected_resource_urls_try_the_path_then_the_root() {
        let u = Url::parse("https://example.com/public/mcp?x=1").unwrap();
        assert_eq!(
            urls(protected_resource_urls(&u)),
            [
                "https://example.com/.well-known/oauth-protected-resource/public/mcp",
                "https://example.com/.well-known/oauth-protected-resource"
            ]
        );
        let root = Url::parse("https://example.com/").unwrap();
        assert_eq!(
            urls(protected_resource_urls(&root)),
            ["https://example.com/.well-known/oauth-protected-resource"]
        );
    }

    #[test]
    fn authorization_server_urls_follow_the_specification_order() {
        let with_path = Url::parse("https://auth.example.com/tenant1").unwrap();
        assert_eq!(
            urls(authorization_server_urls(&with_path)),
            [
                "https://auth.example.com/.well-known/oauth-authorization-server/tenant1",
                "https://auth.example.com/.well-known/openid-configuration/tenant1",
                "https://auth.example.com/tenant1/.well-known/openid-configuration",
            ]
        );
        let bare = Url::parse("https://auth.example.com").unwrap();
        assert_eq!(
            urls(authorization_server_urls(&bare)),
            [
                "https://auth.example.com/.well-known/oauth-authorization-server",
                "https://auth.example.com/.well-known/openid-configuration",
            ]
        );
    }

    #[test]
    fn issuers_must_match_exactly() {
        assert!(check_issuer("https://honest.example", "https://honest.example").is_ok());
        let err = check_issuer("https://honest.example/", "https://honest.example").unwrap_err();
        assert!(
            matches!(err, DiscoveryError::IssuerMismatch { .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            r#"the authorization server metadata names issuer "https://honest.example/", not "https://honest.example"; refusing it"#
        );
        assert!(check_issuer("https://honest.example", "https://attacker.example").is_err());
        assert!(check_issuer("https://a.example/t1/", "https://a.example/t1").is_err());
        assert!(check_issuer("HTTPS://a.example", "https://a.example").is_err());
        assert!(check_issuer("https://a.example/t1", "https://a.example/t2").is_err());
    }

    #[test]
    fn canonical_resources_drop_the_root_slash_and_fragment() {
        let c = |s: &str| canonical_resource(&Url::parse(s).unwrap());
        assert_eq!(c("HTTPS://MCP.Example.com/"), "https://mcp.example.com");
        assert_eq!(
            c("https://mcp.example.com/mcp#x"),
            "https://mcp.example.com/mcp"
        );
        assert_eq!(
            c("https://mcp.example.com:8443"),
            "https://mcp.example.com:8443"
        );
        assert!(resource_matches(
            "https://mcp.example.com",
            "https://mcp.example.com/mcp"
        ));
        assert!(resource_matches(
            "https://mcp.example.com/mcp/",
            "https://mcp.example.com/mcp"
        ));
        assert!(!resource_matches(
            "https://mcp.example.com/m",
            "https://mcp.example.com/mcp"
        ));
        assert!(!resource_matches(
            "https://evil.example/mcp",
            "https://mcp.example.com/mcp"
        ));
    }

    /// A loopback HTTP server that answers `GET path` with the JSON `routes(base)` gives it
    /// (404 otherwise); returns its base URL.
    async fn serve(routes: impl FnOnce(&str) -> Vec<(String, serde_json::Value)>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let routes = routes(&base);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let routes = routes.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&request);
                    let path = text.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let (status, body) = match routes.iter().find(|(p, _)| *p == path) {
                        Some((_, v)) => ("200 OK", v.to_string()),
                        None => ("404 Not Found", "{}".to_owned()),
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(answer.as_bytes()).await;
                });
            }
        });
        base
    }

    /// Discovery for `<server>/mcp` whose path-aware resource metadata is `prm(base)` and whose
    /// origin is a valid authorization server.
    async fn discover_with(
        prm: impl FnOnce(&str) -> serde_json::Value,
    ) -> (String, Result<Discovered, DiscoveryError>) {
        let base = serve(|base| {
            vec![
                (
                    "/.well-known/oauth-protected-resource/mcp".into(),
                    prm(base),
                ),
                (
                    "/.well-known/oauth-authorization-server".into(),
                    serde_json::json!({
                        "issuer": base, "authorization_endpoint": format!("{base}/authorize"),
                        "token_endpoint": format!("{base}/token"),
                        "code_challenge_methods_supported": ["S256"]
                    }),
                ),
            ]
        })
        .await;
        let server = Url::parse(&format!("{base}/mcp")).unwrap();
        let http = Http::new().unwrap();
        let found = discover(&http, &server, None).await;
        (base, found)
    }

    #[tokio::test]
    async fn resource_metadata_for_this_server_is_used() {
        let (base, found) = discover_with(
            |b| serde_json::json!({"resource": format!("{b}/mcp"), "authorization_servers": [b]}),
        )
        .await;
        assert_eq!(found.unwrap().resource, format!("{base}/mcp"));
    }

    #[tokio::test]
    async fn resource_metadata_without_a_resource_is_refused() {
        let (_, found) = discover_with(|b| serde_json::json!({"authorization_servers": [b]})).await;
        let err = found.unwrap_err();
        assert!(matches!(err, DiscoveryError::NoResource { .. }), "{err:?}");
        assert!(err.to_string().contains("names no `resource`"), "{err}");
    }

    #[tokio::test]
    async fn resource_metadata_for_another_resource_is_refused() {
        let (_, found) = discover_with(
            |b| serde_json::json!({"resource": format!("{b}/other"), "authorization_servers": [b]}),
        )
        .await;
        let err = found.unwrap_err();
        assert!(
            matches!(err, DiscoveryError::OtherResource { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("/other, not for"), "{err}");
    }

    #[tokio::test]
    async fn a_challenge_pointing_at_plain_http_metadata_elsewhere_is_refused() {
        let http = Http::new().unwrap();
        let server = Url::parse("https://mcp.example.com/mcp").unwrap();
        let challenge = Challenge::parse(
            r#"Bearer resource_metadata="http://metadata.example.net/.well-known/oauth-protected-resource""#,
        );
        let err = discover(&http, &server, Some(&challenge))
            .await
            .unwrap_err();
        assert!(
            matches!(err, DiscoveryError::InsecureResourceMetadata { .. }),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("neither https nor on this machine")
                && text.contains("metadata.example.net"),
            "{text}"
        );
    }

    #[test]
    fn pkce_s256_is_required() {
        let mut m: ServerMetadata = serde_json::from_value(serde_json::json!({
            "issuer": "https://a.example", "authorization_endpoint": "https://a.example/authorize",
            "token_endpoint": "https://a.example/token"
        }))
        .unwrap();
        let err = m.require_s256().unwrap_err();
        assert!(matches!(err, DiscoveryError::NoPkce { .. }), "{err:?}");
        assert!(err.to_string().contains("does not advertise PKCE"), "{err}");
        m.code_challenge_methods_supported = Some(vec!["plain".into()]);
        let err = m.require_s256().unwrap_err();
        assert!(matches!(err, DiscoveryError::NoS256 { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "the authorization server https://a.example does not support PKCE with S256 (it lists: plain); mcpd refuses to log in without it"
        );
        m.code_challenge_methods_supported = Some(vec!["plain".into(), "S256".into()]);
        assert!(m.require_s256().is_ok());
        assert!(m.check_endpoints().is_ok());
        m.token_endpoint = "http://a.example/token".into();
        assert!(matches!(
            m.check_endpoints(),
            Err(DiscoveryError::InsecureEndpoint { .. })
        ));
    }
}
