//! The bounded queue and worker pool behind `enrichpool`, free of GStreamer.
//!
//! A producer [`Pool::submit`]s jobs into a queue bounded by buffers, bytes and time. When
//! it is full the [`Leaky`] policy decides: wait, drop the new job, or drop the oldest queued
//! one. Worker threads take jobs in order and run [`Work::process`] (retrying per
//! [`OnError`]). Results leave through one *pusher* at a time — whichever worker finds
//! output waiting and nobody pushing — in completion order, except that serialized events
//! ([`Pool::event`]) are barriers: an event leaves after the results of every job submitted
//! before it and before those of every job submitted after it (see [`order`]). Jobs that
//! will not be delivered leave as runs of [`Work::lost`]. The producer never pushes and
//! never waits for a push: it only waits for room, with `Leaky::None`.
//!
//! Faults: a panicking `process` counts as failed and its thread is replaced; one that runs
//! past `timeout` is lost as `Timeout` at once (in its place in the order), a replacement
//! worker started (up to a cap of stuck threads) and its late result discarded. [`Pool::stop`]
//! never waits for a hung job longer than the grace it is given.
//!
//! Wake-ups: idle workers wait on their own condition variable and are woken most recently
//! idle first, one per job that no worker already woken will take; so surplus workers stay
//! idle long enough to retire. A worker that finishes a job looks for the next one without
//! releasing the lock, and takes it without sleeping. A producer waiting for room is woken
//! by batches (see `notify_room`). The watchdog has its own condition variable.
//!
//! Lock order: one lock, `state`. Nothing is called on [`Work`] with it held, and only the
//! pusher calls `deliver`, `lost` and `forward`, one call at a time.

mod order;
mod queue;

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use order::Run;
use order::{Completed, Next, Order};
use queue::{BoundedQueue, Entry, Waiting};
pub use queue::{Leaky, Limits};

/// A job's place in its stream: what a loss names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag {
    pub epoch: u32,
    pub seq: u64,
}

/// What a job became after one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver it.
    Keep,
    /// The handler dropped it on purpose.
    Drop,
    /// The attempt failed.
    Fail(String),
}

/// Why a job will never be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Loss {
    /// Dropped by a full queue.
    Leaked,
    /// Processing failed (all attempts) or panicked.
    Failed,
    /// Processing took longer than `timeout`.
    Timeout,
    /// The handler dropped it.
    Dropped,
}

/// What to do when an attempt fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Try again, up to `retries` more times; then lose the job as failed.
    Retry,
    /// Lose the job as failed at once.
    Drop,
    /// Lose the job as failed and report a fatal error.
    Fail,
}

/// How a delivered job was processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub worker: u32,
    pub attempts: u32,
    pub processing_time: Duration,
    /// From submission to the end of processing: queue wait plus processing.
    pub latency: Duration,
    /// The pool's latency figure when this job is delivered (see [`PoolStats::latency`]):
    /// what it adds to a stream's latency now.
    pub recent_latency: Duration,
}

/// How many delivered jobs the pool's latency figure looks back over.
pub const LATENCY_WINDOW: usize = 128;

/// The work a pool does; implemented by the element.
pub trait Work: Send + Sync + 'static {
    type Job: Send + 'static;
    /// A serialized event, forwarded in its place among the results.
    type Event: Send + 'static;

    /// One attempt at a job. May panic or hang; both are handled.
    fn process(&self, job: &mut Self::Job, worker: u32, attempt: u32) -> Verdict;
    /// A finished job. Called by the pusher, one output at a time.
    fn deliver(&self, job: Self::Job, tag: Tag, report: Report);
    /// `count` consecutive frames from `first` that will never be delivered. Called by the
    /// pusher, one output at a time.
    fn lost(&self, first: Tag, count: u64, reason: Loss);
    /// A serialized event, after every result of the jobs submitted before it. Called by
    /// the pusher, one output at a time.
    fn forward(&self, event: Self::Event);
    /// `OnError::Fail` met a failure. Called from the worker, before the loss goes out.
    fn fatal(&self, tag: Tag, message: &str);
    /// Something the application should hear about (hung handlers, threads that could not
    /// be started).
    fn warn(&self, _message: &str) {}
}

/// Sizes and policies of a pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Workers started, and kept at least.
    pub workers: usize,
    /// Autoscaling grows up to this many while the queue stays deep (≤ `workers`: fixed).
    pub max_workers: usize,
    /// Extra workers idle this long retire.
    pub idle_timeout: Duration,
    pub limits: Limits,
    pub leaky: Leaky,
    /// Bound on one job's processing, all attempts together.
    pub timeout: Option<Duration>,
    pub on_error: OnError,
    pub retries: u32,
}

impl PoolConfig {
    /// The most workers the pool runs at once.
    pub fn most_workers(&self) -> usize {
        self.workers.max(self.max_workers).max(1)
    }

    /// How far out of order the pool's output can be: see [`Pool::disorder`].
    pub fn disorder(&self) -> u64 {
        match self.limits.max_buffers {
            0 => 2 * self.most_workers() as u64,
            n => n,
        }
    }

    /// How many threads stuck in timed-out jobs the pool keeps replacing; beyond that, a
    /// stuck worker is not replaced until one returns.
    pub fn max_stuck(&self) -> usize {
        self.most_workers()
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            workers: 1,
            max_workers: 0,
            idle_timeout: Duration::from_secs(5),
            limits: Limits::default(),
            leaky: Leaky::None,
            timeout: None,
            on_error: OnError::Retry,
            retries: 2,
        }
    }
}

/// The answer to [`Pool::submit`].
#[derive(Debug, PartialEq, Eq)]
pub enum Submitted {
    /// Queued; `leaked` older jobs were dropped to make room (`Leaky::Downstream`).
    Queued { leaked: usize },
    /// Dropped: the queue was full (`Leaky::Upstream`, or nothing older to drop).
    Leaked,
    /// The pool is flushing or stopped; the job was dropped without a loss report.
    Stopped,
}

/// Per-worker figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    pub processed: u64,
    pub busy: Duration,
    pub errors: u64,
}

/// Counters of a pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub submitted: u64,
    pub delivered: u64,
    pub leaked: u64,
    pub failed: u64,
    pub timeout: u64,
    pub dropped: u64,
    /// Jobs discarded by a flush (queued, in flight, or finished and not yet pushed).
    pub flushed: u64,
    pub retries: u64,
    pub queued: u64,
    pub max_queued: u64,
    /// Jobs being processed (not counting those given up on after `timeout`).
    pub in_flight: u64,
    /// Finished frames waiting for their turn to be pushed.
    pub waiting: u64,
    pub workers: u64,
    /// Workers waiting for a job.
    pub idle: u64,
    /// Threads still inside a job that timed out (their handler has not returned).
    pub stuck: u64,
    /// Worker threads that could not be started.
    pub spawn_failures: u64,
    /// Outputs whose callback panicked (a bug of the element; the pool goes on).
    pub output_panics: u64,
    pub max_processing_time: Duration,
    /// What the pool adds to a stream's latency: the 99th percentile of submission-to-finish
    /// time (queue wait plus processing) of the last [`LATENCY_WINDOW`] delivered jobs (never
    /// the largest of several), plus a quarter. Jobs lost (timed out, failed, dropped,
    /// flushed) do not count.
    pub latency: Duration,
    /// Indexed by worker number.
    pub per_worker: Vec<WorkerStats>,
}

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
    tag: Tag,
    range: u64,
    submitted: Instant,
    deadline: Option<Instant>,
    state: Flight,
    bytes: u64,
    running_time: Option<u64>,
}

/// A job waiting in the queue.
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
struct RecentLatency {
    /// The last values, a ring once full.
    values: Vec<Duration>,
    next: usize,
    since: usize,
    scratch: Vec<Duration>,
    figure: Duration,
}

/// How often (in delivered jobs) the latency figure is recomputed once its window is full.
pub const LATENCY_EVERY: usize = 8;

impl RecentLatency {
    fn push(&mut self, value: Duration) -> Duration {
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

struct State<W: Work> {
    config: PoolConfig,
    queue: BoundedQueue<Queued<W::Job>>,
    in_flight: HashMap<u64, InFlight>,
    /// How many of `in_flight` are `Running`.
    running: usize,
    next_id: u64,
    order: Order<Finished<W::Job>, W::Event>,
    /// Someone is outputting: the only one that calls `deliver`, `lost` and `forward`.
    pushing: bool,
    /// The pusher is in the middle of a frame's push (it counts as waiting until done).
    frame_in_push: bool,
    /// Workers in the middle of reporting a fatal error (`Work::fatal`).
    reporting: usize,
    flushing: bool,
    stopping: bool,
    /// Workers that take new jobs (not stuck in a timed-out job, not retired).
    live: usize,
    /// Idle workers, most recently idle last.
    sleepers: Vec<Sleeper>,
    /// Workers woken and not yet back at the queue.
    waking: usize,
    next_worker: u32,
    handles: Vec<JoinHandle<()>>,
    /// Worker threads not yet returned (live, retiring or stuck).
    threads: usize,
    /// Threads inside a timed-out job.
    stuck: usize,
    warned_stuck: bool,
    /// Producers, barriers and stop waiting on `room`.
    room_waiters: usize,
    /// Producers among them, waiting for a full pool to make room.
    full_waiters: usize,
    /// `left` when the first of them began to wait.
    full_since: u64,
    /// Frames that left the pool (pushed or given up on), ever.
    left: u64,
    /// When the watchdog wakes next, if it sleeps.
    watchdog_at: Option<Instant>,
    /// Bumped by every flush and stop: completions of jobs from before are discarded.
    generation: u64,
    /// Bytes and running times (a multiset) of finished frames not yet pushed.
    finished_bytes: u64,
    finished_times: BTreeMap<u64, u32>,
    /// Frames submitted and neither pushed nor given up on yet (a multiset of tags): the
    /// oldest one bounds how far ahead new frames may be admitted.
    outstanding: BTreeMap<Tag, u32>,
    latency: RecentLatency,
    /// Warnings for `Work::warn`, told once the lock is released.
    warnings: Vec<String>,
    stats: PoolStats,
}

impl<W: Work> State<W> {
    /// Jobs in flight that are `Running` (kept as a count: scanning `in_flight` per frame
    /// would cost as much as the workers are many).
    fn pending_in_flight(&self) -> usize {
        self.running
    }

    /// What counts against the bounds besides the queue.
    /// Finished frames not yet pushed, the one being pushed included.
    fn frames_waiting(&self) -> u64 {
        self.order.frames_waiting() as u64 + u64::from(self.frame_in_push)
    }

    fn waiting(&self) -> Waiting {
        Waiting {
            in_flight: self.pending_in_flight() as u64,
            finished: self.frames_waiting(),
            finished_bytes: self.finished_bytes,
            oldest_finished: self.finished_times.keys().next().copied(),
        }
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
        self.stats.in_flight = self.pending_in_flight() as u64;
        self.stats.waiting = self.frames_waiting();
        self.stats.workers = self.live as u64;
        self.stats.idle = self.sleepers.len() as u64;
        self.stats.stuck = self.stuck as u64;
    }

    /// Whether the pool has nothing outstanding and nobody outputting.
    fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.order.is_idle() && !self.pushing
    }

    /// Whether a producer waiting for room should look again: a batch of frames left since
    /// it began to wait, the workers have nothing queued, or a flush or stop came.
    fn producer_may_go_on(&self) -> bool {
        // Bytes and time count queued frames, among which a worker taking one makes room:
        // bound by those, the producer looks again at every change, as before batching.
        let limits = &self.config.limits;
        if limits.max_bytes > 0 || limits.max_time > 0 {
            return true;
        }
        let batch = (limits.max_buffers / 4).max(1);
        self.flushing
            || self.stopping
            || self.queue.is_empty()
            || self.left.wrapping_sub(self.full_since) >= batch
    }

    /// Output is waiting and nobody is outputting it.
    fn needs_pusher(&self) -> bool {
        !self.pushing && !self.flushing && !self.stopping && self.order.has_output()
    }
}

struct Shared<W: Work> {
    work: Arc<W>,
    state: Mutex<State<W>>,
    /// Producers wait here for room, barriers for idleness, `stop` for threads.
    room: Condvar,
    /// The watchdog waits here for deadlines.
    watchdog: Condvar,
}

#[cfg(test)]
thread_local! {
    /// Tests make the next spawns fail.
    static FAIL_SPAWNS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl<W: Work> Shared<W> {
    fn lock(&self) -> MutexGuard<'_, State<W>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes whoever waits on `room`. A producer waiting for a full pool is woken only once
    /// a batch of frames has left (a quarter of `max-size-buffers`; with a bytes or time
    /// bound, at every change), or when the queue ran
    /// dry, so that a producer faster than the workers does not pay a wake-up per frame.
    fn notify_room(&self, state: &State<W>) {
        let others = state.room_waiters > state.full_waiters;
        if others || (state.full_waiters > 0 && state.producer_may_go_on()) {
            self.room.notify_all();
        }
    }

    fn wait_room<'a>(&self, mut state: MutexGuard<'a, State<W>>) -> MutexGuard<'a, State<W>> {
        state.room_waiters += 1;
        let mut state = self.room.wait(state).unwrap_or_else(|e| e.into_inner());
        state.room_waiters -= 1;
        state
    }

    /// Starts a worker; `false` (counted and warned about) when the thread cannot start.
    fn spawn_worker(self: &Arc<Self>, state: &mut State<W>) -> bool {
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
                state.stats.per_worker.push(WorkerStats::default());
                state.live += 1;
                state.threads += 1;
                state.handles.push(handle);
                state.refresh_gauges();
                true
            }
            Err(err) => {
                state.stats.spawn_failures += 1;
                // `warn` is called once the lock is released (`tell`).
                state
                    .warnings
                    .push(format!("could not start a worker thread: {err}"));
                false
            }
        }
    }

    /// Tells the warnings gathered under the lock, without it.
    fn tell<'a>(&'a self, mut state: MutexGuard<'a, State<W>>) -> MutexGuard<'a, State<W>> {
        if state.warnings.is_empty() {
            return state;
        }
        let warnings = std::mem::take(&mut state.warnings);
        drop(state);
        for w in &warnings {
            self.work.warn(w);
        }
        self.lock()
    }

    /// Wakes the most recently idle worker, if any.
    fn wake_one(&self, state: &mut State<W>) -> bool {
        match state.sleepers.pop() {
            Some(sleeper) => {
                state.waking += 1;
                state.stats.idle = state.sleepers.len() as u64;
                sleeper.wake.notify_one();
                true
            }
            None => false,
        }
    }

    /// Whether workers on their way to the queue will take what is there: those woken. (Not
    /// a busy worker, not even one pushing results: a push can wait on a synced sink for as
    /// long as the pipeline's latency, and a job left to it would wait as long, and be
    /// measured so.)
    fn covered(state: &State<W>) -> bool {
        state.queue.len() <= state.waking
    }

    /// Makes sure waiting output gets a pusher: an idle worker, or the next busy one to
    /// finish. With no worker left at all (every one stuck in a hung handler), the watchdog
    /// pushes it; the streaming thread only does when there is no watchdog either (no
    /// worker could be started), as a last resort.
    fn hand_output<'a>(&'a self, state: MutexGuard<'a, State<W>>) -> MutexGuard<'a, State<W>> {
        self.hand_output_as(state, false)
    }

    fn hand_output_as<'a>(
        &'a self,
        mut state: MutexGuard<'a, State<W>>,
        watchdog: bool,
    ) -> MutexGuard<'a, State<W>> {
        if !state.needs_pusher() || state.waking > 0 || self.wake_one(&mut state) || state.live > 0
        {
            return state;
        }
        if watchdog || state.config.timeout.is_none() {
            state = self.push_out(state);
        } else {
            self.watchdog.notify_one();
        }
        state
    }

    /// Outputs everything waiting, as the pusher. Called with `pushing` false and returns
    /// with it false again. A panic in the callbacks (a bug of the element) costs that one
    /// output, not the pool.
    fn push_out<'a>(&'a self, mut state: MutexGuard<'a, State<W>>) -> MutexGuard<'a, State<W>> {
        state.pushing = true;
        loop {
            if state.flushing || state.stopping {
                break;
            }
            let Some(mut next) = state.order.next() else {
                break;
            };
            // A frame stays counted as waiting (and against the bounds) until it is pushed.
            let frame = match &mut next {
                Next::Frame(f) => {
                    // The figure now, not when this frame finished: frames finish out of
                    // order, and an older figure would announce a move back.
                    f.report.recent_latency = state.stats.latency;
                    state.frame_in_push = true;
                    Some((f.bytes, f.running_time, f.tag))
                }
                _ => None,
            };
            let generation = state.generation;
            drop(state);
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| match next {
                Next::Frame(f) => self.work.deliver(f.job, f.tag, f.report),
                Next::Lost(runs) => {
                    for run in runs {
                        self.work.lost(run.first, run.count, run.reason);
                    }
                }
                Next::Event(event) => self.work.forward(event),
            }));
            state = self.lock();
            if outcome.is_err() {
                state.stats.output_panics += 1;
            }
            if let Some((bytes, running_time, tag)) = frame {
                state.frame_in_push = false;
                // Counted once handed over, flush or not: a frame is pushed or flushed, once.
                state.stats.delivered += 1;
                if state.generation == generation {
                    state.finished_out(bytes, running_time);
                    state.outstanding_out(tag);
                }
                state.refresh_gauges();
                // A frame leaving makes room.
                self.notify_room(&state);
            }
        }
        state.pushing = false;
        self.notify_room(&state);
        state
    }

    /// Waits for the next job; `None` when the worker is to exit (stop, or retired).
    /// Outputs waiting results first when nobody else does.
    fn next_job<'a>(
        &'a self,
        number: u32,
        wake: &Arc<Condvar>,
        mut state: MutexGuard<'a, State<W>>,
    ) -> Option<Taken<W::Job>> {
        let mut woken = false;
        loop {
            if woken {
                state.waking = state.waking.saturating_sub(1);
                woken = false;
            }
            if state.stopping {
                state.live -= 1;
                state.refresh_gauges();
                return None;
            }
            if state.needs_pusher() {
                state = self.push_out(state);
                continue;
            }
            if !state.flushing
                && let Some(entry) = state.queue.pop_front()
            {
                let id = state.next_id;
                state.next_id += 1;
                let (bytes, running_time) = (entry.bytes, entry.running_time);
                let Queued {
                    job,
                    tag,
                    range,
                    submitted,
                } = entry.item;
                let deadline = state.config.timeout.map(|t| Instant::now() + t);
                state.running += 1;
                state.in_flight.insert(
                    id,
                    InFlight {
                        tag,
                        range,
                        submitted,
                        deadline,
                        state: Flight::Running,
                        bytes,
                        running_time,
                    },
                );
                state.refresh_gauges();
                // Bytes and time count queued frames only: taking one may make room.
                self.notify_room(&state);
                if let Some(d) = deadline
                    && state.watchdog_at.is_none_or(|at| d < at)
                {
                    self.watchdog.notify_one();
                }
                // More queued than awake workers will take: wake another.
                if !Self::covered(&state) {
                    self.wake_one(&mut state);
                }
                return Some(Taken {
                    id,
                    job,
                    tag,
                    on_error: state.config.on_error,
                    retries: state.config.retries,
                });
            }
            let idle_timeout = state.config.idle_timeout;
            state.sleepers.push(Sleeper {
                worker: number,
                wake: wake.clone(),
            });
            state.stats.idle = state.sleepers.len() as u64;
            self.notify_room(&state);
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
                    state.stats.idle = state.sleepers.len() as u64;
                    let retire = idle_since.elapsed() >= idle_timeout
                        && state.queue.is_empty()
                        && state.live > state.config.workers
                        && !state.stopping;
                    if retire {
                        state.live -= 1;
                        state.refresh_gauges();
                        return None;
                    }
                }
                None => woken = true,
            }
        }
    }

    fn worker_loop(self: Arc<Self>, number: u32) {
        let _exit = ThreadExit(&self);
        let wake = Arc::new(Condvar::new());
        let mut state = self.lock();
        while let Some(taken) = self.next_job(number, &wake, state) {
            let Taken {
                id,
                mut job,
                tag,
                on_error,
                retries,
            } = taken;
            let started = Instant::now();
            let mut attempts = 0;
            let outcome = loop {
                attempts += 1;
                let verdict = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    self.work.process(&mut job, number, attempts - 1)
                }));
                match verdict {
                    Ok(Verdict::Keep) => break Outcome::Keep,
                    Ok(Verdict::Drop) => break Outcome::Lost(Loss::Dropped, None),
                    Ok(Verdict::Fail(message)) => {
                        let mut s = self.lock();
                        s.stats.per_worker[number as usize].errors += 1;
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
                            s.stats.retries += 1;
                            continue;
                        }
                        break Outcome::Lost(Loss::Failed, Some(message));
                    }
                    Err(_) => {
                        self.lock().stats.per_worker[number as usize].errors += 1;
                        break Outcome::Panicked;
                    }
                }
            };
            let done = Instant::now();
            match self.finish(
                id,
                job,
                tag,
                outcome,
                on_error,
                number,
                attempts,
                (started, done),
            ) {
                Some(s) => state = s,
                None => return,
            }
        }
    }

    /// Puts a processed job in its place in the order (or discards it) and outputs what is
    /// waiting if nobody else does. Returns the lock if the worker goes on (it looks for
    /// its next job without letting go of it), `None` if it leaves.
    #[allow(clippy::too_many_arguments)]
    fn finish<'a>(
        self: &'a Arc<Self>,
        id: u64,
        job: W::Job,
        tag: Tag,
        outcome: Outcome,
        on_error: OnError,
        worker: u32,
        attempts: u32,
        (started, done): (Instant, Instant),
    ) -> Option<MutexGuard<'a, State<W>>> {
        let processing_time = done - started;
        let panicked = matches!(outcome, Outcome::Panicked);
        let mut state = self.lock();
        let w = &mut state.stats.per_worker[worker as usize];
        w.processed += 1;
        w.busy += processing_time;
        let Some(flight) = state.in_flight.remove(&id) else {
            unreachable!("a job in flight is only removed by its worker");
        };
        if flight.state != Flight::Running {
            // Already lost as a timeout, or discarded by a flush or stop: the result is
            // dropped. A worker replaced after a timeout goes on only if the pool is short.
            let timed_out = matches!(flight.state, Flight::TimedOut | Flight::AbandonedHung);
            let go_on = if timed_out {
                state.stuck -= 1;
                let go_on = !state.stopping && !panicked && state.live < state.config.workers;
                if go_on {
                    state.live += 1;
                }
                go_on
            } else {
                self.leave_if_panicked(&mut state, panicked)
            };
            state.refresh_gauges();
            self.notify_room(&state);
            drop(state);
            drop(job);
            return go_on.then(|| self.lock());
        }
        state.running -= 1;
        state.stats.max_processing_time = state.stats.max_processing_time.max(processing_time);
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
                let recent_latency = state.latency.push(latency);
                state.stats.latency = recent_latency;
                state.finished_in(flight.bytes, flight.running_time);
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
                    state.stats.dropped += 1;
                } else {
                    state.stats.failed += 1;
                }
                discarded = Some(job);
                state.outstanding_out(tag);
                Completed::Lost(tag, reason)
            }
            Outcome::Panicked => {
                state.stats.failed += 1;
                discarded = Some(job);
                state.outstanding_out(tag);
                Completed::Lost(tag, Loss::Failed)
            }
        };
        state.refresh_gauges();
        if let Some(message) = fatal {
            // Reported before the loss can go out, so that whoever sees the gap sees the
            // error too. A flush waits for it (`resume`): it belongs before the flush.
            let generation = state.generation;
            state.reporting += 1;
            drop(state);
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| self.work.fatal(tag, &message)));
            state = self.lock();
            state.reporting -= 1;
            self.notify_room(&state);
            if state.generation != generation {
                // Flushed or stopped meanwhile: the range is gone, and so is the loss.
                let go_on = self.leave_if_panicked(&mut state, panicked);
                state.refresh_gauges();
                drop(state);
                drop(discarded);
                return go_on.then(|| self.lock());
            }
        }
        state.order.complete(flight.range, completed);
        let go_on = self.leave_if_panicked(&mut state, panicked);
        state.refresh_gauges();
        self.notify_room(&state);
        if state.needs_pusher() {
            state = self.push_out(state);
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
            return !state.stopping;
        }
        state.live -= 1;
        if !state.stopping {
            self.spawn_worker(state);
        }
        false
    }

    fn watchdog_loop(self: Arc<Self>) {
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
            let mut hung = 0;
            for (&id, f) in state.in_flight.iter_mut() {
                match (f.state, f.deadline) {
                    (Flight::Running, Some(d)) if d <= now => {
                        f.state = Flight::TimedOut;
                        expired.push((id, f.tag, f.range));
                    }
                    (Flight::Abandoned, Some(d)) if d <= now => {
                        f.state = Flight::AbandonedHung;
                        hung += 1;
                    }
                    (Flight::Running | Flight::Abandoned, Some(d)) => {
                        next = Some(next.map_or(d, |n| n.min(d)))
                    }
                    _ => {}
                }
            }
            state.running -= expired.len();
            let timeout = state.config.timeout.unwrap_or(Duration::MAX);
            if !expired.is_empty() || hung > 0 {
                // The stuck workers no longer count; replacements keep the pool's strength,
                // up to a cap on stuck threads.
                let stuck = expired.len() + hung;
                state.live -= stuck;
                state.stuck += stuck;
                state.stats.timeout += expired.len() as u64;
                for (_, tag, range) in expired {
                    state.outstanding_out(tag);
                    state
                        .order
                        .complete(range, Completed::Lost(tag, Loss::Timeout));
                }
                let max_stuck = state.config.max_stuck();
                while state.live < state.config.workers {
                    if state.stuck > max_stuck {
                        if !state.warned_stuck {
                            state.warned_stuck = true;
                            let message = format!(
                                "{} worker threads are stuck in handlers that did not return \
                                 after `timeout`; no more replacements until one returns",
                                state.stuck
                            );
                            state.warnings.push(message);
                        }
                        break;
                    }
                    if !self.spawn_worker(&mut state) {
                        break;
                    }
                }
                state.refresh_gauges();
                state = self.hand_output_as(state, true);
                self.notify_room(&state);
                continue;
            }
            // With no worker left to take them, queued jobs time out where they wait.
            if state.live == 0 && !state.queue.is_empty() {
                let mut lost = Vec::new();
                while let Some(front) = state.queue.front()
                    && front.item.submitted + timeout <= now
                {
                    lost.push(state.queue.pop_front().expect("front checked").item);
                }
                if !lost.is_empty() {
                    state.stats.timeout += lost.len() as u64;
                    for item in &lost {
                        state.outstanding_out(item.tag);
                        state
                            .order
                            .complete(item.range, Completed::Lost(item.tag, Loss::Timeout));
                    }
                    state.refresh_gauges();
                    state = self.hand_output_as(state, true);
                    self.notify_room(&state);
                    // The jobs (their buffers may call out) are dropped without the lock.
                    drop(state);
                    drop(lost);
                    state = self.lock();
                    continue;
                }
                if let Some(front) = state.queue.front() {
                    let d = front.item.submitted + timeout;
                    next = Some(next.map_or(d, |n| n.min(d)));
                }
            }
            if state.stuck < state.config.max_stuck() {
                state.warned_stuck = false;
            }
            // Output handed to the watchdog (no worker left to push it).
            if state.live == 0 && state.needs_pusher() {
                state = self.push_out(state);
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

/// A running pool. Dropping it stops it without waiting for busy workers.
pub struct Pool<W: Work> {
    shared: Arc<Shared<W>>,
    watchdog: Mutex<Option<JoinHandle<()>>>,
}

/// Counts a worker thread out when it returns, however it returns.
struct ThreadExit<'a, W: Work>(&'a Arc<Shared<W>>);

impl<W: Work> Drop for ThreadExit<'_, W> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.threads -= 1;
        state.refresh_gauges();
        // An exiting pusher (a panic in `deliver`) hands the output on.
        self.0.notify_room(&state);
    }
}

/// A job a worker took, with the policies to apply to it.
struct Taken<J> {
    id: u64,
    job: J,
    tag: Tag,
    on_error: OnError,
    retries: u32,
}

enum Outcome {
    Keep,
    Lost(Loss, Option<String>),
    Panicked,
}

impl<W: Work> Pool<W> {
    /// Starts `config.workers` workers (at least one). Fails when not one worker thread (or
    /// the watchdog) can be started.
    pub fn start(work: Arc<W>, mut config: PoolConfig) -> Result<Pool<W>, String> {
        config.workers = config.workers.max(1);
        let shared = Arc::new(Shared {
            work,
            state: Mutex::new(State {
                config,
                queue: BoundedQueue::new(),
                in_flight: HashMap::new(),
                running: 0,
                next_id: 0,
                order: Order::default(),
                pushing: false,
                frame_in_push: false,
                reporting: 0,
                flushing: false,
                stopping: false,
                live: 0,
                sleepers: Vec::new(),
                waking: 0,
                next_worker: 0,
                handles: Vec::new(),
                threads: 0,
                stuck: 0,
                warned_stuck: false,
                room_waiters: 0,
                full_waiters: 0,
                full_since: 0,
                left: 0,
                watchdog_at: None,
                generation: 0,
                finished_bytes: 0,
                finished_times: BTreeMap::new(),
                outstanding: BTreeMap::new(),
                latency: RecentLatency::default(),
                warnings: Vec::new(),
                stats: PoolStats::default(),
            }),
            room: Condvar::new(),
            watchdog: Condvar::new(),
        });
        let pool = Pool {
            shared: shared.clone(),
            watchdog: Mutex::new(None),
        };
        {
            // The lock is let go between spawns: a worker that has started goes to sleep on
            // its own instead of queueing with all the others for the lock at the end.
            for _ in 0..config.workers {
                let mut state = shared.lock();
                shared.spawn_worker(&mut state);
            }
            let state = shared.lock();
            if state.live == 0 {
                drop(state);
                pool.stop(Duration::ZERO);
                return Err("could not start any worker thread".into());
            }
            drop(shared.tell(state));
        }
        if config.timeout.is_some() {
            let s = shared.clone();
            let handle = std::thread::Builder::new()
                .name("enrich-watchdog".into())
                .spawn(move || s.watchdog_loop())
                .map_err(|err| format!("could not start the watchdog thread: {err}"));
            match handle {
                Ok(handle) => {
                    *pool.watchdog.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle)
                }
                Err(err) => {
                    pool.stop(Duration::ZERO);
                    return Err(err);
                }
            }
        }
        Ok(pool)
    }

    /// Queues a job of `bytes` taken at `running_time`. With `Leaky::None` this waits for
    /// room (or a flush or stop). Losses it causes go out through [`Work::lost`].
    pub fn submit(
        &self,
        job: W::Job,
        tag: Tag,
        bytes: u64,
        running_time: Option<u64>,
    ) -> Submitted {
        let shared = &self.shared;
        let mut state = shared.lock();
        let mut leaked = 0;
        // Jobs a leak dropped: dropped once the lock is let go (their buffers may call out).
        let mut dropped = Vec::new();
        loop {
            if state.flushing || state.stopping {
                drop(state);
                return Submitted::Stopped;
            }
            let waiting = state.waiting();
            let ahead = state.too_far_ahead(tag);
            let full = ahead.is_some()
                || state
                    .queue
                    .is_full(&state.config.limits, waiting, running_time);
            if !full {
                break;
            }
            // Too far ahead of an oldest frame that is in flight or finished, or full with
            // frames in flight and finished alone: dropping queued frames would not make
            // room, the new one goes.
            let drop_new = ahead == Some(false)
                || BoundedQueue::<Queued<W::Job>>::full_without_queue(
                    &state.config.limits,
                    waiting,
                    running_time,
                );
            match state.config.leaky {
                Leaky::None => {
                    if state.full_waiters == 0 {
                        state.full_since = state.left;
                    }
                    state.full_waiters += 1;
                    state = shared.wait_room(state);
                    state.full_waiters -= 1;
                }
                Leaky::Downstream if !drop_new && !state.queue.is_empty() => {
                    let old = state.queue.pop_front().expect("checked not empty").item;
                    state.stats.leaked += 1;
                    leaked += 1;
                    state.outstanding_out(old.tag);
                    state
                        .order
                        .complete(old.range, Completed::Lost(old.tag, Loss::Leaked));
                    state.refresh_gauges();
                    dropped.push(old.job);
                }
                Leaky::Upstream | Leaky::Downstream => {
                    // The new frame goes: the queue is full, or (downstream) nothing queued
                    // would make room.
                    state.stats.submitted += 1;
                    state.stats.leaked += 1;
                    state.order.lost(tag, 1, Loss::Leaked);
                    drop(shared.hand_output(state));
                    return Submitted::Leaked;
                }
            }
        }
        state.stats.submitted += 1;
        state.outstanding_in(tag);
        let range = state.order.open();
        state.queue.push_back(Entry {
            item: Queued {
                job,
                tag,
                range,
                submitted: Instant::now(),
            },
            bytes,
            running_time,
        });
        // Short of workers (a replacement could not start before): try again.
        if state.live + state.stuck < state.config.workers {
            shared.spawn_worker(&mut state);
        }
        // Wake an idle worker unless enough are already on their way to the queue.
        if !Shared::covered(&state) && !shared.wake_one(&mut state) {
            // Nobody idle: grow while the queue stays deeper than the workers.
            if state.queue.len() > state.live && state.live < state.config.max_workers {
                shared.spawn_worker(&mut state);
            }
        }
        state = shared.hand_output(state);
        state.refresh_gauges();
        drop(shared.tell(state));
        drop(dropped);
        Submitted::Queued { leaked }
    }

    /// A serialized event: it leaves after the results of every job submitted so far and
    /// before those of every job submitted later. Dropped while flushing or stopped.
    pub fn event(&self, event: W::Event) -> bool {
        let mut state = self.shared.lock();
        if state.flushing || state.stopping {
            return false;
        }
        state.order.event(event);
        drop(self.shared.hand_output(state));
        true
    }

    /// `count` consecutive frames from `first` that will never come to this pool (a gap from
    /// upstream): announced in their place after the events before them.
    pub fn lost(&self, first: Tag, count: u64, reason: Loss) -> bool {
        let mut state = self.shared.lock();
        if state.flushing || state.stopping {
            return false;
        }
        state.order.lost(first, count, reason);
        drop(self.shared.hand_output(state));
        true
    }

    /// Waits until everything submitted so far has been output, then runs `f` as the pusher
    /// (nothing else is output meanwhile). `None` when a flush or stop came first.
    pub fn when_idle<R>(&self, f: impl FnOnce() -> R) -> Option<R> {
        let shared = &self.shared;
        let mut state = shared.lock();
        loop {
            if state.flushing || state.stopping {
                return None;
            }
            if state.is_idle() {
                break;
            }
            state = shared.hand_output(state);
            if state.is_idle() {
                break;
            }
            state = shared.wait_room(state);
        }
        state.pushing = true;
        drop(state);
        /// Gives the pusher's place back however `f` returns.
        struct Release<'a, W: Work>(&'a Shared<W>);
        impl<W: Work> Drop for Release<'_, W> {
            fn drop(&mut self) {
                let mut state = self.0.lock();
                state.pushing = false;
                state = self.0.hand_output(state);
                self.0.notify_room(&state);
            }
        }
        let release = Release(shared);
        let result = f();
        drop(release);
        Some(result)
    }

    /// Waits until everything submitted so far has been output. `false` when a flush or
    /// stop came first.
    pub fn wait_idle(&self) -> bool {
        self.when_idle(|| ()).is_some()
    }

    /// Discards queued jobs, abandons those in flight (their results are dropped when they
    /// come) and finished results not yet output; wakes every waiter. No losses are
    /// reported: a flush loses everything. Returns the events that had not gone out, in
    /// order. Jobs are refused until [`Pool::resume`].
    pub fn flush(&self) -> Vec<W::Event> {
        let mut state = self.shared.lock();
        state.flushing = true;
        let discarded = self.discard(&mut state);
        drop(state);
        let (queued, finished, events) = discarded;
        drop(queued);
        drop(finished);
        events
    }

    #[allow(clippy::type_complexity)]
    fn discard(
        &self,
        state: &mut State<W>,
    ) -> (
        Vec<Entry<Queued<W::Job>>>,
        Vec<Finished<W::Job>>,
        Vec<W::Event>,
    ) {
        let queued: Vec<_> = state.queue.drain().collect();
        let mut count = queued.len() as u64;
        for f in state.in_flight.values_mut() {
            if f.state == Flight::Running {
                f.state = Flight::Abandoned;
                state.running -= 1;
                count += 1;
            }
        }
        let (finished, events) = state.order.clear();
        count += finished.len() as u64;
        state.finished_bytes = 0;
        state.finished_times.clear();
        state.outstanding.clear();
        state.generation += 1;
        state.stats.flushed += count;
        state.refresh_gauges();
        self.shared.room.notify_all();
        for s in state.sleepers.drain(..) {
            state.waking += 1;
            s.wake.notify_one();
        }
        self.shared.watchdog.notify_one();
        (queued, finished, events)
    }

    /// Ends a flush: waits until the pusher (if one is in the middle of an output) and any
    /// worker reporting a fatal error are done, so that nothing from before the flush leaves
    /// (or fails the stream) after this returns; then takes jobs again.
    pub fn resume(&self) {
        let shared = &self.shared;
        let mut state = shared.lock();
        while (state.pushing || state.reporting > 0) && !state.stopping {
            state = shared.wait_room(state);
        }
        state.flushing = false;
    }

    pub fn stats(&self) -> PoolStats {
        self.shared.lock().stats.clone()
    }

    /// How far out of order this pool's output can be, in frames: `max_buffers` (no frame
    /// is admitted that far ahead of the oldest one not yet pushed or given up on), or twice
    /// the most workers when unbounded.
    pub fn disorder(&self) -> u64 {
        self.shared.lock().config.disorder()
    }

    /// Stops the pool: queued jobs are discarded, waiters woken, and workers joined — except
    /// those still busy after `grace`, which are left to exit when their job returns.
    /// Returns how many were left behind. Later calls do nothing and return 0.
    pub fn stop(&self, grace: Duration) -> usize {
        let (handles, discarded) = {
            let mut state = self.shared.lock();
            if state.stopping {
                return 0;
            }
            state.stopping = true;
            let discarded = self.discard(&mut state);
            (std::mem::take(&mut state.handles), discarded)
        };
        drop(discarded);
        let watchdog = self
            .watchdog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(w) = watchdog {
            let _ = w.join();
        }
        // Workers busy with a job return when it does; wait for them up to the grace.
        let until = Instant::now() + grace;
        let mut state = self.shared.lock();
        while state.threads > 0 {
            let now = Instant::now();
            if now >= until {
                break;
            }
            state.room_waiters += 1;
            state = self
                .shared
                .room
                .wait_timeout(state, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            state.room_waiters -= 1;
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

    /// Waits up to `timeout` for `condition` on the stats to hold; whether it did.
    pub fn wait_for(&self, timeout: Duration, condition: impl Fn(&PoolStats) -> bool) -> bool {
        let until = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if condition(&state.stats) {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            state.room_waiters += 1;
            state = self
                .shared
                .room
                .wait_timeout(state, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            state.room_waiters -= 1;
        }
    }
}

impl<W: Work> Drop for Pool<W> {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}

#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;
