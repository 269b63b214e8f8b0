#!/usr/bin/env bash
# gst-ordered developer entry point.
#
#   ./dev.sh demo [--streams N] [--seconds N] [--output F.mp4] [--snapshot F.png] [--no-window]
#                                 run the main job: a live pipeline through the three
#                                 elements into demo.mp4 (and a window when there is a display)
#   ./dev.sh test                 run the whole test suite (what CI runs)
#   ./dev.sh deps                 only install the system packages
#
# Each command first installs the Debian packages it needs (idempotent; needs root or sudo
# the first time). Rust itself (cargo >= the rust-version in Cargo.toml) must be installed.
set -euo pipefail
cd "$(dirname "$0")"
# Mesa's software Vulkan (lavapipe) complains on every start without one.
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}

PACKAGES=(
  pkg-config
  libgstreamer1.0-dev
  libgstreamer-plugins-base1.0-dev
  gstreamer1.0-tools
  gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good
  gstreamer1.0-plugins-ugly
  gstreamer1.0-libav
  meson
  ninja-build
  python3-gi
  python3-gst-1.0
  python3-venv
  fonts-dejavu-core
  libvulkan1
  mesa-vulkan-drivers
)
# Only for `test`: gdb (tests/bounded.sh takes a backtrace when a test binary crashes);
# OpenCV's facedetect with its cascades (tests/workerbin.rs runs it in worker bins);
# roundrobin, from plugins-bad (tests/funnel.rs splits streams into branches with it);
# the MQTT broker and clients, and paho for the consumer example (tests/metapublish.rs, the
# mqtt recipe).
TEST_PACKAGES=(gdb gstreamer1.0-opencv opencv-data gstreamer1.0-plugins-bad
  mosquitto mosquitto-clients python3-paho-mqtt)

deps() {
  local missing=()
  for p in "${PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "==> installing ${missing[*]}"
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  if ! command -v cargo >/dev/null; then
    echo "error: cargo not found; install Rust $(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml) or newer" >&2
    exit 1
  fi
}

# The MLServer the remote-enrichment tests and benchmark start (pinned in
# tests/remote/requirements.txt), in a venv under build/ (or $ORDERED_MLSERVER_VENV).
mlserver_venv() {
  local venv=${ORDERED_MLSERVER_VENV:-$PWD/build/mlserver-venv}
  local reqs=tests/remote/requirements.txt
  local stamp=$venv/.requirements
  if [[ ! -x $venv/bin/mlserver ]] || ! cmp -s "$reqs" "$stamp"; then
    echo "==> MLServer venv at $venv"
    local python=python3
    [[ -x /usr/bin/python3 ]] && python=/usr/bin/python3
    "$python" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$reqs"
    cp "$reqs" "$stamp"
  fi
  export ORDERED_MLSERVER_VENV=$venv
}

demo() {
  deps
  # build/target: shares the release build with meson's (./dev.sh test).
  CARGO_TARGET_DIR=build/target cargo run --locked --release --example demo -- "$@"
}

test_all() {
  deps "${TEST_PACKAGES[@]}"
  local build=build
  echo "==> meson setup + compile (builds libgstordered.so through cargo)"
  # --prefix=/usr: where Debian's GStreamer looks for plugins (README, "Building, installing").
  if [[ -f $build/build.ninja ]]; then
    meson setup --reconfigure --prefix=/usr "$build" >/dev/null
  else
    meson setup --prefix=/usr "$build" >/dev/null
  fi
  meson compile -C "$build"
  mlserver_venv

  echo "==> meson test (cargo test: unit, property, harness and pipeline tests; gst-inspect and gst-launch on the built plugin)"
  local log=$build/test-output.log
  meson test -C "$build" -v --print-errorlogs 2>&1 | tee "$log"
  # One closing line for every test run: cargo's per-binary results, plus meson's own tests.
  awk '/^test result:/ { p += $4; f += $6 } /^Ok:/ { mp += $2 } /^Fail:/ { mf += $2 }
       END { printf "tests: %d passed, %d failed\n", p + mp, f + mf }' "$log"

  echo "==> meson install (--prefix=/usr) into a staging folder, then used as installed"
  local stage
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' RETURN
  DESTDIR="$stage" meson install -C "$build" --no-rebuild >/dev/null
  # The plugin must land in the folder GStreamer itself scans, with no GST_PLUGIN_PATH.
  local pluginsdir
  pluginsdir=$(pkg-config --variable=pluginsdir gstreamer-1.0)
  [[ -f $stage$pluginsdir/libgstordered.so ]] || {
    echo "error: meson install did not put libgstordered.so into $pluginsdir" >&2
    find "$stage" -name libgstordered.so >&2
    exit 1
  }
  echo "installed: $pluginsdir/libgstordered.so"
  # As if installed: GStreamer's system plugin folder, with the staged copy of it first.
  env -u GST_PLUGIN_PATH -u GST_PLUGIN_PATH_1_0 \
    GST_PLUGIN_SYSTEM_PATH_1_0="$stage$pluginsdir:$pluginsdir" GST_REGISTRY="$stage/registry.bin" \
    tests/launch-check.sh 15 videotestsrc is-live=true num-buffers=15 \
    ! frameanalyzer stats-interval=1000000000 ! enrichpool stats-interval=1000000000 \
    ! resequencer stats-interval=1000000000 latency=2000000000 \
    ! metapublish stats-interval=1000000000 location="$stage/check.jsonl" ! fakesink
  echo "==> meson devenv"
  meson devenv -C "$build" gst-inspect-1.0 resequencer >/dev/null

  echo "==> benches and examples build (debug: they compile; run them with cargo bench)"
  CARGO_TARGET_DIR="$build/target" cargo build --locked --benches --examples
  echo "all checks passed"
}

case "${1:-}" in
  demo) shift; demo "$@" ;;
  test) test_all ;;
  deps) deps ;;
  *) echo "usage: $0 demo [--seconds N] [--output F.mp4] [--snapshot F.png] [--no-window] | test | deps" >&2; exit 2 ;;
esac
