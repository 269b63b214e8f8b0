//! enrichpool benchmarks. Within each, the cases run round by round (every case once per
//! round, the first one rotating), and each figure is the median of the rounds with their
//! spread (min–max); ratios are taken round by round.
//!
//! - scaling: a handler that waits 10 ms, N = 1, 8, 32, 64 workers; throughput as a fraction
//!   of the ideal N / 10 ms (`appsrc ! enrichpool ! resequencer ! fakesink`), timed from the
//!   first push to EOS (the pipeline is PLAYING and its workers started before);
//! - cpu: a handler that spins 1 ms of CPU, 2 workers against 1;
//! - overhead: `enrichpool ! resequencer` with an empty handler against `queue`;
//! - memory: RSS every 10 000 frames over one run of 1 000 000 (in a child process), and its
//!   slope over the second half.
//!
//! `cargo bench --bench enrichpool` runs all; `-- scaling|cpu|overhead|memory` one.

#[path = "../tests/common/launch.rs"]
mod launch;

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use gst::prelude::*;
use gstordered::EnrichPool;
use gstordered::enrichpool::Verdict;

fn init() {
    gst::init().unwrap();
    gstordered::plugin_register_static().unwrap();
}

fn frames(n: u64) -> Vec<gst::Buffer> {
    let frame = gst::ClockTime::from_mseconds(1);
    (0..n)
        .map(|i| {
            let mut b = gst::Buffer::with_size(64).unwrap();
            b.get_mut().unwrap().set_pts(frame * i);
            b
        })
        .collect()
}

/// Seconds to push `input` through `appsrc ! MIDDLE ! fakesink` to EOS. `setup` gets the
/// pipeline to install handlers.
fn run(middle: &str, input: Vec<gst::Buffer>, setup: impl FnOnce(&gst::Pipeline)) -> f64 {
    let pipeline = launch::pipeline(&format!(
        "appsrc name=src format=time max-bytes=0 max-buffers=0 caps=application/x-bench ! {middle} ! fakesink sync=false"
    ));
    setup(&pipeline);
    let secs = common::push_to_eos(&pipeline, input);
    if let Some(pool) = pipeline.by_name("pool") {
        let stats = pool.property::<gst::Structure>("stats");
        assert_eq!(
            stats.get::<u64>("dropped").unwrap(),
            0,
            "{middle}: frames were lost"
        );
    }
    pipeline.set_state(gst::State::Null).unwrap();
    secs
}

fn with_handler(f: impl Fn() + Send + Sync + 'static) -> impl FnOnce(&gst::Pipeline) {
    move |p| {
        let pool = p.by_name("pool").unwrap().downcast::<EnrichPool>().unwrap();
        pool.set_handler(move |_| {
            f();
            Ok(Verdict::Keep)
        });
    }
}

const ROUNDS: usize = 8;

fn scaling() {
    let wait = Duration::from_millis(10);
    let counts = [1u64, 8, 32, 64];
    println!(
        "\n### Scaling: handler waits 10 ms (appsrc ! enrichpool ! resequencer ! fakesink), \
         {ROUNDS} rounds, median (min–max)\n"
    );
    println!("| workers | frames | frames/s | ideal frames/s | efficiency |");
    println!("|---:|---:|---:|---:|---:|");
    let results = common::alternate(&counts, ROUNDS, |&n| {
        let middle = format!(
            "enrichpool name=pool workers={n} max-size-buffers={} ! resequencer",
            2 * n
        );
        let count = n * 30;
        let secs = run(
            &middle,
            frames(count),
            with_handler(move || std::thread::sleep(wait)),
        );
        count as f64 / secs
    });
    for (n, fps) in counts.iter().zip(&results) {
        let ideal = *n as f64 / wait.as_secs_f64();
        println!(
            "| {n} | {} | {} | {ideal:.0} | {} |",
            n * 30,
            fps.spread(|v| format!("{v:.0}")),
            fps.map(|v| 100.0 * v / ideal)
                .spread(|v| format!("{v:.1}%"))
        );
    }
    let at32 = results[2].map(|v| 100.0 * v / 3200.0);
    println!(
        "efficiency per round at 32: {}",
        at32.all(|v| format!("{v:.1}%"))
    );
}

fn spin(d: Duration) {
    let until = Instant::now() + d;
    let mut x = 0u64;
    while Instant::now() < until {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

fn cpu() {
    println!(
        "\n### CPU-bound: handler spins 1 ms, on this machine's cores, {ROUNDS} rounds, \
         median (min–max)\n"
    );
    println!("| workers | frames/s | speed-up (round by round) |");
    println!("|---:|---:|---:|");
    let count = 400;
    let results = common::alternate(&[1u64, 2], ROUNDS, |&n| {
        let middle = format!("enrichpool name=pool workers={n} ! resequencer");
        let secs = run(
            &middle,
            frames(count),
            with_handler(|| spin(Duration::from_millis(1))),
        );
        count as f64 / secs
    });
    for (n, fps) in [1, 2].iter().zip(&results) {
        println!(
            "| {n} | {} | {} |",
            fps.spread(|v| format!("{v:.0}")),
            fps.over(&results[0]).spread(|v| format!("{v:.2}×"))
        );
    }
}

fn overhead() {
    let rounds = 10;
    println!(
        "\n### Overhead: empty handler, against queue, {rounds} rounds, ns per buffer, median \
         (min–max)\n"
    );
    println!("| pipeline | ns/buffer | ratio (round by round) |");
    println!("|---|---:|---:|");
    let count = 30_000;
    let cases = ["queue", "enrichpool name=pool workers=2 ! resequencer"];
    run(cases[0], frames(1000), |_| ());
    run(cases[1], frames(1000), with_handler(|| ()));
    let results = common::alternate(&cases, rounds, |case| {
        let secs = if case.starts_with("queue") {
            run(case, frames(count), |_| ())
        } else {
            run(case, frames(count), with_handler(|| ()))
        };
        secs * 1e9 / count as f64
    });
    for (case, ns) in cases.iter().zip(&results) {
        println!(
            "| `{case}` | {} | {} |",
            ns.spread(|v| format!("{v:.0}")),
            ns.over(&results[0]).spread(|v| format!("{v:.2}×"))
        );
    }
    println!(
        "ratio per round: {}",
        results[1].over(&results[0]).all(|v| format!("{v:.2}"))
    );
}

/// Resident set size (kB) of this process now.
fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

const MEMORY_FRAMES: u64 = 1_000_000;
const MEMORY_EVERY: u64 = 10_000;

/// Child mode: streams `MEMORY_FRAMES` 320×240 frames through `enrichpool ! resequencer`
/// and prints `frames rss_kb` every `MEMORY_EVERY` frames at the sink.
fn memory_child() {
    init();
    let pipeline = launch::pipeline(&format!(
        "videotestsrc num-buffers={MEMORY_FRAMES} pattern=ball \
         ! video/x-raw,width=320,height=240,framerate=1000/1 \
         ! enrichpool name=pool workers=2 ! resequencer name=reseq ! fakesink name=sink sync=false"
    ));
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .static_pad("sink")
        .unwrap();
    let seen = std::sync::atomic::AtomicU64::new(0);
    sink.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        let seen = seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if seen.is_multiple_of(MEMORY_EVERY) {
            println!("{seen} {}", rss_kb());
        }
        gst::PadProbeReturn::Ok
    });
    pipeline.set_state(gst::State::Playing).unwrap();
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(3600),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .unwrap();
    if let gst::MessageView::Error(e) = msg.view() {
        panic!("{}", e.error());
    }
    pipeline.set_state(gst::State::Null).unwrap();
}

/// Least-squares slope of y over x.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let cov: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let var: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    cov / var
}

fn memory() {
    println!(
        "\n### Memory: RSS while streaming {MEMORY_FRAMES} 320×240 frames (one run, its own \
         process, sampled every {MEMORY_EVERY} frames at the sink)\n"
    );
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(&exe)
        .arg("--memory-child")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: Vec<(f64, f64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (f, kb) = l.split_once(' ').unwrap();
            (f.parse().unwrap(), kb.parse().unwrap())
        })
        .collect();
    println!("| frames | RSS (kB) |");
    println!("|---:|---:|");
    for (frames, kb) in samples
        .iter()
        .filter(|s| (s.0 as u64).is_multiple_of(100_000))
    {
        println!("| {frames:.0} | {kb:.0} |");
    }
    let second_half: Vec<(f64, f64)> = samples
        .iter()
        .copied()
        .filter(|s| s.0 > MEMORY_FRAMES as f64 / 2.0)
        .collect();
    let steady = common::Rounds(second_half.iter().map(|s| s.1).collect());
    println!(
        "\nsecond half ({} samples): RSS {} kB; slope {:+.1} kB per 100 000 frames",
        second_half.len(),
        steady.spread(|v| format!("{v:.0}")),
        slope(&second_half) * 100_000.0
    );
    let first = common::Rounds(
        samples
            .iter()
            .filter(|s| s.0 <= MEMORY_FRAMES as f64 / 2.0)
            .map(|s| s.1)
            .collect(),
    );
    println!("first half: RSS {} kB", first.spread(|v| format!("{v:.0}")));
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.iter().any(|a| a == "--memory-child") {
        memory_child();
        return;
    }
    init();
    let all = args.is_empty();
    let want = |name: &str| all || args.iter().any(|a| a == name);
    if want("scaling") {
        scaling();
    }
    if want("cpu") {
        cpu();
    }
    if want("overhead") {
        overhead();
    }
    if want("memory") {
        memory();
    }
}
