//! Test support for mcpd's integration tests: the real binaries, real peers, temp XDG dirs.
//!
//! Everything here is test support, so it panics with a clear message instead of returning
//! errors: a test that cannot start its daemon has nothing better to do than fail loudly.
//!
//! - [`TestDaemon`]: `mcpd` in a private temp tree, with its log kept for failing tests.
//! - [`ShimClient`]: raw JSON-RPC through a spawned `mcp-shim`, for byte-level checks.
//! - [`SdkClient`]: the official Python and TypeScript SDK clients, through the shim.
//! - [`peers()`]: the pinned peers that `scripts/test` installs (server-everything, SDKs).
//! - [`process`]: `/proc` helpers and wait-with-timeout helpers (never bare sleeps).
//! - [`fixture`]: the `mcpd-fixture` MCP server and configs that use it.
//!
//! Test naming rule (see `.config/nextest.toml`): a test that starts node or Python peers is
//! named `peer_*`, so that nextest can cap how many of them run at once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

pub mod daemon;
pub mod fixture;
pub mod http_peer;
pub mod oauth;
pub mod peers;
pub mod process;
pub mod shim;

use std::path::PathBuf;
use std::time::Duration;

pub use daemon::{DaemonBuilder, TestDaemon};
pub use http_peer::HttpPeer;
pub use peers::{Peers, Sdk, SdkClient, peers, run_sdk_client};
pub use process::{
    descendants_of, eventually, pids_of_cmdline_containing, process_alive, wait_until,
};
pub use shim::ShimClient;

/// A test needs a system tool this machine lacks. That is a failure, naming what to install,
/// unless `MCPD_ALLOW_SKIP=1` is set (for a developer's partial machine; CI never sets it):
/// then the test says `SKIPPED` on stderr and the caller returns.
pub fn tool_missing(what: &str, install: &str) {
    if std::env::var_os("MCPD_ALLOW_SKIP").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED (MCPD_ALLOW_SKIP=1): {what} is not installed ({install})");
        return;
    }
    panic!(
        "{what} is not installed: {install}, or run scripts/test as root, which installs it \
         (MCPD_ALLOW_SKIP=1 turns this failure into a skip)"
    );
}

/// How long a test waits for something that should happen promptly (a reply, a start).
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// How long a test waits for a node or Python peer, which start slowly on a loaded machine.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(60);

/// Overrides the directory [`bin`] looks in (for testing an installed build).
pub const BIN_DIR_ENV: &str = "MCPD_BIN_DIR";

/// The path of a binary of this workspace (`mcpd`, `mcp-shim`, `mcpctl`, `mcpd-fixture`) in the
/// current build's target directory.
///
/// The test executable lives in `target/<profile>/deps/`; the binaries one level up. Cargo does
/// not build other packages' binaries for a test on its own: `scripts/test` runs
/// `cargo build --workspace --bins` first.
pub fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os(BIN_DIR_ENV) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("the test executable has a path");
            let mut dir = exe
                .parent()
                .expect("the test executable is in a directory")
                .to_path_buf();
            if dir.file_name().is_some_and(|n| n == "deps") {
                dir.pop();
            }
            dir
        }
    };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} does not exist: run `cargo build --workspace --bins` first \
         (scripts/test does), or set {BIN_DIR_ENV}",
        path.display()
    );
    path
}

/// The workspace root (the directory above `tests/`).
pub fn repo_root() -> PathBuf {
    let tests = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    tests.parent().map(PathBuf::from).unwrap_or(tests)
}
