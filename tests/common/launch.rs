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
