//! Camera pipelines on a shared pool, for tests and benches: `videotestsrc ! enrichpool
//! shared-pool=… ! resequencer ! appsink`, each in a pipeline of its own, with what reached
//! the sink recorded.

// Each test or bench crate that includes this uses what it needs of it.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use gst::prelude::*;
use gstordered::EnrichPool;
use gstordered::meta::SeqMeta;

/// One camera's pipeline and what its sink received.
pub struct Camera {
    pub pipeline: gst::Pipeline,
    pub pool: EnrichPool,
    pub reseq: gst::Element,
    /// The sequence numbers that reached the sink, in order.
    pub seqs: Arc<Mutex<Vec<u64>>>,
    /// Per frame that reached the sink: its running time there minus its ingress (stamped
    /// by the pool when it came in), in ns.
    pub latencies: Arc<Mutex<Vec<u64>>>,
}

impl Camera {
    /// `frames` frames of a `width`×`height` GRAY8 ball at 30 fps (live or not) through
    /// `enrichpool name=pool {pool_props}` and a resequencer into an appsink that keeps the
    /// sequence numbers. Not started.
    pub fn new(frames: u32, live: bool, pool_props: &str) -> Camera {
        Self::with_sink(frames, live, pool_props, "sync=false")
    }

    pub fn with_sink(frames: u32, live: bool, pool_props: &str, sink_props: &str) -> Camera {
        let desc = format!(
            "videotestsrc is-live={live} num-buffers={frames} pattern=ball ! \
             video/x-raw,format=GRAY8,width=64,height=48,framerate=30/1 ! \
             enrichpool name=pool {pool_props} ! resequencer name=reseq ! \
             appsink name=sink {sink_props}"
        );
        let pipeline = gst::parse::launch(&desc)
            .unwrap_or_else(|e| panic!("{desc}: {e}"))
            .downcast::<gst::Pipeline>()
            .unwrap();
        let pool = pipeline
            .by_name("pool")
            .unwrap()
            .downcast::<EnrichPool>()
            .unwrap();
        let reseq = pipeline.by_name("reseq").unwrap();
        let sink = pipeline
            .by_name("sink")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        let seqs = Arc::new(Mutex::new(Vec::new()));
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let (s, l) = (seqs.clone(), latencies.clone());
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
                    if let Some(Ok(meta)) = SeqMeta::read(buffer) {
                        s.lock().unwrap().push(meta.seq);
                        if let Some(now) = sink.current_running_time()
                            && meta.ingress > 0
                        {
                            l.lock()
                                .unwrap()
                                .push(now.nseconds().saturating_sub(meta.ingress));
                        }
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        Camera {
            pipeline,
            pool,
            reseq,
            seqs,
            latencies,
        }
    }

    pub fn start(&self) {
        self.pipeline.set_state(gst::State::Playing).unwrap();
    }

    /// Waits up to `limit` for EOS; panics on an error message or the limit.
    pub fn wait_eos(&self, limit: gst::ClockTime) {
        let bus = self.pipeline.bus().unwrap();
        match bus.timed_pop_filtered(limit, &[gst::MessageType::Eos, gst::MessageType::Error]) {
            Some(m) if m.type_() == gst::MessageType::Eos => {}
            Some(m) => panic!("error: {m:?}"),
            None => panic!("no EOS within {limit}"),
        }
    }

    pub fn stop(&self) {
        self.pipeline.set_state(gst::State::Null).unwrap();
    }

    pub fn seqs(&self) -> Vec<u64> {
        self.seqs.lock().unwrap().clone()
    }

    /// A field of the pool's `stats`.
    pub fn stat(&self, field: &str) -> u64 {
        self.pool
            .property::<gst::Structure>("stats")
            .get::<u64>(field)
            .unwrap()
    }
}
