//! Posting an element's `stats` structure as an element message every `stats-interval`, on
//! the system clock, holding only a weak reference to the element.

use gst::prelude::*;

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
