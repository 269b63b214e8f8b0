//! The resequencer's request sink pads (`sink_%u`): an ordered funnel. Each pad brings one
//! branch, in that branch's own order (a branch keeps the order of the frames it was given,
//! as `queue`s and per-frame elements do); the branches interleave. So once every branch
//! that may still bring frames has brought one with a later key, nothing before that key
//! can come: its holes are lost (skipped at once, counted) and the frames before it are due.
//! Until then a fast branch waits (not live: backpressure, never a skip).
//!
//! Sticky events are not queued among the frames: each frame carries the sticky events its
//! pad had when it came (caps, segment, tags), and those that differ from what went out last
//! go before it, as `funnel` forwards a pad's sticky events when it switches pads.

use std::sync::Arc;

use gst::glib::translate::IntoGlib;
use gst::prelude::*;

/// One request pad's branch.
pub(super) struct Input {
    pub pad: gst::Pad,
    /// The latest key this pad brought into the window (PTS order: its segment's epoch).
    pub last: Option<(u32, u64)>,
    pub eos: bool,
    /// FLUSH_START came and FLUSH_STOP not yet.
    pub flushing: bool,
    /// This pad's segment, for running times.
    pub segment: gst::FormattedSegment<gst::ClockTime>,
    pub last_segment: Option<gst::FormattedSegment<gst::ClockTime>>,
    /// PTS order: the segments this pad has seen since the last flush, less one.
    pub pts_epoch: u32,
    /// From the caps' framerate.
    pub frame_duration: Option<u64>,
    /// Its sticky events now (but STREAM_START and EOS), in sticky order.
    pub sticky: Arc<Vec<gst::Event>>,
    /// Passed over: it held the others up past the cap of a lifted bound. Until it brings a
    /// frame again, nothing waits for it.
    pub quiet: bool,
}

impl Input {
    /// Whether it may still bring frames: linked (a pad requested and left unlinked brings
    /// none) and not at EOS.
    pub fn open(&self) -> bool {
        !self.eos && self.pad.is_linked()
    }

    /// How far it is: its latest key, or in PTS order the start of a later segment it has
    /// reached (it brings nothing of the earlier ones any more).
    pub fn progress(&self, pts: bool) -> Option<(u32, u64)> {
        match (self.last, pts) {
            (Some(last), true) => Some(last.max((self.pts_epoch, 0))),
            (None, true) if self.pts_epoch > 0 => Some((self.pts_epoch, 0)),
            (last, _) => last,
        }
    }

    pub fn new(pad: gst::Pad) -> Input {
        Input {
            pad,
            last: None,
            eos: false,
            flushing: false,
            segment: gst::FormattedSegment::new(),
            last_segment: None,
            pts_epoch: 0,
            frame_duration: None,
            sticky: Arc::new(Vec::new()),
            quiet: false,
        }
    }

    /// A flush (or a start): the stream begins again; caps and tags stay.
    pub fn reset_stream(&mut self) {
        self.last = None;
        self.quiet = false;
        self.eos = false;
        self.segment = gst::FormattedSegment::new();
        self.last_segment = None;
        self.pts_epoch = 0;
        let kept: Vec<gst::Event> = self
            .sticky
            .iter()
            .filter(|e| e.type_() != gst::EventType::Segment)
            .cloned()
            .collect();
        self.sticky = Arc::new(kept);
    }

    /// Records a sticky event: it replaces the one of its type (of its name, for custom ones).
    pub fn store_sticky(&mut self, event: &gst::Event) {
        let name = |e: &gst::Event| e.structure().map(|s| s.name().to_string());
        let mut events: Vec<gst::Event> = self
            .sticky
            .iter()
            .filter(|e| !(e.type_() == event.type_() && name(e) == name(event)))
            .cloned()
            .collect();
        events.push(event.clone());
        events.sort_by_key(|e| e.type_().into_glib());
        self.sticky = Arc::new(events);
    }
}

/// Up to where the inputs are settled: the least of the latest keys of the inputs that may
/// still bring frames (linked, not at EOS). `None` while one of them has brought none yet, while the always sink
/// pad is linked and not at EOS (its frames may come in any order), or when every input is
/// at EOS.
/// `pts`: the window orders by PTS (keys are per segment).
pub(super) fn frontier(inputs: &[Input], always_pad_open: bool, pts: bool) -> Option<(u32, u64)> {
    if always_pad_open {
        return None;
    }
    let mut least: Option<(u32, u64)> = None;
    for input in inputs.iter().filter(|i| i.open() && !i.quiet) {
        let last = input.progress(pts)?;
        least = Some(least.map_or(last, |l| l.min(last)));
    }
    least
}

/// Whether `pad` is one of those holding the others up (its latest key is the least, or it
/// has brought none yet): its frames are always let in, however full the window.
pub(super) fn lagging(inputs: &[Input], pad: &gst::Pad, pts: bool) -> bool {
    let Some(me) = inputs.iter().find(|i| &i.pad == pad) else {
        return true;
    };
    let Some(mine) = me.progress(pts) else {
        return true;
    };
    inputs
        .iter()
        .filter(|i| i.open() && !i.quiet && &i.pad != pad)
        .all(|i| i.progress(pts).is_some_and(|other| other >= mine))
}

/// Whether a frame of PTS epoch `epoch` from `pad` must wait: another input that may still
/// bring frames has not reached that segment yet (its frames of the earlier one come first).
pub(super) fn behind_epoch(inputs: &[Input], pad: &gst::Pad, epoch: u32) -> bool {
    inputs
        .iter()
        .any(|i| &i.pad != pad && i.open() && !i.quiet && i.pts_epoch < epoch)
}

/// The events of a frame's pad to push before it: those it has that did not go out last.
/// CAPS and SEGMENT are compared by content with the src pad's, the others by identity with
/// the last pad's.
pub(super) fn sticky_to_push(
    srcpad: &gst::Pad,
    sticky: &[gst::Event],
    last: Option<&[gst::Event]>,
) -> Vec<gst::Event> {
    sticky
        .iter()
        .filter(|event| {
            if last.is_some_and(|l| l.iter().any(|e| e.as_ptr() == event.as_ptr())) {
                return false;
            }
            match event.view() {
                gst::EventView::Caps(caps) => {
                    srcpad.current_caps().as_ref() != Some(&caps.caps_owned())
                }
                gst::EventView::Segment(segment) => srcpad
                    .sticky_event::<gst::event::Segment>(0)
                    .is_none_or(|s| s.segment() != segment.segment()),
                _ => true,
            }
        })
        .cloned()
        .collect()
}

/// The pad template of the request pads.
pub(super) fn template() -> gst::PadTemplate {
    gst::PadTemplate::new(
        "sink_%u",
        gst::PadDirection::Sink,
        gst::PadPresence::Request,
        &gst::Caps::new_any(),
    )
    .expect("a valid template")
}

/// The first free `sink_N` name.
pub(super) fn free_name(element: &gst::Element) -> String {
    (0u32..)
        .map(|n| format!("sink_{n}"))
        .find(|name| element.static_pad(name).is_none())
        .expect("a free pad name")
}
