//! The main job: a live pipeline through the resequencer.
//!
//! `videotestsrc is-live=true` → a stage that stamps sequence numbers, shuffles frames in
//! blocks and loses one frame in fifty → `resequencer` → `fakesink`. It runs for a fixed
//! time (`--seconds N`, default 10), prints the resequencer's stats every second, then sends
//! EOS and prints the final stats and whether the sink saw every frame in order.

#[path = "../tests/common/shuffle.rs"]
mod shuffle;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gst::prelude::*;
use gstordered::meta::SeqMeta;
use shuffle::{ShuffleConfig, shuffle};

/// What the sink saw: frames, and frames that came after a higher sequence number.
#[derive(Default)]
struct SinkLog {
    frames: u64,
    out_of_order: u64,
    last: Option<u64>,
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

    let frame = gst::ClockTime::from_nseconds(1_000_000_000 / 30);
    let config = ShuffleConfig {
        block: 6,
        stamp_seq: true,
        seed: 42,
        frame_duration: frame,
        lose_every: Some(50),
    };

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
    let stage = shuffle(config);
    let reseq = gst::ElementFactory::make("resequencer")
        .name("resequencer")
        .property("latency", 300_000_000u64)
        .property("stats-interval", 1_000_000_000u64)
        .build()?;
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", true)
        .property("async", false)
        .build()?;
    pipeline.add_many([
        &src,
        &caps,
        stage.sink.upcast_ref(),
        stage.src.upcast_ref(),
        &reseq,
        &sink,
    ])?;
    gst::Element::link_many([&src, &caps, stage.sink.upcast_ref()])?;
    gst::Element::link_many([stage.src.upcast_ref(), &reseq, &sink])?;

    let log = Arc::new(Mutex::new(SinkLog::default()));
    let probe_log = log.clone();
    sink.static_pad("sink")
        .ok_or("fakesink has a sink pad")?
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(buffer)) = &info.data {
                let mut log = probe_log.lock().unwrap();
                log.frames += 1;
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
        "demo: videotestsrc is-live=true ! shuffle(block {}, lose 1 in {}) ! resequencer ! fakesink, {seconds} s",
        config.block,
        config.lose_every.unwrap_or(0)
    );
    pipeline.set_state(gst::State::Playing)?;

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
                if let Some(s) = e.structure().filter(|s| s.name() == "resequencer-stats") {
                    let get = |f| s.get::<u64>(f).unwrap_or(0);
                    println!(
                        "  in {:5}  pushed {:5}  reordered {:4}  skipped {:3}  depth {:2}  max-hold {:4} ms",
                        get("in"),
                        get("pushed"),
                        get("reordered"),
                        get("skipped"),
                        get("depth"),
                        get("max-hold") / 1_000_000
                    );
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
    pipeline.set_state(gst::State::Null)?;
    result?;

    println!("final resequencer stats:");
    for (name, value) in stats.iter() {
        println!(
            "  {:12} {}",
            name.as_str(),
            value.serialize().map(|v| v.to_string()).unwrap_or_default()
        );
    }
    let log = log.lock().unwrap();
    let pushed = stats.get::<u64>("pushed")?;
    println!(
        "sink: {} frames, {} out of order; {} lost on purpose were skipped",
        log.frames,
        log.out_of_order,
        stats.get::<u64>("skipped")?
    );
    if log.out_of_order > 0 || log.frames != pushed {
        return Err("the sink did not see every pushed frame in order".into());
    }
    println!("order: ok");
    Ok(())
}
