//! `metapublish`: what writing every frame's record to a file costs, per frame, after the
//! resequencer. Cases alternating round by round (the first rotating), median and spread
//! (min–max) of the rounds, and of the per-round differences.
//!
//! The frames: 64×48 GRAY8 (the pixels do not matter to it), each with the metas of a
//! typical frame of the demo: OrderedSeqMeta, FrameAnalysisMeta, an EnrichmentMeta with four
//! outputs (an integer, a string, an array, a float) and two regions of interest with a
//! `detection` param each: a record of about 800 bytes. Made once, before the rounds.
//!
//! `paced`: 3000 frames at 1000 frames/s (`identity sync=true` on the pipeline clock: 3 s a
//! round) through `resequencer ! identity name=m` (`none`) and
//! `resequencer ! metapublish name=m location=FILE` (`b20`: batch-interval 20 ms; `file`:
//! the default, 50 ms; `each`: 0, a wake-up per record), into a fakesink. Per round and
//! per frame: the CPU time of all the process's threads (each thread's run time from
//! /proc/self/task/*/schedstat, before PLAYING to EOS); the time inside the element `m`
//! (its sink pad's probe to its src pad's, on the streaming thread); the CPU time of the
//! publisher thread (`ordered-publish`). The cost of metapublish, round by round: inside
//! less `none`'s inside (what a no-op transform costs there), plus the publisher thread;
//! and, noisier, all the CPU time less `none`'s.
//!
//! `flood`: 20000 frames pushed as fast as the pipeline takes them, the same cases, the same
//! figures, and the wall time from the first push to EOS.
//!
//! `format`: the record alone, from the metas to JSON text, 200000 times a round.
//!
//! `cargo bench --bench metapublish [format] [paced] [flood]`.

#[path = "common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Rounds, alternate, wanted};
use gst::prelude::*;
use gstordered::meta::{AnalysisLabel, Enrichment, FrameAnalysis, SeqMeta};

const CAPS: &str = "video/x-raw,format=GRAY8,width=64,height=48,framerate=1000/1";

fn frames(n: u64) -> Vec<gst::Buffer> {
    (0..n)
        .map(|i| {
            let mut buffer = gst::Buffer::with_size(64 * 48).unwrap();
            let b = buffer.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_mseconds(i));
            b.set_duration(gst::ClockTime::from_mseconds(1));
            SeqMeta {
                seq: i,
                epoch: 0,
                ingress: i * 1_000_000,
            }
            .add(b);
            FrameAnalysis {
                luma_mean: 97.25 + (i % 7) as f64,
                luma_stddev: 31.5,
                motion: 0.125,
                scene_change: 0.0625,
                sharpness: 412.0 / (1 + i % 5) as f64,
                label: AnalysisLabel::Motion,
                backend: "cpu".into(),
            }
            .add(b);
            Enrichment {
                worker: (i % 4) as u32,
                server: String::new(),
                attempts: 1,
                processing_time: 12_345_678,
                outputs: gst::Structure::builder("outputs")
                    .field("detections", 2i32)
                    .field("model", "detector-v3")
                    .field("scores", gst::Array::new([0.91f64, 0.47]))
                    .field("mean-confidence", 0.69f64)
                    .build(),
            }
            .add(b)
            .unwrap();
            for (k, rect) in [(10, 12, 20, 18), (40, 5, 16, 30)].into_iter().enumerate() {
                let mut roi = gst_video::VideoRegionOfInterestMeta::add(b, "ball", rect);
                roi.set_id(k as i32 + 1);
                roi.add_param(
                    gst::Structure::builder("detection")
                        .field("class", "ball")
                        .field("confidence", 0.91f64 - k as f64 * 0.44)
                        .build(),
                );
            }
            buffer
        })
        .collect()
}

/// Run time (ns) and name of each of the process's threads.
fn thread_times() -> HashMap<u32, (String, u64)> {
    let mut times = HashMap::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(tid) = task.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if let Ok(s) = std::fs::read_to_string(task.path().join("schedstat"))
            && let Some(ns) = s.split_whitespace().next().and_then(|v| v.parse().ok())
        {
            times.insert(tid, (name.trim().to_owned(), ns));
        }
    }
    times
}

/// What a round measured, per frame in µs.
#[derive(Default)]
struct Round {
    /// From the first push to EOS.
    wall: f64,
    /// All the process's threads.
    cpu: f64,
    /// The streaming thread inside metapublish (its sink pad to its src pad).
    inside: f64,
    /// The publisher thread (`ordered-publish`).
    publisher: f64,
}

fn round(middle: &str, frames: &[gst::Buffer], file: &std::path::Path) -> Round {
    let middle = middle.replace("FILE", &file.display().to_string());
    let p = gst::parse::launch(&format!(
        "appsrc name=src format=time caps={CAPS} ! {middle} ! fakesink sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    // Time inside the element: the sink pad's probe runs just before its chain, the src
    // pad's just as it pushes; the same thread, one frame at a time.
    let inside = Arc::new(Mutex::new((None::<Instant>, Duration::ZERO)));
    if let Some(publish) = p.by_name("m") {
        let i = inside.clone();
        publish
            .static_pad("sink")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                i.lock().unwrap().0 = Some(Instant::now());
                gst::PadProbeReturn::Ok
            });
        let i = inside.clone();
        publish
            .static_pad("src")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                let mut i = i.lock().unwrap();
                if let Some(start) = i.0.take() {
                    i.1 += start.elapsed();
                }
                gst::PadProbeReturn::Ok
            });
    }
    let before = thread_times();
    let seconds = common::push_to_eos(&p, frames.iter().cloned());
    let after = thread_times();
    p.set_state(gst::State::Null).unwrap();
    let spent = |tid: &u32, ns: u64| ns.saturating_sub(before.get(tid).map_or(0, |b| b.1));
    let cpu: u64 = after.iter().map(|(tid, (_, ns))| spent(tid, *ns)).sum();
    let publisher: u64 = after
        .iter()
        .filter(|(_, (name, _))| name == "ordered-publish")
        .map(|(tid, (_, ns))| spent(tid, *ns))
        .sum();
    let n = frames.len() as f64;
    let inside = inside.lock().unwrap().1;
    Round {
        wall: seconds * 1e6 / n,
        cpu: cpu as f64 / 1e3 / n,
        inside: inside.as_secs_f64() * 1e6 / n,
        publisher: publisher as f64 / 1e3 / n,
    }
}

fn main() {
    gst::init().unwrap();
    gstordered::plugin_register_static().unwrap();
    let wanted = wanted();
    let file = std::env::temp_dir().join(format!("metapublish-bench-{}.jsonl", std::process::id()));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if wanted("format") {
        // The record alone, made on the streaming thread: from the metas to JSON text.
        let frames = frames(1);
        let b = frames[0].as_ref();
        let seq = SeqMeta::read(b).unwrap().unwrap();
        let times = gstordered::metapublish::record::FrameTimes {
            pts: Some(0),
            dts: None,
            duration: Some(1_000_000),
            running_time: Some(0),
        };
        let mut writer = gstordered::metapublish::record::Writer::default();
        let n = 200_000;
        let mut per = Rounds::default();
        for _ in 0..7 {
            let start = Instant::now();
            let mut bytes = 0;
            for _ in 0..n {
                bytes += writer.frame(b, Some(&seq), &times).len();
            }
            std::hint::black_box(bytes);
            per.0.push(start.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
        println!(
            "format: one frame's record, {n} times per round, 7 rounds: {} µs/record",
            per.spread(|v| format!("{v:.2}"))
        );
    }
    let parts: [(&str, u64, &str, usize); 2] = [
        ("paced", 3000, "identity sync=true ! ", 8),
        ("flood", 20000, "", 8),
    ];
    for (part, n, pace, rounds) in parts {
        if !wanted(part) {
            continue;
        }
        let frames = frames(n);
        let cases = [
            ("none", format!("{pace}resequencer ! identity name=m")),
            (
                "b20",
                format!(
                    "{pace}resequencer ! metapublish name=m location=FILE batch-interval=20000000"
                ),
            ),
            (
                "file",
                format!("{pace}resequencer ! metapublish name=m location=FILE"),
            ),
            (
                "each",
                format!("{pace}resequencer ! metapublish name=m location=FILE batch-interval=0"),
            ),
        ];
        // One warm-up of each, not counted.
        for (_, middle) in &cases {
            round(middle, &frames[..500.min(frames.len())], &file);
        }
        let mut results: Vec<Vec<Round>> = (0..cases.len()).map(|_| Vec::new()).collect();
        alternate(&cases, rounds, |(name, middle)| {
            let r = round(middle, &frames, &file);
            results[cases.iter().position(|c| c.0 == *name).unwrap()].push(r);
            0.0
        });
        let of = |case: usize, f: fn(&Round) -> f64| Rounds(results[case].iter().map(f).collect());
        let diff =
            |a: &Rounds, b: &Rounds| Rounds(a.0.iter().zip(&b.0).map(|(x, y)| x - y).collect());
        let record = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| t.lines().next().map(str::len))
            .unwrap_or(0);
        println!(
            "{part}: {n} frames {}, records of {record} bytes, {rounds} rounds, {cores} cores",
            if pace.is_empty() {
                "as fast as they go"
            } else {
                "at 1000 frames/s"
            }
        );
        let f = |v: f64| format!("{v:.2}");
        for (i, (name, middle)) in cases.iter().enumerate() {
            println!(
                "  {name:4}  wall {}  CPU {}  inside {}  publisher {} µs/frame   ({middle})",
                of(i, |r| r.wall).spread(f),
                of(i, |r| r.cpu).spread(f),
                of(i, |r| r.inside).spread(f),
                of(i, |r| r.publisher).spread(f),
            );
        }
        for (i, name) in [(1, "b20"), (2, "file"), (3, "each")] {
            // Inside metapublish, less what a no-op transform (identity) costs there.
            let cost = Rounds(
                results[i]
                    .iter()
                    .zip(&results[0])
                    .map(|(r, none)| r.inside - none.inside + r.publisher)
                    .collect(),
            );
            println!(
                "  {name}: inside + publisher {} µs/frame; CPU {name} - none {} µs/frame   rounds: {}",
                cost.spread(f),
                diff(&of(i, |r| r.cpu), &of(0, |r| r.cpu)).spread(f),
                cost.all(f)
            );
        }
    }
    let _ = std::fs::remove_file(&file);
}
