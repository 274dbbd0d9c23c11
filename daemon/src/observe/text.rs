//! The short texts of an audit entry (a method, a tool, resource or server name), kept inside
//! the entry rather than each in an allocation of its own.
//!
//! A session fills the entry and the audit thread writes and drops it: a `String` per text was
//! allocated on the session's thread and freed on the writer's, which keeps both threads'
//! allocator caches empty (the slow paths of malloc and free, about 1,500 instructions per
//! call: docs/BENCHMARKS.md "Hot path, session 5"). Texts up to [`INLINE`] bytes (every method
//! and nearly every name) are copied in; a longer one (a long resource URI) takes a box.

/// The longest text kept inline.
pub const INLINE: usize = 54;

/// A short text, inline when it fits.
#[derive(Clone)]
pub enum Text {
    /// The first `len` bytes of `bytes`, always whole UTF-8 (copied from a `&str`).
    Inline { len: u8, bytes: [u8; INLINE] },
    /// A longer one.
    Heap(Box<str>),
}

impl Text {
    /// `s`, copied.
    pub fn new(s: &str) -> Self {
        match u8::try_from(s.len()) {
            Ok(len) if s.len() <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..s.len()].copy_from_slice(s.as_bytes());
                Self::Inline { len, bytes }
            }
            _ => Self::Heap(s.into()),
        }
    }

    /// The text's bytes (UTF-8), without checking them again (see [`as_str`](Self::as_str)).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Self::Heap(s) => s.as_bytes(),
        }
    }

    /// The text. An inline one is checked as UTF-8 again (safe code cannot skip it): where
    /// bytes do, [`as_bytes`](Self::as_bytes) is cheaper.
    pub fn as_str(&self) -> &str {
        match self {
            // Whole UTF-8 by construction, so the check never fails.
            Self::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Self::Heap(s) => s,
        }
    }
}

impl Default for Text {
    fn default() -> Self {
        Self::new("")
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_reads_back_as_written_whatever_its_length() {
        let long = "é".repeat(40);
        for s in [
            "",
            "tools/call",
            "fx__echo",
            &"x".repeat(INLINE),
            &"y".repeat(INLINE + 1),
            &long,
        ] {
            let text = Text::new(s);
            assert_eq!(text.as_str(), s);
            assert_eq!(
                matches!(text, Text::Inline { .. }),
                s.len() <= INLINE,
                "{s}"
            );
        }
    }

    #[test]
    fn a_reused_slot_keeps_nothing_of_a_longer_text_before_it() {
        let mut text = Text::new("a_very_long_server__tool_name");
        assert_eq!(text.as_str(), "a_very_long_server__tool_name");
        text = Text::new("short");
        assert_eq!(text.as_str(), "short");
    }
}
