//! Tokenizing a dataset once, in parallel, ahead of the training loop.

use rayon::prelude::*;
use zhbert_tokenizer::{Batch, BertTokenizer, Encoded, Padding, TokenizerError};

use crate::dataset::Dataset;

/// A dataset as token ids, with its labels and what truncation cut.
#[derive(Debug, Clone)]
pub struct EncodedDataset {
    /// One encoding per example, unpadded.
    pub encoded: Vec<Encoded>,
    /// Label id per example.
    pub labels: Vec<usize>,
    /// Multi-label and regression: the float targets of each example (its
    /// multi-hot row, or its value); `None` for single-label.
    pub targets: Option<Vec<Vec<f32>>>,
    /// Examples longer than `max_length`.
    pub truncated: usize,
    /// Tokens cut from them in all.
    pub tokens_cut: usize,
}

impl EncodedDataset {
    /// Token count per example (for length grouping).
    pub fn lengths(&self) -> Vec<usize> {
        self.encoded.iter().map(|e| e.input_ids.len()).collect()
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
    let encoded: Vec<Encoded> = data
        .examples
        .par_iter()
        .map(|e| tokenizer.encode(&e.text, e.text_pair.as_deref(), Some(max_length)))
        .collect::<Result<_, _>>()?;
    let truncated = encoded.iter().filter(|e| e.truncated_tokens > 0).count();
    let tokens_cut = encoded.iter().map(|e| e.truncated_tokens).sum();
    Ok(EncodedDataset {
        labels: data.examples.iter().map(|e| e.label).collect(),
        targets: data
            .examples
            .iter()
            .map(|e| e.target.row(data.labels.len()))
            .collect(),
        encoded,
        truncated,
        tokens_cut,
    })
}
