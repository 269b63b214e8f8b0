//! Fan-out: one job's independent parts (the crops of a frame's regions) run at once, on
//! the worker that runs the job and on the crew's idle workers.
//!
//! The worker that calls [`Helpers::run`] queues all parts but the first with the crew, runs
//! the first, then takes back and runs every part no idle worker took, and only then waits
//! for those that others are running. It never waits for a part nobody runs: without idle
//! workers, it runs them all itself, one after another. Idle workers take queued parts
//! before new jobs (a part belongs to a job already in flight, whose frame waits for it),
//! in the order they were queued — but only parts of a job still running, of a member
//! that takes work, each worker counting toward the member's `max_in_flight`, and, in a
//! shared crew while another member has jobs waiting, up to the member's even share of the
//! workers. Parts no worker may take are left to the caller.
//!
//! A part runs outside every lock of the crew; a panicking part is caught and answered
//! `None`. A part that hangs holds the thread that runs it, and the job waits for it: the
//! job's `timeout` bounds that wait as it bounds any handler. At the deadline the job is
//! lost as timed out, and its worker and every worker inside one of its parts are counted
//! stuck and replaced; each leaves when its part returns (or goes on, if the crew is short
//! then).

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, Weak};

/// A queued part, its result written where its caller waits for it.
pub(super) type Part = Box<dyn FnOnce() + Send>;

/// What [`Helpers`] needs of a crew.
pub(super) trait Host: Send + Sync {
    /// A number no other call to [`Helpers::run`] of this crew uses.
    fn new_set(&self) -> u64;
    /// Queues the parts of set `set` for idle workers, and wakes as many as there are parts
    /// (or as many as are idle).
    fn post(&self, set: u64, parts: Vec<Part>);
    /// Takes back a part of `set` that no worker took yet.
    fn take_back(&self, set: u64) -> Option<Part>;
}

/// Runs a job's parts on free workers of the crew that runs the job (see the module
/// documentation). Cheap to clone; it does not keep the crew alive: once the crew is gone,
/// the parts run on the calling thread.
#[derive(Clone)]
pub struct Helpers {
    host: Weak<dyn Host>,
}

impl std::fmt::Debug for Helpers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Helpers").finish_non_exhaustive()
    }
}

/// The results of one call to [`Helpers::run`], and how many are in.
struct Results<T> {
    slots: Mutex<(Vec<Option<T>>, usize)>,
    all_in: Condvar,
}

impl<T> Results<T> {
    fn put(&self, index: usize, value: Option<T>) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.0[index] = value;
        slots.1 += 1;
        self.all_in.notify_all();
    }
}

impl Helpers {
    pub(super) fn new(host: Weak<dyn Host>) -> Helpers {
        Helpers { host }
    }

    /// Helpers that run every part on the calling thread.
    pub fn none() -> Helpers {
        struct Nobody;
        impl Host for Nobody {
            fn new_set(&self) -> u64 {
                0
            }
            fn post(&self, _: u64, _: Vec<Part>) {}
            fn take_back(&self, _: u64) -> Option<Part> {
                None
            }
        }
        Helpers {
            host: Weak::<Nobody>::new(),
        }
    }

    /// Runs every part, at once where workers are free, and returns their results in the
    /// order of `parts` (`None`: the part panicked). Returns when all have run.
    pub fn run<T: Send + 'static>(
        &self,
        parts: Vec<Box<dyn FnOnce() -> T + Send>>,
    ) -> Vec<Option<T>> {
        let count = parts.len();
        let results = Arc::new(Results {
            slots: Mutex::new(((0..count).map(|_| None).collect::<Vec<_>>(), 0)),
            all_in: Condvar::new(),
        });
        let mut wrapped: Vec<Part> = parts
            .into_iter()
            .enumerate()
            .map(|(index, part)| {
                let results = results.clone();
                Box::new(move || {
                    let value = std::panic::catch_unwind(AssertUnwindSafe(part)).ok();
                    results.put(index, value);
                }) as Part
            })
            .collect();
        let host = self.host.upgrade().filter(|_| count > 1);
        match host {
            None => wrapped.into_iter().for_each(|part| part()),
            Some(host) => {
                let set = host.new_set();
                let first = wrapped.remove(0);
                host.post(set, wrapped);
                first();
                while let Some(part) = host.take_back(set) {
                    part();
                }
            }
        }
        let mut slots = results.slots.lock().unwrap_or_else(|p| p.into_inner());
        while slots.1 < count {
            slots = results
                .all_in
                .wait(slots)
                .unwrap_or_else(|p| p.into_inner());
        }
        std::mem::take(&mut slots.0)
    }
}
