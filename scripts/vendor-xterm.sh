#!/usr/bin/env bash
# Refreshes the dashboard's copy of xterm.js (MIT) (the terminal emulator the
# browser dashboard draws panes with) from the npm registry, at the
# versions below. The build never fetches anything: the files are
# committed under crates/agentbus-daemon/ui/vendor/xterm and compiled
# into the binary. Run this only to move to another version; then run
# the dashboard's tests (bash scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

XTERM=6.0.0
DEST=crates/agentbus-daemon/ui/vendor/xterm
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# npm pack checks each tarball against the registry's integrity digest.
(cd "$work" && npm pack --silent "@xterm/xterm@$XTERM" >/dev/null)
mkdir -p "$work/xterm"
tar xzf "$work/xterm-xterm-$XTERM.tgz" -C "$work/xterm"

mkdir -p "$DEST"
cp "$work/xterm/package/lib/xterm.mjs" "$DEST/xterm.mjs"
cp "$work/xterm/package/css/xterm.css" "$DEST/xterm.css"
cp "$work/xterm/package/LICENSE" "$DEST/LICENSE"
(cd "$DEST" && sha256sum xterm.mjs xterm.css > SHA256SUMS)
echo "@xterm/xterm $XTERM" > "$DEST/VERSION"
echo "vendored @xterm/xterm $XTERM into $DEST"
