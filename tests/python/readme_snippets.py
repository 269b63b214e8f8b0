"""README's Python snippets, run as they are (tests/readme.rs checks README still shows them
word for word): the `process` signal handler, and reading the stats from the bus. Exits
non-zero on any failure; prints `readme snippets: ok` at the end."""

import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

FRAMES = 20


def run_my_model(frame):
    """The model the snippet calls: the frame's size, as a float."""
    return float(frame.get_size())


def main():
    Gst.init(None)
    pipeline = Gst.parse_launch(
        f"videotestsrc num-buffers={FRAMES} ! video/x-raw,width=32,height=24 "
        "! enrichpool name=pool workers=2 stats-interval=3600000000000 "
        "! resequencer ! appsink name=sink emit-signals=true sync=false"
    )
    pool = pipeline.get_by_name("pool")
    seqs = []

    # README, "The enrichment step":
    def on_process(pool, frame, worker, outputs):
        seq = frame.get_custom_meta("OrderedSeqMeta").get_structure().get_value("seq")
        outputs.set_value("score", run_my_model(frame))
        return True

    pool.connect("process", on_process)

    scores = []

    def on_sample(sink):
        buffer = sink.emit("pull-sample").get_buffer()
        meta = buffer.get_custom_meta("EnrichmentMeta")
        scores.append(meta.get_structure().get_value("score"))
        seqs.append(buffer.get_custom_meta("OrderedSeqMeta").get_structure().get_value("seq"))
        return Gst.FlowReturn.OK

    pipeline.get_by_name("sink").connect("new-sample", on_sample)
    pipeline.set_state(Gst.State.PLAYING)
    bus = pipeline.get_bus()
    in_flight = None
    while True:
        # README, "Stats from an application":
        msg = bus.timed_pop(Gst.CLOCK_TIME_NONE)
        if msg.type == Gst.MessageType.ELEMENT and msg.get_structure().get_name() == "enrichpool-stats":
            print(msg.get_structure().get_value("in-flight"))
            in_flight = msg.get_structure().get_value("in-flight")
        if msg.type in (Gst.MessageType.EOS, Gst.MessageType.ERROR):
            break
    pipeline.set_state(Gst.State.NULL)
    if msg.type == Gst.MessageType.ERROR:
        sys.exit(f"pipeline error: {msg.parse_error()}")
    if seqs != list(range(FRAMES)) or len(set(scores)) != 1 or scores[0] <= 0:
        sys.exit(f"wrong results: seqs {seqs}, scores {scores}")
    if in_flight != 0:
        sys.exit(f"the stats message at EOS says {in_flight} in flight")
    print("readme snippets: ok")


if __name__ == "__main__":
    main()
