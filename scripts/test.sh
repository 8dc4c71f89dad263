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

# cargo-nextest runs each test in its own process, in parallel, and kills
# a hung test (see .config/nextest.toml). Fall back to cargo test without it.
if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast "$@"
else
  echo "note: cargo-nextest not found; using cargo test" >&2
  exec cargo test --workspace --no-fail-fast "$@"
fi
