//! # zhbert-train
//!
//! Running zhbert's BERT models over datasets: batched, length-grouped inference
//! now; fine-tuning joins it.
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
//! None: the caller picks the backend.

pub mod inference;

pub use inference::{classify, InferenceOptions, Prediction};
