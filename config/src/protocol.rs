//! A server's protocol era, `"protocol": "auto" | "legacy" | "2026-07-28"` in its definition.
//!
//! `auto` (the default) probes a server with `server/discover` at its first start, following the
//! stdio backward-compatibility rules of MCP 2026-07-28, and falls back to `initialize` on any
//! answer that is not modern; the outcome is remembered with the catalog cache, so later starts
//! skip the probe. `legacy` always sends `initialize` (for servers that misbehave when probed);
//! `2026-07-28` never does (a modern-only server, no probe).

use serde_json::Value;

/// The modern protocol revision, as the key spells it.
pub const MODERN: &str = "2026-07-28";

/// How mcpd decides which era to speak to a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// Probe with `server/discover`, fall back to `initialize`; remembered in the cache.
    #[default]
    Auto,
    /// The `initialize` handshake (MCP 2025-11-25 and earlier), never probed.
    Legacy,
    /// MCP 2026-07-28: per-request `_meta`, no handshake.
    Modern,
}

impl Protocol {
    /// As the configuration spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Legacy => "legacy",
            Self::Modern => MODERN,
        }
    }
}

/// Why a `"protocol"` value was refused; says the values it may take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A string that names no protocol era.
    #[error(
        "unknown protocol \"{0}\"; expected \"auto\" (probe the server, the default), \"legacy\" (always `initialize`) or \"{MODERN}\" (a modern-only server)"
    )]
    Unknown(String),
    /// Not a string (the JSON value as written).
    #[error("expected one of \"auto\", \"legacy\" or \"{MODERN}\", found {0}")]
    NotAString(String),
}

/// Reads `"protocol"`.
pub fn parse(value: &Value) -> Result<Protocol, ProtocolError> {
    match value.as_str() {
        Some("auto") => Ok(Protocol::Auto),
        Some("legacy") => Ok(Protocol::Legacy),
        Some(MODERN) => Ok(Protocol::Modern),
        Some(other) => Err(ProtocolError::Unknown(other.to_owned())),
        None => Err(ProtocolError::NotAString(value.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_three_spellings_are_read_and_anything_else_says_what_is_expected() {
        assert_eq!(parse(&json!("auto")), Ok(Protocol::Auto));
        assert_eq!(parse(&json!("legacy")), Ok(Protocol::Legacy));
        assert_eq!(parse(&json!("2026-07-28")), Ok(Protocol::Modern));
        let wrong = parse(&json!("2025-11-25")).unwrap_err();
        assert_eq!(wrong, ProtocolError::Unknown("2025-11-25".into()));
        let wrong = wrong.to_string();
        assert!(
            wrong.contains("\"2025-11-25\"") && wrong.contains("\"legacy\""),
            "{wrong}"
        );
        let kind = parse(&json!(2026)).unwrap_err().to_string();
        assert!(kind.contains("found 2026"), "{kind}");
        assert_eq!(Protocol::default(), Protocol::Auto);
    }
}
