//! The article's design (shared/seed-article.txt) against ours, on the same jobs, side by
//! side in one run.
//!
//! - Baseline: the article's tokio pipeline, faithfully: a producer sending frames into
//!   `mpsc::channel(30)`, N worker tasks sharing the receiver through
//!   `Arc<tokio::sync::Mutex<Receiver>>`, a results `mpsc::channel(30)`, and an output task
//!   with the article's `BTreeMap` resequencing buffer, on `#[tokio::main]`'s runtime.
//! - Ours: `appsrc ! enrichpool workers=N max-size-buffers=30+N ! resequencer ! fakesink`
//!   (`max-size-buffers` counts frames in flight too, so 30 + N is the article's bound of 30
//!   queued frames), with a Rust handler doing the same job.
//!
//! Jobs: a 10 ms wait (an enrichment server's answer) with N = 8, 32, 64 workers, and 1 ms of
//! CPU work with N = 2; frames of 320×240 and 1280×720 (I420-sized payloads, fresh per frame
//! in both). Throughput in frames/s: six rounds, each running every case with both designs
//! (which one first alternating); the median and spread (min–max) of the rounds, and of the
//! ratio ours/article taken round by round.
//! Writes the table to stdout and a plot to `docs/article-comparison.png` (or the path given
//! with `--plot`).
//!
//! `cargo bench --bench article [-- --plot PATH]`

#[path = "../tests/common/launch.rs"]
mod launch;

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstordered::EnrichPool;
use gstordered::enrichpool::Verdict;

#[derive(Clone, Copy, Debug)]
enum Job {
    /// Waiting for something else (an inference server): the article awaits a timer, our
    /// worker thread sleeps.
    Wait(Duration),
    /// Busy CPU work on the worker.
    Cpu(Duration),
}

fn spin(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// The article's pipeline, as written there (with its placeholders filled by `Job`).
mod article {
    use super::*;
    use tokio::sync::mpsc;

    pub struct Frame {
        pub seq: u64,
        pub data: Vec<u8>,
        #[allow(dead_code)]
        pub timestamp: Instant,
    }

    pub struct FrameMetadata {
        pub enrichment_server_id: usize,
        #[allow(dead_code)]
        pub processing_time_ms: u64,
    }

    pub struct ProcessedFrame {
        pub seq: u64,
        pub merged_data: Vec<u8>,
        pub metadata: FrameMetadata,
    }

    async fn process_frame(frame: Frame, worker_id: usize, job: Job) -> ProcessedFrame {
        let start = Instant::now();
        match job {
            Job::Wait(d) => tokio::time::sleep(d).await,
            Job::Cpu(d) => spin(d),
        }
        ProcessedFrame {
            seq: frame.seq,
            merged_data: frame.data,
            metadata: FrameMetadata {
                enrichment_server_id: worker_id,
                processing_time_ms: start.elapsed().as_millis() as u64,
            },
        }
    }

    fn spawn_enrichment_workers(
        num_workers: usize,
        frame_rx: mpsc::Receiver<Frame>,
        result_tx: mpsc::Sender<ProcessedFrame>,
        job: Job,
    ) {
        let frame_rx = Arc::new(tokio::sync::Mutex::new(frame_rx));
        for worker_id in 0..num_workers {
            let rx = frame_rx.clone();
            let tx = result_tx.clone();
            tokio::spawn(async move {
                loop {
                    let frame = {
                        let mut guard = rx.lock().await;
                        guard.recv().await
                    };
                    let Some(frame) = frame else {
                        break;
                    };
                    let processed = process_frame(frame, worker_id, job).await;
                    if tx.send(processed).await.is_err() {
                        break;
                    }
                }
            });
        }
    }

    struct ResequenceBuffer {
        buffer: BTreeMap<u64, ProcessedFrame>,
        next_expected: u64,
    }

    impl ResequenceBuffer {
        fn new(start_seq: u64) -> Self {
            Self {
                buffer: BTreeMap::new(),
                next_expected: start_seq,
            }
        }

        fn insert(&mut self, frame: ProcessedFrame) -> Vec<ProcessedFrame> {
            self.buffer.insert(frame.seq, frame);
            let mut ready = Vec::new();
            while let Some(entry) = self.buffer.remove(&self.next_expected) {
                ready.push(entry);
                self.next_expected += 1;
            }
            ready
        }
    }

    /// Streams out in order; returns how many frames left and whether in order.
    async fn run_output_stream(mut result_rx: mpsc::Receiver<ProcessedFrame>) -> (u64, bool) {
        let mut resequencer = ResequenceBuffer::new(1);
        let (mut count, mut in_order, mut last) = (0u64, true, 0u64);
        while let Some(processed) = result_rx.recv().await {
            for frame in resequencer.insert(processed) {
                in_order &= frame.seq == last + 1;
                last = frame.seq;
                count += 1;
                std::hint::black_box((&frame.merged_data, frame.metadata.enrichment_server_id));
            }
        }
        (count, in_order)
    }

    /// Seconds to stream `frames` frames of `size` bytes through the pipeline.
    pub fn run(frames: u64, workers: usize, job: Job, size: usize) -> f64 {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let start = Instant::now();
            let (frame_tx, frame_rx) = mpsc::channel::<Frame>(30);
            let (result_tx, result_rx) = mpsc::channel::<ProcessedFrame>(30);
            spawn_enrichment_workers(workers, frame_rx, result_tx, job);
            let streamer = tokio::spawn(run_output_stream(result_rx));
            for seq in 1..=frames {
                let frame = Frame {
                    seq,
                    data: vec![0u8; size],
                    timestamp: Instant::now(),
                };
                if frame_tx.send(frame).await.is_err() {
                    break;
                }
            }
            drop(frame_tx);
            let (count, in_order) = streamer.await.unwrap();
            assert!(
                count == frames && in_order,
                "the baseline lost or reordered frames"
            );
            start.elapsed().as_secs_f64()
        })
    }
}

/// Seconds to push `frames` frames of `size` bytes through our elements.
fn ours(frames: u64, workers: usize, job: Job, size: usize) -> f64 {
    let pipeline = launch::pipeline(&format!(
        "appsrc name=src format=time max-bytes=0 max-buffers=30 block=true caps=application/x-frame \
         ! enrichpool name=pool workers={workers} max-size-buffers={} \
         ! resequencer name=reseq ! fakesink sync=false",
        30 + workers
    ));
    let pool = pipeline
        .by_name("pool")
        .unwrap()
        .downcast::<EnrichPool>()
        .unwrap();
    pool.set_handler(move |_job| {
        match job {
            Job::Wait(d) => std::thread::sleep(d),
            Job::Cpu(d) => spin(d),
        }
        Ok(Verdict::Keep)
    });
    // Frames are made as they are pushed, as the article's producer makes them.
    let secs = common::push_to_eos(
        &pipeline,
        (0..frames).map(|seq| {
            let mut buffer = gst::Buffer::from_mut_slice(vec![0u8; size]);
            buffer
                .get_mut()
                .unwrap()
                .set_pts(gst::ClockTime::from_mseconds(seq));
            buffer
        }),
    );
    let stats = pipeline
        .by_name("reseq")
        .unwrap()
        .property::<gst::Structure>("stats");
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(stats.get::<u64>("pushed").unwrap(), frames, "{stats}");
    secs
}

const ROUNDS: usize = 6;

struct Case {
    job: Job,
    workers: usize,
    size: (u32, u32),
    frames: u64,
    article: common::Rounds,
    ours: common::Rounds,
}

fn plot(cases: &[Case], path: &str) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let font = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
        .map_err(|e| format!("DejaVuSans.ttf (fonts-dejavu-core): {e}"))?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(font.into()))
        .map_err(|_| "the font does not load")?;
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let waits: Vec<&Case> = cases
        .iter()
        .filter(|c| matches!(c.job, Job::Wait(_)))
        .collect();
    let top = waits
        .iter()
        .map(|c| c.article.max().max(c.ours.max()))
        .fold(0.0, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "10 ms wait per frame: throughput against workers",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(0u32..70u32, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("workers (N)")
        .y_desc("frames/s")
        .label_style(("sans-serif", 15))
        .draw()?;
    let sizes = [(320u32, 240u32), (1280, 720)];
    let styles = [
        (
            RGBColor(200, 60, 40),
            "article (tokio)",
            RGBColor(40, 90, 200),
            "ours (GStreamer)",
        ),
        (
            RGBColor(240, 150, 120),
            "article",
            RGBColor(120, 170, 240),
            "ours",
        ),
    ];
    for (size, (article_color, article_name, ours_color, ours_name)) in sizes.iter().zip(styles) {
        let series = |f: fn(&Case) -> f64| -> Vec<(u32, f64)> {
            waits
                .iter()
                .filter(|c| c.size == *size)
                .map(|c| (c.workers as u32, f(c)))
                .collect()
        };
        for (points, color, name) in [
            (series(|c| c.article.median()), article_color, article_name),
            (series(|c| c.ours.median()), ours_color, ours_name),
        ] {
            let label = format!("{name}, {}x{}", size.0, size.1);
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut plot_path = "docs/article-comparison.png".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--plot" {
            plot_path = args.next().ok_or("--plot needs a path")?;
        }
    }
    gst::init()?;
    gstordered::plugin_register_static()?;

    let mut cases = Vec::new();
    for size in [(320u32, 240u32), (1280, 720)] {
        for workers in [8usize, 32, 64] {
            cases.push(Case {
                job: Job::Wait(Duration::from_millis(10)),
                workers,
                size,
                // About 0.6 s at the ideal rate of N frames per 10 ms.
                frames: 60 * workers as u64,
                article: Default::default(),
                ours: Default::default(),
            });
        }
        cases.push(Case {
            job: Job::Cpu(Duration::from_millis(1)),
            workers: 2,
            size,
            frames: 1000,
            article: Default::default(),
            ours: Default::default(),
        });
    }
    // Warm-up of both.
    article::run(100, 8, Job::Wait(Duration::from_millis(1)), 1024);
    ours(100, 8, Job::Wait(Duration::from_millis(1)), 1024);
    for round in 0..ROUNDS {
        for c in &mut cases {
            let size = (c.size.0 * c.size.1 * 3 / 2) as usize;
            // Alternate which one goes first.
            let (a, o) = if round % 2 == 0 {
                let a = article::run(c.frames, c.workers, c.job, size);
                (a, ours(c.frames, c.workers, c.job, size))
            } else {
                let o = ours(c.frames, c.workers, c.job, size);
                (article::run(c.frames, c.workers, c.job, size), o)
            };
            c.article.0.push(c.frames as f64 / a);
            c.ours.0.push(c.frames as f64 / o);
        }
    }
    println!("{ROUNDS} rounds; median (min–max) of the rounds, the ratio taken round by round");
    println!("| job | N | frame | article (frames/s) | ours (frames/s) | ours / article |");
    println!("|---|---|---|---|---|---|");
    for c in &cases {
        let job = match c.job {
            Job::Wait(d) => format!("{} ms wait", d.as_millis()),
            Job::Cpu(d) => format!("{} ms CPU", d.as_millis()),
        };
        let fps = |v: f64| format!("{v:.0}");
        println!(
            "| {job} | {} | {}x{} | {} | {} | {} |",
            c.workers,
            c.size.0,
            c.size.1,
            c.article.spread(fps),
            c.ours.spread(fps),
            c.ours.over(&c.article).spread(|v| format!("{v:.2}×"))
        );
    }
    plot(&cases, &plot_path)?;
    println!("plot: {plot_path}");
    Ok(())
}
