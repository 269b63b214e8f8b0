//! The `enrichpool` element, alone and in front of a `resequencer`: order restored after
//! random finish order, every lost frame named in a gap, faults handled, events in place,
//! and live pipelines that keep their ledger.

#[path = "common/flush.rs"]
mod flush;
#[path = "common/launch.rs"]
mod launch;
#[path = "common/sync.rs"]
mod sync;

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use gst::prelude::*;
use gst_check::Harness;
use gstordered::EnrichPool;
use gstordered::enrichpool::Verdict;
use gstordered::meta::{Enrichment, Gap, GapReason, SeqMeta};
use sync::{Gate, within};

/// The longest a test that could hang (a regression deadlocking) may take.
const LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstordered::plugin_register_static().unwrap();
    });
}

const FRAME: gst::ClockTime = gst::ClockTime::from_mseconds(40);

fn frame(n: u64) -> gst::Buffer {
    let mut buffer = gst::Buffer::with_size(8).unwrap();
    {
        let b = buffer.get_mut().unwrap();
        b.set_pts(FRAME * n);
        b.set_duration(FRAME);
    }
    buffer
}

/// `enrichpool ! resequencer` in a harness whose clock stands still, so only gaps, not
/// deadlines, move the resequencer past lost frames.
fn pool_harness(props: &str) -> (Harness, EnrichPool, gst::Element) {
    init();
    let mut h = Harness::new_parse(&format!(
        "enrichpool name=pool {props} ! resequencer name=reseq"
    ));
    h.use_testclock();
    let bin = h.element().unwrap().downcast::<gst::Bin>().unwrap();
    let pool = bin
        .by_name("pool")
        .unwrap()
        .downcast::<EnrichPool>()
        .unwrap();
    let reseq = bin.by_name("reseq").unwrap();
    h.set_src_caps_str("video/x-raw,format=GRAY8,width=4,height=2,framerate=25/1");
    (h, pool, reseq)
}

fn stat(element: &impl IsA<gst::Element>, name: &str) -> u64 {
    element
        .property::<gst::Structure>("stats")
        .get::<u64>(name)
        .unwrap()
}

fn seq_of(buffer: &gst::BufferRef) -> u64 {
    SeqMeta::read(buffer).unwrap().unwrap().seq
}

/// A pseudo-random sleep in 0..max_ms, fixed per sequence number.
fn jitter(seq: u64, max_ms: u64) -> Duration {
    let mixed = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
    Duration::from_micros(mixed % (max_ms * 1000))
}

#[test]
fn frames_finishing_in_random_order_come_out_in_order_with_their_outputs() {
    let (mut h, pool, _) = pool_harness("workers=4");
    pool.set_handler(|job| {
        let seq = SeqMeta::read(job.buffer).unwrap().unwrap().seq;
        std::thread::sleep(jitter(seq, 4));
        job.outputs.set("triple", seq * 3);
        Ok(Verdict::Keep)
    });
    let n = 40;
    for i in 0..n {
        h.push(frame(i)).unwrap();
    }
    for i in 0..n {
        let out = h.pull().unwrap();
        assert_eq!(seq_of(&out), i);
        let e = Enrichment::read(&out).unwrap().unwrap();
        assert_eq!(e.outputs.get::<u64>("triple").unwrap(), i * 3);
        assert!(e.worker < 4);
        assert_eq!(e.attempts, 1);
        assert!(e.server.is_empty());
    }
    assert_eq!(stat(&pool, "pushed"), n);
    assert_eq!(stat(&pool, "in"), n);
}

#[test]
fn frames_the_handler_drops_become_gaps_and_the_rest_stay_in_order() {
    let (mut h, pool, reseq) = pool_harness("workers=3");
    pool.set_handler(|job| {
        let seq = SeqMeta::read(job.buffer).unwrap().unwrap().seq;
        std::thread::sleep(jitter(seq, 3));
        Ok(if seq.is_multiple_of(5) {
            Verdict::Drop
        } else {
            Verdict::Keep
        })
    });
    for i in 0..30 {
        h.push(frame(i)).unwrap();
    }
    let kept: Vec<u64> = (0..30).filter(|s| s % 5 != 0).collect();
    let got: Vec<u64> = (0..kept.len())
        .map(|_| seq_of(&h.pull().unwrap()))
        .collect();
    assert_eq!(got, kept);
    assert_eq!(stat(&pool, "dropped-dropped"), 6);
    assert_eq!(stat(&reseq, "gaps"), 6);
    assert_eq!(stat(&reseq, "skipped"), 0);
}

#[test]
fn a_panicking_handler_costs_one_frame_and_the_pipeline_goes_on() {
    let (mut h, pool, reseq) = pool_harness("workers=2");
    pool.set_handler(|job| {
        if SeqMeta::read(job.buffer).unwrap().unwrap().seq == 7 {
            panic!("handler bug on frame 7");
        }
        Ok(Verdict::Keep)
    });
    for i in 0..20 {
        h.push(frame(i)).unwrap();
    }
    let got: Vec<u64> = (0..19).map(|_| seq_of(&h.pull().unwrap())).collect();
    assert_eq!(got, (0..20).filter(|&s| s != 7).collect::<Vec<_>>());
    assert_eq!(stat(&pool, "dropped-failed"), 1);
    assert_eq!(
        stat(&pool, "workers"),
        2,
        "the worker that panicked was replaced"
    );
    assert_eq!(stat(&reseq, "gaps"), 1);
}

#[test]
fn a_handler_hanging_past_timeout_becomes_a_timeout_gap() {
    let (mut h, pool, reseq) = pool_harness("workers=2 timeout=50000000");
    let gate = Gate::default();
    let g = gate.clone();
    pool.set_handler(move |job| {
        if SeqMeta::read(job.buffer).unwrap().unwrap().seq == 3 {
            g.wait();
        }
        Ok(Verdict::Keep)
    });
    let mut gaps = Vec::new();
    let probe_gaps = Arc::new(Mutex::new(Vec::new()));
    let log = probe_gaps.clone();
    pool.static_pad("src").unwrap().add_probe(
        gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            if let Some(gst::PadProbeData::Event(e)) = &info.data
                && let Some(Ok(gap)) = Gap::from_event(e)
            {
                log.lock().unwrap().push(gap);
            }
            gst::PadProbeReturn::Ok
        },
    );
    for i in 0..8 {
        h.push(frame(i)).unwrap();
    }
    let got: Vec<u64> = (0..7).map(|_| seq_of(&h.pull().unwrap())).collect();
    assert_eq!(got, vec![0, 1, 2, 4, 5, 6, 7]);
    gaps.extend(probe_gaps.lock().unwrap().iter().copied());
    assert_eq!(gaps.len(), 1);
    assert_eq!((gaps[0].seq, gaps[0].reason), (3, GapReason::Timeout));
    assert_eq!(stat(&pool, "dropped-timeout"), 1);
    gate.open();
    // The late result is discarded: nothing more reaches the resequencer.
    h.push(frame(8)).unwrap();
    assert_eq!(seq_of(&h.pull().unwrap()), 8);
    // EOS passes the pool only when everything before it is settled.
    assert!(h.push_event(gst::event::Eos::new()));
    while h.pull_event().unwrap().type_() != gst::EventType::Eos {}
    assert_eq!(stat(&reseq, "late") + stat(&reseq, "duplicates"), 0);
    assert_eq!(stat(&pool, "pushed"), 8);
}

#[test]
fn failures_are_retried_per_on_error() {
    let (mut h, pool, _) = pool_harness("workers=1 retries=2");
    pool.set_handler(|job| {
        let seq = SeqMeta::read(job.buffer).unwrap().unwrap().seq;
        // Frame 1 succeeds on its third attempt; frame 2 never does.
        match (seq, job.attempt) {
            (1, 2) => Ok(Verdict::Keep),
            (1, _) | (2, _) => Err(format!("attempt {} failed", job.attempt)),
            _ => Ok(Verdict::Keep),
        }
    });
    for i in 0..4 {
        h.push(frame(i)).unwrap();
    }
    let out: Vec<gst::Buffer> = (0..3).map(|_| h.pull().unwrap()).collect();
    assert_eq!(
        out.iter().map(|b| seq_of(b)).collect::<Vec<_>>(),
        vec![0, 1, 3]
    );
    assert_eq!(Enrichment::read(&out[1]).unwrap().unwrap().attempts, 3);
    assert_eq!(stat(&pool, "retries"), 4);
    assert_eq!(stat(&pool, "dropped-failed"), 1);
}

#[test]
fn on_error_fail_posts_an_error() {
    let (pipeline, pool) = pipeline_with_pool(
        "videotestsrc num-buffers=5 ! enrichpool name=pool on-error=fail ! fakesink",
    );
    pool.set_handler(|_| Err("model exploded".into()));
    pipeline.set_state(gst::State::Playing).unwrap();
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(30),
            &[gst::MessageType::Error, gst::MessageType::Eos],
        )
        .unwrap();
    pipeline.set_state(gst::State::Null).unwrap();
    let gst::MessageView::Error(err) = msg.view() else {
        panic!("expected an error, got {msg:?}")
    };
    assert!(
        err.error().to_string().contains("model exploded"),
        "{}",
        err.error()
    );
}

/// Parses a pipeline that has an `enrichpool name=pool`, and returns both.
fn pipeline_with_pool(description: &str) -> (gst::Pipeline, EnrichPool) {
    init();
    let pipeline = launch::pipeline(description);
    let pool = pipeline
        .by_name("pool")
        .unwrap()
        .downcast::<EnrichPool>()
        .unwrap();
    (pipeline, pool)
}

/// Records what leaves an element's src pad: frames by sequence number, events by name.
fn record(element: &impl IsA<gst::Element>) -> Arc<Mutex<Vec<String>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    element.static_pad("src").unwrap().add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            let item = match &info.data {
                Some(gst::PadProbeData::Buffer(b)) => seq_of(b).to_string(),
                Some(gst::PadProbeData::Event(e)) if Gap::from_event(e).is_some() => "gap".into(),
                Some(gst::PadProbeData::Event(e)) => e.type_().name().to_string(),
                _ => return gst::PadProbeReturn::Ok,
            };
            l.lock().unwrap().push(item);
            gst::PadProbeReturn::Ok
        },
    );
    log
}

#[test]
fn serialized_events_wait_for_earlier_frames_and_eos_for_all() {
    let (mut h, pool, _) = pool_harness("workers=4");
    pool.set_handler(|job| {
        let seq = SeqMeta::read(job.buffer).unwrap().unwrap().seq;
        std::thread::sleep(jitter(seq, 10));
        Ok(Verdict::Keep)
    });
    let log = record(&pool);
    for i in 0..4 {
        h.push(frame(i)).unwrap();
    }
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "GRAY8")
        .field("width", 8)
        .field("height", 2)
        .field("framerate", gst::Fraction::new(25, 1))
        .build();
    assert!(h.push_event(gst::event::Caps::new(&caps)));
    for i in 4..8 {
        h.push(frame(i)).unwrap();
    }
    assert!(h.push_event(gst::event::Eos::new()));
    let got: Vec<u64> = (0..8).map(|_| seq_of(&h.pull().unwrap())).collect();
    assert_eq!(got, (0..8).collect::<Vec<_>>());
    let log = log.lock().unwrap().clone();
    let at = |name: &str| log.iter().rposition(|x| x == name).unwrap();
    let caps_at = at("caps");
    for early in ["0", "1", "2", "3"] {
        assert!(at(early) < caps_at, "{early} before caps: {log:?}");
    }
    for late in ["4", "5", "6", "7"] {
        assert!(at(late) > caps_at, "{late} after caps: {log:?}");
    }
    assert_eq!(log.last().map(String::as_str), Some("eos"), "{log:?}");
}

#[test]
fn flush_discards_work_and_starts_a_new_epoch() {
    within(LIMIT, || {
        let (mut h, pool, _) = pool_harness("workers=1");
        let gate = Gate::default();
        let g = gate.clone();
        let (started_tx, started_rx) = mpsc::channel();
        let started_tx = Mutex::new(started_tx);
        pool.set_handler(move |job| {
            if SeqMeta::read(job.buffer).unwrap().unwrap().epoch == 0 {
                let _ = started_tx.lock().unwrap().send(());
                g.wait();
            }
            Ok(Verdict::Keep)
        });
        for i in 0..3 {
            h.push(frame(i)).unwrap();
        }
        started_rx.recv().unwrap();
        assert!(h.push_event(gst::event::FlushStart::new()));
        assert!(h.push_event(gst::event::FlushStop::new(true)));
        gate.open();
        assert!(
            h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
                gst::ClockTime,
            >::new()))
        );
        h.push(frame(0)).unwrap();
        h.push(frame(1)).unwrap();
        for expected in 0..2 {
            let out = h.pull().unwrap();
            let meta = SeqMeta::read(&out).unwrap().unwrap();
            assert_eq!((meta.epoch, meta.seq), (1, expected));
        }
        assert_eq!(stat(&pool, "flushed"), 3);
    });
}

#[test]
fn stopping_while_every_worker_is_busy_does_not_hang() {
    within(LIMIT, || {
        let (pipeline, pool) = pipeline_with_pool(
            "videotestsrc is-live=true ! enrichpool name=pool workers=2 ! fakesink",
        );
        let gate = Gate::default();
        let g = gate.clone();
        let (busy_tx, busy_rx) = mpsc::channel();
        let busy_tx = Mutex::new(busy_tx);
        pool.set_handler(move |_| {
            let _ = busy_tx.lock().unwrap().send(());
            g.wait();
            Ok(Verdict::Keep)
        });
        // The bus flushes at NULL: warnings are caught as they are posted.
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let seen = warnings.clone();
        pipeline.bus().unwrap().set_sync_handler(move |_, msg| {
            if let gst::MessageView::Warning(w) = msg.view() {
                seen.lock().unwrap().push(w.error().to_string());
            }
            gst::BusSyncReply::Drop
        });
        pipeline.set_state(gst::State::Playing).unwrap();
        busy_rx.recv().unwrap();
        busy_rx.recv().unwrap();
        // Both workers hang in the handler; PLAYING→NULL must still return, after the
        // 2 s grace, with a warning.
        let stopping = std::time::Instant::now();
        pipeline.set_state(gst::State::Null).unwrap();
        let took = stopping.elapsed();
        assert_eq!(pipeline.current_state(), gst::State::Null);
        assert!(took >= Duration::from_secs(2), "returned after {took:?}");
        let warnings = warnings.lock().unwrap().clone();
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("2 workers still busy 2 s after the stop")),
            "{warnings:?}"
        );
        gate.open();
    });
}

#[test]
fn two_pools_in_a_row_share_one_sequence_and_one_resequencer() {
    init();
    let mut h = Harness::new_parse(
        "enrichpool name=first workers=2 ! enrichpool name=second workers=2 ! resequencer",
    );
    h.use_testclock();
    let bin = h.element().unwrap().downcast::<gst::Bin>().unwrap();
    let first = bin
        .by_name("first")
        .unwrap()
        .downcast::<EnrichPool>()
        .unwrap();
    let second = bin
        .by_name("second")
        .unwrap()
        .downcast::<EnrichPool>()
        .unwrap();
    first.set_handler(|job| {
        let seq = SeqMeta::read(job.buffer).unwrap().unwrap().seq;
        std::thread::sleep(jitter(seq, 3));
        Ok(if seq == 4 {
            Verdict::Drop
        } else {
            Verdict::Keep
        })
    });
    second.set_handler(|job| {
        let seq = SeqMeta::read(job.buffer).unwrap().unwrap().seq;
        std::thread::sleep(jitter(seq + 1, 3));
        Ok(Verdict::Keep)
    });
    h.set_src_caps_str("video/x-raw,format=GRAY8,width=4,height=2,framerate=25/1");
    for i in 0..12 {
        h.push(frame(i)).unwrap();
    }
    // The second pool keeps the first one's numbers; the first one's gap passes through it.
    let got: Vec<u64> = (0..11).map(|_| seq_of(&h.pull().unwrap())).collect();
    assert_eq!(got, (0..12).filter(|&s| s != 4).collect::<Vec<_>>());
    assert_eq!(stat(&second, "in"), 11);
}

#[test]
fn latency_query_adds_the_processing_latency() {
    let (mut h, pool, _) = pool_harness("latency=30000000");
    h.set_upstream_latency(gst::ClockTime::from_mseconds(10));
    let mut q = gst::query::Latency::new();
    assert!(pool.static_pad("src").unwrap().query(&mut q));
    let (live, min, _) = q.result();
    assert!(live);
    assert_eq!(min, gst::ClockTime::from_mseconds(40));
}

/// `videotestsrc is-live=true ! enrichpool ! resequencer ! appsink`, to EOS.
struct LiveRun {
    seqs: Vec<u64>,
    pool: gst::Structure,
    reseq: gst::Structure,
}

fn run_live(
    n: u32,
    fps: u32,
    pool_props: &str,
    reseq_props: &str,
    handler: impl Fn(u64) + Send + Sync + 'static,
) -> LiveRun {
    let (pipeline, pool) = pipeline_with_pool(&format!(
        "videotestsrc is-live=true num-buffers={n} ! video/x-raw,width=64,height=48,framerate={fps}/1 \
         ! enrichpool name=pool {pool_props} ! resequencer name=reseq {reseq_props} \
         ! appsink name=sink sync=false"
    ));
    pool.set_handler(move |job| {
        handler(SeqMeta::read(job.buffer).unwrap().unwrap().seq);
        Ok(Verdict::Keep)
    });
    let sink = launch::app_sink(&pipeline);
    let seqs = Arc::new(Mutex::new(Vec::new()));
    let s = seqs.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                s.lock().unwrap().push(seq_of(sample.buffer().unwrap()));
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(120),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("the pipeline finishes");
    if let gst::MessageView::Error(err) = msg.view() {
        panic!("{} ({:?})", err.error(), err.debug());
    }
    let run = LiveRun {
        seqs: std::mem::take(&mut *seqs.lock().unwrap()),
        pool: pool.property("stats"),
        reseq: pipeline.by_name("reseq").unwrap().property("stats"),
    };
    pipeline.set_state(gst::State::Null).unwrap();
    run
}

fn get(s: &gst::Structure, f: &str) -> u64 {
    s.get::<u64>(f).unwrap()
}

#[test]
fn live_pipeline_with_a_random_0_to_20_ms_handler_keeps_order_and_count() {
    let n = 120;
    // 120 frames/s: a frame that sleeps 9 ms less than the one before it overtakes it.
    let run = run_live(n, 120, "workers=8", "latency=2000000000", |seq| {
        std::thread::sleep(jitter(seq, 20))
    });
    assert_eq!(run.seqs, (0..n as u64).collect::<Vec<_>>());
    assert_eq!(get(&run.pool, "pushed"), n as u64);
    assert!(
        get(&run.reseq, "reordered") > 0,
        "workers really finished out of order"
    );
}

#[test]
fn leaky_downstream_behind_a_live_source_drops_but_keeps_order_and_the_ledger() {
    // 60 frames/s into one worker that needs 40 ms a frame: most frames must be dropped.
    let n = 90;
    let run = run_live(
        n,
        60,
        "workers=1 max-size-buffers=3 leaky=downstream",
        "latency=200000000",
        |_| std::thread::sleep(Duration::from_millis(40)),
    );
    assert!(run.seqs.windows(2).all(|w| w[0] < w[1]), "{:?}", run.seqs);
    let (pool, reseq) = (&run.pool, &run.reseq);
    assert_eq!(get(pool, "in"), n as u64);
    // The ledger: every frame in is pushed or dropped, and the resequencer saw exactly that.
    assert_eq!(get(pool, "in"), get(pool, "pushed") + get(pool, "dropped"));
    assert!(get(pool, "dropped-leaked") > 0);
    assert_eq!(get(reseq, "pushed"), get(pool, "pushed"));
    assert_eq!(run.seqs.len() as u64, get(pool, "pushed"));
    assert_eq!(
        get(reseq, "gaps") + get(reseq, "skipped"),
        get(pool, "dropped")
    );
    // Bounded: never more than max-size-buffers outstanding, so latency stays bounded.
    assert!(get(pool, "max-queued") <= 3);
    assert!(get(reseq, "max-depth") <= 3);
}

#[test]
fn the_resequencer_reports_end_to_end_latency_percentiles() {
    // Every frame spends at least 15 ms in its handler, so every end-to-end latency does.
    let run = run_live(40, 60, "workers=4", "latency=2000000000", |seq| {
        std::thread::sleep(Duration::from_millis(15) + jitter(seq, 10))
    });
    assert_eq!(run.seqs.len(), 40);
    let (p50, p99, max) = (
        get(&run.reseq, "latency-p50"),
        get(&run.reseq, "latency-p99"),
        get(&run.reseq, "latency-max"),
    );
    assert!(p50 >= 15_000_000, "{}", run.reseq);
    assert!(p50 <= p99 && p99 <= max, "{}", run.reseq);
}

/// Waits (polling the element's stats, which is all there is to watch) until `done` holds.
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A handler held at a gate; each call first says it started.
fn gated(pool: &EnrichPool) -> (Gate, mpsc::Receiver<u64>) {
    let gate = Gate::default();
    let g = gate.clone();
    let (started_tx, started_rx) = mpsc::channel();
    let started_tx = Mutex::new(started_tx);
    pool.set_handler(move |job| {
        let _ = started_tx.lock().unwrap().send(seq_of(job.buffer));
        g.wait();
        Ok(Verdict::Keep)
    });
    (gate, started_rx)
}

fn sized_frame(n: u64, size: usize) -> gst::Buffer {
    let mut buffer = gst::Buffer::with_size(size).unwrap();
    let b = buffer.get_mut().unwrap();
    b.set_pts(FRAME * n);
    b.set_duration(FRAME);
    buffer
}

#[test]
fn extra_workers_start_under_load_and_retire_after_idle_timeout() {
    within(LIMIT, || {
        let (mut h, pool, _) = pool_harness("workers=1 max-workers=3 idle-timeout=50000000");
        let (gate, _started) = gated(&pool);
        for n in 0..6 {
            h.push(frame(n)).unwrap();
        }
        // More frames queued than workers, none idle: workers are added up to max-workers.
        wait_for("three workers", || stat(&pool, "workers") == 3);
        gate.open();
        let seqs: Vec<u64> = (0..6).map(|_| seq_of(&h.pull().unwrap())).collect();
        assert_eq!(seqs, (0..6).collect::<Vec<_>>());
        // Idle for idle-timeout, the extra two retire; `workers` stay.
        wait_for("back to one worker", || stat(&pool, "workers") == 1);
        h.push(frame(6)).unwrap();
        assert_eq!(seq_of(&h.pull().unwrap()), 6);
        assert_eq!(stat(&pool, "workers"), 1);
    });
}

/// With one worker held in frame 0 and `leaky=upstream` under `bound`, frames 1–5 are
/// pushed: 1, 2 and 3 are queued, 4 and 5 leak (gaps), and 0–3 come out once released.
fn frames_4_and_5_leak(bound: &str, frame: fn(u64) -> gst::Buffer) {
    let props = format!("workers=1 max-size-buffers=0 {bound} leaky=upstream");
    within(LIMIT, move || {
        let (mut h, pool, reseq) = pool_harness(&props);
        let (gate, started) = gated(&pool);
        h.push(frame(0)).unwrap();
        assert_eq!(started.recv_timeout(LIMIT).unwrap(), 0);
        for n in 1..6 {
            assert_eq!(h.push(frame(n)), Ok(gst::FlowSuccess::Ok));
        }
        assert_eq!(stat(&pool, "dropped-leaked"), 2);
        assert_eq!(stat(&pool, "queued"), 3);
        gate.open();
        let seqs: Vec<u64> = (0..4).map(|_| seq_of(&h.pull().unwrap())).collect();
        assert_eq!(seqs, vec![0, 1, 2, 3]);
        h.push_event(gst::event::Eos::new());
        wait_for("the gaps", || stat(&reseq, "gaps") == 2);
    });
}

#[test]
fn max_size_bytes_bounds_the_bytes_queued() {
    // Frames of 1000 bytes; frame 0 in flight does not count. Like `queue`, a frame is
    // taken while the bytes queued are below the bound: 1, 2 and 3 (3000 bytes); 4 and 5
    // leak.
    frames_4_and_5_leak("max-size-bytes=2500", |n| sized_frame(n, 1000));
}

#[test]
fn max_size_time_bounds_the_running_time_queued() {
    // Frames every 40 ms; frame 0 in flight does not count. Frame 4 would make 120 ms from
    // the oldest queued (frame 1, at 40 ms) and leaks, and so does 5.
    frames_4_and_5_leak("max-size-time=100000000", frame);
}

#[test]
fn a_measured_latency_posts_a_latency_message_when_it_grows() {
    within(LIMIT, || {
        // latency=-1 (the default): measured.
        let (mut h, pool, _) = pool_harness("workers=1");
        let bus = gst::Bus::new();
        h.element().unwrap().set_bus(Some(&bus));
        pool.set_handler(|job| {
            // The work itself: 5 ms a frame, then 200 ms from frame 2 on.
            let ms = if seq_of(job.buffer) < 2 { 5 } else { 200 };
            std::thread::sleep(Duration::from_millis(ms));
            Ok(Verdict::Keep)
        });
        for n in 0..2 {
            h.push(frame(n)).unwrap();
            h.pull().unwrap();
        }
        // The resequencer asked the latency with the first frame: that answer was
        // reported; nothing grew since.
        let latency = |bus: &gst::Bus| {
            std::iter::from_fn(|| bus.pop_filtered(&[gst::MessageType::Latency])).count()
        };
        let mut q = gst::query::Latency::new();
        assert!(pool.static_pad("src").unwrap().query(&mut q));
        let (_, before, _) = q.result();
        assert!(before < gst::ClockTime::from_mseconds(150), "{before}");
        latency(&bus);
        for n in 2..4 {
            h.push(frame(n)).unwrap();
            h.pull().unwrap();
        }
        // Pushed after the frame left: EOS follows it, so the report is done.
        assert!(h.push_event(gst::event::Eos::new()));
        while h.pull_event().unwrap().type_() != gst::EventType::Eos {}
        assert!(latency(&bus) >= 1, "a LATENCY message when it grew");
        let mut q = gst::query::Latency::new();
        assert!(pool.static_pad("src").unwrap().query(&mut q));
        let (_, after, _) = q.result();
        assert!(after >= gst::ClockTime::from_mseconds(200), "{after}");
    });
}

#[test]
fn a_new_segment_after_frames_starts_a_new_epoch() {
    let (mut h, _, _) = pool_harness("workers=2");
    for n in 0..2 {
        h.push(frame(n)).unwrap();
    }
    let first: Vec<(u32, u64)> = (0..2)
        .map(|_| {
            let m = SeqMeta::read(&h.pull().unwrap()).unwrap().unwrap();
            (m.epoch, m.seq)
        })
        .collect();
    assert_eq!(first, vec![(0, 0), (0, 1)]);
    let mut segment = gst::FormattedSegment::<gst::ClockTime>::new();
    segment.set_start(gst::ClockTime::from_seconds(10));
    segment.set_time(gst::ClockTime::from_seconds(10));
    assert!(h.push_event(gst::event::Segment::new(&segment)));
    h.push(frame(250)).unwrap();
    let m = SeqMeta::read(&h.pull().unwrap()).unwrap().unwrap();
    assert_eq!((m.epoch, m.seq), (1, 0));
}

#[test]
fn sticky_events_waiting_behind_frames_survive_a_flush() {
    within(LIMIT, || {
        let (mut h, pool, _) = pool_harness("workers=1");
        let (gate, started) = gated(&pool);
        h.push(frame(0)).unwrap();
        assert_eq!(started.recv_timeout(LIMIT).unwrap(), 0);
        // The tag waits behind frame 0, which is in the handler.
        flush::push_tag_then_flush(&mut h, "after the flush");
        gate.open();
        let segment = gst::FormattedSegment::<gst::ClockTime>::new();
        assert!(h.push_event(gst::event::Segment::new(&segment)));
        h.push(frame(0)).unwrap();
        let out = h.pull().unwrap();
        assert_eq!(SeqMeta::read(&out).unwrap().unwrap().epoch, 1);
        assert_eq!(flush::downstream_title(&h), "after the flush");
    });
}

#[test]
fn frames_the_overlay_cannot_draw_on_pass_unchanged_and_are_counted() {
    let (mut h, pool, _) = pool_harness("workers=2 overlay=true");
    let bus = gst::Bus::new();
    h.element().unwrap().set_bus(Some(&bus));
    // 16-bit grey: no 8-bit components to draw with.
    h.set_src_caps_str("video/x-raw,format=GRAY16_LE,width=4,height=2,framerate=25/1");
    for n in 0..3 {
        let mut buffer = sized_frame(n, 16);
        buffer
            .get_mut()
            .unwrap()
            .copy_from_slice(0, &[7u8; 16])
            .unwrap();
        h.push(buffer).unwrap();
    }
    for _ in 0..3 {
        let out = h.pull().unwrap();
        assert_eq!(out.map_readable().unwrap().as_slice(), &[7u8; 16]);
    }
    assert_eq!(stat(&pool, "overlay-skipped"), 3);
    let warnings: Vec<_> =
        std::iter::from_fn(|| bus.pop_filtered(&[gst::MessageType::Warning])).collect();
    assert_eq!(warnings.len(), 1, "one warning: {warnings:?}");
}

/// The min latency answered at `element`'s src pad.
fn min_latency(element: &impl IsA<gst::Element>) -> gst::ClockTime {
    let mut q = gst::query::Latency::new();
    assert!(element.static_pad("src").unwrap().query(&mut q));
    q.result().1
}

#[test]
fn behind_a_pool_the_resequencer_adds_no_latency_yet_still_waits_for_a_slow_frame() {
    within(LIMIT, || {
        let (mut h, pool, reseq) = pool_harness("workers=2");
        h.set_upstream_latency(gst::ClockTime::from_mseconds(20));
        let bus = gst::Bus::new();
        h.element().unwrap().set_bus(Some(&bus));
        let clock = h.testclock().unwrap();
        let gate = Gate::default();
        let g = gate.clone();
        pool.set_handler(move |job| {
            if seq_of(job.buffer) == 1 {
                g.wait();
            }
            Ok(Verdict::Keep)
        });
        let ms = gst::ClockTime::from_mseconds;
        // Nothing measured by the pool yet: its figure covers nothing, the resequencer adds
        // its own 200 ms.
        assert_eq!(min_latency(&reseq), ms(220));
        h.push(frame(0)).unwrap();
        assert_eq!(seq_of(&h.pull().unwrap()), 0);
        // The pool said so (before the push, so before the pull saw the frame): the
        // pipeline asks again.
        assert!(bus.pop_filtered(&[gst::MessageType::Latency]).is_some());
        // Measured: upstream's 20 ms and the pool's figure, nothing of the resequencer's.
        let pool_latency = min_latency(&pool);
        assert!(
            pool_latency >= ms(20) && pool_latency < ms(200),
            "{pool_latency}"
        );
        assert_eq!(min_latency(&reseq), pool_latency);
        for n in 1..4 {
            h.push(frame(n)).unwrap();
        }
        // Frame 1 hangs, 2 and 3 wait behind it. It was due at 40 ms + upstream's latency,
        // yet the resequencer gives it its 200 ms on top before skipping it: a frame slower
        // than the pool announced comes late, not never.
        let id = clock.wait_for_next_pending_id();
        let base = h.element().unwrap().base_time().unwrap();
        assert_eq!(id.time(), base + ms(40) + pool_latency + ms(200));
        gate.open();
        let seqs: Vec<u64> = (0..3).map(|_| seq_of(&h.pull().unwrap())).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(stat(&reseq, "skipped"), 0);
    });
}

#[test]
fn the_resequencer_adds_its_wait_in_pts_order_or_when_set() {
    for (props, own_ms) in [
        ("order-by=pts", 200),
        ("latency=50000000", 50),
        ("order-by=sequence", 0),
    ] {
        let (mut h, pool, reseq) = pool_harness("workers=2");
        let (name, value) = props.split_once('=').unwrap();
        reseq.set_property_from_str(name, value);
        h.set_upstream_latency(gst::ClockTime::from_mseconds(20));
        // A frame through, so that the pool's figure is measured.
        h.push(frame(0)).unwrap();
        assert_eq!(seq_of(&h.pull().unwrap()), 0);
        assert_eq!(
            min_latency(&reseq),
            min_latency(&pool) + gst::ClockTime::from_mseconds(own_ms),
            "{props}"
        );
    }
}

#[test]
fn a_measured_latency_comes_down_with_the_load_and_says_so() {
    within(LIMIT, || {
        let (mut h, pool, _) = pool_harness("workers=1");
        let bus = gst::Bus::new();
        h.element().unwrap().set_bus(Some(&bus));
        // Three slow frames (more than one outlier: they set the figure), then frames that
        // take 60% of their time: a drop of more than a quarter, though not to half.
        pool.set_handler(|job| {
            let ms = if seq_of(job.buffer) < 3 { 40 } else { 24 };
            std::thread::sleep(Duration::from_millis(ms));
            Ok(Verdict::Keep)
        });
        let figure = |pool: &EnrichPool| {
            let mut q = gst::query::Latency::new();
            assert!(pool.static_pad("src").unwrap().query(&mut q));
            q.result().1
        };
        for n in 0..3 {
            h.push(frame(n)).unwrap();
            h.pull().unwrap();
        }
        let slow = figure(&pool);
        assert!(
            slow >= gst::ClockTime::from_mseconds(50),
            "{slow}: 40 ms and a quarter"
        );
        let messages = |bus: &gst::Bus| {
            std::iter::from_fn(|| bus.pop_filtered(&[gst::MessageType::Latency])).count()
        };
        messages(&bus);
        // A window of faster frames, and one recomputation period.
        let fast = gstordered::pool::LATENCY_WINDOW + gstordered::pool::LATENCY_EVERY;
        for n in 3..3 + fast as u64 {
            h.push(frame(n)).unwrap();
            h.pull().unwrap();
        }
        assert!(h.push_event(gst::event::Eos::new()));
        while h.pull_event().unwrap().type_() != gst::EventType::Eos {}
        let now = figure(&pool);
        assert!(now < slow * 3 / 4, "{now} came down from {slow}");
        assert!(messages(&bus) >= 1, "a LATENCY message when it came down");
    });
}

#[test]
fn the_recalculation_the_first_delivery_asks_for_sees_the_pool_measured() {
    within(LIMIT, || {
        let (mut h, _pool, reseq) = pool_harness("workers=1");
        h.set_upstream_latency(gst::ClockTime::from_mseconds(20));
        // As a pipeline does on a LATENCY message: query again, at once (here on the thread
        // that posted it, before its frame went on).
        let bus = gst::Bus::new();
        let (tx, rx) = mpsc::channel();
        let r = reseq.clone();
        bus.set_sync_handler(move |_, msg| {
            if msg.type_() == gst::MessageType::Latency {
                let _ = tx.send(min_latency(&r));
            }
            gst::BusSyncReply::Drop
        });
        h.element().unwrap().set_bus(Some(&bus));
        assert_eq!(min_latency(&reseq), gst::ClockTime::from_mseconds(220));
        h.push(frame(0)).unwrap();
        assert_eq!(seq_of(&h.pull().unwrap()), 0);
        let answer = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(
            answer < gst::ClockTime::from_mseconds(200),
            "{answer}: the resequencer still adds its wait"
        );
    });
}

#[test]
fn a_restarted_pool_has_measured_nothing_and_the_resequencer_waits_again() {
    within(LIMIT, || {
        let (mut h, pool, reseq) = pool_harness("workers=1");
        h.set_upstream_latency(gst::ClockTime::from_mseconds(20));
        h.push(frame(0)).unwrap();
        assert_eq!(seq_of(&h.pull().unwrap()), 0);
        assert!(min_latency(&reseq) < gst::ClockTime::from_mseconds(200));
        // A new run: a new pool, nothing measured; its figure covers nothing yet.
        let element = h.element().unwrap();
        element.set_state(gst::State::Ready).unwrap();
        element.set_state(gst::State::Playing).unwrap();
        assert_eq!(stat(&pool, "pushed"), 0);
        assert_eq!(min_latency(&reseq), gst::ClockTime::from_mseconds(220));
    });
}
