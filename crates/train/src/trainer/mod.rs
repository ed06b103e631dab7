//! The fine-tuning loop: what HF `Trainer` does, on burn.
//!
//! [`Trainer`] holds what a run is given (model config, tokenizer, data,
//! [`TrainConfig`], output folder, device, replica); [`Trainer::fit`] runs the
//! loop, built of parts a reader can hold in mind (`run.rs`: a training step,
//! an optimizer step, evaluation, checkpoints) and reports to a
//! [`TrainObserver`] (the default [`Reporter`]: progress, `metrics.jsonl`,
//! plots). [`train`] is `fit` with the default reporter on one device.
//! Most users call [`crate::FineTune`], which also reads the data and builds
//! the model.

mod checkpoint;
mod config;
mod data;
mod observer;
mod replicas;
mod run;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Result;
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::{Deserialize, Serialize};
use zhbert_model::{BertConfig, BertForSequenceClassification, Precision};
use zhbert_tokenizer::BertTokenizer;

pub use self::checkpoint::{check_fresh_output, list_checkpoints, TrainerState};
pub use self::config::{ClassWeights, ConfigError, TrainConfig, Warmup};
pub use self::data::{TrainData, TrainSet};
pub(crate) use self::observer::{progress_bar, MetricsLog};
pub use self::observer::{EvalRecord, Reporter, StepRecord, TrainObserver, TrainPlan};
use self::run::{Run, Schedule};
pub use crate::inference::evaluate;
use crate::metrics::EvalMetrics;
use crate::parallel::Replica;

/// The file of a finished run's final scores, in its output folder.
pub const EVAL_FILE: &str = "eval.json";

/// What a finished run reports (and `eval.json` holds).
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
    /// The masked-LM pretraining this run did first ([`crate::FineTune`] with
    /// a preset); not in `eval.json`.
    #[serde(skip)]
    pub pretraining: Option<crate::pretrain::PretrainSummary>,
}

/// How a run can end without a result.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The loss became NaN or infinite.
    #[error("loss is {loss} at step {step}: lower the learning rate")]
    LossNotFinite {
        /// The step's loss.
        loss: f64,
        /// The step (from 1).
        step: usize,
    },
    /// [`request_stop`] was called (Ctrl-C): the run stopped after a step and
    /// saved a checkpoint, from which it can be resumed.
    #[error("stopped at step {step}; a checkpoint of it is in {}: resume the run to go on", output.display())]
    Interrupted {
        /// The last step done (and saved).
        step: usize,
        /// The output folder holding the checkpoint.
        output: PathBuf,
    },
}

static STOP: AtomicBool = AtomicBool::new(false);

/// Asks every run in this process to stop after its current step, write a
/// checkpoint and end with [`TrainError::Interrupted`] (what the CLI does on
/// Ctrl-C or SIGTERM). Data-parallel runs do not stop this way: replicas that
/// stopped at different steps would wait for each other forever.
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// Whether [`request_stop`] was called.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// A fine-tuning run's inputs: everything but the model and the observer.
pub struct Trainer<'a, AB: AutodiffBackend> {
    /// The model's configuration (saved with every checkpoint).
    pub model_config: &'a BertConfig,
    /// The tokenizer (saved with every checkpoint).
    pub tokenizer: &'a BertTokenizer,
    /// Training, dev and test data.
    pub data: &'a TrainData,
    /// The settings.
    pub config: &'a TrainConfig,
    /// The output folder.
    pub output: &'a Path,
    /// Continue from the last checkpoint in `output`.
    pub resume: bool,
    /// The device to train on.
    pub device: &'a AB::Device,
    /// This replica of a data-parallel run ([`Replica::alone`] otherwise).
    pub replica: &'a Replica,
}

impl<AB: AutodiffBackend> Trainer<'_, AB> {
    /// Fine-tunes `model` and writes the output folder: an HF model folder
    /// (the best evaluation's weights, `config.json` with labels, tokenizer
    /// files), `eval.json` and `checkpoints/`; `observer` is told of every
    /// step and evaluation. Only replica 0 writes; the others return a summary
    /// without the final dev and test scores. Resuming a run that has finished
    /// returns its summary without training again.
    pub fn fit(
        &self,
        model: BertForSequenceClassification<AB>,
        observer: &mut dyn TrainObserver,
    ) -> Result<TrainSummary> {
        if self.resume && self.replica.world == 1 {
            if let Some(done) = self.finished_run()? {
                return Ok(done);
            }
        }
        let (mut run, model) = Run::start(self, model)?;
        observer.on_start(&TrainPlan {
            total_steps: run.schedule.total_steps,
            start_step: run.state.global_step,
            replicas: self.replica.world,
        })?;
        let started = Instant::now();
        let model = run.run_epochs(model, observer);
        observer.on_training_done();
        let model = model?;
        let train_seconds = started.elapsed().as_secs_f64();
        self.replica.leave::<AB::InnerBackend>();
        run.finish(model, train_seconds, observer)
    }

    /// [`finished_run`] of the output folder, after checking that its weights
    /// read this tokenizer's ids.
    fn finished_run(&self) -> Result<Option<TrainSummary>> {
        let batches = self.data.train.batches_per_epoch(self.config.batch_size);
        let Some(summary) = finished_run(self.output, self.config, batches) else {
            return Ok(None);
        };
        if let Some((_, dir)) = list_checkpoints(self.output).pop() {
            checkpoint::ensure_same_vocabulary(self.tokenizer, &dir, self.output)?;
        }
        Ok(Some(summary))
    }
}

/// The summary of the run in `output` when it has finished: its `eval.json`
/// is there and says it ran all the steps `config` gives `micro_per_epoch`
/// micro-batches an epoch, or stopped early. A finished run is reported, not
/// trained again.
pub fn finished_run(
    output: &Path,
    config: &TrainConfig,
    micro_per_epoch: usize,
) -> Option<TrainSummary> {
    let text = std::fs::read_to_string(output.join(EVAL_FILE)).ok()?;
    let summary = serde_json::from_str::<TrainSummary>(&text).ok()?;
    let total = Schedule::new(config, micro_per_epoch).total_steps;
    let finished = summary.early_stopped || summary.steps >= total;
    if finished {
        tracing::info!(
            "the run in {} has finished ({} steps); its scores are in {EVAL_FILE}",
            output.display(),
            summary.steps
        );
    }
    finished.then_some(summary)
}

/// Fine-tunes `model` on one device with the default [`Reporter`]: see
/// [`Trainer::fit`].
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

/// [`train`] as one replica of data-parallel training ([`crate::parallel`]):
/// every replica calls it with the same arguments but its own device and
/// [`Replica`]; replica 0 reports, the others are silent.
#[allow(clippy::too_many_arguments)]
pub fn train_replica<AB: AutodiffBackend>(
    model: BertForSequenceClassification<AB>,
    model_config: &BertConfig,
    tokenizer: &BertTokenizer,
    data: &TrainData,
    config: &TrainConfig,
    out: &Path,
    resume: bool,
    device: &AB::Device,
    replica: &Replica,
) -> Result<TrainSummary> {
    let trainer = Trainer {
        model_config,
        tokenizer,
        data,
        config,
        output: out,
        resume,
        device,
        replica,
    };
    if replica.is_main() {
        trainer.fit(
            model,
            &mut Reporter::new(out, &data.labels, config.log_every),
        )
    } else {
        trainer.fit(model, &mut ())
    }
}

/// Refuses, in one line, a precision the backend has no tensors for (ndarray
/// has no half types), before the first matmul would fail on it.
pub fn ensure_precision_supported<B: Backend>(
    precision: Precision,
    device: &B::Device,
) -> Result<()> {
    if !precision.supported::<B>(device) {
        anyhow::bail!(
            "precision {precision}: the {} backend has no {precision} tensors; use fp32, or the flex, wgpu or cuda backend",
            B::name(device),
        );
    }
    Ok(())
}
