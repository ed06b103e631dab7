//! Texts longer than the model: what to do with the tokens past `max_length`.
//!
//! - [`LongText::Truncate`]: keep the first tokens (`transformers`' truncation,
//!   `longest_first` for pairs). The default.
//! - [`LongText::HeadTail`]: keep the first quarter of the room for text
//!   tokens (rounded up) from the start of the text and the rest from its end:
//!   Sun et al.'s head+tail ("How to Fine-Tune BERT for Text Classification?",
//!   2019), which kept 128 + 382 tokens of 510; [`head_tail_split`] gives those
//!   numbers at 512 and the same proportion at any length. A pair keeps the
//!   lengths `longest_first` gives each text, each text its head and tail.
//! - [`LongText::Chunks`]: every window of `max_length` tokens, each with its own
//!   `[CLS]`/`[SEP]`, consecutive windows sharing `stride` tokens: the windows of
//!   `transformers`' `return_overflowing_tokens=True, stride=N` (a window's text
//!   starts `max_length - 2 - stride` tokens after the previous one's; the last
//!   ends at the text's end). For a pair, the first text is split and the second
//!   kept whole in every window (`truncation="only_first"`). Training takes each
//!   window as an example with its document's label; inference pools the
//!   windows' logits ([`ChunkPool`]) into one prediction per document.

use std::ops::Range;

use serde::{Deserialize, Serialize};
use zhbert_tokenizer::{BertTokenizer, Encoded, TokenizerError};

/// What happens to a text longer than the max length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LongText {
    /// Keep the start (`transformers`' truncation).
    #[default]
    Truncate,
    /// Keep a quarter of the room from the start and the rest from the end.
    HeadTail,
    /// Split into overlapping windows; pool their logits per document.
    Chunks,
}

impl std::fmt::Display for LongText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Truncate => "truncate",
            Self::HeadTail => "head-tail",
            Self::Chunks => "chunks",
        })
    }
}

impl std::str::FromStr for LongText {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "truncate" => Ok(Self::Truncate),
            "head-tail" => Ok(Self::HeadTail),
            "chunks" => Ok(Self::Chunks),
            _ => Err(format!("{s:?}: truncate, head-tail or chunks")),
        }
    }
}

/// How the logits of a document's windows become the document's logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChunkPool {
    /// The mean of the windows' logits.
    #[default]
    Mean,
    /// The largest logit of each label over the windows.
    Max,
}

impl std::fmt::Display for ChunkPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Mean => "mean",
            Self::Max => "max",
        })
    }
}

impl std::str::FromStr for ChunkPool {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mean" => Ok(Self::Mean),
            "max" => Ok(Self::Max),
            _ => Err(format!("{s:?}: mean or max")),
        }
    }
}

/// The long-text settings together: the mode, the windows' overlap and
/// their pooling (the last two for [`LongText::Chunks`] only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LongTextOptions {
    /// What happens past the max length.
    pub mode: LongText,
    /// Tokens shared by consecutive windows (HF's `stride`).
    pub stride: usize,
    /// How windows' logits become a document's.
    pub pool: ChunkPool,
}

impl LongTextOptions {
    /// Why these settings cannot work at `max_length`, in one line: a stride
    /// that leaves a window no new token.
    pub fn check(&self, max_length: usize) -> Result<(), String> {
        if self.mode == LongText::Chunks && self.stride + 2 >= max_length {
            return Err(format!(
                "stride {}: must be less than the max length {max_length} minus 2 (a window's [CLS] and [SEP]), or no window would move on",
                self.stride
            ));
        }
        Ok(())
    }

    /// The rows that encode one text (or pair) at `max_length`: one, except
    /// for a long text in [`LongText::Chunks`].
    pub fn encode(
        &self,
        tokenizer: &BertTokenizer,
        text: &str,
        pair: Option<&str>,
        max_length: usize,
    ) -> Result<Vec<Encoded>, TokenizerError> {
        match self.mode {
            LongText::Truncate => Ok(vec![tokenizer.encode(text, pair, Some(max_length))?]),
            LongText::HeadTail => Ok(vec![head_tail(tokenizer, text, pair, max_length)?]),
            LongText::Chunks => chunks(tokenizer, text, pair, max_length, self.stride),
        }
    }
}

/// Of `budget` text tokens, how many head-tail takes from the start and from
/// the end: a quarter rounded up, and the rest (128 and 382 of 510).
pub fn head_tail_split(budget: usize) -> (usize, usize) {
    let head = budget.div_ceil(4);
    (head, budget - head)
}

/// The token ranges of the windows over `len` tokens, `size` tokens each,
/// consecutive ones sharing `stride` (`stride < size`): as `tokenizers`'
/// `Encoding::truncate` with a stride makes its overflowing encodings.
pub fn windows(len: usize, size: usize, stride: usize) -> Vec<Range<usize>> {
    assert!(
        stride < size,
        "stride {stride} must be less than the window {size}"
    );
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let end = (start + size).min(len);
        out.push(start..end);
        if end == len {
            return out;
        }
        start += size - stride;
    }
}

/// One row of logits per document from the rows of its windows.
pub fn pool_rows(rows: &[Vec<f32>], pool: ChunkPool) -> Vec<f32> {
    let Some(first) = rows.first() else {
        return Vec::new();
    };
    match pool {
        ChunkPool::Max => (0..first.len())
            .map(|j| rows.iter().map(|r| r[j]).fold(f32::NEG_INFINITY, f32::max))
            .collect(),
        // In f64, so the mean does not depend on the windows' order.
        ChunkPool::Mean => (0..first.len())
            .map(|j| (rows.iter().map(|r| r[j] as f64).sum::<f64>() / rows.len() as f64) as f32)
            .collect(),
    }
}

/// A text's tokens without the special tokens.
fn text_ids(tokenizer: &BertTokenizer, text: &str) -> Result<Vec<u32>, TokenizerError> {
    let mut ids = tokenizer.encode(text, None, None)?.input_ids;
    // [CLS] ... [SEP]: the post-processor's two special tokens.
    ids.pop();
    ids.remove(0);
    Ok(ids)
}

/// `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`, as the tokenizer's
/// post-processor writes them.
fn assemble(tokenizer: &BertTokenizer, a: &[u32], b: Option<&[u32]>, cut: usize) -> Encoded {
    let mut input_ids = Vec::with_capacity(a.len() + b.map_or(0, <[u32]>::len) + 3);
    input_ids.push(tokenizer.cls_id());
    input_ids.extend_from_slice(a);
    input_ids.push(tokenizer.sep_id());
    let first = input_ids.len();
    if let Some(b) = b {
        input_ids.extend_from_slice(b);
        input_ids.push(tokenizer.sep_id());
    }
    let mut token_type_ids = vec![0; first];
    token_type_ids.resize(input_ids.len(), 1);
    Encoded {
        attention_mask: vec![1; input_ids.len()],
        input_ids,
        token_type_ids,
        truncated_tokens: cut,
    }
}

/// `ids` cut to `keep` tokens: its head and its tail.
fn keep_head_tail(ids: &[u32], keep: usize) -> Vec<u32> {
    if ids.len() <= keep {
        return ids.to_vec();
    }
    let (head, tail) = head_tail_split(keep);
    let mut out = ids[..head].to_vec();
    out.extend_from_slice(&ids[ids.len() - tail..]);
    out
}

fn head_tail(
    tokenizer: &BertTokenizer,
    text: &str,
    pair: Option<&str>,
    max_length: usize,
) -> Result<Encoded, TokenizerError> {
    let truncated = tokenizer.encode(text, pair, Some(max_length))?;
    if truncated.truncated_tokens == 0 {
        return Ok(truncated);
    }
    // The lengths longest_first keeps for each text, read off its token types.
    let second = truncated.token_type_ids.iter().filter(|&&t| t == 1).count();
    let keep_a = truncated.input_ids.len() - second - 2;
    let a = keep_head_tail(&text_ids(tokenizer, text)?, keep_a);
    let b = match pair {
        Some(p) => Some(keep_head_tail(&text_ids(tokenizer, p)?, second - 1)),
        None => None,
    };
    Ok(assemble(
        tokenizer,
        &a,
        b.as_deref(),
        truncated.truncated_tokens,
    ))
}

fn chunks(
    tokenizer: &BertTokenizer,
    text: &str,
    pair: Option<&str>,
    max_length: usize,
    stride: usize,
) -> Result<Vec<Encoded>, TokenizerError> {
    let whole = tokenizer.encode(text, pair, None)?;
    if whole.input_ids.len() <= max_length {
        return Ok(vec![whole]);
    }
    let a = text_ids(tokenizer, text)?;
    let b = pair.map(|p| text_ids(tokenizer, p)).transpose()?;
    let specials = if b.is_some() { 3 } else { 2 };
    let room = max_length
        .checked_sub(specials + b.as_ref().map_or(0, Vec::len))
        .filter(|&room| room > stride)
        .ok_or_else(|| {
            TokenizerError::Request(format!(
                "the second text of a pair has {} tokens: windows of {max_length} tokens with a stride of {stride} leave no room for the first text (chunks split the first text only; shorten the second or raise the max length)",
                b.as_ref().map_or(0, Vec::len)
            ))
        })?;
    Ok(windows(a.len(), room, stride)
        .into_iter()
        .map(|w| assemble(tokenizer, &a[w], b.as_deref(), 0))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_text_and_overlap_by_the_stride() {
        // The example of tokenizers' docs: 19 tokens, windows of 6 sharing 2.
        let got = windows(19, 6, 2);
        assert_eq!(got, [0..6, 4..10, 8..14, 12..18, 16..19]);
        assert_eq!(windows(6, 6, 0), [0..6]);
        assert_eq!(windows(7, 6, 0), [0..6, 6..7]);
    }

    #[test]
    fn head_tail_split_is_sun_et_al_at_512() {
        assert_eq!(head_tail_split(510), (128, 382));
        assert_eq!(head_tail_split(62), (16, 46));
        assert_eq!(head_tail_split(1), (1, 0));
    }

    #[test]
    fn pooling_is_per_label() {
        let rows = vec![vec![1.0, -2.0], vec![3.0, 0.0]];
        assert_eq!(pool_rows(&rows, ChunkPool::Mean), [2.0, -1.0]);
        assert_eq!(pool_rows(&rows, ChunkPool::Max), [3.0, 0.0]);
    }

    #[test]
    fn names_read_as_the_flags_write_them() {
        for mode in [LongText::Truncate, LongText::HeadTail, LongText::Chunks] {
            assert_eq!(mode.to_string().parse::<LongText>(), Ok(mode));
        }
        assert!("headtail".parse::<LongText>().is_err());
        assert_eq!("max".parse::<ChunkPool>(), Ok(ChunkPool::Max));
    }
}
