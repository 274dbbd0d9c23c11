//! `subscriptions/listen` (MCP 2026-07-28): a modern client's long-lived request for change
//! notifications, in place of the legacy era's unsolicited `list_changed` notifications and
//! `resources/subscribe`.
//!
//! A listen is acknowledged at once with `notifications/subscriptions/acknowledged` carrying
//! the filter mcpd honours; from then on the notifications it asked for go to the session,
//! each with the listen's request id as `io.modelcontextprotocol/subscriptionId` in `_meta`:
//! list changes when the merged catalog changes (servers starting, stopping, or announcing
//! `list_changed`, legacy upstreams included), and `notifications/resources/updated` for the
//! URIs it named, subscribed upstream through the hub's counting like a legacy subscription
//! (the first subscriber subscribes upstream, the last one unsubscribes). The request stays
//! unanswered until the client cancels it (`notifications/cancelled`, no answer) or the
//! daemon shuts down (a `complete` result tagged the same way: a graceful end).

use std::sync::Mutex;

use mcpd_proto::envelope::{self, member};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::catalog::Catalog;
use super::hub::SessionLink;
use super::session::Services;

/// `_meta` key naming the listen a notification belongs to.
pub const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// The listens of one session.
#[derive(Debug, Default)]
pub struct Listens(Mutex<Vec<Listen>>);

/// One open `subscriptions/listen`.
#[derive(Debug, Clone)]
struct Listen {
    /// The request id, as the client wrote it (JSON text).
    id: String,
    /// Per change group (tools, prompts, resources; see the session's `CHANGE_GROUPS`).
    lists: [bool; 3],
    /// `(server, uri)` of each honoured resource subscription.
    resources: Vec<(String, String)>,
}

/// Why a `subscriptions/listen` was refused (answered `-32602` with this message).
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// No filter.
    #[error("subscriptions/listen needs params.notifications")]
    NoFilter,
    /// A filter that is not one.
    #[error("params.notifications is not a subscription filter: {0}")]
    BadFilter(#[source] serde_json::Error),
    /// The id of a listen still open.
    #[error("a subscription with id {id} is already open")]
    AlreadyOpen {
        /// The id, as the client wrote it.
        id: String,
    },
    /// The acknowledgment could not be encoded.
    #[error("{0}")]
    Encode(#[source] serde_json::Error),
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    tools_list_changed: bool,
    #[serde(default)]
    prompts_list_changed: bool,
    #[serde(default)]
    resources_list_changed: bool,
    #[serde(default)]
    resource_subscriptions: Vec<String>,
}

impl Listens {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Listen>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The ids of the listens that asked for change group `group`.
    pub fn for_group(&self, group: usize) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|l| l.lists.get(group).copied().unwrap_or(false))
            .map(|l| l.id.clone())
            .collect()
    }

    /// The ids of the listens subscribed to `uri` of `server`.
    pub fn for_resource(&self, server: &str, uri: &str) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|l| l.resources.iter().any(|(s, u)| s == server && u == uri))
            .map(|l| l.id.clone())
            .collect()
    }

    fn holds(&self, server: &str, uri: &str) -> bool {
        !self.for_resource(server, uri).is_empty()
    }
}

/// A notification `method` for the listen `id`: `params` (an object, or nothing) with the
/// subscription id added to its `_meta`.
pub fn tagged(method: &str, params: Option<&RawValue>, id: &str) -> String {
    let mut params = params
        .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    let id: Value = serde_json::from_str(id).unwrap_or(Value::Null);
    match params.get_mut("_meta").and_then(Value::as_object_mut) {
        Some(meta) => {
            meta.insert(SUBSCRIPTION_ID.into(), id);
        }
        None => params["_meta"] = json!({ SUBSCRIPTION_ID: id }),
    }
    envelope::notification(method, Some(&params))
}

/// `line` (a notification) without the subscription id in its `_meta` (and without a `_meta`
/// left empty).
fn untagged(line: &str) -> String {
    let Ok(mut v) = serde_json::from_str::<Value>(line) else {
        return line.to_owned();
    };
    if let Some(meta) = v
        .get_mut("params")
        .and_then(|p| p.get_mut("_meta"))
        .and_then(Value::as_object_mut)
    {
        meta.remove(SUBSCRIPTION_ID);
        if meta.is_empty()
            && let Some(params) = v.get_mut("params").and_then(Value::as_object_mut)
        {
            params.remove("_meta");
        }
    }
    v.to_string()
}

/// Delivers an upstream's `notifications/resources/updated` (`line`, about `uri` of `server`)
/// to a subscribed session: tagged once per listen of a modern session, as it came to a legacy
/// one.
pub fn resource_updated(link: &SessionLink, server: &str, uri: &str, line: &str) {
    if !link.scopes().is_modern() {
        if line.contains(SUBSCRIPTION_ID) {
            // From a modern upstream's listen: its subscription id is not the client's.
            link.try_send(untagged(line));
        } else {
            link.try_send(line.to_owned());
        }
        return;
    }
    let Ok(msg) = envelope::Envelope::parse(line) else {
        return;
    };
    for id in link.listens().for_resource(server, uri) {
        link.try_send(tagged(msg.method(), msg.params, &id));
    }
}

/// Opens a listen: records it, subscribes the resources it names, and returns the
/// acknowledgment to send.
pub fn open(
    services: &Services,
    profile: &str,
    link: &SessionLink,
    catalog: &Catalog,
    servers: &[String],
    id: &RawValue,
    params: Option<&RawValue>,
) -> Result<String, ListenError> {
    let filter = filter(params)?;
    let id_text = id.get().to_owned();
    if link.listens().lock().iter().any(|l| l.id == id_text) {
        return Err(ListenError::AlreadyOpen { id: id_text });
    }
    let mut resources = Vec::new();
    for uri in &filter.resource_subscriptions {
        // Honoured when a server of the profile owns the URI and can subscribe.
        let Some(server) = catalog.resource_owner(uri, servers) else {
            continue;
        };
        if !catalog
            .servers
            .get(server)
            .is_some_and(|f| f.caps.subscribe)
        {
            continue;
        }
        let Some(key) = services.supervisor.key_of(server, link.id(), profile) else {
            continue;
        };
        let held = link.listens().holds(server, uri);
        if !held
            && services.hub.subscribe(&key, uri, link.id())
            && let Some(upstream) = services.supervisor.instance(&key)
        {
            upstream.internal("resources/subscribe", json!({"uri": uri}));
        }
        resources.push((server.to_owned(), uri.clone()));
    }
    let lists = [
        filter.tools_list_changed,
        filter.prompts_list_changed,
        filter.resources_list_changed,
    ];
    let mut honored = serde_json::Map::new();
    for (key, on) in [
        "toolsListChanged",
        "promptsListChanged",
        "resourcesListChanged",
    ]
    .iter()
    .zip(lists)
    {
        if on {
            honored.insert((*key).into(), json!(true));
        }
    }
    if !filter.resource_subscriptions.is_empty() {
        let uris: Vec<&String> = resources.iter().map(|(_, u)| u).collect();
        honored.insert("resourceSubscriptions".into(), json!(uris));
    }
    link.listens().lock().push(Listen {
        id: id_text.clone(),
        lists,
        resources,
    });
    let params = RawValue::from_string(json!({ "notifications": honored }).to_string())
        .map_err(ListenError::Encode)?;
    Ok(tagged(
        "notifications/subscriptions/acknowledged",
        Some(&params),
        &id_text,
    ))
}

/// The filter of a listen's `params`.
fn filter(params: Option<&RawValue>) -> Result<Filter, ListenError> {
    let filter = params
        .and_then(|p| member(p, "notifications"))
        .ok_or(ListenError::NoFilter)?;
    serde_json::from_str(filter.get()).map_err(ListenError::BadFilter)
}

/// A legacy client's (un)subscription of `uri` on a modern upstream, the first or last on that
/// instance: the upstream's own listen (`upstream/actor_listen.rs`) follows the hub's URIs.
pub fn subscribe_upstream(upstream: &crate::upstream::UpstreamHandle, subscribe: bool, uri: &str) {
    let method = if subscribe {
        "resources/subscribe"
    } else {
        "resources/unsubscribe"
    };
    upstream.internal(method, json!({"uri": uri}));
}

/// Closes the listen with request id `id` (the client cancelled it), releasing its resource
/// subscriptions; `false` if `id` is not a listen.
pub fn cancel(services: &Services, profile: &str, link: &SessionLink, id: &str) -> bool {
    let listen = {
        let mut listens = link.listens().lock();
        let Some(i) = listens.iter().position(|l| l.id == id) else {
            return false;
        };
        listens.swap_remove(i)
    };
    release(services, profile, link, &listen);
    true
}

fn release(services: &Services, profile: &str, link: &SessionLink, listen: &Listen) {
    for (server, uri) in &listen.resources {
        if link.listens().holds(server, uri) {
            continue;
        }
        let Some(key) = services.supervisor.key_of(server, link.id(), profile) else {
            continue;
        };
        if services.hub.unsubscribe(&key, uri, link.id())
            && let Some(upstream) = services.supervisor.instance(&key)
        {
            upstream.internal("resources/unsubscribe", json!({"uri": uri}));
        }
    }
}

/// Ends every listen of the session gracefully (the daemon shuts down): the answers to send,
/// `complete` results tagged with their subscription ids.
pub fn end_all(link: &SessionLink) -> Vec<String> {
    std::mem::take(&mut *link.listens().lock())
        .into_iter()
        .map(|l| {
            let id: Value = serde_json::from_str(&l.id).unwrap_or(Value::Null);
            json!({
                "jsonrpc": "2.0",
                "id": id,
                "result": {"resultType": "complete", "_meta": { SUBSCRIPTION_ID: id }},
            })
            .to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listen_without_a_filter_or_with_a_bad_one_is_refused_with_the_reason() {
        let raw = |t: &str| RawValue::from_string(t.to_owned()).unwrap();
        let e = filter(None).unwrap_err();
        assert!(matches!(e, ListenError::NoFilter));
        assert_eq!(
            e.to_string(),
            "subscriptions/listen needs params.notifications"
        );
        assert!(matches!(
            filter(Some(&raw("{}"))),
            Err(ListenError::NoFilter)
        ));
        let e = filter(Some(&raw(r#"{"notifications":{"toolsListChanged":1}}"#))).unwrap_err();
        assert!(matches!(e, ListenError::BadFilter(_)));
        assert!(
            e.to_string()
                .starts_with("params.notifications is not a subscription filter: "),
            "{e}"
        );
        let ok = filter(Some(&raw(
            r#"{"notifications":{"toolsListChanged":true,"resourceSubscriptions":["a://b"]}}"#,
        )))
        .unwrap();
        assert!(ok.tools_list_changed && !ok.prompts_list_changed);
        assert_eq!(ok.resource_subscriptions, ["a://b"]);
    }

    #[test]
    fn tagging_adds_the_subscription_id_to_meta_and_keeps_the_rest() {
        let params =
            RawValue::from_string(r#"{"uri":"file:///a","_meta":{"k":1}}"#.into()).expect("raw");
        let line = tagged(
            "notifications/resources/updated",
            Some(&params),
            r#""listen:1""#,
        );
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["params"]["uri"], "file:///a");
        assert_eq!(v["params"]["_meta"]["k"], 1);
        assert_eq!(v["params"]["_meta"][SUBSCRIPTION_ID], "listen:1");
        let bare: Value =
            serde_json::from_str(&tagged("notifications/tools/list_changed", None, "7"))
                .expect("json");
        assert_eq!(bare["params"]["_meta"][SUBSCRIPTION_ID], 7);
    }
}
