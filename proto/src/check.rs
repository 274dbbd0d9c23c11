//! The checking scan of a JSON object: one pass over its bytes that checks every byte as
//! serde_json does and finds the top-level members asked for, without serde's visitors (a key
//! decoded into a `Cow`, a position lookup, a `RawValue` or `IgnoredAny` deserialised per
//! member). Every line the daemon reads goes through it ([`Envelope::parse`]).
//!
//! It only ever says yes: when it answers, the text is a JSON object serde_json accepts and the
//! members are the very spans serde_json's `RawValue`s would be. Anything it does not decide
//! plainly (a key written with escapes, one of the keys asked for twice, nesting deeper than
//! [`MAX_DEPTH`]) and anything wrong with the text makes it give up, and the caller runs serde
//! (`envelope::fields`), whose answer and error message are the reference. The grammar is
//! serde_json's, which is JSON's (RFC 8259): whitespace is space, tab, CR and LF; a string has
//! no unescaped control character (below U+0020) and only the escapes `\" \\ \/ \b \f \n \r
//! \t \uXXXX` (a `\u` escape is not decoded in a value, so a lone surrogate there is accepted,
//! as serde_json's `RawValue` accepts it); a number is `-? (0 | [1-9][0-9]*) (. [0-9]+)?
//! ([eE] [+-]? [0-9]+)?`; nothing but whitespace follows the object.
//!
//! [`Envelope::parse`]: crate::envelope::Envelope::parse

/// Containers nested deeper than this (in a member's value) are left to serde.
pub const MAX_DEPTH: u32 = 128;

/// The values (exact text, no surrounding whitespace) of the top-level members `keys` of the
/// JSON object `text`, after checking all of `text`. `None`: `text` is not valid JSON, not an
/// object, or the scan does not decide it (see the module documentation); ask serde.
pub fn members<'a, const N: usize>(text: &'a str, keys: [&str; N]) -> Option<[Option<&'a str>; N]> {
    let b = text.as_bytes();
    let mut found = [None; N];
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            let (end, escaped) = string_end(b, i + 1)?;
            // serde decodes a top-level key: an escaped one may spell a key asked for.
            if escaped {
                return None;
            }
            let key = &b[i + 1..end - 1];
            i = skip_ws(b, end);
            if b.get(i) != Some(&b':') {
                return None;
            }
            let start = skip_ws(b, i + 1);
            let stop = value_end(b, start)?;
            if let Some(slot) = keys.iter().position(|want| same(want.as_bytes(), key)) {
                if found[slot].is_some() {
                    // serde reports the duplicate.
                    return None;
                }
                found[slot] = Some(text.get(start..stop)?);
            }
            i = skip_ws(b, stop);
            match b.get(i)? {
                b',' => i = skip_ws(b, i + 1),
                b'}' => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip_ws(b, i) == b.len()).then_some(found)
}

/// `a == b`, inline: keys are short, and a call of `memcmp` per comparison was a third of
/// the lookup.
#[inline(always)]
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

#[inline(always)]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The high bit of each byte of `w` that ends a plain run inside a string (a control
/// character, `"` or `\\`); zero when there is none. This is the classic "has less" test: a
/// flag may be false only above a true one (a borrow runs upwards), so the lowest flag is always
/// the first special byte.
#[inline(always)]
fn special(w: u64) -> u64 {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES * 0x80;
    let below = |w: u64, n: u64| w.wrapping_sub(ONES * n) & !w & HIGH;
    below(w, 0x20)
        | below(w ^ (ONES * u64::from(b'"')), 1)
        | below(w ^ (ONES * u64::from(b'\\')), 1)
}

/// Where the first byte at or after `i` that ends a plain run inside a string is (see
/// [`special`]): eight bytes at a time, then the last few one by one.
#[inline(always)]
fn next_special(b: &[u8], mut i: usize) -> Option<usize> {
    while let Some(word) = b.get(i..i + 8) {
        let mut w = [0; 8];
        w.copy_from_slice(word);
        let found = special(u64::from_le_bytes(w));
        if found != 0 {
            return Some(i + (found.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// The end (exclusive) of the string whose contents start at `i` (just after its opening
/// quote), checked; and whether it has an escape.
#[inline(always)]
fn string_end(b: &[u8], mut i: usize) -> Option<(usize, bool)> {
    let mut escaped = false;
    loop {
        i = next_special(b, i)?;
        match b[i] {
            b'"' => return Some((i + 1, escaped)),
            b'\\' => {
                escaped = true;
                match *b.get(i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                    b'u' if b.get(i + 2..i + 6)?.iter().all(u8::is_ascii_hexdigit) => i += 6,
                    _ => return None,
                }
            }
            // A control character.
            _ => return None,
        }
    }
}

/// The end (exclusive) of the number that starts at `i`, checked.
fn number_end(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |b: &[u8], mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match *b.get(i)? {
        // There can be only one leading zero.
        b'0' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => return None,
        b'0' => i += 1,
        b'1'..=b'9' => i = digits(b, i + 1),
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        let end = digits(b, i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let end = digits(b, i);
        if end == i {
            return None;
        }
        i = end;
    }
    Some(i)
}

/// The end (exclusive) of `word` at `i`.
fn literal_end(b: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    (b.get(i..i + word.len())? == word).then_some(i + word.len())
}

/// Past an object's key and its colon, whitespace included; `i` is where the key should start.
fn after_key(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let (end, _) = string_end(b, i + 1)?;
    let i = skip_ws(b, end);
    (b.get(i) == Some(&b':')).then(|| skip_ws(b, i + 1))
}

/// The end (exclusive) of the value that starts at `i`, checked.
fn value_end(b: &[u8], mut i: usize) -> Option<usize> {
    // The containers open around the value being read, the innermost in the lowest bit: 1 an
    // object, 0 an array.
    let mut open: u128 = 0;
    let mut depth = 0u32;
    loop {
        // A value starts at `i`.
        match *b.get(i)? {
            b'"' => i = string_end(b, i + 1)?.0,
            c @ (b'{' | b'[') => {
                if depth == MAX_DEPTH {
                    return None;
                }
                let object = c == b'{';
                let close = if object { b'}' } else { b']' };
                i = skip_ws(b, i + 1);
                if b.get(i) == Some(&close) {
                    i += 1;
                } else {
                    open = open << 1 | u128::from(object);
                    depth += 1;
                    if object {
                        i = after_key(b, i)?;
                    }
                    continue;
                }
            }
            b't' => i = literal_end(b, i, b"true")?,
            b'f' => i = literal_end(b, i, b"false")?,
            b'n' => i = literal_end(b, i, b"null")?,
            b'-' | b'0'..=b'9' => i = number_end(b, i)?,
            _ => return None,
        }
        // A value ended at `i`: the containers it closes, then the next value.
        loop {
            if depth == 0 {
                return Some(i);
            }
            i = skip_ws(b, i);
            let object = open & 1 == 1;
            match (*b.get(i)?, object) {
                (b',', _) => {
                    i = skip_ws(b, i + 1);
                    if object {
                        i = after_key(b, i)?;
                    }
                    break;
                }
                (b'}', true) | (b']', false) => {
                    i += 1;
                    open >>= 1;
                    depth -= 1;
                }
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::fields_by_serde;

    /// Where the scan answers, serde answers the same; `true` when the scan answered.
    fn agrees<const N: usize>(text: &str, keys: [&str; N]) -> bool {
        let Some(ours) = members(text, keys) else {
            return false;
        };
        let theirs = fields_by_serde(text, keys)
            .unwrap_or_else(|e| panic!("serde refuses what the scan took ({e}): {text}"));
        assert_eq!(
            Some(ours),
            Some(theirs.map(|v| v.map(|r| r.get()))),
            "{text}"
        );
        true
    }

    const KEYS: [&str; 4] = ["id", "method", "params", "a"];

    #[test]
    fn the_first_special_byte_is_found_wherever_it_is() {
        let fillers = [
            b'a', b' ', b'!', b'#', b'[', b']', b'~', 0x7f, 0x80, 0xc3, 0xff,
        ];
        for special in [b'"', b'\\', 0, 0x1f] {
            for filler in fillers {
                for at in 0..20 {
                    let mut bytes = [filler; 20];
                    bytes[at] = special;
                    // Anything special after the first is not it.
                    if at + 1 < bytes.len() {
                        bytes[at + 1] = 0;
                    }
                    assert_eq!(
                        next_special(&bytes, 0),
                        Some(at),
                        "{special:#x} at {at} among {filler:#x}"
                    );
                }
                assert_eq!(next_special(&[filler; 20], 0), None);
            }
        }
    }

    #[test]
    fn plain_objects_are_decided_and_agree_with_serde() {
        for text in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"fx__echo","arguments":{"message":"hello"}}}"#,
            r#" { "id" : "a\"b" , "method":"m\u00e9" , "params" : [ 1 , -0.5e+3 , true , false , null , {} , [] , { "k\n" : [ { } ] } ] } "#,
            "{}",
            " {\t}\r\n",
            r#"{"a":"\ud800 a lone surrogate in a value"}"#,
            r#"{"a":{"\ud800":1},"b":2,"b":3}"#,
            r#"{"a":0,"x":-0,"y":1E400,"z":123456789012345678901234567890}"#,
            "{\"a\":\"\u{7f}\u{2028}\u{e9}\u{1f600}\"}",
        ] {
            assert!(agrees(text, KEYS), "not decided: {text}");
        }
    }

    #[test]
    fn what_serde_refuses_or_must_decide_is_left_to_it() {
        for text in [
            "",
            "[]",
            "1",
            r#"{"\u0069d":1}"#,
            r#"{"id":1,"id":2}"#,
            r#"{"a":1,}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":[,1]}"#,
            r#"{"a":{"b":1,}}"#,
            r#"{"a":{"b"}}"#,
            r#"{"a":{1:2}}"#,
            r#"{"a":1} x"#,
            r#"{"a":1}}"#,
            r#"{"a":01}"#,
            r#"{"a":-}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":1e}"#,
            r#"{"a":1e+}"#,
            r#"{"a":+1}"#,
            r#"{"a":tru}"#,
            r#"{"a":nul}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12g4"}"#,
            r#"{"a":"\u12"}"#,
            "{\"a\":\"tab\there\"}",
            "{\"a\":\"nul\0\"}",
            r#"{"a":[}"#,
            r#"{"a":{]}"#,
            r#"{"a":"unterminated}"#,
            "{\"a\":1",
            "\u{feff}{}",
            "{\"a\":1}\u{a0}",
        ] {
            assert!(!agrees(text, KEYS), "decided: {text}");
        }
        // Deeper than the limit: serde decides (and takes it).
        let deep = format!(r#"{{"a":{}{}}}"#, "[".repeat(200), "]".repeat(200));
        assert!(!agrees(&deep, KEYS));
        assert!(fields_by_serde(&deep, KEYS).is_ok());
        let limit = format!(r#"{{"a":{}{}}}"#, "[".repeat(128), "]".repeat(128));
        assert!(agrees(&limit, KEYS));
    }

    #[test]
    fn every_prefix_and_byte_change_of_a_message_agrees_with_serde() {
        let text = r#" {"jsonrpc":"2.0","id":-12,"method":"tools/call","params":{"name":"fx__echo","arguments":{"s":"\"q\\\/\b\f\n\r\t\u00E9x","n":[0,-1.25e-3,1E+2,true,false,null,{},[]]},"_meta":{"progressToken":"t"}}} "#;
        assert!(agrees(text, KEYS));
        for end in 0..text.len() {
            agrees(&text[..end], KEYS);
        }
        let bytes = text.as_bytes();
        for at in 0..bytes.len() {
            for with in [
                b' ', b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b'0', b'1', b'-', b'+',
                b'.', b'e', b'u', b'a', b'n', b't', 0, b'\n', b'\t',
            ] {
                let mut changed = bytes.to_vec();
                changed[at] = with;
                if let Ok(changed) = String::from_utf8(changed) {
                    agrees(&changed, KEYS);
                }
                let mut inserted = bytes.to_vec();
                inserted.insert(at, with);
                if let Ok(inserted) = String::from_utf8(inserted) {
                    agrees(&inserted, KEYS);
                }
            }
            let mut removed = bytes.to_vec();
            removed.remove(at);
            if let Ok(removed) = String::from_utf8(removed) {
                agrees(&removed, KEYS);
            }
        }
    }

    #[test]
    fn the_fuzz_seeds_agree_with_serde() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/envelope");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("the envelope seeds") {
            let bytes = std::fs::read(entry.expect("a seed").path()).expect("a seed");
            if let Ok(text) = std::str::from_utf8(&bytes) {
                for line in text.lines() {
                    agrees(
                        line,
                        ["jsonrpc", "id", "method", "params", "result", "error"],
                    );
                }
                seen += 1;
            }
        }
        assert!(seen > 0);
    }

    proptest::proptest! {
        /// Text made of JSON's own pieces, mostly invalid: wherever the scan answers, serde
        /// answers the same.
        #[test]
        fn json_like_text_agrees_with_serde(pieces in proptest::collection::vec(proptest::sample::select(vec![
            "{", "}", "[", "]", ",", ":", " ", "\"", "\"a\"", "\"id\"", "\"\\u00e9\"", "\"\\\"\"",
            "\\", "0", "-1", "2.5", "1e3", "true", "null", "false", "\n", "x", "\"params\"", "{\"id\":",
        ]), 0..24)) {
            let text: String = pieces.concat();
            agrees(&text, KEYS);
            agrees(&format!("{{\"a\":{text}}}"), KEYS);
        }
    }
}
