//! Newline-delimited framing with a length limit, for sockets and child pipes.
//!
//! Unlike `tokio_util::codec::LinesCodec`, an overlong line is not a stream error (which would end
//! the stream): it is reported as [`Frame::TooLong`] and skipped, so a session can answer it with
//! a JSON-RPC error and go on. Bytes are never buffered past the limit.

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

/// One decoded frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A line without its `\n` (and without a trailing `\r`).
    Line(BytesMut),
    /// A line longer than the limit, of the given length, discarded.
    TooLong(usize),
}

/// The decoder. `max` excludes the newline.
#[derive(Debug)]
pub struct LineCodec {
    max: usize,
    /// Bytes already searched for a newline in the current buffer.
    searched: usize,
    /// Length so far of an overlong line being discarded.
    discarding: Option<usize>,
    /// With [`LineCodec::keeping_ends`]: the first and last bytes of the overlong line being
    /// discarded, and of the last one discarded.
    ends: Option<Ends>,
}

/// The first [`HEAD`] and last [`TAIL`] bytes of an overlong line: enough to find the `id` of a
/// JSON-RPC answer (written first or last by every SDK) without keeping the line.
#[derive(Debug, Default)]
pub struct Ends {
    /// The start of the line.
    pub head: Vec<u8>,
    /// The end of the line (without its newline).
    pub tail: Vec<u8>,
    done: bool,
}

const HEAD: usize = 4096;
const TAIL: usize = 512;

impl Ends {
    fn feed(&mut self, bytes: &[u8]) {
        if self.done {
            *self = Self::default();
        }
        let room = HEAD.saturating_sub(self.head.len());
        self.head.extend_from_slice(&bytes[..room.min(bytes.len())]);
        if bytes.len() >= TAIL {
            self.tail.clear();
            self.tail.extend_from_slice(&bytes[bytes.len() - TAIL..]);
        } else {
            self.tail.extend_from_slice(bytes);
            let extra = self.tail.len().saturating_sub(TAIL);
            self.tail.drain(..extra);
        }
    }
}

impl LineCodec {
    /// A codec that accepts lines of up to `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            searched: 0,
            discarding: None,
            ends: None,
        }
    }

    /// Like [`LineCodec::new`], and remembers the ends of each overlong line for
    /// [`LineCodec::take_ends`] (an upstream's stdout: its overlong answer fails its request).
    pub fn keeping_ends(max: usize) -> Self {
        Self {
            ends: Some(Ends::default()),
            ..Self::new(max)
        }
    }

    /// The ends of the overlong line last reported as [`Frame::TooLong`].
    pub fn take_ends(&mut self) -> Option<Ends> {
        let ends = self.ends.as_mut()?;
        if !ends.done {
            return None;
        }
        Some(std::mem::take(ends))
    }

    fn keep(&mut self, bytes: &[u8], last: bool) {
        if let Some(ends) = self.ends.as_mut() {
            ends.feed(bytes);
            ends.done = last;
        }
    }

    /// Changes the limit for the lines that follow (a socket's hello is held to a smaller one).
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }
}

impl Decoder for LineCodec {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Self::Error> {
        if let Some(len) = self.discarding {
            return Ok(match memchr(&buf[..]) {
                Some(i) => {
                    let end = if i > 0 && buf[i - 1] == b'\r' {
                        i - 1
                    } else {
                        i
                    };
                    let rest = buf.split_to(end);
                    self.keep(&rest, true);
                    buf.advance(i + 1 - end);
                    self.discarding = None;
                    Some(Frame::TooLong(len + i))
                }
                None => {
                    self.discarding = Some(len + buf.len());
                    let chunk = buf.split();
                    self.keep(&chunk, false);
                    None
                }
            });
        }
        match memchr(&buf[self.searched..]) {
            Some(i) => {
                let end = self.searched + i;
                self.searched = 0;
                if end > self.max {
                    let line = buf.split_to(end + 1);
                    self.keep(line.strip_suffix(b"\n").unwrap_or(&line), true);
                    return Ok(Some(Frame::TooLong(end)));
                }
                let mut line = buf.split_to(end + 1);
                line.truncate(end);
                if line.last() == Some(&b'\r') {
                    line.truncate(end - 1);
                }
                Ok(Some(Frame::Line(line)))
            }
            None if buf.len() > self.max => {
                self.discarding = Some(buf.len());
                self.searched = 0;
                let chunk = buf.split();
                self.keep(&chunk, false);
                Ok(None)
            }
            None => {
                self.searched = buf.len();
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Self::Error> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        self.searched = 0;
        if let Some(len) = self.discarding.take() {
            self.keep(&[], true);
            return Ok(Some(Frame::TooLong(len)));
        }
        if buf.is_empty() {
            return Ok(None);
        }
        let line = buf.split();
        Ok(Some(Frame::Line(line)))
    }
}

/// The index of the first `\n`, searched a word at a time (as `mcp-shim`'s `scan.rs` does):
/// the byte-by-byte `position` was about 2,000 instructions per call over the client's line
/// and the server's answer (callgrind; docs/BENCHMARKS.md "Hot path").
fn memchr(haystack: &[u8]) -> Option<usize> {
    const WORD: usize = size_of::<usize>();
    const LO: usize = usize::from_ne_bytes([0x01; WORD]);
    const HI: usize = usize::from_ne_bytes([0x80; WORD]);
    const NEWLINES: usize = usize::from_ne_bytes([b'\n'; WORD]);
    let mut chunks = haystack.chunks_exact(WORD);
    let mut at = 0;
    for chunk in chunks.by_ref() {
        let mut word = [0u8; WORD];
        word.copy_from_slice(chunk);
        // Whether a byte of it is `\n`: the has-zero-byte test on `word ^ NEWLINES` (exact).
        let x = usize::from_ne_bytes(word) ^ NEWLINES;
        if x.wrapping_sub(LO) & !x & HI != 0 {
            break;
        }
        at += WORD;
    }
    haystack[at..]
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| at + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_at_a_time_search_finds_the_first_newline_wherever_it_is() {
        for len in 0..40 {
            for at in 0..len {
                let mut bytes = vec![b'x'; len];
                bytes[at] = b'\n';
                if at + 3 < len {
                    bytes[at + 3] = b'\n';
                }
                assert_eq!(memchr(&bytes), Some(at), "{len} {at}");
            }
            assert_eq!(memchr(&vec![b'x'; len]), None);
        }
        // Bytes one bit from `\n`, or with the high bit set, are not newlines.
        let near = [0x0b, 0x0a ^ 0x80, 0x8a, 0x0e, 0x02, 0xff, 0x00, 0x09, 0x1a];
        assert_eq!(memchr(&near), None);
    }

    fn decode_all(chunks: &[&[u8]], max: usize) -> Vec<Frame> {
        let mut codec = LineCodec::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                out.push(f);
            }
        }
        while let Some(f) = codec.decode_eof(&mut buf).unwrap() {
            out.push(f);
        }
        out
    }

    fn line(s: &str) -> Frame {
        Frame::Line(BytesMut::from(s))
    }

    #[test]
    fn lines_split_across_reads() {
        assert_eq!(
            decode_all(&[b"ab", b"c\nd", b"e\r\n", b"f"], 10),
            vec![line("abc"), line("de"), line("f")]
        );
    }

    #[test]
    fn an_overlong_line_is_reported_and_skipped() {
        assert_eq!(
            decode_all(&[b"0123", b"456789", b"xx\nok\n"], 5),
            vec![Frame::TooLong(12), line("ok")]
        );
        assert_eq!(
            decode_all(&[b"0123456\nok\n"], 5),
            vec![Frame::TooLong(7), line("ok")]
        );
        assert_eq!(decode_all(&[b"01234567"], 5), vec![Frame::TooLong(8)]);
    }

    #[test]
    fn the_ends_of_an_overlong_line_are_kept_when_asked() {
        let mut codec = LineCodec::keeping_ends(5);
        let mut buf = BytesMut::from(&b"{\"id\":7,"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(codec.take_ends().is_none(), "not over yet");
        buf.extend_from_slice(b"\"x\":\"long\"}\nok\n");
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Frame::TooLong(19)));
        let ends = codec.take_ends().unwrap();
        assert_eq!(ends.head, b"{\"id\":7,\"x\":\"long\"}");
        assert_eq!(ends.tail, b"{\"id\":7,\"x\":\"long\"}");
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(line("ok")));
        assert!(codec.take_ends().is_none());
    }

    #[test]
    fn exactly_max_is_fine() {
        assert_eq!(decode_all(&[b"01234\n"], 5), vec![line("01234")]);
    }
}
