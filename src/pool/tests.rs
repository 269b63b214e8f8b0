//! Pool tests with a scripted `Work`: the order of deliveries is free, accounting and the
//! place of events and losses are not.

use std::sync::mpsc;

use super::core::{FAIL_SPAWNS, RecentLatency};
use super::*;
use std::sync::Condvar;
use std::time::Instant;

type Behaviour = Box<dyn Fn(u64, u32) -> Verdict + Send + Sync>;
type GateRef = Arc<(Mutex<bool>, Condvar)>;

/// What the pool output, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Output {
    Frame(u64),
    Lost(u64, u64, Loss),
    Event(&'static str),
}

struct Script {
    behaviour: Behaviour,
    delivered: Mutex<Vec<(u64, Report)>>,
    log: Mutex<Vec<Output>>,
    fatal: Mutex<Vec<u64>>,
    warnings: Mutex<Vec<String>>,
    /// Deliveries wait here while it is closed (a blocked downstream).
    downstream: Mutex<Option<GateRef>>,
    outputs: Mutex<Option<mpsc::Sender<Output>>>,
}

fn tag(seq: u64) -> Tag {
    Tag { epoch: 0, seq }
}

impl Script {
    fn new(behaviour: impl Fn(u64, u32) -> Verdict + Send + Sync + 'static) -> Arc<Script> {
        Arc::new(Script {
            behaviour: Box::new(behaviour),
            delivered: Mutex::default(),
            log: Mutex::default(),
            fatal: Mutex::default(),
            warnings: Mutex::default(),
            downstream: Mutex::default(),
            outputs: Mutex::default(),
        })
    }

    fn delivered(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.delivered.lock().unwrap().iter().map(|d| d.0).collect();
        v.sort();
        v
    }

    /// Every lost frame with its reason, sorted.
    fn lost(&self) -> Vec<(u64, Loss)> {
        let mut v: Vec<(u64, Loss)> = self
            .log()
            .iter()
            .flat_map(|o| match *o {
                Output::Lost(first, count, reason) => {
                    (first..first + count).map(|s| (s, reason)).collect()
                }
                _ => Vec::new(),
            })
            .collect();
        v.sort_by_key(|l| l.0);
        v
    }

    fn log(&self) -> Vec<Output> {
        self.log.lock().unwrap().clone()
    }

    fn record(&self, o: Output) {
        self.log.lock().unwrap().push(o.clone());
        if let Some(tx) = &*self.outputs.lock().unwrap() {
            let _ = tx.send(o);
        }
    }

    fn subscribe(&self) -> mpsc::Receiver<Output> {
        let (tx, rx) = mpsc::channel();
        *self.outputs.lock().unwrap() = Some(tx);
        rx
    }
}

impl Work for Script {
    type Job = u64;
    type Event = &'static str;

    fn process(&self, job: &mut u64, _worker: u32, attempt: u32) -> Verdict {
        (self.behaviour)(*job, attempt)
    }

    fn deliver(&self, job: u64, tag: Tag, report: Report) {
        assert_eq!(job, tag.seq);
        let gate = self.downstream.lock().unwrap().clone();
        if let Some(g) = gate {
            wait_gate(&g);
        }
        self.delivered.lock().unwrap().push((job, report));
        self.record(Output::Frame(job));
    }

    fn lost(&self, first: Tag, count: u64, reason: Loss) {
        self.record(Output::Lost(first.seq, count, reason));
    }

    fn forward(&self, event: &'static str) {
        self.record(Output::Event(event));
    }

    fn fatal(&self, tag: Tag, _message: &str) {
        self.fatal.lock().unwrap().push(tag.seq);
    }

    fn warn(&self, message: &str) {
        self.warnings.lock().unwrap().push(message.to_string());
    }
}

fn config(workers: usize) -> PoolConfig {
    PoolConfig {
        workers,
        ..PoolConfig::default()
    }
}

fn start(work: &Arc<Script>, config: PoolConfig) -> Pool<Script> {
    Pool::start(work.clone(), config).unwrap()
}

fn submit(pool: &Pool<Script>, job: u64) -> Submitted {
    pool.submit(job, tag(job), 1, None)
}

/// A gate the handler waits at until the test opens it.
fn gate() -> (Arc<(Mutex<bool>, Condvar)>, impl Fn()) {
    let g = Arc::new((Mutex::new(false), Condvar::new()));
    let g2 = g.clone();
    (g, move || {
        *g2.0.lock().unwrap() = true;
        g2.1.notify_all();
    })
}

fn wait_gate(g: &(Mutex<bool>, Condvar)) {
    let mut open = g.0.lock().unwrap();
    while !*open {
        open = g.1.wait(open).unwrap();
    }
}

/// A script whose jobs each announce on the returned channel that they started, then wait
/// at a gate until `open` is called.
fn held_at_gate() -> (Arc<Script>, impl Fn(), mpsc::Receiver<u64>) {
    let (g, open) = gate();
    let (started_tx, started_rx) = mpsc::channel();
    let started_tx = Mutex::new(started_tx);
    let work = Script::new(move |job, _| {
        let _ = started_tx.lock().unwrap().send(job);
        wait_gate(&g);
        Verdict::Keep
    });
    (work, open, started_rx)
}

/// Every bounded wait in these tests.
const BOUND: Duration = Duration::from_secs(20);

fn recv<T>(rx: &mpsc::Receiver<T>) -> T {
    rx.recv_timeout(BOUND).expect("within the bound")
}

#[test]
fn every_job_is_delivered_with_many_workers() {
    let work = Script::new(|job, _| {
        std::thread::sleep(Duration::from_micros(job % 7 * 100));
        Verdict::Keep
    });
    let pool = start(&work, config(4));
    for job in 0..200 {
        assert!(matches!(
            submit(&pool, job),
            Submitted::Queued { leaked: 0 }
        ));
    }
    assert!(pool.wait_idle());
    assert_eq!(work.delivered(), (0..200).collect::<Vec<_>>());
    let stats = pool.stats();
    assert_eq!((stats.submitted, stats.delivered), (200, 200));
    assert!(
        stats.max_queued <= 30,
        "max-size-buffers bounds queued + in flight"
    );
    let per_worker: u64 = stats.per_worker.iter().map(|w| w.processed).sum();
    assert_eq!(per_worker, 200);
    assert_eq!(pool.stop(Duration::from_secs(5)), 0);
}

#[test]
fn leaky_upstream_drops_the_new_job() {
    let (g, open) = gate();
    let work = Script::new(move |_, _| {
        wait_gate(&g);
        Verdict::Keep
    });
    let mut c = config(1);
    c.limits.max_buffers = 2;
    c.leaky = Leaky::Upstream;
    let pool = start(&work, c);
    assert!(matches!(submit(&pool, 0), Submitted::Queued { .. }));
    assert!(matches!(submit(&pool, 1), Submitted::Queued { .. }));
    assert_eq!(submit(&pool, 2), Submitted::Leaked);
    assert_eq!(submit(&pool, 3), Submitted::Leaked);
    open();
    assert!(pool.wait_idle());
    assert_eq!(work.delivered(), vec![0, 1]);
    assert_eq!(work.lost(), vec![(2, Loss::Leaked), (3, Loss::Leaked)]);
    assert_eq!(pool.stats().leaked, 2);
    assert!(
        work.log().contains(&Output::Lost(2, 2, Loss::Leaked)),
        "consecutive losses go out as one run: {:?}",
        work.log()
    );
}

#[test]
fn leaky_downstream_drops_the_oldest_queued_job() {
    let (work, open, started_rx) = held_at_gate();
    let mut c = config(2);
    c.limits.max_buffers = 3;
    c.leaky = Leaky::Downstream;
    let pool = start(&work, c);
    submit(&pool, 0);
    recv(&started_rx);
    let (g, unblock) = gate();
    *work.downstream.lock().unwrap() = Some(g);
    submit(&pool, 1);
    submit(&pool, 2);
    open();
    // Job 0 is being pushed (downstream blocks); the other worker finishes 1 and 2, which
    // wait their turn. All three count until pushed.
    assert!(pool.wait_for(BOUND, |s| s.waiting == 3 && s.in_flight == 0));
    // Full, and nothing queued can make room: the new frame goes.
    assert_eq!(submit(&pool, 3), Submitted::Leaked);
    unblock();
    assert!(pool.wait_idle());
    // Room again: with job 4 queued behind a slow job, job 5 drops it.
    let (g, open) = gate();
    let work2 = Script::new(move |job, _| {
        if job == 4 {
            wait_gate(&g);
        }
        Verdict::Keep
    });
    let mut c = config(1);
    c.limits.max_buffers = 3;
    c.leaky = Leaky::Downstream;
    let pool2 = start(&work2, c);
    let rx = work2.subscribe();
    submit(&pool2, 4);
    assert!(pool2.wait_for(BOUND, |s| s.in_flight == 1));
    for job in 5..10 {
        assert_ne!(submit(&pool2, job), Submitted::Stopped);
    }
    open();
    assert!(pool2.wait_idle());
    drop(rx);
    assert_eq!(work.delivered(), vec![0, 1, 2]);
    assert_eq!(work.lost(), vec![(3, Loss::Leaked)]);
    // 5 and 6 fit behind 4; 7, 8, 9 would be 3 or more ahead of 4, which is in flight:
    // the new frame goes, not the queued ones.
    assert_eq!(work2.delivered(), vec![4, 5, 6]);
    assert_eq!(
        work2.lost(),
        vec![(7, Loss::Leaked), (8, Loss::Leaked), (9, Loss::Leaked)]
    );
}

#[test]
fn leaky_downstream_drops_the_oldest_queued_frame_when_that_makes_room() {
    // Bytes full: dropping the oldest queued frame makes room for the new one.
    let (work, open, started_rx) = held_at_gate();
    let mut c = config(1);
    c.limits = Limits {
        max_buffers: 0,
        max_bytes: 3,
        max_time: 0,
    };
    c.leaky = Leaky::Downstream;
    let pool = start(&work, c);
    submit(&pool, 0);
    recv(&started_rx);
    for job in 1..6 {
        assert!(matches!(submit(&pool, job), Submitted::Queued { .. }));
    }
    open();
    assert!(pool.wait_idle());
    assert_eq!(work.delivered(), vec![0, 3, 4, 5]);
    assert_eq!(work.lost(), vec![(1, Loss::Leaked), (2, Loss::Leaked)]);
}

#[test]
fn a_leaky_pool_never_waits_for_a_blocked_downstream() {
    // Downstream blocks the first delivery; the producer must go on submitting (and the
    // pool leaking) without waiting for it, and every frame is accounted for afterwards.
    for leaky in [Leaky::Downstream, Leaky::Upstream] {
        let work = Script::new(|_, _| Verdict::Keep);
        let (g, open) = gate();
        *work.downstream.lock().unwrap() = Some(g);
        let mut c = config(2);
        c.limits.max_buffers = 4;
        c.leaky = leaky;
        let pool = Arc::new(start(&work, c));
        let p = pool.clone();
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for job in 0..50 {
                p.submit(job, tag(job), 1, None);
            }
            done_tx.send(()).unwrap();
        });
        recv(&done_rx);
        let stats = pool.stats();
        assert!(stats.leaked > 0, "{leaky:?}: {stats:?}");
        assert!(
            stats.queued + stats.in_flight + stats.waiting <= 4,
            "{leaky:?}: the bound holds: {stats:?}"
        );
        open();
        assert!(pool.wait_idle());
        let mut all: Vec<u64> = work.delivered();
        all.extend(work.lost().iter().map(|l| l.0));
        all.sort();
        assert_eq!(all, (0..50).collect::<Vec<_>>(), "{leaky:?}");
    }
}

#[test]
fn no_leak_means_the_producer_waits_for_room() {
    let (g, open) = gate();
    let work = Script::new(move |_, _| {
        wait_gate(&g);
        Verdict::Keep
    });
    let mut c = config(1);
    c.limits.max_buffers = 1;
    let pool = Arc::new(start(&work, c));
    submit(&pool, 0);
    let (done_tx, done_rx) = mpsc::channel();
    let p = pool.clone();
    let producer = std::thread::spawn(move || {
        let r = p.submit(1, tag(1), 1, None);
        done_tx.send(()).unwrap();
        r
    });
    assert!(
        done_rx.recv_timeout(Duration::from_millis(50)).is_err(),
        "the producer must wait"
    );
    open();
    assert!(matches!(
        producer.join().unwrap(),
        Submitted::Queued { leaked: 0 }
    ));
    assert!(pool.wait_idle());
    assert_eq!(work.delivered(), vec![0, 1]);
    assert!(work.lost().is_empty());
}

#[test]
fn failures_are_retried_then_lost() {
    // Job 0 succeeds on its third attempt; job 1 never does.
    let work = Script::new(|job, attempt| {
        if job == 0 && attempt == 2 {
            Verdict::Keep
        } else {
            Verdict::Fail("no".into())
        }
    });
    let pool = start(&work, config(1));
    submit(&pool, 0);
    submit(&pool, 1);
    assert!(pool.wait_idle());
    let delivered = work.delivered.lock().unwrap().clone();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].1.attempts, 3);
    assert_eq!(work.lost(), vec![(1, Loss::Failed)]);
    let stats = pool.stats();
    assert_eq!(stats.retries, 4);
    assert_eq!(stats.failed, 1);
    assert_eq!(stats.per_worker[0].errors, 5);
}

#[test]
fn on_error_drop_and_fail_do_not_retry() {
    for on_error in [OnError::Drop, OnError::Fail] {
        let work = Script::new(|_, _| Verdict::Fail("no".into()));
        let mut c = config(1);
        c.on_error = on_error;
        let pool = start(&work, c);
        submit(&pool, 7);
        assert!(pool.wait_idle());
        assert_eq!(work.lost(), vec![(7, Loss::Failed)]);
        assert_eq!(pool.stats().retries, 0);
        let fatal = work.fatal.lock().unwrap().clone();
        assert_eq!(
            fatal,
            if on_error == OnError::Fail {
                vec![7]
            } else {
                vec![]
            }
        );
    }
}

#[test]
fn handler_drop_is_a_loss() {
    let work = Script::new(|job, _| {
        if job % 2 == 0 {
            Verdict::Drop
        } else {
            Verdict::Keep
        }
    });
    let pool = start(&work, config(2));
    for job in 0..10 {
        submit(&pool, job);
    }
    assert!(pool.wait_idle());
    assert_eq!(work.delivered(), vec![1, 3, 5, 7, 9]);
    assert!(work.lost().iter().all(|l| l.1 == Loss::Dropped));
    assert_eq!(pool.stats().dropped, 5);
}

#[test]
fn a_panicking_handler_fails_the_job_and_its_worker_is_replaced() {
    let work = Script::new(|job, _| {
        if job == 3 {
            panic!("handler bug");
        }
        Verdict::Keep
    });
    let pool = start(&work, config(2));
    for job in 0..10 {
        submit(&pool, job);
    }
    assert!(pool.wait_idle());
    assert_eq!(work.lost(), vec![(3, Loss::Failed)]);
    assert_eq!(work.delivered().len(), 9);
    let stats = pool.stats();
    assert_eq!(stats.workers, 2);
    assert_eq!(
        stats.per_worker.len(),
        3,
        "a third worker replaced the one that panicked"
    );
    assert_eq!(pool.stop(Duration::from_secs(5)), 0);
}

#[test]
fn a_hanging_handler_times_out_and_its_late_result_is_discarded() {
    let (g, open) = gate();
    let work = Script::new(move |job, _| {
        if job == 1 {
            wait_gate(&g);
        }
        Verdict::Keep
    });
    let mut c = config(1);
    c.timeout = Some(Duration::from_millis(30));
    let pool = start(&work, c);
    for job in 0..4 {
        submit(&pool, job);
    }
    // Job 1 hangs; the watchdog gives up on it and a replacement takes jobs 2 and 3.
    assert!(pool.wait_idle());
    assert_eq!(work.lost(), vec![(1, Loss::Timeout)]);
    assert_eq!(work.delivered(), vec![0, 2, 3]);
    assert_eq!(pool.stats().stuck, 1);
    open();
    // The hung worker comes back; its result must not be delivered.
    assert!(pool.wait_for(BOUND, |s| s.stuck == 0
        && s.per_worker.iter().map(|w| w.processed).sum::<u64>() == 4));
    assert_eq!(work.delivered(), vec![0, 2, 3]);
    assert_eq!(pool.stats().timeout, 1);
    assert_eq!(pool.stop(Duration::from_secs(5)), 0);
}

#[test]
fn a_sparse_job_with_timeout_set_is_taken_at_once() {
    // The watchdog has its own wake-up: a job submitted to an idle pool never waits for a
    // worker's idle timeout (here ten minutes).
    let work = Script::new(|_, _| Verdict::Keep);
    let rx = work.subscribe();
    let mut c = config(1);
    c.timeout = Some(Duration::from_secs(1));
    c.idle_timeout = Duration::from_secs(600);
    let pool = start(&work, c);
    for job in 0..50 {
        submit(&pool, job);
        assert_eq!(recv(&rx), Output::Frame(job));
    }
}

#[test]
fn events_leave_between_the_jobs_around_them() {
    let work = Script::new(|job, _| {
        // Later jobs finish first.
        std::thread::sleep(Duration::from_millis(10u64.saturating_sub(job * 2)));
        Verdict::Keep
    });
    let pool = start(&work, config(4));
    for job in 0..3 {
        submit(&pool, job);
    }
    assert!(pool.event("caps"));
    for job in 3..6 {
        submit(&pool, job);
    }
    assert!(pool.event("eos"));
    assert!(pool.wait_idle());
    let log = work.log();
    let at = |o: Output| log.iter().position(|x| *x == o).unwrap();
    let caps = at(Output::Event("caps"));
    for job in 0..3 {
        assert!(at(Output::Frame(job)) < caps, "{log:?}");
    }
    for job in 3..6 {
        assert!(at(Output::Frame(job)) > caps, "{log:?}");
    }
    assert_eq!(log.last(), Some(&Output::Event("eos")));
}

#[test]
fn an_event_never_overtakes_the_loss_of_a_timed_out_job() {
    for _ in 0..20 {
        let (g, open) = gate();
        let work = Script::new(move |job, _| {
            if job == 1 {
                wait_gate(&g);
            }
            Verdict::Keep
        });
        let mut c = config(2);
        c.timeout = Some(Duration::from_millis(5));
        let pool = start(&work, c);
        for job in 0..3 {
            submit(&pool, job);
        }
        pool.event("eos");
        assert!(pool.wait_idle());
        open();
        let log = work.log();
        assert_eq!(log.last(), Some(&Output::Event("eos")), "{log:?}");
        assert!(log.contains(&Output::Lost(1, 1, Loss::Timeout)), "{log:?}");
        pool.stop(BOUND);
    }
}

#[test]
fn a_gap_from_upstream_keeps_its_place_among_events() {
    let (work, open, started_rx) = held_at_gate();
    let pool = start(&work, config(1));
    submit(&pool, 0);
    recv(&started_rx);
    pool.event("segment");
    pool.lost(Tag { epoch: 1, seq: 0 }, 2, Loss::Failed);
    open();
    assert!(pool.wait_idle());
    assert_eq!(
        work.log(),
        vec![
            Output::Frame(0),
            Output::Event("segment"),
            Output::Lost(0, 2, Loss::Failed)
        ]
    );
}

#[test]
fn flush_discards_queued_in_flight_and_waiting_jobs() {
    let (work, open, started_rx) = held_at_gate();
    let pool = start(&work, config(1));
    for job in 0..3 {
        submit(&pool, job);
    }
    pool.event("tags");
    recv(&started_rx);
    assert_eq!(pool.flush(), vec!["tags"], "events not yet out come back");
    assert!(!pool.wait_idle(), "a flushing pool is not waited on");
    assert_eq!(submit(&pool, 9), Submitted::Stopped);
    open();
    pool.resume();
    submit(&pool, 10);
    assert!(pool.wait_idle());
    assert_eq!(work.delivered(), vec![10], "nothing from before the flush");
    assert!(work.lost().is_empty());
    assert_eq!(pool.stats().flushed, 3);
}

#[test]
fn resume_waits_for_a_delivery_in_progress() {
    // A pusher in the middle of a delivery when the flush comes: nothing from before the
    // flush may be output after `resume` returns.
    let work = Script::new(|_, _| Verdict::Keep);
    let (g, open) = gate();
    *work.downstream.lock().unwrap() = Some(g);
    let pool = Arc::new(start(&work, config(2)));
    submit(&pool, 0);
    submit(&pool, 1);
    // One frame in the middle of its push, the other waiting for its turn.
    assert!(pool.wait_for(BOUND, |s| s.waiting == 2
        && s.in_flight == 0
        && s.queued == 0));
    pool.flush();
    let p = pool.clone();
    let (resumed_tx, resumed_rx) = mpsc::channel();
    std::thread::spawn(move || {
        p.resume();
        resumed_tx.send(()).unwrap();
    });
    assert!(
        resumed_rx.recv_timeout(Duration::from_millis(50)).is_err(),
        "resume waits for the delivery in progress"
    );
    open();
    recv(&resumed_rx);
    let before = work.log().len();
    submit(&pool, 2);
    assert!(pool.wait_idle());
    assert_eq!(work.log()[before..], [Output::Frame(2)]);
    assert_eq!(before, 1, "the second frame was flushed, not delivered");
}

#[test]
fn a_job_that_fails_after_a_flush_is_not_retried() {
    let (g, open) = gate();
    let (started_tx, started_rx) = mpsc::channel();
    let started_tx = Mutex::new(started_tx);
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = attempts.clone();
    let work = Script::new(move |job, attempt| {
        seen.lock().unwrap().push((job, attempt));
        if job == 0 {
            let _ = started_tx.lock().unwrap().send(());
            wait_gate(&g);
            return Verdict::Fail("the server went away".into());
        }
        Verdict::Keep
    });
    let pool = start(
        &work,
        PoolConfig {
            retries: 5,
            ..config(1)
        },
    );
    submit(&pool, 0);
    recv(&started_rx);
    pool.flush();
    open();
    pool.resume();
    submit(&pool, 1);
    assert!(pool.wait_idle());
    // Job 0 failed once, after the flush; no retry of a job whose result is discarded.
    assert_eq!(*attempts.lock().unwrap(), vec![(0, 0), (1, 0)]);
    assert_eq!(pool.stats().retries, 0);
    assert_eq!(work.delivered(), vec![1]);
    assert!(work.lost().is_empty());
}

#[test]
fn stop_while_every_worker_is_busy_returns() {
    let (work, open, started_rx) = held_at_gate();
    let pool = start(&work, config(2));
    for job in 0..5 {
        submit(&pool, job);
    }
    recv(&started_rx);
    recv(&started_rx);
    assert_eq!(
        pool.stop(Duration::from_millis(20)),
        2,
        "both hung workers are left behind"
    );
    open();
    // Both return from the handler into a stopped pool: their results go nowhere.
    let until = Instant::now() + BOUND;
    while pool.shared().lock().threads > 0 {
        assert!(Instant::now() < until, "the left-behind workers exit");
        std::thread::yield_now();
    }
    assert!(
        work.delivered().is_empty(),
        "results after stop are discarded"
    );
}

#[test]
fn stop_joins_workers_even_while_others_hold_the_pool() {
    let work = Script::new(|_, _| Verdict::Keep);
    let pool = Arc::new(start(&work, config(3)));
    let other_holder = pool.clone();
    submit(&pool, 0);
    assert_eq!(pool.stop(BOUND), 0);
    assert_eq!(pool.shared().lock().threads, 0, "every worker joined");
    assert_eq!(other_holder.submit(1, tag(1), 1, None), Submitted::Stopped);
    assert!(!other_holder.wait_idle());
}

#[test]
fn autoscaling_grows_with_the_queue_and_retires_idle_workers() {
    let (g, open) = gate();
    let work = Script::new(move |_, _| {
        wait_gate(&g);
        Verdict::Keep
    });
    let mut c = config(1);
    c.max_workers = 4;
    c.idle_timeout = Duration::from_millis(20);
    c.limits.max_buffers = 0;
    let pool = start(&work, c);
    for job in 0..20 {
        submit(&pool, job);
    }
    assert_eq!(pool.stats().workers, 4);
    open();
    assert!(pool.wait_idle());
    assert!(
        pool.wait_for(BOUND, |s| s.workers == 1),
        "idle extra workers retire"
    );
    assert_eq!(work.delivered().len(), 20);
    assert_eq!(pool.stop(Duration::from_secs(5)), 0);
}

#[test]
fn surplus_workers_retire_under_a_steady_light_load() {
    // Grown to 8 workers, then one job at a time, each once every worker is idle again (as
    // frames of a live source come): the most recently idle worker takes each, so the others
    // stay idle long enough to retire.
    let (g, open) = gate();
    let work = Script::new(move |job, _| {
        if job < 8 {
            wait_gate(&g);
        }
        Verdict::Keep
    });
    let rx = work.subscribe();
    let mut c = config(1);
    c.max_workers = 8;
    c.idle_timeout = Duration::from_millis(100);
    c.limits.max_buffers = 0;
    let pool = start(&work, c);
    for job in 0..8 {
        submit(&pool, job);
    }
    assert!(pool.stats().workers >= 4, "{:?}", pool.stats());
    open();
    for _ in 0..8 {
        recv(&rx);
    }
    let until = Instant::now() + BOUND;
    let mut job = 8;
    while pool.stats().workers > 1 {
        assert!(
            Instant::now() < until,
            "still {} workers under light load",
            pool.stats().workers
        );
        assert!(pool.wait_for(BOUND, |s| s.idle == s.workers));
        submit(&pool, job);
        assert_eq!(recv(&rx), Output::Frame(job));
        job += 1;
    }
}

#[test]
fn bytes_and_time_bounds_do_not_count_work_in_flight() {
    // One straggler in flight, bigger and older than the bounds: other jobs still get in
    // and idle workers take them.
    let (g, open) = gate();
    let work = Script::new(move |job, _| {
        if job == 0 {
            wait_gate(&g);
        }
        Verdict::Keep
    });
    let rx = work.subscribe();
    let mut c = config(2);
    c.limits = Limits {
        max_buffers: 0,
        max_bytes: 100,
        max_time: 1_500,
    };
    c.leaky = Leaky::Downstream;
    let pool = start(&work, c);
    assert!(matches!(
        pool.submit(0, tag(0), 1_000, Some(0)),
        Submitted::Queued { .. }
    ));
    assert!(pool.wait_for(BOUND, |s| s.in_flight == 1 && s.queued == 0));
    for job in 1..10 {
        assert_eq!(
            pool.submit(job, tag(job), 10, Some(job * 1_000)),
            Submitted::Queued { leaked: 0 },
            "job {job}"
        );
        assert_eq!(recv(&rx), Output::Frame(job));
    }
    open();
    assert!(pool.wait_idle());
    assert_eq!(pool.stats().leaked, 0);
}

#[test]
fn a_producer_waiting_for_room_gets_in_when_a_worker_takes_the_queued_frame() {
    // Bytes count queued frames only: once a worker takes the big one, the next fits,
    // while the big one is still being processed.
    let (work, open, started_rx) = held_at_gate();
    let mut c = config(2);
    c.limits = Limits {
        max_buffers: 0,
        max_bytes: 10,
        max_time: 0,
    };
    let pool = Arc::new(start(&work, c));
    let p = pool.clone();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        p.submit(0, tag(0), 100, None);
        p.submit(1, tag(1), 5, None);
        done_tx.send(()).unwrap();
    });
    recv(&started_rx);
    recv(&done_rx);
    open();
    assert!(pool.wait_idle());
    assert_eq!(work.delivered(), vec![0, 1]);
}

#[test]
fn threads_stuck_in_hung_handlers_are_counted_and_capped() {
    let (g, open) = gate();
    let work = Script::new(move |_, _| {
        wait_gate(&g);
        Verdict::Keep
    });
    let mut c = config(2);
    c.timeout = Some(Duration::from_millis(5));
    c.limits.max_buffers = 0;
    let pool = start(&work, c);
    for job in 0..40 {
        submit(&pool, job);
    }
    // Every job hangs: workers are replaced until the cap, then queued jobs time out where
    // they wait.
    assert!(pool.wait_idle());
    let stats = pool.stats();
    assert_eq!(stats.timeout, 40);
    assert_eq!(work.lost().len(), 40);
    assert!(
        stats.stuck as usize <= c.max_stuck() + c.workers,
        "{stats:?}"
    );
    let until = Instant::now() + BOUND;
    while !work
        .warnings
        .lock()
        .unwrap()
        .iter()
        .any(|w| w.contains("stuck"))
    {
        assert!(Instant::now() < until, "a warning names the stuck threads");
        std::thread::yield_now();
    }
    open();
    assert!(pool.wait_for(BOUND, |s| s.stuck == 0));
    submit(&pool, 99);
    assert!(pool.wait_idle());
    assert_eq!(work.delivered(), vec![99], "the pool recovers");
}

#[test]
fn a_worker_thread_that_cannot_start_is_counted_not_a_panic() {
    let work = Script::new(|_, _| Verdict::Keep);
    FAIL_SPAWNS.with(|f| f.set(1));
    let pool = start(&work, config(2));
    let stats = pool.stats();
    assert_eq!((stats.workers, stats.spawn_failures), (1, 1));
    submit(&pool, 0);
    assert!(pool.wait_idle());
    assert_eq!(work.delivered(), vec![0]);
    FAIL_SPAWNS.with(|f| f.set(2));
    assert!(Pool::start(work.clone(), config(2)).is_err());
    FAIL_SPAWNS.with(|f| f.set(0));
}

#[test]
fn the_latency_figure_follows_recent_frames_and_ignores_timed_out_ones() {
    let slow = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let s = slow.clone();
    let (g, open) = gate();
    let work = Script::new(move |job, _| {
        if job == 0 {
            wait_gate(&g);
        } else if s.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
        Verdict::Keep
    });
    let mut c = config(1);
    c.timeout = Some(Duration::from_millis(50));
    let pool = start(&work, c);
    submit(&pool, 0);
    assert!(pool.wait_for(BOUND, |s| s.timeout == 1));
    open();
    assert!(pool.wait_for(BOUND, |s| s.stuck == 0));
    assert_eq!(
        pool.stats().latency,
        Duration::ZERO,
        "a timed-out job is not a latency"
    );
    submit(&pool, 1);
    assert!(pool.wait_idle());
    let slow_latency = pool.stats().latency;
    assert!(
        slow_latency >= Duration::from_millis(20),
        "{slow_latency:?}"
    );
    slow.store(false, std::sync::atomic::Ordering::SeqCst);
    for job in 2..2 + LATENCY_WINDOW as u64 {
        submit(&pool, job);
        assert!(pool.wait_idle());
    }
    let fast_latency = pool.stats().latency;
    assert!(fast_latency < slow_latency, "{fast_latency:?} comes down");
}

#[test]
fn the_latency_figure_is_a_high_percentile_plus_a_quarter() {
    let ms = Duration::from_millis;
    let mut recent = RecentLatency::default();
    assert_eq!(
        recent.push(ms(80)),
        ms(100),
        "one value: itself, plus a quarter"
    );
    // A first job that loaded a model does not set the figure once there are others.
    assert_eq!(recent.push(ms(20)), ms(25));
    for _ in 0..200 {
        recent.push(ms(20));
    }
    assert_eq!(recent.figure, ms(25));
    // Fills the window with `value(i)`, then recomputes on a multiple of its period.
    let fill = |recent: &mut RecentLatency, value: &dyn Fn(usize) -> Duration| {
        for i in 0..LATENCY_WINDOW {
            recent.push(value(i));
        }
        while recent.since != 0 {
            recent.push(value(LATENCY_WINDOW - 1));
        }
    };
    // The 99th percentile of the last 128, not their maximum: one outlier is left out...
    fill(&mut recent, &|i| {
        ms(if i == 64 { 200 } else { 10 + i as u64 % 8 })
    });
    assert_eq!(recent.figure, ms(17) + ms(17) / 4);
    // ...two are not: the figure follows them up...
    fill(&mut recent, &|i| ms(if i % 64 == 0 { 200 } else { 10 }));
    assert_eq!(recent.figure, ms(250));
    // ...and comes down when they leave.
    fill(&mut recent, &|_| ms(4));
    assert_eq!(recent.figure, ms(5));
}

#[test]
fn a_producer_faster_than_the_workers_is_let_in_by_batches_and_loses_nothing() {
    // A bound of 8 frames: the producer waiting for room is woken once 2 have left (or
    // the queue ran dry). Idle workers never time out here: a lost wake-up would hang.
    for workers in [1, 2, 3] {
        let work = Script::new(|_, _| Verdict::Keep);
        let mut c = config(workers);
        c.limits.max_buffers = 8;
        c.idle_timeout = Duration::from_secs(3600);
        let pool = Arc::new(start(&work, c));
        let p = pool.clone();
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for job in 0..2000 {
                assert!(matches!(submit(&p, job), Submitted::Queued { leaked: 0 }));
            }
            done_tx.send(()).unwrap();
        });
        recv(&done_rx);
        assert!(pool.wait_idle());
        assert_eq!(work.delivered(), (0..2000).collect::<Vec<_>>());
        assert!(pool.stats().max_queued <= 8);
    }
}
