//! Cheap looks at bytes on the hot path: newline search a word at a time, and the id of a
//! daemon response read from its first or last bytes without parsing the line.
//!
//! Every line the shim relays is searched for its newline, and every daemon line passes
//! [`response_id`] while requests are in flight: a byte-by-byte search and a full JSON parse of
//! each line were most of the shim's instructions per call (callgrind; docs/BENCHMARKS.md). The
//! shim stays std-only: the search reads a `usize` at a time ("SWAR"), which is what `memchr`
//! does without SIMD.

const LO: usize = usize::from_ne_bytes([0x01; size_of::<usize>()]);
const HI: usize = usize::from_ne_bytes([0x80; size_of::<usize>()]);
const NEWLINES: usize = usize::from_ne_bytes([b'\n'; size_of::<usize>()]);
const WORD: usize = size_of::<usize>();

/// Whether any byte of `word` is `\n` (exact: the classic has-zero-byte test on `word ^ NEWLINES`).
fn has_newline(word: usize) -> bool {
    let x = word ^ NEWLINES;
    x.wrapping_sub(LO) & !x & HI != 0
}

fn word_at(bytes: &[u8], at: usize) -> usize {
    let mut w = [0u8; WORD];
    w.copy_from_slice(&bytes[at..at + WORD]);
    usize::from_ne_bytes(w)
}

/// The index of the first `\n` in `bytes`.
pub fn find_newline(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + WORD <= bytes.len() {
        if has_newline(word_at(bytes, i)) {
            break;
        }
        i += WORD;
    }
    bytes[i..].iter().position(|&b| b == b'\n').map(|p| i + p)
}

/// The index of the last `\n` in `bytes`.
pub fn rfind_newline(bytes: &[u8]) -> Option<usize> {
    let mut end = bytes.len();
    while end >= WORD {
        if has_newline(word_at(bytes, end - WORD)) {
            break;
        }
        end -= WORD;
    }
    bytes[..end].iter().rposition(|&b| b == b'\n')
}

/// The lines of `bytes`, each with its `\n` (the last one without, if `bytes` does not end in
/// one), as `split_inclusive` would give them.
pub fn lines(bytes: &[u8]) -> Lines<'_> {
    Lines { rest: bytes }
}

/// See [`lines`].
#[derive(Debug, Clone)]
pub struct Lines<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let end = find_newline(self.rest).map_or(self.rest.len(), |i| i + 1);
        let (line, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(line)
    }
}

/// What [`response_id`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Quick<'a> {
    /// A response: its id's JSON text, and whether it is an error.
    Response(&'a str, bool),
    /// Not a response (a request or notification of the daemon's).
    Other,
    /// The fast paths do not apply: parse the line.
    Unknown,
}

/// The id of a daemon line that is a response, from its first or last bytes, when it has one of
/// the shapes answers take: `"jsonrpc":"2.0"` and `"id":ID` first in either order, then
/// `"result"` or `"error"` (mcpd's own answers, the Python SDK's, and serde_json's sorted
/// `{"id":…,"jsonrpc":"2.0","result":…}`), or `"result"`/`"error"` first and `"id":N` last (the
/// TypeScript SDK's). The daemon only sends lines it parsed (a forwarded answer is the
/// upstream's, checked, with the client's id spliced in), so these shapes are what they look
/// like; anything else is [`Quick::Unknown`]. `line` is without its line ending.
pub fn response_id(line: &[u8]) -> Quick<'_> {
    let Some(mut rest) = line.strip_prefix(b"{") else {
        return Quick::Unknown;
    };
    let mut id = None;
    for _ in 0..2 {
        if let Some(after) = rest.strip_prefix(br#""jsonrpc":"2.0","#) {
            rest = after;
        } else if let Some(after) = rest.strip_prefix(br#""id":"#) {
            let Some(len) = id_len(after) else {
                return Quick::Unknown;
            };
            let Some(next) = after[len..].strip_prefix(b",") else {
                return Quick::Unknown;
            };
            id = Some(&after[..len]);
            rest = next;
        }
    }
    let error = if rest.starts_with(br#""result":"#) {
        false
    } else if rest.starts_with(br#""error":"#) {
        true
    } else if rest.starts_with(br#""method":"#) {
        return Quick::Other;
    } else {
        return Quick::Unknown;
    };
    let id = match id {
        Some(id) => id,
        None => match tail_id(line) {
            Some(id) => id,
            None => return Quick::Unknown,
        },
    };
    match std::str::from_utf8(id) {
        Ok(id) => Quick::Response(id, error),
        Err(_) => Quick::Unknown,
    }
}

/// `...,"id":N}`: digits right before the closing brace are outside any string (a string ends
/// in `"`) and any nested value (which would end in `}` or `]`), so the member is the top-level
/// id.
fn tail_id(line: &[u8]) -> Option<&[u8]> {
    let rest = line.strip_suffix(b"}")?;
    let digits = rest.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    let (before, number) = rest.split_at(rest.len() - digits);
    if digits == 0 || (digits > 1 && number[0] == b'0') || !before.ends_with(br#","id":"#) {
        return None;
    }
    Some(number)
}

/// The length of the id at the start of `bytes`: a non-negative integer without leading zeros,
/// or a string (escapes skipped, not decoded); `None` for anything else.
fn id_len(bytes: &[u8]) -> Option<usize> {
    match bytes.first()? {
        b'"' => {
            let mut i = 1;
            loop {
                match bytes.get(i)? {
                    b'"' => return Some(i + 1),
                    b'\\' => i += 2,
                    _ => i += 1,
                }
            }
        }
        b'0' => Some(1).filter(|_| !bytes.get(1).is_some_and(u8::is_ascii_digit)),
        b'1'..=b'9' => Some(bytes.iter().take_while(|b| b.is_ascii_digit()).count()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newlines_are_found_wherever_they_are() {
        for len in 0..40 {
            for at in 0..len {
                let mut bytes = vec![b'x'; len];
                bytes[at] = b'\n';
                assert_eq!(find_newline(&bytes), Some(at), "{len} {at}");
                assert_eq!(rfind_newline(&bytes), Some(at), "{len} {at}");
            }
            let none = vec![b'x'; len];
            assert_eq!(find_newline(&none), None);
            assert_eq!(rfind_newline(&none), None);
        }
        // Bytes that differ from `\n` by one bit, or have the high bit set, are not newlines.
        let near = [0x0b, 0x0a ^ 0x80, 0x8a, 0x0e, 0x02, 0xff, 0x00, 0x09];
        assert_eq!(find_newline(&near), None);
        let two = b"ab\ncdefghijkl\nmn";
        assert_eq!(find_newline(two), Some(2));
        assert_eq!(rfind_newline(two), Some(13));
    }

    #[test]
    fn lines_split_as_split_inclusive_does() {
        for text in [
            &b""[..],
            b"\n",
            b"a",
            b"a\n",
            b"a\nbcdefghijklmnop\n\nq",
            b"0123456789abcdef0123456789\n",
        ] {
            let ours: Vec<&[u8]> = lines(text).collect();
            let std: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
            assert_eq!(ours, std, "{:?}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn response_ids_are_read_from_the_usual_shapes() {
        let cases: [(&[u8], Quick<'_>); 17] = [
            (
                br#"{"id":5,"jsonrpc":"2.0","result":{"content":[]}}"#,
                Quick::Response("5", false),
            ),
            (
                br#"{"jsonrpc":"2.0","result":{},"id":6}"#,
                Quick::Response("6", false),
            ),
            (
                br#"{"id":"x","error":{"code":1,"message":"m"}}"#,
                Quick::Response(r#""x""#, true),
            ),
            (
                br#"{"jsonrpc":"2.0","id":7,"result":{}}"#,
                Quick::Response("7", false),
            ),
            (
                br#"{"jsonrpc":"2.0","id":0,"error":{"code":1,"message":"m"}}"#,
                Quick::Response("0", true),
            ),
            (
                br#"{"jsonrpc":"2.0","id":"a\"b","result":{}}"#,
                Quick::Response(r#""a\"b""#, false),
            ),
            (
                br#"{"result":{"content":[{"id":3}]},"jsonrpc":"2.0","id":12}"#,
                Quick::Response("12", false),
            ),
            (
                br#"{"error":{"code":1,"message":"m"},"jsonrpc":"2.0","id":4}"#,
                Quick::Response("4", true),
            ),
            (
                br#"{"jsonrpc":"2.0","id":"mcpd:x:1","method":"roots/list"}"#,
                Quick::Other,
            ),
            // Everything else is left to the parser.
            (br#"{"jsonrpc":"2.0","id":-1,"result":{}}"#, Quick::Unknown),
            (br#"{"jsonrpc":"2.0","id":01,"result":{}}"#, Quick::Unknown),
            (br#"{"jsonrpc":"2.0","id":null,"error":{}}"#, Quick::Unknown),
            (br#"{"jsonrpc":"2.0","id":1 ,"result":{}}"#, Quick::Unknown),
            (br#"{"result":{"a":{"id":3}}}"#, Quick::Unknown),
            (br#"{"result":{},"id":"s"}"#, Quick::Unknown),
            (br#"{"result":{},"id":007}"#, Quick::Unknown),
            (br#"{"method":"x","jsonrpc":"2.0","id":5}"#, Quick::Other),
        ];
        for (line, want) in cases {
            assert_eq!(response_id(line), want, "{}", String::from_utf8_lossy(line));
        }
    }
}
