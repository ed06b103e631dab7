//! Models trained from scratch, for when no pretrained checkpoint can be had:
//! a small BERT whose vocabulary is built from the training text (WordPiece
//! pieces learned by merges for `tiny-zh`, single characters for
//! `tiny-zh-char`), distilled
//! from a character n-gram teacher fitted on the same text
//! ([`crate::teacher`]), optionally pretrained as a masked LM on that text
//! first (`--pretrain-epochs`). `tiny-zh` trains for a budget of text rather
//! than a fixed number of epochs ([`Preset::epochs_for`]) and keeps its best
//! epoch on dev by macro F1 ([`Preset::train_config_for`]), so that one set of
//! defaults serves long reviews and short words alike.

use zhbert_data::{Dataset, LongText};
use zhbert_model::{BertConfig, HiddenAct};
use zhbert_tokenizer::{
    build_char_vocab, build_wordpiece_vocab, BertTokenizer, TokenizerConfig, TokenizerError,
};

use crate::metrics::Metric;
use crate::pretrain::PretrainConfig;
use crate::tasks::problem_of;
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
    /// Text positions (characters plus `[CLS]` and `[SEP]`, each text cut at
    /// the run's max length) the default epochs aim at
    /// ([`Preset::epochs_for`]); `None`: `train.epochs` on any data.
    pub epoch_budget: Option<usize>,
}

/// Most epochs an [`Preset::epoch_budget`] gives.
///
/// Why: on jieba-pos (12,719 words of 2 to 4 characters, 28 classes; its
/// budget would be 48 epochs) `tiny-zh` at 3 epochs reached dev accuracy
/// 0.573, macro F1 0.164, still climbing; seed 1 at 10 epochs kept epoch 10,
/// dev 0.614 and 0.340 (test 0.608 and 0.318, char TF-IDF 0.586 and 0.330),
/// at 20 epoch 18, dev 0.630 and 0.421 (test 0.623 and 0.386;
/// benchmarks/README.md). More was not measured.
pub const MAX_BUDGET_EPOCHS: usize = 20;

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
            // The epoch that learnt the small classes too: on jieba-pos,
            // accuracy kept an epoch 3 points of macro F1 below the last
            // (seed 1); on a balanced set the two pick the same epoch.
            metric: Metric::MacroF1,
            ..TrainConfig::default()
        },
        pretrain: PretrainConfig::default(),
        // 3 epochs of the sentiment corpus (854,421 positions each at length
        // 128): what the recipe was tuned with and what fits the demo's time.
        // A corpus of shorter or fewer texts gets more epochs for the same
        // work, where 3 left jieba-pos far from learnt (MAX_BUDGET_EPOCHS).
        epoch_budget: Some(3_000_000),
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
            // As it was measured (benchmarks/README.md): labels only, 3
            // epochs, the best by accuracy.
            distill: 0.0,
            metric: Metric::Accuracy,
            ..tiny.train.clone()
        },
        epoch_budget: None,
        ..tiny.clone()
    };
    vec![tiny, chars]
}

/// A preset by name.
pub fn preset(name: &str) -> Option<Preset> {
    presets().into_iter().find(|p| p.name == name)
}

/// The positions an epoch over `train` reads under `config`: each text's
/// characters (a pair's two, and their `[SEP]`) with `[CLS]` and `[SEP]`,
/// cut at the max length unless chunks read the whole text.
fn text_positions(train: &Dataset, config: &TrainConfig) -> usize {
    let whole = config.long_text == LongText::Chunks;
    train
        .examples
        .iter()
        .map(|e| {
            let pair = e.text_pair.as_ref().map_or(0, |p| p.chars().count() + 1);
            let positions = e.text.chars().count() + pair + 2;
            if whole {
                positions
            } else {
                positions.min(config.max_length)
            }
        })
        .sum()
}

/// Below this many training texts a preset says it will learn little
/// ([`Preset::small_data_warning`]).
///
/// Why: a preset learns its vocabulary and every weight from the training
/// texts. On sentiment reviews sampled from the demo's training split (dev
/// and test the full splits), `tiny-zh` reached test accuracy 0.609 on 48 of
/// them (30 epochs; `tiny-zh-char` 0.564, char TF-IDF + logistic regression
/// 0.650) and on another sample of 1,000 0.746 (its defaults: 20 epochs by
/// its budget; 0.597 with 3; TF-IDF 0.796); on all 13,891 it is at the
/// baseline's level (benchmarks/README.md). Between 1,000 and 13,891 it was
/// not measured.
pub const MIN_TRAIN_TEXTS: usize = 5000;

impl Preset {
    /// A one-line warning when `train_texts` is fewer than a from-scratch
    /// model can learn from ([`MIN_TRAIN_TEXTS`]), naming what to do instead.
    pub fn small_data_warning(&self, train_texts: usize) -> Option<String> {
        (train_texts < MIN_TRAIN_TEXTS).then(|| {
            format!(
                "{} trains from scratch: its vocabulary and every weight come from the {train_texts} training texts, \
                 fewer than the {MIN_TRAIN_TEXTS} it needs to do well (on 1,000 reviews tiny-zh reached test accuracy 0.75, char TF-IDF 0.80); \
                 fine-tune a pretrained checkpoint instead (a bert-base-chinese folder or Hub id as the model), or add training data",
                self.name
            )
        })
    }

    /// The settings this preset trains `train` with by default, `run` being
    /// how the job reads it (its given max length, long-text mode and problem
    /// type): the tuned ones, with the epochs of its budget
    /// ([`epochs_for`](Self::epochs_for)), and in a multi-label or regression
    /// run that problem's own default metric (regression has no F1).
    pub fn train_config_for(&self, train: &Dataset, run: &TrainConfig) -> TrainConfig {
        let problem = run.problem_type.unwrap_or_else(|| problem_of(train.task()));
        let mut config = self.train.clone();
        config.epochs = self.epochs_for(train, run);
        if problem != zhbert_model::ProblemType::SingleLabelClassification {
            config.metric = Metric::Accuracy;
        }
        config
    }

    /// The epochs this preset trains `train` for by default, read as `config`
    /// reads it (max length, long-text mode): as many as fit its
    /// [`epoch_budget`](Self::epoch_budget), at least `self.train.epochs` and
    /// at most [`MAX_BUDGET_EPOCHS`]; without a budget, `self.train.epochs`.
    pub fn epochs_for(&self, train: &Dataset, config: &TrainConfig) -> usize {
        let Some(budget) = self.epoch_budget else {
            return self.train.epochs;
        };
        let per_epoch = text_positions(train, config).max(1);
        (budget / per_epoch).clamp(self.train.epochs, MAX_BUDGET_EPOCHS.max(self.train.epochs))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FineTune;
    use zhbert_data::{Example, Target};

    /// `n` texts of `chars` characters each, over two labels.
    fn texts(n: usize, chars: usize) -> Dataset {
        Dataset {
            examples: (0..n)
                .map(|i| Example {
                    text: "字".repeat(chars),
                    text_pair: None,
                    label: i % 2,
                    target: Target::Class,
                })
                .collect(),
            labels: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn the_budget_gives_more_epochs_to_shorter_and_fewer_texts() {
        let tiny = preset("tiny-zh").unwrap();
        let with = |change: fn(&mut TrainConfig)| {
            let mut c = tiny.train.clone();
            change(&mut c);
            c
        };
        let defaults = tiny.train.clone();
        // The sentiment corpus' size and mean length: the 3 it was tuned with.
        assert_eq!(tiny.epochs_for(&texts(13_891, 60), &defaults), 3);
        // 30,000 headlines of 20 characters: 22 positions each, 660,000 an epoch.
        assert_eq!(tiny.epochs_for(&texts(30_000, 20), &defaults), 4);
        // Words of 3 characters (jieba-pos): the cap.
        assert_eq!(
            tiny.epochs_for(&texts(12_719, 3), &defaults),
            MAX_BUDGET_EPOCHS
        );
        // Cut at a max length of 32, the sentiment-sized corpus reads less.
        let short = with(|c| c.max_length = 32);
        assert_eq!(tiny.epochs_for(&texts(13_891, 60), &short), 6);
        // Chunks read every character: 1,000 documents of 300 characters.
        let chunks = with(|c| c.long_text = LongText::Chunks);
        assert_eq!(tiny.epochs_for(&texts(1_000, 300), &defaults), 20);
        assert_eq!(tiny.epochs_for(&texts(1_000, 300), &chunks), 9);
        // A preset without a budget keeps its epochs.
        let chars = preset("tiny-zh-char").unwrap();
        assert_eq!(chars.epochs_for(&texts(12_719, 3), &chars.train), 3);
    }

    #[test]
    fn given_epochs_win_over_the_budget() {
        let words = texts(12_719, 3);
        let job = FineTune::new("tiny-zh");
        assert_eq!(job.train_config().unwrap().epochs, 3);
        assert_eq!(
            job.train_config_for(&words).unwrap().epochs,
            MAX_BUDGET_EPOCHS
        );
        let given = FineTune::new("tiny-zh").configure(|c| c.epochs = 2);
        assert_eq!(given.train_config_for(&words).unwrap().epochs, 2);
        // A given max length is how the budget reads the texts.
        let cut = FineTune::new("tiny-zh").configure(|c| c.max_length = 32);
        assert_eq!(cut.train_config_for(&texts(13_891, 60)).unwrap().epochs, 6);
        let replaced = FineTune::new("tiny-zh").config(TrainConfig::default());
        assert_eq!(replaced.train_config_for(&words).unwrap().epochs, 3);
    }

    #[test]
    fn the_best_epoch_is_by_macro_f1_where_the_problem_has_one() {
        let single = FineTune::new("tiny-zh")
            .train_config_for(&texts(100, 3))
            .unwrap();
        assert_eq!(single.metric, Metric::MacroF1);
        let mut scores = texts(100, 3);
        scores
            .examples
            .iter_mut()
            .for_each(|e| e.target = Target::Value(0.5));
        let regression = FineTune::new("tiny-zh").train_config_for(&scores).unwrap();
        assert_eq!(
            regression
                .metric
                .for_problem(zhbert_model::ProblemType::Regression),
            Ok(Metric::Mse)
        );
        let given = FineTune::new("tiny-zh").configure(|c| c.metric = Metric::Loss);
        assert_eq!(
            given.train_config_for(&texts(100, 3)).unwrap().metric,
            Metric::Loss
        );
        let chars = FineTune::new("tiny-zh-char").train_config_for(&texts(100, 3));
        assert_eq!(chars.unwrap().metric, Metric::Accuracy);
    }
}
