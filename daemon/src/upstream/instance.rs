//! Which instance of a server an upstream actor is: the key the supervisor files it under and
//! the router counts its subscriptions under.

use std::fmt;

/// One instance of a configured server. A typed key, so that no server name (`a#1`, `b@x`)
/// reads as another server's per-client or per-profile instance.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceKey {
    /// The server's name in `mcpServers`.
    pub server: String,
    /// Whose instance it is.
    pub scope: Scope,
}

/// Whose instance of a server it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// The one every session shares.
    Shared,
    /// A session's own (`"share": "per-client"`).
    Session(u64),
    /// A profile's own (`"share": "per-profile"`, or secrets with values of the profile's own).
    Profile(String),
}

impl InstanceKey {
    /// The shared instance of `server`.
    pub fn shared(server: &str) -> Self {
        Self {
            server: server.to_owned(),
            scope: Scope::Shared,
        }
    }

    /// `session`'s own instance of `server`.
    pub fn session(server: &str, session: u64) -> Self {
        Self {
            server: server.to_owned(),
            scope: Scope::Session(session),
        }
    }

    /// `profile`'s own instance of `server`.
    pub fn profile(server: &str, profile: &str) -> Self {
        Self {
            server: server.to_owned(),
            scope: Scope::Profile(profile.to_owned()),
        }
    }

    /// The session a per-client instance belongs to.
    pub fn owner(&self) -> Option<u64> {
        match self.scope {
            Scope::Session(id) => Some(id),
            _ => None,
        }
    }
}

/// How `mcpctl status` names it: `server`, `server#session`, `server@profile`.
impl fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scope {
            Scope::Shared => write!(f, "{}", self.server),
            Scope::Session(id) => write!(f, "{}#{id}", self.server),
            Scope::Profile(profile) => write!(f, "{}@{profile}", self.server),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_named_like_an_instance_is_another_key() {
        assert_ne!(InstanceKey::shared("a#1"), InstanceKey::session("a", 1));
        assert_ne!(InstanceKey::shared("a@p"), InstanceKey::profile("a", "p"));
        // Only the display (status) spells them alike.
        assert_eq!(InstanceKey::session("a", 1).to_string(), "a#1");
    }
}
