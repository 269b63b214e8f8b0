//! `enrichpool worker-bin`: any elements run in parallel, one instance per worker, each frame's
//! output the one the same elements give in series, in order; and what a bin that breaks the
//! one-output-per-input contract costs: only its own frames, counted by reason.

#[path = "common/harness.rs"]
mod harness;
#[path = "common/launch.rs"]
mod launch;
#[path = "common/misbehave.rs"]
mod misbehave;

use std::time::Duration;

use gst::prelude::*;
use gstordered::meta::SeqMeta;
use harness::{init, stat};
use launch::{Run, pipeline};

/// Runs `desc` to EOS with the misbehaving element registered.
fn run(desc: &str, limit: Duration, feed: impl FnOnce(&gst::Pipeline)) -> Run {
    init();
    misbehave::register();
    launch::run(desc, limit, feed)
}

fn bytes(sample: &gst::Sample) -> Vec<u8> {
    sample.buffer().unwrap().map_readable().unwrap().to_vec()
}

fn pts(samples: &[gst::Sample]) -> Vec<u64> {
    samples
        .iter()
        .map(|s| s.buffer().unwrap().pts().unwrap().nseconds())
        .collect()
}

#[test]
fn jpeg_round_trip_on_two_workers_is_bit_identical_to_the_serial_run() {
    let src = "videotestsrc pattern=ball num-buffers=24 \
               ! video/x-raw,format=I420,width=1280,height=720,framerate=30/1";
    let serial = run(
        &format!("{src} ! jpegenc ! jpegdec ! appsink name=sink sync=false"),
        Duration::from_secs(60),
        |_| {},
    );
    let parallel = run(
        &format!(
            "{src} ! enrichpool name=pool workers=2 worker-bin=\"jpegenc ! jpegdec\" \
             ! resequencer ! appsink name=sink sync=false"
        ),
        Duration::from_secs(60),
        |_| {},
    );
    assert_eq!(serial.samples.len(), 24);
    assert_eq!(parallel.samples.len(), 24, "every frame comes out once");
    assert_eq!(pts(&parallel.samples), pts(&serial.samples), "in order");
    for (n, (a, b)) in serial.samples.iter().zip(&parallel.samples).enumerate() {
        assert_eq!(
            a.caps()
                .unwrap()
                .structure(0)
                .unwrap()
                .get::<String>("format")
                .unwrap(),
            b.caps()
                .unwrap()
                .structure(0)
                .unwrap()
                .get::<String>("format")
                .unwrap(),
            "frame {n}: the bin's output caps"
        );
        assert!(
            bytes(a) == bytes(b),
            "frame {n} differs from the serial run's"
        );
        let seq = SeqMeta::read(b.buffer().unwrap()).unwrap().unwrap().seq;
        assert_eq!(seq, n as u64, "the sequence meta is carried over");
    }
    let pool = parallel.pool.unwrap();
    assert_eq!(stat(&pool, "bin-errors") + stat(&pool, "bin-extras"), 0);
}

/// The bin's output caps are the src caps, negotiated with downstream through the bin: here
/// the bin converts to what the capsfilter after the pool asks for.
#[test]
fn src_caps_are_the_bins_output_negotiated_with_downstream() {
    let parallel = run(
        "videotestsrc num-buffers=6 ! video/x-raw,format=I420,width=64,height=48 \
         ! enrichpool name=pool workers=2 worker-bin=videoconvert \
         ! video/x-raw,format=RGB ! resequencer ! appsink name=sink sync=false",
        Duration::from_secs(30),
        |_| {},
    );
    assert_eq!(parallel.samples.len(), 6);
    for s in &parallel.samples {
        let caps = s.caps().unwrap().structure(0).unwrap().to_owned();
        assert_eq!(caps.get::<String>("format").unwrap(), "RGB");
        assert_eq!(s.buffer().unwrap().size(), 64 * 48 * 3);
    }
}

#[test]
fn a_description_that_does_not_build_fails_the_start_with_a_clear_error() {
    init();
    let p =
        pipeline("videotestsrc num-buffers=1 ! enrichpool worker-bin=\"nosuchelement\" ! fakesink");
    assert!(p.set_state(gst::State::Playing).is_err());
    let msg = p
        .bus()
        .unwrap()
        .timed_pop_filtered(gst::ClockTime::from_seconds(5), &[gst::MessageType::Error])
        .expect("an error message");
    let gst::MessageView::Error(err) = msg.view() else {
        unreachable!()
    };
    assert!(
        err.error()
            .to_string()
            .contains("no element \"nosuchelement\""),
        "{}",
        err.error()
    );
    p.set_state(gst::State::Null).unwrap();
}

/// Offsets of the frames that came out.
fn offsets(run: &Run) -> Vec<u64> {
    run.samples
        .iter()
        .map(|s| s.buffer().unwrap().offset())
        .collect()
}

fn misbehaving(mode: &str, pool_props: &str) -> Run {
    run(
        &format!(
            "videotestsrc num-buffers=40 ! video/x-raw,width=64,height=48,framerate=30/1 \
             ! enrichpool name=pool workers=2 {pool_props} \
               worker-bin=\"orderedmisbehave mode={mode} every=10\" \
             ! resequencer ! appsink name=sink sync=false"
        ),
        Duration::from_secs(60),
        |_| {},
    )
}

/// Every frame but the `every`-th ones, in order.
fn all_but_every_tenth() -> Vec<u64> {
    (0..40).filter(|n| n % 10 != 9).collect()
}

#[test]
fn a_bin_that_errors_costs_only_its_frames_and_is_rebuilt() {
    let r = misbehaving("error", "on-error=drop");
    assert_eq!(offsets(&r), all_but_every_tenth());
    let pool = r.pool.unwrap();
    assert_eq!(stat(&pool, "dropped-failed"), 4);
    assert_eq!(stat(&pool, "bin-errors"), 4);
    assert_eq!(stat(&pool, "bin-rebuilt"), 4);
    assert_eq!(stat(&pool, "pushed"), 36);
}

#[test]
fn a_bin_that_errors_with_retry_gets_a_new_instance_and_the_same_error() {
    // The element errors on that frame whichever instance runs it: the retries fail too.
    let r = misbehaving("error", "on-error=retry retries=1");
    assert_eq!(offsets(&r), all_but_every_tenth());
    let pool = r.pool.unwrap();
    assert_eq!(stat(&pool, "dropped-failed"), 4);
    assert_eq!(stat(&pool, "retries"), 4);
    assert_eq!(stat(&pool, "bin-errors"), 8);
}

#[test]
fn a_bin_that_outputs_nothing_costs_a_gap_per_frame() {
    let r = misbehaving("nothing", "");
    assert_eq!(offsets(&r), all_but_every_tenth());
    let pool = r.pool.unwrap();
    assert_eq!(stat(&pool, "dropped-dropped"), 4);
    assert_eq!(stat(&pool, "bin-no-output"), 4);
    assert_eq!(stat(&pool, "bin-errors"), 0);
}

#[test]
fn a_bin_that_outputs_two_buffers_has_the_extra_dropped_counted_and_warned() {
    let r = misbehaving("double", "");
    assert_eq!(offsets(&r), (0..40).collect::<Vec<_>>(), "each frame once");
    let pool = r.pool.unwrap();
    assert_eq!(stat(&pool, "bin-extras"), 4);
    assert_eq!(stat(&pool, "pushed"), 40);
    let warned = r
        .warnings
        .iter()
        .filter(|w| w.contains("worker-bin output"))
        .count();
    assert_eq!(warned, 1, "{:?}", r.warnings);
}

#[test]
fn a_bin_that_hangs_costs_its_frames_at_the_timeout() {
    let r = {
        // Let the hung frames go once the run is over, whatever happens to it.
        struct Release;
        impl Drop for Release {
            fn drop(&mut self) {
                misbehave::release_hung();
            }
        }
        let _release = Release;
        let r = misbehaving("hang", "timeout=300000000 max-workers=8");
        let pool = r.pool.clone().unwrap();
        (
            offsets(&r),
            stat(&pool, "dropped-timeout"),
            stat(&pool, "pushed"),
        )
    };
    assert_eq!(r.0, all_but_every_tenth());
    assert_eq!(r.1, 4);
    assert_eq!(r.2, 36);
}

/// The face of tests/data/astronaut.jpg (NASA's portrait of Eileen Collins, public domain, as
/// scikit-image ships it, scaled to 256×256), as packed RGB rows.
fn face() -> (Vec<u8>, usize) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/astronaut.jpg");
    let r = run(
        &format!(
            "filesrc location={path} ! jpegdec ! videoconvert \
             ! video/x-raw,format=RGB,width=256,height=256 ! appsink name=sink sync=false"
        ),
        Duration::from_secs(20),
        |_| {},
    );
    let sample = &r.samples[0];
    let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(sample.buffer().unwrap(), &info)
        .unwrap();
    let stride = info.stride()[0] as usize;
    let data = frame.plane_data(0).unwrap();
    let rows = (0..256)
        .flat_map(|y| data[y * stride..y * stride + 256 * 3].to_vec())
        .collect();
    (rows, 256)
}

const FACE_FRAMES: u64 = 24;

/// 480×320 grey frames with the face moving right by 8 pixels a frame.
fn feed_moving_face(p: &gst::Pipeline) {
    let (face, size) = face();
    let src = p
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    let (w, h) = (480usize, 320usize);
    for n in 0..FACE_FRAMES {
        let mut data = vec![128u8; w * h * 3];
        let (x0, y0) = (8 * n as usize, 32usize);
        for y in 0..size {
            let row = (y0 + y) * w * 3 + x0 * 3;
            data[row..row + size * 3].copy_from_slice(&face[y * size * 3..(y + 1) * size * 3]);
        }
        let mut buffer = gst::Buffer::from_mut_slice(data);
        {
            let b = buffer.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_mseconds(40 * n));
            b.set_duration(gst::ClockTime::from_mseconds(40));
            b.set_offset(n);
        }
        src.push_buffer(buffer).unwrap();
    }
    src.end_of_stream().unwrap();
}

/// A frame's offset and its face regions (x, y, width, height).
type Faces = (u64, Vec<(u32, u32, u32, u32)>);

fn faces(r: &Run) -> Vec<Faces> {
    r.samples
        .iter()
        .map(|s| {
            let b = s.buffer().unwrap();
            let rois = b
                .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
                .filter(|m| m.roi_type() == "face")
                .map(|m| m.rect())
                .collect();
            (b.offset(), rois)
        })
        .collect()
}

#[test]
fn opencv_facedetect_in_worker_bins_finds_each_frames_own_face_in_order() {
    init();
    assert!(
        gst::ElementFactory::find("facedetect").is_some(),
        "OpenCV's facedetect is missing: install gstreamer1.0-opencv and opencv-data \
         (./dev.sh test does)"
    );
    let src = "appsrc name=src format=time \
               caps=video/x-raw,format=RGB,width=480,height=320,framerate=25/1";
    let bin = "videoconvert ! facedetect display=false ! videoconvert";
    let serial = run(
        &format!("{src} ! {bin} ! appsink name=sink sync=false"),
        Duration::from_secs(120),
        feed_moving_face,
    );
    let parallel = run(
        &format!(
            "{src} ! enrichpool name=pool workers=2 worker-bin=\"{bin}\" ! resequencer \
             ! appsink name=sink sync=false"
        ),
        Duration::from_secs(120),
        feed_moving_face,
    );
    let (serial, parallel) = (faces(&serial), faces(&parallel));
    assert_eq!(serial.len() as u64, FACE_FRAMES);
    // The serial run finds the face in (nearly) every frame, moving right with it: the test
    // compares something.
    let found: Vec<_> = serial.iter().filter(|(_, f)| f.len() == 1).collect();
    assert!(found.len() as u64 >= FACE_FRAMES - 2, "{serial:?}");
    assert!(
        found.last().unwrap().1[0].0 > found[0].1[0].0 + 100,
        "{serial:?}"
    );
    assert_eq!(parallel, serial, "each frame's faces, in order");
}

/// The bin runs on every frame, even those `interval` keeps from the other steps: every frame
/// leaves in the bin's output format, under the caps that say so.
#[test]
fn with_interval_every_frame_still_goes_through_the_bin() {
    let r = run(
        "videotestsrc num-buffers=12 ! video/x-raw,format=I420,width=64,height=48 \
         ! enrichpool name=pool workers=3 interval=3 \
           worker-bin=\"videoconvert ! capsfilter caps=video/x-raw,format=RGB\" \
         ! resequencer ! appsink name=sink sync=false",
        Duration::from_secs(30),
        |_| {},
    );
    assert_eq!(r.samples.len(), 12);
    for s in &r.samples {
        let caps = s.caps().unwrap().structure(0).unwrap().to_owned();
        assert_eq!(caps.get::<String>("format").unwrap(), "RGB");
        assert_eq!(s.buffer().unwrap().size(), 64 * 48 * 3);
    }
}

/// A bin with a thread of its own (a queue): each frame's output is still its own, drained
/// out before the instance takes the next; and only the stream's first frame is DISCONT
/// (not each instance's first).
#[test]
fn a_bin_with_a_queue_inside_gives_each_frame_its_own_output() {
    let src = "videotestsrc pattern=ball num-buffers=16 \
               ! video/x-raw,format=I420,width=160,height=120,framerate=30/1";
    let serial = run(
        &format!("{src} ! jpegenc ! jpegdec ! appsink name=sink sync=false"),
        Duration::from_secs(30),
        |_| {},
    );
    let parallel = run(
        &format!(
            "{src} ! enrichpool name=pool workers=2 worker-bin=\"queue ! jpegenc ! queue ! jpegdec\" \
             ! resequencer ! appsink name=sink sync=false"
        ),
        Duration::from_secs(30),
        |_| {},
    );
    assert_eq!(parallel.samples.len(), 16);
    for (n, (a, b)) in serial.samples.iter().zip(&parallel.samples).enumerate() {
        assert!(
            bytes(a) == bytes(b),
            "frame {n} differs from the serial run's"
        );
        let discont = b
            .buffer()
            .unwrap()
            .flags()
            .contains(gst::BufferFlags::DISCONT);
        assert_eq!(discont, n == 0, "frame {n}: DISCONT");
    }
    let pool = parallel.pool.unwrap();
    assert_eq!(stat(&pool, "bin-extras") + stat(&pool, "bin-no-output"), 0);
}

/// A bin that tells its output caps only with its first frame (a decoder): the stream's
/// SEGMENT waits for them, downstream sees caps before the segment, and a gap announced
/// before the first frame waits too.
#[test]
fn events_wait_for_the_caps_a_decoder_tells_with_its_first_frame() {
    init();
    misbehave::register();
    let p = pipeline(
        "videotestsrc num-buffers=10 ! video/x-raw,format=I420,width=64,height=48,framerate=30/1 \
         ! enrichpool workers=2 worker-bin=\"orderedmisbehave mode=nothing every=2 ! jpegenc ! jpegdec\" \
         ! fakesink name=sink sync=false",
    );
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = order.clone();
    p.by_name("sink")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(
            gst::PadProbeType::EVENT_DOWNSTREAM | gst::PadProbeType::BUFFER,
            move |_, info| {
                let what = match &info.data {
                    Some(gst::PadProbeData::Buffer(_)) => "buffer".to_string(),
                    Some(gst::PadProbeData::Event(e)) => match e.structure() {
                        Some(s) if e.type_() == gst::EventType::CustomDownstream => {
                            s.name().to_string()
                        }
                        _ => e.type_().name().to_string(),
                    },
                    _ => return gst::PadProbeReturn::Ok,
                };
                seen.lock().unwrap().push(what);
                gst::PadProbeReturn::Ok
            },
        );
    p.set_state(gst::State::Playing).unwrap();
    let msg = p
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(30),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("EOS");
    assert_eq!(msg.type_(), gst::MessageType::Eos, "{msg:?}");
    p.set_state(gst::State::Null).unwrap();
    let order = order.lock().unwrap().clone();
    let at = |what: &str| {
        order
            .iter()
            .position(|e| e == what)
            .unwrap_or_else(|| panic!("no {what} in {order:?}"))
    };
    assert!(at("caps") < at("segment"), "{order:?}");
    assert!(at("segment") < at("buffer"), "{order:?}");
    // Frame 1 (odd: dropped by the bin) may finish before frame 0: its gap waits too.
    if let Some(gap) = order.iter().position(|e| e == "ordered-gap") {
        assert!(at("caps") < gap, "{order:?}");
    }
    assert_eq!(
        order.iter().filter(|e| *e == "buffer").count(),
        5,
        "{order:?}"
    );
}

/// Flushing seeks while frames are inside the instances (a queue in the bin keeps them busy
/// on a thread of their own): after each seek, nothing from before it comes out, frames
/// still come in order, and the stream still ends.
#[test]
fn flushing_seeks_while_frames_are_inside_the_instances() {
    init();
    let p = pipeline(
        "videotestsrc num-buffers=300 ! video/x-raw,format=I420,width=64,height=48,framerate=30/1 \
         ! enrichpool workers=2 worker-bin=\"queue ! jpegenc ! jpegdec\" \
         ! resequencer ! appsink name=sink sync=false",
    );
    let sink = launch::app_sink(&p);
    p.set_state(gst::State::Paused).unwrap();
    p.state(gst::ClockTime::from_seconds(10)).0.unwrap();
    p.set_state(gst::State::Playing).unwrap();
    for n in 1..=5u64 {
        // Wait for a frame, then seek further on while the next ones are in the bins.
        sink.try_pull_sample(gst::ClockTime::from_seconds(10))
            .expect("a frame before the seek");
        let to = gst::ClockTime::from_seconds(n);
        p.seek_simple(gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE, to)
            .unwrap();
        let first = sink
            .try_pull_sample(gst::ClockTime::from_seconds(10))
            .expect("a frame after the seek");
        let pts = first.buffer().unwrap().pts().unwrap();
        assert!(
            pts >= to,
            "seek {n}: a frame from before it came out ({pts})"
        );
    }
    let mut last = gst::ClockTime::from_seconds(5);
    let mut frames = 0;
    while let Some(s) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
        let pts = s.buffer().unwrap().pts().unwrap();
        assert!(
            pts > last || frames == 0,
            "out of order after the seeks: {pts} after {last}"
        );
        last = pts;
        frames += 1;
    }
    assert!(sink.is_eos(), "the stream ends");
    assert!(frames > 100, "{frames} frames after the last seek");
    p.set_state(gst::State::Null).unwrap();
}
