//! The queue of jobs waiting for a worker, and the bounds that count queued plus in-flight
//! jobs.

use std::collections::VecDeque;

/// Bounds on queued plus in-flight jobs; 0 means unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_buffers: u64,
    pub max_bytes: u64,
    /// Nanoseconds between the oldest and the newest job's running time.
    pub max_time: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_buffers: 30,
            max_bytes: 0,
            max_time: 0,
        }
    }
}

/// What a full queue does with a new job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaky {
    /// The producer waits for room (backpressure).
    None,
    /// The new job is dropped.
    Upstream,
    /// The oldest queued job is dropped.
    Downstream,
}

pub(super) struct Entry<T> {
    pub item: T,
    pub bytes: u64,
    pub running_time: Option<u64>,
}

/// Jobs waiting for a worker, oldest first.
pub(super) struct BoundedQueue<T> {
    entries: VecDeque<Entry<T>>,
    bytes: u64,
}

/// What counts against the bounds besides the queue: jobs in flight, and finished frames
/// waiting for their turn to be pushed.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Waiting {
    pub in_flight: u64,
    pub finished: u64,
    pub finished_bytes: u64,
    pub oldest_finished: Option<u64>,
}

impl<T> BoundedQueue<T> {
    pub fn new() -> Self {
        BoundedQueue {
            entries: VecDeque::new(),
            bytes: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn push_back(&mut self, entry: Entry<T>) {
        self.bytes += entry.bytes;
        self.entries.push_back(entry);
    }

    pub fn pop_front(&mut self) -> Option<Entry<T>> {
        let entry = self.entries.pop_front()?;
        self.bytes -= entry.bytes;
        Some(entry)
    }

    pub fn drain(&mut self) -> impl Iterator<Item = Entry<T>> + '_ {
        self.bytes = 0;
        self.entries.drain(..)
    }

    pub fn front(&self) -> Option<&Entry<T>> {
        self.entries.front()
    }

    /// Whether one more job at `running_time` would exceed `limits`. Buffers count queued,
    /// in-flight and finished-but-not-pushed frames; bytes and time count queued and
    /// finished ones only: work in flight is bounded by the workers, and one slow job must
    /// neither push the others out nor keep idle workers from new ones. A pool with nothing
    /// queued or waiting takes a job, however big.
    pub fn is_full(&self, limits: &Limits, waiting: Waiting, running_time: Option<u64>) -> bool {
        let held = self.entries.len() as u64 + waiting.finished;
        if limits.max_buffers > 0 && held + waiting.in_flight >= limits.max_buffers {
            return true;
        }
        if held == 0 {
            return false;
        }
        if limits.max_bytes > 0 && self.bytes + waiting.finished_bytes >= limits.max_bytes {
            return true;
        }
        if limits.max_time > 0 {
            let oldest = self
                .entries
                .iter()
                .filter_map(|e| e.running_time)
                .chain(waiting.oldest_finished)
                .min();
            if let (Some(oldest), Some(now)) = (oldest, running_time)
                && now.saturating_sub(oldest) >= limits.max_time
            {
                return true;
            }
        }
        false
    }

    /// Whether `limits` are exceeded even with nothing queued: then dropping queued jobs
    /// cannot make room.
    pub fn full_without_queue(
        limits: &Limits,
        waiting: Waiting,
        running_time: Option<u64>,
    ) -> bool {
        BoundedQueue::<()>::new().is_full(limits, waiting, running_time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(bytes: u64, rt: u64) -> Entry<()> {
        Entry {
            item: (),
            bytes,
            running_time: Some(rt),
        }
    }

    #[test]
    fn buffers_bound_counts_in_flight_and_finished_jobs() {
        let mut q = BoundedQueue::new();
        let limits = Limits {
            max_buffers: 3,
            max_bytes: 0,
            max_time: 0,
        };
        q.push_back(entry(1, 0));
        let busy = Waiting {
            in_flight: 1,
            finished: 1,
            ..Waiting::default()
        };
        assert!(q.is_full(&limits, busy, Some(0)));
        assert!(!q.is_full(&limits, Waiting::default(), Some(0)));
        let only_in_flight = Waiting {
            in_flight: 3,
            ..Waiting::default()
        };
        assert!(BoundedQueue::<()>::new().is_full(&limits, only_in_flight, Some(0)));
    }

    #[test]
    fn bytes_and_time_bounds_leave_work_in_flight_out() {
        let mut q = BoundedQueue::new();
        let limits = Limits {
            max_buffers: 0,
            max_bytes: 100,
            max_time: 50,
        };
        q.push_back(entry(60, 10));
        assert!(!q.is_full(&limits, Waiting::default(), Some(20)));
        assert!(
            q.is_full(&limits, Waiting::default(), Some(60)),
            "50 ns of running time queued"
        );
        let finished = Waiting {
            finished: 1,
            finished_bytes: 40,
            oldest_finished: Some(15),
            ..Waiting::default()
        };
        assert!(
            q.is_full(&limits, finished, Some(20)),
            "60 + 40 bytes waiting"
        );
        let finished_old = Waiting {
            finished: 1,
            oldest_finished: Some(0),
            ..Waiting::default()
        };
        assert!(
            q.is_full(&limits, finished_old, Some(50)),
            "50 ns since the oldest"
        );
        // Frames in flight are bounded by the workers: a big or old one does not fill.
        let big_in_flight = Waiting {
            in_flight: 4,
            ..Waiting::default()
        };
        assert!(!q.is_full(&limits, big_in_flight, Some(20)));
        q.pop_front();
        assert!(
            !q.is_full(&limits, Waiting::default(), Some(1_000)),
            "an empty pool takes anything"
        );
    }
}
