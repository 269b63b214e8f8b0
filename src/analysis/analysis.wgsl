// frameanalyzer's compute shaders. The CPU twin (cpu.rs) computes the same integers.
//
// One invocation per column of 4 pixels (one word of packed luma), walking down the frame:
// neighbouring invocations read neighbouring words, and no workgroup memory, barrier or
// per-pixel atomic is needed (software Vulkan such as lavapipe runs invocations as SIMD
// lanes on a few CPU threads, where those are what costs).
//
// columns: (in strips of whole block rows, the y of the dispatch) luma from the raw first
//          plane, packed 4 per word into `luma`; a private 256-bin
//          histogram added into `histogram` at the end; and per block row, the sum of
//          |luma - previous| of the column's pixels in each of the (at most two) blocks the
//          column touches, into `sad`.
// edges:   the 4-neighbour Laplacian over the column's interior pixels, in strips of
//          `strip` rows (the y of the dispatch): per strip and column its sum and its sum
//          of squares (as two words) into `laplacian`.

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
    blocks_y: u32,
    pitch: u32,           // words per row of `luma`: columns
    strip: u32,           // interior rows per invocation of `edges`
    column_strip: u32,    // rows per invocation of `columns`: whole block rows
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> frame: array<u32>;
@group(0) @binding(2) var<storage, read_write> luma: array<u32>;
@group(0) @binding(3) var<storage, read> previous: array<u32>;
@group(0) @binding(4) var<storage, read_write> histogram: array<atomic<u32>, 256>;
@group(0) @binding(5) var<storage, read_write> laplacian: array<u32>;
@group(0) @binding(6) var<storage, read_write> sad: array<u32>;

fn frame_byte(i: u32) -> u32 {
    return (frame[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu;
}

fn byte_of(word: u32, k: u32) -> u32 {
    return (word >> (k * 8u)) & 0xffu;
}

/// The luma of pixels 4c..4c+3 of row y, packed; bytes past the width are 0.
fn luma_word(c: u32, y: u32, valid: u32) -> u32 {
    let row = y * p.stride;
    if (p.packed == 0u && (p.stride & 3u) == 0u) {
        let mask = select(0xffffffffu, (1u << (valid * 8u)) - 1u, valid < 4u);
        return frame[(row >> 2u) + c] & mask;
    }
    var word = 0u;
    for (var k = 0u; k < valid; k++) {
        let o = row + (4u * c + k) * p.bytes_per_pixel;
        var l: u32;
        if (p.packed == 0u) {
            l = frame_byte(o);
        } else {
            l = (77u * frame_byte(o + p.r) + 150u * frame_byte(o + p.g) + 29u * frame_byte(o + p.b) + 128u) >> 8u;
        }
        word |= l << (k * 8u);
    }
    return word;
}

@compute @workgroup_size(64)
fn columns(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= p.pitch) {
        return;
    }
    let valid = min(4u, p.width - 4u * c);
    // The blocks this column's pixels fall in: pixels left of `split` count for the first
    // block, the others (if the column straddles a block edge) for the next. No division
    // per pixel: vector units have none.
    let split = ((4u * c) / p.block + 1u) * p.block;
    // This invocation's strip of rows: whole block rows.
    let first = gid.y * p.column_strip;
    let end = min(first + p.column_strip, p.height);
    var bins: array<u32, 256>;
    var sad_a = 0u;
    var sad_b = 0u;
    var block_row = first / p.block;
    var next_flush = (block_row + 1u) * p.block;
    for (var y = first; y < end; y++) {
        let word = luma_word(c, y, valid);
        let i = y * p.pitch + c;
        luma[i] = word;
        let before = previous[i];
        for (var k = 0u; k < 4u; k++) {
            if (k < valid) {
                let l = byte_of(word, k);
                bins[l] += 1u;
                let b = byte_of(before, k);
                let d = select(b - l, l - b, l > b);
                if (4u * c + k < split) {
                    sad_a += d;
                } else {
                    sad_b += d;
                }
            }
        }
        if (y + 1u == next_flush || y + 1u == p.height) {
            let slot = 2u * (block_row * p.pitch + c);
            sad[slot] = sad_a;
            sad[slot + 1u] = sad_b;
            sad_a = 0u;
            sad_b = 0u;
            next_flush += p.block;
            block_row += 1u;
        }
    }
    for (var v = 0u; v < 256u; v++) {
        if (bins[v] != 0u) {
            atomicAdd(&histogram[v], bins[v]);
        }
    }
}

// The Laplacian of four pixels at once, two per u32 in 16-bit fields (even pixels 0 and 2,
// odd pixels 1 and 3), biased by 1020 so that no field goes negative or borrows:
// 4c + 1020 - (l + r + u + d) stays within 0..2040.
const EVEN: u32 = 0x00ff00ffu;
const BIAS: u32 = 0x03fc03fcu;

fn accumulate(biased: u32, mask: u32, acc: ptr<function, vec3<u32>>) {
    // `mask` keeps the fields of pixels that count (interior ones).
    let v0 = (i32(biased & 0xffffu) - 1020) * i32(mask & 1u);
    let v1 = (i32(biased >> 16u) - 1020) * i32((mask >> 16u) & 1u);
    (*acc).x = bitcast<u32>(bitcast<i32>((*acc).x) + v0 + v1);
    let sq = u32(v0 * v0) + u32(v1 * v1);
    let next = (*acc).y + sq;
    (*acc).z += select(0u, 1u, next < (*acc).y);
    (*acc).y = next;
}

@compute @workgroup_size(64)
fn edges(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= p.pitch) {
        return;
    }
    // This invocation's strip of interior rows.
    let first = 1u + gid.y * p.strip;
    let end = min(first + p.strip, max(p.height, 1u) - 1u);
    // Which of the column's pixels are interior (x >= 1 and x + 1 < width), per parity.
    var keep = 0u;
    for (var k = 0u; k < 4u; k++) {
        let x = 4u * c + k;
        if (x >= 1u && x + 1u < p.width) {
            keep |= 1u << ((k & 1u) * 4u + (k >> 1u) * 16u);
        }
    }
    let keep_even = keep & 0x00010001u;
    let keep_odd = (keep >> 4u) & 0x00010001u;
    // x: sum (as i32 bits), y: low word of the sum of squares, z: high word.
    var acc = vec3<u32>(0u, 0u, 0u);
    for (var y = first; y < end; y++) {
        let i = y * p.pitch + c;
        let cur = luma[i];
        let up = luma[i - p.pitch];
        let down = luma[i + p.pitch];
        let left = select(0u, luma[i - 1u] >> 24u, c > 0u);
        let right = select(0u, luma[i + 1u] & 0xffu, c + 1u < p.pitch);
        let even = cur & EVEN;
        let odd = (cur >> 8u) & EVEN;
        let vertical_even = (up & EVEN) + (down & EVEN);
        let vertical_odd = ((up >> 8u) & EVEN) + ((down >> 8u) & EVEN);
        // Even pixels 0, 2: left neighbours pixel -1 and 1, right neighbours 1 and 3.
        let left_even = (odd << 16u) | left;
        let e = 4u * even + BIAS - (left_even + odd + vertical_even);
        // Odd pixels 1, 3: left neighbours 0 and 2, right neighbours 2 and 4.
        let right_odd = (even >> 16u) | (right << 16u);
        let o = 4u * odd + BIAS - (even + right_odd + vertical_odd);
        accumulate(e, keep_even, &acc);
        accumulate(o, keep_odd, &acc);
    }
    let slot = 3u * (gid.y * p.pitch + c);
    laplacian[slot] = acc.x;
    laplacian[slot + 1u] = acc.y;
    laplacian[slot + 2u] = acc.z;
}
