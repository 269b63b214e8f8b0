//! The bounded queue and worker pool behind `enrichpool`, free of GStreamer.
//!
//! A producer [`Pool::submit`]s jobs into a queue bounded by buffers, bytes and time (queued
//! plus in-flight jobs count). When it is full the [`Leaky`] policy decides: wait, drop the
//! new job, or drop the oldest queued one. Worker threads take jobs in order, run
//! [`Work::process`] (retrying per [`OnError`]), and hand finished jobs to [`Work::deliver`]
//! as they finish — out of order, one delivery at a time. Every job that will not be
//! delivered goes to [`Work::lost`] with its [`Loss`] reason, also one at a time.
//!
//! Faults: a panicking `process` counts as failed and its thread is replaced; one that runs
//! past `timeout` is abandoned (lost as `Timeout`, a replacement worker started) and its
//! late result discarded. [`Pool::stop`] never waits for a hung job longer than the grace
//! it is given: such threads are left to finish on their own and then exit.
//!
//! Lock order: `deliver` before `state`; nothing is called on [`Work`] with `state` held.

mod queue;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use queue::{BoundedQueue, Entry, Outside};
pub use queue::{Leaky, Limits};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
}

/// The work a pool does; implemented by the element.
pub trait Work: Send + Sync + 'static {
    type Job: Send + 'static;
    /// Identifies a job in losses (sequence number and epoch, for the element).
    type Tag: Copy + Send + 'static;

    /// One attempt at a job. May panic or hang; both are handled.
    fn process(&self, job: &mut Self::Job, worker: u32, attempt: u32) -> Verdict;
    /// A finished job, in completion order. Called one at a time.
    fn deliver(&self, job: Self::Job, tag: Self::Tag, report: Report);
    /// A job that will never be delivered. Called one at a time, interleaved with deliveries.
    fn lost(&self, tag: Self::Tag, reason: Loss);
    /// `OnError::Fail` met a failure.
    fn fatal(&self, tag: Self::Tag, message: &str);
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
    /// Jobs discarded by a flush (queued, or in flight when it came).
    pub flushed: u64,
    pub retries: u64,
    pub queued: u64,
    pub max_queued: u64,
    pub in_flight: u64,
    pub workers: u64,
    pub max_processing_time: Duration,
    /// Indexed by worker number.
    pub per_worker: Vec<WorkerStats>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flight {
    Running,
    Delivering,
    /// Given up by the watchdog and lost as a timeout; its worker was replaced, and the late
    /// result is discarded.
    TimedOut,
    /// Discarded by a flush or a stop; the result is discarded.
    Abandoned,
}

impl Flight {
    /// Whether the job will still be delivered or lost (it counts against the bounds).
    fn pending(self) -> bool {
        matches!(self, Flight::Running | Flight::Delivering)
    }
}

struct InFlight<T> {
    tag: T,
    deadline: Option<Instant>,
    state: Flight,
    bytes: u64,
    running_time: Option<u64>,
}

struct State<W: Work> {
    config: PoolConfig,
    queue: BoundedQueue<(W::Job, W::Tag)>,
    in_flight: HashMap<u64, InFlight<W::Tag>>,
    next_id: u64,
    flushing: bool,
    stopping: bool,
    /// Workers that take new jobs (not stuck in an abandoned job, not retired).
    live: usize,
    idle: usize,
    next_worker: u32,
    handles: Vec<JoinHandle<()>>,
    /// Worker threads not yet returned (live, retiring or stuck).
    threads: usize,
    stats: PoolStats,
}

impl<W: Work> State<W> {
    fn pending_in_flight(&self) -> impl Iterator<Item = &InFlight<W::Tag>> {
        self.in_flight.values().filter(|f| f.state.pending())
    }

    /// Jobs queued or in flight that will still be delivered or lost.
    fn outstanding(&self) -> usize {
        self.queue.len() + self.pending_in_flight().count()
    }

    fn outside(&self) -> Outside {
        let mut outside = Outside::default();
        for f in self.pending_in_flight() {
            outside.count += 1;
            outside.bytes += f.bytes;
            outside.oldest_running_time = match (outside.oldest_running_time, f.running_time) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        outside
    }

    fn refresh_gauges(&mut self) {
        self.stats.queued = self.queue.len() as u64;
        self.stats.max_queued = self.stats.max_queued.max(self.stats.queued);
        self.stats.in_flight = self.pending_in_flight().count() as u64;
        self.stats.workers = self.live as u64;
    }
}

struct Shared<W: Work> {
    work: Arc<W>,
    state: Mutex<State<W>>,
    /// Workers wait here for jobs, the watchdog for deadlines.
    work_ready: Condvar,
    /// Producers wait here for room, barriers for idleness.
    room: Condvar,
    /// Serializes deliveries and losses.
    deliver: Mutex<()>,
}

impl<W: Work> Shared<W> {
    fn lock(&self) -> MutexGuard<'_, State<W>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn deliver_lock(&self) -> MutexGuard<'_, ()> {
        self.deliver.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lose(&self, tag: W::Tag, reason: Loss) {
        let _d = self.deliver_lock();
        self.work.lost(tag, reason);
    }

    fn spawn_worker(self: &Arc<Self>, state: &mut State<W>) {
        // Threads that retired or were replaced are done; forget their handles.
        state.handles.retain(|h| !h.is_finished());
        let number = state.next_worker;
        state.next_worker += 1;
        state.stats.per_worker.push(WorkerStats::default());
        state.live += 1;
        state.threads += 1;
        state.refresh_gauges();
        let shared = self.clone();
        let handle = std::thread::Builder::new()
            .name(format!("enrich-worker-{number}"))
            .spawn(move || shared.worker_loop(number))
            .expect("spawning a worker thread");
        state.handles.push(handle);
    }

    /// Waits for the next job; `None` when the worker is to exit (stop, or retired).
    fn next_job(&self) -> Option<(u64, W::Job, W::Tag)> {
        let mut state = self.lock();
        loop {
            if state.stopping {
                state.live -= 1;
                return None;
            }
            if !state.flushing
                && let Some(entry) = state.queue.pop_front()
            {
                let id = state.next_id;
                state.next_id += 1;
                let (job, tag) = entry.item;
                let deadline = state.config.timeout.map(|t| Instant::now() + t);
                state.in_flight.insert(
                    id,
                    InFlight {
                        tag,
                        deadline,
                        state: Flight::Running,
                        bytes: entry.bytes,
                        running_time: entry.running_time,
                    },
                );
                state.refresh_gauges();
                if deadline.is_some() {
                    self.work_ready.notify_all();
                }
                return Some((id, job, tag));
            }
            let idle_timeout = state.config.idle_timeout;
            state.idle += 1;
            let (s, waited) = self
                .work_ready
                .wait_timeout(state, idle_timeout)
                .unwrap_or_else(|e| e.into_inner());
            state = s;
            state.idle -= 1;
            if waited.timed_out() && state.queue.is_empty() && state.live > state.config.workers {
                state.live -= 1;
                state.refresh_gauges();
                return None;
            }
        }
    }

    fn worker_loop(self: Arc<Self>, number: u32) {
        let _exit = ThreadExit(&self);
        while let Some((id, mut job, tag)) = self.next_job() {
            let (on_error, retries) = {
                let s = self.lock();
                (s.config.on_error, s.config.retries)
            };
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
                        let pending = s.in_flight.get(&id).is_some_and(|f| f.state.pending());
                        if on_error == OnError::Retry
                            && attempts <= retries
                            && !s.stopping
                            && pending
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
            let report = Report {
                worker: number,
                attempts,
                processing_time: started.elapsed(),
            };
            if !self.finish(id, job, tag, outcome, on_error, report) {
                return;
            }
        }
    }

    /// Delivers or loses a processed job. Returns whether the worker goes on.
    fn finish(
        self: &Arc<Self>,
        id: u64,
        job: W::Job,
        tag: W::Tag,
        outcome: Outcome,
        on_error: OnError,
        report: Report,
    ) -> bool {
        let deliver = self.deliver_lock();
        let mut state = self.lock();
        let w = &mut state.stats.per_worker[report.worker as usize];
        w.processed += 1;
        w.busy += report.processing_time;
        state.stats.max_processing_time =
            state.stats.max_processing_time.max(report.processing_time);

        let Some(flight) = state.in_flight.get_mut(&id) else {
            unreachable!("a job in flight is only removed by its worker");
        };
        if !flight.state.pending() {
            // Already lost as a timeout, or discarded by a flush or stop: the result is
            // dropped. A worker replaced after a timeout retires unless the pool is short of
            // workers.
            let timed_out = flight.state == Flight::TimedOut;
            state.in_flight.remove(&id);
            let go_on = !state.stopping && (!timed_out || state.live < state.config.workers);
            if timed_out && go_on {
                state.live += 1;
            }
            state.refresh_gauges();
            self.room.notify_all();
            drop(state);
            drop(deliver);
            drop(job);
            return go_on;
        }
        flight.state = Flight::Delivering;
        // Counted before the callback, so that whoever sees its result sees the count too.
        match &outcome {
            Outcome::Keep => state.stats.delivered += 1,
            Outcome::Lost(Loss::Dropped, _) => state.stats.dropped += 1,
            Outcome::Lost(..) | Outcome::Panicked => state.stats.failed += 1,
        }
        drop(state);

        let panicked = matches!(outcome, Outcome::Panicked);
        match outcome {
            Outcome::Keep => self.work.deliver(job, tag, report),
            Outcome::Lost(loss, message) => {
                drop(job);
                self.work.lost(tag, loss);
                if loss == Loss::Failed && on_error == OnError::Fail {
                    self.work
                        .fatal(tag, message.as_deref().unwrap_or("processing failed"));
                }
            }
            Outcome::Panicked => {
                drop(job);
                self.work.lost(tag, Loss::Failed);
                if on_error == OnError::Fail {
                    self.work.fatal(tag, "the handler panicked");
                }
            }
        }

        let mut state = self.lock();
        state.in_flight.remove(&id);
        if panicked {
            // Its thread-local state may be broken: a fresh thread takes its place.
            state.live -= 1;
            if !state.stopping {
                self.spawn_worker(&mut state);
            }
        }
        state.refresh_gauges();
        self.room.notify_all();
        drop(state);
        drop(deliver);
        !panicked
    }

    fn watchdog_loop(self: Arc<Self>) {
        let mut state = self.lock();
        loop {
            if state.stopping {
                return;
            }
            let now = Instant::now();
            let mut expired = Vec::new();
            let mut next: Option<Instant> = None;
            for f in state.in_flight.values_mut() {
                match (f.state, f.deadline) {
                    (Flight::Running, Some(d)) if d <= now => {
                        f.state = Flight::TimedOut;
                        expired.push(f.tag);
                    }
                    (Flight::Running, Some(d)) => next = Some(next.map_or(d, |n| n.min(d))),
                    _ => {}
                }
            }
            if !expired.is_empty() {
                // The stuck workers no longer count; replacements keep the pool's strength.
                state.live -= expired.len();
                state.stats.timeout += expired.len() as u64;
                while state.live < state.config.workers {
                    self.spawn_worker(&mut state);
                }
                state.refresh_gauges();
                drop(state);
                {
                    let _d = self.deliver_lock();
                    for tag in expired {
                        self.work.lost(tag, Loss::Timeout);
                    }
                }
                self.room.notify_all();
                state = self.lock();
                continue;
            }
            let wait = next.map_or(Duration::from_secs(3600), |n| {
                n.saturating_duration_since(now)
            });
            state = self
                .work_ready
                .wait_timeout(state, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// A running pool. Dropping it stops it without waiting for busy workers.
pub struct Pool<W: Work> {
    shared: Arc<Shared<W>>,
    watchdog: Option<JoinHandle<()>>,
}

/// Counts a worker thread out when it returns, however it returns.
struct ThreadExit<'a, W: Work>(&'a Arc<Shared<W>>);

impl<W: Work> Drop for ThreadExit<'_, W> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.threads -= 1;
        state.refresh_gauges();
        self.0.room.notify_all();
    }
}

enum Outcome {
    Keep,
    Lost(Loss, Option<String>),
    Panicked,
}

impl<W: Work> Pool<W> {
    /// Starts `config.workers` workers (at least one).
    pub fn start(work: Arc<W>, mut config: PoolConfig) -> Pool<W> {
        config.workers = config.workers.max(1);
        let shared = Arc::new(Shared {
            work,
            state: Mutex::new(State {
                config,
                queue: BoundedQueue::new(),
                in_flight: HashMap::new(),
                next_id: 0,
                flushing: false,
                stopping: false,
                live: 0,
                idle: 0,
                next_worker: 0,
                handles: Vec::new(),
                threads: 0,
                stats: PoolStats::default(),
            }),
            work_ready: Condvar::new(),
            room: Condvar::new(),
            deliver: Mutex::new(()),
        });
        {
            let mut state = shared.lock();
            for _ in 0..config.workers {
                shared.spawn_worker(&mut state);
            }
        }
        let watchdog = config.timeout.map(|_| {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("enrich-watchdog".into())
                .spawn(move || shared.watchdog_loop())
                .expect("spawning the watchdog thread")
        });
        Pool { shared, watchdog }
    }

    /// Queues a job of `bytes` taken at `running_time`. With `Leaky::None` this waits for
    /// room (or a flush or stop). Losses it causes are reported through [`Work::lost`].
    pub fn submit(
        &self,
        job: W::Job,
        tag: W::Tag,
        bytes: u64,
        running_time: Option<u64>,
    ) -> Submitted {
        let mut state = self.shared.lock();
        let mut leaked = 0;
        loop {
            if state.flushing || state.stopping {
                return Submitted::Stopped;
            }
            let outside = state.outside();
            if !state
                .queue
                .is_full(&state.config.limits, outside, running_time)
            {
                break;
            }
            match state.config.leaky {
                Leaky::None => {
                    state = self
                        .shared
                        .room
                        .wait(state)
                        .unwrap_or_else(|e| e.into_inner());
                }
                Leaky::Upstream => {
                    state.stats.submitted += 1;
                    state.stats.leaked += 1;
                    drop(state);
                    self.shared.lose(tag, Loss::Leaked);
                    return Submitted::Leaked;
                }
                Leaky::Downstream => match state.queue.pop_front() {
                    Some(old) => {
                        state.stats.leaked += 1;
                        leaked += 1;
                        state.refresh_gauges();
                        drop(state);
                        self.shared.lose(old.item.1, Loss::Leaked);
                        drop(old);
                        state = self.shared.lock();
                    }
                    None => {
                        // Everything outstanding is in flight: the new job is the one to go.
                        state.stats.submitted += 1;
                        state.stats.leaked += 1;
                        drop(state);
                        self.shared.lose(tag, Loss::Leaked);
                        return Submitted::Leaked;
                    }
                },
            }
        }
        state.stats.submitted += 1;
        state.queue.push_back(Entry {
            item: (job, tag),
            bytes,
            running_time,
        });
        // Grow while the queue stays deep: no idle worker and more queued than workers.
        if state.idle == 0
            && state.queue.len() > state.live
            && state.live < state.config.max_workers
        {
            self.shared.spawn_worker(&mut state);
        }
        state.refresh_gauges();
        self.shared.work_ready.notify_one();
        Submitted::Queued { leaked }
    }

    /// Waits until every job submitted so far is delivered or lost. `false` when a flush or
    /// stop came first.
    pub fn wait_idle(&self) -> bool {
        let mut state = self.shared.lock();
        loop {
            if state.flushing || state.stopping {
                return false;
            }
            if state.outstanding() == 0 {
                return true;
            }
            state = self
                .shared
                .room
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Runs `f` while no delivery or loss is being made (to push something between them).
    pub fn exclusive<R>(&self, f: impl FnOnce() -> R) -> R {
        let _d = self.shared.deliver_lock();
        f()
    }

    /// Discards queued jobs and abandons those in flight (their results are dropped when
    /// they come); wakes every waiter. No losses are reported: a flush loses everything.
    /// Jobs are refused until [`Pool::resume`].
    pub fn flush(&self) {
        let mut state = self.shared.lock();
        state.flushing = true;
        let discarded: Vec<_> = state.queue.drain().collect();
        let mut count = discarded.len() as u64;
        for f in state.in_flight.values_mut() {
            if f.state == Flight::Running {
                f.state = Flight::Abandoned;
                count += 1;
            }
        }
        state.stats.flushed += count;
        state.refresh_gauges();
        self.shared.room.notify_all();
        self.shared.work_ready.notify_all();
        drop(state);
        drop(discarded);
    }

    pub fn resume(&self) {
        self.shared.lock().flushing = false;
        self.shared.work_ready.notify_all();
    }

    pub fn stats(&self) -> PoolStats {
        self.shared.lock().stats.clone()
    }

    /// Stops the pool: queued jobs are discarded, waiters woken, and workers joined — except
    /// those still busy after `grace`, which are left to exit when their job returns.
    /// Returns how many were left behind.
    pub fn stop(mut self, grace: Duration) -> usize {
        self.stop_inner(grace)
    }

    fn stop_inner(&mut self, grace: Duration) -> usize {
        let handles = {
            let mut state = self.shared.lock();
            state.stopping = true;
            let discarded: Vec<_> = state.queue.drain().collect();
            state.stats.flushed += discarded.len() as u64;
            for f in state.in_flight.values_mut() {
                if f.state == Flight::Running {
                    f.state = Flight::Abandoned;
                }
            }
            self.shared.room.notify_all();
            self.shared.work_ready.notify_all();
            std::mem::take(&mut state.handles)
        };
        if let Some(w) = self.watchdog.take() {
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
            state = self
                .shared
                .room
                .wait_timeout(state, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
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
            state = self
                .shared
                .room
                .wait_timeout(state, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl<W: Work> Drop for Pool<W> {
    fn drop(&mut self) {
        if !self.shared.lock().stopping {
            self.stop_inner(Duration::ZERO);
        }
    }
}

#[cfg(test)]
mod tests;
