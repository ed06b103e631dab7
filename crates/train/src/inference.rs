//! Batched inference with length grouping: texts of similar length share a batch,
//! so little compute goes to padding; results come back in input order.

use burn::tensor::backend::Backend;
use rayon::prelude::*;
use zhbert_data::{EncodedDataset, LongTextOptions};
use zhbert_model::{BertConfig, BertForSequenceClassification, BertInput, ProblemType};

use crate::metrics::EvalMetrics;
use zhbert_tokenizer::{Batch, BertTokenizer, Encoded, Padding};

/// How inference batches and truncates.
#[derive(Debug, Clone)]
pub struct InferenceOptions {
    /// Sequences per forward pass.
    pub batch_size: usize,
    /// Longest input in tokens (special tokens included); longer texts are truncated.
    pub max_length: usize,
    /// Softmax for single-label, sigmoid for multi-label, raw for regression.
    pub problem_type: ProblemType,
    /// Texts longer than `max_length`: truncated, head and tail, or windows
    /// whose logits are pooled into the text's ([`zhbert_data::long_text`]).
    pub long_text: LongTextOptions,
}

impl InferenceOptions {
    /// Batch 32 and the longest input the model's position embeddings allow (at most 512).
    pub fn for_config(config: &BertConfig) -> Self {
        Self {
            batch_size: 32,
            max_length: config.max_position_embeddings.min(512),
            problem_type: config.problem_type(),
            long_text: LongTextOptions::default(),
        }
    }
}

/// The output for one input.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Raw scores of the head.
    pub logits: Vec<f32>,
    /// Softmax (single-label) or sigmoid (multi-label) of the logits.
    pub probs: Vec<f32>,
    /// Id of the most probable label.
    pub label: usize,
    /// Tokens cut by truncation (head-tail: from the middle).
    pub truncated_tokens: usize,
    /// Windows the input was split into and whose logits were pooled
    /// (1 unless [`zhbert_data::LongText::Chunks`] split it).
    pub windows: usize,
}

/// Classifies texts (or text pairs) and returns one prediction per input, in
/// order; a text split into windows gets its windows' pooled logits.
pub fn classify<B: Backend>(
    model: &BertForSequenceClassification<B>,
    tokenizer: &BertTokenizer,
    texts: &[(String, Option<String>)],
    options: &InferenceOptions,
    device: &B::Device,
) -> anyhow::Result<Vec<Prediction>> {
    let long = &options.long_text;
    let documents: Vec<Vec<Encoded>> = texts
        .par_iter()
        .enumerate()
        .map(|(i, (a, b))| {
            long.encode(tokenizer, a, b.as_deref(), options.max_length)
                .map_err(|e| anyhow::anyhow!("input {i} (counting from 0): {e}"))
        })
        .collect::<Result<_, _>>()?;
    let rows: Vec<Encoded> = documents.iter().flatten().cloned().collect();
    let row_logits = logits_of(model, tokenizer, &rows, options.batch_size, device)?;
    let mut start = 0;
    let logits: Vec<Vec<f32>> = documents
        .iter()
        .map(|windows| {
            let mine = &row_logits[start..start + windows.len()];
            start += windows.len();
            match mine {
                [one] => one.clone(),
                _ => zhbert_data::long_text::pool_rows(mine, long.pool),
            }
        })
        .collect();
    Ok(logits
        .into_iter()
        .zip(&documents)
        .map(|(logits, windows)| {
            let probs = match options.problem_type {
                ProblemType::SingleLabelClassification => softmax_row(&logits),
                ProblemType::MultiLabelClassification => {
                    logits.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect()
                }
                ProblemType::Regression => logits.clone(),
            };
            let label = argmax(&probs);
            Prediction {
                logits,
                probs,
                label,
                truncated_tokens: windows.iter().map(|w| w.truncated_tokens).sum(),
                windows: windows.len(),
            }
        })
        .collect())
}

/// The model input of a padded batch.
pub fn input_of<B: Backend>(batch: &Batch, device: &B::Device) -> BertInput<B> {
    BertInput::from_ids(
        &batch.input_ids,
        &batch.token_type_ids,
        &batch.attention_mask,
        batch.batch_size,
        batch.seq_len,
        device,
    )
}

/// Index of the largest value (the first on ties).
pub fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &x)| {
            if x > best.1 {
                (i, x)
            } else {
                best
            }
        })
        .0
}

/// Softmax of one row, in f64 for a stable sum.
pub fn softmax_row(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exp: Vec<f64> = logits.iter().map(|&x| (x as f64 - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|e| (e / sum) as f32).collect()
}

/// The logits of already encoded inputs, batched by length (longest first, so
/// the first batch shows the peak memory), returned in input order.
pub fn logits_of<B: Backend>(
    model: &BertForSequenceClassification<B>,
    tokenizer: &BertTokenizer,
    encoded: &[Encoded],
    batch_size: usize,
    device: &B::Device,
) -> anyhow::Result<Vec<Vec<f32>>> {
    anyhow::ensure!(batch_size > 0, "batch size must be at least 1");
    let mut order: Vec<usize> = (0..encoded.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(encoded[i].input_ids.len()));
    let mut out: Vec<Vec<f32>> = vec![Vec::new(); encoded.len()];
    for chunk in order.chunks(batch_size) {
        let rows: Vec<Encoded> = chunk.iter().map(|&i| encoded[i].clone()).collect();
        let batch = tokenizer.pad(&rows, Padding::Longest)?;
        let logits = model.forward(input_of(&batch, device));
        let [_, classes] = logits.dims();
        let values: Vec<f32> = logits
            .into_data()
            .convert::<f32>()
            .to_vec()
            .map_err(|e| anyhow::anyhow!("reading logits: {e:?}"))?;
        for (row, &i) in chunk.iter().enumerate() {
            out[i] = values[row * classes..(row + 1) * classes].to_vec();
        }
    }
    Ok(out)
}

/// Evaluates a model on an encoded dataset.
pub fn evaluate<B: Backend>(
    model: &BertForSequenceClassification<B>,
    tokenizer: &BertTokenizer,
    data: &EncodedDataset,
    labels: &[String],
    batch_size: usize,
    device: &B::Device,
) -> anyhow::Result<EvalMetrics> {
    let logits = document_logits(model, tokenizer, data, batch_size, device)?;
    let truths = data.document_labels();
    let mut loss = 0.0;
    let mut predicted = Vec::with_capacity(logits.len());
    for (row, &truth) in logits.iter().zip(&truths) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = max
            + row
                .iter()
                .map(|&x| (x as f64 - max).exp())
                .sum::<f64>()
                .ln();
        loss += lse - row[truth] as f64;
        predicted.push(argmax(row));
    }
    Ok(EvalMetrics::compute(
        labels,
        &truths,
        &predicted,
        loss / logits.len().max(1) as f64,
    ))
}

/// Evaluates a model on an encoded dataset as `task` says: [`evaluate`] for
/// single-label, the multi-label or regression metrics otherwise
/// ([`crate::tasks`]).
pub fn evaluate_task<B: Backend>(
    model: &BertForSequenceClassification<B>,
    tokenizer: &BertTokenizer,
    data: &EncodedDataset,
    labels: &[String],
    task: &crate::tasks::EvalTask,
    batch_size: usize,
    device: &B::Device,
) -> anyhow::Result<EvalMetrics> {
    if task.problem_type == ProblemType::SingleLabelClassification {
        return evaluate(model, tokenizer, data, labels, batch_size, device);
    }
    let logits = document_logits(model, tokenizer, data, batch_size, device)?;
    crate::tasks::score_logits(labels, data, &logits, task)
}

/// The logits of each document of `data` (its windows' pooled when it was
/// split), in order.
pub fn document_logits<B: Backend>(
    model: &BertForSequenceClassification<B>,
    tokenizer: &BertTokenizer,
    data: &EncodedDataset,
    batch_size: usize,
    device: &B::Device,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let rows = logits_of(model, tokenizer, &data.encoded, batch_size, device)?;
    Ok(data.pool_logits(&rows))
}
