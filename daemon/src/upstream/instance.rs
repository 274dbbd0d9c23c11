//! Which instance of a server an upstream actor is: the key the supervisor files it under and
//! the router counts its subscriptions under.

use std::borrow::Borrow;
use std::cmp::Ordering;
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

/// An [`InstanceKey`] borrowed from names at hand: a lookup in a map of instances without
/// building the key (two `String`s per call before, on every routed request:
/// docs/BENCHMARKS.md "Hot path, session 5"). Ordered and compared as the key it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyRef<'a> {
    /// The server's name in `mcpServers`.
    pub server: &'a str,
    /// Whose instance it is.
    pub scope: ScopeRef<'a>,
}

/// A [`Scope`], borrowed; its variants in the same order (so that the orders agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ScopeRef<'a> {
    /// [`Scope::Shared`].
    Shared,
    /// [`Scope::Session`].
    Session(u64),
    /// [`Scope::Profile`].
    Profile(&'a str),
}

impl KeyRef<'_> {
    /// The owned key.
    pub fn to_key(&self) -> InstanceKey {
        InstanceKey {
            server: self.server.to_owned(),
            scope: match self.scope {
                ScopeRef::Shared => Scope::Shared,
                ScopeRef::Session(id) => Scope::Session(id),
                ScopeRef::Profile(p) => Scope::Profile(p.to_owned()),
            },
        }
    }
}

/// What a map of instances is looked up by: an owned key or a borrowed one, alike.
pub trait AsKeyRef {
    /// The key, borrowed.
    fn key_ref(&self) -> KeyRef<'_>;
}

impl AsKeyRef for InstanceKey {
    fn key_ref(&self) -> KeyRef<'_> {
        KeyRef {
            server: &self.server,
            scope: match &self.scope {
                Scope::Shared => ScopeRef::Shared,
                Scope::Session(id) => ScopeRef::Session(*id),
                Scope::Profile(p) => ScopeRef::Profile(p),
            },
        }
    }
}

impl AsKeyRef for KeyRef<'_> {
    fn key_ref(&self) -> KeyRef<'_> {
        *self
    }
}

impl<'a> Borrow<dyn AsKeyRef + 'a> for InstanceKey {
    fn borrow(&self) -> &(dyn AsKeyRef + 'a) {
        self
    }
}

impl PartialEq for dyn AsKeyRef + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key_ref() == other.key_ref()
    }
}

impl Eq for dyn AsKeyRef + '_ {}

impl PartialOrd for dyn AsKeyRef + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn AsKeyRef + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key_ref().cmp(&other.key_ref())
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

    #[test]
    fn a_borrowed_key_finds_the_instance_its_owned_key_files() {
        use std::collections::BTreeMap;
        let keys = [
            InstanceKey::shared("a"),
            InstanceKey::session("a", 1),
            InstanceKey::session("a", 2),
            InstanceKey::profile("a", "p"),
            InstanceKey::shared("a#1"),
            InstanceKey::profile("b", "p"),
        ];
        let map: BTreeMap<InstanceKey, usize> = keys
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, k)| (k, i))
            .collect();
        for (i, key) in keys.iter().enumerate() {
            let borrowed = key.key_ref();
            assert_eq!(borrowed.to_key(), *key);
            assert_eq!(map.get(&borrowed as &dyn AsKeyRef), Some(&i), "{key}");
        }
        for (a, b) in keys.iter().zip(keys.iter().skip(1)) {
            assert_eq!(a.cmp(b), a.key_ref().cmp(&b.key_ref()), "{a} {b}");
        }
        let missing = KeyRef {
            server: "a",
            scope: ScopeRef::Profile("q"),
        };
        assert_eq!(map.get(&missing as &dyn AsKeyRef), None);
    }
}
