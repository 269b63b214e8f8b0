//! Start/stop cycles leave no thread behind. Alone in its test binary so that no other
//! test's pool threads are counted.

#[path = "common/launch.rs"]
mod launch;

use gst::prelude::*;

/// Names of this process's worker and watchdog threads (all named `enrich-…`).
fn pool_threads() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .map(|t| {
            std::fs::read_to_string(t.unwrap().path().join("comm"))
                .unwrap()
                .trim()
                .to_string()
        })
        .filter(|name: &String| name.starts_with("enrich-"))
        .collect();
    names.sort();
    names
}

#[test]
fn a_thousand_start_stop_cycles_leave_no_thread_behind() {
    gst::init().unwrap();
    gstordered::plugin_register_static().unwrap();
    let pipeline = launch::pipeline(
        "fakesrc sizetype=fixed sizemax=64 ! enrichpool name=pool workers=2 ! fakesink",
    );
    let cycle = |state| {
        pipeline.set_state(state).unwrap();
        let (res, _, _) = pipeline.state(gst::ClockTime::from_seconds(10));
        res.unwrap();
        pipeline.set_state(gst::State::Ready).unwrap();
    };
    for i in 0..1000 {
        cycle(if i % 2 == 0 {
            gst::State::Playing
        } else {
            gst::State::Paused
        });
        if i == 0 {
            // While running there are workers; the check below is not vacuous.
            pipeline.set_state(gst::State::Paused).unwrap();
            let pool = pipeline.by_name("pool").unwrap();
            assert_eq!(
                pool.property::<gst::Structure>("stats")
                    .get::<u64>("workers")
                    .unwrap(),
                2
            );
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    let left = pool_threads();
    assert!(
        left.is_empty(),
        "threads left after 1000 start/stop cycles: {left:?}"
    );
}
