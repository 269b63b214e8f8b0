//! Remote enrichment against real MLServer processes (and a misbehaving fake server and a
//! TLS endpoint): `appsrc is-live=true ! enrichpool servers=… ! resequencer ! appsink`.
//!
//! The model (tests/remote/model.py) answers after a random delay, so answers come back out
//! of order; each answer carries the frame's checksum, which the sink checks against the
//! frame it arrived on.

#[path = "common/launch.rs"]
mod launch;

#[path = "common/plugin.rs"]
mod plugin;
#[path = "common/servers.rs"]
mod servers;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstordered::meta::{Enrichment, SeqMeta};
use servers::{FakeServer, MlServer, TlsProxy};

const WIDTH: u32 = 32;
const HEIGHT: u32 = 24;
const FRAME: u64 = 33_333_333;
const WAIT: Duration = Duration::from_secs(120);

fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstordered::plugin_register_static().unwrap();
    });
}

/// Frame `n`'s bytes: different for every frame, so a checksum tells frames apart.
fn pixels(n: u64) -> Vec<u8> {
    (0..(WIDTH * HEIGHT * 3) as u64)
        .map(|i| ((n * 31 + i * 7 + n / 7) % 251) as u8)
        .collect()
}

/// A frame as it reached the sink.
#[derive(Debug)]
struct Out {
    seq: u64,
    pts: u64,
    checksum: u64,
    first: u8,
    enrichment: Option<Enrichment>,
    /// (type, x, y, w, h, score) of each ROI meta.
    rois: Vec<(String, u32, u32, u32, u32, f64)>,
}

#[derive(Default)]
struct Sink {
    frames: Vec<Out>,
    eos: bool,
    error: Option<String>,
}

struct Run {
    pipeline: gst::Pipeline,
    sink: Arc<(Mutex<Sink>, Condvar)>,
    stop: Arc<AtomicBool>,
    feeder: Option<std::thread::JoinHandle<()>>,
}

impl Run {
    /// Starts the pipeline and a thread feeding up to `frames` frames (then EOS), one
    /// every `pace` if given, else as fast as the pool takes them.
    fn start(pool_props: &str, frames: u64, pace: Option<Duration>) -> Run {
        Self::start_with(pool_props, frames, pace, false)
    }

    /// [`Run::start`], feeding only once every server answered its probe (healthy in stats).
    fn start_when_all_healthy(pool_props: &str, frames: u64) -> Run {
        Self::start_with(pool_props, frames, None, true)
    }

    fn start_with(pool_props: &str, frames: u64, pace: Option<Duration>, all_healthy: bool) -> Run {
        init();
        let desc = format!(
            "appsrc name=src is-live=true format=time \
               caps=video/x-raw,format=RGB,width={WIDTH},height={HEIGHT},framerate=30/1 \
             ! enrichpool name=pool {pool_props} \
             ! resequencer name=rs latency=60000000000 \
             ! appsink name=sink sync=false"
        );
        let pipeline = launch::pipeline(&desc);
        let sink_state: Arc<(Mutex<Sink>, Condvar)> = Arc::default();
        let appsink = launch::app_sink(&pipeline);
        let state = sink_state.clone();
        appsink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let buffer = sample.buffer().unwrap();
                    let map = buffer.map_readable().unwrap();
                    let rois = buffer
                        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
                        .map(|m| {
                            let (x, y, w, h) = m.rect();
                            let score = m
                                .param("detection")
                                .and_then(|p| p.get::<f64>("score").ok())
                                .unwrap_or(-1.0);
                            (m.roi_type().to_string(), x, y, w, h, score)
                        })
                        .collect();
                    let out = Out {
                        seq: SeqMeta::read(buffer).unwrap().unwrap().seq,
                        pts: buffer.pts().unwrap().nseconds(),
                        checksum: map.iter().map(|&b| b as u64).sum(),
                        first: map[0],
                        enrichment: Enrichment::read(buffer).map(Result::unwrap),
                        rois,
                    };
                    let (lock, cvar) = &*state;
                    lock.lock().unwrap().frames.push(out);
                    cvar.notify_all();
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        let bus = pipeline.bus().unwrap();
        let state = sink_state.clone();
        bus.set_sync_handler(move |_, msg| {
            let (lock, cvar) = &*state;
            match msg.view() {
                gst::MessageView::Eos(_) => lock.lock().unwrap().eos = true,
                gst::MessageView::Error(e) => {
                    lock.lock().unwrap().error = Some(format!("{} ({:?})", e.error(), e.debug()))
                }
                _ => return gst::BusSyncReply::Drop,
            }
            cvar.notify_all();
            gst::BusSyncReply::Drop
        });
        pipeline.set_state(gst::State::Playing).unwrap();

        let src = pipeline
            .by_name("src")
            .unwrap()
            .downcast::<gst_app::AppSrc>()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let pool = pipeline.by_name("pool").unwrap();
        let feeder = std::thread::spawn(move || {
            let until = Instant::now() + WAIT;
            // Polled: stats are the only view of the servers' health from outside.
            while all_healthy && !all_servers_healthy(&pool) {
                assert!(
                    Instant::now() < until,
                    "not every server became healthy: {}",
                    pool.property::<gst::Structure>("stats")
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            for n in 0..frames {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                let mut buffer = gst::Buffer::from_mut_slice(pixels(n));
                {
                    let b = buffer.get_mut().unwrap();
                    b.set_pts(gst::ClockTime::from_nseconds(n * FRAME));
                    b.set_duration(gst::ClockTime::from_nseconds(FRAME));
                }
                if src.push_buffer(buffer).is_err() {
                    return;
                }
                if let Some(pace) = pace {
                    std::thread::sleep(pace);
                }
            }
            let _ = src.end_of_stream();
        });
        Run {
            pipeline,
            sink: sink_state,
            stop,
            feeder: Some(feeder),
        }
    }

    /// Waits until `done` holds for what reached the sink; panics on a pipeline error.
    fn wait_until(&self, what: &str, done: impl Fn(&Sink) -> bool) {
        let (lock, cvar) = &*self.sink;
        let deadline = Instant::now() + WAIT;
        let mut sink = lock.lock().unwrap();
        loop {
            if let Some(err) = &sink.error {
                panic!("pipeline error while waiting for {what}: {err}");
            }
            if done(&sink) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; {} frames at the sink; {}",
                sink.frames.len(),
                self.pool_stats()
            );
            // Woken by every frame and by EOS or an error; conditions on stats are polled.
            sink = cvar
                .wait_timeout(sink, Duration::from_millis(50))
                .unwrap()
                .0;
        }
    }

    fn pool_stats(&self) -> gst::Structure {
        self.pipeline
            .by_name("pool")
            .unwrap()
            .property::<gst::Structure>("stats")
    }

    fn servers(&self) -> Vec<gst::Structure> {
        self.pool_stats()
            .get::<gst::Array>("servers")
            .unwrap()
            .iter()
            .map(|v| v.get::<gst::Structure>().unwrap())
            .collect()
    }

    /// Ends the stream early: EOS follows the frame being pushed.
    fn stop_feeding(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits for the feeder and EOS, stops the pipeline; returns the frames and both
    /// elements' stats.
    fn finish(mut self) -> (Vec<Out>, gst::Structure, gst::Structure) {
        self.feeder.take().unwrap().join().unwrap();
        self.wait_until("EOS", |s| s.eos);
        let pool = self.pool_stats();
        let rs = self
            .pipeline
            .by_name("rs")
            .unwrap()
            .property::<gst::Structure>("stats");
        self.pipeline.set_state(gst::State::Null).unwrap();
        let frames = std::mem::take(&mut self.sink.0.lock().unwrap().frames);
        (frames, pool, rs)
    }
}

/// The frames are in order, consecutive from 0 when `complete`, and every answer belongs to
/// the frame it is on.
fn check(frames: &[Out], complete: bool) {
    for pair in frames.windows(2) {
        assert!(
            pair[0].seq < pair[1].seq,
            "out of order: {} then {}",
            pair[0].seq,
            pair[1].seq
        );
        assert!(pair[0].pts < pair[1].pts);
    }
    if complete {
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(f.seq, i as u64, "frame {i} missing");
        }
    }
    for f in frames {
        assert_eq!(
            f.checksum,
            pixels(f.seq).iter().map(|&b| b as u64).sum::<u64>()
        );
        let Some(e) = &f.enrichment else { continue };
        let o = &e.outputs;
        assert_eq!(
            o.get::<u64>("checksum").unwrap(),
            f.checksum,
            "frame {}: answer of another frame",
            f.seq
        );
        assert_eq!(o.get::<i64>("first").unwrap(), f.first as i64);
        let dims: Vec<i64> = o
            .get::<gst::Array>("dims")
            .unwrap()
            .iter()
            .map(|v| v.get::<i64>().unwrap())
            .collect();
        assert_eq!(dims, [HEIGHT as i64, WIDTH as i64, 3]);
        assert_eq!(o.get::<String>("classes").unwrap(), "thing");
        // The model's one detection, x1 y1 x2 y2 = 1 2 W/2 H/2, as a ROI meta.
        let detections: Vec<_> = f.rois.iter().filter(|r| r.0 == "thing").collect();
        assert_eq!(detections.len(), 1, "frame {}: {:?}", f.seq, f.rois);
        let d = detections[0];
        assert_eq!((d.1, d.2, d.3, d.4), (1, 2, WIDTH / 2 - 1, HEIGHT / 2 - 2));
        assert_eq!(d.5, 0.75);
    }
}

/// Every frame was answered by `url`.
fn all_answered_by(frames: &[Out], url: &str) -> bool {
    frames
        .iter()
        .all(|f| f.enrichment.as_ref().is_some_and(|e| e.server == url))
}

/// Server `i`'s structure in a pool's stats.
fn server_stats(pool: &gst::Structure, i: usize) -> gst::Structure {
    pool.get::<gst::Array>("servers").unwrap().as_slice()[i]
        .get::<gst::Structure>()
        .unwrap()
}

/// Server `i` counted errors, the last one saying `expect`.
fn assert_failed(pool: &gst::Structure, i: usize, expect: &str) {
    let s = server_stats(pool, i);
    assert!(field::<u64>(&s, "errors") > 0, "{s}");
    assert!(field::<String>(&s, "last-error").contains(expect), "{s}");
}

fn field<T: for<'a> glib::value::FromValue<'a> + 'static>(s: &gst::Structure, name: &str) -> T {
    s.get::<T>(name)
        .unwrap_or_else(|e| panic!("{name} in {s}: {e}"))
}

use gst::glib;

#[test]
fn three_servers_over_grpc_and_rest_keep_order() {
    let mut servers: Vec<MlServer> = (0..3).map(|_| MlServer::spawn(&[])).collect();
    servers.iter_mut().for_each(MlServer::wait_ready);
    for (transport, urls) in [
        (
            "grpc",
            servers.iter().map(MlServer::grpc_url).collect::<Vec<_>>(),
        ),
        (
            "rest",
            servers.iter().map(MlServer::http_url).collect::<Vec<_>>(),
        ),
    ] {
        let list = urls.join(",");
        let run = Run::start(&format!("servers={list} model=frames workers=8"), 120, None);
        let stats_urls: Vec<String> = run.servers().iter().map(|s| field(s, "url")).collect();
        assert_eq!(stats_urls, urls);
        let (frames, pool, rs) = run.finish();
        assert_eq!(frames.len(), 120, "{transport}: {pool}");
        check(&frames, true);
        assert!(
            frames.iter().all(|f| f.enrichment.is_some()),
            "{transport}: every frame was sent"
        );
        // Answers came out of order and the resequencer put them back.
        assert!(field::<u64>(&rs, "reordered") > 0, "{transport}: {rs}");
        assert_eq!(field::<u64>(&pool, "remote-sent"), 120);
        let per_server: Vec<gst::Structure> = pool
            .get::<gst::Array>("servers")
            .unwrap()
            .iter()
            .map(|v| v.get::<gst::Structure>().unwrap())
            .collect();
        for s in &per_server {
            // Least-in-flight balancing spreads the frames over all three.
            assert!(field::<u64>(s, "requests") > 0, "{transport}: {s}");
            assert_eq!(field::<u64>(s, "errors"), 0, "{transport}: {s}");
            assert!(field::<bool>(s, "healthy"));
            assert!(field::<u64>(s, "latency-p99") >= field::<u64>(s, "latency-p50"));
            assert!(field::<u64>(s, "latency-p50") > 0);
        }
        let total: u64 = per_server.iter().map(|s| field::<u64>(s, "requests")).sum();
        assert_eq!(total, 120);
        // The meta names the server that answered.
        for f in &frames {
            assert!(urls.contains(&f.enrichment.as_ref().unwrap().server));
        }
    }
}

#[test]
fn a_server_killed_mid_stream_loses_no_frame() {
    let mut servers: Vec<MlServer> = (0..3).map(|_| MlServer::spawn(&[])).collect();
    servers.iter_mut().for_each(MlServer::wait_ready);
    let list = servers
        .iter()
        .map(MlServer::grpc_url)
        .collect::<Vec<_>>()
        .join(",");
    let run = Run::start(
        &format!(
            "servers={list} model=frames workers=6 on-error=retry retries=3 request-timeout=5000000000"
        ),
        200,
        None,
    );
    run.wait_until("40 frames", |s| s.frames.len() >= 40);
    servers[0].kill();
    let (frames, pool, rs) = run.finish();
    assert_eq!(frames.len(), 200, "{pool}");
    check(&frames, true);
    assert!(frames.iter().all(|f| f.enrichment.is_some()));
    // The ledger balances: everything in was pushed, nothing dropped or skipped.
    assert_eq!(field::<u64>(&pool, "in"), 200);
    assert_eq!(field::<u64>(&pool, "pushed"), 200);
    assert_eq!(field::<u64>(&pool, "dropped"), 0);
    assert_eq!(field::<u64>(&rs, "skipped"), 0);
    let killed = server_stats(&pool, 0);
    assert!(!field::<bool>(&killed, "healthy"), "{killed}");
    // Frames after the kill went to the other two.
    let after: Vec<&Out> = frames.iter().filter(|f| f.seq >= 120).collect();
    assert!(
        after
            .iter()
            .all(|f| f.enrichment.as_ref().unwrap().server != servers[0].grpc_url())
    );
}

#[test]
fn a_hanging_server_times_out_and_fails_over() {
    let mut hang = MlServer::spawn(&[("ORDERED_TEST_MODE", "hang")]);
    let mut good = MlServer::spawn(&[]);
    hang.wait_ready();
    good.wait_ready();
    let list = format!("{},{}", hang.grpc_url(), good.http_url());
    let run = Run::start(
        &format!("servers={list} model=frames workers=4 request-timeout=300000000 retries=3"),
        60,
        None,
    );
    let (frames, pool, _) = run.finish();
    assert_eq!(frames.len(), 60, "{pool}");
    check(&frames, true);
    assert!(all_answered_by(&frames, &good.http_url()));
    assert_failed(&pool, 0, "no answer within");
    assert!(field::<u64>(&pool, "retries") > 0);
}

#[test]
fn garbage_and_wrong_ids_are_counted_and_retried_elsewhere() {
    let garbage = FakeServer::start("garbage");
    let wrong = FakeServer::start("wrong-id");
    let good = MlServer::start(&[]);
    for (bad_urls, expect) in [
        (
            vec![garbage.http_url(), garbage.grpc_url()],
            ["not JSON", "bytes for"],
        ),
        (
            vec![wrong.http_url(), wrong.grpc_url()],
            ["does not match request id", "does not match request id"],
        ),
    ] {
        let list = format!("{},{}", bad_urls.join(","), good.grpc_url());
        // With at most two requests on the good server, the bad ones keep getting
        // requests whenever a probe has brought them back.
        let run = Run::start(
            &format!("servers={list} model=frames workers=6 retries=4 max-in-flight-per-server=2"),
            60,
            None,
        );
        let (frames, pool, _) = run.finish();
        assert_eq!(frames.len(), 60, "{pool}");
        check(&frames, true);
        assert!(all_answered_by(&frames, &good.grpc_url()));
        for (i, expect) in expect.iter().enumerate() {
            assert_failed(&pool, i, expect);
        }
        assert!(field::<u64>(&pool, "retries") > 0, "{pool}");
    }
}

#[test]
fn all_servers_down_then_one_comes_back() {
    let mut server = MlServer::spawn(&[]);
    server.wait_ready();
    server.kill();
    let run = Run::start(
        &format!(
            "servers={} model=frames workers=2 on-error=drop",
            server.grpc_url()
        ),
        1_000_000,
        Some(Duration::from_millis(5)),
    );
    // Frames are handled per on-error (gaps), and the pipeline keeps running.
    run.wait_until("dropped frames", |_| {
        run.pool_stats().get::<u64>("dropped-failed").unwrap() >= 20
    });
    assert!(
        run.sink
            .0
            .lock()
            .unwrap()
            .frames
            .iter()
            .all(|f| f.enrichment.is_none())
    );
    server.restart();
    // The probe brings the server back; frames are enriched again.
    run.wait_until("enriched frames after recovery", |s| {
        s.frames.iter().filter(|f| f.enrichment.is_some()).count() >= 20
    });
    run.stop_feeding();
    let (frames, pool, rs) = run.finish();
    check(&frames, false);
    // Nothing is lost without being accounted for.
    let sent: u64 = field(&pool, "in");
    assert_eq!(
        field::<u64>(&pool, "pushed") + field::<u64>(&pool, "dropped"),
        sent
    );
    assert_eq!(frames.len() as u64, field::<u64>(&pool, "pushed"));
    assert_eq!(field::<u64>(&rs, "gaps"), field::<u64>(&pool, "dropped"));
}

#[test]
fn tls_endpoints_with_a_private_ca() {
    let server = MlServer::start(&[]);
    let grpcs = TlsProxy::start(server.grpc, &[b"h2"]);
    let https = TlsProxy::start(server.http, &[b"http/1.1"]);
    let urls = [
        format!("grpcs://127.0.0.1:{}", grpcs.port),
        format!("https://127.0.0.1:{}", https.port),
    ];
    let run = Run::start(
        &format!(
            "servers={} model=frames workers=4 tls-ca-file={}",
            urls.join(","),
            grpcs.ca_file.display()
        ),
        40,
        None,
    );
    let (frames, pool, _) = run.finish();
    // Both proxies hold certificates from CAs of their own: the https one is not trusted,
    // so every frame goes over grpcs.
    assert_eq!(frames.len(), 40, "{pool}");
    check(&frames, true);
    assert!(all_answered_by(&frames, &urls[0]));
    let untrusted = server_stats(&pool, 1);
    assert!(!field::<bool>(&untrusted, "healthy"), "{untrusted}");
    assert!(
        field::<String>(&untrusted, "last-error")
            .to_lowercase()
            .contains("certificate"),
        "{untrusted}"
    );

    // With its CA, https works too.
    let run = Run::start(
        &format!(
            "servers={} model=frames workers=4 tls-ca-file={}",
            urls[1],
            https.ca_file.display()
        ),
        20,
        None,
    );
    let (frames, _, _) = run.finish();
    assert_eq!(frames.len(), 20);
    check(&frames, true);
    assert!(all_answered_by(&frames, &urls[1]));
}

#[test]
fn interval_sends_every_nth_frame_and_the_rest_pass_untouched() {
    let server = MlServer::start(&[]);
    let run = Run::start(
        &format!(
            "servers={} model=frames workers=4 interval=3",
            server.http_url()
        ),
        60,
        None,
    );
    let (frames, pool, _) = run.finish();
    assert_eq!(frames.len(), 60);
    check(&frames, true);
    for f in &frames {
        assert_eq!(f.enrichment.is_some(), f.seq % 3 == 0, "frame {}", f.seq);
        if f.seq % 3 != 0 {
            assert!(f.rois.is_empty());
        }
    }
    assert_eq!(field::<u64>(&pool, "remote-sent"), 20);
    assert_eq!(field::<u64>(&pool, "remote-skipped"), 40);
}

#[test]
fn only_label_sends_the_frames_with_that_analysis_label() {
    init();
    let server = MlServer::start(&[]);
    // A ball moving over a still background: frameanalyzer labels frames `motion` or not.
    let desc = format!(
        "videotestsrc is-live=true num-buffers=60 pattern=ball motion=sweep \
         ! video/x-raw,format=RGB,width=64,height=48,framerate=30/1 \
         ! frameanalyzer device=cpu ! enrichpool name=pool workers=4 servers={} model=frames \
           only-label=motion ! resequencer ! appsink name=sink sync=false",
        server.grpc_url()
    );
    let pipeline = launch::pipeline(&desc);
    let sink = launch::app_sink(&pipeline);
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut labels = Vec::new();
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(60)) {
        let buffer = sample.buffer().unwrap();
        let label = gstordered::meta::FrameAnalysis::read(buffer)
            .unwrap()
            .unwrap()
            .label;
        labels.push((
            label.as_str().to_string(),
            Enrichment::read(buffer).is_some(),
        ));
    }
    let pool = pipeline
        .by_name("pool")
        .unwrap()
        .property::<gst::Structure>("stats");
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(labels.len(), 60);
    for (label, enriched) in &labels {
        assert_eq!(*enriched, label == "motion", "{labels:?}");
    }
    let motion = labels.iter().filter(|(l, _)| l == "motion").count() as u64;
    assert!(motion > 0 && motion < 60, "{labels:?}");
    assert_eq!(field::<u64>(&pool, "remote-sent"), motion);
}

/// Whether every server in `pool`'s stats is healthy.
fn all_servers_healthy(pool: &gst::Element) -> bool {
    let stats = pool.property::<gst::Structure>("stats");
    stats.get::<gst::Array>("servers").unwrap().iter().all(|s| {
        s.get::<gst::Structure>()
            .unwrap()
            .get::<bool>("healthy")
            .unwrap()
    })
}

/// The slow fake server's counts of inference requests: (started, cancelled, answered),
/// once every request it started has ended (within 10 s of the call).
fn settled_counts(server: &FakeServer) -> (u64, u64, u64) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let body = servers::http_get(server.http, "/counts").expect("GET /counts");
        let counts: serde_json::Value = serde_json::from_str(&body).unwrap();
        let n = |k: &str| counts[k].as_u64().unwrap();
        let (started, cancelled, answered) = (n("started"), n("cancelled"), n("answered"));
        if started == cancelled + answered {
            return (started, cancelled, answered);
        }
        assert!(
            Instant::now() < until,
            "requests still open on the slow server: {body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn hedging_keeps_the_first_answer_and_cancels_the_other_request() {
    let fast = MlServer::start(&[("ORDERED_TEST_MAX_DELAY_MS", "5")]);
    for transport in ["grpc", "http"] {
        // The slow server answers after 10 s unless the request is given up first; it is
        // listed first, so with equal in-flight counts it is picked first, and the hedge
        // after 50 ms goes to the fast server. Were the slow answer kept, the frame's
        // checksum and server would say so; were the slow request not cancelled, the slow
        // server would count it answered (or still open) after the run.
        let slow = FakeServer::start("slow");
        let (slow_url, fast_url) = match transport {
            "grpc" => (slow.grpc_url(), fast.grpc_url()),
            _ => (slow.http_url(), fast.http_url()),
        };
        let run = Run::start_when_all_healthy(
            &format!(
                "servers={slow_url},{fast_url} model=frames workers=2 hedge-after=50000000 \
                 request-timeout=30000000000 on-error=drop"
            ),
            30,
        );
        let (frames, pool, _) = run.finish();
        assert_eq!(frames.len(), 30, "{transport}: {pool}");
        check(&frames, true);
        assert!(all_answered_by(&frames, &fast_url), "{transport}: {pool}");
        let hedges = field::<u64>(&pool, "hedges");
        let (started, cancelled, answered) = settled_counts(&slow);
        assert!(hedges > 0, "{transport}: {pool}");
        // Every request the slow server got was one of a hedged pair (a hedge sent there
        // and cancelled before it arrived is not counted by it).
        assert!(
            (1..=hedges).contains(&started),
            "{transport}: {started} requests, {hedges} hedges"
        );
        assert_eq!(
            (cancelled, answered),
            (started, 0),
            "{transport}: every losing request was cancelled"
        );
    }
}

#[test]
fn the_auth_token_is_sent_but_never_shown() {
    let echo = FakeServer::start("echo-auth");
    for url in [echo.http_url(), echo.grpc_url()] {
        let run = Run::start(
            &format!("servers={url} model=frames workers=2 auth-token=s3cr3t-t0ken"),
            5,
            None,
        );
        let pool = run.pipeline.by_name("pool").unwrap();
        // Write-only: not readable as a property.
        assert!(
            !pool
                .find_property("auth-token")
                .unwrap()
                .flags()
                .contains(glib::ParamFlags::READABLE)
        );
        let (frames, stats, _) = run.finish();
        assert_eq!(frames.len(), 5);
        for f in &frames {
            let auth: String = f.enrichment.as_ref().unwrap().outputs.get("auth").unwrap();
            assert_eq!(auth, "Bearer s3cr3t-t0ken");
        }
        assert!(!stats.to_string().contains("s3cr3t"));
    }
}

#[test]
fn misconfiguration_fails_at_start_with_a_clear_error() {
    init();
    for (props, expect) in [
        ("servers=ftp://127.0.0.1:1 model=frames", "scheme"),
        ("servers=http://127.0.0.1:1", "model"),
        (
            "servers=https://127.0.0.1:1 model=frames tls-ca-file=/nonexistent/ca.pem",
            "tls-ca-file",
        ),
    ] {
        let pipeline = gst::parse::launch(&format!(
            "videotestsrc num-buffers=1 ! enrichpool {props} ! fakesink"
        ))
        .unwrap();
        assert!(pipeline.set_state(gst::State::Paused).is_err());
        let bus = pipeline.bus().unwrap();
        let msg = bus
            .timed_pop_filtered(gst::ClockTime::from_seconds(5), &[gst::MessageType::Error])
            .expect("an error message");
        let gst::MessageView::Error(err) = msg.view() else {
            unreachable!()
        };
        assert!(err.error().to_string().contains(expect), "{}", err.error());
        pipeline.set_state(gst::State::Null).unwrap();
    }
}

#[test]
fn stopping_does_not_wait_for_a_hanging_server() {
    let hang = MlServer::start(&[("ORDERED_TEST_MODE", "hang")]);
    // Without cancellation, workers would wait out the minute-long request timeout and be
    // left behind by the stop, their requests still in flight.
    let run = Run::start(
        &format!(
            "servers={} model=frames workers=3 request-timeout=60000000000",
            hang.grpc_url()
        ),
        1000,
        None,
    );
    run.wait_until("three requests in flight", |_| {
        run.servers()[0].get::<u64>("in-flight").unwrap() == 3
    });
    run.stop_feeding();
    run.pipeline.set_state(gst::State::Null).unwrap();
    let server = &run.servers()[0];
    assert_eq!(field::<u64>(server, "in-flight"), 0, "{server}");
    // Cancelled requests are not the server's fault.
    assert_eq!(field::<u64>(server, "errors"), 0, "{server}");
    assert!(field::<bool>(server, "healthy"), "{server}");
}

#[test]
fn rest_uses_the_binary_tensor_extension_when_the_server_lists_it() {
    let binary = FakeServer::start("binary");
    let run = Run::start(
        &format!("servers={} model=frames workers=3", binary.http_url()),
        20,
        None,
    );
    let (frames, pool, _) = run.finish();
    assert_eq!(frames.len(), 20, "{pool}");
    for f in &frames {
        let o = &f.enrichment.as_ref().unwrap().outputs;
        assert!(
            o.get::<bool>("binary-request").unwrap(),
            "the request went as JSON"
        );
        assert_eq!(o.get::<u64>("checksum").unwrap(), f.checksum);
        let dims: Vec<i64> = o
            .get::<gst::Array>("dims")
            .unwrap()
            .iter()
            .map(|v| v.get::<i64>().unwrap())
            .collect();
        assert_eq!(dims, [HEIGHT as i64, WIDTH as i64, 3]);
    }
}

#[test]
fn responses_over_max_response_bytes_are_refused_and_retried_elsewhere() {
    let big = FakeServer::start("big");
    let good = MlServer::start(&[]);
    let list = format!("{},{},{}", big.http_url(), big.grpc_url(), good.grpc_url());
    let run = Run::start(
        &format!("servers={list} model=frames workers=4 retries=4 max-response-bytes=1048576"),
        30,
        None,
    );
    let (frames, pool, _) = run.finish();
    assert_eq!(frames.len(), 30, "{pool}");
    check(&frames, true);
    assert!(all_answered_by(&frames, &good.grpc_url()));
    assert_failed(&pool, 0, "max-response-bytes");
    assert_failed(&pool, 1, "too large");
}

#[test]
fn max_in_flight_per_server_bounds_the_requests_on_a_server() {
    let hang = MlServer::start(&[("ORDERED_TEST_MODE", "hang")]);
    let run = Run::start(
        &format!(
            "servers={} model=frames workers=5 max-in-flight-per-server=2 \
             request-timeout=60000000000",
            hang.grpc_url()
        ),
        1000,
        None,
    );
    // Every worker holds a frame; two of them have a request out, three wait for room.
    run.wait_until("five frames in flight", |_| {
        run.pool_stats().get::<u64>("in-flight").unwrap() == 5
            && run.servers()[0].get::<u64>("in-flight").unwrap() == 2
    });
    let server = &run.servers()[0];
    assert_eq!(field::<u64>(server, "in-flight"), 2, "{server}");
    assert_eq!(field::<u64>(server, "requests"), 0, "{server}");
    run.stop_feeding();
    run.pipeline.set_state(gst::State::Null).unwrap();
}

#[test]
fn a_retry_after_the_server_answered_does_not_ask_again_nor_add_its_detections_twice() {
    let server = MlServer::start(&[]);
    let run = Run::start(
        &format!(
            "servers={} model=frames workers=2 retries=2",
            server.http_url()
        ),
        20,
        None,
    );
    // The handler fails every frame's first attempt, after the remote step answered.
    let pool = run
        .pipeline
        .by_name("pool")
        .unwrap()
        .downcast::<gstordered::EnrichPool>()
        .unwrap();
    pool.set_handler(|job| {
        if job.attempt == 0 {
            Err("the handler fails once".into())
        } else {
            Ok(gstordered::enrichpool::Verdict::Keep)
        }
    });
    let (frames, pool, _) = run.finish();
    check(&frames, false);
    // Frames that went through the pool before the handler was installed have one attempt.
    let retried: Vec<&Out> = frames
        .iter()
        .filter(|f| f.enrichment.as_ref().is_some_and(|e| e.attempts == 2))
        .collect();
    assert!(!retried.is_empty(), "some frames were retried");
    for f in &frames {
        assert_eq!(
            f.rois.len(),
            1,
            "frame {}: one detection, once: {:?}",
            f.seq,
            f.rois
        );
    }
    // One request per frame, however many attempts.
    assert_eq!(field::<u64>(&pool, "remote-sent"), frames.len() as u64);
    let requests: u64 = server_stats(&pool, 0).get::<u64>("requests").unwrap();
    assert_eq!(requests, frames.len() as u64, "{pool}");
}

/// A file holding `content` with `mode`, in a scratch folder.
fn token_file(name: &str, content: &str, mode: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = servers::scratch_dir("token").join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// Runs `gst-launch-1.0 -m` on `pipeline` with `env`; everything it wrote, stdout and
/// stderr, and whether it succeeded.
fn launch_output(env: &[(&str, &str)], pipeline: &str) -> (bool, String) {
    let mut cmd = plugin::gst_command("gst-launch-1.0");
    cmd.env("GST_DEBUG_NO_COLOR", "1").arg("-m");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(pipeline.split_whitespace());
    let out = servers::output_within(cmd, WAIT);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The auth headers the echo-auth fake server saw.
fn seen_auth(server: &FakeServer) -> Vec<String> {
    let body = servers::http_get(server.http, "/counts").expect("GET /counts");
    let counts: serde_json::Value = serde_json::from_str(&body).unwrap();
    counts["auth"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_token_from_auth_token_file_is_sent_and_in_no_output_at_any_debug_level() {
    const TOKEN: &str = "f1le-t0ken-7d3e";
    let path = token_file("token", &format!("{TOKEN}\n"), 0o600);
    let path = path.to_str().unwrap();
    for transport in ["http", "grpc"] {
        let echo = FakeServer::start("echo-auth");
        let url = match transport {
            "grpc" => echo.grpc_url(),
            _ => echo.http_url(),
        };
        // In a pipeline of this process: every answer echoes the header it was sent.
        let run = Run::start(
            &format!("servers={url} model=frames workers=2 auth-token-file={path}"),
            3,
            None,
        );
        let (frames, stats, _) = run.finish();
        assert_eq!(frames.len(), 3);
        for f in &frames {
            let auth: String = f.enrichment.as_ref().unwrap().outputs.get("auth").unwrap();
            assert_eq!(auth, format!("Bearer {TOKEN}"));
        }
        assert!(!stats.to_string().contains(TOKEN));
        // Under gst-launch-1.0 with every debug category at its most verbose: the server
        // gets the token, and nothing the process writes holds it.
        let (ok, text) = launch_output(
            &[("GST_DEBUG", "*:9")],
            &format!(
                "videotestsrc num-buffers=3 ! video/x-raw,format=RGB,width=16,height=16 \
                 ! enrichpool servers={url} model=frames auth-token-file={path} \
                 stats-interval=1000000000 ! fakesink"
            ),
        );
        assert!(
            ok,
            "{transport}: {}",
            &text[text.len().saturating_sub(3000)..]
        );
        assert!(
            text.contains("auth-token-file"),
            "{transport}: the debug log ran"
        );
        assert!(
            !text.contains(TOKEN),
            "{transport}: the token is in the output"
        );
        assert!(
            seen_auth(&echo).contains(&format!("Bearer {TOKEN}")),
            "{transport}: the server got the token"
        );
    }
    // Why the file: given as auth-token on the command line, GStreamer's own parser prints
    // the token at debug level 4 and up, where this element cannot hide it.
    let echo = FakeServer::start("echo-auth");
    let (_, text) = launch_output(
        &[("GST_DEBUG", "GST_PIPELINE:5")],
        &format!(
            "videotestsrc num-buffers=1 ! video/x-raw,format=RGB,width=16,height=16 \
             ! enrichpool servers={} model=frames auth-token={TOKEN} ! fakesink",
            echo.http_url()
        ),
    );
    assert!(text.contains(TOKEN), "as README says: {text}");
}

#[test]
fn a_bad_auth_token_file_is_a_clear_error_at_start() {
    init();
    let public = token_file("public", "t0ken", 0o644);
    let empty = token_file("empty", "  \n", 0o600);
    let private = token_file("private", "t0ken", 0o600);
    let big = token_file("big", &"t0ken".repeat(20_000), 0o600);
    for (props, expect) in [
        (
            format!("auth-token-file={}", public.display()),
            "is open to every user (mode 644)",
        ),
        (format!("auth-token-file={}", empty.display()), "is empty"),
        (
            "auth-token-file=/dev/zero".to_string(),
            "is not a regular file",
        ),
        (
            format!("auth-token-file={}", big.display()),
            "is larger than 65536 bytes",
        ),
        (
            "auth-token-file=/nonexistent/token".to_string(),
            "reading auth-token-file `/nonexistent/token`",
        ),
        (
            format!("auth-token=x auth-token-file={}", private.display()),
            "set auth-token or auth-token-file, not both",
        ),
    ] {
        let pipeline = gst::parse::launch(&format!(
            "videotestsrc num-buffers=1 ! enrichpool servers=http://127.0.0.1:1 model=frames \
             {props} ! fakesink"
        ))
        .unwrap();
        assert!(pipeline.set_state(gst::State::Paused).is_err(), "{props}");
        let msg = pipeline
            .bus()
            .unwrap()
            .timed_pop_filtered(gst::ClockTime::from_seconds(5), &[gst::MessageType::Error])
            .expect("an error message");
        let gst::MessageView::Error(err) = msg.view() else {
            unreachable!()
        };
        let text = err.error().to_string();
        assert!(text.contains(expect), "{props}: {text}");
        assert!(!text.contains("t0ken"), "{props}: {text}");
        pipeline.set_state(gst::State::Null).unwrap();
    }
}

#[test]
fn a_refused_request_fails_the_frame_but_leaves_the_server_in() {
    for transport in ["http", "grpc"] {
        let refuse = FakeServer::start("refuse");
        let url = match transport {
            "grpc" => refuse.grpc_url(),
            _ => refuse.http_url(),
        };
        let run = Run::start(
            &format!("servers={url} model=frames workers=1 on-error=drop"),
            5,
            None,
        );
        let (frames, pool, reseq) = run.finish();
        // Each frame failed once (a gap); the server answered, so it stays in.
        assert!(frames.is_empty(), "{transport}: {pool}");
        assert_eq!(field::<u64>(&pool, "dropped-failed"), 5, "{pool}");
        assert_eq!(field::<u64>(&reseq, "gaps"), 5, "{reseq}");
        let server = server_stats(&pool, 0);
        assert!(
            server.get::<bool>("healthy").unwrap(),
            "{transport}: {server}"
        );
        assert_eq!(server.get::<u64>("errors").unwrap(), 5, "{server}");
        let last = server.get::<String>("last-error").unwrap();
        let expect = if transport == "grpc" {
            "InvalidArgument"
        } else {
            "400"
        };
        assert!(last.contains(expect), "{transport}: {last}");
    }
}

#[test]
fn a_flush_cancels_the_requests_in_flight() {
    for transport in ["grpc", "http"] {
        let slow = FakeServer::start("slow");
        let url = match transport {
            "grpc" => slow.grpc_url(),
            _ => slow.http_url(),
        };
        let run = Run::start_when_all_healthy(
            &format!("servers={url} model=frames workers=3 request-timeout=60000000000"),
            3,
        );
        // Three requests wait on the server (for 10 s each, unless given up).
        let until = Instant::now() + WAIT;
        while settled_or_not(&slow).0 < 3 {
            assert!(
                Instant::now() < until,
                "{transport}: the requests never started"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let flushed_at = Instant::now();
        let sink = run
            .pipeline
            .by_name("pool")
            .unwrap()
            .static_pad("sink")
            .unwrap();
        assert!(sink.send_event(gst::event::FlushStart::new()));
        assert!(sink.send_event(gst::event::FlushStop::new(true)));
        let (started, cancelled, answered) = settled_counts(&slow);
        assert_eq!((started, cancelled, answered), (3, 3, 0), "{transport}");
        assert!(
            flushed_at.elapsed() < Duration::from_secs(5),
            "{transport}: cancelled {:?} after the flush",
            flushed_at.elapsed()
        );
        let pool = run.pool_stats();
        assert_eq!(field::<u64>(&pool, "flushed"), 3, "{pool}");
        run.stop_feeding();
        run.pipeline.set_state(gst::State::Null).unwrap();
    }
}

/// The slow fake server's counts now: (started, cancelled + answered).
fn settled_or_not(server: &FakeServer) -> (u64, u64) {
    let body = servers::http_get(server.http, "/counts").expect("GET /counts");
    let counts: serde_json::Value = serde_json::from_str(&body).unwrap();
    let n = |k: &str| counts[k].as_u64().unwrap();
    (n("started"), n("cancelled") + n("answered"))
}

#[test]
fn proxies_from_the_environment_are_not_used() {
    let server = MlServer::start(&[]);
    // Every proxy variable points at a closed port: a client that used one would fail.
    let proxy = "http://127.0.0.1:9";
    let env: Vec<(&str, &str)> = [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "grpc_proxy",
        "GRPC_PROXY",
    ]
    .into_iter()
    .map(|k| (k, proxy))
    .collect();
    for url in [server.http_url(), server.grpc_url()] {
        let (ok, text) = launch_output(
            &env,
            &format!(
                "videotestsrc num-buffers=5 ! video/x-raw,format=RGB,width=16,height=16 \
                 ! enrichpool servers={url} model=frames on-error=drop \
                 stats-interval=1000000000 ! fakesink"
            ),
        );
        assert!(ok, "{url}: {text}");
        let last = text
            .lines()
            .rfind(|l| l.contains("): enrichpool-stats, "))
            .unwrap_or_else(|| panic!("{url}: no stats: {text}"));
        for (field, want) in [("pushed", 5), ("dropped", 0), ("remote-sent", 5)] {
            assert!(
                last.contains(&format!(" {field}=(guint64){want},")),
                "{url}: {field} in {last}"
            );
        }
    }
}
