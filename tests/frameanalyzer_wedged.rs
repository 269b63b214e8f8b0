//! `frameanalyzer` when the GPU wedges: with `device=auto` the analysis moves to the CPU
//! twin with a warning and the stream goes on; with `device=gpu` it is an error, not a hang.
//! The GPU is made to look wedged by the fault-injection variable `ORDERED_FAULT_GPU_WEDGED`
//! (every frame fails as if it had not finished within `gpu-timeout`), set before any
//! backend starts: this file holds one test so that nothing else runs beside it.

use std::sync::{Arc, Mutex};

use gst::prelude::*;
use gst_check::Harness;
use gstordered::meta::FrameAnalysis;

/// `frameanalyzer device=DEVICE` on a 1080p frame, with a bus whose sync handler reads
/// `stats` while the streaming thread is inside the analysis (it must not wait for the frame).
fn wedged_gpu(
    device: &str,
) -> (
    Result<gst::FlowSuccess, gst::FlowError>,
    Vec<gst::Message>,
    Option<gst::Buffer>,
    gst::Structure,
) {
    let mut h = Harness::new("frameanalyzer");
    let element = h.element().unwrap();
    element.set_property_from_str("device", device);
    let bus = gst::Bus::new();
    let messages = Arc::new(Mutex::new(Vec::new()));
    let (m, weak) = (messages.clone(), element.downgrade());
    bus.set_sync_handler(move |_, msg| {
        if matches!(
            msg.view(),
            gst::MessageView::Warning(_) | gst::MessageView::Error(_)
        ) && let Some(element) = weak.upgrade()
        {
            // Posted from the streaming thread in the middle of the frame.
            let _ = element.property::<gst::Structure>("stats");
        }
        m.lock().unwrap().push(msg.clone());
        gst::BusSyncReply::Drop
    });
    element.set_bus(Some(&bus));
    let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Gray8, 1920, 1080)
        .fps(gst::Fraction::new(25, 1))
        .build()
        .unwrap();
    h.set_src_caps(info.to_caps().unwrap());
    let mut buffer = gst::Buffer::with_size(info.size()).unwrap();
    buffer
        .get_mut()
        .unwrap()
        .map_writable()
        .unwrap()
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = (i % 251) as u8);
    let res = h.push(buffer);
    let out = h.try_pull();
    let stats = element.property::<gst::Structure>("stats");
    let messages = messages.lock().unwrap().clone();
    (res, messages, out, stats)
}

#[test]
fn a_wedged_gpu_falls_back_to_the_cpu_with_device_auto_and_fails_with_device_gpu() {
    // SAFETY: the only test of this binary, before GStreamer or any other thread starts.
    unsafe { std::env::set_var("ORDERED_FAULT_GPU_WEDGED", "1") };
    gst::init().unwrap();
    gstordered::plugin_register_static().unwrap();
    assert!(
        !gstordered::analysis::gpu::adapters().is_empty(),
        "this test needs a Vulkan adapter (lavapipe: Debian's mesa-vulkan-drivers)"
    );

    let (res, messages, out, stats) = wedged_gpu("auto");
    assert_eq!(res, Ok(gst::FlowSuccess::Ok));
    let warning = messages
        .iter()
        .find_map(|m| match m.view() {
            gst::MessageView::Warning(w) => Some(w.error().to_string()),
            _ => None,
        })
        .expect("a warning about the GPU");
    assert!(warning.contains("analysing on the CPU"), "{warning}");
    let out = out.expect("the frame went on");
    let analysis = FrameAnalysis::read(&out).unwrap().unwrap();
    assert_eq!(
        analysis.backend, "cpu",
        "the frame was analysed again on the CPU"
    );
    assert_eq!(stats.get::<u64>("gpu-fallbacks").unwrap(), 1, "{stats}");
    assert_eq!(stats.get::<&str>("backend").unwrap(), "cpu", "{stats}");

    let (res, messages, out, stats) = wedged_gpu("gpu");
    assert_eq!(res, Err(gst::FlowError::Error));
    assert!(out.is_none());
    let error = messages
        .iter()
        .find_map(|m| match m.view() {
            gst::MessageView::Error(e) => Some(e.error().to_string()),
            _ => None,
        })
        .expect("an error is posted");
    assert!(error.contains("did not finish the frame"), "{error}");
    assert_eq!(stats.get::<u64>("errors").unwrap(), 1, "{stats}");
}
