//! # zhbert-data
//!
//! Reading texts (and, for training, labelled datasets) for Chinese text
//! classification.
//!
//! ## Quick start
//!
//! ```no_run
//! use zhbert_data::{read_texts, TextFormat};
//!
//! // One text per line, a CSV with a `text` column, or JSONL with a `text` field,
//! // decided by the file extension.
//! let texts = read_texts("reviews.csv".as_ref(), TextFormat::from_path("reviews.csv".as_ref()), "text").unwrap();
//! # let _ = texts;
//! ```
//!
//! ## Feature flags
//!
//! None.

pub mod input;

pub use input::{read_texts, DataError, TextFormat};
