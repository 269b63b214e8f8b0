//! The contracts between the elements: the metas and the gap event of DESIGN.md.
//!
//! Each meta is a `GstCustomMeta` registered with no tags, so ordinary transforms keep it.
//! Applications in any language can read the structures by name; Rust code uses the typed
//! helpers here. Metas are registered by the plugin and, for code that links the rlib, on
//! first use of any helper.

use std::ffi::CStr;
use std::sync::Once;

use gst::glib;
use gst::glib::translate::{FromGlib, IntoGlib};

/// Name of the sequence meta.
pub const SEQ_META: &str = "OrderedSeqMeta";
/// Name of the analysis meta.
pub const ANALYSIS_META: &str = "FrameAnalysisMeta";
/// Name of the enrichment meta.
pub const ENRICHMENT_META: &str = "EnrichmentMeta";
/// Name of the structure of the gap event.
pub const GAP_EVENT: &str = "ordered-gap";
/// Name of the structure of the in-flight query.
pub const IN_FLIGHT_QUERY: &str = "ordered-in-flight";

/// Registers the three metas with GStreamer (idempotent). Needs `gst::init()` first.
pub fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for name in [SEQ_META, ANALYSIS_META, ENRICHMENT_META] {
            if !gst::meta::CustomMeta::is_registered(name) {
                gst::meta::CustomMeta::register(name, &[]);
            }
        }
    });
}

/// Why a meta or event could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MalformedError(pub String);

impl std::fmt::Display for MalformedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MalformedError {}

/// A field name interned once. Setting or reading a field by its name interns the name
/// again, under GLib's global quark lock, which every streaming thread would then take per
/// frame; the `_by_quark` accessors skip that (their `IdStr` successors only do so from
/// GStreamer 1.26 on).
macro_rules! quark {
    ($name:literal) => {{
        static QUARK: std::sync::LazyLock<glib::Quark> =
            std::sync::LazyLock::new(|| glib::Quark::from_str($name));
        *QUARK
    }};
}

#[allow(deprecated)]
fn field<'a, T: glib::value::FromValue<'a>>(
    s: &'a gst::StructureRef,
    name: glib::Quark,
) -> Result<T, MalformedError> {
    s.get_by_quark::<T>(name)
        .map_err(|err| MalformedError(format!("{}: field `{}`: {err}", s.name(), name.as_str())))
}

#[allow(deprecated)]
fn set(s: &mut gst::StructureRef, name: glib::Quark, value: impl Into<glib::Value> + Send) {
    s.set_by_quark(name, value);
}

/// A registered custom meta, looked up once: looking one up by name costs a copy of the
/// name and a hash lookup under a global lock, per frame.
#[derive(Clone, Copy)]
struct Custom {
    api: glib::Type,
    /// The `GstMetaInfo`, which lives as long as the process (a raw pointer is not `Sync`).
    info: usize,
}

impl Custom {
    fn lookup(name: &'static CStr) -> Custom {
        register();
        // SAFETY: `name` is a C string; `register` registered the meta, so its info exists
        // and lives as long as the process.
        unsafe {
            let info = gst::ffi::gst_meta_get_info(name.as_ptr());
            assert!(!info.is_null(), "custom meta registered above");
            // Another library may have registered a meta of that name that is not custom
            // (`register` leaves an existing one alone): its structure would not be ours.
            assert!(
                gst::ffi::gst_meta_info_is_custom(info) != glib::ffi::GFALSE,
                "a meta named {name:?} is registered, but not as a custom meta"
            );
            Custom {
                api: glib::Type::from_glib((*info).api),
                info: info as usize,
            }
        }
    }

    /// The meta's structure on `buffer`, if it has one.
    fn read(self, buffer: &gst::BufferRef) -> Option<&gst::StructureRef> {
        // SAFETY: the buffer is valid for the borrow; a meta of a custom meta's API type is a
        // `GstCustomMeta`, whose structure lives as long as the meta, so as long as the
        // borrow of the buffer (which is shared: nothing removes the meta meanwhile).
        unsafe {
            let meta = gst::ffi::gst_buffer_get_meta(buffer.as_mut_ptr(), self.api.into_glib());
            if meta.is_null() {
                return None;
            }
            let s = gst::ffi::gst_custom_meta_get_structure(meta as *mut gst::ffi::GstCustomMeta);
            Some(gst::StructureRef::from_glib_borrow(s))
        }
    }

    /// Removes the meta from `buffer`, if it has one.
    fn remove(self, buffer: &mut gst::BufferRef) {
        // SAFETY: the buffer is writable (`&mut`); the meta pointer comes from it.
        unsafe {
            let meta = gst::ffi::gst_buffer_get_meta(buffer.as_mut_ptr(), self.api.into_glib());
            if !meta.is_null() {
                gst::ffi::gst_buffer_remove_meta(buffer.as_mut_ptr(), meta);
            }
        }
    }

    /// Adds the meta to `buffer` (another one if it has one) and returns its empty structure.
    fn add(self, buffer: &mut gst::BufferRef) -> &mut gst::StructureRef {
        // SAFETY: the buffer is writable (`&mut`); `info` is a registered custom meta's, whose
        // init takes no parameters and makes the structure, which lives as long as the meta,
        // so as long as the mutable borrow of the buffer.
        unsafe {
            let meta = gst::ffi::gst_buffer_add_meta(
                buffer.as_mut_ptr(),
                self.info as *const gst::ffi::GstMetaInfo,
                std::ptr::null_mut(),
            );
            assert!(!meta.is_null(), "a custom meta can always be added");
            let s = gst::ffi::gst_custom_meta_get_structure(meta as *mut gst::ffi::GstCustomMeta);
            gst::StructureRef::from_glib_borrow_mut(s)
        }
    }
}

macro_rules! custom {
    ($name:expr) => {{
        static CUSTOM: std::sync::LazyLock<Custom> =
            std::sync::LazyLock::new(|| Custom::lookup($name));
        *CUSTOM
    }};
}

fn seq_meta() -> Custom {
    custom!(c"OrderedSeqMeta")
}

fn analysis_meta() -> Custom {
    custom!(c"FrameAnalysisMeta")
}

fn enrichment_meta() -> Custom {
    custom!(c"EnrichmentMeta")
}

/// Reads the structure of the custom meta `meta`, if the buffer has one.
fn read_custom<R>(
    buffer: &gst::BufferRef,
    meta: Custom,
    read: impl FnOnce(&gst::StructureRef) -> Result<R, MalformedError>,
) -> Option<Result<R, MalformedError>> {
    Some(read(meta.read(buffer)?))
}

/// The structure of a frame's `FrameAnalysisMeta`, borrowed (no copy).
pub(crate) fn analysis_structure(buffer: &gst::BufferRef) -> Option<&gst::StructureRef> {
    analysis_meta().read(buffer)
}

/// The structure of a frame's `EnrichmentMeta`, borrowed (no copy).
pub(crate) fn enrichment_structure(buffer: &gst::BufferRef) -> Option<&gst::StructureRef> {
    enrichment_meta().read(buffer)
}

/// `OrderedSeqMeta`: a frame's place in its stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqMeta {
    /// Consecutive from 0 per stream and epoch.
    pub seq: u64,
    /// Bumped by every flush or segment restart.
    pub epoch: u32,
    /// Pipeline running time (ns) when the frame entered the pool.
    pub ingress: u64,
}

impl SeqMeta {
    /// Attaches the meta to `buffer` (replacing one that is already there).
    pub fn add(&self, buffer: &mut gst::BufferRef) {
        seq_meta().remove(buffer);
        let s = seq_meta().add(buffer);
        set(s, quark!("seq"), self.seq);
        set(s, quark!("epoch"), self.epoch);
        set(s, quark!("ingress"), self.ingress);
    }

    /// Reads the meta: `None` when absent, an error when its fields are missing or mistyped.
    pub fn read(buffer: &gst::BufferRef) -> Option<Result<SeqMeta, MalformedError>> {
        read_custom(buffer, seq_meta(), |s| {
            Ok(SeqMeta {
                seq: field(s, quark!("seq"))?,
                epoch: field(s, quark!("epoch"))?,
                ingress: field(s, quark!("ingress"))?,
            })
        })
    }
}

/// Why frames were lost, as named in the gap event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GapReason {
    /// Dropped by a full queue.
    Leaked,
    /// Processing failed.
    Failed,
    /// Processing took longer than allowed.
    Timeout,
    /// Dropped by the application's handler.
    Dropped,
}

impl GapReason {
    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::Leaked => "leaked",
            GapReason::Failed => "failed",
            GapReason::Timeout => "timeout",
            GapReason::Dropped => "dropped",
        }
    }
}

impl std::str::FromStr for GapReason {
    type Err = MalformedError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "leaked" => GapReason::Leaked,
            "failed" => GapReason::Failed,
            "timeout" => GapReason::Timeout,
            "dropped" => GapReason::Dropped,
            other => return Err(MalformedError(format!("unknown gap reason `{other}`"))),
        })
    }
}

/// The `ordered-gap` event: `count` frames from `seq` in `epoch` will never arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    pub seq: u64,
    pub count: u64,
    pub epoch: u32,
    pub reason: GapReason,
}

impl Gap {
    /// A custom serialized downstream event carrying the gap.
    pub fn to_event(&self) -> gst::Event {
        let s = gst::Structure::builder(GAP_EVENT)
            .field("seq", self.seq)
            .field("count", self.count)
            .field("epoch", self.epoch)
            .field("reason", self.reason.as_str())
            .build();
        gst::event::CustomDownstream::new(s)
    }

    /// Reads a gap event: `None` when `event` is not one, an error when it is malformed.
    pub fn from_event(event: &gst::EventRef) -> Option<Result<Gap, MalformedError>> {
        if event.type_() != gst::EventType::CustomDownstream {
            return None;
        }
        let s = event.structure().filter(|s| s.name() == GAP_EVENT)?;
        Some((|| {
            Ok(Gap {
                seq: field(s, quark!("seq"))?,
                count: field(s, quark!("count"))?,
                epoch: field(s, quark!("epoch"))?,
                reason: field::<&str>(s, quark!("reason"))?.parse()?,
            })
        })())
    }
}

/// The `ordered-in-flight` query: a custom query a resequencer sends upstream to learn how
/// far out of order the pools before it can put frames (field `frames`, u64), so that its
/// window does not skip frames that are still being processed. Each `enrichpool` adds its
/// bound (its `max-size-buffers`: it admits no frame that far ahead of the oldest one not
/// yet pushed or given up on) to the answer from further upstream; elements that do not know
/// the query forward it, a resequencer answers it for what is upstream of it (0).
///
/// A second field, `measured` (bool, true unless a pool says otherwise), tells whether the
/// pools' latency answers cover their processing: a pool that measures its latency
/// (`latency=-1`) and has not delivered a frame yet sets it false.
pub struct InFlightQuery;

impl InFlightQuery {
    /// A new query, with nothing counted yet.
    pub fn query() -> gst::query::Custom<gst::Query> {
        gst::query::Custom::new(
            gst::Structure::builder(IN_FLIGHT_QUERY)
                .field("frames", 0u64)
                .field("measured", true)
                .build(),
        )
    }

    /// The frames counted in `query`; `None` when it is not an in-flight query.
    pub fn frames(query: &gst::QueryRef) -> Option<u64> {
        if query.type_() != gst::QueryType::Custom {
            return None;
        }
        let s = query.structure().filter(|s| s.name() == IN_FLIGHT_QUERY)?;
        s.get::<u64>("frames").ok()
    }

    /// Sets the answer of an in-flight query.
    pub fn set_frames(query: &mut gst::QueryRef, frames: u64) {
        if Self::frames(query).is_some() {
            query.structure_mut().set("frames", frames);
        }
    }

    /// Whether every pool that answered has its latency covered (see above).
    pub fn measured(query: &gst::QueryRef) -> bool {
        Self::frames(query).is_some()
            && query
                .structure()
                .is_some_and(|s| s.get::<bool>("measured").unwrap_or(true))
    }

    /// Marks the answer: a pool's latency is not measured yet.
    pub fn set_unmeasured(query: &mut gst::QueryRef) {
        if Self::frames(query).is_some() {
            query.structure_mut().set("measured", false);
        }
    }
}

/// The label frameanalyzer gives a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AnalysisLabel {
    SceneCut,
    Motion,
    Static,
    Dark,
}

impl AnalysisLabel {
    pub fn as_str(self) -> &'static str {
        match self {
            AnalysisLabel::SceneCut => "scene-cut",
            AnalysisLabel::Motion => "motion",
            AnalysisLabel::Static => "static",
            AnalysisLabel::Dark => "dark",
        }
    }
}

impl std::str::FromStr for AnalysisLabel {
    type Err = MalformedError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "scene-cut" => AnalysisLabel::SceneCut,
            "motion" => AnalysisLabel::Motion,
            "static" => AnalysisLabel::Static,
            "dark" => AnalysisLabel::Dark,
            other => return Err(MalformedError(format!("unknown analysis label `{other}`"))),
        })
    }
}

/// `FrameAnalysisMeta`: what the analysis pass found in a frame.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameAnalysis {
    /// Mean luma, 0..255.
    pub luma_mean: f64,
    /// Standard deviation of luma.
    pub luma_stddev: f64,
    /// Fraction of blocks that moved against the previous frame, 0..1.
    pub motion: f64,
    /// Histogram distance to the previous frame, 0..1.
    pub scene_change: f64,
    /// Variance of the Laplacian of luma.
    pub sharpness: f64,
    pub label: AnalysisLabel,
    /// The wgpu adapter's name, or `cpu`.
    pub backend: String,
}

impl FrameAnalysis {
    /// Attaches the meta, replacing one that is already there (a second analysis pass).
    pub fn add(&self, buffer: &mut gst::BufferRef) {
        analysis_meta().remove(buffer);
        let s = analysis_meta().add(buffer);
        set(s, quark!("luma-mean"), self.luma_mean);
        set(s, quark!("luma-stddev"), self.luma_stddev);
        set(s, quark!("motion"), self.motion);
        set(s, quark!("scene-change"), self.scene_change);
        set(s, quark!("sharpness"), self.sharpness);
        set(s, quark!("label"), self.label.as_str());
        set(s, quark!("backend"), self.backend.as_str());
    }

    pub fn read(buffer: &gst::BufferRef) -> Option<Result<FrameAnalysis, MalformedError>> {
        read_custom(buffer, analysis_meta(), |s| {
            Ok(FrameAnalysis {
                luma_mean: field(s, quark!("luma-mean"))?,
                luma_stddev: field(s, quark!("luma-stddev"))?,
                motion: field(s, quark!("motion"))?,
                scene_change: field(s, quark!("scene-change"))?,
                sharpness: field(s, quark!("sharpness"))?,
                label: field::<&str>(s, quark!("label"))?.parse()?,
                backend: field::<String>(s, quark!("backend"))?,
            })
        })
    }
}

/// `EnrichmentMeta`: who enriched a frame, how, and what came out.
#[derive(Clone, Debug, PartialEq)]
pub struct Enrichment {
    pub worker: u32,
    /// The server's URL, empty for local work.
    pub server: String,
    pub attempts: u32,
    /// Nanoseconds spent on the frame.
    pub processing_time: u64,
    /// One field per output the enrichment produced.
    pub outputs: gst::Structure,
}

/// The fixed fields of `EnrichmentMeta`; the others are outputs.
pub(crate) const ENRICHMENT_FIELDS: [&str; 4] = ["worker", "server", "attempts", "processing-time"];

impl Enrichment {
    /// Attaches the meta. An output named like one of the fixed fields is refused. A frame
    /// that already has one (pools in a row) keeps a single meta: this enrichment's
    /// `worker`, `server`, `attempts` and `processing-time`, and the outputs of both, this
    /// one's winning where names are the same.
    pub fn add(&self, buffer: &mut gst::BufferRef) -> Result<(), MalformedError> {
        if let Some(clash) = self
            .outputs
            .fields()
            .find(|f| ENRICHMENT_FIELDS.contains(&f.as_str()))
        {
            return Err(MalformedError(format!(
                "output `{clash}` clashes with a field of {ENRICHMENT_META}"
            )));
        }
        let earlier = enrichment_meta().read(buffer).map(|s| s.to_owned());
        if earlier.is_some() {
            enrichment_meta().remove(buffer);
        }
        let s = enrichment_meta().add(buffer);
        if let Some(earlier) = earlier {
            for (name, value) in earlier.iter() {
                s.set_value(name, value.clone());
            }
        }
        set(s, quark!("worker"), self.worker);
        set(s, quark!("server"), self.server.as_str());
        set(s, quark!("attempts"), self.attempts);
        set(s, quark!("processing-time"), self.processing_time);
        for (name, value) in self.outputs.iter() {
            s.set_value(name, value.clone());
        }
        Ok(())
    }

    pub fn read(buffer: &gst::BufferRef) -> Option<Result<Enrichment, MalformedError>> {
        read_custom(buffer, enrichment_meta(), |s| {
            let mut outputs = gst::Structure::new_empty("outputs");
            for (name, value) in s.iter() {
                if !ENRICHMENT_FIELDS.contains(&name.as_str()) {
                    outputs.set_value(name, value.clone());
                }
            }
            Ok(Enrichment {
                worker: field(s, quark!("worker"))?,
                server: field::<String>(s, quark!("server"))?,
                attempts: field(s, quark!("attempts"))?,
                processing_time: field(s, quark!("processing-time"))?,
                outputs,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init() {
        gst::init().unwrap();
        register();
    }

    #[test]
    fn seq_meta_round_trips_and_survives_copy() {
        init();
        let mut buffer = gst::Buffer::with_size(4).unwrap();
        let meta = SeqMeta {
            seq: 42,
            epoch: 3,
            ingress: 1_000_000,
        };
        meta.add(buffer.get_mut().unwrap());
        assert_eq!(SeqMeta::read(&buffer), Some(Ok(meta)));
        // A deep copy (what a transform does) keeps the meta.
        let copy = buffer.copy_deep().unwrap();
        assert_eq!(SeqMeta::read(&copy), Some(Ok(meta)));
        // Adding again replaces rather than stacks.
        let newer = SeqMeta { seq: 43, ..meta };
        let b = buffer.make_mut();
        newer.add(b);
        assert_eq!(SeqMeta::read(b), Some(Ok(newer)));
        let seq_metas = b
            .iter_meta::<gst::Meta>()
            .filter(|m| m.try_as_custom_meta().is_some_and(|c| c.has_name(SEQ_META)))
            .count();
        assert_eq!(seq_metas, 1);
    }

    #[test]
    fn missing_and_malformed_seq_meta_are_told_apart() {
        init();
        let mut buffer = gst::Buffer::new();
        assert_eq!(SeqMeta::read(&buffer), None);
        let b = buffer.get_mut().unwrap();
        let mut meta = gst::meta::CustomMeta::add(b, SEQ_META).unwrap();
        meta.mut_structure().set("seq", "not a number");
        let err = SeqMeta::read(&buffer).unwrap().unwrap_err();
        assert!(err.0.contains("seq"), "{err}");
    }

    #[test]
    fn gap_event_round_trips() {
        init();
        let gap = Gap {
            seq: 7,
            count: 3,
            epoch: 1,
            reason: GapReason::Timeout,
        };
        let event = gap.to_event();
        assert!(event.is_serialized());
        assert_eq!(event.structure().unwrap().name(), GAP_EVENT);
        assert_eq!(Gap::from_event(&event), Some(Ok(gap)));
        assert_eq!(Gap::from_event(&gst::event::Eos::new()), None);
        let other = gst::event::CustomDownstream::new(gst::Structure::new_empty("something-else"));
        assert_eq!(Gap::from_event(&other), None);
        let bad = gst::event::CustomDownstream::new(
            gst::Structure::builder(GAP_EVENT)
                .field("seq", 1u64)
                .field("count", 1u64)
                .field("epoch", 0u32)
                .field("reason", "eaten")
                .build(),
        );
        assert!(Gap::from_event(&bad).unwrap().is_err());
    }

    #[test]
    fn analysis_meta_round_trips() {
        init();
        let mut buffer = gst::Buffer::new();
        let analysis = FrameAnalysis {
            luma_mean: 128.5,
            luma_stddev: 3.25,
            motion: 0.5,
            scene_change: 0.125,
            sharpness: 99.0,
            label: AnalysisLabel::Motion,
            backend: "cpu".into(),
        };
        analysis.add(buffer.get_mut().unwrap());
        assert_eq!(FrameAnalysis::read(&buffer), Some(Ok(analysis)));
        let s = gst::meta::CustomMeta::from_buffer(&buffer, ANALYSIS_META).unwrap();
        assert_eq!(s.structure().get::<&str>("label").unwrap(), "motion");
    }

    #[test]
    fn enrichment_meta_carries_outputs() {
        init();
        let mut buffer = gst::Buffer::new();
        let enrichment = Enrichment {
            worker: 2,
            server: String::new(),
            attempts: 1,
            processing_time: 5_000_000,
            outputs: gst::Structure::builder("outputs")
                .field("score", 0.75f64)
                .field("class", "car")
                .build(),
        };
        enrichment.add(buffer.get_mut().unwrap()).unwrap();
        let back = Enrichment::read(&buffer).unwrap().unwrap();
        assert_eq!(back, enrichment);
        let clash = Enrichment {
            outputs: gst::Structure::builder("outputs")
                .field("worker", 1u32)
                .build(),
            ..enrichment
        };
        assert!(clash.add(buffer.get_mut().unwrap()).is_err());
    }

    fn count_custom(buffer: &gst::BufferRef, name: &str) -> usize {
        buffer
            .iter_meta::<gst::Meta>()
            .filter(|m| m.try_as_custom_meta().is_some_and(|c| c.has_name(name)))
            .count()
    }

    #[test]
    fn a_second_analysis_replaces_the_first() {
        init();
        let mut buffer = gst::Buffer::new();
        let first = FrameAnalysis {
            luma_mean: 1.0,
            luma_stddev: 0.0,
            motion: 0.0,
            scene_change: 0.0,
            sharpness: 0.0,
            label: AnalysisLabel::Dark,
            backend: "cpu".into(),
        };
        let second = FrameAnalysis {
            luma_mean: 200.0,
            label: AnalysisLabel::Static,
            ..first.clone()
        };
        first.add(buffer.get_mut().unwrap());
        second.add(buffer.get_mut().unwrap());
        assert_eq!(count_custom(&buffer, ANALYSIS_META), 1);
        assert_eq!(FrameAnalysis::read(&buffer), Some(Ok(second)));
    }

    #[test]
    fn a_second_enrichment_merges_outputs_into_one_meta() {
        init();
        let mut buffer = gst::Buffer::new();
        let first = Enrichment {
            worker: 1,
            server: "http://a".into(),
            attempts: 2,
            processing_time: 10,
            outputs: gst::Structure::builder("outputs")
                .field("class", "car")
                .field("score", 0.5f64)
                .build(),
        };
        let second = Enrichment {
            worker: 3,
            server: String::new(),
            attempts: 1,
            processing_time: 20,
            outputs: gst::Structure::builder("outputs")
                .field("score", 0.9f64)
                .field("colour", "red")
                .build(),
        };
        first.add(buffer.get_mut().unwrap()).unwrap();
        second.add(buffer.get_mut().unwrap()).unwrap();
        assert_eq!(count_custom(&buffer, ENRICHMENT_META), 1);
        let back = Enrichment::read(&buffer).unwrap().unwrap();
        assert_eq!(
            (back.worker, back.attempts, back.processing_time),
            (3, 1, 20)
        );
        assert!(back.server.is_empty());
        assert_eq!(back.outputs.get::<&str>("class").unwrap(), "car");
        assert_eq!(back.outputs.get::<f64>("score").unwrap(), 0.9);
        assert_eq!(back.outputs.get::<&str>("colour").unwrap(), "red");
    }

    #[test]
    fn the_in_flight_query_carries_a_count() {
        init();
        let mut q = InFlightQuery::query();
        assert_eq!(InFlightQuery::frames(&q), Some(0));
        InFlightQuery::set_frames(&mut q, 12);
        assert_eq!(InFlightQuery::frames(&q), Some(12));
        assert_eq!(InFlightQuery::frames(&gst::query::Drain::new()), None);
    }
}
