//! `worker-bin`: any GStreamer elements as the per-frame step. Each worker runs its frames
//! through an instance of the bin of its own, built from the description at start (and again
//! after an instance failed), so that an element that handles frames one at a time uses every
//! worker.
//!
//! An instance is a pipeline of its own holding the bin, fed by a pad of ours linked to the
//! bin's sink (the injector) and read by another linked to its src (the collector). A frame is
//! pushed into it on the worker's thread; a DRAIN query after it returns once the bin has
//! finished with it (queues and encoders inside it drain too), and whatever the collector got
//! in between is the frame's output: one buffer (the frame that leaves), none (the frame is
//! dropped, a gap) or more (the first leaves, the others are counted and dropped). An error
//! posted inside an instance fails the frame; the instance is thrown away and a new one built.
//!
//! Caps: each frame carries the caps it came with; an instance that last saw other caps gets a
//! CAPS event before it, so a caps change renegotiates every instance at the frame where it
//! happens. Caps queries go through an instance of their own (the probe): upstream's queries
//! on the sink pad through the bin to downstream, downstream's on the src pad through the bin
//! to upstream, as if the bin stood between them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;

use crate::glue::lock;
use crate::meta::{FrameAnalysis, SeqMeta};

/// What came out of the bin for one frame.
pub(super) struct Ran {
    /// The frame that leaves and the caps it came out with; `None`: the bin output nothing.
    pub output: Option<(gst::Buffer, Option<gst::Caps>)>,
    /// Buffers beyond the first: dropped, counted.
    pub extras: u64,
}

/// What the worker bins did, since the start.
#[derive(Debug, Default)]
pub(super) struct BinCounts {
    /// Attempts that failed inside an instance (an error posted, a flow error, an instance
    /// that could not be built): with `on-error=retry`, one frame can count several.
    pub errors: AtomicU64,
    /// Frames the bin output nothing for.
    pub no_output: AtomicU64,
    /// Buffers beyond the first one for a frame.
    pub extras: AtomicU64,
    /// Instances built to replace failed or given-up ones.
    pub rebuilt: AtomicU64,
}

impl BinCounts {
    pub fn reset(&self) {
        for c in [&self.errors, &self.no_output, &self.extras, &self.rebuilt] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// What the collector received since the last frame.
#[derive(Default)]
struct Collected {
    buffers: Vec<(gst::Buffer, Option<gst::Caps>)>,
    caps: Option<gst::Caps>,
    error: Option<String>,
}

/// Where an instance's queries go: the element's own pads' peers.
#[derive(Clone)]
pub(super) struct Outside {
    /// The element's sink pad: the instance's upstream.
    pub sinkpad: gst::Pad,
    /// The element's src pad: the instance's downstream.
    pub srcpad: gst::Pad,
    /// Receives the ELEMENT messages of the elements inside (facedetect's, …).
    pub element: glib::WeakRef<gst::Element>,
}

/// One instance of the bin.
struct Instance {
    pipeline: gst::Pipeline,
    injector: gst::Pad,
    collector: gst::Pad,
    collected: Arc<Mutex<Collected>>,
    /// The caps last sent into it.
    caps: Option<gst::Caps>,
    started: bool,
    /// The `WorkerBins::generation` it last negotiated its output in.
    generation: u64,
}

impl Instance {
    fn build(description: &str, outside: &Outside) -> Result<Instance, String> {
        let bin = gst::parse::bin_from_description(description, true)
            .map_err(|err| format!("worker-bin `{description}` does not parse: {err}"))?;
        let bin_sink = bin
            .static_pad("sink")
            .ok_or_else(|| format!("worker-bin `{description}` has no unlinked sink pad"))?;
        let bin_src = bin
            .static_pad("src")
            .ok_or_else(|| format!("worker-bin `{description}` has no unlinked src pad"))?;
        let pipeline = gst::Pipeline::new();
        pipeline
            .add(&bin)
            .map_err(|err| format!("worker-bin: {err}"))?;
        let collected = Arc::new(Mutex::new(Collected::default()));

        let up = outside.sinkpad.clone();
        let injector = gst::Pad::builder(gst::PadDirection::Src)
            .name("worker-bin-injector")
            .query_function(move |_pad, _parent, query| match query.view() {
                // What upstream of the element can give: the bin's first elements ask. A
                // context (GL, VA, CUDA) comes from the element's neighbours too.
                gst::QueryView::Caps(_) | gst::QueryView::Context(_) => up.peer_query(query),
                _ => false,
            })
            .build();
        let down = outside.srcpad.clone();
        let got = collected.clone();
        let got_caps = collected.clone();
        let collector = gst::Pad::builder(gst::PadDirection::Sink)
            .name("worker-bin-collector")
            .chain_function(move |_pad, _parent, buffer| {
                let mut got = lock(&got);
                let caps = got.caps.clone();
                got.buffers.push((buffer, caps));
                Ok(gst::FlowSuccess::Ok)
            })
            .event_function(move |_pad, _parent, event| {
                if let gst::EventView::Caps(caps) = event.view() {
                    lock(&got_caps).caps = Some(caps.caps_owned());
                }
                true
            })
            .query_function(move |_pad, _parent, query| match query.view_mut() {
                // What downstream of the element takes: the bin's last elements ask.
                gst::QueryViewMut::Caps(_) | gst::QueryViewMut::AcceptCaps(_) => {
                    if down.peer_query(query) {
                        return true;
                    }
                    match query.view_mut() {
                        gst::QueryViewMut::Caps(q) => {
                            let any = q.filter_owned().unwrap_or_else(gst::Caps::new_any);
                            q.set_result(&any);
                        }
                        gst::QueryViewMut::AcceptCaps(q) => q.set_result(true),
                        _ => {}
                    }
                    true
                }
                // Each frame is drained out of the bin: nothing waits here.
                gst::QueryViewMut::Drain(_) => true,
                gst::QueryViewMut::Context(_) => down.peer_query(query),
                _ => false,
            })
            .build();
        // Not checked against caps: the caps queries would go to the element's neighbours,
        // which need not be there yet.
        injector
            .link_full(&bin_sink, gst::PadLinkCheck::empty())
            .map_err(|err| format!("worker-bin: linking its sink pad: {err}"))?;
        bin_src
            .link_full(&collector, gst::PadLinkCheck::empty())
            .map_err(|err| format!("worker-bin: linking its src pad: {err}"))?;
        collector
            .set_active(true)
            .map_err(|err| format!("worker-bin: {err}"))?;
        injector
            .set_active(true)
            .map_err(|err| format!("worker-bin: {err}"))?;

        let bus = pipeline.bus().expect("a pipeline has a bus");
        let errors = collected.clone();
        let element = outside.element.clone();
        bus.set_sync_handler(move |_bus, message| {
            match message.view() {
                gst::MessageView::Error(err) => {
                    let source = message
                        .src()
                        .map(|s| s.name().to_string())
                        .unwrap_or_default();
                    lock(&errors)
                        .error
                        .get_or_insert_with(|| format!("{source}: {}", err.error()));
                }
                // facedetect's results, the elements' warnings, their requests for a context
                // (answered by the application on the element that asks): on the
                // pipeline's bus.
                gst::MessageView::Element(_)
                | gst::MessageView::Warning(_)
                | gst::MessageView::NeedContext(_)
                | gst::MessageView::HaveContext(_) => {
                    if let Some(element) = element.upgrade() {
                        let _ = element.post_message(message.clone());
                    }
                }
                _ => {}
            }
            gst::BusSyncReply::Drop
        });
        // Built before it starts: a start that fails sets it back to NULL when it drops.
        let instance = Instance {
            pipeline,
            injector,
            collector,
            collected,
            caps: None,
            started: false,
            generation: 0,
        };
        let started = instance.pipeline.set_state(gst::State::Playing);
        let error = lock(&instance.collected).error.take();
        match (started, error) {
            (Ok(_), None) => Ok(instance),
            (_, why) => Err(format!(
                "worker-bin `{description}` could not start: {}",
                why.unwrap_or_else(|| "its state change failed".into())
            )),
        }
    }

    /// Sends the stream's start, `caps` if they are new to it, and a segment.
    fn prepare(&mut self, caps: Option<&gst::Caps>) -> bool {
        let mut ok = true;
        if !self.started {
            let id = format!("worker-bin-{:p}", self.pipeline.as_ptr());
            ok &= self.injector.push_event(gst::event::StreamStart::new(&id));
        }
        if let Some(caps) = caps
            && self.caps.as_ref() != Some(caps)
        {
            ok &= self.injector.push_event(gst::event::Caps::new(caps));
            self.caps = Some(caps.clone());
        }
        if !self.started {
            let segment = gst::FormattedSegment::<gst::ClockTime>::new();
            ok &= self.injector.push_event(gst::event::Segment::new(&segment));
            self.started = true;
        }
        ok
    }

    /// Makes the bin negotiate its output again (downstream asked to reconfigure).
    fn renegotiate(&mut self, generation: u64) {
        if self.generation != generation {
            self.generation = generation;
            self.collector.push_event(gst::event::Reconfigure::new());
        }
    }

    /// Runs one frame through the instance. `Err`: the instance failed (it is not reused).
    fn run(&mut self, input: &gst::Buffer, caps: Option<&gst::Caps>) -> Result<Ran, String> {
        // A bin that output late for an earlier frame: those are extras too.
        let stale = std::mem::take(&mut lock(&self.collected).buffers).len() as u64;
        if !self.prepare(caps) {
            let err = lock(&self.collected).error.take();
            return Err(err.unwrap_or_else(|| match caps {
                Some(caps) => format!("the bin refused caps {caps}"),
                None => "the bin refused the stream's start".into(),
            }));
        }
        let flow = self.injector.push(input.clone());
        if flow.is_ok() {
            // Returns once everything inside has finished with the frame.
            let _ = self.injector.peer_query(&mut gst::query::Drain::new());
        }
        let (buffers, error) = {
            let mut got = lock(&self.collected);
            (std::mem::take(&mut got.buffers), got.error.take())
        };
        if let Some(error) = error {
            return Err(error);
        }
        match flow {
            Ok(_) => {}
            Err(err) => return Err(format!("the bin returned {err:?}")),
        }
        let extras = stale + (buffers.len() as u64).saturating_sub(1);
        let output = buffers.into_iter().next().map(|(buffer, caps)| {
            let caps = caps.or_else(|| lock(&self.collected).caps.clone());
            (carry_over(input, buffer), caps)
        });
        Ok(Ran { output, extras })
    }

    /// The bin's output caps for `caps`, where it tells without a frame; `None` when it does
    /// not (a decoder knows only once it has seen one).
    fn negotiate(&mut self, caps: &gst::Caps) -> Option<gst::Caps> {
        if self.caps.as_ref() == Some(caps) {
            // The same caps again: what came out for them still holds.
            return lock(&self.collected).caps.clone();
        }
        lock(&self.collected).caps = None;
        if !self.prepare(Some(caps)) {
            return None;
        }
        lock(&self.collected).caps.clone()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.injector.set_active(false);
        let _ = self.pipeline.set_state(gst::State::Null);
        let _ = self.collector.set_active(false);
    }
}

/// The frame that leaves the bin is the frame that came in: its timestamps and flags, and the
/// metas of ours the bin did not keep.
fn carry_over(input: &gst::Buffer, output: gst::Buffer) -> gst::Buffer {
    let mut output = output;
    let out = output.make_mut();
    out.set_pts(input.pts());
    out.set_dts(input.dts());
    out.set_duration(input.duration());
    out.set_offset(input.offset());
    out.set_offset_end(input.offset_end());
    // Not an instance's own DISCONT (its first buffer): the stream's, as it came.
    out.unset_flags(gst::BufferFlags::all());
    out.set_flags(input.flags());
    if SeqMeta::read(out).is_none()
        && let Some(Ok(meta)) = SeqMeta::read(input)
    {
        meta.add(out);
    }
    if FrameAnalysis::read(out).is_none()
        && let Some(Ok(analysis)) = FrameAnalysis::read(input)
    {
        analysis.add(out);
    }
    output
}

/// The instances of one element's bin, from start to stop.
pub(super) struct WorkerBins {
    description: String,
    outside: Outside,
    idle: Mutex<Vec<Instance>>,
    /// Answers caps queries and tells the output caps at a caps event; never runs frames.
    probe: Mutex<Instance>,
    /// A frame that took longer than this was given up by the pool (`timeout`): its instance
    /// is not trusted again.
    timeout: Option<Duration>,
    pub counts: Arc<BinCounts>,
    /// Instances given up on (`timeout`) not replaced yet: the next one built replaces one.
    owed: AtomicU64,
    /// Bumped when downstream asks to reconfigure: each instance negotiates again.
    generation: AtomicU64,
    /// The caps a frame last came out of an instance with.
    last_caps: Mutex<Option<gst::Caps>>,
}

impl WorkerBins {
    /// Builds the probe and `instances` instances: a description that does not build fails
    /// the start.
    pub fn start(
        description: &str,
        instances: u32,
        outside: Outside,
        timeout: Option<Duration>,
        counts: Arc<BinCounts>,
    ) -> Result<WorkerBins, String> {
        let probe = Instance::build(description, &outside)?;
        let idle = (0..instances)
            .map(|_| Instance::build(description, &outside))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(WorkerBins {
            description: description.to_string(),
            outside,
            idle: Mutex::new(idle),
            probe: Mutex::new(probe),
            timeout,
            counts,
            owed: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            last_caps: Mutex::new(None),
        })
    }

    /// Runs a frame through an idle instance (one is built if none is).
    pub fn run(&self, input: &gst::Buffer, caps: Option<&gst::Caps>) -> Result<Ran, String> {
        let taken = lock(&self.idle).pop();
        let mut instance = match taken {
            Some(instance) => instance,
            // More workers than instances (a shared crew, autoscaling), or one given up on.
            None => match Instance::build(&self.description, &self.outside) {
                Ok(instance) => {
                    let owed = self
                        .owed
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |o| o.checked_sub(1));
                    if owed.is_ok() {
                        self.counts.rebuilt.fetch_add(1, Ordering::Relaxed);
                    }
                    instance
                }
                Err(err) => {
                    self.counts.errors.fetch_add(1, Ordering::Relaxed);
                    return Err(err);
                }
            },
        };
        instance.renegotiate(self.generation.load(Ordering::Acquire));
        let began = Instant::now();
        let ran = instance.run(input, caps);
        match &ran {
            Err(_) => {
                self.counts.errors.fetch_add(1, Ordering::Relaxed);
                drop(instance);
                // Rebuilt now, not by the next frame (which would wait for it); if that fails,
                // the next frame that finds no instance tries again.
                match Instance::build(&self.description, &self.outside) {
                    Ok(fresh) => {
                        self.counts.rebuilt.fetch_add(1, Ordering::Relaxed);
                        lock(&self.idle).push(fresh);
                    }
                    Err(_) => {
                        self.owed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Ok(ran) => {
                if ran.output.is_none() {
                    self.counts.no_output.fetch_add(1, Ordering::Relaxed);
                }
                self.counts.extras.fetch_add(ran.extras, Ordering::Relaxed);
                if let Some((_, Some(caps))) = &ran.output {
                    *lock(&self.last_caps) = Some(caps.clone());
                }
                let given_up = self.timeout.is_some_and(|t| began.elapsed() > t);
                if given_up {
                    self.owed.fetch_add(1, Ordering::Relaxed);
                } else {
                    lock(&self.idle).push(instance);
                }
            }
        }
        ran
    }

    /// The bin's output caps for input `caps`, if it tells without a frame.
    pub fn negotiate(&self, caps: &gst::Caps) -> Option<gst::Caps> {
        lock(&self.probe).negotiate(caps)
    }

    /// A caps or accept-caps query on the element's sink pad, answered through the bin.
    pub fn query_sink(&self, query: &mut gst::QueryRef) -> bool {
        let injector = lock(&self.probe).injector.clone();
        injector.peer_query(query)
    }

    /// A caps query on the element's src pad, answered through the bin.
    pub fn query_src(&self, query: &mut gst::QueryRef) -> bool {
        let collector = lock(&self.probe).collector.clone();
        collector.peer_query(query)
    }

    /// Downstream asked to reconfigure: each instance negotiates its output again before its
    /// next frame.
    pub fn reconfigure(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Caps for the src pad when no frame came out to tell: those the last frame out of an
    /// instance had, else what the bin can output, fixated.
    pub fn fallback_caps(&self) -> Option<gst::Caps> {
        if let Some(caps) = lock(&self.last_caps).clone() {
            return Some(caps);
        }
        let collector = lock(&self.probe).collector.clone();
        let mut caps = collector.peer_query_caps(None);
        if caps.is_empty() || caps.is_any() {
            return None;
        }
        caps.fixate();
        Some(caps)
    }
}
