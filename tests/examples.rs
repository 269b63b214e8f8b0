//! The examples, run as a user would: the main job (examples/demo.rs), the Rust and Python
//! applications, and the gst-launch-1.0 recipes (with a real MLServer for the `servers` one).

#[path = "common/launch.rs"]
mod launch;

#[path = "common/plugin.rs"]
mod plugin;
#[path = "common/servers.rs"]
mod servers;

use std::path::PathBuf;
use std::process::Command;

use gst::prelude::*;
use gst_video::prelude::*;
use plugin::gst_command;

/// An example binary cargo built beside this test (`cargo test` builds the examples).
fn example(name: &str) -> Command {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(path.exists(), "{} not built", path.display());
    let mut cmd = Command::new(path);
    cmd.env("XDG_RUNTIME_DIR", std::env::temp_dir());
    cmd
}

fn run(mut cmd: Command) -> String {
    let out = cmd.output().expect("the example runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("gst-ordered-{}-{name}", std::process::id()))
}

/// Decodes a file with `decodebin`; the frames as (width, height, I420/GRAY luma rows).
fn decode(path: &std::path::Path, format: &str) -> Vec<gst::Sample> {
    let pipeline = launch::pipeline(&format!(
        "filesrc location={} ! decodebin ! videoconvert ! video/x-raw,format={format} \
         ! appsink name=sink sync=false",
        path.display()
    ));
    let sink = launch::app_sink(&pipeline);
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut samples = Vec::new();
    while let Some(s) = sink.try_pull_sample(gst::ClockTime::from_seconds(30)) {
        samples.push(s);
    }
    pipeline.set_state(gst::State::Null).unwrap();
    samples
}

/// Whether the top-left corner (where the overlay writes `#seq label wN` on black) has
/// bright text pixels: videotestsrc's ball pattern is black there.
fn has_caption(sample: &gst::Sample) -> bool {
    has_caption_at(sample, 0, 0)
}

/// Whether the tile whose top-left corner is at (`x0`, `y0`) has its caption.
fn has_caption_at(sample: &gst::Sample, x0: usize, y0: usize) -> bool {
    let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(sample.buffer().unwrap(), &info)
        .unwrap();
    let stride = frame.plane_stride()[0] as usize;
    let luma = frame.plane_data(0).unwrap();
    (y0 + 4..y0 + 14).any(|y| (x0 + 4..x0 + 100).any(|x| luma[y * stride + x] > 200))
}

#[test]
fn the_main_job_writes_an_mp4_with_the_overlay_and_a_snapshot() {
    gst::init().unwrap();
    let (mp4, png) = (scratch("demo.mp4"), scratch("demo.png"));
    let mut cmd = example("demo");
    cmd.args(["--seconds", "4", "--no-window", "--output"])
        .arg(&mp4)
        .arg("--snapshot")
        .arg(&png);
    let stdout = run(cmd);
    assert!(stdout.contains("order: ok, ledger: ok"), "{stdout}");
    assert!(stdout.contains("end-to-end latency: p50"), "{stdout}");
    assert!(stdout.contains("per-worker throughput: w0"), "{stdout}");
    // The cascade: the detector ran on every other frame, the frames between carried its
    // detection; the classifier ran on the ball regions' crops.
    let figure = |line_start: &str, after: &str| -> u64 {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(line_start))
            .unwrap_or_else(|| panic!("no `{line_start}` line: {stdout}"));
        let at = line.find(after).unwrap_or_else(|| panic!("{line}")) + after.len();
        line[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let ran = figure("reuse:", "the detector ran on ");
    let carried = figure("reuse:", "of which ");
    assert!(ran >= 50 && carried >= ran / 2, "{stdout}");
    assert!(figure("classifier:", "classifier: ") >= 60, "{stdout}");
    // The video: about 4 s at 30 frames/s (leaky=downstream may drop a few), every frame
    // with its caption drawn.
    // The records beside the video: one per frame that reached the sink, in order.
    let jsonl = mp4.with_extension("jsonl");
    let text = std::fs::read_to_string(&jsonl).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seqs: Vec<u64> = records
        .iter()
        .filter(|r| r["type"] == "frame")
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.len() >= 60 && seqs.windows(2).all(|w| w[0] < w[1]),
        "{seqs:?}"
    );
    assert_eq!(records.last().unwrap()["type"], "eos");
    assert!(
        stdout.contains(&format!(
            "records: {} ({} lines: {} frames,",
            jsonl.display(),
            records.len(),
            seqs.len()
        )),
        "{stdout}"
    );
    let _ = std::fs::remove_file(&jsonl);
    let frames = decode(&mp4, "I420");
    assert!(
        frames.len() >= 60,
        "{} frames in {}",
        frames.len(),
        mp4.display()
    );
    assert!(frames.iter().all(has_caption));
    let snapshot = decode(&png, "I420");
    assert_eq!(snapshot.len(), 1);
    assert!(has_caption(&snapshot[0]));
    let _ = std::fs::remove_file(&mp4);
    let _ = std::fs::remove_file(&png);
}

#[test]
fn the_main_job_with_four_cameras_writes_a_mosaic_and_accounts_for_each() {
    gst::init().unwrap();
    let mp4 = scratch("demo4.mp4");
    let mut cmd = example("demo");
    cmd.args([
        "--streams",
        "4",
        "--seconds",
        "4",
        "--no-window",
        "--output",
    ])
    .arg(&mp4);
    let stdout = run(cmd);
    assert!(stdout.contains("order: ok, ledger: ok"), "{stdout}");
    for cam in 0..4 {
        // Each camera's frames named: reached the sink, dropped by the pool, or late.
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("cam{cam}: in ")))
            .unwrap_or_else(|| panic!("no summary line for cam{cam}: {stdout}"));
        assert!(
            line.contains("reached the sink") && line.contains("late"),
            "{line}"
        );
        // And its records, in a file of its own beside the video.
        let stem = mp4.file_stem().unwrap().to_string_lossy();
        let jsonl = mp4.with_file_name(format!("{stem}-cam{cam}.jsonl"));
        assert!(
            stdout.contains(&format!("records: {} (", jsonl.display())),
            "{stdout}"
        );
        let _ = std::fs::remove_file(&jsonl);
    }
    assert!(
        stdout.contains("shared pool `demo`: 12 workers"),
        "{stdout}"
    );
    // A 2×2 mosaic of 640×360 tiles, every tile with its caption.
    let frames = decode(&mp4, "I420");
    assert!(frames.len() >= 60, "{} frames", frames.len());
    let info = gst_video::VideoInfo::from_caps(frames[0].caps().unwrap()).unwrap();
    assert_eq!((info.width(), info.height()), (1280, 720));
    // (Not the last frames: the cameras reach EOS one after the other, and the mosaic's
    // last frames may miss the tiles of those that ended first.)
    let middle = &frames[frames.len() / 2];
    for (x, y) in [(0, 0), (640, 0), (0, 360), (640, 360)] {
        assert!(
            has_caption_at(middle, x, y),
            "no caption in the tile at {x},{y}"
        );
    }
    let _ = std::fs::remove_file(&mp4);
}

#[test]
fn the_rust_application_reads_the_metas() {
    let mut cmd = example("rust_app");
    cmd.arg("60");
    let stdout = run(cmd);
    assert!(
        stdout.contains("60 frames in order, each with its analysis and enrichment"),
        "{stdout}"
    );
    assert!(stdout.contains("frame  59  label"), "{stdout}");
}

#[test]
fn the_python_application_reads_the_metas() {
    let mut cmd = gst_command("/usr/bin/python3");
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/python_app.py"
    ))
    .arg("60");
    let stdout = run(cmd);
    assert!(
        stdout.contains("60 frames in order, each with its analysis and enrichment"),
        "{stdout}"
    );
    assert!(stdout.contains("worker python-"), "{stdout}");
}

#[test]
fn the_python_application_reads_each_regions_own_result() {
    let mut cmd = gst_command("/usr/bin/python3");
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/python_rois.py"
    ))
    .arg("60");
    let stdout = run(cmd);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("60 frames in order; "))
        .unwrap_or_else(|| panic!("{stdout}"));
    // Regions were checked (the ball moves in most frames), each against the frame itself.
    let regions: u64 = line["60 frames in order; ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(regions >= 30, "{stdout}");
    assert!(stdout.contains(": mean "), "{stdout}");
}

#[test]
fn the_gst_launch_recipes_run_with_and_without_servers() {
    let server = servers::MlServer::start(&[]);
    let mut cmd = gst_command("bash");
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/recipes.sh"))
        .env(
            "SERVERS",
            format!("{},{}", server.grpc_url(), server.http_url()),
        )
        .env("XDG_RUNTIME_DIR", std::env::temp_dir());
    let stdout = run(cmd);
    assert!(stdout.contains("recipes: ok"), "{stdout}");
    assert!(!stdout.contains("servers: skipped"), "{stdout}");
    assert!(!stdout.contains("cascade: skipped"), "{stdout}");
    // facedetect in worker bins: every frame out, with its face.
    let faces = stdout
        .split("== ")
        .find(|s| s.starts_with("faces"))
        .unwrap_or_else(|| panic!("no faces recipe in {stdout}"));
    assert!(faces.contains("frames with a face: 30\n"), "{faces}");
    assert!(faces.contains(" pushed=(guint64)30,"), "{faces}");
    assert!(faces.contains(" bin-errors=(guint64)0,"), "{faces}");
    // The results over MQTT: the consumer example got every frame's record, in order.
    let mqtt = stdout
        .split("== ")
        .find(|s| s.starts_with("mqtt"))
        .unwrap_or_else(|| panic!("no mqtt recipe in {stdout}"));
    assert!(
        mqtt.contains(
            "metapublish-stats, records=(guint64)61, published=(guint64)61, dropped=(guint64)0,"
        ),
        "{mqtt}"
    );
    assert!(mqtt.contains("subscribed to gst-ordered/demo"), "{mqtt}");
    assert!(mqtt.contains("eos: 60 frames, 0 gaps, "), "{mqtt}");
    assert!(mqtt.contains(" regions, 0 out of order"), "{mqtt}");
    // roundrobin into branches of different speeds, back through the request pads.
    let branches = stdout
        .split("== ")
        .find(|s| s.starts_with("branches"))
        .unwrap_or_else(|| panic!("no branches recipe in {stdout}"));
    assert!(
        branches.contains("resequencer-stats, in=(guint64)200, pushed=(guint64)200,"),
        "{branches}"
    );
    assert!(branches.contains(" skipped=(guint64)0,"), "{branches}");
    // The cascade: the classifier ran on the crop of every box the detector found (the test
    // model answers one box per image), one per frame.
    let cascade = stdout
        .split("== ")
        .find(|s| s.starts_with("cascade"))
        .unwrap_or_else(|| panic!("no cascade recipe in {stdout}"));
    let classifier = cascade
        .lines()
        .find(|l| l.contains("element \"classifier\"") && l.contains("enrichpool-stats"))
        .unwrap_or_else(|| panic!("no classifier stats in {cascade}"));
    assert!(
        classifier.contains(" rois-processed=(guint64)60,"),
        "{classifier}"
    );
    assert!(
        classifier.contains(" rois-failed=(guint64)0,"),
        "{classifier}"
    );
    assert!(classifier.contains(" pushed=(guint64)60,"), "{classifier}");
    // Each recipe prints its elements' last stats messages (posted as EOS left them).
    for recipe in ["live", "file", "rtp", "servers"] {
        let section = stdout
            .split("== ")
            .find(|s| s.starts_with(recipe))
            .unwrap_or_else(|| panic!("no {recipe} recipe in {stdout}"));
        let stat = |structure: &str, field: &str| -> u64 {
            let line = section
                .lines()
                .find(|l| l.contains(&format!("): {structure}, ")))
                .unwrap_or_else(|| panic!("{recipe}: no {structure} message in {section}"));
            let key = format!(" {field}=(guint64)");
            let at = line
                .find(&key)
                .unwrap_or_else(|| panic!("{recipe}: no {field} in {line}"));
            let digits: String = line[at + key.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().unwrap()
        };
        // 60 frames each (rtp: `identity eos-after=61`): every one analysed, processed by
        // the pool and pushed in order by the resequencer, nothing dropped, skipped or late.
        let what = format!("{recipe}: {section}");
        assert_eq!(stat("frameanalyzer-stats", "frames"), 60, "{what}");
        assert_eq!(stat("frameanalyzer-stats", "errors"), 0, "{what}");
        assert_eq!(stat("enrichpool-stats", "in"), 60, "{what}");
        assert_eq!(stat("enrichpool-stats", "pushed"), 60, "{what}");
        assert_eq!(stat("enrichpool-stats", "dropped"), 0, "{what}");
        assert_eq!(stat("resequencer-stats", "in"), 60, "{what}");
        assert_eq!(stat("resequencer-stats", "pushed"), 60, "{what}");
        for field in ["skipped", "late", "duplicates", "invalid", "gaps"] {
            assert_eq!(stat("resequencer-stats", field), 0, "{field} in {what}");
        }
        if recipe == "servers" {
            // Every frame went to a server and came back with an answer (a failed request
            // would have been dropped, a gap).
            assert_eq!(stat("enrichpool-stats", "remote-sent"), 60, "{what}");
        }
    }
    // Eight cameras on one shared pool: each pool's and each resequencer's last message
    // says 60 in, 60 out, nothing lost; the pool's four workers served them all.
    let shared = stdout
        .split("== ")
        .find(|s| s.starts_with("shared"))
        .unwrap_or_else(|| panic!("no shared recipe in {stdout}"));
    let whole = |structure: &str, from: &str| {
        shared
            .lines()
            .filter(|l| {
                l.contains(&format!(
                    "(element): {structure}, in=(guint64)60, pushed=(guint64)60, "
                )) && l.contains(from)
            })
            .count()
    };
    assert_eq!(
        whole("enrichpool-stats", "dropped=(guint64)0,"),
        8,
        "{shared}"
    );
    assert_eq!(
        whole("resequencer-stats", "skipped=(guint64)0, late=(guint64)0,"),
        8,
        "{shared}"
    );
    assert!(
        shared
            .lines()
            .filter(|l| l.contains("enrichpool-stats"))
            .all(|l| l.contains("workers=(guint64)4,")),
        "{shared}"
    );
}

#[test]
fn cameras_come_and_go_on_one_shared_pool() {
    let mut cmd = example("cameras");
    cmd.arg("6");
    let stdout = run(cmd);
    assert!(
        stdout.contains("6 cameras on one shared pool: every one in order"),
        "{stdout}"
    );
    // The pool's side as cameras joined and left: four workers throughout.
    for cameras in [3, 6, 3] {
        assert!(
            stdout.contains(&format!("pool `cameras`: 4 workers, {cameras} cameras")),
            "{stdout}"
        );
    }
}
