#!/usr/bin/env python3
"""A Python (PyGObject) application: the same pipeline as examples/rust_app.rs, with the
enrichment in Python through enrichpool's `process` signal.

    GST_PLUGIN_PATH=<folder of libgstordered.so> python3 examples/python_app.py [FRAMES]

Reads every frame's metas (FrameAnalysisMeta, EnrichmentMeta, ROI metas) at an appsink and
prints them, prints the elements' stats messages, and exits non-zero if a frame is missing,
out of order or without its results.
"""

import sys
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstVideo", "1.0")
from gi.repository import Gst, GstVideo  # noqa: E402


def field(buffer, meta, name):
    m = buffer.get_custom_meta(meta)
    return None if m is None else m.get_structure().get_value(name)


def main():
    frames = int(sys.argv[1]) if len(sys.argv) > 1 else 90
    Gst.init(None)
    pipeline = Gst.parse_launch(
        f"videotestsrc is-live=true num-buffers={frames} pattern=ball "
        "! video/x-raw,format=RGBA,width=320,height=240,framerate=30/1 "
        "! frameanalyzer device=cpu "
        "! enrichpool name=pool workers=4 stats-interval=1000000000 "
        "! resequencer name=reseq stats-interval=1000000000 "
        "! appsink name=sink emit-signals=true sync=false"
    )

    # The enrichment runs on the pool's worker threads: results go into `outputs`, which
    # comes out as fields of the frame's EnrichmentMeta.
    def on_process(_pool, buffer, worker, outputs):
        ok, info = buffer.map(Gst.MapFlags.READ)
        if not ok:
            return False
        red = info.data[0::4]
        mean = sum(red) / len(red)
        buffer.unmap(info)
        time.sleep(0.005 + (int(mean) % 7) * 0.003)
        outputs.set_value("red-mean", mean)
        outputs.set_value("worker-name", f"python-{worker}")
        return True

    pipeline.get_by_name("pool").connect("process", on_process)

    seen = []

    def on_sample(sink):
        buffer = sink.emit("pull-sample").get_buffer()
        seq = field(buffer, "OrderedSeqMeta", "seq")
        label = field(buffer, "FrameAnalysisMeta", "label")
        red = field(buffer, "EnrichmentMeta", "red-mean")
        rois = buffer.get_n_meta(GstVideo.VideoRegionOfInterestMeta.get_info().api)
        print(f"frame {seq:3}  label {label:9}  rois {rois}  red-mean {red:6.2f}  worker "
              f"{field(buffer, 'EnrichmentMeta', 'worker-name')}")
        seen.append((seq, label is not None, red is not None))
        return Gst.FlowReturn.OK

    pipeline.get_by_name("sink").connect("new-sample", on_sample)
    bus = pipeline.get_bus()
    pipeline.set_state(Gst.State.PLAYING)
    result = 0
    while True:
        msg = bus.timed_pop(120 * Gst.SECOND)
        if msg is None:
            print("timed out", file=sys.stderr)
            result = 1
            break
        if msg.type == Gst.MessageType.ELEMENT:
            s = msg.get_structure()
            if s.get_name() == "enrichpool-stats":
                print(f"stats: enrichpool in {s.get_value('in')} pushed {s.get_value('pushed')} "
                      f"dropped {s.get_value('dropped')}")
            elif s.get_name() == "resequencer-stats":
                print(f"stats: resequencer pushed {s.get_value('pushed')} reordered "
                      f"{s.get_value('reordered')} latency p50 "
                      f"{s.get_value('latency-p50') // 1000000} ms")
        elif msg.type == Gst.MessageType.EOS:
            break
        elif msg.type == Gst.MessageType.ERROR:
            print(f"error: {msg.parse_error()}", file=sys.stderr)
            result = 1
            break
    pipeline.set_state(Gst.State.NULL)
    if result:
        return result
    expected = [(i, True, True) for i in range(frames)]
    if seen != expected:
        print(f"frames missing, out of order or without metas: {seen}", file=sys.stderr)
        return 1
    print(f"{frames} frames in order, each with its analysis and enrichment")
    return 0


if __name__ == "__main__":
    sys.exit(main())
