//! gst-ordered: ordered parallel processing for live GStreamer pipelines.
//!
//! The `ordered` plugin. Its elements are registered by [`plugin_register_static`] (for
//! applications and tests that link this crate) or by GStreamer loading `libgstordered.so`.
//! The metas and events that tie the elements together are in [`meta`]; the GStreamer-free
//! ordering core is in [`sequencing`].

use gst::glib;

pub mod analysis;
pub mod enrichpool;
pub mod frameanalyzer;
mod glue;
mod latency;
pub mod meta;
pub mod metapublish;
pub mod pool;
pub mod remote;
pub mod sequencing;

mod resequencer;

pub use enrichpool::EnrichPool;
pub use frameanalyzer::FrameAnalyzer;
pub use metapublish::MetaPublish;
pub use resequencer::{OrderBy, Resequencer};

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    meta::register();
    resequencer::register(plugin)?;
    enrichpool::register(plugin)?;
    frameanalyzer::register(plugin)?;
    metapublish::register(plugin)?;
    Ok(())
}

gst::plugin_define!(
    ordered,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    env!("CARGO_PKG_VERSION"),
    // GStreamer's name for the MIT licence; the crate is MIT OR Apache-2.0.
    "MIT/X11",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    "gst-ordered"
);
