//! The JSON records `metapublish` writes: one object per frame, per gap, per flush and at
//! EOS, each on a line of its own (schema in README, "Results out: metapublish").
//!
//! Written by hand into one reused `String`: per frame this is a few dozen fields, and the
//! element has a budget of a few microseconds for it. GLib values map to JSON as follows:
//! booleans, integers and finite floats as they are (NaN and the infinities as `null`),
//! strings escaped, `GstValueArray`/`GstValueList` as arrays, structures as objects of their
//! fields, fractions as `[numerator, denominator]`, anything else as its GStreamer
//! serialization (a string) or `null`.

use gst::glib;
use gst::glib::translate::FromGlib;
use gst::prelude::StaticType;
use gst_video::VideoRegionOfInterestMeta;

use crate::meta::{self, Gap, SeqMeta};

/// The schema version, in every record as `"v"`.
pub const SCHEMA_VERSION: u32 = 1;

/// A lost or skipped run of frames, as written in a `gap` record.
#[derive(Clone, Debug, PartialEq)]
pub struct GapRecord {
    pub epoch: Option<u32>,
    pub seq: Option<u64>,
    pub count: Option<u64>,
    pub reason: String,
    pub pts: Option<u64>,
    pub duration: Option<u64>,
}

impl GapRecord {
    /// A gap announced by an `ordered-gap` event.
    pub fn from_gap(gap: &Gap) -> GapRecord {
        GapRecord {
            epoch: Some(gap.epoch),
            seq: Some(gap.seq),
            count: Some(gap.count),
            reason: gap.reason.as_str().to_owned(),
            pts: None,
            duration: None,
        }
    }

    /// Whether it names sequence numbers, so that a jump in the frames' sequence is told.
    pub fn seq_end(&self) -> Option<u64> {
        Some(self.seq? + self.count?)
    }
}

/// What a frame's record is made of, besides its metas.
pub struct FrameTimes {
    pub pts: Option<u64>,
    pub dts: Option<u64>,
    pub duration: Option<u64>,
    pub running_time: Option<u64>,
}

/// Writes records into a reused buffer.
#[derive(Default)]
pub struct Writer {
    out: String,
}

impl Writer {
    /// The frame's record (without the newline).
    pub fn frame(
        &mut self,
        buffer: &gst::BufferRef,
        seq: Option<&SeqMeta>,
        times: &FrameTimes,
    ) -> &str {
        self.out.clear();
        self.begin("frame");
        self.key("seq");
        self.opt_u64(seq.map(|s| s.seq));
        self.key("epoch");
        self.opt_u64(seq.map(|s| s.epoch.into()));
        self.key("pts");
        self.opt_u64(times.pts);
        self.key("dts");
        self.opt_u64(times.dts);
        self.key("duration");
        self.opt_u64(times.duration);
        self.key("running-time");
        self.opt_u64(times.running_time);
        if let Some(s) = meta::analysis_structure(buffer) {
            self.key("analysis");
            self.structure(s);
        }
        if let Some(s) = meta::enrichment_structure(buffer) {
            self.key("enrichment");
            self.out.push('{');
            let mut first = true;
            for_each_field(s, |name, value| {
                if meta::ENRICHMENT_FIELDS.contains(&name) {
                    self.field(&mut first, name, value);
                }
            });
            if !first {
                self.out.push(',');
            }
            self.string("outputs");
            self.out.push_str(":{");
            let mut first = true;
            for_each_field(s, |name, value| {
                if !meta::ENRICHMENT_FIELDS.contains(&name) {
                    self.field(&mut first, name, value);
                }
            });
            self.out.push_str("}}");
        }
        let mut rois = buffer.iter_meta::<VideoRegionOfInterestMeta>().peekable();
        if rois.peek().is_some() {
            self.key("rois");
            self.out.push('[');
            for (i, roi) in rois.enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.roi(&roi);
            }
            self.out.push(']');
        }
        self.out.push('}');
        &self.out
    }

    /// The last record written.
    pub fn text(&self) -> &str {
        &self.out
    }

    /// A gap record.
    pub fn gap(&mut self, gap: &GapRecord) -> &str {
        self.out.clear();
        self.begin("gap");
        self.key("seq");
        self.opt_u64(gap.seq);
        self.key("epoch");
        self.opt_u64(gap.epoch.map(u64::from));
        self.key("count");
        self.opt_u64(gap.count);
        self.key("reason");
        self.string(&gap.reason);
        self.key("pts");
        self.opt_u64(gap.pts);
        self.key("duration");
        self.opt_u64(gap.duration);
        self.out.push('}');
        &self.out
    }

    /// A record with no fields but its type (`flush`, `eos`).
    pub fn event(&mut self, kind: &str) -> &str {
        self.out.clear();
        self.begin(kind);
        self.out.push('}');
        &self.out
    }

    fn begin(&mut self, kind: &str) {
        self.out.push_str("{\"v\":");
        self.int(SCHEMA_VERSION);
        self.out.push_str(",\"type\":");
        self.string(kind);
    }

    /// `,"name":` (every record has a field before).
    fn key(&mut self, name: &str) {
        self.out.push(',');
        self.string(name);
        self.out.push(':');
    }

    fn field(&mut self, first: &mut bool, name: &str, value: &glib::Value) {
        if !std::mem::take(first) {
            self.out.push(',');
        }
        self.string(name);
        self.out.push(':');
        self.value(value);
    }

    fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            Some(v) => self.int(v),
            None => self.out.push_str("null"),
        }
    }

    fn int(&mut self, v: impl itoa::Integer) {
        self.out.push_str(itoa::Buffer::new().format(v));
    }

    /// A finite float in its shortest form that reads back exactly (JSON allows the
    /// exponent ryu writes for very large and small values); anything else as `null`.
    fn float(&mut self, v: impl ryu::Float + Into<f64> + Copy) {
        if v.into().is_finite() {
            self.out.push_str(ryu::Buffer::new().format_finite(v));
        } else {
            self.out.push_str("null");
        }
    }

    fn roi(&mut self, roi: &gst::MetaRef<'_, VideoRegionOfInterestMeta>) {
        let (x, y, w, h) = roi.rect();
        self.out.push_str("{\"id\":");
        self.int(roi.id());
        self.out.push_str(",\"type\":");
        self.string(roi.roi_type());
        for (key, v) in [
            (",\"x\":", x),
            (",\"y\":", y),
            (",\"w\":", w),
            (",\"h\":", h),
        ] {
            self.out.push_str(key);
            self.int(v);
        }
        self.out.push_str(",\"parent-id\":");
        self.int(roi.parent_id());
        self.out.push_str(",\"params\":{");
        for (i, param) in roi.params().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.string(param.name());
            self.out.push(':');
            self.structure(param);
        }
        self.out.push_str("}}");
    }

    fn structure(&mut self, s: &gst::StructureRef) {
        self.out.push('{');
        let mut first = true;
        for_each_field(s, |name, value| self.field(&mut first, name, value));
        self.out.push('}');
    }

    fn value(&mut self, value: &glib::Value) {
        let t = value.type_();
        // The common types first, each a single type comparison.
        if t == glib::Type::F64 {
            self.float(value.get::<f64>().unwrap_or(f64::NAN));
        } else if t == glib::Type::U64 {
            self.int(value.get::<u64>().unwrap_or_default());
        } else if t == glib::Type::I64 {
            self.int(value.get::<i64>().unwrap_or_default());
        } else if t == glib::Type::U32 {
            self.int(value.get::<u32>().unwrap_or_default());
        } else if t == glib::Type::I32 {
            self.int(value.get::<i32>().unwrap_or_default());
        } else if t == glib::Type::STRING {
            match value.get::<Option<&str>>().ok().flatten() {
                Some(s) => self.string(s),
                None => self.out.push_str("null"),
            }
        } else if t == glib::Type::BOOL {
            let b = value.get::<bool>().unwrap_or_default();
            self.out.push_str(if b { "true" } else { "false" });
        } else if t == glib::Type::F32 {
            self.float(value.get::<f32>().unwrap_or(f32::NAN));
        } else if t == gst::Array::static_type() || t == gst::List::static_type() {
            let items: &[glib::SendValue] = if t == gst::Array::static_type() {
                value
                    .get::<gst::ArrayRef>()
                    .map(|a| a.as_slice())
                    .unwrap_or(&[])
            } else {
                value
                    .get::<gst::ListRef>()
                    .map(|l| l.as_slice())
                    .unwrap_or(&[])
            };
            self.out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.value(item);
            }
            self.out.push(']');
        } else if t == gst::Structure::static_type() {
            match value.get::<Option<&gst::StructureRef>>().ok().flatten() {
                Some(s) => self.structure(s),
                None => self.out.push_str("null"),
            }
        } else if t == gst::Fraction::static_type() {
            let f = value
                .get::<gst::Fraction>()
                .unwrap_or(gst::Fraction::new(0, 1));
            self.out.push('[');
            self.int(f.numer());
            self.out.push(',');
            self.int(f.denom());
            self.out.push(']');
        } else if t == glib::Type::I8 {
            self.int(value.get::<i8>().unwrap_or_default());
        } else if t == glib::Type::U8 {
            self.int(value.get::<u8>().unwrap_or_default());
        } else {
            match gst::prelude::GstValueExt::serialize(value) {
                Ok(s) => self.string(s.as_str()),
                Err(_) => self.out.push_str("null"),
            }
        }
    }

    /// A JSON string: quotes, backslashes and control characters escaped.
    fn string(&mut self, s: &str) {
        let out = &mut self.out;
        out.push('"');
        let mut start = 0;
        for (i, b) in s.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0..0x20 | 0x7f => "",
                _ => continue,
            };
            out.push_str(&s[start..i]);
            if escape.is_empty() {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 0xf)] as char);
            } else {
                out.push_str(escape);
            }
            start = i + 1;
        }
        out.push_str(&s[start..]);
        out.push('"');
    }
}

/// Calls `f` with each field of `s`, in order. `StructureRef::iter` looks each value up by
/// its name, which interns the name under GLib's global quark lock: per field, per frame,
/// on every streaming thread. This walks the fields as they are.
fn for_each_field(s: &gst::StructureRef, mut f: impl FnMut(&str, &glib::Value)) {
    unsafe extern "C" fn trampoline(
        quark: glib::ffi::GQuark,
        value: *const glib::gobject_ffi::GValue,
        data: glib::ffi::gpointer,
    ) -> glib::ffi::gboolean {
        // SAFETY: `data` is the `&mut dyn FnMut` below, alive for the whole foreach; the
        // value and the quark's string live as long as the structure, borrowed meanwhile.
        unsafe {
            let f = &mut *(data as *mut &mut dyn FnMut(&str, &glib::Value));
            let name = glib::Quark::from_glib(quark);
            let value = &*(value as *const glib::Value);
            f(name.as_str(), value);
        }
        glib::ffi::GTRUE
    }
    let mut f: &mut dyn FnMut(&str, &glib::Value) = &mut f;
    // SAFETY: the structure is valid for the borrow and not changed during the walk (the
    // callback gets shared references only).
    unsafe {
        gst::ffi::gst_structure_foreach(
            s.as_ptr(),
            Some(trampoline),
            &mut f as *mut &mut dyn FnMut(&str, &glib::Value) as glib::ffi::gpointer,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{AnalysisLabel, Enrichment, FrameAnalysis, GapReason};

    fn init() {
        gst::init().unwrap();
        meta::register();
    }

    fn parse(s: &str) -> serde_json::Value {
        serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
    }

    #[test]
    fn strings_escape_quotes_backslashes_and_control_characters() {
        let mut w = Writer::default();
        let nasty = "a\"b\\c\nd\re\tf\u{8}g\u{c}h\u{1}i\u{1f}j\u{7f}k é ✓ \u{2028}";
        w.string(nasty);
        assert_eq!(parse(&w.out), serde_json::Value::String(nasty.into()));
    }

    #[test]
    fn every_value_type_maps_to_json() {
        init();
        let inner = gst::Structure::builder("inner").field("k", "v").build();
        let outputs = gst::Structure::builder("outputs")
            .field("count", 3i32)
            .field("big", u64::MAX)
            .field("neg", i64::MIN)
            .field("u", 7u32)
            .field("score", 0.1f64)
            .field("tiny", 1e-300f64)
            .field("half", 0.5f32)
            .field("nan", f64::NAN)
            .field("inf", f64::INFINITY)
            .field("yes", true)
            .field("label", "say \"hi\"\n")
            .field("list", gst::Array::new([1.5f64, 2.0, -3.25]))
            .field("nested", gst::Array::new([gst::Array::new(["a", "b"])]))
            .field("choices", gst::List::new([1i32, 2]))
            .field("inner", inner)
            .field("rate", gst::Fraction::new(30000, 1001))
            .field("format", gst::Format::Time)
            .build();
        let mut buffer = gst::Buffer::with_size(8).unwrap();
        let b = buffer.get_mut().unwrap();
        Enrichment {
            worker: 2,
            server: "http://127.0.0.1:1/".into(),
            attempts: 1,
            processing_time: 12345,
            outputs,
        }
        .add(b)
        .unwrap();
        let mut w = Writer::default();
        let times = FrameTimes {
            pts: Some(40),
            dts: None,
            duration: Some(33),
            running_time: Some(40),
        };
        let v = parse(w.frame(b, None, &times));
        let e = &v["enrichment"];
        assert_eq!(e["worker"], 2);
        assert_eq!(e["server"], "http://127.0.0.1:1/");
        assert_eq!(e["processing-time"], 12345);
        let o = &e["outputs"];
        assert_eq!(o["count"], 3);
        assert_eq!(o["big"].as_u64(), Some(u64::MAX));
        assert_eq!(o["neg"].as_i64(), Some(i64::MIN));
        assert_eq!(o["u"], 7);
        assert_eq!(o["score"].as_f64(), Some(0.1));
        assert_eq!(o["tiny"].as_f64(), Some(1e-300));
        assert_eq!(o["half"].as_f64(), Some(0.5));
        assert!(o["nan"].is_null() && o["inf"].is_null());
        assert_eq!(o["yes"], true);
        assert_eq!(o["label"], "say \"hi\"\n");
        assert_eq!(o["list"], serde_json::json!([1.5, 2.0, -3.25]));
        assert_eq!(o["nested"], serde_json::json!([["a", "b"]]));
        assert_eq!(o["choices"], serde_json::json!([1, 2]));
        assert_eq!(o["inner"], serde_json::json!({"k": "v"}));
        assert_eq!(o["rate"], serde_json::json!([30000, 1001]));
        assert_eq!(o["format"], "time");
        assert_eq!(v["seq"], serde_json::Value::Null);
        assert_eq!(v["pts"], 40);
        assert!(v["dts"].is_null());
        assert!(v.get("analysis").is_none() && v.get("rois").is_none());
    }

    #[test]
    fn a_frame_record_has_its_sequence_analysis_and_rois() {
        init();
        let mut buffer = gst::Buffer::with_size(8).unwrap();
        let b = buffer.get_mut().unwrap();
        FrameAnalysis {
            luma_mean: 100.25,
            luma_stddev: 3.0,
            motion: 0.5,
            scene_change: 0.0,
            sharpness: 12.5,
            label: AnalysisLabel::Motion,
            backend: "cpu".into(),
        }
        .add(b);
        let mut parent = VideoRegionOfInterestMeta::add(b, "face", (10, 20, 30, 40));
        parent.add_param(
            gst::Structure::builder("detection")
                .field("confidence", 0.75f64)
                .build(),
        );
        parent.set_id(7);
        let parent_id = parent.id();
        let mut child = VideoRegionOfInterestMeta::add(b, "eye\"s", (12, 22, 5, 6));
        child.set_parent_id(parent_id);
        let mut w = Writer::default();
        let seq = SeqMeta {
            seq: 9,
            epoch: 2,
            ingress: 0,
        };
        let times = FrameTimes {
            pts: None,
            dts: None,
            duration: None,
            running_time: None,
        };
        let v = parse(w.frame(b, Some(&seq), &times));
        assert_eq!(v["v"], SCHEMA_VERSION);
        assert_eq!(v["type"], "frame");
        assert_eq!((v["seq"].as_u64(), v["epoch"].as_u64()), (Some(9), Some(2)));
        assert_eq!(v["analysis"]["luma-mean"].as_f64(), Some(100.25));
        assert_eq!(v["analysis"]["label"], "motion");
        let rois = v["rois"].as_array().unwrap();
        assert_eq!(rois.len(), 2);
        assert_eq!(rois[0]["type"], "face");
        assert_eq!(
            (&rois[0]["x"], &rois[0]["y"], &rois[0]["w"], &rois[0]["h"]),
            (&10.into(), &20.into(), &30.into(), &40.into())
        );
        // GStreamer's default: 0.
        assert_eq!(rois[0]["parent-id"], 0);
        assert_eq!(
            rois[0]["params"]["detection"]["confidence"].as_f64(),
            Some(0.75)
        );
        assert_eq!(rois[1]["type"], "eye\"s");
        assert_eq!(rois[1]["parent-id"].as_i64(), Some(parent_id.into()));
        assert_eq!(rois[1]["params"], serde_json::json!({}));
    }

    #[test]
    fn gap_and_event_records() {
        let mut w = Writer::default();
        let gap = GapRecord::from_gap(&Gap {
            seq: 4,
            count: 2,
            epoch: 1,
            reason: GapReason::Timeout,
        });
        let v = parse(w.gap(&gap));
        assert_eq!(
            v,
            serde_json::json!({"v": 1, "type": "gap", "seq": 4, "epoch": 1, "count": 2,
                               "reason": "timeout", "pts": null, "duration": null})
        );
        assert_eq!(
            parse(w.event("eos")),
            serde_json::json!({"v": 1, "type": "eos"})
        );
    }
}
