//! The promises under ordinary GStreamer dynamics, one test per failure found by trying the
//! elements as a new user would (issue 11): flushing seeks, leaky pools behind a blocked
//! downstream, sparse frames with `timeout`, EOS after a timed-out frame, playlists through
//! `concat`, PTS order when not live, serialized queries, epoch regressions, flow errors,
//! and the PAUSED→PLAYING deadline wake. Every wait here is bounded: a regression fails the
//! test instead of hanging CI.

#[path = "common/launch.rs"]
mod launch;
#[path = "common/sync.rs"]
mod sync;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_check::Harness;
use gstordered::EnrichPool;
use gstordered::enrichpool::Verdict;
use gstordered::meta::{Gap, SeqMeta};
use sync::{Gate, within};

fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstordered::plugin_register_static().unwrap();
    });
}

const FRAME: gst::ClockTime = gst::ClockTime::from_mseconds(40);
/// The most any single step here may take on a loaded 2-core CI machine.
const BOUND: Duration = Duration::from_secs(20);
/// The most a whole test here may take.
const TEST_LIMIT: Duration = Duration::from_secs(240);

fn frame(n: u64) -> gst::Buffer {
    let mut buffer = gst::Buffer::with_size(8).unwrap();
    {
        let b = buffer.get_mut().unwrap();
        b.set_pts(FRAME * n);
        b.set_duration(FRAME);
    }
    buffer
}

fn seq_frame(epoch: u32, seq: u64, n: u64) -> gst::Buffer {
    let mut buffer = frame(n);
    SeqMeta {
        seq,
        epoch,
        ingress: 0,
    }
    .add(buffer.get_mut().unwrap());
    buffer
}

fn seq_of(buffer: &gst::BufferRef) -> (u32, u64) {
    let m = SeqMeta::read(buffer).unwrap().unwrap();
    (m.epoch, m.seq)
}

/// A pseudo-random duration in 0..max_us, fixed per sequence number.
fn jitter(seq: u64, max_us: u64) -> Duration {
    let mixed = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
    Duration::from_micros(mixed % max_us.max(1))
}

fn stat(element: &impl IsA<gst::Element>, name: &str) -> u64 {
    element
        .property::<gst::Structure>("stats")
        .get::<u64>(name)
        .unwrap()
}

fn by_name<T: IsA<gst::Element>>(bin: &impl IsA<gst::Bin>, name: &str) -> T {
    bin.by_name(name).unwrap().downcast::<T>().unwrap()
}

/// What leaves a pad, in order: frames as (epoch, seq) or PTS, events by name.
#[derive(Clone, Debug, PartialEq)]
enum Seen {
    Frame(Option<(u32, u64)>, Option<gst::ClockTime>),
    Gap(u64),
    Event(String),
}

/// Records what leaves `pad` and announces each item on a channel.
fn watch(pad: &gst::Pad) -> (Arc<Mutex<Vec<Seen>>>, mpsc::Receiver<Seen>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let l = log.clone();
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            let item = match &info.data {
                Some(gst::PadProbeData::Buffer(b)) => Seen::Frame(
                    SeqMeta::read(b).map(|m| {
                        let m = m.unwrap();
                        (m.epoch, m.seq)
                    }),
                    b.pts(),
                ),
                Some(gst::PadProbeData::Event(e)) => match Gap::from_event(e) {
                    Some(Ok(g)) => Seen::Gap(g.seq),
                    _ => Seen::Event(e.type_().name().to_string()),
                },
                _ => return gst::PadProbeReturn::Ok,
            };
            l.lock().unwrap().push(item.clone());
            let _ = tx.lock().unwrap().send(item);
            gst::PadProbeReturn::Ok
        },
    );
    (log, rx)
}

/// Waits (bounded) for the next frame on a channel from [`watch`], skipping events.
fn next_frame(rx: &mpsc::Receiver<Seen>) -> Seen {
    let until = Instant::now() + BOUND;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(f @ Seen::Frame(..)) => return f,
            Ok(_) => continue,
            Err(_) => panic!("no frame within {BOUND:?}"),
        }
    }
}

/// Runs `f` on another thread and waits at most [`BOUND`] for it.
fn bounded<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    sync::bounded(what, BOUND, f)
}

fn pool_in(bin: &impl IsA<gst::Bin>) -> EnrichPool {
    by_name(bin, "pool")
}

// 1. A flushing seek under load never stalls the pipeline.

/// `videotestsrc ! enrichpool workers=6 (0–3 ms) ! resequencer max-window=2 ! appsink` with
/// a sink that paces frames, so that workers are often in the middle of a push when a seek
/// comes; `seeks` flushing seeks one after the other. After each one a frame of the new epoch
/// must reach the sink, no frame from before it may arrive after it returned, and at the
/// sink every epoch is strictly increasing.
fn seek_loop(seeks: u32, pools: usize) {
    init();
    let chain: String = (0..pools)
        .map(|i| format!(" ! enrichpool name=pool{i} workers=6"))
        .collect();
    let pipeline = launch::pipeline(&format!(
        "videotestsrc ! video/x-raw,format=GRAY8,width=16,height=16,framerate=1000/1{chain} \
         ! resequencer name=reseq max-window=2 ! appsink name=sink sync=true max-buffers=2"
    ));
    for i in 0..pools {
        let pool: EnrichPool = by_name(&pipeline, &format!("pool{i}"));
        pool.set_handler(|job| {
            let seq = SeqMeta::read(job.buffer).unwrap().unwrap().seq;
            std::thread::sleep(jitter(seq, 3000));
            Ok(Verdict::Keep)
        });
    }
    let sink = launch::app_sink(&pipeline);
    let last = Arc::new(Mutex::new(None::<(u32, u64)>));
    let violations = Arc::new(Mutex::new(Vec::new()));
    // (epoch, frames of it) of the newest epoch seen at the sink.
    let newest = Arc::new(Mutex::new((0u64, 0u64)));
    let min_epoch = Arc::new(AtomicU64::new(0));
    let (l, v, ne, me) = (
        last.clone(),
        violations.clone(),
        newest.clone(),
        min_epoch.clone(),
    );
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let key = seq_of(sample.buffer().unwrap());
                let mut last = l.lock().unwrap();
                if last.is_some_and(|prev| key.0 == prev.0 && key.1 <= prev.1) {
                    v.lock().unwrap().push(format!("{key:?} after {:?}", *last));
                }
                let floor = me.load(Ordering::SeqCst);
                if u64::from(key.0) < floor {
                    v.lock()
                        .unwrap()
                        .push(format!("{key:?} after the seek to epoch {floor} returned"));
                }
                *last = Some(key);
                let mut newest = ne.lock().unwrap();
                match u64::from(key.0).cmp(&newest.0) {
                    std::cmp::Ordering::Greater => *newest = (u64::from(key.0), 1),
                    std::cmp::Ordering::Equal => newest.1 += 1,
                    std::cmp::Ordering::Less => {}
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    // Waits until `frames` frames of `epoch` reached the sink: the pipeline is in its steady
    // state (workers busy, the window full, the sink pacing) when the next seek comes.
    let wait_epoch = |epoch: u64, frames: u64, what: &str| {
        let until = Instant::now() + BOUND;
        loop {
            let (e, n) = *newest.lock().unwrap();
            if e > epoch || (e == epoch && n >= frames) {
                return;
            }
            if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
                panic!("{what}: {msg:?}");
            }
            assert!(
                Instant::now() < until,
                "{what}: {n} frames of epoch {e}, waiting for {frames} of epoch {epoch} \
                 (stalled); pool stats {:?}",
                (0..pools)
                    .map(|i| pipeline
                        .by_name(&format!("pool{i}"))
                        .unwrap()
                        .property::<gst::Structure>("stats")
                        .to_string())
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    };
    wait_epoch(0, 10, "the first frames");
    for i in 1..=seeks {
        let position = gst::ClockTime::from_mseconds(u64::from(i % 50) * 7);
        assert!(
            pipeline
                .seek_simple(gst::SeekFlags::FLUSH, position)
                .is_ok(),
            "seek {i}"
        );
        // Every flush bumps the first pool's epoch; chained pools keep its numbers.
        min_epoch.store(u64::from(i), Ordering::SeqCst);
        wait_epoch(
            u64::from(i),
            1 + u64::from(i) * 7_919 % 12,
            &format!("seek {i}"),
        );
    }
    pipeline.send_event(gst::event::Eos::new());
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(BOUND.as_secs()),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("EOS after the last seek");
    assert_eq!(msg.type_(), gst::MessageType::Eos, "{msg:?}");
    pipeline.set_state(gst::State::Null).unwrap();
    let violations = violations.lock().unwrap();
    assert!(violations.is_empty(), "at the sink: {violations:?}");
}

#[test]
fn a_thousand_flushing_seeks_under_load_never_stall() {
    // `ORDERED_SOAK_SEEKS` runs more (the soak).
    let seeks = std::env::var("ORDERED_SOAK_SEEKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let limit = TEST_LIMIT.max(Duration::from_millis(u64::from(seeks) * 200));
    within(limit, move || {
        seek_loop(seeks, 1);
    });
}

#[test]
fn flushing_seeks_through_two_chained_pools_never_stall() {
    within(TEST_LIMIT, || {
        seek_loop(200, 2);
    });
}

// 2. A leaky pool never blocks its upstream behind a blocked downstream.

fn leaky_pool_does_not_block_upstream(leaky: &str) {
    init();
    let mut h = Harness::new_parse(&format!(
        "enrichpool name=pool workers=2 max-size-buffers=4 leaky={leaky}"
    ));
    h.set_src_caps_str("video/x-raw,format=GRAY8,width=4,height=2,framerate=25/1");
    let bin = h.element().unwrap().downcast::<gst::Bin>().unwrap();
    let pool = pool_in(&bin);
    // Downstream takes nothing: the first push blocks until the probe goes.
    let src = pool.static_pad("src").unwrap();
    let blocked = Gate::default();
    let b = blocked.clone();
    let (pushing_tx, pushing_rx) = mpsc::channel();
    let pushing_tx = Mutex::new(pushing_tx);
    let probe = src
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            let _ = pushing_tx.lock().unwrap().send(());
            b.wait();
            gst::PadProbeReturn::Ok
        })
        .unwrap();
    let upstream = h.srcpad().unwrap();
    let results = bounded("pushing 40 frames into a leaky pool", move || {
        (0..40).map(|n| upstream.push(frame(n))).collect::<Vec<_>>()
    });
    pushing_rx.recv_timeout(BOUND).unwrap();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(stat(&pool, "in"), 40);
    assert!(stat(&pool, "dropped-leaked") > 0);
    // Downstream comes back: everything is pushed or named in a gap.
    src.remove_probe(probe);
    blocked.open();
    let until = Instant::now() + BOUND;
    while stat(&pool, "pushed") + stat(&pool, "dropped") < 40 {
        assert!(
            Instant::now() < until,
            "{}",
            pool.property::<gst::Structure>("stats")
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut frames = 0;
    let mut gaps = 0;
    let until = Instant::now() + BOUND;
    while frames + gaps < 40 {
        assert!(
            Instant::now() < until,
            "{frames} frames and {gaps} gaps of 40"
        );
        if h.try_pull().is_some() {
            frames += 1;
        }
        while let Some(e) = h.try_pull_event() {
            if let Some(Ok(g)) = Gap::from_event(&e) {
                gaps += g.count;
            }
        }
        std::thread::yield_now();
    }
    assert_eq!(frames, stat(&pool, "pushed"));
    assert_eq!(frames + gaps, 40, "the ledger balances at the src pad");
}

#[test]
fn leaky_downstream_pool_never_blocks_upstream_behind_a_blocked_downstream() {
    within(TEST_LIMIT, || {
        leaky_pool_does_not_block_upstream("downstream");
    });
}

#[test]
fn leaky_upstream_pool_never_blocks_upstream_behind_a_blocked_downstream() {
    within(TEST_LIMIT, || {
        leaky_pool_does_not_block_upstream("upstream");
    });
}

// 3. `timeout` does not make sparse frames wait for `idle-timeout`.

#[test]
fn a_sparse_frame_with_timeout_set_is_processed_at_once() {
    within(TEST_LIMIT, || {
        init();
        let mut h = Harness::new_parse(
            "enrichpool name=pool workers=1 timeout=1000000000 idle-timeout=600000000000",
        );
        h.set_src_caps_str("video/x-raw,format=GRAY8,width=4,height=2,framerate=2/1");
        let bin = h.element().unwrap().downcast::<gst::Bin>().unwrap();
        let pool = pool_in(&bin);
        let (_, rx) = watch(&pool.static_pad("src").unwrap());
        for n in 0..20 {
            h.push(frame(n)).unwrap();
            // With the watchdog woken instead of the worker, this waits 600 s.
            next_frame(&rx);
        }
    });
}

// 4. EOS never overtakes the gap of an earlier timed-out frame.

#[test]
fn eos_leaves_after_the_gap_of_a_timed_out_frame() {
    within(TEST_LIMIT, || {
        init();
        for round in 0..10 {
            let mut h = Harness::new_parse("enrichpool name=pool workers=2 timeout=30000000");
            h.set_src_caps_str("video/x-raw,format=GRAY8,width=4,height=2,framerate=25/1");
            let bin = h.element().unwrap().downcast::<gst::Bin>().unwrap();
            let pool = pool_in(&bin);
            let gate = Gate::default();
            let g = gate.clone();
            pool.set_handler(move |job| {
                if SeqMeta::read(job.buffer).unwrap().unwrap().seq == 1 {
                    g.wait();
                }
                Ok(Verdict::Keep)
            });
            let (log, _rx) = watch(&pool.static_pad("src").unwrap());
            for n in 0..3 {
                h.push(frame(n)).unwrap();
            }
            let upstream = h.srcpad().unwrap();
            assert!(bounded("EOS", move || upstream.push_event(gst::event::Eos::new())));
            let until = Instant::now() + BOUND;
            while !log.lock().unwrap().contains(&Seen::Event("eos".into())) {
                assert!(Instant::now() < until, "round {round}: no EOS");
                std::thread::sleep(Duration::from_millis(1));
            }
            gate.open();
            let log = log.lock().unwrap().clone();
            let at = |s: &Seen| log.iter().position(|x| x == s);
            let eos = at(&Seen::Event("eos".into())).unwrap();
            let gap = at(&Seen::Gap(1)).unwrap_or_else(|| panic!("round {round}: no gap: {log:?}"));
            assert!(
                gap < eos,
                "round {round}: the gap of frame 1 after EOS: {log:?}"
            );
        }
    });
}

// 5. `order-by=pts` keeps a playlist's second half.

#[test]
fn pts_order_keeps_both_halves_of_a_concat_playlist() {
    within(TEST_LIMIT, || {
        init();
        let pipeline = launch::pipeline(
            "concat name=c ! resequencer name=reseq order-by=pts ! appsink name=sink sync=false \
             videotestsrc num-buffers=30 ! video/x-raw,width=16,height=16,framerate=30/1 ! c. \
             videotestsrc num-buffers=30 ! video/x-raw,width=16,height=16,framerate=30/1 ! c.",
        );
        let sink = launch::app_sink(&pipeline);
        let count = Arc::new(AtomicU64::new(0));
        let c = count.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    c.fetch_add(1, Ordering::SeqCst);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        pipeline.set_state(gst::State::Playing).unwrap();
        let msg = pipeline
            .bus()
            .unwrap()
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(BOUND.as_secs()),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            )
            .expect("EOS");
        assert_eq!(msg.type_(), gst::MessageType::Eos, "{msg:?}");
        let reseq = pipeline.by_name("reseq").unwrap();
        let stats = reseq.property::<gst::Structure>("stats");
        pipeline.set_state(gst::State::Null).unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 60, "{stats}");
        assert_eq!(stats.get::<u64>("duplicates").unwrap(), 0, "{stats}");
    });
}

// 6. `order-by=pts`, not live: in-order frames leave at once.

#[test]
fn pts_order_not_live_pushes_in_order_frames_at_once() {
    within(TEST_LIMIT, || {
        init();
        let mut h = Harness::new("resequencer");
        h.element()
            .unwrap()
            .set_property_from_str("order-by", "pts");
        h.set_src_caps_str("video/x-raw,format=GRAY8,width=4,height=4,framerate=25/1");
        let (_, rx) = watch(&h.element().unwrap().static_pad("src").unwrap());
        for n in 0..5 {
            h.push(frame(n)).unwrap();
            assert_eq!(next_frame(&rx), Seen::Frame(None, Some(FRAME * n)));
        }
        // Without a duration, the framerate of the caps tells where the next frame starts.
        for n in 5..8 {
            let mut b = frame(n);
            b.get_mut().unwrap().set_duration(gst::ClockTime::NONE);
            h.push(b).unwrap();
            assert_eq!(next_frame(&rx), Seen::Frame(None, Some(FRAME * n)));
        }
    });
}

// 7. Serialized queries wait for the frames before them; ALLOCATION passes through.

#[test]
fn drain_on_the_resequencer_pushes_what_it_holds_first() {
    within(TEST_LIMIT, || {
        init();
        let mut h = Harness::new("resequencer");
        h.element()
            .unwrap()
            .set_property("latency", 3_600_000_000_000u64);
        h.set_src_caps_str("video/x-raw,format=GRAY8,width=4,height=4,framerate=25/1");
        let (log, _rx) = watch(&h.element().unwrap().static_pad("src").unwrap());
        h.push(seq_frame(0, 1, 1)).unwrap();
        h.push(seq_frame(0, 2, 2)).unwrap();
        let upstream = h.srcpad().unwrap();
        assert!(bounded("DRAIN", move || {
            upstream.peer_query(&mut gst::query::Drain::new())
        }));
        let frames: Vec<_> = log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|s| match s {
                Seen::Frame(k, _) => *k,
                _ => None,
            })
            .collect();
        assert_eq!(
            frames,
            vec![(0, 1), (0, 2)],
            "held frames leave before DRAIN returns"
        );
    });
}

#[test]
fn drain_on_the_pool_waits_for_frames_in_flight() {
    within(TEST_LIMIT, || {
        init();
        let mut h = Harness::new_parse("enrichpool name=pool workers=2");
        h.set_src_caps_str("video/x-raw,format=GRAY8,width=4,height=2,framerate=25/1");
        let bin = h.element().unwrap().downcast::<gst::Bin>().unwrap();
        let pool = pool_in(&bin);
        pool.set_handler(|_| {
            std::thread::sleep(Duration::from_millis(50));
            Ok(Verdict::Keep)
        });
        let (log, _rx) = watch(&pool.static_pad("src").unwrap());
        h.push(frame(0)).unwrap();
        h.push(frame(1)).unwrap();
        let upstream = h.srcpad().unwrap();
        assert!(bounded("DRAIN", move || {
            upstream.peer_query(&mut gst::query::Drain::new())
        }));
        let frames = log
            .lock()
            .unwrap()
            .iter()
            .filter(|s| matches!(s, Seen::Frame(..)))
            .count();
        assert_eq!(frames, 2, "both frames left before DRAIN returned");
    });
}

fn allocation_passes_through(description: &str) {
    init();
    let mut h = Harness::new_parse(description);
    h.set_src_caps_str("video/x-raw,format=GRAY8,width=4,height=2,framerate=25/1");
    let seen = Arc::new(AtomicBool::new(false));
    let s = seen.clone();
    h.sinkpad()
        .unwrap()
        .add_probe(gst::PadProbeType::QUERY_DOWNSTREAM, move |_, info| {
            if let Some(q) = info.query()
                && q.type_() == gst::QueryType::Allocation
            {
                s.store(true, Ordering::SeqCst);
            }
            gst::PadProbeReturn::Ok
        });
    let caps =
        gst::Caps::from_str("video/x-raw,format=GRAY8,width=4,height=2,framerate=25/1").unwrap();
    let upstream = h.srcpad().unwrap();
    bounded("ALLOCATION", move || {
        upstream.peer_query(&mut gst::query::Allocation::new(Some(&caps), true))
    });
    assert!(
        seen.load(Ordering::SeqCst),
        "{description}: ALLOCATION reached downstream"
    );
}

use std::str::FromStr;

#[test]
fn allocation_queries_pass_through_the_pool() {
    within(TEST_LIMIT, || {
        allocation_passes_through("enrichpool workers=2");
    });
}

#[test]
fn allocation_queries_pass_through_the_resequencer() {
    within(TEST_LIMIT, || {
        allocation_passes_through("resequencer");
    });
}

// 9. A pool restarted alone: its epoch going back starts a new stream.

#[test]
fn an_epoch_going_back_is_a_new_stream_not_late_frames() {
    within(TEST_LIMIT, || {
        init();
        let mut h = Harness::new("resequencer");
        h.set_src_caps_str("video/x-raw,format=GRAY8,width=4,height=4,framerate=25/1");
        for seq in 0..4 {
            h.push(seq_frame(3, seq, seq)).unwrap();
        }
        for seq in 0..4 {
            h.push(seq_frame(0, seq, 4 + seq)).unwrap();
        }
        assert!(h.push_event(gst::event::Eos::new()));
        let got: Vec<_> = (0..8).map(|_| seq_of(&h.pull().unwrap())).collect();
        assert_eq!(
            got,
            vec![
                (3, 0),
                (3, 1),
                (3, 2),
                (3, 3),
                (0, 0),
                (0, 1),
                (0, 2),
                (0, 3)
            ]
        );
        assert_eq!(stat(&h.element().unwrap(), "late"), 0);
    });
}

#[test]
fn a_sequence_restarting_after_a_new_segment_is_a_new_stream() {
    within(TEST_LIMIT, || {
        init();
        let mut h = Harness::new("resequencer");
        h.set_src_caps_str("video/x-raw,format=GRAY8,width=4,height=4,framerate=25/1");
        for seq in 0..4 {
            h.push(seq_frame(0, seq, seq)).unwrap();
        }
        let mut segment = gst::FormattedSegment::<gst::ClockTime>::new();
        segment.set_base(FRAME * 4);
        assert!(h.push_event(gst::event::Segment::new(&segment)));
        for seq in 0..4 {
            h.push(seq_frame(0, seq, seq)).unwrap();
        }
        assert!(h.push_event(gst::event::Eos::new()));
        let got: Vec<_> = (0..8).map(|_| seq_of(&h.pull().unwrap()).1).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 0, 1, 2, 3]);
    });
}

#[test]
fn a_new_stream_after_eos_flows_without_a_flush() {
    within(TEST_LIMIT, || {
        init();
        let mut h = Harness::new("resequencer");
        h.set_src_caps_str("video/x-raw,format=GRAY8,width=4,height=4,framerate=25/1");
        h.push(seq_frame(0, 0, 0)).unwrap();
        h.push(seq_frame(0, 1, 1)).unwrap();
        assert!(h.push_event(gst::event::Eos::new()));
        assert_eq!(seq_of(&h.pull().unwrap()), (0, 0));
        assert_eq!(seq_of(&h.pull().unwrap()), (0, 1));
        let until = Instant::now() + BOUND;
        while !std::iter::from_fn(|| h.try_pull_event()).any(|e| e.type_() == gst::EventType::Eos) {
            assert!(Instant::now() < until, "no EOS");
            std::thread::sleep(Duration::from_millis(1));
        }
        // The next item of a playlist, through the same pads.
        assert!(h.push_event(gst::event::StreamStart::new("second")));
        assert!(
            h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
                gst::ClockTime,
            >::new()))
        );
        h.push(seq_frame(0, 1, 3)).unwrap();
        h.push(seq_frame(0, 0, 2)).unwrap();
        assert_eq!(seq_of(&h.pull().unwrap()), (0, 0));
        assert_eq!(seq_of(&h.pull().unwrap()), (0, 1));
    });
}

// 9. More workers than the resequencer's window: frames in flight are not skipped.

#[test]
fn a_window_smaller_than_the_pool_grows_to_it_with_a_warning() {
    within(TEST_LIMIT, || {
        init();
        let pipeline = launch::pipeline(
            "videotestsrc num-buffers=200 ! video/x-raw,format=GRAY8,width=8,height=8 \
             ! enrichpool name=pool workers=12 ! resequencer name=reseq max-window=4 \
             ! fakesink sync=false",
        );
        let pool = pool_in(&pipeline);
        pool.set_handler(|job| {
            let seq = SeqMeta::read(job.buffer).unwrap().unwrap().seq;
            // Frame 12k waits for the other eleven of its batch to finish.
            std::thread::sleep(if seq.is_multiple_of(12) {
                Duration::from_millis(6)
            } else {
                jitter(seq, 1000)
            });
            Ok(Verdict::Keep)
        });
        pipeline.set_state(gst::State::Playing).unwrap();
        let bus = pipeline.bus().unwrap();
        let mut warned = false;
        loop {
            let msg = bus
                .timed_pop_filtered(
                    gst::ClockTime::from_seconds(BOUND.as_secs()),
                    &[
                        gst::MessageType::Eos,
                        gst::MessageType::Error,
                        gst::MessageType::Warning,
                    ],
                )
                .expect("EOS");
            match msg.view() {
                gst::MessageView::Warning(w) => {
                    warned |= w.error().to_string().contains("max-window");
                }
                gst::MessageView::Eos(_) => break,
                _ => panic!("{msg:?}"),
            }
        }
        let reseq = pipeline.by_name("reseq").unwrap();
        let stats = reseq.property::<gst::Structure>("stats");
        pipeline.set_state(gst::State::Null).unwrap();
        assert!(warned, "a warning names max-window");
        assert_eq!(stats.get::<u64>("pushed").unwrap(), 200, "{stats}");
        assert_eq!(stats.get::<u64>("skipped").unwrap(), 0, "{stats}");
    });
}

// 9. The resequencer posts flow errors once, without its lock, only when upstream will not
// see them; NOT_LINKED is returned, not posted.

/// A resequencer whose src pad feeds a pad that answers every buffer with `answer`; its bus
/// reads `stats` from a sync handler (which deadlocks if the element posts under its lock).
fn resequencer_into(answer: gst::FlowError) -> (gst::Element, gst::Pad, Arc<Mutex<Vec<String>>>) {
    init();
    let reseq = gst::ElementFactory::make("resequencer").build().unwrap();
    let sink = gst::Pad::builder(gst::PadDirection::Sink)
        .chain_function(move |_, _, _| Err(answer))
        .event_function(|_, _, _| true)
        .build();
    sink.set_active(true).unwrap();
    let upstream = gst::Pad::builder(gst::PadDirection::Src).build();
    upstream.link(&reseq.static_pad("sink").unwrap()).unwrap();
    upstream.set_active(true).unwrap();
    if answer != gst::FlowError::NotLinked {
        reseq.static_pad("src").unwrap().link(&sink).unwrap();
    }
    let bus = gst::Bus::new();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let (e, r) = (errors.clone(), reseq.downgrade());
    bus.set_sync_handler(move |_, msg| {
        if let gst::MessageView::Error(err) = msg.view() {
            if let Some(reseq) = r.upgrade() {
                let _ = reseq.property::<gst::Structure>("stats");
            }
            e.lock().unwrap().push(err.error().to_string());
        }
        gst::BusSyncReply::Drop
    });
    reseq.set_bus(Some(&bus));
    reseq.set_state(gst::State::Playing).unwrap();
    upstream.push_event(gst::event::StreamStart::new("s"));
    upstream.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
        gst::ClockTime,
    >::new()));
    (reseq, upstream, errors)
}

#[test]
fn not_linked_is_returned_upstream_not_posted() {
    within(TEST_LIMIT, || {
        let (reseq, upstream, errors) = resequencer_into(gst::FlowError::NotLinked);
        let up = upstream.clone();
        let results = bounded("pushing into an unlinked resequencer", move || {
            (0..3)
                .map(|n| up.push(seq_frame(0, n, n)))
                .collect::<Vec<_>>()
        });
        let until = Instant::now() + BOUND;
        let mut last = results.last().copied().unwrap();
        while last != Err(gst::FlowError::NotLinked) {
            assert!(Instant::now() < until, "{results:?}");
            last = upstream.push(seq_frame(0, 9, 9));
        }
        assert!(
            errors.lock().unwrap().is_empty(),
            "{:?}",
            errors.lock().unwrap()
        );
        reseq.set_state(gst::State::Null).unwrap();
    });
}

#[test]
fn a_flow_error_after_eos_is_posted_once_without_deadlock() {
    within(TEST_LIMIT, || {
        let (reseq, upstream, errors) = resequencer_into(gst::FlowError::Error);
        let up = upstream.clone();
        bounded("EOS into a resequencer whose downstream fails", move || {
            up.push(seq_frame(0, 0, 0)).ok();
            up.push_event(gst::event::Eos::new())
        });
        let until = Instant::now() + BOUND;
        while errors.lock().unwrap().is_empty() {
            assert!(Instant::now() < until, "no error posted");
            std::thread::sleep(Duration::from_millis(1));
        }
        let r = reseq.clone();
        bounded("stopping", move || r.set_state(gst::State::Null)).unwrap();
        assert_eq!(errors.lock().unwrap().len(), 1);
    });
}

#[test]
fn a_flow_error_in_the_pool_after_eos_is_posted_once() {
    within(TEST_LIMIT, || {
        init();
        for round in 0..10 {
            let pool = gst::ElementFactory::make("enrichpool").build().unwrap();
            let sink = gst::Pad::builder(gst::PadDirection::Sink)
                .chain_function(|_, _, _| Err(gst::FlowError::Error))
                .event_function(|_, _, _| true)
                .build();
            sink.set_active(true).unwrap();
            pool.static_pad("src").unwrap().link(&sink).unwrap();
            let upstream = gst::Pad::builder(gst::PadDirection::Src).build();
            upstream.link(&pool.static_pad("sink").unwrap()).unwrap();
            upstream.set_active(true).unwrap();
            let bus = gst::Bus::new();
            pool.set_bus(Some(&bus));
            pool.set_state(gst::State::Playing).unwrap();
            upstream.push_event(gst::event::StreamStart::new("s"));
            upstream.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
                gst::ClockTime,
            >::new()));
            // The frame's push fails before or after EOS arrives: either way, one error.
            let _ = upstream.push(frame(0));
            let _ = upstream.push_event(gst::event::Eos::new());
            let error = bus.timed_pop_filtered(
                gst::ClockTime::from_seconds(BOUND.as_secs()),
                &[gst::MessageType::Error],
            );
            assert!(error.is_some(), "round {round}: no error posted");
            pool.set_state(gst::State::Null).unwrap();
            assert!(
                bus.pop_filtered(&[gst::MessageType::Error]).is_none(),
                "round {round}: posted twice"
            );
        }
    });
}

// 9. PAUSED→PLAYING: a deadline is waited for on the clock once the element plays.

#[test]
fn going_to_playing_schedules_the_pending_deadline() {
    within(TEST_LIMIT, || {
        init();
        let mut h = Harness::new("resequencer");
        h.element().unwrap().set_property("latency", 100_000_000u64);
        h.use_testclock();
        h.set_upstream_latency(gst::ClockTime::from_mseconds(10));
        h.set_src_caps_str("video/x-raw,format=GRAY8,width=4,height=4,framerate=25/1");
        let element = h.element().unwrap();
        element.set_state(gst::State::Paused).unwrap();
        h.push(seq_frame(0, 0, 0)).unwrap();
        h.push(seq_frame(0, 2, 2)).unwrap();
        element.set_state(gst::State::Playing).unwrap();
        let clock = h.testclock().unwrap();
        assert!(
            clock.timed_wait_for_multiple_pending_ids(1, 10_000).0,
            "the task waits for frame 1's deadline on the clock"
        );
    });
}

// 9. The LATENCY answer: what delivered frames took recently (queue wait included), not a
// hung frame that timed out long ago.

#[test]
fn the_latency_answer_ignores_a_timed_out_frame_and_comes_down() {
    within(TEST_LIMIT, || {
        init();
        let mut h = Harness::new_parse("enrichpool name=pool workers=1 timeout=50000000");
        h.set_src_caps_str("video/x-raw,format=GRAY8,width=4,height=2,framerate=25/1");
        let bin = h.element().unwrap().downcast::<gst::Bin>().unwrap();
        let pool = pool_in(&bin);
        let gate = Gate::default();
        let slow = Arc::new(AtomicBool::new(true));
        let (g, s) = (gate.clone(), slow.clone());
        pool.set_handler(move |job| {
            let seq = SeqMeta::read(job.buffer).unwrap().unwrap().seq;
            if seq == 0 {
                g.wait();
            } else if s.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(30));
            }
            Ok(Verdict::Keep)
        });
        let (_, rx) = watch(&pool.static_pad("src").unwrap());
        let latency = |pool: &EnrichPool| {
            let mut q = gst::query::Latency::new();
            assert!(pool.static_pad("src").unwrap().query(&mut q));
            q.result().1
        };
        // Frame 0 hangs past `timeout` (a gap), and stays hung a while longer.
        h.push(frame(0)).unwrap();
        let until = Instant::now() + BOUND;
        while stat(&pool, "dropped-timeout") == 0 {
            assert!(Instant::now() < until);
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(100));
        gate.open();
        // Slow frames: 30 ms each.
        for n in 1..4 {
            h.push(frame(n)).unwrap();
            next_frame(&rx);
        }
        let slow_latency = latency(&pool);
        assert!(
            slow_latency >= gst::ClockTime::from_mseconds(30)
                && slow_latency < gst::ClockTime::from_mseconds(150),
            "{slow_latency}: the slow frames, not the 150 ms hang"
        );
        // Fast frames for a whole window (and one recomputation period): the figure comes
        // down.
        slow.store(false, Ordering::SeqCst);
        let window = gstordered::pool::LATENCY_WINDOW + gstordered::pool::LATENCY_EVERY;
        for n in 4..4 + window as u64 {
            h.push(frame(n)).unwrap();
            next_frame(&rx);
        }
        let fast_latency = latency(&pool);
        assert!(
            fast_latency < slow_latency,
            "{fast_latency} comes down from {slow_latency}"
        );
    });
}

#[test]
fn a_query_given_up_on_a_flow_error_does_not_stall_the_stream_after_reconfigure() {
    within(TEST_LIMIT, || {
        // Unlinked: the resequencer's push fails with NOT_LINKED, which reaches upstream.
        let (reseq, upstream, _) = resequencer_into(gst::FlowError::NotLinked);
        let mut n = 0;
        let until = Instant::now() + BOUND;
        while upstream.push(seq_frame(0, n, n)) != Err(gst::FlowError::NotLinked) {
            assert!(Instant::now() < until, "NOT_LINKED never came back");
            n += 1;
        }
        // A serialized query now gets no answer (the flow failed); it must not stay behind
        // in the stream for the task to wait on later.
        let mut drain = gst::query::Drain::new();
        assert!(!upstream.peer_query(&mut drain));
        // A sink is linked; its RECONFIGURE restarts the resequencer.
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let sink = gst::Pad::builder(gst::PadDirection::Sink)
            .chain_function(move |_, _, buffer| {
                let _ = tx.lock().unwrap().send(seq_of(&buffer).1);
                Ok(gst::FlowSuccess::Ok)
            })
            .event_function(|_, _, _| true)
            .query_function(|_, _, _| false)
            .build();
        sink.set_active(true).unwrap();
        reseq.static_pad("src").unwrap().link(&sink).unwrap();
        assert!(sink.push_event(gst::event::Reconfigure::new()));
        // The frames after it flow (EOS moves past the frame NOT_LINKED cost, if any).
        let last = n + 5;
        for m in n + 1..=last {
            let _ = upstream.push(seq_frame(0, m, m));
        }
        upstream.push_event(gst::event::Eos::new());
        let until = Instant::now() + BOUND;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(seq) if seq == last => break,
                Ok(_) => {}
                Err(_) => panic!("frame {last} never came out after the RECONFIGURE"),
            }
        }
        reseq.set_state(gst::State::Null).unwrap();
    });
}
