//! A shared pool's servers: `max-in-flight-per-server` bounds every member together, and
//! `batch-size` gathers frames of several streams into one request whose answer goes back
//! to each frame, computed from that frame's own pixels. Against tests/remote/fake_server.py
//! (started on 127.0.0.1 by the test, in MLServer's venv).

#[path = "common/cameras.rs"]
mod cameras;
#[path = "common/servers.rs"]
mod servers;
#[path = "common/sync.rs"]
mod sync;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cameras::Camera;
use gst::prelude::*;
use gstordered::meta::{Enrichment, SeqMeta};
use servers::FakeServer;
use sync::within;

const LIMIT: Duration = Duration::from_secs(120);
const EOS_WITHIN: gst::ClockTime = gst::ClockTime::from_seconds(90);

fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstordered::plugin_register_static().unwrap();
    });
}

fn counts(server: &FakeServer) -> serde_json::Value {
    let body = servers::http_get(server.http, "/counts").expect("GET /counts");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn max_in_flight_per_server_bounds_every_member_of_a_shared_pool_together() {
    init();
    within(LIMIT, || {
        let server = FakeServer::start("count");
        let props = format!(
            "shared-pool=bounded workers=8 servers={} model=frames max-in-flight-per-server=2",
            server.grpc_url()
        );
        let cameras: Vec<Camera> = (0..16).map(|_| Camera::new(10, false, &props)).collect();
        for c in &cameras {
            c.start();
        }
        for c in &cameras {
            c.wait_eos(EOS_WITHIN);
        }
        let counts = counts(&server);
        assert_eq!(counts["answered"].as_u64().unwrap(), 160, "{counts}");
        assert_eq!(counts["max-concurrent"].as_u64().unwrap(), 2, "{counts}");
        for c in &cameras {
            assert_eq!(c.seqs(), (0..10).collect::<Vec<_>>());
            assert_eq!(c.stat("remote-sent"), 10);
        }
        for c in &cameras {
            c.stop();
        }
    });
}

/// What a sink saw per frame: its sequence number, the sum of its bytes, and the `sum` and
/// `batch` outputs it came with.
type Seen = Arc<Mutex<Vec<(u64, u64, u64, i64)>>>;

fn record_outputs(camera: &Camera) -> Seen {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let sink = camera
        .pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let buffer = sample.buffer().unwrap();
                let seq = SeqMeta::read(buffer).unwrap().unwrap().seq;
                let own: u64 = buffer
                    .map_readable()
                    .unwrap()
                    .iter()
                    .map(|&b| b as u64)
                    .sum();
                let outputs = Enrichment::read(buffer).unwrap().unwrap().outputs;
                s.lock().unwrap().push((
                    seq,
                    own,
                    outputs.get::<u64>("sum").unwrap(),
                    outputs.get::<i64>("batch").unwrap(),
                ));
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    seen
}

#[test]
fn batches_gather_frames_of_several_streams_and_each_frame_gets_its_own_answer() {
    init();
    within(LIMIT, || {
        let server = FakeServer::start("batch");
        for url in [server.grpc_url(), server.http_url()] {
            let props = format!(
                "shared-pool=batched-{} workers=8 servers={url} model=frames batch-size=4 \
                 batch-timeout=50000000",
                url.split(':').next().unwrap()
            );
            // Four streams of noise: every frame's sum is its own.
            let cameras: Vec<Camera> = (0..4).map(|_| Camera::new(30, false, &props)).collect();
            let seen: Vec<Seen> = cameras.iter().map(record_outputs).collect();
            for c in &cameras {
                let src = c.pipeline.iterate_sources().next().unwrap().unwrap();
                src.set_property_from_str("pattern", "snow");
                c.start();
            }
            for c in &cameras {
                c.wait_eos(EOS_WITHIN);
            }
            let mut batched = 0;
            for seen in &seen {
                let seen = seen.lock().unwrap().clone();
                assert_eq!(
                    seen.iter().map(|s| s.0).collect::<Vec<_>>(),
                    (0..30).collect::<Vec<_>>()
                );
                for &(seq, own, sum, batch) in &seen {
                    assert_eq!(sum, own, "frame {seq} got another frame's answer");
                    assert!((1..=4).contains(&batch));
                    batched += usize::from(batch > 1);
                }
            }
            assert!(
                batched > 60,
                "most frames went in batches: {batched} of 120"
            );
            let counts = counts(&server);
            assert!(counts["max-batch"].as_u64().unwrap() <= 4, "{counts}");
            let stats = cameras[0].pool.property::<gst::Structure>("pool-stats");
            assert_eq!(
                stats.get::<u64>("batched-frames").unwrap(),
                120,
                "{stats:?}"
            );
            for c in &cameras {
                c.stop();
            }
        }
    });
}

#[test]
fn a_frame_never_waits_for_a_batch_to_fill_longer_than_batch_timeout() {
    init();
    within(LIMIT, || {
        let server = FakeServer::start("batch");
        // Two workers can never gather a batch of eight: every batch leaves on its timeout,
        // and every frame still comes back, in order, with its own answer.
        let camera = Camera::new(
            12,
            false,
            &format!(
                "workers=2 servers={} model=frames batch-size=8 batch-timeout=20000000",
                server.grpc_url()
            ),
        );
        let seen = record_outputs(&camera);
        // (A batch waiting to be full would never leave: the test would not end.)
        camera.start();
        camera.wait_eos(EOS_WITHIN);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen.iter().map(|s| s.0).collect::<Vec<_>>(),
            (0..12).collect::<Vec<_>>()
        );
        assert!(
            seen.iter()
                .all(|&(_, own, sum, batch)| own == sum && batch <= 2)
        );
        let counts = counts(&server);
        assert!(counts["max-batch"].as_u64().unwrap() <= 2, "{counts}");
        camera.stop();
    });
}

#[test]
fn batch_size_with_a_model_without_a_batch_dimension_fails_at_start() {
    init();
    within(LIMIT, || {
        let server = FakeServer::start("count");
        let camera = Camera::new(
            10,
            false,
            &format!("servers={} model=frames batch-size=2", server.grpc_url()),
        );
        assert!(camera.pipeline.set_state(gst::State::Playing).is_err());
        let bus = camera.pipeline.bus().unwrap();
        let error = bus
            .timed_pop_filtered(EOS_WITHIN, &[gst::MessageType::Error])
            .expect("an error");
        let gst::MessageView::Error(e) = error.view() else {
            unreachable!()
        };
        let text = e.error().to_string();
        assert!(
            text.contains("batch-size=2") && text.contains("[-1, -1, -1]"),
            "{text}"
        );
        camera.stop();
    });
}
