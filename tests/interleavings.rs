//! The randomized interleaving harness at element level: `enrichpool ! resequencer` driven
//! through seeded random schedules of frames, caps changes, custom serialized events,
//! serialized queries, flushing seeks (FLUSH_START from another thread while frames are in
//! flight, as `basesrc` does), segment restarts, PLAYING↔PAUSED, a blocked or slow
//! downstream, and handlers that are slow, fail, drop, panic or hang past `timeout`; live or
//! not, leaky or not.
//!
//! After every schedule (each one bounded in time: a stall fails it):
//! - at the sink, frames of an epoch are strictly increasing and epochs never go back;
//! - in the last epoch, every frame that entered the pool is at the sink exactly once, named
//!   in one of the pool's gaps, or counted by the resequencer as skipped or late (when live);
//! - each custom event arrives after the frames sent before it and before those sent after;
//! - a leaky pool takes frames while downstream is blocked (the release waits for them);
//! - after READY, no worker thread is left.
//!
//! `cargo test` runs a fixed set of seeds; `ORDERED_SOAK_SEEDS=N` runs N seeds from
//! `ORDERED_SOAK_FIRST` (the soak: `scripts/soak.sh`).

#[path = "common/sync.rs"]
mod sync;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_check::Harness;
use gstordered::EnrichPool;
use gstordered::enrichpool::Verdict;
use gstordered::meta::{Gap, SeqMeta};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sync::Gate;

fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstordered::plugin_register_static().unwrap();
    });
}

const FRAME: gst::ClockTime = gst::ClockTime::from_mseconds(10);
/// The most one schedule may take on a loaded 2-core machine.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// One schedule's settings, drawn from its seed.
#[derive(Debug, Clone)]
struct Setup {
    workers: u32,
    leaky: &'static str,
    max_size_buffers: u32,
    timeout_ms: Option<u64>,
    live: bool,
    ops: usize,
}

impl Setup {
    fn draw(rng: &mut StdRng) -> Setup {
        let leaky = ["none", "upstream", "downstream"][rng.random_range(0..3)];
        Setup {
            workers: rng.random_range(1..=4),
            leaky,
            max_size_buffers: rng.random_range(2..=12),
            timeout_ms: rng.random_bool(0.5).then(|| rng.random_range(15..=40)),
            live: rng.random_bool(0.5),
            ops: rng.random_range(60..=200),
        }
    }
}

/// What a handler does with a frame, fixed by the seed and the frame.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fate {
    Quick,
    Slow,
    Fail,
    Drop,
    Panic,
    Hang,
}

fn fate(seed: u64, epoch: u32, seq: u64, hangs: bool) -> Fate {
    let mut rng =
        StdRng::seed_from_u64(seed ^ (u64::from(epoch) << 40) ^ seq.wrapping_mul(0x9E37_79B9));
    match rng.random_range(0..100) {
        0..60 => Fate::Quick,
        60..85 => Fate::Slow,
        85..90 => Fate::Fail,
        90..95 => Fate::Drop,
        95..97 => Fate::Panic,
        _ if hangs => Fate::Hang,
        _ => Fate::Slow,
    }
}

/// What reached the sink, in order.
#[derive(Clone, Debug, PartialEq)]
enum Seen {
    Frame(u32, u64),
    Marker(u64),
}

fn worker_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|name| name.starts_with("enrich-"))
                .count()
        })
        .unwrap_or(0)
}

fn stat(element: &gst::Element, name: &str) -> u64 {
    element
        .property::<gst::Structure>("stats")
        .get::<u64>(name)
        .unwrap()
}

fn marker(n: u64) -> gst::Event {
    gst::event::CustomDownstream::new(gst::Structure::builder("test-marker").field("n", n).build())
}

/// Scripted panics are expected: keep them out of the test output.
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

/// Runs one schedule; panics with the seed on any broken promise.
fn run(seed: u64) {
    init();
    quiet_scripted_panics();
    let mut rng = StdRng::seed_from_u64(seed);
    let setup = Setup::draw(&mut rng);
    let context = format!("seed {seed}: {setup:?}");
    let timeout = setup
        .timeout_ms
        .map_or(String::new(), |t| format!("timeout={}", t * 1_000_000));
    let mut h = Harness::new_parse(&format!(
        "enrichpool name=pool workers={} leaky={} max-size-buffers={} on-error=drop {timeout} \
         ! resequencer name=reseq latency={}",
        setup.workers,
        setup.leaky,
        setup.max_size_buffers,
        if setup.live {
            100_000_000u64
        } else {
            3_600_000_000_000
        },
    ));
    if setup.live {
        h.set_upstream_latency(gst::ClockTime::ZERO);
    }
    let bin = h.element().unwrap().downcast::<gst::Bin>().unwrap();
    let pool = bin
        .by_name("pool")
        .unwrap()
        .downcast::<EnrichPool>()
        .unwrap();
    let reseq = bin.by_name("reseq").unwrap();
    let hangs = setup.timeout_ms.is_some();
    pool.set_handler(move |job| {
        let meta = SeqMeta::read(job.buffer).unwrap().unwrap();
        match fate(seed, meta.epoch, meta.seq, hangs) {
            Fate::Quick => {}
            Fate::Slow => std::thread::sleep(Duration::from_micros(200 + meta.seq % 7 * 300)),
            Fate::Fail => return Err("scripted failure".into()),
            Fate::Drop => return Ok(Verdict::Drop),
            Fate::Panic => panic!("scripted panic"),
            Fate::Hang => std::thread::sleep(Duration::from_millis(120)),
        }
        Ok(Verdict::Keep)
    });

    // What reaches the sink, what the pool names in gaps, and downstream's gate.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let gapped = Arc::new(Mutex::new(BTreeSet::new()));
    let blocked: Arc<Mutex<Option<Gate>>> = Arc::default();
    let slow = Arc::new(AtomicBool::new(false));
    let pool_out = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let (seen, blocked, slow) = (seen.clone(), blocked.clone(), slow.clone());
        h.sinkpad().unwrap().add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| {
                match &info.data {
                    Some(gst::PadProbeData::Buffer(b)) => {
                        let gate = blocked.lock().unwrap().clone();
                        if let Some(gate) = gate {
                            gate.wait();
                        }
                        if slow.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_micros(300));
                        }
                        let m = SeqMeta::read(b).unwrap().unwrap();
                        seen.lock().unwrap().push(Seen::Frame(m.epoch, m.seq));
                    }
                    Some(gst::PadProbeData::Event(e)) => {
                        if let Some(n) = e
                            .structure()
                            .filter(|s| s.name() == "test-marker")
                            .and_then(|s| s.get::<u64>("n").ok())
                        {
                            seen.lock().unwrap().push(Seen::Marker(n));
                        }
                    }
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
        let (gapped, pool_out) = (gapped.clone(), pool_out.clone());
        pool.static_pad("src").unwrap().add_probe(
            gst::PadProbeType::EVENT_DOWNSTREAM | gst::PadProbeType::BUFFER,
            move |_, info| {
                match &info.data {
                    Some(gst::PadProbeData::Event(e)) => {
                        if let Some(Ok(g)) = Gap::from_event(e) {
                            let mut gapped = gapped.lock().unwrap();
                            for s in g.seq..g.seq + g.count {
                                gapped.insert((g.epoch, s));
                            }
                            pool_out
                                .lock()
                                .unwrap()
                                .push(format!("gap{}:{}x{}", g.epoch, g.seq, g.count));
                        } else {
                            pool_out.lock().unwrap().push(e.type_().name().to_string());
                        }
                    }
                    Some(gst::PadProbeData::Buffer(b)) => {
                        let m = SeqMeta::read(b).unwrap().unwrap();
                        pool_out
                            .lock()
                            .unwrap()
                            .push(format!("{}:{}", m.epoch, m.seq));
                    }
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
    }
    h.set_src_caps_str("video/x-raw,format=GRAY8,width=8,height=8,framerate=100/1");

    let upstream = h.srcpad().unwrap();
    let mut epoch = 0u32;
    let mut n = 0u64; // frames sent in this epoch
    let mut pts = 0u64;
    let mut markers = 0u64;
    // Per epoch: what was sent, in order (frames by their number in the epoch, markers).
    let mut sent: BTreeMap<u32, Vec<Seen>> = BTreeMap::new();
    let mut release_after: Option<(usize, Gate)> = None;
    let trace = std::env::var_os("ORDERED_SOAK_TRACE").is_some();
    for _ in 0..setup.ops {
        let op = rng.random_range(0..100);
        if trace {
            eprintln!(
                "op {op} at epoch {epoch} frame {n} (blocked: {})",
                release_after.is_some()
            );
        }
        match op {
            0..70 => {
                let mut buffer = gst::Buffer::with_size(64).unwrap();
                {
                    let b = buffer.get_mut().unwrap();
                    b.set_pts(FRAME * pts);
                    b.set_duration(FRAME);
                }
                pts += 1;
                let res = upstream.push(buffer);
                assert!(res.is_ok(), "{context}: push returned {res:?}");
                sent.entry(epoch).or_default().push(Seen::Frame(epoch, n));
                n += 1;
                if let Some((left, gate)) = release_after.take() {
                    if left <= 1 {
                        *blocked.lock().unwrap() = None;
                        gate.open();
                    } else {
                        release_after = Some((left - 1, gate));
                    }
                }
            }
            70..76 => {
                assert!(upstream.push_event(marker(markers)), "{context}: marker");
                sent.entry(epoch).or_default().push(Seen::Marker(markers));
                markers += 1;
            }
            76..79 => {
                let caps = format!(
                    "video/x-raw,format=GRAY8,width=8,height={},framerate=100/1",
                    rng.random_range(4..12)
                );
                assert!(
                    upstream.push_event(gst::event::Caps::new(&caps.parse::<gst::Caps>().unwrap()))
                );
            }
            79..82 if release_after.is_none() => {
                // A serialized query comes after the frames before it (so not while
                // downstream is held until more frames come: that would wait forever, rightly).
                let mut q = gst::query::Drain::new();
                let _ = upstream.peer_query(&mut q);
            }
            82..86 => {
                // A flushing seek: FLUSH_START from another thread while frames are in flight.
                if let Some((_, gate)) = release_after.take() {
                    *blocked.lock().unwrap() = None;
                    gate.open();
                }
                let up = upstream.clone();
                let flusher =
                    std::thread::spawn(move || up.push_event(gst::event::FlushStart::new()));
                // The streaming thread may still be in a chain when it lands.
                let _ = upstream.push({
                    let mut b = gst::Buffer::with_size(64).unwrap();
                    b.get_mut().unwrap().set_pts(FRAME * pts);
                    b
                });
                flusher.join().unwrap();
                assert!(upstream.push_event(gst::event::FlushStop::new(true)));
                assert!(
                    upstream.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
                        gst::ClockTime,
                    >::new()))
                );
                epoch += 1;
                n = 0;
                pts = 0;
            }
            86..89 => {
                // A new segment that restarts the timeline: the pool starts a new epoch.
                let mut segment = gst::FormattedSegment::<gst::ClockTime>::new();
                segment.set_base(FRAME * pts);
                assert!(upstream.push_event(gst::event::Segment::new(&segment)));
                if n > 0 {
                    epoch += 1;
                    n = 0;
                }
                pts = 0;
            }
            89..94 if setup.leaky != "none" && release_after.is_none() => {
                // Downstream blocks until a few more frames went in: a leaky pool must take
                // them meanwhile (if it did not, this would never be released).
                let gate = Gate::default();
                *blocked.lock().unwrap() = Some(gate.clone());
                release_after = Some((rng.random_range(1..8), gate));
            }
            94..98 => slow.store(rng.random_bool(0.5), Ordering::Relaxed),
            98..100 if release_after.is_none() => {
                // PLAYING → PAUSED → PLAYING while frames are in flight.
                let element = h.element().unwrap();
                assert!(element.set_state(gst::State::Paused).is_ok(), "{context}");
                assert!(element.set_state(gst::State::Playing).is_ok(), "{context}");
            }
            _ => {}
        }
    }
    if let Some((_, gate)) = release_after.take() {
        *blocked.lock().unwrap() = None;
        gate.open();
    }
    slow.store(false, Ordering::Relaxed);
    assert!(
        upstream.push_event(gst::event::Eos::new()),
        "{context}: EOS"
    );
    let until = Instant::now() + RUN_LIMIT;
    loop {
        if let Some(e) = h.try_pull_event()
            && e.type_() == gst::EventType::Eos
        {
            break;
        }
        assert!(
            Instant::now() < until,
            "{context}: no EOS at the sink (stalled)"
        );
        std::thread::sleep(Duration::from_micros(500));
    }

    let seen = seen.lock().unwrap().clone();
    let gapped = gapped.lock().unwrap().clone();
    let context = format!(
        "{context} (the pool's output: {})",
        pool_out.lock().unwrap().join(" ")
    );
    check(&context, &seen, &gapped, &sent, epoch, setup.live, &reseq);

    drop(h);
    let until = Instant::now() + RUN_LIMIT;
    while worker_threads() > 0 {
        assert!(
            Instant::now() < until,
            "{context}: {} worker threads left after NULL",
            worker_threads()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn check(
    context: &str,
    seen: &[Seen],
    gapped: &BTreeSet<(u32, u64)>,
    sent: &BTreeMap<u32, Vec<Seen>>,
    last_epoch: u32,
    live: bool,
    reseq: &gst::Element,
) {
    // Order: strictly increasing within an epoch, epochs never back.
    let mut last: Option<(u32, u64)> = None;
    for s in seen {
        if let Seen::Frame(e, q) = *s {
            if let Some((le, lq)) = last {
                assert!(
                    e > le || (e == le && q > lq),
                    "{context}: ({e}, {q}) after ({le}, {lq}): {seen:?}"
                );
            }
            last = Some((e, q));
        }
    }
    // The ledger of the last epoch: every frame at the sink, or gapped by the pool, or (live)
    // given up on by the resequencer.
    let frames: Vec<u64> = sent
        .get(&last_epoch)
        .map(|items| {
            items
                .iter()
                .filter_map(|s| match s {
                    Seen::Frame(_, q) => Some(*q),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let at_sink: BTreeSet<u64> = seen
        .iter()
        .filter_map(|s| match *s {
            Seen::Frame(e, q) if e == last_epoch => Some(q),
            _ => None,
        })
        .collect();
    let mut missing = 0;
    for q in &frames {
        let here = at_sink.contains(q);
        let gap = gapped.contains(&(last_epoch, *q));
        assert!(
            !(here && gap),
            "{context}: frame {q} both pushed and gapped"
        );
        if !here && !gap {
            missing += 1;
        }
    }
    let given_up = stat(reseq, "skipped") + stat(reseq, "late");
    if live {
        assert!(
            missing <= given_up,
            "{context}: {missing} frames of the last epoch unaccounted, the resequencer gave up \
             on {given_up}"
        );
    } else {
        assert_eq!(
            missing,
            0,
            "{context}: frames of the last epoch ({last_epoch}, sent {frames:?}) unaccounted: \
             {seen:?}, gapped {gapped:?}; {}",
            reseq.property::<gst::Structure>("stats")
        );
    }
    // Markers between the frames around them, within the epoch they were sent in.
    for (epoch, items) in sent {
        for (i, item) in items.iter().enumerate() {
            let Seen::Marker(m) = item else { continue };
            let Some(at) = seen.iter().position(|s| s == item) else {
                // Dropped by a flush that came after it.
                assert!(*epoch < last_epoch, "{context}: marker {m} lost");
                continue;
            };
            for (j, other) in items.iter().enumerate() {
                let Some(pos) = seen.iter().position(|s| s == other) else {
                    continue;
                };
                if j < i {
                    assert!(pos < at, "{context}: {other:?} after marker {m}");
                } else if j > i {
                    assert!(pos > at, "{context}: {other:?} before marker {m}");
                }
            }
        }
    }
}

fn seeds() -> std::ops::Range<u64> {
    let first = std::env::var("ORDERED_SOAK_FIRST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let count = std::env::var("ORDERED_SOAK_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    first..first + count
}

#[test]
fn random_schedules_keep_every_promise() {
    // One schedule at a time, each on its own thread with a bound: a stall fails it.
    for seed in seeds() {
        let (tx, rx) = mpsc::channel();
        let runner = std::thread::spawn(move || {
            run(seed);
            let _ = tx.send(());
        });
        match rx.recv_timeout(RUN_LIMIT * 2) {
            Ok(()) => runner.join().unwrap(),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                if let Err(panic) = runner.join() {
                    std::panic::resume_unwind(panic);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("seed {seed} did not finish (stalled)"),
        }
    }
}
