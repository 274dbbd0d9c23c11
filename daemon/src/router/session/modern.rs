//! The 2026-07-28 ("modern") era towards clients: `server/discover`, per-request `_meta`, and
//! the result fields modern clients require.
//!
//! The era is decided per request, here: a request whose `params._meta` names
//! `io.modelcontextprotocol/protocolVersion` is modern and is served without `initialize`;
//! anything else is legacy and served as before. A modern request's answer gets `resultType`
//! (and, for cacheable results, `ttlMs` and `cacheScope`) spliced into its `result` object when
//! missing; every other byte stays as mcpd or the upstream wrote it (invariant 1). Upstreams
//! are spoken to in their own era (`upstream::modern`, `router::mrtr`).

use std::borrow::Cow;

use mcpd_proto::envelope::{self, Envelope};
use mcpd_proto::peek;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::upstream::{ClientCaps, UpstreamCaps};

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
const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";

/// Every protocol revision mcpd speaks to clients, newest first: the modern one, then the
/// legacy ones `initialize` negotiates.
pub fn supported_versions() -> Vec<&'static str> {
    std::iter::once(MODERN_VERSION)
        .chain(super::SUPPORTED_PROTOCOLS.iter().copied())
        .collect()
}

/// What a modern request says about its client in `params._meta`, read in one scan of it.
#[derive(Debug)]
pub struct Meta<'a> {
    /// `io.modelcontextprotocol/clientInfo` as the client wrote it; decoded only when the
    /// session records it ([`Meta::client`]), once.
    client_info: Option<&'a str>,
    /// `io.modelcontextprotocol/logLevel`, decoded (`None` also when it is not a string).
    pub log_level: Option<Cow<'a, str>>,
    /// The request's own declaration: capabilities, the tasks extension, a retry's state.
    pub declared: Declared,
}

impl Meta<'_> {
    /// `io.modelcontextprotocol/clientInfo`: name and version.
    pub fn client(&self) -> Option<(String, String)> {
        self.client_info
            .and_then(|i| serde_json::from_str::<Info>(i).ok())
            .map(|i| (i.name, i.version))
    }
}

/// What one modern request declares for itself, owned (it goes with the request's task): the
/// 2026-07-28 client has no session state, so nothing here is taken from an earlier request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Declared {
    /// `io.modelcontextprotocol/clientCapabilities`, as far as mcpd routes them.
    pub caps: ClientCaps,
    /// Whether those capabilities declare the tasks extension ([`super::tasks::EXTENSION`]).
    pub tasks: bool,
    /// Whether `params` carry a `requestState` (a retry, checked before anything is routed;
    /// also when a member of `params` is there twice, so that the check refuses it).
    pub retry: bool,
}

/// How a request declares its era.
#[derive(Debug)]
pub enum Era<'a> {
    /// No protocol version in `_meta`: legacy (or, for `server/discover`, a bare probe).
    Legacy,
    /// `2026-07-28` in `_meta`.
    Modern(Meta<'a>),
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

/// The members `keys` of the JSON object `json` (valid JSON: a `RawValue`'s text or a part of
/// one) as text: the byte scan, or the parser where the scan does not apply (escaped keys,
/// duplicates; the parser's error, e.g. a duplicate, is `None`). A member's value is part of
/// checked JSON already, so it is not checked again.
fn members<'a, const N: usize>(json: &'a str, keys: [&str; N]) -> Option<[Option<&'a str>; N]> {
    if let Some(found) = peek::members(json, keys) {
        return Some(found);
    }
    let found = envelope::fields(json, keys).ok()?;
    Some(found.map(|v| v.map(RawValue::get)))
}

/// A JSON string's text, decoded; `None` if `raw` is not a string.
fn string(raw: &str) -> Option<Cow<'_, str>> {
    match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(plain) if !plain.contains('\\') => Some(Cow::Borrowed(plain)),
        _ => serde_json::from_str::<String>(raw).ok().map(Cow::Owned),
    }
}

/// The era `msg` declares, and for a modern request everything its `_meta` says, from one scan
/// of `params` and one of `_meta`.
pub fn era<'a>(msg: &Envelope<'a>) -> Era<'a> {
    let Some(params) = msg.params else {
        return Era::Legacy;
    };
    // The scan of `params` the envelope shares (the audit and routing read it too), when it
    // applies; else one of these two members alone.
    let shared = msg.param_text("_meta").zip(msg.param_text("requestState"));
    let (meta, retry) = match shared
        .or_else(|| members(params.get(), ["_meta", "requestState"]).map(|[m, s]| (m, s)))
    {
        Some((meta, state)) => (meta, state.is_some()),
        // A member twice: `_meta` alone decides the era, and the retry's check runs (it refuses
        // a `requestState` given twice).
        None => (members(params.get(), ["_meta"]).and_then(|[m]| m), true),
    };
    let Some([version, client_info, log_level, caps]) =
        meta.filter(|m| m.starts_with('{')).and_then(|m| {
            members(
                m,
                [
                    META_VERSION,
                    META_CLIENT_INFO,
                    META_LOG_LEVEL,
                    META_CAPABILITIES,
                ],
            )
        })
    else {
        return Era::Legacy;
    };
    let Some(version) = version else {
        return Era::Legacy;
    };
    let plain = version.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
    if plain != Some(MODERN_VERSION) {
        match string(version) {
            Some(v) if v == MODERN_VERSION => {}
            Some(v) => return Era::Unsupported(v.into_owned()),
            None => return Era::Unsupported(version.to_owned()),
        }
    }
    let (caps, tasks) = caps.map(client_caps).unwrap_or_default();
    Era::Modern(Meta {
        client_info,
        log_level: log_level.and_then(string),
        declared: Declared { caps, tasks, retry },
    })
}

/// What a request forwarded upstream declares for itself in `params._meta`, from one scan of
/// each: a modern request's capabilities (`None` without a protocol version: a legacy
/// session's `initialize` declared them) and the log level it asks for (a known one).
pub fn request_meta(msg: &Envelope<'_>) -> (Option<ClientCaps>, Option<String>) {
    let found = msg
        .param("_meta")
        .map(RawValue::get)
        .filter(|m| m.starts_with('{'))
        .and_then(|m| members(m, [META_VERSION, META_CAPABILITIES, META_LOG_LEVEL]));
    let Some([version, caps, level]) = found else {
        return (None, None);
    };
    let caps = version.map(|_| caps.map(client_caps).unwrap_or_default().0);
    let level = level
        .and_then(string)
        .filter(|l| super::super::hub::log_rank(l).is_some())
        .map(Cow::into_owned);
    (caps, level)
}

/// What `caps` (a modern request's `clientCapabilities`, valid JSON) declares: the
/// capabilities mcpd routes, and whether it declares the tasks extension. The same answers as
/// [`ClientCaps::from_json`] of the decoded value.
pub fn client_caps(caps: &str) -> (ClientCaps, bool) {
    let scanned = peek::members(caps, ["sampling", "elicitation", "roots", "extensions"]).and_then(
        |[sampling, elicitation, roots, extensions]| {
            let [form, url] = match elicitation {
                Some(e) => peek::members(e, ["form", "url"])?,
                None => [None, None],
            };
            let tasks = match extensions {
                Some(e) => peek::members(e, [super::tasks::EXTENSION])?[0].is_some(),
                None => false,
            };
            let caps = ClientCaps {
                sampling: sampling.is_some(),
                elicitation_form: elicitation.is_some() && (form.is_some() || url.is_none()),
                elicitation_url: url.is_some(),
                roots: roots.is_some(),
            };
            Some((caps, tasks))
        },
    );
    if let Some(found) = scanned {
        return found;
    }
    // Escaped keys, duplicates, or not objects: as the decoded value says.
    let value = serde_json::from_str::<serde_json::Value>(caps).ok();
    let tasks = value
        .as_ref()
        .and_then(|v| v.get("extensions"))
        .and_then(|e| e.get(super::tasks::EXTENSION))
        .is_some();
    (ClientCaps::from_json(value.as_ref()), tasks)
}

/// A modern request on its way to its answer.
#[derive(Debug, Clone, Copy)]
pub struct Modern {
    /// What it declared in its `_meta`.
    pub declared: Declared,
    /// Whether its result is a `CacheableResult` ([`cacheable`]).
    pub cacheable: bool,
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
/// responses and anything unreadable pass unchanged. The line is one mcpd built or checked (an
/// upstream's answer was parsed on its way in), so its members are found by the byte scan.
pub fn complete(line: String, cacheable: bool) -> String {
    let Some([result]) = members(&line, ["result"]) else {
        return line;
    };
    let Some(result) = result.filter(|r| r.starts_with('{')) else {
        return line;
    };
    let Some([kind, ttl, scope]) = members(result, ["resultType", "ttlMs", "cacheScope"]) else {
        return line;
    };
    let mut insert = String::new();
    let mut add = |member: &str| {
        if !insert.is_empty() {
            insert.push(',');
        }
        insert.push_str(member);
    };
    if kind.is_none() {
        add("\"resultType\":\"complete\"");
    }
    if cacheable {
        if ttl.is_none() {
            add(&format!("\"ttlMs\":{TTL_MS}"));
        }
        if scope.is_none() {
            add(&format!("\"cacheScope\":\"{CACHE_SCOPE}\""));
        }
    }
    if insert.is_empty() {
        return line;
    }
    if !result[1..].trim_start().starts_with('}') {
        insert.push(',');
    }
    // `result` borrows from `line`: where its `{` is.
    let at = result.as_ptr() as usize - line.as_ptr() as usize + 1;
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
                assert_eq!(meta.client(), Some(("c".into(), "1".into())));
                assert_eq!(meta.log_level.as_deref(), Some("debug"));
            }
            other => panic!("{other:?}"),
        }
        let old = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"1900-01-01"}}}"#;
        assert!(matches!(era(&parse(old)), Era::Unsupported(v) if v == "1900-01-01"));
    }

    fn declared(text: &str) -> Declared {
        match era(&parse(text)) {
            Era::Modern(meta) => meta.declared,
            other => panic!("not modern: {other:?}"),
        }
    }

    #[test]
    fn one_scan_of_meta_reads_what_each_request_declares_for_itself() {
        let with = |caps: &str, rest: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"x"{rest},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{caps}}}}}}}"#
            )
        };
        let all = with(
            r#"{"sampling":{},"elicitation":{"url":{}},"roots":{"listChanged":true},"extensions":{"io.modelcontextprotocol/tasks":{}}}"#,
            "",
        );
        assert_eq!(
            declared(&all),
            Declared {
                caps: ClientCaps {
                    sampling: true,
                    elicitation_form: false,
                    elicitation_url: true,
                    roots: true,
                },
                tasks: true,
                retry: false,
            }
        );
        let none = with("{}", r#","requestState":"s""#);
        assert_eq!(
            declared(&none),
            Declared {
                retry: true,
                ..Declared::default()
            }
        );
        // Escaped keys are read by the parser: the same declaration.
        let escaped = with(
            r#"{"s\u0061mpling":{},"elicitation":{},"extensions":{"io.modelcontextprotocol/t\u0061sks":{}}}"#,
            r#","request\u0053tate":"s""#,
        );
        let d = declared(&escaped);
        assert!(d.caps.sampling && d.caps.elicitation_form && d.tasks && d.retry);
        // `requestState` twice: the retry's check runs (and refuses it).
        let twice = with("{}", r#","requestState":"a","requestState":"b""#);
        assert!(declared(&twice).retry);
    }

    #[test]
    fn scanned_capabilities_agree_with_the_decoded_value() {
        for caps in [
            "{}",
            r#"{"sampling":{}}"#,
            r#"{"elicitation":{}}"#,
            r#"{"elicitation":{"form":{},"url":{}}}"#,
            r#"{"elicitation":{"url":{}}}"#,
            r#"{"elicitation":true}"#,
            r#"{"roots":null}"#,
            r#"{"roots":{},"roots":{}}"#,
            r#"{"r\u006fots":{}}"#,
            r#"[]"#,
            r#"{"extensions":{"io.modelcontextprotocol/tasks":{}}}"#,
            r#"{"extensions":[]}"#,
        ] {
            let value: serde_json::Value = serde_json::from_str(caps).expect("json");
            let tasks = value
                .get("extensions")
                .and_then(|e| e.get(crate::router::session::tasks::EXTENSION))
                .is_some();
            assert_eq!(
                client_caps(caps),
                (ClientCaps::from_json(Some(&value)), tasks),
                "{caps}"
            );
        }
    }

    #[test]
    fn a_forwarded_request_declares_caps_only_with_a_version_and_known_log_levels_only() {
        let meta = |meta: &str| {
            let text = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"x","_meta":{meta}}}}}"#
            );
            request_meta(&parse(&text))
        };
        assert_eq!(meta(r#"{"progressToken":1}"#), (None, None));
        assert_eq!(
            meta(
                r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"roots":{}},"io.modelcontextprotocol/logLevel":"warning"}"#
            ),
            (
                Some(ClientCaps {
                    roots: true,
                    ..ClientCaps::default()
                }),
                Some("warning".to_owned())
            )
        );
        assert_eq!(
            meta(
                r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/logLevel":"loud"}"#
            ),
            (Some(ClientCaps::default()), None)
        );
        let bare = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        assert_eq!(request_meta(&parse(bare)), (None, None));
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
        let spaced = "{\"jsonrpc\":\"2.0\",\"id\":7, \"result\" : {\"n\":1.50}}";
        assert_eq!(
            complete(spaced.to_owned(), false),
            "{\"jsonrpc\":\"2.0\",\"id\":7, \"result\" : {\"resultType\":\"complete\",\"n\":1.50}}"
        );
        let escaped = r#"{"jsonrpc":"2.0","id":7,"r\u0065sult":{"resultType":"complete"}}"#;
        assert_eq!(complete(escaped.to_owned(), false), escaped);
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
