//! Texts longer than the model in training and evaluation: each split
//! tokenized as [`TrainConfig::long_text`](crate::TrainConfig::long_text)
//! says, and the data summary's line on what that did to long texts. The
//! modes themselves are [`zhbert_data::long_text`]'s.

use anyhow::Result;
use zhbert_data::{encode_long_texts, Dataset, EncodedDataset};
use zhbert_tokenizer::BertTokenizer;

pub use zhbert_data::long_text::{
    head_tail_split, pool_rows, windows, ChunkPool, LongText, LongTextOptions,
};

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
