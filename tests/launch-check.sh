#!/usr/bin/env bash
# Runs a gst-launch-1.0 pipeline whose ordered elements have stats-interval set, and checks
# the stats each one posts as EOS leaves it (the totals of the stream): every one of FRAMES
# frames analysed, processed and pushed in order, none dropped, skipped or late (and with
# metapublish, a record published for each and for EOS). Every
# ordered element named in the pipeline must have posted. meson's gst-launch tests and
# ./dev.sh test's check of the installed plugin run it (with a resequencer latency long
# enough that a loaded machine does not make it give up on a frame).
#
#   tests/launch-check.sh FRAMES PIPELINE-DESCRIPTION...
set -euo pipefail
frames=$1
shift
out=$(gst-launch-1.0 -e -m "$@")

# Every ordered element in the pipeline must have posted its totals.
for element in frameanalyzer enrichpool resequencer metapublish; do
  for word in "$@"; do
    if [[ $word == "$element" ]] && ! grep -qF "): $element-stats, " <<<"$out"; then
      echo "launch-check: $element posted no stats message (stats-interval set?)" >&2
      exit 1
    fi
  done
done

checked=0
# check STRUCTURE FIELD WANT: FIELD of the last STRUCTURE message is WANT.
check() {
  local structure=$1 field=$2 want=$3 line got
  line=$(grep -F "): $structure, " <<<"$out" | tail -n 1)
  got=$(sed -nE "s/.*[ ,]$field=\(guint64\)([0-9]+).*/\1/p" <<<"$line")
  if [[ $got != "$want" ]]; then
    echo "launch-check: $structure $field=${got:-missing}, expected $want" >&2
    echo "$line" >&2
    exit 1
  fi
  checked=$((checked + 1))
}
if grep -qF "): frameanalyzer-stats, " <<<"$out"; then
  check frameanalyzer-stats frames "$frames"
  check frameanalyzer-stats errors 0
fi
if grep -qF "): enrichpool-stats, " <<<"$out"; then
  check enrichpool-stats in "$frames"
  check enrichpool-stats pushed "$frames"
  check enrichpool-stats dropped 0
fi
if grep -qF "): resequencer-stats, " <<<"$out"; then
  for field in in pushed; do check resequencer-stats "$field" "$frames"; done
  for field in skipped late duplicates invalid; do check resequencer-stats "$field" 0; done
fi
if grep -qF "): metapublish-stats, " <<<"$out"; then
  # A record per frame and one for EOS, each published before EOS left.
  check metapublish-stats records $((frames + 1))
  check metapublish-stats published $((frames + 1))
  check metapublish-stats dropped 0
fi
if ((checked == 0)); then
  echo "launch-check: no stats message (set stats-interval on the elements)" >&2
  exit 1
fi
echo "launch-check: $frames frames through, $checked figures checked"
