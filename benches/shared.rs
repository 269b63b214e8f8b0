//! Many cameras on one shared pool (`enrichpool shared-pool=…`), measured side by side in
//! one run; each case is 16 camera pipelines in this process (`videotestsrc ! GRAY8 64×48
//! 30 fps ! enrichpool ! resequencer ! appsink`), cases alternating round by round (the
//! first rotating), median and spread (min–max) of the rounds:
//!
//! - `threads`: 16 live cameras for 2 s, one shared pool of 8 workers against a private
//!   pool of 8 per camera: the most threads the process ran (sampled every 5 ms);
//! - `fairness`: 16 live cameras for 5 s offering twice what the pool can do (4 shared
//!   workers, a handler of 16.7 ms: 240 frames/s for 480 offered), `leaky=downstream
//!   max-size-buffers=4`: Jain's index of the cameras' pushed frames, and the pool's
//!   throughput against its capacity;
//! - `hung`: 16 live cameras for 10 s on 8 shared workers (a 5 ms handler, `timeout=100
//!   ms`), with and without camera 0's handler hanging for good from its 10th frame: the
//!   other 15's frames lost, and the p99 of their 4500 frames' end-to-end latencies (running
//!   time at the sink minus the pool's ingress stamp), and its ratio to the run without the
//!   hang;
//! - `batching`: 16 cameras, not live, 40 frames each, to tests/remote/fake_server.py's
//!   `batch` model (one instance: 10 ms per request + 1 ms per frame) over gRPC, 16 shared
//!   workers, `batch-size=8 batch-timeout=20 ms` against `batch-size=1`: frames/s from
//!   PLAYING to the last EOS, and the ratio.
//!
//! `cargo bench --bench shared` runs all; `-- threads|fairness|hung|batching` one.

#[path = "../tests/common/cameras.rs"]
mod cameras;
#[path = "../tests/common/servers.rs"]
mod servers;

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cameras::Camera;
use common::{Rounds, alternate};
use gst::prelude::*;
use gstordered::enrichpool::Verdict;
use gstordered::meta::SeqMeta;

const CAMERAS: usize = 16;

fn init() {
    gst::init().unwrap();
    gstordered::plugin_register_static().unwrap();
}

fn threads_now() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Starts the cameras, waits for every one's EOS (sampling the thread count meanwhile),
/// stops them; returns the most threads seen and the seconds from PLAYING to the last EOS.
fn run_all(cameras: &[Camera]) -> (usize, f64) {
    let started = Instant::now();
    for c in cameras {
        c.start();
    }
    let mut most = threads_now();
    let buses: Vec<gst::Bus> = cameras.iter().map(|c| c.pipeline.bus().unwrap()).collect();
    let mut done = vec![false; cameras.len()];
    while done.iter().any(|d| !d) {
        most = most.max(threads_now());
        for (i, bus) in buses.iter().enumerate() {
            if done[i] {
                continue;
            }
            if let Some(m) = bus.pop_filtered(&[gst::MessageType::Eos, gst::MessageType::Error]) {
                if let gst::MessageView::Error(e) = m.view() {
                    panic!("camera {i}: {}", e.error());
                }
                done[i] = true;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the cameras did not finish"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let secs = started.elapsed().as_secs_f64();
    for c in cameras {
        c.stop();
    }
    (most, secs)
}

fn sleep_handler(camera: &Camera, cost: Duration) {
    camera.pool.set_handler(move |job| {
        // The handler's work: a model this long (a sleep: the workers are what is measured).
        std::thread::sleep(cost);
        job.outputs.set("done", true);
        Ok(Verdict::Keep)
    });
}

fn threads(rounds: usize) {
    println!("threads: 16 live cameras for 2 s, 8 workers shared or 8 per camera");
    let cases = ["shared-pool=threads workers=8", "workers=8"];
    let results = alternate(&cases, rounds, |props| {
        let cameras: Vec<Camera> = (0..CAMERAS).map(|_| Camera::new(60, true, props)).collect();
        for c in &cameras {
            sleep_handler(c, Duration::from_millis(1));
        }
        run_all(&cameras).0 as f64
    });
    for (case, r) in cases.iter().zip(&results) {
        println!(
            "  {case:32} most threads {}  rounds: {}",
            r.spread(|v| format!("{v:.0}")),
            r.all(|v| format!("{v:.0}"))
        );
    }
}

fn jain(values: &[f64]) -> f64 {
    let sum: f64 = values.iter().sum();
    let squares: f64 = values.iter().map(|v| v * v).sum();
    sum * sum / (values.len() as f64 * squares)
}

fn fairness(rounds: usize) {
    println!(
        "fairness: 16 live cameras for 5 s, 4 shared workers, a 16.7 ms handler (capacity \
         240 frames/s for 480 offered), leaky=downstream max-size-buffers=4"
    );
    let cost = Duration::from_micros(16_667);
    let mut throughput = Rounds::default();
    let results = alternate(&[()], rounds, |_| {
        let props = "shared-pool=fair workers=4 leaky=downstream max-size-buffers=4";
        let cameras: Vec<Camera> = (0..CAMERAS)
            .map(|_| Camera::new(150, true, props))
            .collect();
        for c in &cameras {
            sleep_handler(c, cost);
        }
        let (_, secs) = run_all(&cameras);
        let pushed: Vec<f64> = cameras.iter().map(|c| c.stat("pushed") as f64).collect();
        throughput.0.push(pushed.iter().sum::<f64>() / secs);
        jain(&pushed)
    });
    println!(
        "  Jain's index of pushed frames per camera: {}  rounds: {}",
        results[0].spread(|v| format!("{v:.4}")),
        results[0].all(|v| format!("{v:.4}"))
    );
    println!(
        "  pool throughput: {} frames/s (capacity 240)",
        throughput.spread(|v| format!("{v:.0}"))
    );
}

/// The other 15 cameras' frames: the p99 of their end-to-end latencies (ns), and how many
/// were lost.
struct Others {
    p99: f64,
    lost: u64,
}

const HUNG_FRAMES: u64 = 300;

fn hung_case(hang: bool) -> Others {
    let props = "shared-pool=hung workers=8 timeout=100000000";
    let cameras: Vec<Camera> = (0..CAMERAS)
        .map(|_| Camera::new(HUNG_FRAMES as u32, true, props))
        .collect();
    let never = Arc::new((std::sync::Mutex::new(()), std::sync::Condvar::new()));
    for (i, c) in cameras.iter().enumerate() {
        if i == 0 && hang {
            let never = never.clone();
            c.pool.set_handler(move |job| {
                // Hangs for good on every frame from the 10th (nobody notifies).
                if SeqMeta::read(job.buffer).unwrap().unwrap().seq >= 10 {
                    let guard = never.0.lock().unwrap();
                    let _guard = never.1.wait_while(guard, |_| true).unwrap();
                }
                Ok(Verdict::Keep)
            });
        } else {
            sleep_handler(c, Duration::from_millis(5));
        }
    }
    for c in &cameras {
        c.start();
    }
    // The hung camera's EOS is not waited for (its frames time out); the others' are.
    for c in &cameras[1..] {
        c.wait_eos(gst::ClockTime::from_seconds(60));
    }
    let mut latencies: Vec<u64> = cameras[1..]
        .iter()
        .flat_map(|c| c.latencies.lock().unwrap().clone())
        .collect();
    let lost: u64 = cameras[1..]
        .iter()
        .map(|c| HUNG_FRAMES - c.seqs().len() as u64)
        .sum();
    for c in &cameras {
        c.stop();
    }
    latencies.sort_unstable();
    let rank = (latencies.len() * 99).div_ceil(100).max(1) - 1;
    Others {
        p99: latencies[rank] as f64,
        lost,
    }
}

fn hung(rounds: usize) {
    println!(
        "hung: 16 live cameras for 10 s, 8 shared workers, a 5 ms handler, timeout=100 ms; \
         camera 0's handler hanging for good from its 10th frame, or not"
    );
    let cases = [false, true];
    let mut lost = [0u64; 2];
    let p99 = alternate(&cases, rounds, |&hang| {
        let others = hung_case(hang);
        lost[usize::from(hang)] += others.lost;
        others.p99
    });
    for (i, name) in ["no hang", "camera 0 hung"].iter().enumerate() {
        println!(
            "  {name:14} the other 15: lost {} of {}  p99 end to end {} ms  rounds: {}",
            lost[i],
            15 * HUNG_FRAMES * rounds as u64,
            p99[i].spread(|v| format!("{:.1}", v / 1e6)),
            p99[i].all(|v| format!("{:.1}", v / 1e6))
        );
    }
    println!(
        "  hung / no hang, round by round: {} (target: within 1.10)",
        p99[1].over(&p99[0]).spread(|v| format!("{v:.2}"))
    );
}

fn batching(rounds: usize) {
    println!(
        "batching: 16 cameras × 40 frames, not live, to the fake `batch` model (10 ms a request \
         + 1 ms a frame, one at a time) over gRPC, 16 shared workers"
    );
    let server = servers::FakeServer::start("batch");
    let cases = [1u32, 8];
    let results = alternate(&cases, rounds, |&size| {
        let props = format!(
            "shared-pool=batch-{size} workers=16 servers={} model=frames batch-size={size} \
             batch-timeout=20000000",
            server.grpc_url()
        );
        let cameras: Vec<Camera> = (0..CAMERAS)
            .map(|_| Camera::new(40, false, &props))
            .collect();
        let (_, secs) = run_all(&cameras);
        for c in &cameras {
            assert_eq!(
                c.seqs(),
                (0..40).collect::<Vec<_>>(),
                "order and every frame"
            );
        }
        (CAMERAS * 40) as f64 / secs
    });
    for (size, r) in cases.iter().zip(&results) {
        println!(
            "  batch-size={size}: {} frames/s  rounds: {}",
            r.spread(|v| format!("{v:.0}")),
            r.all(|v| format!("{v:.0}"))
        );
    }
    println!(
        "  batch-size=8 / batch-size=1, round by round: {} (target ≥ 3)",
        results[1].over(&results[0]).spread(|v| format!("{v:.2}"))
    );
}

fn main() {
    init();
    let run = common::wanted();
    if run("threads") {
        threads(4);
    }
    if run("fairness") {
        fairness(3);
    }
    if run("hung") {
        hung(4);
    }
    if run("batching") {
        batching(4);
    }
}
