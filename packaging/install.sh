#!/usr/bin/env bash
# Installs mcpd for the current user: builds release binaries, copies mcpd, mcp-shim and mcpctl
# to PREFIX/bin (default ~/.local), shell completions and man pages under PREFIX/share, and,
# when a systemd user manager is running, the user units (socket activation), enabled.
#
#   packaging/install.sh                  build and install to ~/.local
#   packaging/install.sh --prefix DIR     install to DIR/bin, DIR/share/...
#   packaging/install.sh --uninstall      remove what it installed (your config.json stays)
#
# Other flags: --binaries DIR (install prebuilt binaries from DIR instead of building),
# --no-systemd (skip the units). Running it again upgrades in place; it is idempotent.
# Environment: SYSTEMCTL overrides the systemctl program (tests use a stand-in).
set -euo pipefail

prefix="${HOME:?HOME is not set}/.local"
binaries=""
systemd=yes
uninstall=no
while [[ $# -gt 0 ]]; do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
    --prefix=*) prefix="${1#*=}"; shift ;;
    --binaries) binaries="${2:?--binaries needs a directory}"; shift 2 ;;
    --no-systemd) systemd=no; shift ;;
    --uninstall) uninstall=yes; shift ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
systemctl="${SYSTEMCTL:-systemctl}"
unit_dir="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
bin_dir="$prefix/bin"
share="$prefix/share"
bins=(mcpd mcp-shim mcpctl)
say() { printf 'install.sh: %s\n' "$*"; }

have_user_manager() {
  [[ "$systemd" == yes ]] && command -v "$systemctl" >/dev/null 2>&1 \
    && "$systemctl" --user show-environment >/dev/null 2>&1
}

# Files this script owns besides the binaries and units.
extras=(
  "$share/bash-completion/completions/mcpctl"
  "$share/zsh/site-functions/_mcpctl"
  "$share/fish/vendor_completions.d/mcpctl.fish"
  "$share/man/man1/mcpd.1"
  "$share/man/man1/mcp-shim.1"
  "$share/man/man5/mcpd.json.5"
)

if [[ "$uninstall" == yes ]]; then
  if have_user_manager; then
    "$systemctl" --user disable --now mcpd.socket mcpd.service >/dev/null 2>&1 || true
  fi
  for unit in mcpd.socket mcpd.service; do
    if [[ -f "$unit_dir/$unit" ]]; then rm -f "$unit_dir/$unit"; say "removed $unit_dir/$unit"; fi
  done
  if have_user_manager; then "$systemctl" --user daemon-reload || true; fi
  for b in "${bins[@]}"; do
    if [[ -f "$bin_dir/$b" ]]; then rm -f "$bin_dir/$b"; say "removed $bin_dir/$b"; fi
  done
  rm -f "${extras[@]}" "$share/man/man1"/mcpctl.1 "$share/man/man1"/mcpctl-*.1
  say "uninstalled; your configuration (${XDG_CONFIG_HOME:-$HOME/.config}/mcpd/) is left in place"
  exit 0
fi

if [[ -z "$binaries" ]]; then
  say "building release binaries (cargo build --release)"
  (cd "$root" && cargo build --release -p mcpd -p mcp-shim -p mcpctl)
  "$root/packaging/static-shim.sh"
  binaries="$root/target/release"
fi
for b in "${bins[@]}"; do
  [[ -x "$binaries/$b" ]] || { echo "install.sh: $binaries/$b is missing" >&2; exit 1; }
done

mkdir -p "$bin_dir"
for b in "${bins[@]}"; do
  # Copy then rename: a running mcpd keeps its old inode, nothing sees a half-written file.
  install -m 0755 "$binaries/$b" "$bin_dir/.$b.new"
  mv -f "$bin_dir/.$b.new" "$bin_dir/$b"
done
say "installed ${bins[*]} to $bin_dir"

mcpctl="$bin_dir/mcpctl"
mkdir -p "$share/bash-completion/completions" "$share/zsh/site-functions" \
  "$share/fish/vendor_completions.d" "$share/man/man1" "$share/man/man5"
"$mcpctl" completions bash >"$share/bash-completion/completions/mcpctl"
"$mcpctl" completions zsh >"$share/zsh/site-functions/_mcpctl"
"$mcpctl" completions fish >"$share/fish/vendor_completions.d/mcpctl.fish"
"$mcpctl" man "$share/man/man1" >/dev/null
install -m 0644 "$root/docs/man/mcpd.1" "$root/docs/man/mcp-shim.1" "$share/man/man1/"
install -m 0644 "$root/docs/man/mcpd.json.5" "$share/man/man5/"
say "installed completions and man pages under $share"

if ! have_user_manager; then
  say "no systemd user manager: units not installed. Start \`$bin_dir/mcpd\` yourself"
  say "(mcp-shim also starts it when nothing listens)."
  # An upgrade over a daemon that a shim started: stop it; the attached clients' shims start
  # the new binary (the mcpd next to them) at once and their sessions resume.
  if "$mcpctl" status >/dev/null 2>&1; then
    "$mcpctl" shutdown >/dev/null && say "stopped the running mcpd: clients' mcp-shim start the new one and resume their sessions"
  fi
else
  mkdir -p "$unit_dir"
  changed=no
  for unit in mcpd.socket mcpd.service; do
    new="$(sed "s#/usr/bin/mcpd#$bin_dir/mcpd#g" "$root/systemd/$unit")"
    if [[ ! -f "$unit_dir/$unit" ]] || [[ "$(cat "$unit_dir/$unit")" != "$new" ]]; then
      printf '%s\n' "$new" >"$unit_dir/$unit"
      changed=yes
    fi
  done
  "$systemctl" --user daemon-reload
  "$systemctl" --user enable --now mcpd.socket
  # An upgrade: a running daemon picks up the new binary (clients' shims reconnect).
  "$systemctl" --user try-restart mcpd.service
  say "units in $unit_dir ($([[ $changed == yes ]] && echo updated || echo unchanged)); mcpd.socket enabled"
fi

case ":$PATH:" in
  *":$bin_dir:"*) ;;
  *) say "note: $bin_dir is not in your PATH; add it, e.g. in ~/.profile: export PATH=\"$bin_dir:\$PATH\"" ;;
esac
say "next: mcpctl import --from claude-desktop   (or claude-code, cursor, vscode, windsurf)"
say "      mcpctl install-client claude-desktop  then: mcpctl doctor"
