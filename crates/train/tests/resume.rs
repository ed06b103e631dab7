//! The trainer end to end on a tiny model: a run interrupted after a checkpoint
//! and resumed ends with the same weights, bit for bit, as the run that was never
//! interrupted (dropout on, shuffling on); f16 training skips the steps whose
//! gradients overflow and halves its loss scale, as torch's GradScaler.

use std::path::Path;

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use zhbert_data::{encode_dataset, Dataset, Example};
use zhbert_model::{BertConfig, Precision};
use zhbert_tokenizer::{BertTokenizer, TokenizerConfig};
use zhbert_train::optim::{read_f32_tensors, LossScaler};
use zhbert_train::trainer::{list_checkpoints, TrainerState};
use zhbert_train::{train, TrainConfig, TrainData};

type AB = Autodiff<Flex>;

/// burn's CPU backends keep one random generator per process: two trainings in
/// parallel test threads would draw each other's dropout masks. Tests here run
/// one at a time.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn tiny_setup() -> (BertTokenizer, BertConfig, TrainData) {
    let chars: Vec<String> = "好差书质量快递服务很不错慢失望喜欢满意一般"
        .chars()
        .map(String::from)
        .collect();
    let vocab: Vec<String> = zhbert_tokenizer::SPECIAL_TOKENS
        .iter()
        .map(|s| s.to_string())
        .chain(chars.clone())
        .collect();
    let tokenizer = BertTokenizer::from_vocab(&vocab, TokenizerConfig::default()).unwrap();
    let labels: Vec<String> = vec!["negative".into(), "positive".into()];
    let examples: Vec<Example> = (0..40)
        .map(|i| Example {
            text: (0..(3 + i % 7))
                .map(|j| chars[(i * 7 + j * 3) % chars.len()].as_str())
                .collect(),
            text_pair: None,
            label: i % 2,
            target: Default::default(),
        })
        .collect();
    let data = Dataset {
        examples,
        labels: labels.clone(),
    };
    let encoded = encode_dataset(&data, &tokenizer, 16).unwrap();
    let mut config = BertConfig::new(vocab.len());
    config.hidden_size = 16;
    config.num_hidden_layers = 2;
    config.num_attention_heads = 2;
    config.intermediate_size = 32;
    config.max_position_embeddings = 16;
    config.set_labels(&labels);
    (
        tokenizer,
        config,
        TrainData {
            train: encoded.clone().into(),
            dev: Some(encoded),
            test: None,
            labels,
            soft_targets: None,
        },
    )
}

/// The final weights and AdamW moments, by name, as bits.
fn run(out: &Path, resume: bool, grad_accum: usize) -> std::collections::HashMap<String, Vec<u32>> {
    let (tokenizer, config, data) = tiny_setup();
    let device = Default::default();
    AB::seed(&device, 1);
    let model = config.init_classifier::<AB>(&device);
    let train_config = TrainConfig {
        epochs: 3,
        batch_size: 8,
        grad_accum,
        max_length: 16,
        lr: 1e-3,
        weight_decay: 0.01,
        save_every: Some(2),
        eval_every: Some(3),
        keep_checkpoints: 10,
        group_by_length: false,
        ..TrainConfig::default()
    };
    train::<AB>(
        model,
        &config,
        &tokenizer,
        &data,
        &train_config,
        out,
        resume,
        &device,
    )
    .unwrap();
    // The last checkpoint, not the output folder: that holds the best step's
    // weights, which a resumed run may simply have copied.
    let (_, last) = zhbert_train::trainer::list_checkpoints(out).pop().unwrap();
    let mut tensors =
        zhbert_train::optim::read_f32_tensors(&last.join("model.safetensors")).unwrap();
    tensors.extend(
        zhbert_train::optim::read_f32_tensors(&last.join("optimizer.safetensors")).unwrap(),
    );
    tensors
        .into_iter()
        .map(|(k, v)| (k, v.iter().map(|x| x.to_bits()).collect()))
        .collect()
}

#[test]
fn resumed_run_ends_bit_identical_to_uninterrupted_run() {
    let _serial = serial();
    for grad_accum in [1, 2] {
        let full = tempfile::tempdir().unwrap();
        let weights = run(full.path(), false, grad_accum);
        // Every 2 steps, at the end, and at each evaluation that improved.
        let steps: Vec<usize> = zhbert_train::trainer::list_checkpoints(full.path())
            .iter()
            .map(|c| c.0)
            .collect();
        assert!(steps.len() >= 5, "{steps:?}");
        for &cut in &steps[1..steps.len() - 1] {
            // What a run killed right after step `cut` leaves: the checkpoints up to it.
            let resumed = tempfile::tempdir().unwrap();
            for &s in steps.iter().filter(|&&s| s <= cut) {
                let ckpt = format!("checkpoints/checkpoint-{s}");
                copy_dir(&full.path().join(&ckpt), &resumed.path().join(&ckpt));
            }
            assert!(
                run(resumed.path(), true, grad_accum) == weights,
                "accumulation {grad_accum}, resumed from step {cut}"
            );
        }
    }
    // Not resuming into a folder with checkpoints is refused, not overwritten.
    let full = tempfile::tempdir().unwrap();
    run(full.path(), false, 1);
    let err = refusal(&TrainConfig::default(), full.path());
    assert!(
        err.contains("already holds checkpoints: resume that run"),
        "{err}"
    );
}

/// Resuming with another vocabulary of the same size (what a preset rebuilt
/// from another training text, or by another zhbert, gives) is refused in one
/// line: the saved weights would be read with other token ids.
#[test]
fn resuming_with_another_vocabulary_is_refused() {
    let _serial = serial();
    let out = tempfile::tempdir().unwrap();
    run(out.path(), false, 1);
    let (tokenizer, config, data) = tiny_setup();
    let mut vocab: Vec<String> = (0..tokenizer.vocab_size() as u32)
        .map(|i| tokenizer.inner().id_to_token(i).unwrap())
        .collect();
    let n = vocab.len();
    vocab.swap(n - 1, n - 2);
    let other = BertTokenizer::from_vocab(&vocab, TokenizerConfig::default()).unwrap();
    let device = Default::default();
    let train_config = TrainConfig {
        epochs: 3,
        batch_size: 8,
        max_length: 16,
        ..TrainConfig::default()
    };
    let err = train::<AB>(
        config.init_classifier::<AB>(&device),
        &config,
        &other,
        &data,
        &train_config,
        out.path(),
        true,
        &device,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("another vocabulary"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

/// The error of a tiny run that must be refused.
fn refusal(train_config: &TrainConfig, out: &Path) -> String {
    let (tokenizer, config, data) = tiny_setup();
    let device = Default::default();
    train::<AB>(
        config.init_classifier::<AB>(&device),
        &config,
        &tokenizer,
        &data,
        train_config,
        out,
        false,
        &device,
    )
    .unwrap_err()
    .to_string()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn every_epoch_has_its_own_order() {
    let _serial = serial();
    // Regression: the batches of epoch 0 were reused for every later epoch.
    // With lr 0 and no dropout the model never changes, so each step's loss
    // identifies its batch: epoch 1 must not replay epoch 0's sequence.
    let out = tempfile::tempdir().unwrap();
    let (tokenizer, mut config, mut data) = tiny_setup();
    config.hidden_dropout_prob = 0.0;
    config.attention_probs_dropout_prob = 0.0;
    data.dev = None;
    let device = Default::default();
    let train_config = TrainConfig {
        epochs: 2,
        batch_size: 8,
        max_length: 16,
        lr: 0.0,
        log_every: 1,
        ..TrainConfig::default()
    };
    train::<AB>(
        config.init_classifier::<AB>(&device),
        &config,
        &tokenizer,
        &data,
        &train_config,
        out.path(),
        false,
        &device,
    )
    .unwrap();
    let losses: Vec<f64> = std::fs::read_to_string(out.path().join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert_eq!(losses.len(), 10, "5 steps per epoch");
    assert_ne!(
        losses[..5],
        losses[5..],
        "epoch 1 replayed epoch 0's batches"
    );
    // The same examples, in another order: the epoch means agree.
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!((mean(&losses[..5]) - mean(&losses[5..])).abs() < 1e-5);
}

/// An f16 run of `max_steps` from a loss scale of `initial_scale`: the state of
/// its last checkpoint, and whether its weights there are still the initial ones.
fn f16_run(initial_scale: f64, max_steps: usize) -> (TrainerState, bool) {
    let out = tempfile::tempdir().unwrap();
    let (tokenizer, config, data) = tiny_setup();
    let device = Default::default();
    AB::seed(&device, 1);
    let model = config.init_classifier::<AB>(&device);
    let initial = out.path().join("initial.safetensors");
    zhbert_model::save_safetensors(&model, &initial).unwrap();
    let train_config = TrainConfig {
        max_steps: Some(max_steps),
        epochs: 100,
        batch_size: 8,
        max_length: 16,
        lr: 1e-3,
        save_every: Some(max_steps),
        precision: Precision::F16,
        initial_loss_scale: Some(initial_scale),
        group_by_length: false,
        ..TrainConfig::default()
    };
    let train_out = out.path().join("run");
    train::<AB>(
        model,
        &config,
        &tokenizer,
        &data,
        &train_config,
        &train_out,
        false,
        &device,
    )
    .unwrap();
    let (_, last) = list_checkpoints(&train_out).pop().unwrap();
    let state: TrainerState =
        serde_json::from_str(&std::fs::read_to_string(last.join("trainer_state.json")).unwrap())
            .unwrap();
    let unchanged = read_f32_tensors(&initial).unwrap()
        == read_f32_tensors(&last.join("model.safetensors")).unwrap();
    (state, unchanged)
}

#[test]
fn f16_steps_whose_gradients_overflow_are_skipped() {
    let _serial = serial();
    // Logit gradients of about 0.1 times 2^40 are far past f16's 65,504: every
    // step overflows, is skipped, and halves the scale; the weights never move.
    let (state, unchanged) = f16_run(2f64.powi(40), 3);
    assert_eq!(state.global_step, 3);
    assert_eq!(state.skipped_steps, 3);
    assert_eq!(state.loss_scaler, Some(LossScaler::new(2f64.powi(37))));
    assert!(unchanged, "a skipped step changed the weights");

    // From there the scale halves until the gradients fit, then training goes
    // on: some steps skipped, not all, and the scale is 2^40 halved once per
    // skip (growth would need 2,000 good steps).
    let (state, unchanged) = f16_run(2f64.powi(40), 40);
    assert!(
        state.skipped_steps > 3 && state.skipped_steps < 40,
        "{state:?}"
    );
    let scaler = state.loss_scaler.unwrap();
    assert_eq!(scaler.scale, 2f64.powi(40 - state.skipped_steps as i32));
    // Steps in a row since the last skip (an overflow can recur near the edge).
    assert!(scaler.good_steps > 0 && scaler.good_steps <= 40 - state.skipped_steps);
    assert!(!unchanged, "no step was taken");
}

/// The losses of a short run without dropout, step by step (`metrics.jsonl`).
fn losses_of(train_config: &TrainConfig, soft_targets: Option<Vec<Vec<f32>>>) -> Vec<f64> {
    let out = tempfile::tempdir().unwrap();
    let (tokenizer, mut config, mut data) = tiny_setup();
    config.hidden_dropout_prob = 0.0;
    config.attention_probs_dropout_prob = 0.0;
    data.soft_targets = soft_targets;
    let device = Default::default();
    AB::seed(&device, 1);
    let model = config.init_classifier::<AB>(&device);
    train::<AB>(
        model,
        &config,
        &tokenizer,
        &data,
        train_config,
        out.path(),
        false,
        &device,
    )
    .unwrap();
    std::fs::read_to_string(out.path().join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64())
        .collect()
}

#[test]
fn distilling_one_hot_targets_is_training_on_the_labels() {
    let _serial = serial();
    // The teacher's term is a cross entropy against its probabilities: given
    // the labels themselves as probabilities, any mix of the two terms is the
    // plain loss, step after step.
    let (_, _, data) = tiny_setup();
    let zhbert_train::TrainSet::Encoded(train_set) = &data.train else {
        unreachable!()
    };
    let one_hot: Vec<Vec<f32>> = train_set
        .labels
        .iter()
        .map(|&l| (0..2).map(|j| f32::from(u8::from(j == l))).collect())
        .collect();
    let base = TrainConfig {
        epochs: 2,
        batch_size: 8,
        max_length: 16,
        lr: 1e-3,
        log_every: 1,
        group_by_length: false,
        ..TrainConfig::default()
    };
    let plain = losses_of(&base, None);
    assert_eq!(plain.len(), 10);
    for distill in [0.5, 1.0] {
        let config = TrainConfig {
            distill,
            ..base.clone()
        };
        let mixed = losses_of(&config, Some(one_hot.clone()));
        for (step, (a, b)) in plain.iter().zip(&mixed).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * a.abs(),
                "distill {distill}, step {step}: {a} vs {b}"
            );
        }
        // And soft targets that are not the labels change the run.
        let uniform = vec![vec![0.5f32; 2]; one_hot.len()];
        let pulled = losses_of(&config, Some(uniform));
        assert!(
            pulled.iter().zip(&plain).any(|(a, b)| (a - b).abs() > 1e-3),
            "distill {distill}: uniform targets changed nothing"
        );
    }
    // Without the teacher's probabilities a distilling run is refused.
    let out = tempfile::tempdir().unwrap();
    let err = refusal(
        &TrainConfig {
            distill: 0.5,
            ..base
        },
        out.path(),
    );
    assert!(err.contains("teacher's probabilities"), "{err}");
}
