//! Reusing a login made with `mcp-remote`.
//!
//! `mcp-remote` (the npm package many users ran before mcpd) keeps its logins in
//! `$MCP_REMOTE_CONFIG_DIR` or `~/.mcp-auth`, in a directory per storage version
//! (`mcp-remote-v1` today, `mcp-remote-<package version>` in older releases), as
//! `<hash>_tokens.json` and `<hash>_client_info.json`, where `<hash>` is the hex MD5 of the
//! server URL (of the URL alone when it was run without extra header, resource or client
//! options; a server that needs those has `headers` in mcpd and never uses OAuth).
//!
//! When a server without a login answers 401, mcpd looks once (per daemon run and server) for
//! exactly that server's files: the MD5 of its own URL, nothing else. Other servers' tokens are
//! never read, let alone tried. Found tokens become an ordinary mcpd login (the authorization
//! server is discovered as for `mcpctl login`, and an `issuer` recorded by mcp-remote must
//! match it), are written to mcpd's encrypted store and logged (`imported the login made with
//! mcp-remote`); mcp-remote's files are left alone. A token the server then refuses is dropped
//! and the server waits for `mcpctl login` as usual.
//!
//! Files owned by another user or writable by others are not used (someone could have planted
//! them); files readable by others are used, with a warning that the token has been exposed.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::UNIX_EPOCH;

use md5::{Digest, Md5};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::Value;
use url::Url;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::discovery::{self, Challenge};
use super::grant::{AuthMethod, Client, ClientKind, Grant};
use super::{AuthManager, ServerAuth, lock};

/// Larger files are not mcp-remote's.
const MAX_FILE: u64 = 1 << 20;

/// `<hash>_tokens.json`.
#[derive(Deserialize, Zeroize, ZeroizeOnDrop)]
struct TokensFile {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    /// Seconds, from the token response.
    #[serde(default)]
    #[zeroize(skip)]
    expires_in: Option<Value>,
    /// Milliseconds since the epoch (mcp-remote 0.1.30 and later).
    #[serde(default)]
    #[zeroize(skip)]
    expires_at: Option<Value>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    issuer: Option<String>,
}

/// `<hash>_client_info.json` (RFC 7591 client information).
#[derive(Deserialize, Zeroize, ZeroizeOnDrop)]
struct ClientFile {
    client_id: String,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    issuer: Option<String>,
}

/// mcp-remote's files for one server.
struct Found {
    tokens_path: PathBuf,
    tokens: TokensFile,
    client: ClientFile,
    /// The tokens file's modification time (Unix seconds), for `expires_in`.
    written: u64,
}

/// `$MCP_REMOTE_CONFIG_DIR`, else `~/.mcp-auth`.
pub fn base_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("MCP_REMOTE_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| Path::new(&h).join(".mcp-auth"))
}

/// The names mcp-remote may have used for `url`'s files: the MD5 of the URL as mcpd holds it
/// and, for a URL with an empty path, of the same URL without the `/` that parsing added.
pub fn url_hashes(url: &Url) -> Vec<String> {
    let mut texts = vec![url.as_str().to_owned()];
    if url.path() == "/" && url.query().is_none() && url.fragment().is_none() {
        texts.push(url.as_str().trim_end_matches('/').to_owned());
    }
    texts
        .iter()
        .map(|t| {
            Md5::digest(t.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        })
        .collect()
}

/// A file's bytes (zeroed when dropped) and its metadata.
type Read = (Zeroizing<Vec<u8>>, fs::Metadata);

/// Why mcp-remote's login for a server is not imported (logged; the server then waits for
/// `mcpctl login`). Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file exists but cannot be opened.
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file opened but cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Someone else's file: it could have been planted.
    #[error("{} belongs to another user; it is not used", path.display())]
    OtherOwner {
        /// The file.
        path: PathBuf,
    },
    /// Writable by others, not a regular file, or too large.
    #[error("{} is writable by others (or not a small file); it is not used", path.display())]
    Unsafe {
        /// The file.
        path: PathBuf,
    },
    /// The tokens file is not what mcp-remote writes.
    #[error("{} is not mcp-remote's tokens: {source}", path.display())]
    NotTokens {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// Tokens without the client they were issued to cannot be used.
    #[error("{} has no {client_file} beside it (the client the tokens were issued to)", tokens.display())]
    NoClient {
        /// The tokens file.
        tokens: PathBuf,
        /// The client information file's name.
        client_file: String,
    },
    /// The client information file is not what mcp-remote writes.
    #[error("{} is not mcp-remote's client information: {source}", path.display())]
    NotClient {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
}

/// Reads a small JSON file that must be ours and not writable by others.
fn read_owned(path: &Path) -> Result<Option<Read>, ImportError> {
    let read_error = |source| ImportError::Read {
        path: path.to_owned(),
        source,
    };
    let bytes = match fs::File::open(path) {
        Ok(file) => {
            let meta = file.metadata().map_err(read_error)?;
            if meta.uid() != nix::unistd::geteuid().as_raw() {
                return Err(ImportError::OtherOwner {
                    path: path.to_owned(),
                });
            }
            if meta.mode() & 0o022 != 0 || !meta.is_file() || meta.len() > MAX_FILE {
                return Err(ImportError::Unsafe {
                    path: path.to_owned(),
                });
            }
            let mut bytes = Zeroizing::new(Vec::new());
            std::io::Read::read_to_end(&mut &file, &mut bytes).map_err(read_error)?;
            (bytes, meta)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ImportError::Open {
                path: path.to_owned(),
                source,
            });
        }
    };
    Ok(Some(bytes))
}

/// mcp-remote's login for `url` under `base`, the most recently written one when several
/// storage versions have one.
fn find(base: &Path, url: &Url) -> Result<Option<Found>, ImportError> {
    let Ok(entries) = fs::read_dir(base) else {
        return Ok(None);
    };
    let hashes = url_hashes(url);
    let mut best: Option<(u64, PathBuf, PathBuf)> = None;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with("mcp-remote-") {
            continue;
        }
        let dir = entry.path();
        for hash in &hashes {
            let tokens = dir.join(format!("{hash}_tokens.json"));
            let Ok(meta) = fs::metadata(&tokens) else {
                continue;
            };
            let written = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            if best.as_ref().is_none_or(|(w, _, _)| written > *w) {
                best = Some((
                    written,
                    tokens,
                    dir.join(format!("{hash}_client_info.json")),
                ));
            }
        }
    }
    let Some((_, tokens_path, client_path)) = best else {
        return Ok(None);
    };
    let Some((bytes, meta)) = read_owned(&tokens_path)? else {
        return Ok(None);
    };
    if meta.mode() & 0o044 != 0 {
        tracing::warn!(
            "{} is readable by other users (mcp-remote writes with the default umask): the token may have leaked; delete mcp-remote's copy once mcpd has imported it",
            tokens_path.display()
        );
    }
    let tokens: TokensFile =
        serde_json::from_slice(&bytes).map_err(|source| ImportError::NotTokens {
            path: tokens_path.clone(),
            source,
        })?;
    let Some((bytes, _)) = read_owned(&client_path)? else {
        return Err(ImportError::NoClient {
            client_file: client_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            tokens: tokens_path,
        });
    };
    let client: ClientFile =
        serde_json::from_slice(&bytes).map_err(|source| ImportError::NotClient {
            path: client_path.clone(),
            source,
        })?;
    let written = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    Ok(Some(Found {
        tokens_path,
        tokens,
        client,
        written,
    }))
}

fn number(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n: &f64| n.is_finite() && *n >= 0.0)
}

impl Found {
    /// When the access token expires (Unix seconds), if known.
    fn expires_at(&self) -> Option<u64> {
        if let Some(ms) = number(self.tokens.expires_at.as_ref()) {
            return Some((ms / 1000.0) as u64);
        }
        number(self.tokens.expires_in.as_ref()).map(|s| self.written.saturating_add(s as u64))
    }
}

impl AuthManager {
    /// Looks once for `auth`'s login made with mcp-remote and, when there is a usable one,
    /// makes it this server's login. Whether the server now has tokens.
    pub(super) async fn import_mcp_remote(&self, auth: &ServerAuth) -> bool {
        if auth.import_tried.swap(true, Ordering::SeqCst) {
            return false;
        }
        let Some(target) = self.target(&auth.name) else {
            return false;
        };
        let Some(base) = base_dir() else {
            return false;
        };
        let found = match find(&base, &target.url) {
            Ok(Some(found)) => found,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(server = %auth.name, "not importing mcp-remote's login: {e}");
                return false;
            }
        };
        let challenge: Option<Challenge> = lock(&auth.challenge).clone();
        let flight = auth.refreshing.lock().await;
        if auth.access().is_some() {
            return true;
        }
        let discovered =
            match discovery::discover(&self.http, &target.url, challenge.as_ref()).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(server = %auth.name, "not importing mcp-remote's login: {e}");
                    return false;
                }
            };
        let issuer = &discovered.metadata.issuer;
        for recorded in [&found.tokens.issuer, &found.client.issuer]
            .into_iter()
            .flatten()
        {
            if recorded.trim_end_matches('/') != issuer.trim_end_matches('/') {
                tracing::warn!(
                    server = %auth.name,
                    "not importing mcp-remote's login from {}: it was issued by {recorded}, not {issuer}",
                    found.tokens_path.display()
                );
                return false;
            }
        }
        let secret = found.client.client_secret.clone().map(SecretString::from);
        let client = Client {
            kind: ClientKind::Dynamic,
            issuer: issuer.clone(),
            auth: AuthMethod::from_name(
                found.client.token_endpoint_auth_method.as_deref(),
                secret.is_some(),
            ),
            id: found.client.client_id.clone(),
            secret,
            redirect_uri: found.client.redirect_uris.first().cloned(),
            scope: found.client.scope.clone(),
        };
        let grant = Grant {
            access: SecretString::from(found.tokens.access_token.clone()),
            refresh: found.tokens.refresh_token.clone().map(SecretString::from),
            expires_at: found.expires_at(),
            scopes: found
                .tokens
                .scope
                .as_deref()
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            server_url: target.url.to_string(),
            resource: discovered.resource.clone(),
            token_endpoint: discovered.metadata.token_endpoint.clone(),
            revocation_endpoint: discovered.metadata.revocation_endpoint.clone(),
            client,
        };
        if grant.expired(self.clock.unix()) && grant.refresh.is_none() {
            tracing::info!(
                server = %auth.name,
                "mcp-remote's login in {} has expired and cannot be renewed; not imported",
                found.tokens_path.display()
            );
            return false;
        }
        auth.set_grant(Some(grant));
        drop(flight);
        self.persist(auth);
        tracing::info!(
            server = %auth.name,
            "imported the login made with mcp-remote ({}); run `mcpctl login {}` to replace it",
            found.tokens_path.display(),
            auth.name
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn hashes_are_the_md5_of_the_url() {
        let url = Url::parse("https://mcp.example/mcp").unwrap();
        // echo -n https://mcp.example/mcp | md5sum
        assert_eq!(url_hashes(&url), ["15b9982bbc0f6c97e59b3c224d8cad5a"]);
        let bare = Url::parse("https://mcp.example").unwrap();
        let hashes = url_hashes(&bare);
        assert_eq!(hashes.len(), 2);
        assert_ne!(hashes[0], hashes[1]);
    }

    fn write(path: &Path, text: &str, mode: u32) {
        fs::write(path, text).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn only_the_files_of_that_url_are_read() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("mcp-remote-v1");
        fs::create_dir(&dir).unwrap();
        let a = Url::parse("https://a.example/mcp").unwrap();
        let b = Url::parse("https://b.example/mcp").unwrap();
        let (ha, hb) = (&url_hashes(&a)[0], &url_hashes(&b)[0]);
        write(
            &dir.join(format!("{hb}_tokens.json")),
            r#"{"access_token":"tok-b","token_type":"Bearer"}"#,
            0o600,
        );
        write(
            &dir.join(format!("{hb}_client_info.json")),
            r#"{"client_id":"client-b"}"#,
            0o600,
        );
        assert!(find(base.path(), &a).unwrap().is_none());
        write(
            &dir.join(format!("{ha}_tokens.json")),
            r#"{"access_token":"tok-a","token_type":"Bearer","refresh_token":"r","expires_at":2000000000000,"scope":"x y"}"#,
            0o644,
        );
        // Without the client information the tokens cannot be used.
        let Err(e) = find(base.path(), &a) else {
            panic!("tokens without client information were used")
        };
        assert!(matches!(e, ImportError::NoClient { .. }));
        assert_eq!(
            e.to_string(),
            format!(
                "{} has no {ha}_client_info.json beside it (the client the tokens were issued to)",
                dir.join(format!("{ha}_tokens.json")).display()
            )
        );
        write(
            &dir.join(format!("{ha}_client_info.json")),
            r#"{"client_id":"client-a","redirect_uris":["http://localhost:3334/oauth/callback"]}"#,
            0o600,
        );
        let found = find(base.path(), &a).unwrap().unwrap();
        assert_eq!(found.tokens.access_token, "tok-a");
        assert_eq!(found.client.client_id, "client-a");
        assert_eq!(found.expires_at(), Some(2_000_000_000));
        // Writable by others: refused.
        fs::set_permissions(
            dir.join(format!("{ha}_tokens.json")),
            fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        assert!(matches!(
            find(base.path(), &a),
            Err(ImportError::Unsafe { .. })
        ));
    }
}
