#!/usr/bin/env bash
# Runs one test binary with a time limit (cargo's runner in `meson test`, see meson.build):
# a regression that deadlocks fails its binary within 15 minutes, with a message saying so,
# instead of holding CI until meson's own limit. Tests that can hang are also bounded one
# by one (tests/common/sync.rs); this is the backstop for the rest.
#
#   tests/bounded.sh TEST-BINARY [ARGS...]      (limit: ORDERED_TEST_BINARY_LIMIT, s; 900)
limit=${ORDERED_TEST_BINARY_LIMIT:-900}
timeout --kill-after=10 "$limit" "$@"
rc=$?
if ((rc == 124 || rc == 137)); then
  echo "error: ${1##*/} did not finish within $limit s (a hang?); stopped" >&2
fi
exit "$rc"
