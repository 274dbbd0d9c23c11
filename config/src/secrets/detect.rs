//! Recognising credentials written in plaintext in a server definition (`mcpctl import`,
//! `mcpctl secret adopt`, `mcpctl doctor`), and moving them out into `${secret:NAME}`
//! references.
//!
//! A value is taken for a credential when
//! - it is an `env` value whose name says so (`*TOKEN*`, `*KEY*`, `*SECRET*`, `*PASSWORD*`,
//!   `*PASSWD*`, `*CREDENTIAL*`, `*AUTH*`, `*_PAT`) and it does not look like a path, URL,
//!   number or switch;
//! - it is a header value of `Authorization` / `Proxy-Authorization` (the part after the
//!   scheme: `Bearer xyz` keeps `Bearer ` and moves `xyz`) or of a header named as above
//!   (`X-API-Key`);
//! - or, anywhere in `env`, `headers` and `args` (also the value of `--flag=value`), it looks
//!   like a known token format (`ghp_`, `github_pat_`, `glpat-`, `sk-`, `xoxb-`, `AKIA…`,
//!   `AIza…`, JWTs, ...) or is a long high-entropy string.
//!
//! Values that are already references (`${...}`) are left alone.

use serde_json::Value;
use zeroize::Zeroizing;

use crate::secret_refs::is_secret_name;

/// One credential moved out of a definition.
pub struct Moved {
    /// The JSON path it was at (`mcpServers.github.env.GITHUB_TOKEN`).
    pub path: String,
    /// The secret's name.
    pub name: String,
    /// The value, to store.
    pub value: Zeroizing<String>,
    /// Why it was taken for a credential.
    pub why: &'static str,
}

impl std::fmt::Debug for Moved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Moved")
            .field("path", &self.path)
            .field("name", &self.name)
            .field("why", &self.why)
            .finish_non_exhaustive()
    }
}

/// Known token prefixes and what they are.
const PREFIXES: &[(&str, &str)] = &[
    ("github_pat_", "a GitHub token"),
    ("ghp_", "a GitHub token"),
    ("gho_", "a GitHub token"),
    ("ghu_", "a GitHub token"),
    ("ghs_", "a GitHub token"),
    ("ghr_", "a GitHub token"),
    ("glpat-", "a GitLab token"),
    ("sk-", "an API key (sk-)"),
    ("sk_live_", "a Stripe key"),
    ("sk_test_", "a Stripe key"),
    ("rk_live_", "a Stripe key"),
    ("xoxb-", "a Slack token"),
    ("xoxp-", "a Slack token"),
    ("xoxa-", "a Slack token"),
    ("xoxs-", "a Slack token"),
    ("xapp-", "a Slack token"),
    ("AIza", "a Google API key"),
    ("ya29.", "a Google OAuth token"),
    ("hf_", "a Hugging Face token"),
    ("npm_", "an npm token"),
    ("pypi-", "a PyPI token"),
    ("dop_v1_", "a DigitalOcean token"),
    ("shpat_", "a Shopify token"),
    ("lin_api_", "a Linear key"),
    ("ntn_", "a Notion token"),
    ("secret_", "a Notion token"),
    ("pat", "an Airtable token"),
];

/// Whether an environment variable or header name says its value is a credential.
pub fn is_credential_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    [
        "TOKEN",
        "KEY",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "CREDENTIAL",
        "AUTH",
    ]
    .iter()
    .any(|w| upper.contains(w))
        || upper.ends_with("_PAT")
}

/// Why `value` looks like a credential by its form alone, if it does.
pub fn looks_like_token(value: &str) -> Option<&'static str> {
    let v = value.trim();
    if v.len() < 16 || v.chars().any(char::is_whitespace) || v.contains("${") {
        return None;
    }
    for (prefix, what) in PREFIXES {
        // `pat` alone is too common a prefix: only Airtable's `patXXXX.YYYY` form.
        if *prefix == "pat" {
            if v.starts_with("pat") && v.len() >= 40 && v.contains('.') && token_chars(v) {
                return Some(what);
            }
            continue;
        }
        if v.starts_with(prefix) && v.len() >= prefix.len() + 12 && token_chars(v) {
            return Some(what);
        }
    }
    if (v.starts_with("AKIA") || v.starts_with("ASIA"))
        && v.len() == 20
        && v.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return Some("an AWS access key");
    }
    if v.starts_with("eyJ") && v.matches('.').count() == 2 && token_chars(v) {
        return Some("a JSON Web Token");
    }
    if high_entropy(v) {
        return Some("a long random-looking string");
    }
    None
}

fn token_chars(v: &str) -> bool {
    v.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+' | '/' | '='))
}

/// At least 32 characters of token alphabet, letters and digits mixed, and at least 4 bits of
/// Shannon entropy per character: what random keys look like, and words, paths, URLs and
/// package names do not.
fn high_entropy(v: &str) -> bool {
    if v.len() < 32 || !token_chars(v) || v.starts_with('/') || v.starts_with('.') {
        return false;
    }
    let letters = v.chars().filter(char::is_ascii_alphabetic).count();
    let digits = v.chars().filter(char::is_ascii_digit).count();
    if letters == 0 || digits == 0 {
        return false;
    }
    let mut counts = [0u32; 256];
    for b in v.bytes() {
        counts[b as usize] += 1;
    }
    let n = v.len() as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / n;
            -p * p.log2()
        })
        .sum();
    entropy >= 4.0
}

/// Whether a value named like a credential is plausibly one (not a path, URL, number,
/// boolean, reference or a short word).
fn plausible_credential(value: &str) -> bool {
    let v = value.trim();
    v.len() >= 8
        && !v.contains("${")
        && !v.starts_with('/')
        && !v.starts_with('~')
        && !v.starts_with('.')
        && !v.contains("://")
        && !v.chars().all(|c| c.is_ascii_digit())
        && !matches!(
            v.to_ascii_lowercase().as_str(),
            "true" | "false" | "enabled" | "disabled"
        )
}

/// A secret name from `parts`, joined with `_`, in the allowed alphabet.
pub fn secret_name(parts: &[&str]) -> String {
    let mut name: String = parts
        .join("_")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        name.insert(0, '_');
    }
    name.truncate(128);
    name
}

/// Moves the credentials of one server entry (the `mcpServers` format) out: each value is
/// replaced by a `${secret:NAME}` reference in `entry` and returned. `taken` says whether a
/// name is already used for another value (the server's name is then added to it).
pub fn move_out(
    server: &str,
    entry: &mut Value,
    mut taken: impl FnMut(&str, &str) -> bool,
) -> Vec<Moved> {
    let mut moved = Vec::new();
    let base = format!("mcpServers.{server}");
    let mut name_for = |preferred: String, value: &str| -> String {
        let mut name = preferred.clone();
        if !is_secret_name(&name) || taken(&name, value) {
            name = secret_name(&[server, &preferred]);
        }
        let mut n = 2;
        while taken(&name, value) {
            name = format!("{}_{n}", secret_name(&[server, &preferred]));
            n += 1;
        }
        name
    };
    if let Some(env) = entry.get_mut("env").and_then(Value::as_object_mut) {
        for (key, value) in env.iter_mut() {
            let Some(text) = value.as_str() else { continue };
            let why = if let Some(why) = looks_like_token(text) {
                why
            } else if is_credential_name(key) && plausible_credential(text) {
                "its name says it is a credential"
            } else {
                continue;
            };
            let name = name_for(key.clone(), text);
            moved.push(Moved {
                path: format!("{base}.env.{key}"),
                name: name.clone(),
                value: Zeroizing::new(text.to_owned()),
                why,
            });
            *value = Value::String(format!("${{secret:{name}}}"));
        }
    }
    if let Some(headers) = entry.get_mut("headers").and_then(Value::as_object_mut) {
        for (key, value) in headers.iter_mut() {
            let Some(text) = value.as_str() else { continue };
            let lower = key.to_ascii_lowercase();
            let (prefix, credential, why) =
                if lower == "authorization" || lower == "proxy-authorization" {
                    match text.trim().split_once(' ') {
                        Some((scheme, rest))
                            if !scheme.is_empty()
                                && scheme.chars().all(|c| c.is_ascii_alphanumeric()) =>
                        {
                            (format!("{scheme} "), rest.trim(), "an Authorization header")
                        }
                        _ => (String::new(), text.trim(), "an Authorization header"),
                    }
                } else if let Some(why) = looks_like_token(text) {
                    (String::new(), text, why)
                } else if is_credential_name(key) && plausible_credential(text) {
                    (String::new(), text, "its name says it is a credential")
                } else {
                    continue;
                };
            if credential.is_empty() || credential.contains("${") {
                continue;
            }
            let name = name_for(secret_name(&[server, key]), credential);
            moved.push(Moved {
                path: format!("{base}.headers.{key}"),
                name: name.clone(),
                value: Zeroizing::new(credential.to_owned()),
                why,
            });
            *value = Value::String(format!("{prefix}${{secret:{name}}}"));
        }
    }
    if let Some(args) = entry.get_mut("args").and_then(Value::as_array_mut) {
        for (i, arg) in args.iter_mut().enumerate() {
            let Some(text) = arg.as_str() else { continue };
            let (flag, candidate) = match text.split_once('=') {
                Some((flag, v)) if flag.starts_with('-') => (format!("{flag}="), v),
                _ => (String::new(), text),
            };
            let Some(why) = looks_like_token(candidate) else {
                continue;
            };
            let label = flag.trim_start_matches('-').trim_end_matches('=');
            let label = if label.is_empty() {
                format!("arg{i}")
            } else {
                label.to_owned()
            };
            let name = name_for(secret_name(&[server, &label]), candidate);
            moved.push(Moved {
                path: format!("{base}.args[{i}]"),
                name: name.clone(),
                value: Zeroizing::new(candidate.to_owned()),
                why,
            });
            *arg = Value::String(format!("{flag}${{secret:{name}}}"));
        }
    }
    moved
}

/// The plaintext credentials of a definition, without changing it (for `mcpctl doctor`).
pub fn find(server: &str, entry: &Value) -> Vec<Moved> {
    let mut copy = entry.clone();
    move_out(server, &mut copy, |_, _| false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn token_formats_are_recognised_and_ordinary_values_are_not() {
        for token in [
            "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
            "glpat-xxxxXXXXxxxxXXXX1234",
            "sk-proj-abcdefghijklmnop1234567890",
            "xoxb-123456789012-1234567890123-abcdefghijkl",
            "AKIAIOSFODNN7EXAMPLE",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlc2lnbmF0dXJl",
            "Zq8v3LmN2pXw7RtY5uK1aB4cD6eF8gH0jK2",
        ] {
            assert!(looks_like_token(token).is_some(), "{token}");
        }
        for plain in [
            "-y",
            "@modelcontextprotocol/server-github",
            "/home/user/projects/some-long-directory-name-2024",
            "https://api.example.com/v1/endpoint?x=1",
            "stdio",
            "production",
            "a-very-long-but-ordinary-package-name-with-words",
            "${secret:X}",
        ] {
            assert!(looks_like_token(plain).is_none(), "{plain}");
        }
    }

    #[test]
    fn a_claude_desktop_entry_loses_its_token_and_authorization_header() {
        let mut entry = json!({
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-github", "--api-key=sk-abcdefghijklmnopqrstuvwxyz123456"],
            "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
                    "LOG_LEVEL": "debug", "CONFIG_PATH": "/etc/x.json", "API_KEY": "hunter2hunter2"},
            "headers": {"Authorization": "Bearer abc.def.ghi-1234", "Accept-Language": "en"}
        });
        let moved = move_out("github", &mut entry, |_, _| false);
        let names: Vec<&str> = moved.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "API_KEY",
                "GITHUB_PERSONAL_ACCESS_TOKEN",
                "github_Authorization",
                "github_api-key"
            ]
        );
        assert_eq!(
            entry["env"]["GITHUB_PERSONAL_ACCESS_TOKEN"],
            "${secret:GITHUB_PERSONAL_ACCESS_TOKEN}"
        );
        assert_eq!(entry["env"]["LOG_LEVEL"], "debug");
        assert_eq!(entry["env"]["CONFIG_PATH"], "/etc/x.json");
        assert_eq!(
            entry["headers"]["Authorization"],
            "Bearer ${secret:github_Authorization}"
        );
        assert_eq!(&*moved[2].value, "abc.def.ghi-1234");
        assert_eq!(entry["args"][2], "--api-key=${secret:github_api-key}");
        assert!(!format!("{moved:?}").contains("ghp_"));
        // Moving again finds nothing: references are left alone.
        assert!(move_out("github", &mut entry, |_, _| false).is_empty());
    }

    #[test]
    fn a_name_taken_by_another_value_gets_the_servers_name() {
        let mut entry = json!({"command": "x", "env": {"API_KEY": "value-of-the-second-key"}});
        let moved = move_out("two", &mut entry, |name, _| name == "API_KEY");
        assert_eq!(moved[0].name, "two_API_KEY");
    }
}
