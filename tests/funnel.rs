//! The resequencer's request pads (`sink_%u`): an ordered funnel after `roundrobin` into
//! branches of different speeds. Every frame out once, in order, none skipped when none is
//! lost, live or not, in PTS and in sequence order; a branch that loses frames costs exactly
//! those, counted as skips; the fast pads wait for the slow one (backpressure, not loss);
//! EOS once every pad is at EOS; a pad released while running; sticky events per pad.

#[path = "common/harness.rs"]
mod harness;
#[path = "common/launch.rs"]
mod launch;
#[path = "common/misbehave.rs"]
mod misbehave;

use std::time::Duration;

use gst::prelude::*;
use gst_check::Harness;
use harness::{init, pull_within, stat, wait_for};

/// `roundrobin` into three branches — 3 ms a frame, none, 0.5 ms — back into the
/// resequencer's request pads. `stamp`: what stands before roundrobin; `branch0`: extra
/// elements in the first branch.
fn branches(src: &str, stamp: &str, branch0: &str, reseq: &str) -> launch::Run {
    init();
    misbehave::register();
    launch::run(
        &format!(
            "{src} ! {stamp} roundrobin name=rr \
             rr.src_0 ! queue ! identity sleep-time=3000 {branch0} ! r.sink_0 \
             rr.src_1 ! queue ! r.sink_1 \
             rr.src_2 ! queue ! identity sleep-time=500 ! r.sink_2 \
             resequencer name=r {reseq} ! appsink name=sink sync=false"
        ),
        Duration::from_secs(120),
        |_| {},
    )
}

fn offsets(run: &launch::Run) -> Vec<u64> {
    run.samples
        .iter()
        .map(|s| s.buffer().unwrap().offset())
        .collect()
}

fn resequencer(run: &launch::Run) -> gst::Element {
    run.pipeline.by_name("r").unwrap()
}

const NOT_LIVE: &str = "videotestsrc num-buffers=200 ! video/x-raw,width=64,height=48";
const LIVE: &str =
    "videotestsrc is-live=true num-buffers=60 ! video/x-raw,width=64,height=48,framerate=60/1";
/// Stamps sequence metas before the split, for `order-by=sequence`.
const STAMP: &str = "enrichpool workers=1 !";

#[test]
fn branches_of_different_speeds_not_live_every_frame_in_order_in_both_orders() {
    for (stamp, order) in [("", "pts"), (STAMP, "sequence")] {
        // A small window: in the old design (`funnel ! resequencer`), a full window let the
        // fast branches' frames out past the slow branch's, skipping those.
        let r = branches(
            NOT_LIVE,
            stamp,
            "",
            &format!("order-by={order} max-window=4"),
        );
        assert_eq!(
            offsets(&r),
            (0..200).collect::<Vec<_>>(),
            "order-by={order}"
        );
        let reseq = resequencer(&r);
        assert_eq!(stat(&reseq, "skipped"), 0, "order-by={order}");
        assert_eq!(stat(&reseq, "pushed"), 200, "order-by={order}");
    }
}

#[test]
fn branches_of_different_speeds_live_every_frame_in_order_in_both_orders() {
    for (stamp, order) in [("", "pts"), (STAMP, "sequence")] {
        let r = branches(LIVE, stamp, "", &format!("order-by={order}"));
        assert_eq!(offsets(&r), (0..60).collect::<Vec<_>>(), "order-by={order}");
        assert_eq!(stat(&resequencer(&r), "skipped"), 0, "order-by={order}");
    }
}

#[test]
fn a_branch_that_drops_frames_costs_exactly_those_counted_as_skips() {
    // The first branch gets frames 0, 3, 6, …; it drops those whose number is 6 mod 7:
    // 6, 27, 48, … (6 mod 21), ten of 200.
    let lost: Vec<u64> = (0..200).filter(|n| n % 21 == 6).collect();
    assert_eq!(lost.len(), 10);
    let expected: Vec<u64> = (0..200).filter(|n| !lost.contains(n)).collect();
    for (stamp, order) in [("", "pts"), (STAMP, "sequence")] {
        let r = branches(
            NOT_LIVE,
            stamp,
            "! orderedmisbehave mode=nothing every=7",
            &format!("order-by={order} max-window=4"),
        );
        assert_eq!(offsets(&r), expected, "order-by={order}");
        let reseq = resequencer(&r);
        assert_eq!(stat(&reseq, "skipped"), 10, "order-by={order}");
        assert_eq!(stat(&reseq, "pushed"), 190, "order-by={order}");
    }
}

const CAPS: &str = "video/x-raw,format=GRAY8,width=4,height=4,framerate=100/1";

/// The resequencer with request pads `sink_0` (and the src pad) and `sink_1`, PTS order.
fn two_pads(props: &str) -> (Harness, Harness) {
    init();
    let mut h0 = Harness::with_padnames("resequencer", Some("sink_0"), Some("src"));
    let element = h0.element().unwrap();
    for prop in props.split_whitespace() {
        let (k, v) = prop.split_once('=').unwrap();
        element.set_property_from_str(k, v);
    }
    // Not live, a pad waits for room this long before the bound is lifted: far longer than
    // any step of these tests.
    element.set_property("latency", 60_000_000_000u64);
    let mut h1 = Harness::with_element(&element, Some("sink_1"), None);
    // Not live (a harness answers the LATENCY query as a live source by default).
    h0.set_live(false);
    h1.set_live(false);
    h0.set_src_caps_str(CAPS);
    h1.set_src_caps_str(CAPS);
    (h0, h1)
}

/// Frame `n` of a 100 fps stream (PTS n × 10 ms).
fn frame(n: u64) -> gst::Buffer {
    let mut b = gst::Buffer::from_mut_slice(vec![n as u8; 16]);
    {
        let b = b.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_mseconds(10 * n));
        b.set_duration(gst::ClockTime::from_mseconds(10));
        b.set_offset(n);
    }
    b
}

/// Waits for EOS at the harness's sink; fails the test after 10 s.
fn wait_eos(h: &mut Harness) {
    let started = std::time::Instant::now();
    while !std::iter::from_fn(|| h.try_pull_event()).any(|e| e.type_() == gst::EventType::Eos) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no EOS within 10 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn out(h: &mut Harness) -> u64 {
    pull_within(h, Duration::from_secs(10)).offset()
}

#[test]
fn a_fast_pad_waits_for_the_slow_one_instead_of_skipping() {
    let (mut h0, mut h1) = two_pads("order-by=pts max-window=2");
    let element = h0.element().unwrap();
    let depth = {
        let element = element.clone();
        move || stat(&element, "depth")
    };
    // The fast pad brings the even frames, all at once, on a thread of its own.
    let fast = {
        let pad = h0.srcpad().unwrap();
        std::thread::spawn(move || {
            for n in [0, 2, 4, 6, 8] {
                assert_eq!(pad.push(frame(n)), Ok(gst::FlowSuccess::Ok));
            }
        })
    };
    assert_eq!(out(&mut h0), 0);
    // 2 and 4 are held for 1 and 3 (the slow pad may still bring them): the window is full,
    // and the fast pad waits in its push of 6.
    wait_for(
        &format!(
            "two frames held ({})",
            element.property::<gst::Structure>("stats")
        ),
        Duration::from_secs(10),
        || depth() == 2,
    );
    assert!(!fast.is_finished(), "the fast pad waits for room");
    assert!(h0.try_pull().is_none(), "nothing is skipped meanwhile");
    for n in [1, 3, 5, 7, 9] {
        assert_eq!(h1.push(frame(n)), Ok(gst::FlowSuccess::Ok));
    }
    fast.join().unwrap();
    let got: Vec<u64> = (0..9).map(|_| out(&mut h0)).collect();
    assert_eq!(got, (1..10).collect::<Vec<_>>());
    assert_eq!(stat(&element, "skipped"), 0);

    // EOS leaves once every pad is at EOS: after sink_0's, sink_1's frames still go.
    assert!(h0.push_event(gst::event::Eos::new()));
    assert_eq!(h1.push(frame(10)), Ok(gst::FlowSuccess::Ok));
    assert_eq!(out(&mut h0), 10);
    assert!(
        std::iter::from_fn(|| h0.try_pull_event()).all(|e| e.type_() != gst::EventType::Eos),
        "no EOS before sink_1's last frame"
    );
    assert!(h1.push_event(gst::event::Eos::new()));
    wait_eos(&mut h0);
}

#[test]
fn a_pad_released_while_running_is_waited_for_no_more() {
    let (mut h0, h1) = two_pads("order-by=pts");
    let element = h0.element().unwrap();
    let pad1 = element.static_pad("sink_1").unwrap();
    assert_eq!(h0.push(frame(0)), Ok(gst::FlowSuccess::Ok));
    assert_eq!(h0.push(frame(2)), Ok(gst::FlowSuccess::Ok));
    assert_eq!(out(&mut h0), 0);
    assert!(h0.try_pull().is_none(), "2 waits: sink_1 may bring 1");
    drop(h1);
    // The harness keeps the request pad; the application releases it.
    if let Some(pad) = element.static_pad("sink_1") {
        element.release_request_pad(&pad);
    }
    assert!(element.static_pad("sink_1").is_none());
    drop(pad1);
    assert_eq!(out(&mut h0), 2, "released: 1 will not come");
    assert_eq!(stat(&element, "skipped"), 1);
    // EOS on the one pad left is the end.
    assert!(h0.push_event(gst::event::Eos::new()));
    wait_eos(&mut h0);
}

#[test]
fn each_frame_goes_out_after_the_sticky_events_of_its_own_pad() {
    init();
    let mut h0 = Harness::with_padnames("resequencer", Some("sink_0"), Some("src"));
    let element = h0.element().unwrap();
    element.set_property_from_str("order-by", "pts");
    let mut h1 = Harness::with_element(&element, Some("sink_1"), None);
    let small = "video/x-raw,format=GRAY8,width=4,height=4,framerate=100/1";
    let large = "video/x-raw,format=GRAY8,width=8,height=8,framerate=100/1";
    h0.set_src_caps_str(small);
    h1.set_src_caps_str(large);
    for n in 0..4 {
        let h = if n % 2 == 0 { &mut h0 } else { &mut h1 };
        assert_eq!(h.push(frame(n)), Ok(gst::FlowSuccess::Ok));
    }
    for n in 0..4 {
        assert_eq!(out(&mut h0), n);
    }
    let events: Vec<gst::Event> = std::iter::from_fn(|| h0.try_pull_event()).collect();
    let widths: Vec<i32> = events
        .iter()
        .filter_map(|e| match e.view() {
            gst::EventView::Caps(c) => c.caps().structure(0)?.get::<i32>("width").ok(),
            _ => None,
        })
        .collect();
    assert_eq!(widths, vec![4, 8, 4, 8], "each frame in its own pad's caps");
    let count = |t: gst::EventType| events.iter().filter(|e| e.type_() == t).count();
    assert_eq!(count(gst::EventType::StreamStart), 1, "{events:?}");
    assert_eq!(
        count(gst::EventType::Segment),
        1,
        "the same segment once: {events:?}"
    );
}

/// Frame `n` at `pts_ms`.
fn frame_at(n: u64, pts_ms: u64) -> gst::Buffer {
    let mut b = frame(n);
    b.get_mut()
        .unwrap()
        .set_pts(gst::ClockTime::from_mseconds(pts_ms));
    b
}

#[test]
fn a_new_segment_on_one_pad_waits_for_the_others_to_finish_the_old_one() {
    let (mut h0, mut h1) = two_pads("order-by=pts max-window=2");
    let element = h0.element().unwrap();
    // The next item of a playlist: PTS from 0 again, running time going on.
    let mut next_item = gst::FormattedSegment::<gst::ClockTime>::new();
    next_item.set_base(gst::ClockTime::from_mseconds(40));
    assert_eq!(h0.push(frame_at(0, 0)), Ok(gst::FlowSuccess::Ok));
    assert_eq!(h1.push(frame_at(1, 10)), Ok(gst::FlowSuccess::Ok));
    assert_eq!(h0.push(frame_at(2, 20)), Ok(gst::FlowSuccess::Ok));
    // The fast pad is in the next item before the slow one brings the old one's last frame.
    assert!(h0.push_event(gst::event::Segment::new(&next_item)));
    let fast = {
        let pad = h0.srcpad().unwrap();
        std::thread::spawn(move || pad.push(frame_at(4, 0)))
    };
    // A wait shows only by not ending: the fast pad's frame of the next item must still be
    // waiting for sink_1 to finish the first one.
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !fast.is_finished(),
        "frame 4 waits for sink_1 to reach its segment"
    );
    assert_eq!(h1.push(frame_at(3, 30)), Ok(gst::FlowSuccess::Ok));
    assert!(h1.push_event(gst::event::Segment::new(&next_item)));
    assert_eq!(h1.push(frame_at(5, 10)), Ok(gst::FlowSuccess::Ok));
    assert_eq!(fast.join().unwrap(), Ok(gst::FlowSuccess::Ok));
    let got: Vec<u64> = (0..6).map(|_| out(&mut h0)).collect();
    assert_eq!(got, (0..6).collect::<Vec<_>>());
    assert_eq!(stat(&element, "skipped"), 0);
    assert_eq!(stat(&element, "late"), 0);
}

#[test]
fn a_hole_every_pad_is_past_is_skipped_at_once() {
    let (mut h0, mut h1) = two_pads("order-by=pts");
    let element = h0.element().unwrap();
    for n in [0, 2, 4] {
        assert_eq!(h0.push(frame(n)), Ok(gst::FlowSuccess::Ok));
    }
    // sink_1 loses 3: once it brings 5, nothing can bring 3 any more.
    for n in [1, 5] {
        assert_eq!(h1.push(frame(n)), Ok(gst::FlowSuccess::Ok));
    }
    let got: Vec<u64> = (0..5).map(|_| out(&mut h0)).collect();
    assert_eq!(got, vec![0, 1, 2, 4, 5], "before any EOS");
    assert_eq!(stat(&element, "skipped"), 1);
}

#[test]
fn a_requested_pad_left_unlinked_is_not_waited_for() {
    let (mut h0, mut h1) = two_pads("order-by=pts max-window=2");
    let element = h0.element().unwrap();
    let idle = element.request_pad_simple("sink_%u").unwrap();
    assert!(!idle.is_linked());
    for n in 0..5 {
        let h = if n % 2 == 0 { &mut h0 } else { &mut h1 };
        assert_eq!(h.push(frame(n)), Ok(gst::FlowSuccess::Ok));
    }
    assert!(h0.push_event(gst::event::Eos::new()));
    assert!(h1.push_event(gst::event::Eos::new()));
    let got: Vec<u64> = (0..5).map(|_| out(&mut h0)).collect();
    assert_eq!(got, (0..5).collect::<Vec<_>>());
    wait_eos(&mut h0);
    element.release_request_pad(&idle);
}

#[test]
fn sequence_order_across_a_playlist_keeps_every_frame_in_order() {
    init();
    // Two clips through concat: the pool before the split starts a new epoch at the second.
    let r = launch::run(
        "concat name=c ! enrichpool workers=1 ! roundrobin name=rr \
         rr.src_0 ! queue ! identity sleep-time=3000 ! r.sink_0 \
         rr.src_1 ! queue ! r.sink_1 \
         rr.src_2 ! queue ! identity sleep-time=500 ! r.sink_2 \
         resequencer name=r order-by=sequence max-window=4 ! appsink name=sink sync=false \
         videotestsrc num-buffers=60 ! video/x-raw,width=64,height=48 ! c. \
         videotestsrc num-buffers=60 ! video/x-raw,width=64,height=48 ! c.",
        Duration::from_secs(120),
        |_| {},
    );
    let keys: Vec<(u32, u64)> = r
        .samples
        .iter()
        .map(|s| {
            let m = gstordered::meta::SeqMeta::read(s.buffer().unwrap())
                .unwrap()
                .unwrap();
            (m.epoch, m.seq)
        })
        .collect();
    assert_eq!(keys.len(), 120, "{keys:?}");
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
    let reseq = resequencer(&r);
    assert_eq!(stat(&reseq, "skipped"), 0);
    assert_eq!(stat(&reseq, "restarts"), 0);
}

#[test]
fn a_branch_slower_than_the_patience_still_finishes_each_item_of_a_playlist_first() {
    init();
    // One branch takes 300 ms a frame, longer than a waiting pad's patience (200 ms): the
    // bound is lifted, but a frame of the next item still waits for it.
    let r = launch::run(
        "concat name=c ! roundrobin name=rr \
         rr.src_0 ! queue ! identity sleep-time=300000 ! r.sink_0 \
         rr.src_1 ! queue ! r.sink_1 \
         resequencer name=r order-by=pts max-window=1 ! appsink name=sink sync=false \
         videotestsrc num-buffers=6 ! video/x-raw,width=32,height=24,framerate=30/1 ! c. \
         videotestsrc num-buffers=6 ! video/x-raw,width=32,height=24,framerate=30/1 ! c.",
        Duration::from_secs(60),
        |_| {},
    );
    let running: Vec<u64> = r
        .samples
        .iter()
        .map(|s| {
            let segment = s
                .segment()
                .unwrap()
                .downcast_ref::<gst::ClockTime>()
                .unwrap()
                .clone();
            segment
                .to_running_time(s.buffer().unwrap().pts())
                .unwrap()
                .nseconds()
        })
        .collect();
    assert_eq!(offsets(&r), [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5]);
    assert!(running.windows(2).all(|w| w[0] < w[1]), "{running:?}");
    let reseq = resequencer(&r);
    assert_eq!(stat(&reseq, "skipped"), 0);
    assert_eq!(stat(&reseq, "restarts"), 0);
}

#[test]
fn a_branch_that_never_delivers_is_passed_over_at_the_cap() {
    // max-window=4: a lifted bound holds up to 256 frames, then the silent branch is passed
    // over (its frames skips), so memory stays bounded.
    init();
    misbehave::register();
    let r = launch::run(
        "videotestsrc num-buffers=900 ! video/x-raw,width=16,height=16 ! roundrobin name=rr \
         rr.src_0 ! queue ! orderedmisbehave mode=nothing every=1 ! r.sink_0 \
         rr.src_1 ! queue ! r.sink_1 \
         resequencer name=r order-by=pts max-window=4 ! appsink name=sink sync=false",
        Duration::from_secs(60),
        |_| {},
    );
    let expected: Vec<u64> = (0..900).filter(|n| n % 2 == 1).collect();
    assert_eq!(offsets(&r), expected);
    let reseq = resequencer(&r);
    assert!(
        stat(&reseq, "max-depth") <= 256 + 2,
        "{}",
        stat(&reseq, "max-depth")
    );
    assert_eq!(
        stat(&reseq, "skipped"),
        450,
        "every frame of the silent branch"
    );
}

#[test]
fn a_branch_that_loses_every_frame_does_not_hold_the_others_for_ever() {
    // The first branch brings nothing: not live, the others wait for it with a full window,
    // then (nothing moving for `latency`'s 200 ms) are let in over the bound, and its frames
    // are skips at EOS.
    let r = branches(
        NOT_LIVE,
        "",
        "! orderedmisbehave mode=nothing every=1",
        "order-by=pts max-window=4",
    );
    let expected: Vec<u64> = (0..200).filter(|n| n % 3 != 0).collect();
    assert_eq!(offsets(&r), expected);
    assert_eq!(stat(&resequencer(&r), "skipped"), 67);
}

/// A small deterministic generator: a seed names a schedule.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// One random split: 2–4 branches with queues of 1–20 frames and 0, 0.7 or 1.4 ms a frame, one
/// of them perhaps losing every Nth frame of the stream that it gets; live or not; PTS or
/// sequence order (stamped before the split); `max-window` 1–8. Checks the order, and the
/// ledger: every frame missing before the last one out is a skip, and not live, exactly the
/// frames the lossy branch lost are missing.
fn random_split(seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let branches = 2 + rng.below(3);
    let live = rng.below(3) == 0;
    let sequence = rng.below(2) == 0;
    let max_window = 1 + rng.below(8);
    let lossy = (rng.below(2) == 0).then(|| (rng.below(branches), 2 + rng.below(6)));
    let frames: u64 = if live { 40 } else { 120 };
    let mut desc = format!(
        "videotestsrc {} num-buffers={frames} ! video/x-raw,width=32,height=24,framerate=60/1 \
         ! {} roundrobin name=rr ",
        if live { "is-live=true" } else { "" },
        if sequence { STAMP } else { "" },
    );
    for b in 0..branches {
        let drop = match lossy {
            Some((lb, every)) if lb == b => {
                format!("! orderedmisbehave mode=nothing every={every} ")
            }
            _ => String::new(),
        };
        desc += &format!(
            "rr.src_{b} ! queue max-size-buffers={} ! identity sleep-time={} {drop}! r.sink_{b} ",
            1 + rng.below(20),
            700 * rng.below(3)
        );
    }
    desc += &format!(
        "resequencer name=r order-by={} max-window={max_window} ! appsink name=sink sync=false",
        if sequence { "sequence" } else { "pts" }
    );
    init();
    misbehave::register();
    let r = launch::run(&desc, Duration::from_secs(120), |_| {});
    let got = offsets(&r);
    let skipped = stat(&resequencer(&r), "skipped");
    let context = format!("seed {seed}: {desc}\ngot {got:?}, skipped {skipped}");
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "out of order: {context}"
    );
    // Frames lost after the last one out are no holes: nothing tells they existed.
    let end = got.last().map_or(0, |&l| l + 1);
    let missing = end - got.len() as u64;
    assert_eq!(skipped, missing, "every frame missing is a skip: {context}");
    if !live {
        let lost =
            |n: &u64| lossy.is_some_and(|(lb, every)| n % branches == lb && n % every == every - 1);
        let expected: Vec<u64> = (0..frames).filter(|n| !lost(n)).collect();
        assert_eq!(
            got, expected,
            "exactly the lost frames are missing: {context}"
        );
    }
}

/// The randomized harness of the ordered funnel: `cargo test` runs 12 seeds;
/// `ORDERED_SOAK_SEEDS=N` runs N from `ORDERED_SOAK_FIRST` (default 1000) instead.
#[test]
fn random_splits_keep_every_frame_in_order_and_account_for_each_loss() {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let (first, count) = match env("ORDERED_SOAK_SEEDS") {
        Some(count) => (env("ORDERED_SOAK_FIRST").unwrap_or(1000), count),
        None => (0, 12),
    };
    for seed in first..first + count {
        random_split(seed);
    }
}

#[test]
fn a_flush_on_every_pad_forgets_what_was_held_and_starts_over() {
    let (mut h0, mut h1) = two_pads("order-by=pts");
    let element = h0.element().unwrap();
    assert_eq!(h0.push(frame(0)), Ok(gst::FlowSuccess::Ok));
    assert_eq!(h0.push(frame(2)), Ok(gst::FlowSuccess::Ok));
    assert_eq!(out(&mut h0), 0);
    // 2 waits for sink_1; a seek flushes both branches.
    for h in [&mut h0, &mut h1] {
        assert!(h.push_event(gst::event::FlushStart::new()));
    }
    assert!(h0.push_event(gst::event::FlushStop::new(true)));
    // sink_1 is still flushing: its frames are refused, and nothing flows yet.
    assert_eq!(h1.push(frame(1)), Err(gst::FlowError::Flushing));
    assert!(h1.push_event(gst::event::FlushStop::new(true)));
    assert_eq!(stat(&element, "flushed"), 1, "2 was dropped by the flush");
    // The stream starts over after the flush.
    for h in [&mut h0, &mut h1] {
        let segment = gst::FormattedSegment::<gst::ClockTime>::new();
        assert!(h.push_event(gst::event::Segment::new(&segment)));
    }
    for n in 0..4 {
        let h = if n % 2 == 0 { &mut h0 } else { &mut h1 };
        assert_eq!(h.push(frame(n)), Ok(gst::FlowSuccess::Ok));
    }
    let got: Vec<u64> = (0..4).map(|_| out(&mut h0)).collect();
    assert_eq!(got, vec![0, 1, 2, 3]);
    assert_eq!(stat(&element, "skipped"), 0);
}
