//! The main job: a live pipeline through all three elements.
//!
//! `videotestsrc is-live=true` → `frameanalyzer` (GPU through wgpu when there is an adapter,
//! lavapipe included, else the CPU) → `enrichpool` (6 workers running a Rust handler that takes
//! 10–110 ms a frame and fails one frame in fifty; `leaky=downstream` so the live source is
//! never stalled) → `resequencer` → `fakesink`. It runs for a fixed time (`--seconds N`,
//! default 10), prints the stats of both elements every second, then sends EOS and prints
//! the final stats and whether the sink saw every frame in order.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gst::prelude::*;
use gstordered::EnrichPool;
use gstordered::enrichpool::Verdict;
use gstordered::meta::{FrameAnalysis, SeqMeta};

/// What the sink saw: frames, and frames that came after a higher sequence number.
#[derive(Default)]
struct SinkLog {
    frames: u64,
    out_of_order: u64,
    last: Option<u64>,
    /// Frames per analysis label, as they reached the sink.
    labels: std::collections::BTreeMap<String, u64>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut seconds = 10u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => seconds = args.next().ok_or("--seconds needs a value")?.parse()?,
            "-h" | "--help" => {
                println!("usage: demo [--seconds N]");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }

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
                .field("width", 320)
                .field("height", 240)
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
        .property("stats-interval", 1_000_000_000u64)
        .build()?
        .downcast::<EnrichPool>()
        .map_err(|_| "enrichpool is an EnrichPool")?;
    // The enrichment: heavy, uneven work, so frames finish out of order; one in fifty fails.
    pool.set_handler(|job| {
        let seq = SeqMeta::read(job.buffer)
            .and_then(Result::ok)
            .map_or(0, |m| m.seq);
        let work_ms = 10 + seq.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) % 101;
        std::thread::sleep(Duration::from_millis(work_ms));
        if seq % 50 == 49 {
            return Err(format!("simulated failure on frame {seq}"));
        }
        let label = FrameAnalysis::read(job.buffer)
            .and_then(Result::ok)
            .map(|a| a.label.as_str());
        job.outputs.set("work-ms", work_ms);
        job.outputs.set("saw-label", label.unwrap_or("none"));
        Ok(Verdict::Keep)
    });
    let reseq = gst::ElementFactory::make("resequencer")
        .name("resequencer")
        .property("latency", 300_000_000u64)
        .property("stats-interval", 1_000_000_000u64)
        .build()?;
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", true)
        .build()?;
    pipeline.add_many([&src, &caps, &analyzer, pool.upcast_ref(), &reseq, &sink])?;
    gst::Element::link_many([&src, &caps, &analyzer, pool.upcast_ref(), &reseq, &sink])?;

    let log = Arc::new(Mutex::new(SinkLog::default()));
    let probe_log = log.clone();
    sink.static_pad("sink")
        .ok_or("fakesink has a sink pad")?
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
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
                }
            }
            gst::PadProbeReturn::Ok
        });

    println!(
        "demo: videotestsrc is-live=true ! frameanalyzer ! enrichpool workers=6 leaky=downstream ! resequencer ! fakesink, {seconds} s"
    );
    pipeline.set_state(gst::State::Playing)?;
    println!(
        "frameanalyzer runs on: {}",
        analyzer.property::<String>("backend")
    );

    // EOS after the requested time, from another thread; the bus loop runs until it arrives.
    let eos_pipeline = pipeline.downgrade();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(seconds));
        if let Some(p) = eos_pipeline.upgrade() {
            p.send_event(gst::event::Eos::new());
        }
    });

    let bus = pipeline.bus().ok_or("pipeline has a bus")?;
    let mut result: Result<(), Box<dyn std::error::Error>> = Ok(());
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(seconds + 30)) {
        match msg.view() {
            gst::MessageView::Element(e) => {
                let Some(s) = e.structure() else { continue };
                let get = |f| s.get::<u64>(f).unwrap_or(0);
                match s.name().as_str() {
                    "enrichpool-stats" => println!(
                        "  enrichpool:  in {:4}  pushed {:4}  dropped {:3} (leaked {}, failed {})  in-flight {}",
                        get("in"),
                        get("pushed"),
                        get("dropped"),
                        get("dropped-leaked"),
                        get("dropped-failed"),
                        get("in-flight")
                    ),
                    "resequencer-stats" => println!(
                        "  resequencer: pushed {:4}  reordered {:4}  gaps {:3}  depth {:2}  max-hold {:3} ms",
                        get("pushed"),
                        get("reordered"),
                        get("gaps"),
                        get("depth"),
                        get("max-hold") / 1_000_000
                    ),
                    _ => {}
                }
            }
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(err) => {
                result = Err(format!("{} ({:?})", err.error(), err.debug()).into());
                break;
            }
            _ => {}
        }
    }

    let stats = reseq.property::<gst::Structure>("stats");
    let analyzer_stats = analyzer.property::<gst::Structure>("stats");
    let pool_stats = pool.property::<gst::Structure>("stats");
    pipeline.set_state(gst::State::Null)?;
    result?;

    for (title, s) in [
        ("frameanalyzer", &analyzer_stats),
        ("enrichpool", &pool_stats),
        ("resequencer", &stats),
    ] {
        println!("final {title} stats:");
        for (name, value) in s.iter() {
            if let Ok(v) = value.get::<u64>() {
                println!("  {:16} {v}", name.as_str());
            }
        }
    }
    let log = log.lock().unwrap();
    let get = |s: &gst::Structure, f: &str| s.get::<u64>(f).unwrap_or(0);
    println!(
        "sink: {} frames, {} out of order; the pool took {} and dropped {} (each named in a gap)",
        log.frames,
        log.out_of_order,
        get(&pool_stats, "in"),
        get(&pool_stats, "dropped")
    );
    println!("labels at the sink: {:?}", log.labels);
    let balanced =
        get(&pool_stats, "in") == get(&pool_stats, "pushed") + get(&pool_stats, "dropped");
    let analyzed = log.labels.values().sum::<u64>() == log.frames;
    if log.out_of_order > 0 || log.frames != get(&stats, "pushed") || !balanced || !analyzed {
        return Err(
            "the sink did not see every pushed frame in order, or the ledger does not balance"
                .into(),
        );
    }
    println!("order: ok, ledger: ok");
    Ok(())
}
