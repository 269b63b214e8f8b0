//! The resequencer in real pipelines: a live `videotestsrc`, a stage that reorders (and
//! loses) frames, the resequencer and a sink; and the built plugin under `gst-launch-1.0`.

#[path = "common/plugin.rs"]
mod plugin;
#[path = "common/shuffle.rs"]
mod shuffle;

use std::sync::{Arc, Mutex};

use gst::prelude::*;
use gstordered::meta::SeqMeta;
use plugin::gst_command;
use shuffle::{ShuffleConfig, shuffle};

const FRAME: gst::ClockTime = gst::ClockTime::from_nseconds(33_333_333);

fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstordered::plugin_register_static().unwrap();
    });
}

struct Outcome {
    /// (PTS, sequence number) of each frame at the sink, in arrival order.
    frames: Vec<(gst::ClockTime, Option<u64>)>,
    stats: gst::Structure,
}

/// `videotestsrc is-live=true ! shuffle ! resequencer ! appsink`, run to EOS.
fn run_live(n: u64, config: ShuffleConfig, reseq_props: &[(&str, &str)]) -> Outcome {
    init();
    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("videotestsrc")
        .property("is-live", true)
        .property("num-buffers", n as i32)
        .property_from_str("pattern", "ball")
        .build()
        .unwrap();
    let caps = gst::ElementFactory::make("capsfilter")
        .property(
            "caps",
            gst::Caps::builder("video/x-raw")
                .field("format", "I420")
                .field("width", 64)
                .field("height", 48)
                .field("framerate", gst::Fraction::new(30, 1))
                .build(),
        )
        .build()
        .unwrap();
    let stage = shuffle(config);
    let reseq = gst::ElementFactory::make("resequencer").build().unwrap();
    for (name, value) in reseq_props {
        reseq.set_property_from_str(name, value);
    }
    let sink = gst_app::AppSink::builder()
        .sync(false)
        .async_(false)
        .build();
    let frames = Arc::new(Mutex::new(Vec::new()));
    let log = frames.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let buffer = sample.buffer().unwrap();
                let seq = SeqMeta::read(buffer).map(|m| m.unwrap().seq);
                log.lock().unwrap().push((buffer.pts().unwrap(), seq));
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    pipeline
        .add_many([
            &src,
            &caps,
            stage.sink.upcast_ref(),
            stage.src.upcast_ref(),
            &reseq,
            sink.upcast_ref(),
        ])
        .unwrap();
    gst::Element::link_many([&src, &caps, stage.sink.upcast_ref()]).unwrap();
    gst::Element::link_many([stage.src.upcast_ref(), &reseq, sink.upcast_ref()]).unwrap();

    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(120),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("pipeline neither finished nor failed within 120 s");
    if let gst::MessageView::Error(err) = msg.view() {
        panic!("pipeline error: {} ({:?})", err.error(), err.debug());
    }
    let stats = reseq.property::<gst::Structure>("stats");
    pipeline.set_state(gst::State::Null).unwrap();
    let frames = std::mem::take(&mut *frames.lock().unwrap());
    Outcome { frames, stats }
}

fn stat(o: &Outcome, name: &str) -> u64 {
    o.stats.get::<u64>(name).unwrap()
}

fn assert_strictly_increasing(o: &Outcome) {
    for pair in o.frames.windows(2) {
        assert!(
            pair[0].0 < pair[1].0,
            "PTS not increasing: {:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
}

#[test]
fn live_source_reordered_by_pts_comes_out_in_order() {
    let n = 90;
    let config = ShuffleConfig {
        block: 5,
        stamp_seq: false,
        seed: 1,
        frame_duration: FRAME,
        lose_every: None,
    };
    let o = run_live(n, config, &[("latency", "1000000000")]);
    assert_strictly_increasing(&o);
    assert_eq!(o.frames.len() as u64, n);
    assert!(o.frames.iter().all(|(_, seq)| seq.is_none()));
    assert_eq!(stat(&o, "pushed"), n);
    assert!(stat(&o, "reordered") > 0, "the stage must really reorder");
    assert_eq!(stat(&o, "skipped") + stat(&o, "late"), 0);
}

#[test]
fn live_source_reordered_by_sequence_comes_out_in_order() {
    let n = 90;
    let config = ShuffleConfig {
        block: 6,
        stamp_seq: true,
        seed: 2,
        frame_duration: FRAME,
        lose_every: None,
    };
    let o = run_live(
        n,
        config,
        &[("latency", "1000000000"), ("order-by", "sequence")],
    );
    assert_strictly_increasing(&o);
    let seqs: Vec<u64> = o.frames.iter().map(|(_, s)| s.unwrap()).collect();
    assert_eq!(seqs, (0..n).collect::<Vec<_>>());
    assert!(stat(&o, "reordered") > 0);
}

#[test]
fn live_source_with_lost_frames_skips_exactly_those() {
    let n = 60;
    let config = ShuffleConfig {
        block: 4,
        stamp_seq: true,
        seed: 3,
        frame_duration: FRAME,
        lose_every: Some(10),
    };
    let lost: Vec<u64> = (0..n).filter(|&s| config.loses(s)).collect();
    let o = run_live(n, config, &[("latency", "300000000")]);
    assert_strictly_increasing(&o);
    let seqs: Vec<u64> = o.frames.iter().map(|(_, s)| s.unwrap()).collect();
    let expected: Vec<u64> = (0..n).filter(|s| !lost.contains(s)).collect();
    assert_eq!(seqs, expected);
    assert_eq!(stat(&o, "skipped"), lost.len() as u64);
    assert_eq!(stat(&o, "in"), n - lost.len() as u64);
}

#[test]
fn stats_are_posted_every_stats_interval() {
    init();
    let pipeline = gst::parse::launch(
        "videotestsrc is-live=true ! video/x-raw,width=32,height=24,framerate=30/1 \
         ! resequencer name=r stats-interval=100000000 ! fakesink",
    )
    .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let msg = bus
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(10),
                &[gst::MessageType::Element, gst::MessageType::Error],
            )
            .expect("no stats message within 10 s");
        let s = msg.structure().unwrap();
        assert_eq!(s.name(), "resequencer-stats", "{msg:?}");
        assert_eq!(msg.src().unwrap().name(), "r");
        seen.push(s.get::<u64>("in").unwrap());
    }
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(seen.windows(2).all(|p| p[0] <= p[1]), "{seen:?}");
    assert!(
        seen[2] > 0,
        "frames flowed while stats were posted: {seen:?}"
    );
}

#[test]
fn gst_launch_runs_a_live_pipeline_through_the_resequencer() {
    let out = gst_command("gst-launch-1.0")
        .args([
            "-q",
            "videotestsrc",
            "is-live=true",
            "num-buffers=20",
            "!",
            "resequencer",
            "latency=50000000",
            "!",
            "fakesink",
            "sync=true",
        ])
        .output()
        .expect("gst-launch-1.0 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn gst_inspect_documents_every_property() {
    let elements: [(&str, &[&str]); 3] = [
        (
            "resequencer",
            &[
                "order-by",
                "latency",
                "max-window",
                "stats",
                "stats-interval",
            ],
        ),
        (
            "enrichpool",
            &[
                "workers",
                "max-workers",
                "idle-timeout",
                "max-size-buffers",
                "max-size-bytes",
                "max-size-time",
                "leaky",
                "timeout",
                "on-error",
                "retries",
                "latency",
                "overlay",
                "stats",
                "stats-interval",
            ],
        ),
        (
            "frameanalyzer",
            &[
                "device",
                "block-size",
                "motion-threshold",
                "scene-threshold",
                "dark-threshold",
                "max-rois",
                "post-messages",
                "backend",
                "stats",
                "stats-interval",
            ],
        ),
    ];
    for (element, props) in elements {
        let out = gst_command("gst-inspect-1.0")
            .arg(element)
            .output()
            .expect("gst-inspect-1.0 runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        for prop in props {
            let line = text
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{prop} ")))
                .unwrap_or_else(|| panic!("{element}: {prop} missing from gst-inspect-1.0 output"));
            assert!(
                line.len() > 40,
                "{element}: {prop} has no real description: {line}"
            );
        }
        assert!(
            text.contains("nanoseconds") || text.contains("pixels"),
            "{element}: units shown"
        );
    }
    let out = gst_command("gst-inspect-1.0")
        .arg("enrichpool")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("\"process\""), "the process signal is listed");
}
