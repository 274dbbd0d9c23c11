//! Writing to stdout without panicking when the reader has gone away (`mcpctl status | head`).

use std::io::{self, Write};

use anyhow::{Context, Result};

/// Writes `text` to stdout. A closed pipe is not an error: the reader has what it wanted.
pub fn print(text: &str) -> Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("failed to write to stdout"),
    }
}

/// `println!` that never panics; for progress lines whose loss must not stop the work.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = $crate::output::print(&format!("{}\n", format_args!($($arg)*)));
    }};
}
pub(crate) use say;
