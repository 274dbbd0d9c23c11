//! `mcpctl example-server`: a tiny, correct MCP stdio server with three tools, `echo`, `add`
//! and `pid` (its process id: the demo shows that clients share one process).
//!
//! The demo configures it as an upstream so that mcpd can be tried with nothing else installed.
//! It speaks JSON lines on stdin/stdout, writes nothing else to stdout, and exits at end of
//! input. Its messages are its own, not forwarded ones, so decoding them into
//! `serde_json::Value` is fine here.

use std::io::{self, BufRead, Write};

use anyhow::{Context, Result};
use mcpd_proto::envelope::{INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR};
use mcpd_proto::line::{Line, MAX_MESSAGE_LINE, read_line_bounded};
use serde_json::{Map, Value, json};

/// Protocol revisions this server speaks, newest first.
const SUPPORTED_VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// Serves MCP on stdin/stdout until stdin ends.
pub fn run() -> Result<()> {
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let mut output = io::stdout().lock();
    serve(&mut input, &mut output)
}

/// Answers every request line from `input` on `output`.
fn serve(input: &mut dyn BufRead, output: &mut dyn Write) -> Result<()> {
    loop {
        let reply =
            match read_line_bounded(input, MAX_MESSAGE_LINE).context("failed to read stdin")? {
                None => return Ok(()),
                Some(Line::TooLong { len }) => Some(error(
                    &Value::Null,
                    INVALID_REQUEST,
                    &format!("message of {len} bytes is over the limit of {MAX_MESSAGE_LINE}"),
                )),
                Some(Line::Complete(bytes)) if bytes.iter().all(u8::is_ascii_whitespace) => None,
                Some(Line::Complete(bytes)) => handle_line(&bytes),
            };
        if let Some(reply) = reply {
            let mut line = reply.to_string();
            line.push('\n');
            match output
                .write_all(line.as_bytes())
                .and_then(|()| output.flush())
            {
                // The client is gone; so is the reason to run.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
                other => other.context("failed to write stdout")?,
            }
        }
    }
}

/// The answer to one line, if it needs one.
fn handle_line(bytes: &[u8]) -> Option<Value> {
    let message: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            return Some(error(
                &Value::Null,
                PARSE_ERROR,
                &format!("parse error: {e}"),
            ));
        }
    };
    let Value::Object(message) = message else {
        return Some(error(
            &Value::Null,
            INVALID_REQUEST,
            "a message must be a JSON object (batches are not part of MCP)",
        ));
    };
    let Some(method) = message.get("method") else {
        // A response or something odd; this server sends no requests, so nothing to match.
        return None;
    };
    let Some(id) = message.get("id") else {
        // Notifications (initialized, cancelled, ...) need no answer.
        return None;
    };
    let Some(method) = method.as_str() else {
        return Some(error(id, INVALID_REQUEST, "`method` must be a string"));
    };
    let params = message.get("params").cloned().unwrap_or(Value::Null);
    Some(match request(method, &params) {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err((code, text)) => error(id, code, &text),
    })
}

type Reply = std::result::Result<Value, (i64, String)>;

fn request(method: &str, params: &Value) -> Reply {
    match method {
        "initialize" => Ok(initialize(params)),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({"tools": tools()})),
        "tools/call" => call(params),
        _ => Err((METHOD_NOT_FOUND, format!("method not found: {method}"))),
    }
}

fn initialize(params: &Value) -> Value {
    let requested = params.get("protocolVersion").and_then(Value::as_str);
    let version = requested
        .filter(|v| SUPPORTED_VERSIONS.contains(v))
        .unwrap_or(SUPPORTED_VERSIONS[0]);
    json!({
        "protocolVersion": version,
        "capabilities": {"tools": {}},
        "serverInfo": {"name": "mcpd-example", "version": env!("CARGO_PKG_VERSION")},
        "instructions": "An example server shipped with mcpctl: `echo` returns its message, `add` adds two numbers, `pid` gives its process id."
    })
}

fn tools() -> Value {
    json!([
        {
            "name": "echo",
            "title": "Echo",
            "description": "Returns the message it is given.",
            "inputSchema": {
                "type": "object",
                "properties": {"message": {"type": "string", "description": "Text to echo back"}},
                "required": ["message"]
            }
        },
        {
            "name": "add",
            "title": "Add",
            "description": "Adds two numbers.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "a": {"type": "number", "description": "First addend"},
                    "b": {"type": "number", "description": "Second addend"}
                },
                "required": ["a", "b"]
            }
        },
        {
            "name": "pid",
            "title": "Process id",
            "description": "Returns the process id of this server.",
            "inputSchema": {"type": "object", "properties": {}}
        }
    ])
}

fn call(params: &Value) -> Reply {
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        return Err((
            INVALID_PARAMS,
            "tools/call needs a string `name`".to_owned(),
        ));
    };
    let empty = Map::new();
    let arguments = match params.get("arguments") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(map)) => map,
        Some(_) => return Ok(tool_error("`arguments` must be an object")),
    };
    match name {
        "echo" => Ok(match arguments.get("message").and_then(Value::as_str) {
            Some(message) => text_result(&format!("Echo: {message}")),
            None => tool_error("invalid arguments: `message` must be a string"),
        }),
        "add" => Ok(
            match (
                arguments.get("a").and_then(number),
                arguments.get("b").and_then(number),
            ) {
                (Some(a), Some(b)) => text_result(&a.add(b)),
                _ => tool_error("invalid arguments: `a` and `b` must be numbers"),
            },
        ),
        "pid" => Ok(text_result(&std::process::id().to_string())),
        _ => Err((INVALID_PARAMS, format!("unknown tool: {name}"))),
    }
}

/// A JSON number: integers are added exactly (an `i128` holds any sum of two JSON integers that
/// serde_json decodes as `i64` or `u64`), everything else as floats.
#[derive(Debug, Clone, Copy)]
enum Number {
    Int(i128),
    Float(f64),
}

fn number(v: &Value) -> Option<Number> {
    if let Some(i) = v.as_i64() {
        Some(Number::Int(i.into()))
    } else if let Some(u) = v.as_u64() {
        Some(Number::Int(u.into()))
    } else {
        v.as_f64().map(Number::Float)
    }
}

impl Number {
    fn as_f64(self) -> f64 {
        match self {
            // Precision loss far from zero is what float addition means anyway.
            #[allow(clippy::cast_precision_loss)]
            Self::Int(i) => i as f64,
            Self::Float(f) => f,
        }
    }

    fn add(self, other: Self) -> String {
        match (self, other) {
            (Self::Int(a), Self::Int(b)) => (a + b).to_string(),
            _ => (self.as_f64() + other.as_f64()).to_string(),
        }
    }
}

fn text_result(text: &str) -> Value {
    json!({"content": [{"type": "text", "text": text}]})
}

/// A tool execution error: reported as a result so that the model can see and correct it.
fn tool_error(text: &str) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": true})
}

fn error(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_keep_integers_exact_and_fall_back_to_floats() {
        let sum = |a: Value, b: Value| number(&a).unwrap().add(number(&b).unwrap());
        assert_eq!(sum(json!(2), json!(3)), "5");
        assert_eq!(
            sum(json!(9_007_199_254_740_993_u64), json!(0)),
            "9007199254740993"
        );
        assert_eq!(sum(json!(i64::MAX), json!(1)), "9223372036854775808");
        assert_eq!(
            sum(json!(u64::MAX), json!(u64::MAX)),
            "36893488147419103230"
        );
        assert_eq!(sum(json!(i64::MIN), json!(-1)), "-9223372036854775809");
        assert_eq!(sum(json!(1.5), json!(2)), "3.5");
        assert!(number(&json!("2")).is_none());
    }

    #[test]
    fn serve_answers_requests_and_skips_blank_lines_and_notifications() {
        let input = b"\n{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"ping\"}\n";
        let mut out = Vec::new();
        serve(&mut &input[..], &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out.lines().count(), 1, "{out}");
        let reply: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(reply, json!({"jsonrpc": "2.0", "id": 7, "result": {}}));
    }
}
