//! The CPU twin of the GPU shaders: the same integer measurements, single-threaded.

use super::{Backend, Layout, Measurements, Plane, block_grid, rgb_luma};

/// Keeps the previous frame's luma plane for motion.
#[derive(Default)]
pub struct CpuBackend {
    luma: Vec<u8>,
    previous: Vec<u8>,
    previous_size: Option<(u32, u32)>,
}

impl CpuBackend {
    pub fn new() -> Self {
        Self::default()
    }
}

/// Fills `out` with the plane's luma, `width * height` bytes, row by row.
pub fn extract_luma(plane: &Plane<'_>, out: &mut Vec<u8>) {
    let (w, h, stride) = (
        plane.width as usize,
        plane.height as usize,
        plane.stride as usize,
    );
    out.clear();
    out.reserve(w * h);
    for y in 0..h {
        let row = &plane.data[y * stride..];
        match plane.layout {
            Layout::Luma => out.extend_from_slice(&row[..w]),
            Layout::Packed {
                bytes_per_pixel,
                r,
                g,
                b,
            } => {
                let (bpp, r, g, b) = (bytes_per_pixel as usize, r as usize, g as usize, b as usize);
                out.extend(
                    row.chunks_exact(bpp)
                        .take(w)
                        .map(|p| rgb_luma(p[r], p[g], p[b])),
                );
            }
        }
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &str {
        "cpu"
    }

    fn measure(&mut self, plane: &Plane<'_>, block_size: u32) -> Result<Measurements, String> {
        let (w, h) = (plane.width as usize, plane.height as usize);
        extract_luma(plane, &mut self.luma);
        let luma = &self.luma;

        let mut histogram = [0u32; 256];
        for &l in luma {
            histogram[l as usize] += 1;
        }

        let (mut sum, mut sum_sq, mut count) = (0i64, 0u64, 0u64);
        for y in 1..h.saturating_sub(1) {
            for x in 1..w.saturating_sub(1) {
                let i = y * w + x;
                let l = 4 * luma[i] as i64
                    - luma[i - 1] as i64
                    - luma[i + 1] as i64
                    - luma[i - w] as i64
                    - luma[i + w] as i64;
                sum += l;
                sum_sq += (l * l) as u64;
                count += 1;
            }
        }

        let (blocks_x, blocks_y) = block_grid(plane.width, plane.height, block_size);
        let block_sad = (self.previous_size == Some((plane.width, plane.height))).then(|| {
            let bs = block_size as usize;
            let mut sad = vec![0u32; (blocks_x * blocks_y) as usize];
            for y in 0..h {
                let row = (y / bs) * blocks_x as usize;
                for x in 0..w {
                    let i = y * w + x;
                    sad[row + x / bs] += luma[i].abs_diff(self.previous[i]) as u32;
                }
            }
            sad
        });

        std::mem::swap(&mut self.luma, &mut self.previous);
        self.previous_size = Some((plane.width, plane.height));
        Ok(Measurements {
            histogram,
            laplacian_sum: sum,
            laplacian_sum_sq: sum_sq,
            laplacian_count: count,
            block_sad,
            blocks_x,
            blocks_y,
        })
    }

    fn reset(&mut self) {
        self.previous_size = None;
    }
}
