//! JSON with comments (VS Code's JSONC) and surgical edits of JSON text.
//!
//! Client configuration files are edited in place, never re-serialised whole: comments, key
//! order, formatting and keys mcpctl does not know stay exactly as they were, and only the span
//! of the value that changes is rewritten. [`to_json`] blanks comments and trailing commas with
//! spaces, so byte offsets in its output are offsets in the original text too; [`find`] locates
//! a value's span in that output.

use anyhow::{Result, bail};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// A byte range of a JSON value in a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First byte of the value.
    pub start: usize,
    /// One past its last byte.
    pub end: usize,
}

/// The text with comments, trailing commas and a byte-order mark replaced by spaces (newlines
/// in comments are kept), so that it is plain JSON with the same byte offsets.
pub fn to_json(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = bytes.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for b in &mut out[from..to] {
            if *b != b'\n' && *b != b'\r' {
                *b = b' ';
            }
        }
    };
    if text.starts_with('\u{feff}') {
        blank(&mut out, 0, 3);
    }
    // Pass 1: comments.
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => i = skip_string(bytes, i),
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                let end = bytes[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |p| i + p);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let end = bytes[i + 2..]
                    .windows(2)
                    .position(|w| w == b"*/")
                    .map_or(bytes.len(), |p| i + 2 + p + 2);
                blank(&mut out, i, end);
                i = end;
            }
            _ => i += 1,
        }
    }
    // Pass 2: a comma followed (after whitespace) by `}` or `]`.
    let mut i = 0;
    while i < out.len() {
        match out[i] {
            b'"' => i = skip_string(&out, i),
            b',' => {
                let next = out[i + 1..]
                    .iter()
                    .find(|b| !b.is_ascii_whitespace())
                    .copied();
                if matches!(next, Some(b'}' | b']')) {
                    out[i] = b' ';
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    // Only ASCII bytes were replaced, by ASCII spaces, and only whole comments or whole
    // multi-byte characters inside them: the result is valid UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Parses JSON or JSONC text into a value. An object with a key twice is refused: the edits
/// here find a key's first occurrence while a reader keeps its last one, so either choice would
/// silently edit or import the wrong one.
pub fn parse(text: &str) -> Result<Value> {
    let json = to_json(text);
    let mut de = serde_json::Deserializer::from_str(&json);
    match UniqueKeys::deserialize(&mut de).and_then(|v| de.end().map(|()| v.0)) {
        Ok(v) => Ok(v),
        Err(e) => bail!(
            "not valid JSON (line {}, column {}): {e}",
            e.line(),
            e.column()
        ),
    }
}

/// A JSON value whose objects have no key twice.
struct UniqueKeys(Value);

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeysVisitor).map(UniqueKeys)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueKeys(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "the key {key:?} appears twice in one object; remove one"
                )));
            }
            let UniqueKeys(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Index one past the string starting at `i` (which is `"`).
fn skip_string(b: &[u8], mut i: usize) -> usize {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Index one past the value starting at `i` (after whitespace).
fn skip_value(b: &[u8], i: usize) -> usize {
    let i = skip_ws(b, i);
    match b.get(i) {
        Some(b'"') => skip_string(b, i),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = skip_string(b, j);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return j + 1;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            b.len()
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']') && !b[j].is_ascii_whitespace()
            {
                j += 1;
            }
            j
        }
    }
}

/// A member of an object: its key and the spans of the key and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The decoded key.
    pub key: String,
    /// Where the key's string starts (its opening quote).
    pub key_start: usize,
    /// The value.
    pub value: Span,
}

/// The members of the object at `span` in `json` (plain JSON, e.g. from [`to_json`]).
pub fn members(json: &str, span: Span) -> Vec<Member> {
    let b = json.as_bytes();
    let mut out = Vec::new();
    let mut i = skip_ws(b, span.start);
    if b.get(i) != Some(&b'{') {
        return out;
    }
    i += 1;
    loop {
        i = skip_ws(b, i);
        match b.get(i) {
            Some(b'"') => {}
            _ => return out,
        }
        let key_end = skip_string(b, i);
        let key: String = serde_json::from_str(&json[i..key_end]).unwrap_or_default();
        let key_start = i;
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return out;
        }
        let start = skip_ws(b, i + 1);
        let end = skip_value(b, start);
        out.push(Member {
            key,
            key_start,
            value: Span { start, end },
        });
        i = skip_ws(b, end);
        if b.get(i) == Some(&b',') {
            i += 1;
        } else {
            return out;
        }
    }
}

/// The span of the whole document's value.
pub fn root(json: &str) -> Span {
    let b = json.as_bytes();
    let start = skip_ws(b, 0);
    Span {
        start,
        end: skip_value(b, start),
    }
}

/// The span of the value at `path` (object keys from the root), if every key exists.
pub fn find(json: &str, path: &[&str]) -> Option<Span> {
    let mut span = root(json);
    for key in path {
        span = members(json, span)
            .into_iter()
            .find(|m| m.key == *key)?
            .value;
    }
    Some(span)
}

/// The indentation of the line `pos` is on.
fn line_indent(text: &str, pos: usize) -> &str {
    let line_start = text[..pos].rfind('\n').map_or(0, |p| p + 1);
    let rest = &text[line_start..];
    let len = rest.len() - rest.trim_start_matches([' ', '\t']).len();
    &rest[..len]
}

/// `value` pretty-printed with every line after the first indented by `indent`.
pub fn pretty(value: &Value, indent: &str) -> String {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.replace('\n', &format!("\n{indent}"))
}

/// The text with the object at `object` (a span from [`find`] on [`to_json`] of `text`) given
/// the new `entries` after its existing members, in the object's own indentation style.
pub fn insert_members(text: &str, object: Span, entries: &[(String, Value)]) -> String {
    if entries.is_empty() {
        return text.to_owned();
    }
    let json = to_json(text);
    let existing = members(&json, object);
    let key = |k: &str| serde_json::to_string(k).unwrap_or_else(|_| format!("\"{k}\""));
    match existing.last() {
        Some(last) => {
            let first = &existing[0];
            let between = &text[object.start + 1..first.key_start];
            let mut out = String::with_capacity(text.len() + 256);
            out.push_str(&text[..last.value.end]);
            if between.contains('\n') {
                let indent = line_indent(text, first.key_start);
                for (k, v) in entries {
                    out.push_str(&format!(",\n{indent}{}: {}", key(k), pretty(v, indent)));
                }
            } else {
                for (k, v) in entries {
                    out.push_str(&format!(", {}: {v}", key(k)));
                }
            }
            out.push_str(&text[last.value.end..]);
            out
        }
        None => {
            let outer = line_indent(text, object.start);
            let unit = if outer.starts_with('\t') { "\t" } else { "  " };
            let indent = format!("{outer}{unit}");
            let body: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{indent}{}: {}", key(k), pretty(v, &indent)))
                .collect();
            format!(
                "{}{{\n{}\n{outer}}}{}",
                &text[..object.start],
                body.join(",\n"),
                &text[object.end..]
            )
        }
    }
}

/// The text with the value at `span` replaced by `value`, indented like the line it is on.
pub fn replace_value(text: &str, span: Span, value: &Value) -> String {
    let indent = line_indent(text, span.start);
    format!(
        "{}{}{}",
        &text[..span.start],
        pretty(value, indent),
        &text[span.end..]
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    const VSCODE: &str = r#"{
  // MCP servers for VS Code
  "servers": {
    /* a block
       comment */
    "github": {
      "type": "stdio",
      "command": "npx", // trailing comment with "quotes"
      "args": ["-y", "@modelcontextprotocol/server-github",],
    },
  },
  "inputs": [],
}
"#;

    #[test]
    fn comments_and_trailing_commas_become_spaces() {
        let json = to_json(VSCODE);
        assert_eq!(json.len(), VSCODE.len());
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["servers"]["github"]["command"], "npx");
        assert_eq!(json.matches('\n').count(), VSCODE.matches('\n').count());
    }

    #[test]
    fn strings_that_look_like_comments_are_kept() {
        let text = r#"{"url": "https://x//y/*z*/", "a": [1,2,]}"#;
        let v = parse(text).unwrap();
        assert_eq!(v, json!({"url": "https://x//y/*z*/", "a": [1, 2]}));
    }

    /// Found by fuzzing (fuzz/fuzz_targets/jsonc.rs): with `mcpServers` twice, `import` read
    /// the servers of the last one and added its new ones to the first, which mcpd ignores.
    #[test]
    fn a_key_twice_in_one_object_is_refused_with_its_line() {
        let text = "{\n  \"mcpServers\": {\"a\": {}},\n  \"mcpServers\": {\"b\": {}}\n}";
        let e = format!("{:#}", parse(text).unwrap_err());
        assert!(
            e.contains("line 3") && e.contains("\"mcpServers\" appears twice"),
            "{e}"
        );
        let nested = r#"{"servers": {"x": {"command": "a", /* c */ "command": "b"}}}"#;
        assert!(format!("{:#}", parse(nested).unwrap_err()).contains("\"command\" appears twice"));
        // The same key in different objects is fine, and values keep their types.
        let v =
            parse(r#"{"a": {"k": 1}, "b": {"k": [1.5, -2, 18446744073709551615, null, true]}}"#)
                .unwrap();
        assert_eq!(
            v,
            json!({"a": {"k": 1}, "b": {"k": [1.5, -2, 18446744073709551615u64, null, true]}})
        );
    }

    #[test]
    fn find_locates_nested_values() {
        let json = to_json(VSCODE);
        let span = find(&json, &["servers", "github", "command"]).unwrap();
        assert_eq!(&VSCODE[span.start..span.end], "\"npx\"");
        assert!(find(&json, &["nope"]).is_none());
    }

    #[test]
    fn members_are_inserted_in_the_objects_style() {
        let text = "{\n    \"mcpServers\": {\n        \"a\": {\"command\": \"x\"}\n    },\n    \"other\": 1\n}\n";
        let span = find(&to_json(text), &["mcpServers"]).unwrap();
        let out = insert_members(text, span, &[("b".into(), json!({"command": "y"}))]);
        assert_eq!(
            out,
            "{\n    \"mcpServers\": {\n        \"a\": {\"command\": \"x\"},\n        \"b\": {\n          \"command\": \"y\"\n        }\n    },\n    \"other\": 1\n}\n"
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["mcpServers"]["b"]["command"], "y");
    }

    #[test]
    fn members_go_into_an_empty_object() {
        let text = "{\n  \"mcpServers\": {}\n}";
        let span = find(&to_json(text), &["mcpServers"]).unwrap();
        let out = insert_members(text, span, &[("b".into(), json!(1))]);
        assert_eq!(out, "{\n  \"mcpServers\": {\n    \"b\": 1\n  }\n}");
    }

    #[test]
    fn a_value_is_replaced_and_the_rest_kept_byte_for_byte() {
        let span = find(&to_json(VSCODE), &["servers"]).unwrap();
        let out = replace_value(VSCODE, span, &json!({"mcpd": {"command": "/bin/mcp-shim"}}));
        assert!(out.starts_with("{\n  // MCP servers for VS Code\n  \"servers\": {\n    \"mcpd\""));
        assert!(out.ends_with("  \"inputs\": [],\n}\n"));
        let v = parse(&out).unwrap();
        assert_eq!(v["servers"], json!({"mcpd": {"command": "/bin/mcp-shim"}}));
    }
}
