//! What the multi-label and regression parity tests share: the fixtures of
//! `tests/fixtures/make_task_parity.py` (the run of `make_train_parity.py`
//! with another head) and the library's training loop fed PyTorch's batches.

use std::collections::HashMap;
use std::path::PathBuf;

use burn::backend::{Autodiff, Flex};
use zhbert_model::{
    load_classifier_with_config, load_weights_file, BertConfig, LoadOptions, ProblemType,
};
use zhbert_testkit::{fixtures, minilm_dir};
use zhbert_tokenizer::{Batch, BertTokenizer};
use zhbert_train::optim::read_f32_tensors;
use zhbert_train::{
    ClassWeights, Replica, StepRecord, TrainConfig, TrainData, TrainObserver, TrainSet, Trainer,
    Warmup,
};

pub type AB = Autodiff<Flex>;

/// A PyTorch run of the fixture.
pub struct Reference {
    pub labels: Vec<String>,
    pub losses: Vec<f64>,
    pub grad_norms: Vec<f64>,
    pub learning_rates: Vec<f64>,
    pub final_weights: HashMap<String, Vec<f32>>,
}

pub fn folder(name: &str) -> PathBuf {
    fixtures().join("task-parity").join(name)
}

pub fn reference(name: &str, file: &str) -> Reference {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder(name).join(file)).unwrap()).unwrap();
    let floats = |k: &str| -> Vec<f64> { serde_json::from_value(v[k].clone()).unwrap() };
    Reference {
        labels: serde_json::from_value(v["labels"].clone()).unwrap(),
        losses: floats("losses"),
        grad_norms: floats("grad_norms"),
        learning_rates: floats("learning_rates"),
        final_weights: serde_json::from_value(v["final"].clone()).unwrap(),
    }
}

/// The fixture's 40 micro-batches with their float targets, in PyTorch's order.
fn batches(name: &str) -> Vec<(Batch, Vec<Vec<f32>>)> {
    let bytes = std::fs::read(folder(name).join("batches.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ints = |key: String| -> (Vec<u32>, Vec<usize>) {
        let t = st.tensor(&key).unwrap();
        let v = t
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
            .collect();
        (v, t.shape().to_vec())
    };
    (0..40)
        .map(|m| {
            let (input_ids, shape) = ints(format!("input_ids.{m}"));
            let t = st.tensor(&format!("targets.{m}")).unwrap();
            assert_eq!(t.dtype(), safetensors::Dtype::F32);
            let k = t.shape()[1];
            let flat: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            let batch = Batch {
                batch_size: shape[0],
                seq_len: shape[1],
                input_ids,
                token_type_ids: ints(format!("token_type_ids.{m}")).0,
                attention_mask: ints(format!("attention_mask.{m}")).0,
                truncated_tokens: vec![0; shape[0]],
            };
            (batch, flat.chunks(k).map(<[f32]>::to_vec).collect())
        })
        .collect()
}

/// Records each step's (loss, grad norm, lr).
struct Trace(Vec<(f64, f64, f64)>);

impl TrainObserver for Trace {
    fn on_step(&mut self, step: &StepRecord) -> anyhow::Result<()> {
        self.0.push((step.loss, step.grad_norm, step.lr));
        Ok(())
    }
}

/// The 20 steps through `Trainer::fit` on the fixture `name` with a head
/// for `problem`: the trace, and the weights it saved (HF names) with the
/// saved config.json.
pub fn train_20(
    name: &str,
    problem: ProblemType,
    labels: &[String],
    class_weights: Option<ClassWeights>,
) -> (
    Vec<(f64, f64, f64)>,
    HashMap<String, Vec<f32>>,
    serde_json::Value,
) {
    let device = Default::default();
    let mut config = BertConfig::from_file(minilm_dir().join("config.json")).unwrap();
    config.hidden_dropout_prob = 0.0;
    config.attention_probs_dropout_prob = 0.0;
    let options = LoadOptions {
        labels: Some(labels.to_vec()),
        allow_fresh_head: true,
    };
    let (mut model, mut config, _) =
        load_classifier_with_config::<AB>(&minilm_dir(), config, &options, &device).unwrap();
    config.problem_type = Some(problem);
    load_weights_file(&mut model, &folder(name).join("head.safetensors")).unwrap();
    let data = TrainData {
        train: TrainSet::TargetBatches(batches(name)),
        dev: None,
        test: None,
        labels: labels.to_vec(),
        soft_targets: None,
    };
    let settings = TrainConfig {
        epochs: 1,
        batch_size: 4,
        grad_accum: 2,
        lr: 1e-4,
        weight_decay: 0.01,
        warmup: Warmup::Steps(2),
        max_grad_norm: Some(1.0),
        class_weights,
        ..Default::default()
    };
    let out = tempfile::tempdir().unwrap();
    let tokenizer = BertTokenizer::from_dir(minilm_dir()).unwrap();
    let trainer = Trainer::<AB> {
        model_config: &config,
        tokenizer: &tokenizer,
        data: &data,
        config: &settings,
        output: out.path(),
        resume: false,
        device: &device,
        replica: &Replica::alone(),
    };
    let mut trace = Trace(Vec::new());
    let summary = trainer.fit(model, &mut trace).unwrap();
    assert_eq!(summary.steps, 20);
    let weights = read_f32_tensors(&out.path().join("model.safetensors")).unwrap();
    let saved =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("config.json")).unwrap())
            .unwrap();
    (trace.0, weights, saved)
}

/// Checks losses, grad norms (relative) and learning rates against PyTorch's,
/// and the final weights (absolute); prints the largest differences.
pub fn check(want: &Reference, trace: &[(f64, f64, f64)], got: &HashMap<String, Vec<f32>>) {
    assert_eq!(trace.len(), 20);
    let rel = |a: f64, b: f64| (a - b).abs() / b.abs();
    let (mut loss_d, mut norm_d) = (0.0f64, 0.0f64);
    for (step, &(loss, norm, lr)) in trace.iter().enumerate() {
        assert!(
            (lr - want.learning_rates[step]).abs() < 1e-12,
            "step {step}: lr {lr}"
        );
        loss_d = loss_d.max(rel(loss, want.losses[step]));
        norm_d = norm_d.max(rel(norm, want.grad_norms[step]));
    }
    eprintln!("max relative difference: loss {loss_d:e}, grad norm {norm_d:e}");
    // The bounds of the single-label parity test (crates/train/tests/parity.rs).
    assert!(loss_d < 1e-5, "losses differ by {loss_d:e} relative");
    assert!(norm_d < 1e-4, "grad norms differ by {norm_d:e} relative");
    for (name, w) in &want.final_weights {
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

/// The scikit-learn / scipy fixture (`metrics.json`).
pub fn metrics_fixture() -> serde_json::Value {
    let path = fixtures().join("task-parity/metrics.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}
