//! Models trained from scratch, for when no pretrained checkpoint can be had:
//! a small BERT whose vocabulary is built from the training text.

use zhbert_model::{BertConfig, HiddenAct};

use crate::pretrain::PretrainConfig;
use crate::trainer::{TrainConfig, Warmup};

/// A from-scratch model: its shape, vocabulary rule and the training settings
/// it was tuned with (used where the user gives none).
#[derive(Debug, Clone)]
pub struct Preset {
    /// Name given to `--model`.
    pub name: &'static str,
    /// Hidden size.
    pub hidden_size: usize,
    /// Encoder layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Keep characters seen at least this often in the training text.
    pub vocab_min_count: usize,
    /// At most this many vocabulary entries (besides the special tokens).
    pub vocab_max_size: usize,
    /// Masked-LM pretraining on the training texts before fine-tuning
    /// (`epochs` 0: none).
    pub pretrain: PretrainConfig,
    /// Training settings the preset was tuned with.
    pub train: TrainConfig,
}

/// The presets zhbert knows.
pub fn presets() -> Vec<Preset> {
    vec![Preset {
        name: "tiny-zh",
        hidden_size: 256,
        layers: 4,
        heads: 4,
        intermediate_size: 1024,
        vocab_min_count: 2,
        vocab_max_size: 8000,
        // Measured on the sentiment corpus (benchmarks/README.md): 5e-4 stalls at
        // the prior; length grouping makes batches of one label (length and
        // sentiment go together here) and the loss oscillates above ln 2; at
        // 3e-4 with random batches it learns. Length 64 keeps an epoch near
        // 3 minutes on 2 cores (37% of the reviews are cut).
        train: TrainConfig {
            epochs: 3,
            lr: 3e-4,
            batch_size: 32,
            max_length: 64,
            warmup: Warmup::Ratio(0.1),
            weight_decay: 0.01,
            group_by_length: false,
            ..TrainConfig::default()
        },
        pretrain: PretrainConfig::default(),
    }]
}

/// A preset by name.
pub fn preset(name: &str) -> Option<Preset> {
    presets().into_iter().find(|p| p.name == name)
}

impl Preset {
    /// The BERT config of this preset for a vocabulary, labels and maximum length.
    pub fn model_config(
        &self,
        vocab_size: usize,
        labels: &[String],
        max_length: usize,
    ) -> BertConfig {
        let mut c = BertConfig::new(vocab_size);
        c.hidden_size = self.hidden_size;
        c.num_hidden_layers = self.layers;
        c.num_attention_heads = self.heads;
        c.intermediate_size = self.intermediate_size;
        c.hidden_act = HiddenAct::Gelu;
        c.max_position_embeddings = max_length.max(8);
        c.pad_token_id = Some(0);
        c.set_labels(labels);
        c
    }
}
