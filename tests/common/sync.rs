//! Synchronisation for tests: a gate handlers or probes wait at until the test opens it, and
//! bounded waits that fail a test instead of hanging CI.

// Each test crate that includes this uses what it needs of it.
#![allow(dead_code)]

use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::Duration;

/// A gate that waits until the test opens it.
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    pub fn wait(&self) {
        let mut open = self.0.0.lock().unwrap();
        while !*open {
            open = self.0.1.wait(open).unwrap();
        }
    }

    pub fn open(&self) {
        *self.0.0.lock().unwrap() = true;
        self.0.1.notify_all();
    }
}

/// Runs `f` on another thread and waits at most `limit` for it.
pub fn bounded<R: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> R + Send + 'static,
) -> R {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} did not return within {limit:?}"))
}

/// Runs a whole test body on its own thread and fails the test if it does not finish within
/// `limit`: a regression that deadlocks fails instead of hanging CI (the stuck thread is left
/// behind; the test process exits without it). A panic in the body is the test's failure.
pub fn within(limit: Duration, body: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        body();
        let _ = tx.send(());
    });
    match rx.recv_timeout(limit) {
        Ok(()) => handle.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("the test did not finish within {limit:?}")
        }
    }
}
