//! BERT's scaled dot-product attention, `softmax(q·kᵀ·scale + mask)·v` with
//! attention dropout, as one op.
//!
//! Composed of burn ops, attention is a head split (a copy), a batched matmul,
//! a mask add, a softmax (five tracked ops under autodiff), a dropout (two), a
//! second batched matmul and a head merge (another copy), each a pass over the
//! `[batch, heads, seq, seq]` scores. [`self_attention`] picks, by backend:
//!
//! - **Flex, and `Autodiff<Flex>` (fp32)**: zhbert's own kernel in this file.
//!   It reads q, k, v where the projections left them (`[tokens, hidden]`
//!   rows, head `h` in columns `h·d..(h+1)·d`) and writes the context there,
//!   so no head is ever split or merged; each `(sequence, head)` pair is two
//!   `gemm` calls and one softmax pass over rows that stay in cache, the pairs
//!   spread over the rayon threads. Under autodiff it is one graph node with
//!   its own backward ([`Backward`]): the forward keeps the probabilities and
//!   the dropout mask, the backward is four `gemm` calls and one
//!   softmax-backward pass per pair.
//! - **Other backends without dropout** (inference, evaluation): burn's fused
//!   [`attention`](burn::tensor::module::attention) op (flash attention on the
//!   CubeCL backends).
//! - **Otherwise** (dropout on another backend, or inside
//!   [`autocast`](crate::autocast)): the composed ops, as before.
//!
//! The dispatch is by the tensors' concrete type at run time (a safe `Any`
//! downcast), not by a trait bound: the model is generic over `B: Backend` in
//! more than eighty places across the workspace, and a bound such as
//! `B: AttentionBackend` would have to be added to each of them.

use std::any::{Any, TypeId};

use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{activation::softmax, DType, Tensor, TensorPrimitive};

use crate::precision::to_compute;

/// The shape of one attention call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionShape {
    /// Sequences in the batch.
    pub batch: usize,
    /// Attention heads.
    pub heads: usize,
    /// `1/sqrt(head_dim)` in BERT.
    pub scale: f64,
    /// Attention dropout probability; applied only when autodiff is enabled
    /// on the device, as burn's `Dropout` does.
    pub dropout: f64,
    /// The residual stream's type: the scores return to it for the softmax
    /// (it differs from q's type only inside [`autocast`](crate::autocast)).
    pub float: DType,
}

/// Self-attention over `[batch·seq, hidden]` rows of queries, keys and values
/// (head `h` in columns `h·head_dim..(h+1)·head_dim`), with an additive mask
/// that broadcasts to `[batch, heads, seq, seq]`; returns the context in the
/// same row layout. The fastest path the backend has (see the module docs).
pub fn self_attention<B: Backend>(
    q: Tensor<B, 2>,
    k: Tensor<B, 2>,
    v: Tensor<B, 2>,
    mask_bias: Option<Tensor<B, 4>>,
    shape: AttentionShape,
) -> Tensor<B, 2> {
    let mut shape = shape;
    if !B::ad_enabled(&q.device()) {
        shape.dropout = 0.0;
    }
    #[cfg(feature = "flex")]
    let (q, k, v, mask_bias) = match flex::try_attention(q, k, v, mask_bias, shape) {
        Ok(out) => return out,
        Err(inputs) => inputs,
    };
    // Inside autocast the composed path keeps PyTorch autocast's casts.
    if shape.dropout == 0.0 && q.dtype() == shape.float {
        fused_attention(q, k, v, mask_bias, shape)
    } else {
        composed_attention(q, k, v, mask_bias, shape)
    }
}

/// Splits `[batch·seq, hidden]` rows into `[batch, heads, seq, head_dim]`.
fn split_heads<B: Backend>(t: Tensor<B, 2>, batch: usize, heads: usize) -> Tensor<B, 4> {
    let [tokens, hidden] = t.dims();
    t.reshape([batch, tokens / batch, heads, hidden / heads])
        .swap_dims(1, 2)
}

/// burn's fused attention op (no dropout), on any backend.
pub fn fused_attention<B: Backend>(
    q: Tensor<B, 2>,
    k: Tensor<B, 2>,
    v: Tensor<B, 2>,
    mask_bias: Option<Tensor<B, 4>>,
    shape: AttentionShape,
) -> Tensor<B, 2> {
    let [tokens, hidden] = q.dims();
    let (batch, heads) = (shape.batch, shape.heads);
    let l = tokens / batch;
    // The CubeCL backends take their flash kernel only without an explicit
    // scale (and without a bias): BERT's scale is the default one.
    let default_scale = 1.0 / ((hidden / heads) as f64).sqrt();
    let options = AttentionModuleOptions {
        scale: (shape.scale != default_scale).then_some(shape.scale),
        softcap: None,
        is_causal: false,
    };
    // burn's backends accept a broadcast bias to different degrees (Flex
    // copies one that broadcasts over the key rows); an expanded view is
    // accepted by all of them.
    let bias = mask_bias.map(|m| m.expand([batch, heads, l, l]));
    let q = split_heads(q, batch, heads);
    let k = split_heads(k, batch, heads);
    let v = split_heads(v, batch, heads);
    attention(q, k, v, None, bias, options)
        .swap_dims(1, 2)
        .reshape([tokens, hidden])
}

/// Attention composed of burn's tensor ops: the reference every other path is
/// tested against, and the path of autocast and of dropout outside Flex.
/// Under [`autocast`](crate::autocast) the two matmuls run in the compute type
/// and the softmax in `shape.float`, as PyTorch's autocast does.
pub fn composed_attention<B: Backend>(
    q: Tensor<B, 2>,
    k: Tensor<B, 2>,
    v: Tensor<B, 2>,
    mask_bias: Option<Tensor<B, 4>>,
    shape: AttentionShape,
) -> Tensor<B, 2> {
    let [tokens, hidden] = q.dims();
    let (batch, heads) = (shape.batch, shape.heads);
    let full = shape.float;
    // Scaled before the product: q is head_dim/seq the size of the scores.
    let q = split_heads(q.mul_scalar(shape.scale), batch, heads);
    let k = split_heads(k, batch, heads);
    let v = split_heads(v, batch, heads);
    let mut scores = q.matmul(k.swap_dims(2, 3));
    if scores.dtype() != full {
        scores = scores.cast(full);
    }
    if let Some(bias) = mask_bias {
        scores = scores + bias;
    }
    let dropout = burn::nn::Dropout {
        prob: shape.dropout,
    };
    let probs = to_compute(dropout.forward(softmax(scores, 3)));
    probs.matmul(v).swap_dims(1, 2).reshape([tokens, hidden])
}

/// `x` as `U` when `T` is `U`, else `x` back.
pub(crate) fn downcast<T: 'static, U: 'static>(x: T) -> Result<U, T> {
    let mut slot = Some(x);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<U>>() {
        Some(u) => Ok(u.take().expect("just filled")),
        None => Err(slot.expect("not taken")),
    }
}

/// Whether `B` runs attention through zhbert's kernel when no
/// [`autocast`](crate::autocast) is active: the model then passes the padding
/// mask as `[batch, 1, 1, seq]`, which the kernel reads without expanding it.
pub fn has_fused_kernel<B: Backend>() -> bool {
    #[cfg(feature = "flex")]
    {
        let id = TypeId::of::<B>();
        id == TypeId::of::<burn_flex::Flex>()
            || id == TypeId::of::<burn::backend::Autodiff<burn_flex::Flex>>()
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = TypeId::of::<B>();
        false
    }
}

#[cfg(feature = "flex")]
mod exp;
#[cfg(feature = "flex")]
mod flex;
#[cfg(feature = "flex")]
mod kernel;

/// The primitive of a float tensor.
fn primitive<B: Backend, const D: usize>(t: Tensor<B, D>) -> B::FloatTensorPrimitive {
    t.into_primitive().tensor()
}

/// A float tensor from its primitive.
fn from_primitive<B: Backend, const D: usize>(p: B::FloatTensorPrimitive) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}
