#!/usr/bin/env bash
# Runs one test binary with a time limit (cargo's runner in `meson test`, see meson.build):
# a regression that deadlocks fails its binary within 15 minutes, with a message saying so,
# instead of holding CI until meson's own limit. Tests that can hang are also bounded one
# by one (tests/common/sync.rs); this is the backstop for the rest.
#
# A binary killed by a signal (a crash in C code: GStreamer, the Vulkan driver) says nothing
# of where it crashed; when gdb is installed (`./dev.sh test` installs it), the binary is run
# once more under gdb, to print the crashing thread's backtrace if it crashes again. The
# binary's first result stands either way.
#
#   tests/bounded.sh TEST-BINARY [ARGS...]      (limit: ORDERED_TEST_BINARY_LIMIT, s; 900)
limit=${ORDERED_TEST_BINARY_LIMIT:-900}
timeout --kill-after=10 "$limit" "$@"
rc=$?
if ((rc == 124 || rc == 137)); then
  echo "error: ${1##*/} did not finish within $limit s (a hang?); stopped" >&2
elif ((rc > 128)) && command -v gdb >/dev/null; then
  echo "error: ${1##*/} was killed by signal $((rc - 128)); running it again under gdb for a backtrace" >&2
  timeout --kill-after=10 "$limit" gdb -q -batch -return-child-result \
    -ex 'handle SIGPIPE nostop noprint pass' -ex run -ex 'thread apply all bt 30' \
    --args "$@" 2>&1 | grep -v '^\[New Thread\|^\[Thread .* exited\]' >&2
fi
exit "$rc"
