//! # zhbert-train
//!
//! Fine-tuning and evaluating zhbert's BERT models, as HF `Trainer` does: AdamW
//! with HF's decay groups and settings ([`TrainConfig::adamw`]), warmup then
//! linear, cosine or constant learning rate ([`LrScheduler`]), global-norm
//! clipping, gradient accumulation, evaluation with F1 and confusion matrix,
//! best checkpoint and early stopping, atomic checkpoints and exact resume,
//! metrics and plots; and batched, length-grouped inference.
//!
//! ## Quick start
//!
//! ```no_run
//! use burn::backend::{Autodiff, Flex};
//! use zhbert_train::{Classifier, FineTune, TrainConfig};
//!
//! let device = Default::default();
//! let summary = FineTune::new("tiny-zh") // a local HF folder, a Hub id, or a preset
//!     .train_file("train.csv") // CSV/TSV/JSONL/text<TAB>label; without dev/test, a stratified split
//!     .dev_file("dev.csv")
//!     .test_file("test.csv")
//!     .config(TrainConfig { epochs: 1, max_length: 64, lr: 3e-4, ..Default::default() })
//!     .output("out")
//!     .fit::<Autodiff<Flex>>(&device)?;
//! println!("{summary:?}");
//! let classifier = Classifier::<Flex>::load("out", &device)?;
//! for p in classifier.predict(&["质量很好", "太差了"])? {
//!     println!("{} {}", p.label, p.score);
//! }
//! # anyhow::Ok(())
//! ```
//!
//! `.config(c)` replaces the model's default settings (a preset's tuned ones,
//! or [`TrainConfig::default`], HF's) with `c`; `.configure(|c| c.epochs = 1)`
//! changes only what it sets, on top of them: that is what `zhbert train`
//! does with its flags. Everything `zhbert train` does is a [`FineTune`] call:
//! presets, masked-LM pretraining, distillation, streaming, resume, precision,
//! data-parallel runs ([`FineTune::fit_data_parallel`]); [`Classifier`] is
//! what `zhbert predict` and `zhbert eval` use. The loop itself is
//! [`Trainer::fit`], reporting to a [`TrainObserver`].
//!
//! Texts longer than the max length ([`long_text`]): `.configure(|c| {
//! c.long_text = LongText::Chunks; c.stride = 16; })` trains on every window
//! of a long text with its label and scores dev and test per document (the
//! windows' logits pooled, [`TrainConfig::chunk_pool`]);
//! [`Classifier::with_long_text`] classifies the same way, one prediction per
//! text (`zhbert eval`, `predict` and `serve` with `--long-text`). The model
//! folder records the settings it was trained with (`long_text.json`,
//! [`TrainedLongText`]) and [`Classifier::load`] takes them up: a model
//! trained on windows of 64 tokens classifies windows of 64 tokens.
//!
//! Int8 inference on the CPU (Flex backend): load with
//! `ClassifierOptions { quantize: Some(Quantize::Int8), ..Default::default() }`
//! or call [`Classifier::quantize`] (what `--quantize int8` of `zhbert
//! predict`, `eval` and `serve` does): every linear layer runs zhbert's int8
//! kernels, weights quantized per output channel at load and activations per
//! row at run time, as PyTorch's `quantize_dynamic`
//! ([`zhbert_model::quantize`]).
//!
//! ## Feature flags
//!
//! | feature | default | what it adds |
//! | --- | --- | --- |
//! | `flex` | yes | burn's Flex CPU backend |
//! | `ndarray` | | burn's ndarray CPU backend |
//! | `wgpu` | | burn's wgpu backend (Vulkan, Metal, DirectX 12) |
//! | `cuda` | | burn's CUDA backend |
//! | `collective` | yes | data-parallel training over burn-collective ([`parallel`]): several devices, several machines |
//! | `hub` | yes | model ids fetched from the Hugging Face Hub ([`hub`]) |
//! | `cli` | | [`TrainConfig`] as clap flags (`#[command(flatten)]`), as `zhbert train` uses it |
//!
//! Everything is generic over the backend; the backend features turn on burn's
//! backend of that name (and zhbert-model's feature).

pub mod classifier;
pub mod fine_tune;
pub mod hub;
pub mod inference;
mod json_file;
pub mod long_text;
pub mod metrics;
pub mod optim;
pub mod parallel;
pub mod plots;
pub mod presets;
pub mod pretrain;
pub mod tasks;
pub mod teacher;
pub mod trainer;

pub use classifier::{ClassPrediction, Classifier, ClassifierOptions, EmptyTextError};
pub use fine_tune::{FineTune, JobError};
pub use inference::{classify, evaluate_task, logits_of, InferenceOptions, Prediction};
pub use long_text::{ChunkPool, LongText, LongTextOptions, TrainedLongText, LONG_TEXT_FILE};
pub use metrics::{ClassMetrics, EvalMetrics, Metric};
pub use optim::{AdamW, AdamWConfig, GradAccumulator, LossScaler, LrScheduler};
pub use parallel::Replica;
#[cfg(feature = "collective")]
pub use parallel::{run_orchestrator, Nodes, Topology};
pub use presets::{preset, presets, Preset, PresetVocab};
pub use pretrain::{pretrain_mlm, PretrainConfig, PretrainSummary, SelfPretraining};
pub use tasks::{EvalTask, Thresholds, THRESHOLDS_FILE};
pub use trainer::{
    check_fresh_output, ensure_precision_supported, evaluate, list_checkpoints, request_stop,
    stop_requested, train, train_replica, ClassWeights, ConfigError, EvalRecord, Reporter,
    StepRecord, TrainConfig, TrainData, TrainError, TrainObserver, TrainPlan, TrainSet,
    TrainSummary, Trainer, TrainerState, Warmup,
};
pub use zhbert_model::Quantize;
