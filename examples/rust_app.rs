//! A Rust application: builds `videotestsrc ! frameanalyzer ! enrichpool ! resequencer !
//! appsink`, installs a Rust closure as the enrichment, reads every frame's metas at the
//! appsink and prints them, and reads the elements' stats messages from the bus.
//!
//! `cargo run --example rust_app [-- FRAMES]` (default 90). Exits non-zero if a frame is
//! missing, out of order or without its results.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gst::prelude::*;
use gstordered::EnrichPool;
use gstordered::enrichpool::Verdict;
use gstordered::meta::{Enrichment, FrameAnalysis, SeqMeta};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let frames: u64 = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 90,
    };
    gst::init()?;
    // Links the plugin into the program; an installed libgstordered.so works the same way.
    gstordered::plugin_register_static()?;

    let pipeline = gst::parse::launch(&format!(
        "videotestsrc is-live=true num-buffers={frames} pattern=ball \
         ! video/x-raw,format=RGBA,width=320,height=240,framerate=30/1 \
         ! frameanalyzer device=cpu \
         ! enrichpool name=pool workers=4 stats-interval=1000000000 \
         ! resequencer name=reseq stats-interval=1000000000 \
         ! appsink name=sink sync=false"
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| "a pipeline")?;

    // The enrichment: the mean of the red channel (a stand-in for a model), computed on the
    // worker thread; uneven work so that frames finish out of order.
    let pool = pipeline
        .by_name("pool")
        .ok_or("pool")?
        .downcast::<EnrichPool>()
        .map_err(|_| "an EnrichPool")?;
    pool.set_handler(|job| {
        let map = job.buffer.map_readable().map_err(|e| e.to_string())?;
        let red: u64 = map.chunks_exact(4).map(|px| px[0] as u64).sum();
        let mean = red as f64 / (map.len() / 4) as f64;
        drop(map);
        std::thread::sleep(Duration::from_millis(
            5 + (mean as u64 % 7) * 3 + job.worker as u64,
        ));
        job.outputs.set("red-mean", mean);
        Ok(Verdict::Keep)
    });

    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = pipeline
        .by_name("sink")
        .ok_or("sink")?
        .downcast::<gst_app::AppSink>()
        .map_err(|_| "an AppSink")?;
    let log = seen.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
                let seq = SeqMeta::read(buffer).and_then(Result::ok);
                let analysis = FrameAnalysis::read(buffer).and_then(Result::ok);
                let enrichment = Enrichment::read(buffer).and_then(Result::ok);
                let rois = buffer
                    .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
                    .count();
                if let (Some(seq), Some(a), Some(e)) = (&seq, &analysis, &enrichment) {
                    println!(
                        "frame {:3}  label {:9}  luma {:5.1}  motion {:.2}  rois {}  worker {}  red-mean {:6.2}",
                        seq.seq,
                        a.label.as_str(),
                        a.luma_mean,
                        a.motion,
                        rois,
                        e.worker,
                        e.outputs.get::<f64>("red-mean").unwrap_or(f64::NAN)
                    );
                }
                log.lock().unwrap().push((seq.map(|s| s.seq), analysis.is_some(), enrichment.is_some()));
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );

    pipeline.set_state(gst::State::Playing)?;
    let bus = pipeline.bus().ok_or("a bus")?;
    let mut result = Ok(());
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(120)) {
        match msg.view() {
            // The stats element messages: one structure per element, every stats-interval.
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure() {
                    let get = |f: &str| s.get::<u64>(f).unwrap_or(0);
                    match s.name().as_str() {
                        "enrichpool-stats" => println!(
                            "stats: enrichpool in {} pushed {} dropped {} in-flight {}",
                            get("in"),
                            get("pushed"),
                            get("dropped"),
                            get("in-flight")
                        ),
                        "resequencer-stats" => println!(
                            "stats: resequencer pushed {} reordered {} latency p50 {} ms p99 {} ms",
                            get("pushed"),
                            get("reordered"),
                            get("latency-p50") / 1_000_000,
                            get("latency-p99") / 1_000_000
                        ),
                        _ => {}
                    }
                }
            }
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(err) => {
                result = Err(format!("{} ({:?})", err.error(), err.debug()));
                break;
            }
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null)?;
    result?;

    let seen = seen.lock().unwrap();
    let in_order = seen
        .iter()
        .enumerate()
        .all(|(i, (seq, analysed, enriched))| *seq == Some(i as u64) && *analysed && *enriched);
    if seen.len() as u64 != frames || !in_order {
        return Err(format!("expected {frames} frames in order with their metas").into());
    }
    println!("{frames} frames in order, each with its analysis and enrichment");
    Ok(())
}
