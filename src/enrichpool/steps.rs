//! The per-frame step chain of `enrichpool`, run on the pool's workers: the remote request,
//! the Rust handler or `process` signal, and the overlay; and the way out: results pushed
//! with their `EnrichmentMeta`, losses as `ordered-gap` events, the LATENCY messages.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::Duration;

use gst::glib;
use gst::glib::translate::{IntoGlib, ToGlibPtrMut};
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::imp::CAT;
use super::overlay;
use super::regions::{self, Crops, Outcome, RoiCounts};
use super::remote::{self, Remote};
use super::reuse::{Carried, Held, Release, Reuse};
use super::workerbin::{BinCounts, WorkerBins};
use super::{Handler, Job, Verdict};
use crate::glue::{FlowCell, lock, post_stats, read};
use crate::meta::{AnalysisLabel, Enrichment, FrameAnalysis, Gap, GapReason};
use crate::pool::{self, LATENCY_WINDOW, Loss, Report, Tag, Work};

/// The structure a frame's steps fill, named by a quark interned once.
/// (A copy of a template: making one by name would intern the name under GLib's global
/// quark lock, per frame.)
pub(super) fn empty_outputs() -> gst::Structure {
    static TEMPLATE: LazyLock<gst::Structure> =
        LazyLock::new(|| gst::Structure::new_empty("outputs"));
    TEMPLATE.clone()
}

impl Frame {
    fn outputs(&mut self) -> &mut gst::Structure {
        self.outputs.get_or_insert_with(empty_outputs)
    }
}

/// A frame in the pool, with the results its handler attached.
pub(super) struct Frame {
    buffer: gst::Buffer,
    /// Made when a step runs: a frame nothing touches costs no structure.
    outputs: Option<gst::Structure>,
    seq: u64,
    /// The caps' video info, for remote requests and detections.
    video: Option<Arc<gst_video::VideoInfo>>,
    /// With `worker-bin`: the caps it came with, then those it came out of the bin with
    /// (`None` without a worker bin).
    caps: Option<gst::Caps>,
    /// `worker-bin` ran on it; a retry (a later step failed) does not run it again.
    bin_done: bool,
    /// Servers that failed this frame; later attempts go elsewhere first.
    avoid: Vec<usize>,
    /// The server that answered.
    server: String,
    /// Whether any enrichment ran (false: the frame passes untouched, no meta).
    enriched: bool,
    /// Whether the steps run on it (`interval`, `only-label`), decided in the chain.
    selected: bool,
    /// The remote step answered; a retry (the handler failed) does not ask again.
    remote_done: bool,
    /// The generation of the element's request canceller when the frame came in: a flush
    /// after that cancels its requests, even one not started yet.
    cancel_from: u64,
    /// Its part in `carry-forward`, decided in the chain.
    reuse: Option<Role>,
    /// Region metas it had before its steps ran (but those the steps removed): those after
    /// are the steps' own, which a source carries forward.
    rois_before: usize,
    /// `rois_before` was counted (once the bin, if any, has run).
    rois_counted: bool,
}

/// A frame's part in `carry-forward`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Sent to the servers: frames after it carry its results.
    Source,
    /// Kept from the servers: carries the results of this source, `age` ns older.
    Linked { source: Tag, age: u64 },
}

impl Frame {
    pub fn new(
        buffer: gst::Buffer,
        seq: u64,
        video: Option<Arc<gst_video::VideoInfo>>,
        caps: Option<gst::Caps>,
        cancel_from: u64,
        selected: bool,
        reuse: Option<Role>,
    ) -> Frame {
        Frame {
            caps,
            bin_done: false,
            cancel_from,
            reuse,
            rois_before: 0,
            rois_counted: false,
            buffer,
            outputs: None,
            seq,
            video,
            avoid: Vec::new(),
            server: String::new(),
            enriched: false,
            selected,
            remote_done: false,
        }
    }
}

/// The processing latency last announced with a LATENCY message.
#[derive(Debug, Default)]
pub(super) struct Reported {
    ns: u64,
    /// Frames delivered since.
    frames_since: u64,
}

/// The pool's view of the element: runs the handler, pushes results and gaps.
pub(super) struct Enricher {
    pub element: glib::WeakRef<super::EnrichPool>,
    pub srcpad: gst::Pad,
    /// Read by every worker per frame, set rarely: readers do not wait on each other.
    pub handler: RwLock<Option<Arc<Handler>>>,
    /// The last result of pushing downstream, returned upstream by the chain.
    pub flow: FlowCell,
    /// Processing latency last announced (LATENCY message), in ns.
    pub reported_latency: Mutex<Reported>,
    /// A frame was delivered since the start: the latency figure is measured.
    pub measured: AtomicBool,
    /// The remote step while running with `servers`.
    pub remote: RwLock<Option<Arc<Remote>>>,
    /// The `overlay` property, read per frame.
    pub overlay: AtomicBool,
    /// Frames that could not be drawn on (not video, a format without 8-bit components).
    pub overlay_skipped: AtomicU64,
    /// With `infer-on=rois`, while running: which regions get crop jobs.
    pub regions: RwLock<Option<Arc<RegionPlan>>>,
    /// Runs a frame's crop jobs on the pool's idle workers, while running.
    pub helpers: RwLock<Option<pool::Helpers>>,
    /// What became of regions (`infer-on=rois`), since the start.
    pub roi_counts: RoiCounts,
    /// `carry-forward`'s links between frames.
    pub reuse: Reuse,
    /// Which frames the steps run on, while running.
    pub selector: RwLock<Selector>,
    /// Frames `interval` or `only-label` kept from the steps, since the start.
    pub skipped: AtomicU64,
    /// `worker-bin`'s instances, while running with one.
    pub bins: RwLock<Option<Arc<WorkerBins>>>,
    /// What the worker bins did, since the start.
    pub bin_counts: Arc<BinCounts>,
    /// With `worker-bin`: the src pad's caps follow the frames (see `SrcCaps`).
    pub src_caps: Mutex<SrcCaps>,
}

/// With `worker-bin`, the caps on the src pad are those the frames come out of the bin with:
/// a frame whose caps differ from the pad's is preceded by a CAPS event. Until the first
/// caps are known (a bin that tells its output caps only once it has seen a frame, like a
/// decoder), the sticky events after the stream's start wait here, as a decoder holds them.
#[derive(Default)]
pub(super) struct SrcCaps {
    /// Events waiting for the first caps; `None`: none wait.
    pub held: Option<Vec<gst::Event>>,
    /// A warning about extra outputs was posted.
    pub warned_extras: bool,
}

/// The internal barrier that stands for a CAPS event whose output caps the bin does not tell
/// yet: at its place the src pad's events start waiting for the first frame's caps.
pub(super) const PENDING_CAPS: &str = "ordered-enrichpool-pending-caps";

/// Which frames the steps run on (`interval`, `only-label`), and how long their results are
/// carried to the others (`carry-forward`, ns; 0: off, and with it on, a scene cut is always
/// taken); fixed at start.
#[derive(Debug, Clone)]
pub(super) struct Selector {
    pub interval: u64,
    pub only_label: Option<String>,
    pub carry_forward: u64,
}

impl Default for Selector {
    fn default() -> Self {
        Selector {
            interval: 1,
            only_label: None,
            carry_forward: 0,
        }
    }
}

impl Selector {
    /// Whether the steps run on frame `seq`.
    pub fn selects(&self, seq: u64, buffer: &gst::BufferRef) -> bool {
        let label = || match FrameAnalysis::read(buffer) {
            Some(Ok(a)) => Some(a.label),
            _ => None,
        };
        (self.carry_forward > 0 && label() == Some(AnalysisLabel::SceneCut))
            || (seq.is_multiple_of(self.interval.max(1))
                && self
                    .only_label
                    .as_deref()
                    .is_none_or(|only| label().is_some_and(|l| l.as_str() == only)))
    }
}

/// How `infer-on=rois` runs, fixed at start.
#[derive(Debug, Clone)]
pub(super) struct RegionPlan {
    /// `roi-types`: empty for every type.
    pub types: Vec<String>,
    pub max: usize,
    /// Attempts per crop: 1 + `retries` with `on-error=retry`, else 1.
    pub attempts: u32,
    /// `on-error=fail`: a failed crop fails its frame.
    pub fail: bool,
}

impl Enricher {
    pub fn new(srcpad: gst::Pad) -> Enricher {
        Enricher {
            element: glib::WeakRef::new(),
            srcpad,
            handler: RwLock::new(None),
            flow: FlowCell::new(),
            reported_latency: Mutex::new(Reported::default()),
            measured: AtomicBool::new(false),
            remote: RwLock::new(None),
            overlay: AtomicBool::new(false),
            overlay_skipped: AtomicU64::new(0),
            regions: RwLock::new(None),
            helpers: RwLock::new(None),
            roi_counts: RoiCounts::default(),
            reuse: Reuse::default(),
            selector: RwLock::new(Selector::default()),
            skipped: AtomicU64::new(0),
            bins: RwLock::new(None),
            bin_counts: Arc::new(BinCounts::default()),
            src_caps: Mutex::new(SrcCaps::default()),
        }
    }
}

/// Whether a handler is connected to `process`.
pub(super) fn process_connected(element: &super::EnrichPool) -> bool {
    glib::signal::signal_has_handler_pending(element, process_signal(), None, false)
}

fn process_signal() -> glib::subclass::SignalId {
    static PROCESS: LazyLock<glib::subclass::SignalId> = LazyLock::new(|| {
        glib::subclass::SignalId::lookup("process", super::EnrichPool::static_type())
            .expect("the process signal is registered with the type")
    });
    *PROCESS
}

/// Emits `process(buffer, worker, outputs)`, reading back what the handlers put into
/// `outputs`. `None` when no handler is connected.
pub(super) fn emit_process(
    element: &super::EnrichPool,
    buffer: &gst::Buffer,
    worker: u32,
    outputs: &mut gst::Structure,
) -> Option<bool> {
    if !process_connected(element) {
        return None;
    }
    // Emitted with our own GValues, so that handlers (Python's among them) can fill the
    // `outputs` structure in place; glib's emit helpers would hand them a copy.
    let mut args = [
        element.to_value(),
        buffer.to_value(),
        worker.to_value(),
        outputs.to_value(),
    ];
    let mut ret = glib::Value::from_type(glib::Type::BOOL);
    // SAFETY: `args` holds the instance and the three parameters of `process`, of the types
    // it was registered with; `ret` is a boolean GValue, the signal's return type.
    unsafe {
        glib::gobject_ffi::g_signal_emitv(
            args.as_mut_ptr() as *const glib::gobject_ffi::GValue,
            process_signal().into_glib(),
            0,
            ret.to_glib_none_mut().0,
        );
    }
    if let Ok(filled) = args[3].get::<gst::Structure>() {
        *outputs = filled;
    }
    Some(ret.get::<bool>().unwrap_or(false))
}

impl Work for Enricher {
    type Job = Frame;
    type Event = gst::Event;

    fn process(&self, frame: &mut Frame, worker: u32, attempt: u32) -> pool::Verdict {
        let Some(element) = self.element.upgrade() else {
            return pool::Verdict::Fail("element is gone".into());
        };
        // `worker-bin` runs on every frame: its output caps are the src caps.
        // (Not read in the condition: its guard would be held while the bin runs.)
        let bins = read(&self.bins).clone();
        if !frame.bin_done
            && let Some(bins) = bins
        {
            if let Some(verdict) = self.run_bin(&bins, frame) {
                return verdict;
            }
            frame.bin_done = true;
        }
        // Only a source's own regions are carried forward: only a source counts them (those
        // the bin added are its own too).
        if !frame.rois_counted && frame.reuse == Some(Role::Source) {
            frame.rois_counted = true;
            frame.rois_before = frame
                .buffer
                .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
                .count();
        }
        if !frame.selected {
            // `interval` or `only-label` keeps the frame from the steps.
            if self.draws_now(frame) {
                self.draw_overlay(frame, worker);
            }
            return pool::Verdict::Keep;
        }
        let remote = read(&self.remote).clone();
        let plan = read(&self.regions).clone();
        if let Some(plan) = plan {
            return self.process_regions(&element, frame, worker, attempt, remote, &plan);
        }
        if let Some(remote) = remote.filter(|_| !frame.remote_done) {
            if let Err(message) = Self::ask_servers(&remote, frame) {
                return pool::Verdict::Fail(message);
            }
            frame.remote_done = true;
            frame.enriched = true;
        }
        let handler = read(&self.handler).clone();
        let verdict = if let Some(handler) = handler {
            frame.enriched = true;
            let mut job = Job {
                buffer: frame.buffer.make_mut(),
                worker,
                attempt,
                outputs: frame.outputs.get_or_insert_with(empty_outputs),
                roi: None,
            };
            match handler(&mut job) {
                Ok(Verdict::Keep) => pool::Verdict::Keep,
                Ok(Verdict::Drop) => pool::Verdict::Drop,
                Err(message) => pool::Verdict::Fail(message),
            }
        } else {
            let outputs = frame.outputs.get_or_insert_with(empty_outputs);
            match emit_process(&element, &frame.buffer, worker, outputs) {
                Some(true) => {
                    frame.enriched = true;
                    pool::Verdict::Keep
                }
                None => pool::Verdict::Keep,
                Some(false) => pool::Verdict::Drop,
            }
        };
        if matches!(verdict, pool::Verdict::Keep) && self.draws_now(frame) {
            self.draw_overlay(frame, worker);
        }
        verdict
    }

    fn deliver(&self, frame: Frame, tag: Tag, report: Report) {
        let Frame {
            mut buffer,
            outputs,
            server,
            enriched,
            reuse,
            video,
            caps,
            rois_before,
            ..
        } = frame;
        if enriched {
            Self::attach(&mut buffer, outputs, server, tag, &report, &self.srcpad);
        }
        match reuse {
            None => self.push(buffer, caps, tag, report),
            Some(Role::Source) => {
                let carried = Carried::of(&buffer, rois_before);
                self.push(buffer, caps, tag, report);
                for release in self.reuse.source_done(tag, Some(carried)) {
                    self.push_release(release);
                }
            }
            Some(Role::Linked { source, age }) => {
                let held = Held {
                    buffer,
                    tag,
                    report,
                    age,
                    video,
                    caps,
                };
                if let Some(release) = self.reuse.done_linked(held, source) {
                    self.push_release(release);
                }
            }
        }
    }

    fn lost(&self, first: Tag, count: u64, reason: Loss) {
        self.push_gap(first, count, reason);
        for release in self.reuse.lost(first, count) {
            self.push_release(release);
        }
    }

    fn forward(&self, event: gst::Event) {
        gst::log!(CAT, obj = self.srcpad, "forwarding {event:?}");
        if event.type_() == gst::EventType::Eos
            && let Some(element) = self.element.upgrade()
            && element.imp().settings().stats_interval > gst::ClockTime::ZERO
        {
            // Every frame before EOS has left: the last message covers the whole stream.
            post_stats(&element, element.imp().stats());
        }
        if read(&self.bins).is_some() && !self.hold_for_caps(&event) {
            return;
        }
        if !self.srcpad.push_event(event) {
            gst::debug!(CAT, obj = self.srcpad, "downstream refused an event");
        }
    }

    fn fatal(&self, tag: Tag, message: &str) {
        if let Some(element) = self.element.upgrade() {
            gst::element_error!(
                element,
                gst::StreamError::Failed,
                ("Enrichment of frame {} failed: {}", tag.seq, message),
                ["on-error=fail"]
            );
        }
        self.set_flow(Err(gst::FlowError::Error));
    }

    fn warn(&self, message: &str) {
        if let Some(element) = self.element.upgrade() {
            gst::element_warning!(element, gst::CoreError::Thread, ("{}", message));
        }
    }
}

impl Enricher {
    /// `worker-bin`: runs the frame through an instance of the bin; its output becomes the
    /// frame. `Some`: the frame ends here (failed, or the bin output nothing).
    fn run_bin(&self, bins: &WorkerBins, frame: &mut Frame) -> Option<pool::Verdict> {
        let ran = match bins.run(&frame.buffer, frame.caps.as_ref()) {
            Ok(ran) => ran,
            Err(message) => {
                gst::debug!(
                    CAT,
                    obj = self.srcpad,
                    "worker-bin failed frame {}: {message}",
                    frame.seq
                );
                return Some(pool::Verdict::Fail(format!("worker-bin: {message}")));
            }
        };
        if ran.extras > 0 {
            self.warn_extras(ran.extras);
        }
        let Some((buffer, caps)) = ran.output else {
            gst::debug!(
                CAT,
                obj = self.srcpad,
                "worker-bin output nothing for frame {}",
                frame.seq
            );
            return Some(pool::Verdict::Drop);
        };
        frame.buffer = buffer;
        if caps.is_some() && caps != frame.caps {
            frame.video = caps
                .as_ref()
                .and_then(|c| gst_video::VideoInfo::from_caps(c).ok())
                .map(Arc::new);
            frame.caps = caps;
        }
        None
    }

    /// Warns, once per start, that a bin output more than one buffer for a frame.
    fn warn_extras(&self, extras: u64) {
        let first = !std::mem::replace(&mut lock(&self.src_caps).warned_extras, true);
        if first && let Some(element) = self.element.upgrade() {
            gst::element_warning!(
                element,
                gst::StreamError::Format,
                (
                    "worker-bin output {} buffers more than the one per frame; the extra ones are dropped",
                    extras
                ),
                [
                    "one output per input is the contract; counted in stats as bin-extras; this warning is posted once"
                ]
            );
        }
    }

    /// `worker-bin`: before a frame, the caps it came out of the bin with, when the src pad
    /// has others; then the events that waited for them.
    fn follow_caps(&self, caps: gst::Caps) {
        let push_caps = || {
            if self.srcpad.current_caps().as_ref() != Some(&caps)
                && !self.srcpad.push_event(gst::event::Caps::new(&caps))
            {
                gst::debug!(CAT, obj = self.srcpad, "downstream refused caps {caps}");
            }
        };
        push_caps();
        let held = lock(&self.src_caps).held.take();
        // A CAPS event among them (the bin's output caps for a later input) is left out: the
        // frame's own caps are the ones it goes with.
        for event in held.into_iter().flatten() {
            if event.type_() != gst::EventType::Caps {
                self.srcpad.push_event(event);
            }
        }
    }

    /// `worker-bin`: while events wait for the first caps, a gap announcement waits with
    /// them (it must not overtake the caps and segment). `false`: it is to go now.
    fn hold_gap(&self, gap: &gst::Event) -> bool {
        match lock(&self.src_caps).held.as_mut() {
            Some(held) => {
                held.push(gap.clone());
                true
            }
            None => false,
        }
    }

    /// `worker-bin`: whether a barrier event goes downstream now. The stand-in for caps the
    /// bin did not tell makes the events after it wait (if the src pad has no caps yet) for
    /// the first frame's; EOS with events waiting goes after caps the bin can output.
    fn hold_for_caps(&self, event: &gst::Event) -> bool {
        if event.type_() == gst::EventType::CustomDownstream
            && event.structure().is_some_and(|s| s.name() == PENDING_CAPS)
        {
            if !self.srcpad.has_current_caps() {
                lock(&self.src_caps).held.get_or_insert_with(Vec::new);
            }
            return false;
        }
        let mut src_caps = lock(&self.src_caps);
        let Some(held) = src_caps.held.as_mut() else {
            return true;
        };
        if event.type_() != gst::EventType::Eos {
            held.push(event.clone());
            return false;
        }
        let held = src_caps.held.take().unwrap_or_default();
        drop(src_caps);
        let bins = read(&self.bins).clone();
        let fallback = bins.and_then(|b| b.fallback_caps());
        if let Some(caps) = fallback {
            self.srcpad.push_event(gst::event::Caps::new(&caps));
        }
        for event in held {
            self.srcpad.push_event(event);
        }
        true
    }

    /// Announces lost frames as an `ordered-gap` event.
    fn push_gap(&self, first: Tag, count: u64, reason: Loss) {
        let reason = match reason {
            Loss::Leaked => GapReason::Leaked,
            Loss::Failed => GapReason::Failed,
            Loss::Timeout => GapReason::Timeout,
            Loss::Dropped => GapReason::Dropped,
        };
        gst::debug!(
            CAT,
            obj = self.srcpad,
            "frames {}..{} of epoch {} lost: {}",
            first.seq,
            first.seq.saturating_add(count),
            first.epoch,
            reason.as_str()
        );
        let gap = Gap {
            seq: first.seq,
            count,
            epoch: first.epoch,
            reason,
        };
        let event = gap.to_event();
        if self.hold_gap(&event) {
            return;
        }
        self.srcpad.push_event(event);
    }

    /// Attaches the frame's `EnrichmentMeta`.
    fn attach(
        buffer: &mut gst::Buffer,
        outputs: Option<gst::Structure>,
        server: String,
        tag: Tag,
        report: &Report,
        pad: &gst::Pad,
    ) {
        let enrichment = Enrichment {
            worker: report.worker,
            server,
            attempts: report.attempts,
            processing_time: report.processing_time.as_nanos() as u64,
            outputs: outputs.unwrap_or_else(empty_outputs),
        };
        if let Err(err) = enrichment.add(buffer.make_mut()) {
            gst::warning!(
                CAT,
                obj = pad,
                "frame {}: {err}; outputs not attached",
                tag.seq
            );
            let bare = Enrichment {
                outputs: empty_outputs(),
                ..enrichment
            };
            let _ = bare.add(buffer.make_mut());
        }
    }

    /// Outputs a frame of `carry-forward`: with the results it carries, drawn on if
    /// `overlay` is set (its steps left that to now: the results were not there yet).
    fn push_release(&self, release: Release) {
        let Release {
            mut buffer,
            tag,
            report,
            carried,
            video,
            caps,
        } = release;
        if let Some((carried, age)) = carried {
            carried.put_on(buffer.make_mut(), age);
        }
        if self.overlay.load(Ordering::Relaxed) {
            let result = match &video {
                Some(video) => overlay::draw(buffer.make_mut(), video, report.worker),
                None => Err("the caps are not raw video".into()),
            };
            self.overlay_failed(result);
        }
        self.push(buffer, caps, tag, report);
    }

    /// Whether a frame is drawn on by its steps: not one that carries results forward,
    /// which is drawn on once they are on it.
    fn draws_now(&self, frame: &Frame) -> bool {
        self.overlay.load(Ordering::Relaxed) && !matches!(frame.reuse, Some(Role::Linked { .. }))
    }

    /// `infer-on=rois`: the steps on each chosen region's crop, in parallel on this worker
    /// and idle ones; the frame goes on once every crop is done.
    fn process_regions(
        &self,
        element: &super::EnrichPool,
        frame: &mut Frame,
        worker: u32,
        attempt: u32,
        remote: Option<Arc<Remote>>,
        plan: &RegionPlan,
    ) -> pool::Verdict {
        let Some(info) = frame.video.clone() else {
            return pool::Verdict::Fail("infer-on=rois needs video/x-raw caps".into());
        };
        let size = (info.width(), info.height());
        let handler = read(&self.handler).clone();
        let steps = remote.is_some() || handler.is_some() || process_connected(element);
        // Nothing to run: the frame and its regions pass as they are.
        let choice = if steps {
            let buffer = frame.buffer.make_mut();
            regions::choose(buffer, size.0, size.1, &plan.types, plan.max)
        } else {
            regions::Choice::default()
        };
        self.roi_counts.count_choice(&choice);
        if choice.regions.is_empty() {
            // No region to run on, or nothing to run: the frame passes untouched.
            if self.draws_now(frame) {
                self.draw_overlay(frame, worker);
            }
            return pool::Verdict::Keep;
        }
        let crops = Arc::new(Crops {
            element: element.clone(),
            frame: frame.buffer.clone(),
            info,
            remote: remote.map(|r| (r, frame.cancel_from)),
            handler,
            worker,
            attempt,
            attempts: plan.attempts,
            seq: frame.seq,
        });
        let parts = choice
            .regions
            .iter()
            .map(|region| {
                let (crops, region) = (crops.clone(), region.clone());
                Box::new(move || crops.run(&region)) as Box<dyn FnOnce() -> Outcome + Send>
            })
            .collect();
        let helpers = read(&self.helpers)
            .clone()
            .unwrap_or_else(pool::Helpers::none);
        let outcomes: Vec<Outcome> = helpers
            .run(parts)
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::Failed("the handler panicked".into())))
            .collect();
        // The crops' reference to the frame goes: writing to it needs no copy.
        drop(crops);
        let removed = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Dropped))
            .count();
        frame.rois_before = frame.rois_before.saturating_sub(removed);
        let (rois, failure, server) = regions::put_back(
            frame.buffer.make_mut(),
            &choice.regions,
            outcomes,
            size,
            &self.roi_counts,
        );
        frame.outputs().set("rois", rois);
        frame.enriched = true;
        frame.server = server;
        if plan.fail
            && let Some(message) = failure
        {
            return pool::Verdict::Fail(format!("a region failed: {message}"));
        }
        if self.draws_now(frame) {
            self.draw_overlay(frame, worker);
        }
        pool::Verdict::Keep
    }

    fn push(&self, buffer: gst::Buffer, caps: Option<gst::Caps>, tag: Tag, report: Report) {
        // Announced before the frame goes: the pipeline may reconfigure before it arrives.
        self.maybe_report_latency(report.recent_latency);
        // Frames carry caps only with `worker-bin`.
        if let Some(caps) = caps {
            self.follow_caps(caps);
        }
        let res = self.srcpad.push(buffer);
        if let Err(err) = res {
            gst::debug!(
                CAT,
                obj = self.srcpad,
                "push of frame {} returned {err:?}",
                tag.seq
            );
        }
        // Recorded before the EOS check: either this sees EOS, or the EOS handler sees this.
        self.set_flow(res);
        if let Err(err) = res {
            self.post_flow_error_after_eos(err);
        }
    }

    /// A fatal flow error (NOT_LINKED, or worse than EOS) once EOS was received: upstream no
    /// longer calls the chain to see it, so it is posted, once per stream, as `queue` does.
    pub fn post_flow_error_after_eos(&self, err: gst::FlowError) {
        if matches!(err, gst::FlowError::Flushing | gst::FlowError::Eos) {
            return;
        }
        let Some(element) = self.element.upgrade() else {
            return;
        };
        let after_eos = element.imp().take_error_after_eos();
        if after_eos {
            gst::element_error!(
                element,
                gst::StreamError::Failed,
                ("Internal data stream error."),
                ["streaming stopped, reason {:?}", err]
            );
        }
    }

    /// Records the result of a push for the chain to return. An error that stops the stream
    /// (not FLUSHING, EOS or NOT_LINKED, which can pass) is kept until a flush or restart.
    fn set_flow(&self, res: Result<gst::FlowSuccess, gst::FlowError>) {
        self.flow.set_unless_fatal(res);
    }

    /// Draws the frame's results into it; frames that cannot be drawn on pass as they are,
    /// counted (`overlay-skipped`) and warned about once.
    fn draw_overlay(&self, frame: &mut Frame, worker: u32) {
        let result = match &frame.video {
            Some(video) => overlay::draw(frame.buffer.make_mut(), video, worker),
            None => Err("the caps are not raw video".into()),
        };
        self.overlay_failed(result);
    }

    /// Counts a frame that could not be drawn on, and warns about the first.
    fn overlay_failed(&self, result: Result<(), String>) {
        if let Err(err) = result
            && self.overlay_skipped.fetch_add(1, Ordering::Relaxed) == 0
            && let Some(element) = self.element.upgrade()
        {
            gst::element_warning!(
                element,
                gst::StreamError::Format,
                ("overlay: {}; such frames pass undrawn", err),
                ["counted in stats as overlay-skipped; this warning is posted once"]
            );
        }
    }

    /// One request for the frame (with hedging, if set), its answer put on the frame.
    fn ask_servers(remote: &Remote, frame: &mut Frame) -> Result<(), String> {
        let video = frame
            .video
            .clone()
            .ok_or("remote enrichment needs video/x-raw caps")?;
        let image = remote::image(&frame.buffer, &video, frame.seq.to_string())?;
        let answer = remote
            .set
            .infer_cancellable(
                image,
                &mut frame.avoid,
                Some((&remote.canceller, frame.cancel_from)),
            )
            .map_err(|err| err.to_string())?;
        remote::apply(
            &answer,
            frame.buffer.make_mut(),
            frame.outputs.get_or_insert_with(empty_outputs),
            Some(&video),
        );
        frame.server = answer.server;
        Ok(())
    }

    /// With `latency=-1`, posts a LATENCY message when the pool's latency figure (see
    /// `PoolStats::latency`) moved by more than a quarter of what was last reported, either
    /// way, and by more than 1 ms (changes below a millisecond matter to no sink).
    fn maybe_report_latency(&self, recent: Duration) {
        let ns = recent.as_nanos() as u64;
        // The first frame delivered: a resequencer downstream learns (through the in-flight
        // query the pipeline's recalculation makes it ask) that the figure now covers it.
        let first = !self.measured.swap(true, Ordering::AcqRel);
        let mut reported = lock(&self.reported_latency);
        reported.frames_since += 1;
        let last = reported.ns;
        let change = ns.abs_diff(last);
        let moved = change > last / 4 && change > 1_000_000;
        // Up at once (frames would come late); down only once a window of frames has passed
        // since the last report, so that a figure hovering between two levels does not make
        // the pipeline recalculate its latency over and over.
        let settled = ns > last || reported.frames_since >= LATENCY_WINDOW as u64;
        if !(first || (moved && settled)) {
            return;
        }
        let Some(element) = self.element.upgrade() else {
            return;
        };
        if element.imp().settings().latency >= 0 {
            return;
        }
        *reported = Reported {
            ns,
            frames_since: 0,
        };
        drop(reported);
        gst::debug!(CAT, obj = element, "processing latency now {ns} ns");
        let _ = element.post_message(gst::message::Latency::builder().src(&element).build());
    }
}
