//! Property tests of the window: for any arrival order with any gaps, duplicates, late
//! frames and deadlines, the output is strictly increasing, nothing is pushed twice, every
//! input is pushed or counted, every skip is counted, and the window stays within bounds.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::{Arrival, Config, FrameKey, GapArrival, Output, Stats, Timing, Window};

#[derive(Clone, Debug)]
enum Op {
    /// Offer frame `seq`.
    Frame(u64),
    /// Announce that `count` frames from `seq` will not come.
    Gap(u64, u64),
    /// Let time pass, then take every output that is due.
    Tick(u64),
}

fn timing(seq: u64) -> Timing {
    Timing {
        pts: Some(seq * 10),
        duration: Some(10),
        running_time: Some(seq * 10),
    }
}

/// Frames 0..n in a locally shuffled order, some missing, some repeated, with gap notices
/// for some of the missing ones and clock ticks in between.
fn scenario() -> impl Strategy<Value = (usize, Vec<Op>)> {
    (1usize..12, 1u64..60)
        .prop_flat_map(|(max_window, n)| {
            let per_frame = prop::collection::vec((0u8..10, 0u64..8, 0u8..4), n as usize);
            (Just(max_window), Just(n), per_frame)
        })
        .prop_map(|(max_window, n, per_frame)| {
            // Sort frames by seq + a random displacement: a bounded, realistic disorder.
            let mut order: Vec<(u64, u64)> =
                (0..n).map(|s| (s + per_frame[s as usize].1, s)).collect();
            order.sort();
            let mut ops = Vec::new();
            for (_, s) in order {
                let (fate, _, extra) = per_frame[s as usize];
                match fate {
                    0 => {}                                          // lost
                    1 => ops.push(Op::Gap(s, 1 + extra as u64 % 2)), // announced lost
                    2 => {
                        ops.push(Op::Frame(s));
                        ops.push(Op::Frame(s)); // duplicate
                    }
                    _ => ops.push(Op::Frame(s)),
                }
                if extra == 0 {
                    ops.push(Op::Tick(s * 10));
                }
            }
            (max_window, ops)
        })
}

struct Run {
    pushed: Vec<u64>,
    skipped: BTreeSet<u64>,
    offered: u64,
    stats: Stats,
}

fn run(max_window: usize, ops: &[Op], deadlines: bool) -> Run {
    let mut w: Window<u64, ()> = Window::new(Config {
        max_window,
        latency: 25,
        deadlines,
    });
    let mut pushed = Vec::new();
    let mut skipped = BTreeSet::new();
    let mut now = 0;
    let mut offered = 0;

    let take = |w: &mut Window<u64, ()>,
                now: u64,
                pushed: &mut Vec<u64>,
                skipped: &mut BTreeSet<u64>|
     -> bool {
        match w.pop(Some(now)) {
            Some(Output::Frame { item, .. }) => {
                pushed.push(item);
                true
            }
            Some(Output::Skip(s)) => {
                let first = s
                    .first_seq
                    .expect("sequence order names the first skipped frame");
                assert!(s.count > 0);
                for seq in first..first + s.count {
                    assert!(skipped.insert(seq), "{seq} skipped twice");
                }
                true
            }
            Some(Output::Event(())) => true,
            None => false,
        }
    };

    for op in ops {
        match *op {
            Op::Frame(seq) => {
                offered += 1;
                let key = FrameKey::Sequence { epoch: 0, seq };
                let mut item = seq;
                let mut tries = 0;
                loop {
                    match w.push(key, timing(seq), item, Some(now)) {
                        Arrival::Accepted | Arrival::Rejected { .. } => break,
                        Arrival::Blocked(back) => {
                            item = back;
                            assert!(
                                take(&mut w, now, &mut pushed, &mut skipped),
                                "blocked without progress"
                            );
                            tries += 1;
                            assert!(tries <= 2 * max_window + 2, "push never fits");
                        }
                    }
                }
            }
            Op::Gap(seq, count) => {
                let mut tries = 0;
                while w.gap(0, seq, count) == GapArrival::Blocked {
                    assert!(
                        take(&mut w, now, &mut pushed, &mut skipped),
                        "blocked without progress"
                    );
                    tries += 1;
                    assert!(tries <= 2 * max_window + 2, "gap never fits");
                }
            }
            Op::Tick(t) => {
                now = now.max(t);
                while take(&mut w, now, &mut pushed, &mut skipped) {}
            }
        }
        assert!(
            w.depth() <= max_window,
            "window holds {} > {max_window}",
            w.depth()
        );
    }
    w.finish();
    while take(&mut w, now, &mut pushed, &mut skipped) {}
    assert!(w.is_empty());
    Run {
        pushed,
        skipped,
        offered,
        stats: w.stats(),
    }
}

fn check(run: &Run) {
    // Strictly increasing, so nothing is pushed twice.
    assert!(
        run.pushed.windows(2).all(|p| p[0] < p[1]),
        "out of order: {:?}",
        run.pushed
    );
    let pushed: BTreeSet<u64> = run.pushed.iter().copied().collect();
    assert!(
        pushed.is_disjoint(&run.skipped),
        "a frame was both pushed and skipped"
    );
    let s = run.stats;
    assert_eq!(s.pushed, run.pushed.len() as u64);
    // Every offered frame is pushed or counted.
    assert_eq!(s.received, run.offered);
    assert_eq!(
        s.received,
        s.pushed + s.late + s.duplicates + s.invalid + s.flushed + s.depth
    );
    // Every sequence number up to the last output is pushed or skipped (by notice or not).
    let end = pushed
        .iter()
        .chain(run.skipped.iter())
        .max()
        .map_or(0, |m| m + 1);
    assert_eq!(
        pushed.len() as u64 + run.skipped.len() as u64,
        end,
        "a hole is unaccounted"
    );
    assert_eq!(s.skipped + s.gaps, run.skipped.len() as u64);
}

/// Cases per property: 512, or `ORDERED_SOAK_CASES` (the soak).
fn cases() -> u32 {
    std::env::var("ORDERED_SOAK_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn live_window_keeps_order_and_accounts_for_everything((max_window, ops) in scenario()) {
        check(&run(max_window, &ops, true));
    }

    #[test]
    fn non_live_window_keeps_order_and_accounts_for_everything((max_window, ops) in scenario()) {
        check(&run(max_window, &ops, false));
    }

    #[test]
    fn frames_that_all_arrive_are_all_pushed(n in 1u64..80, disorder in prop::collection::vec(0u64..6, 80), max_window in 8usize..16) {
        // Disorder below the window never costs a frame, live or not.
        let mut order: Vec<(u64, u64)> = (0..n).map(|s| (s + disorder[s as usize], s)).collect();
        order.sort();
        let ops: Vec<Op> = order.into_iter().map(|(_, s)| Op::Frame(s)).collect();
        let r = run(max_window, &ops, false);
        check(&r);
        prop_assert_eq!(r.pushed, (0..n).collect::<Vec<_>>());
    }

    #[test]
    fn pts_order_is_strictly_increasing(keys in prop::collection::vec(0u64..100, 1..80), max_window in 1usize..10) {
        let mut w: Window<u64, ()> = Window::new(Config { max_window, latency: 25, deadlines: true });
        let mut out = Vec::new();
        let mut now = 0;
        for &k in &keys {
            now += 5;
            let mut item = k;
            while let Arrival::Blocked(back) = w.push(FrameKey::Pts { epoch: 0, pts: k * 10 }, timing(k), item, Some(now)) {
                item = back;
                match w.pop(Some(now)) {
                    Some(Output::Frame { item, .. }) => out.push(item),
                    Some(_) => {}
                    None => prop_assert!(false, "blocked without progress"),
                }
            }
            prop_assert!(w.depth() <= max_window);
            while let Some(o) = w.pop(Some(now)) {
                if let Output::Frame { item, .. } = o { out.push(item) }
            }
        }
        w.finish();
        while let Some(o) = w.pop(Some(now)) {
            if let Output::Frame { item, .. } = o { out.push(item) }
        }
        prop_assert!(out.windows(2).all(|p| p[0] < p[1]), "out of order: {:?}", out);
        let s = w.stats();
        prop_assert_eq!(s.received, keys.len() as u64);
        prop_assert_eq!(s.received, s.pushed + s.late + s.duplicates);
        prop_assert_eq!(s.pushed, out.len() as u64);
    }
}
