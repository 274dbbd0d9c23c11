//! Member lookup in JSON that is already known to be valid: a byte scan that finds the top-level
//! members asked for and skips everything else without decoding or checking it.
//!
//! The daemon looks up members of the same request several times on its way (the tool name,
//! `_meta`, the progress token, a task, the audit's fields), and the answer's outcome once more
//! for the audit. Each lookup through serde checked every byte of the object again; the text of
//! a `RawValue`, or a line the daemon built from checked parts, needs no second check. Anything
//! this scan does not handle plainly (a key written with escapes, a requested key twice, text
//! that is not an object) makes it give up, and the caller uses the full parser, whose answer
//! (or error) is the reference.

/// The values (exact text, no surrounding whitespace) of the top-level members `keys` of the
/// JSON object `json`, which must be valid JSON. `None`: the scan does not apply; use the full
/// parser. On invalid input the result is unspecified but the scan never panics.
pub fn members<'a, const N: usize>(json: &'a str, keys: [&str; N]) -> Option<[Option<&'a str>; N]> {
    let b = json.as_bytes();
    let mut found = [None; N];
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return Some(found);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_start = i + 1;
        let k = key_start + quote_or_escape(b.get(key_start..)?)?;
        // An escaped key may spell a requested one: the parser decodes it.
        if b[k] == b'\\' {
            return None;
        }
        let key = &b[key_start..k];
        i = skip_ws(b, k + 1);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_ws(b, i + 1);
        let end = skip_value(b, start)?;
        if let Some(slot) = keys.iter().position(|want| want.as_bytes() == key) {
            if found[slot].is_some() {
                // The parser reports the duplicate.
                return None;
            }
            found[slot] = Some(json.get(start..end)?);
        }
        i = skip_ws(b, end);
        match b.get(i)? {
            b',' => i = skip_ws(b, i + 1),
            b'}' => return Some(found),
            _ => return None,
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// Where the first `"` or `\\` of `b` is (`memchr2`, vectorised: most of the bytes a scan
/// passes over are inside strings, `_meta`'s long keys among them).
fn quote_or_escape(b: &[u8]) -> Option<usize> {
    memchr::memchr2(b'"', b'\\', b)
}

/// The end (exclusive) of the string whose opening quote is at `i`.
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    loop {
        i += quote_or_escape(b.get(i..)?)?;
        if b[i] == b'"' {
            return Some(i + 1);
        }
        i += 2;
    }
}

/// The end (exclusive) of the value that starts at `i`.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match b.get(j)? {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while let Some(&c) = b.get(j) {
                if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                    break;
                }
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::fields;

    /// The scan agrees with the parser wherever it answers.
    fn agrees<const N: usize>(json: &str, keys: [&str; N]) -> bool {
        let parsed = fields(json, keys)
            .ok()
            .map(|v| v.map(|o| o.map(|r| r.get())));
        match members(json, keys) {
            Some(ours) => Some(ours) == parsed,
            None => true,
        }
    }

    #[test]
    fn members_are_found_and_the_rest_skipped() {
        let text = r#" { "name" : "fx__echo" , "arguments":{"a":[1,{"name":"inner"}],"s":"}\"]"},
            "_meta":{"progressToken":7}, "n": -1.5e3, "t": true, "z": null, "e": [] } "#;
        let [name, args, meta, n, missing] =
            members(text, ["name", "arguments", "_meta", "n", "nope"]).unwrap();
        assert_eq!(name, Some(r#""fx__echo""#));
        assert_eq!(args, Some(r#"{"a":[1,{"name":"inner"}],"s":"}\"]"}"#));
        assert_eq!(meta, Some(r#"{"progressToken":7}"#));
        assert_eq!(n, Some("-1.5e3"));
        assert_eq!(missing, None);
        assert!(agrees(text, ["name", "arguments", "_meta", "n", "nope"]));
        assert_eq!(members("{}", ["a"]), Some([None]));
        assert_eq!(members(" { } ", ["a"]), Some([None]));
    }

    #[test]
    fn what_the_parser_must_decide_is_left_to_it() {
        // An escaped key, a duplicate, not an object.
        assert_eq!(members(r#"{"\u006eame":1}"#, ["name"]), None);
        assert_eq!(members(r#"{"a":1,"a":2}"#, ["a"]), None);
        assert_eq!(members("[1]", ["a"]), None);
        assert_eq!(members("\"s\"", ["a"]), None);
        // A duplicate of a key nobody asked for is the parser's business only when asked.
        assert!(agrees(r#"{"a":1,"b":2,"b":3}"#, ["a"]));
    }

    #[test]
    fn invalid_text_never_panics() {
        for text in [
            "",
            "{",
            "{\"",
            "{\"a\"",
            "{\"a\":",
            "{\"a\":\"",
            "{\"a\":{",
            "{\"a\":1",
            "{\"a\":1,",
            "{\"a\":]}",
            "{\"a\":}}}",
            "{\"a\":\"\\",
            "{,}",
            "{\"a\" 1}",
        ] {
            let _ = members(text, ["a", "b"]);
        }
    }

    #[test]
    fn the_scan_agrees_with_the_parser_on_many_objects() {
        let values = [
            "1",
            "-0",
            "1.50",
            "123456789012345678901234567890",
            "\"\"",
            "\"a\\\"b\"",
            "\"\\\\\"",
            "\"}]\"",
            "{}",
            "[]",
            "[[{}],{\"x\":[\"]\"]}]",
            "true",
            "null",
            "{\"k\":\"v\"}",
        ];
        for (i, a) in values.iter().enumerate() {
            for b in &values[i..] {
                for text in [
                    format!("{{\"a\":{a},\"b\":{b}}}"),
                    format!("{{ \"b\" : {b} , \"c\":{a} }}"),
                    format!("{{\"x\":{a}}}"),
                ] {
                    assert!(agrees(&text, ["a", "b", "c"]), "{text}");
                }
            }
        }
    }
}
