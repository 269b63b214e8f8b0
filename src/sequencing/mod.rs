//! The ordering core of the `resequencer` element, free of GStreamer.
//!
//! A [`Window`] takes frames keyed by sequence number (from `OrderedSeqMeta`) or by PTS,
//! gap notices (frames that will never come), serialized events, and the current running
//! time, and answers what to output next: a frame, a skip of frames that will not come, or
//! an event — always in order. It never blocks and never looks at a clock; it tells the
//! caller until when to wait ([`Window::next_deadline`]) and when a new arrival has to wait
//! for room ([`Arrival::Blocked`]). The element is glue around it: it turns outputs into pad
//! pushes and deadlines into clock waits.
//!
//! All times are nanoseconds. Running times are in the same base as the `now` arguments.

mod window;

#[cfg(test)]
mod proptests;

pub use window::{Mode, Window};

/// What a frame is ordered by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKey {
    /// Sequence number and epoch from `OrderedSeqMeta`: exact order, holes are known.
    Sequence { epoch: u32, seq: u64 },
    /// Presentation timestamp: the next frame is known only when PTS = last PTS + duration.
    /// `epoch` counts the caller's segments: PTS of different segments are not compared; a
    /// new one starts once the previous one is drained.
    Pts { epoch: u32, pts: u64 },
}

/// Timing of a frame, used for deadlines and for the time span of a skip.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timing {
    pub pts: Option<u64>,
    pub duration: Option<u64>,
    pub running_time: Option<u64>,
}

/// Bounds and timing of a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The most frames held at once (at least 1).
    pub max_window: usize,
    /// How long a missing frame is waited for past its expected running time.
    pub latency: u64,
    /// Whether deadlines apply at all (live pipelines only).
    pub deadlines: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_window: 64,
            latency: 200_000_000,
            deadlines: false,
        }
    }
}

/// The answer to [`Window::push`].
#[derive(Debug)]
pub enum Arrival<T> {
    /// The window holds the frame; it comes out of [`Window::pop`] in its turn.
    Accepted,
    /// The frame was refused and counted; the caller drops it.
    Rejected { item: T, reason: Rejection },
    /// No room yet: take outputs with [`Window::pop`] (the window now hurries to make room)
    /// and push the frame again.
    Blocked(T),
}

/// Why a frame was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Its slot was already skipped, or it is older than the last frame pushed (PTS order),
    /// or it belongs to an older epoch. Counted in `late`.
    Late,
    /// The same slot is held or was already pushed. Counted in `duplicates`.
    Duplicate,
    /// Keyed differently from the frames the window is ordering (a frame without sequence
    /// meta in a stream ordered by sequence, or the reverse). Counted in `invalid`.
    Mismatched,
}

/// The answer to [`Window::gap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GapArrival {
    /// The named frames will be skipped without waiting when their turn comes.
    Recorded,
    /// Every named frame was already pushed or skipped, the epoch is older, or the window
    /// orders by PTS where sequence numbers mean nothing. Counted in `stale-gaps`.
    Stale,
    /// No room yet: take outputs with [`Window::pop`] and announce the gap again.
    Blocked,
}

/// Why frames were skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// An upstream gap notice named them.
    Gap,
    /// Their deadline passed.
    Deadline,
    /// The window was full and a newer frame needed room.
    WindowFull,
    /// End of stream or of an epoch, or a serialized query: nothing more will come before.
    Drain,
}

impl SkipReason {
    /// The name the resequencer's GAP events and `metapublish`'s gap records give it.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Gap => "lost",
            SkipReason::Deadline => "deadline",
            SkipReason::WindowFull => "window-full",
            SkipReason::Drain => "drain",
        }
    }
}

/// Frames that will not be pushed, reported once, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Skip {
    /// First skipped sequence number (sequence order only).
    pub first_seq: Option<u64>,
    /// Their epoch (sequence order only).
    pub epoch: Option<u32>,
    /// How many frames: exact in sequence order, estimated from the duration in PTS order.
    pub count: u64,
    pub reason: SkipReason,
    /// The time the missing frames would have covered, when it can be told.
    pub pts: Option<u64>,
    pub duration: Option<u64>,
}

/// What to do next, in output order.
#[derive(Debug)]
pub enum Output<T, E> {
    /// Push this frame; `discont` when frames before it were skipped.
    Frame { item: T, discont: bool },
    /// Frames that will never be pushed.
    Skip(Skip),
    /// A serialized event, in its place between the frames around it.
    Event(E),
}

/// Counters, as reported in the element's `stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames offered to the window (`in`).
    pub received: u64,
    pub pushed: u64,
    /// Frames that arrived after a frame that comes later in the order.
    pub reordered: u64,
    /// Missing frames given up on (deadline, full window, drain).
    pub skipped: u64,
    pub late: u64,
    pub duplicates: u64,
    /// Frames released by gap notices.
    pub gaps: u64,
    /// Frames named in gap notices that were already pushed or skipped.
    pub stale_gaps: u64,
    /// Frames with no usable key (or the wrong kind of key).
    pub invalid: u64,
    /// Frames discarded by a flush.
    pub flushed: u64,
    /// Times the stream started over without a flush or a newer epoch: the epoch or (after a
    /// new segment) the sequence went back — an upstream pool restarted alone.
    pub restarts: u64,
    /// Frames held now.
    pub depth: u64,
    pub max_depth: u64,
    /// Longest time a pushed frame was held (ns).
    pub max_hold: u64,
}
