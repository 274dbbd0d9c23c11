//! The grace periods of a server's stop sequence (`stopTimeoutMs`, `killTimeoutMs`): part of
//! a server's definition, applied by `upstream::process` and `upstream::transport`.

use std::time::Duration;

/// Grace periods of the stop sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopTimeouts {
    /// After closing stdin, before SIGTERM.
    pub after_stdin: Duration,
    /// After SIGTERM, before SIGKILL.
    pub after_term: Duration,
}

impl Default for StopTimeouts {
    fn default() -> Self {
        Self {
            after_stdin: Duration::from_secs(2),
            after_term: Duration::from_secs(3),
        }
    }
}
