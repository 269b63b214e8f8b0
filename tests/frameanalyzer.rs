//! The `frameanalyzer` element on the GPU path (lavapipe in CI) and the CPU path: known
//! answers on synthetic frames in every supported format, both paths agreeing, ROIs that
//! follow `videotestsrc pattern=ball`, resets on caps change and flush, metas kept through
//! `enrichpool ! resequencer`, and a clear error when `device=gpu` finds no GPU.

#[path = "common/launch.rs"]
mod launch;

#[path = "common/plugin.rs"]
mod plugin;

use std::sync::{Arc, Mutex};

use gst::prelude::*;
use gst_check::Harness;
use gst_video::prelude::*;
use gstordered::meta::{AnalysisLabel, FrameAnalysis, SeqMeta};

const FORMATS: [&str; 9] = [
    "I420", "NV12", "GRAY8", "RGBA", "BGRA", "RGBx", "BGRx", "RGB", "BGR",
];

fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstordered::plugin_register_static().unwrap();
    });
}

/// A frame of `format` whose luma is `luma(x, y)`: Y planes carry it with neutral chroma,
/// RGB formats carry it as grey (R = G = B), which the analysis reads back exactly.
fn frame(info: &gst_video::VideoInfo, n: u64, luma: impl Fn(u32, u32) -> u8) -> gst::Buffer {
    let mut buffer = gst::Buffer::with_size(info.size()).unwrap();
    {
        let b = buffer.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_mseconds(40) * n);
        b.set_duration(gst::ClockTime::from_mseconds(40));
    }
    let mut f = gst_video::VideoFrame::from_buffer_writable(buffer, info).unwrap();
    let (w, h) = (f.width(), f.height());
    let packed = !f.format_info().is_yuv() && !f.format_info().is_gray();
    let pixel = f.format_info().pixel_stride()[0] as u32;
    let stride = f.plane_stride()[0] as u32;
    let colour_offsets: Vec<u32> = f.format_info().poffset().iter().take(3).copied().collect();
    let data = f.plane_data_mut(0).unwrap();
    for y in 0..h {
        for x in 0..w {
            let o = (y * stride + x * pixel) as usize;
            let v = luma(x, y);
            if packed {
                data[o..o + 3.min(pixel as usize)].fill(v);
                if pixel == 4 {
                    // Alpha or padding: whichever byte is not a colour.
                    for c in 0..4usize {
                        let is_colour = colour_offsets.contains(&(c as u32));
                        if !is_colour {
                            data[o + c] = 255;
                        }
                    }
                }
            } else {
                data[o] = v;
            }
        }
    }
    for plane in 1..f.n_planes() {
        f.plane_data_mut(plane).unwrap().fill(128);
    }
    f.into_buffer()
}

fn info(format: &str, width: u32, height: u32) -> gst_video::VideoInfo {
    gst_video::VideoInfo::builder(format.parse().unwrap(), width, height)
        .fps(gst::Fraction::new(25, 1))
        .build()
        .unwrap()
}

/// Runs `frames` through `frameanalyzer device=DEVICE` in a harness; returns the outputs.
fn analyze(
    device: &str,
    info: &gst_video::VideoInfo,
    frames: Vec<gst::Buffer>,
) -> Vec<gst::Buffer> {
    init();
    let mut h = Harness::new_parse(&format!("frameanalyzer device={device}"));
    h.set_src_caps(info.to_caps().unwrap());
    frames
        .into_iter()
        .map(|f| {
            h.push(f).unwrap();
            h.pull().unwrap()
        })
        .collect()
}

fn analysis(b: &gst::BufferRef) -> FrameAnalysis {
    FrameAnalysis::read(b).expect("FrameAnalysisMeta").unwrap()
}

fn rois(b: &gst::BufferRef) -> Vec<(u32, u32, u32, u32)> {
    b.iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .map(|m| {
            assert_eq!(m.roi_type(), "motion");
            m.rect()
        })
        .collect()
}

/// Flat grey, a white square on black, the square moved right, then a cut to bright grey.
fn scenes(info: &gst_video::VideoInfo) -> Vec<gst::Buffer> {
    let square = |x0: u32| {
        move |x: u32, y: u32| {
            if (x0..x0 + 16).contains(&x) && (16..32).contains(&y) {
                255
            } else {
                0
            }
        }
    };
    vec![
        frame(info, 0, |_, _| 128),
        frame(info, 1, square(16)),
        frame(info, 2, square(32)),
        frame(info, 3, |_, _| 230),
    ]
}

#[test]
fn known_answers_in_every_format_on_gpu_and_cpu_alike() {
    for format in FORMATS {
        let info = info(format, 96, 64);
        let gpu = analyze("gpu", &info, scenes(&info));
        let cpu = analyze("cpu", &info, scenes(&info));
        for (g, c) in gpu.iter().zip(&cpu) {
            let (ga, ca) = (analysis(g), analysis(c));
            assert_eq!(
                FrameAnalysis {
                    backend: String::new(),
                    ..ga.clone()
                },
                FrameAnalysis {
                    backend: String::new(),
                    ..ca.clone()
                },
                "{format}"
            );
            assert_eq!(rois(g), rois(c), "{format}");
            assert_eq!(ca.backend, "cpu");
            assert_ne!(ga.backend, "cpu");
        }
        let a: Vec<FrameAnalysis> = gpu.iter().map(|b| analysis(b)).collect();
        assert_eq!(
            (a[0].luma_mean, a[0].luma_stddev, a[0].motion),
            (128.0, 0.0, 0.0),
            "{format}: flat grey"
        );
        assert_eq!(a[0].label, AnalysisLabel::Static, "{format}");
        assert_eq!(a[2].label, AnalysisLabel::Motion, "{format}");
        assert_eq!(
            rois(&gpu[2]),
            vec![(16, 16, 32, 16)],
            "{format}: one ROI where the square moved"
        );
        assert_eq!(a[3].label, AnalysisLabel::SceneCut, "{format}: cut");
        assert!(rois(&gpu[0]).is_empty() && rois(&gpu[3]).len() <= 1);
    }
}

/// A frame of a packed RGB `format` whose pixel (x, y) has the colour `rgb(x, y)`, placed by
/// GStreamer's own description of the format (its component offsets), not by ours.
fn coloured_frame(
    info: &gst_video::VideoInfo,
    n: u64,
    rgb: impl Fn(u32, u32) -> [u8; 3],
) -> gst::Buffer {
    let mut buffer = gst::Buffer::with_size(info.size()).unwrap();
    buffer
        .get_mut()
        .unwrap()
        .set_pts(gst::ClockTime::from_mseconds(40) * n);
    let mut f = gst_video::VideoFrame::from_buffer_writable(buffer, info).unwrap();
    let (w, h) = (f.width(), f.height());
    let pixel = f.format_info().pixel_stride()[0] as u32;
    let stride = f.plane_stride()[0] as u32;
    let format_info = f.format_info();
    let offsets = format_info.poffset();
    let (r, g, b) = (offsets[0], offsets[1], offsets[2]);
    let data = f.plane_data_mut(0).unwrap();
    for y in 0..h {
        for x in 0..w {
            let o = (y * stride + x * pixel) as usize;
            let [cr, cg, cb] = rgb(x, y);
            data[o + r as usize] = cr;
            data[o + g as usize] = cg;
            data[o + b as usize] = cb;
        }
    }
    f.into_buffer()
}

/// BT.601 luma in 8-bit fixed point (weights 77, 150, 29 of 256), written out here.
fn bt601([r, g, b]: [u8; 3]) -> u8 {
    ((77 * u32::from(r) + 150 * u32::from(g) + 29 * u32::from(b) + 128) / 256) as u8
}

#[test]
fn coloured_frames_in_packed_formats_give_the_luma_of_their_colours() {
    init();
    // R, G and B apart in every pixel, and moving between frames: a swapped channel in the
    // element's format table or in the analysis changes the luma, the histogram and motion.
    let colour = |n: u32| {
        move |x: u32, y: u32| {
            let (x, y) = (x.wrapping_add(7 * n), y);
            [
                (x * 37 + y * 11) as u8,
                (x * 5 + y * 29 + 90) as u8,
                (x * 71 + y * 3 + 200) as u8,
            ]
        }
    };
    let (w, h) = (64, 48);
    let grey = info("GRAY8", w, h);
    let expected: Vec<FrameAnalysis> = analyze(
        "cpu",
        &grey,
        (0..3)
            .map(|n| frame(&grey, n.into(), |x, y| bt601(colour(n)(x, y))))
            .collect(),
    )
    .iter()
    .map(|b| analysis(b))
    .collect();
    assert!(expected[0].luma_stddev > 10.0 && expected[1].motion > 0.0);
    for format in ["RGBA", "BGRA", "RGBx", "BGRx", "RGB", "BGR"] {
        let info = info(format, w, h);
        for device in ["cpu", "gpu"] {
            let frames = (0..3)
                .map(|n| coloured_frame(&info, n.into(), colour(n)))
                .collect();
            let got = analyze(device, &info, frames);
            for (n, (g, e)) in got.iter().zip(&expected).enumerate() {
                assert_eq!(
                    FrameAnalysis {
                        backend: String::new(),
                        ..analysis(g)
                    },
                    FrameAnalysis {
                        backend: String::new(),
                        ..e.clone()
                    },
                    "{format} on {device}, frame {n}"
                );
            }
        }
    }
}

#[test]
fn odd_sizes_and_padded_strides_agree() {
    for format in ["I420", "RGB", "GRAY8", "BGRx"] {
        // 37x23: odd width and height; RGB and GRAY8 rows are padded to 4 bytes.
        let info = info(format, 37, 23);
        let noisy =
            |seed: u32| move |x: u32, y: u32| ((x * 7919 + y * 104729 + seed * 31) % 251) as u8;
        let frames = |_: ()| {
            vec![
                frame(&info, 0, noisy(1)),
                frame(&info, 1, noisy(2)),
                frame(&info, 2, noisy(2)),
            ]
        };
        let gpu = analyze("gpu", &info, frames(()));
        let cpu = analyze("cpu", &info, frames(()));
        for (g, c) in gpu.iter().zip(&cpu) {
            let (ga, ca) = (analysis(g), analysis(c));
            assert_eq!(
                (
                    ga.luma_mean,
                    ga.luma_stddev,
                    ga.sharpness,
                    ga.motion,
                    ga.scene_change
                ),
                (
                    ca.luma_mean,
                    ca.luma_stddev,
                    ca.sharpness,
                    ca.motion,
                    ca.scene_change
                ),
                "{format}"
            );
        }
        assert_eq!(
            analysis(&gpu[2]).motion,
            0.0,
            "{format}: identical frames do not move"
        );
    }
}

#[test]
fn rois_follow_the_ball() {
    init();
    let pipeline = launch::pipeline(
        "videotestsrc pattern=ball num-buffers=30 ! video/x-raw,format=GRAY8,width=160,height=120 \
         ! frameanalyzer device=gpu ! appsink name=sink sync=false",
    );
    let sink = launch::app_sink(&pipeline);
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut checked = 0;
    let mut positions = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        let buffer = sample.buffer().unwrap();
        let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info).unwrap();
        // Where the ball is now: the centroid of bright pixels.
        let (stride, data) = (frame.plane_stride()[0] as u32, frame.plane_data(0).unwrap());
        let (mut sx, mut sy, mut n) = (0u64, 0u64, 0u64);
        for y in 0..info.height() {
            for x in 0..info.width() {
                if data[(y * stride + x) as usize] > 128 {
                    sx += x as u64;
                    sy += y as u64;
                    n += 1;
                }
            }
        }
        let rois = rois(buffer);
        if n > 0 && !rois.is_empty() {
            let (cx, cy) = ((sx / n) as u32, (sy / n) as u32);
            assert!(
                rois.iter()
                    .any(|&(x, y, w, h)| (x..x + w).contains(&cx) && (y..y + h).contains(&cy)),
                "ball at ({cx}, {cy}) outside every ROI {rois:?}"
            );
            positions.push((cx, cy));
            checked += 1;
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(checked >= 25, "ROIs on {checked} of 29 moving frames");
    positions.dedup();
    assert!(positions.len() > 10, "the ball moved: {positions:?}");
}

#[test]
fn caps_change_and_flush_forget_the_previous_frame() {
    init();
    let mut h = Harness::new_parse("frameanalyzer device=cpu");
    let small = info("GRAY8", 32, 24);
    h.set_src_caps(small.to_caps().unwrap());
    h.push(frame(&small, 0, |_, _| 20)).unwrap();
    let b = h.pull().unwrap();
    assert_eq!(analysis(&b).label, AnalysisLabel::Dark);
    let big = info("GRAY8", 64, 48);
    h.set_src_caps(big.to_caps().unwrap());
    h.push(frame(&big, 1, |_, _| 220)).unwrap();
    let a = analysis(&h.pull().unwrap());
    assert_eq!(
        (a.scene_change, a.motion),
        (0.0, 0.0),
        "no comparison across a resolution change"
    );
    h.push(frame(&big, 2, |_, _| 20)).unwrap();
    assert_eq!(analysis(&h.pull().unwrap()).label, AnalysisLabel::SceneCut);
    assert!(h.push_event(gst::event::FlushStart::new()));
    assert!(h.push_event(gst::event::FlushStop::new(true)));
    assert!(
        h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
            gst::ClockTime,
        >::new()))
    );
    h.push(frame(&big, 3, |_, _| 220)).unwrap();
    let a = analysis(&h.pull().unwrap());
    assert_eq!(a.scene_change, 0.0, "no comparison across a flush");
}

#[test]
fn post_messages_posts_each_frames_analysis() {
    init();
    let pipeline = gst::parse::launch(
        "videotestsrc num-buffers=5 ! video/x-raw,width=64,height=48 ! frameanalyzer name=fa device=cpu post-messages=true ! fakesink",
    )
    .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let mut messages = Vec::new();
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(30)) {
        match msg.view() {
            gst::MessageView::Element(e)
                if e.structure().is_some_and(|s| s.name() == "frameanalyzer") =>
            {
                messages.push(e.structure().unwrap().to_owned());
            }
            gst::MessageView::Eos(_) | gst::MessageView::Error(_) => break,
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(messages.len(), 5);
    assert_eq!(messages[0].get::<&str>("backend").unwrap(), "cpu");
    assert!(
        messages
            .iter()
            .all(|m| m.has_field("luma-mean") && m.has_field("label") && m.has_field("rois"))
    );
}

#[test]
fn live_metas_survive_enrichpool_and_resequencer_in_order() {
    init();
    let pipeline = launch::pipeline(
        "videotestsrc is-live=true pattern=ball num-buffers=60 ! video/x-raw,width=128,height=96,framerate=60/1 \
         ! frameanalyzer name=fa ! enrichpool name=pool workers=4 ! resequencer latency=2000000000 \
         ! appsink name=sink sync=false",
    );
    let pool = pipeline
        .by_name("pool")
        .unwrap()
        .downcast::<gstordered::EnrichPool>()
        .unwrap();
    // Record what each frame carried when it entered the pool, to compare at the sink.
    let entered = Arc::new(Mutex::new(Vec::new()));
    let e = entered.clone();
    pool.set_handler(move |job| {
        let seq = SeqMeta::read(job.buffer).unwrap().unwrap().seq;
        e.lock().unwrap().push((
            seq,
            FrameAnalysis::read(job.buffer).unwrap().unwrap(),
            rois(job.buffer),
        ));
        std::thread::sleep(std::time::Duration::from_millis(seq * 7 % 13));
        Ok(gstordered::enrichpool::Verdict::Keep)
    });
    let sink = launch::app_sink(&pipeline);
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut out = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        let b = sample.buffer().unwrap();
        out.push((SeqMeta::read(b).unwrap().unwrap().seq, analysis(b), rois(b)));
    }
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(out.len(), 60);
    assert_eq!(
        out.iter().map(|o| o.0).collect::<Vec<_>>(),
        (0..60).collect::<Vec<_>>()
    );
    let mut entered = entered.lock().unwrap().clone();
    entered.sort_by_key(|e| e.0);
    assert_eq!(out, entered, "every meta arrives intact");
    assert!(out.iter().any(|o| !o.2.is_empty()), "the ball gave ROIs");
}

#[test]
fn device_gpu_without_a_gpu_fails_at_start_with_a_clear_error() {
    // No Vulkan driver: the loader is pointed at an empty list.
    let out = plugin::gst_command("gst-launch-1.0")
        .env("VK_ICD_FILENAMES", "/nonexistent.json")
        .env("VK_DRIVER_FILES", "/nonexistent.json")
        .args([
            "videotestsrc",
            "num-buffers=1",
            "!",
            "frameanalyzer",
            "device=gpu",
            "!",
            "fakesink",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("device=gpu but no GPU can be used"), "{text}");
    // device=auto falls back to the CPU in the same situation.
    let out = plugin::gst_command("gst-launch-1.0")
        .env("VK_ICD_FILENAMES", "/nonexistent.json")
        .env("VK_DRIVER_FILES", "/nonexistent.json")
        .args([
            "-m",
            "videotestsrc",
            "num-buffers=2",
            "!",
            "frameanalyzer",
            "device=auto",
            "post-messages=true",
            "!",
            "fakesink",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Both frames were analysed, on the CPU.
    let analyses: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("frameanalyzer-analysis") || l.contains("backend="))
        .collect();
    assert_eq!(analyses.len(), 2, "{stdout}");
    assert!(
        analyses.iter().all(|l| l.contains("backend=(string)cpu")),
        "{stdout}"
    );
}

/// Runs `frames` through `frameanalyzer device=cpu PROPS`; the outputs and the stats.
fn analyze_with(
    props: &str,
    info: &gst_video::VideoInfo,
    frames: Vec<gst::Buffer>,
) -> (Vec<gst::Buffer>, gst::Structure) {
    init();
    let mut h = Harness::new_parse(&format!("frameanalyzer name=fa device=cpu {props}"));
    h.set_src_caps(info.to_caps().unwrap());
    let out = frames
        .into_iter()
        .map(|f| {
            h.push(f).unwrap();
            h.pull().unwrap()
        })
        .collect();
    let element = h.element().unwrap();
    let analyzer = match element.downcast_ref::<gst::Bin>() {
        Some(bin) => bin.by_name("fa").unwrap(),
        None => element,
    };
    let stats = analyzer.property::<gst::Structure>("stats");
    (out, stats)
}

#[test]
fn stats_count_the_frames_their_labels_and_times() {
    init();
    let info = info("GRAY8", 96, 64);
    let (out, stats) = analyze_with("", &info, scenes(&info));
    let labels: Vec<AnalysisLabel> = out.iter().map(|b| analysis(b).label).collect();
    assert_eq!(
        labels,
        vec![
            AnalysisLabel::Static,
            AnalysisLabel::SceneCut,
            AnalysisLabel::Motion,
            AnalysisLabel::SceneCut
        ]
    );
    let n = |f: &str| stats.get::<u64>(f).unwrap();
    assert_eq!(n("frames"), 4);
    assert_eq!(n("errors"), 0);
    assert_eq!(n("gpu-fallbacks"), 0);
    assert_eq!(n("scene-cuts"), 2);
    let moved = out.iter().filter(|b| analysis(b).motion > 0.0).count() as u64;
    assert_eq!(n("motion-frames"), moved);
    assert!(n("max-processing-time") >= n("mean-processing-time"));
    assert!(n("mean-processing-time") > 0);
    assert_eq!(stats.get::<String>("backend").unwrap(), "cpu");
}

#[test]
fn thresholds_block_size_and_max_rois_change_the_analysis() {
    init();
    let info = info("GRAY8", 96, 64);
    let square = |x0: u32, y0: u32| {
        move |x: u32, y: u32| {
            if (x0..x0 + 16).contains(&x) && (y0..y0 + 16).contains(&y) {
                200
            } else {
                20
            }
        }
    };
    // Frame 1: the square moved right; frame 2: a second one appeared far from it.
    let frames = || {
        vec![
            frame(&info, 0, square(16, 16)),
            frame(&info, 1, square(32, 16)),
            frame(&info, 2, |x, y| {
                square(32, 16)(x, y).max(square(64, 40)(x, y))
            }),
        ]
    };
    let (default, _) = analyze_with("", &info, frames());
    assert_eq!(analysis(&default[1]).label, AnalysisLabel::Motion);
    assert_eq!(rois(&default[1]), vec![(16, 16, 32, 16)]);
    assert_eq!(rois(&default[2]).len(), 1, "the new square only");

    // A block moves only when its mean difference exceeds the threshold: 180 levels over a
    // whole block here, a quarter of that over a 32-pixel block.
    let (high, _) = analyze_with("motion-threshold=200", &info, frames());
    assert!(high.iter().all(|b| analysis(b).motion == 0.0));
    assert_ne!(analysis(&high[1]).label, AnalysisLabel::Motion);

    // Bigger blocks: regions on a 32-pixel grid.
    let (coarse, _) = analyze_with("block-size=32", &info, frames());
    assert_eq!(rois(&coarse[1]), vec![(0, 0, 64, 32)]);

    // Two regions that moved at once (the square, and a new one far from it): two ROIs by
    // default, one with max-rois=1.
    let two = || {
        vec![
            frame(&info, 0, square(16, 16)),
            frame(&info, 1, |x, y| {
                square(32, 16)(x, y).max(square(64, 40)(x, y))
            }),
        ]
    };
    let (both, _) = analyze_with("", &info, two());
    assert_eq!(rois(&both[1]).len(), 2);
    let (one, _) = analyze_with("max-rois=1", &info, two());
    assert_eq!(rois(&one[1]).len(), 1);

    // Dark: a still frame darker than the threshold (the frames' mean is about 26).
    let still = || vec![frame(&info, 0, |_, _| 60), frame(&info, 1, |_, _| 60)];
    let (lit, _) = analyze_with("", &info, still());
    assert_eq!(analysis(&lit[1]).label, AnalysisLabel::Static);
    let (dark, _) = analyze_with("dark-threshold=100", &info, still());
    assert_eq!(analysis(&dark[1]).label, AnalysisLabel::Dark);

    // Scene change: half the frame changes level, a histogram distance of exactly 0.5: a
    // cut at the default threshold (0.5, "at or above"), none at 0.6.
    let half = || {
        vec![
            frame(&info, 0, |_, _| 60),
            frame(&info, 1, |_, y| if y < 32 { 60 } else { 90 }),
        ]
    };
    let (cut, _) = analyze_with("", &info, half());
    assert_eq!(analysis(&cut[1]).scene_change, 0.5);
    assert_eq!(analysis(&cut[1]).label, AnalysisLabel::SceneCut);
    let (no_cut, _) = analyze_with("scene-threshold=0.6", &info, half());
    assert_ne!(analysis(&no_cut[1]).label, AnalysisLabel::SceneCut);
}
