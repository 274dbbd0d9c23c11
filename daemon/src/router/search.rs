//! Search mode (`"toolMode": "search"` on a profile): instead of every tool definition the
//! client sees three tools, and finds the others when it needs them.
//!
//! - `search_tools` `{"query", "limit"?}`: names ranked by BM25 over each tool's name, title,
//!   description and parameter names, each with a one-line summary;
//! - `describe_tools` `{"names": [...]}`: the full definitions, byte for byte as listed;
//! - `call_tool` `{"name", "arguments"}`: calls a tool; `arguments` may be an object or a JSON
//!   string (models send both). The request is rewritten into an ordinary `tools/call` of that
//!   tool, so its result passes through unchanged.
//!
//! The ranking is a small BM25 (k1 = 1.2, b = 0.75) over words: names are split at `_`, `-`,
//! `.`, `/` and camelCase, everything is lower-cased, and a few English stop words are dropped.

use std::collections::HashMap;

use mcpd_proto::envelope::{self, Envelope, member};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::catalog::Entry;

/// The three tools a client sees in search mode.
pub const SEARCH_TOOLS: &str = "search_tools";
/// See [`SEARCH_TOOLS`].
pub const DESCRIBE_TOOLS: &str = "describe_tools";
/// See [`SEARCH_TOOLS`].
pub(crate) const CALL_TOOL: &str = "call_tool";
/// Results of `search_tools` when the client gives no `limit`.
const DEFAULT_LIMIT: usize = 8;
/// Most results of one search.
const MAX_LIMIT: usize = 50;
/// Longest one-line summary, in characters.
const SUMMARY_CHARS: usize = 120;

/// The definitions of the three tools, as one JSON text each.
pub fn trio() -> [String; 3] {
    [
        json!({
            "name": SEARCH_TOOLS,
            "title": "Search tools",
            "description": "Find tools by what you want to do. Returns the best matching tool names, each with a one-line summary. Then call describe_tools for their parameters and call_tool to run one.",
            "inputSchema": {"type": "object", "properties": {
                "query": {"type": "string", "description": "What you want to do, in a few words"},
                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "description": "How many tools to return (default 8)"}
            }, "required": ["query"]},
            "annotations": {"readOnlyHint": true}
        }),
        json!({
            "name": DESCRIBE_TOOLS,
            "title": "Describe tools",
            "description": "Full definitions (description and input schema) of the named tools, as found by search_tools.",
            "inputSchema": {"type": "object", "properties": {
                "names": {"type": "array", "items": {"type": "string"}, "description": "Tool names from search_tools"}
            }, "required": ["names"]},
            "annotations": {"readOnlyHint": true}
        }),
        json!({
            "name": CALL_TOOL,
            "title": "Call a tool",
            "description": "Call a tool found with search_tools, with arguments that follow its input schema (see describe_tools).",
            "inputSchema": {"type": "object", "properties": {
                "name": {"type": "string", "description": "The tool's name"},
                "arguments": {"type": "object", "description": "The tool's arguments"}
            }, "required": ["name"]}
        }),
    ]
    .map(|v| v.to_string())
}

/// Whether `name` is one of the three.
pub(crate) fn is_trio(name: &str) -> bool {
    matches!(name, SEARCH_TOOLS | DESCRIBE_TOOLS | CALL_TOOL)
}

/// What a tool is searched by.
#[derive(Deserialize, Default)]
struct ToolText {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default, rename = "inputSchema")]
    input_schema: Option<Schema>,
}

#[derive(Deserialize, Default)]
struct Schema {
    #[serde(default)]
    properties: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A BM25 index over tools.
#[derive(Debug)]
pub struct Index<'a> {
    docs: Vec<(&'a Entry, HashMap<String, u32>, u32, String)>,
    df: HashMap<String, u32>,
    avg_len: f64,
}

/// One search hit.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The tool's name as the client calls it.
    pub name: String,
    /// The first line (or sentence) of its description, shortened.
    pub summary: String,
    /// Its BM25 score.
    pub score: f64,
}

impl<'a> Index<'a> {
    /// Indexes `tools`.
    pub fn new(tools: impl IntoIterator<Item = &'a Entry>) -> Self {
        let mut docs = Vec::new();
        let mut df: HashMap<String, u32> = HashMap::new();
        let mut total = 0u64;
        for entry in tools {
            let text: ToolText = serde_json::from_str(&entry.json).unwrap_or_default();
            let mut words = words(&entry.original);
            if let Some(title) = &text.title {
                words.extend(self::words(title));
            }
            if let Some(description) = &text.description {
                words.extend(self::words(description));
            }
            if let Some(props) = text.input_schema.and_then(|s| s.properties) {
                for name in props.keys() {
                    words.extend(self::words(name));
                }
            }
            let mut tf: HashMap<String, u32> = HashMap::new();
            for w in &words {
                *tf.entry(w.clone()).or_default() += 1;
            }
            for w in tf.keys() {
                *df.entry(w.clone()).or_default() += 1;
            }
            let len = u32::try_from(words.len()).unwrap_or(u32::MAX);
            total += u64::from(len);
            let summary = summary(text.description.as_deref().or(text.title.as_deref()));
            docs.push((entry, tf, len, summary));
        }
        let avg_len = if docs.is_empty() {
            1.0
        } else {
            (total as f64 / docs.len() as f64).max(1.0)
        };
        Self { docs, df, avg_len }
    }

    /// The best `limit` tools for `query`, best first; ties keep catalog order.
    pub fn search(&self, query: &str, limit: usize) -> Vec<Hit> {
        const K1: f64 = 1.2;
        const B: f64 = 0.75;
        let n = self.docs.len() as f64;
        let mut terms = words(query);
        terms.sort();
        terms.dedup();
        let mut hits: Vec<Hit> = self
            .docs
            .iter()
            .filter_map(|(entry, tf, len, summary)| {
                let score: f64 = terms
                    .iter()
                    .filter_map(|t| {
                        let f = f64::from(*tf.get(t)?);
                        let df = f64::from(self.df.get(t).copied().unwrap_or(0));
                        let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
                        let norm = K1 * (1.0 - B + B * f64::from(*len) / self.avg_len);
                        Some(idf * f * (K1 + 1.0) / (f + norm))
                    })
                    .sum();
                (score > 0.0).then(|| Hit {
                    name: entry.name.clone(),
                    summary: summary.clone(),
                    score,
                })
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(limit);
        hits
    }
}

/// Lower-cased words of `text`: split at non-alphanumerics and camelCase humps, with a crude
/// plural/verb-form stemming (`files` → `file`, `listing` → `list`) and stop words dropped.
pub fn words(text: &str) -> Vec<String> {
    const STOP: [&str; 24] = [
        "a", "an", "the", "of", "to", "in", "on", "for", "and", "or", "is", "it", "with", "by",
        "from", "at", "as", "be", "this", "that", "me", "my", "i", "you",
    ];
    let mut out = Vec::new();
    let mut word = String::new();
    let mut prev_lower = false;
    let flush = |word: &mut String, out: &mut Vec<String>| {
        if !word.is_empty() {
            let w = stem(&word.to_lowercase());
            if !STOP.contains(&w.as_str()) {
                out.push(w);
            }
            word.clear();
        }
    };
    for c in text.chars() {
        if c.is_alphanumeric() {
            if c.is_uppercase() && prev_lower {
                flush(&mut word, &mut out);
            }
            prev_lower = c.is_lowercase() || c.is_ascii_digit();
            word.push(c);
        } else {
            prev_lower = false;
            flush(&mut word, &mut out);
        }
    }
    flush(&mut word, &mut out);
    out
}

fn stem(w: &str) -> String {
    for (suffix, keep) in [("ies", "y"), ("ing", ""), ("es", ""), ("s", ""), ("ed", "")] {
        if let Some(base) = w.strip_suffix(suffix)
            && base.chars().count() >= 3
            && !(suffix == "s" && base.ends_with('s'))
        {
            return format!("{base}{keep}");
        }
    }
    w.to_owned()
}

/// The first line of `text`, cut to its first sentence and to [`SUMMARY_CHARS`].
fn summary(text: Option<&str>) -> String {
    let line = text
        .unwrap_or("")
        .trim()
        .lines()
        .next()
        .unwrap_or("")
        .trim();
    let line = match line.find(". ") {
        Some(end) => &line[..=end],
        None => line,
    };
    if line.chars().count() <= SUMMARY_CHARS {
        return line.to_owned();
    }
    let cut: String = line.chars().take(SUMMARY_CHARS - 1).collect();
    format!("{}…", cut.trim_end())
}

/// A local answer to a call of one of the three tools, or the `tools/call` line that
/// `call_tool` stands for.
#[derive(Debug)]
pub enum Handled {
    /// The JSON-RPC response to send.
    Answer(String),
    /// Route this line instead (an ordinary `tools/call`).
    Forward(String),
}

#[derive(Deserialize)]
struct SearchArgs {
    query: String,
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Deserialize)]
struct DescribeArgs {
    names: Vec<String>,
}

/// Handles a `tools/call` of `name` (one of the three) over the session's `tools`.
pub fn handle(name: &str, msg: &Envelope<'_>, tools: &[&Entry]) -> Handled {
    let id = msg.id.unwrap_or(RawValue::NULL);
    let args = msg.params.and_then(|p| member(p, "arguments"));
    let bad = |message: String| {
        Handled::Answer(envelope::error_response(
            Some(id),
            envelope::INVALID_PARAMS,
            &message,
        ))
    };
    match name {
        SEARCH_TOOLS => {
            let Some(args) = args.and_then(|a| serde_json::from_str::<SearchArgs>(a.get()).ok())
            else {
                return bad("search_tools needs {\"query\": \"...\"}".into());
            };
            let limit = args.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
            let hits = Index::new(tools.iter().copied()).search(&args.query, limit);
            let text = if hits.is_empty() {
                "No tool matches; try other words.".to_owned()
            } else {
                hits.iter()
                    .map(|h| format!("{} — {}", h.name, h.summary))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            let found: Vec<_> = hits
                .iter()
                .map(|h| json!({"name": h.name, "summary": h.summary}))
                .collect();
            Handled::Answer(envelope::response(
                id,
                &json!({"content": [{"type": "text", "text": text}], "structuredContent": {"tools": found}}),
            ))
        }
        DESCRIBE_TOOLS => {
            let Some(args) = args.and_then(|a| serde_json::from_str::<DescribeArgs>(a.get()).ok())
            else {
                return bad("describe_tools needs {\"names\": [\"...\"]}".into());
            };
            let mut found = Vec::new();
            let mut missing = Vec::new();
            for wanted in &args.names {
                match tools.iter().find(|e| &e.name == wanted) {
                    Some(e) => found.push(e.json.as_str()),
                    None => missing.push(wanted.as_str()),
                }
            }
            if !missing.is_empty() {
                return bad(format!(
                    "Unknown tool: {}; search_tools lists the names",
                    missing.join(", ")
                ));
            }
            // The definitions as listed, byte for byte; also as text for clients that only
            // read `content`.
            let tools_json = format!("{{\"tools\":[{}]}}", found.join(","));
            let text = serde_json::to_string(&tools_json).unwrap_or_default();
            Handled::Answer(format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":{},\"result\":{{\"content\":[{{\"type\":\"text\",\"text\":{text}}}],\"structuredContent\":{tools_json}}}}}",
                id.get()
            ))
        }
        _ => match call_line(msg, args) {
            Ok(line) => Handled::Forward(line),
            Err(e) => bad(e.to_string()),
        },
    }
}

/// Why a `call_tool` call's arguments do not make a `tools/call` (answered as invalid params).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallToolError {
    /// No `name` string, or `arguments` missing or undecodable.
    #[error("call_tool needs {{\"name\": \"...\", \"arguments\": {{...}}}}")]
    Usage,
    /// `arguments` is a string that does not parse as JSON.
    #[error("call_tool: arguments is a string but not JSON: {0}")]
    StringNotJson(#[source] serde_json::Error),
    /// `arguments` is a JSON string holding something other than an object.
    #[error("call_tool: arguments must be a JSON object")]
    StringNotObject,
    /// `arguments` is neither an object nor a string.
    #[error("call_tool: arguments must be an object or a JSON string")]
    NotObject,
}

/// The `tools/call` request that `call_tool {name, arguments}` stands for: the same id and
/// `_meta` (progress token), the arguments spliced in as sent (decoded once if a string).
fn call_line(msg: &Envelope<'_>, args: Option<&RawValue>) -> Result<String, CallToolError> {
    let args = args.ok_or(CallToolError::Usage)?;
    let name = member(args, "name")
        .filter(|n| n.get().starts_with('"'))
        .ok_or(CallToolError::Usage)?;
    let arguments = match member(args, "arguments") {
        None => "{}".to_owned(),
        Some(raw) if raw.get().starts_with('{') => raw.get().to_owned(),
        Some(raw) if raw.get().starts_with('"') => {
            let text = envelope::decode_str(raw).map_err(|_| CallToolError::Usage)?;
            let parsed: Box<RawValue> =
                serde_json::from_str(text.trim()).map_err(CallToolError::StringNotJson)?;
            if !parsed.get().starts_with('{') {
                return Err(CallToolError::StringNotObject);
            }
            parsed.get().to_owned()
        }
        Some(_) => return Err(CallToolError::NotObject),
    };
    let meta = msg
        .params
        .and_then(|p| member(p, "_meta"))
        .map(|m| format!(",\"_meta\":{}", m.get()))
        .unwrap_or_default();
    let id = msg.id.unwrap_or(RawValue::NULL);
    Ok(format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"tools/call\",\"params\":{{\"name\":{},\"arguments\":{arguments}{meta}}}}}",
        id.get(),
        name.get()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, json: serde_json::Value) -> Entry {
        Entry {
            name: format!("s__{name}"),
            server: "s".into(),
            original: name.into(),
            json: json.to_string(),
        }
    }

    #[test]
    fn words_split_names_and_camel_case() {
        assert_eq!(
            words("read_file getFileInfo list-dirs"),
            ["read", "file", "get", "file", "info", "list", "dir"]
        );
        assert_eq!(words("Search the repositories"), ["search", "repository"]);
    }

    #[test]
    fn bm25_ranks_the_tool_that_fits_first() {
        let tools = [
            entry(
                "read_file",
                json!({"name":"read_file","description":"Read the complete contents of a file from the file system.","inputSchema":{"properties":{"path":{}}}}),
            ),
            entry(
                "write_file",
                json!({"name":"write_file","description":"Create a new file or overwrite an existing file with new content.","inputSchema":{"properties":{"path":{},"content":{}}}}),
            ),
            entry(
                "search_repositories",
                json!({"name":"search_repositories","description":"Search for GitHub repositories","inputSchema":{"properties":{"query":{}}}}),
            ),
        ];
        let index = Index::new(tools.iter());
        let hits = index.search("show me what is inside a file", 5);
        assert_eq!(hits[0].name, "s__read_file", "{hits:?}");
        let hits = index.search("find repositories on github", 1);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].name, "s__search_repositories");
        assert_eq!(hits[0].summary, "Search for GitHub repositories");
        assert!(index.search("zebra", 5).is_empty());
    }

    #[test]
    fn call_tool_takes_arguments_as_an_object_or_a_json_string() {
        let object = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"call_tool","arguments":{"name":"s__echo","arguments":{"n":1.50}},"_meta":{"progressToken":"p"}}}"#;
        let msg = Envelope::parse(object).unwrap();
        let Handled::Forward(line) = handle(CALL_TOOL, &msg, &[]) else {
            panic!("not forwarded");
        };
        assert_eq!(
            line,
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"s__echo","arguments":{"n":1.50},"_meta":{"progressToken":"p"}}}"#
        );
        let string = r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"call_tool","arguments":{"name":"s__echo","arguments":"{\"n\": 1.50}"}}}"#;
        let msg = Envelope::parse(string).unwrap();
        let Handled::Forward(line) = handle(CALL_TOOL, &msg, &[]) else {
            panic!("not forwarded");
        };
        assert_eq!(
            line,
            r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"s__echo","arguments":{"n": 1.50}}}"#
        );
        let bad = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"call_tool","arguments":{"name":"s__echo","arguments":"[1"}}}"#;
        let msg = Envelope::parse(bad).unwrap();
        let Handled::Answer(answer) = handle(CALL_TOOL, &msg, &[]) else {
            panic!("forwarded");
        };
        assert!(answer.contains("not JSON"), "{answer}");
        let args = RawValue::from_string(r#"{"name":"s__echo","arguments":"[1]"}"#.into()).unwrap();
        assert!(matches!(
            call_line(&msg, Some(&args)),
            Err(CallToolError::StringNotObject)
        ));
        assert!(matches!(call_line(&msg, None), Err(CallToolError::Usage)));
        assert_eq!(
            CallToolError::Usage.to_string(),
            r#"call_tool needs {"name": "...", "arguments": {...}}"#
        );
    }
}
