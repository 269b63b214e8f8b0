//! The enrichpool's remote step: frames to `crate::remote`'s server set, answers into
//! `EnrichmentMeta` fields and `GstVideoRegionOfInterestMeta`s.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use gst::glib;

use crate::remote::{Answer, Canceller, Data, Image, ServerSet, Tensor};

/// The remote step of one running element.
pub(super) struct Remote {
    /// Its own, or its shared pool's.
    pub set: Arc<ServerSet>,
    /// Cancels this element's requests alone (a flush), not those of others sharing `set`.
    pub canceller: Arc<Canceller>,
    pub sent: AtomicU64,
    pub skipped: AtomicU64,
}

impl Remote {
    /// Counts a frame the steps run on (`sent`) or not.
    pub fn count(&self, sent: bool) {
        if sent {
            self.sent.fetch_add(1, Ordering::Relaxed);
        } else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The per-server structures of `stats`.
    pub fn server_stats(&self) -> gst::Array {
        gst::Array::new(self.set.figures().into_iter().map(|f| {
            gst::Structure::builder("server")
                .field("url", f.url)
                .field("healthy", f.healthy)
                .field("in-flight", f.in_flight)
                .field("requests", f.requests)
                .field("errors", f.errors)
                .field("latency-p50", f.p50.as_nanos() as u64)
                .field("latency-p99", f.p99.as_nanos() as u64)
                .field("last-error", f.last_error)
                .build()
                .to_send_value()
        }))
    }
}

/// The frame as the protocol's UINT8 tensor: plane 0 without its stride padding, so
/// `[H, W, C]` with C the bytes per pixel of packed formats (RGB/BGR 3, RGBA… 4, GRAY8 1)
/// and the luma plane (C = 1) of planar and semi-planar YUV; read with the frame's own
/// stride (its GstVideoMeta, when upstream negotiated one), not the caps'.
pub(super) fn image(
    buffer: &gst::BufferRef,
    info: &gst_video::VideoInfo,
    id: String,
) -> Result<Image, String> {
    super::regions::crop(buffer, info, (0, 0, info.width(), info.height()), id)
}

fn scalar_or_array<T: ToSendValue + Clone>(values: &[T]) -> glib::SendValue {
    match values {
        [one] => one.to_send_value(),
        many => gst::Array::new(many.iter().map(|v| v.to_send_value())).to_send_value(),
    }
}

use gst::prelude::ToSendValue;

/// A tensor as a field value: one element as a scalar, more as a flat row-major array.
pub(super) fn tensor_value(tensor: &Tensor) -> glib::SendValue {
    match &tensor.data {
        Data::Bool(v) => scalar_or_array(v),
        Data::U8(v) => scalar_or_array(&v.iter().map(|&x| x as u64).collect::<Vec<_>>()),
        Data::Int(v) => scalar_or_array(v),
        Data::UInt(v) => scalar_or_array(v),
        Data::Float(v) => scalar_or_array(v),
        Data::Bytes(v) => scalar_or_array(
            &v.iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect::<Vec<_>>(),
        ),
    }
}

/// One detection from outputs named `boxes` ([N, 4]: x1, y1, x2, y2, in pixels, or
/// normalised to 0..1 when every coordinate is), `scores` ([N]) and optionally `classes`
/// or `labels` ([N], names or numbers).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Detection {
    pub class: String,
    pub score: f64,
    pub rect: (u32, u32, u32, u32),
}

impl Detection {
    /// The `detection` param of its region meta.
    pub fn param(&self) -> gst::Structure {
        gst::Structure::builder("detection")
            .field("class", self.class.as_str())
            .field("score", self.score)
            .build()
    }
}

pub(super) fn detections(outputs: &[Tensor], width: u32, height: u32) -> Vec<Detection> {
    let find = |name: &str| outputs.iter().find(|t| t.name == name);
    let (Some(boxes), Some(scores)) = (find("boxes"), find("scores")) else {
        return Vec::new();
    };
    let (Some(boxes), Some(scores)) = (boxes.data.as_f64(), scores.data.as_f64()) else {
        return Vec::new();
    };
    if boxes.len() != scores.len() * 4 {
        return Vec::new();
    }
    let classes: Option<Vec<String>> = find("classes").or_else(|| find("labels")).map(|t| match &t
        .data
    {
        Data::Bytes(v) => v
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect(),
        other => other
            .as_f64()
            .unwrap_or_default()
            .iter()
            .map(|c| format!("class-{}", *c as i64))
            .collect(),
    });
    let normalised = boxes.iter().all(|&c| (0.0..=1.0).contains(&c));
    let (sx, sy) = if normalised {
        (width as f64, height as f64)
    } else {
        (1.0, 1.0)
    };
    let clamp = |v: f64, max: u32| v.round().clamp(0.0, max as f64) as u32;
    boxes
        .chunks_exact(4)
        .zip(&scores)
        .enumerate()
        .filter_map(|(i, (b, &score))| {
            let (x1, y1) = (clamp(b[0] * sx, width), clamp(b[1] * sy, height));
            let (x2, y2) = (clamp(b[2] * sx, width), clamp(b[3] * sy, height));
            (x2 > x1 && y2 > y1).then(|| Detection {
                class: classes
                    .as_ref()
                    .and_then(|c| c.get(i).cloned())
                    .unwrap_or_else(|| "detection".into()),
                score,
                rect: (x1, y1, x2 - x1, y2 - y1),
            })
        })
        .collect()
}

/// Every output of an answer as a field of `outputs`.
pub(super) fn set_outputs(answer: &Answer, outputs: &mut gst::StructureRef) {
    for tensor in &answer.response.outputs {
        outputs.set_value(tensor.name.as_str(), tensor_value(tensor));
    }
}

/// Puts an answer on the frame: every output as a field of `outputs`, detections as ROI
/// metas (type: the class) with a `detection` parameter (`class`, `score`).
pub(super) fn apply(
    answer: &Answer,
    buffer: &mut gst::BufferRef,
    outputs: &mut gst::StructureRef,
    info: Option<&gst_video::VideoInfo>,
) {
    set_outputs(answer, outputs);
    let Some(info) = info else { return };
    for d in detections(&answer.response.outputs, info.width(), info.height()) {
        let mut meta = super::regions::add_region(buffer, &d.class, d.rect);
        meta.add_param(d.param());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_is_read_with_the_frame_stride_not_the_caps_stride() {
        gst::init().unwrap();
        let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Gray8, 3, 2)
            .build()
            .unwrap();
        assert_eq!(info.stride()[0], 4, "the caps say 4 bytes a row");
        // Upstream (a decoder's pool) lays rows out 8 bytes apart and says so in a VideoMeta.
        let mut buffer = gst::Buffer::with_size(16).unwrap();
        {
            let b = buffer.get_mut().unwrap();
            b.map_writable()
                .unwrap()
                .copy_from_slice(&[1, 2, 3, 9, 9, 9, 9, 9, 4, 5, 6, 9, 9, 9, 9, 9]);
            gst_video::VideoMeta::add_full(
                b,
                gst_video::VideoFrameFlags::empty(),
                gst_video::VideoFormat::Gray8,
                3,
                2,
                &[0],
                &[8],
            )
            .unwrap();
        }
        let image = image(&buffer, &info, "0".into()).unwrap();
        assert_eq!((image.width, image.height, image.channels), (3, 2, 1));
        assert_eq!(image.pixels, vec![1, 2, 3, 4, 5, 6]);
    }
}
