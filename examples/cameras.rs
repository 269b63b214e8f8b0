//! A camera manager: a pipeline per camera (so that one camera's failure stays its own), all
//! on one shared pool of workers (`enrichpool shared-pool=cameras`). Cameras are added and
//! removed while the others run; each is checked in order with its own ledger, and the
//! pool's side (`pool-stats`) is printed as cameras come and go.
//!
//! `cargo run --example cameras [-- CAMERAS]` (default 6): starts CAMERAS/2 cameras, adds
//! the others one by one, removes the first ones while the rest run, then stops them all.
//! Exits non-zero if a camera's frames are missing or out of order.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstordered::EnrichPool;
use gstordered::enrichpool::Verdict;
use gstordered::meta::{Enrichment, SeqMeta};

/// The shared pool's workers: fewer than a private pool per camera would start.
const WORKERS: u32 = 4;

struct Camera {
    name: String,
    pipeline: gst::Pipeline,
    pool: EnrichPool,
    /// Sequence numbers that reached the sink, each with its enrichment or not.
    seen: Arc<Mutex<Vec<(u64, bool)>>>,
}

impl Camera {
    fn start(index: usize) -> Result<Camera, Box<dyn std::error::Error>> {
        let name = format!("camera-{index}");
        let pipeline = gst::parse::launch(&format!(
            "videotestsrc is-live=true pattern=ball \
             ! video/x-raw,format=GRAY8,width=320,height=240,framerate=30/1 \
             ! enrichpool name=pool shared-pool=cameras workers={WORKERS} \
               leaky=downstream max-size-buffers=8 \
             ! resequencer ! appsink name=sink sync=false"
        ))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "a pipeline")?;
        pipeline.set_property("name", &name);
        let pool = pipeline
            .by_name("pool")
            .ok_or("pool")?
            .downcast::<EnrichPool>()
            .map_err(|_| "an EnrichPool")?;
        // The enrichment: the frame's mean brightness, with a little uneven work.
        pool.set_handler(|job| {
            let map = job.buffer.map_readable().map_err(|e| e.to_string())?;
            let mean = map.iter().map(|&b| b as u64).sum::<u64>() as f64 / map.len() as f64;
            drop(map);
            std::thread::sleep(Duration::from_millis(2 + job.worker as u64 % 4));
            job.outputs.set("brightness", mean);
            Ok(Verdict::Keep)
        });
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let sink = pipeline
            .by_name("sink")
            .ok_or("sink")?
            .downcast::<gst_app::AppSink>()
            .map_err(|_| "an AppSink")?;
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
                    if let Some(Ok(seq)) = SeqMeta::read(buffer) {
                        let enriched = Enrichment::read(buffer).is_some();
                        log.lock().unwrap().push((seq.seq, enriched));
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        pipeline.set_state(gst::State::Playing)?;
        println!("+ {name}");
        Ok(Camera {
            name,
            pipeline,
            pool,
            seen,
        })
    }

    /// Errors its pipeline posted so far.
    fn check_bus(&self) -> Result<(), String> {
        let bus = self.pipeline.bus().ok_or("a bus")?;
        while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
            if let gst::MessageView::Error(e) = msg.view() {
                return Err(format!("{}: {}", self.name, e.error()));
            }
        }
        Ok(())
    }

    /// Stops it (the others go on) and checks what it delivered: increasing sequence
    /// numbers, each frame enriched, its ledger balanced.
    fn stop(self) -> Result<(), String> {
        self.check_bus()?;
        // EOS first, so that every frame in the pool leaves before the pipeline stops.
        self.pipeline.send_event(gst::event::Eos::new());
        let bus = self.pipeline.bus().ok_or("a bus")?;
        bus.timed_pop_filtered(
            gst::ClockTime::from_seconds(30),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .filter(|m| m.type_() == gst::MessageType::Eos)
        .ok_or_else(|| format!("{}: no EOS", self.name))?;
        let stats = self.pool.property::<gst::Structure>("stats");
        self.pipeline
            .set_state(gst::State::Null)
            .map_err(|e| e.to_string())?;
        let seen = self.seen.lock().unwrap();
        let ordered = seen.windows(2).all(|w| w[0].0 < w[1].0);
        let enriched = seen.iter().all(|s| s.1);
        let get = |f: &str| stats.get::<u64>(f).unwrap_or(0);
        println!(
            "- {}: {} frames in order (in {}, pushed {}, dropped {})",
            self.name,
            seen.len(),
            get("in"),
            get("pushed"),
            get("dropped")
        );
        if seen.is_empty() || !ordered || !enriched || get("in") != get("pushed") + get("dropped") {
            return Err(format!(
                "{}: frames missing, out of order or bare",
                self.name
            ));
        }
        Ok(())
    }
}

/// The shared pool as one member sees it.
fn print_pool(camera: &Camera) {
    let stats = camera.pool.property::<gst::Structure>("pool-stats");
    let members = stats.get::<gst::Array>("members").map_or(0, |m| m.len());
    println!(
        "  pool `{}`: {} workers, {} cameras, {} threads",
        stats.get::<String>("shared-pool").unwrap_or_default(),
        stats.get::<u64>("workers").unwrap_or(0),
        members,
        stats.get::<u64>("threads").unwrap_or(0),
    );
}

/// Lets the cameras run for `d` while watching their buses.
fn run_for(cameras: &[Camera], d: Duration) -> Result<(), String> {
    let until = Instant::now() + d;
    while Instant::now() < until {
        for c in cameras {
            c.check_bus()?;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let total: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 6,
    };
    if total < 2 {
        return Err("at least 2 cameras".into());
    }
    gst::init()?;
    gstordered::plugin_register_static()?;

    let mut cameras = Vec::new();
    for i in 0..total / 2 {
        cameras.push(Camera::start(i)?);
    }
    run_for(&cameras, Duration::from_secs(1))?;
    print_pool(&cameras[0]);
    // More cameras join the running pool.
    for i in total / 2..total {
        cameras.push(Camera::start(i)?);
        run_for(&cameras, Duration::from_millis(300))?;
    }
    print_pool(&cameras[0]);
    // The first cameras leave while the others run.
    for _ in 0..total / 2 {
        let camera = cameras.remove(0);
        camera.stop()?;
        run_for(&cameras, Duration::from_millis(300))?;
    }
    print_pool(&cameras[0]);
    for camera in cameras.drain(..) {
        camera.stop()?;
    }
    println!("{total} cameras on one shared pool: every one in order");
    Ok(())
}
