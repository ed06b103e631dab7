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
    let mut step = MlmSteps::<AB>::new(&model, tokenizer, texts.len(), config)?;
    let mut log = MetricsLog::open(log_path, 0)?;
    let bar = progress_bar(step.total_steps, 0);
    let lengths: Vec<usize> = texts.iter().map(|e| e.input_ids.len()).collect();
    let started = Instant::now();
    let mut sequences = 0usize;
    let mut epoch_losses = Vec::with_capacity(config.epochs);
    for epoch in 0..config.epochs {
        // Nothing here depends on the label, so length grouping is safe and saves
        // the padding.
        let seed = config.seed.wrapping_add(epoch as u64);
        let batches = epoch_batches(&lengths, config.batch_size, Some(seed), true);
        let mut epoch_loss = 0.0;
        for indices in &batches {
            let rows: Vec<Encoded> = indices.iter().map(|&i| texts[i].clone()).collect();
            let (next, record) =
                step.step(model, &tokenizer.pad(&rows, Padding::Longest)?, device)?;
            model = next;
            sequences += indices.len();
            epoch_loss += record.loss;
            let speed = sequences as f64 / started.elapsed().as_secs_f64().max(1e-9);
            if record.step % config.log_every.max(1) == 0 || record.step == step.total_steps {
                log.write(serde_json::json!({
                    "step": record.step, "epoch": record.step as f64 / step.steps_per_epoch as f64,
                    "mlm_loss": record.loss, "lr": record.lr, "grad_norm": record.grad_norm,
                    "sequences_per_second": speed,
                    "elapsed_seconds": started.elapsed().as_secs_f64(),
                }))?;
                if bar.is_none() {
                    tracing::info!(
                        "pretraining step {}/{} mlm loss {:.4} lr {:.2e} {speed:.1} seq/s",
                        record.step,
                        step.total_steps,
                        record.loss,
                        record.lr
                    );
                }
            }
            if let Some(bar) = &bar {
                bar.set_position(record.step as u64);
                bar.set_message(format!("mlm loss {:.4} lr {:.2e}", record.loss, record.lr));
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
    let summary = PretrainSummary {
        steps: step.done,
        epoch_losses,
        sequences_per_second: sequences as f64 / seconds.max(1e-9),
        seconds,
    };
    Ok((model, summary))
}

/// One masked-LM step's figures.
struct MlmRecord {
    step: usize,
    loss: f64,
    lr: f64,
    grad_norm: f64,
}

/// The optimizer steps of masked-LM pretraining: masking, forward, loss,
/// backward, clipping, AdamW on the linear schedule.
struct MlmSteps<AB: AutodiffBackend> {
    masking: MaskingOptions,
    masks: rand_chacha::ChaCha8Rng,
    opt: AdamW<AB::InnerBackend>,
    grads: GradAccumulator<AB::InnerBackend>,
    config: PretrainConfig,
    steps_per_epoch: usize,
    total_steps: usize,
    warmup_steps: usize,
    done: usize,
}

impl<AB: AutodiffBackend> MlmSteps<AB> {
    fn new(
        model: &BertForMaskedLM<AB>,
        tokenizer: &BertTokenizer,
        texts: usize,
        config: &PretrainConfig,
    ) -> Result<Self> {
        let Some(mask_id) = tokenizer.token_to_id("[MASK]") else {
            bail!("the vocabulary has no [MASK] token: masked-LM pretraining needs one");
        };
        let masking = MaskingOptions {
            probability: config.mask_probability,
            mask_id,
            vocab_size: tokenizer.vocab_size() as u32,
            special_ids: vec![tokenizer.cls_id(), tokenizer.sep_id(), tokenizer.pad_id()],
        };
        let steps_per_epoch = texts.div_ceil(config.batch_size);
        let total_steps = config.epochs * steps_per_epoch;
        let adamw = AdamWConfig {
            lr: config.lr,
            weight_decay: config.weight_decay,
            ..Default::default()
        };
        tracing::info!(
            "masked-LM pretraining: {texts} texts, {total_steps} steps ({steps_per_epoch} per epoch), batch {}",
            config.batch_size
        );
        Ok(Self {
            masking,
            masks: rng(config.seed ^ 0x6d6c_6d00),
            opt: AdamW::new::<AB, _>(adamw, model),
            grads: GradAccumulator::default(),
            config: config.clone(),
            steps_per_epoch,
            total_steps,
            warmup_steps: config.warmup.steps(total_steps),
            done: 0,
        })
    }

    /// One optimizer step on a padded batch.
    fn step(
        &mut self,
        model: BertForMaskedLM<AB>,
        batch: &zhbert_tokenizer::Batch,
        device: &AB::Device,
    ) -> Result<(BertForMaskedLM<AB>, MlmRecord)> {
        let config = &self.config;
        AB::seed(
            device,
            config
                .seed
                .wrapping_mul(1_000_003)
                .wrapping_add(self.done as u64),
        );
        let masked = mask_batch(batch, &self.masking, &mut self.masks);
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
                self.done + 1
            );
        }
        self.grads.add::<AB, _>(&model, &loss.backward());
        let lr = LrScheduler::Linear.lr(config.lr, self.done, self.warmup_steps, self.total_steps);
        let grad_norm = self.grads.clip_global_norm(config.max_grad_norm);
        let model = self.opt.step::<AB, _>(model, lr, &mut self.grads);
        self.done += 1;
        let record = MlmRecord {
            step: self.done,
            loss: loss_value,
            lr,
            grad_norm,
        };
        Ok((model, record))
    }
}

/// Masked-LM pretraining of a fresh preset model on its own training texts,
/// before it is fine-tuned ([`crate::FineTune`] with a preset and
/// `pretrain_epochs`). The pretrained `BertForMaskedLM` is kept as an HF model
/// folder in `<output>/pretrained`, which a resumed run reuses; when
/// fine-tuning checkpoints exist, they hold the weights and this does nothing.
pub struct SelfPretraining<'a> {
    /// The model's configuration.
    pub model_config: &'a zhbert_model::BertConfig,
    /// The preset's tokenizer.
    pub tokenizer: &'a BertTokenizer,
    /// The training texts (labels unused).
    pub train: &'a zhbert_data::Dataset,
    /// How to pretrain.
    pub config: &'a PretrainConfig,
    /// The run's output folder.
    pub output: &'a Path,
    /// Whether the run resumes.
    pub resume: bool,
}

impl SelfPretraining<'_> {
    /// Pretrains (or reloads the pretrained encoder of a resumed run) and puts
    /// the encoder into `model`; what pretraining did, when it ran.
    pub fn run<AB: AutodiffBackend>(
        &self,
        model: &mut zhbert_model::BertForSequenceClassification<AB>,
        device: &AB::Device,
    ) -> Result<Option<PretrainSummary>> {
        use anyhow::Context;
        if !self.resume {
            crate::trainer::check_fresh_output(self.output)?;
        } else if !crate::trainer::list_checkpoints(self.output).is_empty() {
            return Ok(None);
        }
        std::fs::create_dir_all(self.output)
            .with_context(|| format!("creating {}", self.output.display()))?;
        let dir = self.output.join("pretrained");
        let (mlm, summary) = if self.resume && dir.join("model.safetensors").is_file() {
            let (mlm, _, report) = zhbert_model::load_masked_lm::<AB>(&dir, device)?;
            tracing::info!(
                "resume: pretrained encoder from {} ({report})",
                dir.display()
            );
            (mlm, None)
        } else {
            let (mlm, summary) = self.pretrain::<AB>(&dir, device)?;
            (mlm, Some(summary))
        };
        model.bert.embeddings = mlm.bert.embeddings;
        model.bert.encoder = mlm.bert.encoder;
        // burn draws a fresh parameter's values when it is first read. Read the new
        // pooler and classifier now, from a known seed, so that a run resumed after
        // pretraining fine-tunes from the same head as a run that never stopped.
        AB::seed(device, self.config.seed.wrapping_add(1));
        if let Some(pooler) = &model.bert.pooler {
            pooler.dense.weight.val();
        }
        model.classifier.weight.val();
        Ok(summary)
    }

    /// Pretrains a fresh masked LM and saves it into `dir`.
    fn pretrain<AB: AutodiffBackend>(
        &self,
        dir: &Path,
        device: &AB::Device,
    ) -> Result<(BertForMaskedLM<AB>, PretrainSummary)> {
        let texts = crate::fine_tune::encode_logged(
            "pretraining",
            self.train,
            self.tokenizer,
            self.config.max_length,
        )?;
        let (mlm, summary) = pretrain_mlm::<AB>(
            self.model_config.init_masked_lm::<AB>(device),
            self.tokenizer,
            &texts.encoded,
            self.config,
            &self.output.join("pretrain_metrics.jsonl"),
            device,
        )?;
        let losses: Vec<f64> = summary
            .epoch_losses
            .iter()
            .map(|l| (l * 1e4).round() / 1e4)
            .collect();
        tracing::info!(
            "pretrained {} steps in {:.0}s ({:.1} sequences/s), mlm loss by epoch {losses:?}",
            summary.steps,
            summary.seconds,
            summary.sequences_per_second,
        );
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
        zhbert_model::save_safetensors(&mlm, &dir.join("model.safetensors"))?;
        self.model_config
            .save(dir.join("config.json"), "BertForMaskedLM")?;
        self.tokenizer.save(dir)?;
        Ok((mlm, summary))
    }
}
