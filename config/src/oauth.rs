//! OAuth settings of remote servers and the credential store option.
//!
//! ```json
//! "notion": {"type": "http", "url": "https://mcp.notion.com/mcp",
//!            "oauth": {"clientId": "abc", "clientSecret": "${NOTION_SECRET}",
//!                      "scopes": ["read"], "clientMetadataUrl": "https://me.example/client.json",
//!                      "callbackPort": 8976}}
//! "mcpd": {"credentialStore": "auto"}
//! ```
//!
//! Kept apart from the transport settings: [`collect`] walks `mcpServers` on its own and
//! returns, for every enabled server with a `url` and **without** `headers` (configured headers
//! are the escape hatch: with them OAuth never starts), where it is and how to log in to it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde_json::{Map, Value};

use super::{ConfigError, expand, join};

/// How one remote server is logged in to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteAuth {
    /// The MCP endpoint; tokens are bound to it and never sent anywhere else.
    pub url: url::Url,
    /// The `oauth` object, or its defaults.
    pub oauth: OAuthSpec,
}

/// The `oauth` object of a server entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OAuthSpec {
    /// A client registered beforehand with the server's authorization server.
    pub client_id: Option<String>,
    /// Its secret, for a confidential client (usually `${VAR}`).
    pub client_secret: Option<ClientSecret>,
    /// Scopes to ask for instead of the server's challenge or metadata.
    pub scopes: Vec<String>,
    /// An HTTPS URL of a client ID metadata document describing mcpd, used as the client ID
    /// when the authorization server supports such documents.
    pub client_metadata_url: Option<String>,
    /// A fixed port for the loopback callback (for pre-registered clients whose redirect URI
    /// names a port); by default the system picks one.
    pub callback_port: Option<u16>,
}

/// A configured client secret. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(pub String);

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret(…)")
    }
}

/// Where the key that encrypts stored credentials is kept (`mcpd.credentialStore`); see
/// `mcpd::auth::store` and docs/SECURITY.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CredentialStore {
    /// The Secret Service keyring when the session bus has one, else the key file.
    #[default]
    Auto,
    /// The Secret Service keyring; without one, logins are kept in memory (with the reason in
    /// `mcpctl status`).
    Keyring,
    /// A 0600 key file in the state directory.
    File,
    /// Nothing on disk: tokens last as long as the daemon.
    Memory,
}

impl CredentialStore {
    /// The word the configuration and `mcpctl status` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Keyring => "keyring",
            Self::File => "file",
            Self::Memory => "memory",
        }
    }
}

/// Reads `mcpd.credentialStore`.
pub(super) fn credential_store(
    file: &Path,
    value: &Value,
    at: &str,
) -> Result<CredentialStore, ConfigError> {
    match value.as_str() {
        Some("auto") => Ok(CredentialStore::Auto),
        Some("keyring") => Ok(CredentialStore::Keyring),
        Some("file") => Ok(CredentialStore::File),
        Some("memory") => Ok(CredentialStore::Memory),
        _ => Err(error(
            file,
            at,
            format!(
                "expected \"auto\", \"keyring\", \"file\" or \"memory\", found {}",
                describe(value)
            ),
        )),
    }
}

/// The remote servers that may log in with OAuth, by name.
pub fn collect(
    file: &Path,
    root: &Value,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, RemoteAuth>, ConfigError> {
    let mut out = BTreeMap::new();
    let Some(servers) = root.get("mcpServers").and_then(Value::as_object) else {
        return Ok(out);
    };
    for (name, server) in servers {
        let path = join("mcpServers", name);
        let Some(obj) = server.as_object() else {
            continue;
        };
        if obj.get("disabled").and_then(Value::as_bool) == Some(true)
            || obj.get("type").and_then(Value::as_str) == Some("stdio")
        {
            continue;
        }
        let oauth = match obj.get("oauth") {
            Some(v) => Some(spec(file, v, &join(&path, "oauth"), env)?),
            None => None,
        };
        let headers = obj
            .get("headers")
            .and_then(Value::as_object)
            .is_some_and(|h| !h.is_empty());
        let Some(url) = obj.get("url").and_then(Value::as_str) else {
            if oauth.is_some() {
                return Err(error(
                    file,
                    &join(&path, "oauth"),
                    "only a remote server (with a \"url\") takes this",
                ));
            }
            continue;
        };
        if headers {
            if oauth.is_some() {
                return Err(error(
                    file,
                    &join(&path, "oauth"),
                    "a server with configured \"headers\" never uses OAuth; remove one of them",
                ));
            }
            continue;
        }
        let at = join(&path, "url");
        let url = expand(url, env).map_err(|e| error(file, &at, e.to_string()))?;
        let Ok(url) = url::Url::parse(&url) else {
            // The transport's own reading of `url` reports this.
            continue;
        };
        if !matches!(url.scheme(), "http" | "https") {
            continue;
        }
        out.insert(
            name.clone(),
            RemoteAuth {
                url,
                oauth: oauth.unwrap_or_default(),
            },
        );
    }
    Ok(out)
}

fn spec(
    file: &Path,
    v: &Value,
    path: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<OAuthSpec, ConfigError> {
    let obj: &Map<String, Value> = v.as_object().ok_or_else(|| {
        error(
            file,
            path,
            format!("expected an object, found {}", describe(v)),
        )
    })?;
    let string = |v: &Value, at: &str| -> Result<String, ConfigError> {
        let s = v.as_str().ok_or_else(|| {
            error(
                file,
                at,
                format!("expected a string, found {}", describe(v)),
            )
        })?;
        expand(s, env).map_err(|e| error(file, at, e.to_string()))
    };
    let mut spec = OAuthSpec::default();
    for (key, value) in obj {
        let at = join(path, key);
        match key.as_str() {
            "clientId" => spec.client_id = Some(string(value, &at)?),
            "clientSecret" => spec.client_secret = Some(ClientSecret(string(value, &at)?)),
            "scopes" => {
                let items = value.as_array().ok_or_else(|| {
                    error(
                        file,
                        &at,
                        format!("expected an array of strings, found {}", describe(value)),
                    )
                })?;
                for (i, item) in items.iter().enumerate() {
                    let scope = string(item, &format!("{at}[{i}]"))?;
                    if scope.is_empty() || scope.contains(char::is_whitespace) {
                        return Err(error(
                            file,
                            &format!("{at}[{i}]"),
                            "a scope is one non-empty word",
                        ));
                    }
                    spec.scopes.push(scope);
                }
            }
            "clientMetadataUrl" => {
                let text = string(value, &at)?;
                let ok =
                    url::Url::parse(&text).is_ok_and(|u| u.scheme() == "https" && u.path() != "/");
                if !ok {
                    return Err(error(
                        file,
                        &at,
                        "a client ID metadata document URL is https:// with a path",
                    ));
                }
                spec.client_metadata_url = Some(text);
            }
            "callbackPort" => {
                spec.callback_port = Some(
                    value
                        .as_u64()
                        .and_then(|p| u16::try_from(p).ok())
                        .filter(|p| *p > 0)
                        .ok_or_else(|| error(file, &at, "expected a port number (1-65535)"))?,
                );
            }
            // Tolerated like every unknown key; the main walker reports unknown server keys.
            _ => {}
        }
    }
    if spec.client_secret.is_some() && spec.client_id.is_none() {
        return Err(error(
            file,
            &join(path, "clientSecret"),
            "a client secret needs its \"clientId\"",
        ));
    }
    Ok(spec)
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn error(file: &Path, path: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        file: file.to_owned(),
        line: None,
        json_path: Some(path.to_owned()),
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect_text(text: &str) -> Result<BTreeMap<String, RemoteAuth>, ConfigError> {
        let root: Value = serde_json::from_str(text).unwrap();
        collect(Path::new("/c.json"), &root, &|n| {
            (n == "SECRET").then(|| "s3cret".to_owned())
        })
    }

    #[test]
    fn remote_servers_without_headers_may_log_in() {
        let got = collect_text(
            r#"{"mcpServers":{
                "a":{"type":"http","url":"https://a.example/mcp"},
                "b":{"url":"https://b.example/mcp","headers":{"Authorization":"Bearer x"}},
                "c":{"command":"x"},
                "d":{"url":"https://d.example/mcp","disabled":true},
                "e":{"url":"https://e.example/mcp","oauth":{"clientId":"id","clientSecret":"${SECRET}","scopes":["r","w"]}}
            }}"#,
        )
        .unwrap();
        assert_eq!(got.keys().collect::<Vec<_>>(), ["a", "e"]);
        let e = &got["e"].oauth;
        assert_eq!(e.client_id.as_deref(), Some("id"));
        assert_eq!(e.client_secret, Some(ClientSecret("s3cret".into())));
        assert_eq!(e.scopes, ["r", "w"]);
        assert!(!format!("{e:?}").contains("s3cret"));
    }

    #[test]
    fn oauth_with_headers_is_an_error_naming_the_path() {
        let e = collect_text(
            r#"{"mcpServers":{"x":{"url":"https://x.example","headers":{"A":"b"},"oauth":{}}}}"#,
        )
        .unwrap_err();
        assert_eq!(e.json_path.as_deref(), Some("mcpServers.x.oauth"));
        let e = collect_text(
            r#"{"mcpServers":{"x":{"url":"https://x.example","oauth":{"scopes":["a b"]}}}}"#,
        )
        .unwrap_err();
        assert_eq!(e.json_path.as_deref(), Some("mcpServers.x.oauth.scopes[0]"));
        let e = collect_text(r#"{"mcpServers":{"x":{"url":"https://x.example","oauth":{"clientMetadataUrl":"http://x/c.json"}}}}"#)
            .unwrap_err();
        assert_eq!(
            e.json_path.as_deref(),
            Some("mcpServers.x.oauth.clientMetadataUrl")
        );
    }
}
