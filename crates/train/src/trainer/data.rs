//! The data of a run: the training set (in memory or streamed), dev and test
//! sets, and the teacher's probabilities for distillation.

use std::sync::mpsc::Receiver;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use zhbert_data::{
    epoch_batches, stream_batches, EncodedDataset, StreamOptions, StreamedBatch, StreamingDataset,
};
use zhbert_tokenizer::{Batch, BertTokenizer};

use super::config::{ClassWeights, TrainConfig};

/// The training examples of a run: in memory, or read from disk every epoch.
pub enum TrainSet {
    /// Tokenized up front and held in memory; batches may be length-grouped.
    Encoded(EncodedDataset),
    /// Read again from its file on every epoch, shuffled through a bounded
    /// buffer and tokenized in a background thread ahead of the loop: for
    /// files larger than memory.
    Streaming {
        /// The scanned file.
        data: Arc<StreamingDataset>,
        /// Examples held for shuffling.
        shuffle_buffer: usize,
        /// Longest input in tokens.
        max_length: usize,
        /// Truncate or head-tail (chunks are refused for streaming).
        long_text: zhbert_data::LongText,
    },
    /// Batches already padded, with their label ids, taken in this order
    /// every epoch: a run whose batches are fixed elsewhere (a reference run
    /// to reproduce step by step, as the parity tests do with PyTorch's).
    /// Example `i` (for [`TrainData::soft_targets`]) is the `i`-th row of
    /// the batches in this order.
    Batches(Vec<(Batch, Vec<usize>)>),
    /// [`TrainSet::Batches`] for multi-label and regression runs: each row's
    /// float targets (its multi-hot row, or its one value).
    TargetBatches(Vec<(Batch, Vec<Vec<f32>>)>),
}

impl From<EncodedDataset> for TrainSet {
    fn from(data: EncodedDataset) -> Self {
        Self::Encoded(data)
    }
}

/// One batch of training: the padded inputs, their label ids, and (in
/// memory) which training examples they are.
pub(crate) struct TrainBatch {
    pub(crate) batch: Batch,
    pub(crate) labels: Vec<usize>,
    pub(crate) examples: Option<Vec<usize>>,
    /// Multi-label and regression: each row's float targets.
    pub(crate) targets: Option<Vec<Vec<f32>>>,
}

/// One epoch's batches, in order.
pub(crate) enum EpochBatches<'a> {
    Encoded(&'a EncodedDataset, std::vec::IntoIter<Vec<usize>>),
    Streaming(Receiver<StreamedBatch>),
    Batches {
        batches: std::iter::Skip<std::slice::Iter<'a, (Batch, Vec<usize>)>>,
        /// Index of the next batch's first row among all the batches' rows.
        first_example: usize,
    },
    TargetBatches(std::iter::Skip<std::slice::Iter<'a, (Batch, Vec<Vec<f32>>)>>),
}

impl TrainSet {
    /// Training examples.
    pub fn len(&self) -> usize {
        match self {
            Self::Encoded(d) => d.labels.len(),
            Self::Streaming { data, .. } => data.len(),
            Self::Batches(b) => b.iter().map(|(_, labels)| labels.len()).sum(),
            Self::TargetBatches(b) => b.iter().map(|(_, targets)| targets.len()).sum(),
        }
    }

    /// Micro-batches of `batch_size` in an epoch.
    pub(crate) fn batches_per_epoch(&self, batch_size: usize) -> usize {
        match self {
            Self::Batches(b) => b.len(),
            Self::TargetBatches(b) => b.len(),
            _ => self.len().div_ceil(batch_size),
        }
    }

    /// Whether the examples are held encoded in memory (length grouping needs them so).
    pub(crate) fn is_encoded(&self) -> bool {
        matches!(self, Self::Encoded(_))
    }

    /// Whether each batch says which training examples it holds (distillation
    /// needs it to find their soft targets): all but a streamed set.
    pub(crate) fn knows_examples(&self) -> bool {
        !matches!(self, Self::Streaming { .. })
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Examples per label id.
    pub(crate) fn class_counts(&self, k: usize) -> Vec<usize> {
        match self {
            Self::Encoded(d) => count_labels(&d.labels, k),
            Self::Streaming { data, .. } => data.class_counts.clone(),
            Self::Batches(b) => count_labels(b.iter().flat_map(|(_, labels)| labels), k),
            Self::TargetBatches(b) => positives(b.iter().flat_map(|(_, t)| t), k),
        }
    }

    /// Multi-label: training examples carrying each of the `k` labels.
    pub(crate) fn positives(&self, k: usize) -> Vec<usize> {
        match self {
            Self::Encoded(d) => positives(d.targets.iter().flatten(), k),
            Self::TargetBatches(b) => positives(b.iter().flat_map(|(_, t)| t), k),
            _ => vec![0; k],
        }
    }

    /// The batches of one epoch from batch `skip` on; `seed` orders them.
    pub(crate) fn epoch(
        &self,
        tokenizer: &BertTokenizer,
        config: &TrainConfig,
        seed: u64,
        skip: usize,
    ) -> EpochBatches<'_> {
        match self {
            Self::Encoded(d) => {
                let mut batches = epoch_batches(
                    &d.lengths(),
                    config.batch_size,
                    Some(seed),
                    config.group_by_length,
                );
                batches.drain(..skip.min(batches.len()));
                EpochBatches::Encoded(d, batches.into_iter())
            }
            Self::Streaming {
                data,
                shuffle_buffer,
                max_length,
                long_text,
            } => EpochBatches::Streaming(stream_batches(
                data.clone(),
                tokenizer.clone(),
                StreamOptions {
                    batch_size: config.batch_size,
                    max_length: *max_length,
                    shuffle_buffer: *shuffle_buffer,
                    seed,
                    skip_batches: skip,
                    prefetch: 4,
                    long_text: *long_text,
                },
            )),
            Self::Batches(b) => EpochBatches::Batches {
                batches: b.iter().skip(skip),
                first_example: b[..skip.min(b.len())]
                    .iter()
                    .map(|(_, labels)| labels.len())
                    .sum(),
            },
            Self::TargetBatches(b) => EpochBatches::TargetBatches(b.iter().skip(skip)),
        }
    }
}

/// Rows whose target is 1, per output (multi-hot rows of `k`).
fn positives<'a>(rows: impl IntoIterator<Item = &'a Vec<f32>>, k: usize) -> Vec<usize> {
    let mut counts = vec![0usize; k];
    for row in rows {
        for (c, &y) in counts.iter_mut().zip(row) {
            *c += usize::from(y > 0.5);
        }
    }
    counts
}

/// Examples per label id.
fn count_labels<'a>(labels: impl IntoIterator<Item = &'a usize>, k: usize) -> Vec<usize> {
    let mut counts = vec![0usize; k];
    for &l in labels {
        counts[l] += 1;
    }
    counts
}

impl EpochBatches<'_> {
    /// The next padded batch.
    pub(crate) fn next(&mut self, tokenizer: &BertTokenizer) -> Result<TrainBatch> {
        match self {
            Self::Encoded(d, batches) => {
                let indices = batches.next().context("epoch ended early")?;
                let (batch, labels) = d.batch(tokenizer, &indices)?;
                let targets = d
                    .targets
                    .as_ref()
                    .map(|t| indices.iter().map(|&i| t[i].clone()).collect());
                Ok(TrainBatch {
                    batch,
                    labels,
                    examples: Some(indices),
                    targets,
                })
            }
            Self::Streaming(rx) => {
                let (batch, labels) = rx.recv().context(
                    "the training file ended before the epoch (changed while training?)",
                )??;
                Ok(TrainBatch {
                    batch,
                    labels,
                    examples: None,
                    targets: None,
                })
            }
            Self::Batches {
                batches,
                first_example,
            } => {
                let (batch, labels) = batches.next().context("epoch ended early")?;
                let examples = (*first_example..*first_example + labels.len()).collect();
                *first_example += labels.len();
                Ok(TrainBatch {
                    batch: batch.clone(),
                    labels: labels.clone(),
                    examples: Some(examples),
                    targets: None,
                })
            }
            Self::TargetBatches(batches) => {
                let (batch, targets) = batches.next().context("epoch ended early")?;
                Ok(TrainBatch {
                    batch: batch.clone(),
                    labels: vec![0; targets.len()],
                    examples: None,
                    targets: Some(targets.clone()),
                })
            }
        }
    }
}

/// The data of a run, already tokenized (dev and test) or streamed (train).
pub struct TrainData {
    /// Training set.
    pub train: TrainSet,
    /// Development set, for evaluation and early stopping.
    pub dev: Option<EncodedDataset>,
    /// Test set, evaluated once at the end.
    pub test: Option<EncodedDataset>,
    /// Label names.
    pub labels: Vec<String>,
    /// Per training example, the class probabilities to distil
    /// ([`crate::teacher::distillation_targets`]); needed when
    /// [`TrainConfig::distill`] is above 0.
    pub soft_targets: Option<Vec<Vec<f32>>>,
}

pub(crate) fn class_weight_values(
    config: &TrainConfig,
    train: &TrainSet,
    k: usize,
) -> Result<Option<Vec<f32>>> {
    Ok(match &config.class_weights {
        None => None,
        Some(ClassWeights::List(w)) => {
            if w.len() != k {
                bail!("{} class weights for {k} labels", w.len());
            }
            Some(w.clone())
        }
        Some(ClassWeights::Balanced) => {
            let counts = train.class_counts(k);
            let n = train.len() as f32;
            Some(
                counts
                    .iter()
                    .map(|&c| {
                        if c == 0 {
                            0.0
                        } else {
                            n / (k as f32 * c as f32)
                        }
                    })
                    .collect(),
            )
        }
    })
}
