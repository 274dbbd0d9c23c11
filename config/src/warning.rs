//! What reading a configuration warns about: the text the user reads, and a kind that
//! programs decide by (`mcpctl doctor` reports the file's mode itself and leaves that warning
//! out), so that nothing matches the wording.

use std::fmt;

/// What a [`Warning`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarningKind {
    /// The configuration file is readable by other users (it may hold secrets).
    FileReadable,
    /// A key mcpd does not know was ignored (perhaps misspelt: the message suggests one).
    UnknownKey,
    /// A server's `insecureSkipVerify` turns TLS certificate checks off.
    InsecureSkipVerify,
    /// A server is reached over plain `http://` on a host that is not loopback.
    PlainHttp,
}

/// A warning: the load went on, but the user should know. `Display` is the whole message
/// (it names the file and, where there is one, the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// What it is about.
    pub kind: WarningKind,
    /// The message.
    pub message: String,
}

impl Warning {
    /// A warning of `kind` saying `message`.
    pub fn new(kind: WarningKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<Warning> for String {
    fn from(w: Warning) -> Self {
        w.message
    }
}
