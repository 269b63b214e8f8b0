#!/usr/bin/env python3
"""Times whole gst-launch-1.0 processes, the way a user would, side by side (issue 12).

Each pipeline pushes the same 200 000 GRAY8 8x8 buffers from `videotestsrc` (framerate
10000/1) into `fakesink`, with something between them. Rounds run every case once, the
first case rotating; reported per case: wall time and CPU time (user + system) as median
(min–max) of the rounds, what each adds per buffer over the bare pipeline, and ratios taken
round by round against `identity` and `queue`.

    scripts/launch-bench.py [--rounds N] [--buffers N]

Uses the plugin in GST_PLUGIN_PATH (default: build/target/release, `cargo build --release`).
"""

import argparse
import os
import resource
import statistics
import subprocess
import time

CASES = [
    ("nothing", ""),
    ("identity", "identity"),
    ("queue", "queue"),
    ("resequencer (PTS, in order)", "resequencer"),
    ("enrichpool workers=2 ! resequencer", "enrichpool workers=2 ! resequencer"),
]


def pipeline(middle, buffers):
    src = (f"videotestsrc num-buffers={buffers} "
           "! video/x-raw,format=GRAY8,width=8,height=8,framerate=10000/1")
    parts = [src] + ([middle] if middle else []) + ["fakesink"]
    return " ! ".join(parts)


def run(description):
    """(wall s, cpu s) of one gst-launch-1.0 process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    subprocess.run(["gst-launch-1.0", "-q"] + description.split(), check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def spread(values, fmt):
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}–{fmt(max(values))})"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--buffers", type=int, default=200_000)
    args = parser.parse_args()
    os.environ.setdefault("GST_PLUGIN_PATH", "build/target/release")
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    descriptions = [pipeline(middle, args.buffers) for _, middle in CASES]
    for d in descriptions:  # warm-up: the registry, the page cache
        run(d)
    wall = [[] for _ in CASES]
    cpu = [[] for _ in CASES]
    for r in range(args.rounds):
        for i in range(len(CASES)):
            case = (r + i) % len(CASES)
            w, c = run(descriptions[case])
            wall[case].append(w)
            cpu[case].append(c)
    print(f"{args.buffers} buffers, {args.rounds} rounds (the first case rotating); "
          "median (min–max)")
    print("| between source and fakesink | wall (s) | CPU (s) | added per buffer (µs, wall) "
          "| wall vs identity | wall vs queue | CPU vs queue |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    base = statistics.median(wall[0])
    ratio = lambda a, b: [x / y for x, y in zip(a, b)]
    for i, (name, _) in enumerate(CASES):
        added = (statistics.median(wall[i]) - base) / args.buffers * 1e6
        print(f"| {name} | {spread(wall[i], lambda v: f'{v:.2f}')} "
              f"| {spread(cpu[i], lambda v: f'{v:.2f}')} | {added:.2f} "
              f"| {spread(ratio(wall[i], wall[1]), lambda v: f'{v:.2f}×')} "
              f"| {spread(ratio(wall[i], wall[2]), lambda v: f'{v:.2f}×')} "
              f"| {spread(ratio(cpu[i], cpu[2]), lambda v: f'{v:.2f}×')} |")
    print("\nThe pipelines, to time by hand:")
    for d in descriptions:
        print(f"    gst-launch-1.0 -q {d}")


if __name__ == "__main__":
    main()
