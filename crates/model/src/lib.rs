//! # zhbert-model
//!
//! BERT for burn, numerically the same as HF `transformers`' `modeling_bert.py`:
//! [`BertModel`], [`BertForSequenceClassification`] and [`BertForMaskedLM`],
//! generic over any burn [`Backend`](burn::tensor::backend::Backend), with HF
//! checkpoint import (`model.safetensors`, `pytorch_model.bin`) and export.
//!
//! ## Quick start
//!
//! ```no_run
//! use burn::backend::Flex;
//! use zhbert_model::{load_classifier, BertInput, LoadOptions};
//!
//! let device = Default::default();
//! let (model, config, report) =
//!     load_classifier::<Flex>("my-model".as_ref(), &LoadOptions::default(), &device).unwrap();
//! println!("{report}");
//! let input = BertInput::from_ids(&[2, 7, 3], &[0, 0, 0], &[1, 1, 1], 1, 3, &device);
//! let logits = model.forward(input); // [1, num_labels]
//! # let _ = (logits, config);
//! ```
//!
//! ## Feature flags
//!
//! The model is generic over the backend; each feature turns on one of burn's,
//! so that `burn::backend::{Flex, NdArray, Wgpu, Cuda}` exist for the caller.
//!
//! | feature | default | what |
//! | --- | --- | --- |
//! | `flex` | yes | burn's Flex CPU backend |
//! | `avx512` | yes | `gemm`'s AVX-512 matmul kernels in Flex, chosen at run time where the CPU has them (without it, AVX2 at most) |
//! | `ndarray` | | burn's ndarray CPU backend |
//! | `wgpu` | | wgpu: Vulkan, Metal, DirectX 12 (lavapipe where there is no GPU) |
//! | `cuda` | | NVIDIA CUDA; the driver (`libcuda.so.1`) is loaded at run time |
//!
//! ## Layout
//!
//! | module | what |
//! | --- | --- |
//! | [`config`] | `config.json` ([`BertConfig`]) |
//! | [`bert`] | the model, one file, named like HF's keys |
//! | [`attention`] | the attention op: zhbert's CPU kernel with its own backward, burn's fused op |
//! | [`checkpoint`] | import and export of HF weights, [`LoadReport`] |
//! | [`dense`] | zhbert's fp32 linear kernel for the CPU (AVX2: product, bias and GELU in one pass; in training, the forward and the input gradient) |
//! | [`precision`] | mixed precision: matmuls in bf16 or f16 inside [`autocast`] |
//! | [`quantize`] | dynamic int8 inference on the CPU: zhbert's int8 linear kernels ([`BertForSequenceClassification::quantize`]) |

pub mod attention;
pub mod bert;
pub mod checkpoint;
pub mod config;
mod cpu;
pub mod dense;
pub mod precision;
pub mod quantize;

pub use bert::{
    classification_loss, cross_entropy, BertForMaskedLM, BertForSequenceClassification, BertInput,
    BertModel, BertModelOutput, BertOutput, BertSelfOutput, CrossEntropyOptions, Labels,
};
pub use checkpoint::{
    find_weights, hf_name, load_base, load_classifier, load_classifier_with_config, load_masked_lm,
    load_weights_file, save_classifier, save_safetensors, CheckpointFormat, LoadOptions,
    LoadReport,
};
pub use config::{BertConfig, HiddenAct, ProblemType};
pub use precision::{autocast, Precision};
pub use quantize::{Quantize, QuantizeError};

use std::path::{Path, PathBuf};

/// Errors of this crate; every message names the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file's content does not fit.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The checkpoint has no trained classification head for the labels (a
    /// base model such as `bert-base-chinese`, or a head of another shape) and
    /// a fresh one was not allowed ([`LoadOptions::allow_fresh_head`]).
    #[error("{}: a checkpoint without a trained classification head ({reason}); fine-tune it first, or allow a fresh (random) head explicitly", path.display())]
    MissingHead {
        /// The weight file.
        path: PathBuf,
        /// What is missing or does not fit ("it has no classification head").
        reason: String,
    },
}

impl ModelError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn invalid(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.as_ref().into(),
            message: message.into(),
        }
    }
}

/// Writes a file atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    use std::io::Write;
    let io = |e| ModelError::io(path, e);
    let mut file = atomic_write_file::AtomicWriteFile::open(path).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.commit().map_err(io)
}
