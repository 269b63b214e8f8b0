//! frameanalyzer throughput: the GPU path (whatever wgpu adapter there is: lavapipe on
//! machines without a GPU) against the single-threaded CPU path, side by side in one run.
//!
//! Each case analyses the same pre-rendered frames (`videotestsrc pattern=ball`, I420)
//! through the analysis core, as the element does per frame: upload, three dispatches and a
//! readback on the GPU; the twin loops on the CPU. `cargo bench --bench frameanalyzer`
//! (`-- --frames N` to change the count).

use std::time::Instant;

use gst::prelude::*;
use gst_video::prelude::*;
use gstordered::analysis::{Analyzer, Layout, Params, Plane, cpu::CpuBackend, gpu::GpuBackend};

/// `n` frames of the ball pattern at `width` × `height`, I420, as (data, stride).
fn render(width: u32, height: u32, n: u32) -> Vec<(Vec<u8>, u32)> {
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc pattern=ball num-buffers={n} ! video/x-raw,format=I420,width={width},height={height} \
         ! appsink name=sink sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut frames = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
        let frame =
            gst_video::VideoFrameRef::from_buffer_ref_readable(sample.buffer().unwrap(), &info)
                .unwrap();
        frames.push((
            frame.plane_data(0).unwrap().to_vec(),
            frame.plane_stride()[0] as u32,
        ));
    }
    pipeline.set_state(gst::State::Null).unwrap();
    frames
}

/// Frames per second of `analyzer` over `frames`, after one warm-up pass.
fn fps(analyzer: &mut Analyzer, frames: &[(Vec<u8>, u32)], width: u32, height: u32) -> f64 {
    let params = Params::default();
    let mut run = || {
        let start = Instant::now();
        for (data, stride) in frames {
            let plane = Plane {
                data,
                width,
                height,
                stride: *stride,
                layout: Layout::Luma,
            };
            std::hint::black_box(analyzer.analyze(&plane, &params).unwrap());
        }
        frames.len() as f64 / start.elapsed().as_secs_f64()
    };
    run();
    run()
}

fn main() {
    let mut n = 60u32;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--frames" {
            n = args.next().unwrap().parse().unwrap();
        }
    }
    gst::init().unwrap();
    let mut gpu = Analyzer::new(Box::new(
        GpuBackend::new().expect("a wgpu adapter (lavapipe: mesa-vulkan-drivers)"),
    ));
    let mut cpu = Analyzer::new(Box::new(CpuBackend::new()));
    println!(
        "frameanalyzer: {n} frames per case, frames/s; GPU adapter: {}",
        gpu.backend_name()
    );
    println!("| resolution | GPU path (frames/s) | CPU path (frames/s) | GPU / CPU |");
    println!("|---|---:|---:|---:|");
    for (w, h) in [(640, 360), (1920, 1080)] {
        let frames = render(w, h, n);
        let g = fps(&mut gpu, &frames, w, h);
        let c = fps(&mut cpu, &frames, w, h);
        println!("| {w}×{h} | {g:.0} | {c:.0} | {:.2}× |", g / c);
    }
}
