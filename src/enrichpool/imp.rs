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
//! Sharing: with `shared-pool` set, the element is one member of a pool shared by name
//! (`shared`): its frames run on the shared workers and servers, in its own queue, with its
//! own order, events, flushes and ledger.
//!
//! Files: this one is the element's glue (properties, pads, events, states); the per-frame
//! steps and the way out are in `steps`, the settings in `settings`, the stats structures
//! in `stats`.
//!
//! Locks: `settings` and `state` are each only held briefly and never together; neither is
//! held while calling into the pool, which has its own lock. The shared `Enricher` keeps
//! its own small locks for the handler and the last flow result.

use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::Handler;
use super::regions::{DEFAULT_MAX_ROIS, InferOn};
use super::settings::*;
use super::shared::{self, SharedPool};
use super::stats::{
    RemoteStats, StepCounts, pool_stats_structure, processing_latency, stats_structure,
};
use super::steps::{Enricher, Frame, PENDING_CAPS, Reported, Role, Selector, SrcCaps};
use super::workerbin::{Outside, WorkerBins};
use crate::glue::{StatsTimer, lock, read, write};
use crate::meta::{Gap, GapReason, InFlightQuery, SeqMeta};
use crate::pool::{Loss, Pool, PoolStats, Submitted, Tag};

/// How long stopping waits for workers busy with a frame before leaving them behind.
const STOP_GRACE: Duration = Duration::from_secs(2);

pub(super) static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "enrichpool",
        gst::DebugColorFlags::empty(),
        Some("Bounded queue and worker pool for per-frame enrichment"),
    )
});

struct State {
    pool: Option<Arc<Pool<Enricher>>>,
    /// The shared pool `pool` is a member of (`shared-pool` set).
    shared: Option<Arc<SharedPool>>,
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
    /// From the last caps event, with `worker-bin` (frames carry them to their instances).
    caps: Option<gst::Caps>,
    /// Stats of the last pool, kept after it stopped.
    last_stats: PoolStats,
    last_remote: Option<RemoteStats>,
    stats_timer: StatsTimer,
}

impl Default for State {
    fn default() -> Self {
        State {
            pool: None,
            shared: None,
            eos: false,
            error_posted: false,
            sticky_after_flush: Vec::new(),
            epoch: 0,
            next_seq: 0,
            in_segment: gst::FormattedSegment::new(),
            video: None,
            caps: None,
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

impl EnrichPool {
    pub(super) fn settings(&self) -> Settings {
        lock(&self.settings).clone()
    }

    /// Whether a flow error after EOS is to be posted now: once per stream.
    pub(super) fn take_error_after_eos(&self) -> bool {
        let mut state = self.state();
        let post = state.eos && !state.error_posted;
        state.error_posted |= post;
        post
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

    /// This element's requests in progress give up: their frames are being flushed anyway.
    /// (Those of other members of a shared pool go on.)
    fn cancel_requests(&self) {
        let remote = read(&self.enricher.remote).clone();
        if let Some(remote) = remote {
            remote.canceller.cancel();
        }
    }

    fn remote_stats(&self) -> Option<RemoteStats> {
        let remote = read(&self.enricher.remote).clone();
        match remote {
            Some(remote) => Some(RemoteStats::of(&remote)),
            None => self.state().last_remote.clone(),
        }
    }

    pub(super) fn stats(&self) -> gst::Structure {
        stats_structure(
            &self.current_stats(),
            &self.settings(),
            self.remote_stats().as_ref(),
            StepCounts {
                overlay_skipped: self.enricher.overlay_skipped.load(Ordering::Relaxed),
                rois: &self.enricher.roi_counts,
                reuse: &self.enricher.reuse.counts,
                skipped: self.enricher.skipped.load(Ordering::Relaxed),
                bins: &self.enricher.bin_counts,
            },
        )
    }

    /// `pool-stats`: the workers and servers this element's frames run on (shared or not)
    /// and every member's share.
    fn pool_stats(&self) -> gst::Structure {
        let (pool, shared) = {
            let state = self.state();
            (state.pool.clone(), state.shared.clone())
        };
        let Some(pool) = pool else {
            return pool_stats_structure(
                &self.settings().pool.shared_pool,
                &Default::default(),
                &|_| String::new(),
                None,
            );
        };
        let crew = pool.crew().stats();
        let remote = self.remote_stats();
        match shared {
            Some(shared) => pool_stats_structure(
                &shared.name,
                &crew,
                &|member| shared.member_name(member),
                remote.as_ref(),
            ),
            None => {
                let name = self.obj().name().to_string();
                pool_stats_structure("", &crew, &|_| name.clone(), remote.as_ref())
            }
        }
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
            (tag, running_time, (state.video.clone(), state.caps.clone()))
        };
        let (video, caps) = video;

        let bytes = buffer.size() as u64;
        let remote = read(&self.enricher.remote).clone();
        // Read before the frame is queued: a flush from now on cancels its requests.
        let cancel_from = remote.as_ref().map_or(0, |r| r.canceller.generation());
        // Decided here, in stream order: `carry-forward` links a frame to the last one sent
        // before it.
        let (selected, carry) = {
            let selector = read(&self.enricher.selector);
            (selector.selects(tag.seq, &buffer), selector.carry_forward)
        };
        if let Some(remote) = &remote {
            remote.count(selected);
        }
        if !selected {
            self.enricher.skipped.fetch_add(1, Ordering::Relaxed);
        }
        let role = if carry > 0 {
            let link = self.enricher.reuse.link(tag, running_time, selected, carry);
            match (selected, link) {
                (true, _) => Some(Role::Source),
                (false, Some((source, age))) => Some(Role::Linked { source, age }),
                (false, None) => None,
            }
        } else {
            None
        };
        let frame = Frame::new(buffer, tag.seq, video, caps, cancel_from, selected, role);
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
                self.enricher.reuse.clear();
                self.cancel_requests();
                return self.srcpad.push_event(event);
            }
            EventView::FlushStop(_) => {
                // A push in progress returns first (downstream is flushing): nothing from
                // before the flush leaves after it, and its FLUSHING is reset below.
                if let Some(pool) = self.pool() {
                    pool.resume();
                }
                // Links made by a chain racing the flush are gone too.
                self.enricher.reuse.clear();
                // Stored only now: an older sticky event pushed meanwhile must not win.
                let events = std::mem::take(&mut self.state().sticky_after_flush);
                // `worker-bin`: events waiting for the first frame's caps are treated alike
                // (they are older than those the pool still held).
                let held = lock(&self.enricher.src_caps).held.take();
                self.keep_sticky(held.unwrap_or_default());
                self.keep_sticky(events);
                // Still no caps downstream (a flush before the first frame came out): what
                // comes after the flush waits for them too.
                if read(&self.enricher.bins).is_some() && !self.srcpad.has_current_caps() {
                    lock(&self.enricher.src_caps).held = Some(Vec::new());
                }
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
                let bins = read(&self.enricher.bins).clone();
                if video.is_none() && read(&self.enricher.remote).is_some() && bins.is_none() {
                    gst::element_imp_error!(
                        self,
                        gst::CoreError::Negotiation,
                        ("Remote enrichment needs raw video, got {}", caps.caps())
                    );
                    return false;
                }
                // Frames carry the info of the caps they came with.
                {
                    let mut state = self.state();
                    state.video = video;
                    // Only a worker bin needs them per frame (its instances renegotiate
                    // at the frame where they change).
                    state.caps = bins.is_some().then(|| caps.caps_owned());
                }
                if let Some(bins) = bins {
                    // Downstream gets the bin's output caps at this place; when the bin tells
                    // them only once it has seen a frame, with that frame.
                    let event = match bins.negotiate(&caps.caps_owned()) {
                        Some(out) => gst::event::Caps::builder(&out)
                            .seqnum(event.seqnum())
                            .build(),
                        None => gst::event::CustomDownstream::new(gst::Structure::new_empty(
                            PENDING_CAPS,
                        )),
                    };
                    return match self.pool() {
                        Some(pool) => pool.event(event),
                        None => false,
                    };
                }
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
        let bins = read(&self.enricher.bins).clone();
        if let Some(bins) = bins {
            match query.view() {
                // What the bin takes, given what downstream takes.
                gst::QueryView::Caps(_) | gst::QueryView::AcceptCaps(_) => {
                    return bins.query_sink(query);
                }
                // The bin's elements read the frames, not downstream: upstream allocates
                // its own.
                gst::QueryView::Allocation(_) => return false,
                _ => {}
            }
        } else if matches!(query.view(), gst::QueryView::Caps(_)) && self.has_worker_bin() {
            // Not built yet (before start): the bin may take anything.
            return Self::any_caps(query);
        }
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
        if let gst::QueryView::Caps(_) = query.view() {
            let bins = read(&self.enricher.bins).clone();
            if let Some(bins) = bins {
                // What the bin outputs, given what upstream gives.
                return bins.query_src(query);
            }
            if self.has_worker_bin() {
                // Not built yet (before start): the bin may output anything.
                return Self::any_caps(query);
            }
        }
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
            // Downstream may want other caps: each instance negotiates again.
            let bins = read(&self.enricher.bins).clone();
            if let Some(bins) = bins {
                bins.reconfigure();
            }
        }
        gst::Pad::event_default(pad, Some(&*self.obj()), event)
    }

    fn has_worker_bin(&self) -> bool {
        !lock(&self.settings).worker_bin.trim().is_empty()
    }

    /// Answers a caps query with its filter, or ANY.
    fn any_caps(query: &mut gst::QueryRef) -> bool {
        if let gst::QueryViewMut::Caps(q) = query.view_mut() {
            let caps = q.filter_owned().unwrap_or_else(gst::Caps::new_any);
            q.set_result(&caps);
        }
        true
    }

    /// How far out of order this pool's output can be, in frames.
    fn disorder(&self) -> u64 {
        match self.pool() {
            Some(pool) => pool.disorder(),
            None => self.settings().pool.disorder(),
        }
    }

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let started = self.start_pool();
        if started.is_err() {
            // Instances built before the failure go with it.
            write(&self.enricher.bins).take();
        }
        started
    }

    fn start_pool(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings();
        self.enricher.bin_counts.reset();
        *lock(&self.enricher.src_caps) = SrcCaps::default();
        let bins = if settings.worker_bin.trim().is_empty() {
            None
        } else {
            let outside = Outside {
                sinkpad: self.sinkpad.clone(),
                srcpad: self.srcpad.clone(),
                element: self.obj().upcast_ref::<gst::Element>().downgrade(),
            };
            let timeout = (settings.pool.timeout > gst::ClockTime::ZERO)
                .then(|| Duration::from_nanos(settings.pool.timeout.nseconds()));
            let bins = WorkerBins::start(
                &settings.worker_bin,
                settings.pool.workers.max(1),
                outside,
                timeout,
                self.enricher.bin_counts.clone(),
            )
            .map_err(|err| gst::error_msg!(gst::ResourceError::Settings, ("{}", err)))?;
            Some(Arc::new(bins))
        };
        *write(&self.enricher.bins) = bins;
        let name = settings.pool.shared_pool.clone();
        let (pool, shared) = if name.is_empty() {
            let set = settings.remote.start_set().map_err(|err| {
                gst::error_msg!(
                    gst::ResourceError::Settings,
                    ("Remote enrichment is misconfigured: {}", err)
                )
            })?;
            *write(&self.enricher.remote) = set.map(|set| Arc::new(settings.remote.step(set)));
            let pool =
                Pool::start(self.enricher.clone(), settings.pool.private()).map_err(|err| {
                    gst::error_msg!(
                        gst::ResourceError::NoSpaceLeft,
                        ("Could not start the worker pool: {}", err)
                    )
                })?;
            (pool, None)
        } else {
            let (shared, warnings) = shared::acquire(&name, &settings).map_err(|err| {
                gst::error_msg!(
                    gst::ResourceError::Settings,
                    ("Could not join shared pool `{}`: {}", name, err)
                )
            })?;
            for warning in warnings {
                gst::element_imp_warning!(self, gst::ResourceError::Settings, ("{}", warning));
            }
            *write(&self.enricher.remote) = shared
                .set
                .clone()
                .map(|set| Arc::new(settings.remote.step(set)));
            let pool = match shared
                .crew
                .join(self.enricher.clone(), settings.pool.member())
            {
                Ok(pool) => pool,
                Err(err) => {
                    write(&self.enricher.remote).take();
                    shared::release(&shared, Duration::ZERO);
                    return Err(gst::error_msg!(
                        gst::ResourceError::NoSpaceLeft,
                        ("Could not join shared pool `{}`: {}", name, err)
                    ));
                }
            };
            shared.name_member(pool.member(), self.obj().name().to_string());
            (pool, Some(shared))
        };
        self.enricher.overlay_skipped.store(0, Ordering::Relaxed);
        *write(&self.enricher.regions) = settings.cascade.plan(&settings.pool).map(Arc::new);
        self.enricher.reuse.clear();
        self.enricher.reuse.reset_counts();
        *write(&self.enricher.selector) = Selector {
            interval: settings.remote.interval.max(1) as u64,
            only_label: settings.remote.only_label.clone(),
            carry_forward: settings.cascade.carry_forward.nseconds(),
        };
        self.enricher.skipped.store(0, Ordering::Relaxed);
        *write(&self.enricher.helpers) = Some(pool.crew().helpers());
        self.enricher.roi_counts.reset();
        self.enricher.flow.set(Ok(gst::FlowSuccess::Ok));
        *lock(&self.enricher.reported_latency) = Reported::default();
        self.enricher.measured.store(false, Ordering::Release);
        let mut state = self.state();
        *state = State {
            pool: Some(Arc::new(pool)),
            shared,
            stats_timer: std::mem::take(&mut state.stats_timer),
            ..State::default()
        };
        drop(state);
        self.restart_stats_timer();
        Ok(())
    }

    fn stop(&self) {
        // This element's requests give up; a private set takes no new ones either.
        self.cancel_requests();
        // One critical section: a stats-interval change in between would restart the timer.
        let (pool, shared) = {
            let mut state = self.state();
            state.stats_timer.stop();
            (state.pool.take(), state.shared.take())
        };
        if shared.is_none()
            && let Some(remote) = read(&self.enricher.remote).clone()
        {
            remote.set.close();
        }
        if let Some(pool) = pool {
            // Whoever else still holds the pool (a query, the stats timer) finds it stopped.
            let left = pool.stop(STOP_GRACE);
            let left = match &shared {
                Some(shared) => {
                    shared.forget_member(pool.member());
                    // The last member stops the shared workers.
                    left + shared::release(shared, STOP_GRACE)
                }
                None => left,
            };
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
        // Frames held for a source that will not come now.
        self.enricher.reuse.clear();
        write(&self.enricher.helpers).take();
        // Instances busy with a frame left behind go when their workers return.
        write(&self.enricher.bins).take();
    }

    fn restart_stats_timer(&self) {
        let mut state = self.state();
        // Read under the state lock: a concurrent change of stats-interval restarts the
        // timer after this, with its own value, and so has the last word.
        let interval = if state.pool.is_some() {
            self.settings().stats_interval.nseconds()
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
        let enricher = Arc::new(Enricher::new(srcpad.clone()));
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
                glib::ParamSpecString::builder("shared-pool")
                    .nick("Shared pool")
                    .blurb(
                        "Run this element's frames on the pool of this name, shared by every \
                         enrichpool of the process that names it (in one pipeline or several): \
                         one set of workers (workers, max-workers, idle-timeout), one set of \
                         servers (servers … batch-timeout, max-in-flight-per-server bounding \
                         all members together), taken in round-robin weighted by `priority`. \
                         Each member keeps its own queue and bounds (max-size-*, leaky, \
                         max-in-flight), policies (timeout, on-error, retries), handler, \
                         sequence, events, flushes and stats. The first member to start \
                         creates the pool with its settings; a member whose shared settings \
                         differ gets a warning naming both values (other servers or model: an \
                         error); the last to stop stops it (empty = a private pool)",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("workers")
                    .nick("Workers")
                    .blurb("Worker threads started, and kept at least (default: the number of CPU cores; with shared-pool, the pool's)")
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
                    .default_value(DEFAULT_IDLE_TIMEOUT.nseconds())
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
                glib::ParamSpecUInt::builder("max-in-flight")
                    .nick("Max. in flight")
                    .blurb(
                        "The most of this element's frames processed at once (0 = as many as \
                         there are workers); with shared-pool, what one member may take of the \
                         shared workers",
                    )
                    .maximum(1024)
                    .default_value(DEFAULT_MAX_IN_FLIGHT)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("priority")
                    .nick("Priority")
                    .blurb(
                        "With shared-pool: this member's weight in the round-robin over the \
                         members' queues: it takes up to this many frames per turn, so under \
                         overload its share of the workers is its priority over the sum of \
                         the busy members' priorities",
                    )
                    .minimum(1)
                    .maximum(1000)
                    .default_value(DEFAULT_PRIORITY)
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
                glib::ParamSpecEnum::builder_with_default("infer-on", InferOn::Frame)
                    .nick("Infer on")
                    .blurb(
                        "What the steps (servers, Rust handler, process signal) run on: the whole \
                         frame, or each GstVideoRegionOfInterestMeta of the frame (of roi-types, \
                         at most max-rois), on its crop, the crops of a frame in parallel on idle \
                         workers. A region's results go into an `enrichment` param on its meta \
                         and into the `rois` array of EnrichmentMeta; regions found inside a crop \
                         become metas in frame coordinates with parent_id set; a failed crop \
                         marks its region (failed, error) and the frame goes on, unless \
                         on-error=fail",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("roi-types")
                    .nick("ROI types")
                    .blurb(
                        "With infer-on=rois: the region types to run on, comma-separated \
                         (e.g. motion,person; empty = every type)",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-rois")
                    .nick("Maximum ROIs")
                    .blurb(
                        "With infer-on=rois: the most regions per frame that get a crop job, in \
                         the order of their metas; the others are left as they are (counted in \
                         stats as rois-over-max)",
                    )
                    .minimum(1)
                    .default_value(DEFAULT_MAX_ROIS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("carry-forward")
                    .nick("Carry forward")
                    .blurb(
                        "Reuse, in ns (0 = off): a frame that interval or only-label keeps from \
                         the steps carries the results of the last frame processed before it \
                         (its EnrichmentMeta fields and detected regions), marked stale=true \
                         and age (ns of running time since that frame), while younger than \
                         this. A frame labelled scene-cut is then always processed, and ends \
                         the reuse of what came before it",
                    )
                    .default_value(0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("worker-bin")
                    .nick("Worker bin")
                    .blurb(
                        "A gst-launch description (e.g. `videoconvert ! facedetect \
                         display=false ! videoconvert`) run as the first step: each worker \
                         runs its frames through an instance of this bin of its own, built at \
                         start. The buffer the bin outputs for a frame is the frame that \
                         leaves (its metas kept; timestamps and OrderedSeqMeta carried over), \
                         and the src caps are the bin's output caps. One output per input: \
                         none is a gap `dropped`, more are dropped and counted (bin-extras), \
                         an error inside an instance fails the frame per on-error and the \
                         instance is rebuilt; set timeout to bound a bin that hangs. It runs \
                         on every frame (interval and only-label choose the later steps'); the \
                         servers, handler and process signal see its output. Only for \
                         elements that treat frames independently: no encoder with inter \
                         frames, no tracker",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("overlay")
                    .nick("Overlay")
                    .blurb(
                        "Draw each frame's results into it on the worker thread: a box per \
                         GstVideoRegionOfInterestMeta (motion yellow, detections green with class \
                         and score, dimmed and marked stale when carried forward, failed crops \
                         red, a region's own result after a colon) and a line `#seq label \
                         wWORKER` (with `stale` when the frame carries results). 8-bit RGB, BGR, \
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
                    .default_value(DEFAULT_REQUEST_TIMEOUT.nseconds())
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
                        "Run the steps (servers, Rust handler, process signal) on every Nth frame \
                         (by sequence number); the others pass through untouched, in order (see \
                         carry-forward), counted in stats as skipped",
                    )
                    .minimum(1)
                    .default_value(1)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("only-label")
                    .nick("Only label")
                    .blurb(
                        "Run the steps only on frames whose FrameAnalysisMeta label is this \
                         (scene-cut, motion, static, dark); the others pass through untouched \
                         (see carry-forward), counted in stats as skipped (empty = all frames)",
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
                glib::ParamSpecUInt::builder("batch-size")
                    .nick("Batch size")
                    .blurb(
                        "Send up to this many frames of equal shape (from any member of a \
                         shared pool) in one request, along the model's batch dimension (its \
                         input declares -1 as first dimension; without one, a value above 1 \
                         fails at the first request); each frame gets its own slice of every \
                         output. Workers wait for a batch to fill: give the pool at least \
                         twice this many workers",
                    )
                    .minimum(1)
                    .maximum(1024)
                    .default_value(DEFAULT_BATCH_SIZE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("batch-timeout")
                    .nick("Batch timeout")
                    .blurb("The longest a frame waits for its batch to fill, in nanoseconds")
                    .default_value(DEFAULT_BATCH_TIMEOUT.nseconds())
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("pool-stats")
                    .nick("Pool statistics")
                    .blurb(
                        "enrichpool-pool-stats: the workers this element's frames run on \
                         (shared or not) and their members: shared-pool (name, empty when \
                         private), members (per member: element, priority, max-in-flight, \
                         queued, in-flight, processed, pushed, throughput frames/s since it \
                         joined, share of the workers' busy time), workers, idle, stuck, \
                         blocked (workers replaced while blocked in a push), threads, \
                         spawn-failures, worker-stats, hedges, batches, batched-frames and servers",
                    )
                    .read_only()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb(
                        "enrichpool-stats: in, pushed, dropped, dropped-leaked, dropped-failed, \
                         dropped-timeout, dropped-dropped, flushed, retries, queued, max-queued, \
                         in-flight, waiting (finished, waiting for their turn to be pushed), \
                         workers, stuck (threads in handlers that did not return after timeout), \
                         spawn-failures (frames or threads), blocked-pushes (pushes a shared \
                         pool gave up on after 200 ms, their worker replaced), latency (ns: what the element adds \
                         to the LATENCY query, see `latency`), worker-stats (per worker: \
                         worker, processed, busy ns, errors), overlay-skipped, skipped (frames interval or \
                         only-label kept from the steps), remote-sent, remote-skipped, \
                         rois-processed, rois-failed, rois-dropped (by a handler), rois-found \
                         (regions found inside crops), rois-invalid (empty, zero-size or wholly \
                         outside the frame), rois-clipped (partly outside: cropped to the frame), \
                         rois-over-max, rois-renumbered (an id of 0 or of another region replaced), carried (frames that \
                         left with stale results), carry-expired (skipped past carry-forward), \
                         carry-missed (their source lost), carry-flushed (held for their source \
                         when a flush came), hedges, \
                         batches and batched-frames (requests that carried batches, and their frames; the \
                         shared pool's with shared-pool) \
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
        let ns = |value: &glib::Value| {
            gst::ClockTime::from_nseconds(value.get().expect("type checked upstream"))
        };
        let text = |value: &glib::Value| {
            value
                .get::<Option<String>>()
                .expect("type checked upstream")
                .filter(|t| !t.is_empty())
        };
        match pspec.name() {
            "shared-pool" => s.pool.shared_pool = text(value).unwrap_or_default(),
            "workers" => s.pool.workers = value.get().expect("type checked upstream"),
            "max-workers" => s.pool.max_workers = value.get().expect("type checked upstream"),
            "idle-timeout" => s.pool.idle_timeout = ns(value),
            "max-size-buffers" => {
                s.pool.max_size_buffers = value.get().expect("type checked upstream")
            }
            "max-size-bytes" => s.pool.max_size_bytes = value.get().expect("type checked upstream"),
            "max-size-time" => s.pool.max_size_time = ns(value),
            "leaky" => s.pool.leaky = value.get().expect("type checked upstream"),
            "timeout" => s.pool.timeout = ns(value),
            "on-error" => s.pool.on_error = value.get().expect("type checked upstream"),
            "retries" => s.pool.retries = value.get().expect("type checked upstream"),
            "max-in-flight" => s.pool.max_in_flight = value.get().expect("type checked upstream"),
            "priority" => s.pool.priority = value.get().expect("type checked upstream"),
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
            "servers" => s.remote.servers = text(value).unwrap_or_default(),
            "model" => s.remote.model = text(value).unwrap_or_default(),
            "model-version" => s.remote.model_version = text(value).unwrap_or_default(),
            "request-timeout" => s.remote.request_timeout = ns(value),
            "hedge-after" => s.remote.hedge_after = ns(value),
            "max-in-flight-per-server" => {
                s.remote.max_in_flight_per_server = value.get().expect("type checked upstream")
            }
            "auth-token" => s.remote.auth_token = text(value),
            "auth-token-file" => s.remote.auth_token_file = text(value),
            "max-response-bytes" => {
                s.remote.max_response_bytes = value.get().expect("type checked upstream")
            }
            "infer-on" => s.cascade.infer_on = value.get().expect("type checked upstream"),
            "roi-types" => s.cascade.roi_types = text(value).unwrap_or_default(),
            "max-rois" => s.cascade.max_rois = value.get().expect("type checked upstream"),
            "carry-forward" => s.cascade.carry_forward = ns(value),
            "interval" => s.remote.interval = value.get().expect("type checked upstream"),
            "only-label" => s.remote.only_label = text(value),
            "tls-ca-file" => s.remote.tls_ca_file = text(value),
            "batch-size" => s.remote.batch_size = value.get().expect("type checked upstream"),
            "batch-timeout" => s.remote.batch_timeout = ns(value),
            "worker-bin" => s.worker_bin = text(value).unwrap_or_default(),
            "stats-interval" => {
                s.stats_interval = ns(value);
                drop(s);
                self.restart_stats_timer();
            }
            other => unreachable!("unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings();
        match pspec.name() {
            "shared-pool" => s.pool.shared_pool.to_value(),
            "workers" => s.pool.workers.to_value(),
            "max-workers" => s.pool.max_workers.to_value(),
            "idle-timeout" => s.pool.idle_timeout.nseconds().to_value(),
            "max-size-buffers" => s.pool.max_size_buffers.to_value(),
            "max-size-bytes" => s.pool.max_size_bytes.to_value(),
            "max-size-time" => s.pool.max_size_time.nseconds().to_value(),
            "leaky" => s.pool.leaky.to_value(),
            "timeout" => s.pool.timeout.nseconds().to_value(),
            "on-error" => s.pool.on_error.to_value(),
            "retries" => s.pool.retries.to_value(),
            "max-in-flight" => s.pool.max_in_flight.to_value(),
            "priority" => s.pool.priority.to_value(),
            "latency" => s.latency.to_value(),
            "overlay" => s.overlay.to_value(),
            "servers" => s.remote.servers.to_value(),
            "model" => s.remote.model.to_value(),
            "model-version" => s.remote.model_version.to_value(),
            "request-timeout" => s.remote.request_timeout.nseconds().to_value(),
            "hedge-after" => s.remote.hedge_after.nseconds().to_value(),
            "max-in-flight-per-server" => s.remote.max_in_flight_per_server.to_value(),
            "max-response-bytes" => s.remote.max_response_bytes.to_value(),
            "infer-on" => s.cascade.infer_on.to_value(),
            "roi-types" => s.cascade.roi_types.to_value(),
            "max-rois" => s.cascade.max_rois.to_value(),
            "carry-forward" => s.cascade.carry_forward.nseconds().to_value(),
            "interval" => s.remote.interval.to_value(),
            "only-label" => s.remote.only_label.to_value(),
            "tls-ca-file" => s.remote.tls_ca_file.to_value(),
            "auth-token-file" => s.remote.auth_token_file.to_value(),
            "batch-size" => s.remote.batch_size.to_value(),
            "batch-timeout" => s.remote.batch_timeout.nseconds().to_value(),
            "stats" => self.stats().to_value(),
            "pool-stats" => self.pool_stats().to_value(),
            "stats-interval" => s.stats_interval.nseconds().to_value(),
            "worker-bin" => s.worker_bin.to_value(),
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
