//! The enrichpool's implementation.
//!
//! The sink pad stamps frames and submits them to a [`Pool`]; its workers run the Rust
//! handler or the `process` signal and push results from their own threads, one pusher at
//! a time (see `crate::pool`). Serialized events and upstream gaps go into the pool as
//! barriers and leave between the same frames they arrived between; the streaming thread
//! never pushes on the src pad (so a blocked downstream never blocks a leaky pool's
//! upstream) and never waits for processing, except for serialized queries, which are
//! answered once everything before them has left.
//!
//! Flushing: FLUSH_START flushes the pool (queued and finished frames discarded, results in
//! flight abandoned) before it goes downstream; FLUSH_STOP waits for a push in progress to
//! return before it resets the flow result and goes downstream, so nothing from before the
//! flush leaves after it and no FLUSHING from before it sticks.
//!
//! Locks: `settings` and `state` are each only held briefly and never together; neither is
//! held while calling into the pool, which has its own lock. The shared `Enricher` keeps
//! its own small locks for the handler and the last flow result.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use gst::glib;
use gst::glib::translate::{IntoGlib, ToGlibPtrMut};
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::overlay;
use super::remote::{self, Remote};
use super::{Handler, Job, Verdict};
use crate::glue::{FlowCell, StatsTimer, lock, post_stats, read, write};
use crate::meta::{Enrichment, Gap, GapReason, InFlightQuery, SeqMeta};
use crate::pool::{
    self, LATENCY_WINDOW, Limits, Loss, Pool, PoolConfig, PoolStats, Report, Submitted, Tag, Work,
};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "enrichpool",
        gst::DebugColorFlags::empty(),
        Some("Bounded queue and worker pool for per-frame enrichment"),
    )
});

/// What a full queue does.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstEnrichPoolLeaky")]
pub enum Leaky {
    #[enum_value(name = "None: upstream waits for room (backpressure)", nick = "none")]
    None = 0,
    #[enum_value(name = "Upstream: the new frame is dropped", nick = "upstream")]
    Upstream = 1,
    #[enum_value(
        name = "Downstream: the oldest queued frame is dropped",
        nick = "downstream"
    )]
    Downstream = 2,
}

/// What a failed attempt leads to.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstEnrichPoolOnError")]
pub enum OnError {
    #[enum_value(
        name = "Retry: up to `retries` more attempts, then a gap",
        nick = "retry"
    )]
    Retry = 0,
    #[enum_value(name = "Drop: the frame becomes a gap at once", nick = "drop")]
    Drop = 1,
    #[enum_value(
        name = "Fail: the frame becomes a gap and an error is posted",
        nick = "fail"
    )]
    Fail = 2,
}

const DEFAULT_MAX_SIZE_BUFFERS: u32 = 30;
const DEFAULT_IDLE_TIMEOUT: u64 = 5_000_000_000;
const DEFAULT_RETRIES: u32 = 2;
/// How long stopping waits for workers busy with a frame before leaving them behind.
const STOP_GRACE: Duration = Duration::from_secs(2);
const DEFAULT_REQUEST_TIMEOUT: u64 = 5_000_000_000;
const DEFAULT_MAX_RESPONSE_BYTES: u64 = 64 << 20;

fn default_workers() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

#[derive(Clone)]
struct Settings {
    workers: u32,
    max_workers: u32,
    idle_timeout: u64,
    max_size_buffers: u32,
    max_size_bytes: u64,
    max_size_time: u64,
    leaky: Leaky,
    timeout: u64,
    on_error: OnError,
    retries: u32,
    latency: i64,
    overlay: bool,
    stats_interval: u64,
    servers: String,
    model: String,
    model_version: String,
    request_timeout: u64,
    hedge_after: u64,
    max_in_flight_per_server: u32,
    /// Never logged, never in stats, not readable as a property.
    auth_token: Option<String>,
    /// A file holding the token, read at start (its content never logged).
    auth_token_file: Option<String>,
    max_response_bytes: u64,
    interval: u32,
    only_label: Option<String>,
    tls_ca_file: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            workers: default_workers(),
            max_workers: 0,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_size_buffers: DEFAULT_MAX_SIZE_BUFFERS,
            max_size_bytes: 0,
            max_size_time: 0,
            leaky: Leaky::None,
            timeout: 0,
            on_error: OnError::Retry,
            retries: DEFAULT_RETRIES,
            latency: -1,
            overlay: false,
            stats_interval: 0,
            servers: String::new(),
            model: String::new(),
            model_version: String::new(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            hedge_after: 0,
            max_in_flight_per_server: 0,
            auth_token: None,
            auth_token_file: None,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            interval: 1,
            only_label: None,
            tls_ca_file: None,
        }
    }
}

impl Settings {
    fn pool_config(&self) -> PoolConfig {
        PoolConfig {
            workers: self.workers.max(1) as usize,
            max_workers: self.max_workers as usize,
            idle_timeout: Duration::from_nanos(self.idle_timeout),
            limits: Limits {
                max_buffers: self.max_size_buffers as u64,
                max_bytes: self.max_size_bytes,
                max_time: self.max_size_time,
            },
            leaky: match self.leaky {
                Leaky::None => pool::Leaky::None,
                Leaky::Upstream => pool::Leaky::Upstream,
                Leaky::Downstream => pool::Leaky::Downstream,
            },
            timeout: (self.timeout > 0).then(|| Duration::from_nanos(self.timeout)),
            on_error: match self.on_error {
                OnError::Retry => pool::OnError::Retry,
                OnError::Drop => pool::OnError::Drop,
                OnError::Fail => pool::OnError::Fail,
            },
            retries: self.retries,
        }
    }

    /// The token from `auth-token` or `auth-token-file`.
    fn token(&self) -> Result<Option<String>, String> {
        match (&self.auth_token, &self.auth_token_file) {
            (Some(_), Some(_)) => Err("set auth-token or auth-token-file, not both".into()),
            (Some(token), None) => Ok(Some(token.clone())),
            (None, Some(path)) => read_token_file(path).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The remote step, or `None` without `servers`. Errors are configuration errors.
    fn remote(&self) -> Result<Option<Remote>, String> {
        let servers = crate::remote::Endpoint::parse_list(&self.servers)?;
        if servers.is_empty() {
            return Ok(None);
        }
        let extra_roots_pem = match &self.tls_ca_file {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|err| format!("reading tls-ca-file `{path}`: {err}"))?,
            ),
            None => None,
        };
        let set = crate::remote::ServerSet::start(crate::remote::Config {
            servers,
            model: self.model.clone(),
            model_version: self.model_version.clone(),
            request_timeout: Duration::from_nanos(self.request_timeout),
            hedge_after: (self.hedge_after > 0).then(|| Duration::from_nanos(self.hedge_after)),
            max_in_flight: self.max_in_flight_per_server as usize,
            auth_token: self.token()?,
            max_response_bytes: self.max_response_bytes.try_into().unwrap_or(usize::MAX),
            extra_roots_pem,
        })?;
        Ok(Some(Remote {
            set,
            interval: self.interval.max(1) as u64,
            only_label: self.only_label.clone(),
            sent: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }))
    }
}

/// The most a token file may hold.
const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;

/// Reads a token file: its content, without surrounding whitespace. Opened once, then checked
/// and read through that one handle: it must be a regular file that other users can neither
/// read nor write, not empty, at most 64 KiB of UTF-8. No error message holds any of its
/// content.
fn read_token_file(path: &str) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;

    let reading = |err: std::io::Error| format!("reading auth-token-file `{path}`: {err}");
    let file = std::fs::File::open(path).map_err(reading)?;
    let meta = file.metadata().map_err(reading)?;
    if !meta.is_file() {
        return Err(format!("auth-token-file `{path}` is not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o006 != 0 {
        return Err(format!(
            "auth-token-file `{path}` is open to every user (mode {mode:o}); make it \
             private (chmod 600)"
        ));
    }
    if meta.len() > MAX_TOKEN_FILE_BYTES {
        return Err(format!(
            "auth-token-file `{path}` is larger than {MAX_TOKEN_FILE_BYTES} bytes"
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_TOKEN_FILE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(reading)?;
    let token = String::from_utf8(bytes)
        .map_err(|_| format!("auth-token-file `{path}` is not UTF-8 text"))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(format!("auth-token-file `{path}` is empty"));
    }
    Ok(token.to_string())
}

/// The structure a frame's steps fill, named by a quark interned once.
/// (A copy of a template: making one by name would intern the name under GLib's global
/// quark lock, per frame.)
fn empty_outputs() -> gst::Structure {
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
    /// Servers that failed this frame; later attempts go elsewhere first.
    avoid: Vec<usize>,
    /// The server that answered.
    server: String,
    /// Whether any enrichment ran (false: the frame passes untouched, no meta).
    enriched: bool,
    /// Whether the remote step takes this frame, decided at its first attempt.
    remote_wanted: Option<bool>,
    /// The remote step answered; a retry (the handler failed) does not ask again.
    remote_done: bool,
}

/// The processing latency last announced with a LATENCY message.
#[derive(Debug, Default)]
struct Reported {
    ns: u64,
    /// Frames delivered since.
    frames_since: u64,
}

/// The pool's view of the element: runs the handler, pushes results and gaps.
pub(super) struct Enricher {
    element: glib::WeakRef<super::EnrichPool>,
    srcpad: gst::Pad,
    /// Read by every worker per frame, set rarely: readers do not wait on each other.
    handler: RwLock<Option<Arc<Handler>>>,
    /// The last result of pushing downstream, returned upstream by the chain.
    flow: FlowCell,
    /// Processing latency last announced (LATENCY message), in ns.
    reported_latency: Mutex<Reported>,
    /// A frame was delivered since the start: the latency figure is measured.
    measured: AtomicBool,
    /// The remote step while running with `servers`.
    remote: RwLock<Option<Arc<Remote>>>,
    /// The `overlay` property, read per frame.
    overlay: AtomicBool,
    /// Frames that could not be drawn on (not video, a format without 8-bit components).
    overlay_skipped: AtomicU64,
}

impl Enricher {
    /// Emits `process(buffer, worker, outputs)`, reading back what the handlers put into
    /// `outputs`. `None` when no handler is connected.
    fn emit_process(
        &self,
        element: &super::EnrichPool,
        frame: &mut Frame,
        worker: u32,
    ) -> Option<bool> {
        static PROCESS: LazyLock<glib::subclass::SignalId> = LazyLock::new(|| {
            glib::subclass::SignalId::lookup("process", super::EnrichPool::static_type())
                .expect("the process signal is registered with the type")
        });
        let signal = *PROCESS;
        if !glib::signal::signal_has_handler_pending(element, signal, None, false) {
            return None;
        }
        // Emitted with our own GValues, so that handlers (Python's among them) can fill the
        // `outputs` structure in place; glib's emit helpers would hand them a copy.
        let mut args = [
            element.to_value(),
            frame.buffer.to_value(),
            worker.to_value(),
            frame.outputs().to_value(),
        ];
        let mut ret = glib::Value::from_type(glib::Type::BOOL);
        unsafe {
            glib::gobject_ffi::g_signal_emitv(
                args.as_mut_ptr() as *const glib::gobject_ffi::GValue,
                signal.into_glib(),
                0,
                ret.to_glib_none_mut().0,
            );
        }
        if let Ok(outputs) = args[3].get::<gst::Structure>() {
            frame.outputs = Some(outputs);
        }
        Some(ret.get::<bool>().unwrap_or(false))
    }
}

impl Work for Enricher {
    type Job = Frame;
    type Event = gst::Event;

    fn process(&self, frame: &mut Frame, worker: u32, attempt: u32) -> pool::Verdict {
        let Some(element) = self.element.upgrade() else {
            return pool::Verdict::Fail("element is gone".into());
        };
        let remote = read(&self.remote).clone();
        let wanted = remote.as_ref().is_some_and(|remote| {
            *frame
                .remote_wanted
                .get_or_insert_with(|| remote.wants(frame.seq, &frame.buffer))
        });
        if let Some(remote) = remote.filter(|_| wanted && !frame.remote_done) {
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
            };
            match handler(&mut job) {
                Ok(Verdict::Keep) => pool::Verdict::Keep,
                Ok(Verdict::Drop) => pool::Verdict::Drop,
                Err(message) => pool::Verdict::Fail(message),
            }
        } else {
            match self.emit_process(&element, frame, worker) {
                Some(true) => {
                    frame.enriched = true;
                    pool::Verdict::Keep
                }
                None => pool::Verdict::Keep,
                Some(false) => pool::Verdict::Drop,
            }
        };
        if matches!(verdict, pool::Verdict::Keep) && self.overlay.load(Ordering::Relaxed) {
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
            ..
        } = frame;
        if !enriched {
            self.push(buffer, tag, report);
            return;
        }
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
                obj = self.srcpad,
                "frame {}: {err}; outputs not attached",
                tag.seq
            );
            let bare = Enrichment {
                outputs: empty_outputs(),
                ..enrichment
            };
            let _ = bare.add(buffer.make_mut());
        }
        self.push(buffer, tag, report);
    }

    fn lost(&self, first: Tag, count: u64, reason: Loss) {
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
        self.srcpad.push_event(gap.to_event());
    }

    fn forward(&self, event: gst::Event) {
        gst::log!(CAT, obj = self.srcpad, "forwarding {event:?}");
        if event.type_() == gst::EventType::Eos
            && let Some(element) = self.element.upgrade()
            && element.imp().settings().stats_interval > 0
        {
            // Every frame before EOS has left: the last message covers the whole stream.
            post_stats(&element, element.imp().stats());
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
    fn push(&self, buffer: gst::Buffer, tag: Tag, report: Report) {
        // Announced before the frame goes: the pipeline may reconfigure before it arrives.
        self.maybe_report_latency(report.recent_latency);
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
    fn post_flow_error_after_eos(&self, err: gst::FlowError) {
        if matches!(err, gst::FlowError::Flushing | gst::FlowError::Eos) {
            return;
        }
        let Some(element) = self.element.upgrade() else {
            return;
        };
        let after_eos = {
            let mut state = element.imp().state();
            let post = state.eos && !state.error_posted;
            state.error_posted |= post;
            post
        };
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
            .infer(image, &mut frame.avoid)
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
        if lock(&element.imp().settings).latency >= 0 {
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

struct State {
    pool: Option<Arc<Pool<Enricher>>>,
    /// EOS was received: frames are refused until a flush or a new stream.
    eos: bool,
    /// A flow error after EOS was posted (once per stream).
    error_posted: bool,
    /// Sticky events a flush found still waiting, stored on the src pad at FLUSH_STOP.
    sticky_after_flush: Vec<gst::Event>,
    epoch: u32,
    next_seq: u64,
    in_segment: gst::FormattedSegment<gst::ClockTime>,
    /// From the last caps event, when they are video/x-raw.
    video: Option<Arc<gst_video::VideoInfo>>,
    /// Stats of the last pool, kept after it stopped.
    last_stats: PoolStats,
    last_remote: Option<RemoteStats>,
    stats_timer: StatsTimer,
}

impl Default for State {
    fn default() -> Self {
        State {
            pool: None,
            eos: false,
            error_posted: false,
            sticky_after_flush: Vec::new(),
            epoch: 0,
            next_seq: 0,
            in_segment: gst::FormattedSegment::new(),
            video: None,
            last_stats: PoolStats::default(),
            last_remote: None,
            stats_timer: StatsTimer::default(),
        }
    }
}

pub struct EnrichPool {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    settings: Mutex<Settings>,
    state: Mutex<State>,
    enricher: Arc<Enricher>,
}

/// The remote part of `stats`.
#[derive(Clone)]
struct RemoteStats {
    sent: u64,
    skipped: u64,
    hedges: u64,
    servers: gst::Array,
}

impl RemoteStats {
    fn of(remote: &Remote) -> RemoteStats {
        RemoteStats {
            sent: remote.sent.load(Ordering::Relaxed),
            skipped: remote.skipped.load(Ordering::Relaxed),
            hedges: remote.set.hedges(),
            servers: remote.server_stats(),
        }
    }
}

fn stats_structure(
    stats: &PoolStats,
    settings: &Settings,
    remote: Option<&RemoteStats>,
    overlay_skipped: u64,
) -> gst::Structure {
    let dropped = stats.leaked + stats.failed + stats.timeout + stats.dropped;
    let workers = gst::Array::new(stats.per_worker.iter().enumerate().map(|(n, w)| {
        gst::Structure::builder("worker")
            .field("worker", n as u32)
            .field("processed", w.processed)
            .field("busy", w.busy.as_nanos() as u64)
            .field("errors", w.errors)
            .build()
            .to_send_value()
    }));
    gst::Structure::builder("enrichpool-stats")
        .field("in", stats.submitted)
        .field("pushed", stats.delivered)
        .field("dropped", dropped)
        .field("dropped-leaked", stats.leaked)
        .field("dropped-failed", stats.failed)
        .field("dropped-timeout", stats.timeout)
        .field("dropped-dropped", stats.dropped)
        .field("flushed", stats.flushed)
        .field("retries", stats.retries)
        .field("queued", stats.queued)
        .field("max-queued", stats.max_queued)
        .field("in-flight", stats.in_flight)
        .field("waiting", stats.waiting)
        .field("workers", stats.workers)
        .field("stuck", stats.stuck)
        .field("spawn-failures", stats.spawn_failures)
        .field("latency", processing_latency(stats, settings))
        .field("worker-stats", workers)
        .field("remote-sent", remote.map_or(0, |r| r.sent))
        .field("remote-skipped", remote.map_or(0, |r| r.skipped))
        .field("hedges", remote.map_or(0, |r| r.hedges))
        .field("overlay-skipped", overlay_skipped)
        .field(
            "servers",
            remote.map_or_else(
                || gst::Array::new::<glib::SendValue>([]),
                |r| r.servers.clone(),
            ),
        )
        .build()
}

/// The latency this element adds: the property, or the pool's recent latency (the largest
/// queue wait plus processing of the last frames delivered; frames that timed out or were
/// flushed do not count).
fn processing_latency(stats: &PoolStats, settings: &Settings) -> u64 {
    if settings.latency >= 0 {
        settings.latency as u64
    } else {
        stats.latency.as_nanos() as u64
    }
}

impl EnrichPool {
    fn settings(&self) -> Settings {
        lock(&self.settings).clone()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn pool(&self) -> Option<Arc<Pool<Enricher>>> {
        self.state().pool.clone()
    }

    pub(super) fn set_handler(&self, handler: Option<Arc<Handler>>) {
        *write(&self.enricher.handler) = handler;
    }

    /// Requests in progress give up: their frames are being flushed anyway.
    fn cancel_requests(&self) {
        let remote = read(&self.enricher.remote).clone();
        if let Some(remote) = remote {
            remote.set.cancel();
        }
    }

    fn remote_stats(&self) -> Option<RemoteStats> {
        let remote = read(&self.enricher.remote).clone();
        match remote {
            Some(remote) => Some(RemoteStats::of(&remote)),
            None => self.state().last_remote.clone(),
        }
    }

    fn stats(&self) -> gst::Structure {
        stats_structure(
            &self.current_stats(),
            &self.settings(),
            self.remote_stats().as_ref(),
            self.enricher.overlay_skipped.load(Ordering::Relaxed),
        )
    }

    fn current_stats(&self) -> PoolStats {
        match self.pool() {
            Some(pool) => pool.stats(),
            None => self.state().last_stats.clone(),
        }
    }

    fn sink_chain(&self, buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.enricher.flow.get()?;
        let pool = self.pool().ok_or(gst::FlowError::Flushing)?;
        let mut buffer = buffer;
        let now = self.obj().current_running_time().map(|t| t.nseconds());

        let (tag, running_time, video) = {
            let mut state = self.state();
            if state.eos {
                return Err(gst::FlowError::Eos);
            }
            let running_time = state
                .in_segment
                .to_running_time(buffer.pts())
                .map(|t| t.nseconds());
            let tag = match SeqMeta::read(&buffer) {
                // Keep the meta of a pool upstream: one resequencer can serve both.
                Some(Ok(meta)) => Tag {
                    seq: meta.seq,
                    epoch: meta.epoch,
                },
                other => {
                    if let Some(Err(err)) = other {
                        gst::warning!(
                            CAT,
                            imp = self,
                            "replacing a malformed sequence meta: {err}"
                        );
                    }
                    let tag = Tag {
                        seq: state.next_seq,
                        epoch: state.epoch,
                    };
                    state.next_seq += 1;
                    SeqMeta {
                        seq: tag.seq,
                        epoch: tag.epoch,
                        ingress: now.unwrap_or(0),
                    }
                    .add(buffer.make_mut());
                    tag
                }
            };
            (tag, running_time, state.video.clone())
        };

        let bytes = buffer.size() as u64;
        let frame = Frame {
            buffer,
            outputs: None,
            seq: tag.seq,
            video,
            avoid: Vec::new(),
            server: String::new(),
            enriched: false,
            remote_wanted: None,
            remote_done: false,
        };
        match pool.submit(frame, tag, bytes, running_time) {
            Submitted::Queued { .. } | Submitted::Leaked => self.enricher.flow.get(),
            Submitted::Stopped => Err(gst::FlowError::Flushing),
        }
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        use gst::EventView;

        gst::log!(CAT, obj = pad, "handling {event:?}");
        match event.view() {
            EventView::FlushStart(_) => {
                if let Some(pool) = self.pool() {
                    let events = pool.flush();
                    self.state().sticky_after_flush = events;
                }
                self.cancel_requests();
                return self.srcpad.push_event(event);
            }
            EventView::FlushStop(_) => {
                // A push in progress returns first (downstream is flushing): nothing from
                // before the flush leaves after it, and its FLUSHING is reset below.
                if let Some(pool) = self.pool() {
                    pool.resume();
                }
                // Stored only now: an older sticky event pushed meanwhile must not win.
                let events = std::mem::take(&mut self.state().sticky_after_flush);
                self.keep_sticky(events);
                {
                    let mut state = self.state();
                    state.epoch = state.epoch.wrapping_add(1);
                    state.next_seq = 0;
                    state.in_segment = gst::FormattedSegment::new();
                    state.eos = false;
                    state.error_posted = false;
                }
                self.enricher.flow.set(Ok(gst::FlowSuccess::Ok));
                return self.srcpad.push_event(event);
            }
            EventView::CustomDownstream(_) if Gap::from_event(&event).is_some() => {
                // A gap from a pool upstream: in its place after the events before it.
                if let Some(Ok(gap)) = Gap::from_event(&event)
                    && let Some(pool) = self.pool()
                {
                    let reason = match gap.reason {
                        GapReason::Leaked => Loss::Leaked,
                        GapReason::Failed => Loss::Failed,
                        GapReason::Timeout => Loss::Timeout,
                        GapReason::Dropped => Loss::Dropped,
                    };
                    let first = Tag {
                        seq: gap.seq,
                        epoch: gap.epoch,
                    };
                    return pool.lost(first, gap.count, reason);
                }
            }
            EventView::Caps(caps) => {
                let video = gst_video::VideoInfo::from_caps(caps.caps())
                    .ok()
                    .map(Arc::new);
                if video.is_none() && read(&self.enricher.remote).is_some() {
                    gst::element_imp_error!(
                        self,
                        gst::CoreError::Negotiation,
                        ("Remote enrichment needs raw video, got {}", caps.caps())
                    );
                    return false;
                }
                // Frames carry the info of the caps they came with.
                self.state().video = video;
            }
            EventView::Segment(segment) => {
                // Running times (for max-size-time) exist only for time segments; frames of
                // other segments are bounded by buffers and bytes alone.
                let segment = segment
                    .segment()
                    .downcast_ref::<gst::ClockTime>()
                    .cloned()
                    .unwrap_or_default();
                let mut state = self.state();
                if state.next_seq > 0 {
                    // A restart: the sequence begins again in a new epoch.
                    state.epoch = state.epoch.wrapping_add(1);
                    state.next_seq = 0;
                }
                state.in_segment = segment;
            }
            EventView::StreamStart(_) => {
                let mut state = self.state();
                state.eos = false;
                state.error_posted = false;
                drop(state);
                // A new stream after EOS: downstream takes data again.
                self.enricher.flow.clear(gst::FlowError::Eos);
            }
            EventView::Eos(_) => {
                self.state().eos = true;
                // Downstream failed before EOS came: nothing follows EOS to return it.
                if let Err(err) = self.enricher.flow.get() {
                    self.enricher.post_flow_error_after_eos(err);
                    if !matches!(err, gst::FlowError::Flushing | gst::FlowError::Eos) {
                        return false;
                    }
                }
            }
            _ => {}
        }
        if !event.is_serialized() {
            return self.srcpad.push_event(event);
        }
        // A barrier: it leaves after every earlier frame is pushed or gapped, before every
        // later one; upstream goes on meanwhile.
        match self.pool() {
            Some(pool) => {
                let accepted = pool.event(event);
                if !accepted {
                    gst::debug!(CAT, imp = self, "flushing: serialized event dropped");
                }
                accepted
            }
            None => self.srcpad.push_event(event),
        }
    }

    /// Sticky events that were still waiting in the pool at a flush describe the stream
    /// after it too (all but SEGMENT and EOS): they are stored on the src pad, as `queue` does.
    fn keep_sticky(&self, events: Vec<gst::Event>) {
        for event in events {
            if event.is_sticky()
                && !matches!(event.type_(), gst::EventType::Segment | gst::EventType::Eos)
            {
                let _ = self.srcpad.store_sticky_event(&event);
            }
        }
    }

    fn sink_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        gst::log!(CAT, obj = pad, "handling {query:?}");
        if !query.is_serialized() {
            return gst::Pad::query_default(pad, Some(&*self.obj()), query);
        }
        // DRAIN, ALLOCATION and other serialized queries come after the frames before them.
        match self.pool() {
            Some(pool) => pool
                .when_idle(|| gst::Pad::query_default(pad, Some(&*self.obj()), query))
                .unwrap_or_else(|| {
                    gst::debug!(CAT, imp = self, "flushing: serialized query refused");
                    false
                }),
            None => gst::Pad::query_default(pad, Some(&*self.obj()), query),
        }
    }

    fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        if let gst::QueryViewMut::Latency(q) = query.view_mut() {
            let mut upstream = gst::query::Latency::new();
            if !self.sinkpad.peer_query(&mut upstream) {
                return false;
            }
            let (live, min, max) = upstream.result();
            let ours = gst::ClockTime::from_nseconds(processing_latency(
                &self.current_stats(),
                &self.settings(),
            ));
            // Not taken as reported: a query may come from anyone (an application showing
            // the latency), not only from the recalculation a LATENCY message brings.
            q.set(
                live,
                min.saturating_add(ours),
                max.map(|m| m.saturating_add(ours)),
            );
            return true;
        }
        if let Some(counted) = InFlightQuery::frames(query) {
            let ours = self.disorder();
            let mut upstream = InFlightQuery::query();
            let (before, measured) = if self.sinkpad.peer_query(&mut upstream) {
                (
                    InFlightQuery::frames(&upstream).unwrap_or(0),
                    InFlightQuery::measured(&upstream),
                )
            } else {
                (0, true)
            };
            InFlightQuery::set_frames(query, counted + before + ours);
            // The flag set before the first delivery's LATENCY message: the recalculation
            // that message brings sees it.
            let ours_measured =
                self.settings().latency >= 0 || self.enricher.measured.load(Ordering::Acquire);
            if !measured || !ours_measured {
                InFlightQuery::set_unmeasured(query);
            }
            return true;
        }
        gst::Pad::query_default(pad, Some(&*self.obj()), query)
    }

    fn src_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        if event.type_() == gst::EventType::Reconfigure {
            // Downstream may be linked now: the next chain tries again.
            self.enricher.flow.clear(gst::FlowError::NotLinked);
        }
        gst::Pad::event_default(pad, Some(&*self.obj()), event)
    }

    /// How far out of order this pool's output can be, in frames.
    fn disorder(&self) -> u64 {
        match self.pool() {
            Some(pool) => pool.disorder(),
            None => self.settings().pool_config().disorder(),
        }
    }

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings();
        let remote = settings.remote().map_err(|err| {
            gst::error_msg!(
                gst::ResourceError::Settings,
                ("Remote enrichment is misconfigured: {}", err)
            )
        })?;
        *write(&self.enricher.remote) = remote.map(Arc::new);
        self.enricher.overlay_skipped.store(0, Ordering::Relaxed);
        let pool = Pool::start(self.enricher.clone(), settings.pool_config()).map_err(|err| {
            gst::error_msg!(
                gst::ResourceError::NoSpaceLeft,
                ("Could not start the worker pool: {}", err)
            )
        })?;
        self.enricher.flow.set(Ok(gst::FlowSuccess::Ok));
        *lock(&self.enricher.reported_latency) = Reported::default();
        self.enricher.measured.store(false, Ordering::Release);
        let mut state = self.state();
        *state = State {
            pool: Some(Arc::new(pool)),
            stats_timer: std::mem::take(&mut state.stats_timer),
            ..State::default()
        };
        drop(state);
        self.restart_stats_timer();
        Ok(())
    }

    fn stop(&self) {
        // Workers waiting on servers give up; none starts a new request.
        if let Some(remote) = read(&self.enricher.remote).clone() {
            remote.set.close();
        }
        // One critical section: a stats-interval change in between would restart the timer.
        let pool = {
            let mut state = self.state();
            state.stats_timer.stop();
            state.pool.take()
        };
        if let Some(pool) = pool {
            // Whoever else still holds the pool (a query, the stats timer) finds it stopped.
            let left = pool.stop(STOP_GRACE);
            if left > 0 {
                gst::element_imp_warning!(
                    self,
                    gst::CoreError::Thread,
                    (
                        "{} workers still busy {} s after the stop; left to finish alone",
                        left,
                        STOP_GRACE.as_secs()
                    ),
                    ["their results are discarded when their handlers return"]
                );
            }
            self.state().last_stats = pool.stats();
        }
        let remote = write(&self.enricher.remote).take();
        if let Some(remote) = remote {
            self.state().last_remote = Some(RemoteStats::of(&remote));
        }
    }

    fn restart_stats_timer(&self) {
        let mut state = self.state();
        // Read under the state lock: a concurrent change of stats-interval restarts the
        // timer after this, with its own value, and so has the last word.
        let interval = if state.pool.is_some() {
            self.settings().stats_interval
        } else {
            0
        };
        state
            .stats_timer
            .restart(&*self.obj(), interval, |e: &super::EnrichPool| {
                e.imp().stats()
            });
    }
}

#[glib::object_subclass]
impl ObjectSubclass for EnrichPool {
    const NAME: &'static str = "GstEnrichPool";
    type Type = super::EnrichPool;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let templ = klass.pad_template("sink").expect("sink template");
        let sinkpad = gst::Pad::builder_from_template(&templ)
            .chain_function(|_pad, parent, buffer| {
                EnrichPool::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |imp| imp.sink_chain(buffer),
                )
            })
            .event_function(|pad, parent, event| {
                EnrichPool::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.sink_event(pad, event),
                )
            })
            .query_function(|pad, parent, query| {
                EnrichPool::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.sink_query(pad, query),
                )
            })
            .flags(
                gst::PadFlags::PROXY_CAPS
                    | gst::PadFlags::PROXY_ALLOCATION
                    | gst::PadFlags::PROXY_SCHEDULING,
            )
            .build();
        let templ = klass.pad_template("src").expect("src template");
        let srcpad = gst::Pad::builder_from_template(&templ)
            .query_function(|pad, parent, query| {
                EnrichPool::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.src_query(pad, query),
                )
            })
            .event_function(|pad, parent, event| {
                EnrichPool::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.src_event(pad, event),
                )
            })
            .flags(gst::PadFlags::PROXY_CAPS)
            .build();
        let enricher = Arc::new(Enricher {
            element: glib::WeakRef::new(),
            srcpad: srcpad.clone(),
            handler: RwLock::new(None),
            flow: FlowCell::new(),
            reported_latency: Mutex::new(Reported::default()),
            measured: AtomicBool::new(false),
            remote: RwLock::new(None),
            overlay: AtomicBool::new(false),
            overlay_skipped: AtomicU64::new(0),
        });
        EnrichPool {
            sinkpad,
            srcpad,
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(State::default()),
            enricher,
        }
    }
}

impl ObjectImpl for EnrichPool {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecUInt::builder("workers")
                    .nick("Workers")
                    .blurb("Worker threads started, and kept at least (default: the number of CPU cores)")
                    .minimum(1)
                    .maximum(1024)
                    .default_value(default_workers())
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-workers")
                    .nick("Maximum workers")
                    .blurb(
                        "Above `workers`, turns on autoscaling: a worker is added while more frames \
                         are queued than there are workers and none is idle, up to this many \
                         (0 = fixed at `workers`)",
                    )
                    .maximum(1024)
                    .default_value(0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("idle-timeout")
                    .nick("Idle timeout")
                    .blurb("Workers above `workers` retire after being idle this long, in nanoseconds")
                    .minimum(1_000_000)
                    .default_value(DEFAULT_IDLE_TIMEOUT)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-size-buffers")
                    .nick("Max. size (buffers)")
                    .blurb(
                        "The most frames from the oldest one not yet pushed (or given up on) to \
                         the newest: frames queued, in flight and finished, and those a \
                         resequencer downstream holds ahead of an older one; so a resequencer \
                         needs no bigger window (0 = unlimited)",
                    )
                    .default_value(DEFAULT_MAX_SIZE_BUFFERS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("max-size-bytes")
                    .nick("Max. size (bytes)")
                    .blurb(
                        "The most bytes of frames queued or finished and waiting to be pushed; \
                         frames in flight are bounded by the workers (0 = unlimited)",
                    )
                    .default_value(0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("max-size-time")
                    .nick("Max. size (ns)")
                    .blurb(
                        "The most running time, in nanoseconds, between the oldest frame queued \
                         or finished and waiting to be pushed and the newest; a slow frame in \
                         flight does not count (0 = unlimited)",
                    )
                    .default_value(0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("leaky", Leaky::None)
                    .nick("Leaky")
                    .blurb(
                        "When the queue is full: none waits (backpressure), upstream drops the new \
                         frame, downstream drops the oldest queued frame (or the new one, when \
                         what fills the pool is in flight or finished: dropping queued frames \
                         would not make room). Every drop is an ordered-gap event with reason \
                         `leaked`; a leaky pool never waits for downstream",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("timeout")
                    .nick("Timeout")
                    .blurb(
                        "Bound on one frame's processing, all attempts together, in nanoseconds; \
                         past it the frame is a gap with reason `timeout`, a replacement worker \
                         starts (up to as many stuck threads as the most workers; beyond, a \
                         warning, and queued frames time out where they wait) and the late \
                         result is discarded (0 = no bound)",
                    )
                    .default_value(0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("on-error", OnError::Retry)
                    .nick("On error")
                    .blurb("What a failed attempt leads to: retry, drop (a gap) or fail (a gap and an error)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("retries")
                    .nick("Retries")
                    .blurb("With on-error=retry: how many more attempts a failed frame gets")
                    .maximum(100)
                    .default_value(DEFAULT_RETRIES)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecInt64::builder("latency")
                    .nick("Latency")
                    .blurb(
                        "Processing latency added to the LATENCY query, in nanoseconds \
                         (-1 = measured: the 99th percentile of queue wait plus processing of \
                         the last 128 frames pushed, never the largest of several, plus a \
                         quarter; frames lost or flushed do not count; a LATENCY message is \
                         posted when it moves by more than a quarter, and 1 ms: up at once, \
                         down once 128 frames have passed since the last report)",
                    )
                    .minimum(-1)
                    .default_value(-1)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("overlay")
                    .nick("Overlay")
                    .blurb(
                        "Draw each frame's results into it on the worker thread: a box per \
                         GstVideoRegionOfInterestMeta (motion yellow, detections green with class \
                         and score, others cyan) and a line `#seq label wWORKER`. 8-bit RGB, BGR, \
                         GRAY and YUV formats; others pass undrawn (counted in overlay-skipped)",
                    )
                    .default_value(false)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("servers")
                    .nick("Servers")
                    .blurb(
                        "Open Inference Protocol (KServe v2) servers to send frames to, comma-separated \
                         grpc://, grpcs://, http:// or https:// URLs (empty = local enrichment only). \
                         Each frame goes as a UINT8 tensor [H, W, C] (plane 0: packed RGB/BGR/GRAY \
                         pixels or the luma of YUV) with its sequence number as the request id; \
                         every output becomes a field of EnrichmentMeta, and outputs `boxes` + \
                         `scores` (+ `classes`) become GstVideoRegionOfInterestMeta",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("model")
                    .nick("Model")
                    .blurb("The model's name on the servers (required with `servers`)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("model-version")
                    .nick("Model version")
                    .blurb("The model's version (empty = the server's choice)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("request-timeout")
                    .nick("Request timeout")
                    .blurb(
                        "Bound on one request, connecting included, in nanoseconds; a server that \
                         does not answer in time is taken out of the set and probed back in",
                    )
                    .minimum(1_000_000)
                    .default_value(DEFAULT_REQUEST_TIMEOUT)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("hedge-after")
                    .nick("Hedge after")
                    .blurb(
                        "Send a second copy of a request to another server when the first has not \
                         answered after this many nanoseconds; the first answer wins (0 = off)",
                    )
                    .default_value(0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-in-flight-per-server")
                    .nick("Max. in flight per server")
                    .blurb("Requests outstanding on one server at most; others wait for room (0 = unbounded)")
                    .default_value(0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("auth-token")
                    .nick("Auth token")
                    .blurb("Sent as `Authorization: Bearer <token>` to every server; write-only, never logged or shown in stats by this element (on a gst-launch-1.0 command line it shows in the process list and in GStreamer's own debug log: use auth-token-file there)")
                    .write_only()
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("auth-token-file")
                    .nick("Auth token file")
                    .blurb("A file holding the token (surrounding whitespace ignored), read when the element starts; refused unless it is a regular file that other users can neither read nor write. Its content is never logged")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("max-response-bytes")
                    .nick("Max. response bytes")
                    .blurb("Responses larger than this are refused and counted as errors")
                    .minimum(1024)
                    .default_value(DEFAULT_MAX_RESPONSE_BYTES)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("interval")
                    .nick("Interval")
                    .blurb(
                        "Send every Nth frame (by sequence number) to the servers; the others pass \
                         through untouched, in order",
                    )
                    .minimum(1)
                    .default_value(1)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("only-label")
                    .nick("Only label")
                    .blurb(
                        "Send only frames whose FrameAnalysisMeta label is this (scene-cut, motion, \
                         static, dark); the others pass through untouched (empty = all frames)",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("tls-ca-file")
                    .nick("TLS CA file")
                    .blurb(
                        "PEM file of certificates trusted for grpcs:// and https:// servers besides \
                         the Mozilla web roots",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb(
                        "enrichpool-stats: in, pushed, dropped, dropped-leaked, dropped-failed, \
                         dropped-timeout, dropped-dropped, flushed, retries, queued, max-queued, \
                         in-flight, waiting (finished, waiting for their turn to be pushed), \
                         workers, stuck (threads in handlers that did not return after timeout), \
                         spawn-failures (frames or threads), latency (ns: what the element adds \
                         to the LATENCY query, see `latency`), worker-stats (per worker: \
                         worker, processed, busy ns, errors), overlay-skipped, remote-sent, remote-skipped, hedges \
                         and servers (per server: url, healthy, in-flight, requests, errors, \
                         latency-p50 and latency-p99 ns over the last 1024 answers, last-error)",
                    )
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("stats-interval")
                    .nick("Statistics interval")
                    .blurb("Post the stats structure as an element message every this many nanoseconds while running, and once more when EOS leaves (0 = never)")
                    .default_value(0)
                    .mutable_playing()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn signals() -> &'static [glib::subclass::Signal] {
        static SIGNALS: LazyLock<Vec<glib::subclass::Signal>> = LazyLock::new(|| {
            vec![
                glib::subclass::Signal::builder("process")
                    .param_types([
                        gst::Buffer::static_type(),
                        u32::static_type(),
                        gst::Structure::static_type(),
                    ])
                    .return_type::<bool>()
                    .build(),
            ]
        });
        SIGNALS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = lock(&self.settings);
        match pspec.name() {
            "workers" => s.workers = value.get().expect("type checked upstream"),
            "max-workers" => s.max_workers = value.get().expect("type checked upstream"),
            "idle-timeout" => s.idle_timeout = value.get().expect("type checked upstream"),
            "max-size-buffers" => s.max_size_buffers = value.get().expect("type checked upstream"),
            "max-size-bytes" => s.max_size_bytes = value.get().expect("type checked upstream"),
            "max-size-time" => s.max_size_time = value.get().expect("type checked upstream"),
            "leaky" => s.leaky = value.get().expect("type checked upstream"),
            "timeout" => s.timeout = value.get().expect("type checked upstream"),
            "on-error" => s.on_error = value.get().expect("type checked upstream"),
            "retries" => s.retries = value.get().expect("type checked upstream"),
            "latency" => {
                s.latency = value.get().expect("type checked upstream");
                drop(s);
                let _ = self
                    .obj()
                    .post_message(gst::message::Latency::builder().src(&*self.obj()).build());
            }
            "overlay" => {
                s.overlay = value.get().expect("type checked upstream");
                self.enricher.overlay.store(s.overlay, Ordering::Relaxed);
            }
            "servers" => {
                s.servers = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .unwrap_or_default()
            }
            "model" => {
                s.model = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .unwrap_or_default()
            }
            "model-version" => {
                s.model_version = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .unwrap_or_default()
            }
            "request-timeout" => s.request_timeout = value.get().expect("type checked upstream"),
            "hedge-after" => s.hedge_after = value.get().expect("type checked upstream"),
            "max-in-flight-per-server" => {
                s.max_in_flight_per_server = value.get().expect("type checked upstream")
            }
            "auth-token" => {
                s.auth_token = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .filter(|t| !t.is_empty())
            }
            "auth-token-file" => {
                s.auth_token_file = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .filter(|p| !p.is_empty())
            }
            "max-response-bytes" => {
                s.max_response_bytes = value.get().expect("type checked upstream")
            }
            "interval" => s.interval = value.get().expect("type checked upstream"),
            "only-label" => {
                s.only_label = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .filter(|l| !l.is_empty())
            }
            "tls-ca-file" => {
                s.tls_ca_file = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .filter(|l| !l.is_empty())
            }
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
            "workers" => s.workers.to_value(),
            "max-workers" => s.max_workers.to_value(),
            "idle-timeout" => s.idle_timeout.to_value(),
            "max-size-buffers" => s.max_size_buffers.to_value(),
            "max-size-bytes" => s.max_size_bytes.to_value(),
            "max-size-time" => s.max_size_time.to_value(),
            "leaky" => s.leaky.to_value(),
            "timeout" => s.timeout.to_value(),
            "on-error" => s.on_error.to_value(),
            "retries" => s.retries.to_value(),
            "latency" => s.latency.to_value(),
            "overlay" => s.overlay.to_value(),
            "servers" => s.servers.to_value(),
            "model" => s.model.to_value(),
            "model-version" => s.model_version.to_value(),
            "request-timeout" => s.request_timeout.to_value(),
            "hedge-after" => s.hedge_after.to_value(),
            "max-in-flight-per-server" => s.max_in_flight_per_server.to_value(),
            "max-response-bytes" => s.max_response_bytes.to_value(),
            "interval" => s.interval.to_value(),
            "only-label" => s.only_label.to_value(),
            "tls-ca-file" => s.tls_ca_file.to_value(),
            "auth-token-file" => s.auth_token_file.to_value(),
            "stats" => self.stats().to_value(),
            "stats-interval" => s.stats_interval.to_value(),
            other => unreachable!("unknown property {other}"),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        self.enricher.element.set(Some(&*obj));
        obj.add_pad(&self.sinkpad).expect("new pad");
        obj.add_pad(&self.srcpad).expect("new pad");
    }
}

impl GstObjectImpl for EnrichPool {}

impl ElementImpl for EnrichPool {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Enrichment pool",
                "Generic",
                "Stamps frames with OrderedSeqMeta, processes them on a pool of worker threads \
                 (the `process` signal or a Rust handler) behind a bounded queue, and pushes \
                 results as they finish; frames that will not be pushed become ordered-gap \
                 events. Put a resequencer downstream to restore the order",
                "gst-ordered developers",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> =
            LazyLock::new(|| crate::glue::always_pads(&gst::Caps::new_any()));
        TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        gst::debug!(CAT, imp = self, "changing state {transition:?}");
        match transition {
            gst::StateChange::ReadyToPaused => {
                if let Err(err) = self.start() {
                    self.post_error_message(err);
                    return Err(gst::StateChangeError);
                }
            }
            gst::StateChange::PausedToReady => {
                // Wake a chain waiting for room and a barrier waiting for idleness first,
                // and let workers waiting on servers go.
                if let Some(pool) = self.pool() {
                    let _ = pool.flush();
                }
                self.cancel_requests();
            }
            _ => {}
        }
        let res = self.parent_change_state(transition);
        if transition == gst::StateChange::PausedToReady {
            self.stop();
        }
        if res.is_ok() && transition == gst::StateChange::PausedToPlaying {
            // On the pipeline's clock from now on.
            self.restart_stats_timer();
        }
        if res.is_err() && transition == gst::StateChange::ReadyToPaused {
            self.stop();
        }
        res
    }
}
