//! The resequencing window: frames held until their turn, gap notices, and serialized
//! events pinned to the place in the order where they arrived.
//!
//! Invariants, checked by the unit and property tests:
//! - outputs come in strictly increasing key order, each key at most once;
//! - every frame offered is pushed, rejected (late, duplicate, mismatched), flushed, or held;
//!   every missing sequence number before the last one pushed is counted as skipped or gap;
//! - no more than `max_window` frames are held; in sequence order every held frame and gap
//!   start lies within `next .. next + max_window`.
//!
//! A stream starts over (everything held is drained first, then the new one is ordered on its
//! own) when a frame comes with a newer epoch; when a frame comes with an older epoch (the
//! pool upstream was restarted alone); and, in sequence order, when the sequence goes back
//! to an earlier number after [`Window::new_segment`] or back to 0. Gap notices of an older
//! epoch are stale.

use std::collections::{BTreeMap, VecDeque};

use super::{
    Arrival, Config, FrameKey, GapArrival, Output, Rejection, Skip, SkipReason, Stats, Timing,
};

/// How many recently skipped ranges are remembered to tell a late frame from a duplicate.
const SKIPPED_HISTORY: usize = 64;

/// What a window orders by, decided by the first frame of each stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Sequence,
    Pts,
}

#[derive(Debug)]
struct Held<T> {
    item: T,
    timing: Timing,
    arrived: Option<u64>,
}

/// The last frame pushed, the anchor for expected times of missing frames.
#[derive(Clone, Copy, Debug)]
struct Anchor {
    key: u64,
    timing: Timing,
}

/// A serialized item queued among the frames.
#[derive(Debug)]
struct Pinned<E> {
    /// The highest key seen when it arrived; released once that key is done.
    position: Option<u64>,
    item: E,
    /// Everything before it is due now: holes before it are skipped at once (a serialized
    /// query: upstream waits for its answer, so nothing missing can come before it).
    drain: bool,
}

/// Orders frames of type `T` and events of type `E`. See the module docs for the invariants.
#[derive(Debug)]
pub struct Window<T, E> {
    config: Config,
    mode: Option<Mode>,
    epoch: Option<u32>,
    /// Sequence order: the next sequence number to output. PTS order: keys below it are late.
    next: u64,
    /// PTS order: the PTS that follows the last frame pushed without a hole, when known.
    contiguous_pts: Option<u64>,
    /// PTS order: the duration of the last frame pushed, for the tolerance of contiguity.
    last_duration: Option<u64>,
    /// PTS order: where each announced epoch (segment) starts.
    epoch_starts: VecDeque<(u32, u64)>,
    /// Sequence order: a new segment came; a sequence going back is a new stream.
    restart_allowed: bool,
    /// The latest running time of the frames of this stream seen so far.
    newest_running_time: Option<u64>,
    frames: BTreeMap<u64, Held<T>>,
    /// Sequence order: announced holes, `start -> end` (exclusive), disjoint, none holding
    /// a frame, all starting at or after `next`.
    gaps: BTreeMap<u64, u64>,
    /// Events and queries, in arrival order.
    events: VecDeque<Pinned<E>>,
    max_seen: Option<u64>,
    last: Option<Anchor>,
    discont: bool,
    /// Sequence order: a key that did not fit; missing frames that keep it out are skipped.
    wanted: Option<u64>,
    /// End of stream: skip every hole at once, release every event.
    draining: bool,
    /// A frame of a new stream waits: the current one drains like at end of stream.
    restart_pending: bool,
    /// Keys below this, in this epoch, will not come any more (every input of an ordered
    /// funnel is past them): their holes are skipped at once. A later epoch: all of the
    /// current one is settled.
    settled: Option<(u32, u64)>,
    skipped_ranges: VecDeque<(u64, u64)>,
    stats: Stats,
}

impl<T, E> Window<T, E> {
    pub fn new(config: Config) -> Self {
        let mut config = config;
        config.max_window = config.max_window.max(1);
        Window {
            config,
            mode: None,
            epoch: None,
            next: 0,
            contiguous_pts: None,
            last_duration: None,
            epoch_starts: VecDeque::new(),
            restart_allowed: false,
            newest_running_time: None,
            frames: BTreeMap::new(),
            gaps: BTreeMap::new(),
            events: VecDeque::new(),
            max_seen: None,
            last: None,
            discont: true,
            wanted: None,
            draining: false,
            restart_pending: false,
            settled: None,
            skipped_ranges: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    pub fn config(&self) -> Config {
        self.config
    }

    /// Changes bounds and timing; takes effect from the next call. A smaller `max_window`
    /// makes the window hurry on the next push that does not fit.
    pub fn set_config(&mut self, config: Config) {
        self.config = config;
        self.config.max_window = self.config.max_window.max(1);
    }

    pub fn stats(&self) -> Stats {
        let mut stats = self.stats;
        stats.depth = self.frames.len() as u64;
        stats
    }

    /// Counts a frame the caller could not key at all (no sequence meta and no PTS).
    pub fn count_invalid(&mut self) {
        self.stats.received += 1;
        self.stats.invalid += 1;
    }

    /// Frames held now.
    pub fn depth(&self) -> usize {
        self.frames.len()
    }

    /// Gives the frames held without an arrival time (pushed with no clock reading) `now`
    /// as their arrival, for `max_hold`.
    pub fn stamp_arrivals(&mut self, now: u64) {
        for held in self.frames.values_mut() {
            held.arrived.get_or_insert(now);
        }
    }

    /// Nothing held: no frame, no gap notice, no event.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty() && self.gaps.is_empty() && self.events.is_empty()
    }

    /// Whether the window is draining (after [`Window::finish`], or between streams).
    pub fn is_draining(&self) -> bool {
        self.draining || self.restart_pending
    }

    /// Forgets every frame and gap (a flush) and hands back the events that were queued, for
    /// the caller to keep what must survive a flush. Counters are kept; the frames dropped
    /// are counted in `flushed`. The next frame starts a new stream.
    pub fn reset(&mut self) -> Vec<E> {
        self.stats.flushed += self.frames.len() as u64;
        let events = std::mem::take(&mut self.events)
            .into_iter()
            .map(|p| p.item)
            .collect();
        let stats = self.stats;
        *self = Window::new(self.config);
        self.stats = stats;
        events
    }

    /// Clears the counters (element restart).
    pub fn reset_stats(&mut self) {
        self.stats = Stats::default();
    }

    /// End of stream: from now on holes are skipped at once and every event is released.
    pub fn finish(&mut self) {
        self.draining = true;
    }

    /// A new stream after end of stream (without a flush): holes are waited for again.
    /// Anything still held from before is drained first.
    pub fn resume_after_finish(&mut self) {
        if self.is_empty() {
            self.draining = false;
        } else {
            // Drain what is left as at end of stream, then start over with the next frame.
            self.restart_pending = true;
            self.draining = false;
            self.restart_allowed = true;
        }
    }

    /// Queues a serialized event after every frame seen so far.
    pub fn push_event(&mut self, event: E) {
        self.events.push_back(Pinned {
            position: self.max_seen,
            item: event,
            drain: false,
        });
    }

    /// Queues a serialized item that is due as soon as everything before it is: the holes
    /// before it are skipped at once instead of waited for (a serialized query, which upstream
    /// waits on, so that nothing missing can arrive before it is answered).
    pub fn push_drain(&mut self, item: E) {
        self.events.push_back(Pinned {
            position: self.max_seen,
            item,
            drain: true,
        });
    }

    /// Nothing with a key below `until` in `epoch` (nothing at all of an earlier epoch) will
    /// come any more: the holes there are skipped at once, the frames there are due. An
    /// ordered funnel says so once every input has brought a later frame.
    pub fn settle(&mut self, epoch: u32, until: u64) {
        if self.settled.is_none_or(|s| s < (epoch, until)) {
            self.settled = Some((epoch, until));
        }
    }

    /// A new segment: in sequence order, a frame whose number goes back is the first of a new
    /// stream (an upstream pool restarted), not a late frame.
    pub fn new_segment(&mut self) {
        self.restart_allowed = true;
    }

    /// PTS order: the stream of `epoch` starts at `pts` (its segment's start), so a first
    /// frame there is not a hole.
    pub fn expect_first(&mut self, epoch: u32, pts: u64) {
        if self.mode == Some(Mode::Pts)
            && self.epoch == Some(epoch)
            && self.frames.is_empty()
            && self.last.is_none()
        {
            self.contiguous_pts = Some(pts);
            return;
        }
        if self.epoch.is_none() || self.epoch.is_some_and(|e| e < epoch) {
            self.epoch_starts.retain(|&(e, _)| e != epoch);
            self.epoch_starts.push_back((epoch, pts));
            while self.epoch_starts.len() > 8 {
                self.epoch_starts.pop_front();
            }
        }
    }

    /// Offers a frame. `now` is the current running time, if known (for `max-hold`).
    pub fn push(&mut self, key: FrameKey, timing: Timing, item: T, now: Option<u64>) -> Arrival<T> {
        let (mode, epoch, k) = match key {
            FrameKey::Sequence { epoch, seq } => (Mode::Sequence, epoch, seq),
            FrameKey::Pts { epoch, pts } => (Mode::Pts, epoch, pts),
        };
        if self.mode.is_some_and(|m| m != mode) {
            self.stats.received += 1;
            self.stats.invalid += 1;
            return Arrival::Rejected {
                item,
                reason: Rejection::Mismatched,
            };
        }
        match self.enter_epoch(epoch, mode, k, Some(timing)) {
            EpochCheck::Current => {}
            EpochCheck::Older => unreachable!("a frame of an older epoch starts a new stream"),
            EpochCheck::MustDrain => return Arrival::Blocked(item),
        }
        self.mode = Some(mode);

        let rejection = match mode {
            Mode::Sequence => self.classify_seq(k),
            Mode::Pts => self.classify_pts(k),
        };
        if let Some(reason) = rejection {
            self.stats.received += 1;
            match reason {
                Rejection::Late => self.stats.late += 1,
                Rejection::Duplicate => self.stats.duplicates += 1,
                Rejection::Mismatched => self.stats.invalid += 1,
            }
            return Arrival::Rejected { item, reason };
        }

        if !self.fits(mode, k) {
            if mode == Mode::Sequence {
                self.wanted = Some(self.wanted.map_or(k, |w| w.max(k)));
            }
            return Arrival::Blocked(item);
        }
        if self.wanted.is_some_and(|w| w <= k) {
            self.wanted = None;
        }

        self.stats.received += 1;
        self.restart_allowed = false;
        if let Some(t) = timing.running_time {
            self.newest_running_time = Some(self.newest_running_time.map_or(t, |n| n.max(t)));
        }
        if self.max_seen.is_some_and(|m| m > k) {
            self.stats.reordered += 1;
        }
        if mode == Mode::Sequence {
            self.remove_from_gaps(k);
        }
        self.max_seen = Some(self.max_seen.map_or(k, |m| m.max(k)));
        self.frames.insert(
            k,
            Held {
                item,
                timing,
                arrived: now,
            },
        );
        self.stats.max_depth = self.stats.max_depth.max(self.frames.len() as u64);
        Arrival::Accepted
    }

    /// Announces that `count` frames from `seq` in `epoch` will never come.
    pub fn gap(&mut self, epoch: u32, seq: u64, count: u64) -> GapArrival {
        if count == 0 {
            return GapArrival::Stale;
        }
        if self.mode == Some(Mode::Pts) {
            self.stats.stale_gaps += count;
            return GapArrival::Stale;
        }
        match self.enter_epoch(epoch, Mode::Sequence, seq, None) {
            EpochCheck::Current => {}
            EpochCheck::Older => {
                self.stats.stale_gaps += count;
                return GapArrival::Stale;
            }
            EpochCheck::MustDrain => return GapArrival::Blocked,
        }
        self.mode = Some(Mode::Sequence);

        let end = seq.saturating_add(count);
        if end <= self.next {
            self.stats.stale_gaps += count;
            return GapArrival::Stale;
        }
        let start = seq.max(self.next);
        if !self.fits(Mode::Sequence, start) {
            self.wanted = Some(self.wanted.map_or(start, |w| w.max(start)));
            return GapArrival::Blocked;
        }
        if self.wanted.is_some_and(|w| w <= start) {
            self.wanted = None;
        }
        self.stats.stale_gaps += start - seq;

        // Merge with overlapping or adjacent notices, then leave out frames that did come.
        let (mut s, mut e) = (start, end);
        let touching: Vec<u64> = self
            .gaps
            .range(..=e)
            .filter(|&(_, &ge)| ge >= s)
            .map(|(&gs, _)| gs)
            .collect();
        for gs in touching {
            let ge = self.gaps.remove(&gs).expect("gap listed above");
            s = s.min(gs);
            e = e.max(ge);
        }
        let mut cursor = s;
        for &k in self.frames.range(s..e).map(|(k, _)| k) {
            if k > cursor {
                self.gaps.insert(cursor, k);
            }
            cursor = k + 1;
        }
        if cursor < e {
            self.gaps.insert(cursor, e);
        }
        self.max_seen = Some(self.max_seen.map_or(end - 1, |m| m.max(end - 1)));
        GapArrival::Recorded
    }

    /// The next output, if one is due at running time `now`.
    pub fn pop(&mut self, now: Option<u64>) -> Option<Output<T, E>> {
        if let Some(front) = self.events.front()
            && self.position_done(front.position)
        {
            let pinned = self.events.pop_front().expect("front checked");
            return Some(Output::Event(pinned.item));
        }
        match self.mode {
            Some(Mode::Sequence) => self.pop_seq(now),
            Some(Mode::Pts) => self.pop_pts(now),
            None => None,
        }
    }

    /// What the window orders by: `None` until the stream's first frame.
    pub fn mode(&self) -> Option<Mode> {
        self.mode
    }

    /// The running time at which the missing head will be given up, when [`Window::pop`]
    /// returned `None` and there is something to wait for. Without deadlines (not live),
    /// `None`.
    pub fn next_deadline(&self) -> Option<u64> {
        if !self.config.deadlines {
            return None;
        }
        match self.mode? {
            Mode::Sequence => {
                if self.frames.contains_key(&self.next) {
                    return None;
                }
                self.run_end()?;
                self.expected(self.next, |t| t.running_time)
                    .map(|t| t.saturating_add(self.config.latency))
            }
            Mode::Pts => {
                let (_, head) = self.frames.first_key_value()?;
                head.timing
                    .running_time
                    .map(|t| t.saturating_add(self.config.latency))
            }
        }
    }

    fn position_done(&self, pos: Option<u64>) -> bool {
        let Some(pos) = pos else { return true };
        if (self.draining || self.restart_pending) && self.frames.is_empty() && self.gaps.is_empty()
        {
            return true;
        }
        match self.mode {
            Some(Mode::Sequence) => pos < self.next,
            Some(Mode::Pts) => self.frames.range(..=pos).next().is_none(),
            None => true,
        }
    }

    /// Whether `key` of `epoch` belongs to the current stream; starts a new one (after
    /// draining the current one) when it does not. `frame`: the timing of a frame; `None` for
    /// a gap notice, which never starts a stream of an older or the same epoch.
    fn enter_epoch(
        &mut self,
        epoch: u32,
        mode: Mode,
        key: u64,
        frame: Option<Timing>,
    ) -> EpochCheck {
        let Some(current) = self.epoch else {
            self.start_stream(epoch);
            return EpochCheck::Current;
        };
        let new_stream = match (epoch.cmp(&current), frame) {
            (std::cmp::Ordering::Greater, _) => true,
            (std::cmp::Ordering::Less, None) => return EpochCheck::Older,
            (std::cmp::Ordering::Less, Some(_)) => true,
            (std::cmp::Ordering::Equal, None) => false,
            // The sequence went back in the same epoch (to a number already output or held):
            // a restarted pool, if a new segment came, or if it went back to 0 with a running
            // time later than every frame seen and than the frame now due (a late frame or a
            // duplicate is older).
            (std::cmp::Ordering::Equal, Some(timing)) => {
                let behind = key < self.next || self.frames.contains_key(&key);
                mode == Mode::Sequence
                    && behind
                    && (self.restart_allowed || (key == 0 && self.is_newer(&timing)))
            }
        };
        if !new_stream {
            self.restart_pending = false;
            return EpochCheck::Current;
        }
        if !self.is_empty() {
            self.restart_pending = true;
            return EpochCheck::MustDrain;
        }
        if epoch <= current {
            self.stats.restarts += 1;
        }
        self.start_stream(epoch);
        EpochCheck::Current
    }

    fn classify_seq(&self, seq: u64) -> Option<Rejection> {
        if seq < self.next {
            let skipped = self
                .skipped_ranges
                .iter()
                .any(|&(s, e)| s <= seq && seq < e);
            return Some(if skipped {
                Rejection::Late
            } else {
                Rejection::Duplicate
            });
        }
        self.frames
            .contains_key(&seq)
            .then_some(Rejection::Duplicate)
    }

    fn classify_pts(&self, pts: u64) -> Option<Rejection> {
        if self.frames.contains_key(&pts) || self.last.is_some_and(|l| l.key == pts) {
            return Some(Rejection::Duplicate);
        }
        (pts < self.next).then_some(Rejection::Late)
    }

    fn fits(&self, mode: Mode, k: u64) -> bool {
        match mode {
            Mode::Sequence => k - self.next < self.config.max_window as u64,
            Mode::Pts => self.frames.len() < self.config.max_window,
        }
    }

    fn remove_from_gaps(&mut self, seq: u64) {
        let Some((&s, &e)) = self.gaps.range(..=seq).next_back() else {
            return;
        };
        if seq >= e {
            return;
        }
        self.gaps.remove(&s);
        if s < seq {
            self.gaps.insert(s, seq);
        }
        if seq + 1 < e {
            self.gaps.insert(seq + 1, e);
        }
    }

    /// Sequence order: where the missing run at the head ends (the next held frame or gap).
    fn run_end(&self) -> Option<u64> {
        let frame = self.frames.keys().next().copied();
        let gap = self.gaps.keys().next().copied();
        match (frame, gap) {
            (Some(f), Some(g)) => Some(f.min(g)),
            (f, g) => f.or(g),
        }
    }

    /// Expected value of a timing field for a missing sequence number, interpolated between
    /// the last frame pushed and the next frame held.
    fn expected(&self, seq: u64, field: impl Fn(&Timing) -> Option<u64>) -> Option<u64> {
        let before = self
            .last
            .filter(|a| a.key < seq)
            .and_then(|a| field(&a.timing).map(|t| (a.key, t, a.timing.duration)));
        let after = self
            .frames
            .range(seq..)
            .next()
            .and_then(|(&k, h)| field(&h.timing).map(|t| (k, t, h.timing.duration)));
        match (before, after) {
            (Some((a, ta, _)), Some((b, tb, _))) if tb >= ta && b > a => {
                let span = (tb - ta) as u128 * (seq - a) as u128 / (b - a) as u128;
                Some(ta + span as u64)
            }
            (_, Some((b, tb, dur))) => {
                Some(tb.saturating_sub(dur.unwrap_or(0).saturating_mul(b - seq)))
            }
            (Some((a, ta, Some(dur))), None) => {
                Some(ta.saturating_add(dur.saturating_mul(seq - a)))
            }
            _ => None,
        }
    }

    fn take_frame(&mut self, key: u64, now: Option<u64>) -> Output<T, E> {
        let held = self.frames.remove(&key).expect("caller checked the key");
        if let (Some(now), Some(arrived)) = (now, held.arrived) {
            self.stats.max_hold = self.stats.max_hold.max(now.saturating_sub(arrived));
        }
        self.stats.pushed += 1;
        self.last = Some(Anchor {
            key,
            timing: held.timing,
        });
        Output::Frame {
            item: held.item,
            discont: std::mem::take(&mut self.discont),
        }
    }

    fn remember_skipped(&mut self, start: u64, end: u64) {
        if let Some(last) = self.skipped_ranges.back_mut()
            && last.1 == start
        {
            last.1 = end;
            return;
        }
        if self.skipped_ranges.len() == SKIPPED_HISTORY {
            self.skipped_ranges.pop_front();
        }
        self.skipped_ranges.push_back((start, end));
    }

    fn pop_seq(&mut self, now: Option<u64>) -> Option<Output<T, E>> {
        if self.frames.contains_key(&self.next) {
            let key = self.next;
            self.next += 1;
            return Some(self.take_frame(key, now));
        }
        if let Some((&start, &end)) = self.gaps.first_key_value()
            && start == self.next
        {
            self.gaps.remove(&start);
            self.stats.gaps += end - start;
            return Some(self.skip_seq(end - start, SkipReason::Gap));
        }

        let run_end = self.run_end();
        let max_window = self.config.max_window as u64;
        let make_room_until = self
            .wanted
            .map(|w| w.saturating_sub(max_window - 1))
            .filter(|&until| until > self.next);
        let drain_until = self.drain_until().filter(|&until| until > self.next);
        let (count, reason) = if let Some(until) = drain_until {
            (run_end?.min(until) - self.next, SkipReason::Drain)
        } else if let Some(until) = make_room_until {
            (
                run_end.map_or(until, |r| r.min(until)) - self.next,
                SkipReason::WindowFull,
            )
        } else {
            let now = now.filter(|_| self.config.deadlines)?;
            let run_end = run_end?;
            // Deadlines grow with the sequence number inside the run: find how many passed.
            let passed = |seq: u64| {
                self.expected(seq, |t| t.running_time)
                    .is_some_and(|t| t.saturating_add(self.config.latency) <= now)
            };
            let (mut lo, mut hi) = (self.next, run_end);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if passed(mid) {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            (lo - self.next, SkipReason::Deadline)
        };
        if count == 0 {
            return None;
        }
        self.stats.skipped += count;
        Some(self.skip_seq(count, reason))
    }

    fn skip_seq(&mut self, count: u64, reason: SkipReason) -> Output<T, E> {
        let first = self.next;
        let end = first + count;
        let pts = self.expected(first, |t| t.pts);
        let pts_end = self
            .frames
            .get(&end)
            .and_then(|h| h.timing.pts)
            .or_else(|| self.expected(end, |t| t.pts));
        self.next = end;
        self.discont = true;
        self.remember_skipped(first, end);
        let duration = match (pts, pts_end) {
            (Some(s), Some(e)) if e > s => Some(e - s),
            _ => None,
        };
        Output::Skip(Skip {
            first_seq: Some(first),
            epoch: self.epoch,
            count,
            reason,
            pts: duration.and(pts),
            duration,
        })
    }

    fn pop_pts(&mut self, now: Option<u64>) -> Option<Output<T, E>> {
        let (key, timing) = self.frames.first_key_value().map(|(&k, h)| (k, h.timing))?;
        if !self.is_contiguous(key, &timing) {
            let reason = if self.drain_until().is_some_and(|until| key < until) {
                SkipReason::Drain
            } else if self.frames.len() >= self.config.max_window {
                SkipReason::WindowFull
            } else {
                let now = now.filter(|_| self.config.deadlines)?;
                let deadline = timing.running_time?.saturating_add(self.config.latency);
                if deadline > now {
                    return None;
                }
                SkipReason::Deadline
            };
            // Released out of turn: a hole before it is reported first, once.
            if let Some(expected) = self.contiguous_pts.filter(|&e| e < key) {
                let hole = key - expected;
                // Durations are rounded to nanoseconds (60 fps: 16666666 and 16666667 by
                // turns): a hole of one frame may be a nanosecond longer than the last one.
                let count = match self.last.and_then(|l| l.timing.duration) {
                    Some(d) if d > 0 => ((hole + d / 2) / d).max(1),
                    _ => 1,
                };
                self.stats.skipped += count;
                self.contiguous_pts = Some(key);
                self.next = key;
                self.discont = true;
                return Some(Output::Skip(Skip {
                    first_seq: None,
                    epoch: None,
                    count,
                    reason,
                    pts: Some(expected),
                    duration: Some(hole),
                }));
            }
        }
        let output = self.take_frame(key, now);
        self.next = key + 1;
        self.last_duration = timing.duration.filter(|&d| d > 0);
        self.contiguous_pts = self.last_duration.map(|d| key.saturating_add(d));
        Some(output)
    }

    /// PTS order: whether `key` follows the last frame pushed (or starts its segment), within
    /// a quarter of a frame's duration (timestamps are rounded to nanoseconds).
    fn is_contiguous(&self, key: u64, timing: &Timing) -> bool {
        let Some(expected) = self.contiguous_pts else {
            return false;
        };
        let tolerance = self.last_duration.or(timing.duration).map_or(0, |d| d / 4);
        key <= expected.saturating_add(tolerance)
    }

    /// Up to which key holes are skipped at once: everything at end of stream or of a
    /// stream; up to the last drain barrier's position otherwise (a serialized query:
    /// nothing before it can still come). `None`: holes are waited for.
    fn drain_until(&self) -> Option<u64> {
        if self.draining || self.restart_pending {
            return Some(u64::MAX);
        }
        let settled = match (self.settled, self.epoch) {
            (Some((epoch, _)), Some(current)) if epoch > current => return Some(u64::MAX),
            (Some((epoch, until)), Some(current)) if epoch == current => Some(until),
            _ => None,
        };
        let drained = self
            .events
            .iter()
            .rev()
            .find(|p| p.drain)
            .and_then(|p| p.position)
            .map(|pos| pos.saturating_add(1));
        drained.max(settled)
    }

    /// Whether a frame is later in running time than every frame of the stream seen so far
    /// and than the frame now due.
    fn is_newer(&self, timing: &Timing) -> bool {
        let (Some(t), Some(newest)) = (timing.running_time, self.newest_running_time) else {
            return false;
        };
        t > newest
            && self
                .expected(self.next, |t| t.running_time)
                .is_none_or(|due| t >= due)
    }

    /// Starts a new stream in `epoch`: sequence numbers from 0, no anchor, no PTS history.
    fn start_stream(&mut self, epoch: u32) {
        self.newest_running_time = None;
        self.epoch = Some(epoch);
        self.next = 0;
        self.max_seen = None;
        self.last = None;
        self.wanted = None;
        self.draining = false;
        self.restart_pending = false;
        self.discont = true;
        self.restart_allowed = false;
        self.skipped_ranges.clear();
        self.last_duration = None;
        self.contiguous_pts = None;
        while let Some(&(e, start)) = self.epoch_starts.front() {
            if e > epoch {
                break;
            }
            self.epoch_starts.pop_front();
            if e == epoch {
                self.contiguous_pts = Some(start);
            }
        }
    }
}

enum EpochCheck {
    Current,
    Older,
    MustDrain,
}

#[cfg(test)]
mod tests {
    use super::*;

    type W = Window<u64, &'static str>;

    fn config(max_window: usize) -> Config {
        Config {
            max_window,
            latency: 100,
            deadlines: true,
        }
    }

    fn seq(seq: u64) -> FrameKey {
        FrameKey::Sequence { epoch: 0, seq }
    }

    /// Timing of frame `n` at 10 ns per frame.
    fn t(n: u64) -> Timing {
        Timing {
            pts: Some(n * 10),
            duration: Some(10),
            running_time: Some(n * 10),
        }
    }

    fn drain(w: &mut W, now: Option<u64>) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(o) = w.pop(now) {
            out.push(match o {
                Output::Frame { item, discont } => {
                    format!("{item}{}", if discont { "!" } else { "" })
                }
                Output::Skip(s) => {
                    format!("skip{}x{}", s.first_seq.map_or(-1, |v| v as i64), s.count)
                }
                Output::Event(e) => e.to_string(),
            });
        }
        out
    }

    fn accept(w: &mut W, n: u64) {
        assert!(
            matches!(w.push(seq(n), t(n), n, Some(n * 10)), Arrival::Accepted),
            "frame {n}"
        );
    }

    #[test]
    fn in_order_frames_pass_straight_through() {
        let mut w = W::new(config(8));
        for n in 0..5 {
            accept(&mut w, n);
            let out = drain(&mut w, Some(n * 10));
            assert_eq!(
                out,
                vec![if n == 0 {
                    "0!".to_string()
                } else {
                    n.to_string()
                }]
            );
        }
        assert_eq!(w.stats().pushed, 5);
        assert_eq!(w.stats().reordered, 0);
    }

    #[test]
    fn out_of_order_frames_come_out_in_order() {
        let mut w = W::new(config(8));
        for n in [2, 0, 3, 1] {
            accept(&mut w, n);
        }
        assert_eq!(drain(&mut w, None), vec!["0!", "1", "2", "3"]);
        assert_eq!(w.stats().reordered, 2);
        assert_eq!(w.stats().max_depth, 4);
    }

    #[test]
    fn missing_frame_is_skipped_exactly_at_its_deadline() {
        let mut w = W::new(config(8));
        accept(&mut w, 0);
        accept(&mut w, 2);
        assert_eq!(drain(&mut w, Some(20)), vec!["0!"]);
        // Frame 1 was expected at running time 10: its deadline is 10 + latency.
        assert_eq!(w.next_deadline(), Some(110));
        assert!(drain(&mut w, Some(109)).is_empty());
        assert_eq!(drain(&mut w, Some(110)), vec!["skip1x1", "2!"]);
        assert_eq!(w.stats().skipped, 1);
    }

    #[test]
    fn deadlines_do_not_apply_when_not_live() {
        let mut w = W::new(Config {
            deadlines: false,
            ..config(8)
        });
        accept(&mut w, 1);
        assert!(drain(&mut w, Some(1_000_000)).is_empty());
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn skip_spans_only_the_frames_whose_deadline_passed() {
        let mut w = W::new(config(16));
        accept(&mut w, 0);
        accept(&mut w, 5);
        drain(&mut w, Some(0));
        // Missing 1..=4 are expected at 10, 20, 30, 40.
        assert_eq!(drain(&mut w, Some(125)), vec!["skip1x2"]);
        assert_eq!(w.next_deadline(), Some(130));
        assert_eq!(drain(&mut w, Some(150)), vec!["skip3x2", "5!"]);
    }

    #[test]
    fn skip_carries_the_missing_time_span() {
        let mut w = W::new(config(8));
        accept(&mut w, 0);
        accept(&mut w, 3);
        w.pop(None);
        match w.pop(Some(1000)) {
            Some(Output::Skip(s)) => {
                assert_eq!(
                    (s.first_seq, s.count, s.reason),
                    (Some(1), 2, SkipReason::Deadline)
                );
                assert_eq!((s.pts, s.duration), (Some(10), Some(20)));
            }
            other => panic!("expected a skip, got {other:?}"),
        }
    }

    #[test]
    fn gap_notice_releases_the_wait_at_once() {
        let mut w = W::new(config(8));
        accept(&mut w, 0);
        accept(&mut w, 3);
        drain(&mut w, Some(0));
        assert_eq!(w.gap(0, 1, 2), GapArrival::Recorded);
        assert_eq!(drain(&mut w, Some(0)), vec!["skip1x2", "3!"]);
        assert_eq!(w.stats().gaps, 2);
        assert_eq!(w.stats().skipped, 0);
    }

    #[test]
    fn gap_notice_for_pushed_frames_is_stale() {
        let mut w = W::new(config(8));
        accept(&mut w, 0);
        accept(&mut w, 1);
        drain(&mut w, None);
        assert_eq!(w.gap(0, 0, 2), GapArrival::Stale);
        assert_eq!(w.gap(0, 1, 3), GapArrival::Recorded);
        assert_eq!(w.stats().stale_gaps, 3);
        assert_eq!(drain(&mut w, None), vec!["skip2x2"]);
    }

    #[test]
    fn a_frame_that_comes_despite_its_gap_notice_is_pushed() {
        let mut w = W::new(config(8));
        assert_eq!(w.gap(0, 0, 3), GapArrival::Recorded);
        accept(&mut w, 1);
        assert_eq!(drain(&mut w, None), vec!["skip0x1", "1!", "skip2x1"]);
    }

    #[test]
    fn late_and_duplicate_frames_are_told_apart() {
        let mut w = W::new(config(4));
        accept(&mut w, 0);
        accept(&mut w, 2);
        drain(&mut w, Some(0));
        drain(&mut w, Some(1000));
        let late = w.push(seq(1), t(1), 1, None);
        assert!(matches!(
            late,
            Arrival::Rejected {
                reason: Rejection::Late,
                ..
            }
        ));
        let dup = w.push(seq(2), t(2), 2, None);
        assert!(matches!(
            dup,
            Arrival::Rejected {
                reason: Rejection::Duplicate,
                ..
            }
        ));
        accept(&mut w, 4);
        let held_dup = w.push(seq(4), t(4), 4, None);
        assert!(matches!(
            held_dup,
            Arrival::Rejected {
                reason: Rejection::Duplicate,
                ..
            }
        ));
        let s = w.stats();
        assert_eq!((s.late, s.duplicates, s.received), (1, 2, 6));
    }

    #[test]
    fn full_window_skips_the_missing_head() {
        let mut w = W::new(config(4));
        for n in 1..4 {
            accept(&mut w, n);
        }
        assert!(drain(&mut w, None).is_empty());
        let Arrival::Blocked(item) = w.push(seq(4), t(4), 4, None) else {
            panic!("frame 4 does not fit while 0 is missing");
        };
        assert_eq!(drain(&mut w, None), vec!["skip0x1", "1!", "2", "3"]);
        assert!(matches!(
            w.push(seq(4), t(4), item, None),
            Arrival::Accepted
        ));
        assert_eq!(drain(&mut w, None), vec!["4"]);
    }

    #[test]
    fn full_window_with_ready_head_only_asks_to_wait() {
        let mut w = W::new(config(2));
        accept(&mut w, 0);
        accept(&mut w, 1);
        assert!(matches!(w.push(seq(2), t(2), 2, None), Arrival::Blocked(_)));
        assert_eq!(w.depth(), 2);
        assert_eq!(drain(&mut w, None), vec!["0!", "1"]);
        assert_eq!(w.stats().skipped, 0);
    }

    #[test]
    fn huge_sequence_jump_skips_in_one_step() {
        let mut w = W::new(config(4));
        accept(&mut w, 0);
        drain(&mut w, None);
        let jump = 1u64 << 40;
        let Arrival::Blocked(item) = w.push(seq(jump), t(1), jump, None) else {
            panic!("jump must not fit");
        };
        assert_eq!(drain(&mut w, None), vec![format!("skip1x{}", jump - 4)]);
        assert!(matches!(
            w.push(seq(jump), t(1), item, None),
            Arrival::Accepted
        ));
        assert_eq!(w.depth(), 1);
        w.finish();
        assert_eq!(
            drain(&mut w, None),
            vec!["skip1099511627773x3".to_string(), format!("{jump}!")]
        );
    }

    #[test]
    fn events_keep_their_place() {
        let mut w = W::new(config(8));
        w.push_event("start");
        accept(&mut w, 1);
        w.push_event("caps");
        accept(&mut w, 0);
        accept(&mut w, 2);
        assert_eq!(drain(&mut w, None), vec!["start", "0!", "1", "caps", "2"]);
    }

    #[test]
    fn finish_drains_everything_in_order() {
        let mut w = W::new(config(8));
        accept(&mut w, 3);
        accept(&mut w, 1);
        w.push_event("eos");
        w.finish();
        assert_eq!(
            drain(&mut w, None),
            vec!["skip0x1", "1!", "skip2x1", "3!", "eos"]
        );
        assert!(w.is_empty());
    }

    #[test]
    fn newer_epoch_drains_the_old_one_first() {
        let mut w = W::new(config(8));
        accept(&mut w, 1);
        let next = FrameKey::Sequence { epoch: 1, seq: 0 };
        let Arrival::Blocked(item) = w.push(next, t(0), 100, None) else {
            panic!("epoch 1 waits for epoch 0 to drain");
        };
        assert_eq!(drain(&mut w, None), vec!["skip0x1", "1!"]);
        assert!(matches!(w.push(next, t(0), item, None), Arrival::Accepted));
        assert_eq!(drain(&mut w, None), vec!["100!"]);
        assert_eq!(w.stats().restarts, 0, "a newer epoch is no restart");
    }

    #[test]
    fn an_older_epoch_is_a_restarted_pool_and_a_new_stream() {
        let mut w = W::new(config(8));
        let at = |epoch, seq| FrameKey::Sequence { epoch, seq };
        for n in 0..3 {
            assert!(matches!(w.push(at(5, n), t(n), n, None), Arrival::Accepted));
        }
        assert_eq!(drain(&mut w, None), vec!["0!", "1", "2"]);
        // A gap of an older epoch is stale, not a restart.
        assert_eq!(w.gap(4, 0, 1), GapArrival::Stale);
        assert!(matches!(
            w.push(at(0, 1), t(1), 101, None),
            Arrival::Accepted
        ));
        assert!(matches!(
            w.push(at(0, 0), t(0), 100, None),
            Arrival::Accepted
        ));
        assert_eq!(drain(&mut w, None), vec!["100!", "101"]);
        assert_eq!((w.stats().restarts, w.stats().late), (1, 0));
    }

    #[test]
    fn a_sequence_going_back_after_a_new_segment_or_to_zero_is_a_new_stream() {
        let mut w = W::new(config(8));
        for n in 0..4 {
            accept(&mut w, n);
        }
        accept(&mut w, 5);
        assert_eq!(drain(&mut w, None), vec!["0!", "1", "2", "3"]);
        // Without a new segment, going back to 2 is a duplicate.
        assert!(matches!(
            w.push(seq(2), t(2), 2, None),
            Arrival::Rejected {
                reason: Rejection::Duplicate,
                ..
            }
        ));
        w.new_segment();
        // Frame 5 is still held: the old stream drains (4 never came) before the new one.
        let Arrival::Blocked(item) = w.push(seq(1), t(1), 1001, None) else {
            panic!("the new stream waits for the old one to drain");
        };
        assert_eq!(drain(&mut w, None), vec!["skip4x1", "5!"]);
        assert!(matches!(
            w.push(seq(1), t(1), item, None),
            Arrival::Accepted
        ));
        assert!(matches!(
            w.push(seq(0), t(0), 1000, None),
            Arrival::Accepted
        ));
        assert_eq!(drain(&mut w, None), vec!["1000!", "1001"]);
        // Going back with a running time after the last frame's is a restart even without a
        // segment; a late duplicate (older in running time) is not.
        accept(&mut w, 2);
        drain(&mut w, None);
        assert!(matches!(
            w.push(seq(0), t(0), 0, None),
            Arrival::Rejected {
                reason: Rejection::Duplicate,
                ..
            }
        ));
        assert!(matches!(
            w.push(seq(0), t(9), 2000, None),
            Arrival::Accepted
        ));
        assert_eq!(drain(&mut w, None), vec!["2000!"]);
        assert_eq!(w.stats().restarts, 2);
    }

    #[test]
    fn a_drain_barrier_skips_the_holes_before_it_at_once() {
        let mut w = W::new(Config {
            deadlines: false,
            ..config(8)
        });
        accept(&mut w, 1);
        accept(&mut w, 3);
        w.push_drain("query");
        accept(&mut w, 5);
        // Not live, nothing due: only the barrier makes frames 1 and 3 due.
        assert_eq!(
            drain(&mut w, None),
            vec!["skip0x1", "1!", "skip2x1", "3!", "query"]
        );
        assert!(
            drain(&mut w, None).is_empty(),
            "frame 5 waits for frame 4 again"
        );
    }

    #[test]
    fn reset_counts_flushed_frames_and_restarts() {
        let mut w = W::new(config(8));
        accept(&mut w, 2);
        w.push_event("caps");
        accept(&mut w, 3);
        assert_eq!(w.reset(), vec!["caps"]);
        assert_eq!(w.stats().flushed, 2);
        assert!(w.is_empty());
        accept(&mut w, 0);
        assert_eq!(drain(&mut w, None), vec!["0!"]);
    }

    #[test]
    fn mismatched_keys_are_counted_invalid() {
        let mut w = W::new(config(8));
        accept(&mut w, 0);
        let r = w.push(FrameKey::Pts { epoch: 0, pts: 5 }, t(0), 9, None);
        assert!(matches!(
            r,
            Arrival::Rejected {
                reason: Rejection::Mismatched,
                ..
            }
        ));
        assert_eq!(w.stats().invalid, 1);
    }

    fn pts(n: u64) -> FrameKey {
        FrameKey::Pts {
            epoch: 0,
            pts: n * 10,
        }
    }

    #[test]
    fn a_drain_barrier_behind_an_ordinary_event_still_drains() {
        let mut w = W::new(Config {
            deadlines: false,
            ..config(8)
        });
        accept(&mut w, 1);
        accept(&mut w, 3);
        w.push_event("caps");
        w.push_drain("query");
        assert_eq!(
            drain(&mut w, None),
            vec!["skip0x1", "1!", "skip2x1", "3!", "caps", "query"]
        );
    }

    #[test]
    fn a_new_stream_after_the_end_waits_for_holes_again() {
        let mut w = W::new(Config {
            deadlines: false,
            ..config(8)
        });
        accept(&mut w, 0);
        accept(&mut w, 1);
        w.push_event("eos");
        w.finish();
        assert_eq!(drain(&mut w, None), vec!["0!", "1", "eos"]);
        w.resume_after_finish();
        w.new_segment();
        assert!(matches!(
            w.push(seq(1), t(10), 101, None),
            Arrival::Accepted
        ));
        assert!(
            drain(&mut w, None).is_empty(),
            "frame 0 of the new stream is waited for"
        );
        assert!(matches!(w.push(seq(0), t(9), 100, None), Arrival::Accepted));
        assert_eq!(drain(&mut w, None), vec!["100!", "101"]);
    }

    #[test]
    fn pts_order_follows_contiguous_frames() {
        let mut w = W::new(config(8));
        assert!(matches!(w.push(pts(1), t(1), 1, None), Arrival::Accepted));
        assert!(matches!(w.push(pts(0), t(0), 0, None), Arrival::Accepted));
        // The first frame has nothing to be contiguous with: it waits for its deadline.
        assert!(drain(&mut w, Some(99)).is_empty());
        assert_eq!(w.next_deadline(), Some(100));
        assert_eq!(drain(&mut w, Some(100)), vec!["0!", "1"]);
        assert!(matches!(w.push(pts(2), t(2), 2, None), Arrival::Accepted));
        assert_eq!(drain(&mut w, Some(100)), vec!["2"]);
    }

    #[test]
    fn pts_order_knows_the_first_frame_of_a_segment_and_rounded_timestamps() {
        let mut w = W::new(Config {
            deadlines: false,
            ..config(8)
        });
        w.expect_first(0, 0);
        assert!(matches!(w.push(pts(0), t(0), 0, None), Arrival::Accepted));
        assert_eq!(drain(&mut w, None), vec!["0!"]);
        // 30000/1001 fps: the next PTS is a nanosecond off the last PTS + duration.
        let rounded = Timing {
            pts: Some(11),
            duration: Some(10),
            running_time: Some(11),
        };
        let key = FrameKey::Pts { epoch: 0, pts: 11 };
        assert!(matches!(w.push(key, rounded, 1, None), Arrival::Accepted));
        assert_eq!(drain(&mut w, None), vec!["1"]);
    }

    #[test]
    fn a_new_pts_epoch_drains_the_old_segment_and_starts_over() {
        let mut w = W::new(Config {
            deadlines: false,
            ..config(8)
        });
        w.expect_first(0, 0);
        for n in [0, 1, 3] {
            assert!(matches!(w.push(pts(n), t(n), n, None), Arrival::Accepted));
        }
        assert_eq!(drain(&mut w, None), vec!["0!", "1"]);
        // A playlist's second item: PTS from 0 again in a new segment.
        w.expect_first(1, 0);
        let second = |n: u64| FrameKey::Pts {
            epoch: 1,
            pts: n * 10,
        };
        let Arrival::Blocked(item) = w.push(second(0), t(0), 100, None) else {
            panic!("the second segment waits for the first to drain");
        };
        assert_eq!(drain(&mut w, None), vec!["skip-1x1", "3!"]);
        assert!(matches!(
            w.push(second(0), t(0), item, None),
            Arrival::Accepted
        ));
        assert!(matches!(
            w.push(second(1), t(1), 101, None),
            Arrival::Accepted
        ));
        assert_eq!(drain(&mut w, None), vec!["100!", "101"]);
        assert_eq!((w.stats().late, w.stats().duplicates), (0, 0));
    }

    #[test]
    fn pts_hole_is_reported_then_the_frame_is_pushed() {
        let mut w = W::new(config(8));
        assert!(matches!(w.push(pts(0), t(0), 0, None), Arrival::Accepted));
        drain(&mut w, Some(100));
        assert!(matches!(w.push(pts(3), t(3), 3, None), Arrival::Accepted));
        assert!(drain(&mut w, Some(129)).is_empty());
        assert_eq!(drain(&mut w, Some(130)), vec!["skip-1x2", "3!"]);
        let late = w.push(pts(2), t(2), 2, None);
        assert!(matches!(
            late,
            Arrival::Rejected {
                reason: Rejection::Late,
                ..
            }
        ));
    }

    #[test]
    fn pts_backwards_by_an_hour_is_late() {
        let mut w = W::new(config(8));
        let hour = 3_600_000_000_000u64;
        let timing = Timing {
            pts: Some(hour),
            duration: Some(10),
            running_time: Some(hour),
        };
        assert!(matches!(
            w.push(
                FrameKey::Pts {
                    epoch: 0,
                    pts: hour
                },
                timing,
                0,
                None
            ),
            Arrival::Accepted
        ));
        w.finish();
        drain(&mut w, None);
        let back = w.push(FrameKey::Pts { epoch: 0, pts: 0 }, t(0), 1, None);
        assert!(matches!(
            back,
            Arrival::Rejected {
                reason: Rejection::Late,
                ..
            }
        ));
    }

    #[test]
    fn a_pts_hole_of_rounded_durations_counts_its_frames() {
        let mut w = W::new(Config {
            max_window: 1 << 20,
            latency: 100,
            deadlines: false,
        });
        // 60 fps: frames at 0, 16666666 (lasting 16666667), then a hole of one frame.
        w.expect_first(0, 0);
        let frame = |pts: u64, duration: u64| Timing {
            pts: Some(pts),
            duration: Some(duration),
            running_time: Some(pts),
        };
        let key = |pts: u64| FrameKey::Pts { epoch: 0, pts };
        assert!(matches!(
            w.push(key(0), frame(0, 16_666_666), 0, None),
            Arrival::Accepted
        ));
        assert!(matches!(
            w.push(key(16_666_666), frame(16_666_666, 16_666_666), 1, None),
            Arrival::Accepted
        ));
        assert!(matches!(
            w.push(key(50_000_000), frame(50_000_000, 16_666_667), 3, None),
            Arrival::Accepted
        ));
        w.settle(0, 50_000_001);
        drain(&mut w, None);
        assert_eq!(w.stats().skipped, 1, "one frame missing, not two");
    }

    #[test]
    fn settled_keys_skip_their_holes_at_once_in_both_orders() {
        let big = Config {
            max_window: 1 << 20,
            latency: 100,
            deadlines: false,
        };
        let mut w = W::new(big);
        accept(&mut w, 0);
        accept(&mut w, 3);
        assert_eq!(drain(&mut w, None), vec!["0!"]);
        // Every input is past 2: 1 and 2 will not come.
        w.settle(0, 3);
        assert_eq!(drain(&mut w, None), vec!["skip1x2", "3!"]);
        assert_eq!(w.stats().skipped, 2);

        // PTS order: a frame after a hole is held until it is settled too.
        let mut w = W::new(big);
        w.expect_first(0, 0);
        let t = |n: u64| Timing {
            pts: Some(n * 10),
            duration: Some(10),
            running_time: Some(n * 10),
        };
        assert!(matches!(w.push(pts(0), t(0), 0, None), Arrival::Accepted));
        assert!(matches!(w.push(pts(2), t(2), 2, None), Arrival::Accepted));
        assert_eq!(drain(&mut w, None), vec!["0!"], "10 may still come");
        w.settle(0, 20);
        assert!(
            drain(&mut w, None).is_empty(),
            "an input may still bring 10..20"
        );
        w.settle(0, 21);
        assert_eq!(drain(&mut w, None), vec!["skip-1x1", "2!"]);
        // A later epoch settles all of this one.
        assert!(matches!(w.push(pts(5), t(5), 5, None), Arrival::Accepted));
        assert!(drain(&mut w, None).is_empty());
        w.settle(1, 0);
        assert_eq!(drain(&mut w, None), vec!["skip-1x2", "5!"]);
    }

    #[test]
    fn pts_full_window_releases_the_earliest() {
        let mut w = W::new(config(2));
        assert!(matches!(w.push(pts(5), t(5), 5, None), Arrival::Accepted));
        assert!(matches!(w.push(pts(3), t(3), 3, None), Arrival::Accepted));
        let Arrival::Blocked(item) = w.push(pts(4), t(4), 4, None) else {
            panic!("window of 2 is full");
        };
        assert_eq!(drain(&mut w, None), vec!["3!"]);
        assert!(matches!(
            w.push(pts(4), t(4), item, None),
            Arrival::Accepted
        ));
        assert_eq!(drain(&mut w, None), vec!["4", "5"]);
    }
}
