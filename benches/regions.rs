//! Regions and reuse (`enrichpool infer-on=rois`, `carry-forward`), cases alternating round
//! by round (the first rotating), median and spread (min–max) of the rounds:
//!
//! - `crops`: frames of 320×240 GRAY8 with 8 regions, a Rust handler whose step takes 20 ms
//!   per crop (a sleep standing for a classifier), `infer-on=rois`: 8 workers against 1.
//!   Frames go one at a time (the next once the last is out), so the pool is otherwise
//!   idle, as a live source at 10 fps leaves it. Per round, the median over 10 frames of the
//!   frame's processing time (its EnrichmentMeta `processing-time`: from the step's start to
//!   its end, all crops); and the ratio, 8 workers over 1.
//! - `reuse`: 100 frames (64×48 GRAY8, not live) labelled `motion` one in five and `static`
//!   otherwise, to tests/remote/fake_server.py's `geometry` model over REST, 4 workers:
//!   every frame sent against `only-label=motion carry-forward=1 s`. Per round, the
//!   requests the server got, the frames that left with results (fresh or stale), and the
//!   seconds from the first push to EOS; the ratios, reuse over every frame.
//!
//! `cargo bench --bench regions` runs both; `-- crops|reuse` one.

#[path = "../tests/common/servers.rs"]
mod servers;

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use common::{Rounds, alternate};
use gst::prelude::*;
use gstordered::EnrichPool;
use gstordered::enrichpool::{Job, Verdict};
use gstordered::meta::{AnalysisLabel, Enrichment, FrameAnalysis};

fn init() {
    gst::init().unwrap();
    gstordered::plugin_register_static().unwrap();
}

fn pipeline(desc: &str) -> gst::Pipeline {
    gst::parse::launch(desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap()
}

fn appsink(p: &gst::Pipeline) -> gst_app::AppSink {
    p.by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap()
}

fn appsrc(p: &gst::Pipeline) -> gst_app::AppSrc {
    p.by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap()
}

const CROP_MS: u64 = 20;

/// One round of `crops`: the median processing time (ms) of 10 frames with 8 regions.
fn crops_round(workers: u32) -> f64 {
    let p = pipeline(&format!(
        "appsrc name=src format=time caps=video/x-raw,format=GRAY8,width=320,height=240,framerate=10/1 \
         ! enrichpool name=pool workers={workers} infer-on=rois ! appsink name=sink sync=false"
    ));
    let pool = p.by_name("pool").unwrap().downcast::<EnrichPool>().unwrap();
    pool.set_handler(|job: &mut Job<'_>| {
        // The step's own work: a classifier of 20 ms per crop.
        std::thread::sleep(Duration::from_millis(CROP_MS));
        job.outputs.set("label", "thing");
        Ok(Verdict::Keep)
    });
    let (src, sink) = (appsrc(&p), appsink(&p));
    p.set_state(gst::State::Playing).unwrap();
    let mut times = Vec::new();
    for n in 0..10u64 {
        let mut buffer = gst::Buffer::from_mut_slice(vec![0u8; 320 * 240]);
        {
            let b = buffer.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_mseconds(100) * n);
            for i in 0..8 {
                gst_video::VideoRegionOfInterestMeta::add(b, "box", (i * 40, 0, 40, 240));
            }
        }
        src.push_buffer(buffer).unwrap();
        let sample = sink.pull_sample().unwrap();
        let e = Enrichment::read(sample.buffer().unwrap()).unwrap().unwrap();
        times.push(e.processing_time as f64 / 1e6);
    }
    p.set_state(gst::State::Null).unwrap();
    Rounds(times).median()
}

fn crops(rounds: usize) {
    let cases = [8u32, 1];
    let results = alternate(&cases, rounds, |&w| crops_round(w));
    let ms = |v: f64| format!("{v:.1} ms");
    println!("crops: 8 regions × {CROP_MS} ms per crop, one frame at a time, {rounds} rounds");
    println!("  8 workers: processing time {}", results[0].spread(ms));
    println!("  1 worker:  processing time {}", results[1].spread(ms));
    println!(
        "  ratio 8 workers / 1: {}",
        results[0].over(&results[1]).spread(|v| format!("{v:.3}"))
    );
    println!("  rounds (8 workers): {}", results[0].all(ms));
}

/// One round of `reuse`: (requests, frames with results, seconds).
fn reuse_round(server: &servers::FakeServer, props: &str) -> (f64, f64, f64) {
    let p = pipeline(&format!(
        "appsrc name=src format=time caps=video/x-raw,format=GRAY8,width=64,height=48,framerate=30/1 \
         ! enrichpool name=pool workers=4 servers={} model=frames {props} \
         ! appsink name=sink sync=false",
        server.http_url()
    ));
    let sink = appsink(&p);
    let with_results = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = with_results.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if Enrichment::read(sample.buffer().unwrap()).is_some() {
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    let frames = (0..100u64).map(|n| {
        let mut buffer = gst::Buffer::from_mut_slice(vec![n as u8; 64 * 48]);
        let b = buffer.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_mseconds(33) * n);
        let label = if n % 5 == 0 {
            AnalysisLabel::Motion
        } else {
            AnalysisLabel::Static
        };
        FrameAnalysis {
            luma_mean: 0.0,
            luma_stddev: 0.0,
            motion: 0.0,
            scene_change: 0.0,
            sharpness: 0.0,
            label,
            backend: "cpu".into(),
        }
        .add(b);
        buffer
    });
    let seconds = common::push_to_eos(&p, frames);
    let pool = p.by_name("pool").unwrap();
    let stats = pool.property::<gst::Structure>("stats");
    let servers = stats.get::<gst::Array>("servers").unwrap();
    let requests = servers.as_slice()[0]
        .get::<gst::Structure>()
        .unwrap()
        .get::<u64>("requests")
        .unwrap();
    p.set_state(gst::State::Null).unwrap();
    (
        requests as f64,
        with_results.load(std::sync::atomic::Ordering::Relaxed) as f64,
        seconds,
    )
}

fn reuse(rounds: usize) {
    let server = servers::FakeServer::start("geometry");
    let cases = ["", "only-label=motion carry-forward=1000000000"];
    let mut requests = [Rounds::default(), Rounds::default()];
    let mut results = [Rounds::default(), Rounds::default()];
    let times = alternate(&cases, rounds, |props| {
        let i = cases.iter().position(|c| c == props).unwrap();
        let (r, w, s) = reuse_round(&server, props);
        requests[i].0.push(r);
        results[i].0.push(w);
        s
    });
    let n = |v: f64| format!("{v:.0}");
    println!("reuse: 100 frames, motion in 1 of 5, geometry model over REST, {rounds} rounds");
    for (i, name) in ["every frame sent", "only-label=motion carry-forward=1 s"]
        .iter()
        .enumerate()
    {
        println!(
            "  {name}: requests {}, frames with results {}, {}",
            requests[i].spread(n),
            results[i].spread(n),
            times[i].spread(|v| format!("{:.3} s", v))
        );
    }
    println!(
        "  ratio reuse / every frame: requests {}, time {}",
        requests[1].over(&requests[0]).spread(|v| format!("{v:.3}")),
        times[1].over(&times[0]).spread(|v| format!("{v:.3}"))
    );
}

fn main() {
    init();
    let wanted = common::wanted();
    if wanted("crops") {
        crops(10);
    }
    if wanted("reuse") {
        reuse(10);
    }
}
