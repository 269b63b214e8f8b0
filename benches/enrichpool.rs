//! enrichpool benchmarks. Within each, the cases run round by round (every case once per
//! round, the first one rotating), and each figure is the median of the rounds with their
//! spread (min–max); ratios are taken round by round.
//!
//! - scaling: a handler that waits 10 ms, N = 1, 8, 32, 64, 256 workers, bound 30 + N (the
//!   article's), 100 frames per worker; throughput as a fraction of the ideal N / 10 ms
//!   (`appsrc ! enrichpool ! resequencer ! fakesink`), timed from setting the pipeline PLAYING
//!   to EOS: the start-up (N worker threads starting) is included; and against the ideal
//!   with the handler's own measured time (a 10 ms sleep takes a little longer);
//! - cpu: a handler that spins 1 ms of CPU, 2 workers against 1;
//! - overhead: `enrichpool ! resequencer` with an empty handler against `queue`;
//! - memory: RSS every 10 000 frames over one run of 1 000 000 (in a child process), and its
//!   slope over the second half;
//! - latency: a live 30 fps source, `enrichpool workers=4` with a 20 ms handler,
//!   `resequencer`, `fakesink sync=true`: end-to-end latency at the sink (from the frame's
//!   `ingress` to the sink's clock when it renders) against the handler's own time.
//!
//! `cargo bench --bench enrichpool` runs all; `-- scaling|cpu|overhead|memory|latency` one.

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
    run_timed(middle, input, setup, false)
}

/// As [`run`], timed from PLAYING (`start_up`) or from the first push.
fn run_timed(
    middle: &str,
    input: Vec<gst::Buffer>,
    setup: impl FnOnce(&gst::Pipeline),
    start_up: bool,
) -> f64 {
    let pipeline = launch::pipeline(&format!(
        "appsrc name=src format=time max-bytes=0 max-buffers=0 caps=application/x-bench ! {middle} ! fakesink sync=false"
    ));
    setup(&pipeline);
    let secs = if start_up {
        common::start_push_to_eos(&pipeline, input)
    } else {
        common::push_to_eos(&pipeline, input)
    };
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

/// Frames per worker in the scaling runs: about a second of 10 ms waits.
const PER_WORKER: u64 = 100;

fn scaling() {
    let wait = Duration::from_millis(10);
    let counts = [1u64, 8, 32, 64, 256];
    // Five rounds of five cases: each case runs in each position once.
    let rounds = 5;
    println!(
        "\n### Scaling: handler waits 10 ms (appsrc ! enrichpool max-size-buffers=30+N ! \
         resequencer ! fakesink), {PER_WORKER} frames per worker, timed from PLAYING (start-up \
         included), {rounds} rounds, median (min–max)\n"
    );
    println!(
        "| workers | frames | frames/s | ideal frames/s | efficiency | the handler's own time \
         (ms) | efficiency against it |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let slept = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let handler_ms = std::cell::RefCell::new(vec![Vec::new(); counts.len()]);
    let results = common::alternate(&counts, rounds, |&n| {
        let middle = format!(
            "enrichpool name=pool workers={n} max-size-buffers={} ! resequencer",
            30 + n
        );
        let count = n * PER_WORKER;
        let s = slept.clone();
        let secs = run_timed(
            &middle,
            frames(count),
            with_handler(move || {
                let start = Instant::now();
                std::thread::sleep(wait);
                let ns = start.elapsed().as_nanos() as u64;
                s.fetch_add(ns, std::sync::atomic::Ordering::Relaxed);
            }),
            true,
        );
        let total = slept.swap(0, std::sync::atomic::Ordering::Relaxed);
        let i = counts.iter().position(|&c| c == n).unwrap();
        handler_ms.borrow_mut()[i].push(total as f64 / count as f64 / 1e6);
        count as f64 / secs
    });
    for ((n, fps), own) in counts.iter().zip(&results).zip(handler_ms.borrow().iter()) {
        let ideal = *n as f64 / wait.as_secs_f64();
        let own = common::Rounds(own.clone());
        let against_own = common::Rounds(
            fps.0
                .iter()
                .zip(&own.0)
                .map(|(fps, ms)| 100.0 * fps / (*n as f64 * 1000.0 / ms))
                .collect(),
        );
        println!(
            "| {n} | {} | {} | {ideal:.0} | {} | {} | {} |",
            n * PER_WORKER,
            fps.spread(|v| format!("{v:.0}")),
            fps.map(|v| 100.0 * v / ideal)
                .spread(|v| format!("{v:.1}%")),
            own.spread(|v| format!("{v:.2}")),
            against_own.spread(|v| format!("{v:.1}%")),
        );
    }
    for (i, n) in counts.iter().enumerate().skip(2) {
        let ideal = *n as f64 / wait.as_secs_f64();
        let efficiency = results[i].map(|v| 100.0 * v / ideal);
        println!(
            "efficiency per round at {n}: {}",
            efficiency.all(|v| format!("{v:.1}%"))
        );
    }
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

/// Nearest-rank percentile `p` of `values` (sorted here).
fn percentile(values: &mut [f64], p: usize) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rank = (values.len() * p).div_ceil(100).max(1);
    values[rank - 1]
}

/// One live run: (end-to-end p50, p99, max, the handler's p99, the source's own latency),
/// in ms.
fn live_run(resequencer: &str, frames: u64) -> [f64; 5] {
    let pipeline = launch::pipeline(&format!(
        "videotestsrc name=src is-live=true num-buffers={frames} \
         ! video/x-raw,format=GRAY8,width=64,height=48,framerate=30/1 \
         ! enrichpool name=pool workers=4 ! {resequencer} \
         ! fakesink name=sink sync=true processing-deadline=0 signal-handoffs=true"
    ));
    let handler_ms = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let pool = pipeline
        .by_name("pool")
        .unwrap()
        .downcast::<EnrichPool>()
        .unwrap();
    let h = handler_ms.clone();
    pool.set_handler(move |_| {
        let start = Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        h.lock()
            .unwrap()
            .push(start.elapsed().as_secs_f64() * 1000.0);
        Ok(Verdict::Keep)
    });
    let e2e_ms = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let e = e2e_ms.clone();
    pipeline
        .by_name("sink")
        .unwrap()
        .connect("handoff", false, move |args| {
            let sink = args[0].get::<gst::Element>().unwrap();
            let buffer = args[1].get::<gst::Buffer>().unwrap();
            let ingress = gstordered::meta::SeqMeta::read(&buffer)
                .and_then(|m| m.ok())
                .map(|m| m.ingress);
            if let (Some(now), Some(ingress)) = (sink.current_running_time(), ingress) {
                let ms = now.nseconds().saturating_sub(ingress) as f64 / 1e6;
                e.lock().unwrap().push(ms);
            }
            None
        });
    pipeline.set_state(gst::State::Playing).unwrap();
    common::wait_eos(&pipeline, 120);
    let mut query = gst::query::Latency::new();
    let src = pipeline.by_name("src").unwrap();
    assert!(src.static_pad("src").unwrap().query(&mut query));
    let source_ms = query.result().1.nseconds() as f64 / 1e6;
    pipeline.set_state(gst::State::Null).unwrap();
    let mut e2e = std::mem::take(&mut *e2e_ms.lock().unwrap());
    let mut handler = std::mem::take(&mut *handler_ms.lock().unwrap());
    assert_eq!(
        e2e.len() as u64,
        frames,
        "{resequencer}: every frame reached the sink"
    );
    [
        percentile(&mut e2e, 50),
        percentile(&mut e2e, 99),
        percentile(&mut e2e, 100),
        percentile(&mut handler, 99),
        source_ms,
    ]
}

fn latency() {
    let frames = 150;
    let interval_ms = 1000.0 / 30.0;
    let cases = [
        ("`resequencer` (latency automatic)", "resequencer"),
        (
            "`resequencer latency=200000000` (fixed, as the old default)",
            "resequencer latency=200000000",
        ),
    ];
    let rounds = 4;
    println!(
        "\n### Live latency: videotestsrc is-live=true 30 fps ! enrichpool workers=4 (20 ms \
         handler) ! RESEQUENCER ! fakesink sync=true processing-deadline=0, {frames} frames a \
         run, {rounds} rounds, median (min–max) of the runs' figures; end-to-end = the sink's \
         running time at render minus the frame's ingress; ours = that minus the source's own \
         latency\n"
    );
    let figures = std::cell::RefCell::new(vec![Vec::new(); cases.len()]);
    common::alternate(&(0..cases.len()).collect::<Vec<_>>(), rounds, |&i| {
        let run = live_run(cases[i].1, frames);
        figures.borrow_mut()[i].push(run);
        run[1]
    });
    println!(
        "| resequencer | end-to-end p50 (ms) | end-to-end p99 (ms) | end-to-end max (ms) | \
         source's latency (ms) | ours: p99 − source (ms) | handler p99 (ms) | target: ours ≤ \
         handler p99 + {interval_ms:.1} ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    for ((name, _), runs) in cases.iter().zip(figures.borrow().iter()) {
        let col = |k: usize| common::Rounds(runs.iter().map(|r| r[k]).collect());
        let ours = common::Rounds(runs.iter().map(|r| r[1] - r[4]).collect());
        let met = runs
            .iter()
            .filter(|r| r[1] - r[4] <= r[3] + interval_ms)
            .count();
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | met in {met} of {} runs |",
            col(0).spread(|v| format!("{v:.1}")),
            col(1).spread(|v| format!("{v:.1}")),
            col(2).spread(|v| format!("{v:.1}")),
            col(4).spread(|v| format!("{v:.1}")),
            ours.spread(|v| format!("{v:.1}")),
            col(3).spread(|v| format!("{v:.1}")),
            runs.len()
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "--memory-child") {
        memory_child();
        return;
    }
    init();
    let want = common::wanted();
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
    if want("latency") {
        latency();
    }
}
