//! The randomized interleaving harness of the pool: random schedules of submissions,
//! workers finishing in any order (kept, dropped, failed, panicking, hanging past `timeout`),
//! serialized events, upstream gaps, flushes, leaky bounds and stops, run on the real pool
//! with real threads, and checked against what must hold whatever the scheduler does:
//!
//! - every job submitted and not flushed is output exactly once, delivered or in a loss run;
//! - an event leaves after every output of the jobs submitted before it and before any
//!   output of the jobs submitted after it;
//! - nothing from before a flush is output after the flush has returned from `resume`;
//! - when nothing is pending, nothing is left waiting (`wait_idle` returns);
//! - the counters balance: submitted = delivered + lost + flushed + queued + in flight +
//!   waiting.
//!
//! `cargo test` runs a fixed number of seeds; `ORDERED_SOAK_CASES=N` runs N (the soak).

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;

use proptest::prelude::*;

use super::*;

/// How a job ends when the schedule releases it.
#[derive(Clone, Copy, Debug)]
enum End {
    Keep,
    Drop,
    Fail,
    Panic,
    /// Never returns until the case ends: the watchdog gives up on it.
    Hang,
}

#[derive(Clone, Debug)]
enum Op {
    Submit,
    /// Release the n-th running job (modulo how many run).
    Finish(usize, End),
    Event,
    UpstreamGap(u64),
    Flush,
    /// Let the workers and the watchdog run a little.
    Yield,
}

/// What the pool output, in order, with markers the test writes.
#[derive(Clone, Debug, PartialEq)]
enum Out {
    Frame(Tag),
    Lost(Tag, u64),
    Event(u32),
    /// `resume` returned after the n-th flush.
    Flushed(u32),
}

struct Model {
    log: Mutex<Vec<Out>>,
    /// Jobs waiting for their end, by tag.
    running: Mutex<BTreeMap<Tag, mpsc::Sender<End>>>,
    started: Condvar,
}

impl Work for Model {
    type Job = Tag;
    type Event = u32;

    fn process(&self, job: &mut Tag, _worker: u32, attempt: u32) -> Verdict {
        if attempt > 0 {
            // A retry: the schedule already decided this job fails for good.
            return Verdict::Fail("again".into());
        }
        let (tx, rx) = mpsc::channel();
        self.running.lock().unwrap().insert(*job, tx);
        self.started.notify_all();
        match rx.recv() {
            Ok(End::Keep) => Verdict::Keep,
            Ok(End::Drop) => Verdict::Drop,
            Ok(End::Fail) => Verdict::Fail("scripted".into()),
            Ok(End::Panic) => panic!("scripted panic"),
            // Hang: the sender was dropped at the end of the case.
            Ok(End::Hang) | Err(_) => Verdict::Keep,
        }
    }

    fn deliver(&self, job: Tag, tag: Tag, _report: Report) {
        assert_eq!(job, tag);
        self.log.lock().unwrap().push(Out::Frame(tag));
    }

    fn lost(&self, first: Tag, count: u64, _reason: Loss) {
        self.log.lock().unwrap().push(Out::Lost(first, count));
    }

    fn forward(&self, event: u32) {
        self.log.lock().unwrap().push(Out::Event(event));
    }

    fn fatal(&self, _tag: Tag, _message: &str) {}
}

fn op() -> impl Strategy<Value = Op> {
    let end = prop_oneof![
        6 => Just(End::Keep),
        1 => Just(End::Drop),
        1 => Just(End::Fail),
        1 => Just(End::Panic),
        1 => Just(End::Hang),
    ];
    prop_oneof![
        8 => Just(Op::Submit),
        8 => (0usize..8, end).prop_map(|(n, e)| Op::Finish(n, e)),
        2 => Just(Op::Event),
        1 => (1u64..4).prop_map(Op::UpstreamGap),
        1 => Just(Op::Flush),
        2 => Just(Op::Yield),
    ]
}

fn config() -> impl Strategy<Value = PoolConfig> {
    (
        1usize..4,
        0usize..6,
        0u64..6,
        prop_oneof![
            Just(Leaky::None),
            Just(Leaky::Upstream),
            Just(Leaky::Downstream)
        ],
        any::<bool>(),
        prop_oneof![Just(OnError::Retry), Just(OnError::Drop)],
    )
        .prop_map(
            |(workers, max_workers, max_buffers, leaky, timeout, on_error)| PoolConfig {
                workers,
                max_workers,
                // Short when surplus workers can retire (they do, in the schedule); else
                // so long that a lost wake-up stalls the schedule instead of healing.
                idle_timeout: if max_workers > workers {
                    Duration::from_millis(20)
                } else {
                    Duration::from_secs(3600)
                },
                limits: Limits {
                    // Unbounded only without leaks: a bounded schedule cannot block forever.
                    max_buffers: if leaky == Leaky::None {
                        0
                    } else {
                        max_buffers + 1
                    },
                    ..Limits::default()
                },
                leaky,
                timeout: timeout.then(|| Duration::from_millis(15)),
                on_error,
                retries: 1,
            },
        )
}

/// Scripted panics are expected by the thousand: keep them out of the test output.
fn quiet_scripted_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&"scripted panic") {
                previous(info);
            }
        }));
    });
}

/// A case: runs the schedule, finishes every job still running, and checks the log.
fn run(config: PoolConfig, ops: &[Op]) {
    quiet_scripted_panics();
    if std::env::var_os("ORDERED_MODEL_TRACE").is_some() {
        eprintln!("case: {config:?} {ops:?}");
    }
    let model = Arc::new(Model {
        log: Mutex::default(),
        running: Mutex::default(),
        started: Condvar::new(),
    });
    let pool = Pool::start(model.clone(), config).unwrap();
    let hangs = config.timeout.is_some();
    let mut epoch = 0u32;
    let mut seq = 0u64;
    let mut events = 0u32;
    let mut flushes = 0u32;
    // Per job: the index of the epoch-and-events position it was submitted at.
    let mut submitted: Vec<(Tag, u32)> = Vec::new();
    let mut upstream_gaps: Vec<(Tag, u64, u32)> = Vec::new();
    // Events in order, with the number of jobs submitted before each.
    let mut event_at: HashMap<u32, usize> = HashMap::new();
    let mut flushed_before: Vec<(u32, usize)> = Vec::new();
    let mut hung: Vec<mpsc::Sender<End>> = Vec::new();

    for op in ops {
        match *op {
            Op::Submit => {
                let tag = Tag { epoch, seq };
                seq += 1;
                // A bound with Leaky::None could block the schedule; configs avoid it.
                pool.submit(tag, tag, 1, None);
                submitted.push((tag, flushes));
            }
            Op::Finish(n, end) => {
                let mut running = model.running.lock().unwrap();
                let Some(&tag) = running.keys().nth(n % running.len().max(1)) else {
                    continue;
                };
                let tx = running.remove(&tag).unwrap();
                drop(running);
                match end {
                    End::Hang if hangs => hung.push(tx),
                    End::Hang => {
                        let _ = tx.send(End::Keep);
                    }
                    end => {
                        let _ = tx.send(end);
                    }
                }
            }
            Op::Event => {
                if pool.event(events) {
                    event_at.insert(events, submitted.len());
                }
                events += 1;
            }
            Op::UpstreamGap(count) => {
                let first = Tag { epoch, seq };
                seq += count;
                if pool.lost(first, count, Loss::Failed) {
                    upstream_gaps.push((first, count, flushes));
                }
            }
            Op::Flush => {
                let _ = pool.flush();
                pool.resume();
                flushes += 1;
                model.log.lock().unwrap().push(Out::Flushed(flushes));
                flushed_before.push((flushes, submitted.len()));
                epoch += 1;
                seq = 0;
            }
            Op::Yield => std::thread::sleep(Duration::from_micros(300)),
        }
    }
    // Let everything still running end; hung jobs end only after the watchdog gave up.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let next: Vec<_> = std::mem::take(&mut *model.running.lock().unwrap())
            .into_values()
            .collect();
        for tx in next {
            let _ = tx.send(End::Keep);
        }
        let quiet = pool.wait_for(Duration::from_millis(20), |s| {
            s.queued + s.in_flight + s.waiting == 0
        });
        if quiet && model.running.lock().unwrap().is_empty() {
            // Nothing outstanding: whatever is left (losses, events) goes out at once.
            assert!(pool.when_idle(|| ()).is_some());
            break;
        }
        assert!(
            Instant::now() < until,
            "the pool never became idle: {:?}",
            pool.stats()
        );
    }
    let stats = pool.stats();
    for tx in hung {
        let _ = tx.send(End::Keep);
    }
    pool.stop(Duration::from_secs(10));
    let log = model.log.lock().unwrap().clone();
    check(&log, &submitted, &upstream_gaps, &event_at, flushes, &stats);
}

fn check(
    log: &[Out],
    submitted: &[(Tag, u32)],
    upstream_gaps: &[(Tag, u64, u32)],
    event_at: &HashMap<u32, usize>,
    flushes: u32,
    stats: &PoolStats,
) {
    // Where each tag was output, and how often.
    let mut outputs: HashMap<Tag, Vec<usize>> = HashMap::new();
    let mut flush_marks: HashMap<u32, usize> = HashMap::new();
    let mut event_pos: HashMap<u32, usize> = HashMap::new();
    for (i, o) in log.iter().enumerate() {
        match *o {
            Out::Frame(tag) => outputs.entry(tag).or_default().push(i),
            Out::Lost(first, count) => {
                for s in first.seq..first.seq + count {
                    outputs
                        .entry(Tag {
                            epoch: first.epoch,
                            seq: s,
                        })
                        .or_default()
                        .push(i);
                }
            }
            Out::Event(e) => {
                assert!(event_pos.insert(e, i).is_none(), "event {e} twice: {log:?}");
            }
            Out::Flushed(n) => {
                flush_marks.insert(n, i);
            }
        }
    }
    // Nothing from before a flush after the flush returned (a tag's epoch counts flushes).
    for (tag, at) in &outputs {
        for flush in (tag.epoch + 1)..=flushes {
            let mark = flush_marks[&flush];
            assert!(
                at.iter().all(|&i| i < mark),
                "{tag:?} output after flush {flush}: {log:?}"
            );
        }
    }
    // The last generation: every job and upstream gap exactly once.
    let last = flushes;
    for (tag, generation) in submitted {
        let n = outputs.get(tag).map_or(0, Vec::len);
        if *generation == last {
            assert_eq!(n, 1, "{tag:?} output {n} times: {log:?}");
        } else {
            assert!(n <= 1, "{tag:?} output {n} times: {log:?}");
        }
    }
    for (first, count, generation) in upstream_gaps {
        if *generation == last {
            for s in first.seq..first.seq + count {
                let tag = Tag {
                    epoch: first.epoch,
                    seq: s,
                };
                assert_eq!(
                    outputs.get(&tag).map_or(0, Vec::len),
                    1,
                    "gap {tag:?}: {log:?}"
                );
            }
        }
    }
    // Events between the jobs around them (within the generation they were sent in).
    for (&event, &before) in event_at {
        let Some(&pos) = event_pos.get(&event) else {
            // Dropped by a later flush.
            continue;
        };
        for (i, (tag, _)) in submitted.iter().enumerate() {
            let Some(at) = outputs.get(tag) else { continue };
            for &o in at {
                if i < before {
                    assert!(o < pos, "{tag:?} after event {event}: {log:?}");
                } else {
                    assert!(o > pos, "{tag:?} before event {event}: {log:?}");
                }
            }
        }
    }
    let s = stats;
    assert_eq!(
        s.submitted,
        s.delivered
            + s.leaked
            + s.failed
            + s.timeout
            + s.dropped
            + s.flushed
            + s.queued
            + s.in_flight
            + s.waiting,
        "{s:?}"
    );
    assert_eq!(
        s.queued + s.in_flight + s.waiting,
        0,
        "idle at the end: {s:?}"
    );
}

/// Cases per `cargo test` run, or `ORDERED_SOAK_CASES`.
fn cases() -> u32 {
    std::env::var("ORDERED_SOAK_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_schedules_keep_every_promise(
        config in config(),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        // A schedule that hangs is a failure too (a deadlock), not a stuck test run.
        let (tx, rx) = mpsc::channel();
        let case = std::thread::spawn(move || {
            run(config, &ops);
            let _ = tx.send(());
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(()) => case.join().unwrap(),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                if let Err(panic) = case.join() {
                    std::panic::resume_unwind(panic);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                prop_assert!(false, "the schedule did not finish within 60 s (a deadlock)");
            }
        }
    }
}
