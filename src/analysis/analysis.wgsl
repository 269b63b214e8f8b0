// frameanalyzer's compute shaders. The CPU twin (cpu.rs) computes the same integers.
//
// luma_histogram: per pixel, luma from the raw first plane -> `luma`, 256-bin `histogram`.
// laplacian:      per interior pixel, 4c - l - r - u - d; per-workgroup sum and sum of squares.
// motion:         per block, sum of |luma - previous|.

struct Params {
    width: u32,
    height: u32,
    stride: u32,          // bytes per row of `frame`
    bytes_per_pixel: u32,
    r: u32,
    g: u32,
    b: u32,
    packed: u32,          // 0: one luma byte per pixel; 1: packed RGB
    block: u32,
    blocks_x: u32,
    laplacian_groups_x: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> frame: array<u32>;
@group(0) @binding(2) var<storage, read_write> luma: array<u32>;
@group(0) @binding(3) var<storage, read> previous: array<u32>;
@group(0) @binding(4) var<storage, read_write> histogram: array<atomic<u32>, 256>;
@group(0) @binding(5) var<storage, read_write> laplacian: array<u32>;
@group(0) @binding(6) var<storage, read_write> sad: array<u32>;

fn byte_at(i: u32) -> u32 {
    return (frame[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu;
}

fn luma_at(x: u32, y: u32) -> u32 {
    let o = y * p.stride + x * p.bytes_per_pixel;
    if (p.packed == 0u) {
        return byte_at(o);
    }
    return (77u * byte_at(o + p.r) + 150u * byte_at(o + p.g) + 29u * byte_at(o + p.b) + 128u) >> 8u;
}

var<workgroup> local_histogram: array<atomic<u32>, 256>;

@compute @workgroup_size(16, 16)
fn luma_histogram(@builtin(global_invocation_id) gid: vec3<u32>,
                  @builtin(local_invocation_index) li: u32) {
    atomicStore(&local_histogram[li], 0u);
    workgroupBarrier();
    if (gid.x < p.width && gid.y < p.height) {
        let l = luma_at(gid.x, gid.y);
        luma[gid.y * p.width + gid.x] = l;
        atomicAdd(&local_histogram[l], 1u);
    }
    workgroupBarrier();
    let count = atomicLoad(&local_histogram[li]);
    if (count > 0u) {
        atomicAdd(&histogram[li], count);
    }
}

var<workgroup> local_sum: atomic<i32>;
var<workgroup> local_sum_sq: atomic<u32>;

@compute @workgroup_size(16, 16)
fn laplacian_sums(@builtin(global_invocation_id) gid: vec3<u32>,
                  @builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(local_invocation_index) li: u32) {
    if (li == 0u) {
        atomicStore(&local_sum, 0);
        atomicStore(&local_sum_sq, 0u);
    }
    workgroupBarrier();
    let x = gid.x;
    let y = gid.y;
    if (x >= 1u && y >= 1u && x + 1u < p.width && y + 1u < p.height) {
        let i = y * p.width + x;
        let l = 4 * i32(luma[i]) - i32(luma[i - 1u]) - i32(luma[i + 1u])
              - i32(luma[i - p.width]) - i32(luma[i + p.width]);
        atomicAdd(&local_sum, l);
        // At most 256 * 1020^2 per workgroup: fits in u32.
        atomicAdd(&local_sum_sq, u32(l * l));
    }
    workgroupBarrier();
    if (li == 0u) {
        let g = wid.y * p.laplacian_groups_x + wid.x;
        laplacian[2u * g] = bitcast<u32>(atomicLoad(&local_sum));
        laplacian[2u * g + 1u] = atomicLoad(&local_sum_sq);
    }
}

var<workgroup> local_sad: atomic<u32>;

@compute @workgroup_size(16, 16)
fn motion(@builtin(workgroup_id) wid: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    if (li == 0u) {
        atomicStore(&local_sad, 0u);
    }
    workgroupBarrier();
    let x0 = wid.x * p.block;
    let y0 = wid.y * p.block;
    var acc = 0u;
    for (var dy = lid.y; dy < p.block; dy += 16u) {
        for (var dx = lid.x; dx < p.block; dx += 16u) {
            let x = x0 + dx;
            let y = y0 + dy;
            if (x < p.width && y < p.height) {
                let i = y * p.width + x;
                let a = luma[i];
                let b = previous[i];
                acc += select(b - a, a - b, a > b);
            }
        }
    }
    atomicAdd(&local_sad, acc);
    workgroupBarrier();
    if (li == 0u) {
        sad[wid.y * p.blocks_x + wid.x] = atomicLoad(&local_sad);
    }
}
