#!/usr/bin/env bash
# Runs each fuzz target (fuzz/) for SECONDS (default 60) with libFuzzer
# through cargo-fuzz, on the stable toolchain (no sanitizer runtime: the
# targets assert what they check). Installs cargo-fuzz under target/tools
# the first time. New inputs collect under target/fuzz-corpus/<target>,
# crashes under target/fuzz-artifacts/<target>; the committed seeds are
# in fuzz/seeds/<target> (the test command replays them).
#
#   bash scripts/fuzz.sh            # 60 s each
#   bash scripts/fuzz.sh 600 jsonrpc
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-60}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(relay_http jsonrpc sanitizer)

TOOLS="$PWD/target/tools"
if [ ! -x "$TOOLS/bin/cargo-fuzz" ]; then
  echo "installing cargo-fuzz into $TOOLS (once)" >&2
  cargo install --quiet --locked --root "$TOOLS" cargo-fuzz --version 0.13.2
fi
export PATH="$TOOLS/bin:$PATH"
export CARGO_TARGET_DIR="$PWD/target/fuzz"

status=0
for t in "${TARGETS[@]}"; do
  corpus="$PWD/target/fuzz-corpus/$t"
  artifacts="$PWD/target/fuzz-artifacts/$t/"
  mkdir -p "$corpus" "$artifacts"
  echo "== $t: ${SECONDS_EACH}s" >&2
  if ! cargo fuzz run --fuzz-dir fuzz --sanitizer none "$t" "$corpus" "fuzz/seeds/$t" -- \
      -max_total_time="$SECONDS_EACH" -artifact_prefix="$artifacts" -print_final_stats=1 2> "target/fuzz-$t.log"; then
    echo "$t: FOUND A CRASH — see $artifacts and target/fuzz-$t.log" >&2
    status=1
  fi
  grep -E "^stat::number_of_executed_units|^stat::new_units_added|Done [0-9]+ runs" "target/fuzz-$t.log" | sed "s/^/$t: /" >&2 || true
done
exit $status
