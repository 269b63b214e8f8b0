//! The crew's state and its threads: members' queues, the round-robin over them, the
//! workers, the pushers and the watchdog. One lock, `state`, for all of it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod helping;
mod ops;
mod watchdog;

pub use helping::current_worker;
use helping::{CURRENT_JOB, CURRENT_WORKER, Helping};

use super::order::{Completed, Next, Order};
use super::parts::Part;
use super::queue::{BoundedQueue, Entry, Waiting};
use super::{
    CrewConfig, CrewStats, LATENCY_WINDOW, Leaky, Loss, MemberConfig, MemberShare, OnError,
    PUSH_PATIENCE, PoolStats, Report, Submitted, Tag, Verdict, Work, WorkerStats,
};

pub(super) type MemberId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flight {
    Running,
    /// Given up by the watchdog and lost as a timeout; its worker was replaced, and the late
    /// result is discarded.
    TimedOut,
    /// Discarded by a flush or a stop; the result is discarded.
    Abandoned,
    /// Abandoned, then still running past `timeout`: its worker was replaced (as for a
    /// timeout, but no loss is reported: the flush lost the job).
    AbandonedHung,
}

struct InFlight {
    member: MemberId,
    tag: Tag,
    range: u64,
    submitted: Instant,
    deadline: Option<Instant>,
    state: Flight,
    bytes: u64,
    running_time: Option<u64>,
}

/// A job waiting in a member's queue.
struct Queued<J> {
    job: J,
    tag: Tag,
    range: u64,
    submitted: Instant,
}

/// A finished job on its way out.
struct Finished<J> {
    job: J,
    tag: Tag,
    report: Report,
    bytes: u64,
    running_time: Option<u64>,
}

/// The pool's latency figure: the 99th percentile (nearest rank) of the last
/// [`LATENCY_WINDOW`] values, never the largest of several (so one outlier, such as a first
/// call that loads a model, does not set it), plus a quarter of it (room for the spread of
/// a steady load, and the margin within which the figure is not re-announced).
/// Recomputed for each of the first values and every [`LATENCY_EVERY`] values after.
#[derive(Default)]
pub(super) struct RecentLatency {
    /// The last values, a ring once full.
    values: Vec<Duration>,
    next: usize,
    pub(super) since: usize,
    scratch: Vec<Duration>,
    pub(super) figure: Duration,
}

/// How often (in delivered jobs) the latency figure is recomputed once its window is full.
pub const LATENCY_EVERY: usize = 8;

impl RecentLatency {
    pub(super) fn push(&mut self, value: Duration) -> Duration {
        if self.values.len() < LATENCY_WINDOW {
            self.values.push(value);
        } else {
            self.values[self.next] = value;
        }
        self.next = (self.next + 1) % LATENCY_WINDOW;
        self.since += 1;
        if self.values.len() < LATENCY_WINDOW || self.since >= LATENCY_EVERY {
            self.since = 0;
            self.recompute();
        }
        self.figure
    }

    fn recompute(&mut self) {
        let n = self.values.len();
        if n == 0 {
            self.figure = Duration::ZERO;
            return;
        }
        let rank = (n * 99).div_ceil(100).min(n - 1).max(1);
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.values);
        let (_, &mut p99, _) = self.scratch.select_nth_unstable(rank - 1);
        self.figure = p99 + p99 / 4;
    }
}

/// An idle worker: its number and what wakes it.
struct Sleeper {
    worker: u32,
    wake: Arc<Condvar>,
}

/// One stream on the crew: its queue, its order of output, its bounds and its ledger.
pub(super) struct Member<W: Work> {
    work: Arc<W>,
    config: MemberConfig,
    queue: BoundedQueue<Queued<W::Job>>,
    /// Jobs of this member in flight that are `Running`.
    running: usize,
    /// Workers running parts of its jobs for their callers (see `parts`): they count
    /// toward `max_in_flight` as its jobs' own do.
    helping: usize,
    /// Jobs of this member in flight in any state (a removed member stays until they return).
    in_flight: usize,
    order: Order<Finished<W::Job>, W::Event>,
    /// Someone is outputting: the only one that calls `deliver`, `lost` and `forward`.
    pushing: bool,
    /// The pusher is in the middle of a frame's push (it counts as waiting until done).
    frame_in_push: bool,
    /// When a worker counted as live began the push in progress (a shared crew replaces a
    /// pusher blocked longer than [`PUSH_PATIENCE`]).
    push_since: Option<Instant>,
    /// The push in progress was given up on and its worker replaced.
    push_replaced: bool,
    /// Workers in the middle of reporting a fatal error (`Work::fatal`).
    reporting: usize,
    /// Threads inside a job of this member that timed out (its handler has not returned).
    stuck: usize,
    /// In a shared crew: no job of it is taken while one of its threads is stuck, so that a
    /// hung handler costs its member alone (its queued jobs time out where they wait).
    quarantine: bool,
    flushing: bool,
    /// Left the crew: refuses everything, and goes once its last job in flight returns.
    removed: bool,
    /// Its producer, barriers, resume and leave wait here.
    room: Arc<Condvar>,
    room_waiters: usize,
    /// Producers among them, waiting for a full queue to make room.
    full_waiters: usize,
    /// `left` when the first of them began to wait.
    full_since: u64,
    /// Frames that left (pushed or given up on), ever.
    left: u64,
    /// Bumped by every flush: completions of jobs from before are discarded.
    generation: u64,
    /// Bytes and running times (a multiset) of finished frames not yet pushed.
    finished_bytes: u64,
    finished_times: BTreeMap<u64, u32>,
    /// Frames submitted and neither pushed nor given up on yet (a multiset of tags): the
    /// oldest one bounds how far ahead new frames may be admitted.
    outstanding: BTreeMap<Tag, u32>,
    latency: RecentLatency,
    stats: PoolStats,
    /// In the crew's round-robin list.
    listed: bool,
    /// Jobs taken in its current turn.
    taken_in_turn: u32,
    /// Jobs its workers finished processing, and for how long in all.
    processed: u64,
    busy: Duration,
    joined: Instant,
}

impl<W: Work> Member<W> {
    fn new(work: Arc<W>, config: MemberConfig, quarantine: bool) -> Self {
        Member {
            stuck: 0,
            quarantine,
            work,
            config,
            queue: BoundedQueue::new(),
            running: 0,
            helping: 0,
            in_flight: 0,
            order: Order::default(),
            pushing: false,
            frame_in_push: false,
            push_since: None,
            push_replaced: false,
            reporting: 0,
            flushing: false,
            removed: false,
            room: Arc::new(Condvar::new()),
            room_waiters: 0,
            full_waiters: 0,
            full_since: 0,
            left: 0,
            generation: 0,
            finished_bytes: 0,
            finished_times: BTreeMap::new(),
            outstanding: BTreeMap::new(),
            latency: RecentLatency::default(),
            stats: PoolStats::default(),
            listed: false,
            taken_in_turn: 0,
            processed: 0,
            busy: Duration::ZERO,
            joined: Instant::now(),
        }
    }

    /// Finished frames not yet pushed, the one being pushed included.
    fn frames_waiting(&self) -> u64 {
        self.order.frames_waiting() as u64 + u64::from(self.frame_in_push)
    }

    /// What counts against the bounds besides the queue.
    fn waiting(&self) -> Waiting {
        Waiting {
            in_flight: self.running as u64,
            finished: self.frames_waiting(),
            finished_bytes: self.finished_bytes,
            oldest_finished: self.finished_times.keys().next().copied(),
        }
    }

    /// Queued jobs a worker may take now: none while flushing or removed, and no more than
    /// `max_in_flight` running at once.
    fn takable(&self) -> usize {
        if self.flushing || self.removed || self.quarantined() {
            return 0;
        }
        match self.config.max_in_flight {
            0 => self.queue.len(),
            n => self
                .queue
                .len()
                .min(n.saturating_sub(self.running + self.helping)),
        }
    }

    /// Whether it takes jobs, events and gaps: not flushing, leaving or stopped.
    fn takes_input(&self, stopping: bool) -> bool {
        !(self.flushing || self.removed || stopping)
    }

    /// Held back: a thread is stuck in one of its jobs (shared crews).
    fn quarantined(&self) -> bool {
        self.quarantine && self.stuck > 0
    }

    fn outstanding_in(&mut self, tag: Tag) {
        *self.outstanding.entry(tag).or_default() += 1;
    }

    fn outstanding_out(&mut self, tag: Tag) {
        self.left = self.left.wrapping_add(1);
        if let Some(n) = self.outstanding.get_mut(&tag) {
            *n -= 1;
            if *n == 0 {
                self.outstanding.remove(&tag);
            }
        }
    }

    /// Whether admitting `tag` would put it `max_buffers` or more frames ahead of the oldest
    /// frame of its epoch not yet pushed or given up on; and if so, whether that oldest one
    /// is queued (dropping it makes room) rather than in flight or finished.
    fn too_far_ahead(&self, tag: Tag) -> Option<bool> {
        let max = self.config.limits.max_buffers;
        if max == 0 {
            return None;
        }
        let (&oldest, _) = self
            .outstanding
            .range(
                Tag {
                    epoch: tag.epoch,
                    seq: 0,
                }..,
            )
            .next()
            .filter(|(t, _)| t.epoch == tag.epoch)?;
        if tag.seq < oldest.seq || tag.seq - oldest.seq < max {
            return None;
        }
        Some(self.queue.front().is_some_and(|e| e.item.tag == oldest))
    }

    fn finished_in(&mut self, bytes: u64, running_time: Option<u64>) {
        self.finished_bytes += bytes;
        if let Some(t) = running_time {
            *self.finished_times.entry(t).or_default() += 1;
        }
    }

    fn finished_out(&mut self, bytes: u64, running_time: Option<u64>) {
        self.finished_bytes -= bytes;
        if let Some(t) = running_time
            && let Some(n) = self.finished_times.get_mut(&t)
        {
            *n -= 1;
            if *n == 0 {
                self.finished_times.remove(&t);
            }
        }
    }

    fn refresh_gauges(&mut self) {
        self.stats.queued = self.queue.len() as u64;
        self.stats.max_queued = self.stats.max_queued.max(self.stats.queued);
        self.stats.in_flight = self.running as u64;
        self.stats.waiting = self.frames_waiting();
    }

    fn worker_stats(&mut self, worker: u32) -> &mut WorkerStats {
        let i = worker as usize;
        if self.stats.per_worker.len() <= i {
            self.stats.per_worker.resize(i + 1, WorkerStats::default());
        }
        &mut self.stats.per_worker[i]
    }

    /// Whether the member has nothing outstanding and nobody outputting.
    fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.order.is_idle() && !self.pushing
    }

    /// Whether a producer waiting for room should look again: a batch of frames left since
    /// it began to wait, the workers have nothing queued, or a flush or stop came.
    fn producer_may_go_on(&self, stopping: bool) -> bool {
        // Bytes and time count queued frames, among which a worker taking one makes room:
        // bound by those, the producer looks again at every change, as before batching.
        let limits = &self.config.limits;
        if limits.max_bytes > 0 || limits.max_time > 0 {
            return true;
        }
        let batch = (limits.max_buffers / 4).max(1);
        self.flushing
            || self.removed
            || stopping
            || self.queue.is_empty()
            || self.left.wrapping_sub(self.full_since) >= batch
    }

    /// Output is waiting and nobody is outputting it.
    fn needs_pusher(&self, stopping: bool) -> bool {
        !self.pushing && self.takes_input(stopping) && self.order.has_output()
    }

    /// Wakes whoever waits on the member's `room`. A producer waiting for a full queue is
    /// woken only once a batch of frames has left (a quarter of `max-size-buffers`; with a
    /// bytes or time bound, at every change), or when the queue ran dry, so that a producer
    /// faster than the workers does not pay a wake-up per frame.
    fn notify(&self, stopping: bool) {
        let others = self.room_waiters > self.full_waiters;
        if others || (self.full_waiters > 0 && self.producer_may_go_on(stopping)) {
            self.room.notify_all();
        }
    }
}

pub(super) struct State<W: Work> {
    pub(super) config: CrewConfig,
    /// Shared by several members: blocked pushers are replaced, and the watchdog always runs.
    shared: bool,
    members: BTreeMap<MemberId, Member<W>>,
    next_member: MemberId,
    /// Members that may have jobs to take, in round-robin order.
    active: VecDeque<MemberId>,
    in_flight: HashMap<u64, InFlight>,
    next_id: u64,
    pub(super) stopping: bool,
    /// Workers that take new jobs (not stuck in a timed-out job, not retired, not replaced
    /// in a blocked push).
    live: usize,
    /// Idle workers, most recently idle last.
    sleepers: Vec<Sleeper>,
    /// Workers woken and not yet back at the queues.
    waking: usize,
    next_worker: u32,
    pub(super) handles: Vec<JoinHandle<()>>,
    /// Worker threads not yet returned (live, retiring, stuck or blocked).
    pub(super) threads: usize,
    /// Threads inside a timed-out job.
    stuck: usize,
    /// Threads inside a push given up on (shared crews).
    blocked: usize,
    warned_stuck: bool,
    /// When the watchdog wakes next, if it sleeps.
    watchdog_at: Option<Instant>,
    /// Warnings for `Work::warn`, told once the lock is released: to one member, or to
    /// every member (`None`).
    warnings: Vec<(Option<MemberId>, String)>,
    spawn_failures: u64,
    per_worker: Vec<WorkerStats>,
    /// `stop` waits on `exits` for threads to return.
    exit_waiters: usize,
    /// Parts of jobs in flight, for idle workers to take (see `parts`), with their sets and
    /// the jobs (in-flight ids) they are parts of.
    parts: VecDeque<(u64, Option<u64>, Part)>,
    next_set: u64,
    /// Workers running a part, by worker number: the job it is part of, and whether the
    /// watchdog gave that job up (the helper then counts as stuck, and was replaced).
    helping: HashMap<u32, Helping>,
}

impl<W: Work> State<W> {
    pub(super) fn new(config: CrewConfig, shared: bool) -> Self {
        State {
            config,
            shared,
            members: BTreeMap::new(),
            next_member: 0,
            active: VecDeque::new(),
            in_flight: HashMap::new(),
            next_id: 0,
            stopping: false,
            live: 0,
            sleepers: Vec::new(),
            waking: 0,
            next_worker: 0,
            handles: Vec::new(),
            threads: 0,
            stuck: 0,
            blocked: 0,
            warned_stuck: false,
            watchdog_at: None,
            warnings: Vec::new(),
            spawn_failures: 0,
            per_worker: Vec::new(),
            exit_waiters: 0,
            parts: VecDeque::new(),
            next_set: 0,
            helping: HashMap::new(),
        }
    }

    fn member(&mut self, id: MemberId) -> &mut Member<W> {
        self.members
            .get_mut(&id)
            .expect("a member stays while its handle or a job of it exists")
    }

    /// How many threads stuck in timed-out jobs the crew replaces: as many as its most
    /// workers; in a shared crew, that many per member (and one more share), so that one
    /// member's hung handler cannot use up the replacements the others need (a member with a
    /// stuck thread takes no more jobs, so it holds at most what it ran before).
    fn max_stuck(&self) -> usize {
        let most = self.config.most_workers();
        if self.shared {
            most * (1 + self.members.len())
        } else {
            most
        }
    }

    /// Puts the member in the round-robin if it has jobs to take.
    fn list(&mut self, id: MemberId) {
        let m = self.member(id);
        if !m.listed && m.takable() > 0 {
            m.listed = true;
            self.active.push_back(id);
        }
    }

    /// Jobs workers may take now, over every member.
    fn takable(&self) -> usize {
        self.active
            .iter()
            .filter_map(|id| self.members.get(id))
            .map(Member::takable)
            .sum()
    }

    /// Whether workers on their way to the queues will take what is there: those woken.
    /// (Not a busy worker, not even one pushing results: a push can wait on a synced sink
    /// for as long as the pipeline's latency, and a job left to it would wait as long.)
    fn covered(&self) -> bool {
        self.takable() <= self.waking
    }

    /// The next job in (weighted) round-robin order: the member first in line gives up to
    /// `priority` jobs, then goes to the back of the line.
    fn take(&mut self) -> Option<(MemberId, Entry<Queued<W::Job>>)> {
        while let Some(&id) = self.active.front() {
            let Some(m) = self.members.get_mut(&id) else {
                self.active.pop_front();
                continue;
            };
            if m.takable() == 0 {
                m.listed = false;
                m.taken_in_turn = 0;
                self.active.pop_front();
                continue;
            }
            let entry = m.queue.pop_front().expect("takable jobs are queued");
            m.taken_in_turn += 1;
            if m.taken_in_turn >= m.config.priority.max(1) || m.takable() == 0 {
                m.taken_in_turn = 0;
                self.active.pop_front();
                let again = self.member(id).takable() > 0;
                if again {
                    self.active.push_back(id);
                } else {
                    self.member(id).listed = false;
                }
            }
            return Some((id, entry));
        }
        None
    }

    /// The first member with output waiting and nobody outputting it.
    fn needing_pusher(&self) -> Option<MemberId> {
        let stopping = self.stopping;
        self.members
            .iter()
            .find(|(_, m)| m.needs_pusher(stopping))
            .map(|(&id, _)| id)
    }

    fn notify(&self, id: MemberId) {
        if let Some(m) = self.members.get(&id) {
            m.notify(self.stopping);
        }
    }

    fn notify_all(&self) {
        for m in self.members.values() {
            m.notify(self.stopping);
        }
    }

    /// A member's stats, with the crew's gauges.
    pub(super) fn stats(&self, id: MemberId) -> PoolStats {
        let mut stats = self
            .members
            .get(&id)
            .map(|m| m.stats.clone())
            .unwrap_or_default();
        // Every worker of the crew, those that took none of its jobs too.
        if stats.per_worker.len() < self.per_worker.len() {
            stats
                .per_worker
                .resize(self.per_worker.len(), WorkerStats::default());
        }
        stats.workers = self.live as u64;
        stats.idle = self.sleepers.len() as u64;
        stats.stuck = self.stuck as u64;
        stats.spawn_failures = self.spawn_failures;
        stats
    }

    pub(super) fn crew_stats(&self) -> CrewStats {
        let total_busy: Duration = self.per_worker.iter().map(|w| w.busy).sum();
        let members = self
            .members
            .iter()
            .filter(|(_, m)| !m.removed)
            .map(|(&id, m)| {
                let secs = m.joined.elapsed().as_secs_f64();
                MemberShare {
                    member: id,
                    priority: m.config.priority,
                    max_in_flight: m.config.max_in_flight as u64,
                    queued: m.queue.len() as u64,
                    in_flight: m.running as u64,
                    processed: m.processed,
                    delivered: m.stats.delivered,
                    throughput: if secs > 0.0 {
                        m.stats.delivered as f64 / secs
                    } else {
                        0.0
                    },
                    share: if total_busy.is_zero() {
                        0.0
                    } else {
                        m.busy.as_secs_f64() / total_busy.as_secs_f64()
                    },
                }
            })
            .collect();
        CrewStats {
            workers: self.live as u64,
            idle: self.sleepers.len() as u64,
            stuck: self.stuck as u64,
            blocked: self.blocked as u64,
            threads: self.threads as u64,
            spawn_failures: self.spawn_failures,
            per_worker: self.per_worker.clone(),
            members,
        }
    }

    pub(super) fn disorder(&self, id: MemberId) -> u64 {
        let most = self.config.most_workers();
        self.members
            .get(&id)
            .map_or(2 * most as u64, |m| m.config.disorder(most))
    }
}

pub(super) struct Shared<W: Work> {
    pub(super) state: Mutex<State<W>>,
    /// The watchdog waits here for deadlines.
    watchdog: Condvar,
    /// `stop` waits here for threads to return.
    exits: Condvar,
}

#[cfg(test)]
thread_local! {
    /// Tests make the next spawns fail.
    pub(super) static FAIL_SPAWNS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Who outputs a member's results.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pusher {
    /// A worker counted as live: a shared crew replaces it when a push blocks.
    Worker,
    /// Anyone else (the watchdog, the streaming thread, a worker on its way out).
    Other,
}

/// A job a worker took, with the policies to apply to it.
struct Taken<J, W> {
    id: u64,
    member: MemberId,
    job: J,
    tag: Tag,
    on_error: OnError,
    retries: u32,
    work: Arc<W>,
}

enum Outcome {
    Keep,
    Lost(Loss, Option<String>),
    Panicked,
}

/// Counts a worker thread out when it returns, however it returns.
struct ThreadExit<'a, W: Work>(&'a Arc<Shared<W>>);

impl<W: Work> Drop for ThreadExit<'_, W> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.threads -= 1;
        // An exiting pusher (a panic in `deliver`) hands the output on.
        state.notify_all();
        if state.exit_waiters > 0 {
            self.0.exits.notify_all();
        }
    }
}

impl<W: Work> Shared<W> {
    pub(super) fn new(config: CrewConfig, shared: bool) -> Self {
        Shared {
            state: Mutex::new(State::new(config, shared)),
            watchdog: Condvar::new(),
            exits: Condvar::new(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State<W>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits on the member's `room` (with a `timeout`, if given).
    fn wait_room<'a>(
        &self,
        mut state: MutexGuard<'a, State<W>>,
        id: MemberId,
        timeout: Option<Duration>,
    ) -> MutexGuard<'a, State<W>> {
        let room = {
            let m = state.member(id);
            m.room_waiters += 1;
            m.room.clone()
        };
        let mut state = match timeout {
            None => room.wait(state).unwrap_or_else(|e| e.into_inner()),
            Some(t) => {
                room.wait_timeout(state, t)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        };
        state.member(id).room_waiters -= 1;
        state
    }

    /// Starts a worker; `false` (counted and warned about) when the thread cannot start.
    pub(super) fn spawn_worker(self: &Arc<Self>, state: &mut State<W>) -> bool {
        // Threads that retired or were replaced are done; forget their handles.
        state.handles.retain(|h| !h.is_finished());
        let number = state.next_worker;
        let shared = self.clone();
        #[cfg(test)]
        let fail = FAIL_SPAWNS.with(|f| {
            let n = f.get();
            f.set(n.saturating_sub(1));
            n > 0
        });
        #[cfg(not(test))]
        let fail = false;
        let spawned = if fail {
            Err(std::io::Error::other("injected by a test"))
        } else {
            std::thread::Builder::new()
                .name(format!("enrich-worker-{number}"))
                .spawn(move || shared.worker_loop(number))
        };
        match spawned {
            Ok(handle) => {
                state.next_worker += 1;
                state.per_worker.push(WorkerStats::default());
                state.live += 1;
                state.threads += 1;
                state.handles.push(handle);
                true
            }
            Err(err) => {
                state.spawn_failures += 1;
                // `warn` is called once the lock is released (`tell`).
                state
                    .warnings
                    .push((None, format!("could not start a worker thread: {err}")));
                false
            }
        }
    }

    /// Tells the warnings gathered under the lock, without it.
    pub(super) fn tell<'a>(
        &'a self,
        mut state: MutexGuard<'a, State<W>>,
    ) -> MutexGuard<'a, State<W>> {
        if state.warnings.is_empty() {
            return state;
        }
        let warnings = std::mem::take(&mut state.warnings);
        let mut told = Vec::new();
        for (to, message) in warnings {
            for (&id, m) in &state.members {
                if !m.removed && to.is_none_or(|to| to == id) {
                    told.push((m.work.clone(), message.clone()));
                }
            }
        }
        drop(state);
        for (work, message) in &told {
            work.warn(message);
        }
        drop(told);
        self.lock()
    }

    /// Wakes the most recently idle worker, if any.
    fn wake_one(&self, state: &mut State<W>) -> bool {
        match state.sleepers.pop() {
            Some(sleeper) => {
                state.waking += 1;
                sleeper.wake.notify_one();
                true
            }
            None => false,
        }
    }

    /// Makes sure the member's waiting output gets a pusher: an idle worker, or the next busy
    /// one to finish. With no worker left at all (every one stuck in a hung handler), the
    /// watchdog pushes it; the calling thread only does when there is no watchdog either (no
    /// worker could be started), as a last resort.
    pub(super) fn hand_output<'a>(
        &'a self,
        state: MutexGuard<'a, State<W>>,
        id: MemberId,
    ) -> MutexGuard<'a, State<W>> {
        self.hand_output_as(state, id, false)
    }

    fn hand_output_as<'a>(
        &'a self,
        mut state: MutexGuard<'a, State<W>>,
        id: MemberId,
        watchdog: bool,
    ) -> MutexGuard<'a, State<W>> {
        let stopping = state.stopping;
        let needed = state
            .members
            .get(&id)
            .is_some_and(|m| m.needs_pusher(stopping));
        if !needed || state.waking > 0 || self.wake_one(&mut state) || state.live > 0 {
            return state;
        }
        let has_watchdog =
            state.shared || state.members.values().any(|m| m.config.timeout.is_some());
        if watchdog || !has_watchdog {
            state = self.push_out(state, id, Pusher::Other).0;
        } else {
            self.watchdog.notify_one();
        }
        state
    }

    /// Outputs everything the member has waiting, as its pusher. Called with `pushing` false
    /// and returns with it false again, and whether a shared crew replaced the pushing
    /// worker meanwhile (its push blocked). A panic in the callbacks (a bug of the element)
    /// costs that one output, not the crew.
    fn push_out<'a>(
        &'a self,
        mut state: MutexGuard<'a, State<W>>,
        id: MemberId,
        mut by: Pusher,
    ) -> (MutexGuard<'a, State<W>>, bool) {
        let mut replaced = false;
        let work = state.member(id).work.clone();
        state.member(id).pushing = true;
        loop {
            let stopping = state.stopping;
            let m = state.member(id);
            if !m.takes_input(stopping) {
                break;
            }
            let Some(mut next) = m.order.next() else {
                break;
            };
            // A frame stays counted as waiting (and against the bounds) until it is pushed.
            let frame = match &mut next {
                Next::Frame(f) => {
                    // The figure now, not when this frame finished: frames finish out of
                    // order, and an older figure would announce a move back.
                    f.report.recent_latency = m.stats.latency;
                    m.frame_in_push = true;
                    Some((f.bytes, f.running_time, f.tag))
                }
                _ => None,
            };
            if by == Pusher::Worker {
                m.push_since = Some(Instant::now());
            }
            let generation = m.generation;
            drop(state);
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| match next {
                Next::Frame(f) => work.deliver(f.job, f.tag, f.report),
                Next::Lost(runs) => {
                    for run in runs {
                        work.lost(run.first, run.count, run.reason);
                    }
                }
                Next::Event(event) => work.forward(event),
            }));
            state = self.lock();
            let blocked_done = {
                let m = state.member(id);
                m.push_since = None;
                std::mem::take(&mut m.push_replaced)
            };
            if blocked_done {
                // The watchdog started a worker in this one's place: it pushes on, then
                // leaves unless the crew is short.
                state.blocked -= 1;
                replaced = true;
                by = Pusher::Other;
            }
            let m = state.member(id);
            if outcome.is_err() {
                m.stats.output_panics += 1;
            }
            if let Some((bytes, running_time, tag)) = frame {
                m.frame_in_push = false;
                // Counted once handed over, flush or not: a frame is pushed or flushed, once.
                m.stats.delivered += 1;
                if m.generation == generation {
                    m.finished_out(bytes, running_time);
                    m.outstanding_out(tag);
                }
                m.refresh_gauges();
                // A frame leaving makes room.
                state.notify(id);
            }
        }
        state.member(id).pushing = false;
        state.notify(id);
        self.forget_if_done(&mut state, id);
        (state, replaced)
    }

    /// A worker whose push was given up on goes on only if the crew is short of workers.
    fn rejoin(state: &mut State<W>) -> bool {
        if !state.stopping && state.live < state.config.workers {
            state.live += 1;
            true
        } else {
            false
        }
    }

    /// A removed member goes once nothing of it runs or is being output.
    fn forget_if_done(&self, state: &mut State<W>, id: MemberId) {
        if let Some(m) = state.members.get(&id)
            && m.removed
            && m.in_flight == 0
            && !m.pushing
            && m.reporting == 0
            && m.room_waiters == 0
        {
            state.members.remove(&id);
            state.active.retain(|&a| a != id);
        }
    }

    /// Waits for the next job; `None` when the worker is to exit (stop, retired, or
    /// replaced in a blocked push). Outputs waiting results first when nobody else does.
    fn next_job<'a>(
        &'a self,
        number: u32,
        wake: &Arc<Condvar>,
        mut state: MutexGuard<'a, State<W>>,
    ) -> Option<Taken<W::Job, W>> {
        let mut woken = false;
        loop {
            if woken {
                state.waking = state.waking.saturating_sub(1);
                woken = false;
            }
            if state.stopping {
                state.live -= 1;
                return None;
            }
            if let Some(id) = state.needing_pusher() {
                let (s, replaced) = self.push_out(state, id, Pusher::Worker);
                state = s;
                if replaced && !Self::rejoin(&mut state) {
                    return None;
                }
                continue;
            }
            // A part of a job in flight comes before a new job: its frame waits for it.
            if let Some(at) = state.takable_part() {
                state = self.help(number, at, state)?;
                continue;
            }
            if let Some((member, entry)) = state.take() {
                let id = state.next_id;
                state.next_id += 1;
                let (bytes, running_time) = (entry.bytes, entry.running_time);
                let Queued {
                    job,
                    tag,
                    range,
                    submitted,
                } = entry.item;
                let m = state.member(member);
                let deadline = m.config.timeout.map(|t| Instant::now() + t);
                let (on_error, retries, work) =
                    (m.config.on_error, m.config.retries, m.work.clone());
                m.running += 1;
                m.in_flight += 1;
                m.refresh_gauges();
                state.in_flight.insert(
                    id,
                    InFlight {
                        member,
                        tag,
                        range,
                        submitted,
                        deadline,
                        state: Flight::Running,
                        bytes,
                        running_time,
                    },
                );
                // Bytes and time count queued frames only: taking one may make room.
                state.notify(member);
                if let Some(d) = deadline
                    && state.watchdog_at.is_none_or(|at| d < at)
                {
                    self.watchdog.notify_one();
                }
                // More queued than awake workers will take: wake another.
                if !state.covered() {
                    self.wake_one(&mut state);
                }
                return Some(Taken {
                    id,
                    member,
                    job,
                    tag,
                    on_error,
                    retries,
                    work,
                });
            }
            let idle_timeout = state.config.idle_timeout;
            state.sleepers.push(Sleeper {
                worker: number,
                wake: wake.clone(),
            });
            state.notify_all();
            let idle_since = Instant::now();
            let (s, _) = wake
                .wait_timeout(state, idle_timeout)
                .unwrap_or_else(|e| e.into_inner());
            state = s;
            // Still on the idle list: nobody woke it (a timeout, or a spurious wake-up).
            let position = state.sleepers.iter().position(|s| s.worker == number);
            match position {
                Some(i) => {
                    state.sleepers.remove(i);
                    let retire = idle_since.elapsed() >= idle_timeout
                        && state.takable() == 0
                        && state.live > state.config.workers
                        && !state.stopping;
                    if retire {
                        state.live -= 1;
                        return None;
                    }
                }
                None => woken = true,
            }
        }
    }

    fn worker_loop(self: Arc<Self>, number: u32) {
        let _exit = ThreadExit(&self);
        CURRENT_WORKER.with(|c| c.set(Some(number)));
        let wake = Arc::new(Condvar::new());
        let mut state = self.lock();
        while let Some(taken) = self.next_job(number, &wake, state) {
            let Taken {
                id,
                member,
                mut job,
                tag,
                on_error,
                retries,
                work,
            } = taken;
            let started = Instant::now();
            let mut attempts = 0;
            let outcome = loop {
                attempts += 1;
                CURRENT_JOB.with(|c| c.set(Some(id)));
                let verdict = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    work.process(&mut job, number, attempts - 1)
                }));
                CURRENT_JOB.with(|c| c.set(None));
                match verdict {
                    Ok(Verdict::Keep) => break Outcome::Keep,
                    Ok(Verdict::Drop) => break Outcome::Lost(Loss::Dropped, None),
                    Ok(Verdict::Fail(message)) => {
                        let mut s = self.lock();
                        s.per_worker[number as usize].errors += 1;
                        if let Some(m) = s.members.get_mut(&member) {
                            m.worker_stats(number).errors += 1;
                        }
                        // A job a flush abandoned or a timeout gave up on is not tried
                        // again: its result would be discarded.
                        let running = s
                            .in_flight
                            .get(&id)
                            .is_some_and(|f| f.state == Flight::Running);
                        if on_error == OnError::Retry
                            && attempts <= retries
                            && !s.stopping
                            && running
                        {
                            s.member(member).stats.retries += 1;
                            continue;
                        }
                        break Outcome::Lost(Loss::Failed, Some(message));
                    }
                    Err(_) => {
                        let mut s = self.lock();
                        s.per_worker[number as usize].errors += 1;
                        if let Some(m) = s.members.get_mut(&member) {
                            m.worker_stats(number).errors += 1;
                        }
                        break Outcome::Panicked;
                    }
                }
            };
            let done = Instant::now();
            drop(work);
            let finished = Done {
                id,
                job,
                tag,
                outcome,
                on_error,
                worker: number,
                attempts,
                started,
                done,
            };
            match self.finish(finished) {
                Some(s) => state = s,
                None => return,
            }
        }
    }

    /// Puts a processed job in its place in its member's order (or discards it) and outputs
    /// what is waiting if nobody else does. Returns the lock if the worker goes on (it looks
    /// for its next job without letting go of it), `None` if it leaves.
    fn finish(self: &Arc<Self>, done: Done<W::Job>) -> Option<MutexGuard<'_, State<W>>> {
        let Done {
            id,
            job,
            tag,
            outcome,
            on_error,
            worker,
            attempts,
            started,
            done,
        } = done;
        let processing_time = done - started;
        let panicked = matches!(outcome, Outcome::Panicked);
        let mut state = self.lock();
        let w = &mut state.per_worker[worker as usize];
        w.processed += 1;
        w.busy += processing_time;
        let Some(flight) = state.in_flight.remove(&id) else {
            unreachable!("a job in flight is only removed by its worker");
        };
        let member = flight.member;
        {
            let m = state.member(member);
            m.in_flight -= 1;
            m.processed += 1;
            m.busy += processing_time;
            let w = m.worker_stats(worker);
            w.processed += 1;
            w.busy += processing_time;
        }
        if flight.state != Flight::Running {
            // Already lost as a timeout, or discarded by a flush or stop: the result is
            // dropped. A worker replaced after a timeout goes on only if the crew is short.
            let timed_out = matches!(flight.state, Flight::TimedOut | Flight::AbandonedHung);
            let go_on = if timed_out {
                state.stuck -= 1;
                state.member(member).stuck -= 1;
                // Out of quarantine, it may have jobs to take.
                state.list(member);
                if !state.covered() {
                    self.wake_one(&mut state);
                }
                let go_on = !state.stopping && !panicked && state.live < state.config.workers;
                if go_on {
                    state.live += 1;
                }
                go_on
            } else {
                self.leave_if_panicked(&mut state, panicked)
            };
            state.member(member).refresh_gauges();
            state.notify(member);
            self.forget_if_done(&mut state, member);
            drop(state);
            drop(job);
            return go_on.then(|| self.lock());
        }
        let m = state.member(member);
        m.running -= 1;
        m.stats.max_processing_time = m.stats.max_processing_time.max(processing_time);
        let fatal = match &outcome {
            Outcome::Lost(Loss::Failed, message) if on_error == OnError::Fail => Some(
                message
                    .clone()
                    .unwrap_or_else(|| "processing failed".into()),
            ),
            Outcome::Panicked if on_error == OnError::Fail => {
                Some("the handler panicked".to_string())
            }
            _ => None,
        };
        // A job that is not delivered is dropped without the lock (its buffer may call out).
        let mut discarded = None;
        let completed = match outcome {
            Outcome::Keep => {
                let latency = done.saturating_duration_since(flight.submitted);
                let recent_latency = m.latency.push(latency);
                m.stats.latency = recent_latency;
                m.finished_in(flight.bytes, flight.running_time);
                Completed::Frame(Finished {
                    job,
                    tag,
                    report: Report {
                        worker,
                        attempts,
                        processing_time,
                        latency,
                        recent_latency,
                    },
                    bytes: flight.bytes,
                    running_time: flight.running_time,
                })
            }
            Outcome::Lost(reason, _) => {
                if reason == Loss::Dropped {
                    m.stats.dropped += 1;
                } else {
                    m.stats.failed += 1;
                }
                discarded = Some(job);
                m.outstanding_out(tag);
                Completed::Lost(tag, reason)
            }
            Outcome::Panicked => {
                m.stats.failed += 1;
                discarded = Some(job);
                m.outstanding_out(tag);
                Completed::Lost(tag, Loss::Failed)
            }
        };
        m.refresh_gauges();
        // Under its `max-in-flight` again: it may have jobs to take, which an idle worker
        // takes while this one outputs.
        state.list(member);
        if !state.covered() {
            self.wake_one(&mut state);
        }
        if let Some(message) = fatal {
            // Reported before the loss can go out, so that whoever sees the gap sees the
            // error too. A flush waits for it (`resume`): it belongs before the flush.
            let m = state.member(member);
            let generation = m.generation;
            m.reporting += 1;
            let work = m.work.clone();
            drop(state);
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| work.fatal(tag, &message)));
            drop(work);
            state = self.lock();
            let m = state.member(member);
            m.reporting -= 1;
            let gone = m.generation != generation || m.removed;
            state.notify(member);
            if gone {
                // Flushed or stopped meanwhile: the range is gone, and so is the loss.
                let go_on = self.leave_if_panicked(&mut state, panicked);
                self.forget_if_done(&mut state, member);
                drop(state);
                drop(discarded);
                return go_on.then(|| self.lock());
            }
        }
        state.member(member).order.complete(flight.range, completed);
        let mut go_on = self.leave_if_panicked(&mut state, panicked);
        state.member(member).refresh_gauges();
        state.notify(member);
        let stopping = state.stopping;
        if state.member(member).needs_pusher(stopping) {
            let by = if go_on { Pusher::Worker } else { Pusher::Other };
            let (s, replaced) = self.push_out(state, member, by);
            state = s;
            if replaced {
                go_on = Self::rejoin(&mut state);
            }
        }
        let state = self.tell(state);
        if discarded.is_none() {
            return go_on.then_some(state);
        }
        drop(state);
        drop(discarded);
        go_on.then(|| self.lock())
    }

    /// A worker whose handler panicked leaves (its thread-local state may be broken) and a
    /// fresh thread takes its place. Returns whether the worker goes on.
    fn leave_if_panicked(self: &Arc<Self>, state: &mut State<W>, panicked: bool) -> bool {
        if !panicked {
            // On a stop too: `next_job` counts it out.
            return true;
        }
        state.live -= 1;
        if !state.stopping {
            self.spawn_worker(state);
        }
        false
    }

    /// Starts workers until the crew has its strength again, within the cap on stuck
    /// threads.
    fn replace_workers(self: &Arc<Self>, state: &mut State<W>) {
        let max_stuck = state.max_stuck();
        while state.live < state.config.workers {
            if state.stuck > max_stuck {
                if !state.warned_stuck {
                    state.warned_stuck = true;
                    let message = format!(
                        "{} worker threads are stuck in handlers that did not return after \
                         `timeout`; no more replacements until one returns",
                        state.stuck
                    );
                    state.warnings.push((None, message));
                }
                break;
            }
            if !self.spawn_worker(state) {
                break;
            }
        }
    }

    /// Whether the crew runs a watchdog: shared, or a member with a timeout.
    pub(super) fn needs_watchdog(state: &State<W>, config: &MemberConfig) -> bool {
        state.shared || config.timeout.is_some()
    }
}

/// A job a worker finished, with how it went.
struct Done<J> {
    id: u64,
    job: J,
    tag: Tag,
    outcome: Outcome,
    on_error: OnError,
    worker: u32,
    attempts: u32,
    started: Instant,
    done: Instant,
}
