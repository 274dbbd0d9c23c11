//! The credential key in the Secret Service keyring (`org.freedesktop.secrets` on the session
//! bus: GNOME Keyring, KWallet 6, KeePassXC, ...).
//!
//! Only the 256-bit key that seals the files of `credentials/` is kept there, as one item with
//! the attributes `application=mcpd` and `mcpd-credentials=<the credential directory>` (so
//! two state directories of one user have two keys). The tokens stay in the encrypted files.
//!
//! The client is `secret-service` over `zbus` (pure Rust; the session is encrypted with the
//! service's Diffie-Hellman exchange) on a current-thread tokio runtime in a thread of its own:
//! [`crate::auth::store::Store::open`] is synchronous and runs once at start, and a keyring that
//! waits for an unlock prompt must not hold up anything else for longer than [`TIMEOUT`].

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use secret_service::{EncryptionType, SecretService};
use zeroize::Zeroizing;

/// How long the keyring may take (connecting, an unlock prompt, reading or creating the key).
pub const TIMEOUT: Duration = Duration::from_secs(20);

const SECRETS_NAME: &str = "org.freedesktop.secrets";

/// Why the keyring gave no key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyringError {
    /// No session bus, or no Secret Service on it: `auto` uses the key file.
    Absent(String),
    /// There is a Secret Service but it failed (locked and the prompt dismissed, a timeout,
    /// a broken reply).
    Failed(String),
}

impl std::fmt::Display for KeyringError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Absent(m) | Self::Failed(m) => f.write_str(m),
        }
    }
}

/// What the keyring gave.
#[derive(Debug)]
pub struct KeyringKey {
    /// The key.
    pub key: Zeroizing<[u8; 32]>,
    /// Whether it was created now (no item existed).
    pub created: bool,
}

/// Whether a session bus address is known at all (`DBUS_SESSION_BUS_ADDRESS`, else the
/// systemd-style `$XDG_RUNTIME_DIR/bus`), without connecting.
pub fn session_bus_known() -> bool {
    if let Some(addr) = std::env::var_os("DBUS_SESSION_BUS_ADDRESS") {
        return !addr.is_empty();
    }
    std::env::var_os("XDG_RUNTIME_DIR")
        .is_some_and(|dir| !dir.is_empty() && Path::new(&dir).join("bus").exists())
}

/// Reads the key for `dir` from the keyring; when there is none, stores `initial` (a key to
/// carry over, e.g. from an old key file) or a new random key. Blocks for at most [`TIMEOUT`].
pub fn load_or_create(
    dir: &Path,
    initial: Option<Zeroizing<[u8; 32]>>,
) -> Result<KeyringKey, KeyringError> {
    if !session_bus_known() {
        return Err(KeyringError::Absent("no session bus".into()));
    }
    let dir = dir.display().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("mcpd-keyring".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| KeyringError::Failed(format!("cannot start the keyring client: {e}")))
                .and_then(|rt| {
                    rt.block_on(async {
                        tokio::time::timeout(TIMEOUT, load_or_create_async(&dir, initial))
                            .await
                            .unwrap_or_else(|_| {
                                Err(KeyringError::Failed(format!(
                                    "the Secret Service did not answer within {} s (locked, waiting for an unlock prompt?)",
                                    TIMEOUT.as_secs()
                                )))
                            })
                    })
                });
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        return Err(KeyringError::Failed(format!(
            "cannot start the keyring client: {e}"
        )));
    }
    // The thread's own timeout ends it; this one only guards against a runtime that hangs.
    rx.recv_timeout(TIMEOUT + Duration::from_secs(5))
        .unwrap_or_else(|_| {
            Err(KeyringError::Failed(
                "the Secret Service client did not finish".into(),
            ))
        })
}

fn failed(what: &str) -> impl FnOnce(secret_service::Error) -> KeyringError + '_ {
    move |e| KeyringError::Failed(format!("Secret Service: cannot {what}: {e}"))
}

async fn load_or_create_async(
    dir: &str,
    initial: Option<Zeroizing<[u8; 32]>>,
) -> Result<KeyringKey, KeyringError> {
    let conn = zbus::Connection::session()
        .await
        .map_err(|e| KeyringError::Absent(format!("no session bus ({e})")))?;
    let bus = zbus::fdo::DBusProxy::new(&conn)
        .await
        .map_err(|e| KeyringError::Absent(format!("no usable session bus ({e})")))?;
    let name = zbus::names::BusName::try_from(SECRETS_NAME)
        .map_err(|e| KeyringError::Failed(e.to_string()))?;
    let owned = bus.name_has_owner(name).await.unwrap_or(false);
    if !owned {
        let activatable = bus
            .list_activatable_names()
            .await
            .map(|names| names.iter().any(|n| n.as_str() == SECRETS_NAME))
            .unwrap_or(false);
        if !activatable {
            return Err(KeyringError::Absent(
                "no Secret Service on the session bus".into(),
            ));
        }
    }
    let ss = SecretService::connect_with_existing(EncryptionType::Dh, conn)
        .await
        .map_err(|e| match e {
            secret_service::Error::Unavailable => {
                KeyringError::Absent("no Secret Service on the session bus".into())
            }
            e => KeyringError::Failed(format!("Secret Service: cannot open a session: {e}")),
        })?;
    let attributes = HashMap::from([("application", "mcpd"), ("mcpd-credentials", dir)]);
    let found = ss
        .search_items(attributes.clone())
        .await
        .map_err(failed("search the keyring"))?;
    if let Some(item) = found.unlocked.first().or(found.locked.first()) {
        item.ensure_unlocked()
            .await
            .map_err(failed("unlock the keyring"))?;
        let secret = Zeroizing::new(
            item.get_secret()
                .await
                .map_err(failed("read the credential key"))?,
        );
        let key: [u8; 32] = secret.as_slice().try_into().map_err(|_| {
            KeyringError::Failed(format!(
                "the keyring item \"mcpd credential key\" for {dir} is not a 32-byte key; delete it to start afresh (stored logins are lost)"
            ))
        })?;
        return Ok(KeyringKey {
            key: Zeroizing::new(key),
            created: false,
        });
    }
    let key = match initial {
        Some(k) => k,
        None => {
            let mut key = Zeroizing::new([0u8; 32]);
            getrandom::fill(&mut *key)
                .map_err(|e| KeyringError::Failed(format!("no randomness from the system: {e}")))?;
            key
        }
    };
    let collection = ss
        .get_default_collection()
        .await
        .map_err(failed("find the default keyring"))?;
    collection
        .ensure_unlocked()
        .await
        .map_err(failed("unlock the default keyring"))?;
    collection
        .create_item(
            &format!("mcpd credential key ({dir})"),
            attributes,
            &*key,
            true,
            "application/octet-stream",
        )
        .await
        .map_err(failed("store the credential key"))?;
    Ok(KeyringKey { key, created: true })
}
