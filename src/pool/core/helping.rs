//! Workers helping with other workers' jobs: the parts of a job (see `pool::parts`) taken
//! by idle workers, counted toward the job's member, and replaced as stuck when the job is
//! given up on.

use std::sync::MutexGuard;

use super::*;
use crate::pool::parts::Host;

/// A worker running a part of another worker's job.
pub(super) struct Helping {
    job: Option<u64>,
    /// The member whose job it is.
    member: Option<MemberId>,
    stuck: bool,
}

thread_local! {
    /// The in-flight id of the job this worker thread is processing, for the parts it posts.
    pub(super) static CURRENT_JOB: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
    /// This worker thread's number (`None` on other threads).
    pub(super) static CURRENT_WORKER: std::cell::Cell<Option<u32>> = const { std::cell::Cell::new(None) };
}

/// The number of the crew worker running on this thread (`None` on other threads): a part
/// of a job may run on another worker than the job's.
pub fn current_worker() -> Option<u32> {
    CURRENT_WORKER.with(|c| c.get())
}

impl<W: Work> State<W> {
    /// The first queued part an idle worker may take: one of a job still running (a part of
    /// a job given up on or flushed is left to its caller, which takes it back), whose
    /// member is below its `max_in_flight` with the workers it has.
    pub(super) fn takable_part(&self) -> Option<usize> {
        self.parts
            .iter()
            .position(|(_, job, _)| self.part_takable(*job))
    }

    /// Whether an idle worker may take a part of `job` now: the job still runs, and its
    /// member takes work (not flushing, leaving, or held back with a thread stuck), is below
    /// its `max_in_flight`, and — in a shared crew where another member has jobs waiting —
    /// below its even share of the workers, so that one member's parts do not keep the
    /// others' jobs waiting.
    fn part_takable(&self, job: Option<u64>) -> bool {
        let Some(job) = job else {
            return true;
        };
        let Some(f) = self.in_flight.get(&job) else {
            return false;
        };
        let Some(m) = self.members.get(&f.member) else {
            return false;
        };
        let busy = m.running + m.helping;
        if f.state != Flight::Running || m.flushing || m.removed || m.quarantined() {
            return false;
        }
        if m.config.max_in_flight > 0 && busy >= m.config.max_in_flight {
            return false;
        }
        let others_waiting = self
            .members
            .iter()
            .any(|(&id, other)| id != f.member && other.takable() > 0);
        if others_waiting {
            let busy_members = self
                .members
                .values()
                .filter(|o| o.running + o.helping > 0 || o.takable() > 0)
                .count()
                .max(1);
            return busy < (self.live / busy_members).max(1);
        }
        true
    }
}

impl<W: Work> Shared<W> {
    /// Runs the queued part at `at` on worker `number`, counted toward its job's member;
    /// returns the lock, or `None` when the worker is to exit (it was counted stuck while in
    /// the part, and the crew is not short).
    pub(super) fn help<'a>(
        &'a self,
        number: u32,
        at: usize,
        mut state: MutexGuard<'a, State<W>>,
    ) -> Option<MutexGuard<'a, State<W>>> {
        let (_, job, part) = state.parts.remove(at).expect("a part at that place");
        let member = job.and_then(|j| state.in_flight.get(&j)).map(|f| f.member);
        if let Some(m) = member {
            state.member(m).helping += 1;
        }
        state.helping.insert(
            number,
            Helping {
                job,
                member,
                stuck: false,
            },
        );
        // Jobs queued meanwhile, that the worker woken for this part will not take.
        if !state.covered() {
            self.wake_one(&mut state);
        }
        drop(state);
        // A part that posts parts of its own posts them as parts of the same job.
        CURRENT_JOB.with(|c| c.set(job));
        part();
        CURRENT_JOB.with(|c| c.set(None));
        state = self.lock();
        let helped = state.helping.remove(&number);
        if let Some(m) = helped.as_ref().and_then(|h| h.member)
            && let Some(mm) = state.members.get_mut(&m)
        {
            mm.helping -= 1;
            // Below its `max_in_flight` again, it may have jobs to take; this
            // worker may leave below, so another is woken for them.
            state.list(m);
            if !state.covered() {
                self.wake_one(&mut state);
            }
        }
        if helped.is_some_and(|h| h.stuck) {
            // Counted stuck (and replaced) while the job it helped was given up on:
            // it goes on only if the crew is short, as a stuck worker does.
            state.stuck -= 1;
            if state.stopping || state.live >= state.config.workers {
                return None;
            }
            state.live += 1;
        }
        Some(state)
    }

    /// Counts as stuck the workers running parts of the jobs `given_up` (timed out, or
    /// abandoned and hung): they are part of a hung job, and are replaced as its worker is.
    /// Returns how many.
    pub(super) fn stuck_helpers(state: &mut State<W>, given_up: &[u64]) -> usize {
        let mut freed = Vec::new();
        for h in state.helping.values_mut() {
            if !h.stuck && h.job.is_some_and(|j| given_up.contains(&j)) {
                h.stuck = true;
                // Its member gets the slot back now, as for the job's own worker (a hung
                // part must not keep the member below its `max_in_flight` for good).
                freed.extend(h.member.take());
            }
        }
        let count = freed.len();
        for member in freed {
            if let Some(m) = state.members.get_mut(&member) {
                m.helping -= 1;
            }
        }
        count
    }
}

impl<W: Work> Host for Shared<W> {
    fn new_set(&self) -> u64 {
        let mut state = self.lock();
        state.next_set += 1;
        state.next_set
    }

    fn post(&self, set: u64, parts: Vec<Part>) {
        let job = CURRENT_JOB.with(|c| c.get());
        let mut state = self.lock();
        let count = parts.len();
        state
            .parts
            .extend(parts.into_iter().map(|part| (set, job, part)));
        // As many as may take one now (none when the job's member is at its bound).
        let wanted = if state.part_takable(job) { count } else { 0 };
        for _ in 0..wanted {
            if !self.wake_one(&mut state) {
                break;
            }
        }
    }

    fn take_back(&self, set: u64) -> Option<Part> {
        let mut state = self.lock();
        let at = state.parts.iter().position(|(s, _, _)| *s == set)?;
        state.parts.remove(at).map(|(_, _, part)| part)
    }
}
