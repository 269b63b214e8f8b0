//! The GPU backend: WGSL compute shaders (`analysis.wgsl`) run through wgpu.
//!
//! The adapter, device and pipelines are created once, when the backend is; buffers and bind
//! groups once per frame size, then reused: a frame costs one upload, one submission of
//! three dispatches, and one small readback, with no allocation or shader compile.

use std::sync::{Arc, Mutex, mpsc};

use super::{Backend, Layout, Measurements, Plane, block_grid};

const WORKGROUP: u32 = 64;
/// Interior rows per invocation of the `edges` pass.
const EDGE_STRIP: u32 = 64;
const HISTOGRAM_BYTES: u64 = 256 * 4;

/// The shader's `Params`, laid out as in WGSL (twelve u32).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Params {
    width: u32,
    height: u32,
    stride: u32,
    bytes_per_pixel: u32,
    r: u32,
    g: u32,
    b: u32,
    packed: u32,
    block: u32,
    blocks_y: u32,
    /// Columns of 4 pixels: words per row of packed luma, and invocations per pass.
    pitch: u32,
    /// Rows per invocation of the `edges` pass: frames are cut into strips of this many
    /// interior rows, so that there are workgroups enough for every CPU thread of a
    /// software rasterizer.
    strip: u32,
    /// Rows per invocation of the `columns` pass: whole block rows, about `EDGE_STRIP`.
    column_strip: u32,
}

impl Params {
    /// Strips of the `edges` pass (at least one, even without interior rows).
    fn strips(&self) -> u32 {
        self.height.saturating_sub(2).div_ceil(self.strip).max(1)
    }

    /// Strips of the `columns` pass.
    fn column_strips(&self) -> u32 {
        self.height.div_ceil(self.column_strip).max(1)
    }

    fn bytes(&self) -> [u8; 64] {
        let words = [
            self.width,
            self.height,
            self.stride,
            self.bytes_per_pixel,
            self.r,
            self.g,
            self.b,
            self.packed,
            self.block,
            self.blocks_y,
            self.pitch,
            self.strip,
            self.column_strip,
            0,
            0,
            0,
        ];
        let mut out = [0u8; 64];
        for (chunk, w) in out.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        out
    }
}

/// Buffers and bind groups for one frame size and layout.
struct Sized {
    params: Params,
    frame: wgpu::Buffer,
    histogram: wgpu::Buffer,
    laplacian: wgpu::Buffer,
    laplacian_bytes: u64,
    sad: wgpu::Buffer,
    sad_bytes: u64,
    readback: wgpu::Buffer,
    /// `bind_groups[k]` writes luma buffer k and reads the other as the previous frame.
    bind_groups: [wgpu::BindGroup; 2],
    current: usize,
    has_previous: bool,
    /// Workgroups per pass: one invocation per column of four pixels.
    groups: u32,
    blocks: (u32, u32),
}

pub struct GpuBackend {
    name: String,
    device: wgpu::Device,
    queue: wgpu::Queue,
    layout: wgpu::BindGroupLayout,
    columns: wgpu::ComputePipeline,
    edges: wgpu::ComputePipeline,
    sized: Option<Sized>,
    /// Upload staging for planes whose length is not a multiple of 4 bytes.
    scratch: Vec<u8>,
    /// Errors wgpu reports outside a call's result (validation, device loss).
    errors: Arc<Mutex<Vec<String>>>,
}

/// Names of the wgpu adapters this machine offers (Vulkan), for diagnostics.
pub fn adapters() -> Vec<String> {
    let instance = instance();
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::VULKAN))
        .into_iter()
        .map(|a| {
            let info = a.get_info();
            format!("{} ({:?})", info.name, info.device_type)
        })
        .collect()
}

fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::VULKAN;
    wgpu::Instance::new(desc)
}

fn storage_entry(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

impl GpuBackend {
    /// Picks an adapter (a discrete or integrated GPU first; a software one such as lavapipe
    /// when that is all there is) and builds the pipelines. Fails when there is none.
    pub fn new() -> Result<GpuBackend, String> {
        let instance = instance();
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            compatible_surface: None,
            ..Default::default()
        }))
        .map_err(|e| format!("no wgpu adapter: {e}"))?;
        let info = adapter.get_info();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("frameanalyzer"),
            required_limits: adapter.limits(),
            ..Default::default()
        }))
        .map_err(|e| format!("wgpu device on {}: {e}", info.name))?;
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(e.to_string());
        }));

        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("analysis.wgsl"),
            source: wgpu::ShaderSource::Wgsl(include_str!("analysis.wgsl").into()),
        });
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("analysis"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                },
                storage_entry(1, true),
                storage_entry(2, false),
                storage_entry(3, true),
                storage_entry(4, false),
                storage_entry(5, false),
                storage_entry(6, false),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("analysis"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = |entry: &str| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let backend = GpuBackend {
            name: info.name.clone(),
            columns: pipeline("columns"),
            edges: pipeline("edges"),

            device,
            queue,
            layout,
            sized: None,
            scratch: Vec::new(),
            errors,
        };
        backend.take_error()?;
        Ok(backend)
    }

    fn take_error(&self) -> Result<(), String> {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        match errors.drain(..).next() {
            Some(e) => Err(format!("wgpu: {e}")),
            None => Ok(()),
        }
    }

    fn params_for(plane: &Plane<'_>, block: u32) -> Params {
        let (bytes_per_pixel, r, g, b, packed) = match plane.layout {
            Layout::Luma => (1, 0, 0, 0, 0),
            Layout::Packed {
                bytes_per_pixel,
                r,
                g,
                b,
            } => (bytes_per_pixel, r, g, b, 1),
        };
        Params {
            width: plane.width,
            height: plane.height,
            stride: plane.stride,
            bytes_per_pixel,
            r,
            g,
            b,
            packed,
            block,
            blocks_y: block_grid(plane.width, plane.height, block).1,
            pitch: plane.width.div_ceil(4),
            strip: EDGE_STRIP,
            column_strip: block * EDGE_STRIP.div_ceil(block),
        }
    }

    fn create_sized(&self, params: Params, frame_bytes: u64) -> Sized {
        let d = &self.device;
        let buffer = |label: &str, size: u64, usage: wgpu::BufferUsages| {
            d.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: size.max(4),
                usage,
                mapped_at_creation: false,
            })
        };
        let storage = wgpu::BufferUsages::STORAGE;
        let luma_bytes = params.pitch as u64 * params.height as u64 * 4;
        let groups = params.pitch.div_ceil(WORKGROUP);
        let blocks = block_grid(params.width, params.height, params.block);
        // Per column: Laplacian sum and sum of squares (two words); per column and block
        // row: the SAD of the (at most two) blocks the column touches.
        let laplacian_bytes = params.pitch as u64 * params.strips() as u64 * 3 * 4;
        let sad_bytes = params.blocks_y as u64 * params.pitch as u64 * 2 * 4;

        let uniform = buffer(
            "params",
            64,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        );
        self.queue.write_buffer(&uniform, 0, &params.bytes());
        let frame = buffer("frame", frame_bytes, storage | wgpu::BufferUsages::COPY_DST);
        let luma = [
            buffer("luma 0", luma_bytes, storage),
            buffer("luma 1", luma_bytes, storage),
        ];
        let histogram = buffer(
            "histogram",
            HISTOGRAM_BYTES,
            storage | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        );
        let laplacian = buffer(
            "laplacian",
            laplacian_bytes,
            storage | wgpu::BufferUsages::COPY_SRC,
        );
        let sad = buffer("sad", sad_bytes, storage | wgpu::BufferUsages::COPY_SRC);
        let readback = buffer(
            "readback",
            HISTOGRAM_BYTES + laplacian_bytes + sad_bytes,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        );
        fn entry(binding: u32, buffer: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
            wgpu::BindGroupEntry {
                binding,
                resource: buffer.as_entire_binding(),
            }
        }
        let bind_group = |current: usize| {
            d.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("analysis"),
                layout: &self.layout,
                entries: &[
                    entry(0, &uniform),
                    entry(1, &frame),
                    entry(2, &luma[current]),
                    entry(3, &luma[1 - current]),
                    entry(4, &histogram),
                    entry(5, &laplacian),
                    entry(6, &sad),
                ],
            })
        };
        let bind_groups = [bind_group(0), bind_group(1)];
        Sized {
            params,
            frame,
            histogram,
            laplacian,
            laplacian_bytes,
            sad,
            sad_bytes,
            readback,
            bind_groups,
            current: 0,
            has_previous: false,
            groups,
            blocks,
        }
    }
}

impl Backend for GpuBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn measure(&mut self, plane: &Plane<'_>, block_size: u32) -> Result<Measurements, String> {
        let params = Self::params_for(plane, block_size);
        let row = plane.width as u64 * params.bytes_per_pixel as u64;
        let needed = plane.stride as u64 * (plane.height as u64 - 1) + row;
        let frame_bytes = needed.div_ceil(4) * 4;
        if self.sized.as_ref().is_none_or(|s| s.params != params) {
            self.sized = Some(self.create_sized(params, frame_bytes));
        }
        let s = self.sized.as_mut().expect("created above");

        // Upload: straight from the frame when it is long enough, else through padded scratch.
        if plane.data.len() as u64 >= frame_bytes {
            self.queue
                .write_buffer(&s.frame, 0, &plane.data[..frame_bytes as usize]);
        } else {
            self.scratch.clear();
            self.scratch
                .extend_from_slice(&plane.data[..needed as usize]);
            self.scratch.resize(frame_bytes as usize, 0);
            self.queue.write_buffer(&s.frame, 0, &self.scratch);
        }

        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("analysis"),
            });
        encoder.clear_buffer(&s.histogram, 0, None);
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("analysis"),
                timestamp_writes: None,
            });
            pass.set_bind_group(0, &s.bind_groups[s.current], &[]);
            pass.set_pipeline(&self.columns);
            pass.dispatch_workgroups(s.groups, s.params.column_strips(), 1);
            pass.set_pipeline(&self.edges);
            pass.dispatch_workgroups(s.groups, s.params.strips(), 1);
        }
        encoder.copy_buffer_to_buffer(&s.histogram, 0, &s.readback, 0, HISTOGRAM_BYTES);
        encoder.copy_buffer_to_buffer(
            &s.laplacian,
            0,
            &s.readback,
            HISTOGRAM_BYTES,
            s.laplacian_bytes,
        );
        if s.has_previous {
            encoder.copy_buffer_to_buffer(
                &s.sad,
                0,
                &s.readback,
                HISTOGRAM_BYTES + s.laplacian_bytes,
                s.sad_bytes,
            );
        }
        let params = s.params;
        self.queue.submit([encoder.finish()]);

        let (tx, rx) = mpsc::sync_channel(1);
        s.readback.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| format!("wgpu poll: {e}"))?;
        rx.recv()
            .map_err(|_| "wgpu dropped the readback".to_string())?
            .map_err(|e| format!("wgpu readback: {e}"))?;

        let mut histogram = [0u32; 256];
        let (mut sum, mut sum_sq) = (0i64, 0u64);
        let (blocks_x, blocks_y) = s.blocks;
        let block_sad = {
            let view = s
                .readback
                .get_mapped_range(..)
                .map_err(|e| format!("wgpu readback: {e:?}"))?;
            let mut words = view
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
            for (bin, w) in histogram.iter_mut().zip(words.by_ref()) {
                *bin = w;
            }
            for _ in 0..params.pitch * params.strips() {
                let mut next = || words.next().unwrap_or(0);
                let (partial_sum, lo, hi) = (next(), next(), next());
                sum += partial_sum as i32 as i64;
                sum_sq += (hi as u64) << 32 | lo as u64;
            }
            // Per block row and column: the SADs of the blocks of its first and last pixel.
            s.has_previous.then(|| {
                let mut sad = vec![0u32; (blocks_x * blocks_y) as usize];
                for by in 0..params.blocks_y {
                    for c in 0..params.pitch {
                        let (a, b) = (words.next().unwrap_or(0), words.next().unwrap_or(0));
                        let first = 4 * c;
                        let last = (4 * c + 3).min(params.width - 1);
                        let row = (by * blocks_x) as usize;
                        sad[row + (first / params.block) as usize] += a;
                        if last / params.block != first / params.block {
                            sad[row + (last / params.block) as usize] += b;
                        }
                    }
                }
                sad
            })
        };
        s.readback.unmap();
        let interior = |n: u32| n.saturating_sub(2) as u64;
        s.current = 1 - s.current;
        s.has_previous = true;
        self.take_error()?;
        Ok(Measurements {
            histogram,
            laplacian_sum: sum,
            laplacian_sum_sq: sum_sq,
            laplacian_count: interior(plane.width) * interior(plane.height),
            block_sad,
            blocks_x,
            blocks_y,
        })
    }

    fn reset(&mut self) {
        if let Some(s) = self.sized.as_mut() {
            s.has_previous = false;
        }
    }
}
