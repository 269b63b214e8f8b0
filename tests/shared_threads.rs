//! Sixteen live cameras on one shared pool of eight workers: how many threads the process
//! runs (alone in its test binary, so that no other test's threads count), and every
//! stream's order and ledger.

#[path = "common/cameras.rs"]
mod cameras;
#[path = "common/sync.rs"]
mod sync;

use std::time::Duration;

use cameras::Camera;
use gst::prelude::*;
use gstordered::enrichpool::Verdict;
use sync::within;

/// Threads of this process now, but GLib's idle thread-pool threads: GStreamer starts its
/// tasks on a GLib thread pool, which keeps a varying few idle threads (named `pool-…`; a
/// thread running a task is named after it) for tasks to come. Without them the count is
/// the pipelines' own and the pool's, and does not move with GLib's keeping.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .filter(|name| !name.starts_with("pool-"))
        .count()
}

#[test]
fn sixteen_live_cameras_on_eight_shared_workers_stay_within_fifty_threads() {
    gst::init().unwrap();
    gstordered::plugin_register_static().unwrap();
    within(Duration::from_secs(120), || {
        const CAMERAS: usize = 16;
        const FRAMES: u32 = 60;
        let cameras: Vec<Camera> = (0..CAMERAS)
            .map(|_| Camera::new(FRAMES, true, "shared-pool=cameras workers=8"))
            .collect();
        for c in &cameras {
            c.pool.set_handler(|job| {
                job.outputs.set("seen", true);
                Ok(Verdict::Keep)
            });
            c.start();
        }
        // Sampled until every stream is done (a poll of a counter, not a wait for an event).
        let mut most = 0;
        let until = std::time::Instant::now() + Duration::from_secs(100);
        while cameras.iter().any(|c| c.seqs().len() < FRAMES as usize) {
            most = most.max(threads());
            assert!(
                std::time::Instant::now() < until,
                "the cameras did not finish"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        for c in &cameras {
            c.wait_eos(gst::ClockTime::from_seconds(30));
        }
        // The test harness's own threads (main, this body's) count too.
        assert!(most <= 50, "{most} threads with {CAMERAS} cameras");
        let stats = cameras[0].pool.property::<gst::Structure>("pool-stats");
        assert_eq!(stats.get::<u64>("workers").unwrap(), 8);
        assert_eq!(stats.get::<gst::Array>("members").unwrap().len(), CAMERAS);
        for c in &cameras {
            assert_eq!(c.seqs(), (0..FRAMES as u64).collect::<Vec<_>>());
            let (pushed, dropped) = (c.stat("pushed"), c.stat("dropped"));
            assert_eq!(
                (c.stat("in"), pushed + dropped),
                (FRAMES as u64, FRAMES as u64)
            );
            assert_eq!(dropped, 0);
        }
        for c in &cameras {
            c.stop();
        }
        eprintln!("most threads: {most}");
    });
}
