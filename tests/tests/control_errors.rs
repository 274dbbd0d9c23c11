//! Control errors carry a machine-readable `code` (`mcpd_proto::control_error`): `mcpctl`
//! decides by it, never by the daemon's words.

use mcpd_proto::ControlResponse;
use mcpd_proto::control_error::ErrorCode;
use mcpd_tests::{TestDaemon, fixture};

fn answer(daemon: &TestDaemon, line: &str) -> ControlResponse {
    let mut control = daemon
        .try_control_connection()
        .expect("a control connection");
    control.send_raw(line).expect("sent");
    let reply = control.read_line().expect("an answer");
    serde_json::from_str(&reply).unwrap_or_else(|e| panic!("not a control reply ({e}): {reply}"))
}

fn code(response: &ControlResponse) -> ErrorCode {
    match response {
        ControlResponse::Error { code, .. } => *code,
        other => panic!("not an error: {other:?}"),
    }
}

#[test]
fn control_errors_say_why_in_a_code() {
    let daemon = TestDaemon::start(fixture::config(&[]));
    assert_eq!(
        code(&answer(&daemon, r#"{"cmd":"from-the-future"}"#)),
        ErrorCode::UnknownCommand
    );
    assert_eq!(code(&answer(&daemon, "not json")), ErrorCode::BadRequest);
}
