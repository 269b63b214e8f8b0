//! Known answers on synthetic frames, and the GPU backend (lavapipe in CI) agreeing with the
//! CPU twin exactly, for every layout, padded strides and odd sizes.

use super::*;

/// Every first-plane layout frameanalyzer reads: (name, layout).
fn layouts() -> Vec<(&'static str, Layout)> {
    let packed = |bytes_per_pixel, r, g, b| Layout::Packed {
        bytes_per_pixel,
        r,
        g,
        b,
    };
    vec![
        ("luma", Layout::Luma),
        ("RGBA", packed(4, 0, 1, 2)),
        ("BGRA", packed(4, 2, 1, 0)),
        ("RGB", packed(3, 0, 1, 2)),
        ("BGR", packed(3, 2, 1, 0)),
    ]
}

/// Encodes a luma image (with grey pixels, so every layout has the same luma) into a plane
/// with `pad` bytes of padding per row.
fn encode(luma: &[u8], width: u32, height: u32, layout: Layout, pad: u32) -> (Vec<u8>, u32) {
    let bpp = match layout {
        Layout::Luma => 1,
        Layout::Packed {
            bytes_per_pixel, ..
        } => bytes_per_pixel,
    };
    let stride = width * bpp + pad;
    let mut data = vec![0xAB; (stride * height) as usize];
    for y in 0..height {
        for x in 0..width {
            let v = luma[(y * width + x) as usize];
            let o = (y * stride + x * bpp) as usize;
            data[o..o + bpp as usize].fill(v);
        }
    }
    (data, stride)
}

fn plane<'a>(data: &'a [u8], width: u32, height: u32, stride: u32, layout: Layout) -> Plane<'a> {
    Plane {
        data,
        width,
        height,
        stride,
        layout,
    }
}

fn flat(width: u32, height: u32, v: u8) -> Vec<u8> {
    vec![v; (width * height) as usize]
}

fn square(width: u32, height: u32, x0: u32, y0: u32, side: u32) -> Vec<u8> {
    let mut img = flat(width, height, 0);
    for y in y0..y0 + side {
        for x in x0..x0 + side {
            img[(y * width + x) as usize] = 255;
        }
    }
    img
}

/// Deterministic noise.
fn noise(width: u32, height: u32, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..width * height)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

fn run(
    backend: Box<dyn Backend>,
    frames: &[Vec<u8>],
    width: u32,
    height: u32,
    layout: Layout,
    pad: u32,
) -> Vec<Analysis> {
    run_with(
        backend,
        frames,
        width,
        height,
        layout,
        pad,
        &Params::default(),
        false,
    )
}

/// [`run`] with `params`; `short` cuts each plane right after the last row's pixels.
#[allow(clippy::too_many_arguments)]
fn run_with(
    backend: Box<dyn Backend>,
    frames: &[Vec<u8>],
    width: u32,
    height: u32,
    layout: Layout,
    pad: u32,
    params: &Params,
    short: bool,
) -> Vec<Analysis> {
    let mut analyzer = Analyzer::new(backend);
    frames
        .iter()
        .map(|img| {
            let (mut data, stride) = encode(img, width, height, layout, pad);
            if short {
                data.truncate(data.len() - pad as usize);
            }
            analyzer
                .analyze(&plane(&data, width, height, stride, layout), params)
                .unwrap()
        })
        .collect()
}

/// `frames` as luma planes without padding, analysed on the CPU.
fn cpu_luma(frames: &[Vec<u8>], width: u32, height: u32) -> Vec<Analysis> {
    run(
        Box::new(cpu::CpuBackend::new()),
        frames,
        width,
        height,
        Layout::Luma,
        0,
    )
}

fn gpu() -> Box<dyn Backend> {
    gpu_tuned(None)
}

fn gpu_tuned(tuning: Option<gpu::Tuning>) -> Box<dyn Backend> {
    Box::new(gpu::GpuBackend::with_tuning(tuning).unwrap_or_else(|e| {
        panic!("the GPU tests need a wgpu adapter (lavapipe: mesa-vulkan-drivers): {e}; adapters: {:?}", gpu::adapters())
    }))
}

#[test]
fn flat_grey_frame() {
    let frames = [flat(64, 48, 128), flat(64, 48, 128)];
    let a = cpu_luma(&frames, 64, 48);
    assert_eq!(a[0].luma_mean, 128.0);
    assert_eq!(a[0].luma_stddev, 0.0);
    assert_eq!(a[0].sharpness, 0.0);
    assert_eq!(a[0].histogram[128], 64 * 48);
    assert_eq!((a[1].motion, a[1].scene_change), (0.0, 0.0));
    assert_eq!(a[1].label, Label::Static);
    assert!(a[1].rois.is_empty());
}

#[test]
fn dark_still_frame_is_dark() {
    let a = run(
        Box::new(cpu::CpuBackend::new()),
        &[flat(32, 32, 10)],
        32,
        32,
        Layout::Luma,
        0,
    );
    assert_eq!(a[0].label, Label::Dark);
}

#[test]
fn moving_square_gives_one_roi_where_it_moved() {
    let frames = [square(96, 64, 16, 16, 16), square(96, 64, 32, 16, 16)];
    let a = cpu_luma(&frames, 96, 64);
    assert_eq!(a[1].label, Label::Motion);
    // The blocks it left and the blocks it entered: one region covering both.
    assert_eq!(
        a[1].rois,
        vec![Rect {
            x: 16,
            y: 16,
            width: 32,
            height: 16
        }]
    );
    assert!((a[1].motion - 2.0 / 24.0).abs() < 1e-12);
    assert!(a[1].sharpness > 0.0);
}

#[test]
fn cut_between_two_patterns_is_a_scene_cut() {
    let frames = [flat(40, 30, 20), flat(40, 30, 220)];
    let a = cpu_luma(&frames, 40, 30);
    assert_eq!(a[1].scene_change, 1.0);
    assert_eq!(a[1].label, Label::SceneCut);
}

#[test]
fn reset_forgets_the_previous_frame() {
    let mut analyzer = Analyzer::new(Box::new(cpu::CpuBackend::new()));
    let (a, b) = (flat(16, 16, 20), flat(16, 16, 220));
    analyzer
        .analyze(&plane(&a, 16, 16, 16, Layout::Luma), &Params::default())
        .unwrap();
    analyzer.reset();
    let second = analyzer
        .analyze(&plane(&b, 16, 16, 16, Layout::Luma), &Params::default())
        .unwrap();
    assert_eq!((second.scene_change, second.motion), (0.0, 0.0));
}

#[test]
fn short_plane_is_an_error_not_a_panic() {
    let mut analyzer = Analyzer::new(Box::new(cpu::CpuBackend::new()));
    let data = vec![0u8; 10];
    let err = analyzer
        .analyze(&plane(&data, 16, 16, 16, Layout::Luma), &Params::default())
        .unwrap_err();
    assert!(err.contains("bytes"), "{err}");
}

#[test]
fn gpu_and_cpu_agree_exactly_on_every_layout() {
    // Odd sizes and padded rows; the GPU runs all frames on one device. 70×150 has two
    // strips of rows on lavapipe. Luma rows of 37 + 11 bytes are uploaded as they are
    // (whole 16-pixel texels, the padding read and masked); other strides are repacked.
    for (w, h) in [(37, 23), (70, 150)] {
        let frames = [
            noise(w, h, 1),
            noise(w, h, 2),
            square(w, h, 5, 3, 9),
            flat(w, h, 200),
        ];
        for (name, layout) in layouts() {
            for pad in [0, 3, 11] {
                let cpu = run(Box::new(cpu::CpuBackend::new()), &frames, w, h, layout, pad);
                let gpu = run(gpu(), &frames, w, h, layout, pad);
                assert_eq!(cpu, gpu, "{name}, {w}x{h}, pad {pad}");
            }
        }
    }
}

#[test]
fn gpu_and_cpu_agree_however_the_work_is_cut() {
    // The cut a GPU gets (workgroups of 64, strips of 64 rows), lavapipe's (8, 128), and
    // small strips; frames wider than a workgroup of texels, several strips, block sizes
    // that do and do not divide 16, planes that end right after the last row's pixels.
    let tunings = [
        None,
        Some(gpu::Tuning {
            workgroup: 64,
            strip_rows: 64,
        }),
        Some(gpu::Tuning {
            workgroup: 8,
            strip_rows: 128,
        }),
        Some(gpu::Tuning {
            workgroup: 16,
            strip_rows: 5,
        }),
    ];
    let cases = [(1100, 70), (300, 333)];
    for tuning in tunings {
        for (w, h) in cases {
            let frames = [noise(w, h, 3), noise(w, h, 4), square(w, h, 50, 20, 33)];
            for (name, layout) in [layouts()[0], layouts()[3]] {
                for block in [4, 12, 16, 40] {
                    for short in [false, true] {
                        let params = Params {
                            block_size: block,
                            ..Params::default()
                        };
                        let pad = 16;
                        let cpu = run_with(
                            Box::new(cpu::CpuBackend::new()),
                            &frames,
                            w,
                            h,
                            layout,
                            pad,
                            &params,
                            short,
                        );
                        let gpu = run_with(
                            gpu_tuned(tuning),
                            &frames,
                            w,
                            h,
                            layout,
                            pad,
                            &params,
                            short,
                        );
                        assert_eq!(
                            cpu, gpu,
                            "{tuning:?}, {name}, {w}x{h}, block {block}, short {short}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn block_sizes_are_kept_within_4_and_1024() {
    let frames = [square(64, 32, 0, 0, 8), square(64, 32, 8, 0, 8)];
    let analyse = |block_size| {
        run_with(
            Box::new(cpu::CpuBackend::new()),
            &frames,
            64,
            32,
            Layout::Luma,
            0,
            &Params {
                block_size,
                ..Params::default()
            },
            false,
        )
    };
    assert_eq!(analyse(1), analyse(4));
    assert_eq!(analyse(5000), analyse(1024));
    // Blocks of 4: the square's move is one region from its old place to its new one.
    assert_eq!(
        analyse(1)[1].rois,
        vec![Rect {
            x: 0,
            y: 0,
            width: 16,
            height: 8
        }]
    );
}

#[test]
fn gpu_known_answers() {
    let frames = [
        square(96, 64, 16, 16, 16),
        square(96, 64, 32, 16, 16),
        flat(96, 64, 128),
    ];
    let a = run(gpu(), &frames, 96, 64, Layout::Luma, 0);
    assert_eq!(
        a[1].rois,
        vec![Rect {
            x: 16,
            y: 16,
            width: 32,
            height: 16
        }]
    );
    assert_eq!(a[1].label, Label::Motion);
    assert_eq!(a[2].luma_mean, 128.0);
    assert_eq!(a[2].label, Label::SceneCut);
}

type MakeBackend = fn() -> Box<dyn Backend>;

/// BT.601 luma in 8-bit fixed point, written out here rather than taken from the code under
/// test: 0.299 R + 0.587 G + 0.114 B with weights 77, 150 and 29 (of 256), rounded.
fn bt601(r: u8, g: u8, b: u8) -> u8 {
    ((77 * u32::from(r) + 150 * u32::from(g) + 29 * u32::from(b) + 128) / 256) as u8
}

#[test]
fn coloured_packed_frames_give_the_luma_of_their_colours() {
    // Every pixel a different colour (R, G and B drawn apart), so that a swapped channel in
    // a layout or in the shader's weights changes the luma of almost every pixel.
    let (w, h) = (53, 41);
    let colours: Vec<Vec<[u8; 3]>> = (1..=3u64)
        .map(|seed| {
            let (r, g, b) = (
                noise(w, h, seed),
                noise(w, h, seed + 10),
                noise(w, h, seed + 20),
            );
            (0..(w * h) as usize).map(|i| [r[i], g[i], b[i]]).collect()
        })
        .collect();
    let luma: Vec<Vec<u8>> = colours
        .iter()
        .map(|frame| frame.iter().map(|&[r, g, b]| bt601(r, g, b)).collect())
        .collect();
    // A swap would show: R and B differ in most pixels, so their lumas do too.
    let swapped: Vec<u8> = colours[0].iter().map(|&[r, g, b]| bt601(b, g, r)).collect();
    assert!(swapped.iter().zip(&luma[0]).filter(|(a, b)| a != b).count() > (w * h / 2) as usize);
    let expected = cpu_luma(&luma, w, h);
    for (name, layout) in layouts() {
        let Layout::Packed {
            bytes_per_pixel,
            r,
            g,
            b,
        } = layout
        else {
            continue;
        };
        for pad in [0, 5] {
            let stride = w * bytes_per_pixel + pad;
            let planes: Vec<Vec<u8>> = colours
                .iter()
                .map(|frame| {
                    let mut data = vec![0x5A; (stride * h) as usize];
                    for y in 0..h {
                        for x in 0..w {
                            let [cr, cg, cb] = frame[(y * w + x) as usize];
                            let o = (y * stride + x * bytes_per_pixel) as usize;
                            data[o + r as usize] = cr;
                            data[o + g as usize] = cg;
                            data[o + b as usize] = cb;
                        }
                    }
                    data
                })
                .collect();
            let backends: [(&str, MakeBackend); 2] =
                [("cpu", || Box::new(cpu::CpuBackend::new())), ("gpu", gpu)];
            for (backend, make) in backends {
                let mut analyzer = Analyzer::new(make());
                let got: Vec<Analysis> = planes
                    .iter()
                    .map(|data| {
                        analyzer
                            .analyze(&plane(data, w, h, stride, layout), &Params::default())
                            .unwrap()
                    })
                    .collect();
                assert_eq!(got, expected, "{name} on {backend}, pad {pad}");
            }
        }
    }
}

#[test]
fn rgb_luma_weights() {
    assert_eq!(rgb_luma(255, 255, 255), 255);
    assert_eq!(rgb_luma(0, 0, 0), 0);
    assert_eq!(rgb_luma(128, 128, 128), 128);
    assert_eq!(rgb_luma(255, 0, 0), 77);
    assert_eq!(rgb_luma(0, 255, 0), 149);
    assert_eq!(rgb_luma(0, 0, 255), 29);
}

#[test]
fn backends_opened_on_several_threads_at_once_all_measure() {
    // Elements start on several threads at once, and so do these tests: the Vulkan loader
    // must not see instances created concurrently (one CI run crashed with SIGSEGV within a
    // second of two GPU tests starting together; it did not reproduce here). The backends
    // are opened together, behind a barrier, and each measures as the CPU does.
    let (w, h) = (64, 48);
    let frames = [noise(w, h, 7), square(w, h, 20, 10, 9)];
    let expected = run(
        Box::new(cpu::CpuBackend::new()),
        &frames,
        w,
        h,
        Layout::Luma,
        0,
    );
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (barrier, frames) = (barrier.clone(), frames.clone());
            std::thread::spawn(move || {
                barrier.wait();
                run(gpu(), &frames, w, h, Layout::Luma, 0)
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().expect("a GPU thread panicked"), expected);
    }
}
