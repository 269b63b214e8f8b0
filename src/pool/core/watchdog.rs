//! The watchdog: jobs past `timeout` lost in their place and their threads replaced, queued
//! jobs that no worker will take timed out where they wait, pushes blocked past
//! [`PUSH_PATIENCE`] replaced (shared crews), and output pushed when no worker is left.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

impl<W: Work> Shared<W> {
    pub(in crate::pool) fn watchdog_loop(self: Arc<Self>) {
        let mut state = self.lock();
        loop {
            // Told first: `tell` releases the lock, and a stop that comes meanwhile must be
            // seen before the wait below (nothing else releases the lock before it).
            state = self.tell(state);
            if state.stopping {
                return;
            }
            let now = Instant::now();
            let mut next: Option<Instant> = None;
            let mut expired = Vec::new();
            let mut hung_members = Vec::new();
            let mut hung = 0;
            let mut given_up = Vec::new();
            for (&id, f) in state.in_flight.iter_mut() {
                match (f.state, f.deadline) {
                    (Flight::Running, Some(d)) if d <= now => {
                        f.state = Flight::TimedOut;
                        expired.push((id, f.member, f.tag, f.range));
                        given_up.push(id);
                    }
                    (Flight::Abandoned, Some(d)) if d <= now => {
                        f.state = Flight::AbandonedHung;
                        hung_members.push(f.member);
                        hung += 1;
                        given_up.push(id);
                    }
                    (Flight::Running | Flight::Abandoned, Some(d)) => {
                        next = Some(next.map_or(d, |n| n.min(d)))
                    }
                    _ => {}
                }
            }
            // Pushes blocked past the patience (a shared crew): their workers are replaced,
            // so that one member's blocked downstream costs the others nothing.
            let mut blocked = 0;
            if state.shared {
                for m in state.members.values_mut() {
                    if let Some(since) = m.push_since
                        && !m.push_replaced
                        && now.duration_since(since) >= PUSH_PATIENCE
                    {
                        m.push_replaced = true;
                        m.stats.blocked_pushes += 1;
                        blocked += 1;
                    }
                }
                // Looked at again within half the patience.
                let tick = now + PUSH_PATIENCE / 2;
                next = Some(next.map_or(tick, |n| n.min(tick)));
            }
            // Workers inside parts of those jobs are as stuck as the jobs' own.
            let helpers = Self::stuck_helpers(&mut state, &given_up);
            if !expired.is_empty() || hung > 0 || blocked > 0 {
                // The stuck workers no longer count; replacements keep the crew's strength,
                // up to a cap on stuck threads.
                let stuck = expired.len() + hung + helpers;
                state.live -= stuck + blocked;
                state.stuck += stuck;
                state.blocked += blocked;
                let mut touched = Vec::new();
                for member in hung_members {
                    state.member(member).stuck += 1;
                }
                for (_, member, tag, range) in expired {
                    let m = state.member(member);
                    m.stuck += 1;
                    m.running -= 1;
                    m.stats.timeout += 1;
                    m.outstanding_out(tag);
                    m.order.complete(range, Completed::Lost(tag, Loss::Timeout));
                    m.refresh_gauges();
                    touched.push(member);
                }
                self.replace_workers(&mut state);
                touched.sort_unstable();
                touched.dedup();
                for member in touched {
                    state.list(member);
                    state = self.hand_output_as(state, member, true);
                    state.notify(member);
                }
                continue;
            }
            // With no worker left to take them, or held back while their member has a
            // thread stuck in a hung handler, queued jobs time out where they wait.
            let quarantined = state.members.values().any(Member::quarantined);
            if state.live == 0 || quarantined {
                let mut lost = Vec::new();
                let ids: Vec<MemberId> = state.members.keys().copied().collect();
                let no_workers = state.live == 0;
                for member in ids {
                    // Outputs below let go of the lock: a member may be gone by now.
                    let Some(m) = state.members.get_mut(&member) else {
                        continue;
                    };
                    let Some(timeout) = m.config.timeout.filter(|_| no_workers || m.quarantined())
                    else {
                        continue;
                    };
                    let before = lost.len();
                    while let Some(front) = m.queue.front()
                        && front.item.submitted + timeout <= now
                    {
                        let item = m.queue.pop_front().expect("front checked").item;
                        m.stats.timeout += 1;
                        m.outstanding_out(item.tag);
                        m.order
                            .complete(item.range, Completed::Lost(item.tag, Loss::Timeout));
                        lost.push(item);
                    }
                    if lost.len() > before {
                        m.refresh_gauges();
                        state = self.hand_output_as(state, member, true);
                        state.notify(member);
                    }
                    if let Some(front) = state.members.get(&member).and_then(|m| m.queue.front()) {
                        let d = front.item.submitted + timeout;
                        next = Some(next.map_or(d, |n| n.min(d)));
                    }
                }
                if !lost.is_empty() {
                    // The jobs (their buffers may call out) are dropped without the lock.
                    drop(state);
                    drop(lost);
                    state = self.lock();
                    continue;
                }
            }
            if state.stuck < state.max_stuck() {
                state.warned_stuck = false;
            }
            // Output handed to the watchdog (no worker left to push it).
            if state.live == 0
                && let Some(member) = state.needing_pusher()
            {
                state = self.push_out(state, member, Pusher::Other).0;
                continue;
            }
            state.watchdog_at = next;
            let wait = next.map_or(Duration::from_secs(3600), |n| {
                n.saturating_duration_since(now)
            });
            state = self
                .watchdog
                .wait_timeout(state, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            state.watchdog_at = None;
        }
    }
}
