//! `enrichpool shared-pool=…`: camera pipelines of one process on one set of workers, each
//! stream in order with its own ledger, settings checked against the pool's, and members
//! that hang, stop, seek or block downstream costing only themselves.

#[path = "common/cameras.rs"]
mod cameras;
#[path = "common/sync.rs"]
mod sync;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cameras::Camera;
use gst::prelude::*;
use gstordered::enrichpool::Verdict;
use sync::{Gate, within};

const LIMIT: Duration = Duration::from_secs(90);
const EOS_WITHIN: gst::ClockTime = gst::ClockTime::from_seconds(60);

fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstordered::plugin_register_static().unwrap();
    });
}

/// The names of the threads a handler ran on, shared by the cameras of a test.
type Threads = Arc<Mutex<BTreeSet<String>>>;

fn record_threads(camera: &Camera, threads: &Threads) {
    let threads = threads.clone();
    camera.pool.set_handler(move |job| {
        let name = std::thread::current().name().unwrap_or("").to_string();
        threads.lock().unwrap().insert(name);
        job.outputs.set("seen", true);
        Ok(Verdict::Keep)
    });
}

fn pool_stats(camera: &Camera) -> gst::Structure {
    camera.pool.property::<gst::Structure>("pool-stats")
}

#[test]
fn cameras_on_one_shared_pool_run_on_its_workers_each_in_order_with_its_own_ledger() {
    init();
    within(LIMIT, || {
        let threads: Threads = Arc::default();
        let cameras: Vec<Camera> = (0..4)
            .map(|_| Camera::new(60, false, "shared-pool=ledgers workers=2"))
            .collect();
        for c in &cameras {
            record_threads(c, &threads);
            c.start();
        }
        for c in &cameras {
            c.wait_eos(EOS_WITHIN);
        }
        // Two workers served all four: no thread of a private pool ran a frame.
        let threads = threads.lock().unwrap().clone();
        assert!(
            threads.len() <= 2 && threads.iter().all(|t| t.starts_with("enrich-worker-")),
            "{threads:?}"
        );
        let stats = pool_stats(&cameras[0]);
        assert_eq!(stats.get::<&str>("shared-pool").unwrap(), "ledgers");
        assert_eq!(stats.get::<u64>("workers").unwrap(), 2);
        let members = stats.get::<gst::Array>("members").unwrap();
        assert_eq!(members.len(), 4);
        let pushed: u64 = members
            .iter()
            .map(|m| {
                m.get::<gst::Structure>()
                    .unwrap()
                    .get::<u64>("pushed")
                    .unwrap()
            })
            .sum();
        assert_eq!(pushed, 240);
        for c in &cameras {
            assert_eq!(c.seqs(), (0..60).collect::<Vec<_>>());
            assert_eq!(
                (c.stat("in"), c.stat("pushed"), c.stat("dropped")),
                (60, 60, 0)
            );
        }
        for c in &cameras {
            c.stop();
        }
        // The last member stopped the pool: a new member starts a new one.
        let again = Camera::new(5, false, "shared-pool=ledgers workers=1");
        again.start();
        again.wait_eos(EOS_WITHIN);
        let stats = pool_stats(&again);
        assert_eq!(stats.get::<u64>("workers").unwrap(), 1);
        assert_eq!(stats.get::<gst::Array>("members").unwrap().len(), 1);
        again.stop();
    });
}

#[test]
fn settings_unlike_the_shared_pools_are_warned_about_and_another_model_refused() {
    init();
    within(LIMIT, || {
        let first = Camera::new(5, false, "shared-pool=settings workers=2");
        first.start();
        first.wait_eos(EOS_WITHIN);
        // Other workers: the pool's stay, and a warning names both values.
        let second = Camera::new(5, false, "shared-pool=settings workers=3");
        second.start();
        let bus = second.pipeline.bus().unwrap();
        let warning = bus
            .timed_pop_filtered(EOS_WITHIN, &[gst::MessageType::Warning])
            .expect("a warning");
        let gst::MessageView::Warning(w) = warning.view() else {
            unreachable!()
        };
        let text = w.error().to_string();
        assert!(
            text.contains("workers=3") && text.contains("workers=2"),
            "{text}"
        );
        second.wait_eos(EOS_WITHIN);
        assert_eq!(second.seqs(), (0..5).collect::<Vec<_>>());
        // Servers and a model where the pool has none: refused at start, with the reason.
        let third = Camera::new(
            5,
            false,
            "shared-pool=settings servers=http://127.0.0.1:9 model=other",
        );
        assert!(third.pipeline.set_state(gst::State::Playing).is_err());
        let bus = third.pipeline.bus().unwrap();
        let error = bus
            .timed_pop_filtered(EOS_WITHIN, &[gst::MessageType::Error])
            .expect("an error");
        let gst::MessageView::Error(e) = error.view() else {
            unreachable!()
        };
        let text = e.error().to_string();
        assert!(
            text.contains("settings") && text.contains("model"),
            "{text}"
        );
        for c in [&first, &second, &third] {
            c.stop();
        }
    });
}

#[test]
fn a_member_whose_handler_hangs_costs_only_its_own_frames() {
    init();
    within(LIMIT, || {
        let never = Gate::default();
        let hung = Camera::new(40, false, "shared-pool=hang workers=2 timeout=100000000");
        let g = never.clone();
        hung.pool.set_handler(move |job| {
            let seq = gstordered::meta::SeqMeta::read(job.buffer)
                .unwrap()
                .unwrap()
                .seq;
            if seq >= 5 {
                g.wait();
            }
            Ok(Verdict::Keep)
        });
        let fine = Camera::new(40, false, "shared-pool=hang workers=2");
        let threads: Threads = Arc::default();
        record_threads(&fine, &threads);
        hung.start();
        fine.start();
        fine.wait_eos(EOS_WITHIN);
        assert_eq!(fine.seqs(), (0..40).collect::<Vec<_>>());
        assert_eq!(fine.stat("dropped"), 0);
        hung.wait_eos(EOS_WITHIN);
        assert_eq!(hung.seqs(), (0..5).collect::<Vec<_>>());
        assert_eq!(hung.stat("dropped-timeout"), 35);
        never.open();
        hung.stop();
        fine.stop();
    });
}

#[test]
fn a_member_stopped_or_seeking_while_running_leaves_the_others_untouched() {
    init();
    within(LIMIT, || {
        let a = Camera::new(90, true, "shared-pool=dynamics workers=2");
        let b = Camera::new(90, true, "shared-pool=dynamics workers=2");
        let c = Camera::new(300, false, "shared-pool=dynamics workers=2");
        for cam in [&a, &b, &c] {
            record_threads(cam, &Threads::default());
            cam.start();
        }
        // b leaves the pool while running; c seeks back to the start.
        let until = std::time::Instant::now() + LIMIT;
        while b.seqs().len() < 10 && std::time::Instant::now() < until {
            std::thread::yield_now();
        }
        b.stop();
        while c.seqs().len() < 50 && std::time::Instant::now() < until {
            std::thread::yield_now();
        }
        c.pipeline
            .seek_simple(gst::SeekFlags::FLUSH, gst::ClockTime::ZERO)
            .unwrap();
        a.wait_eos(EOS_WITHIN);
        assert_eq!(a.seqs(), (0..90).collect::<Vec<_>>());
        assert_eq!(a.stat("dropped"), 0);
        c.wait_eos(EOS_WITHIN);
        assert_eq!(
            pool_stats(&a).get::<gst::Array>("members").unwrap().len(),
            2,
            "the stopped member left the pool"
        );
        a.stop();
        c.stop();
    });
}

#[test]
fn a_member_blocked_downstream_does_not_hold_the_shared_workers() {
    init();
    within(LIMIT, || {
        // Nobody pulls from this sink: once its queue is full, downstream blocks for good.
        let blocked = Camera::with_sink(
            200,
            false,
            "shared-pool=blocked workers=1",
            "sync=false max-buffers=1 emit-signals=false",
        );
        // Replace the pulling callbacks: this sink is never drained.
        let sink = blocked
            .pipeline
            .by_name("sink")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        sink.set_callbacks(gst_app::AppSinkCallbacks::builder().build());
        let fine = Camera::new(100, false, "shared-pool=blocked workers=1");
        record_threads(&blocked, &Threads::default());
        record_threads(&fine, &Threads::default());
        blocked.start();
        fine.start();
        fine.wait_eos(EOS_WITHIN);
        assert_eq!(fine.seqs(), (0..100).collect::<Vec<_>>());
        let stats = pool_stats(&fine);
        assert!(stats.get::<u64>("blocked").unwrap() >= 1, "{stats:?}");
        blocked.stop();
        fine.stop();
    });
}

#[test]
fn a_member_that_fails_or_ends_early_leaves_the_others_untouched() {
    init();
    within(LIMIT, || {
        // One camera's handler fails with on-error=fail: its pipeline errors out. Another
        // ends after 10 frames. The third runs its 120 frames to the end, in order.
        let failing = Camera::new(120, false, "shared-pool=faults workers=2 on-error=fail");
        failing.pool.set_handler(|job| {
            let seq = gstordered::meta::SeqMeta::read(job.buffer)
                .unwrap()
                .unwrap()
                .seq;
            if seq == 20 {
                return Err("a broken model".into());
            }
            Ok(Verdict::Keep)
        });
        let short = Camera::new(10, false, "shared-pool=faults workers=2");
        let long = Camera::new(120, false, "shared-pool=faults workers=2");
        for c in [&short, &long] {
            record_threads(c, &Threads::default());
        }
        for c in [&failing, &short, &long] {
            c.start();
        }
        let bus = failing.pipeline.bus().unwrap();
        let error = bus
            .timed_pop_filtered(EOS_WITHIN, &[gst::MessageType::Error])
            .expect("the failing camera's error");
        let gst::MessageView::Error(e) = error.view() else {
            unreachable!()
        };
        assert!(e.error().to_string().contains("a broken model"), "{e:?}");
        failing.stop();
        short.wait_eos(EOS_WITHIN);
        assert_eq!(short.seqs(), (0..10).collect::<Vec<_>>());
        long.wait_eos(EOS_WITHIN);
        assert_eq!(long.seqs(), (0..120).collect::<Vec<_>>());
        assert_eq!(long.stat("dropped"), 0);
        short.stop();
        long.stop();
    });
}
