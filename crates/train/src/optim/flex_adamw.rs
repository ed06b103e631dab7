//! AdamW on burn-flex as one multi-threaded pass over each parameter.
//!
//! Composed of tensor ops, an update is about a dozen passes over memory
//! (scale, two moment updates, square, sqrt, divide, ...), most of them on one
//! thread. Here each element is read and written once, on every core. The
//! arithmetic is the composed path's, op for op in f32 with the scalars
//! rounded to f32 as Flex rounds them, so both give the same bits.

use std::any::TypeId;

use burn::backend::flex::{Flex, FlexTensor};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorPrimitive};
use rayon::prelude::*;

use super::StepScalars;

/// Elements per task: large enough that scheduling costs nothing.
const CHUNK: usize = 1 << 14;

/// The updated parameter and moments, or the inputs back when `B` is not
/// Flex or a tensor is not f32.
#[allow(clippy::type_complexity)]
pub(super) fn update<B: Backend>(
    param: Tensor<B, 1>,
    grad: Tensor<B, 1>,
    moments: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
    s: &StepScalars,
) -> Result<
    (Tensor<B, 1>, Tensor<B, 1>, Tensor<B, 1>),
    (
        Tensor<B, 1>,
        Tensor<B, 1>,
        Option<(Tensor<B, 1>, Tensor<B, 1>)>,
    ),
> {
    let all_f32 = [Some(&param), Some(&grad), moments.as_ref().map(|m| &m.0)]
        .into_iter()
        .flatten()
        .all(|t| t.dtype() == DType::F32);
    if TypeId::of::<B>() != TypeId::of::<Flex>() || !all_f32 {
        return Err((param, grad, moments));
    }
    let n = param.dims()[0];
    let mut p = flex(param).to_contiguous();
    let g = flex(grad).to_contiguous();
    let first = moments.is_none();
    let (mut m, mut v) = match moments {
        Some((m, v)) => (flex(m).to_contiguous(), flex(v).to_contiguous()),
        None => (zeros(n), zeros(n)),
    };
    let g = g.as_slice::<f32>().expect("contiguous f32");
    let (p_s, m_s, v_s) = (
        p.storage_mut::<f32>(),
        m.storage_mut::<f32>(),
        v.storage_mut::<f32>(),
    );
    let k = Scalars::of(s);
    p_s.par_chunks_mut(CHUNK)
        .zip(m_s.par_chunks_mut(CHUNK))
        .zip(v_s.par_chunks_mut(CHUNK))
        .zip(g.par_chunks(CHUNK))
        .for_each(|(((p, m), v), g)| k.apply(p, m, v, g, first));
    Ok((back(p), back(m), back(v)))
}

/// The step's scalars as f32, as Flex's scalar ops round them.
struct Scalars {
    decay: Option<f32>,
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    bc2_sqrt: f32,
    eps: f32,
    step_size: f32,
}

impl Scalars {
    fn of(s: &StepScalars) -> Self {
        Self {
            decay: s.decay.map(|d| d as f32),
            beta1: s.beta1 as f32,
            one_minus_beta1: (1.0 - s.beta1) as f32,
            beta2: s.beta2 as f32,
            one_minus_beta2: (1.0 - s.beta2) as f32,
            bc2_sqrt: s.bc2_sqrt as f32,
            eps: s.eps as f32,
            step_size: s.step_size as f32,
        }
    }

    /// The composed path's ops on one chunk; `first`: no moments yet, where
    /// the composed path starts from `g·(1-β)` (not `0·β + g·(1-β)`, which is
    /// the same value).
    fn apply(&self, p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], first: bool) {
        for i in 0..p.len() {
            let gi = g[i];
            if let Some(d) = self.decay {
                p[i] *= d;
            }
            let (gm, gv) = (gi * self.one_minus_beta1, (gi * gi) * self.one_minus_beta2);
            if first {
                (m[i], v[i]) = (gm, gv);
            } else {
                m[i] = m[i] * self.beta1 + gm;
                v[i] = v[i] * self.beta2 + gv;
            }
            let denom = v[i].sqrt() / self.bc2_sqrt + self.eps;
            p[i] -= (m[i] / denom) * self.step_size;
        }
    }
}

fn zeros(n: usize) -> FlexTensor {
    let zeros = Tensor::<Flex, 1>::zeros([n], &Default::default());
    zeros.into_primitive().tensor()
}

fn flex<B: Backend>(t: Tensor<B, 1>) -> FlexTensor {
    let primitive = t.into_primitive().tensor();
    let mut slot = Some(primitive);
    (&mut slot as &mut dyn std::any::Any)
        .downcast_mut::<Option<FlexTensor>>()
        .and_then(Option::take)
        .expect("B is Flex: checked by TypeId")
}

fn back<B: Backend>(t: FlexTensor) -> Tensor<B, 1> {
    let mut slot = Some(t);
    let primitive = (&mut slot as &mut dyn std::any::Any)
        .downcast_mut::<Option<B::FloatTensorPrimitive>>()
        .and_then(Option::take)
        .expect("B is Flex: checked by TypeId");
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}
