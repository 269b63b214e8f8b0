//! The frameanalyzer's implementation: an in-place `BaseTransform` that maps each frame's
//! first plane, runs the [`Analyzer`] (GPU or CPU) on it, and attaches `FrameAnalysisMeta`
//! and one `GstVideoRegionOfInterestMeta` (type `motion`) per moving region.
//!
//! With `device=auto`, a GPU that fails or does not finish a frame within `gpu-timeout` is
//! given up for the CPU twin, with a warning; the frame is analysed again on the CPU.
//!
//! Locks: `settings` is only held alone. `analyzer` is held for the analysis of one frame
//! (the streaming thread is the only one that analyzes) and is taken before `state`, which
//! is only held briefly (so `stats` never waits for a frame).

use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;
use gst_video::prelude::*;

use crate::analysis::{
    Analysis, Analyzer, Layout, Params, Plane, cpu::CpuBackend, gpu::GpuBackend,
};
use crate::glue::{StatsTimer, lock, post_stats};
use crate::meta::FrameAnalysis;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "frameanalyzer",
        gst::DebugColorFlags::empty(),
        Some("Per-frame analysis on the GPU (wgpu) or the CPU"),
    )
});

/// Where the analysis runs.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstFrameAnalyzerDevice")]
pub enum Device {
    #[enum_value(
        name = "Auto: a wgpu adapter if there is one, else the CPU",
        nick = "auto"
    )]
    Auto = 0,
    #[enum_value(
        name = "GPU: a wgpu adapter (software ones such as lavapipe included); fail to start without one",
        nick = "gpu"
    )]
    Gpu = 1,
    #[enum_value(name = "CPU: the CPU twin, single-threaded", nick = "cpu")]
    Cpu = 2,
}

const FORMATS: [gst_video::VideoFormat; 9] = [
    gst_video::VideoFormat::I420,
    gst_video::VideoFormat::Nv12,
    gst_video::VideoFormat::Gray8,
    gst_video::VideoFormat::Rgba,
    gst_video::VideoFormat::Bgra,
    gst_video::VideoFormat::Rgbx,
    gst_video::VideoFormat::Bgrx,
    gst_video::VideoFormat::Rgb,
    gst_video::VideoFormat::Bgr,
];

/// How luma is read from the first plane of `format`.
fn layout_of(format: gst_video::VideoFormat) -> Option<Layout> {
    use gst_video::VideoFormat as F;
    let packed = |bytes_per_pixel, r, g, b| {
        Some(Layout::Packed {
            bytes_per_pixel,
            r,
            g,
            b,
        })
    };
    match format {
        F::I420 | F::Nv12 | F::Gray8 => Some(Layout::Luma),
        F::Rgba | F::Rgbx => packed(4, 0, 1, 2),
        F::Bgra | F::Bgrx => packed(4, 2, 1, 0),
        F::Rgb => packed(3, 0, 1, 2),
        F::Bgr => packed(3, 2, 1, 0),
        _ => None,
    }
}

const DEFAULT_GPU_TIMEOUT: u64 = 2_000_000_000;

#[derive(Debug, Clone, Copy)]
struct Settings {
    device: Device,
    params: Params,
    post_messages: bool,
    stats_interval: u64,
    gpu_timeout: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            device: Device::Auto,
            params: Params::default(),
            post_messages: false,
            stats_interval: 0,
            gpu_timeout: DEFAULT_GPU_TIMEOUT,
        }
    }
}

#[derive(Default)]
struct Stats {
    frames: u64,
    errors: u64,
    /// Times the GPU was given up for the CPU.
    fallbacks: u64,
    processing_ns: u64,
    max_processing_ns: u64,
    motion_frames: u64,
    scene_cuts: u64,
}

#[derive(Default)]
struct State {
    info: Option<gst_video::VideoInfo>,
    layout: Option<Layout>,
    backend: String,
    stats: Stats,
    timer: StatsTimer,
    /// Between start and stop.
    running: bool,
}

#[derive(Default)]
pub struct FrameAnalyzer {
    settings: Mutex<Settings>,
    /// Held for the analysis of one frame; taken before `state`.
    analyzer: Mutex<Option<Analyzer>>,
    state: Mutex<State>,
}

fn stats_structure(state: &State) -> gst::Structure {
    let s = &state.stats;
    gst::Structure::builder("frameanalyzer-stats")
        .field("frames", s.frames)
        .field("errors", s.errors)
        .field("gpu-fallbacks", s.fallbacks)
        .field("motion-frames", s.motion_frames)
        .field("scene-cuts", s.scene_cuts)
        .field(
            "mean-processing-time",
            s.processing_ns.checked_div(s.frames).unwrap_or(0),
        )
        .field("max-processing-time", s.max_processing_ns)
        .field("backend", state.backend.as_str())
        .build()
}

impl FrameAnalyzer {
    fn settings(&self) -> Settings {
        *lock(&self.settings)
    }

    /// (Re)starts the stats timer while running, on the element's clock if it has one.
    fn restart_stats_timer(&self) {
        let mut state = lock(&self.state);
        // Read under the state lock: a concurrent change of stats-interval restarts the
        // timer after this, with its own value, and so has the last word.
        let interval = self.settings().stats_interval;
        if state.running {
            state
                .timer
                .restart(&*self.obj(), interval, |e: &super::FrameAnalyzer| {
                    stats_structure(&lock(&e.imp().state))
                });
        }
    }

    fn message_structure(
        analysis: &Analysis,
        backend: &str,
        pts: Option<gst::ClockTime>,
    ) -> gst::Structure {
        let rois = gst::Array::new(analysis.rois.iter().map(|r| {
            gst::Structure::builder("roi")
                .field("x", r.x)
                .field("y", r.y)
                .field("width", r.width)
                .field("height", r.height)
                .build()
                .to_send_value()
        }));
        gst::Structure::builder("frameanalyzer")
            .field("pts", pts.map_or(u64::MAX, |t| t.nseconds()))
            .field("luma-mean", analysis.luma_mean)
            .field("luma-stddev", analysis.luma_stddev)
            .field("motion", analysis.motion)
            .field("scene-change", analysis.scene_change)
            .field("sharpness", analysis.sharpness)
            .field("label", analysis.label.as_str())
            .field("backend", backend)
            .field("rois", rois)
            .build()
    }
}

#[glib::object_subclass]
impl ObjectSubclass for FrameAnalyzer {
    const NAME: &'static str = "GstFrameAnalyzer";
    type Type = super::FrameAnalyzer;
    type ParentType = gst_base::BaseTransform;
}

impl ObjectImpl for FrameAnalyzer {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let d = Params::default();
            vec![
                glib::ParamSpecEnum::builder_with_default("device", Device::Auto)
                    .nick("Device")
                    .blurb("Where the analysis runs: auto (a wgpu adapter if any, else CPU), gpu (fail at start without an adapter) or cpu")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("block-size")
                    .nick("Block size")
                    .blurb("Side of a motion block, in pixels")
                    .minimum(4)
                    .maximum(128)
                    .default_value(d.block_size)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("motion-threshold")
                    .nick("Motion threshold")
                    .blurb("A block moves when the mean absolute difference of its luma to the previous frame exceeds this (luma levels, 0-255)")
                    .minimum(0.0)
                    .maximum(255.0)
                    .default_value(d.motion_threshold)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("scene-threshold")
                    .nick("Scene threshold")
                    .blurb("A scene-change score (half the L1 distance between normalized luma histograms, 0-1) at or above this labels the frame scene-cut")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(d.scene_threshold)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("dark-threshold")
                    .nick("Dark threshold")
                    .blurb("A frame without motion or cut whose mean luma (0-255) is below this is labelled dark")
                    .minimum(0.0)
                    .maximum(255.0)
                    .default_value(d.dark_threshold)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("max-rois")
                    .nick("Maximum ROIs")
                    .blurb("The most motion regions attached per frame (GstVideoRegionOfInterestMeta, type motion); extra regions merge into the nearest")
                    .maximum(1024)
                    .default_value(d.max_rois as u32)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("post-messages")
                    .nick("Post messages")
                    .blurb("Post each frame's analysis (the FrameAnalysisMeta fields, pts and rois) as a `frameanalyzer` element message")
                    .default_value(false)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt64::builder("gpu-timeout")
                    .nick("GPU timeout")
                    .blurb("The longest a frame may take on the GPU, in nanoseconds; past it the GPU counts as wedged: with device=auto the analysis moves to the CPU (a warning, counted in stats as gpu-fallbacks), with device=gpu the stream fails with an error")
                    .minimum(1)
                    .default_value(DEFAULT_GPU_TIMEOUT)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("backend")
                    .nick("Backend")
                    .blurb("What runs the analysis since start: the wgpu adapter's name, or cpu")
                    .read_only()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("frameanalyzer-stats: frames, errors, gpu-fallbacks, motion-frames, scene-cuts, mean-processing-time and max-processing-time (ns), backend")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("stats-interval")
                    .nick("Statistics interval")
                    .blurb("Post the stats structure as an element message every this many nanoseconds while running, and once more at EOS, when every frame was analysed (0 = never)")
                    .default_value(0)
                    .mutable_playing()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = lock(&self.settings);
        match pspec.name() {
            "device" => s.device = value.get().expect("type checked upstream"),
            "block-size" => s.params.block_size = value.get().expect("type checked upstream"),
            "motion-threshold" => {
                s.params.motion_threshold = value.get().expect("type checked upstream")
            }
            "scene-threshold" => {
                s.params.scene_threshold = value.get().expect("type checked upstream")
            }
            "dark-threshold" => {
                s.params.dark_threshold = value.get().expect("type checked upstream")
            }
            "max-rois" => {
                s.params.max_rois = value.get::<u32>().expect("type checked upstream") as usize
            }
            "post-messages" => s.post_messages = value.get().expect("type checked upstream"),
            "gpu-timeout" => s.gpu_timeout = value.get().expect("type checked upstream"),
            "stats-interval" => {
                s.stats_interval = value.get().expect("type checked upstream");
                drop(s);
                self.restart_stats_timer();
            }
            other => unreachable!("unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings();
        match pspec.name() {
            "device" => s.device.to_value(),
            "block-size" => s.params.block_size.to_value(),
            "motion-threshold" => s.params.motion_threshold.to_value(),
            "scene-threshold" => s.params.scene_threshold.to_value(),
            "dark-threshold" => s.params.dark_threshold.to_value(),
            "max-rois" => (s.params.max_rois as u32).to_value(),
            "post-messages" => s.post_messages.to_value(),
            "gpu-timeout" => s.gpu_timeout.to_value(),
            "backend" => lock(&self.state).backend.to_value(),
            "stats" => stats_structure(&lock(&self.state)).to_value(),
            "stats-interval" => s.stats_interval.to_value(),
            other => unreachable!("unknown property {other}"),
        }
    }
}

impl GstObjectImpl for FrameAnalyzer {}

impl ElementImpl for FrameAnalyzer {
    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        let res = self.parent_change_state(transition)?;
        if transition == gst::StateChange::PausedToPlaying {
            // On the pipeline's clock from now on.
            self.restart_stats_timer();
        }
        Ok(res)
    }

    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Frame analyzer",
                "Filter/Analyzer/Video",
                "Measures each frame on the GPU (WGSL compute shaders through wgpu) or the CPU: \
                 luma mean and spread, histogram, block motion against the previous frame, \
                 scene change, sharpness and a label; attaches FrameAnalysisMeta and motion \
                 regions as GstVideoRegionOfInterestMeta",
                "gst-ordered developers",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            crate::glue::always_pads(
                &gst_video::VideoCapsBuilder::new()
                    .format_list(FORMATS)
                    .build(),
            )
        });
        TEMPLATES.as_ref()
    }
}

impl BaseTransformImpl for FrameAnalyzer {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings();
        let gpu = || {
            GpuBackend::new().map(|mut gpu| {
                gpu.set_wait_timeout(Some(Duration::from_nanos(settings.gpu_timeout)));
                gpu
            })
        };
        let analyzer = match settings.device {
            Device::Cpu => Analyzer::new(Box::new(CpuBackend::new())),
            Device::Gpu => match gpu() {
                Ok(gpu) => Analyzer::new(Box::new(gpu)),
                Err(err) => {
                    return Err(gst::error_msg!(
                        gst::ResourceError::NotFound,
                        ["device=gpu but no GPU can be used: {}", err]
                    ));
                }
            },
            Device::Auto => match gpu() {
                Ok(gpu) => Analyzer::new(Box::new(gpu)),
                Err(err) => {
                    gst::info!(CAT, imp = self, "no GPU ({err}); analysing on the CPU");
                    Analyzer::new(Box::new(CpuBackend::new()))
                }
            },
        };
        gst::info!(CAT, imp = self, "analysing on {}", analyzer.backend_name());
        let backend = analyzer.backend_name().to_string();
        *lock(&self.analyzer) = Some(analyzer);
        let mut state = lock(&self.state);
        state.backend = backend;
        state.stats = Stats::default();
        state.running = true;
        drop(state);
        self.restart_stats_timer();
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *lock(&self.analyzer) = None;
        let mut state = lock(&self.state);
        state.info = None;
        state.running = false;
        state.timer.stop();
        Ok(())
    }

    fn set_caps(&self, incaps: &gst::Caps, _outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let info = gst_video::VideoInfo::from_caps(incaps)
            .map_err(|_| gst::loggable_error!(CAT, "invalid video caps {incaps}"))?;
        let layout = layout_of(info.format())
            .ok_or_else(|| gst::loggable_error!(CAT, "unsupported format {:?}", info.format()))?;
        let mut analyzer = lock(&self.analyzer);
        let mut state = lock(&self.state);
        let resized = state.info.as_ref().is_none_or(|old| {
            old.width() != info.width()
                || old.height() != info.height()
                || old.format() != info.format()
        });
        if resized {
            // The previous frame no longer compares with the next one.
            if let Some(a) = analyzer.as_mut() {
                a.reset();
            }
        }
        state.info = Some(info);
        state.layout = Some(layout);
        drop(state);
        drop(analyzer);
        Ok(())
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        if let gst::EventView::FlushStop(_) = event.view()
            && let Some(a) = lock(&self.analyzer).as_mut()
        {
            a.reset();
        }
        if event.type_() == gst::EventType::Eos && self.settings().stats_interval > 0 {
            // Every frame before EOS was analysed: the last message covers the whole stream.
            let stats = stats_structure(&lock(&self.state));
            post_stats(&*self.obj(), stats);
        }
        self.parent_sink_event(event)
    }

    fn transform_ip(
        &self,
        buffer: &mut gst::BufferRef,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let settings = self.settings();
        let (info, layout) = {
            let state = lock(&self.state);
            (state.info.clone(), state.layout)
        };
        let mut analyzer = lock(&self.analyzer);
        let (Some(analyzer), Some(info), Some(layout)) = (analyzer.as_mut(), info, layout) else {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ("no caps before the first frame")
            );
            return Err(gst::FlowError::NotNegotiated);
        };
        let started = std::time::Instant::now();
        let result = {
            let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info).map_err(
                |_| {
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Format,
                        ("cannot map a frame of {:?}", info)
                    );
                    gst::FlowError::Error
                },
            )?;
            let data = frame.plane_data(0).map_err(|err| {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Format,
                    ("cannot read the first plane of a frame: {}", err)
                );
                gst::FlowError::Error
            })?;
            let plane = Plane {
                data,
                width: frame.width(),
                height: frame.height(),
                stride: frame.plane_stride()[0].max(0) as u32,
                layout,
            };
            match analyzer.analyze(&plane, &settings.params) {
                Err(err) if settings.device == Device::Auto && analyzer.backend_name() != "cpu" => {
                    // The GPU failed or is wedged: the CPU twin takes over, this frame first.
                    let gpu = analyzer.backend_name().to_string();
                    *analyzer = Analyzer::new(Box::new(CpuBackend::new()));
                    {
                        let mut state = lock(&self.state);
                        state.backend = analyzer.backend_name().to_string();
                        state.stats.fallbacks += 1;
                    }
                    gst::element_imp_warning!(
                        self,
                        gst::ResourceError::Failed,
                        (
                            "The GPU ({}) failed: {}; analysing on the CPU from now on",
                            gpu,
                            err
                        ),
                        ["device=auto; counted in stats as gpu-fallbacks"]
                    );
                    analyzer.analyze(&plane, &settings.params)
                }
                other => other,
            }
        };
        let mut state = lock(&self.state);
        let State { backend, stats, .. } = &mut *state;
        let analysis = match result {
            Ok(a) => a,
            Err(err) => {
                stats.errors += 1;
                drop(state);
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Failed,
                    ("analysis failed: {}", err)
                );
                return Err(gst::FlowError::Error);
            }
        };
        let elapsed = started.elapsed().as_nanos() as u64;
        stats.frames += 1;
        stats.processing_ns += elapsed;
        stats.max_processing_ns = stats.max_processing_ns.max(elapsed);
        stats.motion_frames += u64::from(analysis.motion > 0.0);
        stats.scene_cuts += u64::from(analysis.label == crate::meta::AnalysisLabel::SceneCut);

        FrameAnalysis {
            luma_mean: analysis.luma_mean,
            luma_stddev: analysis.luma_stddev,
            motion: analysis.motion,
            scene_change: analysis.scene_change,
            sharpness: analysis.sharpness,
            label: analysis.label,
            backend: backend.clone(),
        }
        .add(buffer);
        let backend = backend.clone();
        drop(state);
        // Ids from 1 (0 is GStreamer's default, also that of `parent_id`), after any the
        // frame already has: each region can be named by its id.
        let first = buffer
            .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
            .map(|m| m.id())
            .max()
            .unwrap_or(0)
            .max(0);
        for (i, roi) in analysis.rois.iter().enumerate() {
            let mut meta = gst_video::VideoRegionOfInterestMeta::add(
                buffer,
                "motion",
                (roi.x, roi.y, roi.width, roi.height),
            );
            meta.set_id(first.saturating_add(i as i32 + 1));
        }
        let message = settings
            .post_messages
            .then(|| Self::message_structure(&analysis, &backend, buffer.pts()));
        if let Some(s) = message {
            let _ = self
                .obj()
                .post_message(gst::message::Element::builder(s).src(&*self.obj()).build());
        }
        Ok(gst::FlowSuccess::Ok)
    }
}
