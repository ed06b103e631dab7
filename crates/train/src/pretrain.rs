//! Masked-LM pretraining on the training texts themselves ("self-pretraining"),
//! for models that start from random weights.
//!
//! A BERT trained from scratch on a few thousand labelled reviews learns little
//! more than a bag of characters; predicting masked characters of the same texts
//! first teaches it how characters combine, without any label and without text
//! from outside the training set. The loop is HF's `run_mlm.py` in small: HF's
//! masking (`zhbert_data::mask_batch`), AdamW with HF's decay groups, linear
//! warmup and decay, global-norm clipping, length-grouped batches.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Int, Tensor};
use serde::{Deserialize, Serialize};
use zhbert_data::{epoch_batches, mask_batch, rng, MaskingOptions};
use zhbert_model::{cross_entropy, BertForMaskedLM, CrossEntropyOptions};
use zhbert_tokenizer::{BertTokenizer, Encoded, Padding};

use crate::inference::input_of;
use crate::optim::{AdamW, AdamWConfig, GradAccumulator, LrScheduler};
use crate::trainer::{progress_bar, MetricsLog, Warmup};

/// How masked-LM pretraining runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainConfig {
    /// Passes over the texts (0: no pretraining).
    pub epochs: usize,
    /// Sequences per step.
    pub batch_size: usize,
    /// Longest input in tokens.
    pub max_length: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Warmup steps or ratio.
    pub warmup: Warmup,
    /// Decoupled weight decay (not on biases and LayerNorm weights).
    pub weight_decay: f64,
    /// Fraction of tokens to predict.
    pub mask_probability: f64,
    /// Clip the global gradient norm to this.
    pub max_grad_norm: Option<f64>,
    /// Seed of batch order and masks.
    pub seed: u64,
    /// Log every N steps.
    pub log_every: usize,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        Self {
            epochs: 0,
            batch_size: 64,
            max_length: 128,
            lr: 5e-4,
            warmup: Warmup::Ratio(0.06),
            weight_decay: 0.01,
            mask_probability: 0.15,
            max_grad_norm: Some(1.0),
            seed: 42,
            log_every: 50,
        }
    }
}

/// What pretraining did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PretrainSummary {
    /// Optimizer steps.
    pub steps: usize,
    /// Mean MLM loss of each epoch.
    pub epoch_losses: Vec<f64>,
    /// Sequences per second.
    pub sequences_per_second: f64,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// Pretrains `model` on `texts` (already encoded, truncated to
/// `config.max_length`), appending one JSON line per logged step to `log_path`.
pub fn pretrain_mlm<AB: AutodiffBackend>(
    mut model: BertForMaskedLM<AB>,
    tokenizer: &BertTokenizer,
    texts: &[Encoded],
    config: &PretrainConfig,
    log_path: &Path,
    device: &AB::Device,
) -> Result<(BertForMaskedLM<AB>, PretrainSummary)> {
    if config.batch_size == 0 || config.epochs == 0 || texts.is_empty() {
        bail!("pretraining needs texts, a batch size and epochs of at least 1");
    }
    let Some(mask_id) = tokenizer.token_to_id("[MASK]") else {
        bail!("the vocabulary has no [MASK] token: masked-LM pretraining needs one");
    };
    let masking = MaskingOptions {
        probability: config.mask_probability,
        mask_id,
        vocab_size: tokenizer.vocab_size() as u32,
        special_ids: vec![tokenizer.cls_id(), tokenizer.sep_id(), tokenizer.pad_id()],
    };
    let lengths: Vec<usize> = texts.iter().map(|e| e.input_ids.len()).collect();
    let steps_per_epoch = lengths.len().div_ceil(config.batch_size);
    let total_steps = config.epochs * steps_per_epoch;
    let warmup_steps = config.warmup.steps(total_steps);
    let mut opt = AdamW::new::<AB, _>(
        AdamWConfig {
            lr: config.lr,
            weight_decay: config.weight_decay,
            ..Default::default()
        },
        &model,
    );
    let mut log = MetricsLog::open(log_path, 0)?;
    let bar = progress_bar(total_steps, 0);
    let mut masks = rng(config.seed ^ 0x6d6c_6d00);
    let mut grads = GradAccumulator::<AB::InnerBackend>::default();
    let started = Instant::now();
    let (mut step, mut sequences) = (0usize, 0usize);
    let mut epoch_losses = Vec::with_capacity(config.epochs);
    tracing::info!(
        "masked-LM pretraining: {} texts, {total_steps} steps ({steps_per_epoch} per epoch), batch {}",
        texts.len(),
        config.batch_size
    );
    for epoch in 0..config.epochs {
        // Nothing here depends on the label, so length grouping is safe and saves
        // the padding.
        let batches = epoch_batches(
            &lengths,
            config.batch_size,
            Some(config.seed.wrapping_add(epoch as u64)),
            true,
        );
        let mut epoch_loss = 0.0;
        for indices in &batches {
            AB::seed(
                device,
                config
                    .seed
                    .wrapping_mul(1_000_003)
                    .wrapping_add(step as u64),
            );
            let rows: Vec<Encoded> = indices.iter().map(|&i| texts[i].clone()).collect();
            let masked = mask_batch(
                &tokenizer.pad(&rows, Padding::Longest)?,
                &masking,
                &mut masks,
            );
            let positions: Vec<i64> = masked.positions.iter().map(|&p| p as i64).collect();
            let targets: Vec<i64> = masked.targets.iter().map(|&t| t as i64).collect();
            let logits = model.forward_at(
                input_of::<AB>(&masked.batch, device),
                Tensor::<AB, 1, Int>::from_data(positions.as_slice(), device),
            );
            let loss = cross_entropy(
                logits,
                Tensor::<AB, 1, Int>::from_data(targets.as_slice(), device),
                &CrossEntropyOptions::default(),
                None,
            );
            let loss_value: f64 = loss.clone().into_scalar().elem();
            if !loss_value.is_finite() {
                bail!(
                    "pretraining loss is {loss_value} at step {}: lower the pretraining learning rate",
                    step + 1
                );
            }
            grads.add::<AB, _>(&model, &loss.backward());
            let lr = LrScheduler::Linear.lr(config.lr, step, warmup_steps, total_steps);
            let grad_norm = grads.clip_global_norm(config.max_grad_norm);
            model = opt.step::<AB, _>(model, lr, &mut grads);
            step += 1;
            sequences += indices.len();
            epoch_loss += loss_value;
            if step % config.log_every.max(1) == 0 || step == total_steps {
                let speed = sequences as f64 / started.elapsed().as_secs_f64().max(1e-9);
                log.write(serde_json::json!({
                    "step": step, "epoch": step as f64 / steps_per_epoch as f64,
                    "mlm_loss": loss_value, "lr": lr, "grad_norm": grad_norm,
                    "sequences_per_second": speed,
                    "elapsed_seconds": started.elapsed().as_secs_f64(),
                }))?;
                if bar.is_none() {
                    tracing::info!("pretraining step {step}/{total_steps} mlm loss {loss_value:.4} lr {lr:.2e} {speed:.1} seq/s");
                }
            }
            if let Some(bar) = &bar {
                bar.set_position(step as u64);
                bar.set_message(format!("mlm loss {loss_value:.4} lr {lr:.2e}"));
            }
        }
        let mean = epoch_loss / batches.len() as f64;
        epoch_losses.push(mean);
        let line = format!("pretraining epoch {}: mean mlm loss {mean:.4}", epoch + 1);
        match &bar {
            Some(bar) => bar.println(line),
            None => tracing::info!("{line}"),
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok((
        model,
        PretrainSummary {
            steps: step,
            epoch_losses,
            sequences_per_second: sequences as f64 / seconds.max(1e-9),
            seconds,
        },
    ))
}
