//! Tests of [`Helpers`]: a job's parts run at once on idle workers, never wait for a worker
//! that is not there, and survive a panicking part.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::*;

/// Every bounded wait in these tests.
const BOUND: Duration = Duration::from_secs(20);

/// Parts that meet: each arrives and waits (up to `BOUND`) until `expected` have arrived;
/// it answers whether they all met. Parts run one after another never meet.
#[derive(Default)]
struct Meeting {
    arrived: Mutex<usize>,
    met: Condvar,
}

impl Meeting {
    fn arrive(&self, expected: usize) -> bool {
        let deadline = Instant::now() + BOUND;
        let mut arrived = self.arrived.lock().unwrap();
        *arrived += 1;
        self.met.notify_all();
        while *arrived < expected {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            arrived = self.met.wait_timeout(arrived, left).unwrap().0;
        }
        true
    }
}

/// A job is split into `parts` parts; each part's result is (its index, the thread it ran
/// on, whether it met the others when `meet`). Part `panic_at` panics.
struct Fan {
    parts: usize,
    meet: bool,
    panic_at: Option<usize>,
    helpers: Mutex<Option<Helpers>>,
    results: mpsc::Sender<Vec<Option<(usize, String, bool)>>>,
    processed: AtomicUsize,
}

impl Work for Fan {
    type Job = u64;
    type Event = ();

    fn process(&self, _job: &mut u64, _worker: u32, _attempt: u32) -> Verdict {
        self.processed.fetch_add(1, Ordering::SeqCst);
        let helpers = self
            .helpers
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(Helpers::none);
        let meeting = Arc::new(Meeting::default());
        let (count, meet, panic_at) = (self.parts, self.meet, self.panic_at);
        let parts = (0..count)
            .map(|index| {
                let meeting = meeting.clone();
                Box::new(move || {
                    if Some(index) == panic_at {
                        panic!("part {index} panics");
                    }
                    let met = meet && meeting.arrive(count - usize::from(panic_at.is_some()));
                    let thread = std::thread::current().name().unwrap_or("").to_string();
                    (index, thread, met)
                }) as Box<dyn FnOnce() -> (usize, String, bool) + Send>
            })
            .collect();
        let _ = self.results.send(helpers.run(parts));
        Verdict::Keep
    }

    fn deliver(&self, _job: u64, _tag: Tag, _report: Report) {}
    fn lost(&self, _first: Tag, _count: u64, _reason: Loss) {}
    fn forward(&self, _event: ()) {}
    fn fatal(&self, _tag: Tag, _message: &str) {}
}

#[allow(clippy::type_complexity)]
fn fan(
    workers: usize,
    parts: usize,
    meet: bool,
    panic_at: Option<usize>,
) -> (
    Pool<Fan>,
    Arc<Fan>,
    mpsc::Receiver<Vec<Option<(usize, String, bool)>>>,
) {
    let (tx, rx) = mpsc::channel();
    let work = Arc::new(Fan {
        parts,
        meet,
        panic_at,
        helpers: Mutex::new(None),
        results: tx,
        processed: AtomicUsize::new(0),
    });
    let pool = Pool::start(
        work.clone(),
        PoolConfig {
            workers,
            ..PoolConfig::default()
        },
    )
    .unwrap();
    *work.helpers.lock().unwrap() = Some(pool.crew().helpers());
    (pool, work, rx)
}

fn tag(seq: u64) -> Tag {
    Tag { epoch: 0, seq }
}

#[test]
fn the_parts_of_one_job_run_at_once_on_idle_workers() {
    // Eight parts that only finish once all eight are running: on eight workers, the job's
    // own worker and seven idle ones take one each.
    let (pool, _work, rx) = fan(8, 8, true, None);
    pool.submit(0, tag(0), 1, None);
    let results = rx.recv_timeout(BOUND).expect("the job ran");
    assert_eq!(results.len(), 8);
    for (i, r) in results.iter().enumerate() {
        let (index, _, met) = r.as_ref().expect("no part panicked");
        assert_eq!(*index, i, "results in the order of the parts");
        assert!(met, "part {i} ran while the other seven did");
    }
    let threads: std::collections::HashSet<_> = results
        .iter()
        .map(|r| r.as_ref().unwrap().1.clone())
        .collect();
    assert_eq!(threads.len(), 8, "eight threads ran them: {threads:?}");
    pool.stop(BOUND);
}

#[test]
fn without_idle_workers_the_job_runs_its_parts_itself() {
    // One worker: nobody takes the queued parts, and the job's worker must not wait for a
    // helper that is not there.
    let (pool, _work, rx) = fan(1, 5, false, None);
    for seq in 0..3 {
        pool.submit(seq, tag(seq), 1, None);
    }
    for _ in 0..3 {
        let results = rx.recv_timeout(BOUND).expect("the job ran its parts");
        let indices: Vec<usize> = results.iter().map(|r| r.as_ref().unwrap().0).collect();
        assert_eq!(indices, vec![0, 1, 2, 3, 4]);
        let thread = &results[0].as_ref().unwrap().1;
        assert!(results.iter().all(|r| &r.as_ref().unwrap().1 == thread));
    }
    pool.stop(BOUND);
}

#[test]
fn a_panicking_part_is_answered_none_and_the_workers_go_on() {
    let (pool, work, rx) = fan(4, 4, true, Some(2));
    pool.submit(0, tag(0), 1, None);
    let results = rx.recv_timeout(BOUND).expect("the job ran");
    assert!(results[2].is_none(), "the panicking part has no result");
    for i in [0, 1, 3] {
        let (index, _, met) = results[i].as_ref().unwrap();
        assert_eq!(*index, i);
        assert!(met, "the three others ran at once");
    }
    // The crew is whole: the next jobs run, their parts too.
    pool.submit(1, tag(1), 1, None);
    pool.submit(2, tag(2), 1, None);
    for _ in 0..2 {
        let results = rx.recv_timeout(BOUND).expect("later jobs ran");
        assert_eq!(results.iter().filter(|r| r.is_some()).count(), 3);
    }
    assert_eq!(work.processed.load(Ordering::SeqCst), 3);
    assert_eq!(pool.stats().workers, 4, "no worker was lost to the panic");
    pool.stop(BOUND);
}

#[test]
fn once_the_crew_is_gone_parts_run_on_the_caller() {
    let (pool, work, _rx) = fan(2, 3, false, None);
    let helpers = work.helpers.lock().unwrap().clone().unwrap();
    pool.stop(BOUND);
    drop(pool);
    let here = std::thread::current().id();
    let parts = (0..3)
        .map(|i| {
            Box::new(move || (i, std::thread::current().id()))
                as Box<dyn FnOnce() -> (i32, std::thread::ThreadId) + Send>
        })
        .collect();
    let results = helpers.run(parts);
    assert_eq!(
        results,
        vec![Some((0, here)), Some((1, here)), Some((2, here))]
    );
}

/// The first job's second part hangs on a gate, on an idle worker (the first part waits
/// until it started there) — or, with `all_hang`, its six parts all do; later jobs' two
/// parts must meet (two workers free at once).
struct HangOnce {
    all_hang: bool,
    helpers: Mutex<Option<Helpers>>,
    gate: Arc<(Mutex<bool>, Condvar)>,
    met: mpsc::Sender<Vec<Option<bool>>>,
    lost: Mutex<Vec<(u64, Loss)>>,
}

impl Work for HangOnce {
    type Job = u64;
    type Event = ();

    fn process(&self, job: &mut u64, _worker: u32, _attempt: u32) -> Verdict {
        let helpers = self.helpers.lock().unwrap().clone().unwrap();
        if *job == 0 && self.all_hang {
            let parts = (0..6)
                .map(|_| {
                    let gate = self.gate.clone();
                    Box::new(move || {
                        wait_open(&gate);
                        true
                    }) as Box<dyn FnOnce() -> bool + Send>
                })
                .collect();
            helpers.run(parts);
            return Verdict::Keep;
        }
        if *job == 0 {
            let started = Arc::new(Meeting::default());
            let (s0, s1, gate) = (started.clone(), started, self.gate.clone());
            let parts: Vec<Box<dyn FnOnce() -> bool + Send>> = vec![
                Box::new(move || s0.arrive(2)),
                Box::new(move || {
                    s1.arrive(1);
                    wait_open(&gate);
                    true
                }),
            ];
            helpers.run(parts);
            return Verdict::Keep;
        }
        let meeting = Arc::new(Meeting::default());
        let parts = (0..2)
            .map(|_| {
                let m = meeting.clone();
                Box::new(move || m.arrive(2)) as Box<dyn FnOnce() -> bool + Send>
            })
            .collect();
        let _ = self.met.send(helpers.run(parts));
        Verdict::Keep
    }

    fn deliver(&self, _job: u64, _tag: Tag, _report: Report) {}
    fn lost(&self, first: Tag, _count: u64, reason: Loss) {
        self.lost.lock().unwrap().push((first.seq, reason));
    }
    fn forward(&self, _event: ()) {}
    fn fatal(&self, _tag: Tag, _message: &str) {}
}

/// A pool of `workers` (`timeout` 100 ms, `max_in_flight` as given) doing [`HangOnce`]'s
/// jobs, with the channel its later jobs report on and the gate its hung parts wait at.
#[allow(clippy::type_complexity)]
fn hang_once(
    all_hang: bool,
    workers: usize,
    max_in_flight: usize,
) -> (
    Pool<HangOnce>,
    Arc<HangOnce>,
    mpsc::Receiver<Vec<Option<bool>>>,
    Arc<(Mutex<bool>, Condvar)>,
) {
    let (tx, rx) = mpsc::channel();
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let work = Arc::new(HangOnce {
        all_hang,
        helpers: Mutex::new(None),
        gate: gate.clone(),
        met: tx,
        lost: Mutex::default(),
    });
    let pool = Pool::start(
        work.clone(),
        PoolConfig {
            workers,
            timeout: Some(Duration::from_millis(100)),
            max_in_flight,
            ..PoolConfig::default()
        },
    )
    .unwrap();
    *work.helpers.lock().unwrap() = Some(pool.crew().helpers());
    (pool, work, rx, gate)
}

/// Polls `done` until it holds (failing after `BOUND`).
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < BOUND, "{what} did not happen");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until `gate` is open.
fn wait_open(gate: &(Mutex<bool>, Condvar)) {
    let mut open = gate.0.lock().unwrap();
    while !*open {
        open = gate.1.wait(open).unwrap();
    }
}

/// Lets every part waiting at `gate` go.
fn open(gate: &(Mutex<bool>, Condvar)) {
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
}

#[test]
fn parts_of_a_timed_out_job_are_left_to_its_caller_not_taken_by_the_replacements() {
    // Two workers, `timeout` 100 ms; job 0's six parts all hang: its worker and one helper
    // take one each. At the timeout both are replaced; the four parts still queued belong to
    // a job given up on, and must not take the replacements, or job 1 never runs.
    let (pool, work, rx, gate) = hang_once(true, 2, 0);
    pool.submit(0, tag(0), 1, None);
    wait_until("job 0's timeout", || !work.lost.lock().unwrap().is_empty());
    pool.submit(1, tag(1), 1, None);
    let met = rx
        .recv_timeout(BOUND)
        .expect("job 1 ran on the replacements");
    assert_eq!(met, vec![Some(true), Some(true)]);
    // Let the hung parts go: job 0's worker takes its four parts back and runs them.
    open(&gate);
    wait_until("the stuck threads' return", || {
        pool.crew().stats().stuck == 0
    });
    pool.stop(BOUND);
}

#[test]
fn a_worker_hung_in_a_part_of_a_timed_out_job_is_replaced_like_the_jobs_own() {
    // Two workers, `timeout` 100 ms: job 0's caller waits for its second part, which hangs
    // on the other worker. At the timeout both threads are stuck; both must be replaced, or
    // the crew is left with one worker and the next job's two parts never run at once.
    let (pool, work, rx, gate) = hang_once(false, 2, 0);
    pool.submit(0, tag(0), 1, None);
    wait_until("job 0's timeout", || !work.lost.lock().unwrap().is_empty());
    assert_eq!(*work.lost.lock().unwrap(), vec![(0, Loss::Timeout)]);
    assert_eq!(pool.crew().stats().stuck, 2, "the caller and its helper");
    pool.submit(1, tag(1), 1, None);
    let met = rx.recv_timeout(BOUND).expect("job 1 ran");
    assert_eq!(
        met,
        vec![Some(true), Some(true)],
        "two workers ran job 1's parts at once"
    );
    // The hung part returns: both stuck threads leave (the crew is whole without them).
    open(&gate);
    wait_until("the stuck threads' return", || {
        pool.crew().stats().stuck == 0
    });
    assert_eq!(pool.stats().workers, 2);
    pool.stop(BOUND);
}

#[test]
fn a_worker_hung_in_a_part_gives_its_members_slot_back_at_the_timeout() {
    // `max_in_flight` 2, three workers: job 0 and its hung part take both slots. At the
    // timeout both are given up; the member must have its two slots back (not one: the hung
    // part's worker has not returned), or job 1's two parts never run at once.
    let (pool, work, rx, gate) = hang_once(false, 3, 2);
    pool.submit(0, tag(0), 1, None);
    wait_until("job 0's timeout", || !work.lost.lock().unwrap().is_empty());
    pool.submit(1, tag(1), 1, None);
    let met = rx.recv_timeout(BOUND).expect("job 1 ran");
    assert_eq!(met, vec![Some(true), Some(true)], "both slots were free");
    open(&gate);
    pool.stop(BOUND);
}

/// Two members of one crew: `a`'s one job has eight parts, `b`'s jobs report that they
/// ran. Part 0 (its own worker's) waits for `gate`; the others each wait for a ticket (or
/// the gate), counted as they start.
struct Busy {
    parts: usize,
    helpers: Mutex<Option<Helpers>>,
    /// (tickets, gate open).
    gate: Arc<(Mutex<(usize, bool)>, Condvar)>,
    started: Arc<AtomicUsize>,
    ran: mpsc::Sender<u64>,
}

impl Work for Busy {
    type Job = u64;
    type Event = ();

    fn process(&self, job: &mut u64, _worker: u32, _attempt: u32) -> Verdict {
        if self.parts == 0 {
            let _ = self.ran.send(*job);
            return Verdict::Keep;
        }
        let helpers = self.helpers.lock().unwrap().clone().unwrap();
        let parts = (0..self.parts)
            .map(|i| {
                let (gate, started) = (self.gate.clone(), self.started.clone());
                Box::new(move || {
                    started.fetch_add(1, Ordering::SeqCst);
                    let mut g = gate.0.lock().unwrap();
                    loop {
                        if g.1 {
                            break;
                        }
                        if i > 0 && g.0 > 0 {
                            g.0 -= 1;
                            break;
                        }
                        g = gate.1.wait(g).unwrap();
                    }
                }) as Box<dyn FnOnce() + Send>
            })
            .collect();
        helpers.run(parts);
        Verdict::Keep
    }

    fn deliver(&self, _job: u64, _tag: Tag, _report: Report) {}
    fn lost(&self, _first: Tag, _count: u64, _reason: Loss) {}
    fn forward(&self, _event: ()) {}
    fn fatal(&self, _tag: Tag, _message: &str) {}
}

#[test]
fn one_members_parts_leave_the_other_members_their_share_of_the_workers() {
    // Four shared workers, all in member a's parts (its worker and three helpers); then
    // member b's job comes, and one helper's part ends. Parts go before new jobs, but not
    // past a's even share (two of four) while b has a job waiting: that helper takes b's
    // job, not a's next part.
    let crew = Crew::start(
        CrewConfig {
            workers: 4,
            max_workers: 0,
            idle_timeout: Duration::from_secs(3600),
        },
        true,
    )
    .unwrap();
    let gate = Arc::new((Mutex::new((0usize, false)), Condvar::new()));
    let started = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    let member = |parts| {
        Arc::new(Busy {
            parts,
            helpers: Mutex::new(Some(crew.helpers())),
            gate: gate.clone(),
            started: started.clone(),
            ran: tx.clone(),
        })
    };
    let a = crew.join(member(8), MemberConfig::default()).unwrap();
    let b = crew.join(member(0), MemberConfig::default()).unwrap();
    a.submit(0, tag(0), 1, None);
    wait_until("a's parts taking the four workers", || {
        started.load(Ordering::SeqCst) >= 4
    });
    b.submit(7, tag(0), 1, None);
    // One helper's part ends.
    gate.0.lock().unwrap().0 = 1;
    gate.1.notify_all();
    let ran = rx.recv_timeout(Duration::from_secs(5));
    gate.0.lock().unwrap().1 = true;
    gate.1.notify_all();
    assert_eq!(ran, Ok(7), "b's job waited behind a's parts");
    a.stop(BOUND);
    b.stop(BOUND);
    crew.stop(BOUND);
}
