//! The secret store: API keys and tokens that server definitions reference as
//! `${secret:NAME}`, each with a default value and values per profile.
//!
//! - At rest: one entry, `secrets`, of the credential store ([`crate::auth::store::Store`]):
//!   the same directory (`$XDG_STATE_HOME/mcpd/credentials/`), the same key (Secret Service
//!   keyring or key file, per `credentialStore`), ChaCha20-Poly1305, atomic 0600 writes. With
//!   `credentialStore: "memory"` (or a store that could not be opened) values live in memory
//!   for the daemon's life only.
//! - In memory: [`SecretString`]s, zeroized when dropped; the serialised form is a
//!   [`Zeroizing`] buffer sized up front (no reallocation leaves a copy behind).
//! - Every value is known to the [`Redactor`] (source `secrets`), named after the secret.
//! - Values come in over the control socket (`mcpctl secret set`) and never go out: `list`
//!   gives names, profiles, times and the servers that use each.

pub use mcpd_config::secrets::MAX_VALUE;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::auth::store::{Store, StoreError};
use crate::config::secret_refs::is_secret_name;
use crate::redact::Redactor;

/// Why a secret could not be set or removed; each says what to do. `Display` is the whole
/// message `mcpctl secret` shows.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Not a name a `${secret:NAME}` reference can have.
    #[error(
        "`{0}` is not a secret name: use letters, digits, `_`, `-` and `.`, starting with a letter or `_`"
    )]
    BadName(String),
    /// An empty, overlong or unprintable profile name.
    #[error("the profile name must be 1 to 128 printable characters")]
    BadProfile,
    /// `secret set` with nothing.
    #[error("the value is empty; `mcpctl secret rm` forgets a secret")]
    Empty,
    /// Larger than [`MAX_VALUE`].
    #[error("the value is longer than {} KiB", MAX_VALUE / 1024)]
    TooLong,
    /// `secret rm` of a name (for a profile) that has no value.
    #[error("no secret {name}{} is stored", .profile.as_deref().map(|p| format!(" for profile {p}")).unwrap_or_default())]
    NotStored {
        /// The secret.
        name: String,
        /// The profile, when one was given.
        profile: Option<String>,
    },
    /// The stored secrets did not open at start: they are kept, never overwritten.
    #[error(
        "{why}; not overwriting them (move {ENTRY} out of the credential directory to start afresh)"
    )]
    NotOverwriting {
        /// Why they did not open.
        why: String,
    },
    /// The values could not be serialised.
    #[error("cannot encode the secrets: {0}")]
    Encode(#[source] serde_json::Error),
    /// The credential store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The store entry that holds every secret.
pub const ENTRY: &str = "secrets";

/// One stored value.
struct Stored {
    value: SecretString,
    set_at: u64,
}

/// Name → profile (`None`: the default) → value.
type Values = BTreeMap<String, BTreeMap<Option<String>, Stored>>;

/// A stored value's profile (`None`: the default) and when it was set (Unix seconds).
pub type ValueInfo = (Option<String>, u64);

/// The daemon's secrets.
pub struct SecretStore {
    store: Arc<Store>,
    /// A std mutex: held for map operations and the (synchronous) store write, never across
    /// an `.await`.
    values: Mutex<Values>,
    /// Why the stored secrets could not be read; writing is refused then (it would replace
    /// the unreadable entry and lose what is in it).
    load_error: Option<String>,
    redactor: Redactor,
}

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretStore")
            .field("names", &self.lock().keys().collect::<Vec<_>>())
            .field("load_error", &self.load_error)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct StoredFile {
    v: u32,
    secrets: Vec<StoredSecret>,
}

#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct StoredSecret {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    profile: Option<String>,
    value: String,
    set_at: u64,
}

#[derive(Serialize)]
struct StoredFileRef<'a> {
    v: u32,
    secrets: Vec<StoredSecretRef<'a>>,
}

#[derive(Serialize)]
struct StoredSecretRef<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<&'a str>,
    value: &'a str,
    set_at: u64,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Checks a secret name and profile given over the control socket.
pub fn check_name(name: &str, profile: Option<&str>) -> Result<(), SecretError> {
    if !is_secret_name(name) {
        return Err(SecretError::BadName(name.to_owned()));
    }
    if let Some(p) = profile
        && (p.is_empty() || p.len() > 128 || p.chars().any(char::is_control))
    {
        return Err(SecretError::BadProfile);
    }
    Ok(())
}

impl SecretStore {
    /// Loads the stored secrets from `store`. A stored entry that does not open is logged and
    /// remembered: the daemon runs without those secrets and refuses to overwrite them.
    pub fn open(store: Arc<Store>, redactor: Redactor) -> Self {
        let (values, load_error) = match store.read(ENTRY) {
            Ok(None) => (Values::new(), None),
            Ok(Some(bytes)) => match serde_json::from_slice::<StoredFile>(&bytes) {
                Ok(mut file) => {
                    let mut values = Values::new();
                    for s in &mut file.secrets {
                        values
                            .entry(std::mem::take(&mut s.name))
                            .or_default()
                            .insert(
                                s.profile.take(),
                                Stored {
                                    value: SecretString::from(std::mem::take(&mut s.value)),
                                    set_at: s.set_at,
                                },
                            );
                    }
                    (values, None)
                }
                Err(e) => (
                    Values::new(),
                    Some(format!("the stored secrets are damaged: {e}")),
                ),
            },
            Err(e) => (Values::new(), Some(e.to_string())),
        };
        if let Some(e) = &load_error {
            tracing::error!("{e}; servers that use secrets wait in secret-missing");
        }
        let secrets = Self {
            store,
            values: Mutex::new(values),
            load_error,
            redactor,
        };
        secrets.publish(&secrets.lock());
        secrets
    }

    /// A store of its own in memory.
    #[cfg(test)]
    pub fn memory(redactor: Redactor) -> Self {
        Self::open(Arc::new(Store::memory()), redactor)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Values> {
        self.values.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the redactor every value.
    fn publish(&self, values: &Values) {
        let known = values
            .iter()
            .flat_map(|(name, by_profile)| {
                by_profile
                    .values()
                    .map(move |s| (name.clone(), s.value.clone()))
            })
            .collect();
        self.redactor.set("secrets", known);
    }

    /// Writes every value to the store.
    fn persist(&self, values: &Values) -> Result<(), SecretError> {
        if let Some(why) = &self.load_error {
            return Err(SecretError::NotOverwriting { why: why.clone() });
        }
        let secrets: Vec<StoredSecretRef<'_>> = values
            .iter()
            .flat_map(|(name, by_profile)| {
                by_profile.iter().map(move |(profile, s)| StoredSecretRef {
                    name,
                    profile: profile.as_deref(),
                    value: s.value.expose_secret(),
                    set_at: s.set_at,
                })
            })
            .collect();
        // JSON escaping at most sextuples a byte (`\u0000`): sized so the buffer never grows.
        let size = 64
            + secrets
                .iter()
                .map(|s| 96 + 6 * (s.name.len() + s.value.len() + s.profile.map_or(0, str::len)))
                .sum::<usize>();
        let mut bytes = Zeroizing::new(Vec::with_capacity(size));
        serde_json::to_writer(&mut *bytes, &StoredFileRef { v: 1, secrets })
            .map_err(SecretError::Encode)?;
        Ok(self.store.write(ENTRY, &bytes)?)
    }

    /// Stores `value` as `name` (for `profile`, or the default). Returns whether the value
    /// changed.
    pub fn set(
        &self,
        name: &str,
        profile: Option<&str>,
        value: SecretString,
    ) -> Result<bool, SecretError> {
        check_name(name, profile)?;
        if value.expose_secret().is_empty() {
            return Err(SecretError::Empty);
        }
        if value.expose_secret().len() > MAX_VALUE {
            return Err(SecretError::TooLong);
        }
        let mut values = self.lock();
        let by_profile = values.entry(name.to_owned()).or_default();
        let key = profile.map(str::to_owned);
        let changed = by_profile
            .get(&key)
            .is_none_or(|old| old.value.expose_secret() != value.expose_secret());
        let previous = by_profile.insert(
            key.clone(),
            Stored {
                value,
                set_at: now(),
            },
        );
        if let Err(e) = self.persist(&values) {
            // Put things back as they were: memory and disk agree.
            let by_profile = values.entry(name.to_owned()).or_default();
            match previous {
                Some(old) => {
                    by_profile.insert(key, old);
                }
                None => {
                    by_profile.remove(&key);
                    if by_profile.is_empty() {
                        values.remove(name);
                    }
                }
            }
            return Err(e);
        }
        self.publish(&values);
        Ok(changed)
    }

    /// Forgets `name`'s value for `profile` (or the default). `Ok(false)`: there was none.
    pub fn remove(&self, name: &str, profile: Option<&str>) -> Result<bool, SecretError> {
        check_name(name, profile)?;
        let mut values = self.lock();
        let key = profile.map(str::to_owned);
        let Some(by_profile) = values.get_mut(name) else {
            return Ok(false);
        };
        let Some(old) = by_profile.remove(&key) else {
            return Ok(false);
        };
        if by_profile.is_empty() {
            values.remove(name);
        }
        if let Err(e) = self.persist(&values) {
            values.entry(name.to_owned()).or_default().insert(key, old);
            return Err(e);
        }
        self.publish(&values);
        Ok(true)
    }

    /// The value of `name` for `profile`: the profile's own, else the default.
    pub fn get(&self, name: &str, profile: Option<&str>) -> Option<SecretString> {
        let values = self.lock();
        let by_profile = values.get(name)?;
        profile
            .and_then(|p| by_profile.get(&Some(p.to_owned())))
            .or_else(|| by_profile.get(&None))
            .map(|s| s.value.clone())
    }

    /// Whether `profile` has a value of its own for any of `names`.
    pub fn has_profile_values<'a>(
        &self,
        names: impl IntoIterator<Item = &'a String>,
        profile: &str,
    ) -> bool {
        let values = self.lock();
        let key = Some(profile.to_owned());
        names
            .into_iter()
            .any(|n| values.get(n).is_some_and(|p| p.contains_key(&key)))
    }

    /// Names with, for each, the profiles that have a value (`None`: default) and when set.
    pub fn list(&self) -> Vec<(String, Vec<ValueInfo>)> {
        self.lock()
            .iter()
            .map(|(name, by_profile)| {
                (
                    name.clone(),
                    by_profile
                        .iter()
                        .map(|(p, s)| (p.clone(), s.set_at))
                        .collect(),
                )
            })
            .collect()
    }

    /// Whether values are written to disk (not with `credentialStore: "memory"` or a store
    /// that could not be opened).
    pub fn persistent(&self) -> bool {
        self.store.kind() != crate::auth::store::CredentialStore::Memory
    }

    /// Why the stored secrets could not be read, if they could not.
    #[cfg(test)]
    pub fn load_error(&self) -> Option<&str> {
        self.load_error.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::store::CredentialStore;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn values_persist_encrypted_per_profile_and_are_redacted() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("credentials");
        let redactor = Redactor::new();
        let store = Arc::new(Store::open(CredentialStore::File, &dir).unwrap());
        let secrets = SecretStore::open(Arc::clone(&store), redactor.clone());
        assert!(
            secrets
                .set("GH", None, secret("ghp_default_value_1"))
                .unwrap()
        );
        assert!(
            secrets
                .set("GH", Some("work"), secret("ghp_work_value_2"))
                .unwrap()
        );
        assert!(
            !secrets
                .set("GH", None, secret("ghp_default_value_1"))
                .unwrap()
        );
        assert_eq!(
            redactor.redact("a ghp_work_value_2 b ghp_default_value_1"),
            "a [redacted:GH] b [redacted:GH]"
        );
        let raw = std::fs::read(dir.join(ENTRY)).unwrap();
        assert!(!raw.windows(5).any(|w| w == b"ghp_w" || w == b"ghp_d"));

        let again = SecretStore::open(
            Arc::new(Store::open(CredentialStore::File, &dir).unwrap()),
            Redactor::new(),
        );
        let get = |p| again.get("GH", p).map(|v| v.expose_secret().to_owned());
        assert_eq!(get(None).as_deref(), Some("ghp_default_value_1"));
        assert_eq!(get(Some("work")).as_deref(), Some("ghp_work_value_2"));
        assert_eq!(get(Some("home")).as_deref(), Some("ghp_default_value_1"));
        assert!(again.has_profile_values(&["GH".to_owned()], "work"));
        assert!(!again.has_profile_values(&["GH".to_owned()], "home"));
        assert!(again.remove("GH", Some("work")).unwrap());
        assert!(!again.remove("GH", Some("work")).unwrap());
        assert_eq!(
            again.list(),
            vec![("GH".to_owned(), vec![(None, again.list()[0].1[0].1)])]
        );
    }

    #[test]
    fn bad_names_and_empty_values_are_refused() {
        let secrets = SecretStore::memory(Redactor::new());
        let e = secrets.set("1X", None, secret("value")).unwrap_err();
        assert!(matches!(&e, SecretError::BadName(n) if n == "1X"), "{e:?}");
        assert!(e.to_string().contains("not a secret name"));
        let e = secrets.set("X", None, secret("")).unwrap_err();
        assert!(matches!(e, SecretError::Empty), "{e:?}");
        assert!(e.to_string().contains("empty"));
        assert_eq!(secrets.remove("X", Some("work")).ok(), Some(false));
        let e = SecretError::NotStored {
            name: "X".into(),
            profile: Some("work".into()),
        };
        assert_eq!(e.to_string(), "no secret X for profile work is stored");
        assert!(secrets.get("X", None).is_none());
        assert!(!secrets.persistent());
    }

    #[test]
    fn an_unreadable_entry_is_not_overwritten() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("credentials");
        let store = Store::open(CredentialStore::File, &dir).unwrap();
        store.write(ENTRY, b"not json").unwrap();
        let secrets = SecretStore::open(Arc::new(store), Redactor::new());
        assert!(secrets.load_error().is_some());
        let e = secrets.set("X", None, secret("value1")).unwrap_err();
        assert!(matches!(e, SecretError::NotOverwriting { .. }), "{e:?}");
        assert!(e.to_string().contains("not overwriting"), "{e}");
        assert!(secrets.get("X", None).is_none());
    }
}
