#!/usr/bin/env python3
"""A Python (PyGObject) application that runs its step on regions, not frames: frameanalyzer
finds where the picture moves, `enrichpool infer-on=rois` hands each motion region's crop to a
Python `process` handler (on the pool's workers, the crops of a frame in parallel), and the
application reads each region's result back at an appsink.

    GST_PLUGIN_PATH=<folder of libgstordered.so> python3 examples/python_rois.py [FRAMES]

The handler gets the crop as a buffer (rows packed, described by its GstVideoMeta) and
`outputs` already naming the region (`id`, `type`, `x`, `y`, `w`, `h`); what it adds comes
out in the region's `enrichment` param and in the `rois` array of the frame's EnrichmentMeta.
At the sink, every region's result is checked against the frame itself: the mean the handler
computed on the crop must be the mean of the frame's pixels in the region's rectangle. Exits
non-zero if a frame is missing, out of order, or a region's result is not its own.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstVideo", "1.0")
from gi.repository import Gst, GstVideo  # noqa: E402

WIDTH, HEIGHT = 320, 240


def custom(buffer, meta):
    m = buffer.get_custom_meta(meta)
    return None if m is None else m.get_structure()


def mean_of(data, stride, x, y, w, h, channels):
    total = 0
    for row in range(y, y + h):
        start = row * stride + x * channels
        total += sum(data[start:start + w * channels])
    return total / (w * h * channels)


def main():
    frames = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    Gst.init(None)
    pipeline = Gst.parse_launch(
        f"videotestsrc is-live=true num-buffers={frames} pattern=ball "
        f"! video/x-raw,format=RGB,width={WIDTH},height={HEIGHT},framerate=30/1 "
        "! frameanalyzer device=cpu "
        "! enrichpool name=pool workers=4 infer-on=rois roi-types=motion max-rois=8 "
        "! resequencer "
        "! appsink name=sink emit-signals=true sync=false"
    )

    # Runs once per motion region, on a worker thread: `buffer` is the region's crop.
    def on_process(_pool, crop, worker, outputs):
        vmeta = GstVideo.buffer_get_video_meta(crop)
        ok, info = crop.map(Gst.MapFlags.READ)
        if not ok:
            return False
        mean = mean_of(info.data, vmeta.stride[0], 0, 0, vmeta.width, vmeta.height, 3)
        crop.unmap(info)
        outputs.set_value("mean", mean)
        outputs.set_value("worker", worker)
        return True

    pipeline.get_by_name("pool").connect("process", on_process)

    seqs = []
    checked = [0]
    wrong = []

    def on_sample(sink):
        buffer = sink.emit("pull-sample").get_buffer()
        seq = custom(buffer, "OrderedSeqMeta").get_value("seq")
        seqs.append(seq)
        enrichment = custom(buffer, "EnrichmentMeta")
        if enrichment is None:
            return Gst.FlowReturn.OK  # no motion region: no step ran
        ok, info = buffer.map(Gst.MapFlags.READ)
        for roi in enrichment.get_value("rois"):
            # The region meta it names, and the result on it.
            meta = GstVideo.buffer_get_video_region_of_interest_meta_id(buffer, roi.get_value("id"))
            result = meta.get_param("enrichment")
            expected = mean_of(info.data, WIDTH * 3, meta.x, meta.y, meta.w, meta.h, 3)
            got = result.get_value("mean")
            if abs(got - expected) > 1e-6 or result.get_value("x") != meta.x:
                wrong.append((seq, roi.get_value("id"), got, expected))
            checked[0] += 1
            if seq % 20 == 0:
                print(f"frame {seq:3}  region {roi.get_value('id')} {roi.get_value('type')} "
                      f"at {meta.x},{meta.y} {meta.w}x{meta.h}: mean {got:6.2f} "
                      f"(worker {result.get_value('worker')})")
        buffer.unmap(info)
        return Gst.FlowReturn.OK

    pipeline.get_by_name("sink").connect("new-sample", on_sample)
    bus = pipeline.get_bus()
    pipeline.set_state(Gst.State.PLAYING)
    msg = bus.timed_pop_filtered(120 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    pipeline.set_state(Gst.State.NULL)
    if msg is None or msg.type == Gst.MessageType.ERROR:
        print(f"error: {msg.parse_error() if msg else 'timed out'}", file=sys.stderr)
        return 1
    if seqs != list(range(frames)):
        print(f"frames missing or out of order: {seqs}", file=sys.stderr)
        return 1
    if wrong or checked[0] == 0:
        print(f"regions whose result is not their own: {wrong}; checked {checked[0]}",
              file=sys.stderr)
        return 1
    print(f"{frames} frames in order; {checked[0]} regions, each with its own result")
    return 0


if __name__ == "__main__":
    sys.exit(main())
