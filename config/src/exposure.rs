//! What clients see of a server and of a profile, and when a server starts: tool filters
//! (`"tools": {"allow": [...], "deny": [...]}`), the name `prefix`, `"start": "lazy" | "eager"`
//! and a profile's `toolMode`.
//!
//! These keys change no byte that reaches a server, so a reload that changes only them does not
//! restart it (see [`Exposure::same_process`]).

use serde_json::Value;

/// How a server's tools and name appear to clients, and when it starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Exposure {
    /// Which of its tools clients see (globs on the server's own tool names).
    pub tools: ToolFilter,
    /// What its tool and prompt names are prefixed with; `None`: the server's name. `""`
    /// exposes its own names as they are (MCP Apps call tools by their bare names).
    pub prefix: Option<String>,
    /// When its process starts.
    pub start: Start,
}

impl Exposure {
    /// The prefix of `server`'s names: the configured one, else the server's name.
    pub fn prefix_of<'a>(&'a self, server: &'a str) -> &'a str {
        self.prefix.as_deref().unwrap_or(server)
    }

    /// Whether two exposures may share one running process: only `start` matters to it
    /// (filters and prefixes are applied by the catalog).
    pub fn same_process(&self, other: &Self) -> bool {
        self.start == other.start
    }
}

/// When a server's process starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// With the daemon (the default; see the README for why).
    #[default]
    Eager,
    /// When a request needs it (a call, a read, a prompt), if its lists are in the catalog
    /// cache; they are served from there meanwhile. Without a cache entry it starts once to
    /// fill it.
    Lazy,
}

/// Allow and deny globs on a server's own tool names. A tool is shown when it matches an
/// `allow` glob (or there are none) and no `deny` glob.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ToolFilter {
    /// Globs of the tools to show; empty: all.
    pub allow: Vec<String>,
    /// Globs of the tools to hide and refuse.
    pub deny: Vec<String>,
}

impl ToolFilter {
    /// Whether the filter lets every tool through.
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Whether the tool named `name` (the server's own name) is shown and may be called.
    pub fn permits(&self, name: &str) -> bool {
        (self.allow.is_empty() || self.allow.iter().any(|g| glob_matches(g, name)))
            && !self.deny.iter().any(|g| glob_matches(g, name))
    }
}

/// How a profile presents its tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ToolMode {
    /// Every tool definition (the default).
    #[default]
    All,
    /// Three tools (`search_tools`, `describe_tools`, `call_tool`) in front of the catalog.
    Search,
    /// `search` when the profile has more than [`AUTO_SEARCH_ABOVE`] tools, else `all`.
    Auto,
}

/// Above this many tools `"toolMode": "auto"` switches to search. Chosen from
/// `tests/benches/tokens.rs` (docs/BENCHMARKS.md): at 50 tools the definitions already cost
/// several thousand tokens in every request, while the search trio costs a few hundred.
pub const AUTO_SEARCH_ABOVE: usize = 40;

impl ToolMode {
    /// Whether a profile with `tools` tools is served in search mode.
    pub fn searches(self, tools: usize) -> bool {
        match self {
            Self::All => false,
            Self::Search => true,
            Self::Auto => tools > AUTO_SEARCH_ABOVE,
        }
    }
}

/// Whether `name` matches `glob`: `*` stands for any run of characters, `?` for one.
pub fn glob_matches(glob: &str, name: &str) -> bool {
    let g: Vec<char> = glob.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matching with one backtrack point: linear in practice, no recursion.
    let (mut gi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match g.get(gi) {
            Some('*') => {
                star = Some((gi, ni));
                gi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                gi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sg, sn)) => {
                    gi = sg + 1;
                    ni = sn + 1;
                    star = Some((sg, sn + 1));
                }
                None => return false,
            },
        }
    }
    g[gi..].iter().all(|c| *c == '*')
}

/// Why a value of one of these keys was refused: the message for the key's JSON path.
pub type KeyError = String;

/// Reads `"tools": {"allow": [...], "deny": [...]}`. Errors name the sub-path (`.allow[1]`).
pub fn tool_filter(v: &Value) -> Result<ToolFilter, (String, KeyError)> {
    let obj = v.as_object().ok_or_else(|| {
        (
            String::new(),
            "expected an object like {\"allow\": [\"read_*\"], \"deny\": [\"delete_*\"]}".into(),
        )
    })?;
    let mut filter = ToolFilter::default();
    for (key, value) in obj {
        let list = match key.as_str() {
            "allow" => &mut filter.allow,
            "deny" => &mut filter.deny,
            other => {
                return Err((
                    format!(".{other}"),
                    "unknown key: a tool filter has only \"allow\" and \"deny\"".into(),
                ));
            }
        };
        let items = value.as_array().ok_or_else(|| {
            (
                format!(".{key}"),
                "expected an array of tool-name globs (`*` and `?` wildcards)".into(),
            )
        })?;
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(glob) if !glob.is_empty() => list.push(glob.to_owned()),
                _ => {
                    return Err((
                        format!(".{key}[{i}]"),
                        "expected a non-empty tool-name glob".into(),
                    ));
                }
            }
        }
    }
    Ok(filter)
}

/// Reads `"prefix"`: `""` or a name of `[A-Za-z0-9_-]`.
pub fn prefix(v: &Value) -> Result<String, KeyError> {
    let s = v
        .as_str()
        .ok_or("expected a string (\"\" exposes the server's own tool names)")?;
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && s.len() <= 32
    {
        Ok(s.to_owned())
    } else {
        Err("a prefix has at most 32 letters, digits, `_` or `-` (or is \"\")".into())
    }
}

/// Reads `"start"`.
pub fn start(v: &Value) -> Result<Start, KeyError> {
    match v.as_str() {
        Some("eager") => Ok(Start::Eager),
        Some("lazy") => Ok(Start::Lazy),
        _ => Err(format!("expected \"lazy\" or \"eager\", found {v}")),
    }
}

/// Reads a profile's `"toolMode"`.
pub fn tool_mode(v: &Value) -> Result<ToolMode, KeyError> {
    match v.as_str() {
        Some("all") => Ok(ToolMode::All),
        Some("search") => Ok(ToolMode::Search),
        Some("auto") => Ok(ToolMode::Auto),
        _ => Err(format!(
            "expected \"all\", \"search\" or \"auto\", found {v}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn globs_match_stars_and_question_marks() {
        assert!(glob_matches("read_*", "read_file"));
        assert!(glob_matches("read_*", "read_"));
        assert!(!glob_matches("read_*", "write_file"));
        assert!(glob_matches("*_file", "delete_file"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("a*b*c", "axxbyyc"));
        assert!(!glob_matches("a*b*c", "axxbyy"));
        assert!(glob_matches("get-?um", "get-sum"));
        assert!(!glob_matches("get-?um", "get-um"));
        assert!(glob_matches("echo", "echo"));
        assert!(!glob_matches("echo", "echo2"));
    }

    #[test]
    fn deny_wins_over_allow() {
        let f = tool_filter(&json!({"allow": ["read_*", "list_*"], "deny": ["*_secret"]})).unwrap();
        assert!(f.permits("read_file"));
        assert!(f.permits("list_dir"));
        assert!(!f.permits("read_secret"));
        assert!(!f.permits("write_file"));
        let deny_only = tool_filter(&json!({"deny": ["delete_*"]})).unwrap();
        assert!(deny_only.permits("anything"));
        assert!(!deny_only.permits("delete_repo"));
    }

    #[test]
    fn bad_filters_name_the_offending_part() {
        assert_eq!(tool_filter(&json!({"allow": "x"})).unwrap_err().0, ".allow");
        assert_eq!(
            tool_filter(&json!({"deny": ["ok", 3]})).unwrap_err().0,
            ".deny[1]"
        );
        assert_eq!(tool_filter(&json!({"block": []})).unwrap_err().0, ".block");
        assert!(prefix(&json!("has space")).is_err());
        assert_eq!(prefix(&json!("")).unwrap(), "");
        assert!(start(&json!("later")).is_err());
        assert!(tool_mode(&json!("some")).is_err());
    }

    #[test]
    fn auto_searches_only_above_the_threshold() {
        assert!(!ToolMode::Auto.searches(AUTO_SEARCH_ABOVE));
        assert!(ToolMode::Auto.searches(AUTO_SEARCH_ABOVE + 1));
        assert!(ToolMode::Search.searches(0));
        assert!(!ToolMode::All.searches(10_000));
    }
}
