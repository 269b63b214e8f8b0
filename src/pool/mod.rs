//! The bounded queues and worker pool behind `enrichpool`, free of GStreamer.
//!
//! A [`Crew`] of worker threads serves one or more members ([`Pool`]s): each member has its
//! own queue, bounds, order of output, events, flushes and ledger; workers take jobs from
//! the members' queues in round-robin, weighted by each member's `priority` and bounded by
//! its `max_in_flight`. A private pool ([`Pool::start`]) is a crew with one member. In a
//! shared crew a member that is flushed, stopped, failing, hung or blocked downstream costs
//! the others nothing: its jobs are its own, a hung handler is replaced after `timeout` as
//! in a private pool, and a worker blocked in one member's push for [`PUSH_PATIENCE`] is
//! replaced by a fresh one.
//!
//! For each member:
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
//! Lock order: one lock, `state`, for the crew and all its members. Nothing is called on [`Work`] with it held, and only the
//! pusher calls `deliver`, `lost` and `forward`, one call at a time.

mod core;
mod order;
mod parts;
mod queue;

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub use self::core::{LATENCY_EVERY, current_worker};
use self::core::{MemberId, Shared};
pub use order::Run;
pub use parts::Helpers;
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

/// Sizes and policies of a private pool: its crew of workers and its one member.
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
    /// The most jobs processed at once, parts of them on other workers included (0 = as
    /// many as there are workers).
    pub max_in_flight: usize,
}

impl PoolConfig {
    /// The most workers the pool runs at once.
    pub fn most_workers(&self) -> usize {
        self.crew().most_workers()
    }

    /// How far out of order the pool's output can be: see [`Pool::disorder`].
    pub fn disorder(&self) -> u64 {
        self.member().disorder(self.most_workers())
    }

    /// How many threads stuck in timed-out jobs the pool keeps replacing; beyond that, a
    /// stuck worker is not replaced until one returns.
    pub fn max_stuck(&self) -> usize {
        self.most_workers()
    }

    /// The crew's part.
    pub fn crew(&self) -> CrewConfig {
        CrewConfig {
            workers: self.workers,
            max_workers: self.max_workers,
            idle_timeout: self.idle_timeout,
        }
    }

    /// The member's part.
    pub fn member(&self) -> MemberConfig {
        MemberConfig {
            limits: self.limits,
            leaky: self.leaky,
            timeout: self.timeout,
            on_error: self.on_error,
            retries: self.retries,
            max_in_flight: self.max_in_flight,
            priority: 1,
        }
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
            max_in_flight: 0,
        }
    }
}

/// The workers of a [`Crew`], which every member's jobs share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrewConfig {
    /// Workers started, and kept at least.
    pub workers: usize,
    /// Autoscaling grows up to this many while the queues stay deep (≤ `workers`: fixed).
    pub max_workers: usize,
    /// Extra workers idle this long retire.
    pub idle_timeout: Duration,
}

impl CrewConfig {
    /// The most workers the crew runs at once.
    pub fn most_workers(&self) -> usize {
        self.workers.max(self.max_workers).max(1)
    }
}

/// One member's queue, bounds and policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberConfig {
    pub limits: Limits,
    pub leaky: Leaky,
    /// Bound on one job's processing, all attempts together.
    pub timeout: Option<Duration>,
    pub on_error: OnError,
    pub retries: u32,
    /// The most jobs of this member processed at once (0 = as many as there are workers).
    pub max_in_flight: usize,
    /// The member's weight in the round-robin: it takes up to this many jobs per turn
    /// (at least 1).
    pub priority: u32,
}

impl MemberConfig {
    /// How far out of order the member's output can be on a crew of at most `most_workers`:
    /// see [`Pool::disorder`].
    pub fn disorder(&self, most_workers: usize) -> u64 {
        match self.limits.max_buffers {
            0 => {
                let workers = match self.max_in_flight {
                    0 => most_workers,
                    n => n.min(most_workers),
                };
                2 * workers.max(1) as u64
            }
            n => n,
        }
    }
}

impl Default for MemberConfig {
    fn default() -> Self {
        PoolConfig::default().member()
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
    /// Pushes of this member that blocked long enough (see [`PUSH_PATIENCE`]) for a shared
    /// crew to start a worker in the pusher's place.
    pub blocked_pushes: u64,
    pub max_processing_time: Duration,
    /// What the pool adds to a stream's latency: the 99th percentile of submission-to-finish
    /// time (queue wait plus processing) of the last [`LATENCY_WINDOW`] delivered jobs (never
    /// the largest of several), plus a quarter. Jobs lost (timed out, failed, dropped,
    /// flushed) do not count.
    pub latency: Duration,
    /// Indexed by worker number: this member's jobs on each worker of the crew.
    pub per_worker: Vec<WorkerStats>,
}

/// Figures of a crew and its members.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CrewStats {
    pub workers: u64,
    pub idle: u64,
    pub stuck: u64,
    /// Threads inside a push that blocked past [`PUSH_PATIENCE`] (replaced in a shared crew).
    pub blocked: u64,
    /// Worker threads not yet returned (live, retiring, stuck or blocked).
    pub threads: u64,
    pub spawn_failures: u64,
    /// Jobs of any member, indexed by worker number.
    pub per_worker: Vec<WorkerStats>,
    pub members: Vec<MemberShare>,
}

/// A member's part of a crew's work.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberShare {
    /// Its number in the crew, in order of joining.
    pub member: u64,
    pub priority: u32,
    pub max_in_flight: u64,
    pub queued: u64,
    pub in_flight: u64,
    /// Jobs its workers finished processing (delivered or not).
    pub processed: u64,
    pub delivered: u64,
    /// Delivered per second since it joined.
    pub throughput: f64,
    /// Its fraction of the crew's processing time since the crew started (0 to 1).
    pub share: f64,
}

/// How long a worker of a shared crew may be inside one push before a fresh worker is
/// started in its place (the push goes on; the worker leaves afterwards unless the crew is
/// short). A push into a `resequencer` or a `queue` returns at once unless downstream is
/// blocked.
pub const PUSH_PATIENCE: Duration = Duration::from_millis(200);

/// Worker threads serving the jobs of one or more [`Pool`]s. Dropping it (and every member)
/// stops it without waiting for busy workers.
pub struct Crew<W: Work> {
    shared: Arc<Shared<W>>,
    watchdog: Mutex<Option<JoinHandle<()>>>,
}

impl<W: Work> Crew<W> {
    /// Starts `config.workers` workers (at least one). `shared`: members are expected to
    /// come and go (a blocked push is replaced; the watchdog always runs). Fails when not
    /// one worker thread can be started.
    pub fn start(mut config: CrewConfig, shared: bool) -> Result<Arc<Crew<W>>, String> {
        config.workers = config.workers.max(1);
        let crew = Arc::new(Crew {
            shared: Arc::new(Shared::new(config, shared)),
            watchdog: Mutex::new(None),
        });
        // The lock is let go between spawns: a worker that has started goes to sleep on its
        // own instead of queueing with all the others for the lock at the end.
        for _ in 0..config.workers {
            let mut state = crew.shared.lock();
            crew.shared.spawn_worker(&mut state);
        }
        let state = crew.shared.lock();
        if state.threads == 0 {
            drop(state);
            crew.stop(Duration::ZERO);
            return Err("could not start any worker thread".into());
        }
        drop(crew.shared.tell(state));
        if shared {
            crew.start_watchdog()?;
        }
        Ok(crew)
    }

    fn start_watchdog(&self) -> Result<(), String> {
        let mut watchdog = self.watchdog.lock().unwrap_or_else(|e| e.into_inner());
        if watchdog.is_some() {
            return Ok(());
        }
        let s = self.shared.clone();
        let handle = std::thread::Builder::new()
            .name("enrich-watchdog".into())
            .spawn(move || s.watchdog_loop())
            .map_err(|err| format!("could not start the watchdog thread: {err}"))?;
        *watchdog = Some(handle);
        Ok(())
    }

    /// A new member with its own queue and policies. A crew started private takes one.
    pub fn join(self: &Arc<Self>, work: Arc<W>, config: MemberConfig) -> Result<Pool<W>, String> {
        let needs_watchdog = {
            let state = self.shared.lock();
            Shared::needs_watchdog(&state, &config)
        };
        if needs_watchdog {
            self.start_watchdog()?;
        }
        let id = self.shared.join(work, config)?;
        Ok(Pool {
            crew: self.clone(),
            id,
            last: Mutex::new(None),
            private: false,
        })
    }

    /// Runs parts of a job on this crew's idle workers (see [`Helpers`]); for the work to
    /// keep and call from `process`.
    pub fn helpers(&self) -> Helpers {
        let shared: Arc<dyn parts::Host> = self.shared.clone();
        Helpers::new(Arc::downgrade(&shared))
    }

    /// The crew's workers and its members' shares.
    pub fn stats(&self) -> CrewStats {
        self.shared.lock().crew_stats()
    }

    /// Stops the crew: every member's queued jobs are discarded, waiters woken, and workers
    /// joined — except those still busy after `grace`, which are left to exit when their job
    /// returns. Returns how many were left behind. Later calls do nothing and return 0.
    pub fn stop(&self, grace: Duration) -> usize {
        let watchdog = self
            .watchdog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.shared.stop(grace, watchdog)
    }
}

impl<W: Work> Drop for Crew<W> {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}

/// One member of a [`Crew`]: a queue, its order of output and its ledger. A private pool
/// owns its crew. Dropping it stops it without waiting for busy workers.
pub struct Pool<W: Work> {
    crew: Arc<Crew<W>>,
    id: MemberId,
    /// The ledger as it stood when the pool stopped.
    last: Mutex<Option<PoolStats>>,
    /// The crew is this pool's alone: stopping the pool stops it.
    private: bool,
}

impl<W: Work> Pool<W> {
    /// A private pool: a crew of `config.workers` workers (at least one) for this pool
    /// alone. Fails when not one worker thread (or the watchdog) can be started.
    pub fn start(work: Arc<W>, config: PoolConfig) -> Result<Pool<W>, String> {
        let crew = Crew::start(config.crew(), false)?;
        let mut pool = match crew.join(work, config.member()) {
            Ok(pool) => pool,
            Err(err) => {
                crew.stop(Duration::ZERO);
                return Err(err);
            }
        };
        pool.private = true;
        Ok(pool)
    }

    /// The crew this pool's jobs run on.
    pub fn crew(&self) -> &Arc<Crew<W>> {
        &self.crew
    }

    /// This member's number in its crew (see [`MemberShare::member`]).
    pub fn member(&self) -> u64 {
        self.id
    }

    #[cfg(test)]
    fn shared(&self) -> &Arc<Shared<W>> {
        &self.crew.shared
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
        self.crew
            .shared
            .submit(self.id, job, tag, bytes, running_time)
    }

    /// A serialized event: it leaves after the results of every job submitted so far and
    /// before those of every job submitted later. Dropped while flushing or stopped.
    pub fn event(&self, event: W::Event) -> bool {
        self.crew.shared.event(self.id, event)
    }

    /// `count` consecutive frames from `first` that will never come to this pool (a gap from
    /// upstream): announced in their place after the events before them.
    pub fn lost(&self, first: Tag, count: u64, reason: Loss) -> bool {
        self.crew.shared.lost(self.id, first, count, reason)
    }

    /// Waits until everything submitted so far has been output, then runs `f` as the pusher
    /// (nothing else is output meanwhile). `None` when a flush or stop came first.
    pub fn when_idle<R>(&self, f: impl FnOnce() -> R) -> Option<R> {
        if !self.crew.shared.become_pusher(self.id) {
            return None;
        }
        /// Gives the pusher's place back however `f` returns.
        struct Release<'a, W: Work>(&'a Shared<W>, MemberId);
        impl<W: Work> Drop for Release<'_, W> {
            fn drop(&mut self) {
                self.0.release(self.1);
            }
        }
        let release = Release(&self.crew.shared, self.id);
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
    /// order. Jobs are refused until [`Pool::resume`]. Other members of the crew go on.
    pub fn flush(&self) -> Vec<W::Event> {
        self.crew.shared.flush(self.id)
    }

    /// Ends a flush: waits until the pusher (if one is in the middle of an output) and any
    /// worker reporting a fatal error are done, so that nothing from before the flush leaves
    /// (or fails the stream) after this returns; then takes jobs again.
    pub fn resume(&self) {
        self.crew.shared.resume(self.id)
    }

    /// This member's ledger, with the crew's gauges (workers, idle, stuck, spawn failures).
    pub fn stats(&self) -> PoolStats {
        if let Some(last) = &*self.last.lock().unwrap_or_else(|e| e.into_inner()) {
            return last.clone();
        }
        self.crew.shared.lock().stats(self.id)
    }

    /// How far out of order this pool's output can be, in frames: `max_buffers` (no frame
    /// is admitted that far ahead of the oldest one not yet pushed or given up on), or twice
    /// the most workers (or `max_in_flight`) when unbounded.
    pub fn disorder(&self) -> u64 {
        self.crew.shared.lock().disorder(self.id)
    }

    /// Stops the pool: queued jobs are discarded, waiters woken; this waits up to `grace`
    /// for its jobs in flight. A private pool then stops its crew, joining the workers
    /// (those still busy after `grace` are left to exit when their job returns). Returns
    /// how many were left behind (workers of a private pool, jobs of a member). Later calls
    /// do nothing and return 0.
    pub fn stop(&self, grace: Duration) -> usize {
        let until = std::time::Instant::now() + grace;
        let (left, last) = self.crew.shared.leave(self.id, grace);
        if let Some(last) = last {
            *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(last);
        }
        if self.private {
            self.crew
                .stop(until.saturating_duration_since(std::time::Instant::now()))
        } else {
            left
        }
    }

    /// Waits up to `timeout` for `condition` on the stats to hold; whether it did.
    pub fn wait_for(&self, timeout: Duration, condition: impl Fn(&PoolStats) -> bool) -> bool {
        self.crew.shared.wait_for(self.id, timeout, condition)
    }
}

impl<W: Work> Drop for Pool<W> {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}

#[cfg(test)]
mod crew_tests;
#[cfg(test)]
mod model;
#[cfg(test)]
mod parts_tests;
#[cfg(test)]
mod tests;
