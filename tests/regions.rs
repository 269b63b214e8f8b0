//! `enrichpool infer-on=rois`: the steps run once per region of interest, on its crop, the
//! crops of a frame in parallel; results go back on the regions, regions found inside crops
//! come out in frame coordinates. Crop geometry is checked byte for byte for odd sizes,
//! regions on every border, padded strides and every kind of layout; bad regions are
//! counted, never a crash.

#[path = "common/harness.rs"]
mod harness;
#[path = "common/servers.rs"]
mod servers;
#[path = "common/sync.rs"]
mod sync;

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_check::Harness;
use gst_video::VideoFormat;
use gstordered::EnrichPool;
use gstordered::enrichpool::{Job, Verdict};
use gstordered::meta::Enrichment;
use harness::{init, pool_harness, pull_within, stat, wait_for};

/// The longest any wait here may take (a regression that deadlocks fails, not hangs).
const LIMIT: Duration = Duration::from_secs(60);

/// The byte at column `xb` (bytes) of row `y` of plane 0: different for neighbouring bytes
/// and rows, so that an offset, a stride or a swapped row shows.
fn pattern(xb: usize, y: usize) -> u8 {
    ((xb * 7 + y * 13 + 5) % 251) as u8
}

/// A frame of `format`, `w`×`h`, with plane 0 drawn with [`pattern`] and every row of every
/// plane padded by `pad` bytes (said in a `GstVideoMeta`). Padding and other planes hold
/// 0xEE, which the pattern's neighbours never equal in a whole row.
fn frame(
    format: VideoFormat,
    w: u32,
    h: u32,
    pad: usize,
    n: u64,
) -> (gst::Buffer, gst_video::VideoInfo) {
    init();
    let info = gst_video::VideoInfo::builder(format, w, h).build().unwrap();
    let planes = info.n_planes() as usize;
    let mut strides = Vec::new();
    let mut offsets = Vec::new();
    let mut size = 0usize;
    for p in 0..planes {
        let stride = info.stride()[p] as usize + pad;
        let rows = if p == 0 {
            h as usize
        } else {
            (h as usize).div_ceil(2)
        };
        offsets.push(size);
        strides.push(stride as i32);
        size += stride * rows;
    }
    let mut data = vec![0xEEu8; size];
    let bpp = info.format_info().pixel_stride()[0] as usize;
    for y in 0..h as usize {
        for xb in 0..w as usize * bpp {
            data[y * strides[0] as usize + xb] = pattern(xb, y);
        }
    }
    let mut buffer = gst::Buffer::from_mut_slice(data);
    {
        let b = buffer.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_mseconds(40) * n);
        b.set_duration(gst::ClockTime::from_mseconds(40));
        gst_video::VideoMeta::add_full(
            b,
            gst_video::VideoFrameFlags::empty(),
            format,
            w,
            h,
            &offsets,
            &strides,
        )
        .unwrap();
    }
    (buffer, info)
}

fn add_roi(buffer: &mut gst::Buffer, kind: &str, rect: (u32, u32, u32, u32), id: i32) {
    let mut meta = gst_video::VideoRegionOfInterestMeta::add(buffer.get_mut().unwrap(), kind, rect);
    meta.set_id(id);
}

/// `enrichpool` in a harness, with `props`, fed caps for `info`.
fn harness(props: &str, info: &gst_video::VideoInfo) -> (Harness, EnrichPool) {
    let (mut h, pool) = pool_harness(props);
    h.set_src_caps(info.to_caps().unwrap());
    (h, pool)
}

fn pull(h: &mut Harness) -> gst::Buffer {
    pull_within(h, LIMIT)
}

/// The frame's regions: (id, parent id, type, rect, its `enrichment` param).
#[allow(clippy::type_complexity)]
fn regions(
    buffer: &gst::BufferRef,
) -> Vec<(
    i32,
    i32,
    String,
    (u32, u32, u32, u32),
    Option<gst::Structure>,
)> {
    buffer
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .map(|m| {
            (
                m.id(),
                m.parent_id(),
                m.roi_type().to_string(),
                m.rect(),
                m.param("enrichment").map(|p| p.to_owned()),
            )
        })
        .collect()
}

/// x, y, width, height.
type Rect = (u32, u32, u32, u32);

/// What a crop must hold: plane 0 of `rect` of a [`frame`].
fn expected_crop(rect: (u32, u32, u32, u32), bpp: usize) -> Vec<u8> {
    let (x, y, w, h) = (
        rect.0 as usize,
        rect.1 as usize,
        rect.2 as usize,
        rect.3 as usize,
    );
    let mut out = Vec::new();
    for row in y..y + h {
        for xb in x * bpp..(x + w) * bpp {
            out.push(pattern(xb, row));
        }
    }
    out
}

/// The formats of each kind of layout, with plane 0's bytes per pixel and the crop's format.
const FORMATS: [(VideoFormat, usize, VideoFormat); 7] = [
    (VideoFormat::Gray8, 1, VideoFormat::Gray8),
    (VideoFormat::Rgb, 3, VideoFormat::Rgb),
    (VideoFormat::Bgr, 3, VideoFormat::Bgr),
    (VideoFormat::Bgrx, 4, VideoFormat::Bgrx),
    (VideoFormat::Rgba, 4, VideoFormat::Rgba),
    (VideoFormat::I420, 1, VideoFormat::Gray8),
    (VideoFormat::Nv12, 1, VideoFormat::Gray8),
];

/// Regions of a `w`×`h` frame touching every border and corner, the whole frame, one pixel,
/// and one partly outside (cropped to the frame), with their rects as cropped.
fn border_regions(w: u32, h: u32) -> Vec<(Rect, Rect)> {
    let same = |r| (r, r);
    vec![
        same((0, 0, 5, 4)),
        same((w - 5, 0, 5, 4)),
        same((0, h - 4, 5, 4)),
        same((w - 5, h - 4, 5, 4)),
        same((0, 0, w, h)),
        same((w / 2, h / 2, 1, 1)),
        same((3, 0, 7, h)),
        ((w - 3, h - 2, 10, 10), (w - 3, h - 2, 3, 2)),
    ]
}

#[test]
fn crops_are_exact_for_every_layout_odd_size_border_and_stride() {
    for (format, bpp, crop_format) in FORMATS {
        for (w, h) in [(37, 23), (64, 48)] {
            for pad in [0, 9] {
                let (mut buffer, info) = frame(format, w, h, pad, 0);
                let cases = border_regions(w, h);
                for (i, (rect, _)) in cases.iter().enumerate() {
                    add_roi(&mut buffer, "box", *rect, i as i32 + 1);
                }
                let (mut hn, pool) = harness("workers=4 infer-on=rois", &info);
                let seen = Arc::new(Mutex::new(Vec::new()));
                let record = seen.clone();
                pool.set_handler(move |job: &mut Job<'_>| {
                    let roi = job.roi.expect("a crop job names its region").clone();
                    let meta = job
                        .buffer
                        .meta::<gst_video::VideoMeta>()
                        .expect("a VideoMeta");
                    let geometry = (meta.format(), meta.width(), meta.height(), meta.stride()[0]);
                    let bytes = job.buffer.map_readable().unwrap().to_vec();
                    job.outputs.set("seen", bytes.len() as u64);
                    // Something found inside the crop, in the crop's coordinates.
                    gst_video::VideoRegionOfInterestMeta::add(job.buffer, "inner", (1, 1, 2, 2));
                    record.lock().unwrap().push((roi, geometry, bytes));
                    Ok(Verdict::Keep)
                });
                hn.push(buffer).unwrap();
                let out = pull(&mut hn);
                let what = format!("{format:?} {w}x{h} pad {pad}");
                let seen = seen.lock().unwrap();
                assert_eq!(seen.len(), cases.len(), "{what}: one job per region");
                for (roi, geometry, bytes) in seen.iter() {
                    let (_, cropped) = cases[roi.id as usize - 1];
                    assert_eq!((roi.x, roi.y, roi.width, roi.height), cropped, "{what}");
                    assert_eq!(
                        *geometry,
                        (
                            crop_format,
                            cropped.2,
                            cropped.3,
                            (cropped.2 as usize * bpp) as i32
                        ),
                        "{what}: the crop's VideoMeta"
                    );
                    assert!(
                        *bytes == expected_crop(cropped, bpp),
                        "{what}: crop of {cropped:?} differs from plane 0 there"
                    );
                }
                // Back on the frame: each region has its result; what was found inside is a
                // region of its own, in frame coordinates, its parent the region.
                let found = regions(&out);
                for (i, (_, cropped)) in cases.iter().enumerate() {
                    let id = i as i32 + 1;
                    let (_, _, _, _, param) = found.iter().find(|r| r.0 == id).unwrap();
                    let param = param.as_ref().expect("an enrichment param");
                    assert_eq!(
                        param.get::<u64>("seen").unwrap(),
                        cropped.2 as u64 * cropped.3 as u64 * bpp as u64
                    );
                    assert_eq!(param.get::<u32>("x").unwrap(), cropped.0);
                    let inner = found.iter().find(|r| r.1 == id && r.2 == "inner");
                    // (1, 1, 2, 2) in the crop, cut to the crop.
                    let expect = (
                        cropped.0 + 1,
                        cropped.1 + 1,
                        2.min(cropped.2.saturating_sub(1)),
                        2.min(cropped.3.saturating_sub(1)),
                    );
                    if expect.2 > 0 && expect.3 > 0 {
                        let inner =
                            inner.unwrap_or_else(|| panic!("{what}: nothing found in region {id}"));
                        assert_eq!(inner.3, expect, "{what}: region {id}'s inner box");
                    } else {
                        assert!(inner.is_none(), "{what}: a box outside its 1-pixel region");
                    }
                }
                let meta = Enrichment::read(&out).unwrap().unwrap();
                let rois = meta.outputs.get::<gst::Array>("rois").unwrap();
                assert_eq!(rois.len(), cases.len());
                assert_eq!(stat(&pool, "rois-processed"), cases.len() as u64);
                assert_eq!(stat(&pool, "rois-clipped"), 1);
                drop(hn);
            }
        }
    }
}

/// Crops that meet: each arrives and waits (bounded) until `expected` have arrived.
#[derive(Default)]
struct Meeting {
    arrived: Mutex<usize>,
    met: Condvar,
}

impl Meeting {
    fn arrive(&self, expected: usize) -> bool {
        let deadline = Instant::now() + LIMIT;
        let mut arrived = self.arrived.lock().unwrap();
        *arrived += 1;
        self.met.notify_all();
        while *arrived < expected {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            arrived = self.met.wait_timeout(arrived, left).unwrap().0;
        }
        true
    }
}

#[test]
fn the_crops_of_one_frame_run_at_once_on_idle_workers() {
    // Eight regions, eight workers: each crop job waits until all eight are running, which
    // they only are if the frame's crops run in parallel (one after another, the first
    // would wait out LIMIT and report that it ran alone).
    let (mut buffer, info) = frame(VideoFormat::Gray8, 64, 32, 0, 0);
    for i in 0..8 {
        add_roi(&mut buffer, "box", (i * 8, 0, 8, 32), i as i32);
    }
    let (mut h, pool) = harness("workers=8 infer-on=rois", &info);
    let meeting = Arc::new(Meeting::default());
    let m = meeting.clone();
    pool.set_handler(move |job: &mut Job<'_>| {
        job.outputs.set("met", m.arrive(8));
        Ok(Verdict::Keep)
    });
    h.push(buffer).unwrap();
    let out = pull(&mut h);
    let found = regions(&out);
    assert_eq!(found.len(), 8);
    for (id, _, _, _, param) in found {
        assert!(
            param.unwrap().get::<bool>("met").unwrap(),
            "region {id}'s crop ran while the seven others did"
        );
    }
}

#[test]
fn bad_regions_are_counted_and_the_frame_goes_on() {
    // Of a 40×30 frame: two fine, one partly outside, one empty, one zero-height, one wholly
    // outside (right), one wholly outside (below), one of another type, and with max-rois=2
    // one fine region too many.
    let (mut buffer, info) = frame(VideoFormat::Rgb, 40, 30, 0, 0);
    add_roi(&mut buffer, "box", (0, 0, 10, 10), 1);
    add_roi(&mut buffer, "box", (0, 0, 0, 0), 2);
    add_roi(&mut buffer, "box", (5, 5, 10, 0), 3);
    add_roi(&mut buffer, "box", (30, 20, 20, 20), 4);
    add_roi(&mut buffer, "box", (40, 0, 5, 5), 5);
    add_roi(&mut buffer, "box", (0, 30, 5, 5), 6);
    add_roi(&mut buffer, "other", (1, 1, 5, 5), 7);
    add_roi(&mut buffer, "box", (20, 10, 4, 4), 8);
    add_roi(
        &mut buffer,
        "box",
        (u32::MAX - 1, u32::MAX - 1, u32::MAX, u32::MAX),
        9,
    );
    let (mut h, pool) = harness("workers=2 infer-on=rois roi-types=box max-rois=2", &info);
    let ran = Arc::new(Mutex::new(Vec::new()));
    let r = ran.clone();
    pool.set_handler(move |job: &mut Job<'_>| {
        let roi = job.roi.unwrap();
        r.lock()
            .unwrap()
            .push((roi.id, roi.x, roi.y, roi.width, roi.height));
        Ok(Verdict::Keep)
    });
    h.push(buffer).unwrap();
    let out = pull(&mut h);
    let mut ran = ran.lock().unwrap().clone();
    ran.sort();
    assert_eq!(ran, vec![(1, 0, 0, 10, 10), (4, 30, 20, 10, 10)]);
    assert_eq!(
        stat(&pool, "rois-invalid"),
        5,
        "empty, zero-height, three outside"
    );
    assert_eq!(stat(&pool, "rois-clipped"), 1);
    assert_eq!(stat(&pool, "rois-over-max"), 1);
    assert_eq!(stat(&pool, "rois-processed"), 2);
    // The others are on the frame as they came, without results.
    let found = regions(&out);
    assert_eq!(found.len(), 9);
    let with_results: Vec<i32> = found
        .iter()
        .filter(|r| r.4.is_some())
        .map(|r| r.0)
        .collect();
    assert_eq!(with_results, vec![1, 4]);
    // A frame without regions of the type passes untouched.
    let (mut bare, _) = frame(VideoFormat::Rgb, 40, 30, 0, 1);
    add_roi(&mut bare, "other", (1, 1, 5, 5), 1);
    h.push(bare).unwrap();
    let out = pull(&mut h);
    assert!(Enrichment::read(&out).is_none(), "no step ran, no meta");
    assert_eq!(stat(&pool, "pushed"), 2);
}

#[test]
fn repeated_and_zero_ids_are_renumbered_so_results_name_one_region() {
    let (mut buffer, info) = frame(VideoFormat::Gray8, 32, 32, 0, 0);
    for i in 0..3 {
        add_roi(&mut buffer, "box", (i * 10, 0, 8, 8), 0);
    }
    let (mut h, pool) = harness("workers=2 infer-on=rois", &info);
    pool.set_handler(|job: &mut Job<'_>| {
        job.outputs.set("x-seen", job.roi.unwrap().x);
        gst_video::VideoRegionOfInterestMeta::add(job.buffer, "inner", (0, 0, 1, 1));
        Ok(Verdict::Keep)
    });
    h.push(buffer).unwrap();
    let out = pull(&mut h);
    let found = regions(&out);
    let ids: Vec<i32> = found.iter().filter(|r| r.2 == "box").map(|r| r.0).collect();
    // Id 0 is GStreamer's default (and that of parent_id): none keeps it.
    assert_eq!(ids, vec![1, 2, 3], "fresh ids, unique in the frame");
    for (id, _, _, rect, param) in found.iter().filter(|r| r.2 == "box") {
        assert_eq!(
            param.as_ref().unwrap().get::<u32>("x-seen").unwrap(),
            rect.0
        );
        let inner: Vec<_> = found
            .iter()
            .filter(|r| r.2 == "inner" && r.1 == *id)
            .collect();
        assert_eq!(inner.len(), 1, "one box found in region {id}");
        assert_eq!(inner[0].3, (rect.0, 0, 1, 1));
    }
    assert_eq!(stat(&pool, "rois-renumbered"), 3);
    // Both regions with id 5 get fresh ids; the unique 7 stays.
    let (mut buffer, _) = frame(VideoFormat::Gray8, 32, 32, 0, 1);
    add_roi(&mut buffer, "other", (0, 0, 4, 4), 5);
    add_roi(&mut buffer, "box", (10, 0, 8, 8), 5);
    add_roi(&mut buffer, "box", (20, 0, 8, 8), 7);
    h.push(buffer).unwrap();
    let out = pull(&mut h);
    let ids: Vec<(String, i32)> = regions(&out)
        .into_iter()
        .filter(|r| r.2 != "inner")
        .map(|r| (r.2, r.0))
        .collect();
    assert_eq!(
        ids,
        vec![("other".into(), 8), ("box".into(), 9), ("box".into(), 7)]
    );
}

#[test]
fn a_failed_crop_marks_its_region_and_a_dropped_one_is_removed() {
    let (mut buffer, info) = frame(VideoFormat::Gray8, 32, 16, 0, 0);
    add_roi(&mut buffer, "good", (0, 0, 8, 8), 1);
    add_roi(&mut buffer, "bad", (8, 0, 8, 8), 2);
    add_roi(&mut buffer, "false-positive", (16, 0, 8, 8), 3);
    add_roi(&mut buffer, "panics", (24, 0, 8, 8), 4);
    let (mut h, pool) = harness("workers=2 infer-on=rois on-error=retry retries=2", &info);
    let attempts = Arc::new(Mutex::new(0u32));
    let a = attempts.clone();
    pool.set_handler(
        move |job: &mut Job<'_>| match job.roi.unwrap().roi_type.as_str() {
            "bad" => {
                *a.lock().unwrap() += 1;
                Err("the classifier refused".into())
            }
            "false-positive" => Ok(Verdict::Drop),
            "panics" => panic!("a handler bug"),
            _ => {
                job.outputs.set("class", "cat");
                Ok(Verdict::Keep)
            }
        },
    );
    h.push(buffer).unwrap();
    let out = pull(&mut h);
    assert_eq!(
        *attempts.lock().unwrap(),
        3,
        "a failed crop is tried 1 + retries times"
    );
    let found = regions(&out);
    let types: Vec<&str> = found.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(
        types,
        vec!["good", "bad", "panics"],
        "the dropped region is gone"
    );
    let good = found[0].4.as_ref().unwrap();
    assert_eq!(good.get::<&str>("class").unwrap(), "cat");
    let bad = found[1].4.as_ref().unwrap();
    assert!(bad.get::<bool>("failed").unwrap());
    assert_eq!(bad.get::<&str>("error").unwrap(), "the classifier refused");
    assert!(found[2].4.as_ref().unwrap().get::<bool>("failed").unwrap());
    let rois = Enrichment::read(&out)
        .unwrap()
        .unwrap()
        .outputs
        .get::<gst::Array>("rois")
        .unwrap();
    assert_eq!(
        rois.len(),
        4,
        "every region run is in the array, the dropped one marked"
    );
    let dropped = rois.as_slice()[2].get::<gst::Structure>().unwrap();
    assert!(dropped.get::<bool>("dropped").unwrap());
    assert_eq!(stat(&pool, "rois-failed"), 2);
    assert_eq!(stat(&pool, "rois-dropped"), 1);
    assert_eq!(stat(&pool, "pushed"), 1, "the frame itself goes on");
}

#[test]
fn with_on_error_fail_a_failed_crop_fails_its_frame() {
    let (mut buffer, info) = frame(VideoFormat::Gray8, 16, 16, 0, 0);
    add_roi(&mut buffer, "bad", (0, 0, 8, 8), 1);
    let (mut h, pool) = harness("workers=2 infer-on=rois on-error=fail", &info);
    pool.set_handler(|_job: &mut Job<'_>| Err("refused".into()));
    // The failure may be in before the push returns: then it returns ERROR (on-error=fail).
    let pushed = h.push(buffer);
    assert!(
        matches!(pushed, Ok(_) | Err(gst::FlowError::Error)),
        "{pushed:?}"
    );
    wait_for("the frame's failure", LIMIT, || {
        stat(&pool, "dropped-failed") > 0
    });
    assert_eq!(stat(&pool, "pushed"), 0);
    assert_eq!(stat(&pool, "rois-failed"), 1);
    // The gap and nothing else came out.
    assert!(h.try_pull().is_none());
}

#[test]
fn the_servers_get_each_crop_and_boxes_come_back_in_frame_coordinates() {
    // The server answers the shape, byte sum and first pixel of what it got, and a box at
    // (1, 1)–(3, 3) of its input.
    let server = servers::FakeServer::start("geometry");
    for (format, bpp, _) in [FORMATS[0], FORMATS[1], FORMATS[3], FORMATS[6]] {
        let (w, h) = (37, 23);
        let (mut buffer, info) = frame(format, w, h, 7, 0);
        let cases = border_regions(w, h);
        for (i, (rect, _)) in cases.iter().enumerate() {
            add_roi(&mut buffer, "box", *rect, i as i32 + 1);
        }
        let (mut hn, pool) = harness(
            &format!(
                "workers=4 infer-on=rois servers={} model=frames",
                server.http_url()
            ),
            &info,
        );
        hn.push(buffer).unwrap();
        let out = pull(&mut hn);
        let found = regions(&out);
        let what = format!("{format:?}");
        for (i, (_, cropped)) in cases.iter().enumerate() {
            let id = i as i32 + 1;
            let param = found.iter().find(|r| r.0 == id).unwrap().4.clone().unwrap();
            let shape: Vec<i64> = param
                .get::<gst::Array>("shape")
                .unwrap()
                .iter()
                .map(|v| v.get::<i64>().unwrap())
                .collect();
            assert_eq!(
                shape,
                vec![cropped.3 as i64, cropped.2 as i64, bpp as i64],
                "{what}"
            );
            let expected = expected_crop(*cropped, bpp);
            let sum: u64 = expected.iter().map(|&b| b as u64).sum();
            assert_eq!(param.get::<u64>("sum").unwrap(), sum, "{what}: region {id}");
            // The crop's first pixel is the region's top-left one.
            let first: Vec<u64> = match param.get::<gst::Array>("first") {
                Ok(a) => a.iter().map(|v| v.get::<u64>().unwrap()).collect(),
                Err(_) => vec![param.get::<u64>("first").unwrap()],
            };
            let top_left: Vec<u64> = expected[..bpp].iter().map(|&b| b as u64).collect();
            assert_eq!(first, top_left, "{what}: region {id}'s first pixel");
            let inner = found.iter().find(|r| r.1 == id && r.2 == "inner");
            let x2 = (cropped.0 + 3).min(cropped.0 + cropped.2);
            let y2 = (cropped.1 + 3).min(cropped.1 + cropped.3);
            if x2 > cropped.0 + 1 && y2 > cropped.1 + 1 {
                let inner = inner.unwrap_or_else(|| panic!("{what}: no box in region {id}"));
                assert_eq!(
                    inner.3,
                    (
                        cropped.0 + 1,
                        cropped.1 + 1,
                        x2 - cropped.0 - 1,
                        y2 - cropped.1 - 1
                    ),
                    "{what}: region {id}"
                );
            } else {
                assert!(inner.is_none());
            }
        }
        assert_eq!(
            stat(&pool, "remote-sent"),
            1,
            "one frame sent, as its crops"
        );
        let servers = pool
            .property::<gst::Structure>("stats")
            .get::<gst::Array>("servers")
            .unwrap();
        let requests = servers.as_slice()[0]
            .get::<gst::Structure>()
            .unwrap()
            .get::<u64>("requests")
            .unwrap();
        assert_eq!(requests, cases.len() as u64, "{what}: one request per crop");
        drop(hn);
    }
}

#[test]
fn max_in_flight_bounds_the_workers_a_frames_crops_take() {
    // Eight workers idle, but `max-in-flight=2`: the frame's six crops run two at a time at
    // most (its own worker and one more), as its frames would.
    let (mut buffer, info) = frame(VideoFormat::Gray8, 60, 10, 0, 0);
    for i in 0..6 {
        add_roi(&mut buffer, "box", (i * 10, 0, 10, 10), i as i32 + 1);
    }
    let (mut h, pool) = harness("workers=8 max-in-flight=2 infer-on=rois", &info);
    let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (r, m) = (running.clone(), most.clone());
    pool.set_handler(move |_job: &mut Job<'_>| {
        use std::sync::atomic::Ordering::SeqCst;
        let now = r.fetch_add(1, SeqCst) + 1;
        m.fetch_max(now, SeqCst);
        // The crop's own work: long enough for idle workers to take the others, if allowed.
        std::thread::sleep(Duration::from_millis(20));
        r.fetch_sub(1, SeqCst);
        Ok(Verdict::Keep)
    });
    h.push(buffer).unwrap();
    let out = pull(&mut h);
    assert_eq!(regions(&out).iter().filter(|r| r.4.is_some()).count(), 6);
    // (Two when a second worker came in time; never more.)
    let most = most.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=2).contains(&most), "{most} crops at once");
}

#[test]
fn packed_4_2_2_crops_keep_pixel_pairs_whole_or_fail_the_region() {
    // YUY2: two pixels share their chroma in four bytes. A region on even columns is cropped
    // exactly; one that would split a pair is marked failed, and the frame goes on.
    let (mut buffer, info) = frame(VideoFormat::Yuy2, 32, 8, 4, 0);
    add_roi(&mut buffer, "even", (4, 1, 6, 3), 1);
    add_roi(&mut buffer, "odd", (5, 1, 6, 3), 2);
    let (mut h, pool) = harness("workers=2 infer-on=rois", &info);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    pool.set_handler(move |job: &mut Job<'_>| {
        record
            .lock()
            .unwrap()
            .push(job.buffer.map_readable().unwrap().to_vec());
        Ok(Verdict::Keep)
    });
    h.push(buffer).unwrap();
    let out = pull(&mut h);
    assert_eq!(*seen.lock().unwrap(), vec![expected_crop((4, 1, 6, 3), 2)]);
    let found = regions(&out);
    let odd = found[1].4.as_ref().unwrap();
    assert!(odd.get::<bool>("failed").unwrap());
    assert!(odd.get::<&str>("error").unwrap().contains("pixel pair"));
    assert_eq!(stat(&pool, "pushed"), 1);
}

#[test]
fn fresh_ids_are_found_below_a_region_at_the_largest_id() {
    let (mut buffer, info) = frame(VideoFormat::Gray8, 32, 16, 0, 0);
    add_roi(&mut buffer, "other", (0, 0, 4, 4), i32::MAX);
    add_roi(&mut buffer, "box", (8, 0, 8, 8), 0);
    add_roi(&mut buffer, "box", (16, 0, 8, 8), 0);
    let (mut h, pool) = harness("workers=2 infer-on=rois roi-types=box", &info);
    pool.set_handler(|job: &mut Job<'_>| {
        gst_video::VideoRegionOfInterestMeta::add(job.buffer, "inner", (0, 0, 1, 1));
        Ok(Verdict::Keep)
    });
    h.push(buffer).unwrap();
    let out = pull(&mut h);
    let ids: Vec<i32> = regions(&out).iter().map(|r| r.0).collect();
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "every region its own id: {ids:?}");
    assert_eq!(ids.len(), 5);
    assert!(!ids.contains(&0));
}

#[test]
fn a_flush_while_crops_run_leaves_nothing_of_the_frame_after_it() {
    // Two crops of frame 0 wait at a gate (one on another worker) when a flushing seek
    // comes: the flush returns, nothing of frame 0 follows it, and the stream goes on.
    let (mut buffer, info) = frame(VideoFormat::Gray8, 32, 16, 0, 0);
    add_roi(&mut buffer, "box", (0, 0, 8, 8), 1);
    add_roi(&mut buffer, "box", (8, 0, 8, 8), 2);
    let (mut h, pool) = harness("workers=4 infer-on=rois", &info);
    let gate = sync::Gate::default();
    let waiting = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (g, w) = (gate.clone(), waiting.clone());
    pool.set_handler(move |job: &mut Job<'_>| {
        if job.buffer.pts() == Some(gst::ClockTime::ZERO) {
            w.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            g.wait();
        }
        job.outputs.set("done", true);
        Ok(Verdict::Keep)
    });
    h.push(buffer).unwrap();
    wait_for("both crops at the gate", LIMIT, || {
        waiting.load(std::sync::atomic::Ordering::SeqCst) == 2
    });
    assert!(h.push_event(gst::event::FlushStart::new()));
    assert!(h.push_event(gst::event::FlushStop::new(true)));
    gate.open();
    assert!(
        h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
            gst::ClockTime,
        >::new()))
    );
    let (mut next, _) = frame(VideoFormat::Gray8, 32, 16, 0, 1);
    add_roi(&mut next, "box", (0, 0, 8, 8), 1);
    h.push(next).unwrap();
    let out = pull(&mut h);
    assert_eq!(
        out.pts(),
        Some(gst::ClockTime::from_mseconds(40)),
        "frame 0 came out"
    );
    assert!(regions(&out)[0].4.is_some());
    assert_eq!(stat(&pool, "flushed"), 1);
    // Frame 0's crops are done too, and its late result went nowhere.
    wait_for("frame 0's crops' return", LIMIT, || {
        stat(&pool, "in-flight") == 0
    });
    assert!(h.try_pull().is_none());
}
