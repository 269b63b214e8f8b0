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

/// Pops the element messages of `name` that are on `bus` now.
fn stats_messages(bus: &gst::Bus, name: &str) -> Vec<gst::Structure> {
    std::iter::from_fn(|| bus.pop_filtered(&[gst::MessageType::Element]))
        .filter_map(|m| m.structure().map(|s| s.to_owned()))
        .filter(|s| s.name() == name)
        .collect()
}

#[test]
fn stats_are_posted_every_stats_interval_on_the_pipeline_clock() {
    init();
    // An hour: before PLAYING the timer runs on the system clock, where it must not fire
    // during the test; on the test clock, time is cranked.
    const INTERVAL: gst::ClockTime = gst::ClockTime::from_seconds(3600);
    for element in ["resequencer", "enrichpool", "frameanalyzer"] {
        let pipeline = gst::parse::launch(&format!(
            "appsrc is-live=true format=time \
             caps=video/x-raw,format=GRAY8,width=16,height=16,framerate=30/1 \
             ! {element} name=e stats-interval={} ! fakesink sync=false async=false",
            INTERVAL.nseconds()
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let clock = gst_check::TestClock::new();
        pipeline.use_clock(Some(&clock));
        let bus = pipeline.bus().unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let name = format!("{element}-stats");
        // Nothing else waits on the clock: each pending entry is the stats timer's, one
        // interval after the previous one; each crank posts exactly one message.
        let mut due = Vec::new();
        for _ in 0..3 {
            let (pending, ids) = clock.timed_wait_for_multiple_pending_ids(1, 10_000);
            assert!(pending, "{element}: no stats timer on the pipeline's clock");
            due.push(ids[0].time());
            assert!(stats_messages(&bus, &name).is_empty(), "{element}: early");
            assert!(clock.crank());
            let posted = bus
                .timed_pop_filtered(
                    gst::ClockTime::from_seconds(10),
                    &[gst::MessageType::Element],
                )
                .unwrap_or_else(|| panic!("{element}: no message after the crank"));
            assert_eq!(posted.structure().unwrap().name(), name.as_str());
            assert_eq!(posted.src().unwrap().name(), "e");
        }
        assert_eq!(due[1] - due[0], INTERVAL, "{element}: {due:?}");
        assert_eq!(due[2] - due[1], INTERVAL, "{element}: {due:?}");
        pipeline.set_state(gst::State::Null).unwrap();
        assert!(
            stats_messages(&bus, &name).is_empty(),
            "{element}: a message after the crank"
        );
    }
}

#[test]
fn the_last_stats_message_covers_the_whole_stream() {
    init();
    // An interval far longer than the run: the one message is the one posted at EOS.
    for (element, field) in [
        ("resequencer", "pushed"),
        ("enrichpool", "pushed"),
        ("frameanalyzer", "frames"),
    ] {
        let pipeline = gst::parse::launch(&format!(
            "videotestsrc num-buffers=25 ! video/x-raw,width=16,height=16 \
             ! {element} name=e stats-interval=3600000000000 ! fakesink"
        ))
        .unwrap();
        let bus = pipeline.bus().unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let mut last = None;
        loop {
            let msg = bus
                .timed_pop(gst::ClockTime::from_seconds(30))
                .unwrap_or_else(|| panic!("{element}: no EOS within 30 s"));
            match msg.view() {
                gst::MessageView::Element(e) => last = e.structure().map(|s| s.to_owned()),
                gst::MessageView::Eos(_) => break,
                gst::MessageView::Error(e) => panic!("{element}: {e:?}"),
                _ => {}
            }
        }
        pipeline.set_state(gst::State::Null).unwrap();
        let last = last.unwrap_or_else(|| panic!("{element}: no stats message before EOS"));
        assert_eq!(last.name(), format!("{element}-stats").as_str());
        assert_eq!(last.get::<u64>(field).unwrap(), 25, "{element}: {last}");
    }
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
fn every_property_is_documented_in_gst_inspect_and_readme() {
    init();
    let readme = include_str!("../README.md");
    for element in ["resequencer", "enrichpool", "frameanalyzer", "metapublish"] {
        // README's section of the element: from its heading to the next `## `.
        let heading = format!("\n## `{element}`\n");
        let from = readme.find(&heading).expect("a README section per element") + 1;
        let section = &readme[from..];
        let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
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
        let instance = gst::ElementFactory::make(element).build().unwrap();
        let inherited: Vec<String> = ["name", "parent", "qos"].map(String::from).to_vec();
        let own: Vec<gst::glib::ParamSpec> = instance
            .list_properties()
            .iter()
            .filter(|p| !inherited.contains(&p.name().to_string()))
            .cloned()
            .collect();
        assert!(own.len() >= 5, "{element}: {} properties", own.len());
        for prop in own {
            let name = prop.name();
            let blurb = prop.blurb().unwrap_or_default();
            // A sentence that says more than the name, shown by gst-inspect-1.0 as it is.
            assert!(
                blurb.len() >= 30 && blurb != prop.nick() && !blurb.eq_ignore_ascii_case(name),
                "{element}: {name} has no real description: {blurb:?}"
            );
            let line = text
                .lines()
                .find(|l| {
                    // Properties are listed two spaces in; deeper lines are their details.
                    l.strip_prefix("  ").is_some_and(|l| {
                        l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}:"))
                    })
                })
                .unwrap_or_else(|| panic!("{element}: {name} missing from gst-inspect-1.0"));
            assert!(
                line.contains(blurb),
                "{element}: gst-inspect-1.0 shows {line:?}, not the blurb {blurb:?}"
            );
            assert!(
                section.contains(&format!("`{name}`")),
                "{element}: {name} is not documented in README's section"
            );
        }
        // Units are told where a number has one.
        for time_property in [
            "latency",
            "timeout",
            "idle-timeout",
            "stats-interval",
            "drain-timeout",
            "batch-interval",
        ] {
            if let Some(p) = instance.find_property(time_property) {
                let blurb = p.blurb().unwrap_or_default();
                assert!(
                    blurb.contains("nanosecond"),
                    "{element}: {time_property} does not say its unit: {blurb}"
                );
            }
        }
    }
    let out = gst_command("gst-inspect-1.0")
        .arg("enrichpool")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("\"process\""), "the process signal is listed");
}
