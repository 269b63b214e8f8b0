//! `enrichpool carry-forward`: frames that `interval` or `only-label` keep from the servers
//! leave with the last sent frame's results, marked stale with their age; a scene cut is
//! always sent and ends the reuse; frames done before their source wait for it without
//! holding a worker; a lost source leaves them bare, counted; a flush forgets them.

#[path = "common/harness.rs"]
mod harness;
#[path = "common/servers.rs"]
mod servers;
#[path = "common/sync.rs"]
mod sync;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gst::prelude::*;
use gst_check::Harness;
use gstordered::EnrichPool;
use gstordered::enrichpool::{Job, Verdict};
use gstordered::meta::{AnalysisLabel, Enrichment, FrameAnalysis, SeqMeta};
use harness::{pool_harness, pull_within, stat, wait_for};
use sync::Gate;

const LIMIT: Duration = Duration::from_secs(60);
const FRAME: gst::ClockTime = gst::ClockTime::from_mseconds(40);

/// A 16×8 GRAY8 frame `n` (40 ms apart) labelled as `frameanalyzer` would.
fn frame(n: u64, label: AnalysisLabel) -> gst::Buffer {
    let mut buffer = gst::Buffer::from_mut_slice(vec![n as u8; 16 * 8]);
    {
        let b = buffer.get_mut().unwrap();
        b.set_pts(FRAME * n);
        b.set_duration(FRAME);
        FrameAnalysis {
            luma_mean: n as f64,
            luma_stddev: 0.0,
            motion: 0.0,
            scene_change: 0.0,
            sharpness: 0.0,
            label,
            backend: "cpu".into(),
        }
        .add(b);
    }
    buffer
}

fn harness(props: &str) -> (Harness, EnrichPool) {
    let (mut h, pool) = pool_harness(props);
    h.set_src_caps_str("video/x-raw,format=GRAY8,width=16,height=8,framerate=25/1");
    (h, pool)
}

/// Pulls `n` frames, sorted by sequence number.
fn pull_sorted(h: &mut Harness, n: usize) -> Vec<gst::Buffer> {
    let mut out: Vec<gst::Buffer> = (0..n).map(|_| pull_within(h, LIMIT)).collect();
    out.sort_by_key(|b| SeqMeta::read(b).unwrap().unwrap().seq);
    out
}

/// (stale, age) of a frame's results; `None` without EnrichmentMeta.
fn staleness(buffer: &gst::BufferRef) -> Option<(bool, u64)> {
    let e = Enrichment::read(buffer)?.unwrap();
    Some((
        e.outputs.get::<bool>("stale").unwrap_or(false),
        e.outputs.get::<u64>("age").unwrap_or(0),
    ))
}

/// The sum the geometry server answered for the frame whose results these are.
fn answered_sum(buffer: &gst::BufferRef) -> u64 {
    Enrichment::read(buffer)
        .unwrap()
        .unwrap()
        .outputs
        .get::<u64>("sum")
        .unwrap()
}

/// A detected region: rect, stale, age.
type Detected = ((u32, u32, u32, u32), bool, u64);

fn detections(buffer: &gst::BufferRef) -> Vec<Detected> {
    buffer
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .filter_map(|m| {
            let d = m.param("detection")?;
            Some((
                m.rect(),
                d.get::<bool>("stale").unwrap_or(false),
                d.get::<u64>("age").unwrap_or(0),
            ))
        })
        .collect()
}

fn requests(pool: &EnrichPool) -> u64 {
    let servers = pool
        .property::<gst::Structure>("stats")
        .get::<gst::Array>("servers")
        .unwrap();
    servers.as_slice()[0]
        .get::<gst::Structure>()
        .unwrap()
        .get::<u64>("requests")
        .unwrap()
}

/// Motion in one frame of five (frames 0, 5, 10, …), static otherwise.
fn label_of(n: u64) -> AnalysisLabel {
    if n.is_multiple_of(5) {
        AnalysisLabel::Motion
    } else {
        AnalysisLabel::Static
    }
}

#[test]
fn with_motion_in_a_fifth_of_frames_a_quarter_of_the_requests_and_every_frame_has_results() {
    let server = servers::FakeServer::start("geometry");
    const N: u64 = 100;
    let run = |props: &str| {
        let (mut h, pool) = harness(&format!(
            "workers=4 servers={} model=frames {props}",
            server.http_url()
        ));
        for n in 0..N {
            h.push(frame(n, label_of(n))).unwrap();
        }
        let out = pull_sorted(&mut h, N as usize);
        (out, requests(&pool), pool)
    };
    let (_, unfiltered, _) = run("");
    assert_eq!(unfiltered, N);
    let (out, filtered, pool) = run("only-label=motion carry-forward=1000000000");
    assert!(
        filtered * 4 <= unfiltered,
        "{filtered} requests of {unfiltered}: more than a quarter"
    );
    for (n, buffer) in out.iter().enumerate() {
        let n = n as u64;
        let source = n - n % 5;
        let (stale, age) = staleness(buffer).unwrap_or_else(|| panic!("frame {n} has no results"));
        // Each frame's results are its source's: the server summed the source's bytes.
        assert_eq!(answered_sum(buffer), source * 16 * 8, "frame {n}'s results");
        assert_eq!(stale, n != source, "frame {n}");
        assert_eq!(age, (FRAME * (n - source)).nseconds(), "frame {n}'s age");
        let boxes = detections(buffer);
        assert_eq!(
            boxes,
            vec![((1, 1, 2, 2), n != source, age)],
            "frame {n}'s detections"
        );
    }
    assert_eq!(stat(&pool, "carried"), N - N / 5);
    assert_eq!(stat(&pool, "remote-skipped"), N - N / 5);
    assert_eq!(stat(&pool, "carry-missed"), 0);
}

#[test]
fn a_scene_cut_is_always_sent_and_ends_the_reuse() {
    let server = servers::FakeServer::start("geometry");
    let (mut h, pool) = harness(&format!(
        "workers=2 servers={} model=frames only-label=motion carry-forward=1000000000",
        server.http_url()
    ));
    use AnalysisLabel::*;
    let labels = [Motion, Static, Static, SceneCut, Static, Dark];
    for (n, label) in labels.iter().enumerate() {
        h.push(frame(n as u64, *label)).unwrap();
    }
    let out = pull_sorted(&mut h, labels.len());
    let sources: Vec<u64> = out.iter().map(|b| answered_sum(b) / 128).collect();
    assert_eq!(sources, vec![0, 0, 0, 3, 3, 3]);
    assert_eq!(requests(&pool), 2);
}

#[test]
fn results_older_than_carry_forward_are_not_carried() {
    let server = servers::FakeServer::start("geometry");
    // 100 ms: frames 1 and 2 (40, 80 ms after the motion) carry, 3 and 4 do not.
    let (mut h, pool) = harness(&format!(
        "workers=2 servers={} model=frames only-label=motion carry-forward=100000000",
        server.http_url()
    ));
    for n in 0..5 {
        let label = if n == 0 {
            AnalysisLabel::Motion
        } else {
            AnalysisLabel::Static
        };
        h.push(frame(n, label)).unwrap();
    }
    let out = pull_sorted(&mut h, 5);
    let carried: Vec<Option<(bool, u64)>> = out.iter().map(|b| staleness(b)).collect();
    assert_eq!(
        carried,
        vec![
            Some((false, 0)),
            Some((true, 40_000_000)),
            Some((true, 80_000_000)),
            None,
            None
        ]
    );
    assert_eq!(stat(&pool, "carry-expired"), 2);
}

/// A pool whose handler holds the source (frame 0, the one frame of `interval=100` the steps
/// run on) at a gate, so that the frames after it are done first.
fn held_source(
    server: &servers::FakeServer,
    props: &str,
) -> (Harness, EnrichPool, Gate, Arc<AtomicUsize>) {
    let (h, pool) = harness(&format!(
        "workers=4 servers={} model=frames interval=100 carry-forward=1000000000 {props}",
        server.http_url()
    ));
    let gate = Gate::default();
    let g = gate.clone();
    let handled = Arc::new(AtomicUsize::new(0));
    let count = handled.clone();
    pool.set_handler(move |job: &mut Job<'_>| {
        let seq = SeqMeta::read(job.buffer).unwrap().unwrap().seq;
        count.fetch_add(1, Ordering::SeqCst);
        if seq == 0 {
            g.wait();
        }
        job.outputs.set("own", seq);
        Ok(Verdict::Keep)
    });
    (h, pool, gate, handled)
}

#[test]
fn frames_done_before_their_source_wait_for_it_then_leave_with_its_results() {
    let server = servers::FakeServer::start("geometry");
    let (mut h, pool, gate, handled) = held_source(&server, "");
    for n in 0..4 {
        h.push(frame(n, AnalysisLabel::Static)).unwrap();
    }
    // Frames 1–3 are done (the pool delivered them) while the source still runs: they are
    // held, and no worker waits for the source on their behalf.
    wait_for("frames 1-3 delivered", LIMIT, || stat(&pool, "pushed") == 3);
    wait_for("the source at the gate", LIMIT, || {
        handled.load(Ordering::SeqCst) == 1
    });
    assert!(h.try_pull().is_none(), "a frame left before its source");
    assert_eq!(stat(&pool, "in-flight"), 1, "only the source is in flight");
    gate.open();
    let out = pull_sorted(&mut h, 4);
    for (n, b) in out.iter().enumerate() {
        let e = Enrichment::read(b).unwrap().unwrap();
        // The source's results: its handler's output and its remote answer (the steps ran
        // on frame 0 only: `interval=100`).
        assert_eq!(e.outputs.get::<u64>("own").unwrap(), 0);
        assert_eq!(
            e.outputs.get::<u64>("sum").unwrap(),
            0,
            "frame 0's bytes sum to 0"
        );
        assert_eq!(e.outputs.get::<bool>("stale").unwrap_or(false), n > 0);
    }
    assert_eq!(stat(&pool, "carried"), 3);
}

#[test]
fn when_the_source_is_lost_the_held_frames_leave_bare_and_counted() {
    let server = servers::FakeServer::start("geometry");
    let (mut h, pool, gate, _) = held_source(&server, "on-error=drop");
    // The handler fails frame 0 once it is let through.
    pool.set_handler({
        let g = gate.clone();
        move |job: &mut Job<'_>| {
            let seq = SeqMeta::read(job.buffer).unwrap().unwrap().seq;
            if seq == 0 {
                g.wait();
                return Err("the source failed".into());
            }
            Ok(Verdict::Keep)
        }
    });
    for n in 0..4 {
        h.push(frame(n, AnalysisLabel::Static)).unwrap();
    }
    wait_for("frames 1-3 delivered", LIMIT, || stat(&pool, "pushed") == 3);
    gate.open();
    let out = pull_sorted(&mut h, 3);
    for b in &out {
        // No step ran on them, and nothing came to carry: they leave as they came.
        assert!(
            Enrichment::read(b).is_none(),
            "nothing to carry from a lost source"
        );
    }
    wait_for("the source counted lost", LIMIT, || {
        stat(&pool, "dropped-failed") == 1
    });
    assert_eq!(stat(&pool, "carry-missed"), 3);
    assert_eq!(stat(&pool, "carried"), 0);
}

#[test]
fn a_flush_forgets_held_frames_and_counts_them() {
    let server = servers::FakeServer::start("geometry");
    let (mut h, pool, gate, _) = held_source(&server, "");
    for n in 0..4 {
        h.push(frame(n, AnalysisLabel::Static)).unwrap();
    }
    wait_for("frames 1-3 delivered", LIMIT, || stat(&pool, "pushed") == 3);
    assert!(h.push_event(gst::event::FlushStart::new()));
    gate.open();
    assert!(h.push_event(gst::event::FlushStop::new(true)));
    assert_eq!(stat(&pool, "carry-flushed"), 3);
    // Nothing from before the flush comes out after it; the stream goes on.
    let mut events = Vec::new();
    while let Some(b) = h.try_pull() {
        events.push(b);
    }
    assert!(
        events.is_empty(),
        "{} frames from before the flush",
        events.len()
    );
    h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
        gst::ClockTime,
    >::new()));
    h.push(frame(0, AnalysisLabel::Static)).unwrap();
    let out = pull_sorted(&mut h, 1);
    assert_eq!(SeqMeta::read(&out[0]).unwrap().unwrap().epoch, 1);
}

#[test]
fn a_rust_handler_alone_runs_on_the_frames_interval_selects_and_the_rest_carry_its_results() {
    let (mut h, pool) = harness("workers=3 interval=3 carry-forward=1000000000");
    let ran = Arc::new(std::sync::Mutex::new(Vec::new()));
    let r = ran.clone();
    pool.set_handler(move |job: &mut Job<'_>| {
        let seq = SeqMeta::read(job.buffer).unwrap().unwrap().seq;
        r.lock().unwrap().push(seq);
        job.outputs.set("seen-on", seq);
        let mut roi = gst_video::VideoRegionOfInterestMeta::add(job.buffer, "thing", (1, 1, 4, 4));
        roi.add_param(
            gst::Structure::builder("detection")
                .field("score", 0.5f64)
                .build(),
        );
        Ok(Verdict::Keep)
    });
    for n in 0..10 {
        h.push(frame(n, AnalysisLabel::Static)).unwrap();
    }
    let out = pull_sorted(&mut h, 10);
    let mut ran = ran.lock().unwrap().clone();
    ran.sort_unstable();
    assert_eq!(
        ran,
        vec![0, 3, 6, 9],
        "the handler runs on every third frame only"
    );
    for (n, b) in out.iter().enumerate() {
        let n = n as u64;
        let e = Enrichment::read(b).unwrap().unwrap();
        assert_eq!(
            e.outputs.get::<u64>("seen-on").unwrap(),
            n - n % 3,
            "frame {n}"
        );
        assert_eq!(
            e.outputs.get::<bool>("stale").unwrap_or(false),
            !n.is_multiple_of(3)
        );
        assert_eq!(
            detections(b).len(),
            1,
            "frame {n}: the detection, fresh or carried"
        );
    }
    assert_eq!(stat(&pool, "skipped"), 6);
    assert_eq!(stat(&pool, "carried"), 6);
}

#[test]
fn only_this_elements_own_detections_are_carried_and_never_the_rois_array() {
    // Frames come with a detection of an earlier stage (their own, fresh on every frame);
    // this element's handler adds one of its own on the frames it runs on. A frame between
    // carries only the handler's, once, under an id of its own; the earlier stage's stays
    // single. The `rois` array (of another frame's regions) is not carried.
    let (mut h, pool) = harness("workers=2 interval=2 carry-forward=1000000000");
    pool.set_handler(|job: &mut Job<'_>| {
        let mut roi = gst_video::VideoRegionOfInterestMeta::add(job.buffer, "mine", (8, 1, 4, 4));
        roi.set_id(1);
        roi.add_param(
            gst::Structure::builder("detection")
                .field("score", 0.5f64)
                .build(),
        );
        job.outputs.set("rois", gst::Array::new([1i32]));
        Ok(Verdict::Keep)
    });
    for n in 0..4 {
        let mut buffer = frame(n, AnalysisLabel::Static);
        let mut roi = gst_video::VideoRegionOfInterestMeta::add(
            buffer.get_mut().unwrap(),
            "earlier",
            (0, 0, 4, 4),
        );
        roi.set_id(1);
        roi.add_param(
            gst::Structure::builder("detection")
                .field("score", 0.9f64)
                .build(),
        );
        h.push(buffer).unwrap();
    }
    let out = pull_sorted(&mut h, 4);
    for (n, b) in out.iter().enumerate() {
        let kinds: Vec<(String, i32)> = b
            .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
            .map(|m| (m.roi_type().to_string(), m.id()))
            .collect();
        assert_eq!(
            kinds.iter().filter(|k| k.0 == "earlier").count(),
            1,
            "frame {n}: {kinds:?}"
        );
        assert_eq!(
            kinds.iter().filter(|k| k.0 == "mine").count(),
            1,
            "frame {n}: {kinds:?}"
        );
        let e = Enrichment::read(b).unwrap().unwrap();
        if n % 2 == 1 {
            assert!(e.outputs.get::<bool>("stale").unwrap());
            assert!(
                !e.outputs.has_field("rois"),
                "frame {n}: another frame's rois"
            );
            let mine = kinds.iter().find(|k| k.0 == "mine").unwrap();
            assert_ne!(
                mine.1, 1,
                "frame {n}: the carried region's id is the frame's own"
            );
        }
    }
}

/// What leaves the pool's src pad, in order: frames by sequence number, and EOS.
fn record_output(h: &Harness) -> Arc<std::sync::Mutex<Vec<String>>> {
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let l = log.clone();
    let pool = h
        .element()
        .unwrap()
        .downcast::<gst::Bin>()
        .unwrap()
        .by_name("pool")
        .unwrap();
    pool.static_pad("src").unwrap().add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            match &info.data {
                Some(gst::PadProbeData::Buffer(b)) => l
                    .lock()
                    .unwrap()
                    .push(format!("frame {}", SeqMeta::read(b).unwrap().unwrap().seq)),
                Some(gst::PadProbeData::Event(e)) if e.type_() == gst::EventType::Eos => {
                    l.lock().unwrap().push("eos".into())
                }
                _ => {}
            }
            gst::PadProbeReturn::Ok
        },
    );
    log
}

#[test]
fn eos_waits_for_the_frames_held_for_their_source() {
    // Frames 1–3 are done and held while their source (frame 0) is still at its gate when
    // EOS comes: EOS leaves after all four, never before a held frame.
    let server = servers::FakeServer::start("geometry");
    let (mut h, pool, gate, _) = held_source(&server, "");
    let log = record_output(&h);
    for n in 0..4 {
        h.push(frame(n, AnalysisLabel::Static)).unwrap();
    }
    wait_for("frames 1-3 delivered", LIMIT, || stat(&pool, "pushed") == 3);
    assert!(h.push_event(gst::event::Eos::new()));
    assert!(log.lock().unwrap().is_empty(), "{:?}", log.lock().unwrap());
    gate.open();
    wait_for("EOS out", LIMIT, || log.lock().unwrap().len() == 5);
    assert_eq!(
        *log.lock().unwrap(),
        vec!["frame 0", "frame 1", "frame 2", "frame 3", "eos"]
    );
    assert_eq!(stat(&pool, "carried"), 3);
}

#[test]
fn stopping_while_frames_are_held_forgets_them_without_a_hang() {
    // READY while the source hangs at its gate and frames 1–3 are held: the stop gives the
    // busy worker its grace, forgets the held frames (counted), and returns.
    let server = servers::FakeServer::start("geometry");
    let (mut h, pool, gate, _) = held_source(&server, "");
    for n in 0..4 {
        h.push(frame(n, AnalysisLabel::Static)).unwrap();
    }
    wait_for("frames 1-3 delivered", LIMIT, || stat(&pool, "pushed") == 3);
    let element = h.element().unwrap();
    sync::within(LIMIT, move || {
        element.set_state(gst::State::Ready).unwrap();
    });
    assert_eq!(stat(&pool, "carry-flushed"), 3);
    assert!(h.try_pull().is_none(), "a held frame left after the stop");
    gate.open();
}

#[test]
fn a_new_segment_ends_the_reuse_of_the_frames_before_it() {
    // A frame after a restart (new segment, new epoch) never carries the results of one
    // before it, however young they are.
    let server = servers::FakeServer::start("geometry");
    let (mut h, pool) = harness(&format!(
        "workers=2 servers={} model=frames only-label=motion carry-forward=1000000000",
        server.http_url()
    ));
    h.push(frame(0, AnalysisLabel::Motion)).unwrap();
    h.push(frame(1, AnalysisLabel::Static)).unwrap();
    let before = pull_sorted(&mut h, 2);
    assert_eq!(staleness(&before[1]), Some((true, FRAME.nseconds())));
    let mut segment = gst::FormattedSegment::<gst::ClockTime>::new();
    segment.set_base(FRAME * 2);
    assert!(h.push_event(gst::event::Segment::new(&segment)));
    h.push(frame(0, AnalysisLabel::Static)).unwrap();
    let after = pull_sorted(&mut h, 1);
    assert_eq!(SeqMeta::read(&after[0]).unwrap().unwrap().epoch, 1);
    assert_eq!(
        staleness(&after[0]),
        None,
        "results carried across the restart"
    );
    assert_eq!(stat(&pool, "carried"), 1);
}
