//! The CPU attention kernels on raw f32 rows: forward (optionally keeping the
//! probabilities) and backward, one rayon task per `(sequence, head)` pair.
//!
//! q, k, v, the context and their gradients are `[batch·seq, hidden]` rows with
//! head `h` in columns `h·d..(h+1)·d`: a head is a strided `[seq, d]` matrix
//! (row stride `hidden`) that `gemm` reads and writes in place.

use rayon::prelude::*;

/// Sizes of one call.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geometry {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub scale: f32,
}

impl Geometry {
    fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }
    fn pairs(&self) -> usize {
        self.batch * self.heads
    }
    /// Offset of the first element of a pair's `[seq, d]` head in the rows.
    fn head_offset(&self, pair: usize) -> usize {
        let (b, h) = (pair / self.heads, pair % self.heads);
        b * self.seq * self.hidden() + h * self.head_dim
    }
}

/// An additive mask of shape `[batch|1, heads|1, seq|1, seq]`, contiguous, with
/// stride 0 along the broadcast dimensions.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bias<'a> {
    pub data: &'a [f32],
    pub batch_stride: usize,
    pub head_stride: usize,
    pub row_stride: usize,
}

impl<'a> Bias<'a> {
    fn row(self, g: &Geometry, pair: usize, row: usize) -> &'a [f32] {
        let (b, h) = (pair / g.heads, pair % g.heads);
        let start = b * self.batch_stride + h * self.head_stride + row * self.row_stride;
        &self.data[start..start + g.seq]
    }
}

/// A dropout mask: `keep` is `[batch, heads, seq, seq]` of 0 and 1, `scale` is
/// `1/(1-p)`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dropout<'a> {
    pub keep: &'a [f32],
    pub scale: f32,
}

/// A pointer that rayon tasks share; each writes a disjoint part.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: every task writes only its own `(sequence, head)` block.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}
impl SharedMut {
    fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: callers pass offsets inside the allocation.
        unsafe { self.0.add(offset) }
    }
}

/// A strided matrix operand: pointer, row stride, column stride.
type Operand = (*const f32, isize, isize);

/// `dst = beta · lhs·rhs` for an `m×k` lhs and `k×n` rhs, dst with row stride
/// `dst_rs`, single-threaded (the pairs are the parallelism).
///
/// # Safety
/// The pointers must cover the matrices their strides describe.
unsafe fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: (*mut f32, isize),
    lhs: Operand,
    rhs: Operand,
    beta: f32,
) {
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.0,
            1,
            dst.1,
            false,
            lhs.0,
            lhs.2,
            lhs.1,
            rhs.0,
            rhs.2,
            rhs.1,
            0.0,
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// A reduction over eight interleaved accumulators, then across them: a
/// single float accumulator is a serial chain the compiler may not reorder,
/// eight are one vector register.
#[inline(always)]
fn lanes(
    x: &[f32],
    init: f32,
    step: impl Fn(f32, f32) -> f32,
    merge: impl Fn(f32, f32) -> f32,
) -> f32 {
    let mut acc = [init; 8];
    let mut chunks = x.chunks_exact(8);
    for chunk in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a = step(*a, v);
        }
    }
    let tail = chunks.remainder().iter().fold(init, |a, &v| step(a, v));
    acc.into_iter().fold(tail, merge)
}

/// `Σ a·b` over eight accumulators.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (xa, xb) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += xa[i] * xb[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The softmax of `row + bias` in place; a row whose every entry is -inf
/// (cannot happen with BERT's finite mask) becomes zeros.
fn softmax_row(row: &mut [f32], bias: Option<&[f32]>) {
    if let Some(bias) = bias {
        for (s, b) in row.iter_mut().zip(bias) {
            *s += b;
        }
    }
    let max = lanes(
        row,
        f32::NEG_INFINITY,
        |m, x| if x > m { x } else { m },
        |a, b| a.max(b),
    );
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return;
    }
    let sum = super::exp::exp_sub_sum(row, max);
    let inv = 1.0 / sum;
    for s in row.iter_mut() {
        *s *= inv;
    }
}

/// Read-only inputs of the forward pass.
#[derive(Clone, Copy)]
pub(super) struct Inputs<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub bias: Option<Bias<'a>>,
    pub dropout: Option<Dropout<'a>>,
}

/// One pair's forward: `probs` (`seq×seq`) receives the softmax before dropout,
/// the context goes to `out`.
fn forward_pair(
    g: &Geometry,
    pair: usize,
    x: &Inputs,
    probs: &mut [f32],
    dropped: &mut Vec<f32>,
    out: SharedMut,
) {
    let (l, d, hs) = (g.seq, g.head_dim, g.hidden() as isize);
    let off = g.head_offset(pair);
    // SAFETY: each head is `seq` rows of `d` columns with row stride `hidden`,
    // inside q, k, v and out; `probs` is `seq×seq`.
    unsafe {
        let q = (x.q.as_ptr().add(off), hs, 1);
        let kt = (x.k.as_ptr().add(off), 1, hs);
        gemm(l, l, d, (probs.as_mut_ptr(), l as isize), q, kt, g.scale);
    }
    for (i, row) in probs.chunks_exact_mut(l).enumerate() {
        softmax_row(row, x.bias.map(|b| b.row(g, pair, i)));
    }
    let p: &[f32] = match x.dropout {
        Some(drop) => {
            let keep = &drop.keep[pair * l * l..(pair + 1) * l * l];
            dropped.clear();
            dropped.extend(probs.iter().zip(keep).map(|(p, m)| p * m * drop.scale));
            dropped
        }
        None => probs,
    };
    // SAFETY: as above; the pair's output block is written by this task only.
    unsafe {
        let v = (x.v.as_ptr().add(off), hs, 1);
        gemm(
            l,
            d,
            l,
            (out.at(off), hs),
            (p.as_ptr(), l as isize, 1),
            v,
            1.0,
        );
    }
}

/// The context rows, and the probabilities (`[batch, heads, seq, seq]`) when
/// `keep_probs` (for the backward pass).
pub(super) fn forward(g: &Geometry, x: Inputs, keep_probs: bool) -> (Vec<f32>, Option<Vec<f32>>) {
    let ll = g.seq * g.seq;
    let mut probs = keep_probs.then(|| vec![0.0f32; g.pairs() * ll]);
    // SAFETY: every pair's second product writes its whole `seq×d` block
    // (the `gemm` wrapper asks it not to read the destination), and the
    // pairs' blocks tile the output.
    let out = unsafe {
        crate::cpu::filled(g.batch * g.seq * g.hidden(), |out| {
            let out_ptr = SharedMut(out.0);
            match probs.as_mut() {
                Some(probs) => probs
                    .par_chunks_mut(ll)
                    .enumerate()
                    .for_each_init(Vec::new, |dropped, (pair, p)| {
                        forward_pair(g, pair, &x, p, dropped, out_ptr)
                    }),
                None => (0..g.pairs()).into_par_iter().for_each_init(
                    || (vec![0.0f32; ll], Vec::new()),
                    |(p, dropped), pair| forward_pair(g, pair, &x, p, dropped, out_ptr),
                ),
            }
        })
    };
    (out, probs)
}

/// What the backward pass reads.
#[derive(Clone, Copy)]
pub(super) struct Saved<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub probs: &'a [f32],
    pub dropout: Option<Dropout<'a>>,
    /// Gradient of the context rows.
    pub grad: &'a [f32],
}

/// The gradients of q, k and v, each `[batch·seq, hidden]`.
pub(super) struct Grads {
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

/// One pair's backward. With `P` the probabilities, `D` the dropout scale times
/// the mask (1 without dropout), `dO` the context's gradient:
/// `dV = (P∘D)ᵀ·dO`, `dP = (dO·Vᵀ)∘D`, `dS = P∘(dP − rowsum(dP∘P))`,
/// `dQ = scale·dS·K`, `dK = scale·dSᵀ·Q`.
fn backward_pair(
    g: &Geometry,
    pair: usize,
    s: &Saved,
    scratch: &mut (Vec<f32>, Vec<f32>),
    out: [SharedMut; 3],
) {
    let (l, d, hs) = (g.seq, g.head_dim, g.hidden() as isize);
    let li = l as isize;
    let off = g.head_offset(pair);
    let probs = &s.probs[pair * l * l..(pair + 1) * l * l];
    let keep = s
        .dropout
        .map(|drop| (&drop.keep[pair * l * l..(pair + 1) * l * l], drop.scale));
    let (dp, dropped) = scratch;
    dp.resize(l * l, 0.0);
    let p_used: &[f32] = match keep {
        Some((keep, scale)) => {
            dropped.clear();
            dropped.extend(probs.iter().zip(keep).map(|(p, m)| p * m * scale));
            dropped
        }
        None => probs,
    };
    let [dq, dk, dv] = out;
    // SAFETY: heads are `seq×d` blocks with row stride `hidden` inside the rows;
    // the scratch matrices are `seq×seq`; each task writes its own blocks.
    unsafe {
        let d_o = (s.grad.as_ptr().add(off), hs, 1);
        let pt = (p_used.as_ptr(), 1, li);
        gemm(l, d, l, (dv.at(off), hs), pt, d_o, 1.0);
        let vt = (s.v.as_ptr().add(off), 1, hs);
        gemm(l, l, d, (dp.as_mut_ptr(), li), d_o, vt, 1.0);
    }
    for (i, row) in dp.chunks_exact_mut(l).enumerate() {
        let p = &probs[i * l..(i + 1) * l];
        if let Some((keep, scale)) = keep {
            for (x, m) in row.iter_mut().zip(&keep[i * l..(i + 1) * l]) {
                *x *= m * scale;
            }
        }
        let dot = dot(row, p);
        for (x, p) in row.iter_mut().zip(p) {
            *x = p * (*x - dot);
        }
    }
    // SAFETY: as above.
    unsafe {
        let k = (s.k.as_ptr().add(off), hs, 1);
        gemm(l, d, l, (dq.at(off), hs), (dp.as_ptr(), li, 1), k, g.scale);
        let q = (s.q.as_ptr().add(off), hs, 1);
        gemm(l, d, l, (dk.at(off), hs), (dp.as_ptr(), 1, li), q, g.scale);
    }
}

/// The gradients of q, k and v from the context's gradient.
pub(super) fn backward(g: &Geometry, saved: Saved) -> Grads {
    let n = g.batch * g.seq * g.hidden();
    let mut grads = Grads {
        q: vec![0.0; n],
        k: vec![0.0; n],
        v: vec![0.0; n],
    };
    let out = [
        SharedMut(grads.q.as_mut_ptr()),
        SharedMut(grads.k.as_mut_ptr()),
        SharedMut(grads.v.as_mut_ptr()),
    ];
    (0..g.pairs()).into_par_iter().for_each_init(
        || (Vec::new(), Vec::new()),
        |scratch, pair| backward_pair(g, pair, &saved, scratch, out),
    );
    grads
}
