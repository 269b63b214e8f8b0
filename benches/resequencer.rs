//! Per-buffer cost of `resequencer` against `identity`, measured side by side in one run.
//!
//! Each case pushes N small buffers (with `OrderedSeqMeta`) through
//! `appsrc ! ELEMENT ! fakesink sync=false` and times first push to EOS. Each round makes one
//! arrival order (in order, or shuffled within blocks of 64) and gives both elements the
//! same buffers in it; the cases alternate within a round, the first one rotating. Reported:
//! the median and spread (min–max) of each case's rounds, of the round-by-round ratio, and
//! every round's ratio (the bench has been bimodal on small machines).
//!
//! Run with `cargo bench --bench resequencer` (`-- --frames N --rounds R` to change sizes).

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use gst::prelude::*;
use gstordered::meta::SeqMeta;
use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::StdRng};

const SHUFFLE_BLOCK: usize = 64;

#[derive(Clone, Copy, PartialEq)]
enum Input {
    InOrder,
    Shuffled,
}

/// An arrival order of `n` frames.
fn order(n: u64, input: Input, rng: &mut StdRng) -> Vec<u64> {
    let mut seqs: Vec<u64> = (0..n).collect();
    if input == Input::Shuffled {
        for block in seqs.chunks_mut(SHUFFLE_BLOCK) {
            block.shuffle(rng);
        }
    }
    seqs
}

/// Fresh buffers for the frames in `order`.
fn buffers(order: &[u64]) -> Vec<gst::Buffer> {
    let frame = gst::ClockTime::from_mseconds(1);
    order
        .iter()
        .map(|&seq| {
            let mut buffer = gst::Buffer::with_size(16).unwrap();
            {
                let b = buffer.get_mut().unwrap();
                b.set_pts(frame * seq);
                b.set_duration(frame);
                SeqMeta {
                    seq,
                    epoch: 0,
                    ingress: 0,
                }
                .add(b);
            }
            buffer
        })
        .collect()
}

/// Nanoseconds per buffer for one run of `appsrc ! element ! fakesink`.
fn run(element: &str, input: Vec<gst::Buffer>) -> f64 {
    let n = input.len() as f64;
    let pipeline = gst::Pipeline::new();
    let src = gst_app::AppSrc::builder()
        .format(gst::Format::Time)
        .max_bytes(0)
        .max_buffers(0)
        .caps(&gst::Caps::new_empty_simple("application/x-bench"))
        .build();
    let middle = match element {
        "resequencer" => gst::ElementFactory::make("resequencer")
            .property_from_str("order-by", "sequence")
            .property("max-window", 2 * SHUFFLE_BLOCK as u32)
            .build()
            .unwrap(),
        other => gst::ElementFactory::make(other).build().unwrap(),
    };
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .build()
        .unwrap();
    pipeline
        .add_many([src.upcast_ref(), &middle, &sink])
        .unwrap();
    gst::Element::link_many([src.upcast_ref(), &middle, &sink]).unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();

    let start = Instant::now();
    for buffer in input {
        src.push_buffer(buffer).unwrap();
    }
    src.end_of_stream().unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(120),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("run finished");
    let elapsed = start.elapsed();
    if let gst::MessageView::Error(err) = msg.view() {
        panic!("{element}: {}", err.error());
    }
    if element == "resequencer" {
        let stats = middle.property::<gst::Structure>("stats");
        assert_eq!(
            stats.get::<u64>("pushed").unwrap() as f64,
            n,
            "resequencer lost frames"
        );
    }
    pipeline.set_state(gst::State::Null).unwrap();
    elapsed.as_nanos() as f64 / n
}

fn main() {
    let mut frames = 50_000u64;
    let mut rounds = 8usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--frames" => frames = args.next().unwrap().parse().unwrap(),
            "--rounds" => rounds = args.next().unwrap().parse().unwrap(),
            _ => {} // cargo bench passes --bench
        }
    }
    gst::init().unwrap();
    gstordered::plugin_register_static().unwrap();
    let mut rng = StdRng::seed_from_u64(7);

    println!(
        "resequencer vs identity: {frames} buffers per run, {rounds} rounds (cases alternating, \
         the same buffers for both), ns/buffer: median (min–max)"
    );
    println!(
        "| input | identity (ns/buffer) | resequencer (ns/buffer) | ratio, median (min–max) | target |"
    );
    println!("|---|---:|---:|---:|---:|");
    let mut all_rounds = Vec::new();
    for (input, name, target) in [
        (Input::InOrder, "in order", 1.15),
        (Input::Shuffled, "shuffled within 64", 1.5),
    ] {
        // Warm-up: registry, first-run allocations.
        let warm = order(1000, input, &mut rng);
        run("identity", buffers(&warm));
        run("resequencer", buffers(&warm));
        let (mut base, mut ours) = (common::Rounds::default(), common::Rounds::default());
        for round in 0..rounds {
            let arrival = order(frames, input, &mut rng);
            let mut cases = [("identity", &mut base), ("resequencer", &mut ours)];
            cases.rotate_left(round % 2);
            for (element, results) in cases {
                results.0.push(run(element, buffers(&arrival)));
            }
        }
        let ratio = ours.over(&base);
        let ns = |v: f64| format!("{v:.0}");
        let x = |v: f64| format!("{v:.2}×");
        println!(
            "| {name} | {} | {} | {} | ≤ {target}× |",
            base.spread(ns),
            ours.spread(ns),
            ratio.spread(x)
        );
        all_rounds.push((name, ratio));
    }
    for (name, ratio) in all_rounds {
        println!(
            "ratio per round, {name}: {}",
            ratio.all(|v| format!("{v:.2}"))
        );
    }
}
