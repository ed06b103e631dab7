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
//! **Kernels.** A tile of 4 rows × 16 columns in AVX2 (eight `i32`
//! accumulators), or of 4 rows × 32 columns in AVX-512 VNNI (`vpdpbusd`,
//! where the CPU has it: Intel from Cascade Lake, AMD from Zen 4), the best
//! chosen at run time, and a portable scalar one. Each kernel's output step
//! (dequantize, bias, GELU, store) is compiled into the same function as its
//! tile; the SIMD kernels dequantize with AVX2 intrinsics. All compute the same exact integers (VNNI
//! does not saturate at all, but the weights keep the AVX2 range so that
//! every CPU gives the same results) and apply the same epilogue with the
//! same float operations in the same order
//! (`(acc − z·Σq_w) as f32 · (s_x·s_w) + b`, no fused multiply-add), so the
//! paths agree bit for bit.
//!
//! **Layout.** Weights are packed once into blocks of 16 columns; within a
//! block, for every group of 4 consecutive `k`, the 16 columns' 4 bytes each
//! (64 bytes: two AVX2 registers or one AVX-512 register, each 32-bit lane
//! one column's 4 products). Rows of activations are padded with zeros to a
//! multiple of 4 (zero weights meet them). Work is split over rayon's
//! threads by blocks of rows, and of columns when there are few rows.

use rayon::prelude::*;

use crate::cpu::{filled, par_tasks, OutPtr};

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
    if kernel.uses_avx2() {
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
    /// x86-64 AVX-512 VNNI (`vpdpbusd`: 64 `u8·i8` products summed into 16
    /// `i32` in one instruction). Its row quantizer and output step are the
    /// AVX2 ones (every AVX-512 CPU has AVX2).
    Avx512Vnni,
}

impl Kernel {
    /// Every kernel, slowest first.
    pub const ALL: [Kernel; 3] = [Self::Scalar, Self::Avx2, Self::Avx512Vnni];

    /// The fastest kernel this CPU runs (AVX2 at most under
    /// `ZHBERT_CPU_CAP=avx2`).
    pub fn detect() -> Self {
        Self::ALL
            .into_iter()
            .rev()
            .filter(|k| *k != Self::Avx512Vnni || crate::cpu::avx512f())
            .find(|k| k.available())
            .unwrap_or(Self::Scalar)
    }

    /// Whether this CPU can run the kernel.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Self::Scalar => true,
                Self::Avx2 => has!("avx2"),
                Self::Avx512Vnni => {
                    has!("avx2") && has!("avx512f") && has!("avx512bw") && has!("avx512vnni")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Self::Scalar
        }
    }

    /// Whether the AVX2 row quantizer applies (the VNNI kernel uses it too).
    fn uses_avx2(self) -> bool {
        matches!(self, Self::Avx2 | Self::Avx512Vnni)
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
    let blocks = n.div_ceil(BLOCK_COLS);
    // SAFETY: the tasks cover every (row, column block) of the output once,
    // and each tile stores all of its rows and columns.
    unsafe {
        filled(rows * n, |target| {
            par_tasks(rows, blocks, TASK_ROWS, |row_range, block_range| {
                // Two column blocks at a time: the VNNI tile computes them together.
                for block in block_range.clone().step_by(2) {
                    let pair = block + 1 < block_range.end;
                    let columns = [Columns::of(w, block), Columns::of(w, block + pair as usize)];
                    for r0 in row_range.clone().step_by(TILE_ROWS) {
                        let tile_rows = (row_range.end - r0).min(TILE_ROWS);
                        let tile = Tile {
                            x,
                            w,
                            r0,
                            rows: tile_rows,
                            block,
                        };
                        // SAFETY: `kernel` is available (checked above);
                        // tasks cover disjoint rectangles of the output.
                        tile_pair(&tile, pair, &columns, kernel, act, target);
                    }
                }
            })
        })
    }
}

/// Integer accumulators of one tile, `[row][column]`.
type Acc = [[i32; BLOCK_COLS]; TILE_ROWS];
/// The output values of one tile, `[row][column]`.
type Values = [[f32; BLOCK_COLS]; TILE_ROWS];
/// Each row's scale and zero point.
type RowParams = [(f32, i32); TILE_ROWS];

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

/// Computes and stores the tile at `t` and, when `pair`, the one in the
/// next column block, with `kernel`'s code.
///
/// # Safety
/// `kernel` is available; as [`store`].
unsafe fn tile_pair(
    t: &Tile<'_>,
    pair: bool,
    columns: &[Columns<'_>; 2],
    kernel: Kernel,
    act: Activation,
    out: &OutPtr,
) {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512Vnni => avx512::tile_pair(t, pair, columns, act, out),
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => avx2::tile_pair(t, pair, columns, act, out),
        _ => tile_pair_with(
            t,
            pair,
            columns,
            act,
            out,
            |a, packed, groups| {
                [
                    scalar_tile(a, packed[0], groups),
                    scalar_tile(a, packed[1], groups),
                ]
            },
            dequantize,
        ),
    }
}

/// [`tile_pair`] with the product `product(rows, [block, next block],
/// groups)` and the tile's dequantization `dequantize`. Inlined into each
/// kernel's version, so that the output step (the GELU included) is
/// compiled for that kernel's vectors.
///
/// # Safety
/// As [`store`]; `product` may rely on the rows holding `groups·4` bytes
/// and the blocks `groups·64`.
#[inline(always)]
unsafe fn tile_pair_with(
    t: &Tile<'_>,
    pair: bool,
    columns: &[Columns<'_>; 2],
    act: Activation,
    out: &OutPtr,
    product: impl FnOnce([&[u8]; TILE_ROWS], [&[i8]; 2], usize) -> [Acc; 2],
    dequantize: impl Fn(&Acc, &RowParams, &Columns<'_>) -> Values,
) {
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
    // Without a pair, the second product repeats the first, unstored.
    let packed = [w.block(block), w.block(block + pair as usize)];
    let accs = product(a, packed, w.groups);
    store(&accs[0], t, &columns[0], act, out, &dequantize);
    if pair {
        let next = Tile {
            block: block + 1,
            ..*t
        };
        store(&accs[1], &next, &columns[1], act, out, &dequantize);
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
#[inline(always)]
unsafe fn store(
    acc: &Acc,
    tile: &Tile<'_>,
    columns: &Columns<'_>,
    act: Activation,
    out: &OutPtr,
    dequantize: &impl Fn(&Acc, &RowParams, &Columns<'_>) -> Values,
) {
    let Tile {
        x,
        w,
        r0,
        rows,
        block,
    } = *tile;
    let c0 = block * BLOCK_COLS;
    // Rows past the end get the first row's parameters; they are not stored.
    let mut params: RowParams = [(0.0, 0); TILE_ROWS];
    for (r, p) in params.iter_mut().enumerate() {
        let r = if r < rows { r0 + r } else { r0 };
        *p = (x.scales[r], x.zero_points[r]);
    }
    let mut ys = dequantize(acc, &params, columns);
    if act == Activation::Gelu {
        // All rows at once: four independent vectors (one at a time, the
        // GELU waited on its own long chain of dependent operations).
        ys.as_flattened_mut().iter_mut().for_each(|v| *v = gelu(*v));
    }
    let cols = (w.n - c0).min(BLOCK_COLS);
    for (r, y) in ys.iter().enumerate().take(rows) {
        let dst = out.0.add((r0 + r) * w.n + c0);
        if cols == BLOCK_COLS {
            // One fixed-size store (a copy of run-time length would be a
            // call into libc's `memcpy` per 16 values: 10% of an int8
            // forward pass).
            dst.cast::<[f32; BLOCK_COLS]>().write_unaligned(*y);
        } else {
            std::ptr::copy_nonoverlapping(y.as_ptr(), dst, cols);
        }
    }
}

/// A tile's values before the activation, `(acc − z·Σq_w) as f32 · (s_x·s_w)
/// + b`, in plain Rust ([`avx2::dequantize`] computes the same bits).
#[inline(always)]
fn dequantize(acc: &Acc, params: &RowParams, c: &Columns<'_>) -> Values {
    let mut ys: Values = [[0.0; BLOCK_COLS]; TILE_ROWS];
    for ((y, acc), &(s, z)) in ys.iter_mut().zip(acc).zip(params) {
        for j in 0..BLOCK_COLS {
            y[j] = (acc[j] - z * c.sums[j]) as f32 * (s * c.scales[j]) + c.bias[j];
        }
    }
    ys
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
        let rounded = v * LOG2_E + ROUND;
        let n = rounded - ROUND;
        let r = (v - n * 0.693_145_75) - n * 1.428_606_8e-6;
        let p = 1.0
            + r * (1.0
                + r * (0.5
                    + r * (1.0 / 6.0
                        + r * (1.0 / 24.0
                            + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
        // `n as i32` read from the mantissa bits (the same integer: a
        // saturating conversion does not vectorise).
        let n_int = rounded.to_bits() as i32 - ROUND.to_bits() as i32;
        p * f32::from_bits(((n_int + 127) as u32) << 23)
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

    use super::{
        Acc, Activation, Columns, OutPtr, RowParams, Tile, Values, BLOCK_COLS, GROUP, TILE_ROWS,
    };

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
    #[inline]
    unsafe fn tile(a: [&[u8]; TILE_ROWS], packed: &[i8], groups: usize) -> Acc {
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

    /// [`super::tile_pair`] compiled for AVX2: the output step (epilogue,
    /// GELU) vectorises eight lanes at a time with the same operations as the
    /// scalar code (Rust does not contract them into fused multiply-adds),
    /// so the same bits.
    ///
    /// # Safety
    /// The CPU has AVX2; as [`super::store`].
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn tile_pair(
        t: &Tile<'_>,
        pair: bool,
        columns: &[Columns<'_>; 2],
        act: Activation,
        out: &OutPtr,
    ) {
        super::tile_pair_with(
            t,
            pair,
            columns,
            act,
            out,
            |a, packed, groups| [tile(a, packed[0], groups), tile(a, packed[1], groups)],
            |acc, params, c| dequantize(acc, params, c),
        )
    }

    /// [`super::dequantize`] eight lanes at a time, with the same operations
    /// in the same order (`vcvtdq2ps` rounds to nearest, as `as f32`; no
    /// fused multiply-add), so the same bits. Written out because the
    /// compiler's own vectorisation of the plain loop, inlined here, gathered
    /// the four rows' parameters lane by lane (`vpinsrd`, `vinsertps`).
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) unsafe fn dequantize(acc: &Acc, params: &RowParams, c: &Columns<'_>) -> Values {
        let mut ys: Values = [[0.0; BLOCK_COLS]; TILE_ROWS];
        for ((y, acc), &(s, z)) in ys.iter_mut().zip(acc).zip(params) {
            let (s, z) = (_mm256_set1_ps(s), _mm256_set1_epi32(z));
            for h in (0..BLOCK_COLS).step_by(8) {
                let load_i = |v: &[i32; BLOCK_COLS]| _mm256_loadu_si256(v.as_ptr().add(h).cast());
                let load_f = |v: &[f32; BLOCK_COLS]| _mm256_loadu_ps(v.as_ptr().add(h));
                let shifted = _mm256_sub_epi32(load_i(acc), _mm256_mullo_epi32(z, load_i(c.sums)));
                let scaled = _mm256_mul_ps(
                    _mm256_cvtepi32_ps(shifted),
                    _mm256_mul_ps(s, load_f(c.scales)),
                );
                _mm256_storeu_ps(y.as_mut_ptr().add(h), _mm256_add_ps(scaled, load_f(c.bias)));
            }
        }
        ys
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Acc, Activation, Columns, OutPtr, Tile, BLOCK_COLS, GROUP, TILE_ROWS};

    /// [`super::avx2::tile`] with `vpdpbusd`, for two column blocks at once:
    /// a group's 16 columns × 4 `k` are one 64-byte register, so a row's
    /// step is one broadcast of its four activations and two instructions,
    /// one per block. The eight accumulators are independent, so that
    /// consecutive `vpdpbusd` do not wait on each other's result, and each
    /// broadcast serves two of them. `packed` may name the same block twice.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW and VNNI; every row holds `groups·4` bytes
    /// and each block `groups·64`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn tiles(a: [&[u8]; TILE_ROWS], packed: [&[i8]; 2], groups: usize) -> [Acc; 2] {
        debug_assert!(a.iter().all(|r| r.len() >= groups * GROUP));
        debug_assert!(packed
            .iter()
            .all(|p| p.len() >= groups * BLOCK_COLS * GROUP));
        let mut acc = [[_mm512_setzero_si512(); 2]; TILE_ROWS];
        let (p0, p1) = (packed[0].as_ptr(), packed[1].as_ptr());
        for g in 0..groups {
            let w0 = _mm512_loadu_si512(p0.add(g * 64) as *const _);
            let w1 = _mm512_loadu_si512(p1.add(g * 64) as *const _);
            for r in 0..TILE_ROWS {
                // Four activations of row r, the same in every lane.
                let four = (a[r].as_ptr().add(g * GROUP) as *const i32).read_unaligned();
                let x = _mm512_set1_epi32(four);
                acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], x, w0);
                acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], x, w1);
            }
        }
        let mut out = [[[0i32; BLOCK_COLS]; TILE_ROWS]; 2];
        for r in 0..TILE_ROWS {
            for b in 0..2 {
                _mm512_storeu_si512(out[b][r].as_mut_ptr() as *mut _, acc[r][b]);
            }
        }
        out
    }

    /// [`super::tile_pair`] compiled for AVX-512 VNNI: the output step
    /// sixteen lanes at a time, the same operations, so the same bits as the
    /// AVX2 and scalar versions.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW and VNNI; as [`super::store`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile_pair(
        t: &Tile<'_>,
        pair: bool,
        columns: &[Columns<'_>; 2],
        act: Activation,
        out: &OutPtr,
    ) {
        super::tile_pair_with(
            t,
            pair,
            columns,
            act,
            out,
            |a, packed, groups| tiles(a, packed, groups),
            // Every AVX-512 CPU has AVX2.
            |acc, params, c| super::avx2::dequantize(acc, params, c),
        )
    }
}

#[cfg(test)]
mod tests {
    /// [`super::gelu`] as it was written before the exponent was read from
    /// the mantissa bits: with the saturating `n as i32`.
    fn gelu_with_cast(x: f32) -> f32 {
        use std::f32::consts::{FRAC_1_SQRT_2, LOG2_E};
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
        let y = x * FRAC_1_SQRT_2;
        let a = y.abs();
        let t = 1.0 / (1.0 + 0.327_591_1 * a);
        let poly = t
            * (0.254_829_6
                + t * (-0.284_496_72 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
        let erf = (1.0 - poly * exp_nonpositive(-a * a)).copysign(y);
        0.5 * x * (1.0 + erf)
    }

    /// Every 97th f32 in [-16, 16] (about 22 million values, every exponent
    /// the GELU's `exp` sees, including its clamp at -87) and the extremes.
    #[test]
    fn gelu_exponent_from_the_mantissa_equals_the_cast() {
        let lo = (-16.0f32).to_bits();
        let positives = (0..=16.0f32.to_bits()).step_by(97).map(f32::from_bits);
        let negatives = (0x8000_0000..=lo).step_by(97).map(f32::from_bits);
        let extremes = [f32::MAX, f32::MIN, 1e30, -1e30, 0.0, -0.0];
        for x in positives.chain(negatives).chain(extremes) {
            assert_eq!(
                super::gelu(x).to_bits(),
                gelu_with_cast(x).to_bits(),
                "gelu({x:e})"
            );
        }
    }
}
