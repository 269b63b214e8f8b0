//! The `enrichpool` element: the article's producer → bounded channel → worker pool as one
//! element. Frames are stamped with `OrderedSeqMeta`, queued, processed by N worker threads
//! and pushed as soon as they finish (out of order); every frame that will not be pushed
//! becomes an `ordered-gap` event. The pool itself is [`crate::pool`]; this is the glue.

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

mod imp;
mod overlay;
mod regions;
mod remote;
mod reuse;
mod settings;
mod shared;
mod stats;
mod steps;
mod workerbin;

pub use regions::InferOn;
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
    /// The number of the worker running this job (with `infer-on=rois`, the crop's: the crops of
    /// a frame run on several workers at once).
    pub worker: u32,
    /// 0 for the first attempt, then 1, 2, … when `on-error=retry` tries again.
    pub attempt: u32,
    /// Results to attach: every field comes out in the frame's `EnrichmentMeta` (with
    /// `infer-on=rois`: in the region's structures, see [`Roi`]).
    pub outputs: &'a mut gst::StructureRef,
    /// With `infer-on=rois`: the region whose crop `buffer` is; `None` for a whole frame.
    pub roi: Option<&'a Roi>,
}

/// The region of interest a crop job runs on (`infer-on=rois`), in frame coordinates.
///
/// The job's `buffer` is then the crop: plane 0 of the region, rows packed, described by a
/// `GstVideoMeta` (the frame's format for one-plane formats, `GRAY8` luma for planar and
/// semi-planar YUV). Its `outputs` come out as the region's `enrichment` param and in the
/// `rois` array of the frame's `EnrichmentMeta`; region metas the handler adds to the crop
/// (in the crop's coordinates) come out on the frame, in frame coordinates, with
/// `parent_id` set to this region's id. [`Verdict::Drop`] removes the region from the frame
/// (the frame itself goes on); an `Err` marks the region `failed` (with `on-error=fail`, it
/// fails the frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roi {
    /// The region meta's id (unique in the frame: a repeated one is renumbered).
    pub id: i32,
    /// The region meta's type (`motion`, `person`, …).
    pub roi_type: String,
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
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
    InferOn::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "enrichpool",
        gst::Rank::NONE,
        EnrichPool::static_type(),
    )
}
