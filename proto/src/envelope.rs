//! The JSON-RPC raw envelope: parse just enough of a message to route it, then rewrite only the
//! parts routing needs (the `id`, a progress token, a namespaced name) by splicing bytes.
//!
//! Every other byte of a forwarded message is left exactly as the sender wrote it. A round trip
//! through `serde_json::Value` would turn `1.50` into `1.5` and 30-digit integers into floats, and
//! a typed model would drop fields it does not know; splicing does neither.
//!
//! Parts are `&RawValue`s borrowed from the message text, so their byte offsets inside it are
//! known and a [`Rewrite`] can replace them in place.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::OnceLock;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// JSON-RPC: invalid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC: not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC: no such method.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC: invalid method parameters.
pub const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC: internal error.
pub const INTERNAL_ERROR: i64 = -32603;
/// The request timed out (the code the MCP SDKs use).
pub const REQUEST_TIMEOUT: i64 = -32001;
/// mcpd: the upstream server that owns the request is not running or not ready.
pub const UPSTREAM_UNAVAILABLE: i64 = -32010;
/// mcpd: the upstream server's input queue is full.
pub const UPSTREAM_BUSY: i64 = -32011;
/// mcpd: the upstream server went away while the request was in flight.
pub const UPSTREAM_LOST: i64 = -32012;

/// What a message is, judged by its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `method` and `id`.
    Request,
    /// `method` without `id`.
    Notification,
    /// `result` or `error`, with `id`.
    Response,
}

/// Why a line is not a routable JSON-RPC message.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Not JSON, or not a JSON object.
    #[error("parse error: {0}")]
    Parse(#[from] serde_json::Error),
    /// A JSON array: batches were removed from MCP in 2025-06-18.
    #[error("invalid request: JSON-RPC batches are not supported by MCP")]
    Batch,
    /// JSON, but not a request, notification or response.
    #[error("invalid request: {0}")]
    Invalid(&'static str),
}

impl EnvelopeError {
    /// The JSON-RPC error code to answer with.
    pub fn code(&self) -> i64 {
        match self {
            Self::Parse(_) => PARSE_ERROR,
            Self::Batch | Self::Invalid(_) => INVALID_REQUEST,
        }
    }
}

/// The routing-relevant members of one JSON-RPC message, borrowed from its text.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    text: &'a str,
    /// `id`, including a literal `null`.
    pub id: Option<&'a RawValue>,
    /// `method`, decoded.
    pub method: Option<Cow<'a, str>>,
    /// `params`.
    pub params: Option<&'a RawValue>,
    /// `result`.
    pub result: Option<&'a RawValue>,
    /// `error`.
    pub error: Option<&'a RawValue>,
    /// [`PARAM_KEYS`] in `params`, found by one scan at the first [`param`](Self::param).
    scanned: OnceLock<Option<[Option<&'a str>; PARAM_KEYS.len()]>>,
    /// Each of them once checked.
    checked: [OnceLock<Option<&'a RawValue>>; PARAM_KEYS.len()],
}

/// The members of `params` the daemon looks up on (nearly) every request, by several parts of
/// it: the audit (`name`, `uri`, `ref`, `arguments`), the era (`_meta`, `requestState`),
/// routing (`name`, `uri`, `ref`), ids (`_meta.progressToken`), tasks (`task`).
/// [`Envelope::param`] finds them all in one scan instead of one scan of `params` per lookup.
const PARAM_KEYS: [&str; 7] = [
    "name",
    "_meta",
    "task",
    "uri",
    "ref",
    "arguments",
    "requestState",
];

impl<'a> Envelope<'a> {
    /// Parses one message. Unknown members are allowed and left alone.
    pub fn parse(text: &'a str) -> Result<Self, EnvelopeError> {
        if text.trim_start().starts_with('[') {
            return Err(EnvelopeError::Batch);
        }
        let [_jsonrpc, id, method, params, result, error] = fields(
            text,
            ["jsonrpc", "id", "method", "params", "result", "error"],
        )?;
        let method = method.map(decode_str).transpose()?;
        let env = Self {
            text,
            id,
            method,
            params,
            result,
            error,
            scanned: OnceLock::new(),
            checked: Default::default(),
        };
        if env.method.is_none() && env.result.is_none() && env.error.is_none() {
            return Err(EnvelopeError::Invalid(
                "a message needs `method`, `result` or `error`",
            ));
        }
        if env.method.is_none() && env.id.is_none() {
            return Err(EnvelopeError::Invalid("a response needs an `id`"));
        }
        if let Some(id) = env.id {
            check_id(id, env.method.is_some())?;
        }
        Ok(env)
    }

    /// The message text this envelope borrows from.
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// The member `key` of `params`, as [`field`] finds it (`None` also when `params` is not
    /// an object). The members most asked for ([`PARAM_KEYS`]) are found together by the first
    /// such lookup, and each is checked once; the others are looked up by [`field`].
    pub fn param(&self, key: &str) -> Option<&'a RawValue> {
        let params = self.params?;
        let Some(slot) = PARAM_KEYS.iter().position(|k| *k == key) else {
            return field(params, key).ok().flatten();
        };
        *self.checked[slot].get_or_init(|| {
            let scanned = self
                .scanned
                .get_or_init(|| crate::peek::members(params.get(), PARAM_KEYS));
            match scanned {
                Some(found) => found[slot].and_then(part_of_checked),
                // Escaped keys, a key twice, not an object: the parser decides, key by key.
                None => field(params, key).ok().flatten(),
            }
        })
    }

    /// The text of the member `key` of `params` (one of the members [`param`](Self::param)
    /// finds together; `Some(None)`: `params` has no such member) as the shared scan of
    /// `params` found it, unchecked (part of `params`, which the parser checked). `None` when
    /// that scan does not apply (no object `params`, an escaped key, one of those members
    /// twice, another key): the caller decides with its own lookup.
    pub fn param_text(&self, key: &str) -> Option<Option<&'a str>> {
        let params = self.params?;
        let slot = PARAM_KEYS.iter().position(|k| *k == key)?;
        let scanned = self
            .scanned
            .get_or_init(|| crate::peek::members(params.get(), PARAM_KEYS));
        scanned.map(|found| found[slot])
    }

    /// Request, notification or response.
    pub fn kind(&self) -> Kind {
        match (&self.method, self.id) {
            (Some(_), Some(_)) => Kind::Request,
            (Some(_), None) => Kind::Notification,
            (None, _) => Kind::Response,
        }
    }

    /// The method name, or `""` for a response.
    pub fn method(&self) -> &str {
        self.method.as_deref().unwrap_or("")
    }

    /// A [`Rewrite`] of this message.
    pub fn rewrite(&self) -> Rewrite<'a> {
        Rewrite::new(self.text)
    }

    /// This message with its `id` replaced by `new_id` (JSON text); every other byte kept.
    /// (Every answer takes this way back to its client: one allocation, the result.)
    pub fn with_id(&self, new_id: &str) -> String {
        let Some(range) = self.id.and_then(|id| span(self.text, id)) else {
            return self.text.to_owned();
        };
        let mut out = String::with_capacity(self.text.len() - range.len() + new_id.len());
        out.push_str(&self.text[..range.start]);
        out.push_str(new_id);
        out.push_str(&self.text[range.end..]);
        out
    }
}

/// MCP: an `id` is a string or an integer. An object, array, float or boolean id is refused, as
/// is a `null` one on a request (a response may carry `null`: the answer to a message whose id
/// could not be read). Ids are compared and routed by their text, so anything else would let
/// two spellings of one number (`1`, `1.0`) stand for different requests.
fn check_id(id: &RawValue, request: bool) -> Result<(), EnvelopeError> {
    let text = id.get();
    let digits = text.strip_prefix('-').unwrap_or(text);
    let integer = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    if text.starts_with('"') || integer || (text == "null" && !request) {
        return Ok(());
    }
    Err(EnvelopeError::Invalid(if request && text == "null" {
        "a request's `id` must not be null"
    } else {
        "`id` must be a string or an integer"
    }))
}

/// Looks up one member of a JSON object without decoding the others.
pub fn field<'a>(
    object: &'a RawValue,
    key: &str,
) -> Result<Option<&'a RawValue>, serde_json::Error> {
    // A `RawValue` is valid JSON already: scan for the member, check only its value.
    if let Some([value]) = crate::peek::members(object.get(), [key]) {
        return Ok(value.and_then(part_of_checked));
    }
    let [value] = fields(object.get(), [key])?;
    Ok(value)
}

/// Member `key` of the JSON object `object`, if it has one. `None` also when `object` is not an
/// object or the member's value is malformed: callers that must tell these apart use [`field`].
pub fn member<'a>(object: &'a RawValue, key: &str) -> Option<&'a RawValue> {
    field(object, key).ok().flatten()
}

/// The member at `path` inside the JSON object `object` (`["_meta", "progressToken"]`: the
/// progress token of `_meta`), if there is one. The objects on the way are part of `object`,
/// valid JSON already: they are scanned, not checked again; only the value found is (it
/// becomes a `RawValue`). `None` as [`member`] says it.
pub fn member_at<'a>(object: &'a RawValue, path: &[&str]) -> Option<&'a RawValue> {
    let (last, outer) = path.split_last()?;
    let mut text = object.get();
    for key in outer {
        text = match crate::peek::members(text, [*key]) {
            Some([value]) => value?,
            None => fields(text, [*key]).ok()?[0]?.get(),
        };
    }
    match crate::peek::members(text, [*last]) {
        Some([value]) => part_of_checked(value?),
        None => fields(text, [*last]).ok()?[0],
    }
}

/// Decodes a JSON string, borrowing when it has no escapes.
pub fn decode_str(raw: &RawValue) -> Result<Cow<'_, str>, serde_json::Error> {
    // A `RawValue` is valid JSON: a string without a backslash is the text between its quotes
    // (serde's answer, without a deserialiser per method and name).
    if let Some(inner) = raw
        .get()
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        && memchr::memchr(b'\\', inner.as_bytes()).is_none()
    {
        return Ok(Cow::Borrowed(inner));
    }
    match serde_json::from_str::<&str>(raw.get()) {
        Ok(s) => Ok(Cow::Borrowed(s)),
        Err(_) => serde_json::from_str::<String>(raw.get()).map(Cow::Owned),
    }
}

/// Looks up the members `keys` of the JSON object `text`, checking all of it; the rest are
/// skipped undecoded. A key present twice is an error: two `id`s would let a sender route one
/// and answer another.
///
/// The checking scan (`check.rs`) decides nearly every message in one pass over its bytes;
/// what it leaves (an escaped key, a duplicate, an error) goes through serde_json, whose answer
/// and error are the same as they always were.
pub fn fields<'a, const N: usize>(
    text: &'a str,
    keys: [&str; N],
) -> Result<[Option<&'a RawValue>; N], serde_json::Error> {
    if let Some(found) = crate::check::members(text, keys)
        && let Some(raw) = checked_raw(found)
    {
        return Ok(raw);
    }
    fields_by_serde(text, keys)
}

/// [`fields`] by serde_json alone: the reference the checking scan agrees with.
pub(crate) fn fields_by_serde<'a, const N: usize>(
    text: &'a str,
    keys: [&str; N],
) -> Result<[Option<&'a RawValue>; N], serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let found = FieldsSeed { keys }.deserialize(&mut de)?;
    de.end()?;
    Ok(found)
}

struct FieldsSeed<'k, const N: usize> {
    keys: [&'k str; N],
}

impl<'de, const N: usize> DeserializeSeed<'de> for FieldsSeed<'_, N> {
    type Value = [Option<&'de RawValue>; N];

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for FieldsSeed<'_, N> {
    type Value = [Option<&'de RawValue>; N];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = [None; N];
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match self.keys.iter().position(|k| *k == key.0) {
                Some(i) => {
                    if found[i].is_some() {
                        return Err(de::Error::custom(format_args!(
                            "duplicate member `{}`",
                            key.0
                        )));
                    }
                    found[i] = Some(map.next_value::<&'de RawValue>()?);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }
}

/// The parts the checking scan found and checked, as the `RawValue`s they are (see
/// [`Checked`]); `None` if serde_json does not take them that way.
fn checked_raw<const N: usize>(found: [Option<&str>; N]) -> Option<[Option<&RawValue>; N]> {
    let mut raw = [None; N];
    for (slot, part) in raw.iter_mut().zip(found) {
        if let Some(part) = part {
            *slot = Some(<&RawValue as de::Deserialize>::deserialize(Checked(part)).ok()?);
        }
    }
    Some(raw)
}

/// A value found by `peek::members` inside a `RawValue` (valid JSON, checked when it was
/// parsed), as a `RawValue`, without checking it a second time.
fn part_of_checked(value: &str) -> Option<&RawValue> {
    match checked_raw([Some(value)]) {
        Some([raw]) => raw,
        None => serde_json::from_str(value).ok(),
    }
}

/// JSON text that the checking scan checked, handed to `RawValue`'s own `Deserialize` as
/// serde_json's deserialisers hand it a value's text (a one-member map whose key is its
/// marker): the `RawValue` borrows the text without checking it again, which is what
/// `serde_json::from_str` would do (at the cost of a second pass). Should serde_json ever
/// take raw values another way, `checked_raw` fails and [`fields`] asks serde_json instead
/// (slower, the same answer); `a_checked_part_becomes_a_raw_value_without_a_second_pass`
/// tells.
struct Checked<'a>(&'a str);

/// serde_json's marker of a raw value (`serde_json::raw::TOKEN`).
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

impl<'de> de::Deserializer<'de> for Checked<'de> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_borrowed_str(self.0)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        if name != RAW_VALUE_TOKEN {
            return Err(de::Error::custom("not a raw value"));
        }
        visitor.visit_map(CheckedEntry(Some(self.0)))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// The one member of [`Checked`]'s map: the marker, then the text (borrowed).
struct CheckedEntry<'a>(Option<&'a str>);

impl<'de> MapAccess<'de> for CheckedEntry<'de> {
    type Error = de::value::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        match self.0 {
            Some(_) => seed
                .deserialize(de::value::BorrowedStrDeserializer::new(RAW_VALUE_TOKEN))
                .map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let text = self
            .0
            .take()
            .ok_or_else(|| de::Error::custom("no raw value left"))?;
        seed.deserialize(de::value::BorrowedStrDeserializer::new(text))
    }
}

/// An object key, borrowed unless it contains escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Byte-level edits of one message text. Each edit replaces a part borrowed from that text.
#[derive(Debug)]
pub struct Rewrite<'a> {
    text: &'a str,
    edits: Vec<(Range<usize>, String)>,
}

impl<'a> Rewrite<'a> {
    /// Starts a rewrite of `text`.
    pub fn new(text: &'a str) -> Self {
        Self {
            text,
            edits: Vec::new(),
        }
    }

    /// Replaces `part` (which must borrow from the text) with the JSON text `with`. A part that
    /// does not lie inside the text is a programming error: debug builds panic, release builds
    /// leave the text as it was.
    pub fn replace(&mut self, part: &RawValue, with: impl Into<String>) {
        let range = span(self.text, part);
        debug_assert!(
            range.is_some(),
            "rewritten part borrows from the message text"
        );
        if let Some(range) = range {
            self.edits.push((range, with.into()));
        }
    }

    /// The rewritten text. Overlapping edits keep the first one.
    pub fn finish(mut self) -> String {
        self.edits.sort_by_key(|(r, _)| r.start);
        let extra: usize = self.edits.iter().map(|(_, s)| s.len()).sum();
        let mut out = String::with_capacity(self.text.len() + extra);
        let mut at = 0;
        for (range, with) in &self.edits {
            if range.start < at {
                continue;
            }
            out.push_str(&self.text[at..range.start]);
            out.push_str(with);
            at = range.end;
        }
        out.push_str(&self.text[at..]);
        out
    }
}

/// The byte range of `part` inside `text`, if it borrows from it.
pub fn span(text: &str, part: &RawValue) -> Option<Range<usize>> {
    let base = text.as_ptr() as usize;
    let start = (part.get().as_ptr() as usize).checked_sub(base)?;
    let end = start + part.get().len();
    (end <= text.len()).then_some(start..end)
}

/// A JSON-RPC success response with the given raw `id` and result.
pub fn response(id: &RawValue, result: &impl serde::Serialize) -> String {
    #[derive(serde::Serialize)]
    struct Response<'a, T> {
        jsonrpc: &'static str,
        id: &'a RawValue,
        result: &'a T,
    }
    serde_json::to_string(&Response {
        jsonrpc: "2.0",
        id,
        result,
    })
    .unwrap_or_else(|e| {
        error_response(
            Some(id),
            INTERNAL_ERROR,
            &format!("cannot encode result: {e}"),
        )
    })
}

/// A JSON-RPC error response; `id` is `null` when the request's id is unknown.
pub fn error_response(id: Option<&RawValue>, code: i64, message: &str) -> String {
    #[derive(serde::Serialize)]
    struct ErrorObject<'a> {
        code: i64,
        message: &'a str,
    }
    #[derive(serde::Serialize)]
    struct Response<'a> {
        jsonrpc: &'static str,
        id: Option<&'a RawValue>,
        error: ErrorObject<'a>,
    }
    let r = Response {
        jsonrpc: "2.0",
        id,
        error: ErrorObject { code, message },
    };
    // Serialising a struct of strings, integers and raw JSON cannot fail.
    serde_json::to_string(&r).unwrap_or_default()
}

/// A JSON-RPC notification with the given params.
pub fn notification<T: serde::Serialize>(method: &str, params: Option<&T>) -> String {
    #[derive(serde::Serialize)]
    struct Notification<'a, T> {
        jsonrpc: &'static str,
        method: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        params: Option<&'a T>,
    }
    serde_json::to_string(&Notification {
        jsonrpc: "2.0",
        method,
        params,
    })
    .unwrap_or_default()
}

/// A JSON-RPC request with a numeric id.
pub fn request<T: serde::Serialize>(id: u64, method: &str, params: Option<&T>) -> String {
    #[derive(serde::Serialize)]
    struct Request<'a, T> {
        jsonrpc: &'static str,
        id: u64,
        method: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        params: Option<&'a T>,
    }
    serde_json::to_string(&Request {
        jsonrpc: "2.0",
        id,
        method,
        params,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewriting_the_id_keeps_every_other_byte() {
        let text = r#"{"jsonrpc":"2.0", "id" : "abc","method":"tools/call","params":{"name":"x","arguments":{"price":1.50,"big":123456789012345678901234567890,"e":1E400,"s":"\u00e9\n"}}}"#;
        let env = Envelope::parse(text).unwrap();
        assert_eq!(env.kind(), Kind::Request);
        assert_eq!(env.method(), "tools/call");
        let out = env.with_id("17");
        assert_eq!(out, text.replacen(r#""abc""#, "17", 1));
        assert!(out.contains("1.50") && out.contains("123456789012345678901234567890"));
        assert!(out.contains(r#""\u00e9\n""#));
        // And back again.
        let back = Envelope::parse(&out).unwrap().with_id(r#""abc""#);
        assert_eq!(back, text);
    }

    #[test]
    fn unknown_top_level_members_survive() {
        let text = r#"{"jsonrpc":"2.0","id":1,"result":{"v":1.50},"x-trace":{"deep":[1,2,3.000]}}"#;
        let env = Envelope::parse(text).unwrap();
        assert_eq!(env.kind(), Kind::Response);
        assert_eq!(
            env.with_id("99"),
            text.replacen(r#""id":1"#, r#""id":99"#, 1)
        );
    }

    #[test]
    fn null_id_is_kept_distinct_from_no_id() {
        let env =
            Envelope::parse(r#"{"jsonrpc":"2.0","id":null,"error":{"code":1,"message":"m"}}"#)
                .unwrap();
        assert_eq!(env.id.map(RawValue::get), Some("null"));
        let env =
            Envelope::parse(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert_eq!(env.kind(), Kind::Notification);
        assert!(env.id.is_none());
    }

    #[test]
    fn nested_parts_can_be_rewritten_together() {
        let text = r#"{"id":5,"method":"tools/call","params":{"_meta":{"progressToken":"t1"},"name":"srv__echo","arguments":{"n":1.0}}}"#;
        let env = Envelope::parse(text).unwrap();
        let params = env.params.unwrap();
        let name = field(params, "name").unwrap().unwrap();
        let meta = field(params, "_meta").unwrap().unwrap();
        let token = field(meta, "progressToken").unwrap().unwrap();
        let mut rw = env.rewrite();
        rw.replace(env.id.unwrap(), "1001");
        rw.replace(name, r#""echo""#);
        rw.replace(token, "\"p-9\"");
        assert_eq!(
            rw.finish(),
            r#"{"id":1001,"method":"tools/call","params":{"_meta":{"progressToken":"p-9"},"name":"echo","arguments":{"n":1.0}}}"#
        );
    }

    #[test]
    fn escaped_method_and_keys_are_decoded() {
        let env = Envelope::parse(r#"{"\u0069d":3,"method":"tools\/list"}"#).unwrap();
        assert_eq!(env.method(), "tools/list");
        assert_eq!(env.id.map(RawValue::get), Some("3"));
    }

    #[test]
    fn bad_messages_are_classified() {
        assert_eq!(
            Envelope::parse("{not json").unwrap_err().code(),
            PARSE_ERROR
        );
        assert_eq!(Envelope::parse("42").unwrap_err().code(), PARSE_ERROR);
        assert_eq!(
            Envelope::parse(r#"[{"id":1,"method":"ping"}]"#)
                .unwrap_err()
                .code(),
            INVALID_REQUEST
        );
        assert_eq!(
            Envelope::parse(r#"{"id":1}"#).unwrap_err().code(),
            INVALID_REQUEST
        );
        assert_eq!(
            Envelope::parse(r#"{"result":{}}"#).unwrap_err().code(),
            INVALID_REQUEST
        );
        assert_eq!(
            Envelope::parse(r#"{"method":7}"#).unwrap_err().code(),
            PARSE_ERROR
        );
        assert!(Envelope::parse(r#"{"id":1,"id":2,"method":"ping"}"#).is_err());
        for id in [r#"{"a":1}"#, "[1]", "1.5", "1.0", "1e3", "true", "null"] {
            let request = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#);
            let err = Envelope::parse(&request).unwrap_err();
            assert_eq!(err.code(), INVALID_REQUEST, "{request}");
        }
        for id in [r#""a""#, "0", "-7", "123456789012345678901234567890"] {
            let request = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#);
            assert!(Envelope::parse(&request).is_ok(), "{request}");
        }
        assert!(
            Envelope::parse(r#"{"jsonrpc":"2.0","id":null,"error":{"code":1,"message":"m"}}"#)
                .is_ok()
        );
        assert!(Envelope::parse(r#"{"jsonrpc":"2.0","id":{},"result":{}}"#).is_err());
        assert!(Envelope::parse(r#"{"id":1,"method":"ping"} trailing"#).is_err());
    }

    #[test]
    fn built_messages_are_valid_json_rpc() {
        let id = RawValue::from_string("\"x\"".into()).unwrap();
        assert_eq!(
            response(&id, &serde_json::json!({})),
            r#"{"jsonrpc":"2.0","id":"x","result":{}}"#
        );
        assert_eq!(
            error_response(None, PARSE_ERROR, "bad"),
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"bad"}}"#
        );
        assert_eq!(
            notification::<()>("notifications/tools/list_changed", None),
            r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#
        );
    }

    #[test]
    fn a_member_is_found_raw_and_anything_else_is_none() {
        let raw = |t: &str| RawValue::from_string(t.into()).unwrap();
        let object = raw(r#"{"a": 1.50, "b":{"c":[1,2]}, "s":"x"}"#);
        // The value's exact text, nested objects included.
        assert_eq!(member(&object, "a").map(RawValue::get), Some("1.50"));
        let b = member(&object, "b").unwrap();
        assert_eq!(b.get(), r#"{"c":[1,2]}"#);
        assert_eq!(member(b, "c").map(RawValue::get), Some("[1,2]"));
        // An absent key, or a value that is not an object, has no member.
        assert!(member(&object, "z").is_none());
        assert!(member(&raw("[1]"), "a").is_none());
        assert!(member(&raw(r#""a""#), "a").is_none());
        // An escaped key is decoded (the full parser's answer).
        assert_eq!(
            member(&raw(r#"{"\u0061":true}"#), "a").map(RawValue::get),
            Some("true")
        );
        // A key present twice is refused, as `field` refuses it.
        assert!(member(&raw(r#"{"a":1,"a":2}"#), "a").is_none());
    }

    #[test]
    fn a_nested_member_is_found_through_the_objects_on_its_way() {
        let raw = |t: &str| RawValue::from_string(t.into()).unwrap();
        let params =
            raw(r#"{"name":"x","_meta":{"io.example/big":{"n":[1.50]},"progressToken" : 1.50}}"#);
        fn at<'a>(object: &'a RawValue, path: &[&str]) -> Option<&'a str> {
            member_at(object, path).map(RawValue::get)
        }
        assert_eq!(at(&params, &["_meta", "progressToken"]), Some("1.50"));
        assert_eq!(at(&params, &["name"]), Some(r#""x""#));
        assert_eq!(at(&params, &["_meta", "nope"]), None);
        assert_eq!(
            at(&params, &["name", "x"]),
            None,
            "not an object on the way"
        );
        assert_eq!(at(&params, &[]), None);
        // Escaped keys and duplicates: as `member` answers them.
        let escaped = raw(r#"{"_m\u0065ta":{"progr\u0065ssToken":"t"}}"#);
        assert_eq!(at(&escaped, &["_meta", "progressToken"]), Some(r#""t""#));
        let twice = raw(r#"{"_meta":{"progressToken":1,"progressToken":2}}"#);
        assert_eq!(at(&twice, &["_meta", "progressToken"]), None);
        // The same answers as member after member.
        let meta = member(&params, "_meta").unwrap();
        assert_eq!(
            at(&params, &["_meta", "progressToken"]),
            member(meta, "progressToken").map(RawValue::get)
        );
    }

    proptest::proptest! {
        #[test]
        fn any_number_text_survives_an_id_rewrite(int in "-?[1-9][0-9]{0,40}", frac in "[0-9]{1,20}", exp in proptest::option::of(-400i32..400)) {
            let number = match exp {
                Some(e) => format!("{int}.{frac}e{e}"),
                None => format!("{int}.{frac}"),
            };
            let text = format!(r#"{{"jsonrpc":"2.0","id":1,"result":{{"n":{number},"a":[{int}]}}}}"#);
            let out = Envelope::parse(&text).unwrap().with_id("\"s-1\"");
            proptest::prop_assert_eq!(out, text.replacen(r#""id":1"#, r#""id":"s-1""#, 1));
        }
    }

    #[test]
    fn a_checked_part_becomes_a_raw_value_without_a_second_pass() {
        // Not JSON: only a part that was not checked again can come through.
        let [raw] = checked_raw([Some("{not checked")]).expect("serde_json takes checked parts");
        assert_eq!(raw.map(RawValue::get), Some("{not checked"));
        let text = r#"{"id":7,"params":{"a":[1]}}"#;
        let [id, params] = fields(text, ["id", "params"]).unwrap();
        assert_eq!(id.map(RawValue::get), Some("7"));
        let params = params.unwrap();
        assert_eq!(params.get(), r#"{"a":[1]}"#);
        assert_eq!(span(text, params), Some(17..26), "borrowed from the text");
    }

    #[test]
    fn a_param_found_by_the_shared_scan_is_what_field_finds() {
        let params = [
            r#"{"name":"a","arguments":{"name":"inner","x":[1,{"task":2}]},"_meta":{"progressToken":7}}"#,
            r#"{"_meta":null,"task":{},"uri":"file:///a\"b","ref":{"type":"ref/prompt","name":"p"}}"#,
            // Escaped keys and a key twice: the scan gives up, the parser decides.
            r#"{"n\u0061me":"escaped","task":1}"#,
            r#"{"name":"a","name":"b"}"#,
            r#"{"arguments":1,"arguments":2,"name":"only the duplicate is refused"}"#,
            r#"{ "name" : "spaced" , "other" : { "name" : "nested" } }"#,
            r#"[1,2]"#,
            r#""text""#,
            r#"{}"#,
        ];
        for p in params {
            let text = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"m","params":{p}}}"#);
            let msg = Envelope::parse(&text).unwrap();
            for key in [
                "name",
                "_meta",
                "task",
                "uri",
                "ref",
                "arguments",
                "other",
                "cursor",
            ] {
                // Twice: the second answer comes from what the first found.
                for _ in 0..2 {
                    let expected = field(msg.params.unwrap(), key).ok().flatten();
                    assert_eq!(
                        msg.param(key).map(RawValue::get),
                        expected.map(RawValue::get),
                        "{key} in {p}"
                    );
                }
            }
        }
        let msg = Envelope::parse(r#"{"jsonrpc":"2.0","id":1,"method":"m"}"#).unwrap();
        assert!(msg.param("name").is_none());
    }
}
