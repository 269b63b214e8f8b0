//! The `resequencer` element: holds out-of-order frames and pushes them strictly in order,
//! never stalling on a frame that will not come. The ordering itself is
//! [`crate::sequencing::Window`]; this module is the GStreamer glue.

use gst::glib;
use gst::prelude::*;

mod funnel;
mod imp;

pub use imp::OrderBy;

glib::wrapper! {
    /// The `resequencer` element.
    pub struct Resequencer(ObjectSubclass<imp::Resequencer>) @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    OrderBy::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "resequencer",
        gst::Rank::NONE,
        Resequencer::static_type(),
    )
}
