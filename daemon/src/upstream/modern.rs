//! The 2026-07-28 ("modern") era towards upstream servers: the `server/discover` probe and its
//! outcome, the per-request `_meta` every request to a modern server carries, and the HTTP
//! headers (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`) of a modern request.
//!
//! Which era a server is spoken to in is decided once per process start by the actor
//! (`config::protocol`): `legacy` sends `initialize`; `2026-07-28` sends `server/discover` and
//! fails if the server is not modern; `auto` uses the era the catalog cache remembers, else
//! probes with `server/discover` and falls back to `initialize` on any answer that is not a
//! `DiscoverResult` (or a recognised modern refusal), or on none within [`PROBE_TIMEOUT`].

use std::time::Duration;

use base64::Engine as _;
use mcpd_proto::envelope::{self, Envelope, member};
use serde_json::value::RawValue;

use super::ClientCaps;

/// The modern protocol revision.
pub(crate) const MODERN_VERSION: &str = crate::config::protocol::MODERN;
/// How long a probe may go unanswered before the server is taken for a legacy one (which may
/// ignore a request that arrives before `initialize`).
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// MCP 2026-07-28: `UnsupportedProtocolVersionError`.
const UNSUPPORTED_PROTOCOL_VERSION: &str = "-32022";

const META: &str = "_meta";
const RESERVED_PREFIX: &str = "io.modelcontextprotocol/";

/// The era a server was found to speak; remembered in the catalog cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Era {
    /// The `initialize` handshake.
    Legacy,
    /// MCP 2026-07-28.
    Modern,
}

/// What a `server/discover` answer says about the server.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    /// A `DiscoverResult` listing 2026-07-28: speak modern.
    Modern,
    /// Anything else: a legacy server; send `initialize` (the reason, for the log).
    Legacy(String),
    /// A modern server that does not speak 2026-07-28 (`-32022` without it or any legacy
    /// version in `data.supported`): nothing to fall back to.
    Refused(String),
}

/// The capabilities object a modern request declares for the client making it: only what mcpd
/// can route back to that client.
pub(crate) fn capabilities_json(caps: &ClientCaps) -> String {
    let mut parts = Vec::new();
    if caps.sampling {
        parts.push(r#""sampling":{}"#.to_owned());
    }
    if caps.elicitation_form || caps.elicitation_url {
        let mut modes = Vec::new();
        if caps.elicitation_form {
            modes.push(r#""form":{}"#);
        }
        if caps.elicitation_url {
            modes.push(r#""url":{}"#);
        }
        parts.push(format!(r#""elicitation":{{{}}}"#, modes.join(",")));
    }
    if caps.roots {
        parts.push(r#""roots":{}"#.to_owned());
    }
    format!("{{{}}}", parts.join(","))
}

/// The members mcpd puts into the `_meta` of a modern request (without braces).
fn meta_members(caps: &ClientCaps, log_level: Option<&str>) -> String {
    let mut out = format!(
        r#""io.modelcontextprotocol/protocolVersion":"{MODERN_VERSION}","io.modelcontextprotocol/clientInfo":{{"name":"mcpd","version":"{}"}},"io.modelcontextprotocol/clientCapabilities":{}"#,
        env!("CARGO_PKG_VERSION"),
        capabilities_json(caps)
    );
    if let Some(level) = log_level {
        out.push_str(r#","io.modelcontextprotocol/logLevel":"#);
        out.push_str(&serde_json::to_string(level).unwrap_or_else(|_| "\"info\"".into()));
    }
    out
}

/// `line` (a request) as a modern server must get it: `params._meta` carries mcpd's protocol
/// version and client info, `caps` (the calling client's capabilities, restricted to what mcpd
/// routes) and `log_level`. The request's own `_meta` members are kept byte for byte, except
/// the reserved `io.modelcontextprotocol/` ones a modern client put there (mcpd speaks for
/// itself upstream); every other byte of the line is unchanged. A line that is not a request
/// object passes unchanged.
pub fn stamp(line: &str, caps: &ClientCaps, log_level: Option<&str>) -> String {
    let Ok(msg) = Envelope::parse(line) else {
        return line.to_owned();
    };
    let ours = meta_members(caps, log_level);
    let mut rw = msg.rewrite();
    match msg.params.filter(|p| p.get().starts_with('{')) {
        None if msg.params.is_some() => return line.to_owned(),
        None => {
            // No params: add them before the message's closing brace.
            let Some(end) = line.rfind('}') else {
                return line.to_owned();
            };
            let mut out = String::with_capacity(line.len() + ours.len() + 24);
            out.push_str(&line[..end]);
            out.push_str(r#","params":{"_meta":{"#);
            out.push_str(&ours);
            out.push_str("}}");
            out.push_str(&line[end..]);
            return out;
        }
        Some(params) => match member(params, META) {
            Some(meta) if meta.get().starts_with('{') => {
                let kept = unreserved_members(meta);
                let mut text = format!("{{{ours}");
                if !kept.is_empty() {
                    text.push(',');
                    text.push_str(&kept);
                }
                text.push('}');
                rw.replace(meta, text);
            }
            Some(other) => rw.replace(other, format!("{{{ours}}}")),
            None => {
                let inner = params.get()[1..].trim_start();
                let sep = if inner.starts_with('}') { "" } else { "," };
                rw.replace(
                    params,
                    format!(r#"{{"_meta":{{{ours}}}{sep}{}"#, &params.get()[1..]),
                );
            }
        },
    }
    rw.finish()
}

/// The members of the JSON object `object` whose keys are not reserved
/// (`io.modelcontextprotocol/...`), comma-separated, each value as it was written.
fn unreserved_members(object: &RawValue) -> String {
    use serde::de::{Deserializer as _, MapAccess, Visitor};
    struct Members;
    impl<'de> Visitor<'de> for Members {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<String, A::Error> {
            let mut out = String::new();
            while let Some((key, value)) = map.next_entry::<String, &'de RawValue>()? {
                if key.starts_with(RESERVED_PREFIX) {
                    continue;
                }
                if !out.is_empty() {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(&key).unwrap_or_default());
                out.push(':');
                out.push_str(value.get());
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_str(object.get());
    de.deserialize_map(Members).unwrap_or_default()
}

/// A request of mcpd's own to a modern server (lists, the probe, health checks): the `_meta`
/// declares no client capabilities.
pub fn request(id: u64, method: &str, params: Option<&serde_json::Value>) -> String {
    stamp(
        &envelope::request(id, method, params),
        &ClientCaps::default(),
        None,
    )
}

/// A notification of mcpd's own to a modern server, with the same `_meta` as its requests.
pub fn notification(method: &str, params: &serde_json::Value) -> String {
    stamp(
        &envelope::notification(method, Some(params)),
        &ClientCaps::default(),
        None,
    )
}

/// What a `server/discover` answer means (see [`Probe`]).
pub(crate) fn probe_outcome(msg: &Envelope<'_>) -> Probe {
    if let Some(result) = msg.result {
        let versions = member(result, "supportedVersions")
            .and_then(|v| serde_json::from_str::<Vec<String>>(v.get()).ok());
        return match versions {
            Some(v) if v.iter().any(|v| v == MODERN_VERSION) => Probe::Modern,
            Some(v) => Probe::Refused(format!(
                "server/discover lists only {} (mcpd speaks {MODERN_VERSION} and the initialize handshake)",
                v.join(", ")
            )),
            None => Probe::Legacy("server/discover answered without supportedVersions".into()),
        };
    }
    let Some(error) = msg.error else {
        return Probe::Legacy("server/discover answered neither result nor error".into());
    };
    let code = member(error, "code").map(RawValue::get);
    if code == Some(UNSUPPORTED_PROTOCOL_VERSION) {
        let supported = member(error, "data")
            .and_then(|d| member(d, "supported"))
            .and_then(|s| serde_json::from_str::<Vec<String>>(s.get()).ok())
            .unwrap_or_default();
        // Revisions are dates: an older one is of the handshake era.
        let legacy = supported.iter().any(|v| v.as_str() < MODERN_VERSION);
        if !legacy && !supported.iter().any(|v| v == MODERN_VERSION) {
            return Probe::Refused(format!(
                "the server does not speak {MODERN_VERSION} (it supports {})",
                if supported.is_empty() {
                    "no version it named".to_owned()
                } else {
                    supported.join(", ")
                }
            ));
        }
    }
    let preview: String = error.get().chars().take(200).collect();
    Probe::Legacy(format!("server/discover was refused: {preview}"))
}

/// What the `DiscoverResult` says: capabilities, instructions and `name version`.
pub(crate) fn discovered(
    result: &RawValue,
) -> (Option<&RawValue>, Option<String>, Option<(String, String)>) {
    use super::actor::ServerInfo;
    let info = member(result, "_meta")
        .and_then(|m| member(m, "io.modelcontextprotocol/serverInfo"))
        .and_then(|i| serde_json::from_str::<ServerInfo>(i.get()).ok())
        .map(|i| (i.name, i.version));
    let instructions =
        member(result, "instructions").and_then(|i| serde_json::from_str::<String>(i.get()).ok());
    (member(result, "capabilities"), instructions, info)
}

/// Whether `line` is a modern request (its `_meta` names the protocol version): the HTTP
/// transport then adds [`http_headers`].
pub(crate) fn is_modern_request(line: &str) -> bool {
    line.contains(r#""io.modelcontextprotocol/protocolVersion""#)
}

/// The HTTP headers of a modern request: `MCP-Protocol-Version`, `Mcp-Method`, and `Mcp-Name`
/// (`params.name`, or `params.uri` for `resources/read`) for `tools/call`, `prompts/get` and
/// `resources/read`; a name that is not plain visible ASCII is sent in the Base64 sentinel form
/// `=?base64?...?=`.
pub(crate) fn http_headers(line: &str) -> Vec<(&'static str, String)> {
    let Ok(msg) = Envelope::parse(line) else {
        return Vec::new();
    };
    let mut out = vec![
        ("mcp-protocol-version", MODERN_VERSION.to_owned()),
        ("mcp-method", msg.method().to_owned()),
    ];
    let key = match msg.method() {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        _ => return out,
    };
    let name = msg
        .params
        .and_then(|p| member(p, key))
        .and_then(|n| envelope::decode_str(n).ok());
    if let Some(name) = name {
        let plain = !name.is_empty()
            && name.bytes().all(|b| (0x20..0x7f).contains(&b))
            && name.trim() == name;
        let value = if plain {
            name.into_owned()
        } else {
            format!(
                "=?base64?{}?=",
                base64::engine::general_purpose::STANDARD.encode(name.as_bytes())
            )
        };
        out.push(("mcp-name", value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps() -> ClientCaps {
        ClientCaps {
            sampling: true,
            elicitation_form: true,
            elicitation_url: false,
            roots: false,
        }
    }

    fn meta_of(line: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        v["params"]["_meta"].clone()
    }

    #[test]
    fn stamping_adds_the_envelope_and_keeps_every_other_byte() {
        let line = r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"t","arguments":{"n":1.50}}}"#;
        let out = stamp(line, &caps(), Some("debug"));
        assert!(out.contains(r#""arguments":{"n":1.50}"#), "{out}");
        let meta = meta_of(&out);
        assert_eq!(
            meta["io.modelcontextprotocol/protocolVersion"],
            MODERN_VERSION
        );
        assert_eq!(meta["io.modelcontextprotocol/clientInfo"]["name"], "mcpd");
        assert_eq!(
            meta["io.modelcontextprotocol/clientCapabilities"],
            serde_json::json!({"sampling": {}, "elicitation": {"form": {}}})
        );
        assert_eq!(meta["io.modelcontextprotocol/logLevel"], "debug");
    }

    #[test]
    fn a_clients_own_meta_is_kept_but_its_reserved_keys_are_mcpds() {
        let line = r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"_meta":{"progressToken":7,"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"roots":{}},"x":[1.0]},"name":"t"}}"#;
        let out = stamp(line, &ClientCaps::default(), None);
        let meta = meta_of(&out);
        assert_eq!(meta["progressToken"], 7);
        assert!(out.contains(r#""x":[1.0]"#), "{out}");
        assert_eq!(
            meta["io.modelcontextprotocol/clientCapabilities"],
            serde_json::json!({})
        );
        assert_eq!(out.matches("protocolVersion").count(), 1, "{out}");
    }

    #[test]
    fn a_request_without_params_or_with_empty_params_gets_them() {
        for line in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{ }}"#,
        ] {
            let out = stamp(line, &ClientCaps::default(), None);
            assert_eq!(
                meta_of(&out)["io.modelcontextprotocol/protocolVersion"],
                MODERN_VERSION,
                "{out}"
            );
        }
    }

    fn outcome(text: &str) -> Probe {
        probe_outcome(&Envelope::parse(text).expect("message"))
    }

    #[test]
    fn the_probe_falls_back_on_anything_but_a_modern_answer() {
        assert_eq!(
            outcome(
                r#"{"jsonrpc":"2.0","id":1,"result":{"supportedVersions":["2026-07-28"],"capabilities":{}}}"#
            ),
            Probe::Modern
        );
        for legacy in [
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"Method not found"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"Invalid request parameters","data":""}}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":"nope"}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32022,"message":"x","data":{"supported":["2025-06-18"]}}}"#,
        ] {
            assert!(matches!(outcome(legacy), Probe::Legacy(_)), "{legacy}");
        }
        assert!(matches!(
            outcome(
                r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32022,"message":"x","data":{"supported":["2027-01-01"]}}}"#
            ),
            Probe::Refused(_)
        ));
    }

    #[test]
    fn http_headers_name_the_method_and_the_item() {
        let line = stamp(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_weather"}}"#,
            &ClientCaps::default(),
            None,
        );
        assert!(is_modern_request(&line));
        let headers = http_headers(&line);
        assert!(headers.contains(&("mcp-method", "tools/call".into())));
        assert!(headers.contains(&("mcp-name", "get_weather".into())));
        let odd = http_headers(
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///ä"}}"#,
        );
        assert!(odd.contains(&("mcp-name", "=?base64?ZmlsZTovLy/DpA==?=".into())));
    }
}
