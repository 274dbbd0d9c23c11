//! Starting the daemon again after it went away (shut down or crashed) while this shim was
//! attached, the way a first start does (`autostart::start`: the same lock, so a hundred shims
//! that lost their daemon at once start one). Not when the user asked it to stay down
//! (`mcpctl shutdown --stay-down` leaves a marker next to the socket, see
//! `mcpd_proto::stay_down`), not when autostart is off, and not in the first moments after the
//! connection dropped, when a daemon that is merely restarting (an upgrade, `systemctl
//! restart`) comes back by itself.

use std::path::Path;
use std::time::{Duration, Instant};

/// How long after losing the daemon a shim waits for it to come back by itself.
pub const GRACE: Duration = Duration::from_millis(300);

/// Starts a daemon attempt this many times at most per lost connection (a daemon that dies at
/// once is not started in a loop; the reconnect timeout then ends the shim).
pub const ATTEMPTS: u32 = 3;

/// When and whether to start the daemon again while reconnecting.
#[derive(Debug)]
pub struct Reviver {
    enabled: bool,
    lost_at: Instant,
    attempts: u32,
}

impl Reviver {
    /// For a connection lost now; `enabled` is the shim's autostart setting.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            lost_at: Instant::now(),
            attempts: 0,
        }
    }

    /// After a failed re-attach: starts the daemon if it is time to and none answers. Whether
    /// an attempt was made (the caller then re-attaches at once).
    pub fn maybe_start(&mut self, socket: &Path) -> bool {
        if !self.enabled
            || self.attempts >= ATTEMPTS
            || self.lost_at.elapsed() < GRACE
            || mcpd_proto::stay_down::is_marked(socket)
        {
            return false;
        }
        self.attempts += 1;
        // A connection the daemon answers is dropped unused: the caller re-attaches with its
        // resume ticket. Errors are the caller's next re-attach failure to report.
        crate::autostart::start(socket).is_ok()
    }
}
