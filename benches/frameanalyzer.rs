//! frameanalyzer throughput: the GPU path (whatever wgpu adapter there is: lavapipe on
//! machines without a GPU) against the single-threaded CPU path, side by side in one run.
//!
//! Each case analyses the same pre-rendered frames (`videotestsrc pattern=ball`, I420 or
//! `--format F`)
//! through the analysis core, as the element does per frame: upload, one dispatch and a
//! readback on the GPU; the twin loops on the CPU. Passes of the two alternate (which one
//! first alternating too); reported are the median and spread (min–max) of each path's
//! passes and of the GPU/CPU ratio taken pass by pass, and every pass's ratio (the GPU
//! figure on lavapipe is bimodal at small sizes), against the target.
//! `cargo bench --bench frameanalyzer` (`-- --frames N --rounds R --format F`).

#[path = "../tests/common/launch.rs"]
mod launch;

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use gst::prelude::*;
use gst_video::prelude::*;
use gstordered::analysis::{Analyzer, Layout, Params, Plane, cpu::CpuBackend, gpu::GpuBackend};

/// `n` frames of the ball pattern at `width` × `height` in `format`, as the first plane's
/// (data, stride).
fn render(format: &str, width: u32, height: u32, n: u32) -> Vec<(Vec<u8>, u32)> {
    let pipeline = launch::pipeline(&format!(
        "videotestsrc pattern=ball num-buffers={n} ! video/x-raw,format={format},width={width},height={height} \
         ! appsink name=sink sync=false"
    ));
    let sink = launch::app_sink(&pipeline);
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

/// Frames per second of `analyzer` over `frames`, one pass.
fn fps(
    analyzer: &mut Analyzer,
    frames: &[(Vec<u8>, u32)],
    layout: Layout,
    width: u32,
    height: u32,
) -> f64 {
    let params = Params::default();
    let start = Instant::now();
    for (data, stride) in frames {
        let plane = Plane {
            data,
            width,
            height,
            stride: *stride,
            layout,
        };
        std::hint::black_box(analyzer.analyze(&plane, &params).unwrap());
    }
    frames.len() as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let mut n = 60u32;
    let mut rounds = 10usize;
    let mut format = "I420".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--frames" => n = args.next().unwrap().parse().unwrap(),
            "--rounds" => rounds = args.next().unwrap().parse().unwrap(),
            "--format" => format = args.next().unwrap(),
            _ => {}
        }
    }
    // I420's first plane is luma; the packed formats are converted on the way (GPU: the
    // `packed_luma` pass).
    let layout = match format.as_str() {
        "I420" | "NV12" | "GRAY8" => Layout::Luma,
        "RGBA" | "RGBx" => Layout::Packed {
            bytes_per_pixel: 4,
            r: 0,
            g: 1,
            b: 2,
        },
        "BGRA" | "BGRx" => Layout::Packed {
            bytes_per_pixel: 4,
            r: 2,
            g: 1,
            b: 0,
        },
        "RGB" => Layout::Packed {
            bytes_per_pixel: 3,
            r: 0,
            g: 1,
            b: 2,
        },
        other => panic!("--format {other}: one of I420, NV12, GRAY8, RGBA, RGBx, BGRA, BGRx, RGB"),
    };
    gst::init().unwrap();
    let mut gpu = Analyzer::new(Box::new(
        GpuBackend::new().expect("a wgpu adapter (lavapipe: mesa-vulkan-drivers)"),
    ));
    let mut cpu = Analyzer::new(Box::new(CpuBackend::new()));
    let gpu_name = gpu.backend_name().to_string();
    // A real GPU is held to 1000 frames/s at 1080p; lavapipe only to beat the CPU path.
    let lavapipe = gpu_name.contains("llvmpipe");
    println!(
        "frameanalyzer, {format}: {n} frames per pass, {rounds} alternating passes of each \
         after a warm-up, frames/s, median (min–max); GPU adapter: {gpu_name}"
    );
    println!(
        "| resolution | GPU path (frames/s) | CPU path (frames/s) | GPU / CPU | target | met in |"
    );
    println!("|---|---:|---:|---:|---|---:|");
    let mut per_pass = Vec::new();
    for (w, h) in [(640, 360), (1920, 1080)] {
        let frames = render(&format, w, h, n);
        fps(&mut gpu, &frames, layout, w, h);
        fps(&mut cpu, &frames, layout, w, h);
        let (mut g, mut c) = (common::Rounds::default(), common::Rounds::default());
        for round in 0..rounds {
            if round % 2 == 0 {
                g.0.push(fps(&mut gpu, &frames, layout, w, h));
                c.0.push(fps(&mut cpu, &frames, layout, w, h));
            } else {
                c.0.push(fps(&mut cpu, &frames, layout, w, h));
                g.0.push(fps(&mut gpu, &frames, layout, w, h));
            }
        }
        let ratio = g.over(&c);
        let (target, met) = if lavapipe {
            ("GPU > CPU", ratio.0.iter().filter(|&&r| r > 1.0).count())
        } else if (w, h) == (1920, 1080) {
            (
                "≥ 1000 frames/s",
                g.0.iter().filter(|&&f| f >= 1000.0).count(),
            )
        } else {
            ("—", 0)
        };
        let fps = |v: f64| format!("{v:.0}");
        println!(
            "| {w}×{h} | {} | {} | {} | {target} | {met} of {rounds} |",
            g.spread(fps),
            c.spread(fps),
            ratio.spread(|v| format!("{v:.2}×"))
        );
        per_pass.push(((w, h), g, ratio));
    }
    for ((w, h), g, ratio) in per_pass {
        println!(
            "{w}×{h} per pass: GPU {} frames/s; GPU/CPU {}",
            g.all(|v| format!("{v:.0}")),
            ratio.all(|v| format!("{v:.2}"))
        );
    }
}
