#!/usr/bin/env bash
# Builds the release binaries and the generated files the Debian package ships, then the
# package itself when cargo-deb is installed (`cargo install cargo-deb`):
#   packaging/deb-assets.sh            -> target/debian/mcpd_<version>_<arch>.deb
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cargo build --release -p mcpd -p mcp-shim -p mcpctl
packaging/static-shim.sh
assets="$root/target/assets"
rm -rf "$assets"
mkdir -p "$assets/completions" "$assets/man"
target/release/mcpctl completions bash >"$assets/completions/mcpctl"
target/release/mcpctl completions zsh >"$assets/completions/_mcpctl"
target/release/mcpctl completions fish >"$assets/completions/mcpctl.fish"
target/release/mcpctl man "$assets/man" >/dev/null
cp docs/man/mcpd.1 docs/man/mcp-shim.1 docs/man/mcpd.json.5 "$assets/man/"
gzip -9n "$assets"/man/*.1 "$assets"/man/*.5
if cargo deb --version >/dev/null 2>&1; then
  cargo deb -p mcpd --no-build
else
  echo "deb-assets.sh: assets are in $assets; install cargo-deb (cargo install cargo-deb) to build the package" >&2
fi
