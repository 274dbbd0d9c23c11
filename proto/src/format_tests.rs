//! Socket protocol 1 messages as older builds write them (`tests/fixtures/formats/`), read
//! with today's types: each line parses to a known variant and nothing in it is lost on the
//! way back out.

use crate::{ControlRequest, ControlResponse, Hello, HelloReply};

#[test]
fn wire_messages_of_protocol_1_are_understood() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/formats/wire-v1.jsonl");
    let text = std::fs::read_to_string(&path).expect("the fixture is there");
    let mut seen = 0;
    for line in text.lines().filter(|l| !l.is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line).expect("JSON");
        let known = if value.get("op").is_some() {
            match (
                serde_json::from_str::<Hello>(line),
                serde_json::from_str::<HelloReply>(line),
            ) {
                (Ok(Hello::Unknown), Ok(HelloReply::Unknown)) => false,
                (Ok(Hello::Unknown), Ok(_)) | (Ok(_), _) => true,
                _ => false,
            }
        } else if value.get("cmd").is_some() {
            serde_json::from_str::<ControlRequest>(line)
                .is_ok_and(|r| !matches!(r, ControlRequest::Unknown))
        } else {
            serde_json::from_str::<ControlResponse>(line)
                .is_ok_and(|r| !matches!(r, ControlResponse::Unknown))
        };
        assert!(known, "no longer understood: {line}");
        seen += 1;
    }
    assert!(seen >= 10, "the fixture is cut short");
}
