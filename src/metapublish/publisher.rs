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
//! A record is `published` once the target has it: written to the file (after the flush),
//! written to the TCP connection, handed to the broker's connection (MQTT QoS 0) or
//! acknowledged by the broker (QoS 1). Records in flight when a connection breaks are sent
//! again, first, on the next one. With QoS 1 the only records lost are the ones `dropped`
//! (from a full queue, by a write error, or left when the element stops), each counted; TCP
//! and QoS 0 can also lose what was written into a connection as it died, uncounted (no
//! acknowledgement tells). The counters change under the queue's lock, and `snapshot`
//! reads them under it: `records = published + dropped + pending` in every snapshot.

use std::collections::VecDeque;
use std::io::Write;
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
#[derive(Debug)]
pub struct Options {
    pub target: Target,
    /// The file, opened by `start` (so that a bad path fails the start, and a FIFO is
    /// opened once).
    pub file: Option<std::fs::File>,
    pub batch_interval: Duration,
    pub flush_every: u32,
    pub qos: u8,
    pub client_id: String,
    pub credentials: Option<(String, String)>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub mqtt_version: u8,
    pub keep_alive: Duration,
}

/// The counters of `stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub records: u64,
    pub published: u64,
    pub dropped: u64,
    pub pending: u64,
    pub reconnects: u64,
    /// Frames waiting for room now (`on-disconnect=block`); their records not yet counted.
    pub blocked: u64,
}

#[derive(Default)]
struct Queue {
    records: VecDeque<Bytes>,
    in_flight: usize,
    counts: Counts,
    /// The element stops: the publisher returns, waits end.
    stopping: bool,
    /// The publisher returned: records are no longer queued but counted dropped.
    closed: bool,
    /// A flush: a streaming thread waiting for room gives up, until the flush ends.
    flushing: bool,
    /// The element goes to READY: the same, for good.
    deactivating: bool,
    /// EOS: write out what is buffered (`flush-every`) as soon as the queue is empty.
    draining: bool,
    /// The publisher waits for a record: the next one wakes it.
    idle: bool,
    /// The publisher should not wait: records after a quiet spell, a full queue, a drain.
    /// (Its condition variable keeps no notification; this flag does.)
    wake: bool,
    /// Threads waiting on `changed` (for room, or in a drain): only then is it signalled.
    waiting: usize,
}

impl Queue {
    fn unblocked(&self) -> bool {
        self.flushing || self.deactivating || self.stopping || self.closed
    }

    fn pending(&self) -> u64 {
        (self.records.len() + self.in_flight) as u64
    }
}

/// What the element and the publisher share.
#[derive(Default)]
pub struct Shared {
    queue: Mutex<Queue>,
    /// Room in the queue, or nothing left pending (for `drain`).
    changed: Condvar,
    /// Records arrived, or a drain began (the publishers on tokio; it keeps a permit).
    wake: Notify,
    /// The same, for the file and stdout publisher (a plain thread; see `Queue::wake`).
    work: Condvar,
    /// The element stops.
    pub(super) cancel: CancellationToken,
    pub last_error: Mutex<Option<String>>,
}

/// What the publisher gets from the queue.
pub(super) enum Next {
    Batch(Vec<Bytes>),
    Stop,
}

/// What `push` did with a record.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Queued after dropping the oldest pending record.
    DroppedOldest,
    /// Not queued, counted dropped: a flush or a state change while waiting for room, or
    /// the publisher gone.
    Dropped,
}

/// How `push` treats a full queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    DropOldest,
    /// Wait for room (`on-disconnect=block`).
    Wait,
    /// Queue it over the bound (the `flush` and `eos` records, which an application's
    /// seek or EOS must not wait for).
    Overflow,
}

impl Shared {
    /// Queues a record; a full queue is handled as `full` says.
    pub fn push(&self, record: Bytes, max_pending: usize, full: Full) -> Pushed {
        let max = max_pending.max(1);
        let mut q = lock(&self.queue);
        // Counted as made when queued or dropped: the counters balance while one waits.
        if q.closed {
            q.counts.records += 1;
            q.counts.dropped += 1;
            return Pushed::Dropped;
        }
        let mut pushed = Pushed::Queued;
        while q.records.len() >= max && full != Full::Overflow {
            if full == Full::Wait {
                if q.unblocked() {
                    q.counts.records += 1;
                    q.counts.dropped += 1;
                    return Pushed::Dropped;
                }
                q.wake = true;
                self.notify();
                q.waiting += 1;
                q.counts.blocked += 1;
                q = self.changed.wait(q).unwrap_or_else(|e| e.into_inner());
                q.waiting -= 1;
                q.counts.blocked -= 1;
                if q.closed {
                    q.counts.records += 1;
                    q.counts.dropped += 1;
                    return Pushed::Dropped;
                }
                continue;
            }
            q.records.pop_front();
            q.counts.dropped += 1;
            pushed = Pushed::DroppedOldest;
        }
        q.counts.records += 1;
        q.records.push_back(record);
        // Idle: this record wakes it. Full: it is woken from its lingering.
        if (std::mem::take(&mut q.idle) || q.records.len() >= max) && !q.wake {
            q.wake = true;
            drop(q);
            self.notify();
        }
        pushed
    }

    fn notify(&self) {
        self.wake.notify_one();
        self.work.notify_one();
    }

    /// The counters, read at one moment.
    pub fn snapshot(&self) -> Counts {
        let q = lock(&self.queue);
        Counts {
            pending: q.pending(),
            ..q.counts
        }
    }

    pub fn pending(&self) -> u64 {
        lock(&self.queue).pending()
    }

    /// A flush began: a streaming thread waiting for room gives up (its record dropped).
    pub fn flush_start(&self) {
        lock(&self.queue).flushing = true;
        self.changed.notify_all();
    }

    pub fn flush_stop(&self) {
        lock(&self.queue).flushing = false;
    }

    /// The element goes to READY: no more waiting for room, nor in a drain.
    pub fn deactivate(&self) {
        lock(&self.queue).deactivating = true;
        self.changed.notify_all();
    }

    /// Waits until every record is published (or dropped), at most `timeout`; says whether
    /// nothing is left pending.
    pub fn drain(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut q = lock(&self.queue);
        q.draining = true;
        q.wake = true;
        self.notify();
        while q.pending() > 0 && !q.unblocked() {
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
        q.pending() == 0
    }

    /// Tells the publisher to return; what it leaves is counted as dropped.
    pub fn stop(&self) {
        lock(&self.queue).stopping = true;
        self.changed.notify_all();
        self.work.notify_all();
        self.cancel.cancel();
    }

    /// Takes up to `max` records into flight, waiting for one.
    pub(super) async fn next(&self, max: usize) -> Next {
        loop {
            // Made before looking: a notification in between is not missed.
            let notified = self.wake.notified();
            {
                let mut q = lock(&self.queue);
                if q.stopping {
                    return Next::Stop;
                }
                q.wake = false;
                if !q.records.is_empty() {
                    return Next::Batch(self.take(q, max));
                }
                q.idle = true;
            }
            tokio::select! {
                _ = notified => {}
                _ = self.cancel.cancelled() => {}
            }
        }
    }

    /// Moves up to `max` queued records into flight.
    fn take(&self, mut q: MutexGuard<'_, Queue>, max: usize) -> Vec<Bytes> {
        let n = q.records.len().min(max);
        q.in_flight += n;
        let batch = q.records.drain(..n).collect();
        // Room for a streaming thread that waits for it.
        self.signal(q);
        batch
    }

    /// `n` records in flight reached the target.
    pub(super) fn published(&self, n: usize) {
        self.settle(n, |c| &mut c.published);
    }

    /// `n` records in flight are lost (a write error on a file, a refusal by the broker).
    pub(super) fn lost(&self, n: usize) {
        self.settle(n, |c| &mut c.dropped);
    }

    fn settle(&self, n: usize, counter: fn(&mut Counts) -> &mut u64) {
        if n == 0 {
            return;
        }
        let mut q = lock(&self.queue);
        let n = n.min(q.in_flight);
        q.in_flight -= n;
        *counter(&mut q.counts) += n as u64;
        self.signal(q);
    }

    pub(super) fn reconnected(&self) {
        lock(&self.queue).counts.reconnects += 1;
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

    /// The publisher returned (or panicked): what is left is lost, and so is what comes.
    fn finished(&self) {
        let mut q = lock(&self.queue);
        let left = q.pending();
        q.records.clear();
        q.in_flight = 0;
        q.counts.dropped += left;
        q.closed = true;
        drop(q);
        self.changed.notify_all();
    }

    /// After a batch: waits until `deadline` for more records to gather, unless the queue
    /// fills, a drain begins or the element stops.
    pub(super) async fn linger_until(&self, deadline: tokio::time::Instant) {
        {
            let mut q = lock(&self.queue);
            if q.stopping || q.draining || std::mem::take(&mut q.wake) {
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

/// The publisher thread: runs until [`Shared::stop`]; says on `done` that it returned.
pub fn spawn(
    shared: Arc<Shared>,
    mut options: Options,
    report: Report,
    done: std::sync::mpsc::Sender<()>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ordered-publish".into())
        .spawn(move || {
            let run = std::panic::AssertUnwindSafe(|| {
                if matches!(options.target, Target::File(_) | Target::Stdout) {
                    write_lines(&shared, &mut options, &report);
                    return;
                }
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(err) => {
                        shared.error(format!("starting the publisher: {err}"));
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
                // Not waiting for a name lookup still running on tokio's blocking pool.
                runtime.shutdown_background();
            });
            if std::panic::catch_unwind(run).is_err() {
                shared.error("the publisher thread panicked");
            }
            shared.finished();
            let _ = done.send(());
        })
}

/// Doubles a backoff, up to [`MAX_BACKOFF`].
fn next_backoff(backoff: Duration) -> Duration {
    (backoff * 2).min(MAX_BACKOFF)
}

/// File or stdout, on a plain thread: each batch appended to a buffer, written out when
/// `flush-every` records are in it (1: every batch) and when the stream drains (EOS) or
/// stops. A write that fails (a full disk) loses the records not wholly written, counted;
/// the next write first ends a line cut short.
fn write_lines(shared: &Shared, options: &mut Options, report: &Report) {
    let mut out: Box<dyn Write + Send> = match options.file.take() {
        Some(file) => Box::new(file),
        None => Box::new(std::io::stdout()),
    };
    let flush_every = options.flush_every.max(1) as usize;
    let mut buffer: Vec<u8> = Vec::with_capacity(64 * 1024);
    // Where each buffered record ends in `buffer`.
    let mut ends: Vec<usize> = Vec::new();
    let mut cut_short = false;
    let mut reported = false;
    let mut write_out = |buffer: &mut Vec<u8>, ends: &mut Vec<usize>| {
        if ends.is_empty() {
            return;
        }
        let mut written = 0;
        let mut failure = None;
        if cut_short {
            // The last write stopped inside a line: end it, so that the next record
            // starts a line of its own.
            match out.write_all(b"\n") {
                Ok(()) => cut_short = false,
                Err(err) => failure = Some(err),
            }
        }
        while failure.is_none() && written < buffer.len() {
            match out.write(&buffer[written..]) {
                Ok(0) => failure = Some(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => failure = Some(err),
            }
        }
        if failure.is_none()
            && let Err(err) = out.flush()
        {
            failure = Some(err);
        }
        let whole = ends.iter().take_while(|&&end| end <= written).count();
        shared.published(whole);
        if let Some(err) = failure {
            if written > 0 {
                cut_short = buffer.get(written - 1) != Some(&b'\n');
            }
            shared.error(format!("writing: {err}"));
            if !std::mem::replace(&mut reported, true) {
                report(format!("writing records failed: {err}"));
            }
            shared.lost(ends.len() - whole);
        }
        buffer.clear();
        ends.clear();
    };
    let mut q = lock(&shared.queue);
    loop {
        if q.stopping {
            break;
        }
        if q.records.is_empty() {
            if !ends.is_empty() && q.draining {
                drop(q);
                write_out(&mut buffer, &mut ends);
                q = lock(&shared.queue);
                continue;
            }
            if !q.wake {
                q.idle = true;
                q = shared.work.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            q.wake = false;
            continue;
        }
        q.wake = false;
        let n = q.records.len();
        let batch = shared.take(q, n);
        for record in &batch {
            buffer.extend_from_slice(record);
            buffer.push(b'\n');
            ends.push(buffer.len());
        }
        if ends.len() >= flush_every {
            write_out(&mut buffer, &mut ends);
        }
        q = lock(&shared.queue);
        // Let records gather, unless woken: a full queue, a drain, a stop.
        if !options.batch_interval.is_zero() && !q.stopping && !q.draining && !q.wake {
            q = shared
                .work
                .wait_timeout(q, options.batch_interval)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
    drop(q);
    write_out(&mut buffer, &mut ends);
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
            shared.reconnected();
        }
        let (mut reader, mut writer) = stream.into_split();
        let mut sink = [0u8; 512];
        loop {
            if batch.is_empty() {
                // Wait for records, and notice the server closing meanwhile.
                let next = tokio::select! {
                    next = shared.next(WINDOW) => next,
                    r = reader.read(&mut sink) => {
                        match r {
                            Ok(n) if n > 0 => continue,
                            Ok(_) => shared.error(format!("{name} closed the connection")),
                            Err(err) => shared.error(format!("{name}: {err}")),
                        }
                        report(format!("lost {name}; reconnecting"));
                        reported_down = true;
                        // A server that takes connections and closes them: not in a loop.
                        if !shared.pause(backoff).await {
                            return;
                        }
                        backoff = next_backoff(backoff);
                        continue 'connect;
                    }
                };
                match next {
                    Next::Batch(b) => batch = b,
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
                    backoff = MIN_BACKOFF;
                    shared
                        .linger_until(tokio::time::Instant::now() + interval)
                        .await;
                }
                Err(err) => {
                    shared.error(format!("writing to {name}: {err}"));
                    report(format!("lost {name} ({err}); reconnecting"));
                    reported_down = true;
                    if !shared.pause(backoff).await {
                        return;
                    }
                    backoff = next_backoff(backoff);
                    continue 'connect;
                }
            }
        }
    }
}
