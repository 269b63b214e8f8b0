//! What members do on their crew: join, submit, events and gaps, the pusher's place for a
//! serialized query, flush and resume, leave; and the crew's stop.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::*;

/// What members do: the calls behind [`crate::pool::Pool`] and [`crate::pool::Crew`].
impl<W: Work> Shared<W> {
    /// A new member on the crew; `None` once the crew is stopping.
    pub(in crate::pool) fn join(
        &self,
        work: Arc<W>,
        config: MemberConfig,
    ) -> Result<MemberId, String> {
        let mut state = self.lock();
        if state.stopping {
            return Err("the worker pool is stopping".into());
        }
        if !state.shared && !state.members.is_empty() {
            return Err("a private pool's crew takes no other member".into());
        }
        let id = state.next_member;
        state.next_member += 1;
        let quarantine = state.shared;
        state
            .members
            .insert(id, Member::new(work, config, quarantine));
        Ok(id)
    }

    pub(in crate::pool) fn submit(
        self: &Arc<Self>,
        id: MemberId,
        job: W::Job,
        tag: Tag,
        bytes: u64,
        running_time: Option<u64>,
    ) -> Submitted {
        let mut state = self.lock();
        let mut leaked = 0;
        // Jobs a leak dropped: dropped once the lock is let go (their buffers may call out).
        let mut dropped = Vec::new();
        loop {
            let stopping = state.stopping;
            let Some(m) = state.members.get_mut(&id) else {
                return Submitted::Stopped;
            };
            if !m.takes_input(stopping) {
                // A producer that waited past its member's leave lets it go.
                self.forget_if_done(&mut state, id);
                return Submitted::Stopped;
            }
            let waiting = m.waiting();
            let ahead = m.too_far_ahead(tag);
            let full = ahead.is_some() || m.queue.is_full(&m.config.limits, waiting, running_time);
            if !full {
                break;
            }
            // Too far ahead of an oldest frame that is in flight or finished, or full with
            // frames in flight and finished alone: dropping queued frames would not make
            // room, the new one goes.
            let drop_new = ahead == Some(false)
                || BoundedQueue::<Queued<W::Job>>::full_without_queue(
                    &m.config.limits,
                    waiting,
                    running_time,
                );
            match m.config.leaky {
                Leaky::None => {
                    if m.full_waiters == 0 {
                        m.full_since = m.left;
                    }
                    m.full_waiters += 1;
                    state = self.wait_room(state, id, None);
                    state.member(id).full_waiters -= 1;
                }
                Leaky::Downstream if !drop_new && !m.queue.is_empty() => {
                    let old = m.queue.pop_front().expect("checked not empty").item;
                    m.stats.leaked += 1;
                    leaked += 1;
                    m.outstanding_out(old.tag);
                    m.order
                        .complete(old.range, Completed::Lost(old.tag, Loss::Leaked));
                    m.refresh_gauges();
                    dropped.push(old.job);
                }
                Leaky::Upstream | Leaky::Downstream => {
                    // The new frame goes: the queue is full, or (downstream) nothing queued
                    // would make room.
                    m.stats.submitted += 1;
                    m.stats.leaked += 1;
                    m.order.lost(tag, 1, Loss::Leaked);
                    drop(self.hand_output(state, id));
                    drop(dropped);
                    return Submitted::Leaked;
                }
            }
        }
        let m = state.member(id);
        m.stats.submitted += 1;
        m.outstanding_in(tag);
        let range = m.order.open();
        m.queue.push_back(Entry {
            item: Queued {
                job,
                tag,
                range,
                submitted: Instant::now(),
            },
            bytes,
            running_time,
        });
        m.refresh_gauges();
        state.list(id);
        // Short of workers (a replacement could not start before): try again.
        if state.live + state.stuck < state.config.workers {
            self.spawn_worker(&mut state);
        }
        // Wake an idle worker unless enough are already on their way to the queues.
        if !state.covered() && !self.wake_one(&mut state) {
            // Nobody idle: grow while the queues stay deeper than the workers (not past the
            // cap on stuck threads: a hung handler would take every new one).
            if state.takable() > state.live
                && state.live < state.config.max_workers
                && state.stuck <= state.max_stuck()
            {
                self.spawn_worker(&mut state);
            }
        }
        // No worker will take it (all stuck, or its member held back): it times out where it
        // waits, and the watchdog must wake for that.
        let no_workers = state.live == 0;
        let m = state.member(id);
        if let Some(timeout) = m.config.timeout
            && (no_workers || m.quarantined())
        {
            let at = Instant::now() + timeout;
            if state.watchdog_at.is_none_or(|w| at < w) {
                self.watchdog.notify_one();
            }
        }
        state = self.hand_output(state, id);
        drop(self.tell(state));
        drop(dropped);
        Submitted::Queued { leaked }
    }

    /// Runs `f` on the member if it takes input now, then makes sure its output gets a
    /// pusher; whether it took it.
    fn to_member(&self, id: MemberId, f: impl FnOnce(&mut Member<W>)) -> bool {
        let mut state = self.lock();
        let stopping = state.stopping;
        match state.members.get_mut(&id) {
            Some(m) if m.takes_input(stopping) => f(m),
            _ => return false,
        }
        drop(self.hand_output(state, id));
        true
    }

    pub(in crate::pool) fn event(&self, id: MemberId, event: W::Event) -> bool {
        self.to_member(id, |m| m.order.event(event))
    }

    pub(in crate::pool) fn lost(&self, id: MemberId, first: Tag, count: u64, reason: Loss) -> bool {
        self.to_member(id, |m| m.order.lost(first, count, reason))
    }

    /// Waits until the member has output everything submitted so far, then makes the caller
    /// its pusher; `false` when a flush or stop came first. [`Shared::release`] gives the
    /// place back.
    pub(in crate::pool) fn become_pusher(&self, id: MemberId) -> bool {
        let mut state = self.lock();
        loop {
            let stopping = state.stopping;
            let Some(m) = state.members.get_mut(&id) else {
                return false;
            };
            if !m.takes_input(stopping) {
                self.forget_if_done(&mut state, id);
                return false;
            }
            if m.is_idle() {
                break;
            }
            state = self.hand_output(state, id);
            if state.member(id).is_idle() {
                break;
            }
            state = self.wait_room(state, id, None);
        }
        state.member(id).pushing = true;
        true
    }

    pub(in crate::pool) fn release(&self, id: MemberId) {
        let mut state = self.lock();
        state.member(id).pushing = false;
        state = self.hand_output(state, id);
        state.notify(id);
        self.forget_if_done(&mut state, id);
    }

    /// Discards the member's queued jobs, abandons those in flight and its finished results
    /// not yet output; wakes its waiters. Returns what was discarded, to drop without the
    /// lock.
    #[allow(clippy::type_complexity)]
    fn discard(
        &self,
        state: &mut State<W>,
        id: MemberId,
    ) -> (
        Vec<Entry<Queued<W::Job>>>,
        Vec<Finished<W::Job>>,
        Vec<W::Event>,
    ) {
        let mut abandoned = 0;
        for f in state.in_flight.values_mut() {
            if f.member == id && f.state == Flight::Running {
                f.state = Flight::Abandoned;
                abandoned += 1;
            }
        }
        let m = state.member(id);
        let queued: Vec<_> = m.queue.drain().collect();
        m.running -= abandoned;
        let (finished, events) = m.order.clear();
        let count = queued.len() as u64 + abandoned as u64 + finished.len() as u64;
        m.finished_bytes = 0;
        m.finished_times.clear();
        m.outstanding.clear();
        m.generation += 1;
        m.stats.flushed += count;
        m.refresh_gauges();
        m.room.notify_all();
        // Workers woken to take its jobs go back to sleep or to other members' jobs.
        self.watchdog.notify_one();
        (queued, finished, events)
    }

    /// See [`super::Pool::flush`].
    pub(in crate::pool) fn flush(&self, id: MemberId) -> Vec<W::Event> {
        let mut state = self.lock();
        let Some(m) = state.members.get_mut(&id) else {
            return Vec::new();
        };
        m.flushing = true;
        let (queued, finished, events) = self.discard(&mut state, id);
        drop(state);
        drop(queued);
        drop(finished);
        events
    }

    /// See [`super::Pool::resume`].
    pub(in crate::pool) fn resume(&self, id: MemberId) {
        let mut state = self.lock();
        loop {
            let stopping = state.stopping;
            let Some(m) = state.members.get_mut(&id) else {
                return;
            };
            if !(m.pushing || m.reporting > 0) || stopping || m.removed {
                break;
            }
            state = self.wait_room(state, id, None);
        }
        state.member(id).flushing = false;
        state.list(id);
        self.forget_if_done(&mut state, id);
    }

    /// The member leaves: its jobs are discarded, its waiters woken, and this waits up to
    /// `grace` for its jobs in flight, and for an output in progress to return (at least
    /// [`PUSH_PATIENCE`]·10: an element stops after its pads, so its pushes return at once;
    /// nothing is output once this returns, unless a push is blocked for longer than that).
    /// Returns how many of its jobs were still running then (their results are discarded
    /// when they return), and its ledger. Later calls do nothing and return 0.
    pub(in crate::pool) fn leave(
        &self,
        id: MemberId,
        grace: Duration,
    ) -> (usize, Option<PoolStats>) {
        let now = Instant::now();
        let until = now + grace;
        let push_until = now + grace.max(PUSH_PATIENCE * 10);
        let mut state = self.lock();
        let Some(m) = state.members.get_mut(&id) else {
            return (0, None);
        };
        if m.removed {
            return (0, None);
        }
        m.removed = true;
        let discarded = self.discard(&mut state, id);
        let mut stats = state.stats(id);
        drop(state);
        drop(discarded);
        let mut state = self.lock();
        let left = loop {
            // Gone already: its last job returned meanwhile.
            let Some(m) = state.members.get(&id) else {
                break 0;
            };
            let outputting = m.pushing || m.reporting > 0;
            let in_flight = m.in_flight;
            stats = state.stats(id);
            let now = Instant::now();
            let jobs_done = in_flight == 0 || now >= until;
            let output_done = !outputting || now >= push_until;
            if (jobs_done && output_done) || state.stopping {
                break in_flight;
            }
            let wait = if outputting && now < push_until {
                push_until - now
            } else {
                until.saturating_duration_since(now)
            };
            state = self.wait_room(state, id, Some(wait));
        };
        self.forget_if_done(&mut state, id);
        (left, Some(stats))
    }

    /// Stops the crew: every member's jobs are discarded, and the workers joined — except
    /// those still busy after `grace`, left to exit when their job returns. Returns how many
    /// were left behind; 0 when already stopped.
    pub(in crate::pool) fn stop(&self, grace: Duration, watchdog: Option<JoinHandle<()>>) -> usize {
        let (handles, discarded) = {
            let mut state = self.lock();
            if state.stopping {
                return 0;
            }
            state.stopping = true;
            let ids: Vec<MemberId> = state.members.keys().copied().collect();
            let discarded: Vec<_> = ids
                .into_iter()
                .map(|id| self.discard(&mut state, id))
                .collect();
            for s in std::mem::take(&mut state.sleepers) {
                state.waking += 1;
                s.wake.notify_one();
            }
            state.notify_all();
            (std::mem::take(&mut state.handles), discarded)
        };
        drop(discarded);
        self.watchdog.notify_one();
        // Workers busy with a job return when it does; wait for them (and for the watchdog,
        // which may be outputting for a crew without workers) up to the grace.
        let until = Instant::now() + grace;
        if let Some(w) = watchdog {
            while !w.is_finished() && Instant::now() < until {
                std::thread::park_timeout(Duration::from_millis(1));
            }
            if w.is_finished() {
                let _ = w.join();
            }
        }
        let mut state = self.lock();
        while state.threads > 0 {
            let now = Instant::now();
            if now >= until {
                break;
            }
            state.exit_waiters += 1;
            state = self
                .exits
                .wait_timeout(state, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            state.exit_waiters -= 1;
        }
        // Threads counted out are past their last lock and about to return: join them.
        let all_returned = state.threads == 0;
        drop(state);
        let mut left = 0;
        for handle in handles {
            if all_returned || handle.is_finished() {
                let _ = handle.join();
            } else {
                left += 1;
            }
        }
        left
    }

    /// Waits up to `timeout` for `condition` on the member's stats to hold; whether it did.
    pub(in crate::pool) fn wait_for(
        &self,
        id: MemberId,
        timeout: Duration,
        condition: impl Fn(&PoolStats) -> bool,
    ) -> bool {
        let until = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if condition(&state.stats(id)) {
                self.forget_if_done(&mut state, id);
                return true;
            }
            let now = Instant::now();
            if now >= until {
                self.forget_if_done(&mut state, id);
                return false;
            }
            // Crew gauges change without the member's waiters being told: look again
            // within a millisecond.
            let wait = (until - now).min(Duration::from_millis(1));
            if state.members.contains_key(&id) {
                state = self.wait_room(state, id, Some(wait));
            } else {
                drop(state);
                std::thread::park_timeout(wait);
                state = self.lock();
            }
        }
    }
}
