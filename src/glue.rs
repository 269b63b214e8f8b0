//! Small pieces every element's glue uses: poison-tolerant locking, the always-present
//! sink and src pad templates, and the `stats` element message (posted every `stats-interval`
//! on the pipeline's clock, holding only a weak reference to the element, and at EOS).

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use gst::glib::translate::{FromGlib, IntoGlib};
use gst::prelude::*;

/// Locks `m` even if a thread panicked while holding it: pad functions catch panics and
/// turn them into element errors, and the element must still stop cleanly afterwards.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads `l` even if a thread panicked while writing it (as [`lock`]).
pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

/// Writes `l` even if a thread panicked while writing it (as [`lock`]).
pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// The last flow result of a push, shared between the thread that pushes and the chain
/// that returns it upstream, without a lock (it is read and written once per frame).
#[derive(Debug)]
pub(crate) struct FlowCell(AtomicI32);

impl FlowCell {
    pub(crate) fn new() -> FlowCell {
        FlowCell(AtomicI32::new(gst::FlowReturn::Ok.into_glib()))
    }

    pub(crate) fn get(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        // SAFETY: only values of `gst::FlowReturn` are ever stored.
        unsafe { gst::FlowReturn::from_glib(self.0.load(Ordering::SeqCst)) }.into_result()
    }

    pub(crate) fn set(&self, res: Result<gst::FlowSuccess, gst::FlowError>) {
        self.0
            .store(gst::FlowReturn::from(res).into_glib(), Ordering::SeqCst);
    }

    /// Stores `res` unless the stored result is an error that stops the stream (not
    /// FLUSHING, EOS or NOT_LINKED, which can pass): that one is kept until a reset.
    pub(crate) fn set_unless_fatal(&self, res: Result<gst::FlowSuccess, gst::FlowError>) {
        let new = gst::FlowReturn::from(res).into_glib();
        let _ = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |old| {
                // SAFETY: as in `get`.
                let fatal = matches!(
                    unsafe { gst::FlowReturn::from_glib(old) }.into_result(),
                    Err(e) if !matches!(
                        e,
                        gst::FlowError::Flushing | gst::FlowError::Eos | gst::FlowError::NotLinked
                    )
                );
                (!fatal && old != new).then_some(new)
            });
    }

    /// Replaces `from` with OK (a new stream after EOS, a relinked downstream).
    pub(crate) fn clear(&self, from: gst::FlowError) {
        let _ = self.0.compare_exchange(
            gst::FlowReturn::from_error(from).into_glib(),
            gst::FlowReturn::Ok.into_glib(),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }
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
