//! A run interrupted after a checkpoint and resumed ends with the same weights,
//! bit for bit, as the run that was never interrupted (dropout on, shuffling on).

use std::path::Path;

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use zhbert_data::{encode_dataset, Dataset, Example};
use zhbert_model::BertConfig;
use zhbert_tokenizer::{BertTokenizer, TokenizerConfig};
use zhbert_train::{train, TrainConfig, TrainData};

type AB = Autodiff<Flex>;

fn tiny_setup() -> (BertTokenizer, BertConfig, TrainData) {
    let chars: Vec<String> = "好差书质量快递服务很不错慢失望喜欢满意一般".chars().map(String::from).collect();
    let vocab: Vec<String> = zhbert_tokenizer::SPECIAL_TOKENS.iter().map(|s| s.to_string()).chain(chars.clone()).collect();
    let tokenizer = BertTokenizer::from_vocab(&vocab, TokenizerConfig::default()).unwrap();
    let labels: Vec<String> = vec!["negative".into(), "positive".into()];
    let examples: Vec<Example> = (0..40)
        .map(|i| Example {
            text: (0..(3 + i % 7)).map(|j| chars[(i * 7 + j * 3) % chars.len()].as_str()).collect(),
            text_pair: None,
            label: i % 2,
        })
        .collect();
    let data = Dataset { examples, labels: labels.clone() };
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
            train: encoded.clone(),
            dev: Some(encoded),
            test: None,
            labels,
        },
    )
}

/// The final weights, by name (bytes compared through f32 equality of every value).
fn run(out: &Path, resume: bool) -> std::collections::HashMap<String, Vec<u32>> {
    let (tokenizer, config, data) = tiny_setup();
    let device = Default::default();
    AB::seed(&device, 1);
    let model = config.init_classifier::<AB>(&device);
    let train_config = TrainConfig {
        epochs: 3,
        batch_size: 8,
        grad_accum: 2,
        max_length: 16,
        lr: 1e-3,
        weight_decay: 0.01,
        save_every: Some(2),
        eval_every: Some(3),
        keep_checkpoints: 10,
        group_by_length: true,
        ..TrainConfig::default()
    };
    train::<AB>(model, &config, &tokenizer, &data, &train_config, out, resume, &device).unwrap();
    zhbert_train::optim::read_f32_tensors(&out.join("model.safetensors"))
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.iter().map(|x| x.to_bits()).collect()))
        .collect()
}

#[test]
fn resumed_run_ends_bit_identical_to_uninterrupted_run() {
    let full = tempfile::tempdir().unwrap();
    let weights = run(full.path(), false);
    // 40 examples / 8 = 5 micro-batches = 3 steps per epoch (the last with one), 9 in all.
    let steps: Vec<usize> = zhbert_train::trainer::list_checkpoints(full.path()).iter().map(|c| c.0).collect();
    // Every 2 steps, at the end, and at each evaluation that improved (3, ...).
    for s in [2, 3, 4, 6, 8, 9] {
        assert!(steps.contains(&s), "{steps:?}");
    }
    for cut in [2, 4, 8] {
        // What a run killed right after step `cut` leaves: the checkpoints up to it.
        let resumed = tempfile::tempdir().unwrap();
        for &s in steps.iter().filter(|&&s| s <= cut) {
            let ckpt = format!("checkpoints/checkpoint-{s}");
            copy_dir(&full.path().join(&ckpt), &resumed.path().join(&ckpt));
        }
        assert_eq!(run(resumed.path(), true), weights, "resumed from step {cut}");
    }
    // Not resuming into a folder with checkpoints is refused, not overwritten.
    let (tokenizer, config, data) = tiny_setup();
    let device = Default::default();
    let err = train::<AB>(config.init_classifier::<AB>(&device), &config, &tokenizer, &data, &TrainConfig::default(), full.path(), false, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--resume"), "{err}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}
