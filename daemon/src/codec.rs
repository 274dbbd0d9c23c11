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
}

impl LineCodec {
    /// A codec that accepts lines of up to `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            searched: 0,
            discarding: None,
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
                    buf.advance(i + 1);
                    self.discarding = None;
                    Some(Frame::TooLong(len + i))
                }
                None => {
                    self.discarding = Some(len + buf.len());
                    buf.clear();
                    None
                }
            });
        }
        match memchr(&buf[self.searched..]) {
            Some(i) => {
                let end = self.searched + i;
                self.searched = 0;
                if end > self.max {
                    buf.advance(end + 1);
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
                buf.clear();
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
            return Ok(Some(Frame::TooLong(len)));
        }
        if buf.is_empty() {
            return Ok(None);
        }
        let line = buf.split();
        Ok(Some(Frame::Line(line)))
    }
}

fn memchr(haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn exactly_max_is_fine() {
        assert_eq!(decode_all(&[b"01234\n"], 5), vec![line("01234")]);
    }
}
