#!/usr/bin/env bash
# Installs the real agent CLIs (Claude Code, Codex, Gemini CLI) that the
# offline tests drive, at the exact versions pinned in
# crates/agentbus/tests/clis/package.json and its package-lock.json, into
# target/clis. Afterwards the commands are
#   target/clis/node_modules/.bin/{claude,codex,gemini}
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
  for b in claude codex gemini; do
    [ -x "$DEST/node_modules/.bin/$b" ] || return 1
  done
}
if [ "$(cat "$STAMP" 2>/dev/null || true)" = "$want" ] && all_present; then
  exit 0
fi

mkdir -p "$DEST" "$CACHE"
rm -f "$STAMP"
cp "$SRC/package.json" "$SRC/package-lock.json" "$DEST/"

# npm ci installs exactly what the lock says and removes any old
# node_modules first. It picks, among the optional dependencies, the ones
# built for this OS and CPU: Codex's native binary (@openai/codex-linux-x64
# here) and Claude Code's (@anthropic-ai/claude-code-linux-x64). Claude
# Code's postinstall step, which puts its native binary in place, is allowed
# by the allowScripts field of package.json (npm 11 blocks dependency
# install scripts by default); --include=optional overrides any
# omit=optional in the user's npm config. Output goes to a log that is
# shown only if npm fails.
log=$PWD/$DEST/npm-ci.log
if ! (cd "$DEST" && CI=true npm ci --no-audit --no-fund --include=optional \
        --cache "$CACHE" --loglevel=warn </dev/null >"$log" 2>&1); then
  cat "$log" >&2
  fail "npm ci failed in $DEST (log above, also in $log)"
fi

all_present || {
  cat "$log" >&2
  fail "npm ci finished but $DEST/node_modules/.bin lacks claude, codex or gemini"
}

# Each command must start. Codex's launcher (bin/codex.js) runs a native
# binary from a separate optional package, and Claude Code's bin/claude.exe
# is only a stub until its postinstall step copies its native binary over
# it. `--version` needs no network; it runs with a throwaway HOME because
# the CLIs write small files there.
check_home=$PWD/$DEST/.check-home
rm -rf "$check_home"
mkdir -p "$check_home"
check() {
  HOME=$check_home CODEX_HOME=$check_home/.codex \
    "$DEST/node_modules/.bin/$1" --version </dev/null >/dev/null 2>&1
}
check codex || fail "codex does not start: its native package (@openai/codex-<os>-<cpu>) is missing"
check claude || fail "claude does not start: its postinstall step (which puts the native binary in place) did not run"
check gemini || fail "gemini does not start (see $log)"
rm -rf "$check_home"

echo "$want" > "$STAMP"
