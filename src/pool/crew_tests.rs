//! Tests of a crew shared by several members: turns by priority, `max_in_flight`, and the
//! isolation of members that hang, block downstream, flush or leave.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::*;

type GateRef = Arc<(Mutex<bool>, Condvar)>;

fn gate() -> GateRef {
    Arc::new((Mutex::new(false), Condvar::new()))
}

fn open(g: &GateRef) {
    *g.0.lock().unwrap() = true;
    g.1.notify_all();
}

fn wait(g: &GateRef) {
    let mut is_open = g.0.lock().unwrap();
    while !*is_open {
        is_open = g.1.wait(is_open).unwrap();
    }
}

/// Every bounded wait in these tests.
const BOUND: Duration = Duration::from_secs(20);

/// One member's work: records what it processed (with the member's name, into a log shared
/// by the members) and what it delivered and lost.
struct Stream {
    name: &'static str,
    processed: Arc<Mutex<Vec<(&'static str, u64)>>>,
    delivered: Mutex<Vec<u64>>,
    lost: Mutex<Vec<(u64, u64, Loss)>>,
    /// Held at this gate in `process` (a hung handler) when set.
    hang: Option<GateRef>,
    /// Held at this gate in `deliver` (a blocked downstream) when set.
    blocked: Option<GateRef>,
    /// Jobs of this member running now, and the most at once.
    running: AtomicUsize,
    most: AtomicUsize,
    /// How long each job works.
    cost: Duration,
    started: Mutex<Option<mpsc::Sender<(&'static str, u64)>>>,
}

impl Stream {
    fn new(name: &'static str, log: &Arc<Mutex<Vec<(&'static str, u64)>>>) -> Stream {
        Stream {
            name,
            processed: log.clone(),
            delivered: Mutex::default(),
            lost: Mutex::default(),
            hang: None,
            blocked: None,
            running: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            cost: Duration::ZERO,
            started: Mutex::default(),
        }
    }

    fn delivered(&self) -> Vec<u64> {
        let mut v = self.delivered.lock().unwrap().clone();
        v.sort_unstable();
        v
    }
}

impl Work for Stream {
    type Job = u64;
    type Event = ();

    fn process(&self, job: &mut u64, _worker: u32, _attempt: u32) -> Verdict {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        if let Some(tx) = &*self.started.lock().unwrap() {
            let _ = tx.send((self.name, *job));
        }
        self.processed.lock().unwrap().push((self.name, *job));
        if let Some(g) = &self.hang {
            wait(g);
        }
        if !self.cost.is_zero() {
            // The job's own work (not a synchronisation): a handler that takes this long.
            std::thread::sleep(self.cost);
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        Verdict::Keep
    }

    fn deliver(&self, job: u64, _tag: Tag, _report: Report) {
        if let Some(g) = &self.blocked {
            wait(g);
        }
        self.delivered.lock().unwrap().push(job);
    }

    fn lost(&self, first: Tag, count: u64, reason: Loss) {
        self.lost.lock().unwrap().push((first.seq, count, reason));
    }

    fn forward(&self, _event: ()) {}

    fn fatal(&self, _tag: Tag, _message: &str) {}
}

fn crew(workers: usize) -> Arc<Crew<Stream>> {
    Crew::start(
        CrewConfig {
            workers,
            max_workers: 0,
            idle_timeout: Duration::from_secs(3600),
        },
        true,
    )
    .unwrap()
}

fn member(config: impl FnOnce(&mut MemberConfig)) -> MemberConfig {
    let mut c = MemberConfig {
        limits: Limits {
            max_buffers: 0,
            max_bytes: 0,
            max_time: 0,
        },
        ..MemberConfig::default()
    };
    config(&mut c);
    c
}

fn submit(pool: &Pool<Stream>, job: u64) -> Submitted {
    pool.submit(job, Tag { epoch: 0, seq: job }, 1, None)
}

#[test]
fn workers_take_the_members_jobs_in_turns_weighted_by_priority() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let hold = gate();
    let (tx, rx) = mpsc::channel();
    let first = Arc::new(Stream {
        hang: Some(hold.clone()),
        started: Mutex::new(Some(tx)),
        ..Stream::new("first", &log)
    });
    let crew = crew(1);
    // The one worker is held on a job of a third member while the others queue up.
    let holder = crew.join(first, member(|_| {})).unwrap();
    submit(&holder, 0);
    rx.recv_timeout(BOUND)
        .expect("the worker took the holding job");
    let a = Arc::new(Stream::new("a", &log));
    let b = Arc::new(Stream::new("b", &log));
    let pa = crew.join(a.clone(), member(|c| c.priority = 1)).unwrap();
    let pb = crew.join(b.clone(), member(|c| c.priority = 3)).unwrap();
    for job in 0..12 {
        submit(&pa, job);
        submit(&pb, job);
    }
    open(&hold);
    assert!(pb.wait_for(BOUND, |s| s.delivered == 12));
    let order: Vec<&str> = log.lock().unwrap()[1..].iter().map(|p| p.0).collect();
    // In turns: a gives one job, b three, while both have jobs queued.
    assert_eq!(
        &order[..16],
        &[
            "a", "b", "b", "b", "a", "b", "b", "b", "a", "b", "b", "b", "a", "b", "b", "b"
        ]
    );
    assert!(pa.wait_for(BOUND, |s| s.delivered == 12));
    assert_eq!(a.delivered(), (0..12).collect::<Vec<_>>());
    assert_eq!(b.delivered(), (0..12).collect::<Vec<_>>());
}

#[test]
fn a_member_never_runs_more_than_its_max_in_flight() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let narrow = Arc::new(Stream {
        cost: Duration::from_millis(2),
        ..Stream::new("narrow", &log)
    });
    let wide = Arc::new(Stream {
        cost: Duration::from_millis(2),
        ..Stream::new("wide", &log)
    });
    let crew = crew(4);
    let pn = crew
        .join(narrow.clone(), member(|c| c.max_in_flight = 1))
        .unwrap();
    let pw = crew.join(wide.clone(), member(|_| {})).unwrap();
    for job in 0..40 {
        submit(&pn, job);
        submit(&pw, job);
    }
    assert!(pn.wait_for(BOUND, |s| s.delivered == 40));
    assert!(pw.wait_for(BOUND, |s| s.delivered == 40));
    assert_eq!(narrow.most.load(Ordering::SeqCst), 1);
    assert!(
        wide.most.load(Ordering::SeqCst) > 1,
        "the other member used the workers the narrow one could not"
    );
    assert_eq!(narrow.delivered(), (0..40).collect::<Vec<_>>());
    assert_eq!(wide.delivered(), (0..40).collect::<Vec<_>>());
}

#[test]
fn a_hung_handler_costs_its_own_member_and_not_the_others() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let never = gate();
    let hung = Arc::new(Stream {
        hang: Some(never.clone()),
        ..Stream::new("hung", &log)
    });
    let fine = Arc::new(Stream::new("fine", &log));
    let crew = crew(2);
    let ph = crew
        .join(
            hung.clone(),
            member(|c| c.timeout = Some(Duration::from_millis(50))),
        )
        .unwrap();
    let pf = crew.join(fine.clone(), member(|_| {})).unwrap();
    for job in 0..20 {
        submit(&ph, job);
        submit(&pf, job);
    }
    assert!(pf.wait_for(BOUND, |s| s.delivered == 20));
    assert_eq!(fine.delivered(), (0..20).collect::<Vec<_>>());
    assert!(fine.lost.lock().unwrap().is_empty());
    // Every frame of the hung member is a gap with reason timeout, none delivered.
    assert!(ph.wait_for(BOUND, |s| s.timeout == 20));
    let lost = || -> u64 { hung.lost.lock().unwrap().iter().map(|l| l.1).sum() };
    // The gaps go out after they are counted.
    assert!(ph.wait_for(BOUND, |_| lost() == 20));
    assert!(hung.delivered().is_empty());
    open(&never);
}

#[test]
fn a_member_blocked_downstream_does_not_hold_the_others() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let downstream = gate();
    let blocked = Arc::new(Stream {
        blocked: Some(downstream.clone()),
        ..Stream::new("blocked", &log)
    });
    let fine = Arc::new(Stream::new("fine", &log));
    // One worker: it pushes the blocked member's frame and stays in the push.
    let crew = crew(1);
    let pb = crew.join(blocked.clone(), member(|_| {})).unwrap();
    let pf = crew.join(fine.clone(), member(|_| {})).unwrap();
    submit(&pb, 0);
    for job in 0..10 {
        submit(&pf, job);
    }
    assert!(
        pf.wait_for(BOUND, |s| s.delivered == 10),
        "a fresh worker took the other member's frames"
    );
    assert_eq!(fine.delivered(), (0..10).collect::<Vec<_>>());
    assert_eq!(crew.stats().blocked, 1);
    assert_eq!(pb.stats().blocked_pushes, 1);
    open(&downstream);
    assert!(pb.wait_for(BOUND, |s| s.delivered == 1));
    // The worker that was blocked leaves: the crew is at its strength again.
    let until = std::time::Instant::now() + BOUND;
    while crew.stats().threads != 1 && std::time::Instant::now() < until {
        pb.wait_for(Duration::from_millis(5), |_| false);
    }
    let stats = crew.stats();
    assert_eq!((stats.blocked, stats.threads, stats.workers), (0, 1, 1));
}

#[test]
fn a_member_that_flushes_or_leaves_costs_the_others_nothing() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let a = Arc::new(Stream {
        cost: Duration::from_millis(1),
        ..Stream::new("a", &log)
    });
    let b = Arc::new(Stream {
        cost: Duration::from_millis(1),
        ..Stream::new("b", &log)
    });
    let crew = crew(2);
    let pa = crew.join(a.clone(), member(|_| {})).unwrap();
    let pb = crew.join(b.clone(), member(|_| {})).unwrap();
    for job in 0..30 {
        submit(&pa, job);
        submit(&pb, job);
    }
    pa.flush();
    pa.resume();
    for job in 30..60 {
        submit(&pb, job);
    }
    // The member leaves while the other has frames queued.
    assert_eq!(pa.stop(BOUND), 0);
    assert_eq!(submit(&pa, 99), Submitted::Stopped);
    assert!(pb.wait_for(BOUND, |s| s.delivered == 60));
    assert_eq!(b.delivered(), (0..60).collect::<Vec<_>>());
    assert!(b.lost.lock().unwrap().is_empty());
    let sa = pa.stats();
    assert_eq!(
        sa.delivered + sa.flushed,
        30,
        "every frame of the flushed member counted"
    );
    // The crew runs on for its remaining member, with every worker.
    let stats = crew.stats();
    assert_eq!(stats.workers, 2);
    assert_eq!(stats.members.len(), 1);
    assert_eq!(crew.stop(BOUND), 0);
    assert_eq!(submit(&pb, 61), Submitted::Stopped);
}

#[test]
fn under_overload_every_member_gets_its_share() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let crew = crew(2);
    // Both workers are held while every member queues far more than they can take at once.
    let hold = gate();
    let (tx, rx) = mpsc::channel();
    let holder = Arc::new(Stream {
        hang: Some(hold.clone()),
        started: Mutex::new(Some(tx)),
        ..Stream::new("holder", &log)
    });
    let ph = crew.join(holder, member(|_| {})).unwrap();
    submit(&ph, 0);
    submit(&ph, 1);
    rx.recv_timeout(BOUND).unwrap();
    rx.recv_timeout(BOUND).unwrap();
    let names = ["s0", "s1", "s2", "s3"];
    let streams: Vec<Arc<Stream>> = names
        .into_iter()
        .map(|name| Arc::new(Stream::new(name, &log)))
        .collect();
    let pools: Vec<Pool<Stream>> = streams
        .iter()
        .map(|s| crew.join(s.clone(), member(|_| {})).unwrap())
        .collect();
    // Uneven demand: s0 offers four times what the others do.
    for (i, p) in pools.iter().enumerate() {
        for job in 0..if i == 0 { 400 } else { 100 } {
            submit(p, job);
        }
    }
    open(&hold);
    for (i, p) in pools.iter().enumerate() {
        let n = if i == 0 { 400 } else { 100 };
        assert!(p.wait_for(BOUND, |s| s.delivered == n));
    }
    // While every member had frames queued (up to the first one's last), each got the same
    // number of turns, whatever it offered.
    let log = log.lock().unwrap().clone();
    let busy_until = names
        .iter()
        .map(|name| log.iter().rposition(|p| p.0 == *name).unwrap())
        .min()
        .unwrap();
    let counts: Vec<f64> = names
        .iter()
        .map(|name| log[..busy_until].iter().filter(|p| p.0 == *name).count() as f64)
        .collect();
    let jain = counts.iter().sum::<f64>().powi(2)
        / (counts.len() as f64 * counts.iter().map(|c| c * c).sum::<f64>());
    assert!(jain >= 0.999, "Jain's index {jain} over {counts:?}");
    assert!(counts.iter().all(|&c| c >= 98.0), "{counts:?}");
}

#[test]
fn a_freed_max_in_flight_slot_is_taken_while_the_finishing_worker_pushes() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let downstream = gate();
    let (tx, rx) = mpsc::channel();
    let narrow = Arc::new(Stream {
        blocked: Some(downstream.clone()),
        started: Mutex::new(Some(tx)),
        ..Stream::new("narrow", &log)
    });
    // Not shared: no worker replaced after a blocked push, which would take the job too.
    let crew = Crew::start(
        CrewConfig {
            workers: 2,
            max_workers: 0,
            idle_timeout: Duration::from_secs(3600),
        },
        false,
    )
    .unwrap();
    let p = crew.join(narrow, member(|c| c.max_in_flight = 1)).unwrap();
    submit(&p, 0);
    submit(&p, 1);
    // Job 0 runs alone (max-in-flight 1); its worker then pushes it and stays in the push
    // (downstream blocked). Job 1 is takable from the moment job 0 finished: the idle
    // worker takes it.
    assert_eq!(rx.recv_timeout(BOUND).unwrap(), ("narrow", 0));
    assert_eq!(
        rx.recv_timeout(BOUND)
            .expect("the other worker took the next job"),
        ("narrow", 1)
    );
    open(&downstream);
    assert!(p.wait_for(BOUND, |s| s.delivered == 2));
}

#[test]
fn with_every_worker_stuck_a_waiting_producer_gets_in_as_queued_jobs_time_out() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let never = gate();
    let hung = Arc::new(Stream {
        hang: Some(never.clone()),
        ..Stream::new("hung", &log)
    });
    // A private pool of one worker, bounded, waiting for room (no leak): every handler
    // hangs, so after the cap of stuck threads nobody takes a job; queued jobs must time out
    // where they wait, or the producer waits for ever.
    let pool = Pool::start(
        hung.clone(),
        PoolConfig {
            workers: 1,
            timeout: Some(Duration::from_millis(5)),
            limits: Limits {
                max_buffers: 4,
                ..Limits::default()
            },
            ..PoolConfig::default()
        },
    )
    .unwrap();
    let (tx, rx) = mpsc::channel();
    let producer = std::thread::spawn(move || {
        for job in 0..30 {
            submit(&pool, job);
        }
        let _ = tx.send(());
        pool
    });
    rx.recv_timeout(BOUND)
        .expect("the producer got every job in");
    let pool = producer.join().unwrap();
    assert!(pool.wait_for(BOUND, |s| s.timeout == 30));
    open(&never);
}
