//! What the benches share: timing frames through a pipeline from its `appsrc name=src`, and
//! running cases round by round and reporting the median and spread of their rounds.

// Each bench uses what it needs of this.
#![allow(dead_code)]

use std::time::Instant;

use gst::prelude::*;

/// Sets `pipeline` playing, pushes `frames` into its appsrc `src` (made as they are pushed,
/// so their making is timed too when the iterator makes them), sends EOS and waits for it;
/// returns the seconds from the first push to EOS. Panics on a pipeline error. The caller
/// reads what it needs and sets the pipeline to NULL.
pub fn push_to_eos(pipeline: &gst::Pipeline, frames: impl IntoIterator<Item = gst::Buffer>) -> f64 {
    push_to_eos_timing(pipeline, frames, false)
}

/// As [`push_to_eos`], but timed from before the pipeline is set PLAYING: its start-up (the
/// elements' threads starting) is counted too.
pub fn start_push_to_eos(
    pipeline: &gst::Pipeline,
    frames: impl IntoIterator<Item = gst::Buffer>,
) -> f64 {
    push_to_eos_timing(pipeline, frames, true)
}

fn push_to_eos_timing(
    pipeline: &gst::Pipeline,
    frames: impl IntoIterator<Item = gst::Buffer>,
    start_up: bool,
) -> f64 {
    let src = pipeline
        .by_name("src")
        .expect("an appsrc named src")
        .downcast::<gst_app::AppSrc>()
        .expect("src is an appsrc");
    let before = Instant::now();
    pipeline.set_state(gst::State::Playing).unwrap();
    let start = if start_up { before } else { Instant::now() };
    for frame in frames {
        src.push_buffer(frame).unwrap();
    }
    src.end_of_stream().unwrap();
    wait_eos(pipeline, 600);
    start.elapsed().as_secs_f64()
}

/// Waits up to `limit_s` for EOS on the pipeline's bus; panics on an error or none.
pub fn wait_eos(pipeline: &gst::Pipeline, limit_s: u64) {
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(limit_s),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .unwrap_or_else(|| panic!("EOS within {limit_s} s"));
    if let gst::MessageView::Error(e) = msg.view() {
        panic!("pipeline error: {} ({:?})", e.error(), e.debug());
    }
}

/// Whether the bench's arguments ask for `name`: the arguments that are not options (cargo
/// passes `--bench`) name the parts to run; none, all of them.
pub fn wanted() -> impl Fn(&str) -> bool {
    let names: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    move |name| names.is_empty() || names.iter().any(|n| n == name)
}

/// The values one case gave, one per round.
#[derive(Clone, Debug, Default)]
pub struct Rounds(pub Vec<f64>);

impl Rounds {
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v
    }

    /// The median (of an even count, the mean of the middle two).
    pub fn median(&self) -> f64 {
        let v = self.sorted();
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }

    pub fn min(&self) -> f64 {
        self.sorted()[0]
    }

    pub fn max(&self) -> f64 {
        *self.sorted().last().unwrap()
    }

    /// `median (min–max)`, each value written by `f`.
    pub fn spread(&self, f: impl Fn(f64) -> String) -> String {
        format!("{} ({}–{})", f(self.median()), f(self.min()), f(self.max()))
    }

    /// Every round's value, in the order they ran, written by `f`.
    pub fn all(&self, f: impl Fn(f64) -> String) -> String {
        self.0.iter().map(|&v| f(v)).collect::<Vec<_>>().join(" ")
    }

    /// Round by round, this case's value over `base`'s.
    pub fn over(&self, base: &Rounds) -> Rounds {
        assert_eq!(self.0.len(), base.0.len());
        Rounds(self.0.iter().zip(&base.0).map(|(a, b)| a / b).collect())
    }

    /// Round by round, `f` of this case's value.
    pub fn map(&self, f: impl Fn(f64) -> f64) -> Rounds {
        Rounds(self.0.iter().map(|&v| f(v)).collect())
    }
}

/// Runs every case once per round for `rounds` rounds, the first case of each round
/// rotating so that none always runs first (or last); with `rounds` a multiple of the number
/// of cases, each case runs in each position equally often. Returns each case's values.
pub fn alternate<C>(cases: &[C], rounds: usize, mut run: impl FnMut(&C) -> f64) -> Vec<Rounds> {
    let mut results = vec![Rounds::default(); cases.len()];
    for round in 0..rounds {
        for i in 0..cases.len() {
            let case = (round + i) % cases.len();
            let value = run(&cases[case]);
            results[case].0.push(value);
        }
    }
    results
}
