//! The `stats` and `pool-stats` structures.

use std::sync::atomic::Ordering;

use gst::glib;
use gst::prelude::*;

use super::regions::RoiCounts;
use super::remote::Remote;
use super::reuse::ReuseCounts;
use super::settings::Settings;
use super::workerbin::BinCounts;
use crate::pool::{CrewStats, PoolStats, WorkerStats};

/// The remote part of `stats`.
#[derive(Clone)]
pub(super) struct RemoteStats {
    sent: u64,
    skipped: u64,
    hedges: u64,
    batches: u64,
    batched_frames: u64,
    servers: gst::Array,
}

impl RemoteStats {
    pub fn of(remote: &Remote) -> RemoteStats {
        RemoteStats {
            sent: remote.sent.load(Ordering::Relaxed),
            skipped: remote.skipped.load(Ordering::Relaxed),
            hedges: remote.set.hedges(),
            batches: remote.set.batch_figures().0,
            batched_frames: remote.set.batch_figures().1,
            servers: remote.server_stats(),
        }
    }
}

/// What the element's steps counted, besides the pool.
pub(super) struct StepCounts<'a> {
    pub overlay_skipped: u64,
    pub rois: &'a RoiCounts,
    pub reuse: &'a ReuseCounts,
    pub skipped: u64,
    pub bins: &'a BinCounts,
}

pub(super) fn stats_structure(
    stats: &PoolStats,
    settings: &Settings,
    remote: Option<&RemoteStats>,
    steps: StepCounts<'_>,
) -> gst::Structure {
    let StepCounts {
        overlay_skipped,
        rois,
        reuse,
        skipped,
        bins,
    } = steps;
    let count = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let dropped = stats.leaked + stats.failed + stats.timeout + stats.dropped;
    let workers = worker_array(&stats.per_worker);
    let builder = gst::Structure::builder("enrichpool-stats")
        .field("in", stats.submitted)
        .field("pushed", stats.delivered)
        .field("dropped", dropped)
        .field("dropped-leaked", stats.leaked)
        .field("dropped-failed", stats.failed)
        .field("dropped-timeout", stats.timeout)
        .field("dropped-dropped", stats.dropped)
        .field("flushed", stats.flushed)
        .field("retries", stats.retries)
        .field("queued", stats.queued)
        .field("max-queued", stats.max_queued)
        .field("in-flight", stats.in_flight)
        .field("waiting", stats.waiting)
        .field("workers", stats.workers)
        .field("stuck", stats.stuck)
        .field("spawn-failures", stats.spawn_failures)
        .field("blocked-pushes", stats.blocked_pushes)
        .field("latency", processing_latency(stats, settings))
        .field("worker-stats", workers)
        .field("remote-sent", remote.map_or(0, |r| r.sent))
        .field("remote-skipped", remote.map_or(0, |r| r.skipped))
        .field("overlay-skipped", overlay_skipped)
        .field("skipped", skipped)
        .field("rois-processed", count(&rois.processed))
        .field("rois-failed", count(&rois.failed))
        .field("rois-dropped", count(&rois.dropped))
        .field("rois-found", count(&rois.found))
        .field("rois-invalid", count(&rois.invalid))
        .field("rois-clipped", count(&rois.clipped))
        .field("rois-over-max", count(&rois.over_max))
        .field("rois-renumbered", count(&rois.renumbered))
        .field("carried", count(&reuse.carried))
        .field("carry-expired", count(&reuse.expired))
        .field("carry-missed", count(&reuse.missed))
        .field("carry-flushed", count(&reuse.flushed))
        .field("bin-errors", count(&bins.errors))
        .field("bin-no-output", count(&bins.no_output))
        .field("bin-extras", count(&bins.extras))
        .field("bin-rebuilt", count(&bins.rebuilt));
    with_servers(builder, remote).build()
}

/// The server set's fields, in both structures: hedges, batches, batched-frames, servers.
fn with_servers(
    builder: gst::structure::Builder,
    remote: Option<&RemoteStats>,
) -> gst::structure::Builder {
    builder
        .field("hedges", remote.map_or(0, |r| r.hedges))
        .field("batches", remote.map_or(0, |r| r.batches))
        .field("batched-frames", remote.map_or(0, |r| r.batched_frames))
        .field(
            "servers",
            remote.map_or_else(
                || gst::Array::new::<glib::SendValue>([]),
                |r| r.servers.clone(),
            ),
        )
}

/// The latency this element adds: the property, or the pool's recent latency (the largest
/// queue wait plus processing of the last frames delivered; frames that timed out or were
/// flushed do not count).
pub(super) fn processing_latency(stats: &PoolStats, settings: &Settings) -> u64 {
    if settings.latency >= 0 {
        settings.latency as u64
    } else {
        stats.latency.as_nanos() as u64
    }
}

/// The per-worker structures.
fn worker_array(per_worker: &[WorkerStats]) -> gst::Array {
    gst::Array::new(per_worker.iter().enumerate().map(|(n, w)| {
        gst::Structure::builder("worker")
            .field("worker", n as u32)
            .field("processed", w.processed)
            .field("busy", w.busy.as_nanos() as u64)
            .field("errors", w.errors)
            .build()
            .to_send_value()
    }))
}

/// `pool-stats`: the crew of workers (shared or not), its servers and its members.
/// `names` maps member numbers to their elements' names.
pub(super) fn pool_stats_structure(
    name: &str,
    crew: &CrewStats,
    names: &dyn Fn(u64) -> String,
    remote: Option<&RemoteStats>,
) -> gst::Structure {
    let members = gst::Array::new(crew.members.iter().map(|m| {
        gst::Structure::builder("member")
            .field("element", names(m.member))
            .field("priority", m.priority)
            .field("max-in-flight", m.max_in_flight)
            .field("queued", m.queued)
            .field("in-flight", m.in_flight)
            .field("processed", m.processed)
            .field("pushed", m.delivered)
            .field("throughput", m.throughput)
            .field("share", m.share)
            .build()
            .to_send_value()
    }));
    let builder = gst::Structure::builder("enrichpool-pool-stats")
        .field("shared-pool", name)
        .field("members", members)
        .field("workers", crew.workers)
        .field("idle", crew.idle)
        .field("stuck", crew.stuck)
        .field("blocked", crew.blocked)
        .field("threads", crew.threads)
        .field("spawn-failures", crew.spawn_failures)
        .field("worker-stats", worker_array(&crew.per_worker));
    with_servers(builder, remote).build()
}
