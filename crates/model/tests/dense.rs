//! zhbert's fp32 linear kernel (`zhbert_model::dense`): the product against
//! f64 with the rounding bound of its summation, the fused GELU against
//! burn's, and whole models run through it against the PyTorch fixtures.
//!
//! The tests set `ZHBERT_CPU_CAP=avx2` before anything reads it (this file
//! is its own process), so that the model runs the kernel where the CPU
//! has AVX-512 too (and would otherwise run burn's matmul).

mod common;

use std::sync::Once;

use burn::backend::Flex;
use burn::tensor::{activation, Tensor, TensorData};
use common::grads::*;
use common::*;
use zhbert_model::dense::{linear, Activation, Kernel, PackedPanels, MIN_ROWS};
use zhbert_model::*;

/// (rows, k, n): one row, rows not a multiple of the 6-row tile, n not a
/// multiple of the 16-column panel, few rows against many columns (the split
/// of columns over threads), and MiniLM's shapes.
const SHAPES: [(usize, usize, usize); 9] = [
    (1, 1, 1),
    (1, 7, 5),
    (3, 13, 17),
    (7, 33, 16),
    (37, 130, 31),
    (2, 384, 1536),
    (64, 384, 384),
    (101, 1536, 40),
    (200, 384, 1536),
];

fn setup() -> Option<Kernel> {
    static SET: Once = Once::new();
    SET.call_once(|| std::env::set_var("ZHBERT_CPU_CAP", "avx2"));
    let kernel = Kernel::detect();
    if kernel.is_none() {
        eprintln!("skipped: this CPU has no AVX2 + FMA");
    }
    kernel
}

/// Each output is `fl(fl(Σ x·w) + b)` with the sum a chain of `k` fused
/// multiply-adds, each one rounding: within `γ_k·S` of the exact sum, where
/// `S = Σ|x·w|` and `γ_k = k·u/(1 − k·u)`, `u = 2⁻²⁴` (Higham, *Accuracy and
/// Stability of Numerical Algorithms*, §3.1); the bias adds one rounding of
/// the result.
#[test]
fn kernel_matches_f64_within_the_summation_bound() {
    let Some(kernel) = setup() else { return };
    let mut rng = Rng(0x243F_6A88_85A3_08D3);
    let u = f64::from(f32::EPSILON) / 2.0;
    for (rows, k, n) in SHAPES {
        let x = rng.vec(rows * k, 2.0);
        let w = rng.vec(k * n, 0.05);
        let b = rng.vec(n, 0.5);
        let packed = PackedPanels::pack(&w, k, n, Some(&b));
        let y = linear(&x, rows, &packed, Activation::Identity, kernel);
        assert_eq!(y.len(), rows * n);
        let gamma = k as f64 * u / (1.0 - k as f64 * u);
        for i in 0..rows {
            for j in 0..n {
                let (mut exact, mut magnitude) = (0.0f64, 0.0f64);
                for t in 0..k {
                    let p = f64::from(x[i * k + t]) * f64::from(w[t * n + j]);
                    exact += p;
                    magnitude += p.abs();
                }
                exact += f64::from(b[j]);
                let bound = gamma * magnitude * (1.0 + u) + u * exact.abs();
                let err = (f64::from(y[i * n + j]) - exact).abs();
                assert!(
                    err <= bound,
                    "{rows}×{k}×{n} at ({i}, {j}): {} vs {exact}, error {err:e} > {bound:e}",
                    y[i * n + j]
                );
            }
        }
    }
}

/// The GELU in the output step gives the bits burn's `gelu` (burn-flex's,
/// vendored) gives on the unfused product, and a layer without bias is one
/// with a zero bias.
#[test]
fn fused_gelu_equals_burns_gelu_after_the_product() {
    let Some(kernel) = setup() else { return };
    let mut rng = Rng(99);
    let device = Default::default();
    for (rows, k, n) in SHAPES {
        let x = rng.vec(rows * k, 2.0);
        let w = rng.vec(k * n, 0.1);
        let b = rng.vec(n, 0.5);
        let packed = PackedPanels::pack(&w, k, n, Some(&b));
        let plain = linear(&x, rows, &packed, Activation::Identity, kernel);
        let fused = linear(&x, rows, &packed, Activation::Gelu, kernel);
        let plain = Tensor::<Flex, 2>::from_data(TensorData::new(plain, [rows, n]), &device);
        let want = to_vec(activation::gelu(plain));
        for (i, (f, w)) in fused.iter().zip(&want).enumerate() {
            assert_eq!(
                f.to_bits(),
                w.to_bits(),
                "{rows}×{k}×{n} at {i}: {f} vs {w}"
            );
        }
        let unbiased = PackedPanels::pack(&w, k, n, None);
        let zero = PackedPanels::pack(&w, k, n, Some(&vec![0.0; n]));
        assert_eq!(
            linear(&x, rows, &unbiased, Activation::Identity, kernel),
            linear(&x, rows, &zero, Activation::Identity, kernel)
        );
    }
}

/// The fixture's input repeated along the batch until its rows reach
/// [`MIN_ROWS`] (from which the model's layers run the kernel), and how many
/// times: the fixture's expected values repeat alike, as each sequence's
/// result does not depend on the others in its batch.
fn repeated(e: &Expected) -> (BertInput<Flex>, usize) {
    let device = Default::default();
    let x = input::<Flex>(e, &device);
    let times = MIN_ROWS.div_ceil(x.input_ids.dims().iter().product());
    let input = BertInput {
        input_ids: x.input_ids.repeat_dim(0, times),
        token_type_ids: x.token_type_ids.map(|t| t.repeat_dim(0, times)),
        attention_mask: x.attention_mask.map(|m| m.repeat_dim(0, times)),
    };
    assert!(input.input_ids.dims().iter().product::<usize>() >= MIN_ROWS);
    (input, times)
}

/// Models whose linear layers all run the kernel (GELU fused into the
/// intermediate one) give PyTorch's hidden states and logits, to the
/// tolerance of the other parity tests.
#[test]
fn models_through_the_kernel_match_pytorch() {
    let Some(kernel) = setup() else { return };
    assert_eq!(
        Kernel::preferred(),
        Some(kernel),
        "the model would not run the kernel"
    );
    let device = Default::default();

    let e = Expected::open(fixtures().join("tiny-bert/expected.safetensors"));
    let (model, _, _) = load_classifier::<Flex>(
        &fixtures().join("tiny-bert"),
        &LoadOptions::default(),
        &device,
    )
    .unwrap();
    let (x, times) = repeated(&e);
    let logits = to_vec(model.forward(x));
    assert_close(
        "tiny-bert logits",
        &logits,
        &e.f32("logits").repeat(times),
        1e-4,
    );

    let e = Expected::open(fixtures().join("minilm/expected.safetensors"));
    let (base, _, _) = load_base::<Flex>(&minilm_dir(), &device).unwrap();
    let (x, times) = repeated(&e);
    let out = base.forward(x);
    assert_close(
        "minilm last_hidden_state",
        &to_vec(out.last_hidden_state),
        &e.f32("last_hidden_state").repeat(times),
        1e-4,
    );
    let options = LoadOptions {
        labels: Some(vec!["a".into(), "b".into()]),
        allow_fresh_head: true,
    };
    let (mut model, _, _) = load_classifier::<Flex>(&minilm_dir(), &options, &device).unwrap();
    load_weights_file(&mut model, &fixtures().join("minilm/expected.safetensors")).unwrap();
    let (x, times) = repeated(&e);
    let logits = to_vec(model.forward(x));
    assert_close(
        "minilm logits",
        &logits,
        &e.f32("logits").repeat(times),
        1e-4,
    );
}

/// Training through the kernel: under `Autodiff<Flex>` each linear layer is
/// one node whose forward and input gradient run the kernel (`dense`'s
/// `autodiff` module). The tiny classifier's batch, repeated until it
/// reaches [`MIN_ROWS`], gives PyTorch's loss and every parameter's gradient
/// to the parity suite's tolerance.
#[test]
fn training_through_the_kernel_matches_pytorch_gradients() {
    let Some(_) = setup() else { return };
    let e = Expected::open(tiny_dir().join("expected.safetensors"));
    let tokens: usize = e.shape("input_ids").iter().product();
    let times = MIN_ROWS.div_ceil(tokens);
    let TinyRun { loss, grads, .. } = tiny_gradients(&e, Precision::Fp32, times);
    assert_close("loss (autodiff, kernel)", &loss, &e.f32("loss"), 1e-5);
    assert_gradients_match(&e, grads, 1e-4);
}
