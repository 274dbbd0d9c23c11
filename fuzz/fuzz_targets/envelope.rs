//! The JSON-RPC raw envelope (proto/src/envelope.rs): parse, then rewrite the parts the router
//! rewrites (the `id`, a tool name, a progress token, a cancelled `requestId`) by splicing.
//!
//! Beyond "never panics": every byte outside the rewritten parts survives, the rewritten line
//! parses again with the same kind, method and members, each rewritten part reads back as what
//! was written, and rewriting the id back restores the original line exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcpd_proto::envelope::{self, Envelope, Rewrite, field, span};
use serde_json::value::RawValue;

/// Ids a forwarded request may get: the daemon's integers and strings a client may use.
const NEW_IDS: [&str; 4] = [
    "1001",
    "\"s-1\"",
    "18446744073709551615",
    "\"\\u00e9\\\"x\"",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(env) = Envelope::parse(text) else {
        return;
    };
    let new_id = NEW_IDS[text.len() % NEW_IDS.len()];

    // The id alone, as a session forwards a request or an upstream's answer goes back.
    let out = env.with_id(new_id);
    match env.id {
        Some(id) => {
            let range = span(text, id).expect("the id borrows from the text");
            assert_eq!(
                &out[..range.start],
                &text[..range.start],
                "bytes before the id"
            );
            assert_eq!(
                &out[range.start + new_id.len()..],
                &text[range.end..],
                "bytes after the id"
            );
            let again = reparse(&out, &env);
            assert_eq!(
                again.id.map(RawValue::get),
                Some(new_id),
                "the new id reads back"
            );
            // And back again: the original line, byte for byte.
            assert_eq!(again.with_id(id.get()), text, "the id round-trips");
        }
        None => assert_eq!(out, text, "no id, nothing to rewrite"),
    }

    // Everything the router rewrites in a request at once (session.rs `forward`), plus the
    // `requestId` of a cancellation (actor.rs).
    let params = env.params;
    let name = member(params, "name");
    let token = member(member(params, "_meta"), "progressToken");
    let request_id = member(params, "requestId");
    let mut edits: Vec<(&RawValue, &str)> = Vec::new();
    if let Some(id) = env.id {
        edits.push((id, "77"));
    }
    if let Some(name) = name {
        edits.push((name, "\"renamed\""));
    }
    if let Some(token) = token {
        edits.push((token, "78"));
    }
    if let Some(request_id) = request_id {
        edits.push((request_id, "\"r-9\""));
    }
    let mut rw: Rewrite<'_> = env.rewrite();
    for (part, with) in &edits {
        rw.replace(part, *with);
    }
    let out = rw.finish();
    // The expected text, spliced independently: parts are disjoint members, in text order.
    let mut ranges: Vec<_> = edits
        .iter()
        .map(|(part, with)| (span(text, part).expect("parts borrow from the text"), *with))
        .collect();
    ranges.sort_by_key(|(r, _)| r.start);
    let mut expected = String::new();
    let mut at = 0;
    for (range, with) in &ranges {
        assert!(range.start >= at, "rewritten parts never overlap");
        expected.push_str(&text[at..range.start]);
        expected.push_str(with);
        at = range.end;
    }
    expected.push_str(&text[at..]);
    assert_eq!(out, expected, "only the rewritten parts changed");
    let again = reparse(&out, &env);
    if env.id.is_some() {
        assert_eq!(again.id.map(RawValue::get), Some("77"));
    }
    let params = again.params;
    if name.is_some() {
        assert_eq!(
            member(params, "name").map(RawValue::get),
            Some("\"renamed\"")
        );
    }
    if token.is_some() {
        assert_eq!(
            member(member(params, "_meta"), "progressToken").map(RawValue::get),
            Some("78")
        );
    }
    if request_id.is_some() {
        assert_eq!(
            member(params, "requestId").map(RawValue::get),
            Some("\"r-9\"")
        );
    }

    // The error answer built for this id is valid JSON-RPC that parses as a response.
    let answer = envelope::error_response(env.id, envelope::INTERNAL_ERROR, "x");
    let parsed = Envelope::parse(&answer).expect("an error response parses");
    assert_eq!(parsed.kind(), envelope::Kind::Response);
});

/// Parses a rewritten line; it must be the same kind of message with the same method.
fn reparse<'a>(out: &'a str, before: &Envelope<'_>) -> Envelope<'a> {
    let again = match Envelope::parse(out) {
        Ok(e) => e,
        Err(e) => panic!("the rewritten line does not parse: {e}\n{out}"),
    };
    assert_eq!(again.kind(), before.kind());
    assert_eq!(again.method(), before.method());
    assert_eq!(again.result.is_some(), before.result.is_some());
    assert_eq!(again.error.is_some(), before.error.is_some());
    again
}

/// A member of an object, if the object is one and has it (once).
fn member<'a>(object: Option<&'a RawValue>, key: &str) -> Option<&'a RawValue> {
    object.and_then(|o| field(o, key).ok().flatten())
}
