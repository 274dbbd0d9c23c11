//! Redaction of every secret value the daemon knows, from everything it writes or shows.
//!
//! A [`Redactor`] is a cheap handle (an `Arc`) on the set of known secret values, each with the
//! name shown in its place: `[redacted:NAME]`. The owners of secrets keep it current, each
//! under a *source* key of its own that [`Redactor::set`] replaces as a whole:
//!
//! - the secret store (`secret:…`): every stored value, named after the secret;
//! - OAuth (`oauth:<server>`): the server's access and refresh tokens, named
//!   `oauth:<server>`;
//! - configured HTTP headers (`headers`): each resolved header value, named
//!   `<server>.headers.<Header>`, and the credential after its scheme (`Bearer xyz` → `xyz`).
//!
//! Whatever writes or shows text calls [`Redactor::redact`]: the log ring behind `mcpctl logs`
//! and the daemon's stderr log ([`crate::logging`]), each server's stderr lines as they are
//! logged and kept for status, `mcpctl status`, and error messages.
//!
//! The daemon uses the process-wide instance ([`Redactor::process`]) so that the logging
//! layer, installed before any daemon exists, sees every value.
//!
//! Values are kept as [`SecretString`]s (zeroized when dropped). Besides each value as is, its
//! JSON-escaped and control-escaped spellings are matched too (a server's stderr line is
//! logged with control characters escaped; JSON output escapes quotes and backslashes).
//! Values shorter than [`MIN_LEN`] bytes are not matched: they would turn ordinary words into
//! `[redacted:…]` and are no secret anyway.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};

use secrecy::{ExposeSecret, SecretString};

/// Shorter values are not redacted (see the module documentation).
pub const MIN_LEN: usize = 4;

/// The set of known secret values; cheap to clone (every clone sees the same set).
#[derive(Clone, Default)]
pub struct Redactor {
    known: Arc<RwLock<Known>>,
}

#[derive(Default)]
struct Known {
    /// Source → (name, value) pairs.
    sources: BTreeMap<String, Vec<(String, SecretString)>>,
    /// Every spelling to look for, longest first, with the name shown in its place.
    patterns: Vec<(SecretString, Arc<str>)>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let known = self.read();
        f.debug_struct("Redactor")
            .field("sources", &known.sources.keys().collect::<Vec<_>>())
            .field("patterns", &known.patterns.len())
            .finish()
    }
}

impl Redactor {
    /// An empty redactor of its own (tests; the daemon uses [`Redactor::process`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// The process-wide redactor that the log layers apply.
    pub fn process() -> Self {
        static PROCESS: OnceLock<Redactor> = OnceLock::new();
        PROCESS.get_or_init(Redactor::new).clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Known> {
        self.known.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the values of `source` with `values` (name, value); an empty list forgets the
    /// source.
    pub fn set(&self, source: &str, values: Vec<(String, SecretString)>) {
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        if values.is_empty() {
            known.sources.remove(source);
        } else {
            known.sources.insert(source.to_owned(), values);
        }
        known.patterns = patterns(&known.sources);
    }

    /// Adds one value to `source` (keeping the others).
    #[cfg(test)]
    pub fn add(&self, source: &str, name: &str, value: SecretString) {
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        known
            .sources
            .entry(source.to_owned())
            .or_default()
            .push((name.to_owned(), value));
        known.patterns = patterns(&known.sources);
    }

    /// Whether any value is known.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.read().patterns.is_empty()
    }

    /// `text` with every known secret value replaced by `[redacted:NAME]`; borrowed when
    /// there was nothing to replace.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let known = self.read();
        if known.patterns.is_empty() || text.len() < MIN_LEN {
            return Cow::Borrowed(text);
        }
        // Every match, then the earliest (and at one place the longest, since patterns are
        // sorted longest first) wins; overlapping later ones are dropped.
        let mut hits: Vec<(usize, usize, &str)> = Vec::new();
        for (value, name) in &known.patterns {
            let value = value.expose_secret();
            let mut from = 0;
            while let Some(at) = text[from..].find(value) {
                let start = from + at;
                hits.push((start, start + value.len(), name));
                from = start + value.len();
            }
        }
        if hits.is_empty() {
            return Cow::Borrowed(text);
        }
        hits.sort_by_key(|&(start, end, _)| (start, std::cmp::Reverse(end)));
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (start, end, name) in hits {
            if start < at {
                continue;
            }
            out.push_str(&text[at..start]);
            out.push_str("[redacted:");
            out.push_str(name);
            out.push(']');
            at = end;
        }
        out.push_str(&text[at..]);
        Cow::Owned(out)
    }

    /// [`redact`](Self::redact) into an owned string.
    pub fn redact_owned(&self, text: String) -> String {
        match self.redact(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(s) => s,
        }
    }
}

/// The spellings of every value, longest first, deduplicated.
fn patterns(
    sources: &BTreeMap<String, Vec<(String, SecretString)>>,
) -> Vec<(SecretString, Arc<str>)> {
    let mut out: Vec<(SecretString, Arc<str>)> = Vec::new();
    for (name, value) in sources.values().flatten() {
        let name: Arc<str> = Arc::from(name.as_str());
        let value = value.expose_secret();
        let mut spellings = vec![value.to_owned()];
        let json = serde_json::to_string(value).unwrap_or_default();
        let json = json
            .strip_prefix('"')
            .and_then(|j| j.strip_suffix('"'))
            .unwrap_or_default();
        spellings.push(json.to_owned());
        spellings.push(crate::upstream::process::escape_control(value));
        for spelling in spellings {
            if spelling.len() >= MIN_LEN && !out.iter().any(|(v, _)| v.expose_secret() == spelling)
            {
                out.push((SecretString::from(spelling), Arc::clone(&name)));
            }
        }
    }
    out.sort_by_key(|(v, _)| std::cmp::Reverse(v.expose_secret().len()));
    out
}

/// The credential in a header value: the value itself, and for `Scheme credential` (`Bearer`,
/// `Basic`, `token`, ...) the credential alone, since a server may print just that.
pub fn header_values(name: &str, value: &str) -> Vec<(String, SecretString)> {
    let mut out = vec![(name.to_owned(), SecretString::from(value.to_owned()))];
    if let Some((scheme, credential)) = value.trim().split_once(' ') {
        let credential = credential.trim();
        if !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
            && credential.len() >= MIN_LEN
        {
            out.push((name.to_owned(), SecretString::from(credential.to_owned())));
        }
    }
    out
}

/// Registers the configured header values of `config`'s remote servers (source `headers`),
/// replacing those of the previous configuration.
pub fn register_config(redactor: &Redactor, config: &crate::config::Config) {
    let mut values = Vec::new();
    for (server, spec) in &config.servers {
        if let Some(http) = spec.http() {
            for (header, value) in &http.headers.0 {
                // A value with `${secret:NAME}` is a template; the secret itself is known to
                // the redactor through the secret store.
                if !crate::config::secret_refs::references(value).is_empty() {
                    continue;
                }
                values.extend(header_values(&format!("{server}.headers.{header}"), value));
            }
        }
    }
    redactor.set("headers", values);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn every_occurrence_is_replaced_by_the_name() {
        let r = Redactor::new();
        r.set(
            "secret",
            vec![("GITHUB_TOKEN".into(), secret("ghp_abcdef123456"))],
        );
        assert_eq!(
            r.redact("key=ghp_abcdef123456 again ghp_abcdef123456."),
            "key=[redacted:GITHUB_TOKEN] again [redacted:GITHUB_TOKEN]."
        );
        assert!(matches!(r.redact("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn clones_share_the_set_and_sources_replace_their_own_values() {
        let r = Redactor::new();
        let handle = r.clone();
        r.set("a", vec![("A".into(), secret("alpha-value"))]);
        r.set("b", vec![("B".into(), secret("bravo-value"))]);
        assert_eq!(
            handle.redact("alpha-value bravo-value"),
            "[redacted:A] [redacted:B]"
        );
        r.set("a", vec![("A2".into(), secret("alpha-other"))]);
        assert_eq!(
            handle.redact("alpha-value alpha-other"),
            "alpha-value [redacted:A2]"
        );
        r.set("a", Vec::new());
        r.add("b", "C", secret("charlie-value"));
        assert_eq!(
            handle.redact("alpha-other bravo-value charlie-value"),
            "alpha-other [redacted:B] [redacted:C]"
        );
    }

    #[test]
    fn overlapping_values_redact_the_longest() {
        let r = Redactor::new();
        r.set(
            "s",
            vec![
                ("SHORT".into(), secret("token123")),
                ("LONG".into(), secret("xtoken1234")),
            ],
        );
        assert_eq!(
            r.redact("[xtoken1234] token123"),
            "[[redacted:LONG]] [redacted:SHORT]"
        );
    }

    #[test]
    fn escaped_spellings_and_header_credentials_are_found() {
        let r = Redactor::new();
        r.set("s", vec![("Q".into(), secret("pa\"ss\nword"))]);
        assert_eq!(
            r.redact(r#"{"v":"pa\"ss\nword"}"#),
            r#"{"v":"[redacted:Q]"}"#
        );
        r.set(
            "h",
            header_values("api.headers.Authorization", "Bearer abcdefgh"),
        );
        assert_eq!(
            r.redact("got abcdefgh; header Bearer abcdefgh"),
            "got [redacted:api.headers.Authorization]; header [redacted:api.headers.Authorization]"
        );
    }

    #[test]
    fn very_short_values_are_not_matched() {
        let r = Redactor::new();
        r.set("s", vec![("X".into(), secret("abc"))]);
        assert!(r.is_empty());
        assert_eq!(r.redact("abc abc"), "abc abc");
    }

    #[test]
    fn debug_shows_no_value() {
        let r = Redactor::new();
        r.set("s", vec![("X".into(), secret("hunter2-long"))]);
        assert!(!format!("{r:?}").contains("hunter2"));
    }
}
