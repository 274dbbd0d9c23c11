//! The "stay down" marker: `mcpctl shutdown --stay-down` leaves `stay-down` next to the socket
//! (in the runtime directory) so that shims do not start the daemon again; the next daemon that
//! starts removes it. Without the marker, a shim whose daemon was shut down or crashed starts
//! it again (see `shim/src/revive.rs`).

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The marker's file name, in the socket's directory.
pub const FILE_NAME: &str = "stay-down";

/// Where the marker for the daemon at `socket` lives.
pub fn marker(socket: &Path) -> PathBuf {
    socket.parent().unwrap_or(Path::new("/")).join(FILE_NAME)
}

/// Whether the daemon at `socket` was asked to stay down (a regular file; never followed).
pub fn is_marked(socket: &Path) -> bool {
    std::fs::symlink_metadata(marker(socket)).is_ok_and(|m| m.is_file())
}

/// Leaves the marker (mode 0600).
pub fn mark(socket: &Path) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(marker(socket))
        .map(drop)
}

/// Removes the marker, if there is one.
pub fn clear(socket: &Path) {
    let _ = std::fs::remove_file(marker(socket));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn marked_until_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("mcpd.sock");
        assert!(!is_marked(&socket));
        mark(&socket).unwrap();
        assert!(is_marked(&socket));
        clear(&socket);
        assert!(!is_marked(&socket));
    }
}
