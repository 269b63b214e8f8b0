//! The randomized interleaving harness of the pool: random schedules of submissions,
//! workers finishing in any order (kept, dropped, failed, panicking, hanging past `timeout`;
//! half the jobs in two parts, the scripted end in a part an idle worker may take),
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
//! The same schedules run on a shared crew with three members (ops go to one member each;
//! a member hung or failing beside the others): each member's log is checked alone, and
//! must keep every promise above whatever the others do.
//!
//! `cargo test` runs a fixed number of seeds; `ORDERED_SOAK_CASES=N` runs N (the soak).

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;

use proptest::prelude::*;

use super::*;
use std::time::Instant;

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
    /// The member leaves its crew (stops) while the others go on (shared crews only).
    Leave,
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
    /// `stop` returned: the member left its crew.
    Left,
}

/// Jobs waiting for their end, by member and tag (shared by the members of a case).
type Running = Arc<Mutex<BTreeMap<(usize, Tag), mpsc::Sender<End>>>>;

struct Model {
    member: usize,
    log: Mutex<Vec<Out>>,
    running: Running,
    /// Jobs of even sequence number are split into two parts (see `Helpers`): the scripted
    /// end is awaited in the second, which an idle worker may take.
    helpers: Mutex<Option<Helpers>>,
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
        self.running.lock().unwrap().insert((self.member, *job), tx);
        let scripted = move || match rx.recv() {
            Ok(End::Keep) => Verdict::Keep,
            Ok(End::Drop) => Verdict::Drop,
            Ok(End::Fail) => Verdict::Fail("scripted".into()),
            Ok(End::Panic) => panic!("scripted panic"),
            // Hang: the sender was dropped at the end of the case.
            Ok(End::Hang) | Err(_) => Verdict::Keep,
        };
        let helpers = self.helpers.lock().unwrap().clone();
        match helpers.filter(|_| job.seq.is_multiple_of(2)) {
            None => scripted(),
            Some(helpers) => {
                let parts: Vec<Box<dyn FnOnce() -> Verdict + Send>> =
                    vec![Box::new(|| Verdict::Keep), Box::new(scripted)];
                let mut results = helpers.run(parts).into_iter();
                results.next();
                // A panic in the part is caught there: the job fails.
                results
                    .next()
                    .flatten()
                    .unwrap_or_else(|| Verdict::Fail("a part panicked".into()))
            }
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
        1 => Just(Op::Leave),
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
                // Unbounded, or one or two jobs (parts included) at once.
                max_in_flight: (max_buffers % 3) as usize,
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

/// A case: runs the schedule on a private pool (`members` 1) or on `members` members of a
/// shared crew, finishes every job still running, and checks each member's log.
fn run(config: PoolConfig, members: usize, ops: &[(usize, Op)]) {
    quiet_scripted_panics();
    if std::env::var_os("ORDERED_MODEL_TRACE").is_some() {
        eprintln!("case: {config:?} {ops:?}");
    }
    let running: Running = Arc::default();
    let crew = (members > 1).then(|| Crew::start(config.crew(), true).unwrap());
    let mut runs: Vec<MemberRun> = (0..members)
        .map(|member| {
            let model = Arc::new(Model {
                member,
                log: Mutex::default(),
                running: running.clone(),
                helpers: Mutex::new(None),
            });
            let pool = match &crew {
                Some(crew) => crew.join(model.clone(), config.member()).unwrap(),
                None => Pool::start(model.clone(), config).unwrap(),
            };
            *model.helpers.lock().unwrap() = Some(pool.crew().helpers());
            MemberRun::new(model, pool)
        })
        .collect();
    let hangs = config.timeout.is_some();
    let mut hung: Vec<mpsc::Sender<End>> = Vec::new();

    for &(member, ref op) in ops {
        let m = &mut runs[member % members];
        if m.left && !matches!(op, Op::Finish(..) | Op::Yield) {
            // Its element is gone: nothing more comes to it.
            continue;
        }
        match *op {
            Op::Submit => {
                let tag = Tag {
                    epoch: m.epoch,
                    seq: m.seq,
                };
                m.seq += 1;
                // A bound with Leaky::None could block the schedule; configs avoid it.
                m.pool.submit(tag, tag, 1, None);
                m.submitted.push((tag, m.flushes));
            }
            Op::Finish(n, end) => {
                let mut running = running.lock().unwrap();
                let Some(&key) = running.keys().nth(n % running.len().max(1)) else {
                    continue;
                };
                let tx = running.remove(&key).unwrap();
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
                if m.pool.event(m.events) {
                    m.event_at.insert(m.events, m.submitted.len());
                }
                m.events += 1;
            }
            Op::UpstreamGap(count) => {
                let first = Tag {
                    epoch: m.epoch,
                    seq: m.seq,
                };
                m.seq += count;
                if m.pool.lost(first, count, Loss::Failed) {
                    m.upstream_gaps.push((first, count, m.flushes));
                }
            }
            Op::Flush => {
                let _ = m.pool.flush();
                m.pool.resume();
                m.flushes += 1;
                m.model.log.lock().unwrap().push(Out::Flushed(m.flushes));
                m.epoch += 1;
                m.seq = 0;
            }
            Op::Leave if members > 1 && !m.left => {
                // Its jobs still running wait for the schedule: not waited for.
                m.pool.stop(Duration::ZERO);
                m.left = true;
                m.model.log.lock().unwrap().push(Out::Left);
            }
            Op::Leave => {}
            Op::Yield => std::thread::sleep(Duration::from_micros(300)),
        }
    }
    // Let everything still running end; hung jobs end only after the watchdog gave up.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let next: Vec<_> = std::mem::take(&mut *running.lock().unwrap())
            .into_values()
            .collect();
        for tx in next {
            let _ = tx.send(End::Keep);
        }
        let quiet = runs.iter().filter(|m| !m.left).all(|m| {
            m.pool.wait_for(Duration::from_millis(20), |s| {
                s.queued + s.in_flight + s.waiting == 0
            })
        });
        if quiet && running.lock().unwrap().is_empty() {
            // Nothing outstanding: whatever is left (losses, events) goes out at once.
            for m in runs.iter().filter(|m| !m.left) {
                assert!(m.pool.when_idle(|| ()).is_some());
            }
            break;
        }
        assert!(
            Instant::now() < until,
            "the pool never became idle: {:?}",
            runs.iter().map(|m| m.pool.stats()).collect::<Vec<_>>()
        );
    }
    let stats: Vec<PoolStats> = runs.iter().map(|m| m.pool.stats()).collect();
    for tx in hung {
        let _ = tx.send(End::Keep);
    }
    for m in &runs {
        m.pool.stop(Duration::from_secs(10));
    }
    if let Some(crew) = crew {
        crew.stop(Duration::from_secs(10));
    }
    for (m, stats) in runs.iter().zip(&stats) {
        let log = m.model.log.lock().unwrap().clone();
        if m.left {
            check_left(&log);
        } else {
            check(
                &log,
                &m.submitted,
                &m.upstream_gaps,
                &m.event_at,
                m.flushes,
                stats,
            );
        }
    }
}

/// A member that left: nothing output twice, nothing output after it left.
fn check_left(log: &[Out]) {
    let left = log.iter().position(|o| *o == Out::Left).expect("the mark");
    assert!(
        log[left + 1..].is_empty(),
        "output after the member left: {log:?}"
    );
    let mut seen = std::collections::HashSet::new();
    for o in &log[..left] {
        if let Out::Frame(tag) = o {
            assert!(seen.insert(*tag), "{tag:?} twice: {log:?}");
        }
    }
}

/// One member's side of a case: its pool and what the schedule did to it.
struct MemberRun {
    model: Arc<Model>,
    pool: Pool<Model>,
    epoch: u32,
    seq: u64,
    events: u32,
    flushes: u32,
    /// Per job: the flushes before it.
    submitted: Vec<(Tag, u32)>,
    upstream_gaps: Vec<(Tag, u64, u32)>,
    /// Events in order, with the number of jobs submitted before each.
    event_at: HashMap<u32, usize>,
    /// It left its crew.
    left: bool,
}

impl MemberRun {
    fn new(model: Arc<Model>, pool: Pool<Model>) -> MemberRun {
        MemberRun {
            model,
            pool,
            epoch: 0,
            seq: 0,
            events: 0,
            flushes: 0,
            submitted: Vec::new(),
            upstream_gaps: Vec::new(),
            event_at: HashMap::new(),
            left: false,
        }
    }
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
            Out::Left => unreachable!("checked by check_left"),
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
        let ops: Vec<(usize, Op)> = ops.into_iter().map(|op| (0, op)).collect();
        run_case(config, 1, ops)?;
    }

    #[test]
    fn random_schedules_on_a_shared_crew_keep_every_members_promises(
        config in config(),
        ops in prop::collection::vec((0usize..3, op()), 1..160),
    ) {
        run_case(config, 3, ops)?;
    }
}

/// Runs a case on its own thread: a schedule that hangs is a failure too (a deadlock), not
/// a stuck test run.
fn run_case(
    config: PoolConfig,
    members: usize,
    ops: Vec<(usize, Op)>,
) -> Result<(), proptest::test_runner::TestCaseError> {
    {
        let (tx, rx) = mpsc::channel();
        let case = std::thread::spawn(move || {
            run(config, members, &ops);
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
                prop_assert!(
                    false,
                    "the schedule did not finish within 60 s (a deadlock)"
                );
            }
        }
    }
    Ok(())
}
