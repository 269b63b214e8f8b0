// frameanalyzer's compute shaders. The CPU twin (cpu.rs) computes the same integers.
//
// Luma is read from textures of packed luma (rgba32uint: 16 pixels per texel, 4 per word),
// the current frame's and the previous one's. Texel fetches, unlike storage-buffer loads, are
// gathered a vector at a time by software Vulkan (lavapipe runs invocations as SIMD lanes on
// a few CPU threads and loads storage buffers lane by lane), and a one-byte-per-pixel plane
// (I420, NV12, GRAY8) is uploaded straight into such a texture. Packed RGB goes through the
// `packed_luma` pass first.
//
// analyze:     one invocation per column of 16 pixels (one texel) and strip of whole block
//              rows (the y of the dispatch), walking down the strip with the rows above and
//              below in registers: a private 256-bin histogram (two 16-bit counts a word)
//              added into `histogram` at the end; per block row and word (4 pixels), the sum
//              of |luma - previous| of the word's pixels in each of the (at most two) blocks
//              the word touches, into `sad`; the 4-neighbour Laplacian of the strip's
//              interior pixels (of the column shifted right by one pixel, so that only the
//              next texel is fetched besides its own): its sum and sum of squares (as two
//              words) into `laplacian`. Three texel fetches a row; no workgroup memory,
//              barrier or per-pixel atomic.
// packed_luma: packed RGB with 3 or 4 bytes per pixel (the frame's rows as rgba32uint
//              texels) to packed luma, written into the current luma texture.

struct Params {
    width: u32,
    height: u32,
    pitch: u32,           // words (4 pixels) per row of luma that hold pixels
    block: u32,
    strip: u32,           // rows per invocation of `analyze`: whole block rows
    bytes_per_pixel: u32,
    r: u32,
    g: u32,
    b: u32,
    texels: u32,          // texels (16 pixels) per row of the luma textures
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    _pad3: u32,
    _pad4: u32,
    _pad5: u32,
}

// Invocations per workgroup: 64 on a GPU; on software Vulkan, 8 (one SIMD vector), so that
// its few threads share many small workgroups evenly.
override workgroup: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var current: texture_2d<u32>;
@group(0) @binding(2) var previous: texture_2d<u32>;
@group(0) @binding(3) var<storage, read_write> histogram: array<atomic<u32>, 256>;
@group(0) @binding(4) var<storage, read_write> laplacian: array<u32>;
@group(0) @binding(5) var<storage, read_write> sad: array<u32>;
@group(0) @binding(6) var frame: texture_2d<u32>;
@group(0) @binding(7) var luma: texture_storage_2d<rgba32uint, write>;

fn byte_of(word: u32, k: u32) -> u32 {
    return (word >> (k * 8u)) & 0xffu;
}

fn texel(t: texture_2d<u32>, c: u32, y: u32) -> vec4<u32> {
    return textureLoad(t, vec2<u32>(c, y), 0);
}

// The Laplacian of 16 pixels at once, two per u32 in 16-bit fields (even pixels 0 and 2 of
// each word, odd pixels 1 and 3), biased by 1020 so that no field goes negative or borrows:
// 4c + 1020 - (l + r + u + d) stays within 0..2040.
const EVEN: u32 = 0x00ff00ffu;
const BIAS: u32 = 0x03fc03fcu;

struct Sums {
    sum: vec4<i32>,
    // The sum of squares, as low and high words.
    lo: vec4<u32>,
    hi: vec4<u32>,
}

fn accumulate(biased: vec4<u32>, mask: vec4<u32>, acc: ptr<function, Sums>) {
    // `mask` keeps the fields of pixels that count (interior ones).
    let v0 = (vec4<i32>(biased & vec4(0xffffu)) - 1020) * vec4<i32>(mask & vec4(1u));
    let v1 = (vec4<i32>(biased >> vec4(16u)) - 1020) * vec4<i32>((mask >> vec4(16u)) & vec4(1u));
    (*acc).sum += v0 + v1;
    let sq = vec4<u32>(v0 * v0) + vec4<u32>(v1 * v1);
    let next = (*acc).lo + sq;
    (*acc).hi += select(vec4(0u), vec4(1u), next < (*acc).lo);
    (*acc).lo = next;
}

// Pixels 1 to 16 of a texel whose next texel starts with `next`, as words.
fn shifted(w: vec4<u32>, next: u32) -> vec4<u32> {
    return (w >> vec4(8u)) | (vec4(w.y, w.z, w.w, next) << vec4(24u));
}

fn count(word: u32, bins: ptr<function, array<u32, 128>>) {
    for (var k = 0u; k < 4u; k++) {
        let l = byte_of(word, k);
        (*bins)[l >> 1u] += 1u << ((l & 1u) * 16u);
    }
}

@compute @workgroup_size(workgroup)
fn analyze(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.x;
    if (t >= p.texels) {
        return;
    }
    // Per word of the texel: its first pixel, and which of its pixels are in the frame.
    let x0 = vec4(16u * t) + vec4(0u, 4u, 8u, 12u);
    let valid = select(vec4(0u), min(vec4(4u), vec4(p.width) - x0), x0 < vec4(p.width));
    // Bytes past the width (a row's padding) read as 0.
    let mask = select(vec4(0xffffffffu), (vec4(1u) << (valid * 8u)) - 1u, valid < vec4(4u));
    // The next texel, clamped (past the width, what it gives is dropped).
    let right_t = min(t + 1u, p.texels - 1u);
    // The blocks each word's pixels fall in: pixels left of `split` count for the first
    // block, the others (if the word straddles a block edge) for the next. No division per
    // pixel: vector units have none.
    let split = (x0 / vec4(p.block) + 1u) * p.block;
    // The Laplacian is taken of the texel's pixels shifted by one: pixels 1 to 16, the last
    // being the next texel's first, so that only the next texel is fetched for neighbours
    // (pixel 0 of the frame is not interior; pixel 0 of every other texel is the one before's).
    // Which of them are interior in x (x >= 1 and x + 1 < width), per shifted word and
    // parity: bit 0 for its pixels 0 (even) and 1 (odd), bit 16 for its pixels 2 and 3.
    var keep_even = vec4(0u);
    var keep_odd = vec4(0u);
    for (var k = 0u; k < 4u; k++) {
        let x = x0 + vec4(k + 1u);
        let interior = select(vec4(0u), vec4(1u << ((k >> 1u) * 16u)), x >= vec4(1u) & x + 1u < vec4(p.width));
        if ((k & 1u) == 0u) {
            keep_even |= interior;
        } else {
            keep_odd |= interior;
        }
    }

    let h = p.height;
    let first = gid.y * p.strip;
    let end = min(first + p.strip, h);
    // The window: the rows above and below, each with the next texel's first word.
    var up = vec4(0u);
    var up_right = 0u;
    if (first > 0u) {
        up = texel(current, t, first - 1u) & mask;
        up_right = texel(current, right_t, first - 1u).x;
    }
    var cur = texel(current, t, first) & mask;
    var cur_right = texel(current, right_t, first).x;

    var bins: array<u32, 128>;
    var sad_a = vec4(0u);
    var sad_b = vec4(0u);
    var block_row = first / p.block;
    var next_flush = (block_row + 1u) * p.block;
    var acc = Sums(vec4(0), vec4(0u), vec4(0u));
    for (var y = first; y < end; y++) {
        let below = min(y + 1u, h - 1u);
        let down = texel(current, t, below) & mask;
        let down_right = texel(current, right_t, below).x;
        let before = texel(previous, t, y) & mask;

        // All 16 pixels, padding included: padding bytes read as 0 in both frames, so they
        // add nothing to the SADs, and the host takes their count out of bin 0.
        count(cur.x, &bins);
        count(cur.y, &bins);
        count(cur.z, &bins);
        count(cur.w, &bins);
        for (var k = 0u; k < 4u; k++) {
            let l = (cur >> vec4(8u * k)) & vec4(0xffu);
            let b = (before >> vec4(8u * k)) & vec4(0xffu);
            let d = select(b - l, l - b, l > b);
            let in_first = select(vec4(0u), vec4(0xffffffffu), x0 + vec4(k) < split);
            sad_a += d & in_first;
            sad_b += d & ~in_first;
        }
        if (y + 1u == next_flush || y + 1u == h) {
            for (var j = 0u; j < 4u; j++) {
                let c = 4u * t + j;
                if (c < p.pitch) {
                    let slot = 2u * (block_row * p.pitch + c);
                    sad[slot] = sad_a[j];
                    sad[slot + 1u] = sad_b[j];
                }
            }
            sad_a = vec4(0u);
            sad_b = vec4(0u);
            next_flush += p.block;
            block_row += 1u;
        }

        // Interior rows only: the first and last rows have no Laplacian.
        let row_keep = select(vec4(0u), vec4(0xffffffffu), vec4(y >= 1u && y + 1u < h));
        let centre = shifted(cur, cur_right);
        let above = shifted(up, up_right);
        let under = shifted(down, down_right);
        let even = centre & vec4(EVEN);
        let odd = (centre >> vec4(8u)) & vec4(EVEN);
        let vertical_even = (above & vec4(EVEN)) + (under & vec4(EVEN));
        let vertical_odd = ((above >> vec4(8u)) & vec4(EVEN)) + ((under >> vec4(8u)) & vec4(EVEN));
        // Each shifted word's neighbour pixels: the first pixel of its unshifted word, and
        // the second of the next.
        let left = cur & vec4(0xffu);
        let right = (vec4(cur.y, cur.z, cur.w, cur_right) >> vec4(8u)) & vec4(0xffu);
        // Even pixels 0, 2: left neighbours pixel -1 and 1, right neighbours 1 and 3.
        let left_even = (odd << vec4(16u)) | left;
        let e = 4u * even + vec4(BIAS) - (left_even + odd + vertical_even);
        // Odd pixels 1, 3: left neighbours 0 and 2, right neighbours 2 and 4.
        let right_odd = (even >> vec4(16u)) | (right << vec4(16u));
        let o = 4u * odd + vec4(BIAS) - (even + right_odd + vertical_odd);
        accumulate(e, keep_even & row_keep, &acc);
        accumulate(o, keep_odd & row_keep, &acc);

        up = cur;
        up_right = cur_right;
        cur = down;
        cur_right = down_right;
    }
    // The texel's sums: the four words' together (the sum fits an i32: at most 16 pixels of
    // |1020| per row).
    let s = acc.sum.x + acc.sum.y + acc.sum.z + acc.sum.w;
    var lo = acc.lo.x;
    var hi = acc.hi.x + acc.hi.y + acc.hi.z + acc.hi.w;
    for (var j = 1u; j < 4u; j++) {
        let next = lo + acc.lo[j];
        hi += select(0u, 1u, next < lo);
        lo = next;
    }
    let slot = 3u * (gid.y * p.texels + t);
    laplacian[slot] = bitcast<u32>(s);
    laplacian[slot + 1u] = lo;
    laplacian[slot + 2u] = hi;
    for (var i = 0u; i < 128u; i++) {
        let pair = bins[i];
        if (pair != 0u) {
            atomicAdd(&histogram[2u * i], pair & 0xffffu);
            atomicAdd(&histogram[2u * i + 1u], pair >> 16u);
        }
    }
}

// The luma of one pixel from its R, G and B bytes (BT.601 weights in 8-bit fixed point).
fn rgb_luma(r: u32, g: u32, b: u32) -> u32 {
    return (77u * r + 150u * g + 29u * b + 128u) >> 8u;
}

// Four 4-byte pixels to a word of luma.
fn luma4(a: u32, b: u32, c: u32, d: u32) -> u32 {
    let px = vec4(a, b, c, d);
    let l = rgb_luma4(
        (px >> vec4(8u * p.r)) & vec4(0xffu),
        (px >> vec4(8u * p.g)) & vec4(0xffu),
        (px >> vec4(8u * p.b)) & vec4(0xffu),
    );
    return l.x | (l.y << 8u) | (l.z << 16u) | (l.w << 24u);
}

fn rgb_luma4(r: vec4<u32>, g: vec4<u32>, b: vec4<u32>) -> vec4<u32> {
    return (77u * r + 150u * g + 29u * b + vec4(128u)) >> vec4(8u);
}

// Byte `i` (0..11, the same in every invocation) of three words.
fn byte12(a: u32, b: u32, c: u32, i: u32) -> u32 {
    let word = select(select(a, b, i >= 4u), c, i >= 8u);
    return (word >> ((i & 3u) * 8u)) & 0xffu;
}

// Four 3-byte pixels (three words) to a word of luma.
fn luma3(a: u32, b: u32, c: u32) -> u32 {
    let r = vec4(byte12(a, b, c, p.r), byte12(a, b, c, 3u + p.r), byte12(a, b, c, 6u + p.r), byte12(a, b, c, 9u + p.r));
    let g = vec4(byte12(a, b, c, p.g), byte12(a, b, c, 3u + p.g), byte12(a, b, c, 6u + p.g), byte12(a, b, c, 9u + p.g));
    let bl = vec4(byte12(a, b, c, p.b), byte12(a, b, c, 3u + p.b), byte12(a, b, c, 6u + p.b), byte12(a, b, c, 9u + p.b));
    let l = rgb_luma4(r, g, bl);
    return l.x | (l.y << 8u) | (l.z << 16u) | (l.w << 24u);
}

@compute @workgroup_size(workgroup)
fn packed_luma(@builtin(global_invocation_id) gid: vec3<u32>) {
    // Cut as `analyze` is: a column of 16 pixels (a texel of luma) over a strip of rows.
    let t = gid.x;
    if (t >= p.texels) {
        return;
    }
    // Rows start on a texel: the 16 pixels are the `bytes_per_pixel` texels from t * bpp.
    // Pixels past the width give garbage here; `analyze` masks them.
    let bpp = p.bytes_per_pixel;
    let base = t * bpp;
    let last = textureDimensions(frame).x - 1u;
    let first = gid.y * p.strip;
    let end = min(first + p.strip, p.height);
    for (var y = first; y < end; y++) {
        let w0 = texel(frame, min(base, last), y);
        let w1 = texel(frame, min(base + 1u, last), y);
        let w2 = texel(frame, min(base + 2u, last), y);
        var out: vec4<u32>;
        if (bpp == 4u) {
            let w3 = texel(frame, min(base + 3u, last), y);
            out = vec4(
                luma4(w0.x, w0.y, w0.z, w0.w),
                luma4(w1.x, w1.y, w1.z, w1.w),
                luma4(w2.x, w2.y, w2.z, w2.w),
                luma4(w3.x, w3.y, w3.z, w3.w),
            );
        } else {
            out = vec4(
                luma3(w0.x, w0.y, w0.z),
                luma3(w0.w, w1.x, w1.y),
                luma3(w1.z, w1.w, w2.x),
                luma3(w2.y, w2.z, w2.w),
            );
        }
        textureStore(luma, vec2(t, y), out);
    }
}
