//! The int8 matrix product of a dynamically quantized linear layer:
//! `y = dequantize(quantize(x) · W_q) + b`, with `x` quantized per row at run
//! time and `W` per output channel once at load.
//!
//! **Number formats.** A row of activations is quantized asymmetrically to
//! `u8` (`x ≈ (q − z)·s`, `z` the row's zero point, `0` exactly
//! representable), the full 8 bits. A weight column symmetrically to
//! `|q| ≤ 64` (`w ≈ q·s`), 129 levels, about 7 bits. The reason is AVX2's only
//! byte multiply, `vpmaddubsw`: it multiplies `u8` by `i8` and adds adjacent
//! pairs into *saturating* `i16`, so `2·255·|q_w|` must stay below 32,767.
//! fbgemm (PyTorch's `quantize_dynamic`) gives up the activations' top bit
//! instead (`reduce_range`: `u8` in 0..=127 against full `i8` weights); BERT's
//! activation rows carry outliers that make their steps the coarser ones, so
//! the bit goes to them here. No product saturates, so the `i32` sums are
//! exact: the result is the exact integer dot product, converted and scaled
//! once.
//!
//! **Kernels.** An AVX2 tile of 4 rows × 16 columns (eight `i32`
//! accumulators), chosen at run time, and a portable scalar one that computes
//! the same integers; both apply the same epilogue with the same float
//! operations in the same order (`(acc − z·Σq_w) as f32 · (s_x·s_w) + b`,
//! no fused multiply-add), so the two paths agree bit for bit.
//!
//! **Layout.** Weights are packed once into blocks of 16 columns; within a
//! block, for every group of 4 consecutive `k`, the 16 columns' 4 bytes each
//! (64 bytes: two AVX2 registers, each lane one column's 4 products). Rows of
//! activations are padded with zeros to a multiple of 4 (zero weights meet
//! them). Work is split over rayon's threads by blocks of rows, and of columns
//! when there are few rows.

use rayon::prelude::*;

/// Largest weight magnitude after quantization: `2·255·64 = 32,640` fits
/// `vpmaddubsw`'s saturating `i16` sums.
pub const WEIGHT_LEVELS: f32 = 64.0;
/// Columns of a packed block (two AVX2 registers of eight `i32`).
pub const BLOCK_COLS: usize = 16;
/// Consecutive `k` values in one 32-bit lane.
const GROUP: usize = 4;
/// Rows of one micro tile.
const TILE_ROWS: usize = 4;
/// Rows per parallel task (a multiple of [`TILE_ROWS`]).
const TASK_ROWS: usize = 32;

/// A weight matrix quantized per output channel and packed for the kernels.
#[derive(Debug, Clone)]
pub struct PackedWeight {
    /// Input features.
    k: usize,
    /// Output features.
    n: usize,
    /// `k` rounded up to a multiple of [`GROUP`], in groups.
    groups: usize,
    /// `[n / 16 blocks][groups][16 columns][4 k]`, zero padded.
    data: Vec<i8>,
    /// Per column (padded to whole blocks): scale, sum of the quantized
    /// weights (for the activations' zero point), bias.
    scales: Vec<f32>,
    col_sums: Vec<i32>,
    bias: Vec<f32>,
}

impl PackedWeight {
    /// Quantizes and packs `weight`, `[k, n]` row-major (burn's `Linear`
    /// layout, input features × output features), with an optional `[n]` bias.
    pub fn pack(weight: &[f32], k: usize, n: usize, bias: Option<&[f32]>) -> Self {
        assert_eq!(weight.len(), k * n, "weight is not [k, n]");
        let blocks = n.div_ceil(BLOCK_COLS);
        let padded_n = blocks * BLOCK_COLS;
        let groups = k.div_ceil(GROUP);
        let mut scales = vec![0.0f32; padded_n];
        for (j, scale) in scales.iter_mut().enumerate().take(n) {
            let amax = (0..k)
                .map(|i| weight[i * n + j].abs())
                .fold(0.0f32, f32::max);
            *scale = amax / WEIGHT_LEVELS;
        }
        let mut data = vec![0i8; blocks * groups * BLOCK_COLS * GROUP];
        let mut col_sums = vec![0i32; padded_n];
        for j in 0..n {
            let inv = if scales[j] > 0.0 {
                1.0 / scales[j]
            } else {
                0.0
            };
            let (block, col) = (j / BLOCK_COLS, j % BLOCK_COLS);
            for i in 0..k {
                let q = (weight[i * n + j] * inv)
                    .round_ties_even()
                    .clamp(-WEIGHT_LEVELS, WEIGHT_LEVELS) as i8;
                let (group, lane) = (i / GROUP, i % GROUP);
                data[((block * groups + group) * BLOCK_COLS + col) * GROUP + lane] = q;
                col_sums[j] += q as i32;
            }
        }
        let mut padded_bias = vec![0.0f32; padded_n];
        if let Some(b) = bias {
            assert_eq!(b.len(), n, "bias is not [n]");
            padded_bias[..n].copy_from_slice(b);
        }
        Self {
            k,
            n,
            groups,
            data,
            scales,
            col_sums,
            bias: padded_bias,
        }
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.k
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.n
    }

    /// Bytes held (the packed values and the per-column vectors).
    pub fn bytes(&self) -> usize {
        self.data.len() + 12 * self.scales.len()
    }

    /// The weights the kernel multiplies by, `q·s`, as `[k, n]` row-major.
    pub fn dequantized(&self) -> Vec<f32> {
        let mut w = vec![0.0f32; self.k * self.n];
        for j in 0..self.n {
            for i in 0..self.k {
                w[i * self.n + j] = self.quantized(i, j) as f32 * self.scales[j];
            }
        }
        w
    }

    /// The bias (zeros when the layer has none).
    pub fn bias(&self) -> &[f32] {
        &self.bias[..self.n]
    }

    fn quantized(&self, i: usize, j: usize) -> i8 {
        let (block, col) = (j / BLOCK_COLS, j % BLOCK_COLS);
        let (group, lane) = (i / GROUP, i % GROUP);
        self.data[((block * self.groups + group) * BLOCK_COLS + col) * GROUP + lane]
    }

    fn block(&self, block: usize) -> &[i8] {
        let len = self.groups * BLOCK_COLS * GROUP;
        &self.data[block * len..(block + 1) * len]
    }
}

/// Rows of activations quantized to `u8`, each with its scale and zero point.
#[derive(Debug, Clone)]
pub struct QuantizedRows {
    rows: usize,
    /// Row stride: `k` rounded up to a multiple of [`GROUP`] (zero padded).
    stride: usize,
    k: usize,
    data: Vec<u8>,
    scales: Vec<f32>,
    zero_points: Vec<i32>,
}

impl QuantizedRows {
    /// Quantizes `x`, `[rows, k]` row-major: each row over its own range
    /// `[min(x, 0), max(x, 0)]` in 255 steps.
    pub fn quantize(x: &[f32], rows: usize, k: usize) -> Self {
        Self::quantize_with(x, rows, k, Kernel::detect())
    }

    /// [`Self::quantize`] with the given kernel's code (both compute the same
    /// bytes for finite inputs).
    pub fn quantize_with(x: &[f32], rows: usize, k: usize, kernel: Kernel) -> Self {
        assert!(
            kernel.available(),
            "{kernel:?} is not available on this CPU"
        );
        assert_eq!(x.len(), rows * k, "x is not [rows, k]");
        let stride = k.div_ceil(GROUP) * GROUP;
        let mut data = vec![0u8; rows * stride];
        let mut params = vec![(0.0f32, 0i32); rows];
        let per_task = (TASK_ROWS * 4).max(1);
        data.par_chunks_mut(stride * per_task)
            .zip(params.par_chunks_mut(per_task))
            .enumerate()
            .for_each(|(t, (out, params))| {
                for (r, (q, p)) in out.chunks_mut(stride).zip(params).enumerate() {
                    let row = t * per_task + r;
                    *p = quantize_row(&x[row * k..(row + 1) * k], &mut q[..k], kernel);
                }
            });
        let (scales, zero_points) = params.into_iter().unzip();
        Self {
            rows,
            stride,
            k,
            data,
            scales,
            zero_points,
        }
    }

    /// The values the kernel multiplies, `(q − z)·s`, as `[rows, k]`.
    pub fn dequantized(&self) -> Vec<f32> {
        let mut x = Vec::with_capacity(self.rows * self.k);
        for r in 0..self.rows {
            let (s, z) = (self.scales[r], self.zero_points[r]);
            let row = &self.data[r * self.stride..r * self.stride + self.k];
            x.extend(row.iter().map(|&q| (q as i32 - z) as f32 * s));
        }
        x
    }
}

/// Quantizes one row into `out`; returns its scale and zero point.
fn quantize_row(x: &[f32], out: &mut [u8], kernel: Kernel) -> (f32, i32) {
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx2 {
        // SAFETY: `quantize_with` checked that the CPU has AVX2.
        return unsafe { avx2::quantize_row(x, out) };
    }
    quantize_row_portable(x, out)
}

/// [`quantize_row`] in plain Rust: IEEE operations only, so that it
/// computes the same bytes as the AVX2 version.
fn quantize_row_portable(x: &[f32], out: &mut [u8]) -> (f32, i32) {
    let min = x.iter().fold(0.0f32, |m, &v| m.min(v));
    let max = x.iter().fold(0.0f32, |m, &v| m.max(v));
    let (scale, zero) = row_params(min, max);
    quantize_values(x, out, scale, zero);
    (scale, zero as i32)
}

/// A row's scale and zero point from its range (which includes 0).
fn row_params(min: f32, max: f32) -> (f32, f32) {
    let mut scale = (max - min) / 255.0;
    if !(scale > 0.0 && scale.is_finite()) {
        // An all-zero row (or one with non-finite values): any scale does.
        scale = 1.0;
    }
    let zero = (-min / scale).round_ties_even().clamp(0.0, 255.0);
    (scale, zero)
}

fn quantize_values(x: &[f32], out: &mut [u8], scale: f32, zero: f32) {
    let inv = 1.0 / scale;
    for (q, &v) in out.iter_mut().zip(x) {
        *q = ((v * inv).round_ties_even() + zero).clamp(0.0, 255.0) as u8;
    }
}

/// Which kernel runs the product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Portable Rust, any CPU.
    Scalar,
    /// x86-64 AVX2 (`vpmaddubsw`, `vpmaddwd`).
    Avx2,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                return Self::Avx2;
            }
        }
        Self::Scalar
    }

    /// Whether this CPU can run the kernel.
    pub fn available(self) -> bool {
        self == Self::Scalar || Self::detect() == Self::Avx2
    }
}

/// What the output step applies to `x·W + b`, in the same pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Nothing: the linear layer alone.
    Identity,
    /// BERT's `gelu` (the intermediate layer), computed as burn-flex's
    /// vendored GELU computes it ([`gelu`]), so that fusing it changes no bit.
    Gelu,
}

/// `y = x·W + b` for quantized rows `x`, `[rows, n]` row-major.
pub fn matmul(x: &QuantizedRows, w: &PackedWeight, kernel: Kernel) -> Vec<f32> {
    matmul_act(x, w, kernel, Activation::Identity)
}

/// `y = act(x·W + b)`: [`matmul`] with the activation applied while each
/// tile is stored, instead of in another pass over the output.
pub fn matmul_act(
    x: &QuantizedRows,
    w: &PackedWeight,
    kernel: Kernel,
    act: Activation,
) -> Vec<f32> {
    assert_eq!(x.k, w.k, "x has {} features, the weight {}", x.k, w.k);
    assert!(
        kernel.available(),
        "{kernel:?} is not available on this CPU"
    );
    let (rows, n) = (x.rows, w.n);
    if rows == 0 || n == 0 {
        return Vec::new();
    }
    // Not zeroed first: the tiles below write every element (a memset of
    // the output was 3% of a MiniLM forward pass).
    let mut out: Vec<std::mem::MaybeUninit<f32>> = Vec::with_capacity(rows * n);
    // SAFETY: `MaybeUninit` needs no initialisation.
    unsafe { out.set_len(rows * n) };
    let blocks = n.div_ceil(BLOCK_COLS);
    let row_tasks = rows.div_ceil(TASK_ROWS);
    // Few rows (a single request): split the columns too, so that every
    // thread has work.
    let wanted = 4 * rayon::current_num_threads();
    let col_tasks = wanted.div_ceil(row_tasks).clamp(1, blocks);
    let blocks_per_task = blocks.div_ceil(col_tasks);
    let target = OutPtr(out.as_mut_ptr().cast::<f32>());
    (0..row_tasks * col_tasks).into_par_iter().for_each(|t| {
        let (rt, ct) = (t / col_tasks, t % col_tasks);
        let row_range = rt * TASK_ROWS..((rt + 1) * TASK_ROWS).min(rows);
        let block_range = ct * blocks_per_task..((ct + 1) * blocks_per_task).min(blocks);
        for block in block_range {
            let columns = Columns::of(w, block);
            for r0 in row_range.clone().step_by(TILE_ROWS) {
                let tile_rows = (row_range.end - r0).min(TILE_ROWS);
                let tile = Tile {
                    x,
                    w,
                    r0,
                    rows: tile_rows,
                    block,
                };
                let acc = self::tile(&tile, kernel);
                // SAFETY: tasks cover disjoint (row, column block) rectangles
                // of `out`, which outlives the parallel loop.
                unsafe { store(&acc, &tile, &columns, kernel, act, &target) };
            }
        }
    });
    // SAFETY: the tasks cover every (row, column block) of `out`, and each
    // tile stores all of its rows and columns, so every element is written;
    // `MaybeUninit<f32>` and `f32` have the same layout.
    let mut out = std::mem::ManuallyDrop::new(out);
    unsafe { Vec::from_raw_parts(out.as_mut_ptr().cast::<f32>(), out.len(), out.capacity()) }
}

/// The output buffer, shared by tasks that write disjoint parts of it.
struct OutPtr(*mut f32);
// SAFETY: every task writes its own rectangle only.
unsafe impl Sync for OutPtr {}

/// Integer accumulators of one tile, `[row][column]`.
type Acc = [[i32; BLOCK_COLS]; TILE_ROWS];

/// Where a tile sits: rows `r0..r0 + rows` of `x`, column block `block`.
struct Tile<'a> {
    x: &'a QuantizedRows,
    w: &'a PackedWeight,
    r0: usize,
    rows: usize,
    block: usize,
}

/// The per-column parameters of one block's output step (borrowed from the
/// packed weight, not copied per tile).
struct Columns<'a> {
    scales: &'a [f32; BLOCK_COLS],
    sums: &'a [i32; BLOCK_COLS],
    bias: &'a [f32; BLOCK_COLS],
}

impl<'a> Columns<'a> {
    fn of(w: &'a PackedWeight, block: usize) -> Self {
        let c = block * BLOCK_COLS..(block + 1) * BLOCK_COLS;
        Self {
            scales: w.scales[c.clone()].try_into().unwrap(),
            sums: w.col_sums[c.clone()].try_into().unwrap(),
            bias: w.bias[c].try_into().unwrap(),
        }
    }
}

fn tile(t: &Tile<'_>, kernel: Kernel) -> Acc {
    let Tile {
        x,
        w,
        r0,
        rows,
        block,
    } = *t;
    // Rows past the end repeat the first one (their results are not stored).
    let row = |r: usize| {
        let r = if r < rows { r0 + r } else { r0 };
        &x.data[r * x.stride..(r + 1) * x.stride]
    };
    let a = [row(0), row(1), row(2), row(3)];
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `matmul` checked that the CPU has AVX2.
        Kernel::Avx2 => unsafe { avx2::tile(a, w.block(block), w.groups) },
        _ => scalar_tile(a, w.block(block), w.groups),
    }
}

fn scalar_tile(a: [&[u8]; TILE_ROWS], packed: &[i8], groups: usize) -> Acc {
    let mut acc = [[0i32; BLOCK_COLS]; TILE_ROWS];
    for g in 0..groups {
        let wg = &packed[g * BLOCK_COLS * GROUP..(g + 1) * BLOCK_COLS * GROUP];
        for (row, acc) in a.iter().zip(acc.iter_mut()) {
            let ag = &row[g * GROUP..(g + 1) * GROUP];
            for (c, acc) in acc.iter_mut().enumerate() {
                let wc = &wg[c * GROUP..(c + 1) * GROUP];
                *acc += ag
                    .iter()
                    .zip(wc)
                    .map(|(&a, &w)| a as i32 * w as i32)
                    .sum::<i32>();
            }
        }
    }
    acc
}

/// Dequantizes a tile, adds the bias, applies `act` and writes it to `out`.
///
/// # Safety
/// `out` points to `[x.rows, w.n]` floats, and no other thread writes this
/// tile's rectangle.
unsafe fn store(
    acc: &Acc,
    tile: &Tile<'_>,
    columns: &Columns<'_>,
    kernel: Kernel,
    act: Activation,
    out: &OutPtr,
) {
    let Tile {
        x,
        w,
        r0,
        rows,
        block,
    } = *tile;
    let c0 = block * BLOCK_COLS;
    let cols = (w.n - c0).min(BLOCK_COLS);
    for (r, acc) in acc.iter().enumerate().take(rows) {
        let (s, z) = (x.scales[r0 + r], x.zero_points[r0 + r]);
        let mut y = match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => avx2::epilogue(acc, s, z, columns),
            _ => scalar_epilogue(acc, s, z, columns),
        };
        if act == Activation::Gelu {
            match kernel {
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx2 => avx2::gelu_block(&mut y),
                _ => y.iter_mut().for_each(|v| *v = gelu(*v)),
            }
        }
        let dst = out.0.add((r0 + r) * w.n + c0);
        std::ptr::copy_nonoverlapping(y.as_ptr(), dst, cols);
    }
}

fn scalar_epilogue(acc: &[i32; BLOCK_COLS], s: f32, z: i32, c: &Columns<'_>) -> [f32; BLOCK_COLS] {
    std::array::from_fn(|j| (acc[j] - z * c.sums[j]) as f32 * (s * c.scales[j]) + c.bias[j])
}

/// `0.5·x·(1 + erf(x/√2))` with the same f32 operations, in the same order,
/// as burn-flex's GELU (`vendor/burn-flex/src/ops/activation.rs`,
/// `fast_gelu`), which the model's unfused `gelu` runs on Flex: Rust does not
/// contract `a·b + c` into fused multiply-adds, so every vector width gives
/// the same bits and the fused output equals `gelu(x·W + b)` exactly (the
/// int8 test checks it against burn's `gelu`).
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    use std::f32::consts::{FRAC_1_SQRT_2, LOG2_E};
    // exp(v) for v ≤ 0: v = n·ln2 + r, Taylor to r⁷, 2ⁿ in the exponent bits.
    let exp_nonpositive = |v: f32| {
        const ROUND: f32 = 12_582_912.0;
        let v = v.max(-87.0);
        let n = (v * LOG2_E + ROUND) - ROUND;
        let r = (v - n * 0.693_145_75) - n * 1.428_606_8e-6;
        let p = 1.0
            + r * (1.0
                + r * (0.5
                    + r * (1.0 / 6.0
                        + r * (1.0 / 24.0
                            + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
        p * f32::from_bits((((n as i32) + 127) as u32) << 23)
    };
    // erf by Abramowitz & Stegun 7.1.26.
    let erf = |x: f32| {
        let a = x.abs();
        let t = 1.0 / (1.0 + 0.327_591_1 * a);
        let poly = t
            * (0.254_829_6
                + t * (-0.284_496_72 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
        (1.0 - poly * exp_nonpositive(-a * a)).copysign(x)
    };
    0.5 * x * (1.0 + erf(x * FRAC_1_SQRT_2))
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Acc, Columns, BLOCK_COLS, GROUP, TILE_ROWS};

    /// [`super::quantize_row_portable`] eight values at a time: the same
    /// range, scale and zero point, and the same bytes for finite inputs
    /// (`vcvtps2dq` rounds half to even, as `round_ties_even`; the packs
    /// saturate to 0..=255, as the clamp).
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn quantize_row(x: &[f32], out: &mut [u8]) -> (f32, i32) {
        let n = x.len();
        let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 8 <= n {
            let v = _mm256_loadu_ps(x.as_ptr().add(i));
            lo = _mm256_min_ps(lo, v);
            hi = _mm256_max_ps(hi, v);
            i += 8;
        }
        let (mut l, mut h) = ([0.0f32; 8], [0.0f32; 8]);
        _mm256_storeu_ps(l.as_mut_ptr(), lo);
        _mm256_storeu_ps(h.as_mut_ptr(), hi);
        let min = x[i..].iter().chain(&l).fold(0.0f32, |m, &v| m.min(v));
        let max = x[i..].iter().chain(&h).fold(0.0f32, |m, &v| m.max(v));
        let (scale, zero) = super::row_params(min, max);
        let inv = _mm256_set1_ps(1.0 / scale);
        let z = _mm256_set1_epi32(zero as i32);
        let q = |at: usize| {
            let v = _mm256_mul_ps(_mm256_loadu_ps(x.as_ptr().add(at)), inv);
            _mm256_add_epi32(_mm256_cvtps_epi32(v), z)
        };
        let mut i = 0;
        while i + 32 <= n {
            let ab = _mm256_packs_epi32(q(i), q(i + 8));
            let cd = _mm256_packs_epi32(q(i + 16), q(i + 24));
            // The packs interleave 128-bit lanes; this puts them back in order.
            let bytes = _mm256_permutevar8x32_epi32(
                _mm256_packus_epi16(ab, cd),
                _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7),
            );
            _mm256_storeu_si256(out.as_mut_ptr().add(i) as *mut __m256i, bytes);
            i += 32;
        }
        super::quantize_values(&x[i..], &mut out[i..], scale, zero);
        (scale, zero as i32)
    }

    /// One tile: four rows against one block of sixteen columns.
    ///
    /// # Safety
    /// The CPU has AVX2; every row holds `groups·4` bytes and `packed`
    /// `groups·64`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn tile(a: [&[u8]; TILE_ROWS], packed: &[i8], groups: usize) -> Acc {
        debug_assert!(a.iter().all(|r| r.len() >= groups * GROUP));
        debug_assert!(packed.len() >= groups * BLOCK_COLS * GROUP);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_si256(); 2]; TILE_ROWS];
        let w = packed.as_ptr();
        for g in 0..groups {
            let w0 = _mm256_loadu_si256(w.add(g * 64) as *const __m256i);
            let w1 = _mm256_loadu_si256(w.add(g * 64 + 32) as *const __m256i);
            for r in 0..TILE_ROWS {
                // Four activations of row r, the same in every lane.
                let four = (a[r].as_ptr().add(g * GROUP) as *const i32).read_unaligned();
                let x = _mm256_set1_epi32(four);
                // u8·i8 pairs summed to i16 (no saturation: see the module
                // docs), then pairs of those to i32.
                let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(x, w0), ones);
                let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(x, w1), ones);
                acc[r][0] = _mm256_add_epi32(acc[r][0], p0);
                acc[r][1] = _mm256_add_epi32(acc[r][1], p1);
            }
        }
        let mut out = [[0i32; BLOCK_COLS]; TILE_ROWS];
        for r in 0..TILE_ROWS {
            _mm256_storeu_si256(out[r].as_mut_ptr() as *mut __m256i, acc[r][0]);
            _mm256_storeu_si256(out[r].as_mut_ptr().add(8) as *mut __m256i, acc[r][1]);
        }
        out
    }

    /// [`super::scalar_epilogue`] eight lanes at a time, the same operations.
    pub(super) fn epilogue(
        acc: &[i32; BLOCK_COLS],
        s: f32,
        z: i32,
        c: &Columns<'_>,
    ) -> [f32; BLOCK_COLS] {
        // SAFETY: only called when `matmul` found AVX2.
        unsafe { epilogue_avx2(acc, s, z, c) }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn epilogue_avx2(
        acc: &[i32; BLOCK_COLS],
        s: f32,
        z: i32,
        c: &Columns<'_>,
    ) -> [f32; BLOCK_COLS] {
        let mut y = [0.0f32; BLOCK_COLS];
        let (s, z) = (_mm256_set1_ps(s), _mm256_set1_epi32(z));
        for h in [0, 8] {
            let a = _mm256_loadu_si256(acc.as_ptr().add(h) as *const __m256i);
            let sums = _mm256_loadu_si256(c.sums.as_ptr().add(h) as *const __m256i);
            let exact = _mm256_sub_epi32(a, _mm256_mullo_epi32(z, sums));
            let scale = _mm256_mul_ps(s, _mm256_loadu_ps(c.scales.as_ptr().add(h)));
            let v = _mm256_mul_ps(_mm256_cvtepi32_ps(exact), scale);
            let v = _mm256_add_ps(v, _mm256_loadu_ps(c.bias.as_ptr().add(h)));
            _mm256_storeu_ps(y.as_mut_ptr().add(h), v);
        }
        y
    }

    /// [`super::gelu`] on a block, compiled for AVX2 so that the loop
    /// vectorises (as burn-flex compiles its GELU; the same bits).
    pub(super) fn gelu_block(y: &mut [f32; BLOCK_COLS]) {
        // SAFETY: only called when `matmul` found AVX2.
        unsafe { gelu_avx2(y) }
    }

    // AVX2 alone (the kernel checks no more); without contraction FMA would
    // not change the operations anyway.
    #[target_feature(enable = "avx2")]
    unsafe fn gelu_avx2(y: &mut [f32; BLOCK_COLS]) {
        for v in y.iter_mut() {
            *v = super::gelu(*v);
        }
    }
}
