#!/usr/bin/env bash
# Rebuilds target/release/mcp-shim as a static executable on Linux with glibc.
#
# Every MCP client launches its own mcp-shim and keeps it for the whole session, so its memory
# counts once per client: dynamically linked, most of its ~2.5 MiB resident set is shared glibc
# and loader pages; statically linked (and built small, below) it is 1.3 MiB and starts in half
# the time (see docs/BENCHMARKS.md). The shim needs no NSS (no user or host name lookups), which is what static
# glibc cannot do well. The daemon stays dynamic: it resolves host names for remote servers.
#
# Sourced by install.sh and deb-assets.sh after `cargo build --release`; does nothing elsewhere.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
host=$(rustc -vV | sed -n 's/^host: //p')
case "$host" in
  *-linux-gnu) ;;
  *) exit 0 ;;
esac
# The `shim` profile (Cargo.toml): size-optimised, fat LTO, panic=abort, stripped. It stays a
# static-pie (position-independent, the default with crt-static): the shim parses tool results
# that untrusted servers wrote, so its code keeps address randomisation. A non-PIE build measured
# 1.36-1.40 MiB attached against 1.39-1.45 MiB for the static-pie, within run-to-run noise, not
# worth the hardening it gives up.
(cd "$root" && RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --profile shim -p mcp-shim --target "$host")
cp "$root/target/$host/shim/mcp-shim" "$root/target/release/mcp-shim"
