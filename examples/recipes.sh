#!/usr/bin/env bash
# gst-launch-1.0 recipes with the three elements, each run for real (tests/examples.rs runs
# this script in CI). Needs the plugin on GST_PLUGIN_PATH (meson devenv, or the folder of
# libgstordered.so).
#
#   examples/recipes.sh [live|file|rtp|shared|faces|branches|mqtt|servers|cascade]...   (default: all)
#
# `servers` and `cascade` need SERVERS (comma-separated grpc:// or http:// URLs of Open Inference
# Protocol servers) and MODEL (the model's name; default `frames`, the test model in
# tests/remote/); without SERVERS it is skipped.
set -euo pipefail

WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
# Runs gst-launch-1.0 and prints, of the messages it shows with -m, each element's last stats
# message: the elements post one just before EOS leaves them (with stats-interval set), with
# the totals of the stream. Errors go to stderr, and fail the recipe.
launch() {
  echo "+ gst-launch-1.0 $*"
  gst-launch-1.0 -e -m "$@" | last_stats
}
# Of gst-launch-1.0 -m's messages on stdin, each element's last stats message.
last_stats() {
  awk '/^Got message .* \(element\): [a-z]+-stats, / { last[$6] = $0 } END { for (e in last) print last[e] }'
}
S=stats-interval=1000000000
# The resequencers below wait up to 1 s for a late frame (default 200 ms): generous, so that
# a busy machine does not make them give up on frames that are only slow.

# A live test source through analysis, a pool of 4 workers drawing the overlay, and the
# resequencer.
live() {
  launch videotestsrc is-live=true num-buffers=60 pattern=ball \
    ! video/x-raw,width=320,height=240,framerate=30/1 \
    ! frameanalyzer $S ! enrichpool workers=4 overlay=true $S ! resequencer latency=1000000000 $S \
    ! videoconvert ! fakesink
}

# A file in, a file out: decode an MP4, analyse, draw, re-encode.
file() {
  launch videotestsrc num-buffers=60 pattern=ball ! video/x-raw,width=320,height=240 \
    ! x264enc ! mp4mux ! filesink location="$WORK/in.mp4"
  launch filesrc location="$WORK/in.mp4" ! decodebin ! videoconvert \
    ! frameanalyzer $S ! enrichpool workers=4 overlay=true $S ! resequencer latency=1000000000 $S \
    ! videoconvert ! x264enc ! mp4mux ! filesink location="$WORK/out.mp4"
  [[ -s $WORK/out.mp4 ]] || { echo "no output file" >&2; return 1; }
}

# RTP over UDP on 127.0.0.1 from a second gst-launch-1.0 process (raw video, RFC 4175). The
# receiver stops after 60 frames (identity sends EOS in place of the 61st); the sender sends
# more, in case the first packets arrive before the receiver listens.
rtp() {
  local port
  port=$(python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  local caps="application/x-rtp,media=video,clock-rate=90000,encoding-name=RAW,sampling=YCbCr-4:2:0,depth=(string)8,width=(string)320,height=(string)240,payload=96"
  echo "+ (sender) gst-launch-1.0 videotestsrc is-live=true ! rtpvrawpay ! udpsink host=127.0.0.1 port=$port"
  gst-launch-1.0 -q videotestsrc is-live=true num-buffers=900 pattern=ball \
    ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
    ! rtpvrawpay ! udpsink host=127.0.0.1 port="$port" &
  local sender=$!
  launch udpsrc address=127.0.0.1 port="$port" caps="$caps" \
    ! rtpjitterbuffer latency=100 ! rtpvrawdepay ! identity eos-after=61 \
    ! frameanalyzer $S ! enrichpool workers=4 $S ! resequencer latency=1000000000 $S ! fakesink
  kill "$sender" 2>/dev/null || true
  wait "$sender" 2>/dev/null || true
}

# Eight live cameras in one gst-launch-1.0 line, on one shared pool of four workers (not
# eight pools of four): each camera keeps its own queue, order and stats.
shared() {
  local cams=()
  for i in 0 1 2 3 4 5 6 7; do
    cams+=(videotestsrc is-live=true num-buffers=60 pattern=ball
      ! video/x-raw,width=160,height=120,framerate=30/1
      ! enrichpool name=pool$i shared-pool=cams workers=4 $S
      ! resequencer name=reseq$i latency=1000000000 $S ! fakesink)
  done
  launch "${cams[@]}"
}

# OpenCV's facedetect (Debian: gstreamer1.0-opencv, opencv-data) on two workers, each with
# its own instance (`worker-bin`), the frames in order; a still portrait (FACE_IMAGE, default
# the test image) repeated for 30 frames. Prints how many frames came out with a face
# (facedetect's messages, posted from inside the instances on the pipeline's bus).
faces() {
  local face=${FACE_IMAGE:-$(dirname "$0")/../tests/data/astronaut.jpg}
  local args=(filesrc location="$face" ! jpegdec ! imagefreeze num-buffers=30 ! videoconvert
    ! enrichpool workers=2 worker-bin="videoconvert ! facedetect display=false ! videoconvert" $S
    ! resequencer $S ! fakesink)
  echo "+ gst-launch-1.0 ${args[*]}"
  local out
  out=$(gst-launch-1.0 -e -m "${args[@]}")
  last_stats <<<"$out"
  echo "frames with a face: $(grep -c 'element "facedetect.*faces=.*face' <<<"$out")"
}

# roundrobin into three branches of different speeds (3 ms a frame, none, 0.5 ms), back into
# the resequencer's request pads: an ordered funnel. Not live, in PTS order: the fast
# branches wait for the slow one, and every frame leaves, in order, none skipped.
branches() {
  launch videotestsrc num-buffers=200 pattern=ball ! video/x-raw,width=160,height=120 \
    ! roundrobin name=rr \
    rr.src_0 ! queue ! identity sleep-time=3000 ! r.sink_0 \
    rr.src_1 ! queue ! r.sink_1 \
    rr.src_2 ! queue ! identity sleep-time=500 ! r.sink_2 \
    resequencer name=r order-by=pts $S ! fakesink
}

# The results streamed out in order: metapublish sends one JSON record per frame (and per
# gap) to a local MQTT broker (mosquitto, started here on a free port), and
# examples/mqtt_consumer.py prints the detections as they arrive. Skipped without mosquitto
# (Debian: mosquitto) or paho-mqtt (python3-paho-mqtt).
mqtt() {
  local python=python3
  [[ -x /usr/bin/python3 ]] && python=/usr/bin/python3
  if ! command -v mosquitto >/dev/null || ! "$python" -c 'import paho.mqtt' 2>/dev/null; then
    echo "mqtt: skipped (needs mosquitto and python3-paho-mqtt)"
    return 0
  fi
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" >"$WORK/mosquitto.conf"
  mosquitto -c "$WORK/mosquitto.conf" 2>"$WORK/mosquitto.log" &
  local broker=$!
  local url=mqtt://127.0.0.1:$port/gst-ordered/demo
  local i
  for i in $(seq 100); do
    "$python" -c "import socket; socket.create_connection(('127.0.0.1', $port))" 2>/dev/null && break
    sleep 0.1
  done
  echo "+ examples/mqtt_consumer.py $url --until-eos"
  "$python" "$(dirname "$0")/mqtt_consumer.py" "$url" --until-eos >"$WORK/consumer.out" &
  local consumer=$!
  for i in $(seq 100); do
    grep -q '^subscribed' "$WORK/consumer.out" && break
    sleep 0.1
  done
  launch videotestsrc is-live=true num-buffers=60 pattern=ball \
    ! video/x-raw,width=320,height=240,framerate=30/1 \
    ! frameanalyzer $S ! enrichpool workers=4 $S ! resequencer latency=1000000000 $S \
    ! metapublish location="$url" mqtt-qos=1 $S ! fakesink
  # The consumer exits at the EOS record; not waiting for ever if it never comes.
  for i in $(seq 300); do
    kill -0 "$consumer" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$consumer" 2>/dev/null; then
    kill "$consumer" "$broker"
    echo "mqtt: the consumer got no EOS record within 30 s" >&2
    cat "$WORK/consumer.out" >&2
    return 1
  fi
  wait "$consumer"
  kill "$broker"
  wait "$broker" 2>/dev/null || true
  echo "consumer printed:"
  head -n 5 "$WORK/consumer.out"
  echo "..."
  tail -n 1 "$WORK/consumer.out"
}

# Remote enrichment on inference servers, frames in order, with the overlay.
servers() {
  if [[ -z ${SERVERS:-} ]]; then
    echo "servers: skipped (set SERVERS=grpc://host:port,...)"
    return 0
  fi
  launch videotestsrc is-live=true num-buffers=60 pattern=ball \
    ! video/x-raw,format=RGB,width=320,height=240,framerate=30/1 \
    ! frameanalyzer $S ! enrichpool workers=8 servers="$SERVERS" model="${MODEL:-frames}" \
    overlay=true $S ! resequencer latency=1000000000 $S ! videoconvert ! fakesink
}

# A two-stage cascade on inference servers: a detector (DETECTOR, default `frames`) on each
# frame, then a classifier (CLASSIFIER, default `frames`) on the crop of every box of type
# DETECTED (default `thing`, what the test model answers) it found: `infer-on=rois`, the
# crops of a frame in parallel. Each box gets its result as an `enrichment` param; what the
# classifier finds inside a crop becomes a box of its own with parent_id set.
cascade() {
  if [[ -z ${SERVERS:-} ]]; then
    echo "cascade: skipped (set SERVERS=grpc://host:port,...)"
    return 0
  fi
  launch videotestsrc is-live=true num-buffers=60 pattern=ball \
    ! video/x-raw,format=RGB,width=320,height=240,framerate=30/1 \
    ! enrichpool name=detector workers=4 servers="$SERVERS" model="${DETECTOR:-frames}" $S \
    ! enrichpool name=classifier workers=8 servers="$SERVERS" model="${CLASSIFIER:-frames}" \
    infer-on=rois roi-types="${DETECTED:-thing}" $S \
    ! resequencer latency=1000000000 $S ! fakesink
}

recipes=("$@")
((${#recipes[@]})) || recipes=(live file rtp shared faces branches mqtt servers cascade)
for recipe in "${recipes[@]}"; do
  case $recipe in
    live | file | rtp | shared | faces | branches | mqtt | servers | cascade) echo "== $recipe"; "$recipe" ;;
    *) echo "unknown recipe $recipe" >&2; exit 2 ;;
  esac
done
echo "recipes: ok"
