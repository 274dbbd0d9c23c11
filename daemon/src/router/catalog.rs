//! The merged catalog: every upstream's tools, prompts, resources and resource templates, rebuilt
//! whenever an upstream's state or lists change and published on a `watch` channel that sessions
//! follow.
//!
//! Tools and prompts get namespaced names (`server__tool`). Resources keep their URIs; when two
//! servers list the same URI, the first server in name order owns it (and a note is logged).
//! A URI that no server lists goes to the first server (in name order) with a template that
//! matches it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use mcpd_proto::ServerState;
use mcpd_proto::envelope::{Rewrite, field};
use serde_json::value::RawValue;

use super::names::{fnv1a, namespaced};
use crate::config::ServerSpec;
use crate::upstream::{ListKind, Snapshot, UpstreamCaps};

/// One item as clients see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Namespaced name (tools, prompts) or the URI / URI template as is.
    pub name: String,
    /// The server that owns it.
    pub server: String,
    /// Its name, URI or template on that server.
    pub original: String,
    /// The upstream's object with only a namespaced `name` rewritten.
    pub json: String,
}

/// What one server contributes besides its lists.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServerFacts {
    /// Its capabilities (live, or from the cache).
    pub caps: UpstreamCaps,
    /// Its `instructions`.
    pub instructions: Option<String>,
}

/// All items of all servers, in server-name order, each server's items in its own order.
#[derive(Debug, Default)]
pub struct Catalog {
    lists: [Vec<Entry>; 4],
    by_name: [HashMap<String, usize>; 4],
    /// Servers whose lists are not known yet (still starting, no cache).
    pub pending: BTreeSet<String>,
    /// Per server: capabilities and instructions.
    pub servers: BTreeMap<String, ServerFacts>,
}

impl Catalog {
    /// Builds the catalog from the upstreams' current snapshots.
    pub fn build(servers: &BTreeMap<String, (ServerSpec, Snapshot)>, separator: &str) -> Self {
        let mut catalog = Self::default();
        for (server, (_, snapshot)) in servers {
            // Worth waiting for: a server on its way up that has never listed anything. One
            // that failed, is crash-looping, stopped or idle will not list soon.
            let coming = matches!(snapshot.state, ServerState::Starting | ServerState::Ready);
            if coming && !snapshot.cached && !snapshot.known.iter().all(|k| *k) {
                catalog.pending.insert(server.clone());
            }
            catalog.servers.insert(
                server.clone(),
                ServerFacts {
                    caps: snapshot.caps,
                    instructions: snapshot.instructions.clone(),
                },
            );
            for kind in ListKind::ALL {
                for item in snapshot.lists[kind.index()].iter() {
                    catalog.add(kind, server, separator, &item.key, &item.raw);
                }
            }
        }
        catalog
    }

    fn add(&mut self, kind: ListKind, server: &str, separator: &str, key: &str, raw: &RawValue) {
        let namespaced_kind = matches!(kind, ListKind::Tools | ListKind::Prompts);
        let name = if namespaced_kind {
            namespaced(server, separator, key)
        } else {
            key.to_owned()
        };
        let i = kind.index();
        if let Some(&existing) = self.by_name[i].get(&name) {
            let owner = &self.lists[i][existing].server;
            tracing::debug!(
                server,
                "`{name}` is also offered by `{owner}`, which keeps it"
            );
            return;
        }
        let json = if namespaced_kind {
            match rename(raw, &name) {
                Some(json) => json,
                None => return,
            }
        } else {
            raw.get().to_owned()
        };
        self.by_name[i].insert(name.clone(), self.lists[i].len());
        self.lists[i].push(Entry {
            name,
            server: server.to_owned(),
            original: key.to_owned(),
            json,
        });
    }

    /// Looks an item up by its namespaced name or URI.
    pub fn get(&self, kind: ListKind, name: &str) -> Option<&Entry> {
        let i = kind.index();
        self.by_name[i].get(name).map(|&at| &self.lists[i][at])
    }

    /// The server that owns `uri`: the one listing it, else the first whose template matches.
    pub fn resource_owner<'a>(&'a self, uri: &str, servers: &'a [String]) -> Option<&'a str> {
        if let Some(entry) = self
            .get(ListKind::Resources, uri)
            .filter(|e| servers.contains(&e.server))
        {
            return Some(&entry.server);
        }
        self.view(ListKind::Templates, servers)
            .find(|t| template_matches(&t.original, uri))
            .map(|t| t.server.as_str())
    }

    /// Whether the catalog says the same as `other` to every client.
    pub fn same_as(&self, other: &Self) -> bool {
        self.pending == other.pending && self.lists == other.lists && self.servers == other.servers
    }

    /// The items of one kind of the given servers.
    pub fn view<'a>(
        &'a self,
        kind: ListKind,
        servers: &'a [String],
    ) -> impl Iterator<Item = &'a Entry> + 'a {
        self.lists[kind.index()]
            .iter()
            .filter(move |t| servers.contains(&t.server))
    }

    /// A fingerprint of one kind of list for the given servers: when it changes, clients of
    /// that view are told `list_changed`.
    pub fn fingerprint(&self, kind: ListKind, servers: &[String]) -> u64 {
        let mut h = 0u64;
        for entry in self.view(kind, servers) {
            h = h.rotate_left(5) ^ fnv1a(entry.json.as_bytes());
        }
        h
    }

    /// The union of the capabilities of the given servers.
    pub fn caps(&self, servers: &[String]) -> UpstreamCaps {
        let mut all = UpstreamCaps::default();
        for facts in servers.iter().filter_map(|s| self.servers.get(s)) {
            let c = facts.caps;
            all.tools |= c.tools;
            all.prompts |= c.prompts;
            all.resources |= c.resources;
            all.subscribe |= c.subscribe;
            all.logging |= c.logging;
            all.completions |= c.completions;
        }
        all
    }

    /// Every server's instructions, each under its name.
    pub fn instructions(&self, servers: &[String]) -> Option<String> {
        let parts: Vec<String> = servers
            .iter()
            .filter_map(|s| {
                let text = self.servers.get(s)?.instructions.as_deref()?.trim();
                (!text.is_empty()).then(|| format!("## {s}\n{text}"))
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join("\n\n"))
    }
}

/// Whether `uri` matches an RFC 6570 level-1 template: literal parts in order, each `{var}`
/// standing for one or more characters.
pub fn template_matches(template: &str, uri: &str) -> bool {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            return false;
        };
        parts.push(&rest[..open]);
        rest = &rest[open + close + 1..];
    }
    parts.push(rest);
    let Some((first, others)) = parts.split_first() else {
        return false;
    };
    let Some(mut remaining) = uri.strip_prefix(first) else {
        return false;
    };
    let (last, middle) = match others.split_last() {
        Some(split) => split,
        None => return remaining.is_empty(),
    };
    for literal in middle {
        // Each variable takes at least one character, up to the next literal.
        let search_from = remaining
            .char_indices()
            .nth(1)
            .map_or(remaining.len(), |(i, _)| i);
        let Some(at) = remaining[search_from..].find(literal) else {
            return false;
        };
        remaining = &remaining[search_from + at + literal.len()..];
    }
    remaining.len() > last.len() && remaining.ends_with(last)
}

/// The item object with its `name` replaced; every other byte kept.
fn rename(raw: &RawValue, name: &str) -> Option<String> {
    let old = field(raw, "name").ok().flatten()?;
    let mut rw = Rewrite::new(raw.get());
    rw.replace(old, serde_json::to_string(name).ok()?);
    Some(rw.finish())
}

/// Shared pointer type sessions hold.
pub type SharedCatalog = Arc<Catalog>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renaming_keeps_the_rest_of_the_item() {
        let raw = RawValue::from_string(
            r#"{"name":"echo","x":1.50,"inputSchema":{"type":"object"}}"#.into(),
        )
        .unwrap();
        assert_eq!(
            rename(&raw, "everything__echo").unwrap(),
            r#"{"name":"everything__echo","x":1.50,"inputSchema":{"type":"object"}}"#
        );
    }

    #[test]
    fn templates_match_level_one_expressions() {
        assert!(template_matches(
            "test://static/resource/{id}",
            "test://static/resource/42"
        ));
        assert!(!template_matches(
            "test://static/resource/{id}",
            "test://static/resource/"
        ));
        assert!(!template_matches(
            "test://static/resource/{id}",
            "test://other/42"
        ));
        assert!(template_matches(
            "file:///{dir}/x/{name}.txt",
            "file:///a/b/x/c.txt"
        ));
        assert!(!template_matches(
            "file:///{dir}/x/{name}.txt",
            "file:///a/b/x/c.md"
        ));
        assert!(template_matches("plain://exact", "plain://exact"));
        assert!(!template_matches("plain://exact", "plain://exactly"));
    }
}
