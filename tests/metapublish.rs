//! `metapublish`: every frame's record, in order, with the values on the frame, read back by
//! independent JSON parsers (serde_json, Python's json); gap records for frames lost before
//! it; a real MQTT broker (mosquitto) and subscriber (mosquitto_sub), stopped mid-stream;
//! MQTT 5 over TLS with a password; a TCP server that goes away; a target that is down,
//! with `on-disconnect` both ways; stdout through gst-launch-1.0.

#[path = "common/harness.rs"]
mod harness;
#[path = "common/launch.rs"]
mod launch;
#[path = "common/misbehave.rs"]
mod misbehave;
#[path = "common/mosquitto.rs"]
mod mosquitto;
#[path = "common/plugin.rs"]
mod plugin;
#[path = "common/servers.rs"]
mod servers;
#[path = "common/sync.rs"]
mod sync;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_video::VideoRegionOfInterestMeta;
use gstordered::EnrichPool;
use gstordered::enrichpool::Verdict;
use gstordered::meta::{Enrichment, FrameAnalysis, SeqMeta};
use harness::{init, stat, wait_for};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gst-ordered-metapublish-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The outage test measures how long frames wait inside the element: it runs alone, the
/// others (which run in parallel among themselves) do not take the machine's two cores
/// meanwhile.
static CPU: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared_cpu() -> std::sync::RwLockReadGuard<'static, ()> {
    CPU.read().unwrap_or_else(|e| e.into_inner())
}

fn alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    CPU.write().unwrap_or_else(|e| e.into_inner())
}

/// What a run produced: the frames at `appsink name=sink`, and the pipeline (in NULL).
struct Out {
    /// The buffers only: appsink (1.22) sets new caps on the sample it handed out last.
    frames: Vec<gst::Buffer>,
    pipeline: gst::Pipeline,
}

impl Out {
    fn publisher(&self) -> gst::Element {
        self.pipeline.by_name("pub").expect("metapublish name=pub")
    }
}

/// Runs `desc` to EOS: `setup` before PLAYING, `during` on each frame at the sink.
fn run(
    desc: &str,
    setup: impl FnOnce(&gst::Pipeline),
    during: impl Fn(&gst::BufferRef) + Send + Sync + 'static,
) -> Out {
    init();
    misbehave::register();
    let pipeline = launch::pipeline(desc);
    setup(&pipeline);
    let sink = launch::app_sink(&pipeline);
    let samples = Arc::new(Mutex::new(Vec::new()));
    let got = samples.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().unwrap();
                let buffer = sample.buffer_owned().unwrap();
                drop(sample);
                during(&buffer);
                got.lock().unwrap().push(buffer);
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let deadline = Instant::now() + LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no EOS within {LIMIT:?}: {desc}");
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_nseconds(left.as_nanos() as u64)) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{desc}: {} ({:?})", e.error(), e.debug()),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    let frames = std::mem::take(&mut *samples.lock().unwrap());
    Out { frames, pipeline }
}

/// Counts the frames that reach the pipeline's `appsink name=sink`.
fn count_frames(pipeline: &gst::Pipeline) -> Arc<AtomicU64> {
    let passed = Arc::new(AtomicU64::new(0));
    let pc = passed.clone();
    launch::app_sink(pipeline).set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                sink.pull_sample().unwrap();
                pc.fetch_add(1, Ordering::SeqCst);
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    passed
}

fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn of_type<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["type"] == kind).collect()
}

/// A pseudo-random sleep in 0..max_ms, fixed per sequence number.
fn jitter(seq: u64, max_ms: u64) -> Duration {
    let mixed = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
    Duration::from_micros(mixed % (max_ms * 1000))
}

fn f64_of(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn each_frame_has_its_record_in_order_with_the_values_on_the_frame() {
    let _cpu = shared_cpu();
    let file = scratch("values.jsonl");
    let n = 48;
    let desc = format!(
        "videotestsrc pattern=ball num-buffers={n} \
         ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
         ! frameanalyzer ! enrichpool name=pool workers=3 ! resequencer \
         ! metapublish name=pub location=file://{} ! appsink name=sink sync=false",
        file.display()
    );
    let out = run(
        &desc,
        |p| {
            let pool = p.by_name("pool").unwrap().downcast::<EnrichPool>().unwrap();
            pool.set_handler(|job| {
                let seq = SeqMeta::read(job.buffer).unwrap().unwrap().seq;
                // Out of order on the workers; the resequencer restores it.
                std::thread::sleep(jitter(seq, 6));
                job.outputs.set("triple", seq * 3);
                job.outputs.set("negative", -(seq as i32) - 1);
                job.outputs.set("ratio", seq as f64 / 7.0);
                job.outputs.set("tiny", 1e-12 * (seq + 1) as f64);
                job.outputs.set("even", seq.is_multiple_of(2));
                job.outputs
                    .set("label", format!("frame \"{seq}\"\\\n\t\u{1}é"));
                job.outputs.set(
                    "scores",
                    gst::Array::new([seq as f64 * 0.5, -1.25, f64::from(u32::MAX)]),
                );
                let mut roi =
                    VideoRegionOfInterestMeta::add(job.buffer, "face", (seq as u32, 2, 30, 40));
                roi.set_id(100 + seq as i32);
                roi.add_param(
                    gst::Structure::builder("detection")
                        .field("confidence", 0.5 + seq as f64 / 1000.0)
                        .field("class", "face")
                        .build(),
                );
                let mut eye = VideoRegionOfInterestMeta::add(job.buffer, "eye", (5, 6, 7, 8));
                eye.set_parent_id(100 + seq as i32);
                Ok(Verdict::Keep)
            });
        },
        |_| {},
    );
    assert_eq!(out.frames.len(), n);
    let text = std::fs::read_to_string(&file).unwrap();
    let records = parse_lines(&text);
    let frames = of_type(&records, "frame");
    assert_eq!(frames.len(), n, "one record per frame");
    assert_eq!(
        records.last().unwrap()["type"],
        "eos",
        "EOS is the last record"
    );
    assert!(of_type(&records, "gap").is_empty());
    for (buffer, record) in out.frames.iter().zip(&frames) {
        assert_eq!(record["v"], 1);
        let seq = SeqMeta::read(buffer).unwrap().unwrap();
        assert_eq!(record["seq"].as_u64(), Some(seq.seq), "{record}");
        assert_eq!(record["epoch"].as_u64(), Some(seq.epoch.into()));
        let pts = buffer.pts().unwrap().nseconds();
        assert_eq!(record["pts"].as_u64(), Some(pts));
        assert_eq!(record["running-time"].as_u64(), Some(pts), "segment from 0");
        assert_eq!(
            record["duration"].as_u64(),
            buffer.duration().map(|d| d.nseconds())
        );
        let a = FrameAnalysis::read(buffer).unwrap().unwrap();
        let ra = &record["analysis"];
        assert_eq!(f64_of(&ra["luma-mean"]), a.luma_mean);
        assert_eq!(f64_of(&ra["luma-stddev"]), a.luma_stddev);
        assert_eq!(f64_of(&ra["motion"]), a.motion);
        assert_eq!(f64_of(&ra["scene-change"]), a.scene_change);
        assert_eq!(f64_of(&ra["sharpness"]), a.sharpness);
        assert_eq!(ra["label"], a.label.as_str());
        assert_eq!(ra["backend"], a.backend.as_str());
        let e = Enrichment::read(buffer).unwrap().unwrap();
        let re = &record["enrichment"];
        assert_eq!(re["worker"].as_u64(), Some(e.worker.into()));
        assert_eq!(re["server"], e.server.as_str());
        assert_eq!(re["attempts"].as_u64(), Some(e.attempts.into()));
        assert_eq!(re["processing-time"].as_u64(), Some(e.processing_time));
        let o = &re["outputs"];
        let get = |name: &str| e.outputs.value(name).unwrap();
        assert_eq!(
            o["triple"].as_u64(),
            Some(get("triple").get::<u64>().unwrap())
        );
        assert_eq!(
            o["negative"].as_i64(),
            Some(get("negative").get::<i32>().unwrap().into())
        );
        assert_eq!(f64_of(&o["ratio"]), get("ratio").get::<f64>().unwrap());
        assert_eq!(f64_of(&o["tiny"]), get("tiny").get::<f64>().unwrap());
        assert_eq!(
            o["even"].as_bool(),
            Some(get("even").get::<bool>().unwrap())
        );
        assert_eq!(o["label"], get("label").get::<String>().unwrap().as_str());
        let scores: Vec<f64> = get("scores")
            .get::<gst::Array>()
            .unwrap()
            .iter()
            .map(|v| v.get::<f64>().unwrap())
            .collect();
        let got: Vec<f64> = o["scores"].as_array().unwrap().iter().map(f64_of).collect();
        assert_eq!(got, scores);
        let rois: Vec<_> = buffer.iter_meta::<VideoRegionOfInterestMeta>().collect();
        let rr = record["rois"].as_array().unwrap();
        assert_eq!(rr.len(), rois.len());
        for (meta, r) in rois.iter().zip(rr) {
            assert_eq!(r["id"].as_i64(), Some(meta.id().into()));
            assert_eq!(r["parent-id"].as_i64(), Some(meta.parent_id().into()));
            assert_eq!(r["type"], meta.roi_type());
            let (x, y, w, h) = meta.rect();
            assert_eq!(
                (
                    r["x"].as_u64(),
                    r["y"].as_u64(),
                    r["w"].as_u64(),
                    r["h"].as_u64()
                ),
                (
                    Some(x.into()),
                    Some(y.into()),
                    Some(w.into()),
                    Some(h.into())
                )
            );
            match meta.param("detection") {
                Some(d) => {
                    let rd = &r["params"]["detection"];
                    assert_eq!(
                        f64_of(&rd["confidence"]),
                        d.get::<f64>("confidence").unwrap()
                    );
                    assert_eq!(rd["class"], d.get::<&str>("class").unwrap());
                }
                None => assert_eq!(r["params"].get("detection"), None),
            }
        }
    }
    let publisher = out.publisher();
    assert_eq!(stat(&publisher, "records"), n as u64 + 1);
    assert_eq!(stat(&publisher, "published"), n as u64 + 1);
    assert_eq!(stat(&publisher, "dropped"), 0);

    // A second, independent parser: Python's json, on the same file.
    let check = "import json, sys\n\
                 rs = [json.loads(l) for l in open(sys.argv[1])]\n\
                 fs = [r for r in rs if r['type'] == 'frame']\n\
                 print(len(fs), sum(r['enrichment']['outputs']['triple'] for r in fs), \
                 fs[-1]['enrichment']['outputs']['label'] == 'frame \"%d\"\\\\\\n\\t\\x01\\u00e9' % fs[-1]['seq'])";
    let python = if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let output = std::process::Command::new(python)
        .args(["-c", check])
        .arg(&file)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let triples: u64 = (0..n as u64).map(|s| s * 3).sum();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("{n} {triples} True")
    );
}

/// Runs `desc`, whose `enrichpool name=pool` drops the frames of `seq % 5 == 3` (each an
/// `ordered-gap` with reason `dropped`).
fn run_dropping_every_fifth(desc: &str) -> Out {
    run(
        desc,
        |p| {
            let pool = p.by_name("pool").unwrap().downcast::<EnrichPool>().unwrap();
            pool.set_handler(|job| {
                let seq = SeqMeta::read(job.buffer).unwrap().unwrap().seq;
                Ok(if seq % 5 == 3 {
                    Verdict::Drop
                } else {
                    Verdict::Keep
                })
            });
        },
        |_| {},
    )
}

#[test]
fn frames_lost_before_it_become_gap_records_announced_or_not() {
    let _cpu = shared_cpu();
    let file = scratch("gaps.jsonl");
    let n = 60u64;
    // The handler drops seq % 5 == 3 (ordered-gap, reason dropped); after the resequencer
    // an element drops every 7th frame without a word.
    let desc = format!(
        "videotestsrc num-buffers={n} ! video/x-raw,width=64,height=48,framerate=30/1 \
         ! enrichpool name=pool workers=2 ! resequencer \
         ! orderedmisbehave mode=nothing every=7 \
         ! metapublish name=pub location={} ! appsink name=sink sync=false",
        file.display()
    );
    let out = run_dropping_every_fifth(&desc);
    let records = parse_lines(&std::fs::read_to_string(&file).unwrap());
    let mut expected = 0u64;
    let (mut dropped, mut unannounced) = (BTreeSet::new(), BTreeSet::new());
    for r in &records {
        match r["type"].as_str().unwrap() {
            "frame" => {
                assert_eq!(r["seq"].as_u64(), Some(expected), "{r}");
                expected += 1;
            }
            "gap" => {
                assert_eq!(
                    r["seq"].as_u64(),
                    Some(expected),
                    "a gap where frames are missing: {r}"
                );
                assert_eq!(r["epoch"], 0);
                let count = r["count"].as_u64().unwrap();
                let set = match r["reason"].as_str().unwrap() {
                    "dropped" => &mut dropped,
                    "unannounced" => &mut unannounced,
                    other => panic!("reason {other}: {r}"),
                };
                set.extend(expected..expected + count);
                if r["reason"] == "dropped" {
                    // The resequencer's GAP event has the time the frame would have had
                    // (estimated from its neighbours: to the nanosecond's rounding).
                    let pts = r["pts"].as_u64().unwrap();
                    assert!(pts.abs_diff(expected * 1_000_000_000 / 30) <= 1, "{r}");
                    assert!(r["duration"].as_u64().unwrap() > 0);
                }
                expected += count;
            }
            "eos" => {}
            other => panic!("record type {other}"),
        }
    }
    assert_eq!(
        expected, n,
        "frames and gaps cover the stream once, in order"
    );
    let want_dropped: BTreeSet<u64> = (0..n).filter(|s| s % 5 == 3).collect();
    assert_eq!(dropped, want_dropped);
    // Frames of offset 6, 13, ... (misbehave's every 7th) that the handler kept.
    let want_unannounced: BTreeSet<u64> = (0..n).filter(|s| s % 7 == 6 && s % 5 != 3).collect();
    assert_eq!(unannounced, want_unannounced);
    let seqs: Vec<u64> = out
        .frames
        .iter()
        .map(|b| SeqMeta::read(b).unwrap().unwrap().seq)
        .collect();
    let recorded: Vec<u64> = of_type(&records, "frame")
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        recorded, seqs,
        "a record for each frame that passed, none other"
    );
    assert_eq!(
        stat(&out.publisher(), "gaps"),
        (want_dropped.len() + want_unannounced.len()) as u64
    );
}

#[test]
fn a_flushing_seek_is_a_flush_record_and_a_new_epoch_without_false_gaps() {
    let _cpu = shared_cpu();
    let file = scratch("seek.jsonl");
    let seeked = Arc::new(AtomicU64::new(0));
    let frames = Arc::new(AtomicU64::new(0));
    let desc = format!(
        "videotestsrc num-buffers=90 ! video/x-raw,width=64,height=48,framerate=30/1 \
         ! enrichpool workers=2 ! resequencer ! metapublish name=pub location={} \
         ! appsink name=sink sync=false max-buffers=1",
        file.display()
    );
    let (f, s) = (frames.clone(), seeked.clone());
    let pipeline_slot: Arc<Mutex<Option<gst::Pipeline>>> = Arc::default();
    let slot = pipeline_slot.clone();
    let seek_thread = Arc::new(Mutex::new(None));
    let st = seek_thread.clone();
    let out = run(
        &desc,
        move |p| *slot.lock().unwrap() = Some(p.clone()),
        move |_| {
            // After 30 frames, once: a flushing seek back to 1 s, from another thread (as
            // an application does).
            if f.fetch_add(1, Ordering::SeqCst) + 1 == 30 && s.fetch_add(1, Ordering::SeqCst) == 0 {
                let p = pipeline_slot.lock().unwrap().clone().unwrap();
                *st.lock().unwrap() = Some(std::thread::spawn(move || {
                    p.seek_simple(
                        gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
                        gst::ClockTime::SECOND,
                    )
                    .unwrap();
                }));
            }
        },
    );
    if let Some(t) = seek_thread.lock().unwrap().take() {
        t.join().unwrap();
    }
    let records = parse_lines(&std::fs::read_to_string(&file).unwrap());
    let flushes: Vec<usize> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r["type"] == "flush")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(flushes.len(), 1, "one flush record");
    assert!(
        of_type(&records, "gap").is_empty(),
        "a restart is not a loss"
    );
    let after: Vec<&Value> = records[flushes[0]..]
        .iter()
        .filter(|r| r["type"] == "frame")
        .collect();
    assert!(!after.is_empty());
    let before_epoch = records[..flushes[0]]
        .iter()
        .filter(|r| r["type"] == "frame")
        .map(|r| r["epoch"].as_u64().unwrap())
        .max()
        .unwrap();
    for (i, r) in after.iter().enumerate() {
        assert!(r["epoch"].as_u64().unwrap() > before_epoch, "{r}");
        assert_eq!(
            r["seq"].as_u64(),
            Some(i as u64),
            "from 0 in the new epoch: {r}"
        );
    }
    for (i, r) in after.iter().enumerate() {
        let pts = (30 + i as u64) * 1_000_000_000 / 30;
        assert_eq!(
            r["pts"].as_u64(),
            Some(pts),
            "from the seek's position on: {r}"
        );
        // In the new segment (from 1 s), running time starts again at 0.
        assert_eq!(r["running-time"].as_u64(), Some(pts - 1_000_000_000), "{r}");
    }
    assert_eq!(
        of_type(&records, "frame").len(),
        out.frames.len(),
        "a record for each frame that reached the sink"
    );
}

/// When the frame inside entered, and the longest time a frame spent inside.
type Inside = Arc<Mutex<(Option<Instant>, Duration)>>;

/// Time spent inside the element per frame, at most (sink pad to src pad).
fn time_inside(element: &gst::Element) -> Inside {
    let times: Inside = Arc::default();
    let t = times.clone();
    element
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            t.lock().unwrap().0 = Some(Instant::now());
            gst::PadProbeReturn::Ok
        });
    let t = times.clone();
    element
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            let mut t = t.lock().unwrap();
            if let Some(start) = t.0.take() {
                t.1 = t.1.max(start.elapsed());
            }
            gst::PadProbeReturn::Ok
        });
    times
}

#[test]
fn mqtt_broker_stopped_for_two_seconds_costs_exactly_the_dropped_records() {
    let _cpu = alone();
    let mut broker = mosquitto::Broker::start();
    let topic = "gst-ordered/outage";
    let sub = mosquitto::Subscriber::start(&broker, topic);
    let n = 240u64;
    // Live at 30 frames/s: 2 s of outage is 60 frames, more than max-pending.
    let desc = format!(
        "videotestsrc is-live=true num-buffers={n} ! video/x-raw,width=64,height=48,framerate=30/1 \
         ! enrichpool workers=2 ! resequencer latency=200000000 \
         ! metapublish name=pub location={} mqtt-qos=1 max-pending=10 \
         ! appsink name=sink sync=false",
        broker.url(topic)
    );
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    let tx = Mutex::new(tx);
    let count = AtomicU64::new(0);
    let inside: Arc<Mutex<Option<Inside>>> = Arc::default();
    let ins = inside.clone();
    // The stats, read while the frames flow: every reading balances.
    // (records, published, dropped, pending)
    type Reading = (u64, u64, u64, u64);
    let readings: Arc<Mutex<Vec<Reading>>> = Arc::default();
    let read = readings.clone();
    let publisher_slot: Arc<Mutex<Option<gst::Element>>> = Arc::default();
    let slot = publisher_slot.clone();
    let outage = std::thread::scope(|scope| {
        let broker = &mut broker;
        let stopper = scope.spawn(move || {
            // At frame 60: stopped (SIGTERM) for 2 s, started again on the same port.
            let at = rx.recv_timeout(LIMIT).expect("frame 60 within the limit");
            broker.stop();
            std::thread::sleep(Duration::from_secs(2));
            let restarted_at = rx.try_iter().last().unwrap_or(at);
            broker.restart();
            (at, restarted_at)
        });
        let out = run(
            &desc,
            |p| {
                let publisher = p.by_name("pub").unwrap();
                *ins.lock().unwrap() = Some(time_inside(&publisher));
                *slot.lock().unwrap() = Some(publisher);
            },
            move |_| {
                let i = count.fetch_add(1, Ordering::SeqCst) + 1;
                if i >= 60 {
                    let _ = tx.lock().unwrap().send(i);
                }
                if let Some(p) = publisher_slot.lock().unwrap().as_ref() {
                    let s = p.property::<gst::Structure>("stats");
                    let get = |f: &str| s.get::<u64>(f).unwrap();
                    read.lock().unwrap().push((
                        get("records"),
                        get("published"),
                        get("dropped"),
                        get("pending"),
                    ));
                }
            },
        );
        let outage = stopper.join().unwrap();
        (out, outage)
    });
    let (out, (stopped_at, restarted_at)) = outage;
    assert_eq!(out.frames.len() as u64, n, "every frame went on");
    let readings = readings.lock().unwrap();
    assert_eq!(readings.len() as u64, n);
    for &(records, published, dropped, pending) in readings.iter() {
        assert_eq!(records, published + dropped + pending, "{readings:?}");
    }
    let max_inside = inside.lock().unwrap().as_ref().unwrap().lock().unwrap().1;
    assert!(
        max_inside < Duration::from_millis(33),
        "a frame waited {max_inside:?} in metapublish, more than a frame interval"
    );
    let publisher = out.publisher();
    let (records, published, dropped) = (
        stat(&publisher, "records"),
        stat(&publisher, "published"),
        stat(&publisher, "dropped"),
    );
    assert_eq!(records, n + 1, "a record per frame and EOS");
    assert_eq!(published + dropped, records, "none pending after the drain");
    assert!(
        dropped > 0,
        "the outage (60 frames) is longer than max-pending (10)"
    );
    assert!(stat(&publisher, "reconnects") >= 1);

    // The subscriber (its session kept by the broker across the stop) gets every record
    // that was published; QoS 1 may repeat one, never reorder the first deliveries.
    let received = sub.wait_for(Duration::from_secs(30), |lines| {
        lines.iter().collect::<BTreeSet<_>>().len() as u64 >= published
    });
    let mut seen = BTreeSet::new();
    let mut firsts = Vec::new();
    for line in &received {
        if seen.insert(line.clone()) {
            firsts.push(serde_json::from_str::<Value>(line).unwrap());
        }
    }
    assert_eq!(
        firsts.len() as u64,
        published,
        "every published record arrived"
    );
    let seqs: Vec<u64> = firsts
        .iter()
        .filter(|r| r["type"] == "frame")
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    assert_eq!(firsts.last().unwrap()["type"], "eos");
    let missing: Vec<u64> = (0..n).filter(|s| !seqs.contains(s)).collect();
    assert_eq!(
        missing.len() as u64,
        dropped,
        "the lost ones are the dropped ones"
    );
    // And they are frames of the outage.
    let (first, last) = (missing[0], *missing.last().unwrap());
    assert!(
        first + 1 >= stopped_at.saturating_sub(64 + 10) && last < restarted_at + 90,
        "lost {first}..={last}, outage from frame {stopped_at} to {restarted_at}"
    );
}

#[test]
fn mqtt5_over_tls_with_a_password_delivers_every_record_once_in_order() {
    let _cpu = shared_cpu();
    let broker = mosquitto::Broker::start_secure();
    let topic = "gst-ordered/secure";
    let sub = mosquitto::Subscriber::start(&broker, topic);
    let ca = broker.secure.as_ref().unwrap().ca_file.clone();
    let n = 40;
    let desc = format!(
        "videotestsrc num-buffers={n} ! video/x-raw,width=64,height=48 ! frameanalyzer \
         ! metapublish name=pub location={} mqtt-version=5 mqtt-qos=1 tls-ca-file={} \
         credentials-file={} client-id=secure-test ! appsink name=sink sync=false",
        broker.url(topic),
        ca.display(),
        broker.credentials_file().display()
    );
    let out = run(&desc, |_| {}, |_| {});
    let publisher = out.publisher();
    assert_eq!(stat(&publisher, "published"), n + 1, "{}", broker.log());
    let received = sub.wait_for(Duration::from_secs(20), |l| l.len() as u64 > n);
    let records: Vec<Value> = received
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len() as u64, n + 1);
    for (i, r) in records[..n as usize].iter().enumerate() {
        assert_eq!(r["type"], "frame");
        assert!(r["seq"].is_null(), "no pool, no sequence");
        assert_eq!(r["pts"].as_u64(), Some(i as u64 * 1_000_000_000 / 30));
        assert!(r["analysis"]["luma-mean"].is_number());
    }

    // A wrong password and an unknown CA: nothing published, each record counted, the
    // frames flow all the same, and the reason is told.
    let wrong = broker.dir.join("wrong");
    std::fs::write(&wrong, "camera\nnot the password\n").unwrap();
    for (extra, says) in [
        (
            format!(
                "tls-ca-file={} credentials-file={}",
                ca.display(),
                wrong.display()
            ),
            "uthori",
        ),
        (
            format!("credentials-file={}", broker.credentials_file().display()),
            "ertificate",
        ),
    ] {
        let desc = format!(
            "videotestsrc num-buffers=10 ! video/x-raw,width=64,height=48 \
             ! metapublish name=pub location={} {extra} drain-timeout=300000000 \
             ! appsink name=sink sync=false",
            broker.url(topic)
        );
        let out = run(&desc, |_| {}, |_| {});
        assert_eq!(out.frames.len(), 10);
        let p = out.publisher();
        assert_eq!((stat(&p, "published"), stat(&p, "dropped")), (0, 11));
        let stats = p.property::<gst::Structure>("stats");
        let error = stats.get::<String>("last-error").unwrap();
        assert!(error.contains(says), "{extra}: {error}");
    }
}

#[test]
fn a_tcp_server_that_goes_away_is_reconnected_and_the_order_holds() {
    let _cpu = shared_cpu();
    init();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let n = 200u64;
    let server = std::thread::spawn(move || {
        let mut lines = Vec::new();
        // The first connection: 20 records, then closed.
        let (first, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(first);
        for _ in 0..20 {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            lines.push(line);
        }
        drop(reader);
        // The next one: to the EOS record.
        let (second, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(second);
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let eos = line.contains("\"type\":\"eos\"");
            lines.push(line);
            if eos {
                break;
            }
        }
        // Kept open (and the listener) until the pipeline stopped: a close now would be
        // another reconnection.
        (lines, reader, listener)
    });
    let desc = format!(
        "videotestsrc is-live=true num-buffers={n} ! video/x-raw,width=64,height=48,framerate=200/1 \
         ! enrichpool ! resequencer ! metapublish name=pub location=tcp://127.0.0.1:{port} \
         on-disconnect=block ! appsink name=sink sync=false"
    );
    let out = run(&desc, |_| {}, |_| {});
    let (lines, _connection, _listener) =
        sync::bounded("the TCP server", Duration::from_secs(30), move || {
            server.join().unwrap()
        });
    let records: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l.trim()).unwrap())
        .collect();
    let seqs: Vec<u64> = of_type(&records, "frame")
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in order, none twice: {seqs:?}"
    );
    assert_eq!(seqs[..20], (0..20).collect::<Vec<_>>());
    assert_eq!(records.last().unwrap()["type"], "eos");
    let p = out.publisher();
    assert_eq!(stat(&p, "reconnects"), 1);
    assert_eq!(stat(&p, "dropped"), 0, "block: none dropped from the queue");
    assert_eq!(stat(&p, "published"), n + 1);
    // What TCP loses is what was written into the closing connection: not more than the
    // records sent after the 20 read, before the close was seen.
    assert!(seqs.len() as u64 + 64 >= n, "{} of {n} arrived", seqs.len());
}

#[test]
fn a_target_that_is_down_costs_records_not_frames_or_with_block_holds_the_video() {
    let _cpu = shared_cpu();
    init();
    // A port nobody listens on.
    let port = servers::free_port();
    let n = 100u64;
    let desc = |mode: &str| {
        format!(
            "videotestsrc num-buffers={n} ! video/x-raw,width=64,height=48 \
             ! metapublish name=pub location=tcp://127.0.0.1:{port} max-pending=3 \
             on-disconnect={mode} drain-timeout=0 ! appsink name=sink sync=false"
        )
    };
    // drop-oldest: every frame passes, every record is counted dropped.
    let out = run(&desc("drop-oldest"), |_| {}, |_| {});
    assert_eq!(out.frames.len() as u64, n);
    let p = out.publisher();
    assert_eq!(stat(&p, "published"), 0);
    assert_eq!(
        stat(&p, "dropped"),
        n + 1,
        "the queue's overflow, then what stop left"
    );
    assert_eq!(stat(&p, "pending"), 0);
    let stats = p.property::<gst::Structure>("stats");
    assert!(
        stats
            .get::<String>("last-error")
            .unwrap()
            .contains("onnection refused"),
        "{stats}"
    );

    // block: the video waits once max-pending records wait; stopping the pipeline lets go.
    let pipeline = launch::pipeline(&desc("block"));
    let passed = count_frames(&pipeline);
    let p = pipeline.by_name("pub").unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    wait_for("a frame waiting for room", LIMIT, || {
        stat(&p, "pending") == 3 && stat(&p, "blocked") == 1
    });
    assert_eq!(
        passed.load(Ordering::SeqCst),
        3,
        "the fourth frame waits for room"
    );
    sync::within(Duration::from_secs(20), move || {
        pipeline.set_state(gst::State::Null).unwrap();
    });
    assert_eq!(passed.load(Ordering::SeqCst), 3);
    assert_eq!(
        stat(&p, "dropped"),
        4,
        "the waiting record and the three pending"
    );
}

#[test]
fn gst_launch_writes_records_to_stdout() {
    let _cpu = shared_cpu();
    let output = plugin::gst_command("gst-launch-1.0")
        .args([
            "-q",
            "videotestsrc",
            "num-buffers=12",
            "!",
            "video/x-raw,width=64,height=48",
            "!",
            "frameanalyzer",
            "!",
            "metapublish",
            "location=-",
            "!",
            "fakesink",
        ])
        .output()
        .expect("gst-launch-1.0 runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let records = parse_lines(&String::from_utf8(output.stdout).unwrap());
    assert_eq!(of_type(&records, "frame").len(), 12);
    assert_eq!(records.last().unwrap()["type"], "eos");
    let labels: BTreeSet<&str> = of_type(&records, "frame")
        .iter()
        .map(|r| r["analysis"]["label"].as_str().unwrap())
        .collect();
    assert!(!labels.is_empty());
}

#[test]
fn a_bad_location_fails_the_start_with_the_reason() {
    let _cpu = shared_cpu();
    init();
    for (location, says) in [
        (
            "/nonexistent-dir/x.jsonl",
            "cannot create /nonexistent-dir/x.jsonl",
        ),
        ("mqtt://127.0.0.1:1883", "no topic"),
        ("ftp://127.0.0.1/x", "unknown scheme"),
    ] {
        let pipeline = launch::pipeline(&format!(
            "videotestsrc num-buffers=1 ! metapublish location={location} ! fakesink"
        ));
        let _ = pipeline.set_state(gst::State::Playing);
        let msg = pipeline
            .bus()
            .unwrap()
            .timed_pop_filtered(gst::ClockTime::from_seconds(10), &[gst::MessageType::Error])
            .expect("an error message");
        let gst::MessageView::Error(err) = msg.view() else {
            unreachable!()
        };
        let text = format!("{} {:?}", err.error(), err.debug());
        assert!(text.contains(says), "{location}: {text}");
        pipeline.set_state(gst::State::Null).unwrap();
    }
}

#[test]
fn in_pts_order_the_skips_the_resequencer_tells_by_time_are_not_counted_twice() {
    let _cpu = shared_cpu();
    let file = scratch("pts-gaps.jsonl");
    let n = 60u64;
    let desc = format!(
        "videotestsrc num-buffers={n} ! video/x-raw,width=64,height=48,framerate=30/1 \
         ! enrichpool name=pool workers=2 ! resequencer order-by=pts \
         ! metapublish name=pub location={} ! appsink name=sink sync=false",
        file.display()
    );
    let out = run_dropping_every_fifth(&desc);
    let records = parse_lines(&std::fs::read_to_string(&file).unwrap());
    let lost: u64 = of_type(&records, "gap")
        .iter()
        .map(|r| {
            assert_ne!(r["reason"], "unannounced", "told by time already: {r}");
            r["count"].as_u64().unwrap()
        })
        .sum();
    let dropped = (0..n).filter(|s| s % 5 == 3).count() as u64;
    assert_eq!(lost, dropped, "each lost frame told once");
    assert_eq!(out.frames.len() as u64, n - dropped);
    assert_eq!(stat(&out.publisher(), "gaps"), dropped);
}

#[test]
fn with_block_and_a_target_down_eos_and_a_flushing_seek_do_not_hang() {
    let _cpu = shared_cpu();
    init();
    let port = servers::free_port();
    // Ten frames fill max-pending=10: the EOS record goes over the bound, EOS waits
    // drain-timeout (0.2 s) and goes on.
    let desc = format!(
        "videotestsrc num-buffers=10 ! video/x-raw,width=64,height=48 \
         ! metapublish name=pub location=tcp://127.0.0.1:{port} max-pending=10 \
         on-disconnect=block drain-timeout=200000000 ! appsink name=sink sync=false"
    );
    let out = run(&desc, |_| {}, |_| {});
    assert_eq!(out.frames.len(), 10);
    assert_eq!(
        stat(&out.publisher(), "dropped"),
        11,
        "all left when it stopped"
    );

    // A frame waiting for room: a flushing seek lets it go and returns.
    let pipeline = launch::pipeline(&format!(
        "videotestsrc num-buffers=100 ! video/x-raw,width=64,height=48 \
         ! metapublish name=pub location=tcp://127.0.0.1:{port} max-pending=3 \
         on-disconnect=block ! appsink name=sink sync=false"
    ));
    let p = pipeline.by_name("pub").unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    wait_for("a frame waiting for room", LIMIT, || {
        stat(&p, "blocked") == 1
    });
    let seeking = pipeline.clone();
    sync::within(Duration::from_secs(20), move || {
        seeking
            .seek_simple(gst::SeekFlags::FLUSH, gst::ClockTime::ZERO)
            .unwrap();
    });
    // The waiting record dropped, the flush record over the bound; frames wait again.
    wait_for("the frames after the seek", LIMIT, || {
        stat(&p, "records") >= 5 && stat(&p, "blocked") == 1
    });
    sync::within(Duration::from_secs(20), move || {
        pipeline.set_state(gst::State::Null).unwrap();
    });
    let records = stat(&p, "records");
    assert_eq!(stat(&p, "dropped"), records, "none published, each counted");
}

#[test]
fn a_full_disk_costs_the_records_counted_and_not_the_frames() {
    let _cpu = shared_cpu();
    // /dev/full: every write fails with ENOSPC.
    let desc = "videotestsrc num-buffers=50 ! video/x-raw,width=64,height=48 \
                ! metapublish name=pub location=/dev/full ! appsink name=sink sync=false";
    let out = run(desc, |_| {}, |_| {});
    assert_eq!(out.frames.len(), 50);
    let p = out.publisher();
    assert_eq!(stat(&p, "records"), 51);
    assert_eq!((stat(&p, "published"), stat(&p, "dropped")), (0, 51));
    let stats = p.property::<gst::Structure>("stats");
    let error = stats.get::<String>("last-error").unwrap();
    assert!(error.contains("No space left"), "{error}");
}

#[test]
fn stopping_while_a_write_blocks_does_not_hang() {
    let _cpu = shared_cpu();
    init();
    // A FIFO whose reader never reads: the publisher's write blocks once the pipe is full.
    let fifo = scratch("blocked.fifo");
    let _ = std::fs::remove_file(&fifo);
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let path = fifo.clone();
    let reader = std::thread::spawn(move || std::fs::File::open(path).unwrap());
    let pipeline = launch::pipeline(&format!(
        "videotestsrc num-buffers=3000 ! video/x-raw,width=64,height=48 \
         ! metapublish name=pub location={} drain-timeout=100000000 batch-interval=0 \
         ! appsink name=sink sync=false",
        fifo.display()
    ));
    let passed = count_frames(&pipeline);
    let p = pipeline.by_name("pub").unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut held = Some(reader.join().unwrap());
    let bus = pipeline.bus().unwrap();
    let eos = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(60),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    assert!(
        matches!(
            eos.as_ref().map(|m| m.view()),
            Some(gst::MessageView::Eos(_))
        ),
        "{eos:?}"
    );
    assert_eq!(passed.load(Ordering::SeqCst), 3000, "every frame went on");
    assert!(stat(&p, "pending") > 0, "the write is blocked");
    // The element stops on the way to READY (NULL would flush the bus, warning and all).
    let stopping = pipeline.clone();
    sync::within(Duration::from_secs(20), move || {
        stopping.set_state(gst::State::Ready).unwrap();
    });
    let warned = std::iter::from_fn(|| bus.pop()).any(|m| {
        matches!(m.view(), gst::MessageView::Warning(w)
            if w.error().to_string().contains("did not stop within"))
    });
    assert!(warned, "stop says it left the publisher behind");
    pipeline.set_state(gst::State::Null).unwrap();
    // Unblock the thread left behind: read what it wrote, to its end.
    let mut rest = Vec::new();
    std::io::Read::read_to_end(held.as_mut().unwrap(), &mut rest).unwrap();
    drop(held);
    wait_for("the publisher's last count", LIMIT, || {
        let s = p.property::<gst::Structure>("stats");
        s.get::<u64>("pending").unwrap() == 0
    });
    let records = stat(&p, "records");
    assert_eq!(stat(&p, "published") + stat(&p, "dropped"), records);
    let _ = std::fs::remove_file(&fifo);
}
