//! Per-buffer cost of `resequencer` against `identity`, measured side by side in one run.
//!
//! Each case pushes the same N small buffers (with `OrderedSeqMeta`) through
//! `appsrc ! ELEMENT ! fakesink sync=false` and times first push to EOS. Cases alternate
//! round by round so that machine noise hits both alike; the median per-buffer time of each
//! is reported with the ratio. Input is either in order or shuffled within blocks of 64.
//!
//! Run with `cargo bench --bench resequencer` (`-- --frames N --rounds R` to change sizes).

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

fn buffers(n: u64, input: Input, rng: &mut StdRng) -> Vec<gst::Buffer> {
    let frame = gst::ClockTime::from_mseconds(1);
    let mut seqs: Vec<u64> = (0..n).collect();
    if input == Input::Shuffled {
        for block in seqs.chunks_mut(SHUFFLE_BLOCK) {
            block.shuffle(rng);
        }
    }
    seqs.into_iter()
        .map(|seq| {
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let mut frames = 50_000u64;
    let mut rounds = 7usize;
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
        "resequencer vs identity: {frames} buffers per run, {rounds} rounds, median ns/buffer"
    );
    println!("| input | identity (ns/buffer) | resequencer (ns/buffer) | ratio | target |");
    println!("|---|---:|---:|---:|---:|");
    for (input, name, target) in [
        (Input::InOrder, "in order", 1.5),
        (Input::Shuffled, "shuffled within 64", 3.0),
    ] {
        // Warm-up: registry, first-run allocations.
        run("identity", buffers(1000, input, &mut rng));
        run("resequencer", buffers(1000, input, &mut rng));
        let (mut base, mut ours) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            base.push(run("identity", buffers(frames, input, &mut rng)));
            ours.push(run("resequencer", buffers(frames, input, &mut rng)));
        }
        let (b, o) = (median(base), median(ours));
        println!("| {name} | {b:.0} | {o:.0} | {:.2}× | ≤ {target}× |", o / b);
    }
}
