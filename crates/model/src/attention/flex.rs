//! The kernel on burn's Flex backend, and under `Autodiff<Flex>` as one graph
//! node with its own backward.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Distribution, Tensor};
use burn_flex::{Flex, FlexTensor};

use super::kernel::{self, Bias, Dropout, Geometry, Inputs, Saved};
use super::{downcast, from_primitive, primitive, AttentionShape};
use crate::cpu::{flex_tensor as tensor, flex_values as values};

/// burn-autodiff's tensor over Flex (its type is not exported by name).
type AdTensor = FloatTensor<Autodiff<Flex>>;

/// The inputs handed back when the kernel does not apply.
type Inputs4<B> = (
    Tensor<B, 2>,
    Tensor<B, 2>,
    Tensor<B, 2>,
    Option<Tensor<B, 4>>,
);

/// Runs the kernel when `B` is Flex or `Autodiff<Flex>` and everything is
/// fp32 (not inside autocast), else hands the inputs back.
pub(super) fn try_attention<B: Backend>(
    q: Tensor<B, 2>,
    k: Tensor<B, 2>,
    v: Tensor<B, 2>,
    mask_bias: Option<Tensor<B, 4>>,
    shape: AttentionShape,
) -> Result<Tensor<B, 2>, Inputs4<B>> {
    let fp32 = [q.dtype(), k.dtype(), v.dtype()]
        .iter()
        .all(|&d| d == DType::F32)
        && mask_bias.as_ref().is_none_or(|m| m.dtype() == DType::F32);
    let [tokens, _] = q.dims();
    let l = tokens / shape.batch.max(1);
    let mask_fits = mask_bias.as_ref().is_none_or(|m| {
        let [b, h, r, c] = m.dims();
        (b == 1 || b == shape.batch) && (h == 1 || h == shape.heads) && (r == 1 || r == l) && c == l
    });
    if !fp32 || !mask_fits || !super::has_fused_kernel::<B>() {
        return Err((q, k, v, mask_bias));
    }
    if let Some(m) = &mask_bias {
        // A mask that is itself trained would need its gradient: composed path.
        if m.is_require_grad() {
            return Err((q, k, v, mask_bias));
        }
    }
    let (q, k, v) = (primitive(q), primitive(k), primitive(v));
    let mask = mask_bias.map(primitive::<B, 4>);
    let (q, k, v, mask) =
        match downcast::<_, (FlexTensor, FlexTensor, FlexTensor, Option<FlexTensor>)>((
            q, k, v, mask,
        )) {
            Ok(flex) => {
                let out = downcast::<FlexTensor, B::FloatTensorPrimitive>(inference(flex, shape))
                    .unwrap_or_else(|_| unreachable!("B is Flex"));
                return Ok(from_primitive(out));
            }
            Err(inputs) => inputs,
        };
    let ad = downcast::<_, (AdTensor, AdTensor, AdTensor, Option<AdTensor>)>((q, k, v, mask))
        .unwrap_or_else(|_| unreachable!("has_fused_kernel admits Flex and Autodiff<Flex> only"));
    let out = downcast::<AdTensor, B::FloatTensorPrimitive>(autodiff(ad, shape))
        .unwrap_or_else(|_| unreachable!("B is Autodiff<Flex>"));
    Ok(from_primitive(out))
}

fn geometry(q: &FlexTensor, shape: &AttentionShape) -> Geometry {
    let dims = q.layout().shape();
    let (tokens, hidden) = (dims[0], dims[1]);
    Geometry {
        batch: shape.batch,
        seq: tokens / shape.batch,
        heads: shape.heads,
        head_dim: hidden / shape.heads,
        scale: shape.scale as f32,
    }
}

fn contiguous(t: FlexTensor) -> FlexTensor {
    t.to_contiguous()
}

/// The mask as the kernel reads it: stride 0 along broadcast dimensions.
fn bias_view<'a>(mask: &'a FlexTensor, g: &Geometry) -> Bias<'a> {
    let dims = mask.layout().shape();
    let [b, h, r] = [dims[0], dims[1], dims[2]];
    let row = g.seq;
    let head = r * row;
    Bias {
        data: values(mask),
        batch_stride: if b == 1 { 0 } else { h * head },
        head_stride: if h == 1 { 0 } else { head },
        row_stride: if r == 1 { 0 } else { row },
    }
}

/// Flex without autodiff: no dropout (it is off without autodiff), nothing kept.
fn inference(
    (q, k, v, mask): (FlexTensor, FlexTensor, FlexTensor, Option<FlexTensor>),
    shape: AttentionShape,
) -> FlexTensor {
    let (q, k, v) = (contiguous(q), contiguous(k), contiguous(v));
    let mask = mask.map(contiguous);
    let g = geometry(&q, &shape);
    let inputs = Inputs {
        q: values(&q),
        k: values(&k),
        v: values(&v),
        bias: mask.as_ref().map(|m| bias_view(m, &g)),
        dropout: None,
    };
    let (out, _) = kernel::forward(&g, inputs, false);
    tensor(out, q.layout().shape().to_vec())
}

/// What the backward pass needs, kept by the forward.
#[derive(Debug, Clone)]
struct State {
    q: FlexTensor,
    k: FlexTensor,
    v: FlexTensor,
    probs: FlexTensor,
    keep: Option<(FlexTensor, f32)>,
    geometry: Geometry,
}

#[derive(Debug)]
struct AttentionBackward;

impl Backward<Flex, 3> for AttentionBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_q, node_k, node_v] = ops.parents;
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let s = ops.state;
        let saved = Saved {
            q: values(&s.q),
            k: values(&s.k),
            v: values(&s.v),
            probs: values(&s.probs),
            dropout: s.keep.as_ref().map(|(keep, scale)| Dropout {
                keep: values(keep),
                scale: *scale,
            }),
            grad: values(&grad),
        };
        let out = kernel::backward(&s.geometry, saved);
        let dims = s.q.layout().shape().to_vec();
        for (node, g) in [(node_q, out.q), (node_k, out.k), (node_v, out.v)] {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, tensor(g, dims.clone()));
            }
        }
    }
}

/// The dropout mask, drawn as burn's `Dropout` draws it (same shape, same
/// generator call), so the composed path with the same seed drops the same
/// entries.
fn dropout_mask(g: &Geometry, p: f64) -> Option<(FlexTensor, f32)> {
    (p > 0.0).then(|| {
        let keep = 1.0 - p;
        let dims = [g.batch, g.heads, g.seq, g.seq];
        let mask =
            Tensor::<Flex, 4>::random(dims, Distribution::Bernoulli(keep), &Default::default());
        (contiguous(primitive(mask)), (1.0 / keep) as f32)
    })
}

/// `Autodiff<Flex>`: one node whose parents are q, k and v.
fn autodiff(
    (q, k, v, mask): (AdTensor, AdTensor, AdTensor, Option<AdTensor>),
    shape: AttentionShape,
) -> AdTensor {
    let nodes = [q.node.clone(), k.node.clone(), v.node.clone()];
    let (qp, kp, vp) = (
        contiguous(q.primitive),
        contiguous(k.primitive),
        contiguous(v.primitive),
    );
    let mask = mask.map(|m| contiguous(m.primitive));
    let g = geometry(&qp, &shape);
    let keep = dropout_mask(&g, shape.dropout);
    let prep = AttentionBackward
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful();
    let tracked = matches!(prep, OpsKind::Tracked(_));
    let inputs = Inputs {
        q: values(&qp),
        k: values(&kp),
        v: values(&vp),
        bias: mask.as_ref().map(|m| bias_view(m, &g)),
        dropout: keep.as_ref().map(|(keep, scale)| Dropout {
            keep: values(keep),
            scale: *scale,
        }),
    };
    let (out, probs) = kernel::forward(&g, inputs, tracked);
    let dims = qp.layout().shape().to_vec();
    let out = tensor(out, dims);
    match prep {
        OpsKind::Tracked(prep) => {
            let probs = probs.expect("kept when tracked");
            let probs = tensor(probs, vec![g.batch, g.heads, g.seq, g.seq]);
            let state = State {
                q: qp,
                k: kp,
                v: vp,
                probs,
                keep,
                geometry: g,
            };
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}
