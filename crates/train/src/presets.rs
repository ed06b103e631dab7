//! Models trained from scratch, for when no pretrained checkpoint can be had:
//! a small BERT whose vocabulary is built from the training text (WordPiece
//! pieces learned by merges for `tiny-zh`, single characters for
//! `tiny-zh-char`), distilled
//! from a character n-gram teacher fitted on the same text
//! ([`crate::teacher`]), optionally pretrained as a masked LM on that text
//! first (`--pretrain-epochs`).

use zhbert_model::{BertConfig, HiddenAct};
use zhbert_tokenizer::{
    build_char_vocab, build_wordpiece_vocab, BertTokenizer, TokenizerConfig, TokenizerError,
};

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
    /// Dropout of hidden states and attention probabilities.
    pub dropout: f64,
    /// How the vocabulary is built from the training text.
    pub vocab: PresetVocab,
    /// Masked-LM pretraining on the training texts before fine-tuning
    /// (`epochs` 0: none).
    pub pretrain: PretrainConfig,
    /// Training settings the preset was tuned with.
    pub train: TrainConfig,
}

/// How a preset builds its vocabulary from the training text.
#[derive(Debug, Clone, PartialEq)]
pub enum PresetVocab {
    /// Single characters (BERT's Chinese splitting, as `bert-base-chinese`).
    Chars {
        /// Keep characters seen at least this often.
        min_count: usize,
        /// At most this many entries besides the special tokens.
        max_size: usize,
    },
    /// WordPiece entries learned by merging frequent pairs (HF's
    /// `WordPieceTrainer`, made deterministic), with CJK characters not split
    /// apart (`tokenize_chinese_chars: false`): a run of Chinese is one word,
    /// cut into the longest pieces known, so words and phrases become single
    /// tokens and sequences are shorter. A character with no piece is its own
    /// `[UNK]` and runs are cut every 100 characters
    /// ([`BertTokenizer::isolate_unknown_chars`]), rather than the whole run
    /// becoming one `[UNK]`.
    WordPiece {
        /// Entries, special tokens included.
        size: usize,
        /// Merge only pairs seen at least this often.
        min_count: usize,
    },
}

/// The presets zhbert knows.
pub fn presets() -> Vec<Preset> {
    // Measured on the sentiment corpus (benchmarks/README.md): multi-character
    // tokens lift test accuracy from 0.802 (characters, length 64) to about
    // 0.84, and halve the tokens per review, so length 128 costs what
    // characters at 64 did. Pieces learned by merges (HF's WordPieceTrainer)
    // beat the most frequent n-grams: in PyTorch, same seed, 0.860 against
    // 0.846; in zhbert, mean test accuracy over seeds 42, 1 and 2 0.847
    // against 0.839. 32k entries, dropout 0.3 or 2 layers did no better. Length
    // grouping works once its batches are shuffled (zhbert_data's
    // `epoch_batches`); in HF's order it stalled training at ln 2. lr 5e-4
    // stalls at the prior; 3e-4 learns. Distillation from a char n-gram
    // TF-IDF teacher (crate::teacher, weight 0.5), which sees every
    // overlapping n-gram where the BERT sees one segmentation, raises dev
    // accuracy by about a point; test accuracy stays near the teacher's 0.850.
    // A sweep of this recipe in PyTorch (114 runs, 2-9 seeds per variant:
    // width, depth, epochs, batch, lr, vocabulary size, length, the teacher's
    // weight, temperature and features) found nothing that reaches the teacher
    // on dev; five epochs gained 0.4 points of dev accuracy for 1.67x the time.
    let tiny = Preset {
        name: "tiny-zh",
        hidden_size: 256,
        layers: 4,
        heads: 4,
        intermediate_size: 1024,
        dropout: 0.1,
        vocab: PresetVocab::WordPiece {
            size: 16000,
            min_count: 2,
        },
        train: TrainConfig {
            epochs: 3,
            lr: 3e-4,
            batch_size: 32,
            max_length: 128,
            warmup: Warmup::Ratio(0.1),
            weight_decay: 0.01,
            group_by_length: true,
            distill: 0.5,
            ..TrainConfig::default()
        },
        pretrain: PretrainConfig::default(),
    };
    // The first tiny-zh: one token per character, as bert-base-chinese.
    let chars = Preset {
        name: "tiny-zh-char",
        vocab: PresetVocab::Chars {
            min_count: 2,
            max_size: 8000,
        },
        train: TrainConfig {
            max_length: 64,
            group_by_length: false,
            // As it was measured (benchmarks/README.md): labels only.
            distill: 0.0,
            ..tiny.train.clone()
        },
        ..tiny.clone()
    };
    vec![tiny, chars]
}

/// A preset by name.
pub fn preset(name: &str) -> Option<Preset> {
    presets().into_iter().find(|p| p.name == name)
}

/// Below this many training texts a preset says it will learn little
/// ([`Preset::small_data_warning`]).
///
/// Why: a preset learns its vocabulary and every weight from the training
/// texts, in 3 epochs. On sentiment reviews sampled from the demo's training
/// split (dev and test the full splits), `tiny-zh` reached test accuracy
/// 0.609 on 48 of them (30 epochs; `tiny-zh-char` 0.564, char TF-IDF +
/// logistic regression 0.650) and 0.607 on 1,000 (its defaults, 96 steps;
/// TF-IDF 0.792); on all 13,891 it is at the baseline's level
/// (benchmarks/README.md). Between 1,000 and 13,891 it was not measured.
pub const MIN_TRAIN_TEXTS: usize = 5000;

impl Preset {
    /// A one-line warning when `train_texts` is fewer than a from-scratch
    /// model can learn from ([`MIN_TRAIN_TEXTS`]), naming what to do instead.
    pub fn small_data_warning(&self, train_texts: usize) -> Option<String> {
        (train_texts < MIN_TRAIN_TEXTS).then(|| {
            format!(
                "{} trains from scratch: its vocabulary and every weight come from the {train_texts} training texts, \
                 fewer than the {MIN_TRAIN_TEXTS} it needs to do well (on 1,000 reviews tiny-zh reached test accuracy 0.61, char TF-IDF 0.79); \
                 fine-tune a pretrained checkpoint instead (a bert-base-chinese folder or Hub id as the model), or add training data",
                self.name
            )
        })
    }

    /// The tokenizer of this preset, its vocabulary built from `texts`.
    pub fn tokenizer<'a>(
        &self,
        texts: impl IntoIterator<Item = &'a str>,
        max_length: usize,
    ) -> Result<BertTokenizer, TokenizerError> {
        let mut config = TokenizerConfig {
            model_max_length: max_length,
            ..TokenizerConfig::default()
        };
        match self.vocab {
            PresetVocab::Chars {
                min_count,
                max_size,
            } => {
                let vocab = build_char_vocab(texts, &config, min_count, max_size)?;
                BertTokenizer::from_vocab(&vocab, config)
            }
            PresetVocab::WordPiece { size, min_count } => {
                config.tokenize_chinese_chars = false;
                let vocab = build_wordpiece_vocab(texts, &config, size, min_count)?;
                let mut tokenizer = BertTokenizer::from_vocab(&vocab, config)?;
                // A run of Chinese is one word here: without this, one unknown
                // character (or more than 100 characters) made it one [UNK].
                tokenizer.isolate_unknown_chars()?;
                Ok(tokenizer)
            }
        }
    }

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
        c.hidden_dropout_prob = self.dropout;
        c.attention_probs_dropout_prob = self.dropout;
        c.max_position_embeddings = max_length.max(8);
        c.pad_token_id = Some(0);
        c.set_labels(labels);
        c
    }
}
