//! Remote enrichment against real MLServer processes (from the venv `./dev.sh test` makes, or
//! `ORDERED_MLSERVER_VENV`), measured side by side in one run:
//!
//! - scaling: 1, 2 and 3 servers whose model takes a fixed 20 ms per request, one request at
//!   a time (so each server tops out near 50 frames/s); 320×240 RGB frames over gRPC through
//!   `appsrc ! enrichpool ! resequencer ! fakesink`; throughput and the 3-to-1 ratio, six
//!   rounds of the three counts (the first rotating), median and spread (min–max);
//! - overhead: one request at a time to a model that answers at once, over gRPC and REST:
//!   our per-request latency (p50 at the element) against MLServer's own measure of the same
//!   requests (`model_infer_request_duration` for gRPC, its data plane;
//!   `rest_server_request_duration_seconds` for REST, the whole HTTP request); six rounds
//!   per transport, alternating, median and spread.
//!
//! `cargo bench --bench remote` runs both; `-- scaling|overhead` one.

#[path = "../tests/common/launch.rs"]
mod launch;

#[path = "../tests/common/servers.rs"]
mod servers;

#[path = "common/mod.rs"]
mod common;

use gst::prelude::*;
use servers::MlServer;

const WIDTH: u32 = 320;
const HEIGHT: u32 = 240;

fn init() {
    gst::init().unwrap();
    gstordered::plugin_register_static().unwrap();
}

/// Pushes `frames` frames through `appsrc ! enrichpool PROPS ! resequencer ! fakesink`;
/// returns the seconds to EOS and the pool's stats.
fn run(props: &str, frames: u64) -> (f64, gst::Structure) {
    let pipeline = launch::pipeline(&format!(
        "appsrc name=src format=time max-bytes=0 \
           caps=video/x-raw,format=RGB,width={WIDTH},height={HEIGHT},framerate=30/1 \
         ! enrichpool name=pool {props} ! resequencer ! fakesink sync=false"
    ));
    let frame = vec![128u8; (WIDTH * HEIGHT * 3) as usize];
    let secs = common::push_to_eos(
        &pipeline,
        (0..frames).map(|n| {
            let mut buffer = gst::Buffer::from_slice(frame.clone());
            buffer
                .get_mut()
                .unwrap()
                .set_pts(gst::ClockTime::from_mseconds(33) * n);
            buffer
        }),
    );
    let stats = pipeline
        .by_name("pool")
        .unwrap()
        .property::<gst::Structure>("stats");
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(stats.get::<u64>("pushed").unwrap(), frames, "{stats}");
    (secs, stats)
}

fn scaling() {
    println!("## scaling: model of a fixed 20 ms per request, 320x240 RGB over gRPC");
    let mut servers: Vec<MlServer> = (0..3)
        .map(|_| {
            MlServer::spawn(&[
                ("ORDERED_TEST_MODE", "fixed"),
                ("ORDERED_TEST_FIXED_MS", "20"),
            ])
        })
        .collect();
    servers.iter_mut().for_each(MlServer::wait_ready);
    let urls: Vec<String> = servers.iter().map(MlServer::grpc_url).collect();
    // Warm-up: connections, MLServer's first requests.
    run(
        &format!("servers={} model=frames workers=6", urls.join(",")),
        30,
    );
    let rounds = 6;
    let counts = [1usize, 2, 3];
    // Rounds of 1, 2 and 3 servers, the first rotating.
    let fps = common::alternate(&counts, rounds, |&n| {
        let frames = 100 * n as u64;
        let props = format!(
            "servers={} model=frames workers={} max-in-flight-per-server=2",
            urls[..n].join(","),
            2 * n
        );
        let (secs, _) = run(&props, frames);
        frames as f64 / secs
    });
    println!("{rounds} rounds; median (min–max), the ratio taken round by round");
    println!("| servers | frames/s | vs 1 server |");
    println!("|---|---|---|");
    for (n, f) in counts.iter().zip(&fps) {
        println!(
            "| {n} | {} | {} |",
            f.spread(|v| format!("{v:.1}")),
            f.over(&fps[0]).spread(|v| format!("{v:.2}×"))
        );
    }
}

fn overhead() {
    let rounds = 6;
    println!(
        "## overhead: one request at a time, model answers at once, 320x240 RGB; {rounds} \
         rounds of 300 requests per transport (alternating); median (min–max) of the rounds"
    );
    let server = MlServer::start(&[("ORDERED_TEST_MAX_DELAY_MS", "0")]);
    let transports = [
        ("gRPC", server.grpc_url(), false),
        ("REST (JSON)", server.http_url(), true),
    ];
    for (_, url, _) in &transports {
        run(&format!("servers={url} model=frames workers=1"), 20);
    }
    // Per round and transport: (ours, theirs) in ms.
    let mut ours = vec![common::Rounds::default(); 2];
    let mut theirs = vec![common::Rounds::default(); 2];
    for round in 0..rounds {
        for i in 0..2 {
            let t = (round + i) % 2;
            let (_, url, rest) = &transports[t];
            let before = server.infer_duration(*rest).expect("MLServer metrics");
            let frames = 300;
            let (_, stats) = run(&format!("servers={url} model=frames workers=1"), frames);
            let after = server.infer_duration(*rest).expect("MLServer metrics");
            let count = after.0 - before.0;
            assert_eq!(count as u64, frames, "MLServer counted other requests");
            theirs[t].0.push((after.1 - before.1) / count * 1e3);
            let server_stats = stats.get::<gst::Array>("servers").unwrap().as_slice()[0]
                .get::<gst::Structure>()
                .unwrap();
            ours[t]
                .0
                .push(server_stats.get::<u64>("latency-p50").unwrap() as f64 / 1e6);
        }
    }
    println!("| transport | our p50 per request | MLServer's own mean | difference |");
    println!("|---|---|---|---|");
    let ms = |v: f64| format!("{v:.2}");
    for (t, (transport, _, _)) in transports.iter().enumerate() {
        let difference = common::Rounds(
            ours[t]
                .0
                .iter()
                .zip(&theirs[t].0)
                .map(|(o, m)| o - m)
                .collect(),
        );
        println!(
            "| {transport} | {} ms | {} ms | {} ms |",
            ours[t].spread(ms),
            theirs[t].spread(ms),
            difference.spread(ms)
        );
    }
}

fn main() {
    init();
    let wants = common::wanted();
    if wants("scaling") {
        scaling();
    }
    if wants("overhead") {
        overhead();
    }
}
