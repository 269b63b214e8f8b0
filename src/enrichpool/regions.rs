//! `infer-on=rois`: a frame's regions of interest (`GstVideoRegionOfInterestMeta`) as crop
//! jobs run in parallel, and their results put back on the regions.
//!
//! ```text
//!  frame ──► regions (roi-types, max-rois, clipped) ──► one crop job per region
//!                                                        (this worker + idle workers)
//!                                                               │
//!  frame leaves ◄── results on the regions ◄── every crop done ◄┘
//!   · `enrichment` param on each region's meta
//!   · `rois` array in EnrichmentMeta
//!   · detections inside a crop → new region metas in frame coordinates, parent_id = region
//! ```
//!
//! A crop is plane 0 of the region, as a whole frame is for the remote step: packed formats
//! keep their format, planar and semi-planar YUV give their luma (`GRAY8`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use gst::glib;
use gst::prelude::*;

use super::remote::{self as step, Remote};
use super::{Handler, Job, Roi, Verdict};
use crate::remote::Image;

pub(super) const DEFAULT_MAX_ROIS: u32 = 16;

/// What the steps run on.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstEnrichPoolInferOn")]
pub enum InferOn {
    #[enum_value(name = "Frame: the steps run once on the whole frame", nick = "frame")]
    Frame = 0,
    #[enum_value(
        name = "Rois: the steps run once per region of interest, on its crop, in parallel",
        nick = "rois"
    )]
    Rois = 1,
}

/// A region of the frame to run the steps on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Region {
    /// Its place among the frame's region metas.
    pub index: usize,
    pub id: i32,
    pub kind: String,
    /// Clipped to the frame: x, y, width, height.
    pub rect: (u32, u32, u32, u32),
}

impl Region {
    fn roi(&self) -> Roi {
        Roi {
            id: self.id,
            roi_type: self.kind.clone(),
            x: self.rect.0,
            y: self.rect.1,
            width: self.rect.2,
            height: self.rect.3,
        }
    }

    /// The structure naming the region, which its results are added to.
    fn structure(&self, name: &str) -> gst::Structure {
        gst::Structure::builder(name)
            .field("id", self.id)
            .field("type", self.kind.as_str())
            .field("x", self.rect.0)
            .field("y", self.rect.1)
            .field("w", self.rect.2)
            .field("h", self.rect.3)
            .build()
    }
}

/// The regions of a frame that get crop jobs, and those that do not.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Choice {
    pub regions: Vec<Region>,
    /// Of a wanted type, but empty, zero-size or wholly outside the frame.
    pub invalid: u64,
    /// Partly outside the frame: cropped to the part inside.
    pub clipped: u64,
    /// Valid, of a wanted type, past `max-rois`.
    pub over_max: u64,
    /// Ids changed because an earlier region of the frame had the same.
    pub renumbered: u64,
}

/// The frame's regions of the wanted `types` (all when empty), clipped to `width` ×
/// `height`, at most `max`, in the order of their metas. A chosen region whose id another
/// region of the frame has, or whose id is 0 (GStreamer's default, which a `parent_id` of 0,
/// also the default, could not be told from), is given the next id no region of the frame
/// has, so that results and the regions found inside it name one region each.
pub(super) fn choose(
    buffer: &mut gst::BufferRef,
    width: u32,
    height: u32,
    types: &[String],
    max: usize,
) -> Choice {
    let mut choice = Choice::default();
    let mut ids = std::collections::HashMap::<i32, usize>::new();
    for m in buffer.iter_meta::<gst_video::VideoRegionOfInterestMeta>() {
        *ids.entry(m.id()).or_default() += 1;
    }
    let mut next_id = next_free_id(buffer);
    for (index, mut meta) in buffer
        .iter_meta_mut::<gst_video::VideoRegionOfInterestMeta>()
        .enumerate()
    {
        let kind = meta.roi_type().to_string();
        if !types.is_empty() && !types.contains(&kind) {
            continue;
        }
        let (x, y, w, h) = meta.rect();
        if w == 0 || h == 0 || x >= width || y >= height {
            choice.invalid += 1;
            continue;
        }
        if choice.regions.len() >= max {
            choice.over_max += 1;
            continue;
        }
        let rect = (x, y, w.min(width - x), h.min(height - y));
        if rect.2 != w || rect.3 != h {
            choice.clipped += 1;
        }
        let mut id = meta.id();
        if id == 0 || ids.get(&id).is_some_and(|&n| n > 1) {
            id = next_id;
            *ids.entry(id).or_default() += 1;
            next_id = match next_id.checked_add(1) {
                Some(next) if !ids.contains_key(&next) => next,
                _ => (1..).find(|i| !ids.contains_key(i)).unwrap_or(1),
            };
            meta.set_id(id);
            choice.renumbered += 1;
        }
        choice.regions.push(Region {
            index,
            id,
            kind,
            rect,
        });
    }
    choice
}

/// An id no region of the frame has, above 0: one above the largest, or (when the largest
/// is `i32::MAX`) the smallest free one.
pub(super) fn next_free_id(buffer: &gst::BufferRef) -> i32 {
    let ids: std::collections::HashSet<i32> = buffer
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .map(|m| m.id())
        .collect();
    match ids.iter().copied().max().unwrap_or(0).max(0).checked_add(1) {
        Some(id) => id,
        None => (1..).find(|id| !ids.contains(id)).unwrap_or(1),
    }
}

/// Adds a region meta with an id no other region of the frame has.
pub(super) fn add_region<'a>(
    buffer: &'a mut gst::BufferRef,
    kind: &str,
    rect: (u32, u32, u32, u32),
) -> gst::MetaRefMut<'a, gst_video::VideoRegionOfInterestMeta, gst::meta::Standalone> {
    let id = next_free_id(buffer);
    let mut meta = gst_video::VideoRegionOfInterestMeta::add(buffer, kind, rect);
    meta.set_id(id);
    meta
}

/// Plane 0 of `rect` (x, y, width, height, inside the frame) as the protocol's UINT8 tensor
/// `[H, W, C]`, read with the frame's own stride.
pub(super) fn crop(
    buffer: &gst::BufferRef,
    info: &gst_video::VideoInfo,
    rect: (u32, u32, u32, u32),
    id: String,
) -> Result<Image, String> {
    use gst_video::prelude::VideoFrameExt;
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, info)
        .map_err(|_| "the buffer does not match its caps".to_string())?;
    let (x, y, width, height) = (
        rect.0 as usize,
        rect.1 as usize,
        rect.2 as usize,
        rect.3 as usize,
    );
    if x + width > info.width() as usize || y + height > info.height() as usize {
        return Err(format!("the region {rect:?} is not inside the frame"));
    }
    let format = info.format_info();
    let channels = format.pixel_stride()[0];
    if channels <= 0 {
        return Err(format!(
            "cannot read {} frames as whole bytes per pixel",
            info.format()
        ));
    }
    let channels = channels as usize;
    // 4:2:2 packed (YUY2, UYVY…): a pixel pair shares its chroma; a region must not split
    // one (a frame of odd width ends on half a pair, which is all there is).
    let paired = (0..format.n_components() as usize)
        .any(|c| format.plane()[c] == 0 && format.w_sub()[c] > 0);
    let end = x + width;
    if paired && (x % 2 == 1 || (end % 2 == 1 && end != info.width() as usize)) {
        return Err(format!(
            "the region {rect:?} splits a pixel pair of {} (start and width must be even)",
            info.format()
        ));
    }
    let stride = frame.plane_stride()[0].max(0) as usize;
    let (start, row) = (x * channels, width * channels);
    let data = frame
        .plane_data(0)
        .map_err(|err| format!("reading the frame: {err}"))?;
    let last = y + height.max(1) - 1;
    if start + row > stride || data.len() < last * stride + start + row {
        return Err("the frame is smaller than its caps say".into());
    }
    let mut pixels = Vec::with_capacity(row * height);
    for r in y..y + height {
        pixels.extend_from_slice(&data[r * stride + start..r * stride + start + row]);
    }
    Ok(Image {
        id,
        height,
        width,
        channels,
        pixels,
    })
}

/// The format of a crop of a frame of `info`'s format: the same for one-plane formats, the
/// luma (`GRAY8`) for planar and semi-planar ones.
pub(super) fn crop_format(info: &gst_video::VideoInfo) -> gst_video::VideoFormat {
    if info.n_planes() == 1 {
        info.format()
    } else {
        gst_video::VideoFormat::Gray8
    }
}

/// A crop as a buffer for handlers: its rows packed, described by a `GstVideoMeta`, with the
/// frame's timestamps.
fn crop_buffer(
    image: Image,
    format: gst_video::VideoFormat,
    frame: &gst::BufferRef,
) -> gst::Buffer {
    let (width, height, row) = (
        image.width as u32,
        image.height as u32,
        image.width * image.channels,
    );
    let mut buffer = gst::Buffer::from_mut_slice(image.pixels);
    {
        let b = buffer.get_mut().expect("a new buffer is writable");
        b.set_pts(frame.pts());
        b.set_dts(frame.dts());
        b.set_duration(frame.duration());
        // Fails only for a format without planes, which no crop has; the buffer then goes
        // without, and `job.roi` still tells its size.
        let _ = gst_video::VideoMeta::add_full(
            b,
            gst_video::VideoFrameFlags::empty(),
            format,
            width,
            height,
            &[0],
            &[row as i32],
        );
    }
    buffer
}

/// A region found inside a crop, in the crop's coordinates.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Found {
    pub kind: String,
    pub rect: (u32, u32, u32, u32),
    pub params: Vec<gst::Structure>,
}

/// What the steps made of one crop.
#[derive(Debug)]
pub(super) enum Outcome {
    /// The region's outputs, and what was found inside it.
    Done {
        outputs: gst::Structure,
        found: Vec<Found>,
        server: String,
    },
    /// A handler dropped the region: its meta is removed from the frame.
    Dropped,
    /// Every attempt failed (or a handler panicked).
    Failed(String),
}

/// Counters of `infer-on=rois`, for `stats`.
#[derive(Debug, Default)]
pub(super) struct RoiCounts {
    pub processed: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
    pub invalid: AtomicU64,
    pub clipped: AtomicU64,
    pub over_max: AtomicU64,
    pub renumbered: AtomicU64,
    pub found: AtomicU64,
}

impl RoiCounts {
    pub fn reset(&self) {
        for c in [
            &self.processed,
            &self.failed,
            &self.dropped,
            &self.invalid,
            &self.clipped,
            &self.over_max,
            &self.renumbered,
            &self.found,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    pub fn count_choice(&self, choice: &Choice) {
        self.invalid.fetch_add(choice.invalid, Ordering::Relaxed);
        self.clipped.fetch_add(choice.clipped, Ordering::Relaxed);
        self.over_max.fetch_add(choice.over_max, Ordering::Relaxed);
        self.renumbered
            .fetch_add(choice.renumbered, Ordering::Relaxed);
    }
}

/// What every crop job of a frame shares.
pub(super) struct Crops {
    pub element: super::EnrichPool,
    pub frame: gst::Buffer,
    pub info: Arc<gst_video::VideoInfo>,
    /// The remote step, when it takes this frame.
    pub remote: Option<(Arc<Remote>, u64)>,
    pub handler: Option<Arc<Handler>>,
    pub worker: u32,
    pub attempt: u32,
    /// Attempts per crop (1 + retries with `on-error=retry`).
    pub attempts: u32,
    pub seq: u64,
}

impl Crops {
    /// Runs the steps on one region's crop, each attempt from the start.
    pub fn run(&self, region: &Region) -> Outcome {
        let mut last = String::new();
        // Servers that failed this crop: its next attempts go elsewhere first.
        let mut avoid = Vec::new();
        for attempt in 0..self.attempts.max(1) {
            match self.attempt(region, self.attempt + attempt, &mut avoid) {
                Ok(outcome) => return outcome,
                Err(message) => last = message,
            }
        }
        Outcome::Failed(last)
    }

    fn attempt(
        &self,
        region: &Region,
        attempt: u32,
        avoid: &mut Vec<usize>,
    ) -> Result<Outcome, String> {
        let image = crop(
            &self.frame,
            &self.info,
            region.rect,
            format!("{}/{}", self.seq, region.id),
        )?;
        let mut outputs = region.structure("outputs");
        let mut found = Vec::new();
        let mut server = String::new();
        let mut image = Some(image);
        if let Some((remote, cancel_from)) = &self.remote {
            let image = if self.handler.is_some() || super::steps::process_connected(&self.element)
            {
                image.clone()
            } else {
                image.take()
            };
            let image = image.expect("the crop is there for the remote step");
            let (w, h) = (image.width as u32, image.height as u32);
            let answer = remote
                .set
                .infer_cancellable(image, avoid, Some((&remote.canceller, *cancel_from)))
                .map_err(|err| err.to_string())?;
            step::set_outputs(&answer, &mut outputs);
            found.extend(
                step::detections(&answer.response.outputs, w, h)
                    .into_iter()
                    .map(|d| Found {
                        params: vec![d.param()],
                        kind: d.class,
                        rect: d.rect,
                    }),
            );
            server = answer.server;
        }
        if let Some(image) = image.take() {
            let handled = self.handle(region, image, attempt, &mut outputs, &mut found)?;
            if handled == Some(Verdict::Drop) {
                return Ok(Outcome::Dropped);
            }
        }
        Ok(Outcome::Done {
            outputs,
            found,
            server,
        })
    }

    /// The Rust handler, or else the `process` signal, on the crop as a buffer. `None` when
    /// neither is there.
    fn handle(
        &self,
        region: &Region,
        image: Image,
        attempt: u32,
        outputs: &mut gst::Structure,
        found: &mut Vec<Found>,
    ) -> Result<Option<Verdict>, String> {
        let mut buffer = crop_buffer(image, crop_format(&self.info), &self.frame);
        // The worker running this crop, which may not be the frame's.
        let worker = crate::pool::current_worker().unwrap_or(self.worker);
        let verdict = if let Some(handler) = &self.handler {
            let roi = region.roi();
            let mut job = Job {
                buffer: buffer.make_mut(),
                worker,
                attempt,
                outputs,
                roi: Some(&roi),
            };
            handler(&mut job)?
        } else {
            match super::steps::emit_process(&self.element, &buffer, worker, outputs) {
                None => return Ok(None),
                Some(true) => Verdict::Keep,
                Some(false) => Verdict::Drop,
            }
        };
        // Regions the handler marked on the crop are found inside the region.
        found.extend(
            buffer
                .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
                .map(|m| Found {
                    kind: m.roi_type().to_string(),
                    rect: m.rect(),
                    params: m.params().map(|p| p.to_owned()).collect(),
                }),
        );
        Ok(Some(verdict))
    }
}

/// Puts the crops' outcomes on the frame: an `enrichment` param on each region's meta (or
/// the meta removed, for a dropped region), the regions found inside crops as new metas in
/// frame coordinates (`parent_id`: their region), and the per-region structures for the
/// `rois` array of `EnrichmentMeta`, in the order of the regions. Returns that array, the
/// first failure's message, and the server of the first answer.
pub(super) fn put_back(
    buffer: &mut gst::BufferRef,
    regions: &[Region],
    outcomes: Vec<Outcome>,
    frame_size: (u32, u32),
    counts: &RoiCounts,
) -> (gst::Array, Option<String>, String) {
    let mut rois = Vec::new();
    let mut failure = None;
    let mut server = String::new();
    let mut params: Vec<(usize, gst::Structure)> = Vec::new();
    let mut removed = Vec::new();
    let mut new_regions = Vec::new();
    for (region, outcome) in regions.iter().zip(outcomes) {
        let mut result = region.structure("roi");
        match outcome {
            Outcome::Done {
                outputs,
                found,
                server: answered,
            } => {
                counts.processed.fetch_add(1, Ordering::Relaxed);
                for (name, value) in outputs.iter() {
                    result.set_value(name, value.clone());
                }
                if server.is_empty() {
                    server = answered;
                }
                for f in found {
                    if let Some(rect) = to_frame(region.rect, f.rect, frame_size) {
                        new_regions.push((region.id, f.kind, rect, f.params));
                    }
                }
            }
            Outcome::Dropped => {
                counts.dropped.fetch_add(1, Ordering::Relaxed);
                result.set("dropped", true);
                removed.push(region.index);
            }
            Outcome::Failed(message) => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                result.set("failed", true);
                result.set("error", message.as_str());
                failure.get_or_insert(message);
            }
        }
        if !removed.contains(&region.index) {
            let mut param = result.clone();
            param.set_name("enrichment");
            params.push((region.index, param));
        }
        rois.push(result.to_send_value());
    }
    for (index, mut meta) in buffer
        .iter_meta_mut::<gst_video::VideoRegionOfInterestMeta>()
        .enumerate()
    {
        for (_, param) in params.iter().filter(|(i, _)| *i == index) {
            meta.add_param(param.clone());
        }
    }
    if !removed.is_empty() {
        let mut index = 0;
        buffer.foreach_meta_mut(|meta| {
            use gst::buffer::BufferMetaForeachAction::{Keep, Remove};
            if meta.api() != gst_video::VideoRegionOfInterestMeta::meta_api() {
                return std::ops::ControlFlow::Continue(Keep);
            }
            let this = index;
            index += 1;
            std::ops::ControlFlow::Continue(if removed.contains(&this) {
                Remove
            } else {
                Keep
            })
        });
    }
    for (parent, kind, rect, mut found_params) in new_regions {
        counts.found.fetch_add(1, Ordering::Relaxed);
        // Every region found carries a `detection` param (what `carry-forward` carries).
        if !found_params.iter().any(|p| p.name() == "detection") {
            found_params.push(
                gst::Structure::builder("detection")
                    .field("class", kind.as_str())
                    .build(),
            );
        }
        let mut meta = add_region(buffer, &kind, rect);
        meta.set_parent_id(parent);
        for p in found_params {
            meta.add_param(p);
        }
    }
    (gst::Array::new(rois), failure, server)
}

/// A rectangle found in a crop of `region`, in frame coordinates, clipped to the region
/// (and so to the frame); `None` when nothing of it is inside.
pub(super) fn to_frame(
    region: (u32, u32, u32, u32),
    inner: (u32, u32, u32, u32),
    frame_size: (u32, u32),
) -> Option<(u32, u32, u32, u32)> {
    let (rx, ry, rw, rh) = (
        region.0 as u64,
        region.1 as u64,
        region.2 as u64,
        region.3 as u64,
    );
    let (x, y, w, h) = (
        inner.0 as u64,
        inner.1 as u64,
        inner.2 as u64,
        inner.3 as u64,
    );
    let x1 = (rx + x).min(rx + rw).min(frame_size.0 as u64);
    let y1 = (ry + y).min(ry + rh).min(frame_size.1 as u64);
    let x2 = (rx + x + w).min(rx + rw).min(frame_size.0 as u64);
    let y2 = (ry + y + h).min(ry + rh).min(frame_size.1 as u64);
    (x2 > x1 && y2 > y1).then(|| (x1 as u32, y1 as u32, (x2 - x1) as u32, (y2 - y1) as u32))
}
