#!/usr/bin/env bash
# Installs the real agent CLIs (Claude Code, Codex, Gemini CLI, GitHub
# Copilot CLI, OpenCode, Pi) that the offline tests drive, at the exact
# versions pinned in crates/agentbus/tests/clis/package.json and its
# package-lock.json, into target/clis. Afterwards the commands are
#   target/clis/node_modules/.bin/{claude,codex,gemini,copilot,opencode,pi}
# and target/clis/copilot-cache holds Copilot's unpacked JavaScript (see
# below).
#
# Quiet on success (prints nothing); on failure it prints npm's output and
# a one-line reason, and exits non-zero. Safe with CI=true and no stdin.
# Does nothing when the lock file has not changed since the last install
# (a stamp in target/clis holds the sha256 of the lock and package.json,
# whose allowScripts field also shapes the install).
set -euo pipefail
cd "$(dirname "$0")/.."

SRC=crates/agentbus/tests/clis
DEST=target/clis
CACHE=$PWD/target/npm-cache
STAMP=$DEST/.lock.sha256
CLIS="claude codex gemini copilot opencode pi"

fail() {
  echo "install_clis.sh: error: $*" >&2
  exit 1
}

command -v npm >/dev/null 2>&1 \
  || fail "npm is not installed; the agent CLI tests need Node.js and npm (apt-get install -y nodejs npm)"
command -v node >/dev/null 2>&1 \
  || fail "node is not installed; the agent CLI tests need Node.js (apt-get install -y nodejs)"
[ -f "$SRC/package.json" ] && [ -f "$SRC/package-lock.json" ] \
  || fail "$SRC/package.json or package-lock.json is missing"

want=$(cat "$SRC/package-lock.json" "$SRC/package.json" | sha256sum | cut -d' ' -f1)

# Already installed from this very lock, and every command is there?
all_present() {
  local b
  for b in $CLIS; do
    [ -x "$DEST/node_modules/.bin/$b" ] || return 1
  done
}
if [ "$(cat "$STAMP" 2>/dev/null || true)" = "$want" ] && all_present; then
  exit 0
fi

mkdir -p "$DEST" "$CACHE"
rm -f "$STAMP"
rm -rf "$DEST/copilot-cache"
cp "$SRC/package.json" "$SRC/package-lock.json" "$DEST/"

# npm ci installs exactly what the lock says and removes any old
# node_modules first. It picks, among the optional dependencies, the ones
# built for this OS and CPU: the native binaries of Codex
# (@openai/codex-linux-x64 here), Claude Code
# (@anthropic-ai/claude-code-linux-x64), Copilot (@github/copilot-linux-x64)
# and OpenCode (opencode-linux-x64 and opencode-linux-x64-baseline).
# The postinstall steps of Claude Code and OpenCode (opencode-ai), which put
# their native binary in place (OpenCode's picks the AVX2 or the baseline
# build), are allowed by the allowScripts field of package.json; the other
# install scripts in the tree are denied there, as none is needed (Gemini's
# keytar and node-pty, Pi's koffi, a Windows-only FFI library, and the
# no-op or warning-only scripts of @google/genai and protobufjs). npm 11
# never runs a script that allowScripts denies; one it does not list runs
# with a warning in npm 11.19 and fails the install with
# strict-allow-scripts, so every script in the tree is listed.
# --include=optional overrides any omit=optional in the user's npm config.
# Output goes to a log that is shown only if npm fails.
log=$PWD/$DEST/npm-ci.log
if ! (cd "$DEST" && CI=true npm ci --no-audit --no-fund --include=optional \
        --cache "$CACHE" --loglevel=warn </dev/null >"$log" 2>&1); then
  cat "$log" >&2
  fail "npm ci failed in $DEST (log above, also in $log)"
fi

all_present || {
  cat "$log" >&2
  fail "npm ci finished but $DEST/node_modules/.bin lacks one of: $CLIS"
}

# Each command must start. Codex's and Copilot's launchers (bin/codex.js,
# npm-loader.js) run a native binary from a separate optional package, and
# the bin/claude.exe of Claude Code and bin/opencode.exe of OpenCode are
# only stubs until their postinstall step puts the native binary there.
# `--version` needs no network; it runs with a throwaway HOME because the
# CLIs write small files there (PI_OFFLINE: Pi checks for a newer version
# otherwise).
#
# Copilot's native binary unpacks its JavaScript (about 235 MB) on its first
# start, by default into ~/.cache/copilot/pkg: with COPILOT_PKG_CACHE_HOME
# its `--version` here unpacks it into target/clis/copilot-cache, which
# cli_offline.py hands to every test's Copilot (else each fake HOME would
# get its own copy).
check_home=$PWD/$DEST/.check-home
rm -rf "$check_home"
mkdir -p "$check_home"
check() {
  env -u XDG_CONFIG_HOME -u XDG_DATA_HOME -u XDG_CACHE_HOME -u XDG_STATE_HOME \
    HOME="$check_home" CODEX_HOME="$check_home/.codex" PI_OFFLINE=1 COPILOT_OFFLINE=true \
    COPILOT_PKG_CACHE_HOME="$PWD/$DEST/copilot-cache" \
    "$DEST/node_modules/.bin/$1" --version </dev/null >/dev/null 2>&1
}
check codex || fail "codex does not start: its native package (@openai/codex-<os>-<cpu>) is missing"
check claude || fail "claude does not start: its postinstall step (which puts the native binary in place) did not run"
check gemini || fail "gemini does not start (see $log)"
check copilot || fail "copilot does not start: its native package (@github/copilot-<os>-<cpu>) is missing"
[ -d "$DEST/copilot-cache/pkg" ] || fail "copilot did not unpack itself into $DEST/copilot-cache"
check opencode || fail "opencode does not start: its postinstall step (which puts the native binary in place) did not run, or there is no opencode-<os>-<cpu> package for this machine"
check pi || fail "pi does not start (see $log; it needs Node.js 20.6 or newer)"
rm -rf "$check_home"

echo "$want" > "$STAMP"
