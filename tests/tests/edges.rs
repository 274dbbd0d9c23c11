//! Files and OAuth edges (issue 10 §4, docs/SECURITY.md "Files and OAuth edges").

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::MetadataExt;

use mcpd_tests::{TIMEOUT, TestDaemon, fixture, wait_until};

#[test]
fn the_catalog_cache_is_private_like_the_credentials() {
    let daemon = TestDaemon::start(fixture::config(&[("fx", &[])]));
    let dir = daemon.root().join("cache").join("mcpd");
    let file = dir.join("catalog.json");
    assert!(
        wait_until(TIMEOUT, || file.exists()),
        "no catalog cache was written"
    );
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "the cache directory");
    assert_eq!(mode(&file), 0o600, "the cache file");
}
