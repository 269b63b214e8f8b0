//! The `resequencer` element driven through `gst_check::Harness`: ordering, live deadlines
//! on a `TestClock`, gap events, EOS, flushes, events in place, and bad input.

#[path = "common/flush.rs"]
mod flush;
#[path = "common/sync.rs"]
mod sync;

use std::sync::{Arc, Mutex};

use gst::prelude::*;
use gst_check::Harness;
use gstordered::meta::{Gap, GapReason, SeqMeta};
use sync::within;

/// The longest a test that could hang (a regression deadlocking) may take.
const LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

const FRAME: gst::ClockTime = gst::ClockTime::from_mseconds(40);

fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstordered::plugin_register_static().unwrap();
    });
}

/// Frame `seq` of epoch 0 at PTS `seq * 40 ms`, one byte long.
fn frame(seq: u64) -> gst::Buffer {
    frame_in(0, seq, seq)
}

fn frame_in(epoch: u32, seq: u64, n: u64) -> gst::Buffer {
    let mut buffer = gst::Buffer::with_size(1).unwrap();
    {
        let b = buffer.get_mut().unwrap();
        b.set_pts(FRAME * n);
        b.set_duration(FRAME);
        SeqMeta {
            seq,
            epoch,
            ingress: 0,
        }
        .add(b);
    }
    buffer
}

fn pts_frame(pts: gst::ClockTime) -> gst::Buffer {
    let mut buffer = gst::Buffer::with_size(1).unwrap();
    let b = buffer.get_mut().unwrap();
    b.set_pts(pts);
    b.set_duration(FRAME);
    buffer
}

/// What left the element, in the order it left.
#[derive(Clone, Debug, PartialEq)]
enum Out {
    Frame { seq: Option<u64>, discont: bool },
    Event(String),
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Out>>>);

impl Recorder {
    fn attach(h: &Harness) -> Recorder {
        let rec = Recorder::default();
        let log = rec.0.clone();
        let src = h.element().unwrap().static_pad("src").unwrap();
        src.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| {
                let item = match &info.data {
                    Some(gst::PadProbeData::Buffer(b)) => Out::Frame {
                        seq: SeqMeta::read(b).map(|m| m.unwrap().seq),
                        discont: b.flags().contains(gst::BufferFlags::DISCONT),
                    },
                    Some(gst::PadProbeData::Event(e)) => Out::Event(e.type_().name().to_string()),
                    _ => return gst::PadProbeReturn::Ok,
                };
                log.lock().unwrap().push(item);
                gst::PadProbeReturn::Ok
            },
        );
        rec
    }

    fn take(&self) -> Vec<Out> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    fn frames(&self) -> Vec<u64> {
        self.take()
            .into_iter()
            .filter_map(|o| match o {
                Out::Frame { seq, .. } => seq,
                Out::Event(_) => None,
            })
            .collect()
    }
}

fn harness(props: &[(&str, &dyn ToValue)]) -> (Harness, Recorder) {
    init();
    let mut h = Harness::new("resequencer");
    {
        let element = h.element().unwrap();
        for (name, value) in props {
            element.set_property_from_value(name, &value.to_value());
        }
    }
    let rec = Recorder::attach(&h);
    h.set_src_caps_str("video/x-raw,format=GRAY8,width=4,height=4,framerate=25/1");
    (h, rec)
}

fn stat(h: &Harness, name: &str) -> u64 {
    let stats = h.element().unwrap().property::<gst::Structure>("stats");
    stats.get::<u64>(name).unwrap()
}

fn pull_seqs(h: &mut Harness, n: usize) -> Vec<u64> {
    (0..n)
        .map(|_| SeqMeta::read(&h.pull().unwrap()).unwrap().unwrap().seq)
        .collect()
}

#[test]
fn frames_come_out_in_sequence_order() {
    let (mut h, _) = harness(&[]);
    for seq in [2, 0, 3, 1, 5, 4] {
        assert_eq!(h.push(frame(seq)), Ok(gst::FlowSuccess::Ok));
    }
    assert_eq!(pull_seqs(&mut h, 6), vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(stat(&h, "pushed"), 6);
    assert_eq!(stat(&h, "reordered"), 3);
    assert_eq!(stat(&h, "skipped"), 0);
}

#[test]
fn missing_frame_is_skipped_exactly_when_its_deadline_passes() {
    within(LIMIT, || {
        let (mut h, rec) = harness(&[("latency", &100_000_000u64)]);
        h.use_testclock();
        let clock = h.testclock().unwrap();
        for seq in [0, 1, 3] {
            h.push(frame(seq)).unwrap();
        }
        assert_eq!(pull_seqs(&mut h, 2), vec![0, 1]);

        // Frame 2 was expected at 80 ms; the task waits for 80 ms + latency, no earlier.
        let id = clock.wait_for_next_pending_id();
        let base = h.element().unwrap().base_time().unwrap();
        assert_eq!(id.time(), base + gst::ClockTime::from_mseconds(180));
        assert_eq!(
            rec.frames(),
            vec![0, 1],
            "nothing released before the deadline"
        );
        assert_eq!(stat(&h, "skipped"), 0);

        assert!(h.crank_single_clock_wait().is_ok());
        let third = h.pull().unwrap();
        assert_eq!(SeqMeta::read(&third).unwrap().unwrap().seq, 3);
        assert!(third.flags().contains(gst::BufferFlags::DISCONT));
        assert_eq!(stat(&h, "skipped"), 1);

        // A GAP event covers the missing frame's time.
        let gap = std::iter::from_fn(|| h.try_pull_event())
            .find(|e| e.type_() == gst::EventType::Gap)
            .expect("a GAP event for frame 2");
        let gst::EventView::Gap(gap) = gap.view() else {
            unreachable!()
        };
        assert_eq!(gap.get(), (FRAME * 2, Some(FRAME)));

        // Frame 2 coming now is late and dropped.
        h.push(frame(2)).unwrap();
        assert_eq!(stat(&h, "late"), 1);
        h.push(frame(4)).unwrap();
        assert_eq!(pull_seqs(&mut h, 1), vec![4]);
    });
}

#[test]
fn gap_event_releases_the_wait_at_once() {
    let (mut h, _) = harness(&[("latency", &3_600_000_000_000u64)]);
    h.use_testclock();
    h.push(frame(0)).unwrap();
    h.push(frame(3)).unwrap();
    assert_eq!(pull_seqs(&mut h, 1), vec![0]);
    let gap = Gap {
        seq: 1,
        count: 2,
        epoch: 0,
        reason: GapReason::Leaked,
    };
    assert!(h.push_event(gap.to_event()));
    // No clock crank: the notice alone releases frame 3.
    let third = h.pull().unwrap();
    assert_eq!(SeqMeta::read(&third).unwrap().unwrap().seq, 3);
    assert!(third.flags().contains(gst::BufferFlags::DISCONT));
    assert_eq!(stat(&h, "gaps"), 2);
    assert_eq!(stat(&h, "skipped"), 0);
    // The gap notice is consumed, not forwarded.
    let forwarded =
        std::iter::from_fn(|| h.try_pull_event()).any(|e| Gap::from_event(&e).is_some());
    assert!(!forwarded);
}

#[test]
fn gap_event_for_frames_already_pushed_is_counted_and_ignored() {
    let (mut h, _) = harness(&[]);
    h.push(frame(0)).unwrap();
    h.push(frame(1)).unwrap();
    assert_eq!(pull_seqs(&mut h, 2), vec![0, 1]);
    let stale = Gap {
        seq: 0,
        count: 2,
        epoch: 0,
        reason: GapReason::Failed,
    };
    assert!(h.push_event(stale.to_event()));
    assert_eq!(stat(&h, "stale-gaps"), 2);
    h.push(frame(2)).unwrap();
    assert_eq!(pull_seqs(&mut h, 1), vec![2]);
    assert_eq!(stat(&h, "skipped") + stat(&h, "gaps"), 0);
}

#[test]
fn eos_drains_everything_held_in_order() {
    let (mut h, rec) = harness(&[("latency", &3_600_000_000_000u64)]);
    for seq in [4, 2, 1] {
        h.push(frame(seq)).unwrap();
    }
    assert!(h.push_event(gst::event::Eos::new()));
    assert_eq!(pull_seqs(&mut h, 3), vec![1, 2, 4]);
    // EOS leaves after the frames.
    while h.pull_event().unwrap().type_() != gst::EventType::Eos {}
    let out = rec.take();
    let eos_at = out
        .iter()
        .position(|o| *o == Out::Event("eos".into()))
        .unwrap();
    let last_frame = out
        .iter()
        .rposition(|o| matches!(o, Out::Frame { .. }))
        .unwrap();
    assert!(eos_at > last_frame);
    assert_eq!(stat(&h, "skipped"), 2, "frames 0 and 3 never came");
}

#[test]
fn flush_clears_everything_held() {
    let (mut h, rec) = harness(&[("latency", &3_600_000_000_000u64)]);
    h.push(frame(2)).unwrap();
    h.push(frame(3)).unwrap();
    assert!(h.push_event(gst::event::FlushStart::new()));
    assert!(h.push_event(gst::event::FlushStop::new(true)));
    assert_eq!(stat(&h, "flushed"), 2);
    assert_eq!(stat(&h, "depth"), 0);
    assert!(
        h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
            gst::ClockTime,
        >::new()))
    );
    // After the flush, upstream starts a new epoch from 0.
    h.push(frame_in(1, 1, 1)).unwrap();
    h.push(frame_in(1, 0, 0)).unwrap();
    assert_eq!(pull_seqs(&mut h, 2), vec![0, 1]);
    assert_eq!(rec.frames(), vec![0, 1], "nothing from before the flush");
}

#[test]
fn caps_change_mid_stream_stays_in_place() {
    let (mut h, rec) = harness(&[]);
    h.push(frame(1)).unwrap();
    h.push(frame(0)).unwrap();
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "GRAY8")
        .field("width", 8)
        .field("height", 8)
        .field("framerate", gst::Fraction::new(25, 1))
        .build();
    assert!(h.push_event(gst::event::Caps::new(&caps)));
    h.push(frame(3)).unwrap();
    h.push(frame(2)).unwrap();
    assert_eq!(pull_seqs(&mut h, 4), vec![0, 1, 2, 3]);
    let out: Vec<Out> = rec
        .take()
        .into_iter()
        .filter(|o| !matches!(o, Out::Event(name) if name != "caps"))
        .collect();
    let f = |seq, discont| Out::Frame {
        seq: Some(seq),
        discont,
    };
    assert_eq!(
        out,
        vec![
            Out::Event("caps".into()),
            f(0, true),
            f(1, false),
            Out::Event("caps".into()),
            f(2, false),
            f(3, false)
        ]
    );
    assert_eq!(h.sinkpad().unwrap().current_caps().unwrap(), caps);
}

#[test]
fn events_between_frames_keep_their_place() {
    let (mut h, rec) = harness(&[]);
    h.push(frame(1)).unwrap();
    let tags = gst::event::Tag::new(gst::TagList::new());
    assert!(h.push_event(tags));
    let custom = gst::event::CustomDownstream::new(gst::Structure::new_empty("app-marker"));
    assert!(h.push_event(custom));
    h.push(frame(0)).unwrap();
    h.push(frame(2)).unwrap();
    assert_eq!(pull_seqs(&mut h, 3), vec![0, 1, 2]);
    let names: Vec<String> = rec
        .take()
        .into_iter()
        .map(|o| match o {
            Out::Frame { seq, .. } => seq.unwrap().to_string(),
            Out::Event(name) => name,
        })
        .skip_while(|n| n != "0")
        .collect();
    assert_eq!(names, ["0", "1", "tag", "custom-downstream", "2"]);
}

#[test]
fn latency_query_adds_the_resequencer_latency() {
    let (mut h, _) = harness(&[("latency", &150_000_000u64)]);
    h.set_upstream_latency(gst::ClockTime::from_mseconds(20));
    let element = h.element().unwrap();
    let mut q = gst::query::Latency::new();
    assert!(element.static_pad("src").unwrap().query(&mut q));
    let (live, min, _max) = q.result();
    assert!(live);
    assert_eq!(min, gst::ClockTime::from_mseconds(170));
}

#[test]
fn buffer_with_neither_sequence_meta_nor_pts_is_dropped_and_counted() {
    let (mut h, _) = harness(&[]);
    h.push(frame(0)).unwrap();
    assert_eq!(
        h.push(gst::Buffer::with_size(1).unwrap()),
        Ok(gst::FlowSuccess::Ok)
    );
    h.push(frame(1)).unwrap();
    assert_eq!(pull_seqs(&mut h, 2), vec![0, 1]);
    assert_eq!(stat(&h, "invalid"), 1);
    assert_eq!(stat(&h, "in"), 3);
}

#[test]
fn order_by_sequence_drops_frames_without_meta() {
    let (mut h, _) = harness(&[("order-by", &gstordered::OrderBy::Sequence)]);
    h.push(pts_frame(FRAME)).unwrap();
    h.push(frame(0)).unwrap();
    assert_eq!(pull_seqs(&mut h, 1), vec![0]);
    assert_eq!(stat(&h, "invalid"), 1);
}

#[test]
fn a_gap_from_an_older_epoch_is_stale_and_a_frame_from_one_starts_over() {
    let (mut h, _) = harness(&[]);
    h.push(frame_in(1, 0, 0)).unwrap();
    let stale = Gap {
        seq: 1,
        count: 1,
        epoch: 0,
        reason: GapReason::Leaked,
    };
    assert!(h.push_event(stale.to_event()));
    assert_eq!(stat(&h, "stale-gaps"), 1);
    h.push(frame_in(1, 1, 1)).unwrap();
    // Epoch 0 after epoch 1: the pool upstream was restarted alone.
    h.push(frame_in(0, 0, 2)).unwrap();
    assert_eq!(pull_seqs(&mut h, 3), vec![0, 1, 0]);
    assert_eq!((stat(&h, "late"), stat(&h, "restarts")), (0, 1));
}

#[test]
fn sequence_jump_of_2_pow_40_neither_panics_nor_stalls() {
    let (mut h, _) = harness(&[("latency", &3_600_000_000_000u64), ("max-window", &8u32)]);
    let jump = 1u64 << 40;
    h.push(frame(0)).unwrap();
    h.push(frame(1)).unwrap();
    h.push(frame_in(0, jump, 2)).unwrap();
    h.push(frame_in(0, jump + 1, 3)).unwrap();
    assert_eq!(pull_seqs(&mut h, 2), vec![0, 1]);
    assert!(h.push_event(gst::event::Eos::new()));
    assert_eq!(pull_seqs(&mut h, 2), vec![jump, jump + 1]);
    assert_eq!(stat(&h, "skipped"), jump - 2);
    assert_eq!(stat(&h, "max-depth"), 2);
}

#[test]
fn zero_size_buffers_are_ordered_like_any_frame() {
    let (mut h, _) = harness(&[]);
    for seq in [1, 0, 2] {
        let mut b = gst::Buffer::new();
        {
            let b = b.get_mut().unwrap();
            b.set_pts(FRAME * seq);
            SeqMeta {
                seq,
                epoch: 0,
                ingress: 0,
            }
            .add(b);
        }
        h.push(b).unwrap();
    }
    assert_eq!(pull_seqs(&mut h, 3), vec![0, 1, 2]);
}

#[test]
fn pts_going_back_an_hour_is_late_and_counted() {
    let (mut h, _) = harness(&[("order-by", &gstordered::OrderBy::Pts), ("latency", &0u64)]);
    h.use_testclock();
    let hour = gst::ClockTime::from_seconds(3600);
    h.push(pts_frame(hour)).unwrap();
    // The first frame has nothing to be contiguous with and waits for its deadline.
    h.crank_single_clock_wait().unwrap();
    assert_eq!(h.pull().unwrap().pts(), Some(hour));
    h.push(pts_frame(hour + FRAME)).unwrap();
    assert_eq!(h.pull().unwrap().pts(), Some(hour + FRAME));
    h.push(pts_frame(gst::ClockTime::ZERO)).unwrap();
    h.push(pts_frame(hour + FRAME * 2)).unwrap();
    assert_eq!(h.pull().unwrap().pts(), Some(hour + FRAME * 2));
    assert_eq!(stat(&h, "late"), 1);
    assert_eq!(stat(&h, "pushed"), 3);
}

#[test]
fn pts_order_restores_shuffled_frames() {
    let (mut h, _) = harness(&[("order-by", &gstordered::OrderBy::Pts)]);
    h.use_testclock();
    for n in [1u64, 0, 3, 2] {
        h.push(pts_frame(FRAME * n)).unwrap();
    }
    // Frame 0 starts the segment and the others follow it contiguously: no deadline waited
    // for (the clock is never cranked).
    let pts: Vec<_> = (0..4).map(|_| h.pull().unwrap().pts().unwrap()).collect();
    assert_eq!(pts, (0..4).map(|n| FRAME * n).collect::<Vec<_>>());
    assert_eq!(stat(&h, "skipped"), 0);
}

#[test]
fn full_window_skips_the_missing_head_without_waiting() {
    let (mut h, _) = harness(&[("latency", &3_600_000_000_000u64), ("max-window", &4u32)]);
    for seq in 1..=4 {
        h.push(frame(seq)).unwrap();
    }
    assert_eq!(pull_seqs(&mut h, 4), vec![1, 2, 3, 4]);
    assert_eq!(stat(&h, "skipped"), 1);
    assert!(stat(&h, "max-depth") <= 4);
}

#[test]
fn stop_while_downstream_blocks_and_the_chain_waits_for_room_does_not_hang() {
    within(LIMIT, || {
        let (h, _) = harness(&[("max-window", &1u32)]);
        let element = h.element().unwrap();
        // Downstream blocks the task on a custom event; frame 0 fills the window (of 1);
        // the chain waits for room with frame 1 — or, when the chain pushes the event itself
        // (the fast path), it is the one blocked.
        let (blocked_tx, blocked_rx) = std::sync::mpsc::channel();
        element.static_pad("src").unwrap().add_probe(
            gst::PadProbeType::BLOCK | gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| match &info.data {
                Some(gst::PadProbeData::Event(e))
                    if e.type_() == gst::EventType::CustomDownstream =>
                {
                    let _ = blocked_tx.send(std::thread::current().id());
                    gst::PadProbeReturn::Ok
                }
                _ => gst::PadProbeReturn::Pass,
            },
        );
        let (about_to_block_tx, about_to_block_rx) = std::sync::mpsc::channel();
        let peer = element.static_pad("sink").unwrap().peer().unwrap();
        let pusher = std::thread::spawn(move || {
            let marker = gst::Structure::new_empty("blocks-downstream");
            assert!(peer.push_event(gst::event::CustomDownstream::new(marker)));
            let mut results = Vec::new();
            for seq in 0..2 {
                if seq == 1 {
                    about_to_block_tx.send(()).unwrap();
                }
                results.push(peer.push(frame(seq)));
            }
            results
        });
        let blocked_on = blocked_rx.recv().unwrap();
        // The task pushes the event, unless the chain got to it first (the fast path, with
        // the task idle): then the pusher itself is blocked in downstream.
        let task_blocked = blocked_on != pusher.thread().id();
        if task_blocked {
            about_to_block_rx.recv().unwrap();
        }
        element.set_state(gst::State::Null).unwrap();
        let results = pusher.join().unwrap();
        for res in &results {
            assert!(
                matches!(res, Ok(_) | Err(gst::FlowError::Flushing)),
                "{results:?}"
            );
        }
        if task_blocked {
            assert_eq!(results[0], Ok(gst::FlowSuccess::Ok));
            assert_eq!(results[1], Err(gst::FlowError::Flushing));
        }
    });
}

#[test]
fn stop_while_the_chain_pushes_into_a_blocked_downstream_does_not_hang() {
    within(LIMIT, || {
        // In order, the chain pushes frame 0 itself (the fast path, once the task waits;
        // before, the task does), and downstream blocks.
        let (h, _) = harness(&[]);
        let element = h.element().unwrap();
        let (blocked_tx, blocked_rx) = std::sync::mpsc::channel();
        element.static_pad("src").unwrap().add_probe(
            gst::PadProbeType::BLOCK | gst::PadProbeType::BUFFER,
            move |_, _| {
                let _ = blocked_tx.send(std::thread::current().id());
                gst::PadProbeReturn::Ok
            },
        );
        let peer = element.static_pad("sink").unwrap().peer().unwrap();
        let pusher = std::thread::spawn(move || peer.push(frame(0)));
        blocked_rx.recv().unwrap();
        element.set_state(gst::State::Null).unwrap();
        // Either path returns: FLUSHING from the chain's own push, or OK from the queueing.
        let res = pusher.join().unwrap();
        assert!(
            matches!(res, Ok(_) | Err(gst::FlowError::Flushing)),
            "{res:?}"
        );
    });
}

/// A bus on the harness's element, to see what it posts.
fn bus_of(h: &Harness) -> gst::Bus {
    let bus = gst::Bus::new();
    h.element().unwrap().set_bus(Some(&bus));
    bus
}

/// The warnings and errors on `bus` now, as their messages' text.
fn posted(bus: &gst::Bus) -> Vec<String> {
    std::iter::from_fn(|| bus.pop())
        .filter_map(|m| match m.view() {
            gst::MessageView::Warning(w) => Some(format!("warning: {}", w.error())),
            gst::MessageView::Error(e) => Some(format!("error: {}", e.error())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_malformed_sequence_meta_is_dropped_counted_and_warned_about_once() {
    let (mut h, _) = harness(&[]);
    let bus = bus_of(&h);
    let malformed = |pts: u64| {
        let mut buffer = pts_frame(FRAME * pts);
        let b = buffer.get_mut().unwrap();
        let mut meta = gst::meta::CustomMeta::add(b, "OrderedSeqMeta").unwrap();
        meta.mut_structure().set("seq", "not a number");
        meta.mut_structure().set("epoch", 0u32);
        buffer
    };
    h.push(frame(0)).unwrap();
    assert_eq!(h.push(malformed(1)), Ok(gst::FlowSuccess::Ok));
    assert_eq!(h.push(malformed(2)), Ok(gst::FlowSuccess::Ok));
    h.push(frame(1)).unwrap();
    assert_eq!(pull_seqs(&mut h, 2), vec![0, 1]);
    assert_eq!(stat(&h, "invalid"), 2);
    let warnings = posted(&bus);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("cannot be ordered"), "{warnings:?}");
}

#[test]
fn a_malformed_gap_event_is_ignored_with_a_warning() {
    let (mut h, rec) = harness(&[]);
    let bus = bus_of(&h);
    h.push(frame(0)).unwrap();
    let malformed = gst::event::CustomDownstream::new(
        gst::Structure::builder("ordered-gap")
            .field("seq", 1u64)
            .field("count", "two")
            .field("epoch", 0u32)
            .field("reason", "dropped")
            .build(),
    );
    assert!(h.push_event(malformed));
    // Frame 1 is still waited for: the malformed gap released nothing.
    h.push(frame(2)).unwrap();
    assert_eq!(pull_seqs(&mut h, 1), vec![0]);
    assert_eq!(stat(&h, "depth"), 1);
    assert_eq!((stat(&h, "gaps"), stat(&h, "skipped")), (0, 0));
    let warnings = posted(&bus);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("malformed ordered-gap"),
        "{warnings:?}"
    );
    // Not forwarded either.
    h.push(frame(1)).unwrap();
    assert_eq!(pull_seqs(&mut h, 2), vec![1, 2]);
    assert!(
        !rec.take()
            .iter()
            .any(|o| *o == Out::Event("custom-downstream".into())),
    );
}

#[test]
fn a_segment_in_another_format_than_time_is_an_error() {
    let (mut h, _) = harness(&[]);
    let bus = bus_of(&h);
    let bytes = gst::FormattedSegment::<gst::format::Bytes>::new();
    // (A sticky event is stored on the harness's pad whatever the element answers.)
    let _ = h.push_event(gst::event::Segment::new(&bytes));
    let errors = posted(&bus);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("error: Only segments in time format"),
        "{errors:?}"
    );
}

#[test]
fn the_same_sequence_number_twice_is_a_counted_duplicate() {
    let (mut h, _) = harness(&[]);
    for seq in [0, 2, 2, 1, 1, 3] {
        h.push(frame(seq)).unwrap();
    }
    assert_eq!(pull_seqs(&mut h, 4), vec![0, 1, 2, 3]);
    assert_eq!(stat(&h, "duplicates"), 2);
    assert_eq!(stat(&h, "in"), 6);
    assert!(h.try_pull().is_none());
}

#[test]
fn the_same_pts_twice_is_a_counted_duplicate() {
    let (mut h, _) = harness(&[("order-by", &gstordered::OrderBy::Pts)]);
    for n in [0, 1, 1, 2] {
        h.push(pts_frame(FRAME * n)).unwrap();
    }
    let pts: Vec<_> = (0..3).map(|_| h.pull().unwrap().pts().unwrap()).collect();
    assert_eq!(pts, vec![gst::ClockTime::ZERO, FRAME, FRAME * 2]);
    assert_eq!(stat(&h, "duplicates"), 1);
}

#[test]
fn in_auto_a_frame_without_the_streams_kind_of_key_is_invalid() {
    // The first frame carries the meta: the stream is ordered by sequence; a frame with a
    // PTS only cannot be placed in it.
    let (mut h, _) = harness(&[]);
    h.push(frame(0)).unwrap();
    h.push(pts_frame(FRAME)).unwrap();
    h.push(frame(1)).unwrap();
    assert_eq!(pull_seqs(&mut h, 2), vec![0, 1]);
    assert_eq!(stat(&h, "invalid"), 1);
}

#[test]
fn changing_latency_while_playing_posts_a_latency_message() {
    let (h, _) = harness(&[]);
    let bus = bus_of(&h);
    let element = h.element().unwrap();
    assert_eq!(element.current_state(), gst::State::Playing);
    element.set_property("latency", 500_000_000u64);
    let msg = bus
        .pop_filtered(&[gst::MessageType::Latency])
        .expect("a LATENCY message");
    assert_eq!(msg.src().unwrap().name(), element.name());
    element.set_property("latency", 500_000_000u64);
    assert!(
        bus.pop_filtered(&[gst::MessageType::Latency]).is_none(),
        "the same value again changes nothing"
    );
}

#[test]
fn sticky_events_queued_at_a_flush_are_kept_for_after_it() {
    let (mut h, _) = harness(&[]);
    // Frame 1 waits for frame 0; the tag event waits behind it.
    h.push(frame(1)).unwrap();
    flush::push_tag_then_flush(&mut h, "after the flush");
    let segment = gst::FormattedSegment::<gst::ClockTime>::new();
    assert!(h.push_event(gst::event::Segment::new(&segment)));
    h.push(frame_in(1, 0, 0)).unwrap();
    let out = h.pull().unwrap();
    assert_eq!(SeqMeta::read(&out).unwrap().unwrap().seq, 0);
    assert_eq!(flush::downstream_title(&h), "after the flush");
    assert_eq!(stat(&h, "flushed"), 1);
}

/// The threads that pushed on the resequencer's src pad, in order.
fn record_pushers(h: &Harness) -> Arc<Mutex<Vec<std::thread::ThreadId>>> {
    let pushers = Arc::new(Mutex::new(Vec::new()));
    let seen = pushers.clone();
    h.element().unwrap().static_pad("src").unwrap().add_probe(
        gst::PadProbeType::BUFFER,
        move |_, _| {
            seen.lock().unwrap().push(std::thread::current().id());
            gst::PadProbeReturn::Ok
        },
    );
    pushers
}

#[test]
fn in_a_live_stream_the_task_pushes_never_the_thread_that_brought_the_frame() {
    // Live: a synced sink holds a push until its running time, and the thread that brought
    // the frame (a worker of a pool shared with other streams) must not wait for it.
    let (mut h, _) = harness(&[]);
    h.set_live(true);
    let pushers = record_pushers(&h);
    let me = std::thread::current().id();
    for seq in 0..50 {
        h.push(frame(seq)).unwrap();
        assert_eq!(pull_seqs(&mut h, 1), vec![seq]);
    }
    let pushers = pushers.lock().unwrap().clone();
    assert_eq!(pushers.len(), 50);
    assert!(
        pushers.iter().all(|&t| t != me),
        "a live frame was pushed by the chain"
    );
}

#[test]
fn frames_in_order_are_pushed_by_the_streaming_thread_itself() {
    // The fast path (not live): with nothing held, the task idle and the frame the next one,
    // the chain pushes it at once, on the thread that brought it — no hand-off to the task.
    let (mut h, _) = harness(&[]);
    h.set_live(false);
    let pushers = record_pushers(&h);
    let me = std::thread::current().id();
    for seq in 0..200 {
        h.push(frame(seq)).unwrap();
        assert_eq!(pull_seqs(&mut h, 1), vec![seq]);
    }
    let pushers = pushers.lock().unwrap().clone();
    let by_me = pushers.iter().filter(|&&t| t == me).count();
    // The first frames may go through the task before it first waits; after that, the
    // task stays idle.
    assert!(
        by_me >= 100,
        "{by_me} of 200 pushed by the streaming thread"
    );
    // Held frames still go through the window in order, whoever pushes them.
    for seq in [201, 202, 200, 203] {
        h.push(frame(seq)).unwrap();
    }
    assert_eq!(pull_seqs(&mut h, 4), vec![200, 201, 202, 203]);
    assert_eq!(stat(&h, "pushed"), 204);
}

#[test]
fn max_hold_times_frames_held_in_a_stream_that_is_not_live() {
    within(LIMIT, || {
        // PTS order, not live, no sequence meta: in-order frames cost no clock reading, but
        // a frame that has to wait is timed from its arrival.
        let (mut h, _) = harness(&[("order-by", &gstordered::OrderBy::Pts)]);
        h.set_live(false);
        h.use_testclock();
        h.set_time(gst::ClockTime::ZERO).unwrap();
        h.push(pts_frame(gst::ClockTime::ZERO)).unwrap();
        h.push(pts_frame(FRAME * 2)).unwrap();
        h.set_time(gst::ClockTime::from_mseconds(30)).unwrap();
        h.push(pts_frame(FRAME * 3)).unwrap();
        h.set_time(gst::ClockTime::from_mseconds(70)).unwrap();
        h.push(pts_frame(FRAME)).unwrap();
        let pts: Vec<_> = (0..4).map(|_| h.pull().unwrap().pts().unwrap()).collect();
        assert_eq!(pts, vec![gst::ClockTime::ZERO, FRAME, FRAME * 2, FRAME * 3]);
        // Held from 0 (its arrival into an empty window) to 70 ms.
        assert_eq!(stat(&h, "max-hold"), 70_000_000);
    });
}
