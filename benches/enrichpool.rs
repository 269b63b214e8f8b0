//! enrichpool benchmarks, each case measured side by side with its baseline in one run.
//!
//! - scaling: a handler that waits 10 ms, N = 1, 8, 32, 64 workers; throughput as a fraction
//!   of the ideal N / 10 ms (`appsrc ! enrichpool ! resequencer ! fakesink`);
//! - cpu: a handler that spins 1 ms of CPU, 2 workers against 1;
//! - overhead: `enrichpool ! resequencer` with an empty handler against `queue`;
//! - memory: peak RSS of a run of 10 000 and of 100 000 frames (each in a child process).
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn scaling() {
    let wait = Duration::from_millis(10);
    println!("\n### Scaling: handler waits 10 ms (appsrc ! enrichpool ! resequencer ! fakesink)\n");
    println!("| workers | frames | seconds | frames/s | ideal frames/s | efficiency |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for n in [1u64, 8, 32, 64] {
        let count = n * 30;
        let middle = format!(
            "enrichpool name=pool workers={n} max-size-buffers={} ! resequencer",
            2 * n
        );
        let secs = median(
            (0..3)
                .map(|_| {
                    run(
                        &middle,
                        frames(count),
                        with_handler(move || std::thread::sleep(wait)),
                    )
                })
                .collect(),
        );
        let fps = count as f64 / secs;
        let ideal = n as f64 / wait.as_secs_f64();
        println!(
            "| {n} | {count} | {secs:.3} | {fps:.0} | {ideal:.0} | {:.1}% |",
            100.0 * fps / ideal
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
    println!("\n### CPU-bound: handler spins 1 ms, on this machine's cores\n");
    println!("| workers | frames/s (median of 5) | speed-up |");
    println!("|---:|---:|---:|");
    let count = 400;
    let mut base = 0.0;
    for n in [1u64, 2] {
        let middle = format!("enrichpool name=pool workers={n} ! resequencer");
        let secs = median(
            (0..5)
                .map(|_| {
                    run(
                        &middle,
                        frames(count),
                        with_handler(|| spin(Duration::from_millis(1))),
                    )
                })
                .collect(),
        );
        let fps = count as f64 / secs;
        if n == 1 {
            base = fps;
        }
        println!("| {n} | {fps:.0} | {:.2}× |", fps / base);
    }
}

fn overhead() {
    println!("\n### Overhead: empty handler, against queue (ns per buffer, median of 7)\n");
    println!("| pipeline | ns/buffer | ratio |");
    println!("|---|---:|---:|");
    let count = 30_000;
    let cases = ["queue", "enrichpool name=pool workers=2 ! resequencer"];
    let mut results = vec![Vec::new(); cases.len()];
    run(cases[0], frames(1000), |_| ());
    run(cases[1], frames(1000), with_handler(|| ()));
    for _ in 0..7 {
        results[0].push(run(cases[0], frames(count), |_| ()));
        results[1].push(run(cases[1], frames(count), with_handler(|| ())));
    }
    let ns: Vec<f64> = results
        .into_iter()
        .map(|r| median(r) * 1e9 / count as f64)
        .collect();
    for (case, v) in cases.iter().zip(&ns) {
        println!("| `{case}` | {v:.0} | {:.2}× |", v / ns[0]);
    }
}

/// Peak RSS (kB) of this process.
fn peak_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Child mode: runs `n` 320×240 frames through `enrichpool ! resequencer` and prints peak
/// RSS. Downstream is held back at the start until the resequencer's window is full, so every
/// run reaches the most the bounds allow (queue, window, buffer pool) before it streams: the
/// peak then tells whether memory grows with the length of the stream.
fn memory_child(n: u64) {
    init();
    let pipeline = launch::pipeline(&format!(
        "videotestsrc num-buffers={n} ! video/x-raw,width=320,height=240,framerate=1000/1 \
         ! enrichpool name=pool workers=2 ! resequencer name=reseq ! fakesink sync=false"
    ));
    let reseq = pipeline.by_name("reseq").unwrap();
    let max_window = u64::from(reseq.property::<u32>("max-window"));
    let src = reseq.static_pad("src").unwrap();
    let block = src
        .add_probe(
            gst::PadProbeType::BLOCK_DOWNSTREAM | gst::PadProbeType::BUFFER,
            |_, _| gst::PadProbeReturn::Ok,
        )
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    // The window holds max-window frames once the task's first push is blocked.
    while reseq
        .property::<gst::Structure>("stats")
        .get::<u64>("depth")
        .unwrap()
        < max_window - 1
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    src.remove_probe(block);
    pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(600),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .unwrap();
    pipeline.set_state(gst::State::Null).unwrap();
    println!("{}", peak_rss_kb());
}

fn memory() {
    println!(
        "\n### Memory: peak RSS, 320×240 frames, bounds filled at the start, each run in its own process\n"
    );
    println!("| frames | peak RSS (kB) | vs 10 000 |");
    println!("|---:|---:|---:|");
    let exe = std::env::current_exe().unwrap();
    let mut base = 0.0;
    for n in [10_000u64, 100_000] {
        let out = std::process::Command::new(&exe)
            .args(["--memory-child", &n.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let kb: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        if n == 10_000 {
            base = kb;
        }
        println!("| {n} | {kb:.0} | {:+.1}% |", 100.0 * (kb - base) / base);
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if let Some(i) = args.iter().position(|a| a == "--memory-child") {
        memory_child(args[i + 1].parse().unwrap());
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
