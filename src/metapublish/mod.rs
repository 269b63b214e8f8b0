//! The `metapublish` element: writes each frame's results (its sequence, times and metas)
//! as one JSON record, in the order frames pass, to a file, stdout, a TCP server or an
//! MQTT broker, off the streaming thread. Frames pass through unchanged.
//!
//! ```text
//! frame ──► record (record.rs) ──► queue ──► publisher thread (publisher.rs, mqtt.rs) ──► target
//!   └──────────────────────────────► downstream, unchanged, at once
//! ```

use gst::glib;
use gst::prelude::*;

mod imp;
mod mqtt;
mod publisher;
pub mod record;
mod target;

pub use target::Target;

glib::wrapper! {
    /// The `metapublish` element.
    pub struct MetaPublish(ObjectSubclass<imp::MetaPublish>)
        @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

/// What to do when `max-pending` records wait for a slow or unreachable target.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstOrderedMetaPublishOnDisconnect")]
pub enum OnDisconnect {
    /// Drop the oldest pending record (counted in stats `dropped`); the video never waits.
    #[default]
    #[enum_value(
        name = "Drop the oldest pending record, counted; the video never waits",
        nick = "drop-oldest"
    )]
    DropOldest = 0,
    /// Hold the frame until a record can be queued: no record is lost, the video waits.
    #[enum_value(
        name = "Hold the frame until there is room: no record lost, the video waits",
        nick = "block"
    )]
    Block = 1,
}

/// The MQTT protocol version.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstOrderedMetaPublishMqttVersion")]
pub enum MqttVersion {
    #[default]
    #[enum_value(name = "MQTT 3.1.1", nick = "3.1.1")]
    V311 = 4,
    #[enum_value(name = "MQTT 5", nick = "5")]
    V5 = 5,
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    OnDisconnect::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    MqttVersion::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "metapublish",
        gst::Rank::NONE,
        MetaPublish::static_type(),
    )
}
