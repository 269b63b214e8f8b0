//! Pool tests with a scripted `Work`: ordering of deliveries is free, accounting is not.

use std::sync::mpsc;

use super::*;

type Behaviour = Box<dyn Fn(u64, u32) -> Verdict + Send + Sync>;

struct Script {
    behaviour: Behaviour,
    delivered: Mutex<Vec<(u64, Report)>>,
    lost: Mutex<Vec<(u64, Loss)>>,
    fatal: Mutex<Vec<u64>>,
}

impl Script {
    fn new(behaviour: impl Fn(u64, u32) -> Verdict + Send + Sync + 'static) -> Arc<Script> {
        Arc::new(Script {
            behaviour: Box::new(behaviour),
            delivered: Mutex::default(),
            lost: Mutex::default(),
            fatal: Mutex::default(),
        })
    }

    fn delivered(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.delivered.lock().unwrap().iter().map(|d| d.0).collect();
        v.sort();
        v
    }

    fn lost(&self) -> Vec<(u64, Loss)> {
        let mut v = self.lost.lock().unwrap().clone();
        v.sort_by_key(|l| l.0);
        v
    }
}

impl Work for Script {
    type Job = u64;
    type Tag = u64;

    fn process(&self, job: &mut u64, _worker: u32, attempt: u32) -> Verdict {
        (self.behaviour)(*job, attempt)
    }

    fn deliver(&self, job: u64, tag: u64, report: Report) {
        assert_eq!(job, tag);
        self.delivered.lock().unwrap().push((job, report));
    }

    fn lost(&self, tag: u64, reason: Loss) {
        self.lost.lock().unwrap().push((tag, reason));
    }

    fn fatal(&self, tag: u64, _message: &str) {
        self.fatal.lock().unwrap().push(tag);
    }
}

fn config(workers: usize) -> PoolConfig {
    PoolConfig {
        workers,
        ..PoolConfig::default()
    }
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
fn held_at_gate() -> (Arc<Script>, impl Fn(), mpsc::Receiver<()>) {
    let (g, open) = gate();
    let (started_tx, started_rx) = mpsc::channel();
    let started_tx = Mutex::new(started_tx);
    let work = Script::new(move |_, _| {
        let _ = started_tx.lock().unwrap().send(());
        wait_gate(&g);
        Verdict::Keep
    });
    (work, open, started_rx)
}

#[test]
fn every_job_is_delivered_with_many_workers() {
    let work = Script::new(|job, _| {
        std::thread::sleep(Duration::from_micros(job % 7 * 100));
        Verdict::Keep
    });
    let pool = Pool::start(work.clone(), config(4));
    for job in 0..200 {
        assert!(matches!(
            pool.submit(job, job, 1, None),
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
    let pool = Pool::start(work.clone(), c);
    assert!(matches!(
        pool.submit(0, 0, 1, None),
        Submitted::Queued { .. }
    ));
    assert!(matches!(
        pool.submit(1, 1, 1, None),
        Submitted::Queued { .. }
    ));
    assert_eq!(pool.submit(2, 2, 1, None), Submitted::Leaked);
    assert_eq!(pool.submit(3, 3, 1, None), Submitted::Leaked);
    open();
    assert!(pool.wait_idle());
    assert_eq!(work.delivered(), vec![0, 1]);
    assert_eq!(work.lost(), vec![(2, Loss::Leaked), (3, Loss::Leaked)]);
    assert_eq!(pool.stats().leaked, 2);
}

#[test]
fn leaky_downstream_drops_the_oldest_queued_job() {
    let (work, open, started_rx) = held_at_gate();
    let mut c = config(1);
    c.limits.max_buffers = 3;
    c.leaky = Leaky::Downstream;
    let pool = Pool::start(work.clone(), c);
    pool.submit(0, 0, 1, None);
    started_rx.recv().unwrap(); // job 0 is in flight, so only queued ones can leak
    for job in 1..6 {
        assert_ne!(pool.submit(job, job, 1, None), Submitted::Leaked);
    }
    open();
    assert!(pool.wait_idle());
    assert_eq!(work.delivered(), vec![0, 4, 5]);
    assert_eq!(
        work.lost(),
        vec![(1, Loss::Leaked), (2, Loss::Leaked), (3, Loss::Leaked)]
    );
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
    let pool = Arc::new(Pool::start(work.clone(), c));
    pool.submit(0, 0, 1, None);
    let (done_tx, done_rx) = mpsc::channel();
    let p = pool.clone();
    let producer = std::thread::spawn(move || {
        let r = p.submit(1, 1, 1, None);
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
    let pool = Pool::start(work.clone(), config(1));
    pool.submit(0, 0, 1, None);
    pool.submit(1, 1, 1, None);
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
        let pool = Pool::start(work.clone(), c);
        pool.submit(7, 7, 1, None);
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
    let pool = Pool::start(work.clone(), config(2));
    for job in 0..10 {
        pool.submit(job, job, 1, None);
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
    let pool = Pool::start(work.clone(), config(2));
    for job in 0..10 {
        pool.submit(job, job, 1, None);
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
    let pool = Pool::start(work.clone(), c);
    for job in 0..4 {
        pool.submit(job, job, 1, None);
    }
    // Job 1 hangs; the watchdog gives up on it and a replacement takes jobs 2 and 3.
    assert!(pool.wait_idle());
    assert_eq!(work.lost(), vec![(1, Loss::Timeout)]);
    assert_eq!(work.delivered(), vec![0, 2, 3]);
    open();
    // The hung worker comes back; its result must not be delivered.
    assert!(pool.wait_for(Duration::from_secs(10), |s| s.in_flight == 0
        && s.per_worker.iter().map(|w| w.processed).sum::<u64>() == 4));
    assert_eq!(work.delivered(), vec![0, 2, 3]);
    assert_eq!(pool.stats().timeout, 1);
    assert_eq!(pool.stop(Duration::from_secs(5)), 0);
}

#[test]
fn flush_discards_queued_and_in_flight_jobs() {
    let (work, open, started_rx) = held_at_gate();
    let pool = Pool::start(work.clone(), config(1));
    for job in 0..3 {
        pool.submit(job, job, 1, None);
    }
    started_rx.recv().unwrap();
    pool.flush();
    assert!(!pool.wait_idle(), "a flushing pool is not waited on");
    assert_eq!(pool.submit(9, 9, 1, None), Submitted::Stopped);
    open();
    pool.resume();
    pool.submit(10, 10, 1, None);
    assert!(pool.wait_idle());
    assert_eq!(work.delivered(), vec![10], "nothing from before the flush");
    assert!(work.lost().is_empty());
    assert_eq!(pool.stats().flushed, 3);
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
    let pool = Pool::start(
        work.clone(),
        PoolConfig {
            retries: 5,
            ..config(1)
        },
    );
    pool.submit(0, 0, 1, None);
    started_rx.recv().unwrap();
    pool.flush();
    open();
    pool.resume();
    pool.submit(1, 1, 1, None);
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
    let pool = Pool::start(work.clone(), config(2));
    for job in 0..5 {
        pool.submit(job, job, 1, None);
    }
    started_rx.recv().unwrap();
    started_rx.recv().unwrap();
    assert_eq!(
        pool.stop(Duration::from_millis(20)),
        2,
        "both hung workers are left behind"
    );
    open();
    assert!(
        work.delivered().is_empty(),
        "results after stop are discarded"
    );
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
    let pool = Pool::start(work.clone(), c);
    for job in 0..20 {
        pool.submit(job, job, 1, None);
    }
    assert_eq!(pool.stats().workers, 4);
    open();
    assert!(pool.wait_idle());
    assert!(
        pool.wait_for(Duration::from_secs(10), |s| s.workers == 1),
        "idle extra workers retire"
    );
    assert_eq!(work.delivered().len(), 20);
    assert_eq!(pool.stop(Duration::from_secs(5)), 0);
}
