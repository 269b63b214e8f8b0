//! The resequencer's implementation.
//!
//! The sink pad (chain, serialized events and serialized queries) feeds one [`Window`]; the
//! src pad task takes outputs from it one at a time and pushes them, waiting on the pipeline
//! clock for live deadlines. A full window blocks the chain until the task makes room. A
//! serialized query (DRAIN, ALLOCATION, …) waits in the window behind the frames before it
//! (holes before it are skipped: upstream waits for the answer, so nothing missing can come);
//! when the task reaches it, the task waits while the streaming thread forwards the query.
//!
//! Flow errors from downstream are returned upstream by the chain; they are posted (once, as
//! `queue` does) only when upstream will not see them because EOS was already received.
//!
//! Lock order: `settings` is only ever held alone (copied out). `state` is the one lock
//! shared by the streaming thread, the src pad task and the stats timer; the condition
//! variable `cond` goes with it. No pad push and no message post happens while `state` is
//! held.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::funnel::{self, Input};
use crate::glue::{StatsTimer, lock, post_stats};
use crate::latency::Latencies;
use crate::meta::{Gap, GapReason, InFlightQuery, MalformedError, SeqMeta};
use crate::sequencing::{
    Arrival, Config, FrameKey, GapArrival, Mode, Output, Skip, SkipReason, Stats, Timing, Window,
};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "resequencer",
        gst::DebugColorFlags::empty(),
        Some("Restores the order of frames processed in parallel"),
    )
});

const DEFAULT_ORDER_BY: OrderBy = OrderBy::Auto;
/// `latency`'s default (GST_CLOCK_TIME_NONE): automatic, see [`own_latency`].
const DEFAULT_LATENCY: u64 = u64::MAX;
/// How long a missing frame is waited for with `latency` automatic.
const AUTO_WAIT: u64 = 200_000_000;
/// With request pads, not live: how long a pad waits for room with nothing moving before the
/// bound is lifted (at least; `latency`, if longer).
const FUNNEL_PATIENCE: Duration = Duration::from_millis(200);

/// With request pads: how many frames a lifted bound lets the window hold before the pads
/// that have not moved are passed over.
fn funnel_cap(settings: &Settings) -> usize {
    (settings.max_window as usize).saturating_mul(16).max(256)
}
const DEFAULT_MAX_WINDOW: u32 = 64;
const DEFAULT_STATS_INTERVAL: u64 = 0;

/// What the resequencer orders frames by.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstResequencerOrderBy")]
pub enum OrderBy {
    #[enum_value(
        name = "Auto: the sequence meta when the first frame carries one, else PTS",
        nick = "auto"
    )]
    Auto = 0,
    #[enum_value(
        name = "Sequence: OrderedSeqMeta (frames without one are dropped and counted)",
        nick = "sequence"
    )]
    Sequence = 1,
    #[enum_value(name = "PTS: presentation timestamps", nick = "pts")]
    Pts = 2,
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    order_by: OrderBy,
    latency: u64,
    max_window: u32,
    stats_interval: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            order_by: DEFAULT_ORDER_BY,
            latency: DEFAULT_LATENCY,
            max_window: DEFAULT_MAX_WINDOW,
            stats_interval: DEFAULT_STATS_INTERVAL,
        }
    }
}

/// What the element knows of upstream from the LATENCY and `ordered-in-flight` queries.
#[derive(Debug, Clone, Copy, Default)]
struct Upstream {
    live: bool,
    min_latency: u64,
    /// How far out of order the pools upstream can put frames.
    in_flight: u64,
    /// Whether a pool upstream answered the in-flight query.
    pools: bool,
    /// Whether their latency answers cover their processing (see `InFlightQuery`).
    measured: bool,
}

/// The answer to the in-flight query.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    pools: bool,
    frames: u64,
    measured: bool,
}

impl InFlight {
    fn apply(self, upstream: &mut Upstream) {
        upstream.pools = self.pools;
        upstream.in_flight = self.frames;
        upstream.measured = self.measured;
    }
}

/// A frame in the window, with the `ingress` of its sequence meta (read once, on arrival)
/// for the latency figures.
#[derive(Debug)]
struct Held {
    buffer: gst::Buffer,
    ingress: Option<u64>,
    /// From a request pad: that pad's sticky events when it came.
    sticky: Option<Arc<Vec<gst::Event>>>,
}

/// A serialized item in the window besides frames.
#[derive(Debug)]
enum Serial {
    Event(gst::Event),
    /// A serialized query, answered by the streaming thread when its turn comes.
    Query(u64),
}

/// What the task does after an output that failed.
enum Failure {
    /// Upstream sees the flow return from the chain: nothing to post.
    Returned,
    /// EOS was received, so upstream will not: post the error and push EOS.
    Post(gst::FlowError),
}

struct State {
    window: Window<Held, Serial>,
    flushing: bool,
    /// The last result of pushing downstream; returned to upstream by the chain.
    flow: Result<gst::FlowSuccess, gst::FlowError>,
    in_segment: gst::FormattedSegment<gst::ClockTime>,
    /// PTS order: the count of segments since the last flush; frames of a new one are
    /// ordered once the previous one has drained.
    pts_epoch: u32,
    /// The last segment received, to tell a new one from a repeat.
    last_segment: Option<gst::FormattedSegment<gst::ClockTime>>,
    /// From the caps' framerate: the duration of a frame that has none.
    frame_duration: Option<u64>,
    /// `None` until asked, after start and after each flush.
    upstream: Option<Upstream>,
    /// Whether the pools upstream were asked for their disorder since start or the last flush.
    asked_in_flight: bool,
    task_waiting: bool,
    /// Streaming threads waiting for room (one per request pad, at most).
    chains_waiting: u32,
    /// The request pads' branches (kept across states, like the pads).
    inputs: Vec<Input>,
    /// A STREAM_START from a request pad went into the window: the others' are not.
    funnel_started: bool,
    /// The always sink pad is at EOS (with request pads, EOS waits for every pad's).
    always_eos: bool,
    /// With request pads: the frontier at which a fast pad waited in vain; until the pads
    /// move past it, the window takes frames over `max-window`.
    lifted: Option<Option<(u32, u64)>>,
    /// The streaming thread is pushing (the fast path): the task does not pop meanwhile.
    chain_pushing: bool,
    clock_wait: Option<gst::SingleShotClockId>,
    stats_timer: StatsTimer,
    /// Between READY→PAUSED and PAUSED→READY.
    running: bool,
    /// PLAYING: deadlines are waited for on the clock.
    playing: bool,
    /// EOS was received (and queued): flow errors are posted, upstream will not see them.
    eos: bool,
    error_posted: bool,
    /// The serialized query whose turn it is, and the number of the next one.
    query_turn: Option<u64>,
    next_query: u64,
    /// Queries whose caller gave up (a flow error) while they waited in the window.
    abandoned_queries: Vec<u64>,
    warned_malformed: bool,
    warned_window: bool,
    /// Restarts already warned about.
    restarts_warned: u64,
    /// The window's mode last seen by the chain (what this element adds to the latency
    /// depends on it).
    announced_mode: Option<Mode>,
    /// What this element last added to a LATENCY query.
    reported_own: Option<u64>,
    /// The reasons of the gap notices recorded and not skipped yet, for the GAP events:
    /// (epoch, first, end, reason), at most [`GAP_REASONS`].
    gap_reasons: VecDeque<(u32, u64, u64, GapReason)>,
}

/// Gap notices whose reason is remembered until their frames are skipped.
const GAP_REASONS: usize = 1024;

impl State {
    fn new(settings: &Settings) -> Self {
        State {
            window: Window::new(window_config(settings, Upstream::default(), false)),
            flushing: true,
            flow: Ok(gst::FlowSuccess::Ok),
            in_segment: gst::FormattedSegment::new(),
            pts_epoch: 0,
            announced_mode: None,
            reported_own: None,
            last_segment: None,
            frame_duration: None,
            upstream: None,
            asked_in_flight: false,
            task_waiting: false,
            chains_waiting: 0,
            inputs: Vec::new(),
            funnel_started: false,
            always_eos: false,
            lifted: None,
            chain_pushing: false,
            clock_wait: None,
            stats_timer: StatsTimer::default(),
            running: false,
            playing: false,
            eos: false,
            error_posted: false,
            query_turn: None,
            next_query: 0,
            abandoned_queries: Vec::new(),
            warned_malformed: false,
            warned_window: false,
            restarts_warned: 0,
            gap_reasons: VecDeque::new(),
        }
    }

    /// The reason upstream gave for the frames of a skip of `SkipReason::Gap` (`lost` when
    /// it does not know, or they had several); forgets the notices the skip covers.
    fn gap_reason(&mut self, skip: &Skip) -> &'static str {
        let (Some(epoch), Some(first)) = (skip.epoch, skip.first_seq) else {
            return skip.reason.as_str();
        };
        let end = first + skip.count;
        let mut reason: Option<Option<GapReason>> = None;
        self.gap_reasons.retain(|&(e, s, t, r)| {
            let overlaps = e == epoch && s < end && t > first;
            if overlaps {
                reason = Some(match reason {
                    None => Some(r),
                    Some(Some(prev)) if prev == r => Some(r),
                    _ => None,
                });
            }
            // What the skip covers, and what an older epoch had, is done with.
            !(e == epoch && t <= end) && e >= epoch.saturating_sub(1)
        });
        match reason {
            Some(Some(r)) => r.as_str(),
            _ => skip.reason.as_str(),
        }
    }

    /// Wakes the task if it waits for data or a deadline.
    fn wake_task(&mut self, cond: &Condvar) {
        if let Some(id) = self.clock_wait.take() {
            id.unschedule();
        }
        if self.task_waiting {
            cond.notify_all();
        }
    }

    /// Whether query `id` was given up by its caller (then it is forgotten).
    fn abandon(&mut self, id: u64) -> bool {
        let before = self.abandoned_queries.len();
        self.abandoned_queries.retain(|&q| q != id);
        self.abandoned_queries.len() != before
    }

    fn wake_chain(&self, cond: &Condvar) {
        if self.chains_waiting > 0 {
            cond.notify_all();
        }
    }

    /// Forgets the stream (a flush): the window, the segment, what is known of upstream.
    fn reset_stream(&mut self) -> Vec<Serial> {
        let pending = self.window.reset();
        self.gap_reasons.clear();
        self.in_segment = gst::FormattedSegment::new();
        self.pts_epoch = 0;
        self.last_segment = None;
        self.upstream = None;
        self.asked_in_flight = false;
        self.announced_mode = None;
        self.flow = Ok(gst::FlowSuccess::Ok);
        self.eos = false;
        self.error_posted = false;
        self.query_turn = None;
        self.abandoned_queries.clear();
        self.restarts_warned = self.window.stats().restarts;
        self.always_eos = false;
        self.lifted = None;
        for input in &mut self.inputs {
            input.reset_stream();
        }
        pending
    }

    /// With request pads: up to where every input is (see `funnel::frontier`).
    fn frontier(&self, always_linked: bool) -> Option<(u32, u64)> {
        let open = always_linked && !self.always_eos;
        let pts = self.window.mode() == Some(Mode::Pts);
        funnel::frontier(&self.inputs, open, pts)
    }

    fn input(&mut self, pad: &gst::Pad) -> Option<&mut Input> {
        self.inputs.iter_mut().find(|i| &i.pad == pad)
    }

    /// Whether every input has reached EOS (with request pads: each of them, and the always
    /// sink pad if it is linked).
    fn all_eos(&self, always_linked: bool) -> bool {
        (!always_linked || self.always_eos) && self.inputs.iter().all(|i| !i.open())
    }

    /// With request pads: tells the window what every input is past, and wakes whoever
    /// waits on it.
    fn settle(&mut self, always_linked: bool, cond: &Condvar) {
        if self.inputs.is_empty() {
            return;
        }
        if let Some((epoch, key)) = self.frontier(always_linked) {
            self.window.settle(epoch, key.saturating_add(1));
        }
        self.wake_task(cond);
        cond.notify_all();
    }
}

/// What the window orders by, or will once the stream's first frame decides (`order-by=auto`
/// with a pool upstream: its sequence meta).
fn expected_mode(settings: &Settings, upstream: Upstream, known: Option<Mode>) -> Mode {
    match settings.order_by {
        OrderBy::Sequence => Mode::Sequence,
        OrderBy::Pts => Mode::Pts,
        OrderBy::Auto => known.unwrap_or(if upstream.pools {
            Mode::Sequence
        } else {
            Mode::Pts
        }),
    }
}

/// How long a missing frame is waited for past its expected running time plus upstream's
/// latency: `latency`, or [`AUTO_WAIT`] with it automatic.
fn wait(settings: &Settings) -> u64 {
    match settings.latency {
        DEFAULT_LATENCY => AUTO_WAIT,
        latency => latency,
    }
}

/// What the resequencer adds to the LATENCY query: its wait; but with `latency` automatic,
/// nothing in sequence order behind a pool that has measured its latency. There every frame
/// is pushed or announced lost by the pool, whose own latency covers the frames it
/// processes: frames in order leave at once, and waiting for a frame slower than the pool
/// announced delays the frames behind it (a live sink sees them late) rather than losing
/// it. Until the pool has delivered a frame its figure covers nothing, and the wait is
/// added (the pool's first delivery makes the pipeline ask again).
/// `known` is the window's mode, if the stream's first frame decided it (see
/// [`expected_mode`]).
fn own_latency(settings: &Settings, upstream: Upstream, known: Option<Mode>) -> u64 {
    let mode = expected_mode(settings, upstream, known);
    let covered = upstream.pools && upstream.measured;
    if settings.latency == DEFAULT_LATENCY && mode == Mode::Sequence && covered {
        0
    } else {
        wait(settings)
    }
}

/// The window's bounds: `max-window`, raised to how far out of order the pools upstream can
/// put frames (a smaller window would skip frames still being processed); deadlines at our
/// wait on top of upstream's latency.
fn window_config(settings: &Settings, upstream: Upstream, funnel: bool) -> Config {
    let needed = upstream.in_flight;
    // An ordered funnel not live bounds the window itself: its fast pads wait for room,
    // the lagging ones are always let in, and nothing is skipped for want of room.
    let unbounded = funnel && !upstream.live;
    Config {
        max_window: if unbounded {
            1 << 20
        } else {
            (settings.max_window as u64).max(needed).min(1 << 20) as usize
        },
        latency: wait(settings).saturating_add(upstream.min_latency),
        deadlines: upstream.live,
    }
}

/// The duration of a frame, from the caps' framerate.
fn frame_duration_of(caps: &gst::CapsRef) -> Option<u64> {
    caps.structure(0)
        .and_then(|s| s.get::<gst::Fraction>("framerate").ok())
        .filter(|f| f.numer() > 0 && f.denom() > 0)
        .and_then(|f| {
            gst::ClockTime::SECOND
                .mul_div_floor(f.denom() as u64, f.numer() as u64)
                .map(|d| d.nseconds())
        })
}

/// The frame's place in the order, from its sequence meta (read once, by the chain) or its
/// PTS.
fn key_of(
    order_by: OrderBy,
    pts_epoch: u32,
    meta: Option<Result<SeqMeta, MalformedError>>,
    buffer: &gst::BufferRef,
) -> Result<FrameKey, String> {
    let seq = match order_by {
        OrderBy::Pts => None,
        OrderBy::Auto | OrderBy::Sequence => meta,
    };
    match (seq, order_by) {
        (Some(Ok(meta)), _) => Ok(FrameKey::Sequence {
            epoch: meta.epoch,
            seq: meta.seq,
        }),
        (Some(Err(err)), _) => Err(format!("malformed sequence meta: {err}")),
        (None, OrderBy::Sequence) => Err("no sequence meta".into()),
        (None, _) => buffer
            .pts()
            .map(|pts| FrameKey::Pts {
                epoch: pts_epoch,
                pts: pts.nseconds(),
            })
            .ok_or_else(|| "neither sequence meta nor PTS".into()),
    }
}

fn stats_structure(stats: Stats, latencies: &Latencies, window: usize) -> gst::Structure {
    let [p50, p99] = latencies.percentiles([50, 99]);
    gst::Structure::builder("resequencer-stats")
        .field("in", stats.received)
        .field("pushed", stats.pushed)
        .field("reordered", stats.reordered)
        .field("skipped", stats.skipped)
        .field("late", stats.late)
        .field("duplicates", stats.duplicates)
        .field("gaps", stats.gaps)
        .field("stale-gaps", stats.stale_gaps)
        .field("invalid", stats.invalid)
        .field("flushed", stats.flushed)
        .field("restarts", stats.restarts)
        .field("depth", stats.depth)
        .field("max-depth", stats.max_depth)
        .field("window", window as u64)
        .field("max-hold", stats.max_hold)
        .field("latency-p50", p50)
        .field("latency-p99", p99)
        .field("latency-max", latencies.max())
        .build()
}

pub struct Resequencer {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    settings: Mutex<Settings>,
    state: Mutex<State>,
    cond: Condvar,
    /// End-to-end latency of pushed frames: from `OrderedSeqMeta`'s ingress to the push.
    latencies: Mutex<Latencies>,
    /// Copies of what the state knows of upstream, for the chain to read without the lock:
    /// whether upstream was asked (live, latency, in-flight) since the last start or flush,
    /// and whether it is live.
    upstream_known: AtomicBool,
    upstream_live: AtomicBool,
    /// The sticky events of the request pad whose frame went out last.
    last_sticky: Mutex<Option<Arc<Vec<gst::Event>>>>,
}

impl Resequencer {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn stats(&self) -> gst::Structure {
        let max_window = self.settings().max_window as usize;
        let (stats, window) = {
            let state = self.state();
            let mut window = state.window.config().max_window;
            let live = state.upstream.is_some_and(|u| u.live);
            if !state.inputs.is_empty() && !live {
                // Request pads not live: the window is bounded by the pads' waits.
                window = window.min(max_window);
            }
            (state.window.stats(), window)
        };
        stats_structure(stats, &lock(&self.latencies), window)
    }

    /// Records how long a frame took from the pool's sink pad to its push at `now`.
    fn record_latency(&self, ingress: Option<u64>, now: Option<u64>) {
        if let (Some(ingress), Some(now)) = (ingress, now)
            && now >= ingress
        {
            lock(&self.latencies).record(now - ingress);
        }
    }

    fn settings(&self) -> Settings {
        *lock(&self.settings)
    }

    /// What this element adds to the LATENCY query now (see [`own_latency`]); remembered,
    /// so that a change (the stream's first frame deciding `order-by=auto`) is announced.
    fn own_latency(&self) -> u64 {
        let settings = self.settings();
        let mut state = self.state();
        let own = own_latency(
            &settings,
            state.upstream.unwrap_or_default(),
            state.window.mode(),
        );
        state.reported_own = Some(own);
        own
    }

    fn now(&self) -> Option<u64> {
        self.obj().current_running_time().map(|t| t.nseconds())
    }

    /// Asks upstream whether it is live, how late its frames are, and how far out of order
    /// its pools can put frames; once per start/flush each (a LATENCY query from downstream
    /// may have answered the first two already).
    fn ensure_upstream(&self) {
        let (known, asked_in_flight) = {
            let state = self.state();
            (state.upstream.is_some(), state.asked_in_flight)
        };
        if known && asked_in_flight {
            return;
        }
        let latency = (!known).then(|| {
            self.upstream_latency()
                .map(|(live, min, _)| (live, min.nseconds()))
        });
        let in_flight = (!asked_in_flight).then(|| self.ask_in_flight());
        self.update_upstream(
            |upstream| {
                if let Some(Some((live, min))) = latency {
                    upstream.live = live;
                    upstream.min_latency = min;
                }
                if let Some(in_flight) = in_flight {
                    in_flight.apply(upstream);
                }
            },
            in_flight.is_some(),
        );
    }

    /// Clears the chain's copies of what is known of upstream (a flush or a start made the
    /// state forget it): the next frame asks again.
    fn forget_upstream(&self) {
        self.upstream_known.store(false, Ordering::Release);
        self.upstream_live.store(false, Ordering::Release);
    }

    /// Asks the pools upstream how far out of order they can put frames, and whether their
    /// latency is measured yet.
    fn ask_in_flight(&self) -> InFlight {
        // Every branch's pools: their disorder adds up, each must have measured.
        let mut answer = InFlight {
            pools: false,
            frames: 0,
            measured: true,
        };
        for pad in self.upstream_pads() {
            let mut query = InFlightQuery::query();
            if pad.peer_query(&mut query) {
                answer.pools = true;
                answer.frames += InFlightQuery::frames(&query).unwrap_or(0);
                answer.measured &= InFlightQuery::measured(&query);
            }
        }
        answer.measured &= answer.pools;
        answer
    }

    /// Changes what is known of upstream (under the lock: answers that come meanwhile are
    /// not lost), then applies it to the window.
    fn update_upstream(&self, change: impl FnOnce(&mut Upstream), asked_in_flight: bool) {
        let mut state = self.state();
        let mut upstream = state.upstream.unwrap_or_default();
        change(&mut upstream);
        state.asked_in_flight |= asked_in_flight;
        state.upstream = Some(upstream);
        self.upstream_live.store(upstream.live, Ordering::Release);
        self.upstream_known
            .store(state.asked_in_flight, Ordering::Release);
        gst::debug!(CAT, imp = self, "upstream: {upstream:?}");
        drop(state);
        self.reconfigure();
    }

    /// Applies the settings and what is known of upstream to the window.
    fn reconfigure(&self) {
        let settings = self.settings();
        let mut state = self.state();
        let upstream = state.upstream.unwrap_or_default();
        let funnel = !state.inputs.is_empty();
        let config = window_config(&settings, upstream, funnel);
        state.window.set_config(config);
        state.wake_task(&self.cond);
        // Request pads waiting for room see the new bound.
        state.wake_chain(&self.cond);
        let raised = !funnel && config.max_window > settings.max_window as usize;
        if raised && !state.warned_window {
            state.warned_window = true;
            drop(state);
            gst::element_imp_warning!(
                self,
                gst::CoreError::Negotiation,
                (
                    "max-window={} is smaller than the {} frames the pools upstream can put out \
                     of order; holding up to {} frames instead, so that frames still being \
                     processed are not skipped",
                    settings.max_window,
                    upstream.in_flight,
                    config.max_window
                ),
                ["raise max-window, or lower the pools' max-size-buffers"]
            );
        }
    }

    fn sink_chain(
        &self,
        pad: &gst::Pad,
        buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let funnel = pad != &self.sinkpad;
        let settings = self.settings();
        let order_by = settings.order_by;
        if !self.upstream_known.load(Ordering::Acquire) {
            self.ensure_upstream();
        }
        // The meta is read once, here; the clock only when something needs it: deadlines
        // (live) or the latency figures (a frame stamped with its ingress).
        let meta = SeqMeta::read(&buffer);
        let ingress = match &meta {
            Some(Ok(m)) if m.ingress > 0 => Some(m.ingress),
            _ => None,
        };
        let clocked = ingress.is_some() || self.upstream_live.load(Ordering::Acquire);
        let mut now = if clocked { self.now() } else { None };

        let mut state = self.state();
        if now.is_none() && state.window.depth() > 0 {
            // Frames are held: this one may be too, and `max-hold` times holds.
            drop(state);
            now = self.now();
            state = self.state();
        }
        if state.flushing {
            return Err(gst::FlowError::Flushing);
        }
        state.flow?;
        if state.eos {
            return Err(gst::FlowError::Eos);
        }
        let pts_epoch = if funnel {
            let Some(input) = state.input(pad) else {
                // Released meanwhile.
                return Err(gst::FlowError::Flushing);
            };
            if input.flushing {
                return Err(gst::FlowError::Flushing);
            }
            if input.eos {
                return Err(gst::FlowError::Eos);
            }
            input.pts_epoch
        } else {
            state.pts_epoch
        };
        let key = key_of(order_by, pts_epoch, meta, &buffer);
        let key = match key {
            Ok(key) => key,
            Err(reason) => {
                state.window.count_invalid();
                if !state.warned_malformed {
                    state.warned_malformed = true;
                    drop(state);
                    gst::element_imp_warning!(
                        self,
                        gst::StreamError::Format,
                        ("Dropping frames that cannot be ordered: {}", reason),
                        ["counted in stats as `invalid`; this warning is posted once"]
                    );
                }
                gst::debug!(CAT, imp = self, "dropping {buffer:?}: {reason}");
                return Ok(gst::FlowSuccess::Ok);
            }
        };
        let pts = buffer.pts();
        let (frame_duration, running_time, sticky) = match state.input(pad).filter(|_| funnel) {
            Some(input) => (
                input.frame_duration,
                input.segment.to_running_time(pts),
                Some(input.sticky.clone()),
            ),
            None => (
                state.frame_duration,
                state.in_segment.to_running_time(pts),
                None,
            ),
        };
        let timing = Timing {
            pts: pts.map(|t| t.nseconds()),
            duration: buffer.duration().map(|t| t.nseconds()).or(frame_duration),
            running_time: running_time.map(|t| t.nseconds()),
        };
        if funnel {
            let waited;
            (state, waited) = self.admit(state, pad, key, &settings)?;
            if clocked && waited {
                // It waited: its hold starts now (the clock is not read under the lock).
                drop(state);
                now = self.now();
                state = self.state();
                if state.flushing {
                    return Err(gst::FlowError::Flushing);
                }
            }
        }

        let mut item = Held {
            buffer,
            ingress,
            sticky,
        };
        loop {
            match state.window.push(key, timing, item, now) {
                Arrival::Accepted => {
                    if funnel && let Some(input) = state.input(pad) {
                        input.quiet = false;
                        let (epoch, k) = match key {
                            FrameKey::Sequence { epoch, seq } => (epoch, seq),
                            FrameKey::Pts { epoch, pts } => (epoch, pts),
                        };
                        input.last = Some(input.last.map_or((epoch, k), |l| l.max((epoch, k))));
                        state.settle(self.sinkpad.is_linked(), &self.cond);
                    }
                    let restarts = state.window.stats().restarts;
                    let warn = restarts > state.restarts_warned;
                    state.restarts_warned = restarts;
                    // The stream's first frame decided the mode: what this element adds to
                    // the pipeline's latency follows it.
                    let mut latency_moved = false;
                    let mode = state.window.mode();
                    if mode != state.announced_mode {
                        state.announced_mode = mode;
                        let own = own_latency(&settings, state.upstream.unwrap_or_default(), mode);
                        latency_moved = state.reported_own.is_some_and(|r| r != own);
                    }
                    // The fast path: with the task idle (waiting on the condition variable,
                    // not on a deadline), this thread pushes what is due itself — no
                    // hand-off, no wake-up. Not in a live stream: there a synced sink holds
                    // a push until its running time, and the thread that called this chain
                    // (a worker of a pool shared with other streams, a live source) must not
                    // wait on the clock for it.
                    let live = self.upstream_live.load(Ordering::Acquire);
                    let (mut state, res) = if !live
                        && state.task_waiting
                        && !state.chain_pushing
                        && state.flow.is_ok()
                    {
                        self.push_from_chain(state, now, clocked)
                    } else {
                        state.wake_task(&self.cond);
                        let res = state.flow;
                        (state, res)
                    };
                    if now.is_none() && state.window.depth() > 0 {
                        // This frame came into an empty window unclocked and is held: its
                        // hold starts now (a few µs late), for `max-hold`.
                        drop(state);
                        let arrived = self.now();
                        state = self.state();
                        if let Some(arrived) = arrived {
                            state.window.stamp_arrivals(arrived);
                        }
                    }
                    drop(state);
                    if warn {
                        self.warn_restart(key);
                    }
                    if latency_moved {
                        let _ = self.obj().post_message(
                            gst::message::Latency::builder().src(&*self.obj()).build(),
                        );
                    }
                    return res;
                }
                Arrival::Rejected { item, reason } => {
                    gst::debug!(CAT, imp = self, "dropping {key:?} {item:?}: {reason:?}");
                    return Ok(gst::FlowSuccess::Ok);
                }
                Arrival::Blocked(back) => {
                    item = back;
                    state = self.wait_for_room(state)?;
                }
            }
        }
    }

    /// With request pads: waits until a frame of `pad` may go into the window. A frame of a
    /// later segment waits for the other pads to reach it; not live, a full window lets in
    /// only the pads the others wait for (backpressure on the fast ones, never a skip).
    ///
    /// A wait that sees nothing move for [`FUNNEL_PATIENCE`] (or `latency`, if longer: the
    /// slow pads' branches may be starved, `roundrobin` waiting on this very pad) lifts the
    /// bound until the pads move again: the window grows, nothing is skipped. Up to
    /// [`funnel_cap`]: there the pads that still have not moved are passed over (quiet):
    /// their missing frames become skips, what they bring later is late.
    fn admit<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        pad: &gst::Pad,
        key: FrameKey,
        settings: &Settings,
    ) -> Result<(MutexGuard<'a, State>, bool), gst::FlowError> {
        let always_linked = self.sinkpad.is_linked();
        let patience = FUNNEL_PATIENCE.max(Duration::from_nanos(wait(settings)));
        let cap = funnel_cap(settings);
        let mut waited_at_all = false;
        let mut since = (Instant::now(), state.frontier(always_linked));
        loop {
            let frontier = state.frontier(always_linked);
            let lifted = state.lifted == Some(frontier);
            // Frames of a later segment (PTS: a later key epoch; sequence: the pool upstream
            // starts a new epoch there) wait for the other pads to be done with this one.
            let epoch = state.input(pad).map_or(0, |i| i.pts_epoch);
            let later_segment = funnel::behind_epoch(&state.inputs, pad, epoch);
            let live = self.upstream_live.load(Ordering::Acquire);
            let pts = matches!(key, FrameKey::Pts { .. });
            let full = !live
                && state.window.depth() >= settings.max_window as usize
                && !funnel::lagging(&state.inputs, pad, pts);
            if lifted && !later_segment && state.window.depth() >= cap {
                // Lifted, and still nothing from them: the pads holding the others up are
                // passed over, their holes settled.
                let pts_order = state.window.mode() == Some(Mode::Pts);
                let quiet: Vec<gst::Pad> = state
                    .inputs
                    .iter()
                    .filter(|i| {
                        i.open() && !i.quiet && &i.pad != pad && i.progress(pts_order) == frontier
                    })
                    .map(|i| i.pad.clone())
                    .collect();
                if !quiet.is_empty() {
                    gst::warning!(
                        CAT,
                        imp = self,
                        "{} frames held and nothing from {:?}: passing over them",
                        cap,
                        quiet.iter().map(|p| p.name()).collect::<Vec<_>>()
                    );
                    for input in state.inputs.iter_mut().filter(|i| quiet.contains(&i.pad)) {
                        input.quiet = true;
                    }
                    state.settle(always_linked, &self.cond);
                    continue;
                }
            }
            // A later segment always waits: its frames would end the current one.
            if !later_segment && (lifted || !full) {
                return Ok((state, waited_at_all));
            }
            if since.1 != frontier {
                since = (Instant::now(), frontier);
            }
            let waited = since.0.elapsed();
            if waited >= patience && !later_segment {
                gst::debug!(
                    CAT,
                    imp = self,
                    "{}: nothing moved for {waited:?}: letting it in over max-window",
                    pad.name()
                );
                state.lifted = Some(frontier);
                continue;
            }
            waited_at_all = true;
            let limit = if later_segment {
                Duration::MAX
            } else {
                patience.saturating_sub(waited)
            };
            state = self.wait_for_room_within(state, limit)?;
            match state.input(pad) {
                None => return Err(gst::FlowError::Flushing),
                Some(input) if input.flushing => return Err(gst::FlowError::Flushing),
                Some(input) if input.eos => return Err(gst::FlowError::Eos),
                Some(_) => {}
            }
        }
    }

    /// The fast path of the chain: pushes every output that is due now (the frame that just
    /// came, and what it released) from the streaming thread, as the task would. One pusher
    /// at a time all the same: the task is idle and does not pop while `chain_pushing` is
    /// set. What is left for a deadline is handed to the task.
    fn push_from_chain<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        mut now: Option<u64>,
        clocked: bool,
    ) -> (
        MutexGuard<'a, State>,
        Result<gst::FlowSuccess, gst::FlowError>,
    ) {
        state.chain_pushing = true;
        let mut res = Ok(gst::FlowSuccess::Ok);
        while !state.flushing {
            match state.window.pop(now) {
                None => break,
                Some(Output::Event(Serial::Query(id))) if state.abandon(id) => {}
                Some(Output::Event(Serial::Query(id))) => {
                    // A serialized query comes on this very thread, so none can be waiting
                    // here; were one to (an upstream breaking that rule), it gets its turn.
                    state = self.give_turn(state, id);
                }
                Some(output) => {
                    // Room was made: request pads waiting for it look again.
                    state.wake_chain(&self.cond);
                    drop(state);
                    let pushed = self.push_output(output, now);
                    // The clock is read again only after a push, which can take time (the
                    // frame that came was accepted at `now`), and only if it is needed.
                    if clocked {
                        now = self.now();
                    }
                    state = self.state();
                    if let Err(err) = pushed {
                        // No EOS was received (the chain would have refused the frame), so
                        // upstream sees the error in the return: nothing to post.
                        let _ = self.flow_failed(&mut state, err);
                        res = Err(err);
                        break;
                    }
                }
            }
        }
        state.chain_pushing = false;
        if res.is_ok() && state.flushing {
            res = Err(gst::FlowError::Flushing);
        }
        // A frame held for a missing one waits for its deadline on the task; a failed push
        // pauses the task.
        if state.window.next_deadline().is_some() || state.flow.is_err() {
            state.wake_task(&self.cond);
        }
        (state, res)
    }

    /// Query `id` is next in the stream: lets its caller answer it (in `sink_query`) and
    /// waits until it has, or a flush ends the wait.
    fn give_turn<'a>(&'a self, mut state: MutexGuard<'a, State>, id: u64) -> MutexGuard<'a, State> {
        state.query_turn = Some(id);
        self.cond.notify_all();
        while state.query_turn == Some(id) && !state.flushing {
            state = self.cond.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state
    }

    fn warn_restart(&self, key: FrameKey) {
        gst::element_imp_warning!(
            self,
            gst::StreamError::Format,
            (
                "The stream started over at {:?} without a flush (an upstream pool restarted?): \
                 ordering it as a new stream",
                key
            ),
            ["counted in stats as `restarts`"]
        );
    }

    /// Lets the task take outputs until the window has room, or the element stops.
    fn wait_for_room<'a>(
        &'a self,
        state: MutexGuard<'a, State>,
    ) -> Result<MutexGuard<'a, State>, gst::FlowError> {
        self.wait_for_room_within(state, Duration::MAX)
    }

    /// As [`Self::wait_for_room`], at most `limit`.
    fn wait_for_room_within<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        limit: Duration,
    ) -> Result<MutexGuard<'a, State>, gst::FlowError> {
        // A task stopped by a flow error makes no room: return the error instead.
        if state.flushing {
            return Err(gst::FlowError::Flushing);
        }
        state.flow?;
        state.wake_task(&self.cond);
        state.chains_waiting += 1;
        state = if limit == Duration::MAX {
            self.cond.wait(state).unwrap_or_else(|e| e.into_inner())
        } else {
            self.cond
                .wait_timeout(state, limit)
                .map(|(s, _)| s)
                .unwrap_or_else(|e| e.into_inner().0)
        };
        state.chains_waiting -= 1;
        if state.flushing {
            return Err(gst::FlowError::Flushing);
        }
        state.flow?;
        Ok(state)
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        use gst::EventView;

        gst::log!(CAT, obj = pad, "handling {event:?}");
        if pad != &self.sinkpad {
            return self.funnel_event(pad, event);
        }
        match event.view() {
            EventView::Eos(_) if !self.state().inputs.is_empty() => {
                // With request pads, EOS goes once every pad is at EOS.
                let mut state = self.state();
                state.always_eos = true;
                let all = state.all_eos(true);
                state.settle(true, &self.cond);
                if !all {
                    return true;
                }
            }
            EventView::FlushStart(_) => {
                {
                    let mut state = self.state();
                    state.flushing = true;
                    state.wake_task(&self.cond);
                    state.wake_chain(&self.cond);
                    // A streaming thread waiting for its query's turn gives up.
                    self.cond.notify_all();
                }
                let res = self.srcpad.push_event(event);
                // Returns once the task has left its loop: nothing it pushes after this.
                if let Err(err) = self.srcpad.pause_task() {
                    gst::warning!(CAT, imp = self, "could not pause task: {err}");
                }
                return res;
            }
            EventView::FlushStop(_) => {
                {
                    let mut state = self.state();
                    let pending = state.reset_stream();
                    self.forget_upstream();
                    // Sticky events still queued describe the stream after the flush too.
                    for item in pending {
                        if let Serial::Event(event) = item
                            && event.is_sticky()
                            && !matches!(
                                event.type_(),
                                gst::EventType::Segment | gst::EventType::Eos
                            )
                        {
                            let _ = self.srcpad.store_sticky_event(&event);
                        }
                    }
                    state.flushing = false;
                }
                let res = self.srcpad.push_event(event);
                if self.srcpad.is_active() {
                    self.start_task();
                }
                return res;
            }
            EventView::CustomDownstream(_) => {
                if let Some(gap) = Gap::from_event(&event) {
                    return self.handle_gap(gap);
                }
            }
            EventView::Caps(caps) => {
                self.state().frame_duration = frame_duration_of(caps.caps());
            }
            EventView::StreamStart(_) => {
                let mut state = self.state();
                state.window.new_segment();
                if state.eos {
                    // A new stream after EOS (without a flush): the task, paused by EOS,
                    // starts again, and the window stops draining.
                    state.window.resume_after_finish();
                    state.eos = false;
                    state.always_eos = false;
                    state.error_posted = false;
                    if state.flow == Err(gst::FlowError::Eos) {
                        state.flow = Ok(gst::FlowSuccess::Ok);
                        drop(state);
                        if self.srcpad.is_active() {
                            self.start_task();
                        }
                    }
                }
            }
            EventView::Segment(segment) => {
                let Some(segment) = self.time_segment(segment.segment()) else {
                    return false;
                };
                let segment = &segment;
                let mut state = self.state();
                state.in_segment = segment.clone();
                // A segment that differs from the last one starts a new stream: PTS are not
                // compared across it, and a sequence may start over.
                if state.last_segment.as_ref() != Some(segment) {
                    if state.last_segment.is_some() {
                        state.pts_epoch = state.pts_epoch.wrapping_add(1);
                        state.window.new_segment();
                    }
                    let (epoch, start) =
                        (state.pts_epoch, segment.start().map_or(0, |s| s.nseconds()));
                    state.window.expect_first(epoch, start);
                    state.last_segment = Some(segment.clone());
                }
            }
            _ => {}
        }

        if !event.is_serialized() {
            return self.srcpad.push_event(event);
        }
        let mut state = self.state();
        if state.flushing {
            return false;
        }
        let is_eos = event.type_() == gst::EventType::Eos;
        if is_eos
            && let Err(err) = state.flow
            && !matches!(err, gst::FlowError::Flushing | gst::FlowError::Eos)
        {
            // Downstream failed before EOS came: upstream saw the error from the chain, but
            // nothing follows EOS to tell it again, and EOS will not be pushed. Posted once.
            let post = !state.error_posted;
            state.error_posted = true;
            drop(state);
            if post {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Failed,
                    ("Internal data stream error."),
                    ["streaming stopped, reason {:?}", err]
                );
            }
            return false;
        }
        state.window.push_event(Serial::Event(event));
        if is_eos {
            state.window.finish();
            state.eos = true;
            // With request pads, the next stream's first STREAM_START goes out again.
            state.funnel_started = false;
        }
        state.wake_task(&self.cond);
        true
    }

    /// An event on a request pad (see `funnel`): flushes once every flushing pad is done,
    /// one STREAM_START, EOS once every pad is at EOS; sticky events kept with the pad's
    /// frames, the others queued among the frames as on the always pad.
    fn funnel_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        use gst::EventView;

        let always_linked = self.sinkpad.is_linked();
        match event.view() {
            EventView::FlushStart(_) => {
                let first = {
                    let mut state = self.state();
                    if let Some(input) = state.input(pad) {
                        input.flushing = true;
                    }
                    !state.flushing
                };
                self.cond.notify_all();
                return if first {
                    self.sink_event(&self.sinkpad, event)
                } else {
                    true
                };
            }
            EventView::FlushStop(_) => {
                let last = {
                    let mut state = self.state();
                    if let Some(input) = state.input(pad) {
                        input.flushing = false;
                    }
                    state.inputs.iter().all(|i| !i.flushing)
                };
                if !last {
                    return true;
                }
                *lock(&self.last_sticky) = None;
                return self.sink_event(&self.sinkpad, event);
            }
            EventView::StreamStart(_) => {
                let first = !std::mem::replace(&mut self.state().funnel_started, true);
                if let Some(input) = self.state().input(pad) {
                    input.eos = false;
                }
                return !first || self.sink_event(&self.sinkpad, event);
            }
            EventView::Caps(caps) => {
                let duration = frame_duration_of(caps.caps());
                let mut state = self.state();
                if let Some(input) = state.input(pad) {
                    input.frame_duration = duration;
                    input.store_sticky(&event);
                }
                return true;
            }
            EventView::Segment(segment) => {
                let Some(segment) = self.time_segment(segment.segment()) else {
                    return false;
                };
                let segment = &segment;
                let mut state = self.state();
                let Some(input) = state.input(pad) else {
                    return false;
                };
                input.segment = segment.clone();
                input.store_sticky(&event);
                let mut announce = None;
                if input.last_segment.as_ref() != Some(segment) {
                    if input.last_segment.is_some() {
                        input.pts_epoch = input.pts_epoch.wrapping_add(1);
                    }
                    input.last_segment = Some(segment.clone());
                    announce = Some(input.pts_epoch);
                }
                // The first pad into a segment tells the window where it starts.
                if let Some(epoch) = announce
                    && (state.last_segment.is_none() || epoch > state.pts_epoch)
                {
                    if state.last_segment.is_some() {
                        state.window.new_segment();
                    }
                    state.pts_epoch = epoch;
                    state.last_segment = Some(segment.clone());
                    state
                        .window
                        .expect_first(epoch, segment.start().map_or(0, |s| s.nseconds()));
                }
                // Pads waiting for the others to reach this segment look again.
                state.settle(always_linked, &self.cond);
                return true;
            }
            EventView::Eos(_) => {
                let all = {
                    let mut state = self.state();
                    if let Some(input) = state.input(pad) {
                        input.eos = true;
                    }
                    state.settle(always_linked, &self.cond);
                    state.all_eos(always_linked)
                };
                return !all || self.sink_event(&self.sinkpad, event);
            }
            _ => {}
        }
        if event.is_sticky() && event.is_serialized() {
            if let Some(input) = self.state().input(pad) {
                input.store_sticky(&event);
            }
            return true;
        }
        self.sink_event(&self.sinkpad, event)
    }

    /// A segment in time format; any other is an error (posted).
    fn time_segment(
        &self,
        segment: &gst::Segment,
    ) -> Option<gst::FormattedSegment<gst::ClockTime>> {
        let time = segment.downcast_ref::<gst::ClockTime>().cloned();
        if time.is_none() {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                (
                    "Only segments in time format can be ordered, got {:?}",
                    segment.format()
                )
            );
        }
        time
    }

    fn handle_gap(&self, gap: Result<Gap, crate::meta::MalformedError>) -> bool {
        let gap = match gap {
            Ok(gap) => gap,
            Err(err) => {
                gst::element_imp_warning!(
                    self,
                    gst::StreamError::Format,
                    ("Ignoring a malformed ordered-gap event: {}", err)
                );
                return true;
            }
        };
        let mut state = self.state();
        loop {
            if state.flushing {
                return false;
            }
            match state.window.gap(gap.epoch, gap.seq, gap.count) {
                GapArrival::Recorded => {
                    gst::debug!(CAT, imp = self, "gap recorded: {gap:?}");
                    if state.gap_reasons.len() == GAP_REASONS {
                        state.gap_reasons.pop_front();
                    }
                    state.gap_reasons.push_back((
                        gap.epoch,
                        gap.seq,
                        gap.seq + gap.count,
                        gap.reason,
                    ));
                    state.wake_task(&self.cond);
                    return true;
                }
                GapArrival::Stale => {
                    gst::debug!(CAT, imp = self, "stale gap: {gap:?}");
                    return true;
                }
                GapArrival::Blocked => match self.wait_for_room(state) {
                    Ok(s) => state = s,
                    Err(_) => return false,
                },
            }
        }
    }

    fn sink_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        gst::log!(CAT, obj = pad, "handling {query:?}");
        // A request pad's serialized queries are answered at once, as `funnel` does: one
        // queued among the frames would settle the other pads' holes before it.
        if !query.is_serialized() || pad != &self.sinkpad {
            return gst::Pad::query_default(pad, Some(&*self.obj()), query);
        }
        // In its place behind the frames before it: wait for the task to get there.
        let mut state = self.state();
        if state.flushing || state.flow.is_err() {
            return false;
        }
        let id = state.next_query;
        state.next_query += 1;
        state.window.push_drain(Serial::Query(id));
        state.wake_task(&self.cond);
        while state.query_turn != Some(id) {
            // A task stopped by a flow error never gets to the query; whoever pops it
            // later (after a RECONFIGURE) skips it.
            if state.flushing || state.flow.is_err() {
                state.abandoned_queries.push(id);
                return false;
            }
            state = self.cond.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        drop(state);
        let answered = gst::Pad::query_default(pad, Some(&*self.obj()), query);
        let mut state = self.state();
        if state.query_turn == Some(id) {
            state.query_turn = None;
        }
        self.cond.notify_all();
        answered
    }

    fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        if let gst::QueryViewMut::Latency(q) = query.view_mut() {
            let Some((live, min, max)) = self.upstream_latency() else {
                return false;
            };
            // Asked again each time: whether the pools upstream have measured their latency
            // yet decides what `latency` automatic adds.
            let in_flight = self.ask_in_flight();
            self.update_upstream(
                |upstream| {
                    upstream.live = live;
                    upstream.min_latency = min.nseconds();
                    // A query that got no answer (upstream being relinked) keeps the last.
                    if in_flight.pools {
                        in_flight.apply(upstream);
                    }
                },
                true,
            );
            let ours = gst::ClockTime::from_nseconds(self.own_latency());
            let (min, max) = (
                min.saturating_add(ours),
                max.map(|max| max.saturating_add(ours)),
            );
            q.set(live, min, max);
            gst::debug!(
                CAT,
                imp = self,
                "latency: live {live}, min {min}, max {max:?}"
            );
            return true;
        }
        if InFlightQuery::frames(query).is_some() {
            // Frames leave here in order: nothing downstream needs a window for upstream's.
            return true;
        }
        gst::Pad::query_default(pad, Some(&*self.obj()), query)
    }

    fn src_event(&self, event: gst::Event) -> bool {
        if event.type_() == gst::EventType::Reconfigure {
            // Downstream may be linked now: the task tries again.
            let restart = {
                let mut state = self.state();
                let restart = state.flow == Err(gst::FlowError::NotLinked) && !state.flushing;
                if restart {
                    state.flow = Ok(gst::FlowSuccess::Ok);
                }
                restart
            };
            if restart {
                self.start_task();
            }
        }
        let pads = self.upstream_pads();
        if let [only] = pads.as_slice() {
            return only.push_event(event);
        }
        // Upstream of every branch, as `funnel` does.
        let mut sent = false;
        for pad in pads {
            sent |= pad.push_event(event.clone());
        }
        sent
    }

    /// The sink pads frames come from: the always one and the request ones that are linked
    /// (the always one alone when nothing is).
    fn upstream_pads(&self) -> Vec<gst::Pad> {
        let mut pads: Vec<gst::Pad> = self
            .obj()
            .sink_pads()
            .into_iter()
            .filter(|p| p.is_linked())
            .collect();
        if pads.is_empty() {
            pads.push(self.sinkpad.clone());
        }
        pads
    }

    /// Asks upstream of every sink pad: live if any is, the largest minimum and the smallest
    /// maximum (as `funnel`'s default handling does).
    fn upstream_latency(&self) -> Option<(bool, gst::ClockTime, Option<gst::ClockTime>)> {
        let mut answer: Option<(bool, gst::ClockTime, Option<gst::ClockTime>)> = None;
        for pad in self.upstream_pads() {
            let mut query = gst::query::Latency::new();
            if !pad.peer_query(&mut query) {
                continue;
            }
            let (live, min, max) = query.result();
            answer = Some(match answer {
                None => (live, min, max),
                Some((l, mi, ma)) => (
                    l || live,
                    mi.max(min),
                    match (ma, max) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    },
                ),
            });
        }
        answer
    }

    fn start_task(&self) {
        let this = self.downgrade();
        let res = self.srcpad.start_task(move || {
            let Some(this) = this.upgrade() else { return };
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| this.task_loop()));
            if outcome.is_err() {
                gst::element_imp_error!(
                    this,
                    gst::CoreError::Failed,
                    ("Panic in the resequencer task")
                );
                let mut state = this.state();
                state.flow = Err(gst::FlowError::Error);
                this.cond.notify_all();
                drop(state);
                let _ = this.srcpad.pause_task();
            }
        });
        if let Err(err) = res {
            gst::element_imp_error!(
                self,
                gst::CoreError::Failed,
                ("Failed to start task: {}", err)
            );
        }
    }

    /// One run of the src pad task: push every due output, then wait for more.
    fn task_loop(&self) {
        let mut state = self.state();
        loop {
            if state.flushing || state.flow.is_err() {
                drop(state);
                let _ = self.srcpad.pause_task();
                // A RECONFIGURE or a new stream may have cleared the error meanwhile, its
                // start_task finding the task still running: then it goes on.
                let state = self.state();
                if !state.flushing && state.flow.is_ok() && self.srcpad.is_active() {
                    drop(state);
                    self.start_task();
                }
                return;
            }
            if state.chain_pushing {
                // The streaming thread is pushing (the fast path): one pusher at a time.
                state.task_waiting = true;
                state = self.cond.wait(state).unwrap_or_else(|e| e.into_inner());
                state.task_waiting = false;
                continue;
            }
            let now = self.now();
            match state.window.pop(now) {
                Some(Output::Event(Serial::Query(id))) if state.abandon(id) => {}
                Some(Output::Event(Serial::Query(id))) => {
                    // The streaming thread answers it; nothing is pushed meanwhile.
                    state = self.give_turn(state, id);
                }
                Some(output) => {
                    state.wake_chain(&self.cond);
                    drop(state);
                    let res = self.push_output(output, now);
                    state = self.state();
                    if let Err(err) = res {
                        let failure = self.flow_failed(&mut state, err);
                        if let Failure::Post(err) = failure {
                            drop(state);
                            gst::element_imp_error!(
                                self,
                                gst::StreamError::Failed,
                                ("Internal data stream error."),
                                ["streaming stopped, reason {:?}", err]
                            );
                            let _ = self.srcpad.push_event(gst::event::Eos::new());
                            state = self.state();
                        }
                    }
                }
                None => state = self.wait_for_work(state),
            }
        }
    }

    fn wait_for_work<'a>(&'a self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let deadline = state.window.next_deadline();
        let obj = self.obj();
        let clock = obj.clock().filter(|_| state.playing);
        match (deadline, clock, obj.base_time()) {
            (Some(deadline), Some(clock), Some(base_time)) => {
                let at = base_time + gst::ClockTime::from_nseconds(deadline);
                let id = clock.new_single_shot_id(at);
                gst::trace!(CAT, imp = self, "waiting for deadline {at}");
                state.clock_wait = Some(id.clone());
                drop(state);
                let _ = id.wait();
                let mut state = self.state();
                state.clock_wait = None;
                state
            }
            _ => {
                state.task_waiting = true;
                let mut state = self.cond.wait(state).unwrap_or_else(|e| e.into_inner());
                state.task_waiting = false;
                state
            }
        }
    }

    fn push_output(
        &self,
        output: Output<Held, Serial>,
        now: Option<u64>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        match output {
            Output::Frame {
                item:
                    Held {
                        mut buffer,
                        ingress,
                        sticky,
                    },
                discont,
            } => {
                if let Some(sticky) = sticky {
                    self.push_sticky(&sticky);
                }
                if discont {
                    buffer.make_mut().set_flags(gst::BufferFlags::DISCONT);
                }
                gst::trace!(CAT, imp = self, "pushing {buffer:?}");
                self.record_latency(ingress, now);
                self.srcpad.push(buffer)
            }
            Output::Skip(skip) => {
                self.push_gap(skip);
                Ok(gst::FlowSuccess::Ok)
            }
            Output::Event(Serial::Event(event)) => {
                let is_eos = event.type_() == gst::EventType::Eos;
                if is_eos && self.settings().stats_interval > 0 {
                    // Every frame before EOS has left: the last message covers the stream.
                    post_stats(&*self.obj(), self.stats());
                }
                if !self.srcpad.push_event(event) {
                    gst::debug!(CAT, imp = self, "downstream refused an event");
                }
                // A STREAM_START that came after this EOS began a new stream: it flows on.
                if is_eos && self.state().eos {
                    return Err(gst::FlowError::Eos);
                }
                Ok(gst::FlowSuccess::Ok)
            }
            Output::Event(Serial::Query(_)) => {
                unreachable!("queries are answered in the task loop")
            }
        }
    }

    /// Before a frame of a request pad: that pad's sticky events that did not go out last.
    fn push_sticky(&self, sticky: &Arc<Vec<gst::Event>>) {
        let events = {
            let mut last = lock(&self.last_sticky);
            if last.as_ref().is_some_and(|l| Arc::ptr_eq(l, sticky)) {
                return;
            }
            let events =
                funnel::sticky_to_push(&self.srcpad, sticky, last.as_deref().map(|v| v.as_slice()));
            *last = Some(sticky.clone());
            events
        };
        for event in events {
            if !self.srcpad.push_event(event) {
                gst::debug!(CAT, imp = self, "downstream refused a sticky event");
            }
        }
    }

    fn push_gap(&self, skip: Skip) {
        gst::debug!(CAT, imp = self, "skipping {skip:?}");
        // A GAP needs the caps and segment before it: with request pads they go with the
        // next frame (a new segment's too), so there the skip is told by DISCONT alone.
        if !self.state().inputs.is_empty()
            || self.srcpad.sticky_event::<gst::event::Segment>(0).is_none()
        {
            return;
        }
        if let (Some(pts), Some(duration)) = (skip.pts, skip.duration) {
            // What was skipped rides along, for `metapublish`'s gap records.
            let reason = if skip.reason == SkipReason::Gap {
                self.state().gap_reason(&skip)
            } else {
                skip.reason.as_str()
            };
            let mut event = gst::event::Gap::builder(gst::ClockTime::from_nseconds(pts))
                .duration(gst::ClockTime::from_nseconds(duration))
                .other_field("ordered-count", skip.count)
                .other_field("ordered-reason", reason);
            if let (Some(seq), Some(epoch)) = (skip.first_seq, skip.epoch) {
                event = event
                    .other_field("ordered-seq", seq)
                    .other_field("ordered-epoch", epoch);
            }
            let event = event.build();
            self.srcpad.push_event(event);
        }
    }

    /// Records a failed push; says whether the error is to be posted (once), which is when
    /// upstream will not see it: EOS was already received. NOT_LINKED and the rest go back
    /// upstream through the chain, which posts nothing.
    fn flow_failed(&self, state: &mut State, err: gst::FlowError) -> Failure {
        gst::debug!(CAT, imp = self, "task pausing: {err:?}");
        state.flow = Err(err);
        // The chain waiting for room and a query waiting for its turn both give up.
        self.cond.notify_all();
        let fatal = !matches!(err, gst::FlowError::Flushing | gst::FlowError::Eos);
        if fatal && state.eos && !state.error_posted {
            state.error_posted = true;
            return Failure::Post(err);
        }
        Failure::Returned
    }

    fn src_activatemode(&self, mode: gst::PadMode, active: bool) -> Result<(), gst::LoggableError> {
        if mode != gst::PadMode::Push {
            return Err(gst::loggable_error!(CAT, "only push mode is supported"));
        }
        if active {
            {
                let mut state = self.state();
                state.flushing = false;
                state.flow = Ok(gst::FlowSuccess::Ok);
            }
            self.start_task();
        } else {
            {
                let mut state = self.state();
                state.flushing = true;
                state.wake_task(&self.cond);
                state.wake_chain(&self.cond);
                self.cond.notify_all();
            }
            self.srcpad
                .stop_task()
                .map_err(|err| gst::loggable_error!(CAT, "failed to stop task: {err}"))?;
        }
        Ok(())
    }

    fn restart_stats_timer(&self) {
        let mut state = self.state();
        // Read under the state lock: a concurrent change of stats-interval restarts the
        // timer after this, with its own value, and so has the last word.
        let interval = if state.running {
            self.settings().stats_interval
        } else {
            0
        };
        state
            .stats_timer
            .restart(&*self.obj(), interval, |e: &super::Resequencer| {
                e.imp().stats()
            });
    }

    fn stop_stats_timer(&self) {
        self.state().stats_timer.stop();
    }
}

/// A sink pad (the always one, or a request one named `name`) calling the element's
/// chain, event and query functions.
fn sink_pad(templ: &gst::PadTemplate, name: Option<String>) -> gst::Pad {
    let builder = gst::Pad::builder_from_template(templ);
    let builder = match name {
        Some(name) => builder.name(name),
        None => builder,
    };
    builder
        .chain_function(|pad, parent, buffer| {
            Resequencer::catch_panic_pad_function(
                parent,
                || Err(gst::FlowError::Error),
                |imp| imp.sink_chain(pad, buffer),
            )
        })
        .event_function(|pad, parent, event| {
            Resequencer::catch_panic_pad_function(
                parent,
                || false,
                |imp| imp.sink_event(pad, event),
            )
        })
        .query_function(|pad, parent, query| {
            Resequencer::catch_panic_pad_function(
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
        .build()
}

#[glib::object_subclass]
impl ObjectSubclass for Resequencer {
    const NAME: &'static str = "GstResequencer";
    type Type = super::Resequencer;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let templ = klass.pad_template("sink").expect("sink template");
        let sinkpad = sink_pad(&templ, None);

        let templ = klass.pad_template("src").expect("src template");
        let srcpad = gst::Pad::builder_from_template(&templ)
            .activatemode_function(|_pad, parent, mode, active| {
                Resequencer::catch_panic_pad_function(
                    parent,
                    || Err(gst::loggable_error!(CAT, "panic while activating")),
                    |imp| imp.src_activatemode(mode, active),
                )
            })
            .query_function(|pad, parent, query| {
                Resequencer::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.src_query(pad, query),
                )
            })
            .event_function(|_pad, parent, event| {
                Resequencer::catch_panic_pad_function(parent, || false, |imp| imp.src_event(event))
            })
            .flags(gst::PadFlags::PROXY_CAPS)
            .build();

        let settings = Settings::default();
        Resequencer {
            sinkpad,
            srcpad,
            state: Mutex::new(State::new(&settings)),
            settings: Mutex::new(settings),
            cond: Condvar::new(),
            latencies: Mutex::new(Latencies::default()),
            upstream_known: AtomicBool::new(false),
            upstream_live: AtomicBool::new(false),
            last_sticky: Mutex::new(None),
        }
    }
}

impl ObjectImpl for Resequencer {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecEnum::builder_with_default("order-by", DEFAULT_ORDER_BY)
                    .nick("Order by")
                    .blurb(
                        "What frames are ordered by: the OrderedSeqMeta sequence number (exact; \
                         holes are known) or the PTS (the next frame is known when PTS = last \
                         PTS + duration). auto picks per stream from the first frame",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("latency")
                    .nick("Latency")
                    .blurb(
                        "Live pipelines: how long a missing frame is waited for, in nanoseconds, \
                         counted from its expected running time (plus upstream latency); then \
                         it is skipped. Added to the LATENCY query. Not live, it only bounds \
                         (if above 200 ms) how long a request pad waits for room with nothing \
                         moving before the window takes frames over max-window. \
                         18446744073709551615 (GST_CLOCK_TIME_NONE) = automatic: a \
                         200 ms wait, added to the LATENCY query except in sequence order behind \
                         a pool that has measured its latency (it announces the frames it \
                         loses, and its latency covers the ones it processes): there frames in \
                         order leave with no delay of this element's, and one slower than the \
                         pool announced comes late rather than never",
                    )
                    .default_value(DEFAULT_LATENCY)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("max-window")
                    .nick("Maximum window")
                    .blurb(
                        "The most frames held, in frames. When a frame does not fit, the missing \
                         frames ahead of it are skipped; when none is missing, upstream waits. \
                         Raised (with a warning) to how far out of order the enrichpools \
                         upstream can put frames (their max-size-buffers), so that frames still \
                         being processed are not skipped; stats `window` tells the size in use. \
                         With request pads and not live: a full window makes the fast pads wait \
                         (the lagging ones are let in) and skips nothing",
                    )
                    .minimum(1)
                    .maximum(1 << 20)
                    .default_value(DEFAULT_MAX_WINDOW)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb(
                        "resequencer-stats: in, pushed, reordered, skipped, late, duplicates, \
                         gaps, stale-gaps, invalid, flushed, depth, max-depth, window (frames \
                         held at most now), restarts (streams that started over without a \
                         flush), max-hold (ns), latency-p50, latency-p99 (ns, over the last \
                         1024 frames) and latency-max (ns): end-to-end latency from \
                         OrderedSeqMeta's ingress to the push",
                    )
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("stats-interval")
                    .nick("Statistics interval")
                    .blurb(
                        "Post the stats structure as an element message every this many \
                         nanoseconds while running, and once more when EOS leaves (0 = never)",
                    )
                    .default_value(DEFAULT_STATS_INTERVAL)
                    .mutable_playing()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = lock(&self.settings);
        match pspec.name() {
            "order-by" => settings.order_by = value.get().expect("type checked upstream"),
            "latency" => {
                let latency = value.get().expect("type checked upstream");
                let changed = settings.latency != latency;
                settings.latency = latency;
                drop(settings);
                self.reconfigure();
                if changed {
                    // The pipeline asks every element again and distributes the new total.
                    let _ = self
                        .obj()
                        .post_message(gst::message::Latency::builder().src(&*self.obj()).build());
                }
            }
            "max-window" => {
                settings.max_window = value.get().expect("type checked upstream");
                drop(settings);
                self.reconfigure();
            }
            "stats-interval" => {
                settings.stats_interval = value.get().expect("type checked upstream");
                drop(settings);
                self.restart_stats_timer();
            }
            other => unreachable!("unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = self.settings();
        match pspec.name() {
            "order-by" => settings.order_by.to_value(),
            "latency" => settings.latency.to_value(),
            "max-window" => settings.max_window.to_value(),
            "stats" => self.stats().to_value(),
            "stats-interval" => settings.stats_interval.to_value(),
            other => unreachable!("unknown property {other}"),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_pad(&self.sinkpad).expect("new pad");
        obj.add_pad(&self.srcpad).expect("new pad");
    }
}

impl GstObjectImpl for Resequencer {}

impl ElementImpl for Resequencer {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Resequencer",
                "Generic",
                "Pushes frames that were processed in parallel strictly in their original \
                 order (OrderedSeqMeta sequence or PTS), skipping frames that will not come \
                 after a deadline, a gap notice or when the window is full. Request pads \
                 sink_%u take branches (after roundrobin), each in its own order: an ordered \
                 funnel, where not live a fast branch waits for the slow ones instead of \
                 skipping their frames",
                "gst-ordered developers",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let mut templates = crate::glue::always_pads(&gst::Caps::new_any());
            templates.push(funnel::template());
            templates
        });
        TEMPLATES.as_ref()
    }

    fn request_new_pad(
        &self,
        templ: &gst::PadTemplate,
        name: Option<&str>,
        _caps: Option<&gst::Caps>,
    ) -> Option<gst::Pad> {
        let obj = self.obj();
        let name = match name {
            Some(name) if obj.static_pad(name).is_some() => return None,
            Some(name) => name.to_string(),
            None => funnel::free_name(obj.upcast_ref()),
        };
        let pad = sink_pad(templ, Some(name));
        {
            let mut state = self.state();
            let mut input = Input::new(pad.clone());
            // Joining mid-stream: in the segment the others are in, not the first one.
            input.pts_epoch = state.pts_epoch;
            input.last_segment = state.last_segment.clone();
            state.inputs.push(input);
        }
        if obj.add_pad(&pad).is_err() {
            self.state().inputs.retain(|i| i.pad != pad);
            return None;
        }
        // Not live, the window is bounded by the pads' backpressure from now on.
        self.reconfigure();
        Some(pad)
    }

    fn release_pad(&self, pad: &gst::Pad) {
        let always_linked = self.sinkpad.is_linked();
        let (eos_now, flush_done) = {
            let mut state = self.state();
            let before = state.inputs.len();
            let was_flushing = state.inputs.iter().any(|i| &i.pad == pad && i.flushing);
            state.inputs.retain(|i| &i.pad != pad);
            let released = state.inputs.len() < before;
            // The others stopped flushing and waited for this one.
            let flush_done =
                was_flushing && state.flushing && state.inputs.iter().all(|i| !i.flushing);
            let released = released && !flush_done;
            // The pads left were all waiting for this one's EOS.
            let eos_now = released
                && state.running
                && !state.eos
                && !state.inputs.is_empty()
                && state.all_eos(always_linked);
            state.settle(always_linked, &self.cond);
            (eos_now, flush_done)
        };
        let _ = pad.set_active(false);
        let _ = self.obj().remove_pad(pad);
        if flush_done {
            *lock(&self.last_sticky) = None;
            self.sink_event(&self.sinkpad, gst::event::FlushStop::new(true));
        }
        if eos_now {
            self.sink_event(&self.sinkpad, gst::event::Eos::new());
        }
        self.reconfigure();
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        gst::debug!(CAT, imp = self, "changing state {transition:?}");
        match transition {
            gst::StateChange::ReadyToPaused => {
                let settings = self.settings();
                {
                    let mut state = self.state();
                    // The request pads stay; their streams start over.
                    let mut inputs = std::mem::take(&mut state.inputs);
                    for input in &mut inputs {
                        input.reset_stream();
                        input.flushing = false;
                    }
                    *state = State::new(&settings);
                    state.inputs = inputs;
                }
                *lock(&self.last_sticky) = None;
                self.reconfigure();
                self.forget_upstream();
                *lock(&self.latencies) = Latencies::default();
            }
            gst::StateChange::PausedToReady => {
                let mut state = self.state();
                state.flushing = true;
                state.wake_task(&self.cond);
                state.wake_chain(&self.cond);
                self.cond.notify_all();
            }
            gst::StateChange::PlayingToPaused => {
                // The clock stops counting for this element: no deadline waits on it.
                let mut state = self.state();
                state.playing = false;
                state.wake_task(&self.cond);
            }
            _ => {}
        }

        let res = self.parent_change_state(transition)?;

        match transition {
            gst::StateChange::ReadyToPaused => {
                self.state().running = true;
                self.restart_stats_timer();
            }
            // The base time is set: deadlines are waited for on the clock from now on (the
            // element's own state still says PAUSED until this returns).
            gst::StateChange::PausedToPlaying => {
                {
                    let mut state = self.state();
                    state.playing = true;
                    state.wake_task(&self.cond);
                }
                // On the pipeline's clock from now on.
                self.restart_stats_timer();
            }
            gst::StateChange::PausedToReady => {
                self.state().running = false;
                self.stop_stats_timer();
            }
            _ => {}
        }
        Ok(res)
    }
}
