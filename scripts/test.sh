#!/usr/bin/env bash
# Runs every test of agentbus: unit tests, property tests and the
# integration tests that start the real binary. Installs what it needs
# first, so it works on a fresh machine (and in CI, with no stdin).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is not installed (https://rustup.rs)" >&2
  exit 1
fi

# Debian packages the tests drive for real: tmux (the bridge tests run
# private tmux servers) and Chromium (a page in a real browser calls the
# daemon). Installed when missing.
apt_install() {
  local pkg=$1 why=$2 SUDO=""
  echo "installing $pkg ($why)" >&2
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      SUDO="sudo -n"
    else
      echo "error: $pkg is missing and installing it needs root (apt-get install -y $pkg)" >&2
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -qq "$pkg" >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "$pkg"; }
}
# Everything the tests need besides the build, installed while the build
# runs (neither needs the other; on two cores this saves minutes). Output
# of a failing step is printed; the script stops if any step fails.
install_all() {
  command -v tmux >/dev/null 2>&1 || apt_install tmux "the tmux bridge tests need it"
  command -v chromium >/dev/null 2>&1 || apt_install chromium "the browser test needs it"
  command -v nats-server >/dev/null 2>&1 || apt_install nats-server "the relay's JetStream backend is tested on private nats-server nodes"
  command -v /usr/sbin/sshd >/dev/null 2>&1 || apt_install openssh-server "the App API's conn tests start a private sshd"
  command -v ssh-keygen >/dev/null 2>&1 || apt_install openssh-client "the App API's conn tests make keys and connect with ssh"
  [ -f /usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf ] || apt_install fonts-dejavu-core "screen shots (captureblockscreenshot) are drawn with DejaVu Sans Mono"

  # Python clients the tests drive the real binary with (the official MCP
  # SDK, ...), in a venv under target/ so nothing outside the checkout
  # changes. Reinstalled only when the requirements change.
  REQS=crates/agentbus/tests/python/requirements.txt
  VENV=target/pyenv
  STAMP="$VENV/.requirements.sha256"
  want=$(sha256sum "$REQS" | cut -d' ' -f1)
  if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
    PY=$(command -v python3 || true)
    if [ -z "$PY" ]; then
      echo "error: python3 is needed for the client tests (apt-get install -y python3 python3-venv)" >&2
      exit 1
    fi
    echo "installing the Python test clients into $VENV" >&2
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS"
    echo "$want" > "$STAMP"
  fi

  # The real agent CLIs (Claude Code, Codex CLI, Gemini CLI and six more)
  # at the versions pinned in crates/agentbus/tests/clis, from npm into
  # target/clis and target/clis24; the real_clis tests run them offline
  # against a scripted model on loopback.
  bash scripts/install_clis.sh
}
export AGENTBUS_TEST_PYTHON="$PWD/target/pyenv/bin/python"
export AGENTBUS_TEST_CLIS="$PWD/target/clis/node_modules/.bin"

install_all &
installs=$!
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-run "$@" || { kill "$installs" 2>/dev/null; exit 1; }
else
  cargo test --workspace --no-run "$@" || { kill "$installs" 2>/dev/null; exit 1; }
fi
wait "$installs" || { echo "error: installing what the tests need failed (above)" >&2; exit 1; }

# cargo-nextest runs each test in its own process, in parallel, and kills
# a hung test (see .config/nextest.toml). Fall back to cargo test without it.
# Then the relay's tests again on its NATS JetStream backend (each relay
# on a private nats-server): the protocol must behave the same on both.
RELAY_TESTS=(--test relay_conformance --test relay_auth --test relay_binding
  --test relay_http --test relay_durable --test relay_signed
  --test relay_machines --test relay_tls)
status=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@" || status=$?
  AGENTBUS_TEST_RELAY=nats cargo nextest run -p agentbus "${RELAY_TESTS[@]}" --no-fail-fast "$@" || status=$?
else
  echo "note: cargo-nextest not found; using cargo test" >&2
  cargo test --workspace --no-fail-fast "$@" || status=$?
  AGENTBUS_TEST_RELAY=nats cargo test -p agentbus "${RELAY_TESTS[@]}" --no-fail-fast "$@" || status=$?
fi
exit $status
