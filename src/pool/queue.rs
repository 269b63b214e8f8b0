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

/// What is outstanding besides the queue: jobs in flight.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Outside {
    pub count: u64,
    pub bytes: u64,
    pub oldest_running_time: Option<u64>,
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

    /// Whether one more job of `bytes` at `running_time` would exceed `limits`, counting
    /// the jobs `outside` the queue too. An empty pool always takes a job, however big.
    pub fn is_full(&self, limits: &Limits, outside: Outside, running_time: Option<u64>) -> bool {
        let count = self.entries.len() as u64 + outside.count;
        if count == 0 {
            return false;
        }
        if limits.max_buffers > 0 && count >= limits.max_buffers {
            return true;
        }
        if limits.max_bytes > 0 && self.bytes + outside.bytes >= limits.max_bytes {
            return true;
        }
        if limits.max_time > 0 {
            let oldest = self
                .entries
                .iter()
                .filter_map(|e| e.running_time)
                .chain(outside.oldest_running_time)
                .min();
            if let (Some(oldest), Some(now)) = (oldest, running_time)
                && now.saturating_sub(oldest) >= limits.max_time
            {
                return true;
            }
        }
        false
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
    fn buffers_bound_counts_in_flight_jobs() {
        let mut q = BoundedQueue::new();
        let limits = Limits {
            max_buffers: 3,
            max_bytes: 0,
            max_time: 0,
        };
        q.push_back(entry(1, 0));
        let two_in_flight = Outside {
            count: 2,
            ..Outside::default()
        };
        assert!(q.is_full(&limits, two_in_flight, Some(0)));
        assert!(!q.is_full(&limits, Outside::default(), Some(0)));
    }

    #[test]
    fn bytes_and_time_bounds() {
        let mut q = BoundedQueue::new();
        let limits = Limits {
            max_buffers: 0,
            max_bytes: 100,
            max_time: 50,
        };
        q.push_back(entry(60, 10));
        assert!(!q.is_full(&limits, Outside::default(), Some(20)));
        assert!(
            q.is_full(&limits, Outside::default(), Some(60)),
            "50 ns of running time queued"
        );
        let big_in_flight = Outside {
            count: 1,
            bytes: 40,
            oldest_running_time: Some(15),
        };
        assert!(q.is_full(&limits, big_in_flight, Some(20)), "60 + 40 bytes");
        q.pop_front();
        assert!(
            !q.is_full(&limits, Outside::default(), Some(1_000)),
            "an empty pool takes anything"
        );
    }
}
