//! Bounded line reading for blocking readers (the shim and `mcpctl`).
//!
//! A line longer than the limit is never buffered whole: its bytes are counted and discarded up
//! to the next newline, and the caller learns how long it was. The daemon's async codec follows
//! the same rule.

use std::io::{self, BufRead};

/// Longest MCP message a session or upstream may send, in bytes (newline excluded).
pub const MAX_MESSAGE_LINE: usize = 16 * 1024 * 1024;
/// Longest hello or control line, in bytes.
pub const MAX_CONTROL_LINE: usize = 1024 * 1024;

/// One line read by [`read_line_bounded`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A whole line, without its newline (and without a trailing `\r`).
    Complete(Vec<u8>),
    /// A line over the limit; `len` bytes were discarded.
    TooLong {
        /// Length of the discarded line in bytes.
        len: usize,
    },
}

/// Reads one line of at most `max` bytes. Returns `Ok(None)` at end of input; a final line
/// without a newline is still returned.
pub fn read_line_bounded<R: BufRead + ?Sized>(
    reader: &mut R,
    max: usize,
) -> io::Result<Option<Line>> {
    let mut line = Vec::new();
    let mut len = 0usize;
    let mut saw_any = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            if !saw_any {
                return Ok(None);
            }
            break;
        }
        saw_any = true;
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        len += chunk.len();
        if len <= max {
            line.extend_from_slice(chunk);
        } else if !line.is_empty() {
            line = Vec::new();
        }
        let consumed = done.unwrap_or(chunk.len());
        reader.consume(consumed);
        if done.is_some() {
            break;
        }
    }
    if len > max {
        return Ok(Some(Line::TooLong { len }));
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(Line::Complete(line)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Cursor};

    fn lines(input: &[u8], max: usize, cap: usize) -> Vec<Line> {
        let mut r = BufReader::with_capacity(cap, Cursor::new(input.to_vec()));
        let mut out = Vec::new();
        while let Some(l) = read_line_bounded(&mut r, max).unwrap() {
            out.push(l);
        }
        out
    }

    #[test]
    fn splits_lines_and_keeps_a_final_partial_line() {
        assert_eq!(
            lines(b"ab\ncd\r\nef", 10, 2),
            vec![
                Line::Complete(b"ab".to_vec()),
                Line::Complete(b"cd".to_vec()),
                Line::Complete(b"ef".to_vec())
            ]
        );
    }

    #[test]
    fn an_overlong_line_is_discarded_and_the_next_one_read() {
        let mut input = vec![b'x'; 100];
        input.extend_from_slice(b"\nok\n");
        assert_eq!(
            lines(&input, 10, 8),
            vec![Line::TooLong { len: 100 }, Line::Complete(b"ok".to_vec())]
        );
    }

    #[test]
    fn a_line_of_exactly_max_bytes_is_accepted() {
        assert_eq!(
            lines(b"0123456789\n", 10, 3),
            vec![Line::Complete(b"0123456789".to_vec())]
        );
        assert_eq!(
            lines(b"0123456789a\n", 10, 3),
            vec![Line::TooLong { len: 11 }]
        );
    }

    #[test]
    fn empty_input_is_end() {
        assert!(lines(b"", 10, 4).is_empty());
        assert_eq!(lines(b"\n", 10, 4), vec![Line::Complete(Vec::new())]);
    }
}
