//! `${secret:NAME}` references in a server's definition (`env`, `args`, `headers`, `url`; never
//! `command` or `cwd`).
//!
//! Loading the configuration keeps each reference as written ([`super::expand`] leaves it
//! alone) and records the names in the server's [`SecretBinding`]. The daemon fills in the
//! values for the instance it starts ([`SecretBinding::bind`], per profile), and the transport
//! substitutes them at the last moment ([`resolve`]) into a copy of the definition that is
//! used to spawn or connect and then wiped. The configuration itself never holds a value.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroize;

use super::{ServerSpec, TransportSpec};

/// What follows `${` in a secret reference.
pub const PREFIX: &str = "secret:";

/// Whether `name` may name a secret: `[A-Za-z_][A-Za-z0-9_.-]*`, at most 128 bytes.
pub fn is_secret_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 128
        && matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c == '-' || c == '.' || c.is_ascii_alphanumeric())
}

/// The names referenced in `text`, in order of appearance.
pub fn references(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${secret:") {
        let after = &rest[start + 2 + PREFIX.len()..];
        let Some(end) = after.find('}') else { break };
        let name = &after[..end];
        if is_secret_name(name) {
            out.push(name.to_owned());
        }
        rest = &after[end + 1..];
    }
    out
}

/// `text` with every `${secret:NAME}` replaced by its value; a name without a value is left
/// as written (callers check [`SecretBinding::missing`] first).
pub fn substitute(text: &str, values: &BTreeMap<String, SecretString>) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    while let Some(start) = rest.find("${secret:") {
        let after = &rest[start + 2 + PREFIX.len()..];
        let Some(end) = after.find('}') else { break };
        out.push_str(&rest[..start]);
        match values.get(&after[..end]) {
            Some(value) => out.push_str(value.expose_secret()),
            None => out.push_str(&rest[start..start + 2 + PREFIX.len() + end + 1]),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// A server's secret references and, for a started instance, their values.
#[derive(Clone, Default)]
pub struct SecretBinding {
    /// The names its definition references.
    pub names: BTreeSet<String>,
    /// The URL as written, when it references a secret (the parsed `url` shows the reference,
    /// never a value).
    pub url_template: Option<String>,
    /// The profile whose values were bound (`None`: the default values).
    pub profile: Option<String>,
    /// The values of `names` for this instance, once bound.
    pub values: Option<Arc<BTreeMap<String, SecretString>>>,
    /// Names that have no value for this instance.
    pub missing: Vec<String>,
}

impl PartialEq for SecretBinding {
    /// Definitions compare by what they reference, never by values.
    fn eq(&self, other: &Self) -> bool {
        self.names == other.names && self.url_template == other.url_template
    }
}

impl std::fmt::Debug for SecretBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBinding")
            .field("names", &self.names)
            .field("profile", &self.profile)
            .field("bound", &self.values.is_some())
            .field("missing", &self.missing)
            .finish()
    }
}

impl SecretBinding {
    /// Fills in the values (`lookup` gives a name's value for this instance) and the missing
    /// names.
    pub fn bind(&mut self, profile: Option<&str>, lookup: impl Fn(&str) -> Option<SecretString>) {
        let mut values = BTreeMap::new();
        let mut missing = Vec::new();
        for name in &self.names {
            match lookup(name) {
                Some(v) => {
                    values.insert(name.clone(), v);
                }
                None => missing.push(name.clone()),
            }
        }
        self.profile = profile.map(str::to_owned);
        self.values = Some(Arc::new(values));
        self.missing = missing;
    }

    /// Why the server cannot start: the first missing secret and the command that sets it.
    pub fn missing_message(&self, server: &str) -> Option<String> {
        self.missing_reason()
            .map(|why| format!("server `{server}` {why}"))
    }

    /// [`missing_message`](Self::missing_message) without the server's name: `needs the
    /// secret K, which is not set: run ...`.
    pub fn missing_reason(&self) -> Option<String> {
        let name = self.missing.first()?;
        let profile = self
            .profile
            .as_deref()
            .map(|p| format!(" --profile {p}"))
            .unwrap_or_default();
        Some(format!(
            "needs the secret {name}, which is not set: run `mcpctl secret set {name}{profile}`"
        ))
    }
}

/// A copy of a definition with its secret references replaced by the bound values, for the
/// moment of spawning or connecting; its strings are wiped when it is dropped.
pub struct Resolved(pub ServerSpec);

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolved([REDACTED])")
    }
}

impl Drop for Resolved {
    fn drop(&mut self) {
        match &mut self.0.transport {
            TransportSpec::Stdio(s) => {
                s.args.iter_mut().for_each(Zeroize::zeroize);
                s.env.values_mut().for_each(Zeroize::zeroize);
            }
            TransportSpec::Http(h) => {
                h.headers.0.iter_mut().for_each(|(_, v)| v.zeroize());
            }
        }
    }
}

/// Why a definition's secrets could not be filled in: the server cannot start until the user
/// acts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// A referenced secret has no value (for the server's profile): `why` names the first and
    /// the command that sets it ([`SecretBinding::missing_message`]).
    #[error("{why}")]
    Missing {
        /// The secret's name.
        name: String,
        /// The whole message.
        why: String,
    },
    /// The URL no longer parses once its secrets are in it (the values are not shown).
    #[error("the URL of server `{server}` is not valid once its secrets are filled in")]
    BadUrl {
        /// The server.
        server: String,
        /// What the URL parser said.
        #[source]
        source: url::ParseError,
    },
}

/// `spec` with its secrets substituted; `Err` when a value is missing or the URL no longer
/// parses with them.
pub fn resolve(server: &str, spec: &ServerSpec) -> Result<Resolved, ResolveError> {
    if let Some(why) = spec.secrets.missing_message(server) {
        let name = spec.secrets.missing.first().cloned().unwrap_or_default();
        return Err(ResolveError::Missing { name, why });
    }
    let empty = BTreeMap::new();
    let values = spec.secrets.values.as_deref().unwrap_or(&empty);
    let mut copy = Resolved(spec.clone());
    match &mut copy.0.transport {
        TransportSpec::Stdio(s) => {
            for arg in &mut s.args {
                let new = substitute(arg, values);
                arg.zeroize();
                *arg = new;
            }
            for value in s.env.values_mut() {
                let new = substitute(value, values);
                value.zeroize();
                *value = new;
            }
        }
        TransportSpec::Http(h) => {
            for (_, value) in &mut h.headers.0 {
                *value = substitute(value, values);
            }
            if let Some(template) = &spec.secrets.url_template {
                let mut text = substitute(template, values);
                let parsed = url::Url::parse(&text);
                text.zeroize();
                h.url = parsed.map_err(|source| ResolveError::BadUrl {
                    server: server.to_owned(),
                    source,
                })?;
            }
        }
    }
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_found_and_substituted() {
        assert_eq!(
            references("a ${secret:A} ${HOME} ${secret:b.c-d}x ${secret:1no}"),
            ["A", "b.c-d"]
        );
        let values = BTreeMap::from([("A".to_owned(), SecretString::from("va".to_owned()))]);
        assert_eq!(
            substitute("Bearer ${secret:A} ${secret:B}", &values),
            "Bearer va ${secret:B}"
        );
    }

    fn parse(text: &str) -> Result<crate::Loaded, crate::ConfigError> {
        crate::parse(std::path::Path::new("/c/config.json"), text, |_| None)
    }

    #[test]
    fn references_are_collected_from_env_args_headers_and_url_never_command() {
        let loaded = parse(
            r#"{"mcpServers":{
                "s":{"command":"x","args":["--key=${secret:A}"],"env":{"T":"${secret:B}"},"share":"per-profile"},
                "h":{"url":"https://h.example/mcp?key=${secret:C}","headers":{"Authorization":"Bearer ${secret:D}"}}}}"#,
        )
        .unwrap();
        let s = &loaded.config.servers["s"];
        assert_eq!(s.secrets.names, BTreeSet::from(["A".into(), "B".into()]));
        assert_eq!(s.share, crate::Share::PerProfile);
        assert_eq!(s.stdio().unwrap().args, ["--key=${secret:A}"]);
        let h = &loaded.config.servers["h"];
        assert_eq!(h.secrets.names, BTreeSet::from(["C".into(), "D".into()]));
        assert_eq!(
            h.secrets.url_template.as_deref(),
            Some("https://h.example/mcp?key=${secret:C}")
        );

        let loaded = parse(r#"{"mcpServers":{"s":{"command":"${secret:A}"}}}"#).unwrap();
        let e = &loaded.config.broken["s"].errors[0];
        assert_eq!(e.json_path.as_deref(), Some("mcpServers.s.command"));
        assert!(e.message.contains("not here"), "{e}");
    }

    #[test]
    fn resolving_fills_values_in_a_copy_and_leaves_the_definition_alone() {
        let loaded =
            parse(r#"{"mcpServers":{"s":{"command":"x","args":["${secret:A}"],"env":{"T":"k=${secret:A}"}}}}"#)
                .unwrap();
        let mut spec = loaded.config.servers["s"].clone();
        spec.secrets
            .bind(None, |_| Some(SecretString::from("v4lue".to_owned())));
        let resolved = resolve("s", &spec).unwrap();
        let stdio = resolved.0.stdio().unwrap();
        assert_eq!(stdio.args, ["v4lue"]);
        assert_eq!(stdio.env["T"], "k=v4lue");
        assert_eq!(spec.stdio().unwrap().args, ["${secret:A}"]);
        assert!(!format!("{spec:?}").contains("v4lue"));
    }

    #[test]
    fn a_missing_secret_names_the_command_that_sets_it() {
        let mut binding = SecretBinding {
            names: BTreeSet::from(["K".to_owned()]),
            ..SecretBinding::default()
        };
        binding.bind(Some("work"), |_| None);
        assert_eq!(
            binding.missing_message("gh").unwrap(),
            "server `gh` needs the secret K, which is not set: run `mcpctl secret set K --profile work`"
        );
    }
}
