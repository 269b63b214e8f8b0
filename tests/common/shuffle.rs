//! A reordering stage for tests and the demo: `appsink` → shuffle → `appsrc`.
//!
//! Frames are collected in blocks of `block` and each block is pushed in a random order, so
//! no frame is displaced by more than `block - 1` places and none is held longer than a
//! block takes to fill. Optionally stamps `OrderedSeqMeta` in arrival order first, as
//! `enrichpool` does, and loses every n-th frame on purpose. At EOS the last, partial block
//! is shuffled and pushed, then EOS.
//!
//! The two halves only meet through the application, so a pipeline holding both must not
//! wait for its sinks to preroll: the stage's `appsink` is `async=false`, and so must be
//! every sink downstream of its `appsrc`.

use std::sync::{Arc, Mutex};

use gst::prelude::*;
use gstordered::meta::SeqMeta;
use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::StdRng};

/// The two ends of the stage: link upstream into `sink`, and `src` to downstream.
pub struct Shuffle {
    pub sink: gst_app::AppSink,
    pub src: gst_app::AppSrc,
}

struct Block {
    frames: Vec<gst::Buffer>,
    next_seq: u64,
    rng: StdRng,
}

/// How the stage disorders the stream.
#[derive(Clone, Copy, Debug)]
pub struct ShuffleConfig {
    /// Frames per shuffled block.
    pub block: usize,
    /// Stamp `OrderedSeqMeta` (epoch 0, from 0) before shuffling.
    pub stamp_seq: bool,
    pub seed: u64,
    /// How long a frame lasts: the stage reports `block` of them as its latency, so that a
    /// resequencer downstream waits long enough.
    pub frame_duration: gst::ClockTime,
    /// Lose frame `seq` when `seq % n == n / 2` (after stamping).
    pub lose_every: Option<u64>,
}

impl ShuffleConfig {
    pub fn loses(&self, seq: u64) -> bool {
        self.lose_every.is_some_and(|n| seq % n == n / 2)
    }
}

pub fn shuffle(config: ShuffleConfig) -> Shuffle {
    let ShuffleConfig {
        block,
        stamp_seq,
        seed,
        frame_duration,
        ..
    } = config;
    let sink = gst_app::AppSink::builder()
        .sync(false)
        .async_(false)
        .build();
    let src = gst_app::AppSrc::builder()
        .is_live(true)
        .format(gst::Format::Time)
        .max_bytes(0)
        .min_latency(frame_duration.nseconds() as i64 * block as i64)
        .build();
    let state = Arc::new(Mutex::new(Block {
        frames: Vec::with_capacity(block),
        next_seq: 0,
        rng: StdRng::seed_from_u64(seed),
    }));

    let push_all = |src: &gst_app::AppSrc, b: &mut Block| {
        let mut frames = std::mem::take(&mut b.frames);
        frames.shuffle(&mut b.rng);
        for frame in frames {
            if src.push_buffer(frame).is_err() {
                break;
            }
        }
    };

    let (src_s, state_s) = (src.clone(), state.clone());
    let (src_e, state_e) = (src.clone(), state);
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if src_s.caps().is_none() {
                    src_s.set_caps(sample.caps().map(|c| c.to_owned()).as_ref());
                }
                let mut buffer = sample.buffer_owned().ok_or(gst::FlowError::Error)?;
                let mut b = state_s.lock().unwrap();
                let seq = b.next_seq;
                b.next_seq += 1;
                if stamp_seq {
                    let ingress = sink.current_running_time().map_or(0, |t| t.nseconds());
                    SeqMeta {
                        seq,
                        epoch: 0,
                        ingress,
                    }
                    .add(buffer.make_mut());
                }
                if config.loses(seq) {
                    return Ok(gst::FlowSuccess::Ok);
                }
                b.frames.push(buffer);
                if b.frames.len() >= block {
                    push_all(&src_s, &mut b);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .eos(move |_| {
                push_all(&src_e, &mut state_e.lock().unwrap());
                let _ = src_e.end_of_stream();
            })
            .build(),
    );
    Shuffle { sink, src }
}
