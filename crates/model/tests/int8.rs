//! zhbert's int8 linear kernels (`zhbert_model::quantize`): the product
//! against an f64 product of the operands the kernel multiplies, the
//! quantizers against their definitions, the SIMD (AVX2, AVX-512 VNNI) and
//! scalar paths against each other, and a quantized MiniLM against its fp32
//! logits and PyTorch's `quantize_dynamic` (`tests/fixtures/make_int8.py`).

mod common;

use burn::backend::{Flex, NdArray};
use burn::module::Module;
use common::*;
use zhbert_model::quantize::kernel::{
    matmul, matmul_act, Activation, Kernel, PackedWeight, QuantizedRows,
};
use zhbert_model::*;

/// (rows, k, n): one row, k not a multiple of 4 or of the vector width, n
/// not a multiple of the 16-column block, and MiniLM's shapes.
const SHAPES: [(usize, usize, usize); 8] = [
    (1, 1, 1),
    (1, 7, 5),
    (3, 13, 17),
    (5, 33, 16),
    (37, 130, 31),
    (64, 384, 384),
    (33, 1536, 40),
    (130, 384, 1536),
];

fn kernels() -> Vec<Kernel> {
    Kernel::ALL.into_iter().filter(|k| k.available()).collect()
}

/// The kernel's result against `Σ x'·w' + b` in f64, with `x'` and `w'` the
/// dequantized operands (as f32, as `dequantized` gives them).
///
/// The bound: the kernel sums the integer products exactly, then computes
/// `fl(fl(fl(acc)·fl(s_x·s_w)) + b)`: four roundings, so it is within
/// `4u·(S + |b|)` of the exact `s_x·s_w·acc + b`, where `u = 2⁻²⁴` and
/// `S = Σ|x'·w'|` bounds `|s_x·s_w·acc|`. Each `x'`, `w'` is itself one
/// rounding from `(q − z)·s` and `q·s`, which moves the reference by at most
/// `2u·S` (f64's own error is negligible). Together: `6u·(S + |b|)`, a few
/// ulps of the terms' magnitude.
#[test]
fn kernel_matches_f64_product_of_the_dequantized_operands() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let u = f64::from(f32::EPSILON) / 2.0;
    for (rows, k, n) in SHAPES {
        let x = rng.vec(rows * k, 2.0);
        let w = rng.vec(k * n, 0.05);
        let b = rng.vec(n, 0.5);
        let packed = PackedWeight::pack(&w, k, n, Some(&b));
        let xd = QuantizedRows::quantize(&x, rows, k).dequantized();
        let wd = packed.dequantized();
        for kernel in kernels() {
            let q = QuantizedRows::quantize_with(&x, rows, k, kernel);
            let y = matmul(&q, &packed, kernel);
            assert_eq!(y.len(), rows * n);
            for i in 0..rows {
                for j in 0..n {
                    let (mut exact, mut magnitude) = (f64::from(b[j]), 0.0f64);
                    for t in 0..k {
                        let p = f64::from(xd[i * k + t]) * f64::from(wd[t * n + j]);
                        exact += p;
                        magnitude += p.abs();
                    }
                    let bound = 6.0 * u * (magnitude + f64::from(b[j]).abs());
                    let err = (f64::from(y[i * n + j]) - exact).abs();
                    assert!(
                        err <= bound,
                        "{kernel:?} {rows}×{k}×{n} at ({i}, {j}): {} vs {exact}, error {err:e} > {bound:e}",
                        y[i * n + j]
                    );
                }
            }
        }
    }
}

/// Weights: `q = round(w / s)` with `s = max|w_col| / 64`, so every weight is
/// within half a step. Activations: `x' = round(x / s)·s` with
/// `s = (max(x, 0) − min(x, 0)) / 255`, half a step too, except at the row's
/// extreme where the zero point's rounding can push `q` one past 255 and the
/// clamp takes it back (one and a half steps).
#[test]
fn quantizers_round_to_the_nearest_step() {
    let mut rng = Rng(7);
    for (rows, k, n) in SHAPES {
        let w = rng.vec(k * n, 0.05);
        let wd = PackedWeight::pack(&w, k, n, None).dequantized();
        for j in 0..n {
            let amax = (0..k).map(|t| w[t * n + j].abs()).fold(0.0f32, f32::max);
            let step = amax / 64.0;
            for t in 0..k {
                let err = (wd[t * n + j] - w[t * n + j]).abs();
                assert!(err <= step * 0.5001, "w[{t}, {j}]: {err} > {step}/2");
            }
        }
        let x = rng.vec(rows * k, 3.0);
        let xd = QuantizedRows::quantize(&x, rows, k).dequantized();
        for i in 0..rows {
            let row = &x[i * k..(i + 1) * k];
            let lo = row.iter().fold(0.0f32, |m, &v| m.min(v));
            let hi = row.iter().fold(0.0f32, |m, &v| m.max(v));
            let step = (hi - lo) / 255.0;
            for (t, &v) in row.iter().enumerate() {
                let err = (xd[i * k + t] - v).abs();
                let extreme = v == hi || v == lo;
                let allowed = if extreme { 1.5001 } else { 0.5001 } * step;
                assert!(err <= allowed, "x[{i}, {t}] = {v}: error {err} > {allowed}");
            }
        }
    }
}

/// Every SIMD kernel this CPU has (AVX2, AVX-512 VNNI) computes the scalar
/// kernel's bits: the same quantized rows and the same products.
#[test]
fn simd_kernels_agree_with_the_scalar_kernel_bit_for_bit() {
    let simd: Vec<Kernel> = kernels()
        .into_iter()
        .filter(|k| *k != Kernel::Scalar)
        .collect();
    if simd.is_empty() {
        eprintln!("no AVX2 on this CPU: only the scalar kernel exists here");
        return;
    }
    let mut rng = Rng(42);
    for (rows, k, n) in SHAPES {
        let x = rng.vec(rows * k, 1.0);
        let w = rng.vec(k * n, 0.1);
        let b = rng.vec(n, 1.0);
        let packed = PackedWeight::pack(&w, k, n, Some(&b));
        let scalar = QuantizedRows::quantize_with(&x, rows, k, Kernel::Scalar);
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        let expected = bits(matmul(&scalar, &packed, Kernel::Scalar));
        for &kernel in &simd {
            let q = QuantizedRows::quantize_with(&x, rows, k, kernel);
            assert_eq!(
                bits(scalar.dequantized()),
                bits(q.dequantized()),
                "{kernel:?} {rows}×{k}: the row quantizers differ"
            );
            assert_eq!(
                expected,
                bits(matmul(&q, &packed, kernel)),
                "{kernel:?} {rows}×{k}×{n}: the products differ"
            );
        }
    }
}

/// The GELU fused into the output step gives the bits of burn's `gelu` (on
/// Flex, the vendored burn-flex GELU the unfused model runs) applied to the
/// plain product, on both of Flex's paths (below and above its parallel
/// threshold of 65,536 elements: the last shape) and on both kernels.
#[test]
fn fused_gelu_equals_burns_gelu_after_the_product() {
    let mut rng = Rng(7);
    let device = Default::default();
    for (rows, k, n) in SHAPES {
        // Pre-activations of about ±4, the range where GELU bends.
        let x = rng.vec(rows * k, 1.0);
        let w = rng.vec(k * n, 0.2);
        let b = rng.vec(n, 1.0);
        let packed = PackedWeight::pack(&w, k, n, Some(&b));
        for kernel in kernels() {
            let q = QuantizedRows::quantize_with(&x, rows, k, kernel);
            let plain = matmul(&q, &packed, kernel);
            let unfused = burn::tensor::Tensor::<Flex, 1>::from_floats(plain.as_slice(), &device);
            let unfused = to_vec(burn::tensor::activation::gelu(unfused));
            let fused = matmul_act(&q, &packed, kernel, Activation::Gelu);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&fused),
                bits(&unfused),
                "{kernel:?} {rows}×{k}×{n}: fused GELU differs from burn's"
            );
        }
    }
}

/// A small classifier on Flex (one layer, GELU) and an input for it.
fn small_model() -> (BertForSequenceClassification<Flex>, BertInput<Flex>) {
    let mut config = BertConfig::new(100);
    config.hidden_size = 32;
    config.num_attention_heads = 2;
    config.intermediate_size = 64;
    config.num_hidden_layers = 1;
    let device = Default::default();
    let model = config.init_classifier::<Flex>(&device);
    let ids = [2, 7, 9, 3, 2, 11, 3, 0];
    let input = BertInput::from_ids(&ids, &[0; 8], &[1, 1, 1, 1, 1, 1, 1, 0], 2, 4, &device);
    (model, input)
}

/// Quantizing frees the fp32 weights of the quantized layers (the model's
/// parameter count falls by exactly theirs, biases, embeddings and LayerNorm
/// stay), the model still runs, and quantizing again changes nothing.
#[test]
fn quantizing_drops_the_fp32_linear_weights() {
    let (model, input) = small_model();
    let before = model.num_params();
    // Per encoder layer: Q, K, V, attention output 32×32; intermediate
    // 32×64 and output 64×32; then the pooler 32×32 and the head 32×2.
    let dropped = 4 * 32 * 32 + 2 * 32 * 64 + 32 * 32 + 32 * model.num_labels();
    let labels = model.num_labels();
    let model = model.quantize(Quantize::Int8).unwrap();
    assert_eq!(model.num_params(), before - dropped);
    assert_eq!(model.num_labels(), labels);
    let once = to_vec(model.forward(input.clone()));
    assert!(once.iter().all(|v| v.is_finite()));
    let twice = model.quantize(Quantize::Int8).unwrap();
    assert_eq!(to_vec(twice.forward(input)), once);
    // What is left of it cannot be saved: an error, and no folder written.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("quantized");
    let config = BertConfig::new(100);
    let err = save_classifier(&twice, &config, &out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("a quantized model cannot be saved"), "{err}");
    assert!(!out.exists());
}

/// The fixture model `name` (`tiny-bert`, or MiniLM with the head of
/// `minilm/expected.safetensors`) on its fixture inputs: fp32 and int8 logits.
fn fixture_logits(name: &str) -> (Vec<f32>, Vec<f32>, Expected) {
    let e = Expected::open(fixtures().join(name).join("expected.safetensors"));
    let device = Default::default();
    let (model, dir) = if name == "minilm" {
        let options = LoadOptions {
            labels: Some(vec!["a".into(), "b".into()]),
            allow_fresh_head: true,
        };
        (options, minilm_dir())
    } else {
        (LoadOptions::default(), fixtures().join(name))
    };
    let (mut model, _, _) = load_classifier::<Flex>(&dir, &model, &device).unwrap();
    if name == "minilm" {
        load_weights_file(&mut model, &fixtures().join("minilm/expected.safetensors")).unwrap();
    }
    let input = || BertInput::<Flex> {
        input_ids: e.int_tensor("input_ids", &device),
        token_type_ids: Some(e.int_tensor("token_type_ids", &device)),
        attention_mask: Some(e.int_tensor("attention_mask", &device)),
    };
    let fp32 = to_vec(model.forward(input()));
    let model = model.quantize(Quantize::Int8).unwrap();
    assert_eq!(model.quantization(), Some(Quantize::Int8));
    let int8 = to_vec(model.forward(input()));
    (fp32, int8, e)
}

fn rms(a: &[f32], b: &[f32]) -> f32 {
    let s: f32 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    (s / a.len() as f32).sqrt()
}

/// zhbert's int8 logits against its fp32 ones and against PyTorch's
/// `quantize_dynamic` on the same model and inputs: PyTorch quantizes weights
/// per tensor and activations per batch to 7 bits, zhbert per channel and
/// per row to 8, so zhbert must be at least as close to fp32 as PyTorch is.
#[test]
fn quantized_models_are_as_close_to_fp32_as_pytorch_int8() {
    for name in ["tiny-bert", "minilm"] {
        let (fp32, int8, e) = fixture_logits(name);
        assert_close(
            &format!("{name} fp32 logits"),
            &fp32,
            &e.f32("logits"),
            1e-4,
        );
        let torch =
            Expected::open(fixtures().join(name).join("int8.safetensors")).f32("logits.int8");
        let (ours, theirs) = (rms(&int8, &fp32), rms(&torch, &fp32));
        eprintln!("{name}: rms from fp32: zhbert int8 {ours:.3e}, PyTorch int8 {theirs:.3e}");
        assert!(
            ours > 0.0,
            "{name}: the int8 path did not run: logits equal fp32's"
        );
        assert!(
            ours <= theirs,
            "{name}: zhbert int8 is further from fp32 (rms {ours:e}) than PyTorch's (rms {theirs:e})"
        );
    }
}

#[test]
fn quantize_needs_the_flex_backend() {
    let mut config = BertConfig::new(100);
    config.hidden_size = 32;
    config.num_attention_heads = 2;
    config.intermediate_size = 64;
    config.num_hidden_layers = 1;
    let model = config.init_classifier::<NdArray>(&Default::default());
    let err = model.quantize(Quantize::Int8).unwrap_err();
    assert!(err.to_string().contains("flex CPU backend only"), "{err}");
    assert_eq!("int8".parse::<Quantize>(), Ok(Quantize::Int8));
    assert!("int4".parse::<Quantize>().unwrap_err().contains("int4"));
}
