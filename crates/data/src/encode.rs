//! Tokenizing a dataset once, in parallel, ahead of the training loop.

use rayon::prelude::*;
use zhbert_tokenizer::{Batch, BertTokenizer, Encoded, Padding, TokenizerError};

use crate::dataset::Dataset;
use crate::long_text::{pool_rows, ChunkPool, LongTextOptions};

/// A dataset as token ids, with its labels and what truncation cut. Each
/// row is an example of training; with [`crate::LongText::Chunks`] a
/// document (an example of the data) may have several rows, its windows,
/// which carry its label, and are pooled back into one row per document
/// for metrics ([`EncodedDataset::pool_logits`]).
#[derive(Debug, Clone)]
pub struct EncodedDataset {
    /// One encoding per row, unpadded.
    pub encoded: Vec<Encoded>,
    /// Label id per row.
    pub labels: Vec<usize>,
    /// Multi-label and regression: the float targets of each row (its
    /// multi-hot row, or its value); `None` for single-label.
    pub targets: Option<Vec<Vec<f32>>>,
    /// Documents longer than `max_length` (cut, or split into windows).
    pub truncated: usize,
    /// Tokens cut from them in all (0 for windows: none is lost).
    pub tokens_cut: usize,
    /// Rows of each document, in order: document `d` is rows
    /// `sum(windows[..d])..sum(windows[..=d])`. All 1 unless chunked.
    pub windows: Vec<usize>,
    /// How a document's windows' logits are pooled.
    pub pool: ChunkPool,
}

impl EncodedDataset {
    /// Token count per example (for length grouping).
    pub fn lengths(&self) -> Vec<usize> {
        self.encoded.iter().map(|e| e.input_ids.len()).collect()
    }

    /// Documents (examples of the data), whatever their rows.
    pub fn documents(&self) -> usize {
        self.windows.len()
    }

    /// Documents split into more than one window.
    pub fn split_documents(&self) -> usize {
        self.windows.iter().filter(|&&n| n > 1).count()
    }

    /// The index of each document's first row.
    fn first_rows(&self) -> impl Iterator<Item = usize> + '_ {
        self.windows.iter().scan(0, |start, &n| {
            let first = *start;
            *start += n;
            Some(first)
        })
    }

    /// Label id per document.
    pub fn document_labels(&self) -> Vec<usize> {
        self.first_rows().map(|i| self.labels[i]).collect()
    }

    /// Multi-label and regression targets per document.
    pub fn document_targets(&self) -> Option<Vec<Vec<f32>>> {
        let targets = self.targets.as_ref()?;
        Some(self.first_rows().map(|i| targets[i].clone()).collect())
    }

    /// One value per row from one per document (its windows repeat it): a
    /// document's soft targets for each of its windows, say.
    pub fn per_row<T: Clone>(&self, per_document: &[T]) -> Vec<T> {
        per_document
            .iter()
            .zip(&self.windows)
            .flat_map(|(v, &n)| std::iter::repeat_n(v, n).cloned())
            .collect()
    }

    /// The logits of each document from those of its rows (`logits`, one per
    /// row): its windows' pooled as [`EncodedDataset::pool`] says.
    pub fn pool_logits(&self, logits: &[Vec<f32>]) -> Vec<Vec<f32>> {
        let mut start = 0;
        self.windows
            .iter()
            .map(|&n| {
                let rows = &logits[start..start + n];
                start += n;
                if n == 1 {
                    rows[0].clone()
                } else {
                    pool_rows(rows, self.pool)
                }
            })
            .collect()
    }

    /// The padded batch of the given examples and their labels.
    pub fn batch(
        &self,
        tokenizer: &BertTokenizer,
        indices: &[usize],
    ) -> Result<(Batch, Vec<usize>), TokenizerError> {
        let rows: Vec<Encoded> = indices.iter().map(|&i| self.encoded[i].clone()).collect();
        let labels = indices.iter().map(|&i| self.labels[i]).collect();
        Ok((tokenizer.pad(&rows, Padding::Longest)?, labels))
    }
}

/// Tokenizes every example (rayon), truncating to `max_length`.
pub fn encode_dataset(
    data: &Dataset,
    tokenizer: &BertTokenizer,
    max_length: usize,
) -> Result<EncodedDataset, TokenizerError> {
    encode_long_texts(data, tokenizer, max_length, &LongTextOptions::default())
}

/// Tokenizes every example (rayon) at `max_length`, long texts as `long`
/// says: truncated, head and tail, or split into windows (rows) that carry
/// their document's label and targets.
pub fn encode_long_texts(
    data: &Dataset,
    tokenizer: &BertTokenizer,
    max_length: usize,
    long: &LongTextOptions,
) -> Result<EncodedDataset, TokenizerError> {
    let documents: Vec<Vec<Encoded>> = data
        .examples
        .par_iter()
        .enumerate()
        .map(|(i, e)| {
            long.encode(tokenizer, &e.text, e.text_pair.as_deref(), max_length)
                .map_err(|err| TokenizerError::Request(format!("example {}: {err}", i + 1)))
        })
        .collect::<Result<_, _>>()?;
    let windows: Vec<usize> = documents.iter().map(Vec::len).collect();
    let truncated = documents
        .iter()
        .filter(|d| d.len() > 1 || d[0].truncated_tokens > 0)
        .count();
    let tokens_cut = documents.iter().flatten().map(|e| e.truncated_tokens).sum();
    let labels: Vec<usize> = data.examples.iter().map(|e| e.label).collect();
    let targets: Option<Vec<Vec<f32>>> = data
        .examples
        .iter()
        .map(|e| e.target.row(data.labels.len()))
        .collect();
    let mut out = EncodedDataset {
        encoded: documents.into_iter().flatten().collect(),
        labels: Vec::new(),
        targets: None,
        truncated,
        tokens_cut,
        windows,
        pool: long.pool,
    };
    out.labels = out.per_row(&labels);
    out.targets = targets.map(|t| out.per_row(&t));
    Ok(out)
}
