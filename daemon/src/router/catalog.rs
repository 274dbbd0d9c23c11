//! The merged catalog: every upstream's tools, prompts, resources and resource templates, rebuilt
//! whenever an upstream's state or lists change and published on a `watch` channel that sessions
//! follow.
//!
//! Tools and prompts get namespaced names (`server__tool`). Resources keep their URIs; when two
//! servers list the same URI, the first server in name order owns it (and a note is logged).
//! A URI that no server lists goes to the first server (in name order) with a template that
//! matches it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use mcpd_proto::ServerState;
use mcpd_proto::envelope::{Rewrite, member};
use serde_json::value::RawValue;

use super::names::{disambiguated, fnv1a, is_ambiguous, namespaced};
use crate::config::ProfileShape;
use crate::config::ServerSpec;
use crate::config::exposure::{ToolFilter, ToolMode};
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
pub(crate) struct ServerFacts {
    /// Its capabilities (live, or from the cache).
    pub caps: UpstreamCaps,
    /// Its `instructions`.
    pub instructions: Option<String>,
}

/// All items of all servers, in server-name order, each server's items in its own order.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    lists: [Vec<Entry>; 4],
    by_name: [HashMap<String, usize>; 4],
    /// Servers whose lists are not known yet (still starting, no cache).
    pub pending: BTreeSet<String>,
    /// Per server: capabilities and instructions.
    pub servers: BTreeMap<String, ServerFacts>,
    /// Every server listing each resource URI that more than one server lists, in name order.
    listers: HashMap<String, Vec<String>>,
    /// Per URI territory (`scheme://authority`): the servers that list a resource there or
    /// offer a template whose literal text fixes it.
    claims: HashMap<String, BTreeSet<String>>,
    /// Where servers' resources and templates overlap, for the log and `mcpctl status`.
    pub overlaps: Vec<String>,
    /// Tools a server lists that its `tools` filter hides: by the name they would have, the
    /// server (so that a call gets a clear refusal rather than "unknown tool").
    pub denied: HashMap<String, String>,
    /// Tools and prompts left out by the pinning policy, by kind and namespaced name.
    withheld: HashMap<(usize, String), Withheld>,
    /// What each server set (and tool filter) sees of each kind, computed on first use: a
    /// catalog is immutable once published and rebuilt on every change, so every session with
    /// the same view shares one index list and one joined text, and a page is a slice of it.
    views: Mutex<HashMap<u64, Vec<ViewSlot>>>,
    /// The combined instructions of each server set, computed on first use likewise.
    combined: Mutex<HashMap<Vec<String>, Arc<super::instructions::Combined>>>,
}

/// One memoised view and its key (keys sharing a hash share a bucket).
type ViewSlot = (ViewKey, Arc<ViewData>);

/// A view's key: the kind, the servers (in the session's order) and the tool filter (tools
/// only). Looked up by its hash, and compared borrowed: a lookup allocates nothing.
#[derive(Debug)]
struct ViewKey {
    kind: usize,
    servers: Vec<String>,
    allow: Vec<String>,
    deny: Vec<String>,
}

impl ViewKey {
    /// The filter's lists as the key holds them: none for kinds other than tools.
    fn filter(kind: ListKind, filter: &ToolFilter) -> (&[String], &[String]) {
        if kind == ListKind::Tools {
            (&filter.allow, &filter.deny)
        } else {
            (&[], &[])
        }
    }

    fn hash(kind: usize, servers: &[String], allow: &[String], deny: &[String]) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (kind, servers, allow, deny).hash(&mut h);
        h.finish()
    }

    fn is(&self, kind: usize, servers: &[String], allow: &[String], deny: &[String]) -> bool {
        self.kind == kind && self.servers == servers && self.allow == allow && self.deny == deny
    }
}

/// More distinct views than this in one catalog (profiles × instance sets) and the memo
/// starts again: it only saves work, it never decides anything.
const MAX_VIEWS: usize = 256;

/// What one view is: the indices of its items in the catalog's list, and (once a page was
/// asked for) their JSON objects joined by commas, so that a page is one slice of text.
#[derive(Debug)]
struct ViewData {
    at: Box<[u32]>,
    joined: OnceLock<Joined>,
    /// The view's fingerprint (see [`Catalog::fingerprint`]), once asked for.
    print: OnceLock<u64>,
}

/// A view's items' JSON joined by commas, and where each item ends in it.
#[derive(Debug)]
struct Joined {
    text: String,
    ends: Box<[usize]>,
}

impl Joined {
    fn new<'a>(items: impl Iterator<Item = &'a str>, count: usize) -> Self {
        let mut text = String::new();
        let mut ends = Vec::with_capacity(count);
        for (k, json) in items.enumerate() {
            if k > 0 {
                text.push(',');
            }
            text.push_str(json);
            ends.push(text.len());
        }
        text.shrink_to_fit();
        Self {
            text,
            ends: ends.into_boxed_slice(),
        }
    }

    /// Items `start..end` (in range, `start < end`) as one slice of the joined text.
    fn items(&self, start: usize, end: usize) -> &str {
        let from = if start == 0 {
            0
        } else {
            self.ends[start - 1] + 1
        };
        &self.text[from..self.ends[end - 1]]
    }
}

/// The items of one kind that one session sees, in catalog order: a page is a slice.
#[derive(Debug)]
pub(crate) struct View<'a> {
    list: &'a [Entry],
    data: Arc<ViewData>,
}

impl<'a> View<'a> {
    /// How many items the view has.
    pub fn len(&self) -> usize {
        self.data.at.len()
    }

    /// Up to `n` items from `offset` on (none past the end).
    pub(crate) fn slice(&self, offset: usize, n: usize) -> impl Iterator<Item = &'a Entry> + '_ {
        let (start, end) = self.range(offset, n);
        self.data.at[start..end]
            .iter()
            .map(|&i| &self.list[i as usize])
    }

    /// Every item.
    pub fn iter(&self) -> impl Iterator<Item = &'a Entry> + '_ {
        self.slice(0, self.len())
    }

    /// A hash of every item's JSON, in order: computed once per view and catalog.
    fn fingerprint(&self) -> u64 {
        *self.data.print.get_or_init(|| {
            self.iter()
                .fold(0u64, |h, e| h.rotate_left(5) ^ fnv1a(e.json.as_bytes()))
        })
    }

    /// The item range of up to `n` items from `offset` (empty past the end).
    fn range(&self, offset: usize, n: usize) -> (usize, usize) {
        let len = self.len();
        (offset.min(len), offset.saturating_add(n).min(len))
    }

    /// Up to `n` items' JSON from `offset`, joined by commas: a slice of the view's joined
    /// text, which is built at the first page asked of this view in this catalog.
    fn text(&self, offset: usize, n: usize) -> &str {
        let (start, end) = self.range(offset, n);
        if start == end {
            return "";
        }
        let list = self.list;
        let joined = self.data.joined.get_or_init(|| {
            let items = self.data.at.iter().map(|&i| list[i as usize].json.as_str());
            Joined::new(items, self.data.at.len())
        });
        joined.items(start, end)
    }
}

/// One page of a list, ready to be written between the `[` and `]` of its array.
#[derive(Debug, PartialEq)]
pub(crate) struct Page<'a> {
    /// The view's items on this page, joined by commas (one slice of the view's text).
    listed: &'a str,
    /// Items mcpd adds itself that fall on this page.
    extra: Vec<&'a str>,
    /// Whether more items follow.
    pub more: bool,
}

impl Page<'_> {
    /// How many bytes [`Self::write`] appends.
    pub fn len(&self) -> usize {
        let parts = usize::from(!self.listed.is_empty()) + self.extra.len();
        self.listed.len()
            + self.extra.iter().map(|e| e.len()).sum::<usize>()
            + parts.saturating_sub(1)
    }

    /// Whether the page has no items.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.listed.is_empty() && self.extra.is_empty()
    }

    /// Appends the items, comma-separated.
    pub fn write(&self, out: &mut String) {
        out.push_str(self.listed);
        for (k, item) in self.extra.iter().enumerate() {
            if k > 0 || !self.listed.is_empty() {
                out.push(',');
            }
            out.push_str(item);
        }
    }
}

/// A tool or prompt the pinning policy leaves out of the catalog.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Withheld {
    /// Its server.
    pub server: String,
    /// Its name there.
    pub original: String,
    /// New since the server was pinned (else: changed).
    pub new: bool,
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
        }
        // Names are read against the prefixes in use (a server's name unless it sets one).
        let names: Vec<&str> = servers
            .iter()
            .map(|(name, (spec, _))| spec.exposure.prefix_of(name))
            .filter(|p| !p.is_empty())
            .collect();
        for (server, (spec, snapshot)) in servers {
            let prefix = spec.exposure.prefix_of(server);
            for kind in ListKind::ALL {
                for item in snapshot.lists[kind.index()].iter() {
                    if kind == ListKind::Tools && !spec.exposure.tools.permits(&item.key) {
                        let name = exposed_name(prefix, separator, &item.key);
                        catalog.denied.insert(name, server.clone());
                        continue;
                    }
                    let naming = Naming {
                        server,
                        prefix,
                        separator,
                        servers: &names,
                    };
                    catalog.add(kind, &naming, &item.key, &item.raw);
                }
            }
        }
        catalog.map_resources();
        catalog
    }

    /// Records which server claims which URI territory, and reports overlaps.
    fn map_resources(&mut self) {
        let resources = ListKind::Resources.index();
        let templates = ListKind::Templates.index();
        for entry in &self.lists[resources] {
            if let Some(t) = territory(&entry.original, true) {
                self.claims
                    .entry(t.to_owned())
                    .or_default()
                    .insert(entry.server.clone());
            }
        }
        for entry in &self.lists[templates] {
            if let Some(t) = territory(literal_prefix(&entry.original), false) {
                self.claims
                    .entry(t.to_owned())
                    .or_default()
                    .insert(entry.server.clone());
            }
        }
        let mut overlaps = Vec::new();
        let listers: BTreeMap<&String, &Vec<String>> = self.listers.iter().collect();
        for (uri, servers) in listers {
            overlaps.push(format!(
                "resource `{uri}` is listed by {}; `{}` answers it",
                servers
                    .iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(" and "),
                servers[0]
            ));
        }
        for template in &self.lists[templates] {
            let captured = self.lists[resources].iter().find(|r| {
                r.server != template.server && template_matches(&template.original, &r.original)
            });
            if let Some(r) = captured {
                overlaps.push(format!(
                    "`{}`'s template `{}` also matches `{}`'s resources (such as `{}`): they stay `{}`'s",
                    template.server, template.original, r.server, r.original, r.server
                ));
            }
        }
        for (i, a) in self.lists[templates].iter().enumerate() {
            let prefix = literal_prefix(&a.original);
            if let Some(b) = self.lists[templates][i + 1..]
                .iter()
                .find(|b| b.server != a.server && literal_prefix(&b.original) == prefix)
            {
                overlaps.push(format!(
                    "`{}`'s template `{}` and `{}`'s template `{}` overlap; URIs both match go to `{}`",
                    a.server, a.original, b.server, b.original, a.server
                ));
            }
        }
        for message in &overlaps {
            warn_once(message);
        }
        self.overlaps.extend(overlaps);
    }

    fn add(&mut self, kind: ListKind, naming: &Naming<'_>, key: &str, raw: &RawValue) {
        let Naming {
            server,
            prefix,
            separator,
            servers,
        } = *naming;
        // Disambiguated names carry the server's prefix, or its name when it has none.
        let named = if prefix.is_empty() { server } else { prefix };
        let namespaced_kind = matches!(kind, ListKind::Tools | ListKind::Prompts);
        let i = kind.index();
        // Bare names (`"prefix": ""`) and URIs are kept as they are.
        let name = if !namespaced_kind || prefix.is_empty() {
            key.to_owned()
        } else if is_ambiguous(prefix, separator, key, servers) {
            let name = disambiguated(prefix, separator, key);
            self.note(format!(
                "`{server}`'s {} `{key}` is named `{name}`: `{}` would also read as a name of server `{}`",
                singular(kind),
                namespaced(prefix, separator, key),
                longest_server_prefix(prefix, separator, key, servers),
            ));
            name
        } else {
            namespaced(prefix, separator, key)
        };
        if let Some(&existing) = self.by_name[i].get(&name) {
            let owner = self.lists[i][existing].server.clone();
            if namespaced_kind {
                // Never hidden silently: two names that still meet (a hash collision, or a
                // server offering one name twice) are both kept, the later one renamed.
                let other = self.lists[i][existing].original.clone();
                let renamed = disambiguated(named, separator, key);
                if (other != key || owner != server) && !self.by_name[i].contains_key(&renamed) {
                    self.note(format!(
                            "`{server}`'s {} `{key}` is named `{renamed}`: `{name}` is `{owner}`'s `{other}`",
                            singular(kind)
                        ));
                    return self.insert(kind, server, key, raw, renamed);
                }
                warn_once(&format!(
                    "`{server}` offers the {} `{key}` twice; the first one is kept",
                    singular(kind)
                ));
                return;
            }
            if kind == ListKind::Resources {
                let owner = owner.clone();
                let listers = self.listers.entry(name).or_insert_with(|| vec![owner]);
                if !listers.iter().any(|s| s == server) {
                    listers.push(server.to_owned());
                }
            }
            return;
        }
        self.insert(kind, server, key, raw, name);
    }

    /// A naming conflict and how it was resolved: logged once, shown in `mcpctl status`.
    fn note(&mut self, message: String) {
        warn_once(&message);
        self.overlaps.push(message);
    }

    fn insert(&mut self, kind: ListKind, server: &str, key: &str, raw: &RawValue, name: String) {
        let namespaced_kind = matches!(kind, ListKind::Tools | ListKind::Prompts);
        let i = kind.index();
        let json = if namespaced_kind && name != key {
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

    /// Leaves out the tools and prompts the pinning policy withholds (see
    /// `observe::pins`), remembering them so that a call gets an error that says why.
    pub(crate) fn withhold(&mut self, items: &crate::observe::pins::Withheld) {
        if items.is_empty() {
            return;
        }
        for kind in [ListKind::Tools, ListKind::Prompts] {
            let i = kind.index();
            let entries = std::mem::take(&mut self.lists[i]);
            self.by_name[i].clear();
            for entry in entries {
                let key = (kind, entry.server.clone(), entry.original.clone());
                if let Some(new) = items.get(&key) {
                    let withheld = Withheld {
                        server: entry.server,
                        original: entry.original,
                        new: *new,
                    };
                    self.withheld.insert((i, entry.name), withheld);
                    continue;
                }
                self.by_name[i].insert(entry.name.clone(), self.lists[i].len());
                self.lists[i].push(entry);
            }
        }
    }

    /// A tool or prompt left out by the pinning policy.
    pub(crate) fn withheld(&self, kind: ListKind, name: &str) -> Option<&Withheld> {
        self.withheld.get(&(kind.index(), name.to_owned()))
    }

    /// Looks an item up by its namespaced name or URI.
    pub fn get(&self, kind: ListKind, name: &str) -> Option<&Entry> {
        let i = kind.index();
        self.by_name[i].get(name).map(|&at| &self.lists[i][at])
    }

    /// The server that owns `uri` for a session that sees `servers`.
    ///
    /// A URI belongs to the server that lists it (the first in name order when several do):
    /// no template ever takes it from that server. A URI nobody lists goes to the template
    /// with the longest literal text before its first expression (the first server in name
    /// order on a tie), except that a template whose literal text does not fix the URI's
    /// `scheme://authority` never takes a URI there that another server claims (by listing a
    /// resource there or offering a template for it): a catch-all `{uri}` cannot reach into
    /// another server's URIs. A template's own text (`completion/complete`'s `ref/resource`)
    /// goes to its server.
    pub(crate) fn resource_owner<'a>(
        &'a self,
        uri: &str,
        servers: &'a [String],
    ) -> Option<&'a str> {
        if let Some(entry) = self.get(ListKind::Resources, uri) {
            let listers = self.listers.get(uri);
            let mut all = std::iter::once(&entry.server).chain(listers.into_iter().flatten());
            return all.find(|s| servers.contains(s)).map(String::as_str);
        }
        if let Some(t) = self
            .get(ListKind::Templates, uri)
            .filter(|t| servers.contains(&t.server))
        {
            return Some(&t.server);
        }
        let claimed = territory(uri, true).and_then(|t| self.claims.get(t).map(|c| (t, c)));
        self.view(ListKind::Templates, servers)
            .filter(|t| template_matches(&t.original, uri))
            .filter(|t| match claimed {
                Some((territory_of_uri, claimants)) => {
                    territory(literal_prefix(&t.original), false) == Some(territory_of_uri)
                        || claimants.iter().all(|c| *c == t.server)
                }
                None => true,
            })
            .fold(None::<&Entry>, |best, t| match best {
                Some(b)
                    if literal_prefix(&b.original).len() >= literal_prefix(&t.original).len() =>
                {
                    Some(b)
                }
                _ => Some(t),
            })
            .map(|t| t.server.as_str())
    }

    /// Whether a server lists `uri` itself (rather than a template matching it).
    pub(crate) fn is_listed(&self, uri: &str) -> bool {
        self.get(ListKind::Resources, uri).is_some()
    }

    /// Whether the catalog says the same as `other` to every client.
    pub(crate) fn same_as(&self, other: &Self) -> bool {
        self.pending == other.pending
            && self.lists == other.lists
            && self.servers == other.servers
            && self.withheld == other.withheld
    }

    /// The items of one kind of the given servers.
    pub(crate) fn view<'a>(
        &'a self,
        kind: ListKind,
        servers: &'a [String],
    ) -> impl Iterator<Item = &'a Entry> + 'a {
        self.lists[kind.index()]
            .iter()
            .filter(move |t| servers.contains(&t.server))
    }

    /// The items of one kind of the given servers that a profile's tool filter lets through.
    pub(crate) fn visible<'a>(
        &'a self,
        kind: ListKind,
        servers: &[String],
        filter: &ToolFilter,
    ) -> impl Iterator<Item = &'a Entry> + 'a {
        let View { list, data } = self.visible_view(kind, servers, filter);
        (0..data.at.len()).map(move |k| &list[data.at[k] as usize])
    }

    /// The same items as [`Self::visible`], as a view that pages by slicing. Computed once per
    /// catalog for each server set and filter (linear in the catalog), shared after that.
    pub(crate) fn visible_view(
        &self,
        kind: ListKind,
        servers: &[String],
        filter: &ToolFilter,
    ) -> View<'_> {
        let i = kind.index();
        let list = &self.lists[i];
        let (allow, deny) = ViewKey::filter(kind, filter);
        let hash = ViewKey::hash(i, servers, allow, deny);
        let mut views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        let known = views.get(&hash).and_then(|bucket| {
            bucket
                .iter()
                .find(|(key, _)| key.is(i, servers, allow, deny))
        });
        if let Some((_, data)) = known {
            return View {
                list,
                data: Arc::clone(data),
            };
        }
        let wanted: HashSet<&str> = servers.iter().map(String::as_str).collect();
        let open = kind != ListKind::Tools || filter.is_open();
        let at: Box<[u32]> = list
            .iter()
            .enumerate()
            .filter(|(_, e)| wanted.contains(e.server.as_str()))
            .filter(|(_, e)| open || filter.permits(&e.original))
            .filter_map(|(k, _)| u32::try_from(k).ok())
            .collect();
        if views.len() >= MAX_VIEWS {
            views.clear();
        }
        let data = Arc::new(ViewData {
            at,
            joined: OnceLock::new(),
            print: OnceLock::new(),
        });
        let key = ViewKey {
            kind: i,
            servers: servers.to_vec(),
            allow: allow.to_vec(),
            deny: deny.to_vec(),
        };
        views
            .entry(hash)
            .or_default()
            .push((key, Arc::clone(&data)));
        View { list, data }
    }

    /// One page of a list: `n` items from `offset`, the view's items first and then `extra`
    /// (items mcpd adds itself), and whether more follow. The view's items are one slice of
    /// its joined text: no page joins or copies item by item.
    pub fn page<'a>(
        view: Option<&'a View<'a>>,
        extra: &'a [String],
        offset: usize,
        n: usize,
    ) -> Page<'a> {
        let listed = view.map_or(0, View::len);
        let (text, taken) = match view {
            Some(view) => {
                let (start, end) = view.range(offset, n);
                (view.text(offset, n), end - start)
            }
            None => ("", 0),
        };
        let from_extra = offset.saturating_sub(listed);
        let room = n.saturating_sub(taken);
        Page {
            listed: text,
            extra: extra
                .iter()
                .skip(from_extra)
                .take(room)
                .map(String::as_str)
                .collect(),
            more: offset.saturating_add(n) < listed + extra.len(),
        }
    }

    /// A fingerprint of one kind of list for the given servers: when it changes, clients of
    /// that view are told `list_changed`.
    /// Computed once per catalog for each view: every session following the catalog asks for
    /// it at each change.
    pub(crate) fn fingerprint(
        &self,
        kind: ListKind,
        servers: &[String],
        filter: &ToolFilter,
    ) -> u64 {
        self.visible_view(kind, servers, filter).fingerprint()
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
            all.tasks |= c.tasks;
        }
        all
    }

    /// Every server's instructions, each under its name, summarised to fit
    /// [`super::instructions::LIMIT`].
    /// Combined once per catalog for each server set (every new client's `initialize` asks).
    pub fn instructions(&self, servers: &[String]) -> Arc<super::instructions::Combined> {
        let mut combined = self.combined.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = combined.get(servers) {
            return Arc::clone(known);
        }
        let parts: Vec<(String, String)> = servers
            .iter()
            .filter_map(|s| Some((s.clone(), self.servers.get(s)?.instructions.clone()?)))
            .collect();
        let new = Arc::new(super::instructions::combine(&parts));
        if combined.len() >= MAX_VIEWS {
            combined.clear();
        }
        combined.insert(servers.to_vec(), Arc::clone(&new));
        new
    }

    /// Whether a profile with this tool filter and mode sees the search trio.
    pub(crate) fn searches(&self, servers: &[String], shape: &ProfileShape) -> bool {
        match shape.tool_mode {
            ToolMode::All => false,
            ToolMode::Search => true,
            ToolMode::Auto => shape.tool_mode.searches(
                self.visible_view(ListKind::Tools, servers, &shape.tools)
                    .len(),
            ),
        }
    }
}

fn singular(kind: ListKind) -> &'static str {
    match kind {
        ListKind::Tools => "tool",
        ListKind::Prompts => "prompt",
        ListKind::Resources => "resource",
        ListKind::Templates => "resource template",
    }
}

/// The literal text of a URI template before its first expression.
fn literal_prefix(template: &str) -> &str {
    template.find('{').map_or(template, |at| &template[..at])
}

/// The `scheme://authority` of a URI (`whole`), or of the literal start of a template, which
/// fixes it only when the authority is followed by a `/`. `None` for URIs without `://`.
fn territory(text: &str, whole: bool) -> Option<&str> {
    let start = text.find("://")? + 3;
    match text[start..].find('/') {
        Some(end) if end > 0 => Some(&text[..start + end]),
        None if whole && text.len() > start => Some(text),
        _ => None,
    }
}

/// The other server a name of `server`'s `item` would also read as (for the log).
fn longest_server_prefix(server: &str, sep: &str, item: &str, servers: &[&str]) -> String {
    item.match_indices(sep)
        .map(|(at, _)| format!("{server}{sep}{}", &item[..at]))
        .filter(|s| servers.contains(&s.as_str()))
        .last()
        .unwrap_or_default()
}

/// Logs a warning the first time it is seen: the catalog is rebuilt on every change of any
/// server, and a naming conflict stays until the configuration changes.
fn warn_once(message: &str) {
    static SEEN: std::sync::Mutex<Option<BTreeSet<String>>> = std::sync::Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if seen
        .get_or_insert_with(BTreeSet::new)
        .insert(message.to_owned())
    {
        tracing::warn!("{message}");
    }
}

/// Whether `uri` matches an RFC 6570 level-1 template: literal parts in order, each `{var}`
/// standing for one or more characters.
pub(crate) fn template_matches(template: &str, uri: &str) -> bool {
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

/// The name clients see for `key` of a server whose prefix is `prefix`: `""` keeps the server's
/// own name (MCP Apps call their tools by it).
pub(crate) fn exposed_name(prefix: &str, separator: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        namespaced(prefix, separator, key)
    }
}

/// How one server's items are named: its name, its prefix, the separator, and every prefix in
/// use (to spot names that would read as another server's).
#[derive(Clone, Copy)]
struct Naming<'a> {
    server: &'a str,
    prefix: &'a str,
    separator: &'a str,
    servers: &'a [&'a str],
}

/// The item object with its `name` replaced; every other byte kept.
fn rename(raw: &RawValue, name: &str) -> Option<String> {
    let old = member(raw, "name")?;
    let mut rw = Rewrite::new(raw.get());
    rw.replace(old, serde_json::to_string(name).ok()?);
    Some(rw.finish())
}

/// Shared pointer type sessions hold.
pub(crate) type SharedCatalog = Arc<Catalog>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::Item;

    /// Servers `a`, `b`, `c` with `n` tools each (`t0`..), as the daemon would build them.
    fn three_servers(n: usize) -> Catalog {
        let config =
            r#"{"mcpServers":{"a":{"command":"x"},"b":{"command":"x"},"c":{"command":"x"}}}"#;
        let mut specs = crate::config::parse(std::path::Path::new("/c"), config, |_| None)
            .unwrap()
            .config
            .servers;
        let mut servers = BTreeMap::new();
        for name in ["a", "b", "c"] {
            let mut snapshot = Snapshot {
                known: [true; 4],
                ..Snapshot::default()
            };
            snapshot.lists[ListKind::Tools.index()] = Arc::new(
                (0..n)
                    .map(|i| Item {
                        key: format!("t{i}"),
                        raw: RawValue::from_string(format!(r#"{{"name":"t{i}"}}"#)).unwrap(),
                    })
                    .collect(),
            );
            servers.insert(name.to_owned(), (specs.remove(name).unwrap(), snapshot));
        }
        Catalog::build(&servers, "__")
    }

    /// A page as the text between `[` and `]`, checking that `len` says how long it is.
    fn text_of(page: &Page<'_>) -> String {
        let mut text = String::new();
        page.write(&mut text);
        assert_eq!(text.len(), page.len());
        text
    }

    #[test]
    fn a_view_pages_by_offset_exactly_as_filtering_the_whole_list_would() {
        let catalog = three_servers(7);
        let servers = vec!["c".to_owned(), "a".to_owned()];
        let open = ToolFilter::default();
        let everything: Vec<&str> = catalog.lists[ListKind::Tools.index()]
            .iter()
            .filter(|e| servers.contains(&e.server))
            .map(|e| e.json.as_str())
            .collect();
        let extra = vec![r#"{"name":"x1"}"#.to_owned(), r#"{"name":"x2"}"#.to_owned()];
        let view = catalog.visible_view(ListKind::Tools, &servers, &open);
        assert_eq!(view.len(), 14);
        let expected: Vec<&str> = everything
            .iter()
            .copied()
            .chain(extra.iter().map(String::as_str))
            .collect();
        for size in [1, 4, 7, 14, 15, 16, 100] {
            let mut pages = Vec::new();
            let mut offset = 0;
            loop {
                let page = Catalog::page(Some(&view), &extra, offset, size);
                assert_eq!(page.is_empty(), text_of(&page).is_empty());
                pages.push(text_of(&page));
                offset += size;
                if !page.more {
                    break;
                }
            }
            // Each page holds the next `size` items, in order, joined by commas.
            let chunks: Vec<String> = expected.chunks(size).map(|c| c.join(",")).collect();
            assert_eq!(pages, chunks, "pages of {size}");
        }
        // A page past the end is empty and says nothing follows.
        let past = Catalog::page(Some(&view), &extra, 99, 4);
        assert!(past.is_empty() && !past.more);
        // Without a view (search mode) only the extra items are listed.
        let trio = Catalog::page(None, &extra, 0, 4);
        assert_eq!(text_of(&trio), extra.join(","));
        assert!(!trio.more);
        // An empty view with nothing extra is an empty page.
        let none = catalog.visible_view(ListKind::Prompts, &servers, &open);
        assert!(Catalog::page(Some(&none), &[], 0, 4).is_empty());
    }

    #[test]
    fn a_view_honours_the_tool_filter_and_is_computed_once_per_catalog() {
        let catalog = three_servers(12);
        let servers = vec!["a".to_owned(), "b".to_owned()];
        let filter = ToolFilter {
            allow: vec!["t1*".to_owned()],
            deny: vec!["t11".to_owned()],
        };
        let names: Vec<&str> = catalog
            .visible(ListKind::Tools, &servers, &filter)
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(names, ["a__t1", "a__t10", "b__t1", "b__t10"]);
        let first = catalog.visible_view(ListKind::Tools, &servers, &filter);
        let again = catalog.visible_view(ListKind::Tools, &servers, &filter);
        assert!(Arc::ptr_eq(&first.data, &again.data));
        // The joined text too: built at the first page, shared by every later one.
        let text = first.text(0, 2).as_ptr();
        assert_eq!(again.text(0, 2).as_ptr(), text);
        assert_eq!(first.text(0, 2), r#"{"name":"a__t1"},{"name":"a__t10"}"#);
        assert_eq!(again.text(2, 9), r#"{"name":"b__t1"},{"name":"b__t10"}"#);
        // Another filter is another view.
        let open = catalog.visible_view(ListKind::Tools, &servers, &ToolFilter::default());
        assert_eq!(open.len(), 24);
        // The fingerprint and the combined instructions are computed once too.
        let print = catalog.fingerprint(ListKind::Tools, &servers, &filter);
        assert_eq!(first.data.print.get(), Some(&print));
        assert_ne!(
            print,
            catalog.fingerprint(ListKind::Tools, &servers, &ToolFilter::default())
        );
        assert!(Arc::ptr_eq(
            &catalog.instructions(&servers),
            &catalog.instructions(&servers)
        ));
    }

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
