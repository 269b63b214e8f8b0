//! What the benches share: timing frames through a pipeline from its `appsrc name=src`.

use std::time::Instant;

use gst::prelude::*;

/// Sets `pipeline` playing, pushes `frames` into its appsrc `src` (made as they are pushed,
/// so their making is timed too when the iterator makes them), sends EOS and waits for it;
/// returns the seconds from the first push to EOS. Panics on a pipeline error. The caller
/// reads what it needs and sets the pipeline to NULL.
pub fn push_to_eos(pipeline: &gst::Pipeline, frames: impl IntoIterator<Item = gst::Buffer>) -> f64 {
    let src = pipeline
        .by_name("src")
        .expect("an appsrc named src")
        .downcast::<gst_app::AppSrc>()
        .expect("src is an appsrc");
    pipeline.set_state(gst::State::Playing).unwrap();
    let start = Instant::now();
    for frame in frames {
        src.push_buffer(frame).unwrap();
    }
    src.end_of_stream().unwrap();
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(600),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("EOS within 10 minutes");
    let secs = start.elapsed().as_secs_f64();
    if let gst::MessageView::Error(e) = msg.view() {
        panic!("pipeline error: {} ({:?})", e.error(), e.debug());
    }
    secs
}
