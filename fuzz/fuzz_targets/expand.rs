//! The `${VAR}` / `${VAR:-default}` expander of the configuration (config/src/expand.rs).
//!
//! Beyond "never panics": its result equals that of a small reference written differently
//! (a character scanner), text without `${` is unchanged, and a value is never expanded again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcpd_config::{ExpandError, expand};

/// Set, empty and unset variables; one whose value looks like a reference (never expanded).
fn env(name: &str) -> Option<String> {
    match name {
        "A" => Some("a".into()),
        "EMPTY" => Some(String::new()),
        "REF" => Some("${A}".into()),
        "UNI" => Some("é}${".into()),
        _ if name.len() > 3 => Some(name.to_lowercase()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let got = expand(input, env);
    assert_eq!(got, reference(input), "input: {input:?}");
    if !input.contains("${") {
        assert_eq!(got.as_deref(), Ok(input));
    }
});

/// `${NAME}` and `${NAME:-default}`: `NAME` is `[A-Za-z_][A-Za-z0-9_]*`, the reference ends at
/// the first `}`, the default is everything after the first `:-`. `${secret:NAME}` (`NAME` is
/// `[A-Za-z_][A-Za-z0-9_.-]*`, at most 128 bytes) is kept as written, for the secret store.
fn reference(input: &str) -> Result<String, ExpandError> {
    let chars: Vec<char> = input.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '$' || chars.get(i + 1) != Some(&'{') {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let Some(close) = (i + 2..chars.len()).find(|&j| chars[j] == '}') else {
            return Err(ExpandError::Unterminated);
        };
        let inner: String = chars[i + 2..close].iter().collect();
        if let Some(secret) = inner.strip_prefix("secret:") {
            let valid = secret.len() <= 128
                && secret.chars().enumerate().all(|(k, c)| {
                    c == '_' || c.is_ascii_alphabetic() || (k > 0 && "-.0123456789".contains(c))
                })
                && !secret.is_empty();
            if !valid {
                return Err(ExpandError::BadSecretName(secret.to_owned()));
            }
            out.extend(&chars[i..=close]);
            i = close + 1;
            continue;
        }
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n.to_owned(), Some(d.to_owned())),
            None => (inner.clone(), None),
        };
        let valid = name
            .chars()
            .enumerate()
            .all(|(k, c)| c == '_' || c.is_ascii_alphabetic() || (k > 0 && c.is_ascii_digit()))
            && !name.is_empty();
        if !valid {
            return Err(ExpandError::BadName(inner));
        }
        match (env(&name), default) {
            (Some(v), Some(d)) if v.is_empty() => out.push_str(&d),
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(&d),
            (None, None) => return Err(ExpandError::Unset(name)),
        }
        i = close + 1;
    }
    Ok(out)
}
