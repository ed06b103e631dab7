//! Batched inference with length grouping: texts of similar length share a batch,
//! so little compute goes to padding; results come back in input order.

use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::backend::Backend;
use rayon::prelude::*;
use zhbert_model::{BertConfig, BertForSequenceClassification, BertInput, ProblemType};
use zhbert_tokenizer::{BertTokenizer, Encoded, Padding};

/// How inference batches and truncates.
#[derive(Debug, Clone)]
pub struct InferenceOptions {
    /// Sequences per forward pass.
    pub batch_size: usize,
    /// Longest input in tokens (special tokens included); longer texts are truncated.
    pub max_length: usize,
    /// Softmax for single-label, sigmoid for multi-label, raw for regression.
    pub problem_type: ProblemType,
}

impl InferenceOptions {
    /// Batch 32 and the longest input the model's position embeddings allow (at most 512).
    pub fn for_config(config: &BertConfig) -> Self {
        Self {
            batch_size: 32,
            max_length: config.max_position_embeddings.min(512),
            problem_type: config.problem_type(),
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
    /// Tokens cut by truncation.
    pub truncated_tokens: usize,
}

/// Classifies texts (or text pairs) and returns one prediction per input, in order.
pub fn classify<B: Backend>(
    model: &BertForSequenceClassification<B>,
    tokenizer: &BertTokenizer,
    texts: &[(String, Option<String>)],
    options: &InferenceOptions,
    device: &B::Device,
) -> anyhow::Result<Vec<Prediction>> {
    anyhow::ensure!(options.batch_size > 0, "batch size must be at least 1");
    let encoded: Vec<Encoded> = texts
        .par_iter()
        .map(|(a, b)| tokenizer.encode(a, b.as_deref(), Some(options.max_length)))
        .collect::<Result<_, _>>()?;
    // Longest first: the first batch shows the peak memory at once.
    let mut order: Vec<usize> = (0..encoded.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(encoded[i].input_ids.len()));
    let mut out: Vec<Option<Prediction>> = vec![None; encoded.len()];
    for chunk in order.chunks(options.batch_size) {
        let rows: Vec<Encoded> = chunk.iter().map(|&i| encoded[i].clone()).collect();
        let batch = tokenizer.pad(&rows, Padding::Longest)?;
        let input = BertInput::<B>::from_ids(
            &batch.input_ids,
            &batch.token_type_ids,
            &batch.attention_mask,
            batch.batch_size,
            batch.seq_len,
            device,
        );
        let logits = model.forward(input);
        let [n, classes] = logits.dims();
        let probs = match options.problem_type {
            ProblemType::SingleLabelClassification => softmax(logits.clone(), 1),
            ProblemType::MultiLabelClassification => sigmoid(logits.clone()),
            ProblemType::Regression => logits.clone(),
        };
        let logits: Vec<f32> = logits.into_data().convert::<f32>().to_vec()?;
        let probs: Vec<f32> = probs.into_data().convert::<f32>().to_vec()?;
        for (row, &i) in chunk.iter().enumerate().take(n) {
            let p = probs[row * classes..(row + 1) * classes].to_vec();
            let label = p
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(k, _)| k);
            out[i] = Some(Prediction {
                logits: logits[row * classes..(row + 1) * classes].to_vec(),
                probs: p,
                label,
                truncated_tokens: rows[row].truncated_tokens,
            });
        }
    }
    Ok(out
        .into_iter()
        .map(|p| p.expect("every row predicted"))
        .collect())
}
