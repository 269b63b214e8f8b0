//! The publishing side of `metapublish`: a bounded queue the streaming thread puts records
//! into, and a thread of its own that takes them out and writes them to the target,
//! reconnecting with backoff.
//!
//! ```text
//! streaming thread ──push──► queue (max-pending; full: drop the oldest, or wait)
//!                                 │
//!                 publisher thread ◄┘ ── in flight (until written / acknowledged) ──► target
//! ```
//!
//! The publisher does not wake for every record: after a batch it lingers `batch-interval`
//! and then takes all that came meanwhile; only a record after a quiet spell (the publisher
//! idle), a full queue, a drain or a stop wake it at once. A thread wake costs tens of
//! microseconds of CPU on a small machine: at 1000 frames/s, one per record would cost more
//! than the record.
//!
//! A record is `published` once the target has it: written to the file or socket (after the
//! flush, for files), handed to the broker's socket (MQTT QoS 0) or acknowledged by it
//! (QoS 1). Records in flight when a connection breaks are sent again, first, on the next
//! one: the only records lost are the ones `dropped` from a full queue (or left when the
//! element stops), each counted. `records = published + dropped + pending` at all times.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::target::Target;
use crate::glue::lock;

/// First wait before a reconnection; doubled after each failure up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Records handed to a connection before their confirmation is awaited.
const WINDOW: usize = 64;

/// Everything the publisher needs besides the records.
#[derive(Clone, Debug)]
pub struct Options {
    pub target: Target,
    pub batch_interval: Duration,
    pub flush_every: u32,
    pub qos: u8,
    pub client_id: String,
    pub credentials: Option<(String, String)>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub mqtt_version: u8,
    pub keep_alive: Duration,
}

#[derive(Default)]
struct Queue {
    records: VecDeque<Bytes>,
    in_flight: usize,
    /// The element stops: the publisher returns, waits end.
    stopping: bool,
    /// A flush or a state change: a streaming thread waiting for room gives up.
    unblocked: bool,
    /// EOS: write out what is buffered (`flush-every`) as soon as the queue is empty.
    draining: bool,
    /// The publisher waits for a record: the next one wakes it.
    idle: bool,
    /// Threads waiting on `changed` (for room, or in a drain): only then is it signalled.
    waiting: usize,
}

/// What the element and the publisher share.
#[derive(Default)]
pub struct Shared {
    queue: Mutex<Queue>,
    /// Room in the queue, or nothing left pending (for `drain`).
    changed: Condvar,
    /// Records arrived, or a drain began (the publishers on tokio).
    wake: Notify,
    /// The same, for the file and stdout publisher (a plain thread).
    work: Condvar,
    /// The element stops.
    pub(super) cancel: CancellationToken,
    pub records: AtomicU64,
    pub published: AtomicU64,
    pub dropped: AtomicU64,
    pub reconnects: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

/// What the publisher gets from the queue.
pub(super) enum Next {
    Batch(Vec<Bytes>),
    Idle,
    Stop,
}

/// What `push` did with a record.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Queued after dropping the oldest pending record.
    DroppedOldest,
    /// Not queued: a flush or a state change while waiting for room (counted as dropped).
    Unblocked,
}

impl Shared {
    /// Queues a record. The queue full: the oldest record is dropped, or with `block`, the
    /// caller waits for room (until [`Shared::unblock`]).
    pub fn push(&self, record: Bytes, max_pending: usize, block: bool) -> Pushed {
        self.records.fetch_add(1, Ordering::Relaxed);
        let mut q = lock(&self.queue);
        let mut pushed = Pushed::Queued;
        while q.records.len() >= max_pending.max(1) {
            if block && !q.unblocked && !q.stopping {
                q.waiting += 1;
                q = self.changed.wait(q).unwrap_or_else(|e| e.into_inner());
                q.waiting -= 1;
                continue;
            }
            if block {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return Pushed::Unblocked;
            }
            q.records.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
            pushed = Pushed::DroppedOldest;
        }
        q.records.push_back(record);
        // Idle: this record wakes it. Full: it is woken from its lingering.
        let wake = std::mem::take(&mut q.idle) || q.records.len() >= max_pending.max(1);
        drop(q);
        if wake {
            self.notify();
        }
        pushed
    }

    fn notify(&self) {
        self.wake.notify_one();
        self.work.notify_one();
    }

    /// Records queued or in flight.
    pub fn pending(&self) -> u64 {
        let q = lock(&self.queue);
        (q.records.len() + q.in_flight) as u64
    }

    /// Wakes a streaming thread waiting for room (a flush, a state change); until `resume`.
    pub fn unblock(&self) {
        lock(&self.queue).unblocked = true;
        self.changed.notify_all();
    }

    pub fn resume(&self) {
        lock(&self.queue).unblocked = false;
    }

    /// Waits until every record is published (or dropped), at most `timeout`; says whether
    /// nothing is left pending.
    pub fn drain(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut q = lock(&self.queue);
        q.draining = true;
        self.notify();
        while (q.in_flight > 0 || !q.records.is_empty()) && !q.stopping && !q.unblocked {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            q.waiting += 1;
            q = self
                .changed
                .wait_timeout(q, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            q.waiting -= 1;
        }
        q.draining = false;
        q.in_flight == 0 && q.records.is_empty()
    }

    /// Tells the publisher to return; what it leaves is counted as dropped.
    pub fn stop(&self) {
        lock(&self.queue).stopping = true;
        self.changed.notify_all();
        self.work.notify_all();
        self.cancel.cancel();
    }

    /// Takes up to `max` records into flight, waiting for one. `Idle` instead of waiting
    /// when `flush_pending` and the stream drains (EOS): time to flush.
    pub(super) async fn next(&self, max: usize, flush_pending: bool) -> Next {
        loop {
            // Made before looking: a notification in between is not missed.
            let notified = self.wake.notified();
            {
                let mut q = lock(&self.queue);
                if q.stopping {
                    return Next::Stop;
                }
                if !q.records.is_empty() {
                    let n = q.records.len().min(max);
                    q.in_flight += n;
                    let batch = q.records.drain(..n).collect();
                    // Room for a streaming thread that waits for it.
                    self.signal(q);
                    return Next::Batch(batch);
                }
                if flush_pending && q.draining {
                    return Next::Idle;
                }
                q.idle = true;
            }
            tokio::select! {
                _ = notified => {}
                _ = self.cancel.cancelled() => {}
            }
        }
    }

    /// `n` records in flight reached the target.
    pub(super) fn published(&self, n: usize) {
        self.settle(n, &self.published);
    }

    /// `n` records in flight are lost (a write error on a file, a refusal by the broker).
    pub(super) fn lost(&self, n: usize) {
        self.settle(n, &self.dropped);
    }

    fn settle(&self, n: usize, counter: &AtomicU64) {
        if n == 0 {
            return;
        }
        counter.fetch_add(n as u64, Ordering::Relaxed);
        let mut q = lock(&self.queue);
        q.in_flight -= n.min(q.in_flight);
        self.signal(q);
    }

    /// Wakes the threads waiting on `changed`, if any (a signal costs a system call).
    fn signal(&self, q: MutexGuard<'_, Queue>) {
        let waiting = q.waiting > 0;
        drop(q);
        if waiting {
            self.changed.notify_all();
        }
    }

    pub(super) fn error(&self, err: impl std::fmt::Display) {
        *lock(&self.last_error) = Some(err.to_string());
    }

    /// The publisher returned: what is left is lost.
    fn finished(&self) {
        let mut q = lock(&self.queue);
        let left = q.records.len() + q.in_flight;
        q.records.clear();
        q.in_flight = 0;
        drop(q);
        self.dropped.fetch_add(left as u64, Ordering::Relaxed);
        self.changed.notify_all();
    }

    /// After a batch: waits until `deadline` for more records to gather, unless the queue
    /// fills, a drain begins or the element stops.
    pub(super) async fn linger_until(&self, deadline: tokio::time::Instant) {
        {
            let q = lock(&self.queue);
            if q.stopping || q.draining {
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = self.wake.notified() => {}
            _ = self.cancel.cancelled() => {}
        }
    }

    /// Sleeps `backoff` unless stopped first; says whether to go on.
    pub(super) async fn pause(&self, backoff: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(backoff) => true,
            _ = self.cancel.cancelled() => false,
        }
    }
}

/// What the publisher tells the element (posted as warnings on the bus).
pub type Report = Box<dyn Fn(String) + Send + Sync>;

/// The publisher thread: runs until [`Shared::stop`].
pub fn spawn(
    shared: Arc<Shared>,
    options: Options,
    report: Report,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ordered-publish".into())
        .spawn(move || {
            if matches!(options.target, Target::File(_) | Target::Stdout) {
                write_lines(&shared, &options, &report);
                shared.finished();
                return;
            }
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(err) => {
                    shared.error(format!("starting the publisher: {err}"));
                    shared.finished();
                    return;
                }
            };
            runtime.block_on(async {
                match &options.target {
                    Target::Tcp { host, port } => {
                        tcp(&shared, host, *port, options.batch_interval, &report).await
                    }
                    _ => super::mqtt::run(&shared, &options, &report).await,
                }
            });
            shared.finished();
        })
}

/// Doubles a backoff, up to [`MAX_BACKOFF`].
fn next_backoff(backoff: Duration) -> Duration {
    (backoff * 2).min(MAX_BACKOFF)
}

/// File or stdout, on a plain thread: each batch written at once, flushed when `flush-every`
/// records are unflushed (1: every batch) and when the stream drains (EOS) or stops.
fn write_lines(shared: &Shared, options: &Options, report: &Report) {
    let out: Box<dyn Write + Send> = match &options.target {
        Target::File(path) => match std::fs::File::create(path) {
            Ok(f) => Box::new(f),
            Err(err) => {
                // `start` created it already: someone removed the folder meanwhile.
                shared.error(format!("opening {}: {err}", path.display()));
                report(format!("cannot open {}: {err}", path.display()));
                return;
            }
        },
        _ => Box::new(std::io::stdout()),
    };
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let flush_every = options.flush_every.max(1) as usize;
    // Written into the buffer, not flushed yet: still in flight.
    let mut unflushed = 0usize;
    let reported = std::cell::Cell::new(false);
    let failed = |err: std::io::Error, n: &mut usize| {
        shared.error(format!("writing: {err}"));
        if !reported.replace(true) {
            report(format!("writing records failed: {err}"));
        }
        shared.lost(std::mem::take(n));
    };
    let flush = |out: &mut std::io::BufWriter<Box<dyn Write + Send>>, n: &mut usize| {
        if *n > 0 {
            match out.flush() {
                Ok(()) => shared.published(std::mem::take(n)),
                Err(err) => failed(err, n),
            }
        }
    };
    let mut q = lock(&shared.queue);
    loop {
        if q.stopping {
            break;
        }
        if q.records.is_empty() {
            if unflushed > 0 && q.draining {
                drop(q);
                flush(&mut out, &mut unflushed);
                q = lock(&shared.queue);
                continue;
            }
            q.idle = true;
            q = shared.work.wait(q).unwrap_or_else(|e| e.into_inner());
            continue;
        }
        let n = q.records.len();
        q.in_flight += n;
        let batch: Vec<Bytes> = q.records.drain(..).collect();
        // Room for a streaming thread that waits for it.
        shared.signal(q);
        for record in &batch {
            unflushed += 1;
            if let Err(err) = out.write_all(record).and_then(|()| out.write_all(b"\n")) {
                // What the buffer held is lost with it, this record too.
                failed(err, &mut unflushed);
            }
        }
        if unflushed >= flush_every {
            flush(&mut out, &mut unflushed);
        }
        q = lock(&shared.queue);
        // Let records gather, unless woken: a full queue, a drain, a stop.
        if !options.batch_interval.is_zero() && !q.stopping && !q.draining {
            q = shared
                .work
                .wait_timeout(q, options.batch_interval)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
    drop(q);
    flush(&mut out, &mut unflushed);
}

/// TCP: JSON Lines to a server, reconnected with backoff; a batch whose write failed is
/// sent again, first, on the next connection.
async fn tcp(shared: &Shared, host: &str, port: u16, interval: Duration, report: &Report) {
    let mut backoff = MIN_BACKOFF;
    let mut connected_once = false;
    let mut reported_down = false;
    let mut batch: Vec<Bytes> = Vec::new();
    let name = format!("tcp://{host}:{port}");
    'connect: loop {
        let stream = tokio::select! {
            s = tokio::net::TcpStream::connect((host, port)) => s,
            _ = shared.cancel.cancelled() => return,
        };
        let stream = match stream {
            Ok(s) => s,
            Err(err) => {
                shared.error(format!("connecting to {name}: {err}"));
                if !std::mem::replace(&mut reported_down, true) {
                    report(format!("cannot reach {name}: {err}; retrying"));
                }
                if !shared.pause(backoff).await {
                    return;
                }
                backoff = next_backoff(backoff);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if std::mem::replace(&mut connected_once, true) {
            shared.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        backoff = MIN_BACKOFF;
        let (mut reader, mut writer) = stream.into_split();
        let mut sink = [0u8; 512];
        loop {
            if batch.is_empty() {
                // Wait for records, and notice the server closing meanwhile.
                let next = tokio::select! {
                    next = shared.next(WINDOW, false) => next,
                    r = reader.read(&mut sink) => {
                        match r {
                            Ok(n) if n > 0 => continue,
                            Ok(_) => shared.error(format!("{name} closed the connection")),
                            Err(err) => shared.error(format!("{name}: {err}")),
                        }
                        report(format!("lost {name}; reconnecting"));
                        reported_down = true;
                        continue 'connect;
                    }
                };
                match next {
                    Next::Batch(b) => batch = b,
                    Next::Idle => continue,
                    Next::Stop => return,
                }
            }
            let mut bytes = Vec::with_capacity(batch.iter().map(|r| r.len() + 1).sum());
            for record in &batch {
                bytes.extend_from_slice(record);
                bytes.push(b'\n');
            }
            let written = tokio::select! {
                r = writer.write_all(&bytes) => r,
                _ = shared.cancel.cancelled() => return,
            };
            match written {
                Ok(()) => {
                    shared.published(batch.len());
                    batch.clear();
                    shared
                        .linger_until(tokio::time::Instant::now() + interval)
                        .await;
                }
                Err(err) => {
                    shared.error(format!("writing to {name}: {err}"));
                    report(format!("lost {name} ({err}); reconnecting"));
                    reported_down = true;
                    continue 'connect;
                }
            }
        }
    }
}
