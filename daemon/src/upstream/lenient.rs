//! Leniency with what real servers get wrong in their answers, so that clients (whose SDKs
//! validate strictly) get something they can read and a clear message instead of a parse
//! failure. Tool definitions pass through untouched: a Draft-07 `inputSchema` (`$schema`,
//! `definitions`, `$ref`) reaches clients byte for byte (2026-07-28 makes JSON Schema 2020-12
//! the default dialect, and a `$schema` naming another is the server's declaration to keep).
//! A missing `resultType` is read as `complete` (`router::session::modern`, `router::mrtr`).

use mcpd_proto::envelope::{self, Envelope};
use serde_json::Value;
use serde_json::value::RawValue;

/// An upstream's error answer to a client's request, as the client must get it (with
/// `client_id`): `None` when the error object is well formed (an integer `code`, a string
/// `message`). A `code` written as a string of an integer is read as that integer; a missing
/// message gets one naming `server`; anything else becomes `-32603` quoting what was sent.
/// `data` is kept.
pub fn malformed_error(msg: &Envelope<'_>, client_id: &RawValue, server: &str) -> Option<String> {
    let error = msg.error?;
    let value: Value = serde_json::from_str(error.get()).unwrap_or(Value::Null);
    let object = value.as_object();
    let code = object.and_then(|o| o.get("code"));
    let message = object.and_then(|o| o.get("message"));
    if code.is_some_and(Value::is_i64) && message.is_some_and(Value::is_string) {
        return None;
    }
    let preview: String = error.get().chars().take(200).collect();
    let code = code.and_then(|c| {
        c.as_i64()
            .or_else(|| c.as_str().and_then(|s| s.trim().parse().ok()))
    });
    let (code, message) = match (code, message.and_then(Value::as_str)) {
        (Some(code), Some(message)) => (code, message.to_owned()),
        (Some(code), None) => (
            code,
            format!("server `{server}` answered with error {code} and no message"),
        ),
        (None, _) => (
            envelope::INTERNAL_ERROR,
            format!("server `{server}` answered with a malformed error: {preview}"),
        ),
    };
    let mut fixed = serde_json::json!({"code": code, "message": message});
    if let Some(data) = object.and_then(|o| o.get("data")) {
        fixed["data"] = data.clone();
    }
    Some(
        serde_json::json!({
            "jsonrpc": "2.0",
            "id": serde_json::from_str::<Value>(client_id.get()).unwrap_or(Value::Null),
            "error": fixed,
        })
        .to_string(),
    )
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
