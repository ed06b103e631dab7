//! The fine-tuning loop: what HF `Trainer` does, on burn.
//!
//! Deterministic by construction: the data order of an epoch comes from
//! `seed + epoch`, and the dropout generator is reseeded from `seed` and the step
//! before every optimizer step. A checkpoint therefore only needs the weights,
//! the AdamW moments and the position (step, epoch, batch) to continue exactly.
//! (burn's CPU backends keep one random generator per process, so this holds for
//! one training per process at a time.)

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor};
use serde::{Deserialize, Serialize};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use zhbert_data::{
    epoch_batches, stream_batches, EncodedDataset, StreamOptions, StreamedBatch, StreamingDataset,
};
use zhbert_model::{
    autocast, classification_loss, save_classifier, BertConfig, BertForSequenceClassification,
    CrossEntropyOptions, Labels, Precision,
};
use zhbert_tokenizer::{Batch, BertTokenizer};

use crate::inference::{argmax, input_of, logits_of};
use crate::metrics::{higher_is_better, EvalMetrics};
use crate::optim::{
    param_paths, read_f32_tensors, write_f32_tensors, AdamW, AdamWConfig, GradAccumulator,
    LossScaler, LrScheduler,
};
use crate::parallel::Replica;

/// Warmup of the learning rate: a number of optimizer steps or a fraction of all.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Warmup {
    /// Optimizer steps.
    Steps(usize),
    /// Fraction of the total optimizer steps.
    Ratio(f64),
}

impl Warmup {
    /// `500` is steps, `0.1` a ratio.
    pub fn parse(s: &str) -> Result<Self> {
        if let Ok(n) = s.parse::<usize>() {
            return Ok(Self::Steps(n));
        }
        match s.parse::<f64>() {
            Ok(r) if (0.0..1.0).contains(&r) => Ok(Self::Ratio(r)),
            _ => bail!("--warmup {s:?}: a step count (500) or a ratio in [0, 1) (0.1)"),
        }
    }

    pub(crate) fn steps(self, total: usize) -> usize {
        match self {
            Self::Steps(n) => n,
            Self::Ratio(r) => (r * total as f64).ceil() as usize,
        }
    }
}

/// Per-class loss weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ClassWeights {
    /// `"auto"`: n / (k * count), scikit-learn's `balanced`.
    Auto(String),
    /// One weight per label, in label order.
    List(Vec<f32>),
}

/// Everything a training run is configured by; readable from TOML (flags win).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Stop after this many optimizer steps (overrides `epochs` when smaller).
    pub max_steps: Option<usize>,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Longest input in tokens; longer texts are truncated.
    pub max_length: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Decoupled weight decay (not on biases and LayerNorm weights).
    pub weight_decay: f64,
    /// AdamW's `beta1` (HF's `adam_beta1`).
    pub adam_beta1: f64,
    /// AdamW's `beta2` (HF's `adam_beta2`).
    pub adam_beta2: f64,
    /// AdamW's `eps` (HF's `adam_epsilon`).
    pub adam_epsilon: f64,
    /// Warmup steps or ratio.
    pub warmup: Warmup,
    /// How the learning rate moves after warmup (HF's `lr_scheduler_type`).
    pub lr_scheduler: LrScheduler,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Clip the global gradient norm to this (`None`: no clipping).
    pub max_grad_norm: Option<f64>,
    /// Seed of data order, dropout and fresh weights.
    pub seed: u64,
    /// Evaluate every N optimizer steps (`None`: at the end of each epoch).
    pub eval_every: Option<usize>,
    /// Checkpoint every N optimizer steps (`None`: at each evaluation).
    pub save_every: Option<usize>,
    /// Checkpoints kept besides the best.
    pub keep_checkpoints: usize,
    /// Stop after this many evaluations without improvement.
    pub patience: Option<usize>,
    /// Stop once the dev `metric` reaches this value (at most it, for loss):
    /// time-to-accuracy runs.
    pub stop_at: Option<f64>,
    /// Metric that chooses the best checkpoint: accuracy, macro_f1, micro_f1 or loss.
    pub metric: String,
    /// Class weights of the loss.
    pub class_weights: Option<ClassWeights>,
    /// Label smoothing of the loss.
    pub label_smoothing: f32,
    /// Batch texts of similar length together (HF `group_by_length`).
    pub group_by_length: bool,
    /// Log every N optimizer steps when not on a terminal.
    pub log_every: usize,
    /// The float type of matmuls and attention (fp32 master weights and
    /// optimizer state whatever it is); f16 scales the loss dynamically.
    pub precision: Precision,
    /// f16's first loss scale (`None`: [`LossScaler::INIT`], 2^16).
    pub initial_loss_scale: Option<f64>,
    /// Weight of distillation from a character n-gram teacher
    /// ([`crate::teacher`]): the loss is `(1 - distill) · CE(labels) +
    /// distill · CE(teacher's probabilities)`, the teacher's probabilities being
    /// [`TrainData::soft_targets`]. 0: labels only.
    pub distill: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 3,
            max_steps: None,
            batch_size: 32,
            max_length: 128,
            lr: 5e-5,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            warmup: Warmup::Steps(0),
            lr_scheduler: LrScheduler::Linear,
            grad_accum: 1,
            max_grad_norm: Some(1.0),
            seed: 42,
            eval_every: None,
            save_every: None,
            keep_checkpoints: 2,
            patience: None,
            stop_at: None,
            metric: "accuracy".into(),
            class_weights: None,
            label_smoothing: 0.0,
            group_by_length: false,
            log_every: 50,
            precision: Precision::Fp32,
            initial_loss_scale: None,
            distill: 0.0,
        }
    }
}

impl TrainConfig {
    /// Checks values that would otherwise fail deep in the loop.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.grad_accum == 0 || self.epochs == 0 {
            bail!("batch size, grad accumulation and epochs must be at least 1");
        }
        if self.max_length < 3 {
            bail!("max length {} leaves no room for text", self.max_length);
        }
        if !["accuracy", "macro_f1", "micro_f1", "loss"].contains(&self.metric.as_str()) {
            bail!(
                "metric {:?}: accuracy, macro_f1, micro_f1 or loss",
                self.metric
            );
        }
        for (name, beta) in [("beta1", self.adam_beta1), ("beta2", self.adam_beta2)] {
            if !(0.0..1.0).contains(&beta) {
                bail!("adam {name} {beta}: in [0, 1)");
            }
        }
        if !(self.adam_epsilon.is_finite() && self.adam_epsilon >= 0.0) {
            bail!("adam epsilon {}: a number of at least 0", self.adam_epsilon);
        }
        if !(0.0..=1.0).contains(&self.distill) {
            bail!("distillation weight {}: between 0 and 1", self.distill);
        }
        if let Some(scale) = self.initial_loss_scale {
            if !(scale.is_finite() && scale > 0.0) {
                bail!("initial loss scale {scale}: a positive number");
            }
        }
        if let Some(ClassWeights::Auto(s)) = &self.class_weights {
            if s != "auto" {
                bail!("class weights {s:?}: \"auto\" or a list of numbers");
            }
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            bail!("label smoothing must be in [0, 1)");
        }
        Ok(())
    }

    /// The optimizer these settings train with: AdamW at the peak `lr`.
    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            lr: self.lr,
            beta1: self.adam_beta1,
            beta2: self.adam_beta2,
            eps: self.adam_epsilon,
            weight_decay: self.weight_decay,
        }
    }
}

/// Where a run stands; saved in every checkpoint as `trainer_state.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub global_step: usize,
    /// Current epoch (0-based).
    pub epoch: usize,
    /// Next micro-batch of the epoch.
    pub batch_in_epoch: usize,
    /// Best value of the chosen metric so far.
    pub best_metric: Option<f64>,
    /// Step of the best checkpoint.
    pub best_step: Option<usize>,
    /// Evaluations since the best.
    pub evals_without_improvement: usize,
    /// The configuration the run was started with.
    pub config: Option<TrainConfig>,
    /// f16 training's loss scale.
    #[serde(default)]
    pub loss_scaler: Option<LossScaler>,
    /// Steps skipped because their f16 gradients overflowed.
    #[serde(default)]
    pub skipped_steps: usize,
}

/// What a finished run reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Training examples.
    pub train_examples: usize,
    /// Optimizer steps done.
    pub steps: usize,
    /// Whether early stopping ended the run.
    pub early_stopped: bool,
    /// The step whose weights were kept.
    pub best_step: Option<usize>,
    /// Dev metrics of the kept weights.
    pub dev: Option<EvalMetrics>,
    /// Test metrics of the kept weights.
    pub test: Option<EvalMetrics>,
    /// Training throughput, sequences per second.
    pub train_sequences_per_second: f64,
    /// Wall time of the training loop, seconds.
    pub train_seconds: f64,
}

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
    },
}

impl From<EncodedDataset> for TrainSet {
    fn from(data: EncodedDataset) -> Self {
        Self::Encoded(data)
    }
}

/// One batch of training: the padded inputs, their label ids, and (in
/// memory) which training examples they are.
struct TrainBatch {
    batch: Batch,
    labels: Vec<usize>,
    examples: Option<Vec<usize>>,
}

/// One epoch's batches, in order.
enum EpochBatches<'a> {
    Encoded(&'a EncodedDataset, std::vec::IntoIter<Vec<usize>>),
    Streaming(Receiver<StreamedBatch>),
}

impl TrainSet {
    /// Training examples.
    pub fn len(&self) -> usize {
        match self {
            Self::Encoded(d) => d.labels.len(),
            Self::Streaming { data, .. } => data.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Examples per label id.
    fn class_counts(&self, k: usize) -> Vec<usize> {
        match self {
            Self::Encoded(d) => {
                let mut counts = vec![0usize; k];
                for &l in &d.labels {
                    counts[l] += 1;
                }
                counts
            }
            Self::Streaming { data, .. } => data.class_counts.clone(),
        }
    }

    /// The batches of one epoch from batch `skip` on; `seed` orders them.
    fn epoch(
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
                },
            )),
        }
    }
}

impl EpochBatches<'_> {
    /// The next padded batch.
    fn next(&mut self, tokenizer: &BertTokenizer) -> Result<TrainBatch> {
        match self {
            Self::Encoded(d, batches) => {
                let indices = batches.next().context("epoch ended early")?;
                let (batch, labels) = d.batch(tokenizer, &indices)?;
                Ok(TrainBatch {
                    batch,
                    labels,
                    examples: Some(indices),
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

/// Evaluates a model on an encoded dataset.
pub fn evaluate<B: Backend>(
    model: &BertForSequenceClassification<B>,
    tokenizer: &BertTokenizer,
    data: &EncodedDataset,
    labels: &[String],
    batch_size: usize,
    device: &B::Device,
) -> Result<EvalMetrics> {
    let logits = logits_of(model, tokenizer, &data.encoded, batch_size, device)?;
    let mut loss = 0.0;
    let mut predicted = Vec::with_capacity(logits.len());
    for (row, &truth) in logits.iter().zip(&data.labels) {
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
        &data.labels,
        &predicted,
        loss / logits.len().max(1) as f64,
    ))
}

/// A progress bar over optimizer steps when stderr is a terminal; `None` means
/// plain log lines instead.
pub(crate) fn progress_bar(total_steps: usize, position: usize) -> Option<indicatif::ProgressBar> {
    std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(total_steps as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}",
            )
            .expect("valid template"),
        );
        bar.set_position(position as u64);
        bar
    })
}

/// Appends JSON lines to `metrics.jsonl`, flushed line by line.
pub(crate) struct MetricsLog {
    file: std::fs::File,
}

impl MetricsLog {
    pub(crate) fn open(path: &Path, keep_up_to_step: usize) -> Result<Self> {
        // On resume, lines past the checkpoint are replayed: drop them first.
        if path.is_file() {
            let kept: String = std::fs::read_to_string(path)?
                .lines()
                .filter(|l| {
                    serde_json::from_str::<serde_json::Value>(l)
                        .ok()
                        .and_then(|v| v["step"].as_u64())
                        .is_some_and(|s| s as usize <= keep_up_to_step)
                })
                .map(|l| format!("{l}\n"))
                .collect();
            zhbert_model::write_atomic(path, kept.as_bytes())?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self { file })
    }

    pub(crate) fn write(&mut self, value: serde_json::Value) -> Result<()> {
        writeln!(self.file, "{value}")?;
        self.file.flush()?;
        Ok(())
    }
}

fn checkpoint_dir(out: &Path, step: usize) -> PathBuf {
    out.join("checkpoints").join(format!("checkpoint-{step}"))
}

/// Complete checkpoints (those with `trainer_state.json`), by step.
pub fn list_checkpoints(out: &Path) -> Vec<(usize, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(out.join("checkpoints")) else {
        return vec![];
    };
    let mut v: Vec<(usize, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let step = name.strip_prefix("checkpoint-")?.parse().ok()?;
            e.path()
                .join("trainer_state.json")
                .is_file()
                .then(|| (step, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// Fails when `out` holds checkpoints of an earlier run, which a run without
/// `--resume` would mix with its own.
pub fn check_fresh_output(out: &Path) -> Result<()> {
    if !list_checkpoints(out).is_empty() {
        bail!("{} already holds checkpoints: pass --resume to continue that run, or choose another --output", out.display());
    }
    Ok(())
}

/// Writes a checkpoint into a temporary folder and renames it into place, so
/// that a kill at any moment leaves either the old set or the new one.
#[allow(clippy::too_many_arguments)]
fn save_checkpoint<AB: AutodiffBackend>(
    out: &Path,
    model: &BertForSequenceClassification<AB>,
    model_config: &BertConfig,
    tokenizer: &BertTokenizer,
    opt: &AdamW<AB::InnerBackend>,
    state: &TrainerState,
    keep: usize,
) -> Result<()> {
    let dir = checkpoint_dir(out, state.global_step);
    let tmp = dir.with_file_name(format!(".checkpoint-{}.tmp", state.global_step));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    save_classifier(model, model_config, &tmp)?;
    tokenizer.save(&tmp)?;
    write_f32_tensors(
        &tmp.join("optimizer.safetensors"),
        &opt.state_tensors::<AB, _>(model),
    )?;
    zhbert_model::write_atomic(
        &tmp.join("trainer_state.json"),
        serde_json::to_string_pretty(state)?.as_bytes(),
    )?;
    // fsync the files' folder before it becomes visible under its final name.
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).ok();
    remove_checkpoint(&dir);
    std::fs::rename(&tmp, &dir)
        .with_context(|| format!("renaming {} into place", tmp.display()))?;
    // Keep the last `keep` and the best.
    let all = list_checkpoints(out);
    let cut = all.len().saturating_sub(keep.max(1));
    for (step, path) in &all[..cut] {
        if Some(*step) != state.best_step {
            remove_checkpoint(path);
        }
    }
    Ok(())
}

/// Fails when the run being resumed recorded a vocabulary other than
/// `tokenizer`'s (in its last checkpoint `dir`, or, from older zhbert versions,
/// only in the finished run's folder `out`): its weights would be fed other
/// token ids. A preset's vocabulary is rebuilt from the training text, so
/// another text, or another zhbert's rule for it, gives another one.
fn ensure_same_vocabulary(tokenizer: &BertTokenizer, dir: &Path, out: &Path) -> Result<()> {
    let Some(path) = [dir, out]
        .iter()
        .map(|d| d.join("vocab.txt"))
        .find(|p| p.is_file())
    else {
        return Ok(());
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let saved: Vec<&str> = text.lines().collect();
    let moved = saved
        .iter()
        .enumerate()
        .filter(|&(i, t)| tokenizer.token_to_id(t) != Some(i as u32))
        .count();
    if moved > 0 || saved.len() != tokenizer.vocab_size() {
        bail!(
            "{}: the run in {} used another vocabulary than this one ({} entries there, {} here, {moved} of them at other ids; a preset builds its own from the training text): delete that folder or choose another --output",
            path.display(),
            out.display(),
            saved.len(),
            tokenizer.vocab_size(),
        );
    }
    Ok(())
}

/// Renames a checkpoint out of sight, then deletes it: a kill during the deletion
/// leaves a hidden folder, never a half-deleted `checkpoint-N`.
fn remove_checkpoint(path: &Path) {
    if !path.exists() {
        return;
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("checkpoint");
    let doomed = path.with_file_name(format!(".{name}.deleting"));
    if std::fs::rename(path, &doomed).is_ok() {
        let _ = std::fs::remove_dir_all(&doomed);
    }
}

/// Removes what a killed run may have left half-written or half-deleted.
fn remove_stale(out: &Path) {
    let Ok(entries) = std::fs::read_dir(out.join("checkpoints")) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && (name.ends_with(".tmp") || name.ends_with(".deleting")) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Loads weights and optimizer state of a checkpoint into a freshly built model.
fn load_checkpoint<AB: AutodiffBackend>(
    dir: &Path,
    model: &mut BertForSequenceClassification<AB>,
    opt: &mut AdamW<AB::InnerBackend>,
    device: &AB::Device,
) -> Result<TrainerState> {
    let state_file = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&state_file)
        .with_context(|| format!("reading {}", state_file.display()))?;
    let state: TrainerState = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a trainer state", state_file.display()))?;
    let report = zhbert_model::load_weights_file(model, &dir.join("model.safetensors"))?;
    if !report.missing.is_empty() {
        bail!(
            "{}: checkpoint lacks {} tensors of the model",
            dir.display(),
            report.missing.len()
        );
    }
    let tensors = read_f32_tensors(&dir.join("optimizer.safetensors"))?;
    // AdamW's bias correction counts the steps it took, not the skipped ones.
    let steps_taken = state.global_step - state.skipped_steps;
    opt.load_state::<AB, _>(model, &tensors, steps_taken, &device.clone())
        .with_context(|| format!("{}: optimizer.safetensors", dir.display()))?;
    Ok(state)
}

fn class_weight_values(
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
        Some(ClassWeights::Auto(_)) => {
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

/// Fine-tunes `model` and writes the output folder: an HF model folder (weights,
/// `config.json` with labels, tokenizer files) with `metrics.jsonl`, `eval.json`,
/// plots, and `checkpoints/`.
#[allow(clippy::too_many_arguments)]
pub fn train<AB: AutodiffBackend>(
    model: BertForSequenceClassification<AB>,
    model_config: &BertConfig,
    tokenizer: &BertTokenizer,
    data: &TrainData,
    config: &TrainConfig,
    out: &Path,
    resume: bool,
    device: &AB::Device,
) -> Result<TrainSummary> {
    train_replica(
        model,
        model_config,
        tokenizer,
        data,
        config,
        out,
        resume,
        device,
        &Replica::alone(),
    )
}

/// Refuses, in one line, a precision the backend has no tensors for (ndarray
/// has no half types), before the first matmul would fail on it.
pub fn ensure_precision_supported<B: Backend>(
    precision: Precision,
    device: &B::Device,
) -> Result<()> {
    if !precision.supported::<B>(device) {
        bail!(
            "--precision {precision}: the {} backend has no {precision} tensors; use --precision fp32, or the flex, wgpu or cuda backend",
            B::name(device),
        );
    }
    Ok(())
}

/// [`train`] as one replica of data-parallel training ([`crate::parallel`]):
/// every replica calls it with the same arguments but its own device and
/// [`Replica`]. Only replica 0 writes `out`; the others return a summary
/// without the final dev and test scores.
#[allow(clippy::too_many_arguments)]
pub fn train_replica<AB: AutodiffBackend>(
    mut model: BertForSequenceClassification<AB>,
    model_config: &BertConfig,
    tokenizer: &BertTokenizer,
    data: &TrainData,
    config: &TrainConfig,
    out: &Path,
    resume: bool,
    device: &AB::Device,
    replica: &Replica,
) -> Result<TrainSummary> {
    config.validate()?;
    ensure_precision_supported::<AB>(config.precision, device)?;
    let main = replica.is_main();
    if main {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    }
    let k = data.labels.len();
    let loss_options = CrossEntropyOptions {
        class_weights: class_weight_values(config, &data.train, k)?,
        label_smoothing: config.label_smoothing,
    };
    if config.group_by_length && matches!(data.train, TrainSet::Streaming { .. }) {
        bail!("length grouping needs the training set in memory: it cannot be combined with streaming");
    }
    let soft_targets = if config.distill > 0.0 {
        if matches!(data.train, TrainSet::Streaming { .. }) {
            bail!("distillation needs the training set in memory: it cannot be combined with streaming");
        }
        match &data.soft_targets {
            Some(t) if t.len() == data.train.len() && t.iter().all(|p| p.len() == k) => Some(t),
            _ => bail!(
                "distillation weight {}: the trainer needs the teacher's probabilities of all {} training examples",
                config.distill,
                data.train.len()
            ),
        }
    } else {
        None
    };
    let train_examples = data.train.len();
    let micro_per_epoch = train_examples.div_ceil(config.batch_size);
    let steps_per_epoch = micro_per_epoch.div_ceil(config.grad_accum);
    let total_steps = config
        .max_steps
        .map_or(config.epochs * steps_per_epoch, |m| {
            m.min(config.epochs * steps_per_epoch)
        });
    let warmup_steps = config.warmup.steps(total_steps);
    let mut opt = AdamW::new::<AB, _>(config.adamw(), &model);

    let mut state = TrainerState {
        config: Some(config.clone()),
        ..Default::default()
    };
    if main {
        remove_stale(out);
    }
    if resume {
        match list_checkpoints(out).last() {
            Some((_, dir)) => {
                ensure_same_vocabulary(tokenizer, dir, out)?;
                state = load_checkpoint(dir, &mut model, &mut opt, device)?;
                if state.config.as_ref() != Some(config) {
                    tracing::warn!(
                        "resuming {} with a configuration different from the one it started with",
                        dir.display()
                    );
                }
                state.config = Some(config.clone());
                tracing::info!(
                    "resumed from {} (step {}, epoch {}, batch {})",
                    dir.display(),
                    state.global_step,
                    state.epoch + 1,
                    state.batch_in_epoch
                );
            }
            None => tracing::info!(
                "--resume: no checkpoint in {}, starting afresh",
                out.display()
            ),
        }
    } else if main {
        check_fresh_output(out)?;
    }
    // f16 needs its loss scaled; a resumed run keeps the scale it had reached.
    state.loss_scaler = match config.precision {
        Precision::F16 => state.loss_scaler.or_else(|| {
            Some(LossScaler::new(
                config.initial_loss_scale.unwrap_or(LossScaler::INIT),
            ))
        }),
        _ => None,
    };
    replica.join::<AB::InnerBackend>(device)?;
    replica.agree_on_step::<AB::InnerBackend>(state.global_step, device)?;
    if replica.world > 1 {
        model = same_weights_as_main(model, replica)?;
    }
    let mut log = if main {
        Some(MetricsLog::open(
            &out.join("metrics.jsonl"),
            state.global_step,
        )?)
    } else {
        None
    };
    let params: Vec<(ParamId, usize)> = param_paths::<AB, _>(&model)
        .into_iter()
        .map(|(_, id, shape)| (id, shape.iter().product()))
        .collect();
    tracing::info!(
        "training: {} examples, {} labels, {} steps ({} per epoch, {} warmup), batch {} x {} accumulation",
        train_examples,
        k,
        total_steps,
        steps_per_epoch,
        warmup_steps,
        config.batch_size,
        config.grad_accum
    );

    let bar = if main {
        progress_bar(total_steps, state.global_step)
    } else {
        None
    };

    let started = Instant::now();
    let mut window = (Instant::now(), 0usize, 0.0f64, 0usize); // since last log: time, sequences, loss sum, steps
    let mut all_reduce_seconds = 0.0f64; // since last log
    let mut sequences_total = 0usize;
    let mut grads = GradAccumulator::<AB::InnerBackend>::default();
    let mut step_loss = 0.0f64;
    let mut early_stopped = false;
    let mut target_reached = false;
    let eval_model = |model: &BertForSequenceClassification<AB>, set: &EncodedDataset| {
        autocast(config.precision, || {
            evaluate(
                &model.valid(),
                tokenizer,
                set,
                &data.labels,
                config.batch_size.max(32),
                device,
            )
        })
    };

    'epochs: while state.epoch < config.epochs && state.global_step < total_steps {
        let mut batches = data.train.epoch(
            tokenizer,
            config,
            config.seed.wrapping_add(state.epoch as u64),
            state.batch_in_epoch,
        );
        while state.batch_in_epoch < micro_per_epoch {
            let micro = state.batch_in_epoch;
            if micro % config.grad_accum == 0 {
                // Dropout masks depend on (seed, step, replica) only: resuming reproduces them.
                AB::seed(
                    device,
                    config
                        .seed
                        .wrapping_mul(1_000_003)
                        .wrapping_add(state.global_step as u64)
                        .wrapping_add((replica.rank as u64) << 32),
                );
            }
            let TrainBatch {
                batch,
                labels,
                examples,
            } = batches.next(tokenizer)?;
            let rows = replica.rows(batch.batch_size);
            // This replica's share of the batch's loss: its rows' part of the
            // (class-weighted) row count, so that the replicas' losses add up to
            // the whole batch's mean.
            let share = if replica.world == 1 {
                1.0
            } else {
                let weight = |l: &usize| {
                    loss_options
                        .class_weights
                        .as_ref()
                        .map_or(1.0, |w| w[*l] as f64)
                };
                labels[rows.clone()].iter().map(weight).sum::<f64>()
                    / labels.iter().map(weight).sum::<f64>()
            };
            if !rows.is_empty() {
                let share_of_batch;
                let local = if replica.world == 1 {
                    &batch
                } else {
                    share_of_batch = batch.rows(rows.clone());
                    &share_of_batch
                };
                let input = input_of::<AB>(local, device);
                let labels: Vec<i64> = labels[rows.clone()].iter().map(|&l| l as i64).collect();
                let labels = Tensor::<AB, 1, Int>::from_data(labels.as_slice(), device);
                let logits = autocast(config.precision, || model.forward(input));
                let mut loss =
                    classification_loss(logits.clone(), Labels::Classes(labels), &loss_options);
                if replica.world > 1 {
                    loss = loss.mul_scalar(share);
                }
                if let (Some(targets), Some(examples)) = (soft_targets, &examples) {
                    let local: Vec<f32> = examples[rows.clone()]
                        .iter()
                        .flat_map(|&i| targets[i].iter().copied())
                        .collect();
                    let n = rows.len();
                    let targets =
                        Tensor::<AB, 1>::from_data(local.as_slice(), device).reshape([n, k]);
                    // Cross entropy against the teacher's probabilities, averaged
                    // over the whole batch: the replicas' parts add up to it.
                    let soft = (targets * log_softmax(logits, 1))
                        .sum()
                        .neg()
                        .div_scalar(batch.batch_size as f64);
                    loss = loss.mul_scalar(1.0 - config.distill) + soft.mul_scalar(config.distill);
                }
                // The last step of an epoch may hold fewer micro-batches; HF divides by
                // the accumulation count all the same.
                let scaled = match state.loss_scaler {
                    Some(s) => loss.clone().mul_scalar(s.scale / config.grad_accum as f64),
                    None => loss.clone().div_scalar(config.grad_accum as f64),
                };
                let loss_value: f64 = loss.into_scalar().elem();
                grads.add::<AB, _>(&model, &scaled.backward());
                step_loss += loss_value;
            }
            sequences_total += batch.batch_size;
            window.1 += batch.batch_size;
            state.batch_in_epoch += 1;

            let end_of_step = state.batch_in_epoch % config.grad_accum == 0
                || state.batch_in_epoch == micro_per_epoch;
            if !end_of_step {
                continue;
            }
            let micro_in_step = (micro % config.grad_accum) + 1;
            if replica.world > 1 {
                let started = Instant::now();
                let flat = grads.flatten(&params, &[step_loss as f32], device);
                let summed = replica.sum(flat)?;
                step_loss = grads.unflatten(summed, &params)[0] as f64;
                all_reduce_seconds += started.elapsed().as_secs_f64();
            }
            if !step_loss.is_finite() {
                bail!(
                    "loss is {step_loss} at step {}: lower the learning rate",
                    state.global_step + 1
                );
            }
            let lr =
                config
                    .lr_scheduler
                    .lr(config.lr, state.global_step, warmup_steps, total_steps);
            if let Some(s) = state.loss_scaler {
                grads.scale(s.scale.recip());
            }
            let grad_norm = grads.clip_global_norm(config.max_grad_norm);
            let finite = grad_norm.is_finite();
            if state.loss_scaler.as_mut().is_none_or(|s| s.update(finite)) {
                model = opt.step::<AB, _>(model, lr, &mut grads);
            } else {
                // f16 overflowed somewhere in the backward pass: GradScaler's
                // answer is to drop the step and retry at half the scale.
                grads.clear();
                state.skipped_steps += 1;
                tracing::debug!(
                    "step {}: f16 gradients overflowed; skipped, loss scale now {}",
                    state.global_step + 1,
                    state.loss_scaler.map_or(1.0, |s| s.scale)
                );
            }
            state.global_step += 1;
            let mean_loss = step_loss / micro_in_step as f64;
            step_loss = 0.0;
            window.2 += mean_loss;
            window.3 += 1;
            if state.batch_in_epoch == micro_per_epoch {
                state.epoch += 1;
                state.batch_in_epoch = 0;
            }
            let epoch_f = state.epoch as f64 + state.batch_in_epoch as f64 / micro_per_epoch as f64;

            if state.global_step % config.log_every.max(1) == 0 || state.global_step == total_steps
            {
                let secs = window.0.elapsed().as_secs_f64().max(1e-9);
                let speed = window.1 as f64 / secs;
                let avg = window.2 / window.3.max(1) as f64;
                if let Some(log) = &mut log {
                    let mut line = serde_json::json!({
                        "step": state.global_step, "epoch": epoch_f, "loss": avg, "lr": lr,
                        "grad_norm": grad_norm, "sequences_per_second": speed,
                        "elapsed_seconds": started.elapsed().as_secs_f64(),
                    });
                    if let Some(s) = state.loss_scaler {
                        line["loss_scale"] = s.scale.into();
                        line["skipped_steps"] = state.skipped_steps.into();
                    }
                    if replica.world > 1 {
                        // Seconds per step spent summing gradients with the other replicas.
                        line["all_reduce_seconds"] =
                            (all_reduce_seconds / window.3.max(1) as f64).into();
                    }
                    log.write(line)?;
                }
                all_reduce_seconds = 0.0;
                if bar.is_none() && main {
                    tracing::info!("step {}/{} epoch {epoch_f:.2} loss {avg:.4} lr {lr:.2e} grad_norm {grad_norm:.3} {speed:.1} seq/s", state.global_step, total_steps);
                }
                window = (Instant::now(), 0, 0.0, 0);
            }
            if let Some(bar) = &bar {
                bar.set_position(state.global_step as u64);
                bar.set_message(format!(
                    "loss {mean_loss:.4} lr {lr:.2e} {:.1} seq/s",
                    sequences_total as f64 / started.elapsed().as_secs_f64()
                ));
            }

            let epoch_ended = state.batch_in_epoch == 0;
            let last = state.global_step >= total_steps;
            let eval_due = match config.eval_every {
                Some(n) => state.global_step % n == 0 || last,
                None => epoch_ended || last,
            };
            let mut improved = false;
            if eval_due {
                if let Some(dev) = &data.dev {
                    let m = eval_model(&model, dev)?;
                    let value = m.get(&config.metric).expect("validated metric");
                    improved = match state.best_metric {
                        None => true,
                        Some(best) if higher_is_better(&config.metric) => value > best,
                        Some(best) => value < best,
                    };
                    if improved {
                        state.best_metric = Some(value);
                        state.best_step = Some(state.global_step);
                        state.evals_without_improvement = 0;
                    } else {
                        state.evals_without_improvement += 1;
                    }
                    let line = format!(
                        "eval step {}: loss {:.4} accuracy {:.4} macro_f1 {:.4}{}",
                        state.global_step,
                        m.loss,
                        m.accuracy,
                        m.macro_f1,
                        if improved { " (best)" } else { "" }
                    );
                    match &bar {
                        Some(bar) => bar.println(line),
                        None if main => tracing::info!("{line}"),
                        None => {}
                    }
                    if let Some(log) = &mut log {
                        log.write(serde_json::json!({
                            "step": state.global_step, "epoch": epoch_f, "eval": m,
                            "elapsed_seconds": started.elapsed().as_secs_f64(),
                        }))?;
                    }
                    if let Some(target) = config.stop_at {
                        let reached = if higher_is_better(&config.metric) {
                            value >= target
                        } else {
                            value <= target
                        };
                        if reached {
                            tracing::info!("dev {} reached {target}: stopping", config.metric);
                            target_reached = true;
                        }
                    }
                }
            }
            let save_due = match config.save_every {
                Some(n) => state.global_step % n == 0,
                None => eval_due,
            } || last;
            if main && (save_due || improved) {
                save_checkpoint::<AB>(
                    out,
                    &model,
                    model_config,
                    tokenizer,
                    &opt,
                    &state,
                    config.keep_checkpoints,
                )?;
            }
            if target_reached {
                early_stopped = true;
                break 'epochs;
            }
            if let Some(p) = config.patience {
                if data.dev.is_some() && state.evals_without_improvement >= p {
                    tracing::info!(
                        "early stopping: {p} evaluations without a better {}",
                        config.metric
                    );
                    early_stopped = true;
                    break 'epochs;
                }
            }
            if last {
                break 'epochs;
            }
            if epoch_ended {
                // The next epoch has its own order: back to the outer loop.
                break;
            }
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let train_seconds = started.elapsed().as_secs_f64();
    replica.leave::<AB::InnerBackend>();
    if !main {
        // The checkpoints, and so the best weights, are replica 0's to keep.
        return Ok(TrainSummary {
            train_examples,
            steps: state.global_step,
            early_stopped,
            best_step: state.best_step,
            dev: None,
            test: None,
            train_sequences_per_second: sequences_total as f64 / train_seconds.max(1e-9),
            train_seconds,
        });
    }

    // Keep the best weights, as HF's load_best_model_at_end.
    if let Some(best) = state.best_step {
        if best != state.global_step || early_stopped {
            let mut fresh = AdamW::new::<AB, _>(opt.config.clone(), &model);
            load_checkpoint(&checkpoint_dir(out, best), &mut model, &mut fresh, device)?;
            tracing::info!("kept the weights of step {best} (best {})", config.metric);
        }
    }
    save_classifier(&model, model_config, out)?;
    tokenizer.save(out)?;
    let dev = data
        .dev
        .as_ref()
        .map(|d| eval_model(&model, d))
        .transpose()?;
    let test = data
        .test
        .as_ref()
        .map(|d| eval_model(&model, d))
        .transpose()?;
    let summary = TrainSummary {
        train_examples,
        steps: state.global_step,
        early_stopped,
        best_step: state.best_step,
        dev,
        test,
        train_sequences_per_second: sequences_total as f64 / train_seconds.max(1e-9),
        train_seconds,
    };
    zhbert_model::write_atomic(
        &out.join("eval.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    if let Err(e) = crate::plots::write_plots(
        out,
        &data.labels,
        summary.dev.as_ref().or(summary.test.as_ref()),
    ) {
        tracing::warn!("plots not written: {e:#}");
    }
    Ok(summary)
}

/// Replica 0's weights on every replica: each adds its own (replica 0) or zeros
/// (the others) in one all-reduce. Replicas in one process would otherwise draw
/// a new head from one shared random generator in turn, and differ.
fn same_weights_as_main<AB: AutodiffBackend>(
    model: BertForSequenceClassification<AB>,
    replica: &Replica,
) -> Result<BertForSequenceClassification<AB>> {
    let mut values = Vec::new();
    model.visit(&mut CollectWeights {
        values: &mut values,
        keep: replica.is_main(),
    });
    let sizes: Vec<usize> = values.iter().map(|v| v.dims()[0]).collect();
    let summed = replica.sum(Tensor::cat(values, 0))?;
    let mut at = 0;
    let mut parts = Vec::with_capacity(sizes.len());
    for n in sizes {
        parts.push(summed.clone().slice(at..at + n));
        at += n;
    }
    Ok(model.map(&mut ReplaceWeights {
        parts: parts.into_iter(),
    }))
}

struct CollectWeights<'a, B: Backend> {
    values: &'a mut Vec<Tensor<B, 1>>,
    keep: bool,
}

impl<AB: AutodiffBackend> ModuleVisitor<AB> for CollectWeights<'_, AB::InnerBackend> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        let w = param.val().inner();
        let n = w.shape().num_elements();
        let w = w.reshape([n]);
        self.values.push(if self.keep { w } else { w.zeros_like() });
    }
}

struct ReplaceWeights<B: Backend> {
    parts: std::vec::IntoIter<Tensor<B, 1>>,
}

impl<AB: AutodiffBackend> ModuleMapper<AB> for ReplaceWeights<AB::InnerBackend> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let (id, tensor, mapper) = param.consume();
        let shape = tensor.dims();
        let require_grad = tensor.is_require_grad();
        let flat = self.parts.next().expect("one part per parameter");
        let mut value = Tensor::<AB, D>::from_inner(flat.reshape(shape));
        if require_grad {
            value = value.require_grad();
        }
        Param::from_mapped_value(id, value, mapper)
    }
}
