//! zhbert's fp32 kernel for linear layers on the CPU: `act(x·W + b)` in one
//! pass, bias and GELU applied as each tile of the output is stored.
//!
//! The model's linear layers run it on burn's Flex backend, outside
//! [`autocast`](crate::autocast), where the CPU has AVX2 and FMA but not
//! AVX-512 ([`Kernel::preferred`]); elsewhere they run burn's matmul (`gemm`
//! through burn-flex, which on AVX-512 CPUs has kernels twice as wide). At
//! inference it replaces three passes (`gemm`'s product, the bias sum, the
//! GELU) and the zeroing of the output by one, with a tile that is also a
//! little faster than `gemm`'s (`benchmarks/NOTES.md` #17). In training
//! (`Autodiff<Flex>`) each linear layer is one graph node whose forward and
//! input gradient `dY·Wᵀ` run the kernel ([`PackedPanels::pack_transposed`]),
//! the weight and bias gradients burn's ops (`NOTES.md` #19).
//!
//! ```
//! use zhbert_model::dense::{linear, Kernel, PackedPanels};
//! use zhbert_model::quantize::kernel::Activation;
//!
//! # let Some(kernel) = Kernel::detect() else { return };
//! let (k, n) = (3, 2);
//! let weight = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]; // [k, n], burn's Linear layout
//! let w = PackedPanels::pack(&weight, k, n, Some(&[0.5, -0.5]));
//! let y = linear(&[1.0, 2.0, 3.0], 1, &w, Activation::Identity, kernel);
//! assert_eq!(y, [4.5, 4.5]);
//! ```
//!
//! **Kernel.** A BLIS-style micro tile of 6 rows × 16 columns: twelve AVX2
//! accumulators, the whole of `k` summed in registers (so the output is
//! written once, with the bias and the activation), the weights packed into
//! panels of 16 columns, `k` rows each, contiguous, and the rows of `x` read
//! in place, one broadcast per row and `k`. Each call packs the weight again
//! (`O(k·n)` against the product's `O(rows·k·n)`: under 1% at 4,096 rows);
//! keeping packed copies would double the model's memory. So the model's
//! layers run it from [`MIN_ROWS`] rows (tokens) on, `gemm` below.
//!
//! **Numbers.** Each output is one fused multiply-add chain over `k` in
//! order, then `+ b`, then [`gelu`]: the same operations as burn's path in a
//! different summation order than `gemm`'s, so the result differs from it
//! in the last bits, as any two BLAS do.

#[cfg(feature = "flex")]
mod autodiff;

use crate::cpu::{filled, par_tasks, OutPtr};
pub use crate::quantize::kernel::{gelu, Activation};

/// Columns of a packed panel (two AVX2 registers).
pub const PANEL_COLS: usize = 16;
/// Rows of one micro tile: 6 × 2 accumulators, two registers for a row of
/// the panel and one broadcast take 15 of AVX2's 16.
const TILE_ROWS: usize = 6;
/// Fewest rows (tokens) for which the model's layers run this kernel. It
/// packs the weight on every call (`k·n` values read and written against the
/// product's `rows·k·n` multiply-adds), and below a few thousand rows `gemm`,
/// whose blocks then stay in cache, is the faster one: interleaved on
/// BERT's six linear shapes (`examples/dense_matmul.rs --rows`, AVX2 build),
/// this kernel ran about half `gemm`'s speed at 16 and 64 rows, 0.78–0.96×
/// at 512, about 0.92× at 1,024, about 1.07× at 2,048 and 1.02–1.26× at
/// 4,096. A single request goes to `gemm`, a full batch here.
pub const MIN_ROWS: usize = 2048;
/// Rows per parallel task (a multiple of [`TILE_ROWS`]). Each task reads
/// every panel once per 16 tiles of rows.
const TASK_ROWS: usize = 96;

/// A weight matrix packed for the kernel: panels of [`PANEL_COLS`] columns,
/// each `k` rows of 16 contiguous values, zero padded past `n`; and the bias,
/// padded the same way.
#[derive(Debug, Clone)]
pub struct PackedPanels {
    k: usize,
    n: usize,
    /// `[n / 16 panels][k][16]`.
    data: Vec<f32>,
    bias: Vec<f32>,
}

impl PackedPanels {
    /// Packs `weight`, `[k, n]` row-major (burn's `Linear` layout, input
    /// features × output features), with an optional `[n]` bias.
    pub fn pack(weight: &[f32], k: usize, n: usize, bias: Option<&[f32]>) -> Self {
        assert_eq!(weight.len(), k * n, "weight is not [k, n]");
        Self::pack_from(k, n, bias, |i, j0, row| {
            row.copy_from_slice(&weight[i * n + j0..i * n + j0 + row.len()]);
        })
    }

    /// Packs the transpose of `weight`, which is `[n, k]` row-major: the
    /// product `dY·Wᵀ` of a linear layer's backward, without a transposed
    /// copy of `W` first.
    pub fn pack_transposed(weight: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(weight.len(), k * n, "weight is not [n, k]");
        Self::pack_from(k, n, None, |i, j0, row| {
            for (c, v) in row.iter_mut().enumerate() {
                *v = weight[(j0 + c) * k + i];
            }
        })
    }

    /// Panels whose row `i`, columns `j0..j0 + row.len()`, `fill(i, j0, row)`
    /// writes.
    fn pack_from(
        k: usize,
        n: usize,
        bias: Option<&[f32]>,
        fill: impl Fn(usize, usize, &mut [f32]) + Sync,
    ) -> Self {
        use rayon::prelude::*;

        let panels = n.div_ceil(PANEL_COLS);
        let mut data = vec![0.0f32; panels * k * PANEL_COLS];
        if k > 0 {
            data.par_chunks_mut(k * PANEL_COLS)
                .enumerate()
                .for_each(|(p, panel)| {
                    let (j0, cols) = (p * PANEL_COLS, PANEL_COLS.min(n - p * PANEL_COLS));
                    for (i, row) in panel.chunks_exact_mut(PANEL_COLS).enumerate() {
                        fill(i, j0, &mut row[..cols]);
                    }
                });
        }
        let mut padded_bias = vec![0.0f32; panels * PANEL_COLS];
        if let Some(b) = bias {
            assert_eq!(b.len(), n, "bias is not [n]");
            padded_bias[..n].copy_from_slice(b);
        }
        Self {
            k,
            n,
            data,
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

    fn panels(&self) -> usize {
        self.n.div_ceil(PANEL_COLS)
    }

    fn panel(&self, p: usize) -> &[f32] {
        &self.data[p * self.k * PANEL_COLS..(p + 1) * self.k * PANEL_COLS]
    }

    fn panel_bias(&self, p: usize) -> &[f32; PANEL_COLS] {
        self.bias[p * PANEL_COLS..(p + 1) * PANEL_COLS]
            .try_into()
            .expect("padded bias")
    }
}

/// Which code runs the product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// x86-64 AVX2 with FMA.
    Avx2Fma,
}

impl Kernel {
    /// Every kernel.
    pub const ALL: [Kernel; 1] = [Self::Avx2Fma];

    /// The fastest kernel this CPU runs, if any.
    pub fn detect() -> Option<Self> {
        Self::ALL.into_iter().rev().find(|k| k.available())
    }

    /// The kernel the model's linear layers use on this CPU: AVX2 + FMA
    /// where there is no AVX-512 (with it, `gemm`'s 16-lane kernels, which
    /// burn's matmul runs, do more per instruction; `ZHBERT_CPU_CAP=avx2`
    /// counts as none); none without AVX2.
    pub fn preferred() -> Option<Self> {
        if crate::cpu::avx512f() {
            return None;
        }
        Self::detect()
    }

    /// Whether this CPU can run the kernel.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Self::Avx2Fma => has!("avx2") && has!("fma"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }
}

/// `y = act(x·W + b)` for `x`, `[rows, k]` row-major; `y` is `[rows, n]`.
pub fn linear(
    x: &[f32],
    rows: usize,
    w: &PackedPanels,
    act: Activation,
    kernel: Kernel,
) -> Vec<f32> {
    let (k, n) = (w.k, w.n);
    assert_eq!(x.len(), rows * k, "x is not [rows, {k}]");
    assert!(
        kernel.available(),
        "{kernel:?} is not available on this CPU"
    );
    // SAFETY: the tasks cover every (row, panel) of the output once, and
    // each stores all of its rows and columns.
    unsafe {
        filled(rows * n, |out| {
            par_tasks(rows, w.panels(), TASK_ROWS, |rows, panels| {
                let task = Task { x, w, act, out };
                match kernel {
                    #[cfg(target_arch = "x86_64")]
                    Kernel::Avx2Fma => avx2::task(&task, rows, panels),
                    #[cfg(not(target_arch = "x86_64"))]
                    _ => unreachable!("no kernel on this architecture"),
                }
            })
        })
    }
}

/// What every tile of one product shares.
struct Task<'a> {
    x: &'a [f32],
    w: &'a PackedPanels,
    act: Activation,
    out: &'a OutPtr,
}

/// Adds the bias to a tile's sums, applies `act` and writes the rows
/// `r0..r0 + R` of panel `p` to the output.
///
/// # Safety
/// The output is `[rows, n]` and no other thread writes this rectangle.
#[inline(always)]
unsafe fn store<const R: usize>(
    sums: &mut [[f32; PANEL_COLS]; R],
    t: &Task<'_>,
    r0: usize,
    p: usize,
) {
    let bias = t.w.panel_bias(p);
    for row in sums.iter_mut() {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
    if t.act == Activation::Gelu {
        // All rows at once, vectorised: the same bits as burn-flex's GELU.
        sums.as_flattened_mut()
            .iter_mut()
            .for_each(|v| *v = gelu(*v));
    }
    let (n, c0) = (t.w.n, p * PANEL_COLS);
    let cols = (n - c0).min(PANEL_COLS);
    for (r, y) in sums.iter().enumerate() {
        let dst = t.out.0.add((r0 + r) * n + c0);
        if cols == PANEL_COLS {
            // One fixed-size store (a run-time-length copy is a libc call).
            dst.cast::<[f32; PANEL_COLS]>().write_unaligned(*y);
        } else {
            std::ptr::copy_nonoverlapping(y.as_ptr(), dst, cols);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::{store, Task, PANEL_COLS, TILE_ROWS};

    /// Rows `rows` × panels `panels` of the output: each panel against every
    /// tile of rows in turn, so that the panel stays in cache.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; as [`super::store`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn task(t: &Task<'_>, rows: Range<usize>, panels: Range<usize>) {
        for p in panels {
            for r0 in rows.clone().step_by(TILE_ROWS) {
                match (rows.end - r0).min(TILE_ROWS) {
                    6 => tile::<6>(t, r0, p),
                    5 => tile::<5>(t, r0, p),
                    4 => tile::<4>(t, r0, p),
                    3 => tile::<3>(t, r0, p),
                    2 => tile::<2>(t, r0, p),
                    _ => tile::<1>(t, r0, p),
                }
            }
        }
    }

    /// `R` rows from `r0` against panel `p`: per `k`, one row of the panel
    /// (two registers) and one broadcast per row of `x`, two FMAs each.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `r0 + R` rows exist; as [`super::store`].
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile<const R: usize>(t: &Task<'_>, r0: usize, p: usize) {
        let k = t.w.k;
        debug_assert!(t.x.len() >= (r0 + R) * k);
        let panel = t.w.panel(p).as_ptr();
        let x = t.x.as_ptr().add(r0 * k);
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for i in 0..k {
            let b0 = _mm256_loadu_ps(panel.add(i * PANEL_COLS));
            let b1 = _mm256_loadu_ps(panel.add(i * PANEL_COLS + 8));
            for (r, acc) in acc.iter_mut().enumerate() {
                let a = _mm256_broadcast_ss(&*x.add(r * k + i));
                acc[0] = _mm256_fmadd_ps(a, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(a, b1, acc[1]);
            }
        }
        let mut sums = [[0.0f32; PANEL_COLS]; R];
        for (s, acc) in sums.iter_mut().zip(&acc) {
            _mm256_storeu_ps(s.as_mut_ptr(), acc[0]);
            _mm256_storeu_ps(s.as_mut_ptr().add(8), acc[1]);
        }
        store(&mut sums, t, r0, p);
    }
}

/// `act(layer(x))` through the kernel when the running configuration asks
/// for it ([`Kernel::preferred`], Flex or `Autodiff<Flex>`, no autocast, at
/// least [`MIN_ROWS`] rows), else `x` back.
#[cfg(feature = "flex")]
pub(crate) fn try_linear<B: burn::tensor::backend::Backend, const D: usize>(
    layer: &burn::nn::Linear<B>,
    x: burn::tensor::Tensor<B, D>,
    act: Activation,
) -> Result<burn::tensor::Tensor<B, D>, burn::tensor::Tensor<B, D>> {
    use burn::tensor::DType;

    use crate::cpu::FlexRows;

    let Some(kernel) = Kernel::preferred() else {
        return Err(x);
    };
    let [k, n] = layer.weight.dims();
    let tokens: usize = x.dims()[..D - 1].iter().product();
    if tokens < MIN_ROWS
        || crate::precision::autocast_active()
        || x.dtype() != DType::F32
        || layer.weight.val().dtype() != DType::F32
        || x.dims()[D - 1] != k
    {
        return Err(x);
    }
    // Under autodiff the tensors are not Flex's: training's node, if the
    // backend is `Autodiff<Flex>`.
    let weight = match FlexRows::of(layer.weight.val()) {
        Ok(w) => w,
        Err(_) => {
            let y = autodiff::try_linear(layer, x, kernel)?;
            return Ok(match act {
                Activation::Identity => y,
                Activation::Gelu => burn::tensor::activation::gelu(y),
            });
        }
    };
    let rows = FlexRows::of(x)?;
    let bias = layer.bias.as_ref().map(|b| FlexRows::of(b.val()));
    let bias = match bias {
        Some(Ok(b)) => Some(b),
        Some(Err(_)) => unreachable!("the weight was a Flex tensor"),
        None => None,
    };
    let packed = PackedPanels::pack(weight.values(), k, n, bias.as_ref().map(|b| b.values()));
    let y = linear(rows.values(), rows.rows(), &packed, act, kernel);
    Ok(rows.output(y, n))
}
