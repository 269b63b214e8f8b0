//! Percentiles over a sliding window of latencies, for stats.

use std::collections::VecDeque;

/// The last `capacity` samples (ns) and the largest ever seen.
#[derive(Debug, Clone)]
pub(crate) struct Latencies {
    samples: VecDeque<u64>,
    capacity: usize,
    max: u64,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies::new(1024)
    }
}

impl Latencies {
    pub fn new(capacity: usize) -> Self {
        Latencies {
            samples: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
            max: 0,
        }
    }

    pub fn record(&mut self, ns: u64) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(ns);
        self.max = self.max.max(ns);
    }

    /// The nearest-rank percentiles `ps` (0–100) of the window; zeros when empty.
    pub fn percentiles<const N: usize>(&self, ps: [u32; N]) -> [u64; N] {
        let mut sorted: Vec<u64> = self.samples.iter().copied().collect();
        sorted.sort_unstable();
        ps.map(|p| {
            if sorted.is_empty() {
                0
            } else {
                let rank = (sorted.len() * p as usize)
                    .div_ceil(100)
                    .clamp(1, sorted.len());
                sorted[rank - 1]
            }
        })
    }

    /// The largest sample since creation (or the last reset).
    pub fn max(&self) -> u64 {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::Latencies;

    #[test]
    fn nearest_rank_percentiles_over_the_window() {
        let mut l = Latencies::new(100);
        assert_eq!(l.percentiles([50, 99]), [0, 0]);
        for ns in 1..=100 {
            l.record(ns);
        }
        assert_eq!(l.percentiles([50, 99, 100]), [50, 99, 100]);
        // The window slides; the max stays.
        for _ in 0..100 {
            l.record(7);
        }
        assert_eq!(l.percentiles([50, 99]), [7, 7]);
        assert_eq!(l.max(), 100);
    }
}
