#!/usr/bin/env bash
# The long soak of the randomized interleaving harnesses (issue 11), in a release build:
# the pool's model (src/pool/model.rs), the window's properties (src/sequencing/proptests.rs),
# the elements' harness (tests/interleavings.rs) and the flushing-seek loop
# (tests/dynamics.rs), and the ordered funnel's random splits (tests/funnel.rs). Each line
# of the summary says how many schedules ran and what failed.
#
#   scripts/soak.sh [POOL_CASES] [WINDOW_CASES] [ELEMENT_SEEDS] [SEEKS] [SPLITS]
set -euo pipefail
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-build/target}
pool_cases=${1:-20000}
window_cases=${2:-1000000}
element_seeds=${3:-5000}
seeks=${4:-10000}
splits=${5:-1000}
first_seed=${ORDERED_SOAK_FIRST:-1000}

run() {
  local what=$1
  shift
  local started=$SECONDS
  # A step that hangs is a failure too.
  if timeout "${ORDERED_SOAK_STEP_LIMIT:-5400}" "$@" >"$log" 2>&1; then
    echo "$what: passed in $((SECONDS - started)) s"
  else
    echo "$what: FAILED after $((SECONDS - started)) s; the failing case:"
    grep -E "panicked|minimal failing|seed [0-9]+" "$log" | head -20
    status=1
  fi
}

status=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --release --locked --no-run --lib --test interleavings --test dynamics --test funnel \
  >/dev/null 2>&1
run "pool model, $pool_cases schedules" \
  env ORDERED_SOAK_CASES="$pool_cases" cargo test --release --locked --lib pool::model
run "window properties, $window_cases cases each" \
  env ORDERED_SOAK_CASES="$window_cases" cargo test --release --locked --lib sequencing::proptests
run "elements, $element_seeds seeds from $first_seed" \
  env ORDERED_SOAK_SEEDS="$element_seeds" ORDERED_SOAK_FIRST="$first_seed" \
  cargo test --release --locked --test interleavings
run "$seeks flushing seeks under load" \
  env ORDERED_SOAK_SEEKS="$seeks" cargo test --release --locked --test dynamics a_thousand_flushing_seeks
run "ordered funnel, $splits random splits from $first_seed" \
  env ORDERED_SOAK_SEEDS="$splits" ORDERED_SOAK_FIRST="$first_seed" \
  cargo test --release --locked --test funnel random_splits
exit $status
