//! Small pieces every element's glue uses: poison-tolerant locking, the always-present
//! sink and src pad templates, and the `stats` element message (posted every `stats-interval`
//! on the pipeline's clock, holding only a weak reference to the element, and at EOS).

use std::sync::{Mutex, MutexGuard};

use gst::prelude::*;

/// Locks `m` even if a thread panicked while holding it: pad functions catch panics and
/// turn them into element errors, and the element must still stop cleanly afterwards.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An always-present `sink` and `src` pad template with the same caps.
pub(crate) fn always_pads(caps: &gst::Caps) -> Vec<gst::PadTemplate> {
    [
        ("sink", gst::PadDirection::Sink),
        ("src", gst::PadDirection::Src),
    ]
    .into_iter()
    .map(|(name, direction)| {
        gst::PadTemplate::new(name, direction, gst::PadPresence::Always, caps)
            .expect("valid template")
    })
    .collect()
}

/// A periodic stats message on the element's clock; stopped when dropped.
#[derive(Debug, Default)]
pub struct StatsTimer(Option<gst::PeriodicClockId>);

impl StatsTimer {
    /// (Re)starts posting `stats(element)` every `interval_ns`; 0 stops it.
    pub fn restart<E, F>(&mut self, element: &E, interval_ns: u64, stats: F)
    where
        E: IsA<gst::Element> + IsA<gst::Object> + Send + Sync,
        F: Fn(&E) -> gst::Structure + Send + Sync + 'static,
    {
        self.stop();
        if interval_ns == 0 {
            return;
        }
        // The pipeline's clock once PLAYING (so a test clock drives it too; elements restart
        // the timer then), the system clock before.
        let clock = element.clock().unwrap_or_else(gst::SystemClock::obtain);
        let interval = gst::ClockTime::from_nseconds(interval_ns);
        let weak = element.downgrade();
        let stats = std::sync::Arc::new(stats);
        let schedule = |clock: &gst::Clock| {
            let id = clock.new_periodic_id(clock.time() + interval, interval);
            let weak = weak.clone();
            let stats = stats.clone();
            id.wait_async(move |_, _, _| {
                if let Some(element) = weak.upgrade() {
                    post_stats(&element, stats(&element));
                }
            })
            .ok()
            .map(|_| id)
        };
        // A clock that takes no asynchronous waits: the system clock does.
        self.0 = schedule(&clock).or_else(|| schedule(&gst::SystemClock::obtain()));
    }

    pub fn stop(&mut self) {
        if let Some(id) = self.0.take() {
            id.unschedule();
        }
    }
}

/// Posts `stats` as the element's stats message: every `stats-interval`, and once more just
/// before EOS leaves the element (then it covers the whole stream).
pub(crate) fn post_stats<E: IsA<gst::Element> + IsA<gst::Object>>(
    element: &E,
    stats: gst::Structure,
) {
    let msg = gst::message::Element::builder(stats).src(element).build();
    let _ = element.post_message(msg);
}

impl Drop for StatsTimer {
    fn drop(&mut self) {
        self.stop();
    }
}
