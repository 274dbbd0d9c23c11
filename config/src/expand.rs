//! `${VAR}` and `${VAR:-default}` expansion, as in the de-facto `mcpServers` convention.
//!
//! A bare `$VAR` is left alone (a `$` in an argument is common: regexes, prices, shell snippets),
//! and so is `~`. `${VAR}` with `VAR` unset is an error that names the variable, so that a missing
//! secret is noticed at load time rather than sent to a server as an empty string.
//! `${VAR:-default}` uses `default` when `VAR` is unset or empty, as the shell does.

use std::fmt;

/// Why a string could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandError {
    /// `${VAR}` where `VAR` is not set.
    Unset(String),
    /// `${` without a closing `}`.
    Unterminated,
    /// `${...}` whose name is not `[A-Za-z_][A-Za-z0-9_]*`.
    BadName(String),
    /// `${secret:...}` whose name is not `[A-Za-z_][A-Za-z0-9_.-]*`.
    BadSecretName(String),
}

impl fmt::Display for ExpandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unset(name) => write!(
                f,
                "environment variable {name} is not set (set it in the daemon's environment, or write ${{{name}:-default}})"
            ),
            Self::Unterminated => f.write_str("`${` without a closing `}`"),
            Self::BadSecretName(name) => write!(
                f,
                "`${{secret:{name}}}` is not a secret reference (names are letters, digits, `_`, `-` and `.`, starting with a letter or `_`)"
            ),
            Self::BadName(name) => write!(
                f,
                "`${{{name}}}` is not a variable reference (names are letters, digits and `_`, not starting with a digit)"
            ),
        }
    }
}

/// Expands `${VAR}` and `${VAR:-default}` in `input` using `lookup`.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or(ExpandError::Unterminated)?;
        let inner = &after[..end];
        if let Some(secret) = inner.strip_prefix(super::secret_refs::PREFIX) {
            // Resolved later, when the server starts, from the secret store: kept as written.
            if !super::secret_refs::is_secret_name(secret) {
                return Err(ExpandError::BadSecretName(secret.to_owned()));
            }
            out.push_str(&rest[start..start + 2 + end + 1]);
            rest = &after[end + 1..];
            continue;
        }
        let (name, default) = match inner.find(":-") {
            Some(i) => (&inner[..i], Some(&inner[i + 2..])),
            None => (inner, None),
        };
        if !is_var_name(name) {
            return Err(ExpandError::BadName(inner.to_owned()));
        }
        match (lookup(name), default) {
            (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => return Err(ExpandError::Unset(name.to_owned())),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME" => Some("/home/u".into()),
            "EMPTY" => Some(String::new()),
            "TOKEN" => Some("s3cr$t".into()),
            _ => None,
        }
    }

    #[test]
    fn braces_expand_bare_dollars_do_not() {
        assert_eq!(expand("${HOME}/x", env).unwrap(), "/home/u/x");
        assert_eq!(expand("$HOME/x and ~/y", env).unwrap(), "$HOME/x and ~/y");
        assert_eq!(expand("Bearer ${TOKEN}", env).unwrap(), "Bearer s3cr$t");
        assert_eq!(expand("$5 and $ and $$", env).unwrap(), "$5 and $ and $$");
    }

    #[test]
    fn defaults_apply_when_unset_or_empty() {
        assert_eq!(expand("${NOPE:-dflt}", env).unwrap(), "dflt");
        assert_eq!(expand("${EMPTY:-dflt}", env).unwrap(), "dflt");
        assert_eq!(expand("${HOME:-dflt}", env).unwrap(), "/home/u");
        assert_eq!(expand("${NOPE:-}", env).unwrap(), "");
        assert_eq!(expand("${NOPE:-a:-b}", env).unwrap(), "a:-b");
    }

    #[test]
    fn secret_references_are_kept_for_later() {
        assert_eq!(
            expand("Bearer ${secret:GITHUB_TOKEN} ${HOME}", env).unwrap(),
            "Bearer ${secret:GITHUB_TOKEN} /home/u"
        );
        assert_eq!(
            expand("${secret:1bad}", env),
            Err(ExpandError::BadSecretName("1bad".into()))
        );
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(
            expand("${NOPE}", env),
            Err(ExpandError::Unset("NOPE".into()))
        );
        assert_eq!(expand("x ${HOME", env), Err(ExpandError::Unterminated));
        assert_eq!(expand("${1X}", env), Err(ExpandError::BadName("1X".into())));
        assert_eq!(expand("${}", env), Err(ExpandError::BadName(String::new())));
        assert!(
            expand("${NOPE}", env)
                .unwrap_err()
                .to_string()
                .contains("NOPE is not set")
        );
    }

    proptest! {
        #[test]
        fn text_without_brace_references_is_unchanged(s in "[^{}]*") {
            // Includes bare `$NAME`, `$`, `~`: none of them is a reference.
            prop_assert_eq!(expand(&s.replace("${", "$ {"), env).unwrap(), s.replace("${", "$ {"));
        }

        #[test]
        fn a_reference_is_replaced_by_exactly_its_value(
            prefix in "[^$]*", suffix in "[^$]*", name in "[A-Z_][A-Z0-9_]{0,8}", value in "[^\\x00]*"
        ) {
            let lookup = |n: &str| (n == name).then(|| value.clone());
            let out = expand(&format!("{prefix}${{{name}}}{suffix}"), lookup).unwrap();
            prop_assert_eq!(out, format!("{prefix}{value}{suffix}"));
        }

        #[test]
        fn expansion_is_not_recursive(value in "\\$\\{[A-Z]{1,4}\\}") {
            // A value that looks like a reference is inserted literally, never expanded again.
            let lookup = |n: &str| (n == "V").then(|| value.clone());
            prop_assert_eq!(expand("${V}", lookup).unwrap(), value);
        }

        #[test]
        fn default_is_used_iff_unset_or_empty(set in proptest::option::of("[a-z]{0,3}"), default in "[a-z]{0,5}") {
            let lookup = |n: &str| if n == "X" { set.clone() } else { None };
            let out = expand(&format!("${{X:-{default}}}"), lookup).unwrap();
            let expected = match &set { Some(v) if !v.is_empty() => v.clone(), _ => default.clone() };
            prop_assert_eq!(out, expected);
        }
    }
}
