//! Pipelines from a `gst-launch-1.0` description, and their `appsink name=sink`, for tests
//! and benches. Test code: a description that does not parse, or has no such sink, panics.

// Each test or bench crate that includes this uses what it needs of it.
#![allow(dead_code)]

use gst::prelude::*;

/// The pipeline `desc` describes.
pub fn pipeline(desc: &str) -> gst::Pipeline {
    gst::parse::launch(desc)
        .unwrap_or_else(|e| panic!("{desc}: {e}"))
        .downcast::<gst::Pipeline>()
        .expect("a description of several elements is a pipeline")
}

/// The pipeline's `appsink name=sink`.
pub fn app_sink(pipeline: &gst::Pipeline) -> gst_app::AppSink {
    pipeline
        .by_name("sink")
        .expect("an element named sink")
        .downcast::<gst_app::AppSink>()
        .expect("sink is an appsink")
}

/// What a run to EOS produced: each sample at `appsink name=sink`, the warnings posted, and
/// the element named `pool`, if any.
pub struct Run {
    pub samples: Vec<gst::Sample>,
    pub warnings: Vec<String>,
    pub pool: Option<gst::Element>,
    pub pipeline: gst::Pipeline,
}

/// Runs `desc` to EOS within `limit` (an error message fails the test); `feed` runs once the
/// pipeline is PLAYING (it pushes into an `appsrc`, if there is one). The pipeline is left
/// in NULL, its elements' stats kept.
pub fn run(desc: &str, limit: std::time::Duration, feed: impl FnOnce(&gst::Pipeline)) -> Run {
    let p = pipeline(desc);
    let sink = app_sink(&p);
    let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let got = samples.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                got.lock().unwrap().push(sink.pull_sample().unwrap());
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    p.set_state(gst::State::Playing).unwrap();
    feed(&p);
    let bus = p.bus().unwrap();
    let mut warnings = Vec::new();
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(!left.is_zero(), "{desc}: no EOS within {limit:?}");
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_nseconds(left.as_nanos() as u64)) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{desc}: {} ({:?})", e.error(), e.debug()),
            gst::MessageView::Warning(w) => warnings.push(w.error().to_string()),
            _ => {}
        }
    }
    p.set_state(gst::State::Null).unwrap();
    let samples = std::mem::take(&mut *samples.lock().unwrap());
    Run {
        samples,
        warnings,
        pool: p.by_name("pool"),
        pipeline: p,
    }
}
