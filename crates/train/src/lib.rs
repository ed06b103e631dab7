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
//! use burn::backend::Flex;
//! use zhbert_model::{load_classifier, LoadOptions};
//! use zhbert_tokenizer::BertTokenizer;
//! use zhbert_train::{classify, InferenceOptions};
//!
//! let device = Default::default();
//! let dir = std::path::Path::new("my-model");
//! let tokenizer = BertTokenizer::from_dir(dir).unwrap();
//! let (model, config, _) = load_classifier::<Flex>(dir, &LoadOptions::default(), &device).unwrap();
//! let texts = vec![("质量很好".to_string(), None)];
//! let preds = classify(&model, &tokenizer, &texts, &InferenceOptions::for_config(&config), &device).unwrap();
//! println!("{}", config.labels()[preds[0].label]);
//! ```
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
//!
//! Everything is generic over the backend; the backend features turn on burn's
//! backend of that name (and zhbert-model's feature).

pub mod inference;
pub mod metrics;
pub mod optim;
pub mod parallel;
pub mod plots;
pub mod presets;
pub mod pretrain;
pub mod teacher;
pub mod trainer;

pub use inference::{classify, logits_of, InferenceOptions, Prediction};
pub use metrics::{ClassMetrics, EvalMetrics};
pub use optim::{AdamW, AdamWConfig, GradAccumulator, LossScaler, LrScheduler};
pub use parallel::Replica;
#[cfg(feature = "collective")]
pub use parallel::{run_orchestrator, Nodes, Topology};
pub use presets::{preset, presets, Preset, PresetVocab};
pub use pretrain::{pretrain_mlm, PretrainConfig, PretrainSummary};
pub use trainer::{
    check_fresh_output, ensure_precision_supported, evaluate, list_checkpoints, train,
    train_replica, ClassWeights, TrainConfig, TrainData, TrainSet, TrainSummary, TrainerState,
    Warmup,
};
