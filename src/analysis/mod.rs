//! The analysis pass of `frameanalyzer`, free of GStreamer: per-frame luma statistics, a
//! luma histogram, block motion against the previous frame, a scene-change score, sharpness
//! (variance of the Laplacian) and a label.
//!
//! Two backends produce the same integer [`Measurements`]: [`gpu::GpuBackend`] (WGSL compute
//! shaders through wgpu) and [`cpu::CpuBackend`]. Everything after that — means, variances,
//! distances, regions, the label — is computed once, here, from those integers, so both
//! backends give the same numbers exactly: luma is an 8-bit integer function of the pixel
//! (BT.601 weights 77/150/29 over 256), and every sum is an exact integer sum.

pub mod cpu;
pub mod gpu;
mod regions;

pub use regions::Rect;

/// How the luma of a pixel is read from the frame's first plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One byte per pixel is luma (the Y plane of I420 and NV12, GRAY8).
    Luma,
    /// Packed RGB: `bytes_per_pixel` bytes per pixel, with R, G and B at these offsets.
    Packed {
        bytes_per_pixel: u32,
        r: u32,
        g: u32,
        b: u32,
    },
}

/// A frame's first plane.
#[derive(Clone, Copy, Debug)]
pub struct Plane<'a> {
    pub data: &'a [u8],
    pub width: u32,
    pub height: u32,
    /// Bytes from one row to the next.
    pub stride: u32,
    pub layout: Layout,
}

impl Plane<'_> {
    /// Checks that the plane holds `height` rows of `width` pixels.
    pub fn validate(&self) -> Result<(), String> {
        let bpp = match self.layout {
            Layout::Luma => 1,
            Layout::Packed {
                bytes_per_pixel,
                r,
                g,
                b,
            } => {
                if r.max(g).max(b) >= bytes_per_pixel {
                    return Err("channel offset outside the pixel".into());
                }
                bytes_per_pixel
            }
        };
        if self.width == 0 || self.height == 0 {
            return Err(format!("empty frame {}x{}", self.width, self.height));
        }
        let row = self.width as u64 * bpp as u64;
        if (self.stride as u64) < row {
            return Err(format!(
                "stride {} shorter than a row of {row} bytes",
                self.stride
            ));
        }
        let needed = self.stride as u64 * (self.height as u64 - 1) + row;
        if (self.data.len() as u64) < needed {
            return Err(format!(
                "plane has {} bytes, {needed} needed",
                self.data.len()
            ));
        }
        Ok(())
    }
}

/// Luma of one pixel from its R, G, B bytes: BT.601 weights in 8-bit fixed point.
#[inline]
pub fn rgb_luma(r: u8, g: u8, b: u8) -> u8 {
    ((77 * r as u32 + 150 * g as u32 + 29 * b as u32 + 128) >> 8) as u8
}

/// Tunables of the analysis.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    /// Side of a motion block, in pixels; taken as at least 4 and at most 1024 (see
    /// [`Params::block`]).
    pub block_size: u32,
    /// A block moves when its mean absolute luma difference exceeds this.
    pub motion_threshold: f64,
    /// A scene change score at or above this labels the frame `scene-cut`.
    pub scene_threshold: f64,
    /// A mean luma below this labels a still frame `dark`.
    pub dark_threshold: f64,
    /// The most motion regions reported.
    pub max_rois: usize,
}

impl Params {
    /// The block side used: `block_size` within 4..=1024. Both backends sum the motion of
    /// four pixels side by side at once, which touch at most two blocks of 4 or more.
    pub fn block(&self) -> u32 {
        self.block_size.clamp(4, 1024)
    }
}

impl Default for Params {
    fn default() -> Self {
        Params {
            block_size: 16,
            motion_threshold: 10.0,
            scene_threshold: 0.5,
            dark_threshold: 40.0,
            max_rois: 8,
        }
    }
}

/// The exact integer results of one frame, as a backend produces them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Measurements {
    pub histogram: [u32; 256],
    /// Sum and sum of squares of the 4-neighbour Laplacian over interior pixels.
    pub laplacian_sum: i64,
    pub laplacian_sum_sq: u64,
    pub laplacian_count: u64,
    /// Sum of absolute luma differences to the previous frame per block, row by row;
    /// `None` for the first frame (or after a reset or a size change).
    pub block_sad: Option<Vec<u32>>,
    pub blocks_x: u32,
    pub blocks_y: u32,
}

/// The label of a frame, by priority: a scene cut, else motion, else dark, else static.
pub use crate::meta::AnalysisLabel as Label;

/// What the analysis found in a frame.
#[derive(Clone, Debug, PartialEq)]
pub struct Analysis {
    pub luma_mean: f64,
    pub luma_stddev: f64,
    pub histogram: [u32; 256],
    /// Fraction of blocks that moved, 0..1.
    pub motion: f64,
    /// Half the L1 distance between this and the previous normalized histogram, 0..1.
    pub scene_change: f64,
    /// Variance of the Laplacian.
    pub sharpness: f64,
    pub label: Label,
    /// Moving regions, in pixels, at most `max_rois`.
    pub rois: Vec<Rect>,
}

/// A source of [`Measurements`]: keeps the previous frame's luma for motion.
pub trait Backend: Send {
    /// `cpu`, or the wgpu adapter's name.
    fn name(&self) -> &str;
    fn measure(&mut self, plane: &Plane<'_>, block_size: u32) -> Result<Measurements, String>;
    /// Forgets the previous frame.
    fn reset(&mut self);
}

/// A backend plus what the analysis keeps between frames.
pub struct Analyzer {
    backend: Box<dyn Backend>,
    previous_histogram: Option<[u32; 256]>,
}

impl Analyzer {
    pub fn new(backend: Box<dyn Backend>) -> Self {
        Analyzer {
            backend,
            previous_histogram: None,
        }
    }

    pub fn backend_name(&self) -> &str {
        self.backend.name()
    }

    /// Forgets the previous frame: the next one has no motion and no scene change.
    pub fn reset(&mut self) {
        self.backend.reset();
        self.previous_histogram = None;
    }

    pub fn analyze(&mut self, plane: &Plane<'_>, params: &Params) -> Result<Analysis, String> {
        plane.validate()?;
        let m = self.backend.measure(plane, params.block())?;
        let analysis = summarize(
            &m,
            self.previous_histogram.as_ref(),
            params,
            plane.width,
            plane.height,
        );
        self.previous_histogram = Some(m.histogram);
        Ok(analysis)
    }
}

/// Everything after the measurements, shared by both backends.
pub fn summarize(
    m: &Measurements,
    previous_histogram: Option<&[u32; 256]>,
    params: &Params,
    width: u32,
    height: u32,
) -> Analysis {
    let pixels: u64 = m.histogram.iter().map(|&c| c as u64).sum();
    let n = pixels.max(1) as f64;
    let sum: u64 = m
        .histogram
        .iter()
        .enumerate()
        .map(|(v, &c)| v as u64 * c as u64)
        .sum();
    let sum_sq: u64 = m
        .histogram
        .iter()
        .enumerate()
        .map(|(v, &c)| (v * v) as u64 * c as u64)
        .sum();
    let luma_mean = sum as f64 / n;
    let luma_stddev = (sum_sq as f64 / n - luma_mean * luma_mean).max(0.0).sqrt();

    let sharpness = if m.laplacian_count > 0 {
        let c = m.laplacian_count as f64;
        let mean = m.laplacian_sum as f64 / c;
        (m.laplacian_sum_sq as f64 / c - mean * mean).max(0.0)
    } else {
        0.0
    };

    let scene_change = previous_histogram.map_or(0.0, |prev| {
        let np = prev.iter().map(|&c| c as u64).sum::<u64>().max(1) as f64;
        0.5 * m
            .histogram
            .iter()
            .zip(prev.iter())
            .map(|(&a, &b)| (a as f64 / n - b as f64 / np).abs())
            .sum::<f64>()
    });

    let block = params.block();
    let (moving, motion) = match &m.block_sad {
        Some(sad) => {
            let moving: Vec<bool> = sad
                .iter()
                .enumerate()
                .map(|(i, &s)| {
                    let (bx, by) = (i as u32 % m.blocks_x, i as u32 / m.blocks_x);
                    let bw = block.min(width - bx * block);
                    let bh = block.min(height - by * block);
                    s as f64 / (bw * bh) as f64 > params.motion_threshold
                })
                .collect();
            let fraction =
                moving.iter().filter(|&&b| b).count() as f64 / moving.len().max(1) as f64;
            (moving, fraction)
        }
        None => (Vec::new(), 0.0),
    };
    let rois = regions::merge_moving_blocks(
        &moving,
        m.blocks_x,
        m.blocks_y,
        block,
        width,
        height,
        params.max_rois,
    );

    let label = if previous_histogram.is_some() && scene_change >= params.scene_threshold {
        Label::SceneCut
    } else if motion > 0.0 {
        Label::Motion
    } else if luma_mean < params.dark_threshold {
        Label::Dark
    } else {
        Label::Static
    };

    Analysis {
        luma_mean,
        luma_stddev,
        histogram: m.histogram,
        motion,
        scene_change,
        sharpness,
        label,
        rois,
    }
}

/// Blocks of `block` pixels covering `width` × `height`.
pub fn block_grid(width: u32, height: u32, block: u32) -> (u32, u32) {
    (width.div_ceil(block), height.div_ceil(block))
}

#[cfg(test)]
mod tests;
