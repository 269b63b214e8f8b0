//! Small pieces every element's glue uses: poison-tolerant locking, the always-present
//! sink and src pad templates, and the periodic `stats` element message (posted on the
//! system clock every `stats-interval`, holding only a weak reference to the element).

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

/// A periodic stats message; stopped when dropped.
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
        let clock = gst::SystemClock::obtain();
        let interval = gst::ClockTime::from_nseconds(interval_ns);
        let id = clock.new_periodic_id(clock.time() + interval, interval);
        let weak = element.downgrade();
        let posted = id.wait_async(move |_, _, _| {
            if let Some(element) = weak.upgrade() {
                let msg = gst::message::Element::builder(stats(&element))
                    .src(&element)
                    .build();
                let _ = element.post_message(msg);
            }
        });
        if posted.is_ok() {
            self.0 = Some(id);
        }
    }

    pub fn stop(&mut self) {
        if let Some(id) = self.0.take() {
            id.unschedule();
        }
    }
}

impl Drop for StatsTimer {
    fn drop(&mut self) {
        self.stop();
    }
}
