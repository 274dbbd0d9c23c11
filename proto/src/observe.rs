//! Control messages that show what flows through the daemon: tool pins (`mcpctl tools diff`,
//! `approve`, `check`), live traffic (`mcpctl traffic`) and statistics (`mcpctl stats`), and the
//! audit log's line format (`mcpctl audit` reads the files itself).
//!
//! Like everything on the socket, these tolerate fields they do not know.

use serde::{Deserialize, Serialize};

/// A tool or prompt definition that differs from its pin, or that is new since the server was
/// first pinned. Answer to `tools-diff`, one per item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PinChange {
    /// `tool` or `prompt`.
    pub kind: String,
    /// Its name on the server (not namespaced).
    pub name: String,
    /// `changed` (differs from its pin) or `new` (appeared after the server was pinned).
    pub change: String,
    /// What the policy does with it: `block` (withheld from clients), `warn` (served).
    pub action: String,
    /// The pinned definition (canonical, keys sorted); `None` for a new item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<serde_json::Value>,
    /// The definition the server offers now (canonical, keys sorted).
    pub current: serde_json::Value,
    /// Digest of the pinned definition (`sha256:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_digest: Option<String>,
    /// Digest of the current definition.
    #[serde(default)]
    pub current_digest: String,
}

/// Answer to `tools-diff`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PinDiff {
    /// The server.
    pub server: String,
    /// Its items that differ from their pins, in name order.
    #[serde(default)]
    pub changes: Vec<PinChange>,
}

/// One finding of the poisoning checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The server.
    pub server: String,
    /// `tool` or `prompt`.
    pub kind: String,
    /// Its name on the server.
    pub name: String,
    /// Which check: `invisible-unicode`, `bidi-control`, `model-directive`, `other-tool`,
    /// `sensitive-file`, `long-description`.
    pub check: String,
    /// What was found, printable (invisible characters shown as `U+200B`).
    pub detail: String,
}

/// Answer to `tools-check`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    /// Servers checked, in name order.
    #[serde(default)]
    pub servers: Vec<String>,
    /// Tools and prompts checked.
    #[serde(default)]
    pub items: usize,
    /// What was found.
    #[serde(default)]
    pub findings: Vec<Finding>,
}

/// `→` a client's message to mcpd, `←` mcpd's message to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// From the client.
    In,
    /// To the client.
    Out,
    /// A direction this build does not know.
    #[serde(other)]
    Unknown,
}

/// One MCP message seen by `mcpctl traffic`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficMessage {
    /// Increases by one per message over the daemon's life.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The client session.
    pub session: u64,
    /// Which way it went.
    pub direction: Direction,
    /// The upstream server it concerns, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// One line: method, name, id, outcome.
    pub summary: String,
    /// Size of the message in bytes.
    #[serde(default)]
    pub bytes: usize,
    /// The whole message with every known secret redacted (with `full`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<String>,
}

/// One batch of `mcpctl traffic` (the first one, empty, says the viewer is attached).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrafficReply {
    /// Messages, oldest first.
    #[serde(default)]
    pub messages: Vec<TrafficMessage>,
    /// The viewer fell behind and this many messages were skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<u64>,
}

/// Calls, errors and latency of one tool (or method) of one server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallStats {
    /// The tool, prompt or resource method.
    pub name: String,
    /// Requests answered.
    pub calls: u64,
    /// Answered with a JSON-RPC error (or a tool result with `isError`).
    pub errors: u64,
    /// Latency percentiles in milliseconds (histogram estimates, within 10%).
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

/// One server's totals and its tools.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerStats {
    /// The server.
    pub server: String,
    /// All its requests together.
    pub total: CallStats,
    /// Per tool (or method), in name order.
    #[serde(default)]
    pub tools: Vec<CallStats>,
}

/// Answer to `stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsReport {
    /// Milliseconds since the daemon started (the statistics cover that time).
    pub since_start_ms: u64,
    /// Per server, in name order.
    #[serde(default)]
    pub servers: Vec<ServerStats>,
    /// Audit lines dropped because the writer fell behind.
    #[serde(default)]
    pub audit_dropped: u64,
}

/// One line of the audit log (`$XDG_STATE_HOME/mcpd/audit/*.jsonl`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// RFC 3339 UTC time the request arrived.
    pub time: String,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The daemon's session id.
    pub session: u64,
    /// `clientInfo.name` of the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// `clientInfo.version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_version: Option<String>,
    /// Pid of the client process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The profile the session attached to.
    pub profile: String,
    /// The upstream server the request went to; none when mcpd answered it itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The JSON-RPC method.
    pub method: String,
    /// Tool or prompt name (as the client named it) or resource URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Milliseconds from the request to its answer.
    pub duration_ms: f64,
    /// `ok` or `error`.
    pub outcome: String,
    /// The JSON-RPC error code, for errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i64>,
    /// A tool result with `isError: true` (the call itself succeeded).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tool_error: bool,
    /// Bytes of the request.
    pub bytes_in: usize,
    /// Bytes of the answer.
    pub bytes_out: usize,
    /// The request's arguments, secrets redacted (only with `"audit": {"arguments": true}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<serde_json::Value>,
    /// Set on a line that reports lines lost because the writer fell behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
}

// The character classes `poison` flags in tool definitions, shared with `mcpctl tools`, which
// shows such characters escaped.

/// Characters that render as nothing: zero-width, word joiners, soft hyphen, the tag block,
/// variation selectors.
pub fn is_invisible(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180B..=0x180E
        | 0x200B..=0x200D | 0x2060..=0x2064 | 0x3164 | 0xFE00..=0xFE0F | 0xFEFF | 0xFFA0
        | 0x1D173..=0x1D17A | 0xE0000..=0xE007F | 0xE0100..=0xE01EF)
}

/// Characters that reorder text as displayed.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c as u32, 0x061C | 0x200E | 0x200F | 0x202A..=0x202E | 0x2066..=0x2069)
}

/// Milliseconds since the epoch as an RFC 3339 UTC time with milliseconds.
pub fn utc_time(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Written digit by digit: `format!` with padding cost a few thousand instructions per
    // audited call.
    if !(0..=9999).contains(&year) {
        return format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            ms % 1000
        );
    }
    let mut out = String::with_capacity(24);
    let parts = [
        (year.unsigned_abs(), 4, '-'),
        (month.unsigned_abs(), 2, '-'),
        (day.unsigned_abs(), 2, 'T'),
        (rem / 3600, 2, ':'),
        (rem % 3600 / 60, 2, ':'),
        (rem % 60, 2, '.'),
        (ms % 1000, 3, 'Z'),
    ];
    for (n, width, after) in parts {
        for place in (0..width).rev() {
            let digit = u8::try_from(n / 10u64.pow(place) % 10).unwrap_or(0);
            out.push(char::from(b'0' + digit));
        }
        out.push(after);
    }
    out
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn times_are_utc() {
        assert_eq!(utc_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_time(1_709_251_199_123), "2024-02-29T23:59:59.123Z");
        assert_eq!(utc_time(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(utc_time(253_402_300_800_000), "10000-01-01T00:00:00.000Z");
        // Every field's digits, across a range of instants.
        let mut ms = 7u64;
        for _ in 0..2000 {
            ms = ms.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1) % 4_102_444_800_000;
            let t = utc_time(ms);
            assert_eq!(t.len(), 24, "{t}");
            assert_eq!(&t[20..23], format!("{:03}", ms % 1000), "{t}");
            let secs = ms / 1000 % 86_400;
            let hms = format!(
                "{:02}:{:02}:{:02}",
                secs / 3600,
                secs % 3600 / 60,
                secs % 60
            );
            assert_eq!(&t[11..19], hms, "{t}");
        }
    }

    #[test]
    fn audit_records_leave_out_what_they_do_not_have() {
        let r = AuditRecord {
            method: "ping".into(),
            outcome: "ok".into(),
            ..Default::default()
        };
        let line = serde_json::to_string(&r).unwrap();
        assert!(
            !line.contains("arguments") && !line.contains("server"),
            "{line}"
        );
        let back: AuditRecord =
            serde_json::from_str(&line.replace('}', r#","future":1}"#)).unwrap();
        assert_eq!(back, r);
    }
}
