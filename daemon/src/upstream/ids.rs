//! Every JSON-RPC id rewrite of forwarding, in both directions, by splicing (the rest of each
//! message stays byte for byte as it was written: invariant 1).
//!
//! - A client's request to an upstream: its `id` and its progress token become a fresh id
//!   from the upstream's counter (so any number of sessions share one upstream without their
//!   ids or tokens colliding), and a namespaced tool or prompt name the upstream's own
//!   ([`to_upstream`], called by the session, `router/session/core.rs`, and the 2026-07-28
//!   translation, `router/mrtr.rs`). The actor puts the client's id back into the answer
//!   ([`answer_to_client`]) and its token into progress notifications
//!   ([`progress_to_client`]).
//! - An upstream's request to a client (`sampling/createMessage`, `elicitation/create`,
//!   `roots/list`): it reaches the client as `"mcpd:<server>:<n>"` ([`downstream_id`],
//!   [`request_to_client`]), one counter for the daemon's life so that a restarted upstream
//!   never reuses an id a client may still answer; the client's answer goes back with the
//!   upstream's id ([`answer_to_upstream`]), and the upstream's cancellation names the
//!   client's id ([`cancelled_to_client`]). The routes are kept by `router/downstream.rs`.
//! - A task's id in an answer to a legacy client's `tasks/*` request: the upstream's becomes
//!   the one minted for the client ([`task_ids_to_client`]; the table of task ids is
//!   `router/session/tasks.rs`), and the one in a task-creating answer or a
//!   `notifications/tasks/status` ([`task_id_to_client`]); the client's task id in its
//!   `tasks/*` request becomes the upstream's ([`task_id_to_upstream`]). When, and from which
//!   table, stays with `router/session/tasks.rs`.
//! - A 2026-07-28 `requestState` (`router/mrtr.rs` decides and signs): the one mcpd minted in
//!   a client's retry becomes the upstream's own ([`request_state_to_upstream`]), and a modern
//!   upstream's in an `InputRequiredResult` becomes mcpd's signed one
//!   ([`request_state_to_client`]).

use std::sync::atomic::{AtomicU64, Ordering};

use mcpd_proto::envelope::{Envelope, member, span};
use serde_json::value::RawValue;

/// Ids of the requests upstreams send to clients, unique for the daemon's life.
static DOWNSTREAM_IDS: AtomicU64 = AtomicU64::new(1);

/// A client's request on its way to an upstream: its id and progress token become
/// `upstream_id`, and `rename` (the namespaced name, the upstream's own) is applied. Returns
/// the line and the client's progress token, if it sent one.
pub fn to_upstream(
    msg: &Envelope<'_>,
    upstream_id: u64,
    rename: Option<(&RawValue, &str)>,
) -> (String, Option<Box<RawValue>>) {
    // Spliced directly (this is every forwarded request): the id's digits from the stack,
    // one allocation for the line, as `Rewrite` would write it.
    let mut digits = [0u8; 20];
    let id = decimal(upstream_id, &mut digits);
    let token = msg.param("_meta").and_then(|m| member(m, "progressToken"));
    let text = msg.text();
    let mut edits: [Option<(std::ops::Range<usize>, &str)>; 3] = [
        msg.id.and_then(|raw| span(text, raw)).map(|r| (r, id)),
        rename
            .as_ref()
            .and_then(|(raw, original)| Some((span(text, raw)?, *original))),
        token.and_then(|raw| span(text, raw)).map(|r| (r, id)),
    ];
    edits.sort_by_key(|e| e.as_ref().map_or(usize::MAX, |(r, _)| r.start));
    let extra: usize = edits.iter().flatten().map(|(_, with)| with.len()).sum();
    let mut line = String::with_capacity(text.len() + extra);
    let mut at = 0;
    for (range, with) in edits.into_iter().flatten() {
        if range.start < at {
            // Overlapping parts (`Rewrite::finish` skips them the same way).
            continue;
        }
        line.push_str(&text[at..range.start]);
        line.push_str(with);
        at = range.end;
    }
    line.push_str(&text[at..]);
    (line, token.map(RawValue::to_owned))
}

/// `n` in decimal, in `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[at..]).unwrap_or("0")
}

/// An upstream's answer on its way back: with the client's own id.
pub fn answer_to_client(msg: &Envelope<'_>, client_id: &RawValue) -> String {
    msg.with_id(client_id.get())
}

/// An upstream's progress notification (whose token, `token`, is the upstream id) on its way
/// to the client: with the client's own token.
pub fn progress_to_client(msg: &Envelope<'_>, token: &RawValue, original: &RawValue) -> String {
    let mut rw = msg.rewrite();
    rw.replace(token, original.get());
    rw.finish()
}

/// A fresh id (JSON text) for a request of `server` to a client.
pub fn downstream_id(server: &str) -> String {
    let n = DOWNSTREAM_IDS.fetch_add(1, Ordering::Relaxed);
    serde_json::to_string(&format!("mcpd:{server}:{n}")).unwrap_or_default()
}

/// An upstream's request on its way to a client, under `downstream_id`.
pub fn request_to_client(msg: &Envelope<'_>, downstream_id: &str) -> String {
    msg.with_id(downstream_id)
}

/// A client's answer on its way back to the upstream that asked: with the upstream's id.
pub fn answer_to_upstream(msg: &Envelope<'_>, upstream_id: &str) -> String {
    msg.with_id(upstream_id)
}

/// An upstream's `notifications/cancelled` of its request (`request`, the upstream's id) on
/// its way to the client: naming the client's id.
pub fn cancelled_to_client(msg: &Envelope<'_>, request: &RawValue, downstream_id: &str) -> String {
    let mut rw = msg.rewrite();
    rw.replace(request, downstream_id);
    rw.finish()
}

/// The `_meta` key naming the task a message belongs to.
const RELATED_TASK: &str = "io.modelcontextprotocol/related-task";

/// `answer` with the upstream's task id (JSON text) at `result.taskId` and
/// `result._meta["io.modelcontextprotocol/related-task"].taskId` replaced by the client's.
pub fn task_ids_to_client(answer: &str, upstream_json: &str, client_json: &str) -> String {
    let Ok(msg) = Envelope::parse(answer) else {
        return answer.to_owned();
    };
    let Some(result) = msg.result else {
        return answer.to_owned();
    };
    let mut rewrite = msg.rewrite();
    let mut changed = false;
    let places = [
        member(result, "taskId"),
        member(result, "_meta")
            .and_then(|m| member(m, RELATED_TASK))
            .and_then(|r| member(r, "taskId")),
    ];
    for raw in places.into_iter().flatten() {
        if raw.get() == upstream_json {
            rewrite.replace(raw, client_json.to_owned());
            changed = true;
        }
    }
    if changed {
        rewrite.finish()
    } else {
        answer.to_owned()
    }
}

/// `msg` with the upstream's task id at `raw` (a member of it) replaced by the client's,
/// `client_id`.
pub fn task_id_to_client(msg: &Envelope<'_>, raw: &RawValue, client_id: &str) -> String {
    let mut rewrite = msg.rewrite();
    rewrite.replace(raw, serde_json::to_string(client_id).unwrap_or_default());
    rewrite.finish()
}

/// `task` (a task object of an upstream's `tasks/list` answer) with the upstream's task id at
/// `raw` (its `taskId` member) replaced by the client's, `client_id`; every other byte as the
/// upstream wrote it.
pub fn task_id_in(task: &RawValue, raw: &RawValue, client_id: &str) -> String {
    let text = task.get();
    let Some(at) = span(text, raw) else {
        return text.to_owned();
    };
    let id = serde_json::to_string(client_id).unwrap_or_default();
    let mut out = String::with_capacity(text.len() + id.len());
    out.push_str(&text[..at.start]);
    out.push_str(&id);
    out.push_str(&text[at.end..]);
    out
}

/// A client's `tasks/*` request with its task id at `raw` replaced by the upstream's
/// (`upstream_json`, JSON text).
pub fn task_id_to_upstream(msg: &Envelope<'_>, raw: &RawValue, upstream_json: &str) -> String {
    let mut rewrite = msg.rewrite();
    rewrite.replace(raw, upstream_json.to_owned());
    rewrite.finish()
}

/// A client's retry with mcpd's `requestState` at `raw` replaced by the upstream's own,
/// `upstream_state`.
pub fn request_state_to_upstream(
    msg: &Envelope<'_>,
    raw: &RawValue,
    upstream_state: &str,
) -> String {
    let mut rw = msg.rewrite();
    rw.replace(
        raw,
        serde_json::to_string(upstream_state).unwrap_or_default(),
    );
    rw.finish()
}

/// A modern upstream's `InputRequiredResult` with its `requestState` at `raw` replaced by the
/// one mcpd signed, `state`.
pub fn request_state_to_client(reply: &Envelope<'_>, raw: &RawValue, state: &str) -> String {
    let mut rw = reply.rewrite();
    rw.replace(raw, serde_json::to_string(state).unwrap_or_default());
    rw.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_goes_up_with_the_upstreams_id_token_and_name_and_comes_back_as_the_clients() {
        let line = r#"{"jsonrpc":"2.0","id":"c-1","method":"tools/call","params":{"name":"fx__echo","_meta":{"progressToken":7},"arguments":{"n":1.50}}}"#;
        let msg = Envelope::parse(line).unwrap();
        let name = member(msg.params.unwrap(), "name").unwrap();
        let (up, token) = to_upstream(&msg, 42, Some((name, r#""echo""#)));
        assert_eq!(
            up,
            r#"{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"echo","_meta":{"progressToken":42},"arguments":{"n":1.50}}}"#
        );
        assert_eq!(token.unwrap().get(), "7");
        let answer = Envelope::parse(r#"{"jsonrpc":"2.0","id":42,"result":{}}"#).unwrap();
        assert_eq!(
            answer_to_client(&answer, msg.id.unwrap()),
            r#"{"jsonrpc":"2.0","id":"c-1","result":{}}"#
        );
    }

    #[test]
    fn server_requests_get_ids_no_restart_reuses() {
        let a = downstream_id("s");
        let b = downstream_id("s");
        assert!(a.starts_with("\"mcpd:s:") && a != b, "{a} {b}");
    }

    #[test]
    fn ids_in_answers_are_restored_to_the_clients() {
        let answer = r#"{"jsonrpc":"2.0","id":3,"result":{"taskId":"up","status":"working","_meta":{"io.modelcontextprotocol/related-task":{"taskId":"up"}}}}"#;
        assert_eq!(
            task_ids_to_client(answer, r#""up""#, r#""mine""#),
            r#"{"jsonrpc":"2.0","id":3,"result":{"taskId":"mine","status":"working","_meta":{"io.modelcontextprotocol/related-task":{"taskId":"mine"}}}}"#
        );
    }

    #[test]
    fn a_created_tasks_id_and_a_status_notifications_become_the_clients() {
        let line = r#"{"jsonrpc":"2.0","id":3,"result":{"task":{"taskId":"up-1","status":"working","ttl":1.50}}}"#;
        let msg = Envelope::parse(line).unwrap();
        let task = member(msg.result.unwrap(), "task").unwrap();
        let raw = member(task, "taskId").unwrap();
        assert_eq!(
            task_id_to_client(&msg, raw, "mcpd-7"),
            r#"{"jsonrpc":"2.0","id":3,"result":{"task":{"taskId":"mcpd-7","status":"working","ttl":1.50}}}"#
        );
        let note = r#"{"jsonrpc":"2.0","method":"notifications/tasks/status","params":{"taskId":"up-1","status":"completed"}}"#;
        let msg = Envelope::parse(note).unwrap();
        let raw = member(msg.params.unwrap(), "taskId").unwrap();
        assert_eq!(
            task_id_to_client(&msg, raw, "mcpd-7"),
            r#"{"jsonrpc":"2.0","method":"notifications/tasks/status","params":{"taskId":"mcpd-7","status":"completed"}}"#
        );
    }

    #[test]
    fn a_listed_tasks_id_becomes_the_clients_and_nothing_else_changes() {
        let task: &RawValue = serde_json::from_str(
            r#"{"status":"working", "taskId" : "up-1","pollInterval":1.50,"n":123456789012345678901234567890}"#,
        )
        .unwrap();
        let raw = member(task, "taskId").unwrap();
        assert_eq!(
            task_id_in(task, raw, "mcpd-\"7"),
            r#"{"status":"working", "taskId" : "mcpd-\"7","pollInterval":1.50,"n":123456789012345678901234567890}"#
        );
    }

    #[test]
    fn a_clients_tasks_request_goes_up_with_the_upstreams_task_id() {
        let line = r#"{"jsonrpc":"2.0","id":"c","method":"tasks/get","params":{"taskId":"mcpd-7","_meta":{"x":1.50}}}"#;
        let msg = Envelope::parse(line).unwrap();
        let raw = member(msg.params.unwrap(), "taskId").unwrap();
        assert_eq!(
            task_id_to_upstream(&msg, raw, r#""up-1""#),
            r#"{"jsonrpc":"2.0","id":"c","method":"tasks/get","params":{"taskId":"up-1","_meta":{"x":1.50}}}"#
        );
    }

    #[test]
    fn request_state_is_the_upstreams_going_up_and_mcpds_coming_back() {
        let retry = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"a","requestState":"mcpd1.x.y","arguments":{"n":1.50}}}"#;
        let msg = Envelope::parse(retry).unwrap();
        let raw = member(msg.params.unwrap(), "requestState").unwrap();
        assert_eq!(
            request_state_to_upstream(&msg, raw, "up\"s"),
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"a","requestState":"up\"s","arguments":{"n":1.50}}}"#
        );
        let answer = r#"{"jsonrpc":"2.0","id":2,"result":{"resultType":"input_required","requestState":"up","n":1.50}}"#;
        let reply = Envelope::parse(answer).unwrap();
        let raw = member(reply.result.unwrap(), "requestState").unwrap();
        assert_eq!(
            request_state_to_client(&reply, raw, "mcpd1.a.b"),
            r#"{"jsonrpc":"2.0","id":2,"result":{"resultType":"input_required","requestState":"mcpd1.a.b","n":1.50}}"#
        );
    }

    #[test]
    fn the_spliced_request_is_what_rewrite_writes() {
        let lines = [
            r#"{"jsonrpc":"2.0","id":"c-1","method":"tools/call","params":{"name":"fx__echo","arguments":{"m":"hi"},"_meta":{"progressToken":"t"}}}"#,
            r#"{"params":{"_meta":{"progressToken":99},"name":"fx__echo"},"method":"tools/call","id":7,"jsonrpc":"2.0"}"#,
            r#"{"jsonrpc":"2.0","id":123456789012,"method":"tools/call","params":{"name":"x__y"}}"#,
            r#"{"jsonrpc":"2.0","id":"a\"b","method":"resources/read","params":{"uri":"file:///x"}}"#,
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x__y","_meta":{"progressToken":1}}}"#,
        ];
        for line in lines {
            let msg = Envelope::parse(line).unwrap();
            let name = msg.param("name");
            for id in [0, 7, 42, u64::MAX] {
                let rename = name.map(|raw| (raw, r#""echo""#.to_owned()));
                let mut rw = msg.rewrite();
                if let Some(raw) = msg.id {
                    rw.replace(raw, id.to_string());
                }
                if let Some((raw, original)) = rename.clone() {
                    rw.replace(raw, original);
                }
                let token = msg.param("_meta").and_then(|m| member(m, "progressToken"));
                if let Some(raw) = token {
                    rw.replace(raw, id.to_string());
                }
                let rename = rename.as_ref().map(|(raw, name)| (*raw, name.as_str()));
                let (up, sent) = to_upstream(&msg, id, rename);
                assert_eq!(up, rw.finish(), "{line} {id}");
                assert_eq!(sent.as_deref().map(RawValue::get), token.map(RawValue::get));
                assert_eq!(msg.with_id("\"x\""), {
                    let mut rw = msg.rewrite();
                    if let Some(raw) = msg.id {
                        rw.replace(raw, "\"x\"");
                    }
                    rw.finish()
                });
            }
        }
    }
}
