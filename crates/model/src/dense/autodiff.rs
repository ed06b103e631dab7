//! The kernel in training: a linear layer under `Autodiff<Flex>` as one graph
//! node. The forward and the input's gradient (`dX = dY·Wᵀ`, the same shape
//! of product) run the kernel; the weight's gradient (`dW = Xᵀ·dY`, whose
//! inner dimension is the batch's rows) and the bias's (`Σ dY` over the
//! rows) run burn's ops on Flex, as burn's own `Linear` backward does.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, FloatTensorOps};
use burn::tensor::{Shape, Tensor, TensorPrimitive};
use burn_flex::{Flex, FlexTensor};

use super::{linear, Activation, Kernel, PackedPanels};
use crate::attention::downcast;
use crate::cpu::{flex_tensor as tensor, flex_values as values};

/// burn-autodiff's tensor over Flex (its type is not exported by name).
type AdTensor = FloatTensor<Autodiff<Flex>>;

/// `layer(x)` as one node when `B` is `Autodiff<Flex>` and the layer has a
/// bias (BERT's all do); else `x` back. The caller has checked the dtype,
/// the shapes and the row count.
pub(super) fn try_linear<B: Backend, const D: usize>(
    layer: &Linear<B>,
    x: Tensor<B, D>,
    kernel: Kernel,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    let Some(bias) = &layer.bias else {
        return Err(x);
    };
    let ad = |t: B::FloatTensorPrimitive| downcast::<_, AdTensor>(t);
    let (Ok(w), Ok(b)) = (ad(float(layer.weight.val())), ad(float(bias.val()))) else {
        return Err(x);
    };
    let x = match ad(float(x)) {
        Ok(x) => x,
        Err(_) => unreachable!("the weight was an Autodiff<Flex> tensor"),
    };
    let y = forward([x, w, b], kernel);
    let y = downcast::<AdTensor, B::FloatTensorPrimitive>(y)
        .unwrap_or_else(|_| unreachable!("B is Autodiff<Flex>"));
    Ok(Tensor::from_primitive(TensorPrimitive::Float(y)))
}

fn float<B: Backend, const D: usize>(t: Tensor<B, D>) -> B::FloatTensorPrimitive {
    t.into_primitive().tensor()
}

/// What the backward needs: the input and the weight (`[k, n]`).
#[derive(Debug, Clone)]
struct State {
    x: FlexTensor,
    weight: FlexTensor,
    kernel: Kernel,
}

#[derive(Debug)]
struct LinearBackward;

impl Backward<Flex, 3> for LinearBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let State { x, weight, kernel } = ops.state;
        let dims = weight.layout().shape().to_vec();
        let (k, n) = (dims[0], dims[1]);
        let x_dims = x.layout().shape().to_vec();
        let rows = x_dims[..x_dims.len() - 1].iter().product::<usize>();
        let dy = grads.consume::<Flex>(&ops.node).to_contiguous();
        let dy_rows = || flex2(dy.clone(), [rows, n]);
        if let Some(node) = node_x {
            // dX = dY·Wᵀ through the kernel.
            let packed = PackedPanels::pack_transposed(values(&weight), n, k);
            let dx = linear(values(&dy), rows, &packed, Activation::Identity, kernel);
            grads.register::<Flex>(node.id, tensor(dx, x_dims));
        }
        if let Some(node) = node_w {
            let x = flex2(x, [rows, k]);
            let dw = x.transpose().matmul(dy_rows());
            grads.register::<Flex>(node.id, dw.into_primitive().tensor());
        }
        if let Some(node) = node_b {
            let db = dy_rows().sum_dim(0).reshape([n]);
            grads.register::<Flex>(node.id, db.into_primitive().tensor());
        }
    }
}

/// One node whose parents are the input, the weight and the bias.
fn forward([x, w, b]: [AdTensor; 3], kernel: Kernel) -> AdTensor {
    let nodes = [x.node.clone(), w.node.clone(), b.node.clone()];
    let (xp, wp, bp) = (
        x.primitive.to_contiguous(),
        w.primitive.to_contiguous(),
        b.primitive.to_contiguous(),
    );
    let mut dims = xp.layout().shape().to_vec();
    let k = dims[dims.len() - 1];
    let n = wp.layout().shape()[1];
    let rows = dims[..dims.len() - 1].iter().product::<usize>();
    let packed = PackedPanels::pack(values(&wp), k, n, Some(values(&bp)));
    let y = linear(values(&xp), rows, &packed, Activation::Identity, kernel);
    *dims.last_mut().expect("rank ≥ 1") = n;
    let out = tensor(y, dims);
    match LinearBackward
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = State {
                x: xp,
                weight: wp,
                kernel,
            };
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

/// A tensor as the 2-D `dims` (a view of a contiguous one, no copy).
fn flex2(t: FlexTensor, dims: [usize; 2]) -> Tensor<Flex, 2> {
    let t = <Flex as FloatTensorOps<Flex>>::float_reshape(t, Shape::new(dims));
    Tensor::from_primitive(TensorPrimitive::Float(t))
}
