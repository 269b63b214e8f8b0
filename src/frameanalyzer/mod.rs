//! The `frameanalyzer` element: the article's analysis pass ("extract features, classify,
//! score") as an in-place video filter. The analysis itself is [`crate::analysis`]; this is
//! the GStreamer glue.

use gst::glib;
use gst::prelude::*;

mod imp;

pub use imp::Device;

glib::wrapper! {
    /// The `frameanalyzer` element.
    pub struct FrameAnalyzer(ObjectSubclass<imp::FrameAnalyzer>) @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    Device::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "frameanalyzer",
        gst::Rank::NONE,
        FrameAnalyzer::static_type(),
    )
}
