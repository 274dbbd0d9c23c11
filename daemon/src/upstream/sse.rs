//! A bounded decoder for `text/event-stream` (server-sent events), as the WHATWG HTML standard
//! defines the format: lines end in CRLF, LF or CR; `data` lines accumulate; a blank line
//! dispatches; `id` sets the last event id (even on an event without data, which is how MCP
//! servers prime a stream for resumption); `retry` sets the reconnection delay; lines starting
//! with `:` are comments (keep-alives).
//!
//! Unlike a general SSE library it never buffers more than `max` bytes of one event: an event
//! whose data grows past the limit is discarded up to its end and reported as
//! [`SseItem::TooLong`], so a hostile or broken server cannot make the daemon allocate without
//! bound.

use std::time::Duration;

use bytes::BytesMut;

/// What the decoder produced from the bytes fed to it.
#[derive(Debug, PartialEq, Eq)]
pub enum SseItem {
    /// An event with data.
    Event {
        /// The `event` field, or `message` when the event had none.
        event: String,
        /// The data lines joined with `\n`.
        data: BytesMut,
    },
    /// An event whose data was over the limit was dropped; its size so far in bytes.
    TooLong(usize),
}

/// The decoder. Feed it chunks with [`feed`](Self::feed); it keeps partial lines between
/// chunks.
#[derive(Debug)]
pub struct SseDecoder {
    max: usize,
    line: Vec<u8>,
    /// Bytes of the current line, counting those dropped while `discarding`: a line emptied
    /// because it was too long is not a blank line (which would end the event).
    line_len: usize,
    /// The previous chunk ended in CR: a LF at the start of the next one belongs to it.
    after_cr: bool,
    /// The stream's first bytes are still to come (a leading BOM is skipped).
    at_start: bool,
    data: BytesMut,
    event: String,
    /// Bytes of the current event dropped for being over the limit.
    discarding: Option<usize>,
    id_buffer: Option<String>,
    last_event_id: Option<String>,
    retry: Option<Duration>,
}

impl SseDecoder {
    /// A decoder that accepts events of up to `max` bytes of data.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            line: Vec::new(),
            line_len: 0,
            after_cr: false,
            at_start: true,
            data: BytesMut::new(),
            event: String::new(),
            discarding: None,
            id_buffer: None,
            last_event_id: None,
            retry: None,
        }
    }

    /// The id of the last dispatched event, for `Last-Event-ID`.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// The reconnection delay the server asked for with `retry`.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Forgets a partial line or event: the connection it came on is gone. The last event id
    /// and the retry delay stay, for the next connection.
    pub(crate) fn reset_connection(&mut self) {
        self.line.clear();
        self.line_len = 0;
        self.after_cr = false;
        self.at_start = true;
        self.data.clear();
        self.event.clear();
        self.discarding = None;
        self.id_buffer = None;
    }

    /// Decodes `chunk`, appending complete items to `out`.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<SseItem>) {
        if chunk.is_empty() {
            // Nothing to decode, and a pending CR must still meet the LF after it.
            return;
        }
        if self.at_start {
            let bom = [0xEF, 0xBB, 0xBF];
            let n = self.line.len() + chunk.len();
            if n < bom.len() && bom.starts_with(&[&self.line[..], chunk].concat()) {
                // Could still be a BOM: wait for more.
                self.line.extend_from_slice(chunk);
                return;
            }
            self.at_start = false;
            let mut head = std::mem::take(&mut self.line);
            head.extend_from_slice(chunk);
            let rest = head.strip_prefix(&bom).unwrap_or(&head).to_vec();
            return self.feed_lines(&rest, out);
        }
        if self.after_cr && chunk.first() == Some(&b'\n') {
            chunk = &chunk[1..];
        }
        self.after_cr = false;
        self.feed_lines(chunk, out);
    }

    fn feed_lines(&mut self, mut chunk: &[u8], out: &mut Vec<SseItem>) {
        while let Some(end) = chunk.iter().position(|b| *b == b'\n' || *b == b'\r') {
            let cr = chunk[end] == b'\r';
            self.push_line_bytes(&chunk[..end]);
            let line = std::mem::take(&mut self.line);
            // While an over-limit event is dropped only a blank line (its end) matters.
            if self.discarding.is_none() || self.line_len == 0 {
                self.line_done(&line, out);
            }
            self.line_len = 0;
            self.line = line;
            self.line.clear();
            chunk = &chunk[end + 1..];
            if cr {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.push_line_bytes(chunk);
    }

    /// Adds bytes to the current line, or counts them when the line is already too long.
    fn push_line_bytes(&mut self, bytes: &[u8]) {
        self.line_len += bytes.len();
        if let Some(dropped) = self.discarding.as_mut() {
            *dropped += bytes.len();
            return;
        }
        // A field name and a separator on top of the data it may carry.
        if self.line.len() + bytes.len() + self.data.len() > self.max + 16 {
            self.discarding = Some(self.data.len() + self.line.len() + bytes.len());
            self.line.clear();
            self.data.clear();
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<SseItem>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if self.discarding.is_some() || line[0] == b':' {
            return;
        }
        let (name, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                if self.data.len() + value.len() + 1 > self.max + 1 {
                    self.discarding = Some(self.data.len() + value.len());
                    self.data.clear();
                    return;
                }
                self.data.extend_from_slice(value);
                self.data.extend_from_slice(b"\n");
            }
            b"event" => self.event = String::from_utf8_lossy(value).into_owned(),
            b"id" if !value.contains(&0) => {
                self.id_buffer = Some(String::from_utf8_lossy(value).into_owned());
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                if let Some(ms) = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    self.retry = Some(Duration::from_millis(ms));
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseItem>) {
        if let Some(id) = self.id_buffer.take() {
            self.last_event_id = (!id.is_empty()).then_some(id);
        }
        let event = std::mem::take(&mut self.event);
        if let Some(dropped) = self.discarding.take() {
            self.data.clear();
            out.push(SseItem::TooLong(dropped));
            return;
        }
        if self.data.is_empty() {
            return;
        }
        let mut data = self.data.split();
        data.truncate(data.len() - 1);
        if data.is_empty() {
            // `data:` with nothing: an MCP priming event, which only carries its id.
            return;
        }
        out.push(SseItem::Event {
            event: if event.is_empty() {
                "message".to_owned()
            } else {
                event
            },
            data,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(chunks: &[&[u8]], max: usize) -> (Vec<SseItem>, SseDecoder) {
        let mut d = SseDecoder::new(max);
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c, &mut out);
        }
        (out, d)
    }

    fn event(event: &str, data: &str) -> SseItem {
        SseItem::Event {
            event: event.into(),
            data: BytesMut::from(data),
        }
    }

    #[test]
    fn events_with_every_line_ending_and_split_anywhere() {
        let text = b"\xEF\xBB\xBFid: 1\r\ndata: {\"a\":1}\r\n\r\n: keep-alive\n\nevent: endpoint\rdata: /m?s=1\r\rdata:x\ndata: y\n\n";
        let expected = vec![
            event("message", "{\"a\":1}"),
            event("endpoint", "/m?s=1"),
            event("message", "x\ny"),
        ];
        let (whole, d) = decode(&[text], 1024);
        assert_eq!(whole, expected);
        assert_eq!(d.last_event_id(), Some("1"));
        for split in 0..text.len() {
            let (parts, _) = decode(&[&text[..split], &text[split..]], 1024);
            assert_eq!(parts, expected, "split at {split}");
        }
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(decode(&bytes, 1024).0, expected);
    }

    #[test]
    fn a_priming_event_sets_the_id_and_retry_without_data() {
        let (out, d) = decode(&[b"id: abc\nretry: 1500\ndata:\n\n"], 1024);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(d.last_event_id(), Some("abc"));
        assert_eq!(d.retry(), Some(Duration::from_millis(1500)));
        let (_, d) = decode(&[b"id: abc\n\nid\n\n"], 1024);
        assert_eq!(d.last_event_id(), None, "an empty id resets it");
    }

    #[test]
    fn an_event_over_the_limit_is_dropped_and_the_stream_goes_on() {
        let big = "x".repeat(100);
        let text = format!("data: {big}\ndata: {big}\n\ndata: small\n\n");
        let (out, _) = decode(&[text.as_bytes()], 150);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(matches!(out[0], SseItem::TooLong(n) if n >= 150), "{out:?}");
        assert_eq!(out[1], event("message", "small"));
        // One endless line is never buffered whole.
        let mut d = SseDecoder::new(64);
        let mut out = Vec::new();
        for _ in 0..1000 {
            d.feed(&[b'x'; 1024], &mut out);
            assert!(d.line.len() <= 64 + 16);
        }
        d.feed(b"\n\ndata: ok\n\n", &mut out);
        assert!(
            matches!(out[0], SseItem::TooLong(n) if n >= 1000 * 1024),
            "{out:?}"
        );
        assert_eq!(out[1], event("message", "ok"));
    }

    /// Found by fuzzing (fuzz/fuzz_targets/sse.rs): the line that went over the limit ended
    /// the event as a blank line would, so the event's remaining lines came out as an event.
    #[test]
    fn the_rest_of_an_event_over_the_limit_is_dropped_with_it() {
        let big = "x".repeat(100);
        for text in [
            format!("data: {big}\ndata: tail\n\ndata: next\n\n"),
            format!("data: a\n: {big}\ndata: b\n\ndata: next\n\n"),
            format!("event: {big}\ndata: b\n\ndata: next\n\n"),
            format!("data: {big}\r\nid: 7\r\ndata: tail\r\n\r\ndata: next\r\n\r\n"),
        ] {
            let (whole, _) = decode(&[text.as_bytes()], 50);
            assert_eq!(whole.len(), 2, "{text:?}: {whole:?}");
            assert!(matches!(whole[0], SseItem::TooLong(_)), "{whole:?}");
            assert_eq!(whole[1], event("message", "next"));
            let bytes: Vec<&[u8]> = text.as_bytes().chunks(1).collect();
            assert_eq!(decode(&bytes, 50).0, whole, "byte by byte");
        }
    }

    /// Found by fuzzing: an empty chunk between the CR and the LF of a CRLF made the LF a line
    /// of its own, a blank line that ended the event early.
    #[test]
    fn an_empty_chunk_inside_a_crlf_changes_nothing() {
        let (out, _) = decode(&[b"data: a\r", b"", b"\ndata: b\r\n\r\n"], 1024);
        assert_eq!(out, vec![event("message", "a\nb")]);
    }
}
