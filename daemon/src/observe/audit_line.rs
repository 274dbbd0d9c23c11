//! One audit record as its JSON line, written by hand.
//!
//! `serde_json::to_string` of an [`AuditRecord`] was three quarters of the audit writer's
//! instructions per call (about 5,200 of the daemon's 70,000 per `tools/call`, callgrind:
//! docs/BENCHMARKS.md "Hot path"): a serializer state per member, a `String` grown several
//! times. This writes the same bytes into a buffer the writer reuses: the members in the
//! struct's order, the optional ones left out as its `skip_serializing_if`s say, strings
//! escaped exactly as serde_json escapes them (`"`, `\`, and control characters: `\b`, `\t`,
//! `\n`, `\f`, `\r`, else `\u00XX`; everything else, 0x7F and non-ASCII included, as is). The
//! two members whose text is not plain (the duration, a float, and the recorded arguments, a
//! JSON value) are written by serde_json itself. The tests check the bytes against
//! `serde_json::to_string` for hostile strings.

use mcpd_proto::observe::AuditRecord;

use super::audit::Who;

/// The `time` of records that leave it empty (sessions do: see [`Clock`]).
///
/// Sessions leave a record's RFC 3339 `time` to the writer thread, which derives it from
/// `time_ms`: the date and time of day are formatted once per second, only the milliseconds
/// per line (formatting the whole text was about 1,000 instructions per call, in the session).
#[derive(Debug, Default)]
pub struct Clock {
    /// The second `text` was formatted for.
    second: Option<u64>,
    /// `utc_time` of that second: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    text: [u8; 24],
    /// `utc_time` of a year outside 0..=9999, which is not 24 bytes long.
    other: String,
}

impl Clock {
    /// [`mcpd_proto::observe::utc_time`] of `ms`, as bytes (ASCII).
    fn time(&mut self, ms: u64) -> &[u8] {
        let second = ms / 1000;
        if self.second != Some(second) {
            let text = mcpd_proto::observe::utc_time(ms);
            if text.len() != self.text.len() {
                // Formatted whole each time.
                self.second = None;
                self.other = text;
                return self.other.as_bytes();
            }
            self.text.copy_from_slice(text.as_bytes());
            self.second = Some(second);
        }
        let millis = ms % 1000;
        // The three digits before the final `Z`.
        self.text[20..23].copy_from_slice(
            &[millis / 100, millis / 10 % 10, millis % 10].map(|d| b'0' + d as u8),
        );
        &self.text
    }
}

/// Appends `record` as one JSON object (no newline) to `out`; an empty `time` is `time_ms`'s
/// (see [`Clock`]), a client, client version or profile the record leaves out `who`'s.
#[cfg(test)]
pub fn write(out: &mut Vec<u8>, record: &AuditRecord, who: &Who, clock: &mut Clock) {
    write_line(out, &Line::of(record, who), clock);
}

/// The members of one line, borrowed: from an [`AuditRecord`] (the writer's own notes) or a
/// session's entry (`audit::Entry`, which keeps its texts inline).
#[derive(Debug, Default)]
pub struct Line<'a> {
    /// Empty: `time_ms`'s (see [`Clock`]).
    pub time: &'a str,
    pub time_ms: u64,
    pub session: u64,
    pub client: Option<&'a str>,
    pub client_version: Option<&'a str>,
    pub pid: Option<u32>,
    pub profile: &'a str,
    /// The server, method and name as bytes of UTF-8 (an entry's texts are written without
    /// being checked as UTF-8 again: `Text::as_bytes`).
    pub server: Option<&'a [u8]>,
    pub method: &'a [u8],
    pub name: Option<&'a [u8]>,
    pub duration_ms: f64,
    pub outcome: &'a str,
    pub error_code: Option<i64>,
    pub tool_error: bool,
    pub bytes_in: usize,
    pub bytes_out: usize,
    pub arguments: Option<&'a serde_json::Value>,
    pub dropped: Option<u64>,
    /// The members from `session` to `profile` already written ([`write_who`]), written as
    /// they are instead of from the members above.
    pub who: Option<&'a [u8]>,
}

impl<'a> Line<'a> {
    /// `record`'s members; a client, client version or profile it leaves out `who`'s.
    pub fn of(record: &'a AuditRecord, who: &'a Who) -> Self {
        Self {
            time: &record.time,
            time_ms: record.time_ms,
            session: record.session,
            client: record.client.as_deref().or(who.client.as_deref()),
            client_version: record
                .client_version
                .as_deref()
                .or(who.client_version.as_deref()),
            pid: record.pid,
            profile: match who.profile.as_deref() {
                Some(profile) if record.profile.is_empty() => profile,
                _ => &record.profile,
            },
            server: record.server.as_deref().map(str::as_bytes),
            method: record.method.as_bytes(),
            name: record.name.as_deref().map(str::as_bytes),
            duration_ms: record.duration_ms,
            outcome: &record.outcome,
            error_code: record.error_code,
            tool_error: record.tool_error,
            bytes_in: record.bytes_in,
            bytes_out: record.bytes_out,
            arguments: record.arguments.as_ref(),
            dropped: record.dropped,
            who: None,
        }
    }
}

/// Appends `line` as one JSON object (no newline) to `out`, in [`AuditRecord`]'s member order.
pub fn write_line(out: &mut Vec<u8>, line: &Line<'_>, clock: &mut Clock) {
    // Room for a plain line (about 300 bytes) at once.
    out.reserve(512);
    out.extend_from_slice(b"{\"time\":");
    if line.time.is_empty() {
        // Digits, `-`, `:`, `T`, `.` and `Z`: nothing to escape.
        out.push(b'"');
        out.extend_from_slice(clock.time(line.time_ms));
        out.push(b'"');
    } else {
        string(out, line.time.as_bytes());
    }
    out.extend_from_slice(b",\"time_ms\":");
    number(out, line.time_ms);
    match line.who {
        Some(who) => out.extend_from_slice(who),
        None => write_who(out, line),
    }
    if let Some(server) = line.server {
        out.extend_from_slice(b",\"server\":");
        string(out, server);
    }
    out.extend_from_slice(b",\"method\":");
    string(out, line.method);
    if let Some(name) = line.name {
        out.extend_from_slice(b",\"name\":");
        string(out, name);
    }
    out.extend_from_slice(b",\"duration_ms\":");
    // A float's shortest form (and `null` for one that is not finite), as serde_json has it.
    let _ = serde_json::to_writer(&mut *out, &line.duration_ms);
    out.extend_from_slice(b",\"outcome\":");
    string(out, line.outcome.as_bytes());
    if let Some(code) = line.error_code {
        out.extend_from_slice(b",\"error_code\":");
        if code < 0 {
            out.push(b'-');
        }
        number(out, code.unsigned_abs());
    }
    if line.tool_error {
        out.extend_from_slice(b",\"tool_error\":true");
    }
    out.extend_from_slice(b",\"bytes_in\":");
    number(out, line.bytes_in as u64);
    out.extend_from_slice(b",\"bytes_out\":");
    number(out, line.bytes_out as u64);
    if let Some(arguments) = line.arguments {
        out.extend_from_slice(b",\"arguments\":");
        let _ = serde_json::to_writer(&mut *out, arguments);
    }
    if let Some(dropped) = line.dropped {
        out.extend_from_slice(b",\"dropped\":");
        number(out, dropped);
    }
    out.push(b'}');
}

/// The members of `line` from `session` to `profile` (its [`who`](Line::who) when it has it,
/// else written from its members): the same for every line of a session.
pub fn write_who(out: &mut Vec<u8>, line: &Line<'_>) {
    out.extend_from_slice(b",\"session\":");
    number(out, line.session);
    if let Some(client) = line.client {
        out.extend_from_slice(b",\"client\":");
        string(out, client.as_bytes());
    }
    if let Some(version) = line.client_version {
        out.extend_from_slice(b",\"client_version\":");
        string(out, version.as_bytes());
    }
    if let Some(pid) = line.pid {
        out.extend_from_slice(b",\"pid\":");
        number(out, u64::from(pid));
    }
    out.extend_from_slice(b",\"profile\":");
    string(out, line.profile.as_bytes());
}

/// `n` in decimal, two digits at a time.
fn number(out: &mut Vec<u8>, mut n: u64) {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        at -= 2;
        digits[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        at -= 2;
        digits[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        at -= 1;
        digits[at] = b'0' + n as u8;
    }
    out.extend_from_slice(&digits[at..]);
}

/// Whether no byte of `bytes` needs an escape (a control character, `"` or `\\`): eight bytes
/// at a time, without early exit (the strings are short and nearly always plain).
fn plain(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES * 0x80;
    // The high bit of each byte of `w` below `n` (n <= 0x80), without false positives for
    // whether there is one (the classic "has less" test).
    let below = |w: u64, n: u64| w.wrapping_sub(ONES * n) & !w & HIGH;
    let special = |w: u64| {
        below(w, 0x20)
            | below(w ^ (ONES * u64::from(b'"')), 1)
            | below(w ^ (ONES * u64::from(b'\\')), 1)
    };
    let mut chunks = bytes.chunks_exact(8);
    let mut found = 0;
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        found |= special(u64::from_le_bytes(word));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        // Padded with spaces, which need no escape.
        let mut word = [b' '; 8];
        word[..rest.len()].copy_from_slice(rest);
        found |= special(u64::from_le_bytes(word));
    }
    found == 0
}

/// `s` as a JSON string, escaped as serde_json escapes it.
#[inline]
fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    // Nearly every string needs no escape: one check, then one copy.
    if plain(bytes) {
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
    } else {
        escaped(out, bytes);
    }
}

/// [`string`] of a string with a byte to escape (apart, so that the common path is small).
#[cold]
#[inline(never)]
fn escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0x0C => b"\\f",
            b'\r' => b"\\r",
            0x00..=0x1F => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xF)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn to_string(record: &AuditRecord) -> String {
        let mut out = Vec::new();
        write(&mut out, record, &Who::default(), &mut Clock::default());
        String::from_utf8(out).unwrap()
    }

    /// serde_json's line of `record`, whose empty time is `time_ms`'s.
    fn serde_line(record: &AuditRecord) -> String {
        let mut record = record.clone();
        if record.time.is_empty() {
            record.time = mcpd_proto::observe::utc_time(record.time_ms);
        }
        serde_json::to_string(&record).unwrap()
    }

    #[test]
    fn an_empty_time_is_written_as_the_time_of_time_ms() {
        let mut clock = Clock::default();
        // Within a second, across seconds, days and years, back in time, and out of range.
        for ms in [
            1_709_251_199_123,
            1_709_251_199_124,
            1_709_251_199_999,
            1_709_251_200_000,
            1_709_251_200_007,
            1_735_689_599_999,
            1_735_689_600_000,
            0,
            1_709_251_199_050,
            300_000_000_000_000,
            300_000_000_000_001,
        ] {
            let r = AuditRecord {
                time_ms: ms,
                ..AuditRecord::default()
            };
            let mut out = Vec::new();
            write(&mut out, &r, &Who::default(), &mut clock);
            let expected = AuditRecord {
                time: mcpd_proto::observe::utc_time(ms),
                ..r
            };
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&expected).unwrap(),
                "{ms}"
            );
        }
    }

    #[test]
    fn a_byte_to_escape_is_found_at_any_place_in_a_string_of_any_length() {
        for len in 0..=25 {
            assert!(plain(&vec![b'a'; len]), "{len}");
            assert!(plain(&vec![0xFF; len]), "{len}");
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut bytes = vec![b'x'; len];
                    bytes[at] = b;
                    let expected = b >= 0x20 && b != b'"' && b != b'\\';
                    assert_eq!(plain(&bytes), expected, "{b:#x} at {at} of {len}");
                }
            }
        }
    }

    #[test]
    fn numbers_are_written_in_decimal_at_every_width() {
        let mut cases: Vec<u64> = (0..1000).collect();
        let mut p = 1u64;
        while let Some(next) = p.checked_mul(10) {
            cases.extend([p - 1, p, p + 1, p * 5, next - 1]);
            p = next;
        }
        cases.extend([p, u64::MAX - 1, u64::MAX]);
        for n in cases {
            let mut out = Vec::new();
            number(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
    }

    /// Strings a client or server controls, and that a JSON writer could get wrong.
    const HOSTILE: &[&str] = &[
        "",
        "plain",
        "quote \" and backslash \\ and slash /",
        "\\\"",
        "\"\"\"\\\\\\",
        "line\nfeed\rreturn\ttab\u{8}back\u{c}feed",
        "\u{0}\u{1}\u{2}\u{1f} controls, \u{7f} delete",
        "\u{1b}[31mred\u{1b}[0m",
        "é ü 中文 😀 \u{200b}\u{202e}bidi\u{2028}\u{2029}",
        "\\u0022 not an escape",
        "}\",\"outcome\":\"forged",
        "\u{fffd}\u{feff}",
    ];

    fn record(s: &str, n: u64) -> AuditRecord {
        AuditRecord {
            time: s.to_owned(),
            time_ms: n,
            session: n / 3,
            client: Some(s.to_owned()),
            client_version: Some(format!("{s}{s}")),
            pid: Some(n as u32),
            profile: s.to_owned(),
            server: Some(s.to_owned()),
            method: s.to_owned(),
            name: Some(s.to_owned()),
            duration_ms: n as f64 / 7.0,
            outcome: s.to_owned(),
            error_code: Some(-(n as i64)),
            tool_error: n.is_multiple_of(2),
            bytes_in: n as usize,
            bytes_out: n.wrapping_mul(13) as usize,
            arguments: Some(serde_json::json!({"k": s, "n": [1.5, n, null]})),
            dropped: Some(n),
        }
    }

    #[test]
    fn a_record_s_line_is_serde_json_s_byte_for_byte_for_hostile_strings() {
        for (i, s) in HOSTILE.iter().enumerate() {
            for n in [0, 1, 9, 10, 4_294_967_295, u64::MAX / 3 + i as u64] {
                let r = record(s, n);
                assert_eq!(to_string(&r), serde_line(&r), "{s:?} {n}");
            }
        }
        // Every byte below 0x80 and a few beyond, one at a time.
        for c in (0u32..0x80).chain([0x80, 0x7ff, 0x800, 0xffff, 0x10000, 0x10ffff]) {
            let s = char::from_u32(c).unwrap().to_string();
            let r = record(&s, u64::from(c));
            assert_eq!(to_string(&r), serde_line(&r), "{c:#x}");
        }
    }

    #[test]
    fn optional_members_are_left_out_as_serde_leaves_them_out() {
        for r in [
            AuditRecord::default(),
            AuditRecord {
                method: "tools/call".into(),
                outcome: "ok".into(),
                duration_ms: 0.123_456_789,
                ..AuditRecord::default()
            },
            AuditRecord {
                duration_ms: f64::NAN,
                error_code: Some(i64::MIN),
                ..AuditRecord::default()
            },
            AuditRecord {
                duration_ms: 1e21,
                error_code: Some(-32601),
                tool_error: true,
                ..AuditRecord::default()
            },
        ] {
            let line = to_string(&r);
            assert_eq!(line, serde_line(&r));
            // (A duration that is not a number is written `null`, which reads back as none.)
            if !r.duration_ms.is_nan() {
                let back = serde_json::from_str::<AuditRecord>(&line).unwrap();
                assert_eq!(back.time, mcpd_proto::observe::utc_time(r.time_ms));
                assert_eq!(
                    AuditRecord {
                        time: r.time.clone(),
                        ..back
                    },
                    r
                );
            }
        }
    }

    #[test]
    fn the_session_s_client_and_profile_fill_what_the_record_leaves_out() {
        let who = Who {
            client: Some("claude \"code\"".into()),
            client_version: Some("1.0".into()),
            profile: Some("work".into()),
        };
        let r = AuditRecord {
            time: "t".into(),
            method: "tools/call".into(),
            ..AuditRecord::default()
        };
        let mut out = Vec::new();
        write(&mut out, &r, &who, &mut Clock::default());
        let filled = AuditRecord {
            client: Some("claude \"code\"".into()),
            client_version: Some("1.0".into()),
            profile: "work".into(),
            ..r
        };
        assert_eq!(
            String::from_utf8(out).unwrap(),
            serde_json::to_string(&filled).unwrap()
        );
    }
}
