//! The socket's first line and control messages (proto/src/wire.rs), decoded from bytes as the
//! daemon, the shim and mcpctl decode them, and the bounded line reader they are framed with.
//!
//! Beyond "never panics": whatever decodes encodes again, and that encoding decodes to the
//! same value (a peer can always repeat what it understood).
#![no_main]

use std::io::{BufReader, Cursor};

use libfuzzer_sys::fuzz_target;
use mcpd_proto::line::{Line, read_line_bounded};
use mcpd_proto::{ControlRequest, ControlResponse, Hello, HelloReply};
use serde::Serialize;
use serde::de::DeserializeOwned;

fuzz_target!(|data: &[u8]| {
    // server.rs, control.rs and the shim decode with `from_slice`, mcpctl with `from_str`.
    round_trip::<Hello>(data);
    round_trip::<HelloReply>(data);
    round_trip::<ControlRequest>(data);
    round_trip::<ControlResponse>(data);

    // Framing: lines come back in order, each whole or reported too long, and every byte is
    // accounted for. The buffer size and the limit come from the input.
    let (Some(&cap), Some(&max)) = (data.first(), data.get(1)) else {
        return;
    };
    let mut reader = BufReader::with_capacity(usize::from(cap % 16) + 1, Cursor::new(data));
    let max = usize::from(max % 64);
    let mut seen = 0usize;
    let mut lines = 0usize;
    while let Some(line) = read_line_bounded(&mut reader, max).expect("reading memory") {
        lines += 1;
        let len = match line {
            Line::Complete(bytes) => {
                assert!(bytes.len() <= max, "a complete line is within the limit");
                assert!(!bytes.contains(&b'\n'));
                bytes.len()
            }
            Line::TooLong { len } => {
                assert!(len > max, "only a line over the limit is too long");
                len
            }
        };
        seen += len;
    }
    let newlines = data.iter().filter(|&&b| b == b'\n').count();
    assert!(lines == newlines || lines == newlines + 1);
    // A complete line may have lost one trailing `\r`.
    assert!(seen + newlines <= data.len() && data.len() <= seen + newlines + lines);
});

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<T>(data) else {
        if let Ok(text) = std::str::from_utf8(data) {
            assert!(serde_json::from_str::<T>(text).is_err(), "from_str agrees");
        }
        return;
    };
    let line = serde_json::to_string(&value).expect("a decoded message encodes");
    assert!(!line.contains('\n'), "one message is one line");
    let again: T = match serde_json::from_str(&line) {
        Ok(v) => v,
        Err(e) => panic!("re-decoding {line}: {e}"),
    };
    assert_eq!(again, value, "{line}");
}
