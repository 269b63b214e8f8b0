//! The GPU backend: WGSL compute shaders (`analysis.wgsl`) run through wgpu.
//!
//! The adapter, device and pipelines are created once, when the backend is; textures, buffers
//! and bind groups once per frame size and layout, then reused: a frame costs one upload, one
//! submission (the `analyze` dispatch, after the `packed_luma` one for packed RGB, which
//! writes the luma texture as a storage texture) and one small readback, with no allocation
//! or shader compile.
//!
//! Luma lives in two `rgba32uint` textures (16 pixels per texel) used in turn as the current
//! and the previous frame. A one-byte-per-pixel plane is written straight into the current
//! one (through a repacking copy when its stride is not a multiple of 16 bytes or the plane
//! ends short of a whole last texel); packed RGB is uploaded into a texture of its own rows
//! (likewise) and converted by `packed_luma`.
//!
//! Why textures: software Vulkan (lavapipe, what CI and GPU-less machines have) runs
//! invocations as SIMD lanes and loads storage buffers lane by lane with a bounds check
//! each, but fetches texels a vector at a time. Storage buffers here only take results, once
//! per strip or block row.

use std::sync::{Arc, LazyLock, Mutex, mpsc};
use std::time::Duration;

use super::{Backend, Layout, Measurements, Plane, block_grid};

/// Most rows in a strip of `analyze`: its per-invocation histogram counts 16 pixels a row in
/// 16 bits.
const MAX_STRIP: u32 = 4095;
const HISTOGRAM_BYTES: u64 = 256 * 4;

/// The shader's `Params`, laid out as in WGSL (sixteen u32).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Params {
    width: u32,
    height: u32,
    /// Columns of 4 pixels: texels per row of luma, and invocations per row of a pass.
    pitch: u32,
    block: u32,
    /// Rows per invocation of `analyze`: whole block rows.
    strip: u32,
    /// Packed RGB only (0 for luma planes): bytes per pixel and channel offsets.
    bytes_per_pixel: u32,
    r: u32,
    g: u32,
    b: u32,
    /// Texels (16 pixels) per row of the luma textures, and invocations per row of `analyze`.
    texels: u32,
}

impl Params {
    /// Strips of the `analyze` pass.
    fn strips(&self) -> u32 {
        self.height.div_ceil(self.strip)
    }

    fn bytes(&self) -> [u8; 64] {
        let words = [
            self.width,
            self.height,
            self.pitch,
            self.block,
            self.strip,
            self.bytes_per_pixel,
            self.r,
            self.g,
            self.b,
            self.texels,
        ];
        let mut out = [0u8; 64];
        for (chunk, w) in out.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        out
    }
}

/// What a packed RGB frame needs besides the luma textures.
struct PackedInput {
    /// The frame's rows, as rgba32uint texels (16 bytes each).
    frame: wgpu::Texture,
    /// Bytes per row of that texture: the row rounded up to a texel.
    row_bytes: u32,
    /// `bind_groups[k]` has `packed_luma` write luma texture k.
    bind_groups: [wgpu::BindGroup; 2],
}

/// Textures, buffers and bind groups for one frame size and layout.
struct Sized {
    params: Params,
    luma: [wgpu::Texture; 2],
    packed: Option<PackedInput>,
    histogram: wgpu::Buffer,
    laplacian: wgpu::Buffer,
    laplacian_bytes: u64,
    sad: wgpu::Buffer,
    sad_bytes: u64,
    readback: wgpu::Buffer,
    /// `bind_groups[k]` reads luma texture k as the current frame, the other as the previous.
    bind_groups: [wgpu::BindGroup; 2],
    current: usize,
    has_previous: bool,
    /// Workgroups per strip of `analyze` and `packed_luma`: one invocation per texel
    /// column (16 pixels).
    groups: u32,
    blocks: (u32, u32),
}

pub struct GpuBackend {
    name: String,
    device: wgpu::Device,
    queue: wgpu::Queue,
    analyze_layout: wgpu::BindGroupLayout,
    packed_layout: wgpu::BindGroupLayout,
    analyze: wgpu::ComputePipeline,
    packed_luma: wgpu::ComputePipeline,
    /// Invocations per workgroup.
    workgroup: u32,
    /// Rows an invocation of `analyze` walks, about (rounded up to whole blocks).
    strip_rows: u32,
    max_texture_side: u32,
    sized: Option<Sized>,
    /// Upload staging for planes whose rows do not start on a word, or that end short.
    scratch: Vec<u8>,
    /// Errors wgpu reports outside a call's result (validation, device loss).
    errors: Arc<Mutex<Vec<String>>>,
    /// How long a frame may take on the device before it counts as wedged.
    wait_timeout: Option<Duration>,
    /// Fault injection for tests (`ORDERED_FAULT_GPU_WEDGED` set when the backend was made):
    /// every frame fails as if the device had not finished it within `wait_timeout`.
    wedged: bool,
}

/// How long [`GpuBackend`] waits for a frame by default.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(2);

/// Names of the wgpu adapters this machine offers (Vulkan), for diagnostics.
pub fn adapters() -> Vec<String> {
    let _opening = OPENING.lock().unwrap_or_else(|p| p.into_inner());
    pollster::block_on(INSTANCE.enumerate_adapters(wgpu::Backends::VULKAN))
        .into_iter()
        .map(|a| {
            let info = a.get_info();
            format!("{} ({:?})", info.name, info.device_type)
        })
        .collect()
}

/// The process's one wgpu instance (one Vulkan instance), made when a backend or the list
/// of adapters is first wanted and kept until the process ends.
///
/// One instance, and adapters and devices opened one at a time ([`OPENING`]): the Vulkan
/// loader loads and initialises its drivers when an instance is created, and instances
/// created on several threads at once can crash the process (wgpu issue 5930). Elements
/// reach `PLAYING` on several threads at once, and so do tests; a lock costs nothing here,
/// as a backend is opened once per element start.
static INSTANCE: LazyLock<wgpu::Instance> = LazyLock::new(|| {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::VULKAN;
    wgpu::Instance::new(desc)
});

/// Held while adapters are listed or one is opened with its device (see [`INSTANCE`]).
static OPENING: Mutex<()> = Mutex::new(());

fn layout_entry(binding: u32, ty: wgpu::BindingType) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty,
        count: None,
    }
}

fn buffer_entry(binding: u32, ty: wgpu::BufferBindingType) -> wgpu::BindGroupLayoutEntry {
    layout_entry(
        binding,
        wgpu::BindingType::Buffer {
            ty,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
    )
}

fn uniform_entry(binding: u32) -> wgpu::BindGroupLayoutEntry {
    buffer_entry(binding, wgpu::BufferBindingType::Uniform)
}

fn storage_entry(binding: u32) -> wgpu::BindGroupLayoutEntry {
    buffer_entry(
        binding,
        wgpu::BufferBindingType::Storage { read_only: false },
    )
}

fn texture_entry(binding: u32) -> wgpu::BindGroupLayoutEntry {
    layout_entry(
        binding,
        wgpu::BindingType::Texture {
            sample_type: wgpu::TextureSampleType::Uint,
            view_dimension: wgpu::TextureViewDimension::D2,
            multisampled: false,
        },
    )
}

/// How the work is cut for an adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tuning {
    /// Invocations per workgroup.
    pub workgroup: u32,
    /// Rows per invocation of `analyze`, about: strips are balanced and made of whole blocks.
    pub strip_rows: u32,
}

impl Tuning {
    /// Software Vulkan (lavapipe) runs a workgroup's invocations as SIMD lanes, 8 at a time,
    /// on a few CPU threads; an invocation's closing histogram flush costs there, so tall
    /// strips, and workgroups of one vector, so that the threads share many of them evenly.
    /// A GPU wants many invocations: short strips, and workgroups of 64.
    fn for_device(device_type: wgpu::DeviceType) -> Tuning {
        match device_type {
            wgpu::DeviceType::Cpu => Tuning {
                workgroup: 8,
                strip_rows: 128,
            },
            _ => Tuning {
                workgroup: 64,
                strip_rows: 64,
            },
        }
    }
}

impl GpuBackend {
    /// Bounds the wait for one frame on the device (`None`: no bound); past it, `measure`
    /// fails instead of blocking the caller for good.
    pub fn set_wait_timeout(&mut self, timeout: Option<Duration>) {
        self.wait_timeout = timeout;
    }

    /// Picks an adapter (a discrete or integrated GPU first; a software one such as lavapipe
    /// when that is all there is) and builds the pipelines. Fails when there is none.
    pub fn new() -> Result<GpuBackend, String> {
        Self::with_tuning(None)
    }

    /// [`GpuBackend::new`] with the work cut as given instead of as suits the adapter (tests
    /// run the GPU's cut on lavapipe).
    pub(crate) fn with_tuning(tuning: Option<Tuning>) -> Result<GpuBackend, String> {
        let opening = OPENING.lock().unwrap_or_else(|p| p.into_inner());
        let adapter = pollster::block_on(INSTANCE.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            compatible_surface: None,
            ..Default::default()
        }))
        .map_err(|e| format!("no wgpu adapter: {e}"))?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("frameanalyzer"),
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| format!("wgpu device on {}: {e}", info.name))?;
        drop(opening);
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
        let analyze_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("analyze"),
            entries: &[
                uniform_entry(0),
                texture_entry(1),
                texture_entry(2),
                storage_entry(3),
                storage_entry(4),
                storage_entry(5),
            ],
        });
        let packed_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("packed_luma"),
            entries: &[
                uniform_entry(0),
                texture_entry(6),
                layout_entry(
                    7,
                    wgpu::BindingType::StorageTexture {
                        access: wgpu::StorageTextureAccess::WriteOnly,
                        format: wgpu::TextureFormat::Rgba32Uint,
                        view_dimension: wgpu::TextureViewDimension::D2,
                    },
                ),
            ],
        });
        let Tuning {
            workgroup,
            strip_rows,
        } = tuning.unwrap_or_else(|| Tuning::for_device(info.device_type));
        if !workgroup.is_power_of_two() || workgroup > limits.max_compute_invocations_per_workgroup
        {
            return Err(format!("workgroup of {workgroup} invocations"));
        }
        let pipeline = |entry: &str, layout: &wgpu::BindGroupLayout| {
            let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(entry),
                bind_group_layouts: &[Some(layout)],
                immediate_size: 0,
            });
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &[("workgroup", workgroup as f64)],
                    ..Default::default()
                },
                cache: None,
            })
        };
        let backend = GpuBackend {
            name: info.name.clone(),
            analyze: pipeline("analyze", &analyze_layout),
            packed_luma: pipeline("packed_luma", &packed_layout),
            workgroup,
            strip_rows: strip_rows.max(1),
            max_texture_side: limits.max_texture_dimension_2d,
            device,
            queue,
            analyze_layout,
            packed_layout,
            sized: None,
            scratch: Vec::new(),
            errors,
            wait_timeout: Some(DEFAULT_WAIT_TIMEOUT),
            wedged: std::env::var_os("ORDERED_FAULT_GPU_WEDGED").is_some(),
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

    fn params_for(&self, plane: &Plane<'_>, block: u32) -> Params {
        let (bytes_per_pixel, r, g, b) = match plane.layout {
            Layout::Luma => (0, 0, 0, 0),
            Layout::Packed {
                bytes_per_pixel,
                r,
                g,
                b,
            } => (bytes_per_pixel, r, g, b),
        };
        let pitch = plane.width.div_ceil(4);
        Params {
            width: plane.width,
            height: plane.height,
            pitch,
            block,
            strip: {
                // Strips of about `strip_rows`, as even as whole blocks allow.
                let strips = plane.height.div_ceil(self.strip_rows).max(1);
                plane.height.div_ceil(strips).next_multiple_of(block)
            },
            bytes_per_pixel,
            r,
            g,
            b,
            texels: plane.width.div_ceil(16),
        }
    }

    /// An `rgba32uint` texture to upload or copy into and read in the shaders.
    fn texture(&self, label: &str, width: u32, height: u32) -> wgpu::Texture {
        self.device.create_texture(&wgpu::TextureDescriptor {
            label: Some(label),
            size: wgpu::Extent3d {
                width,
                height,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba32Uint,
            usage: wgpu::TextureUsages::TEXTURE_BINDING
                | wgpu::TextureUsages::COPY_DST
                | wgpu::TextureUsages::STORAGE_BINDING,
            view_formats: &[],
        })
    }

    fn create_sized(&self, params: Params) -> Result<Sized, String> {
        let d = &self.device;
        // The texture that receives the frame's rows: luma texels, or packed RGB words.
        // Texels per row of the texture that receives the frame: the luma texture, or one of
        // packed RGB (16 bytes a texel).
        let row_texels = match params.bytes_per_pixel {
            0 => params.texels,
            bpp => (params.width * bpp).div_ceil(16),
        };
        if params.strip > MAX_STRIP {
            return Err(format!(
                "block size {} is too large for the GPU path (at most {MAX_STRIP} rows)",
                params.block
            ));
        }
        if !matches!(params.bytes_per_pixel, 0 | 3 | 4) {
            return Err(format!(
                "packed RGB of {} bytes per pixel (the GPU path reads 3 or 4)",
                params.bytes_per_pixel
            ));
        }
        if row_texels > self.max_texture_side || params.height > self.max_texture_side {
            return Err(format!(
                "a {}x{} frame needs textures of {row_texels}x{} texels; this adapter allows {} per side",
                params.width, params.height, params.height, self.max_texture_side
            ));
        }
        let buffer = |label: &str, size: u64, usage: wgpu::BufferUsages| {
            d.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: size.max(4),
                usage,
                mapped_at_creation: false,
            })
        };
        let storage = wgpu::BufferUsages::STORAGE;
        let groups = params.texels.div_ceil(self.workgroup);
        let blocks = block_grid(params.width, params.height, params.block);
        // Per strip and texel: Laplacian sum and sum of squares (two words); per word and
        // block row: the SAD of the (at most two) blocks the word touches.
        let laplacian_bytes = params.texels as u64 * params.strips() as u64 * 3 * 4;
        let sad_bytes = blocks.1 as u64 * params.pitch as u64 * 2 * 4;

        let uniform = buffer(
            "params",
            64,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        );
        self.queue.write_buffer(&uniform, 0, &params.bytes());
        let luma = [
            self.texture("luma 0", params.texels, params.height),
            self.texture("luma 1", params.texels, params.height),
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
        fn view_entry(binding: u32, view: &wgpu::TextureView) -> wgpu::BindGroupEntry<'_> {
            wgpu::BindGroupEntry {
                binding,
                resource: wgpu::BindingResource::TextureView(view),
            }
        }
        let views = luma
            .each_ref()
            .map(|t| t.create_view(&wgpu::TextureViewDescriptor::default()));
        let bind_group = |current: usize| {
            d.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("analyze"),
                layout: &self.analyze_layout,
                entries: &[
                    entry(0, &uniform),
                    view_entry(1, &views[current]),
                    view_entry(2, &views[1 - current]),
                    entry(3, &histogram),
                    entry(4, &laplacian),
                    entry(5, &sad),
                ],
            })
        };
        let bind_groups = [bind_group(0), bind_group(1)];
        let packed = (params.bytes_per_pixel != 0).then(|| {
            let frame = self.texture("packed frame", row_texels, params.height);
            let view = frame.create_view(&wgpu::TextureViewDescriptor::default());
            let bind_group = |current: usize| {
                d.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("packed_luma"),
                    layout: &self.packed_layout,
                    entries: &[
                        entry(0, &uniform),
                        view_entry(6, &view),
                        view_entry(7, &views[current]),
                    ],
                })
            };
            PackedInput {
                frame,
                row_bytes: row_texels * 16,
                bind_groups: [bind_group(0), bind_group(1)],
            }
        });
        Ok(Sized {
            params,
            luma,
            packed,
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
        })
    }
}

/// Writes `rows` rows of `row_bytes` (a multiple of `texel`, the texture's texel size) from
/// `data`, `stride` bytes apart, into `texture`: straight from `data` when its rows start on
/// texels and it is long enough, else through `scratch`, repacked.
#[allow(clippy::too_many_arguments)]
fn upload(
    queue: &wgpu::Queue,
    texture: &wgpu::Texture,
    scratch: &mut Vec<u8>,
    data: &[u8],
    stride: u32,
    rows: u32,
    row_bytes: u32,
    texel: u32,
) {
    let needed = stride as usize * (rows as usize - 1) + row_bytes as usize;
    let (bytes, bytes_per_row) = if stride.is_multiple_of(texel) && data.len() >= needed {
        (&data[..needed], stride)
    } else {
        scratch.clear();
        scratch.resize(row_bytes as usize * rows as usize, 0);
        for (y, out) in scratch.chunks_exact_mut(row_bytes as usize).enumerate() {
            let row = &data[(y * stride as usize).min(data.len())..];
            let n = row.len().min(row_bytes as usize).min(stride as usize);
            out[..n].copy_from_slice(&row[..n]);
        }
        (&scratch[..], row_bytes)
    };
    queue.write_texture(
        wgpu::TexelCopyTextureInfo {
            texture,
            mip_level: 0,
            origin: wgpu::Origin3d::ZERO,
            aspect: wgpu::TextureAspect::All,
        },
        bytes,
        wgpu::TexelCopyBufferLayout {
            offset: 0,
            bytes_per_row: Some(bytes_per_row),
            rows_per_image: Some(rows),
        },
        wgpu::Extent3d {
            width: row_bytes / texel,
            height: rows,
            depth_or_array_layers: 1,
        },
    );
}

impl Backend for GpuBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn measure(&mut self, plane: &Plane<'_>, block_size: u32) -> Result<Measurements, String> {
        let params = self.params_for(plane, block_size);
        if self.sized.as_ref().is_none_or(|s| s.params != params) {
            self.sized = None;
            self.sized = Some(self.create_sized(params)?);
        }
        let s = self.sized.as_mut().expect("created above");

        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("analysis"),
            });
        match &s.packed {
            None => upload(
                &self.queue,
                &s.luma[s.current],
                &mut self.scratch,
                plane.data,
                plane.stride,
                params.height,
                params.texels * 16,
                16,
            ),
            Some(packed) => {
                upload(
                    &self.queue,
                    &packed.frame,
                    &mut self.scratch,
                    plane.data,
                    plane.stride,
                    params.height,
                    packed.row_bytes,
                    16,
                );
                {
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("packed_luma"),
                        timestamp_writes: None,
                    });
                    pass.set_bind_group(0, &packed.bind_groups[s.current], &[]);
                    pass.set_pipeline(&self.packed_luma);
                    pass.dispatch_workgroups(s.groups, params.strips(), 1);
                }
            }
        }
        encoder.clear_buffer(&s.histogram, 0, None);
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("analyze"),
                timestamp_writes: None,
            });
            pass.set_bind_group(0, &s.bind_groups[s.current], &[]);
            pass.set_pipeline(&self.analyze);
            pass.dispatch_workgroups(s.groups, params.strips(), 1);
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
        self.queue.submit([encoder.finish()]);

        if self.wedged {
            self.sized = None;
            return Err(format!(
                "the GPU did not finish the frame within {:?} (ORDERED_FAULT_GPU_WEDGED)",
                self.wait_timeout.unwrap_or_default()
            ));
        }
        let (tx, rx) = mpsc::sync_channel(1);
        s.readback.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        let waited = self.device.poll(wgpu::PollType::Wait {
            submission_index: None,
            timeout: self.wait_timeout,
        });
        if let Err(err) = waited {
            // The readback may still complete later: nothing of this frame is reused.
            self.sized = None;
            return Err(match err {
                wgpu::PollError::Timeout => format!(
                    "the GPU did not finish the frame within {:?}",
                    self.wait_timeout.unwrap_or_default()
                ),
                other => format!("wgpu poll: {other}"),
            });
        }
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
            // The shader counts the padding of the last column (read as 0) in bin 0.
            histogram[0] =
                histogram[0].saturating_sub((params.texels * 16 - params.width) * params.height);
            for _ in 0..params.texels * params.strips() {
                let mut next = || words.next().unwrap_or(0);
                let (partial_sum, lo, hi) = (next(), next(), next());
                sum += partial_sum as i32 as i64;
                sum_sq += (hi as u64) << 32 | lo as u64;
            }
            // Per block row and column: the SADs of the blocks of its first and last pixel.
            s.has_previous.then(|| {
                let mut sad = vec![0u32; (blocks_x * blocks_y) as usize];
                for by in 0..blocks_y {
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
