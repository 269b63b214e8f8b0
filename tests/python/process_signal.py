"""A Python (PyGObject) application using enrichpool's `process` signal.

Connects a handler that attaches a result per frame (through the `outputs` structure) and
sleeps a little so that workers finish out of order, runs a live pipeline through
enrichpool ! resequencer, and checks at an appsink that every frame came back in order with
its own result. Exits non-zero on any failure.
"""

import random
import sys
import time

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

FRAMES = 60


def seq_of(buffer):
    meta = buffer.get_custom_meta("OrderedSeqMeta")
    return meta.get_structure().get_value("seq")


def main():
    Gst.init(None)
    pipeline = Gst.parse_launch(
        f"videotestsrc is-live=true num-buffers={FRAMES} "
        "! video/x-raw,width=64,height=48,framerate=100/1 "
        "! enrichpool name=pool workers=4 "
        "! resequencer name=reseq latency=2000000000 "
        "! appsink name=sink emit-signals=true sync=false"
    )
    pool = pipeline.get_by_name("pool")
    rng = random.Random(5)

    def on_process(_pool, buffer, worker, outputs):
        seq = seq_of(buffer)
        time.sleep(rng.uniform(0, 0.02))
        outputs.set_value("label", f"frame-{seq}")
        outputs.set_value("square", seq * seq)
        return True

    pool.connect("process", on_process)

    received = []

    def on_sample(sink):
        sample = sink.emit("pull-sample")
        buffer = sample.get_buffer()
        enrichment = buffer.get_custom_meta("EnrichmentMeta").get_structure()
        received.append(
            (
                seq_of(buffer),
                enrichment.get_value("label"),
                enrichment.get_value("square"),
                enrichment.get_value("worker"),
            )
        )
        return Gst.FlowReturn.OK

    pipeline.get_by_name("sink").connect("new-sample", on_sample)
    pipeline.set_state(Gst.State.PLAYING)
    msg = pipeline.get_bus().timed_pop_filtered(
        60 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR
    )
    reseq_stats = pipeline.get_by_name("reseq").get_property("stats")
    pipeline.set_state(Gst.State.NULL)

    if msg is None or msg.type != Gst.MessageType.EOS:
        err = msg.parse_error() if msg else "timeout"
        print(f"pipeline failed: {err}", file=sys.stderr)
        return 1
    seqs = [r[0] for r in received]
    if seqs != list(range(FRAMES)):
        print(f"frames out of order or missing: {seqs}", file=sys.stderr)
        return 1
    for seq, label, square, worker in received:
        if label != f"frame-{seq}" or square != seq * seq or not 0 <= worker < 4:
            print(f"wrong result on frame {seq}: {label} {square} {worker}", file=sys.stderr)
            return 1
    reordered = reseq_stats.get_value("reordered")
    if reordered == 0:
        print("workers never finished out of order", file=sys.stderr)
        return 1
    print(f"{FRAMES} frames in order with their results; {reordered} reordered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
