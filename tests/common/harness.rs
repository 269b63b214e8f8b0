//! `enrichpool` alone in a `gst_check::Harness`, for tests that push frames and pull what
//! comes out, and the waits such tests share.

// Each test crate that includes this uses what it needs of it.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_check::Harness;
use gstordered::EnrichPool;

/// Initialises GStreamer and registers the plugin, once per test binary.
pub fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstordered::plugin_register_static().unwrap();
    });
}

/// `enrichpool name=pool PROPS` in a harness (caps not set yet), and the element.
pub fn pool_harness(props: &str) -> (Harness, EnrichPool) {
    init();
    let h = Harness::new_parse(&format!("enrichpool name=pool {props}"));
    let pool = h
        .element()
        .unwrap()
        .downcast::<gst::Bin>()
        .unwrap()
        .by_name("pool")
        .unwrap()
        .downcast::<EnrichPool>()
        .unwrap();
    (h, pool)
}

/// A `guint64` field of the element's `stats`.
pub fn stat(element: &impl IsA<gst::Element>, name: &str) -> u64 {
    element
        .property::<gst::Structure>("stats")
        .get::<u64>(name)
        .unwrap()
}

/// Polls `done` until it holds; fails the test after `limit`.
pub fn wait_for(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The next frame out of the harness; fails the test if none comes within `limit`.
pub fn pull_within(h: &mut Harness, limit: Duration) -> gst::Buffer {
    let started = Instant::now();
    loop {
        if let Some(b) = h.try_pull() {
            return b;
        }
        assert!(
            started.elapsed() < limit,
            "no frame came out within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}
