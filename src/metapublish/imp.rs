//! The `metapublish` element's GStreamer glue: properties, the per-frame record, the gap
//! records from events and sequence jumps, and the publisher's lifetime.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;

use super::publisher::{self, Full, Options, Pushed, Shared};
use super::record::{FrameTimes, GapRecord, Writer};
use super::target::Target;
use super::{MqttVersion, OnDisconnect, mqtt};
use crate::glue::{StatsTimer, lock, post_stats};
use crate::meta::{Gap, SeqMeta};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "metapublish",
        gst::DebugColorFlags::empty(),
        Some("Writes frames' results as JSON records, in order"),
    )
});

const DEFAULT_MAX_PENDING: u32 = 1000;
const DEFAULT_FLUSH_EVERY: u32 = 1;
const DEFAULT_QOS: u32 = 0;
const DEFAULT_DRAIN_TIMEOUT: u64 = 5_000_000_000;
const DEFAULT_BATCH_INTERVAL: u64 = 50_000_000;

#[derive(Clone, Debug)]
struct Settings {
    location: Option<String>,
    max_pending: u32,
    on_disconnect: OnDisconnect,
    flush_every: u32,
    qos: u32,
    client_id: Option<String>,
    credentials_file: Option<String>,
    tls_ca_file: Option<String>,
    mqtt_version: MqttVersion,
    drain_timeout: u64,
    batch_interval: u64,
    stats_interval: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            location: None,
            max_pending: DEFAULT_MAX_PENDING,
            on_disconnect: OnDisconnect::default(),
            flush_every: DEFAULT_FLUSH_EVERY,
            qos: DEFAULT_QOS,
            client_id: None,
            credentials_file: None,
            tls_ca_file: None,
            mqtt_version: MqttVersion::default(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            batch_interval: DEFAULT_BATCH_INTERVAL,
            stats_interval: 0,
        }
    }
}

/// What the streaming thread works with, under one lock: taken once per frame.
#[derive(Default)]
struct Stream {
    writer: Writer,
    /// The epoch and the next sequence number expected in it, to tell frames that never
    /// came.
    next: Option<(u32, u64)>,
    /// From the SEGMENT event, for the records' running time.
    segment: gst::FormattedSegment<gst::ClockTime>,
    /// The running publisher's queue, its `max-pending` and what to do when full.
    queue: Option<(Arc<Shared>, usize, Full)>,
    /// Frames a GAP event without sequence numbers said were skipped (PTS order): the next
    /// jump in the sequence is those, not unannounced ones.
    skipped_unnumbered: u64,
}

/// The publisher of a running element.
struct Running {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Says when the publisher thread returned.
    done: std::sync::mpsc::Receiver<()>,
    drain_timeout: Duration,
}

/// How long `stop` waits for the publisher thread (a write blocked on a pipe nobody reads,
/// a hung network file system) before leaving it behind.
const STOP_GRACE: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct MetaPublish {
    settings: Mutex<Settings>,
    running: Mutex<Option<Running>>,
    /// The last publisher's shared state, for `stats` after a stop.
    last: Mutex<Option<Arc<Shared>>>,
    stream: Mutex<Stream>,
    /// Frames told missing by gap records (outside `stream`: `stats` is read while a
    /// streaming thread may wait for room under that lock).
    gaps: AtomicU64,
    timer: Mutex<StatsTimer>,
}

#[glib::object_subclass]
impl ObjectSubclass for MetaPublish {
    const NAME: &'static str = "GstMetaPublish";
    type Type = super::MetaPublish;
    type ParentType = gst_base::BaseTransform;
}

fn stats_structure(shared: Option<&Shared>, gaps: u64) -> gst::Structure {
    let c = shared.map(|s| s.snapshot()).unwrap_or_default();
    gst::Structure::builder("metapublish-stats")
        .field("records", c.records)
        .field("published", c.published)
        .field("dropped", c.dropped)
        .field("pending", c.pending)
        .field("reconnects", c.reconnects)
        .field("blocked", c.blocked)
        .field("gaps", gaps)
        .field(
            "last-error",
            shared
                .and_then(|s| lock(&s.last_error).clone())
                .unwrap_or_default(),
        )
        .build()
}

impl MetaPublish {
    fn settings(&self) -> Settings {
        lock(&self.settings).clone()
    }

    fn stats(&self) -> gst::Structure {
        let shared = lock(&self.last).clone();
        stats_structure(shared.as_deref(), self.gaps.load(Ordering::Relaxed))
    }

    fn restart_stats_timer(&self) {
        let mut timer = lock(&self.timer);
        let interval = self.settings().stats_interval;
        if lock(&self.running).is_some() {
            timer.restart(&*self.obj(), interval, |e: &super::MetaPublish| {
                e.imp().stats()
            });
        } else {
            timer.stop();
        }
    }

    /// Queues the record the writer holds (a copy of its text).
    fn publish(&self, stream: &Stream) {
        self.publish_as(stream, None);
    }

    /// As `publish`; `full` instead of the element's policy when the queue is full.
    fn publish_as(&self, stream: &Stream, full: Option<Full>) {
        let Some((shared, max, policy)) = &stream.queue else {
            return;
        };
        let record = Bytes::copy_from_slice(stream.writer.text().as_bytes());
        match shared.push(record, *max, full.unwrap_or(*policy)) {
            Pushed::Queued => {}
            Pushed::DroppedOldest => gst::trace!(CAT, imp = self, "queue full: dropped the oldest"),
            Pushed::Dropped => gst::debug!(CAT, imp = self, "record dropped (flush, stop)"),
        }
    }

    fn publish_gap(&self, stream: &mut Stream, gap: &GapRecord) {
        // A GAP event of another element (no count) tells no loss.
        if let Some(count) = gap.count {
            self.gaps.fetch_add(count, Ordering::Relaxed);
        }
        stream.writer.gap(gap);
        self.publish(stream);
    }

    /// A `flush` or `eos` record: queued even over `max-pending` (an application's seek
    /// or EOS does not wait for room).
    fn publish_event(&self, kind: &str) {
        let mut stream = lock(&self.stream);
        stream.writer.event(kind);
        self.publish_as(&stream, Some(Full::Overflow));
    }

    /// Moves the sequence expected next in `epoch` to `next`, with a gap record for the
    /// frames before `seq` that nothing announced. A frame's sequence back at 0 (`restart`)
    /// without a new epoch is a new stream: nothing is missing.
    fn sequence_to(&self, stream: &mut Stream, epoch: u32, seq: u64, next: u64, restart: bool) {
        let expected = match stream.next {
            Some((e, n)) if e == epoch => n,
            // A new epoch starts at 0.
            _ => {
                stream.skipped_unnumbered = 0;
                0
            }
        };
        // Back to 0 without a new epoch: a new stream. (Another step back is a frame out
        // of order, or a repeat: the sequence stays where it is.)
        let restarted = restart && seq == 0 && expected > 0;
        if restarted {
            stream.skipped_unnumbered = 0;
        }
        stream.next = Some((epoch, if restarted { next } else { next.max(expected) }));
        if seq > expected {
            // Frames a GAP event already told of, by time only.
            let told = stream.skipped_unnumbered.min(seq - expected);
            stream.skipped_unnumbered = 0;
            if seq - expected > told {
                self.publish_gap(
                    stream,
                    &GapRecord {
                        epoch: Some(epoch),
                        seq: Some(expected + told),
                        count: Some(seq - expected - told),
                        reason: "unannounced".into(),
                        pts: None,
                        duration: None,
                    },
                );
            }
        }
    }

    /// A gap that an event announced: recorded, and the sequence moves past it (a hole
    /// before it that nothing announced is recorded first).
    fn announced(&self, gap: GapRecord) {
        let mut stream = lock(&self.stream);
        match (gap.epoch, gap.seq, gap.seq_end()) {
            (Some(epoch), Some(seq), Some(end)) => {
                self.sequence_to(&mut stream, epoch, seq, end, false)
            }
            // The resequencer in PTS order: how many, not which.
            _ => stream.skipped_unnumbered += gap.count.unwrap_or(0),
        }
        self.publish_gap(&mut stream, &gap);
    }

    fn gap_from_event(event: &gst::event::Gap) -> GapRecord {
        let (pts, duration) = event.get();
        let s = event.structure();
        let get_u64 = |name: &str| s.and_then(|s| s.get::<u64>(name).ok());
        GapRecord {
            epoch: s.and_then(|s| s.get::<u32>("ordered-epoch").ok()),
            seq: get_u64("ordered-seq"),
            count: get_u64("ordered-count"),
            reason: s
                .and_then(|s| s.get::<String>("ordered-reason").ok())
                .unwrap_or_else(|| "gap-event".into()),
            pts: Some(pts.nseconds()),
            duration: duration.map(|d| d.nseconds()),
        }
    }
}

impl ObjectImpl for MetaPublish {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("location")
                    .nick("Location")
                    .blurb(
                        "Where the records go: file:///path.jsonl or a plain path (JSON Lines, \
                         created anew), - (standard output), tcp://host:port (JSON Lines to a \
                         TCP server), mqtt://host[:port]/topic or mqtts://... (one MQTT message \
                         per record; ports 1883 and 8883 by default)",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-pending")
                    .nick("Max pending")
                    .blurb(
                        "Records queued for a slow or unreachable target, at most; when full, \
                         on-disconnect decides",
                    )
                    .minimum(1)
                    .default_value(DEFAULT_MAX_PENDING)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("on-disconnect", OnDisconnect::default())
                    .nick("On disconnect")
                    .blurb(
                        "With max-pending records waiting: drop-oldest drops the oldest, counted \
                         in stats `dropped`, and the video never waits; block holds each frame \
                         until its record is queued, so none is lost and the video waits \
                         (backpressure)",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("flush-every")
                    .nick("Flush every")
                    .blurb(
                        "Files and stdout: write the records out (flush) once this many are \
                         buffered, checked after each batch (1: every batch, see \
                         batch-interval); what is left is flushed at EOS and on stop",
                    )
                    .minimum(1)
                    .default_value(DEFAULT_FLUSH_EVERY)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("mqtt-qos")
                    .nick("MQTT QoS")
                    .blurb(
                        "MQTT quality of service: 0 (at most once: a record counts as published \
                         once written to the connection) or 1 (at least once: once the broker \
                         acknowledged it; unacknowledged records are sent again after a \
                         reconnection, so a consumer can see one twice)",
                    )
                    .maximum(1)
                    .default_value(DEFAULT_QOS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("client-id")
                    .nick("MQTT client id")
                    .blurb("MQTT client identifier (default: gst-ordered-<pid>-<element name>)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("credentials-file")
                    .nick("MQTT credentials file")
                    .blurb(
                        "File with the MQTT user name on its first line and the password on its \
                         second (none: connect without)",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("tls-ca-file")
                    .nick("TLS CA file")
                    .blurb(
                        "PEM file of certificates trusted for mqtts:// brokers besides the \
                         Mozilla web roots",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("mqtt-version", MqttVersion::default())
                    .nick("MQTT version")
                    .blurb("MQTT protocol version: 3.1.1 or 5")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("batch-interval")
                    .nick("Batch interval")
                    .blurb(
                        "While records keep coming, the publisher thread wakes once per this \
                         many nanoseconds and takes all that came meanwhile (a record after a \
                         quiet spell, a full queue and EOS wake it at once): records wait up \
                         to this long, and a busy stream costs one wake per interval instead \
                         of one per frame. 0 = a wake for every record",
                    )
                    .maximum(1_000_000_000)
                    .default_value(DEFAULT_BATCH_INTERVAL)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("drain-timeout")
                    .nick("Drain timeout")
                    .blurb(
                        "At EOS, how many nanoseconds to wait for the pending records to be \
                         published before EOS goes on; what is still pending when the element \
                         stops is counted as dropped",
                    )
                    .default_value(DEFAULT_DRAIN_TIMEOUT)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb(
                        "metapublish-stats: records (made), published, dropped, pending, \
                         reconnects, blocked (frames waiting for room, on-disconnect=block), \
                         gaps (frames told missing by gap records), last-error. records = \
                         published + dropped + pending",
                    )
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("stats-interval")
                    .nick("Stats interval")
                    .blurb(
                        "Post the stats as an element message every this many nanoseconds, \
                         and at EOS (0 = never)",
                    )
                    .mutable_playing()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = lock(&self.settings);
        let text = |v: &glib::Value| {
            v.get::<Option<String>>()
                .expect("type checked upstream")
                .filter(|t| !t.is_empty())
        };
        match pspec.name() {
            "location" => s.location = text(value),
            "max-pending" => s.max_pending = value.get().expect("type checked upstream"),
            "on-disconnect" => s.on_disconnect = value.get().expect("type checked upstream"),
            "flush-every" => s.flush_every = value.get().expect("type checked upstream"),
            "mqtt-qos" => s.qos = value.get().expect("type checked upstream"),
            "client-id" => s.client_id = text(value),
            "credentials-file" => s.credentials_file = text(value),
            "tls-ca-file" => s.tls_ca_file = text(value),
            "mqtt-version" => s.mqtt_version = value.get().expect("type checked upstream"),
            "drain-timeout" => s.drain_timeout = value.get().expect("type checked upstream"),
            "batch-interval" => s.batch_interval = value.get().expect("type checked upstream"),
            "stats-interval" => {
                s.stats_interval = value.get().expect("type checked upstream");
                drop(s);
                self.restart_stats_timer();
            }
            other => unreachable!("unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings();
        match pspec.name() {
            "location" => s.location.to_value(),
            "max-pending" => s.max_pending.to_value(),
            "on-disconnect" => s.on_disconnect.to_value(),
            "flush-every" => s.flush_every.to_value(),
            "mqtt-qos" => s.qos.to_value(),
            "client-id" => s.client_id.to_value(),
            "credentials-file" => s.credentials_file.to_value(),
            "tls-ca-file" => s.tls_ca_file.to_value(),
            "mqtt-version" => s.mqtt_version.to_value(),
            "drain-timeout" => s.drain_timeout.to_value(),
            "batch-interval" => s.batch_interval.to_value(),
            "stats" => self.stats().to_value(),
            "stats-interval" => s.stats_interval.to_value(),
            other => unreachable!("unknown property {other}"),
        }
    }
}

impl GstObjectImpl for MetaPublish {}

impl ElementImpl for MetaPublish {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Metadata publisher",
                "Sink/Metadata",
                "Writes one JSON record per frame (sequence, times, FrameAnalysisMeta, \
                 EnrichmentMeta, regions of interest) in the order frames pass, and one per \
                 gap (frames lost or skipped), to a file, stdout, a TCP server or an MQTT \
                 broker, off the streaming thread through a bounded queue. Frames pass \
                 through unchanged; put it after the resequencer",
                "gst-ordered",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> =
            LazyLock::new(|| crate::glue::always_pads(&gst::Caps::new_any()));
        TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::PausedToReady
            && let Some(r) = lock(&self.running).as_ref()
        {
            // A streaming thread waiting for room (on-disconnect=block) or in a drain
            // lets go before the pads deactivate.
            r.shared.deactivate();
        }
        let res = self.parent_change_state(transition)?;
        if transition == gst::StateChange::PausedToPlaying {
            self.restart_stats_timer();
        }
        Ok(res)
    }
}

impl BaseTransformImpl for MetaPublish {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = true;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = true;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let s = self.settings();
        let settings_error = |msg: String| gst::error_msg!(gst::ResourceError::Settings, ["{msg}"]);
        let location = s
            .location
            .as_deref()
            .ok_or_else(|| settings_error("metapublish: no location set".into()))?;
        let target =
            Target::parse(location).map_err(|e| settings_error(format!("location {e}")))?;
        let file = match &target {
            // Made now, so that a bad path fails the start with the reason.
            Target::File(path) => Some(std::fs::File::create(path).map_err(|err| {
                gst::error_msg!(
                    gst::ResourceError::OpenWrite,
                    ["cannot create {}: {err}", path.display()]
                )
            })?),
            _ => None,
        };
        let mqtt_only = |name: &str, set: bool| {
            if set && !matches!(target, Target::Mqtt { .. }) {
                gst::warning!(
                    CAT,
                    imp = self,
                    "{name} is only for mqtt:// targets; ignored"
                );
            }
        };
        mqtt_only("credentials-file", s.credentials_file.is_some());
        mqtt_only("client-id", s.client_id.is_some());
        let credentials = s
            .credentials_file
            .as_deref()
            .filter(|_| matches!(target, Target::Mqtt { .. }))
            .map(mqtt::read_credentials)
            .transpose()
            .map_err(settings_error)?;
        let tls = match &target {
            Target::Mqtt { tls: true, .. } => {
                let pem = s
                    .tls_ca_file
                    .as_deref()
                    .map(|path| {
                        std::fs::read(path)
                            .map_err(|err| format!("reading tls-ca-file `{path}`: {err}"))
                    })
                    .transpose()
                    .map_err(settings_error)?;
                let config = crate::remote::tls_config(pem.as_deref(), &[])
                    .map_err(|e| settings_error(format!("tls-ca-file: {e}")))?;
                Some(Arc::new(config))
            }
            _ => None,
        };
        let options = Options {
            target: target.clone(),
            file,
            batch_interval: Duration::from_nanos(s.batch_interval),
            flush_every: s.flush_every,
            qos: s.qos as u8,
            client_id: s.client_id.clone().unwrap_or_else(|| {
                format!("gst-ordered-{}-{}", std::process::id(), self.obj().name())
            }),
            credentials,
            tls,
            mqtt_version: if s.mqtt_version == MqttVersion::V5 {
                5
            } else {
                4
            },
            keep_alive: mqtt::KEEP_ALIVE,
        };
        let shared = Arc::new(Shared::default());
        let weak = self.obj().downgrade();
        let report: publisher::Report = Box::new(move |msg: String| {
            if let Some(obj) = weak.upgrade() {
                gst::element_warning!(obj, gst::ResourceError::Write, ("{}", msg));
            }
        });
        let (done_tx, done) = std::sync::mpsc::channel();
        let thread = publisher::spawn(shared.clone(), options, report, done_tx).map_err(|err| {
            gst::error_msg!(
                gst::CoreError::Failed,
                ["starting the publisher thread: {err}"]
            )
        })?;
        gst::info!(CAT, imp = self, "publishing to {target}");
        *lock(&self.stream) = Stream {
            queue: Some((
                shared.clone(),
                s.max_pending as usize,
                if s.on_disconnect == OnDisconnect::Block {
                    Full::Wait
                } else {
                    Full::DropOldest
                },
            )),
            ..Stream::default()
        };
        self.gaps.store(0, Ordering::Relaxed);
        *lock(&self.last) = Some(shared.clone());
        *lock(&self.running) = Some(Running {
            shared,
            thread: Some(thread),
            done,
            drain_timeout: Duration::from_nanos(s.drain_timeout),
        });
        self.restart_stats_timer();
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        let running = lock(&self.running).take();
        if let Some(mut r) = running {
            r.shared.stop();
            if let Some(thread) = r.thread.take() {
                if thread.thread().id() == std::thread::current().id() {
                    // Stopped from the publisher thread itself (a bus sync handler that
                    // sets the pipeline to NULL on its warning): it returns after this.
                } else if r.done.recv_timeout(STOP_GRACE).is_ok() {
                    let _ = thread.join();
                } else {
                    gst::element_imp_warning!(
                        self,
                        gst::ResourceError::Write,
                        (
                            "The publisher thread did not stop within {} s (a write to {} \
                             that blocks, or a bus handler it waits on); left behind, its \
                             records counted as dropped when it returns",
                            STOP_GRACE.as_secs(),
                            self.settings().location.unwrap_or_default()
                        )
                    );
                }
            }
        }
        lock(&self.stream).queue = None;
        lock(&self.timer).stop();
        Ok(())
    }

    fn transform_ip_passthrough(
        &self,
        buffer: &gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let seq = match SeqMeta::read(buffer) {
            Some(Ok(seq)) => Some(seq),
            Some(Err(err)) => {
                gst::warning!(CAT, imp = self, "malformed sequence meta: {err}");
                None
            }
            None => None,
        };
        let mut stream = lock(&self.stream);
        if let Some(seq) = &seq {
            self.sequence_to(&mut stream, seq.epoch, seq.seq, seq.seq + 1, true);
        }
        let pts = buffer.pts();
        let times = FrameTimes {
            pts: pts.map(|t| t.nseconds()),
            dts: buffer.dts().map(|t| t.nseconds()),
            duration: buffer.duration().map(|t| t.nseconds()),
            running_time: stream.segment.to_running_time(pts).map(|t| t.nseconds()),
        };
        stream.writer.frame(buffer, seq.as_ref(), &times);
        self.publish(&stream);
        Ok(gst::FlowSuccess::Ok)
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        use gst::EventView;
        match event.view() {
            EventView::FlushStart(_) => {
                if let Some(r) = lock(&self.running).as_ref() {
                    r.shared.flush_start();
                }
            }
            EventView::FlushStop(_) => {
                if let Some(r) = lock(&self.running).as_ref() {
                    r.shared.flush_stop();
                }
                {
                    let mut stream = lock(&self.stream);
                    stream.next = None;
                    stream.skipped_unnumbered = 0;
                    stream.segment = gst::FormattedSegment::new();
                }
                self.publish_event("flush");
            }
            EventView::Segment(segment) => {
                // Running time in time segments only (a frame of another format has none).
                lock(&self.stream).segment = segment
                    .segment()
                    .downcast_ref::<gst::ClockTime>()
                    .cloned()
                    .unwrap_or_default();
            }
            EventView::Gap(gap) => self.announced(Self::gap_from_event(gap)),
            EventView::CustomDownstream(_) => match Gap::from_event(&event) {
                Some(Ok(gap)) => self.announced(GapRecord::from_gap(&gap)),
                Some(Err(err)) => {
                    gst::warning!(CAT, imp = self, "ignoring a malformed ordered-gap: {err}")
                }
                None => {}
            },
            EventView::Eos(_) => {
                self.publish_event("eos");
                let drain = lock(&self.running)
                    .as_ref()
                    .map(|r| (r.shared.clone(), r.drain_timeout));
                if let Some((shared, timeout)) = drain
                    && !shared.drain(timeout)
                {
                    gst::element_imp_warning!(
                        self,
                        gst::ResourceError::Write,
                        (
                            "{} records were not published within drain-timeout",
                            shared.pending()
                        )
                    );
                }
                if self.settings().stats_interval > 0 {
                    post_stats(&*self.obj(), self.stats());
                }
            }
            _ => {}
        }
        self.parent_sink_event(event)
    }
}
