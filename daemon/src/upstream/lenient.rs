//! Leniency with what real servers get wrong in their answers, so that clients (whose SDKs
//! validate strictly) get something they can read and a clear message instead of a parse
//! failure. Tool definitions pass through untouched: a Draft-07 `inputSchema` (`$schema`,
//! `definitions`, `$ref`) reaches clients byte for byte (2026-07-28 makes JSON Schema 2020-12
//! the default dialect, and a `$schema` naming another is the server's declaration to keep).
//! A missing `resultType` is read as `complete` (`router::session::modern`, `router::mrtr`).

use mcpd_proto::envelope::{self, Envelope};
use std::collections::HashMap;

use serde_json::Value;
use serde_json::value::RawValue;

/// An upstream's error answer to a client's request, as the client must get it (with
/// `client_id`): `None` when the error object is well formed (an integer `code`, a string
/// `message`). A `code` written as a string of an integer is read as that integer; a missing
/// message gets one naming `server`; anything else becomes `-32603` quoting what was sent.
/// `data` is kept.
pub fn malformed_error(msg: &Envelope<'_>, client_id: &RawValue, server: &str) -> Option<String> {
    let error = msg.error?;
    // Members kept raw: `data` and the id reach the client byte for byte, never re-encoded.
    let members: Option<HashMap<String, Box<RawValue>>> = serde_json::from_str(error.get()).ok();
    let member = |key: &str| members.as_ref().and_then(|m| m.get(key));
    let integer = member("code").and_then(|c| c.get().parse::<i64>().ok());
    let message = member("message").and_then(|m| serde_json::from_str::<String>(m.get()).ok());
    if integer.is_some() && message.is_some() {
        return None;
    }
    let preview: String = error.get().chars().take(200).collect();
    let code = integer.or_else(|| {
        member("code")
            .and_then(|c| serde_json::from_str::<String>(c.get()).ok())
            .and_then(|s| s.trim().parse().ok())
    });
    let (code, message) = match (code, message) {
        (Some(code), Some(message)) => (code, message),
        (Some(code), None) => (
            code,
            format!("server `{server}` answered with error {code} and no message"),
        ),
        (None, _) => (
            envelope::INTERNAL_ERROR,
            format!("server `{server}` answered with a malformed error: {preview}"),
        ),
    };
    let data = member("data")
        .map(|d| format!(r#","data":{}"#, d.get()))
        .unwrap_or_default();
    Some(format!(
        r#"{{"jsonrpc":"2.0","id":{},"error":{{"code":{code},"message":{}{data}}}}}"#,
        client_id.get(),
        Value::String(message),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(line: &str) -> Option<Value> {
        let msg = Envelope::parse(line).expect("message");
        let id = RawValue::from_string("\"c-1\"".into()).expect("raw");
        malformed_error(&msg, &id, "s").map(|l| serde_json::from_str(&l).expect("json"))
    }

    #[test]
    fn well_formed_errors_pass_and_sloppy_ones_are_made_readable() {
        assert!(
            fixed(r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"m"}}"#).is_none()
        );
        assert!(fixed(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#).is_none());
        let string_code =
            fixed(r#"{"jsonrpc":"2.0","id":1,"error":{"code":"-32001","message":"m","data":[1]}}"#)
                .expect("fixed");
        assert_eq!(
            string_code["error"],
            serde_json::json!({"code": -32001, "message": "m", "data": [1]})
        );
        assert_eq!(string_code["id"], "c-1");
        // `data` is passed on as the server wrote it, not re-encoded.
        let raw_data = malformed_error(
            &Envelope::parse(
                r#"{"jsonrpc":"2.0","id":1,"error":{"code":"1","message":"m","data":{"n":1.50}}}"#,
            )
            .expect("message"),
            &RawValue::from_string("7".into()).expect("raw"),
            "s",
        )
        .expect("fixed");
        assert!(raw_data.contains(r#""data":{"n":1.50}"#), "{raw_data}");
        let no_message =
            fixed(r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000}}"#).expect("fixed");
        assert!(
            no_message["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("no message"))
        );
        let bare = fixed(r#"{"jsonrpc":"2.0","id":1,"error":"it broke"}"#).expect("fixed");
        assert_eq!(bare["error"]["code"], envelope::INTERNAL_ERROR);
        assert!(
            bare["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("it broke"))
        );
    }
}
