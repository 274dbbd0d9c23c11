//! The 2026-07-28 ("modern") era towards clients: `server/discover`, per-request `_meta`, and
//! the result fields modern clients require.
//!
//! The era is decided per request, here: a request whose `params._meta` names
//! `io.modelcontextprotocol/protocolVersion` is modern and is served without `initialize`;
//! anything else is legacy and served as before. A modern request's answer gets `resultType`
//! (and, for cacheable results, `ttlMs` and `cacheScope`) spliced into its `result` object when
//! missing; every other byte stays as mcpd or the upstream wrote it (invariant 1). Upstreams
//! are spoken to in their own era (`upstream::modern`, `router::mrtr`).

use mcpd_proto::envelope::{self, Envelope, member};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::upstream::UpstreamCaps;

/// The modern protocol revision mcpd serves to clients.
pub const MODERN_VERSION: &str = "2026-07-28";
/// MCP 2026-07-28: `UnsupportedProtocolVersionError`.
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
/// `ttlMs` of the lists and reads mcpd answers: immediately stale. mcpd's lists change when
/// servers start, stop or announce changes; a modern client that caches learns of that through
/// `subscriptions/listen`, one that does not should not cache.
const TTL_MS: u64 = 0;
/// `cacheScope`: the lists are one user's profile, filtered; reads may be the user's data.
const CACHE_SCOPE: &str = "private";

const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";

/// Every protocol revision mcpd speaks to clients, newest first: the modern one, then the
/// legacy ones `initialize` negotiates.
pub fn supported_versions() -> Vec<&'static str> {
    std::iter::once(MODERN_VERSION)
        .chain(super::SUPPORTED_PROTOCOLS.iter().copied())
        .collect()
}

/// What a modern request says about its client in `params._meta`.
#[derive(Debug, Default)]
pub struct Meta {
    /// `io.modelcontextprotocol/clientInfo`: name and version.
    pub client: Option<(String, String)>,
    /// `io.modelcontextprotocol/logLevel`.
    pub log_level: Option<String>,
}

/// How a request declares its era.
#[derive(Debug)]
pub enum Era {
    /// No protocol version in `_meta`: legacy (or, for `server/discover`, a bare probe).
    Legacy,
    /// `2026-07-28` in `_meta`.
    Modern(Meta),
    /// A protocol version in `_meta` that mcpd does not speak.
    Unsupported(String),
}

#[derive(Deserialize)]
struct Info {
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
}

/// The era `msg` declares.
pub fn era(msg: &Envelope<'_>) -> Era {
    let meta = msg
        .params
        .and_then(|p| member(p, "_meta"))
        .filter(|m| m.get().starts_with('{'));
    let Some(meta) = meta else {
        return Era::Legacy;
    };
    let member = |key: &str| member(meta, key);
    let Some(version) = member(META_VERSION) else {
        return Era::Legacy;
    };
    match envelope::decode_str(version) {
        Ok(v) if v == MODERN_VERSION => {}
        Ok(v) => return Era::Unsupported(v.into_owned()),
        Err(_) => return Era::Unsupported(version.get().to_owned()),
    }
    let client = member(META_CLIENT_INFO)
        .and_then(|i| serde_json::from_str::<Info>(i.get()).ok())
        .map(|i| (i.name, i.version));
    let log_level = member(META_LOG_LEVEL)
        .and_then(|l| envelope::decode_str(l).ok())
        .map(|l| l.into_owned());
    Era::Modern(Meta { client, log_level })
}

/// The `-32022` answer to a request for a version mcpd does not speak.
pub fn unsupported(id: &RawValue, requested: &str) -> String {
    let supported = supported_versions();
    let answer = json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {
            "code": UNSUPPORTED_PROTOCOL_VERSION,
            "message": format!(
                "Unsupported protocol version {requested}: mcpd speaks {}",
                supported.join(", ")
            ),
            "data": {"supported": supported, "requested": requested},
        },
    });
    answer.to_string()
}

/// Methods of the legacy era that 2026-07-28 removed.
pub fn removed(method: &str) -> bool {
    matches!(
        method,
        "initialize"
            | "ping"
            | "logging/setLevel"
            | "resources/subscribe"
            | "resources/unsubscribe"
    )
}

/// Results that are `CacheableResult`s in 2026-07-28.
pub fn cacheable(method: &str) -> bool {
    matches!(
        method,
        "tools/list"
            | "prompts/list"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
    )
}

/// Server capabilities as JSON, the same in both eras: list changes are announced (legacy:
/// unsolicited notifications; modern: on `subscriptions/listen`) and resources can be
/// subscribed to when an upstream can (legacy: `resources/subscribe`; modern: a listen's
/// `resourceSubscriptions`).
pub fn capabilities(caps: &UpstreamCaps) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    if caps.tools {
        out.insert("tools".into(), json!({"listChanged": true}));
    }
    if caps.prompts {
        out.insert("prompts".into(), json!({"listChanged": true}));
    }
    if caps.resources {
        out.insert(
            "resources".into(),
            json!({"listChanged": true, "subscribe": caps.subscribe}),
        );
    }
    if caps.logging {
        out.insert("logging".into(), json!({}));
    }
    if caps.completions {
        out.insert("completions".into(), json!({}));
    }
    out
}

/// The `DiscoverResult`.
pub fn discover_result(caps: &UpstreamCaps, instructions: Option<String>) -> serde_json::Value {
    let mut result = json!({
        "resultType": "complete",
        "supportedVersions": supported_versions(),
        "capabilities": capabilities(caps),
        "_meta": {"io.modelcontextprotocol/serverInfo": server_info()},
        "ttlMs": TTL_MS,
        "cacheScope": CACHE_SCOPE,
    });
    if caps.tasks {
        result["capabilities"]["extensions"] = json!({ super::tasks::EXTENSION: {} });
    }
    if let Some(text) = instructions {
        result["instructions"] = json!(text);
    }
    result
}

/// mcpd's own identity.
pub fn server_info() -> serde_json::Value {
    json!({"name": "mcpd", "title": "mcpd (shared MCP servers)", "version": env!("CARGO_PKG_VERSION")})
}

/// `line` (a response) as a modern client must see it: `resultType` (and, when `cacheable`,
/// `ttlMs` and `cacheScope`) spliced into the front of its `result` object when missing. Error
/// responses and anything unreadable pass unchanged.
pub fn complete(line: String, cacheable: bool) -> String {
    let Ok(msg) = Envelope::parse(&line) else {
        return line;
    };
    let Some(result) = msg.result.filter(|r| r.get().starts_with('{')) else {
        return line;
    };
    let has = |key: &str| member(result, key).is_some();
    let mut add = Vec::new();
    if !has("resultType") {
        add.push("\"resultType\":\"complete\"".to_owned());
    }
    if cacheable {
        if !has("ttlMs") {
            add.push(format!("\"ttlMs\":{TTL_MS}"));
        }
        if !has("cacheScope") {
            add.push(format!("\"cacheScope\":\"{CACHE_SCOPE}\""));
        }
    }
    let Some(range) = envelope::span(&line, result).filter(|_| !add.is_empty()) else {
        return line;
    };
    let empty = result.get()[1..].trim_start().starts_with('}');
    let mut insert = add.join(",");
    if !empty {
        insert.push(',');
    }
    let at = range.start + 1;
    let mut out = String::with_capacity(line.len() + insert.len());
    out.push_str(&line[..at]);
    out.push_str(&insert);
    out.push_str(&line[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Envelope<'_> {
        Envelope::parse(text).expect("valid message")
    }

    #[test]
    fn a_request_is_modern_only_when_its_meta_names_the_protocol_version() {
        let legacy = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"progressToken":1}}}"#;
        assert!(matches!(era(&parse(legacy)), Era::Legacy));
        let bare = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        assert!(matches!(era(&parse(bare)), Era::Legacy));
        let modern = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"c","version":"1"},"io.modelcontextprotocol/logLevel":"debug"}}}"#;
        match era(&parse(modern)) {
            Era::Modern(meta) => {
                assert_eq!(meta.client, Some(("c".into(), "1".into())));
                assert_eq!(meta.log_level.as_deref(), Some("debug"));
            }
            other => panic!("{other:?}"),
        }
        let old = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"1900-01-01"}}}"#;
        assert!(matches!(era(&parse(old)), Era::Unsupported(v) if v == "1900-01-01"));
    }

    #[test]
    fn completing_splices_only_the_missing_fields_and_keeps_every_other_byte() {
        let line = r#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"1.50"}],"n":1.50}}"#;
        assert_eq!(
            complete(line.to_owned(), false),
            r#"{"jsonrpc":"2.0","id":7,"result":{"resultType":"complete","content":[{"type":"text","text":"1.50"}],"n":1.50}}"#
        );
        let empty = r#"{"jsonrpc":"2.0","id":7,"result":{ }}"#;
        assert_eq!(
            complete(empty.to_owned(), true),
            r#"{"jsonrpc":"2.0","id":7,"result":{"resultType":"complete","ttlMs":0,"cacheScope":"private" }}"#
        );
        let had =
            r#"{"jsonrpc":"2.0","id":7,"result":{"resultType":"complete","ttlMs":5,"tools":[]}}"#;
        assert_eq!(
            complete(had.to_owned(), true),
            r#"{"jsonrpc":"2.0","id":7,"result":{"cacheScope":"private","resultType":"complete","ttlMs":5,"tools":[]}}"#
        );
        let error = r#"{"jsonrpc":"2.0","id":7,"error":{"code":-1,"message":"x"}}"#;
        assert_eq!(complete(error.to_owned(), true), error);
    }

    #[test]
    fn the_unsupported_version_error_lists_what_mcpd_speaks() {
        let id = RawValue::from_string("3".into()).expect("raw id");
        let answer: serde_json::Value =
            serde_json::from_str(&unsupported(&id, "1900-01-01")).expect("json");
        assert_eq!(answer["error"]["code"], -32022);
        assert_eq!(answer["error"]["data"]["requested"], "1900-01-01");
        assert_eq!(answer["error"]["data"]["supported"][0], MODERN_VERSION);
        assert!(
            answer["error"]["data"]["supported"]
                .as_array()
                .is_some_and(|s| s.contains(&json!("2025-11-25")))
        );
    }
}
