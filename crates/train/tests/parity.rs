//! 20 optimizer steps of fine-tuning MiniLM against PyTorch (`transformers` +
//! `torch.optim.AdamW` + `get_linear_schedule_with_warmup` + `clip_grad_norm_`,
//! gradient accumulation 2), on the fixture of `tests/fixtures/make_train_parity.py`:
//! same initial weights, same batches, no dropout. zhbert's side is the
//! library's own training loop (`Trainer::fit`), fed PyTorch's batches.

use std::collections::HashMap;

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::AutodiffBackend;
use zhbert_model::{
    load_classifier_with_config, load_weights_file, BertConfig, LoadOptions, Precision,
};
use zhbert_testkit::{fixtures, minilm_dir};
use zhbert_tokenizer::{Batch, BertTokenizer};
use zhbert_train::optim::{param_paths, read_f32_tensors};
use zhbert_train::{
    AdamWConfig, ClassWeights, Replica, StepRecord, TrainConfig, TrainData, TrainObserver,
    TrainSet, Trainer, Warmup,
};

type AB = Autodiff<Flex>;

/// The PyTorch run of `tests/fixtures/train-parity`.
struct Reference {
    losses: Vec<f64>,
    grad_norms: Vec<f64>,
    learning_rates: Vec<f64>,
    /// Tensors after the run (HF names), where the file has them (`final`).
    final_weights: HashMap<String, Vec<f32>>,
}

fn reference() -> Reference {
    reference_in("expected.json")
}

/// A run of the fixture: `expected.json` (fp32), `autocast-<bf16|f16>.json`
/// (the same run under `torch.autocast`, without learning rates), or
/// `adam-variant.json` (fp32 with other AdamW betas and eps).
fn reference_in(file: &str) -> Reference {
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("train-parity").join(file)).unwrap(),
    )
    .unwrap();
    let floats =
        |k: &str| -> Vec<f64> { serde_json::from_value(expected[k].clone()).unwrap_or_default() };
    Reference {
        losses: floats("losses"),
        grad_norms: floats("grad_norms"),
        learning_rates: floats("learning_rates"),
        final_weights: serde_json::from_value(expected["final"].clone()).unwrap_or_default(),
    }
}

/// The fixture's optimizer: lr 1e-4, weight decay 0.01, torch's betas and eps.
fn fixture_adamw() -> AdamWConfig {
    AdamWConfig {
        lr: 1e-4,
        weight_decay: 0.01,
        ..Default::default()
    }
}

/// Records every step's (mean loss, grad norm, lr), and stops the run after
/// `stop_after` steps (the fixture's schedule is over 20 steps, whatever part
/// of it is run).
struct Trace {
    steps: Vec<(f64, f64, f64)>,
    stop_after: usize,
}

impl TrainObserver for Trace {
    fn on_step(&mut self, step: &StepRecord) -> anyhow::Result<()> {
        self.steps.push((step.loss, step.grad_norm, step.lr));
        anyhow::ensure!(self.steps.len() < self.stop_after, "enough steps");
        Ok(())
    }
}

/// The fixture's micro-batches, in PyTorch's order.
fn fixture_batches() -> Vec<(Batch, Vec<usize>)> {
    let bytes = std::fs::read(fixtures().join("train-parity/batches.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    (0..40)
        .map(|m| {
            let ids = |name: &str| -> (Vec<u32>, Vec<usize>) {
                let (v, shape) = ints(&st, &format!("{name}.{m}"));
                (v.iter().map(|&x| x as u32).collect(), shape)
            };
            let (input_ids, shape) = ids("input_ids");
            let (labels, _) = ints(&st, &format!("labels.{m}"));
            let batch = Batch {
                batch_size: shape[0],
                seq_len: shape[1],
                input_ids,
                token_type_ids: ids("token_type_ids").0,
                attention_mask: ids("attention_mask").0,
                truncated_tokens: vec![0; shape[0]],
            };
            (batch, labels.iter().map(|&l| l as usize).collect())
        })
        .collect()
}

/// The first `steps` optimizer steps of the fixture's run on backend `B`
/// with optimizer `adamw`, through the library's training loop
/// ([`Trainer::fit`]) on PyTorch's batches: each step's (mean loss, grad
/// norm, lr), and after all 20 steps the weights it saved (HF names).
fn train_steps<B: AutodiffBackend>(
    steps: usize,
    precision: Precision,
    adamw: AdamWConfig,
    device: &B::Device,
) -> (HashMap<String, Vec<f32>>, Vec<(f64, f64, f64)>) {
    let stop_after = (steps < 20).then_some(steps);
    let (weights, trace) =
        train_run::<B>(fixture_settings(precision, adamw), None, stop_after, device);
    assert_eq!(trace.len(), steps);
    (weights, trace)
}

/// The fixture's settings: accumulation 2 over the 40 micro-batches of 4,
/// warmup 2, clipping at 1.
fn fixture_settings(precision: Precision, adamw: AdamWConfig) -> TrainConfig {
    TrainConfig {
        epochs: 1,
        batch_size: 4,
        grad_accum: 2,
        lr: adamw.lr,
        weight_decay: adamw.weight_decay,
        adam_beta1: adamw.beta1,
        adam_beta2: adamw.beta2,
        adam_epsilon: adamw.eps,
        warmup: Warmup::Steps(2),
        max_grad_norm: Some(1.0),
        precision,
        ..Default::default()
    }
}

/// A run of `settings` on PyTorch's batches through [`Trainer::fit`],
/// distilling `soft_targets` when given, stopped by the observer after
/// `stop_after` steps or else run to its end: each step's (mean loss, grad
/// norm, lr), and for a whole run the weights it saved (HF names).
fn train_run<B: AutodiffBackend>(
    settings: TrainConfig,
    soft_targets: Option<Vec<Vec<f32>>>,
    stop_after: Option<usize>,
    device: &B::Device,
) -> (HashMap<String, Vec<f32>>, Vec<(f64, f64, f64)>) {
    let mut config = BertConfig::from_file(minilm_dir().join("config.json")).unwrap();
    config.hidden_dropout_prob = 0.0;
    config.attention_probs_dropout_prob = 0.0;
    let labels: Vec<String> = vec!["negative".into(), "positive".into()];
    let options = LoadOptions {
        labels: Some(labels.clone()),
        allow_fresh_head: true,
    };
    let (mut model, config, _) =
        load_classifier_with_config::<B>(&minilm_dir(), config, &options, device).unwrap();
    load_weights_file(&mut model, &fixtures().join("minilm/expected.safetensors")).unwrap();
    let params = param_paths::<B, _>(&model).len();
    let data = TrainData {
        train: TrainSet::Batches(fixture_batches()),
        dev: None,
        test: None,
        labels,
        soft_targets,
    };
    let out = tempfile::tempdir().unwrap();
    let tokenizer = BertTokenizer::from_dir(minilm_dir()).unwrap();
    let trainer = Trainer::<B> {
        model_config: &config,
        tokenizer: &tokenizer,
        data: &data,
        config: &settings,
        output: out.path(),
        resume: false,
        device,
        replica: &Replica::alone(),
    };
    let mut trace = Trace {
        steps: Vec::new(),
        stop_after: stop_after.unwrap_or(usize::MAX),
    };
    let ended = trainer.fit(model, &mut trace);
    if let Some(steps) = stop_after {
        assert!(
            ended.is_err(),
            "stopped after {steps} steps by the observer"
        );
        return (HashMap::new(), trace.steps);
    }
    let summary = ended.unwrap();
    assert_eq!(summary.steps, trace.steps.len());
    let weights = read_f32_tensors(&out.path().join("model.safetensors")).unwrap();
    assert_eq!(weights.len(), params, "every parameter saved");
    (weights, trace.steps)
}

/// Checks a run's losses and grad norms against PyTorch's `want`.
fn check_trace(
    backend: &str,
    want: &Reference,
    trace: &[(f64, f64, f64)],
    loss_tol: f64,
    norm_tol: f64,
) {
    let rel = |a: f64, b: f64| (a - b).abs() / b.abs();
    for (step, &(loss, norm, lr)) in trace.iter().enumerate() {
        eprintln!(
            "{backend} step {step}: loss {loss:.6} ({:.6}) grad norm {norm:.5} ({:.5})",
            want.losses[step], want.grad_norms[step]
        );
        assert!(
            (lr - want.learning_rates[step]).abs() < 1e-12,
            "{backend} step {step}: lr {lr} vs {}",
            want.learning_rates[step]
        );
        assert!(
            rel(loss, want.losses[step]) < loss_tol,
            "{backend} step {step}: loss {loss} vs {}",
            want.losses[step]
        );
        assert!(
            rel(norm, want.grad_norms[step]) < norm_tol,
            "{backend} step {step}: grad norm {norm} vs {}",
            want.grad_norms[step]
        );
    }
}

/// An int64 tensor of the batches file.
fn ints(st: &safetensors::SafeTensors<'_>, name: &str) -> (Vec<i64>, Vec<usize>) {
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::I64);
    let v = t
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (v, t.shape().to_vec())
}

#[test]
fn twenty_steps_of_adamw_match_pytorch() {
    let (weights, trace) =
        train_steps::<AB>(20, Precision::Fp32, fixture_adamw(), &Default::default());
    // The issue asks for 1e-3; the implementation does much better, and
    // these bounds are set just above what it does.
    check_trace("flex", &reference(), &trace, 1e-5, 1e-4);

    // The weights after 20 steps: weight decay, clipping and eps all show here.
    // Leaving out weight decay would move layer.5.output.dense.weight by 9e-6.
    let want = read_f32_tensors(&fixtures().join("train-parity/final.safetensors")).unwrap();
    assert_eq!(weights.len(), 105);
    check_weights(&weights, &want);
}

/// Checks the tensors of `want` (HF names) in the saved weights `got` within 5e-7.
fn check_weights(got: &HashMap<String, Vec<f32>>, want: &HashMap<String, Vec<f32>>) {
    for (name, w) in want {
        let g = &got[name];
        assert_eq!(g.len(), w.len(), "{name}");
        let d = g
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("{name}: max abs diff {d:e}");
        assert!(d < 5e-7, "{name}: final weights differ by {d:e}");
    }
}

/// The 20 steps with AdamW's betas (0.8, 0.98) and eps 1e-6 (`--adam-beta1`,
/// `--adam-beta2`, `--adam-epsilon`), against torch's AdamW with the same
/// (`make_train_parity.py --adam-variant`). The settings come through
/// `TrainConfig::adamw`, as a training run's do.
#[test]
fn twenty_steps_with_other_adam_betas_and_epsilon_match_pytorch() {
    let adamw = zhbert_train::TrainConfig {
        lr: 1e-4,
        weight_decay: 0.01,
        adam_beta1: 0.8,
        adam_beta2: 0.98,
        adam_epsilon: 1e-6,
        ..Default::default()
    }
    .adamw();
    let (weights, trace) = train_steps::<AB>(20, Precision::Fp32, adamw, &Default::default());
    let want = reference_in("adam-variant.json");
    check_trace("flex", &want, &trace, 1e-5, 1e-4);
    // The oracle tells the settings apart: with torch's defaults the losses
    // move by more than the tolerance (up to 5.5e-3 relative).
    let default = reference();
    let moved = (0..20)
        .map(|s| (want.losses[s] - default.losses[s]).abs() / default.losses[s])
        .fold(0.0, f64::max);
    assert!(
        moved > 1e-3,
        "the variant's losses are the default's ({moved:e})"
    );

    assert_eq!(want.final_weights.len(), 4);
    check_weights(&weights, &want.final_weights);
}

/// The 20 steps with matmuls in bf16 and in f16, against the same run under
/// `torch.autocast` (`make_train_parity.py --autocast`). Rounding in half
/// precision is not the same at every point on both sides, so each run is
/// measured by how far it strays from the fp32 reference: zhbert's losses and
/// grad norms must stray no more than 3 times as far as PyTorch's, and its
/// grad norms must stray at all (more than the 1e-4 the fp32 run keeps to),
/// or no half-precision matmul ran.
#[test]
fn twenty_steps_in_bf16_and_f16_stray_from_fp32_as_pytorch_autocast() {
    half_precision_strays_as_pytorch_autocast::<AB>("flex", &Default::default());
}

/// The check of `twenty_steps_in_bf16_and_f16_stray_from_fp32_as_pytorch_autocast`
/// on backend `B`.
fn half_precision_strays_as_pytorch_autocast<B: AutodiffBackend>(
    backend: &str,
    device: &B::Device,
) {
    let fp32 = reference();
    let rel = |a: f64, b: f64| (a - b).abs() / b.abs();
    for precision in [Precision::Bf16, Precision::F16] {
        let torch = reference_in(&format!("autocast-{precision}.json"));
        let (_, trace) = train_steps::<B>(20, precision, fixture_adamw(), device);
        let stray = |losses: &[f64], norms: &[f64]| {
            let loss = (0..20)
                .map(|s| rel(losses[s], fp32.losses[s]))
                .fold(0.0, f64::max);
            let norm = (0..20)
                .map(|s| rel(norms[s], fp32.grad_norms[s]))
                .fold(0.0, f64::max);
            (loss, norm)
        };
        let ours = stray(
            &trace.iter().map(|t| t.0).collect::<Vec<_>>(),
            &trace.iter().map(|t| t.1).collect::<Vec<_>>(),
        );
        let theirs = stray(&torch.losses, &torch.grad_norms);
        eprintln!(
            "{backend} {precision}: largest relative distance from fp32: losses {:.2e} (PyTorch {:.2e}), grad norms {:.2e} (PyTorch {:.2e})",
            ours.0, theirs.0, ours.1, theirs.1
        );
        assert!(
            ours.0 <= 3.0 * theirs.0,
            "{backend} {precision}: losses {ours:?} vs PyTorch {theirs:?}"
        );
        assert!(
            ours.1 <= 3.0 * theirs.1,
            "{backend} {precision}: grad norms {ours:?} vs PyTorch {theirs:?}"
        );
        assert!(
            ours.1 > 1e-3,
            "{backend} {precision}: grad norms as in fp32 ({:e})",
            ours.1
        );
    }
}

/// Balanced class weights (`--class-weights auto`) with label smoothing 0.1,
/// against `F.cross_entropy(weight=, label_smoothing=)` with scikit-learn's
/// "balanced" weights (`make_train_parity.py --loss-variant weighted-smoothed`).
#[test]
fn class_weights_and_label_smoothing_match_pytorch_cross_entropy() {
    let mut settings = fixture_settings(Precision::Fp32, fixture_adamw());
    settings.class_weights = Some(ClassWeights::Balanced);
    settings.label_smoothing = 0.1;
    loss_variant_matches_pytorch("weighted-smoothed", settings, None);
}

/// Distillation at weight 0.5 (`--distill 0.5`) against
/// `0.5 * cross_entropy(logits, labels) + 0.5 * cross_entropy(logits, q)`, q a
/// teacher's probabilities (`--loss-variant distill`).
#[test]
fn distillation_loss_matches_pytorch_soft_target_cross_entropy() {
    let want: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("train-parity/loss-distill.json")).unwrap(),
    )
    .unwrap();
    let soft: Vec<Vec<f32>> =
        serde_json::from_value(want["settings"]["soft_targets"].clone()).unwrap();
    assert_eq!(soft.len(), 160);
    let mut settings = fixture_settings(Precision::Fp32, fixture_adamw());
    settings.distill = 0.5;
    loss_variant_matches_pytorch("distill", settings, Some(soft));
}

/// Gradient accumulation 3 over the 40 micro-batches: 14 steps, the last of
/// one micro-batch, whose gradient is that micro-batch's (HF's
/// `current_gradient_accumulation_steps`), not a third of it
/// (`--loss-variant short-accum`).
#[test]
fn a_short_last_accumulation_step_matches_pytorch() {
    let mut settings = fixture_settings(Precision::Fp32, fixture_adamw());
    settings.grad_accum = 3;
    loss_variant_matches_pytorch("short-accum", settings, None);
}

/// A whole run of `settings` against `loss-<variant>.json`: every step's
/// loss, grad norm and lr, and the final weights; and the variant must be
/// told apart from the plain run by the same bounds.
fn loss_variant_matches_pytorch(
    variant: &str,
    settings: TrainConfig,
    soft_targets: Option<Vec<Vec<f32>>>,
) {
    let want = reference_in(&format!("loss-{variant}.json"));
    let (weights, trace) = train_run::<AB>(settings, soft_targets, None, &Default::default());
    assert_eq!(trace.len(), want.losses.len());
    check_trace(variant, &want, &trace, 1e-5, 1e-4);
    assert_eq!(want.final_weights.len(), 4);
    check_weights(&weights, &want.final_weights);
    let plain = reference();
    let moved = (0..want.grad_norms.len())
        .map(|s| (want.grad_norms[s] - plain.grad_norms[s]).abs() / plain.grad_norms[s])
        .fold(0.0, f64::max);
    assert!(
        moved > 1e-3,
        "{variant}: the plain run's grad norms ({moved:e})"
    );
}

/// Five fp32 steps on backend `B` against PyTorch and against Flex: losses
/// and grad norms within 1e-3 relative.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn five_steps_match_pytorch_and_flex<B: AutodiffBackend>(backend: &str, device: &B::Device) {
    let (_, gpu) = train_steps::<B>(5, Precision::Fp32, fixture_adamw(), device);
    check_trace(backend, &reference(), &gpu, 1e-3, 1e-3);
    let (_, cpu) = train_steps::<AB>(5, Precision::Fp32, fixture_adamw(), &Default::default());
    for (step, (g, c)) in gpu.iter().zip(&cpu).enumerate() {
        let rel = (g.0 - c.0).abs() / c.0.abs();
        assert!(
            rel < 1e-3,
            "step {step}: {backend} loss {} vs flex {}",
            g.0,
            c.0
        );
    }
}

/// Five steps on wgpu (fp32) against PyTorch and Flex: losses and grad norms
/// within 1e-3 relative. CI runs it on Mesa's lavapipe with `--features wgpu`.
#[cfg(feature = "wgpu")]
#[test]
fn five_steps_on_wgpu_match_pytorch_and_flex() {
    five_steps_match_pytorch_and_flex::<Autodiff<burn::backend::Wgpu>>("wgpu", &Default::default());
}

/// Five fp32 steps on CUDA against PyTorch and Flex, and the bf16 and f16
/// runs against `torch.autocast`. Needs an NVIDIA GPU: `benchmarks/gpu/run.sh`
/// runs them on one (`--features cuda` builds them anywhere).
#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs an NVIDIA GPU"]
fn cuda_training_matches_pytorch_in_fp32_bf16_and_f16() {
    let device = Default::default();
    five_steps_match_pytorch_and_flex::<Autodiff<burn::backend::Cuda>>("cuda", &device);
    half_precision_strays_as_pytorch_autocast::<Autodiff<burn::backend::Cuda>>("cuda", &device);
}
