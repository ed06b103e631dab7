//! [`TrainConfig`]: every setting of a fine-tuning run, typed, with its
//! defaults (HF `TrainingArguments`' where HF has the setting) and its checks.

use serde::{Deserialize, Serialize};
use zhbert_data::{ChunkPool, LongText, LongTextOptions};
use zhbert_model::{Precision, ProblemType};

use crate::metrics::Metric;
use crate::optim::{AdamWConfig, LossScaler, LrScheduler};

/// A setting outside the values it can take: which setting, the value, and
/// what it must be. The CLI words it with its flag (`lr` → `--lr`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{option} {value}: {expected}")]
pub struct ConfigError {
    /// The setting's name, as in [`TrainConfig`] and TOML (`lr`, `warmup`).
    pub option: &'static str,
    /// The value given.
    pub value: String,
    /// What it must be.
    pub expected: &'static str,
}

impl ConfigError {
    fn new(option: &'static str, value: impl std::fmt::Display, expected: &'static str) -> Self {
        Self {
            option,
            value: value.to_string(),
            expected,
        }
    }
}

/// Warmup of the learning rate: a number of optimizer steps or a fraction of all.
/// Written as a number (`500`, `0.1`); text as the flag is (`"0.1"`) reads too.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
#[serde(try_from = "WarmupText")]
pub enum Warmup {
    /// Optimizer steps.
    Steps(usize),
    /// Fraction of the total optimizer steps.
    Ratio(f64),
}

impl Warmup {
    /// The warmup steps of a run of `total` optimizer steps.
    pub(crate) fn steps(self, total: usize) -> usize {
        match self {
            Self::Steps(n) => n,
            Self::Ratio(r) => (r * total as f64).ceil() as usize,
        }
    }
}

/// How [`Warmup`] may be written in TOML: a number, or text.
#[derive(Deserialize)]
#[serde(untagged)]
enum WarmupText {
    Steps(usize),
    Ratio(f64),
    Text(String),
}

impl TryFrom<WarmupText> for Warmup {
    type Error = ConfigError;

    fn try_from(t: WarmupText) -> Result<Self, ConfigError> {
        match t {
            WarmupText::Steps(n) => Ok(Self::Steps(n)),
            WarmupText::Ratio(r) => Ok(Self::Ratio(r)),
            WarmupText::Text(s) => s.parse(),
        }
    }
}

impl std::fmt::Display for Warmup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Steps(n) => write!(f, "{n}"),
            Self::Ratio(r) => write!(f, "{r}"),
        }
    }
}

impl std::str::FromStr for Warmup {
    type Err = ConfigError;

    /// `500` is steps, `0.1` a ratio.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        if let Ok(n) = s.parse::<usize>() {
            return Ok(Self::Steps(n));
        }
        match s.parse::<f64>() {
            Ok(r) if (0.0..1.0).contains(&r) => Ok(Self::Ratio(r)),
            _ => Err(ConfigError::new(
                "warmup",
                format!("{s:?}"),
                "a step count (500) or a ratio in [0, 1) (0.1)",
            )),
        }
    }
}

/// Per-class loss weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "ClassWeightsText", try_from = "ClassWeightsText")]
pub enum ClassWeights {
    /// n / (k · count) per class: scikit-learn's `class_weight="balanced"`
    /// (written `auto`).
    Balanced,
    /// One weight per label, in label order.
    List(Vec<f32>),
}

/// How [`ClassWeights`] is written in TOML and checkpoints: `"auto"` or a list.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum ClassWeightsText {
    Name(String),
    List(Vec<f32>),
}

impl From<ClassWeights> for ClassWeightsText {
    fn from(w: ClassWeights) -> Self {
        match w {
            ClassWeights::Balanced => Self::Name("auto".into()),
            ClassWeights::List(v) => Self::List(v),
        }
    }
}

impl TryFrom<ClassWeightsText> for ClassWeights {
    type Error = ConfigError;

    fn try_from(t: ClassWeightsText) -> Result<Self, ConfigError> {
        match t {
            ClassWeightsText::Name(s) => s.parse(),
            ClassWeightsText::List(v) => Ok(Self::List(v)),
        }
    }
}

impl std::str::FromStr for ClassWeights {
    type Err = ConfigError;

    /// `auto` or comma-separated numbers in label order (`1,2.5`).
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        if s == "auto" {
            return Ok(Self::Balanced);
        }
        s.split(',')
            .map(|x| x.trim().parse::<f32>())
            .collect::<Result<Vec<_>, _>>()
            .map(Self::List)
            .map_err(|_| {
                ConfigError::new(
                    "class_weights",
                    format!("{s:?}"),
                    "auto or numbers like 1,2.5",
                )
            })
    }
}

/// Everything a training run is configured by; readable from TOML, and with
/// feature `cli` the flags of `zhbert train` (`--epochs`, `--lr`, ...; each
/// field's doc is its help, HF `TrainingArguments`' names are aliases).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Passes over the training set (presets: their own; tiny-zh: as many as
    /// read about 3M characters of its training texts, 3 to 10).
    #[cfg_attr(feature = "cli", arg(long, visible_alias = "num-train-epochs", default_value_t = TrainConfig::default().epochs))]
    pub epochs: usize,
    /// Stop after this many optimizer steps (overrides `epochs` when smaller).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true))]
    pub max_steps: Option<usize>,
    /// Sequences per micro-batch (of all replicas together).
    #[cfg_attr(feature = "cli", arg(long, visible_alias = "per-device-train-batch-size", default_value_t = TrainConfig::default().batch_size))]
    pub batch_size: usize,
    /// Longest input in tokens; longer texts are truncated (presets: their own).
    #[cfg_attr(feature = "cli", arg(long, visible_alias = "max-seq-length", default_value_t = TrainConfig::default().max_length))]
    pub max_length: usize,
    /// Texts longer than max_length: truncate (keep the start), head-tail
    /// (keep a quarter of the room from the start and the rest from the end,
    /// Sun et al. 2019: 128 + 382 at 512) or chunks (windows of max_length
    /// tokens, sharing --stride; training takes every window with its
    /// document's label, evaluation pools their logits per document).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = TrainConfig::default().long_text))]
    pub long_text: LongText,
    /// With --long-text chunks: tokens consecutive windows share (HF's
    /// `stride`), less than max_length - 2.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = TrainConfig::default().stride))]
    pub stride: usize,
    /// With --long-text chunks: how a document's windows' logits are pooled
    /// in evaluations: mean or max.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = TrainConfig::default().chunk_pool))]
    pub chunk_pool: ChunkPool,
    /// Peak learning rate, in [0, 1] (tiny-zh: 3e-4).
    #[cfg_attr(feature = "cli", arg(long, visible_alias = "learning-rate", allow_negative_numbers = true, default_value_t = TrainConfig::default().lr))]
    pub lr: f64,
    /// Decoupled weight decay, not on biases and LayerNorm weights (tiny-zh: 0.01).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, default_value_t = TrainConfig::default().weight_decay))]
    pub weight_decay: f64,
    /// AdamW's `beta1` (HF's `adam_beta1`).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, default_value_t = TrainConfig::default().adam_beta1))]
    pub adam_beta1: f64,
    /// AdamW's `beta2` (HF's `adam_beta2`).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, default_value_t = TrainConfig::default().adam_beta2))]
    pub adam_beta2: f64,
    /// AdamW's `eps` (HF's `adam_epsilon`).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, default_value_t = TrainConfig::default().adam_epsilon))]
    pub adam_epsilon: f64,
    /// Warmup: optimizer steps (500) or a ratio of all (0.1) (tiny-zh: 0.1).
    #[cfg_attr(feature = "cli", arg(long, visible_aliases = ["warmup-ratio", "warmup-steps"], allow_negative_numbers = true, default_value_t = TrainConfig::default().warmup))]
    pub warmup: Warmup,
    /// How the learning rate moves after warmup (HF's `lr_scheduler_type`):
    /// linear, cosine, constant (no warmup) or constant_with_warmup.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = TrainConfig::default().lr_scheduler))]
    pub lr_scheduler: LrScheduler,
    /// Micro-batches per optimizer step.
    #[cfg_attr(feature = "cli", arg(long, visible_alias = "gradient-accumulation-steps", default_value_t = TrainConfig::default().grad_accum))]
    pub grad_accum: usize,
    /// Clip the global gradient norm to this (none: no clipping; the flag and
    /// TOML take 0 for none) [default: 1].
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true))]
    pub max_grad_norm: Option<f64>,
    /// Seed of the split, data order, dropout and fresh weights.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = TrainConfig::default().seed))]
    pub seed: u64,
    /// Evaluate every N optimizer steps [default: at the end of each epoch].
    #[cfg_attr(feature = "cli", arg(long, visible_alias = "eval-steps"))]
    pub eval_every: Option<usize>,
    /// Checkpoint every N optimizer steps [default: at each evaluation].
    #[cfg_attr(feature = "cli", arg(long, visible_alias = "save-steps"))]
    pub save_every: Option<usize>,
    /// Checkpoints kept besides the best.
    #[cfg_attr(feature = "cli", arg(long, visible_alias = "save-total-limit", default_value_t = TrainConfig::default().keep_checkpoints))]
    pub keep_checkpoints: usize,
    /// Early stopping: evaluations without improvement.
    #[cfg_attr(feature = "cli", arg(long))]
    pub patience: Option<usize>,
    /// Stop once the dev `metric` reaches this value (at most it, for loss):
    /// time-to-accuracy runs.
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true))]
    pub stop_at: Option<f64>,
    /// Metric that chooses the best checkpoint: accuracy, macro_f1, micro_f1 or
    /// loss; multi-label: micro_f1 (what accuracy, the default, means there),
    /// macro_f1, samples_f1, subset_accuracy, hamming_loss or loss;
    /// regression: mse (the default there), mae, pearson, spearman or loss
    /// (tiny-zh: macro_f1 in single-label runs).
    #[cfg_attr(feature = "cli", arg(long, visible_alias = "metric-for-best-model", default_value_t = TrainConfig::default().metric))]
    pub metric: Metric,
    /// Class weights of the loss: auto (n / (k · count), scikit-learn's
    /// balanced) or a comma-separated list in label order.
    #[cfg_attr(feature = "cli", arg(long))]
    pub class_weights: Option<ClassWeights>,
    /// Label smoothing of the loss, in [0, 1).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, default_value_t = TrainConfig::default().label_smoothing))]
    pub label_smoothing: f32,
    /// Batch texts of similar length together (HF `group_by_length`;
    /// `--group-by-length` or `--group-by-length false`; tiny-zh: on).
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_missing_value = "true", default_value_t = TrainConfig::default().group_by_length, action = clap::ArgAction::Set))]
    pub group_by_length: bool,
    /// Log every N optimizer steps when not on a terminal.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = TrainConfig::default().log_every))]
    pub log_every: usize,
    /// Float type of matmuls and attention: fp32, bf16 or f16 (mixed
    /// precision: fp32 master weights, optimizer state, softmax, LayerNorm and
    /// loss; f16 scales the loss dynamically). Needs flex, wgpu or cuda.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = TrainConfig::default().precision))]
    pub precision: Precision,
    /// f16's first loss scale [default: 65536, as torch's GradScaler].
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true))]
    pub initial_loss_scale: Option<f64>,
    /// Distillation weight: (1 - W) x the labels' loss + W x the loss against a
    /// char 1-3-gram TF-IDF + logistic regression teacher fitted on the training
    /// set out of fold ([`crate::teacher`]; the probabilities are
    /// [`crate::TrainData::soft_targets`]); 0: labels only (tiny-zh: 0.5).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, default_value_t = TrainConfig::default().distill))]
    pub distill: f64,
    /// HF's `problem_type`: single_label_classification,
    /// multi_label_classification or regression [default: from the training
    /// data: a list-valued label field or --label-separator is multi-label, a
    /// label column holding a non-integer number is regression].
    #[cfg_attr(feature = "cli", arg(long, value_parser = parse_problem_type))]
    pub problem_type: Option<ProblemType>,
    /// Multi-label: a label is predicted when its sigmoid is over this, in (0, 1).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = TrainConfig::default().threshold))]
    pub threshold: f32,
    /// Multi-label: after training, choose each label's threshold on the dev
    /// set to maximise its F1 (saved in thresholds.json, used by eval and predict).
    #[cfg_attr(feature = "cli", arg(long))]
    pub tune_thresholds: bool,
}

/// A problem type by HF's name.
#[cfg(feature = "cli")]
pub fn parse_problem_type(s: &str) -> Result<ProblemType, String> {
    serde_json::from_value(serde_json::Value::String(s.into())).map_err(|_| {
        format!("{s:?}: single_label_classification, multi_label_classification or regression")
    })
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 3,
            max_steps: None,
            batch_size: 32,
            max_length: 128,
            long_text: LongText::Truncate,
            stride: 0,
            chunk_pool: ChunkPool::Mean,
            lr: 5e-5,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            warmup: Warmup::Steps(0),
            lr_scheduler: LrScheduler::Linear,
            grad_accum: 1,
            max_grad_norm: Some(1.0),
            seed: 42,
            eval_every: None,
            save_every: None,
            keep_checkpoints: 2,
            patience: None,
            stop_at: None,
            metric: Metric::Accuracy,
            class_weights: None,
            label_smoothing: 0.0,
            group_by_length: false,
            log_every: 50,
            precision: Precision::Fp32,
            initial_loss_scale: None,
            distill: 0.0,
            problem_type: None,
            threshold: 0.5,
            tune_thresholds: false,
        }
    }
}

/// `Err` unless `ok`.
fn check(
    ok: bool,
    option: &'static str,
    value: impl std::fmt::Display,
    expected: &'static str,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(option, value, expected))
    }
}

impl TrainConfig {
    /// Checks every value that would otherwise fail deep in the loop, or train
    /// to nothing (a negative or infinite learning rate, say).
    pub fn validate(&self) -> Result<(), ConfigError> {
        const AT_LEAST_1: &str = "must be at least 1";
        check(self.epochs >= 1, "epochs", self.epochs, AT_LEAST_1)?;
        check(
            self.batch_size >= 1,
            "batch_size",
            self.batch_size,
            AT_LEAST_1,
        )?;
        check(
            self.grad_accum >= 1,
            "grad_accum",
            self.grad_accum,
            AT_LEAST_1,
        )?;
        check(self.max_steps != Some(0), "max_steps", 0, AT_LEAST_1)?;
        for (name, every) in [
            ("eval_every", self.eval_every),
            ("save_every", self.save_every),
        ] {
            check(every != Some(0), name, 0, AT_LEAST_1)?;
        }
        check(
            self.max_length >= 3,
            "max_length",
            self.max_length,
            "must be at least 3 ([CLS], a token, [SEP])",
        )?;
        check(
            self.long_text_options().check(self.max_length).is_ok(),
            "stride",
            self.stride,
            "with chunks, must be less than max_length - 2 (a window's [CLS] and [SEP]), or no window would move on",
        )?;
        check(
            (0.0..=1.0).contains(&self.lr),
            "lr",
            self.lr,
            "a learning rate in [0, 1]",
        )?;
        check(
            self.weight_decay.is_finite() && (0.0..=1.0).contains(&self.weight_decay),
            "weight_decay",
            self.weight_decay,
            "in [0, 1]",
        )?;
        check(
            (0.0..1.0).contains(&self.adam_beta1),
            "adam_beta1",
            self.adam_beta1,
            "in [0, 1)",
        )?;
        check(
            (0.0..1.0).contains(&self.adam_beta2),
            "adam_beta2",
            self.adam_beta2,
            "in [0, 1)",
        )?;
        check(
            self.adam_epsilon.is_finite() && self.adam_epsilon >= 0.0,
            "adam_epsilon",
            self.adam_epsilon,
            "a number of at least 0",
        )?;
        if let Warmup::Ratio(r) = self.warmup {
            check((0.0..1.0).contains(&r), "warmup", r, "a ratio in [0, 1)")?;
        }
        if let Some(n) = self.max_grad_norm {
            check(
                n.is_finite() && n > 0.0,
                "max_grad_norm",
                n,
                "a positive number",
            )?;
        }
        self.validate_loss()
    }

    /// The checks of the loss's settings: distillation, f16 scaling, class
    /// weights, the stopping target, label smoothing.
    fn validate_loss(&self) -> Result<(), ConfigError> {
        check(
            (0.0..=1.0).contains(&self.distill),
            "distill",
            self.distill,
            "between 0 and 1",
        )?;
        if let Some(scale) = self.initial_loss_scale {
            check(
                scale.is_finite() && scale > 0.0,
                "initial_loss_scale",
                scale,
                "a positive number",
            )?;
        }
        if let Some(ClassWeights::List(w)) = &self.class_weights {
            check(
                w.iter().all(|x| x.is_finite() && *x >= 0.0),
                "class_weights",
                format!("{w:?}"),
                "numbers of at least 0",
            )?;
        }
        check(
            self.threshold > 0.0 && self.threshold < 1.0,
            "threshold",
            self.threshold,
            "in (0, 1)",
        )?;
        if let Some(t) = self.stop_at {
            check(t.is_finite(), "stop_at", t, "a finite number")?;
        }
        check(
            (0.0..1.0).contains(&self.label_smoothing),
            "label_smoothing",
            self.label_smoothing,
            "in [0, 1)",
        )
    }

    /// What happens to texts longer than `max_length` (`long_text`,
    /// `stride`, `chunk_pool` together).
    pub fn long_text_options(&self) -> LongTextOptions {
        LongTextOptions {
            mode: self.long_text,
            stride: self.stride,
            pool: self.chunk_pool,
        }
    }

    /// The optimizer these settings train with: AdamW at the peak `lr`.
    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            lr: self.lr,
            beta1: self.adam_beta1,
            beta2: self.adam_beta2,
            eps: self.adam_epsilon,
            weight_decay: self.weight_decay,
        }
    }

    /// f16's loss scaler, starting at `initial_loss_scale`; `None` for other precisions.
    pub(crate) fn new_loss_scaler(&self) -> Option<LossScaler> {
        (self.precision == Precision::F16)
            .then(|| LossScaler::new(self.initial_loss_scale.unwrap_or(LossScaler::INIT)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_values_are_refused_by_name() {
        let bad = [
            TrainConfig {
                lr: -1.0,
                ..Default::default()
            },
            TrainConfig {
                lr: 1e9,
                ..Default::default()
            },
            TrainConfig {
                lr: f64::NAN,
                ..Default::default()
            },
            TrainConfig {
                weight_decay: -3.0,
                ..Default::default()
            },
            TrainConfig {
                epochs: 0,
                ..Default::default()
            },
            TrainConfig {
                max_grad_norm: Some(-1.0),
                ..Default::default()
            },
            TrainConfig {
                adam_beta2: 1.0,
                ..Default::default()
            },
        ];
        let names = [
            "lr",
            "lr",
            "lr",
            "weight_decay",
            "epochs",
            "max_grad_norm",
            "adam_beta2",
        ];
        for (c, name) in bad.iter().zip(names) {
            assert_eq!(c.validate().unwrap_err().option, name, "{c:?}");
        }
        TrainConfig::default().validate().unwrap();
    }

    #[test]
    fn class_weights_and_warmup_read_as_written() {
        assert_eq!("auto".parse::<ClassWeights>(), Ok(ClassWeights::Balanced));
        assert_eq!(
            "1, 2.5".parse::<ClassWeights>(),
            Ok(ClassWeights::List(vec![1.0, 2.5]))
        );
        assert!("balanced".parse::<ClassWeights>().is_err());
        let json = serde_json::to_string(&ClassWeights::Balanced).unwrap();
        assert_eq!(json, "\"auto\"");
        assert_eq!(
            serde_json::from_str::<ClassWeights>(&json).unwrap(),
            ClassWeights::Balanced
        );
        assert_eq!("500".parse::<Warmup>(), Ok(Warmup::Steps(500)));
        assert_eq!("0.1".parse::<Warmup>(), Ok(Warmup::Ratio(0.1)));
        assert_eq!("1.5".parse::<Warmup>().unwrap_err().option, "warmup");
    }
}
