//! The `enrichpool` element: the article's producer → bounded channel → worker pool as one
//! element. Frames are stamped with `OrderedSeqMeta`, queued, processed by N worker threads
//! and pushed as soon as they finish (out of order); every frame that will not be pushed
//! becomes an `ordered-gap` event. The pool itself is [`crate::pool`]; this is the glue.

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

mod imp;
mod overlay;
mod remote;
mod settings;
mod shared;
mod stats;
mod steps;

pub use settings::{Leaky, OnError};

glib::wrapper! {
    /// The `enrichpool` element.
    pub struct EnrichPool(ObjectSubclass<imp::EnrichPool>) @extends gst::Element, gst::Object;
}

/// What a Rust handler decided about a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Push the frame.
    Keep,
    /// Drop it; it becomes an `ordered-gap` with reason `dropped`.
    Drop,
}

/// A frame handed to a Rust handler on a worker thread.
pub struct Job<'a> {
    /// The frame, writable.
    pub buffer: &'a mut gst::BufferRef,
    /// The worker's number.
    pub worker: u32,
    /// 0 for the first attempt, then 1, 2, … when `on-error=retry` tries again.
    pub attempt: u32,
    /// Results to attach: every field comes out in the frame's `EnrichmentMeta`.
    pub outputs: &'a mut gst::StructureRef,
}

/// A typed handler: `Err` is a failure, handled per `on-error`.
pub type Handler = dyn Fn(&mut Job<'_>) -> Result<Verdict, String> + Send + Sync + 'static;

impl EnrichPool {
    /// Installs a Rust closure as the enrichment step, instead of (and before) the `process`
    /// signal. Takes effect for frames processed from now on.
    pub fn set_handler<F>(&self, handler: F)
    where
        F: Fn(&mut Job<'_>) -> Result<Verdict, String> + Send + Sync + 'static,
    {
        self.imp().set_handler(Some(std::sync::Arc::new(handler)));
    }

    /// Removes the Rust closure; the `process` signal (if connected) is used again.
    pub fn clear_handler(&self) {
        self.imp().set_handler(None);
    }
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    Leaky::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    OnError::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "enrichpool",
        gst::Rank::NONE,
        EnrichPool::static_type(),
    )
}
