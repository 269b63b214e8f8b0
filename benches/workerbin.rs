//! `enrichpool worker-bin`: stock elements in parallel, cases alternating round by round (the
//! first rotating), median and spread (min–max) of the rounds.
//!
//! `jpeg`: 200 frames of 1280×720 I420 (videotestsrc's moving ball, made once before the
//! rounds), pushed from an appsrc as fast as the pipeline takes them, through
//! `jpegenc ! jpegdec` three ways: in series in the pipeline (`serial`); in
//! `enrichpool workers=1 worker-bin="jpegenc ! jpegdec" ! resequencer` (`bin-1`, the cost of
//! the pool around the elements); and the same with `workers=2` (`bin-2`). Per round, the
//! frames per second from the first push to EOS; the ratios, each pool case over `serial`,
//! round by round.
//!
//! `cargo bench --bench workerbin`.

#[path = "common/mod.rs"]
mod common;

use common::alternate;
use gst::prelude::*;

const FRAMES: usize = 200;
const CAPS: &str = "video/x-raw,format=I420,width=1280,height=720,framerate=30/1";

fn pipeline(desc: &str) -> gst::Pipeline {
    gst::parse::launch(desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap()
}

/// The frames every round pushes.
fn frames() -> Vec<gst::Buffer> {
    let p = pipeline(&format!(
        "videotestsrc pattern=ball num-buffers={FRAMES} ! {CAPS} ! appsink name=sink sync=false"
    ));
    let sink = p
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let frames = (0..FRAMES)
        .map(|_| sink.pull_sample().unwrap().buffer_owned().unwrap())
        .collect();
    p.set_state(gst::State::Null).unwrap();
    frames
}

fn round(middle: &str, frames: &[gst::Buffer]) -> f64 {
    let p = pipeline(&format!(
        "appsrc name=src format=time caps={CAPS} ! {middle} ! fakesink sync=false"
    ));
    let seconds = common::push_to_eos(&p, frames.iter().cloned());
    p.set_state(gst::State::Null).unwrap();
    FRAMES as f64 / seconds
}

fn main() {
    gst::init().unwrap();
    gstordered::plugin_register_static().unwrap();
    let frames = frames();
    let cases = [
        ("serial", "jpegenc ! jpegdec".to_string()),
        (
            "bin-1",
            "enrichpool workers=1 worker-bin=\"jpegenc ! jpegdec\" ! resequencer".to_string(),
        ),
        (
            "bin-2",
            "enrichpool workers=2 worker-bin=\"jpegenc ! jpegdec\" ! resequencer".to_string(),
        ),
    ];
    let rounds = 9;
    // One warm-up of each, not counted (the first instance of an element loads its library).
    for (_, middle) in &cases {
        round(middle, &frames);
    }
    let fps = alternate(&cases, rounds, |(_, middle)| round(middle, &frames));
    println!(
        "jpeg: {FRAMES} frames 1280x720 I420 through jpegenc ! jpegdec, {rounds} rounds, \
         {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let f = |v: f64| format!("{v:.1}");
    for (i, (name, middle)) in cases.iter().enumerate() {
        println!("  {name:7} {} frames/s   ({middle})", fps[i].spread(f));
    }
    let r = |v: f64| format!("{v:.2}");
    for i in 1..cases.len() {
        println!(
            "  {} / serial: {}   rounds: {}",
            cases[i].0,
            fps[i].over(&fps[0]).spread(r),
            fps[i].over(&fps[0]).all(r)
        );
    }
}
