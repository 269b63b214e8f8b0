//! The main job: a live pipeline through all three elements, written to an MP4 file.
//!
//! ```text
//! videotestsrc is-live=true pattern=ball ! 640x360@30
//!   ! frameanalyzer                      GPU through wgpu when there is an adapter, else CPU
//!   ! enrichpool workers=6 leaky=downstream on-error=drop overlay=true
//!                                        a Rust handler: 10–110 ms of "inference" per frame,
//!                                        one detection (the moving ball), one failure in 50;
//!                                        the overlay draws boxes and a text line per frame
//!   ! resequencer latency=300 ms
//!   ! tee ! x264enc ! mp4mux ! filesink  (and a window when a display exists)
//! ```
//!
//! It runs for a fixed time (`--seconds N`, default 10) with a progress line every second,
//! then sends EOS, prints a summary (frames in and out, dropped by reason, reorder depth,
//! end-to-end latency p50/p99, per-worker throughput) and checks that every frame is
//! accounted for: pushed by the pool (then pushed by the resequencer and seen by the sink in
//! order with its analysis, or given up on past its deadline and counted `late`) or dropped
//! by it (then released by a gap). `--output PATH` (default `demo.mp4`),
//! `--snapshot PATH` writes one frame (the first from the 60th on) as PNG, `--no-window` never
//! opens a window.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstordered::EnrichPool;
use gstordered::enrichpool::Verdict;
use gstordered::meta::{FrameAnalysis, SeqMeta};

/// The frame `--snapshot` writes.
const SNAPSHOT_FRAME: u64 = 60;

/// What the sink saw.
#[derive(Default)]
struct SinkLog {
    /// The frame `--snapshot` writes, with the caps it came with.
    snapshot: Option<gst::Sample>,
    frames: u64,
    out_of_order: u64,
    last: Option<u64>,
    labels: std::collections::BTreeMap<String, u64>,
}

struct Options {
    seconds: u64,
    output: String,
    snapshot: Option<String>,
    window: bool,
}

fn options() -> Result<Options, Box<dyn std::error::Error>> {
    let mut o = Options {
        seconds: 10,
        output: "demo.mp4".into(),
        snapshot: None,
        window: std::env::var_os("DISPLAY").is_some()
            || std::env::var_os("WAYLAND_DISPLAY").is_some(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--seconds" => o.seconds = value()?.parse()?,
            "--output" => o.output = value()?,
            "--snapshot" => o.snapshot = Some(value()?),
            "--no-window" => o.window = false,
            "-h" | "--help" => {
                println!(
                    "usage: demo [--seconds N] [--output FILE.mp4] [--snapshot FILE.png] [--no-window]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(o)
}

fn make(factory: &str) -> Result<gst::Element, Box<dyn std::error::Error>> {
    gst::ElementFactory::make(factory).build().map_err(|_| {
        format!("GStreamer element `{factory}` is missing (./dev.sh installs its package)").into()
    })
}

/// The enrichment: uneven "inference" so frames finish out of order, a detection around the
/// largest moving region, and one failure in fifty (a gap, with on-error=drop).
fn install_handler(pool: &EnrichPool) {
    pool.set_handler(|job| {
        let seq = SeqMeta::read(job.buffer)
            .and_then(Result::ok)
            .map_or(0, |m| m.seq);
        let work_ms = 10 + seq.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) % 101;
        std::thread::sleep(Duration::from_millis(work_ms));
        if seq % 50 == 49 {
            return Err(format!("simulated failure on frame {seq}"));
        }
        let largest = job
            .buffer
            .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
            .filter(|m| m.roi_type() == "motion")
            .map(|m| m.rect())
            .max_by_key(|r| r.2 * r.3);
        if let Some((x, y, w, h)) = largest {
            let score = 0.5 + (seq % 50) as f64 / 100.0;
            let mut roi =
                gst_video::VideoRegionOfInterestMeta::add(job.buffer, "ball", (x, y, w, h));
            roi.add_param(
                gst::Structure::builder("detection")
                    .field("class", "ball")
                    .field("score", score)
                    .build(),
            );
            job.outputs.set("detections", 1u32);
        } else {
            job.outputs.set("detections", 0u32);
        }
        job.outputs.set("work-ms", work_ms);
        Ok(Verdict::Keep)
    });
}

/// Encodes one frame as PNG: `appsrc ! videoconvert ! pngenc ! filesink`.
fn write_png(sample: &gst::Sample, path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src ! videoconvert ! pngenc ! filesink location=\"{path}\""
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| "a pipeline")?;
    let src = pipeline
        .by_name("src")
        .ok_or("appsrc")?
        .downcast::<gst_app::AppSrc>()
        .map_err(|_| "an appsrc")?;
    pipeline.set_state(gst::State::Playing)?;
    src.push_sample(sample)?;
    src.end_of_stream()?;
    let msg = pipeline.bus().ok_or("a bus")?.timed_pop_filtered(
        gst::ClockTime::from_seconds(30),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    pipeline.set_state(gst::State::Null)?;
    match msg.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Eos(_)) => Ok(()),
        Some(gst::MessageView::Error(e)) => Err(format!("writing {path}: {}", e.error()).into()),
        _ => Err(format!("writing {path} did not finish").into()),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = options()?;
    gst::init()?;
    gstordered::plugin_register_static()?;

    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("videotestsrc")
        .property("is-live", true)
        .property_from_str("pattern", "ball")
        .build()?;
    let caps = gst::ElementFactory::make("capsfilter")
        .property(
            "caps",
            gst::Caps::builder("video/x-raw")
                .field("format", "I420")
                .field("width", 640)
                .field("height", 360)
                .field("framerate", gst::Fraction::new(30, 1))
                .build(),
        )
        .build()?;
    let analyzer = gst::ElementFactory::make("frameanalyzer")
        .name("frameanalyzer")
        .build()?;
    let pool = gst::ElementFactory::make("enrichpool")
        .name("enrichpool")
        .property("workers", 6u32)
        .property("max-size-buffers", 8u32)
        .property_from_str("leaky", "downstream")
        .property_from_str("on-error", "drop")
        .property("overlay", true)
        .build()?
        .downcast::<EnrichPool>()
        .map_err(|_| "enrichpool is an EnrichPool")?;
    install_handler(&pool);
    let reseq = gst::ElementFactory::make("resequencer")
        .name("resequencer")
        .property("latency", 300_000_000u64)
        .build()?;
    let tee = make("tee")?;
    let (file_queue, convert, encoder, muxer, filesink) = (
        make("queue")?,
        make("videoconvert")?,
        make("x264enc")?,
        make("mp4mux")?,
        make("filesink")?,
    );
    encoder.set_property_from_str("tune", "zerolatency");
    encoder.set_property_from_str("speed-preset", "ultrafast");
    filesink.set_property("location", &options.output);
    pipeline.add_many([
        &src,
        &caps,
        &analyzer,
        pool.upcast_ref(),
        &reseq,
        &tee,
        &file_queue,
        &convert,
        &encoder,
        &muxer,
        &filesink,
    ])?;
    gst::Element::link_many([&src, &caps, &analyzer, pool.upcast_ref(), &reseq, &tee])?;
    gst::Element::link_many([&tee, &file_queue, &convert, &encoder, &muxer, &filesink])?;
    if options.window {
        let (queue, convert, sink) = (
            make("queue")?,
            make("videoconvert")?,
            make("autovideosink")?,
        );
        sink.set_property("sync", false);
        pipeline.add_many([&queue, &convert, &sink])?;
        gst::Element::link_many([&tee, &queue, &convert, &sink])?;
    }
    let log = Arc::new(Mutex::new(SinkLog::default()));
    let probe_log = log.clone();
    tee.static_pad("sink")
        .ok_or("tee has a sink pad")?
        .add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            if let Some(gst::PadProbeData::Buffer(buffer)) = &info.data {
                let mut log = probe_log.lock().unwrap();
                log.frames += 1;
                if let Some(Ok(a)) = FrameAnalysis::read(buffer) {
                    *log.labels.entry(a.label.as_str().to_string()).or_default() += 1;
                }
                if let Some(Ok(meta)) = SeqMeta::read(buffer) {
                    if log.last.is_some_and(|last| meta.seq <= last) {
                        log.out_of_order += 1;
                    }
                    log.last = Some(meta.seq);
                    if meta.seq >= SNAPSHOT_FRAME && log.snapshot.is_none() {
                        log.snapshot = Some(
                            gst::Sample::builder()
                                .buffer(buffer)
                                .caps_if_some(pad.current_caps().as_ref())
                                .build(),
                        );
                    }
                }
            }
            gst::PadProbeReturn::Ok
        });

    println!(
        "demo: videotestsrc is-live=true pattern=ball ! frameanalyzer ! enrichpool workers=6 \
         leaky=downstream overlay=true ! resequencer ! x264enc ! mp4mux ! {} ({} s{})",
        options.output,
        options.seconds,
        if options.window { ", and a window" } else { "" }
    );
    pipeline.set_state(gst::State::Playing)?;
    println!(
        "frameanalyzer runs on: {}",
        analyzer.property::<String>("backend")
    );

    let started = Instant::now();
    let bus = pipeline.bus().ok_or("pipeline has a bus")?;
    let mut eos_sent = false;
    let mut next_progress = 1;
    let result: Result<(), Box<dyn std::error::Error>> = loop {
        let msg = bus.timed_pop(gst::ClockTime::from_mseconds(100));
        match msg.as_ref().map(|m| m.view()) {
            Some(gst::MessageView::Eos(_)) => break Ok(()),
            Some(gst::MessageView::Error(err)) => {
                break Err(format!("{} ({:?})", err.error(), err.debug()).into());
            }
            _ => {}
        }
        let elapsed = started.elapsed().as_secs();
        if elapsed >= next_progress && !eos_sent {
            next_progress = elapsed + 1;
            let p = pool.property::<gst::Structure>("stats");
            let r = reseq.property::<gst::Structure>("stats");
            let get = |s: &gst::Structure, f: &str| s.get::<u64>(f).unwrap_or(0);
            println!(
                "[{elapsed:3}s] in {:4}  out {:4}  dropped {:3}  in-flight {}  reorder depth {:2}  \
                 latency p50 {:3} ms p99 {:3} ms",
                get(&p, "in"),
                get(&r, "pushed"),
                get(&p, "dropped"),
                get(&p, "in-flight"),
                get(&r, "depth"),
                get(&r, "latency-p50") / 1_000_000,
                get(&r, "latency-p99") / 1_000_000,
            );
        }
        if !eos_sent && started.elapsed() >= Duration::from_secs(options.seconds) {
            eos_sent = true;
            pipeline.send_event(gst::event::Eos::new());
        }
        if started.elapsed() > Duration::from_secs(options.seconds + 60) {
            break Err("no EOS a minute after it was sent".into());
        }
    };

    let seconds = started.elapsed().as_secs_f64();
    let r = reseq.property::<gst::Structure>("stats");
    let p = pool.property::<gst::Structure>("stats");
    pipeline.set_state(gst::State::Null)?;
    result?;

    let get = |s: &gst::Structure, f: &str| s.get::<u64>(f).unwrap_or(0);
    let log = log.lock().unwrap();
    println!("summary over {seconds:.1} s:");
    println!(
        "  frames: in {}  out {}  dropped {} (leaked {}, failed {}, timeout {}, dropped {})",
        get(&p, "in"),
        get(&r, "pushed"),
        get(&p, "dropped"),
        get(&p, "dropped-leaked"),
        get(&p, "dropped-failed"),
        get(&p, "dropped-timeout"),
        get(&p, "dropped-dropped"),
    );
    println!(
        "  given up on by the resequencer: {} (arrived after their deadline: {})",
        get(&r, "skipped"),
        get(&r, "late")
    );
    println!(
        "  reorder: {} frames arrived early; depth max {} frames, held up to {} ms",
        get(&r, "reordered"),
        get(&r, "max-depth"),
        get(&r, "max-hold") / 1_000_000
    );
    println!(
        "  end-to-end latency: p50 {} ms, p99 {} ms, max {} ms",
        get(&r, "latency-p50") / 1_000_000,
        get(&r, "latency-p99") / 1_000_000,
        get(&r, "latency-max") / 1_000_000
    );
    if let Ok(workers) = p.get::<gst::Array>("worker-stats") {
        let per_worker: Vec<String> = workers
            .iter()
            .filter_map(|w| w.get::<gst::Structure>().ok())
            .map(|w| {
                format!(
                    "w{} {:.1}/s",
                    w.get::<u32>("worker").unwrap_or(0),
                    w.get::<u64>("processed").unwrap_or(0) as f64 / seconds
                )
            })
            .collect();
        println!("  per-worker throughput: {}", per_worker.join(", "));
    }
    println!("  labels at the sink: {:?}", log.labels);
    let size = std::fs::metadata(&options.output).map_or(0, |m| m.len());
    println!("  written: {} ({} KiB)", options.output, size / 1024);
    if let Some(path) = &options.snapshot {
        let sample = log
            .snapshot
            .clone()
            .ok_or("the run ended before the snapshot frame")?;
        write_png(&sample, path)?;
        println!("  snapshot (the first frame from {SNAPSHOT_FRAME} on): {path}");
    }

    // Every frame the source made is accounted for: the pool pushed it or dropped it (and
    // then told the resequencer with a gap); the resequencer got every frame the pool pushed
    // and pushed each one, unless it had given up on it (its deadline passed: `skipped`,
    // then `late` when it came); the sink saw every frame the resequencer pushed, in order,
    // each with its analysis.
    let mut problems = Vec::new();
    if get(&p, "in") != get(&p, "pushed") + get(&p, "dropped") {
        problems.push("the pool's ledger does not balance (in != pushed + dropped)".to_string());
    }
    if get(&r, "in") != get(&p, "pushed") {
        problems.push(format!(
            "the resequencer got {} of the {} frames the pool pushed",
            get(&r, "in"),
            get(&p, "pushed")
        ));
    }
    if get(&r, "in") != get(&r, "pushed") + get(&r, "late") {
        problems.push(format!(
            "the resequencer got {} frames but pushed {} and dropped {} as late",
            get(&r, "in"),
            get(&r, "pushed"),
            get(&r, "late")
        ));
    }
    for field in ["duplicates", "invalid"] {
        if get(&r, field) > 0 {
            problems.push(format!(
                "the resequencer counted {} {field}",
                get(&r, field)
            ));
        }
    }
    // A gap for a frame already given up on is stale.
    if get(&r, "gaps") + get(&r, "stale-gaps") != get(&p, "dropped") {
        problems.push(format!(
            "{} frames dropped by the pool but {} named by gaps",
            get(&p, "dropped"),
            get(&r, "gaps") + get(&r, "stale-gaps")
        ));
    }
    if log.frames != get(&r, "pushed") || log.out_of_order > 0 {
        problems.push(format!(
            "the sink saw {} frames ({} out of order) of {} pushed",
            log.frames,
            log.out_of_order,
            get(&r, "pushed")
        ));
    }
    if log.labels.values().sum::<u64>() != log.frames {
        problems.push("a frame reached the sink without its analysis".to_string());
    }
    if !problems.is_empty() {
        return Err(format!("not every frame is accounted for: {}", problems.join("; ")).into());
    }
    if size == 0 {
        return Err(format!("{} is empty", options.output).into());
    }
    println!("order: ok, ledger: ok");
    Ok(())
}
