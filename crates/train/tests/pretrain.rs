//! Masked-LM pretraining learns what the context determines: each text repeats
//! one of ten characters, so a masked character is any visible one of its text,
//! and the loss must fall far below the 2.30 nats (ln 10) of guessing by frequency.
//! Masks at the wrong positions, targets out of step with the logits, or a
//! broken optimizer step would all leave it there.

use burn::backend::{Autodiff, Flex};
use zhbert_model::BertConfig;
use zhbert_tokenizer::{BertTokenizer, Encoded, TokenizerConfig};
use zhbert_train::{pretrain_mlm, PretrainConfig, Warmup};

type AB = Autodiff<Flex>;

#[test]
fn pretraining_learns_characters_from_their_context() {
    let cycle: Vec<char> = "一二三四五六七八九十".chars().collect();
    let vocab: Vec<String> = zhbert_tokenizer::SPECIAL_TOKENS
        .iter()
        .map(|s| s.to_string())
        .chain(cycle.iter().map(|c| c.to_string()))
        .collect();
    let tokenizer = BertTokenizer::from_vocab(&vocab, TokenizerConfig::default()).unwrap();
    let texts: Vec<Encoded> = (0..256)
        .map(|i| {
            let text: String = std::iter::repeat_n(cycle[i % 10], 8 + i % 9).collect();
            tokenizer.encode(&text, None, Some(32)).unwrap()
        })
        .collect();
    let mut config = BertConfig::new(vocab.len());
    config.hidden_size = 32;
    config.num_hidden_layers = 2;
    config.num_attention_heads = 2;
    config.intermediate_size = 64;
    config.max_position_embeddings = 32;
    config.hidden_dropout_prob = 0.0;
    config.attention_probs_dropout_prob = 0.0;
    let pretrain = PretrainConfig {
        epochs: 40,
        batch_size: 32,
        max_length: 32,
        lr: 3e-3,
        warmup: Warmup::Ratio(0.1),
        ..PretrainConfig::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("pretrain_metrics.jsonl");
    let device = Default::default();
    let (_, summary) = pretrain_mlm::<AB>(
        config.init_masked_lm::<AB>(&device),
        &tokenizer,
        &texts,
        &pretrain,
        &log,
        &device,
    )
    .unwrap();
    assert_eq!(summary.steps, 40 * 8);
    let first = summary.epoch_losses[0];
    let last = *summary.epoch_losses.last().unwrap();
    // Starts near ln(vocab size) = ln(15), the loss of knowing nothing.
    assert!(
        (first - (15f64).ln()).abs() < 0.5,
        "first epoch loss {first}"
    );
    assert!(
        last < 0.1,
        "epoch losses {:?}: the context was not learned",
        summary.epoch_losses
    );
    let lines = std::fs::read_to_string(&log).unwrap();
    let steps: Vec<u64> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps.last(), Some(&320));
}
