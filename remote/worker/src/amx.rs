//! Linear layers on Intel AMX tiles (Sapphire Rapids and later: EC2 m7i, c7i, r7i), in exact
//! integer arithmetic with f32-class accuracy.
//!
//! AMX multiplies int8 or bf16, both far coarser than the 1e-5 parity with PyTorch needs.
//! (bf16 split in hi + lo, "bf16×3", keeps 16 bits and missed it: logits 1.5e-4 off on the
//! test model.) So each row is fixed point with 23 bits and a sign, relative to its largest
//! value, written as three signed 8-bit digits, `q = d1·2¹⁶ + d2·2⁸ + d3`, and a product keeps
//! the digit pairs that matter:
//!
//! ```text
//! g1 = Σ a1·w1       g2 = Σ a1·w2 + a2·w1       g3 = Σ a1·w3 + a2·w2 + a3·w1
//! y  = sa · sw · (g1·2³² + g2·2²⁴ + g3·2¹⁶)
//! ```
//!
//! Each sum is exact in int32 (|g3| ≤ 3·K·2¹⁴ < 2³¹ for K up to [`MAX_K`]); the pairs left out
//! weigh 2⁻²⁴ of the largest term, as f32's rounding does. Six int8 tile products cost what
//! three bf16 ones do, and the weights take 3 bytes per value instead of 4.
//!
//! Layout, in 1 KB tiles of 16 rows × 64 bytes:
//! - weights `W` (n × k) are packed once at load: per 16-output block, per 64-wide K block,
//!   the three digit tiles, in the order the kernel reads them, so a layer is one forward
//!   stream (VNNI: tile row r holds K 4r..4r+3 of each of the 16 outputs);
//! - activations (m × k) are packed per call: per 16-row block, per K block, three digit tiles;
//! - the three sums accumulate in int32 tiles; each 16×16 tile is combined into the f32
//!   output (with the bias) as soon as its last K block is done, while it is still in L1.
//!
//! Loop order, for cache reuse: for each output block, for each chunk of [`CHUNK`] K blocks
//! (24 KB of weights, which stay in L1), every row block. While the first row block runs, the
//! next chunk of weights is prefetched, so the weights' stream from memory (the whole cost at
//! short texts) overlaps the products.

use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

/// Bytes in one tile.
const TILE: usize = 1024;
/// K values per K block (a tile row of int8).
const KB: usize = 64;
/// The longest input an int32 sum holds exactly.
pub const MAX_K: usize = 40_000;
/// K blocks per weight chunk kept in L1 across the row blocks (24 KB).
const CHUNK: usize = 8;
/// The largest fixed-point value: its top digit is then at most 127 after the lower two are
/// balanced into -128..=127.
const QMAX: f64 = 127.0 * 65536.0;

/// Whether this CPU has AMX-INT8 and the kernel lets this process use it (Linux asks each
/// process to request the 8 KB tile state once, with arch_prctl).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        // CPUID leaf 7: EDX bit 24 AMX-TILE, bit 25 AMX-INT8. (std's detection of these is
        // not stable yet.)
        let edx = __cpuid_count(7, 0).edx;
        if edx & (1 << 24) == 0 || edx & (1 << 25) == 0 {
            return false;
        }
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: a plain syscall with integer arguments.
        unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
    })
}

/// Palette 1, all 8 tiles 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

static CONFIG: TileConfig = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut t = 0;
    while t < 8 {
        c[16 + 2 * t] = 64;
        c[48 + t] = 16;
        t += 1;
    }
    TileConfig(c)
};

/// One cache line, so packed buffers are line-aligned (tile rows are lines).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

const ZERO: Line = Line([0; 64]);

fn zeroed(lines: usize) -> Vec<Line> {
    vec![ZERO; lines]
}

fn bytes(lines: &mut [Line]) -> &mut [u8] {
    // SAFETY: Line is 64 bytes with no padding.
    unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast::<u8>(), lines.len() * 64) }
}

/// Lanes of a 16-wide load that hold values, for the last short chunk of a row.
fn lanes(len: usize) -> u16 {
    if len >= 16 { !0 } else { (1u16 << len) - 1 }
}

/// A row's fixed-point scale (its largest |value| / QMAX), and the inverse in every lane (0 for
/// a row of zeros). Needs AVX-512, as every AMX CPU has.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
fn fixed_point(values: &[f32]) -> (f32, __m512) {
    let mut max = _mm512_setzero_ps();
    for c in values.chunks(16) {
        // SAFETY: the mask covers c's values only.
        let v = unsafe { _mm512_maskz_loadu_ps(lanes(c.len()), c.as_ptr()) };
        max = _mm512_max_ps(max, _mm512_abs_ps(v));
    }
    let max = _mm512_reduce_max_ps(max) as f64;
    let inverse = if max > 0.0 { (QMAX / max) as f32 } else { 0.0 };
    ((max / QMAX) as f32, _mm512_set1_ps(inverse))
}

/// Up to 16 values as their three digits (d1, d2, d3), zero past the end. Rounded to nearest
/// in f32: within one unit (2⁻²³ of the row's largest) of the fixed-point value.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
fn digits(chunk: &[f32], inverse: __m512) -> [[u8; 16]; 3] {
    let (b128, b255) = (_mm512_set1_epi32(128), _mm512_set1_epi32(255));
    // (q + 128) & 255 - 128: the low digit, balanced into -128..=127.
    let low = |q: __m512i| _mm512_sub_epi32(_mm512_and_si512(_mm512_add_epi32(q, b128), b255), b128);
    // SAFETY: the mask covers chunk's values only.
    let v = unsafe { _mm512_maskz_loadu_ps(lanes(chunk.len()), chunk.as_ptr()) };
    let q = _mm512_cvtps_epi32(_mm512_mul_ps(v, inverse));
    let d3 = low(q);
    let q = _mm512_srai_epi32::<8>(_mm512_sub_epi32(q, d3));
    let d2 = low(q);
    let d1 = _mm512_srai_epi32::<8>(_mm512_sub_epi32(q, d2));
    let mut out = [[0u8; 16]; 3];
    for (to, d) in out.iter_mut().zip([d1, d2, d3]) {
        // SAFETY: 16 bytes into a 16-byte array.
        unsafe { _mm_storeu_si128(to.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(d)) };
    }
    out
}

/// A weight matrix (n × k, row-major as in the checkpoint) packed for [`Packed::forward`].
pub struct Packed {
    data: Vec<Line>,
    /// Per output, its fixed-point scale and bias, padded to whole blocks of 16.
    scales: Vec<f32>,
    bias: Vec<f32>,
    n: usize,
    k: usize,
}

impl Packed {
    pub fn new(w: &[f32], bias: &[f32], n: usize, k: usize) -> Packed {
        assert!(available(), "AMX is not available");
        assert!(k <= MAX_K, "{k} inputs: an int32 sum holds {MAX_K}");
        // SAFETY: AMX-INT8 CPUs have AVX-512.
        let mut packed = unsafe { Packed::pack(w, n, k) };
        packed.bias = bias.to_vec();
        packed.bias.resize(n.div_ceil(16) * 16, 0.0);
        packed.scales.resize(n.div_ceil(16) * 16, 0.0);
        packed
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
    unsafe fn pack(w: &[f32], n: usize, k: usize) -> Packed {
        assert_eq!(w.len(), n * k);
        let (outs, blocks) = (n.div_ceil(16), k.div_ceil(KB));
        let mut data = zeroed(outs * blocks * 3 * TILE / 64);
        let flat = bytes(&mut data);
        let mut scales = Vec::with_capacity(n);
        for (row, values) in w.chunks_exact(k).enumerate() {
            let (scale, inverse) = fixed_point(values);
            scales.push(scale);
            for (c, chunk) in values.chunks(16).enumerate() {
                let d = digits(chunk, inverse);
                let tile = ((row / 16) * blocks + c / 4) * 3 * TILE + (row % 16) * 4;
                for i in 0..chunk.len() {
                    // VNNI: tile row r holds K 4r..4r+3 of each of the 16 outputs.
                    let kk = (c % 4) * 16 + i;
                    let at = tile + (kk / 4) * 64 + kk % 4;
                    for (limb, d) in d.iter().enumerate() {
                        flat[at + limb * TILE] = d[i];
                    }
                }
            }
        }
        Packed {
            data,
            scales,
            bias: vec![],
            n,
            k,
        }
    }

    /// `y = x · Wᵀ + bias` for `x` of `m` rows (m × k), `y` (m × n), both row-major. `threads` > 1
    /// splits the outputs between rayon's threads.
    pub fn forward(&self, x: &[f32], m: usize, y: &mut [f32], threads: usize) {
        assert!(x.len() >= m * self.k && y.len() >= m * self.n);
        let blocks = self.k.div_ceil(KB);
        let outs = self.n.div_ceil(16);
        let row_blocks = m.div_ceil(16);
        // SAFETY: AMX-INT8 CPUs have AVX-512.
        let (a, row_scales) = unsafe { pack_rows(x, m, self.k) };
        let run = Run {
            a: &a,
            b: &self.data,
            blocks,
            row_blocks,
            packed: self,
            row_scales: &row_scales,
        };
        let y = Out(y.as_mut_ptr());
        let parts = threads.clamp(1, outs);
        if parts == 1 {
            // SAFETY: AMX is available (a Packed exists only then); y holds m × n.
            unsafe { run.outputs(0..outs, y.0) };
        } else {
            rayon::scope(|s| {
                for p in 0..parts {
                    let range = outs * p / parts..outs * (p + 1) / parts;
                    let run = &run;
                    // SAFETY: as above; each part writes only its own output blocks' columns.
                    s.spawn(move |_| unsafe { run.outputs(range, { y }.0) });
                }
            });
        }
    }

    /// One 16×16 tile of y from its three sums (g1, g2, g3 tiles one after the other):
    /// y = sa · sw · (g1·2³² + g2·2²⁴ + g3·2¹⁶) + bias, for the rows that exist.
    ///
    /// # Safety
    /// The CPU has AVX-512; `y` holds rows × n f32.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
    unsafe fn combine(
        &self,
        sums: &[i32; 768],
        rows: std::ops::Range<usize>,
        row_scales: &[f32],
        out: usize,
        y: *mut f32,
    ) {
        let (two16, two8) = (_mm512_set1_ps(65536.0), _mm512_set1_ps(256.0));
        let cols = out * 16;
        let len = (self.n - cols).min(16);
        let mask = if len == 16 { !0 } else { (1u16 << len) - 1 };
        // SAFETY (loads): 16 values inside their arrays.
        let scale = unsafe { _mm512_loadu_ps(self.scales[cols..][..16].as_ptr()) };
        let bias = unsafe { _mm512_loadu_ps(self.bias[cols..][..16].as_ptr()) };
        for (r, row) in rows.enumerate() {
            let g = |at: usize| {
                _mm512_cvtepi32_ps(unsafe { _mm512_loadu_si512(sums[at + r * 16..][..16].as_ptr().cast()) })
            };
            // In f32: g1 rounds at 2⁻²⁴ of itself, within f32's own error on Σ|terms|.
            let sum = _mm512_add_ps(_mm512_fmadd_ps(g(0), two16, _mm512_mul_ps(g(256), two8)), g(512));
            let sa = _mm512_set1_ps(row_scales[row] * 65536.0);
            let v = _mm512_fmadd_ps(sum, _mm512_mul_ps(sa, scale), bias);
            // SAFETY: `len` f32 of row `row` inside y.
            unsafe { _mm512_mask_storeu_ps(y.add(row * self.n + cols), mask, v) };
        }
    }
}

#[derive(Clone, Copy)]
struct Out(*mut f32);

/// The g1, g2, g3 tiles of one row block, line-aligned.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Sums([i32; 768]);
// SAFETY: the threads given one write disjoint columns of y.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// x (m × k) as A tiles: per 16-row block, per K block, the three digit tiles. Zero-padded.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn pack_rows(x: &[f32], m: usize, k: usize) -> (Vec<Line>, Vec<f32>) {
    let blocks = k.div_ceil(KB);
    let mut out = zeroed(m.div_ceil(16) * blocks * 3 * TILE / 64);
    let flat = bytes(&mut out);
    let mut scales = Vec::with_capacity(m);
    for (row, values) in x[..m * k].chunks_exact(k).enumerate() {
        let (scale, inverse) = fixed_point(values);
        scales.push(scale);
        for (c, chunk) in values.chunks(16).enumerate() {
            let at = ((row / 16) * blocks + c / 4) * 3 * TILE + (row % 16) * 64 + (c % 4) * 16;
            for (limb, d) in digits(chunk, inverse).iter().enumerate() {
                flat[at + limb * TILE..][..16].copy_from_slice(d);
            }
        }
    }
    (out, scales)
}

struct Run<'a> {
    a: &'a [Line],
    b: &'a [Line],
    blocks: usize,
    row_blocks: usize,
    packed: &'a Packed,
    row_scales: &'a [f32],
}

impl Run<'_> {
    /// The output blocks `range` of y.
    ///
    /// # Safety
    /// AMX must be [`available`]; `y` must hold m × n f32.
    unsafe fn outputs(&self, range: std::ops::Range<usize>, y: *mut f32) {
        let a_block = self.blocks * 3 * TILE; // bytes per row block of A
        let a = self.a.as_ptr().cast::<u8>();
        let b = self.b.as_ptr().cast::<u8>();
        let m = self.row_scales.len();
        // The three sums of each row block for the output block in progress (L1-sized), each
        // combined into y as soon as its last K chunk is done.
        let mut sums = vec![Sums([0; 768]); self.row_blocks];
        unsafe {
            asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack));
            // One row block reuses no weights: its sums then stay in tiles for the whole K.
            let chunk = if self.row_blocks == 1 { self.blocks } else { CHUNK };
            for out in range {
                let mut k0 = 0;
                while k0 < self.blocks {
                    let n = chunk.min(self.blocks - k0);
                    let bk = b.add((out * self.blocks + k0) * 3 * TILE);
                    for (rb, sums) in sums.iter_mut().enumerate() {
                        Step {
                            a: a.add(rb * a_block + k0 * 3 * TILE),
                            b: bk,
                            blocks: n,
                            c: sums.0.as_mut_ptr().cast::<u8>(),
                            first: k0 == 0,
                            // The next chunk of weights follows this one in memory.
                            prefetch: (rb == 0).then(|| bk.wrapping_add(n * 3 * TILE)),
                        }
                        .run();
                        if k0 + n == self.blocks {
                            let rows = rb * 16..(rb * 16 + 16).min(m);
                            self.packed.combine(&sums.0, rows, self.row_scales, out, y);
                        }
                    }
                    k0 += n;
                }
            }
            asm!("tilerelease", options(nostack));
        }
    }
}

/// One 16-row block × one 16-output block over `blocks` K blocks: the sums g1, g2, g3 in
/// tmm0..2, A's digits in tmm3..5, W's in tmm6/7 (alternating, so a load overlaps a product).
struct Step {
    a: *const u8,
    b: *const u8,
    blocks: usize,
    /// The g1, g2, g3 tiles, one after the other.
    c: *mut u8,
    first: bool,
    prefetch: Option<*const u8>,
}

impl Step {
    #[inline(always)]
    unsafe fn run(&self) {
        let (s, c1) = (64usize, self.c);
        let (c2, c3) = (c1.wrapping_add(TILE), c1.wrapping_add(2 * TILE));
        unsafe {
            if self.first {
                asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", options(nostack));
            } else {
                asm!("tileloadd tmm0, [{c1} + {s}*1]", "tileloadd tmm1, [{c2} + {s}*1]", "tileloadd tmm2, [{c3} + {s}*1]",
                     c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3, s = in(reg) s, options(nostack));
            }
            let t = 64usize; // bytes per tile row
            for kb in 0..self.blocks {
                if let Some(p) = self.prefetch {
                    let p = p.wrapping_add(kb * 3 * TILE).cast::<i8>();
                    for line in 0..3 * TILE / 64 {
                        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(line * 64));
                    }
                }
                let a = self.a.add(kb * 3 * TILE);
                let b = self.b.add(kb * 3 * TILE);
                asm!(
                    "tileloadd tmm3, [{a} + {t}*1]",
                    "tileloadd tmm6, [{b} + {t}*1]",
                    "tdpbssd tmm0, tmm3, tmm6",
                    "tileloadd tmm4, [{a} + {t}*1 + 1024]",
                    "tdpbssd tmm1, tmm4, tmm6",
                    "tileloadd tmm7, [{b} + {t}*1 + 1024]",
                    "tdpbssd tmm1, tmm3, tmm7",
                    "tileloadd tmm5, [{a} + {t}*1 + 2048]",
                    "tdpbssd tmm2, tmm5, tmm6",
                    "tileloadd tmm6, [{b} + {t}*1 + 2048]",
                    "tdpbssd tmm2, tmm4, tmm7",
                    "tdpbssd tmm2, tmm3, tmm6",
                    a = in(reg) a, b = in(reg) b, t = in(reg) t, options(nostack),
                );
            }
            asm!("tilestored [{c1} + {s}*1], tmm0", "tilestored [{c2} + {s}*1], tmm1", "tilestored [{c3} + {s}*1], tmm2",
                 c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3, s = in(reg) s, options(nostack));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
            })
            .collect()
    }

    #[test]
    fn digits_rebuild_the_fixed_point_value_within_one_unit() {
        if !available() {
            eprintln!("no AMX (so no AVX-512 promised) on this CPU: nothing to check");
            return;
        }
        let values = [0.0f32, 1.0, -1.0, 0.3, -0.7, 1e-9, -0.999_999_9, 0.5 / 65536.0];
        // SAFETY: AMX CPUs have AVX-512.
        let (scale, d) = unsafe {
            let (scale, inverse) = fixed_point(&values);
            (scale, digits(&values, inverse).map(|d| d.map(|b| b as i8)))
        };
        for (i, v) in values.iter().enumerate() {
            let q = d[0][i] as f64 * 65536.0 + d[1][i] as f64 * 256.0 + d[2][i] as f64;
            assert!(
                (q * scale as f64 - *v as f64).abs() <= 1.01 * scale as f64,
                "{v}: {:?}",
                [d[0][i], d[1][i], d[2][i]]
            );
        }
        // SAFETY: as above.
        let (scale, zeros) = unsafe {
            let (scale, inverse) = fixed_point(&[0.0; 3]);
            (scale, digits(&[0.0; 3], inverse))
        };
        assert_eq!((scale, zeros), (0.0, [[0; 16]; 3]));
    }

    /// Against f64 sums, on shapes that are not multiples of the tiles, one and more threads.
    /// Fixed point with 23 bits per operand: within a few 2⁻²³ of Σ|terms| (f32: ~1e-7);
    /// a misplaced element would be off by whole terms.
    #[test]
    fn products_are_within_1e_6_of_the_sum_of_absolute_terms() {
        if !available() {
            eprintln!("no AMX on this CPU: nothing to check");
            return;
        }
        for &(m, n, k, threads) in &[(1, 2, 32, 1), (17, 40, 70, 1), (48, 96, 768, 1), (33, 200, 100, 3)] {
            let x = random(m * k, 1 + m as u64);
            let w: Vec<f32> = random(n * k, 7 + n as u64).iter().map(|v| v * 0.02).collect();
            let mut y = vec![f32::NAN; m * n];
            Packed::new(&w, &vec![0.0; n], n, k).forward(&x, m, &mut y, threads);
            let mut worst = 0f64;
            for i in 0..m {
                for j in 0..n {
                    let terms = (0..k).map(|t| x[i * k + t] as f64 * w[j * k + t] as f64);
                    let exact: f64 = terms.clone().sum();
                    let scale: f64 = terms.map(f64::abs).sum();
                    worst = worst.max((y[i * n + j] as f64 - exact).abs() / scale);
                }
            }
            eprintln!("{m}x{n}x{k}: {worst:e}");
            assert!(
                worst < 1e-6,
                "{m}x{n}x{k} on {threads} threads: error {worst:e} of the sum of |terms|"
            );
        }
    }
}
