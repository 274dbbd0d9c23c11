//! Credentials at rest: `$XDG_STATE_HOME/mcpd/credentials/`, one encrypted file per entry.
//!
//! - The directory is 0700 and every file 0600; a directory or file found with looser modes is
//!   refused with a message saying what to do (nothing is read from it or written to it).
//! - Writes are atomic: a temporary file in the same directory, `fsync`, `rename`.
//! - Each file is `MCPD-CRED-1\n`, a random 96-bit nonce, and the ChaCha20-Poly1305 sealing
//!   of the entry's JSON with the file name as associated data (a file renamed to another
//!   entry's name does not open).
//! - The 256-bit key comes from the configured [`CredentialStore`]:
//!   - `keyring`: the Secret Service keyring ([`super::keyring`]); an error when there is none;
//!   - `auto`: the keyring when the session bus has a Secret Service, else the key file
//!     `credentials/key` (0600, created on first use). A keyring that is there but fails
//!     (locked and the unlock prompt dismissed, no answer) is not replaced by a new key file,
//!     which would leave the logins sealed under the keyring's key unreadable: the daemon keeps
//!     logins in memory for that run and says why;
//!   - `file`: the key file;
//!   - `memory`: nothing is written at all.
//!
//!   A key file found when the keyring is chosen and holds no key yet is moved into the
//!   keyring (and deleted), so switching to the keyring keeps the stored logins.
//!
//! What this protects against, honestly: tokens never appear in plaintext on disk, so backups,
//! `grep -r`, a synced home directory or a shared screenshot of a file do not leak them. With
//! the key file, the key sits next to the data, so a copy of the state directory (a backup)
//! opens. With the keyring, the key is in the user's keyring, encrypted with the login password
//! while it is locked, so a copy of the state directory alone is useless. Another process
//! running as the same user can read both the files and (while the keyring is unlocked) the
//! key; nothing in a user's own account protects against that user's processes.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use zeroize::Zeroizing;

use super::keyring::{self, KeyringError};
pub use crate::config::oauth::CredentialStore;

const MAGIC: &[u8] = b"MCPD-CRED-1\n";
const NONCE_LEN: usize = 12;
/// Larger entries are refused when read (a stored token set is a few KiB).
const MAX_ENTRY: u64 = 1 << 20;
const KEY_FILE: &str = "key";

/// Why the credential store could not be opened, or an entry read, written or removed. Each
/// says which file or directory and what to do; its `Display` is the whole message (the cause
/// included), and the cause is also its [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `credentialStore: "keyring"` and no Secret Service answers on the session bus.
    #[error(
        "credentialStore \"keyring\": {why}; start a Secret Service (e.g. gnome-keyring) in the session or use \"file\""
    )]
    NoKeyring {
        /// What the keyring lookup found.
        why: String,
    },
    /// The keyring is there but failed (locked and the prompt dismissed, no answer).
    #[error(
        "credentialStore \"{store}\": {why}; stored logins are not touched (set \"credentialStore\": \"file\" if the keyring stays unusable)"
    )]
    KeyringFailed {
        /// The configured store (`keyring` or `auto`).
        store: &'static str,
        /// What failed.
        why: String,
    },
    /// The credential directory's path is something else.
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// The directory or a file may be read by other users: nothing is read from or written to
    /// it until the user fixes its mode.
    #[error("{} has mode {mode:o}, open to other users; {fix}", path.display())]
    OpenToOthers {
        /// The directory or file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// What to do (`credentials are not used until you `chmod 700` it`).
        fix: &'static str,
    },
    /// A file system operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// `read`, `create`, `write`, ...
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The key file is there and is not a key.
    #[error(
        "{} is not a 32-byte key; move it away to start afresh (stored logins are lost)",
        .0.display()
    )]
    BadKeyFile(PathBuf),
    /// No randomness for a nonce or a key.
    #[error("no randomness from the system: {0}")]
    Random(getrandom::Error),
    /// The AEAD refused to seal (does not happen with a valid key).
    #[error("cannot encrypt a credential entry")]
    Encrypt,
    /// The file does not start as a credential file does.
    #[error("{} is not an mcpd credential file", .0.display())]
    NotACredentialFile(PathBuf),
    /// Sealed with another key, or damaged.
    #[error(
        "{} does not open with the current key (written with another key, or damaged); it is ignored",
        .0.display()
    )]
    WrongKey(PathBuf),
    /// Larger than any entry mcpd writes.
    #[error("{} is too large to be a credential file", .0.display())]
    TooLarge(PathBuf),
}

impl StoreError {
    fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_owned();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}

/// The credential directory and the key that opens its files.
pub struct Store {
    kind: CredentialStore,
    /// What `mcpctl status` shows: the store and why it was chosen.
    description: String,
    /// `None`: memory only.
    disk: Option<Disk>,
}

struct Disk {
    dir: PathBuf,
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("kind", &self.kind)
            .field("description", &self.description)
            .field("dir", &self.disk.as_ref().map(|d| &d.dir))
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir` (`…/mcpd/credentials`). May wait up to
    /// [`super::keyring::TIMEOUT`] for the keyring.
    pub fn open(kind: CredentialStore, dir: &Path) -> Result<Self, StoreError> {
        let disk = |kind, description: String, key| Self {
            kind,
            description,
            disk: Some(Disk {
                dir: dir.to_owned(),
                key,
            }),
        };
        match kind {
            CredentialStore::Memory => Ok(Self::memory()),
            CredentialStore::File => {
                ensure_private_dir(dir)?;
                let key = load_or_create_key(&dir.join(KEY_FILE))?;
                Ok(disk(CredentialStore::File, "file".to_owned(), key))
            }
            CredentialStore::Keyring | CredentialStore::Auto => {
                ensure_private_dir(dir)?;
                match keyring_key(dir) {
                    Ok(key) => Ok(disk(
                        CredentialStore::Keyring,
                        "keyring (Secret Service)".to_owned(),
                        key,
                    )),
                    Err(KeyringError::Absent(why)) if kind == CredentialStore::Auto => {
                        let key = load_or_create_key(&dir.join(KEY_FILE))?;
                        Ok(disk(CredentialStore::File, format!("file ({why})"), key))
                    }
                    Err(KeyringError::Absent(why)) => Err(StoreError::NoKeyring { why }),
                    Err(KeyringError::Failed(why)) => Err(StoreError::KeyringFailed {
                        store: kind.as_str(),
                        why,
                    }),
                }
            }
        }
    }

    /// A store that keeps nothing.
    pub fn memory() -> Self {
        Self {
            kind: CredentialStore::Memory,
            description: "memory".to_owned(),
            disk: None,
        }
    }

    /// The store in use (`keyring`, `file` or `memory`; never `auto`).
    pub fn kind(&self) -> CredentialStore {
        self.kind
    }

    /// The store in use and why, as `mcpctl status` shows it: `keyring (Secret Service)`,
    /// `file (no Secret Service on the session bus)`, `file`, `memory`.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Seals and writes `plaintext` as entry `name` (a plain file name).
    pub fn write(&self, name: &str, plaintext: &[u8]) -> Result<(), StoreError> {
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        ensure_private_dir(&disk.dir)?;
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&*disk.key));
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(StoreError::Random)?;
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| StoreError::Encrypt)?;
        let mut bytes = Vec::with_capacity(MAGIC.len() + NONCE_LEN + sealed.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        write_atomic(&disk.dir.join(name), &bytes)
    }

    /// Reads and opens entry `name`; `Ok(None)` when there is none.
    pub fn read(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let Some(disk) = &self.disk else {
            return Ok(None);
        };
        let path = disk.dir.join(name);
        let Some(bytes) = read_private(&path)? else {
            return Ok(None);
        };
        let body = bytes
            .strip_prefix(MAGIC)
            .filter(|b| b.len() > NONCE_LEN)
            .ok_or_else(|| StoreError::NotACredentialFile(path.clone()))?;
        let (nonce, sealed) = body.split_at(NONCE_LEN);
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&*disk.key));
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: name.as_bytes(),
                },
            )
            .map(|plain| Some(Zeroizing::new(plain)))
            .map_err(|_| StoreError::WrongKey(path))
    }

    /// Removes entry `name` if it exists.
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        let path = disk.dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("remove", &path)(e)),
        }
    }
}

/// Creates `dir` with mode 0700, or checks that an existing one is not open to others.
pub fn ensure_private_dir(dir: &Path) -> Result<(), StoreError> {
    match fs::metadata(dir) {
        Ok(meta) => {
            if !meta.is_dir() {
                return Err(StoreError::NotADirectory(dir.to_owned()));
            }
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(StoreError::OpenToOthers {
                    path: dir.to_owned(),
                    mode,
                    fix: "credentials are not used until you `chmod 700` it",
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                fs::create_dir_all(parent).map_err(StoreError::io("create", parent))?;
            }
            fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(StoreError::io("create", dir))?;
            // The umask may have taken bits away, never added any; set it exactly anyway.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(StoreError::io("set the mode of", dir))
        }
        Err(e) => Err(StoreError::io("read", dir)(e)),
    }
}

/// The file's bytes, `None` when it does not exist; refused when others may read it.
fn read_private(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io("open", path)(e)),
    };
    let meta = file.metadata().map_err(StoreError::io("read", path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(StoreError::OpenToOthers {
            path: path.to_owned(),
            mode,
            fix: "it is not used until you `chmod 600` it",
        });
    }
    if meta.len() > MAX_ENTRY {
        return Err(StoreError::TooLarge(path.to_owned()));
    }
    let mut bytes = Zeroizing::new(Vec::new());
    file.read_to_end(&mut bytes)
        .map_err(StoreError::io("read", path))?;
    Ok(Some(bytes))
}

/// Writes `bytes` to `path` through a 0600 temporary file in the same directory and `rename`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().ok_or_else(|| StoreError::Io {
        action: "write",
        path: path.to_owned(),
        source: std::io::Error::other("the path has no directory"),
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(StoreError::io("write", path))
}

/// The key from the keyring; a key file left from `file`/`auto` without a keyring is moved
/// into the keyring when the keyring has no key yet.
fn keyring_key(dir: &Path) -> Result<Zeroizing<[u8; 32]>, KeyringError> {
    let key_file = dir.join(KEY_FILE);
    let old = match read_key_file(&key_file) {
        Ok(old) => old,
        Err(e) => {
            tracing::warn!("{e}");
            None
        }
    };
    let had_file = old.is_some();
    let got = keyring::load_or_create(dir, old)?;
    if had_file {
        if got.created {
            match fs::remove_file(&key_file) {
                Ok(()) => tracing::info!(
                    "moved the credential key from {} into the Secret Service keyring",
                    key_file.display()
                ),
                Err(e) => tracing::warn!(
                    "the credential key is now in the keyring, but {} could not be removed: {e}",
                    key_file.display()
                ),
            }
        } else {
            tracing::warn!(
                "{} is not used: the Secret Service keyring holds the credential key (remove the file)",
                key_file.display()
            );
        }
    } else if got.created {
        tracing::info!("created the credential key in the Secret Service keyring");
    }
    Ok(got.key)
}

fn read_key_file(path: &Path) -> Result<Option<Zeroizing<[u8; 32]>>, StoreError> {
    let Some(bytes) = read_private(path)? else {
        return Ok(None);
    };
    let key: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| StoreError::BadKeyFile(path.to_owned()))?;
    Ok(Some(Zeroizing::new(key)))
}

fn load_or_create_key(path: &Path) -> Result<Zeroizing<[u8; 32]>, StoreError> {
    if let Some(key) = read_key_file(path)? {
        return Ok(key);
    }
    let mut key = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut *key).map_err(StoreError::Random)?;
    write_atomic(path, &*key)?;
    tracing::info!("created the credential key file {}", path.display());
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn entries_round_trip_encrypted_with_private_modes() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("mcpd/credentials");
        let store = Store::open(CredentialStore::File, &dir).unwrap();
        assert_eq!(store.kind(), CredentialStore::File);
        assert_eq!(store.description(), "file");
        store.write("tokens-x", b"very secret token").unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("tokens-x")), 0o600);
        assert_eq!(mode(&dir.join("key")), 0o600);
        let raw = fs::read(dir.join("tokens-x")).unwrap();
        assert!(!raw.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            store.read("tokens-x").unwrap().unwrap().as_slice(),
            b"very secret token"
        );
        // A second opening uses the same key.
        let again = Store::open(CredentialStore::File, &dir).unwrap();
        assert_eq!(
            again.read("tokens-x").unwrap().unwrap().as_slice(),
            b"very secret token"
        );
        assert!(again.read("tokens-y").unwrap().is_none());
        // No temporary file is left behind.
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains("tmp")), "{names:?}");
    }

    #[test]
    fn a_renamed_or_altered_file_does_not_open() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("c");
        let store = Store::open(CredentialStore::File, &dir).unwrap();
        store.write("a", b"alpha").unwrap();
        fs::copy(dir.join("a"), dir.join("b")).unwrap();
        assert!(store.read("b").is_err());
        let mut raw = fs::read(dir.join("a")).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        write_atomic(&dir.join("a"), &raw).unwrap();
        assert!(store.read("a").is_err());
    }

    #[test]
    fn loose_modes_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("c");
        let store = Store::open(CredentialStore::File, &dir).unwrap();
        store.write("a", b"alpha").unwrap();
        fs::set_permissions(dir.join("a"), fs::Permissions::from_mode(0o644)).unwrap();
        let e = store.read("a").unwrap_err();
        assert!(
            matches!(&e, StoreError::OpenToOthers { path, mode: 0o644, .. } if *path == dir.join("a")),
            "{e:?}"
        );
        assert!(e.to_string().contains("chmod 600"), "{e}");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let e = Store::open(CredentialStore::File, &dir).unwrap_err();
        assert!(
            matches!(&e, StoreError::OpenToOthers { mode: 0o755, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("chmod 700"), "{e}");
    }

    #[test]
    fn memory_and_keyring() {
        let store = Store::memory();
        store.write("a", b"x").unwrap();
        assert!(store.read("a").unwrap().is_none());
        let root = tempfile::tempdir().unwrap();
        assert_eq!(store.description(), "memory");
        if !keyring::session_bus_known() {
            // Without a session bus: `keyring` is an error, `auto` the key file, saying why.
            let e = Store::open(CredentialStore::Keyring, &root.path().join("k")).unwrap_err();
            assert!(matches!(e, StoreError::NoKeyring { .. }), "{e:?}");
            assert!(e.to_string().contains("no session bus"), "{e}");
            let auto = Store::open(CredentialStore::Auto, &root.path().join("a")).unwrap();
            assert_eq!(auto.kind(), CredentialStore::File);
            assert_eq!(auto.description(), "file (no session bus)");
            assert_eq!(mode(&root.path().join("a/key")), 0o600);
        }
        assert!(
            Store::open(CredentialStore::Memory, &root.path().join("never"))
                .unwrap()
                .read("a")
                .unwrap()
                .is_none()
        );
        assert!(!root.path().join("never").exists());
    }

    /// A login stored by `"credentialStore": "file"` with the format of today
    /// (`tests/fixtures/formats/credentials/`) opens with this build's code.
    #[test]
    fn a_stored_login_of_format_1_opens() {
        use crate::auth::grant::{Grant, grant_entry};
        use secrecy::ExposeSecret;
        let fixtures = crate::router::cache::tests::fixture("credentials");
        let entry = grant_entry("remote");
        if std::env::var_os("MCPD_WRITE_FIXTURES").is_some() && !fixtures.join(KEY_FILE).exists() {
            let store = Store::open(CredentialStore::File, &fixtures).unwrap();
            let grant = br#"{"v":1,"access_token":"acc-fixture","refresh_token":"ref-fixture","expires_at":4102444800,"scopes":["read"],"server_url":"https://mcp.example/mcp","resource":"https://mcp.example/mcp","token_endpoint":"https://as.example/token","client":{"kind":"dynamic","issuer":"https://as.example","id":"cid","auth":"none","redirect_uri":"http://127.0.0.1:1/callback"}}"#;
            store.write(&entry, grant).unwrap();
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("credentials");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        for name in [KEY_FILE, entry.as_str()] {
            fs::copy(fixtures.join(name), dir.join(name)).unwrap();
            fs::set_permissions(dir.join(name), fs::Permissions::from_mode(0o600)).unwrap();
        }
        let store = Store::open(CredentialStore::File, &dir).unwrap();
        let plain = store.read(&entry).unwrap().expect("the login is there");
        let grant = Grant::from_plaintext(&plain).unwrap();
        assert_eq!(grant.access.expose_secret(), "acc-fixture");
        assert_eq!(grant.server_url, "https://mcp.example/mcp");
        assert_eq!(grant.expires_at, Some(4102444800));
        assert_eq!(grant.client.id, "cid");
    }
}
