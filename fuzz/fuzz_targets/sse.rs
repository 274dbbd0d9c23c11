//! The server-sent events decoder of HTTP upstreams (daemon/src/upstream/sse.rs).
//!
//! Beyond "never panics": the events, the last event id and the retry delay do not depend on
//! how the stream is cut into chunks (whole, one byte at a time, or at cuts chosen by the
//! input); they are those of a plain, unbounded reading of the standard (below) when nothing
//! is over the limit; and with a limit, no event carries more data than it and none is made
//! up (each is one the unbounded reading also produces, in the same order).
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mcpd::upstream::sse::{SseDecoder, SseItem};

fuzz_target!(|data: &[u8]| {
    let [limit, seed, stream @ ..] = data else {
        return;
    };
    // Small limits exercise the over-limit path, a large one the ordinary one.
    let max = if limit & 0x80 != 0 {
        1 << 20
    } else {
        usize::from(limit & 0x7f)
    };

    let whole = decode(max, std::iter::once(stream));
    let bytes = decode(max, stream.chunks(1));
    assert_eq!(whole, bytes, "one byte at a time");
    let cuts = decode(
        max,
        Cuts {
            rest: stream,
            state: u32::from(*seed) | 1,
        },
    );
    assert_eq!(whole, cuts, "cut at pseudo-random places");

    let (events, last_id, retry) = reference(stream);
    if whole
        .0
        .iter()
        .all(|item| matches!(item, SseItem::Event { .. }))
        && max >= stream.len()
    {
        let got: Vec<(String, Vec<u8>)> = whole.0.iter().map(pair).collect();
        assert_eq!(got, events, "events as the standard reads them");
        assert_eq!(
            (&whole.1, whole.2),
            (&last_id, retry),
            "last event id, retry"
        );
    }
    let mut expected = events.iter();
    for item in &whole.0 {
        if let SseItem::Event { data, event } = item {
            assert!(data.len() <= max, "an event within the limit");
            assert!(!data.is_empty() && !event.is_empty());
            let got = pair(item);
            assert!(
                expected.any(|e| *e == got),
                "an event the standard reading does not produce (in this order): {got:?}"
            );
        }
    }
});

fn pair(item: &SseItem) -> (String, Vec<u8>) {
    match item {
        SseItem::Event { event, data } => (event.clone(), data.to_vec()),
        SseItem::TooLong(_) => (String::new(), Vec::new()),
    }
}

/// The WHATWG reading of a whole stream, without limits: lines end in CRLF, LF or CR (a last
/// line without an end is incomplete); `data` lines accumulate, a blank line dispatches, `:`
/// starts a comment, `id` (without NUL) and all-digit `retry` apply, the rest is ignored. As in
/// the decoder, an empty id clears the last one and an event without data (or with only empty
/// data, an MCP priming event) is not delivered.
fn reference(stream: &[u8]) -> (Vec<(String, Vec<u8>)>, Option<String>, Option<Duration>) {
    let stream = stream.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(stream);
    let mut lines = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < stream.len() {
        match stream[i] {
            b'\n' => {
                lines.push(&stream[start..i]);
                start = i + 1;
            }
            b'\r' => {
                lines.push(&stream[start..i]);
                if stream.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    let mut events = Vec::new();
    let (mut data, mut event, mut id) = (Vec::new(), String::new(), None::<String>);
    let (mut last_id, mut retry) = (None, None);
    for line in lines {
        if line.is_empty() {
            if let Some(id) = id.take() {
                last_id = (!id.is_empty()).then_some(id);
            }
            let event = std::mem::take(&mut event);
            let mut data = std::mem::take(&mut data);
            if data.pop().is_some() && !data.is_empty() {
                let event = if event.is_empty() {
                    "message".into()
                } else {
                    event
                };
                events.push((event, data));
            }
            continue;
        }
        if line[0] == b':' {
            continue;
        }
        let (name, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => (
                &line[..i],
                line[i + 1..].strip_prefix(b" ").unwrap_or(&line[i + 1..]),
            ),
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                data.extend_from_slice(value);
                data.push(b'\n');
            }
            b"event" => event = String::from_utf8_lossy(value).into_owned(),
            b"id" if !value.contains(&0) => id = Some(String::from_utf8_lossy(value).into_owned()),
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                if let Ok(ms) = std::str::from_utf8(value).unwrap_or("").parse::<u64>() {
                    retry = Some(Duration::from_millis(ms));
                }
            }
            _ => {}
        }
    }
    (events, last_id, retry)
}

type Decoded = (Vec<SseItem>, Option<String>, Option<Duration>);

fn decode<'a>(max: usize, chunks: impl Iterator<Item = &'a [u8]>) -> Decoded {
    let mut decoder = SseDecoder::new(max);
    let mut out = Vec::new();
    for chunk in chunks {
        decoder.feed(chunk, &mut out);
    }
    (
        out,
        decoder.last_event_id().map(str::to_owned),
        decoder.retry(),
    )
}

/// Chunks of 0 to 15 bytes (empty ones included), lengths from a xorshift generator.
struct Cuts<'a> {
    rest: &'a [u8],
    state: u32,
}

impl<'a> Iterator for Cuts<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        let n = (self.state % 16) as usize;
        let (chunk, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        Some(chunk)
    }
}
