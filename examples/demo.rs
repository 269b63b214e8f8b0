//! The main job: live pipelines through all three elements, written to an MP4 file.
//!
//! ```text
//! videotestsrc is-live=true pattern=ball ! 640x360@30
//!   ! frameanalyzer                      GPU through wgpu when there is an adapter, else CPU
//!   ! enrichpool name=detector workers=6 leaky=downstream on-error=drop
//!                interval=2 carry-forward=200 ms
//!                                        stage 1, a Rust "detector": 10–110 ms per frame it
//!                                        runs on (every other one), one detection (the
//!                                        moving ball), one failure in 50; the frames between
//!                                        carry its last detection forward, marked stale
//!   ! enrichpool name=classifier workers=4 infer-on=rois roi-types=ball overlay=true
//!                                        stage 2, a Rust "classifier" on the crop of every
//!                                        ball box (5–15 ms, the crops of a frame in
//!                                        parallel): bright or dim, by the crop's luma; the
//!                                        overlay draws boxes, per-region captions and a
//!                                        text line per frame
//!   ! resequencer latency=300 ms
//!   ! metapublish location=demo.jsonl    every frame's results as a JSON line, in order
//!   ! tee ! x264enc ! mp4mux ! filesink  (and a window when a display exists)
//! ```
//!
//! With `--streams N` (N > 1), N such cameras (balls of different colours) share one pool
//! per stage (`shared-pool=demo`, 6 + 2·(N−1) workers, and `shared-pool=demo-classify`,
//! 4 + (N−1)) and meet in a `compositor` mosaic (1280×720, a tile per camera) before the
//! encoder.
//!
//! It runs for a fixed time (`--seconds N`, default 10) with a progress line every second
//! (one per camera with several), then sends EOS, prints a summary per camera (every frame
//! in accounted for: reached the sink, dropped by a pool by reason, or given up on by the
//! resequencer and dropped when it came late), what reuse saved and what the classifier did,
//! the reorder depth, end-to-end latency p50/p99 and per-worker throughput, and checks that
//! every frame is accounted for: pushed by both pools (then pushed by the resequencer and
//! seen by the sink in order with its analysis, or given up on past its deadline and counted
//! `late`) or dropped by one (then released by a gap). `--output PATH` (default `demo.mp4`),
//! `--snapshot PATH` writes one frame (the first from the 60th on) as PNG, `--no-window`
//! never opens a window. The records go beside the video: `demo.jsonl` for `demo.mp4`
//! (`demo-cam0.jsonl`, ... with several cameras); the summary counts their lines and checks
//! that there is a frame record for every frame the resequencer pushed.

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
    frames: u64,
    out_of_order: u64,
    last: Option<u64>,
    labels: std::collections::BTreeMap<String, u64>,
}

struct Options {
    streams: usize,
    seconds: u64,
    output: String,
    snapshot: Option<String>,
    window: bool,
}

fn options() -> Result<Options, Box<dyn std::error::Error>> {
    let mut o = Options {
        streams: 1,
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
            "--streams" => {
                o.streams = value()?.parse()?;
                if !(1..=16).contains(&o.streams) {
                    return Err("--streams takes 1 to 16".into());
                }
            }
            "--output" => o.output = value()?,
            "--snapshot" => o.snapshot = Some(value()?),
            "--no-window" => o.window = false,
            "-h" | "--help" => {
                println!(
                    "usage: demo [--streams N] [--seconds N] [--output FILE.mp4] [--snapshot FILE.png] [--no-window]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(o)
}

/// The records' file beside the video: `demo.mp4` → `demo.jsonl` (`demo-cam1.jsonl`).
fn jsonl_path(video: &str, camera: Option<usize>) -> String {
    let path = std::path::Path::new(video);
    let stem = path
        .file_stem()
        .map_or("demo".into(), |s| s.to_string_lossy());
    let name = match camera {
        Some(i) => format!("{stem}-cam{i}.jsonl"),
        None => format!("{stem}.jsonl"),
    };
    path.with_file_name(name).to_string_lossy().into_owned()
}

fn make(factory: &str) -> Result<gst::Element, Box<dyn std::error::Error>> {
    gst::ElementFactory::make(factory).build().map_err(|_| {
        format!("GStreamer element `{factory}` is missing (./dev.sh installs its package)").into()
    })
}

/// Stage 1, the detector: uneven "inference" so frames finish out of order, a detection
/// around the largest moving region, and one failure in fifty (a gap, with on-error=drop).
fn install_detector(pool: &EnrichPool) {
    pool.set_handler(|job| {
        let seq = SeqMeta::read(job.buffer)
            .and_then(Result::ok)
            .map_or(0, |m| m.seq);
        let work_ms = 10 + seq.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) % 101;
        std::thread::sleep(Duration::from_millis(work_ms));
        // (An even frame: with interval=2 the detector runs on even frames only.)
        if seq % 50 == 48 {
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

/// Stage 2, the classifier, once per ball box on its crop (the luma, GRAY8, of the I420
/// frame): a little uneven work, then `bright` or `dim` by the crop's mean luma.
fn install_classifier(pool: &EnrichPool) {
    pool.set_handler(|job| {
        let Some(roi) = job.roi else {
            return Ok(Verdict::Keep);
        };
        let mean = {
            let map = job.buffer.map_readable().map_err(|e| e.to_string())?;
            map.iter().map(|&b| b as u64).sum::<u64>() as f64 / map.len().max(1) as f64
        };
        let work_ms = 5 + (roi.x as u64 * 7 + roi.y as u64 * 13) % 11;
        std::thread::sleep(Duration::from_millis(work_ms));
        job.outputs
            .set("label", if mean >= 48.0 { "bright" } else { "dim" });
        job.outputs.set("luma", mean);
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

/// One camera: its elements and what its sink side saw.
struct Camera {
    name: String,
    analyzer: gst::Element,
    detector: EnrichPool,
    classifier: EnrichPool,
    reseq: gst::Element,
    publish: gst::Element,
    /// Where `publish` writes.
    jsonl: String,
    log: Arc<Mutex<SinkLog>>,
}

impl Camera {
    /// The two pools' stats as one pool's: in at the detector, pushed by the classifier,
    /// dropped by either (by reason); and the stages' own.
    fn pool_stats(&self) -> (gst::Structure, gst::Structure, gst::Structure) {
        let d = self.detector.property::<gst::Structure>("stats");
        let c = self.classifier.property::<gst::Structure>("stats");
        let mut both = gst::Structure::builder("pools")
            .field("in", get(&d, "in"))
            .field("pushed", get(&c, "pushed"))
            .field("in-flight", get(&d, "in-flight") + get(&c, "in-flight"));
        for f in [
            "dropped",
            "dropped-failed",
            "dropped-leaked",
            "dropped-timeout",
            "dropped-dropped",
        ] {
            both = both.field(f, get(&d, f) + get(&c, f));
        }
        (both.build(), d, c)
    }
}

/// The cameras' balls' colours (ARGB), in turn.
const COLOURS: [u32; 4] = [0xffffffff, 0xffffd040, 0xff40ff80, 0xff60a0ff];

/// Adds camera `index` (of `count`) to `pipeline`, up to its resequencer: a `tile`-sized
/// live ball through frameanalyzer, enrichpool (shared by name when there are several)
/// and a resequencer, whose src pad it returns. What leaves it is counted in the log.
fn add_camera(
    pipeline: &gst::Pipeline,
    index: usize,
    count: usize,
    tile: (i32, i32),
    workers: u32,
    jsonl: String,
) -> Result<(Camera, gst::Element), Box<dyn std::error::Error>> {
    let name = format!("cam{index}");
    let src = gst::ElementFactory::make("videotestsrc")
        .property("is-live", true)
        .property_from_str("pattern", "ball")
        .property("foreground-color", COLOURS[index % COLOURS.len()])
        .build()?;
    let caps = gst::ElementFactory::make("capsfilter")
        .property(
            "caps",
            gst::Caps::builder("video/x-raw")
                .field("format", "I420")
                .field("width", tile.0)
                .field("height", tile.1)
                .field("framerate", gst::Fraction::new(30, 1))
                .build(),
        )
        .build()?;
    let analyzer = gst::ElementFactory::make("frameanalyzer")
        .name(format!("frameanalyzer-{name}"))
        .build()?;
    let mut detector = gst::ElementFactory::make("enrichpool")
        .name(format!("enrichpool-{name}"))
        .property("workers", workers)
        .property("max-size-buffers", 8u32)
        .property_from_str("leaky", "downstream")
        .property_from_str("on-error", "drop")
        .property("interval", 2u32)
        .property("carry-forward", 200_000_000u64);
    let mut classifier = gst::ElementFactory::make("enrichpool")
        .name(format!("classifier-{name}"))
        .property("workers", if count > 1 { 3 + count as u32 } else { 4 })
        .property("max-size-buffers", 8u32)
        .property_from_str("leaky", "downstream")
        .property_from_str("on-error", "drop")
        .property_from_str("infer-on", "rois")
        .property("roi-types", "ball")
        .property("overlay", true);
    if count > 1 {
        detector = detector.property("shared-pool", "demo");
        classifier = classifier.property("shared-pool", "demo-classify");
    }
    let as_pool = |e: gst::Element| e.downcast::<EnrichPool>().map_err(|_| "an EnrichPool");
    let detector = as_pool(detector.build()?)?;
    let classifier = as_pool(classifier.build()?)?;
    install_detector(&detector);
    install_classifier(&classifier);
    let reseq = gst::ElementFactory::make("resequencer")
        .name(format!("resequencer-{name}"))
        .property("latency", 300_000_000u64)
        .build()?;
    // The results, in order, off the streaming thread.
    let publish = gst::ElementFactory::make("metapublish")
        .name(format!("metapublish-{name}"))
        .property("location", &jsonl)
        .build()?;
    let chain = [
        &src,
        &caps,
        &analyzer,
        detector.upcast_ref(),
        classifier.upcast_ref(),
        &reseq,
        &publish,
    ];
    pipeline.add_many(chain)?;
    gst::Element::link_many(chain)?;
    let log = Arc::new(Mutex::new(SinkLog::default()));
    let probe_log = log.clone();
    reseq
        .static_pad("src")
        .ok_or("resequencer has a src pad")?
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(buffer)) = &info.data {
                probe_log.lock().unwrap().record(buffer);
            }
            gst::PadProbeReturn::Ok
        });
    let camera = Camera {
        name,
        analyzer,
        detector,
        classifier,
        reseq: reseq.clone(),
        publish: publish.clone(),
        jsonl,
        log,
    };
    Ok((camera, publish))
}

impl SinkLog {
    fn record(&mut self, buffer: &gst::BufferRef) {
        self.frames += 1;
        if let Some(Ok(a)) = FrameAnalysis::read(buffer) {
            *self.labels.entry(a.label.as_str().to_string()).or_default() += 1;
        }
        if let Some(Ok(meta)) = SeqMeta::read(buffer) {
            if self.last.is_some_and(|last| meta.seq <= last) {
                self.out_of_order += 1;
            }
            self.last = Some(meta.seq);
        }
    }
}

fn get(s: &gst::Structure, field: &str) -> u64 {
    s.get::<u64>(field).unwrap_or(0)
}

/// A camera's figures at the end.
struct Stats {
    /// Both pools as one (see [`Camera::pool_stats`]).
    pools: gst::Structure,
    detector: gst::Structure,
    classifier: gst::Structure,
    reseq: gst::Structure,
}

/// A camera's whole-stream account, and what does not add up in it.
fn account(camera: &Camera, stats: &Stats) -> (String, Vec<String>) {
    let Stats {
        pools: p,
        detector: d,
        classifier: c,
        reseq: r,
    } = stats;
    let log = camera.log.lock().unwrap();
    let name = &camera.name;
    // Every frame in: it reached the sink, or the pool dropped it (a gap), or the
    // resequencer had given up on it at its deadline and dropped it when it came (late).
    let line = format!(
        "  {name}: in {} = {} reached the sink + {} dropped by the pools (failed {}, leaked {}, \
         timeout {}, dropped {}) + {} came after the resequencer gave up on them (late)",
        get(p, "in"),
        log.frames,
        get(p, "dropped"),
        get(p, "dropped-failed"),
        get(p, "dropped-leaked"),
        get(p, "dropped-timeout"),
        get(p, "dropped-dropped"),
        get(r, "late"),
    );
    let mut problems = Vec::new();
    if get(p, "in") != log.frames + get(p, "dropped") + get(r, "late") {
        problems.push(format!("{name}: in != reached + dropped + late"));
    }
    if get(d, "pushed") != get(c, "in") {
        problems.push(format!(
            "{name}: the classifier got {} of the {} frames the detector pushed",
            get(c, "in"),
            get(d, "pushed")
        ));
    }
    if get(p, "in") != get(p, "pushed") + get(p, "dropped") {
        problems.push(format!(
            "{name}: the pools' ledger does not balance (in != pushed + dropped)"
        ));
    }
    if get(r, "in") != get(p, "pushed") {
        problems.push(format!(
            "{name}: the resequencer got {} of the {} frames the pool pushed",
            get(r, "in"),
            get(p, "pushed")
        ));
    }
    if get(r, "in") != get(r, "pushed") + get(r, "late") {
        problems.push(format!(
            "{name}: the resequencer got {} frames but pushed {} and dropped {} as late",
            get(r, "in"),
            get(r, "pushed"),
            get(r, "late")
        ));
    }
    for field in ["duplicates", "invalid"] {
        if get(r, field) > 0 {
            problems.push(format!(
                "{name}: the resequencer counted {} {field}",
                get(r, field)
            ));
        }
    }
    // A gap for a frame already given up on is stale.
    if get(r, "gaps") + get(r, "stale-gaps") != get(p, "dropped") {
        problems.push(format!(
            "{name}: {} frames dropped by the pools but {} named by gaps",
            get(p, "dropped"),
            get(r, "gaps") + get(r, "stale-gaps")
        ));
    }
    if log.frames != get(r, "pushed") || log.out_of_order > 0 {
        problems.push(format!(
            "{name}: the sink saw {} frames ({} out of order) of {} pushed",
            log.frames,
            log.out_of_order,
            get(r, "pushed")
        ));
    }
    if log.labels.values().sum::<u64>() != log.frames {
        problems.push(format!(
            "{name}: a frame reached the sink without its analysis"
        ));
    }
    (line, problems)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = options()?;
    gst::init()?;
    gstordered::plugin_register_static()?;

    let n = options.streams;
    // One camera: today's 640×360. Several: tiles of a 1280×720 mosaic.
    let cols = (1..=n).find(|c| c * c >= n).unwrap_or(n);
    let rows = n.div_ceil(cols);
    let tile = if n == 1 {
        (640, 360)
    } else {
        ((1280 / cols as i32) & !1, (720 / rows as i32) & !1)
    };
    let workers = 6 + 2 * (n as u32 - 1);
    let pipeline = gst::Pipeline::new();
    let tee = make("tee")?;
    pipeline.add(&tee)?;
    let mut cameras = Vec::with_capacity(n);
    if n == 1 {
        let (camera, out) = add_camera(
            &pipeline,
            0,
            1,
            tile,
            workers,
            jsonl_path(&options.output, None),
        )?;
        out.link(&tee)?;
        cameras.push(camera);
    } else {
        let mosaic = make("compositor")?;
        mosaic.set_property_from_str("background", "black");
        let mosaic_caps = gst::ElementFactory::make("capsfilter")
            .property(
                "caps",
                gst::Caps::builder("video/x-raw")
                    .field("width", 1280)
                    .field("height", 720)
                    .field("framerate", gst::Fraction::new(30, 1))
                    .build(),
            )
            .build()?;
        pipeline.add_many([&mosaic, &mosaic_caps])?;
        gst::Element::link_many([&mosaic, &mosaic_caps, &tee])?;
        for i in 0..n {
            let jsonl = jsonl_path(&options.output, Some(i));
            let (camera, out) = add_camera(&pipeline, i, n, tile, workers, jsonl)?;
            let queue = make("queue")?;
            pipeline.add(&queue)?;
            out.link(&queue)?;
            let pad = mosaic
                .request_pad_simple("sink_%u")
                .ok_or("compositor gives a sink pad")?;
            pad.set_property("xpos", (i % cols) as i32 * tile.0);
            pad.set_property("ypos", (i / cols) as i32 * tile.1);
            queue
                .static_pad("src")
                .ok_or("queue has a src pad")?
                .link(&pad)?;
            cameras.push(camera);
        }
    }
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
    pipeline.add_many([&file_queue, &convert, &encoder, &muxer, &filesink])?;
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
    // What the encoder gets (the mosaic with several cameras), for `--snapshot`.
    let encoded = Arc::new(Mutex::new((0u64, None::<gst::Sample>)));
    let snap = encoded.clone();
    tee.static_pad("sink")
        .ok_or("tee has a sink pad")?
        .add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            if let Some(gst::PadProbeData::Buffer(buffer)) = &info.data {
                let mut snap = snap.lock().unwrap();
                snap.0 += 1;
                if snap.0 > SNAPSHOT_FRAME && snap.1.is_none() {
                    snap.1 = Some(
                        gst::Sample::builder()
                            .buffer(buffer)
                            .caps_if_some(pad.current_caps().as_ref())
                            .build(),
                    );
                }
            }
            gst::PadProbeReturn::Ok
        });

    if n == 1 {
        println!(
            "demo: videotestsrc is-live=true pattern=ball ! frameanalyzer ! enrichpool \
             name=detector workers=6 leaky=downstream interval=2 carry-forward=200 ms ! \
             enrichpool name=classifier infer-on=rois roi-types=ball overlay=true ! resequencer \
             ! metapublish location={} ! x264enc ! mp4mux ! {} ({} s{})",
            cameras[0].jsonl,
            options.output,
            options.seconds,
            if options.window { ", and a window" } else { "" }
        );
    } else {
        println!(
            "demo: {n} × (videotestsrc is-live=true pattern=ball ! frameanalyzer ! enrichpool \
             shared-pool=demo leaky=downstream interval=2 carry-forward=200 ms ! enrichpool \
             shared-pool=demo-classify infer-on=rois roi-types=ball overlay=true ! \
             resequencer ! metapublish location={}) ! compositor {cols}×{rows} ! x264enc ! \
             mp4mux ! {} ({} s{}); one detector pool of {workers} workers, one classifier pool \
             of {} workers",
            jsonl_path(&options.output, Some(0)).replace("cam0", "camN"),
            options.output,
            options.seconds,
            if options.window { ", and a window" } else { "" },
            3 + n
        );
    }
    pipeline.set_state(gst::State::Playing)?;
    println!(
        "frameanalyzer runs on: {}",
        cameras[0].analyzer.property::<String>("backend")
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
            for camera in &cameras {
                let (p, _, _) = camera.pool_stats();
                let r = camera.reseq.property::<gst::Structure>("stats");
                let who = if n == 1 {
                    String::new()
                } else {
                    format!("{} ", camera.name)
                };
                println!(
                    "[{elapsed:3}s] {who}in {:4}  out {:4}  dropped {:3}  in-flight {}  reorder \
                     depth {:2}  latency p50 {:3} ms p99 {:3} ms",
                    get(&p, "in"),
                    get(&r, "pushed"),
                    get(&p, "dropped"),
                    get(&p, "in-flight"),
                    get(&r, "depth"),
                    get(&r, "latency-p50") / 1_000_000,
                    get(&r, "latency-p99") / 1_000_000,
                );
            }
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
    let all: Vec<Stats> = cameras
        .iter()
        .map(|c| {
            let (pools, detector, classifier) = c.pool_stats();
            Stats {
                pools,
                detector,
                classifier,
                reseq: c.reseq.property::<gst::Structure>("stats"),
            }
        })
        .collect();
    let stats: Vec<(gst::Structure, gst::Structure)> = all
        .iter()
        .map(|s| (s.pools.clone(), s.reseq.clone()))
        .collect();
    let pool_stats = cameras[0].detector.property::<gst::Structure>("pool-stats");
    pipeline.set_state(gst::State::Null)?;
    result?;

    println!("summary over {seconds:.1} s:");
    let mut problems = Vec::new();
    let mut labels = std::collections::BTreeMap::<String, u64>::new();
    for (camera, figures) in cameras.iter().zip(&all) {
        let (line, mut wrong) = account(camera, figures);
        println!("{line}");
        problems.append(&mut wrong);
        for (label, count) in &camera.log.lock().unwrap().labels {
            *labels.entry(label.clone()).or_default() += count;
        }
    }
    let total = |f: fn(&(gst::Structure, gst::Structure)) -> u64| stats.iter().map(f).sum::<u64>();
    println!(
        "  frames: in {}  out {}  dropped {} (leaked {}, failed {}, timeout {}, dropped {})",
        total(|(p, _)| get(p, "in")),
        total(|(_, r)| get(r, "pushed")),
        total(|(p, _)| get(p, "dropped")),
        total(|(p, _)| get(p, "dropped-leaked")),
        total(|(p, _)| get(p, "dropped-failed")),
        total(|(p, _)| get(p, "dropped-timeout")),
        total(|(p, _)| get(p, "dropped-dropped")),
    );
    let sum = |stage: fn(&Stats) -> &gst::Structure, f: &str| {
        all.iter().map(|s| get(stage(s), f)).sum::<u64>()
    };
    println!(
        "  reuse: the detector ran on {} frames; {} kept from it by interval=2, of which {} \
         carried its last detection forward (stale), {} past carry-forward, {} whose source \
         was lost",
        sum(|s| &s.detector, "in") - sum(|s| &s.detector, "skipped"),
        sum(|s| &s.detector, "skipped"),
        sum(|s| &s.detector, "carried"),
        sum(|s| &s.detector, "carry-expired"),
        sum(|s| &s.detector, "carry-missed"),
    );
    println!(
        "  classifier: {} ball regions classified on their crops (failed {}), {} frames \
         without one",
        sum(|s| &s.classifier, "rois-processed"),
        sum(|s| &s.classifier, "rois-failed"),
        sum(|s| &s.classifier, "pushed")
            - sum(|s| &s.classifier, "rois-processed").min(sum(|s| &s.classifier, "pushed")),
    );
    println!(
        "  given up on by the resequencer: {} (arrived after their deadline: {})",
        total(|(_, r)| get(r, "skipped")),
        total(|(_, r)| get(r, "late"))
    );
    println!(
        "  reorder: {} frames arrived early; depth max {} frames, held up to {} ms",
        total(|(_, r)| get(r, "reordered")),
        stats
            .iter()
            .map(|(_, r)| get(r, "max-depth"))
            .max()
            .unwrap_or(0),
        stats
            .iter()
            .map(|(_, r)| get(r, "max-hold"))
            .max()
            .unwrap_or(0)
            / 1_000_000
    );
    for (camera, (_, r)) in cameras.iter().zip(&stats) {
        let who = if n == 1 {
            String::new()
        } else {
            format!(" ({})", camera.name)
        };
        println!(
            "  end-to-end latency{who}: p50 {} ms, p99 {} ms, max {} ms",
            get(r, "latency-p50") / 1_000_000,
            get(r, "latency-p99") / 1_000_000,
            get(r, "latency-max") / 1_000_000
        );
    }
    if let Ok(workers) = pool_stats.get::<gst::Array>("worker-stats") {
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
    if n > 1
        && let Ok(members) = pool_stats.get::<gst::Array>("members")
    {
        let shares: Vec<String> = members
            .iter()
            .filter_map(|m| m.get::<gst::Structure>().ok())
            .map(|m| {
                format!(
                    "{} {:.0}%",
                    m.get::<String>("element").unwrap_or_default(),
                    100.0 * m.get::<f64>("share").unwrap_or(0.0)
                )
            })
            .collect();
        println!(
            "  shared pool `demo`: {} workers; share of their time: {}",
            get(&pool_stats, "workers"),
            shares.join(", ")
        );
    }
    println!("  labels at the sink: {labels:?}");
    let size = std::fs::metadata(&options.output).map_or(0, |m| m.len());
    println!("  written: {} ({} KiB)", options.output, size / 1024);
    // The records metapublish wrote: one per frame pushed, in order, and the gaps.
    for (camera, figures) in cameras.iter().zip(&all) {
        let text = std::fs::read_to_string(&camera.jsonl)?;
        let (mut frames, mut gaps, mut last) = (0u64, 0u64, None::<u64>);
        for line in text.lines() {
            let record: serde_json::Value = serde_json::from_str(line)?;
            match record["type"].as_str() {
                Some("frame") => {
                    frames += 1;
                    let seq = record["seq"].as_u64();
                    if last.is_some() && seq <= last {
                        problems.push(format!(
                            "{}: record of frame {seq:?} out of order",
                            camera.name
                        ));
                    }
                    last = seq;
                }
                Some("gap") => gaps += 1,
                _ => {}
            }
        }
        let p = camera.publish.property::<gst::Structure>("stats");
        println!(
            "  records: {} ({} lines: {frames} frames, {gaps} gaps; published {}, dropped {})",
            camera.jsonl,
            text.lines().count(),
            get(&p, "published"),
            get(&p, "dropped")
        );
        if frames != get(&figures.reseq, "pushed") {
            problems.push(format!(
                "{}: {frames} frame records for {} frames pushed",
                camera.name,
                get(&figures.reseq, "pushed")
            ));
        }
    }
    if let Some(path) = &options.snapshot {
        let sample = encoded
            .lock()
            .unwrap()
            .1
            .clone()
            .ok_or("the run ended before the snapshot frame")?;
        write_png(&sample, path)?;
        println!(
            "  snapshot (frame {} of the video): {path}",
            SNAPSHOT_FRAME + 1
        );
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
