//! Texts longer than the model in training and evaluation: each split
//! tokenized as [`TrainConfig::long_text`](crate::TrainConfig::long_text)
//! says, and the data summary's line on what that did to long texts. The
//! modes themselves are [`zhbert_data::long_text`]'s. A trained model's
//! folder records its settings ([`TrainedLongText`], `long_text.json`), so
//! that [`Classifier::load`](crate::Classifier::load) classifies as it trained.

use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use zhbert_data::{encode_long_texts, Dataset, EncodedDataset};
use zhbert_tokenizer::BertTokenizer;

pub use zhbert_data::long_text::{
    head_tail_split, pool_rows, windows, ChunkPool, LongText, LongTextOptions,
};

/// The file of a model folder that records how the model was trained on long
/// texts.
pub const LONG_TEXT_FILE: &str = "long_text.json";

/// How a model was trained on texts longer than its max length, written
/// beside its weights: a model trained on windows of 64 tokens classifies
/// windows of 64 tokens when it is loaded, unless told otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainedLongText {
    /// [`TrainConfig::long_text`](crate::TrainConfig::long_text).
    pub long_text: LongText,
    /// [`TrainConfig::stride`](crate::TrainConfig::stride).
    pub stride: usize,
    /// [`TrainConfig::chunk_pool`](crate::TrainConfig::chunk_pool).
    pub chunk_pool: ChunkPool,
    /// [`TrainConfig::max_length`](crate::TrainConfig::max_length): the
    /// windows' length (chunks), or the room kept (head-tail).
    pub max_length: usize,
}

impl TrainedLongText {
    /// The settings as [`LongTextOptions`].
    pub fn options(&self) -> LongTextOptions {
        LongTextOptions {
            mode: self.long_text,
            stride: self.stride,
            pool: self.chunk_pool,
        }
    }

    /// Writes `long_text.json` in `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        crate::json_file::save(&dir.join(LONG_TEXT_FILE), self)
    }

    /// The settings saved in `dir`; `None` when it has no `long_text.json`
    /// (a model from elsewhere, or trained before zhbert wrote it).
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        crate::json_file::load(&dir.join(LONG_TEXT_FILE), "a long-text settings file")
    }
}

/// Tokenizes a split (`name`: train, dev, test, data) at `max_length` as
/// `long` says, and logs how many of its texts were long and what became of
/// them: cut, cut in the middle, or split into how many windows.
pub(crate) fn encode_split(
    name: &str,
    data: &Dataset,
    tokenizer: &BertTokenizer,
    max_length: usize,
    long: &LongTextOptions,
) -> Result<EncodedDataset> {
    let e = encode_long_texts(data, tokenizer, max_length, long)?;
    if let Some(line) = summary(name, &e, max_length, long) {
        tracing::info!("{line}");
    }
    Ok(e)
}

/// The data summary's line on long texts; `None` when there were none.
pub(crate) fn summary(
    name: &str,
    e: &EncodedDataset,
    max_length: usize,
    long: &LongTextOptions,
) -> Option<String> {
    if e.truncated == 0 {
        return None;
    }
    let documents = e.documents();
    let share = 100.0 * e.truncated as f64 / documents.max(1) as f64;
    let long_ones = format!(
        "{name}: {} of {documents} texts longer than {max_length} tokens ({share:.1}%)",
        e.truncated
    );
    Some(match long.mode {
        LongText::Truncate => format!("{long_ones}, {} tokens cut", e.tokens_cut),
        LongText::HeadTail => {
            let (head, tail) = head_tail_split(max_length - 2);
            format!(
                "{long_ones}, {} tokens cut from their middles (head-tail: the first {head} and last {tail} of a single text)",
                e.tokens_cut
            )
        }
        LongText::Chunks => {
            let split_windows: usize = e.windows.iter().filter(|&&n| n > 1).sum();
            format!(
                "{long_ones}: {} split into {split_windows} windows (stride {}, {} pooling), {} rows in all",
                e.split_documents(),
                long.stride,
                long.pool,
                e.encoded.len()
            )
        }
    })
}
