//! A two-stage cascade against a real MLServer: a detector on each whole frame, then a
//! classifier on the crop of every region it found (`infer-on=rois`), over 100 frames of a
//! moving scene. Each region's result must be its own: the classifier says what the crop it
//! got shows, so a result put on the wrong region, or a crop cut in the wrong place, shows.

#[path = "common/launch.rs"]
mod launch;
#[path = "common/servers.rs"]
mod servers;

use gst::prelude::*;
use gstordered::meta::{Enrichment, SeqMeta};

const W: u32 = 64;
const H: u32 = 48;
const FRAMES: u64 = 100;

fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstordered::plugin_register_static().unwrap();
    });
}

/// An object of the scene: its class, its grey level, its rect (x, y, width, height).
type Object = (&'static str, u8, (u32, u32, u32, u32));

/// Where the two objects of frame `n` are: `a` (grey 200, 8×8) moves right, `b` (grey 100,
/// 6×6) moves down; they never overlap.
fn objects(n: u64) -> [Object; 2] {
    [
        ("a", 200, (2 + (n % 44) as u32, 5, 8, 8)),
        ("b", 100, (54, 2 + (n % 40) as u32, 6, 6)),
    ]
}

fn frame(n: u64) -> gst::Buffer {
    let mut data = vec![20u8; (W * H) as usize];
    for (_, level, (x, y, w, h)) in objects(n) {
        for row in y..y + h {
            for col in x..x + w {
                data[(row * W + col) as usize] = level;
            }
        }
    }
    let mut buffer = gst::Buffer::from_mut_slice(data);
    let b = buffer.get_mut().unwrap();
    let period = gst::ClockTime::from_mseconds(33);
    b.set_pts(period * n);
    b.set_duration(period);
    buffer
}

#[test]
fn each_region_keeps_its_own_result_across_a_moving_scene() {
    init();
    let server = servers::MlServer::start_cascade();
    let pipeline = launch::pipeline(&format!(
        "appsrc name=src format=time caps=video/x-raw,format=GRAY8,width={W},height={H},framerate=30/1 \
         ! enrichpool name=detect workers=4 servers={} model=detect \
         ! enrichpool name=classify workers=4 infer-on=rois servers={} model=classify \
         ! resequencer ! appsink name=sink sync=false",
        server.grpc_url(),
        server.http_url()
    ));
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    let sink = launch::app_sink(&pipeline);
    pipeline.set_state(gst::State::Playing).unwrap();
    for n in 0..FRAMES {
        src.push_buffer(frame(n)).unwrap();
    }
    src.end_of_stream().unwrap();
    let mut seen = 0;
    while let Ok(sample) = sink.pull_sample() {
        let buffer = sample.buffer().unwrap();
        let n = SeqMeta::read(buffer).unwrap().unwrap().seq;
        assert_eq!(n, seen, "frames leave in order");
        seen += 1;
        let regions: Vec<_> = buffer
            .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
            .map(|m| {
                (
                    m.roi_type().to_string(),
                    m.rect(),
                    m.param("enrichment").map(|p| p.to_owned()),
                )
            })
            .collect();
        assert_eq!(regions.len(), 2, "frame {n}: {regions:?}");
        for (class, _, rect) in objects(n) {
            let (_, found, result) = regions
                .iter()
                .find(|r| r.0 == class)
                .unwrap_or_else(|| panic!("frame {n}: no region {class}"));
            assert_eq!(*found, rect, "frame {n}: the detector's box for {class}");
            let result = result
                .as_ref()
                .unwrap_or_else(|| panic!("frame {n}: region {class} has no result"));
            // The classifier's answer for this region's crop is about this region.
            let label = result.get::<gst::Array>("label").ok().map_or_else(
                || result.get::<String>("label").unwrap(),
                |a| a.as_slice()[0].get::<String>().unwrap(),
            );
            assert_eq!(label, class, "frame {n}: region {class}'s result");
            assert_eq!(
                result.get::<i64>("pixels").unwrap(),
                (rect.2 * rect.3) as i64,
                "frame {n}: the crop of {class} is the region"
            );
            assert_eq!(
                (
                    result.get::<u32>("x").unwrap(),
                    result.get::<u32>("y").unwrap()
                ),
                (rect.0, rect.1)
            );
        }
        let rois = Enrichment::read(buffer)
            .unwrap()
            .unwrap()
            .outputs
            .get::<gst::Array>("rois")
            .unwrap();
        assert_eq!(rois.len(), 2, "frame {n}: both regions in the rois array");
    }
    assert_eq!(seen, FRAMES);
    let classify = pipeline.by_name("classify").unwrap();
    let stats = classify.property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("rois-processed").unwrap(), 2 * FRAMES);
    assert_eq!(stats.get::<u64>("rois-failed").unwrap(), 0);
    // The ledgers: every frame in went out of both stages, none dropped.
    for name in ["detect", "classify"] {
        let s = pipeline
            .by_name(name)
            .unwrap()
            .property::<gst::Structure>("stats");
        let get = |f: &str| s.get::<u64>(f).unwrap();
        assert_eq!(
            (get("in"), get("pushed"), get("dropped")),
            (FRAMES, FRAMES, 0),
            "{name}"
        );
    }
    pipeline.set_state(gst::State::Null).unwrap();
}
