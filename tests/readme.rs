//! README's Rust snippets, run as they are inside real pipelines, and a check that README
//! still shows every Rust and Python snippet word for word as these tests (and
//! tests/python/readme_snippets.py) run them.

#[path = "common/plugin.rs"]
mod plugin;
#[path = "common/servers.rs"]
mod servers;
#[path = "common/sync.rs"]
mod sync;

use std::time::Duration;

use gst::prelude::*;
use gstordered::meta::Enrichment;

const LIMIT: Duration = Duration::from_secs(60);

fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstordered::plugin_register_static().unwrap();
    });
}

fn launch(description: &str) -> gst::Pipeline {
    init();
    gst::parse::launch(description)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap()
}

/// The ```LANG blocks of README.md, each as its lines.
fn readme_snippets(lang: &str) -> Vec<Vec<String>> {
    let readme = include_str!("../README.md");
    let mut snippets = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in readme.lines() {
        match &mut current {
            None if line.trim() == format!("```{lang}") => current = Some(Vec::new()),
            Some(lines) if line.trim() == "```" => {
                snippets.push(std::mem::take(lines));
                current = None;
            }
            Some(lines) => lines.push(line.to_string()),
            None => {}
        }
    }
    snippets
}

/// Whether `lines` appear in `source` one after the other, indentation aside.
fn shown_in(lines: &[String], source: &str) -> bool {
    let source: Vec<&str> = source.lines().map(str::trim).collect();
    let lines: Vec<&str> = lines.iter().map(|l| l.trim()).collect();
    !lines.is_empty() && source.windows(lines.len()).any(|w| w == lines.as_slice())
}

#[test]
fn readme_shows_the_snippets_these_tests_run() {
    let rust = readme_snippets("rust");
    let python = readme_snippets("python");
    assert_eq!(
        (rust.len(), python.len()),
        (3, 2),
        "README's snippets changed"
    );
    for snippet in &rust {
        assert!(
            shown_in(snippet, include_str!("readme.rs")),
            "README's Rust snippet is not run by tests/readme.rs:\n{}",
            snippet.join("\n")
        );
    }
    for snippet in &python {
        assert!(
            shown_in(snippet, include_str!("python/readme_snippets.py")),
            "README's Python snippet is not run by tests/python/readme_snippets.py:\n{}",
            snippet.join("\n")
        );
    }
}

#[test]
#[rustfmt::skip] // README's snippet, as it is shown.
fn the_rust_handler_snippet_enriches_every_frame() {
    sync::within(LIMIT, || {
        let pipeline = launch(
            "videotestsrc num-buffers=10 ! video/x-raw,width=32,height=24 \
             ! enrichpool name=pool workers=2 ! resequencer ! appsink name=sink sync=false",
        );
        // README, "The enrichment step":
        let pool = pipeline.by_name("pool").unwrap().downcast::<gstordered::EnrichPool>().unwrap();
        pool.set_handler(|job| {
            // job.buffer: &mut gst::BufferRef, job.worker, job.attempt, job.outputs: &mut StructureRef
            job.outputs.set("score", 0.75f64);
            Ok(gstordered::enrichpool::Verdict::Keep) // Drop → gap "dropped"; Err(msg) → on-error
        });
        let sink = pipeline
            .by_name("sink")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let mut scores = Vec::new();
        while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(30)) {
            let enrichment = Enrichment::read(sample.buffer().unwrap()).unwrap().unwrap();
            scores.push(enrichment.outputs.get::<f64>("score").unwrap());
        }
        pipeline.set_state(gst::State::Null).unwrap();
        assert_eq!(scores, vec![0.75; 10]);
    });
}

/// README, "Stats" of the resequencer: `stats` read from the property and from the bus;
/// what the snippet prints is returned.
#[rustfmt::skip] // README's snippet, as it is shown.
fn read_stats(
    resequencer: &gst::Element,
    msg: &gst::Message,
) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let mut printed = Vec::new();
    macro_rules! println {
        ($($arg:tt)*) => { printed.push(format!($($arg)*)) };
    }
    let stats = resequencer.property::<gst::Structure>("stats");
    let skipped = stats.get::<u64>("skipped")?;
    // or, with stats-interval set, from the bus:
    if let gst::MessageView::Element(m) = msg.view()
        && let Some(s) = m.structure().filter(|s| s.name() == "resequencer-stats")
    {
        println!("skipped: {skipped} then, {} now", s.get::<u64>("skipped")?);
    }
    Ok(printed)
}

#[test]
#[rustfmt::skip] // README's snippet, as it is shown.
fn the_stats_snippets_read_the_property_and_the_bus() {
    sync::within(LIMIT, || {
        let pipeline = launch(
            "videotestsrc num-buffers=20 ! video/x-raw,width=32,height=24 \
             ! enrichpool workers=2 ! resequencer name=r stats-interval=3600000000000 \
             ! fakesink",
        );
        let resequencer = pipeline.by_name("r").unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let bus = pipeline.bus().unwrap();
        let msg = bus
            .timed_pop_filtered(gst::ClockTime::from_seconds(30), &[gst::MessageType::Element])
            .expect("the stats message posted at EOS");
        assert_eq!(
            read_stats(&resequencer, &msg).unwrap(),
            vec!["skipped: 0 then, 0 now".to_string()]
        );
        pipeline.set_state(gst::State::Null).unwrap();

        // README, "Stats from an application": the loop ends at EOS.
        let pipeline = launch(
            "videotestsrc num-buffers=20 ! video/x-raw,width=32,height=24 \
             ! enrichpool workers=2 ! resequencer stats-interval=3600000000000 ! fakesink",
        );
        pipeline.set_state(gst::State::Playing).unwrap();
        // What the snippet prints, kept to be checked.
        let mut printed = Vec::new();
        macro_rules! println {
            ($($arg:tt)*) => { printed.push(format!($($arg)*)) };
        }
        for msg in pipeline.bus().unwrap().iter_timed(gst::ClockTime::NONE) {
            match msg.view() {
                gst::MessageView::Element(e)
                    if e.structure().is_some_and(|s| s.name() == "resequencer-stats") =>
                {
                    let s = e.structure().unwrap();
                    let p99 = s.get::<u64>("latency-p99").unwrap();
                    println!("pushed {} reordered {} p99 {} ms", s.get::<u64>("pushed").unwrap(),
                             s.get::<u64>("reordered").unwrap(), p99 / 1_000_000);
                }
                gst::MessageView::Eos(_) | gst::MessageView::Error(_) => break,
                _ => {}
            }
        }
        pipeline.set_state(gst::State::Null).unwrap();
        // One message, posted as EOS left the resequencer; the loop ended at EOS.
        assert_eq!(printed.len(), 1, "{printed:?}");
        assert!(printed[0].starts_with("pushed 20 reordered "), "{printed:?}");
    });
}

#[test]
fn the_python_snippets_run() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/readme_snippets.py"
    );
    let mut cmd = plugin::gst_command("/usr/bin/python3");
    cmd.arg(script);
    let out = servers::output_within(cmd, LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("readme snippets: ok"), "{stdout}");
}
