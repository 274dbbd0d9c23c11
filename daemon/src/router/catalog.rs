//! The merged catalog: every upstream's tools under namespaced names, rebuilt whenever an
//! upstream's state or tools change and published on a `watch` channel that sessions follow.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use mcpd_proto::envelope::{Rewrite, field};
use serde_json::value::RawValue;

use super::names::{fnv1a, namespaced};
use crate::upstream::UpstreamHandle;

/// One tool as clients see it.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogTool {
    /// Namespaced name (`server__tool`).
    pub name: String,
    /// The server that owns it.
    pub server: String,
    /// Its name on that server.
    pub original: String,
    /// The upstream's tool object with only `name` rewritten.
    pub json: String,
}

/// All tools of all servers, in server-name order, each server's tools in its own order.
#[derive(Debug, Default)]
pub struct Catalog {
    /// The tools.
    pub tools: Vec<CatalogTool>,
    by_name: HashMap<String, usize>,
    /// Servers whose tools are not known yet because they are still starting.
    pub pending: BTreeSet<String>,
}

impl Catalog {
    /// Builds the catalog from the upstreams' current snapshots.
    pub fn build(upstreams: &BTreeMap<String, UpstreamHandle>, separator: &str) -> Self {
        let mut catalog = Self::default();
        for (server, handle) in upstreams {
            let snapshot = handle.snapshot();
            if !snapshot.tools_known {
                catalog.pending.insert(server.clone());
            }
            for tool in snapshot.tools.iter() {
                let name = namespaced(server, separator, &tool.name);
                if catalog.by_name.contains_key(&name) {
                    tracing::warn!(server = %server, tool = %tool.name, "two tools map to `{name}`; the second is hidden");
                    continue;
                }
                let json = match rename(&tool.raw, &name) {
                    Some(json) => json,
                    None => continue,
                };
                catalog.by_name.insert(name.clone(), catalog.tools.len());
                catalog.tools.push(CatalogTool {
                    name,
                    server: server.clone(),
                    original: tool.name.clone(),
                    json,
                });
            }
        }
        catalog
    }

    /// Looks a tool up by its namespaced name.
    pub fn tool(&self, name: &str) -> Option<&CatalogTool> {
        self.by_name.get(name).map(|&i| &self.tools[i])
    }

    /// Whether the catalog says the same as `other` to every client.
    pub fn same_as(&self, other: &Self) -> bool {
        self.pending == other.pending && self.tools == other.tools
    }

    /// The tools of the given servers.
    pub fn view<'a>(&'a self, servers: &'a [String]) -> impl Iterator<Item = &'a CatalogTool> + 'a {
        self.tools
            .iter()
            .filter(move |t| servers.contains(&t.server))
    }

    /// A fingerprint of what the given servers offer: it changes when a client of that view
    /// should be told `list_changed`.
    pub fn fingerprint(&self, servers: &[String]) -> u64 {
        let mut h = 0u64;
        for tool in self.view(servers) {
            h = h.rotate_left(5) ^ fnv1a(tool.json.as_bytes());
        }
        h
    }
}

/// The tool object with its `name` replaced; every other byte kept.
fn rename(raw: &RawValue, name: &str) -> Option<String> {
    let text = raw.get();
    let old = field(raw, "name").ok().flatten()?;
    let mut rw = Rewrite::new(text);
    rw.replace(old, serde_json::to_string(name).ok()?);
    Some(rw.finish())
}

/// Shared pointer type sessions hold.
pub type SharedCatalog = Arc<Catalog>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renaming_keeps_the_rest_of_the_tool() {
        let raw = RawValue::from_string(
            r#"{"name":"echo","x":1.50,"inputSchema":{"type":"object"}}"#.into(),
        )
        .unwrap();
        assert_eq!(
            rename(&raw, "everything__echo").unwrap(),
            r#"{"name":"everything__echo","x":1.50,"inputSchema":{"type":"object"}}"#
        );
    }
}
