//! zhbert's attention op against the composed tensor ops it replaces: values
//! and gradients, with and without padding masks and dropout, on shapes that
//! are not multiples of any vector width. (Against PyTorch, the op runs inside
//! the model in `parity.rs` here and in the trainer's 20-step parity test.)

// The fixture readers in `common` are not needed here.
#[allow(unused_imports)]
mod common;

use std::sync::{Mutex, MutexGuard};

use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Distribution, Tensor};
use common::{assert_close, to_vec};
use zhbert_model::attention::{
    composed_attention, fused_attention, has_fused_kernel, self_attention, AttentionShape,
};

type AF = Autodiff<Flex>;

/// Flex's generator is one per process: the tests that seed it and draw from
/// it (inputs, dropout masks) run one at a time.
static RNG: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// batch 3, seq 13, 4 heads of 5: no size a multiple of 8.
const BATCH: usize = 3;
const SEQ: usize = 13;
const HEADS: usize = 4;
const DIM: usize = 5;

fn shape(dropout: f64) -> AttentionShape {
    AttentionShape {
        batch: BATCH,
        heads: HEADS,
        scale: (DIM as f64).sqrt().recip(),
        dropout,
        float: DType::F32,
    }
}

/// q, k, v as `[batch·seq, hidden]` rows with a spread that makes the softmax
/// far from uniform.
fn qkv<B: Backend>(device: &B::Device) -> [Tensor<B, 2>; 3] {
    B::seed(device, 7);
    let rows = [BATCH * SEQ, HEADS * DIM];
    [0; 3].map(|_| Tensor::random(rows, Distribution::Normal(0.0, 2.0), device))
}

/// BERT's padding mask: sequence `b` has `SEQ - 4·b` tokens; -1e4 on padding keys.
fn padding<B: Backend>(device: &B::Device) -> Tensor<B, 4> {
    let mut bias = vec![0.0f32; BATCH * SEQ];
    for b in 0..BATCH {
        for j in SEQ - 4 * b..SEQ {
            bias[b * SEQ + j] = -1.0e4;
        }
    }
    Tensor::<B, 1>::from_floats(bias.as_slice(), device).reshape([BATCH, 1, 1, SEQ])
}

/// A mask that differs per head and per query row, to check every stride.
fn full_mask<B: Backend>(device: &B::Device) -> Tensor<B, 4> {
    B::seed(device, 11);
    Tensor::random(
        [BATCH, HEADS, SEQ, SEQ],
        Distribution::Normal(0.0, 1.0),
        device,
    )
}

fn on<B: Backend>(t: &Tensor<impl Backend, 2>, device: &B::Device) -> Tensor<B, 2> {
    Tensor::from_data(t.to_data(), device)
}

#[test]
fn flex_and_autodiff_flex_take_the_kernel() {
    // Otherwise the comparisons below would compare the composed ops with themselves.
    assert!(has_fused_kernel::<Flex>());
    assert!(has_fused_kernel::<AF>());
    assert!(!has_fused_kernel::<NdArray>());
    assert!(!has_fused_kernel::<Autodiff<NdArray>>());
}

#[test]
fn flex_kernel_matches_composed_ops_in_inference() {
    let _rng = lock();
    let device = Default::default();
    let [q, k, v] = qkv::<Flex>(&device);
    let masks = [
        None,
        Some(padding::<Flex>(&device)),
        Some(full_mask::<Flex>(&device)),
    ];
    for mask in masks {
        let what = format!("mask {:?}", mask.as_ref().map(|m| m.dims()));
        let got = self_attention(q.clone(), k.clone(), v.clone(), mask.clone(), shape(0.1));
        let want = composed_attention(q.clone(), k.clone(), v.clone(), mask, shape(0.0));
        assert_close(&what, &to_vec(got), &to_vec(want), 2e-6);
    }
}

#[test]
fn burns_fused_op_matches_composed_ops_on_ndarray() {
    let _rng = lock();
    let device = Default::default();
    let [q, k, v] = qkv::<NdArray>(&device);
    for mask in [None, Some(padding::<NdArray>(&device))] {
        let got = fused_attention(q.clone(), k.clone(), v.clone(), mask.clone(), shape(0.0));
        let want = composed_attention(q.clone(), k.clone(), v.clone(), mask, shape(0.0));
        assert_close("ndarray fused", &to_vec(got), &to_vec(want), 2e-6);
    }
}

/// Output and the gradients of q, k, v for a weighted sum of the output
/// (weights random, so every output element's gradient differs).
fn run_with_grads(
    attn: fn(
        Tensor<AF, 2>,
        Tensor<AF, 2>,
        Tensor<AF, 2>,
        Option<Tensor<AF, 4>>,
        AttentionShape,
    ) -> Tensor<AF, 2>,
    mask: Option<Tensor<AF, 4>>,
    dropout: f64,
) -> [Vec<f32>; 4] {
    let device = Default::default();
    let [q, k, v] = qkv::<Flex>(&device).map(|t| on::<AF>(&t, &device).require_grad());
    Flex::seed(&device, 3);
    let weights = Tensor::<AF, 2>::random(q.dims(), Distribution::Normal(0.0, 1.0), &device);
    // The same generator state for both paths: they draw the same dropout mask.
    Flex::seed(&device, 5);
    let out = attn(q.clone(), k.clone(), v.clone(), mask, shape(dropout));
    let grads = (out.clone() * weights).sum().backward();
    let grad = |t: &Tensor<AF, 2>| to_vec(t.grad(&grads).expect("tracked"));
    [to_vec(out.inner()), grad(&q), grad(&k), grad(&v)]
}

fn compare_gradients(mask: Option<Tensor<AF, 4>>, dropout: f64) {
    let got = run_with_grads(self_attention, mask.clone(), dropout);
    let want = run_with_grads(composed_attention, mask, dropout);
    for (name, (g, w)) in ["output", "dq", "dk", "dv"]
        .iter()
        .zip(got.iter().zip(&want))
    {
        assert_close(&format!("{name}, dropout {dropout}"), g, w, 1e-5);
    }
}

#[test]
fn autodiff_kernel_matches_composed_gradients() {
    let _rng = lock();
    let device = Default::default();
    compare_gradients(None, 0.0);
    compare_gradients(Some(padding::<AF>(&device)), 0.0);
    compare_gradients(Some(full_mask::<AF>(&device)), 0.0);
}

#[test]
fn autodiff_kernel_drops_what_the_composed_dropout_drops() {
    let _rng = lock();
    let device = Default::default();
    compare_gradients(Some(padding::<AF>(&device)), 0.3);
    // Dropout really happened: the output differs from the one without it.
    let dropped = run_with_grads(self_attention, None, 0.3);
    let plain = run_with_grads(self_attention, None, 0.0);
    assert!(common::max_abs_diff(&dropped[0], &plain[0]) > 0.1);
}

#[test]
fn autodiff_kernel_without_tracked_inputs_is_plain_forward() {
    let _rng = lock();
    let device = Default::default();
    let [q, k, v] = qkv::<Flex>(&device).map(|t| on::<AF>(&t, &device));
    let mask = Some(padding::<AF>(&device));
    let got = self_attention(q.clone(), k.clone(), v.clone(), mask.clone(), shape(0.0));
    let want = composed_attention(q, k, v, mask, shape(0.0));
    assert_close("untracked", &to_vec(got), &to_vec(want), 2e-6);
}
