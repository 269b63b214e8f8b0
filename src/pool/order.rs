//! The order in which a pool's results leave: serialized events are barriers between the
//! jobs submitted before and after them, losses are merged into runs, and nothing crosses
//! a barrier.
//!
//! Jobs belong to the *range* that was open when they were submitted; each event opens a
//! new range. Results of the head range go straight to the output as they finish (in
//! completion order); results of later ranges are parked with their range. When the head
//! range has nothing outstanding, the next range's event is released, then its parked
//! results, and it becomes the head. Losses of a range are kept apart as [`Run`]s (consecutive
//! sequence numbers of one epoch and reason merge) and go out ahead of the range's frames
//! (their order relative to frames does not matter to a resequencer), but never ahead of the
//! event that opened their range nor after the event that closes it.
//!
//! Invariants (checked by the model test of the pool): an event leaves after every result
//! of the jobs submitted before it and before every result of the jobs submitted after it;
//! every job completed is output exactly once, as a frame or inside a run.

use std::collections::VecDeque;

use super::{Loss, Tag};

/// Consecutive lost frames of one epoch, lost for one reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub first: Tag,
    pub count: u64,
    pub reason: Loss,
}

impl Run {
    fn end(&self) -> u64 {
        self.first.seq.saturating_add(self.count)
    }
}

/// Lost frames waiting to be announced, merged into runs.
#[derive(Debug, Default)]
pub(super) struct Runs {
    runs: Vec<Run>,
    /// Sort and merge everything when there are more runs than this.
    compact_at: usize,
}

/// Runs kept at least before they are sorted and merged as a whole.
const RUNS_BEFORE_COMPACTION: usize = 64;

impl Runs {
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    pub fn add(&mut self, first: Tag, count: u64, reason: Loss) {
        if count == 0 {
            return;
        }
        let joins = |r: &Run| r.first.epoch == first.epoch && r.reason == reason;
        // Losses come mostly in order: look at the newest runs first.
        for r in self.runs.iter_mut().rev().take(4) {
            if joins(r) && r.end() == first.seq {
                r.count += count;
                return;
            }
            if joins(r) && first.seq.saturating_add(count) == r.first.seq {
                r.first.seq = first.seq;
                r.count += count;
                return;
            }
        }
        self.runs.push(Run {
            first,
            count,
            reason,
        });
        if self.runs.len() > self.compact_at.max(RUNS_BEFORE_COMPACTION) {
            self.compact();
            // Scattered losses that do not merge yet: compact again only when they double.
            self.compact_at = self.runs.len() * 2;
        }
    }

    /// Sorts and merges every run that touches another of the same epoch and reason.
    fn compact(&mut self) {
        self.runs
            .sort_by_key(|r| (r.first.epoch, r.reason as u8, r.first.seq));
        let mut merged: Vec<Run> = Vec::with_capacity(self.runs.len());
        for r in self.runs.drain(..) {
            if let Some(last) = merged.last_mut()
                && last.first.epoch == r.first.epoch
                && last.reason == r.reason
                && last.end() >= r.first.seq
            {
                let end = last.end().max(r.end());
                last.count = end - last.first.seq;
                continue;
            }
            merged.push(r);
        }
        self.runs = merged;
    }

    /// Every run, merged as far as they touch.
    pub fn take(&mut self) -> Vec<Run> {
        if self.runs.len() > 1 {
            self.compact();
        }
        self.compact_at = 0;
        std::mem::take(&mut self.runs)
    }

    /// Frames named in the runs.
    #[cfg(test)]
    pub fn frames(&self) -> u64 {
        self.runs.iter().map(|r| r.count).sum()
    }
}

/// What to output next.
#[derive(Debug)]
pub(super) enum Next<F, E> {
    /// Frames that will never come.
    Lost(Vec<Run>),
    Frame(F),
    Event(E),
}

enum Out<F, E> {
    Frame(F),
    /// An event, with the losses of the range it closes that had not gone out yet.
    Event {
        lost_before: Runs,
        event: E,
    },
}

struct Range<F, E> {
    event: E,
    /// Jobs of this range not yet completed.
    outstanding: usize,
    frames: Vec<F>,
    lost: Runs,
}

/// Results and events in the order they must leave. `F` is a finished job.
pub(super) struct Order<F, E> {
    /// Id of the head range: its results go straight to `out`.
    head: u64,
    head_outstanding: usize,
    /// Ranges after the head, oldest first; range `head + 1 + i` is `pending[i]`.
    pending: VecDeque<Range<F, E>>,
    out: VecDeque<Out<F, E>>,
    /// Losses of the head range not yet output.
    lost: Runs,
    events_in_out: usize,
    /// Frames in `out` and parked in pending ranges.
    frames_waiting: usize,
}

impl<F, E> Default for Order<F, E> {
    fn default() -> Self {
        Order {
            head: 0,
            head_outstanding: 0,
            pending: VecDeque::new(),
            out: VecDeque::new(),
            lost: Runs::default(),
            events_in_out: 0,
            frames_waiting: 0,
        }
    }
}

/// A completed job.
pub(super) enum Completed<F> {
    Frame(F),
    Lost(Tag, Loss),
}

impl<F, E> Order<F, E> {
    /// A job enters; returns the range it belongs to.
    pub fn open(&mut self) -> u64 {
        match self.pending.back_mut() {
            Some(range) => range.outstanding += 1,
            None => self.head_outstanding += 1,
        }
        self.head + self.pending.len() as u64
    }

    /// A serialized event: after every job opened so far, before every job opened later.
    pub fn event(&mut self, event: E) {
        if self.pending.is_empty() && self.head_outstanding == 0 {
            self.push_event(event);
            self.head += 1;
        } else {
            self.pending.push_back(Range {
                event,
                outstanding: 0,
                frames: Vec::new(),
                lost: Runs::default(),
            });
        }
    }

    /// Lost frames that were never jobs here (a gap passing through, a frame refused by a
    /// full queue): they belong to the newest range.
    pub fn lost(&mut self, first: Tag, count: u64, reason: Loss) {
        match self.pending.back_mut() {
            Some(range) => range.lost.add(first, count, reason),
            None => self.lost.add(first, count, reason),
        }
    }

    /// A job of `range` completed.
    pub fn complete(&mut self, range: u64, result: Completed<F>) {
        if range == self.head {
            self.head_outstanding -= 1;
            match result {
                Completed::Frame(f) => {
                    self.out.push_back(Out::Frame(f));
                    self.frames_waiting += 1;
                }
                Completed::Lost(tag, reason) => self.lost.add(tag, 1, reason),
            }
            self.release();
            return;
        }
        let index = range
            .checked_sub(self.head + 1)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|&i| i < self.pending.len())
            .expect("a job completes in its own range, which is not released before it");
        let r = &mut self.pending[index];
        r.outstanding -= 1;
        match result {
            Completed::Frame(f) => {
                r.frames.push(f);
                self.frames_waiting += 1;
            }
            Completed::Lost(tag, reason) => r.lost.add(tag, 1, reason),
        }
    }

    fn push_event(&mut self, event: E) {
        let lost_before = std::mem::take(&mut self.lost);
        self.out.push_back(Out::Event { lost_before, event });
        self.events_in_out += 1;
    }

    /// Releases every range whose predecessors are complete.
    fn release(&mut self) {
        while self.head_outstanding == 0 {
            let Some(range) = self.pending.pop_front() else {
                return;
            };
            self.push_event(range.event);
            self.head += 1;
            self.head_outstanding = range.outstanding;
            self.out.extend(range.frames.into_iter().map(Out::Frame));
            self.lost = range.lost;
        }
    }

    /// The next thing to output, if any.
    pub fn next(&mut self) -> Option<Next<F, E>> {
        match self.out.front_mut() {
            Some(Out::Event { lost_before, .. }) if !lost_before.is_empty() => {
                return Some(Next::Lost(lost_before.take()));
            }
            Some(Out::Event { .. }) => {
                let Some(Out::Event { event, .. }) = self.out.pop_front() else {
                    unreachable!("front checked")
                };
                self.events_in_out -= 1;
                return Some(Next::Event(event));
            }
            _ => {}
        }
        // The head range's losses may go ahead of frames, never ahead of an event.
        if self.events_in_out == 0 && !self.lost.is_empty() {
            return Some(Next::Lost(self.lost.take()));
        }
        match self.out.pop_front()? {
            Out::Frame(f) => {
                self.frames_waiting -= 1;
                Some(Next::Frame(f))
            }
            Out::Event { .. } => unreachable!("events are handled above"),
        }
    }

    /// Whether [`Order::next`] has something.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty() || !self.lost.is_empty()
    }

    /// Nothing outstanding, parked or waiting to be output.
    pub fn is_idle(&self) -> bool {
        self.head_outstanding == 0
            && self.pending.is_empty()
            && self.out.is_empty()
            && self.lost.is_empty()
    }

    /// Finished frames not yet output (they count against the pool's bounds).
    pub fn frames_waiting(&self) -> usize {
        self.frames_waiting
    }

    /// Forgets everything (a flush or stop). Returns the frames that were waiting and the
    /// events that had not gone out, in order.
    pub fn clear(&mut self) -> (Vec<F>, Vec<E>) {
        let mut frames = Vec::new();
        let mut events = Vec::new();
        for o in self.out.drain(..) {
            match o {
                Out::Frame(f) => frames.push(f),
                Out::Event { event, .. } => events.push(event),
            }
        }
        // Ranges of jobs still running are gone (their results are discarded by the pool):
        // new jobs start after all of them.
        self.head += self.pending.len() as u64 + 1;
        for r in self.pending.drain(..) {
            frames.extend(r.frames);
            events.push(r.event);
        }
        self.head_outstanding = 0;
        self.lost = Runs::default();
        self.events_in_out = 0;
        self.frames_waiting = 0;
        (frames, events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(seq: u64) -> Tag {
        Tag { epoch: 0, seq }
    }

    fn drain(o: &mut Order<u64, &'static str>) -> Vec<String> {
        std::iter::from_fn(|| o.next())
            .map(|n| match n {
                Next::Frame(f) => f.to_string(),
                Next::Event(e) => e.to_string(),
                Next::Lost(runs) => runs
                    .iter()
                    .map(|r| format!("lost{}x{}", r.first.seq, r.count))
                    .collect::<Vec<_>>()
                    .join(","),
            })
            .collect()
    }

    #[test]
    fn results_of_the_head_range_leave_in_completion_order() {
        let mut o = Order::default();
        let r: Vec<u64> = (0..3).map(|_| o.open()).collect();
        o.complete(r[2], Completed::Frame(2));
        o.complete(r[0], Completed::Frame(0));
        assert_eq!(drain(&mut o), ["2", "0"]);
        o.complete(r[1], Completed::Frame(1));
        assert_eq!(drain(&mut o), ["1"]);
        assert!(o.is_idle());
    }

    #[test]
    fn an_event_waits_for_earlier_jobs_and_later_jobs_wait_for_it() {
        let mut o = Order::default();
        let a = o.open();
        o.event("caps");
        let b = o.open();
        let c = o.open();
        o.complete(b, Completed::Frame(1));
        o.complete(c, Completed::Lost(tag(9), Loss::Leaked));
        assert!(drain(&mut o).is_empty(), "nothing before job 0 completes");
        assert_eq!(o.frames_waiting(), 1);
        o.complete(a, Completed::Frame(0));
        assert_eq!(drain(&mut o), ["0", "caps", "lost9x1", "1"]);
        assert!(o.is_idle());
    }

    #[test]
    fn losses_go_ahead_of_frames_but_never_ahead_of_an_event() {
        let mut o = Order::default();
        let a = o.open();
        let b = o.open();
        o.complete(a, Completed::Frame(0));
        o.lost(tag(5), 1, Loss::Leaked);
        assert_eq!(drain(&mut o), ["lost5x1", "0"]);
        o.event("eos");
        o.lost(tag(7), 1, Loss::Leaked);
        o.complete(b, Completed::Lost(tag(1), Loss::Timeout));
        assert_eq!(drain(&mut o), ["lost1x1", "eos", "lost7x1"]);
    }

    #[test]
    fn consecutive_losses_merge_into_runs() {
        let mut runs = Runs::default();
        for seq in [3, 4, 5, 2, 9] {
            runs.add(tag(seq), 1, Loss::Leaked);
        }
        runs.add(tag(6), 1, Loss::Timeout);
        runs.add(Tag { epoch: 1, seq: 6 }, 1, Loss::Leaked);
        let got: Vec<_> = runs
            .take()
            .iter()
            .map(|r| (r.first.epoch, r.first.seq, r.count, r.reason))
            .collect();
        assert_eq!(
            got,
            [
                (0, 2, 4, Loss::Leaked),
                (0, 9, 1, Loss::Leaked),
                (0, 6, 1, Loss::Timeout),
                (1, 6, 1, Loss::Leaked)
            ]
        );
    }

    #[test]
    fn losses_in_any_order_merge_and_stay_bounded() {
        let mut runs = Runs::default();
        // A permutation of 0..10007 that scatters neighbours far apart.
        let n = 10_007u64;
        let mut most = 0;
        for i in 0..n {
            runs.add(tag(i * 7_919 % n), 1, Loss::Leaked);
            most = most.max(runs.runs.len());
        }
        assert_eq!(runs.frames(), n);
        assert!(most < n as usize / 2, "{most} runs at once");
        assert_eq!(
            runs.take(),
            [Run {
                first: tag(0),
                count: n,
                reason: Loss::Leaked
            }]
        );
    }

    #[test]
    fn clear_returns_what_did_not_leave() {
        let mut o = Order::default();
        let a = o.open();
        o.event("caps");
        let b = o.open();
        o.complete(b, Completed::Frame(1));
        let (frames, events) = o.clear();
        assert_eq!((frames, events), (vec![1], vec!["caps"]));
        assert!(o.is_idle());
        // A job of a cleared range is not completed through the order any more; new jobs
        // start a fresh range.
        let c = o.open();
        assert!(c > a && c > b);
        o.complete(c, Completed::Frame(2));
        assert_eq!(drain(&mut o), ["2"]);
    }
}
