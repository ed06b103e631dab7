//! A run of the fine-tuning loop, as parts: [`Run::start`] (checks, resume),
//! [`Run::training_step`] (forward, loss, backward, accumulation),
//! [`Run::optimizer_step`] (all-reduce, loss scaling, clipping, AdamW,
//! schedule), [`Run::after_step`] (evaluation, checkpoint, stopping) and
//! [`Run::finish`] (the best weights, the output folder).
//!
//! Deterministic by construction: the data order of an epoch comes from
//! `seed + epoch`, and the dropout generator is reseeded from `seed` and the step
//! before every optimizer step. A checkpoint therefore only needs the weights,
//! the AdamW moments and the position (step, epoch, batch) to continue exactly.
//! (burn's CPU backends keep one random generator per process, so this holds for
//! one training per process at a time.)

use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::module::{AutodiffModule, ParamId};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Int, Tensor};
use zhbert_data::EncodedDataset;
use zhbert_model::{
    autocast, classification_loss, save_classifier, BertForSequenceClassification,
    CrossEntropyOptions, Labels, ProblemType,
};

use super::checkpoint::{
    check_fresh_output, checkpoint_dir, ensure_same_vocabulary, list_checkpoints, load_checkpoint,
    remove_stale, save_checkpoint, TrainerState,
};
use super::data::{class_weight_values, TrainBatch, TrainData};
use super::observer::{EvalRecord, StepRecord, TrainObserver};
use super::replicas::same_weights_as_main;
use super::{ensure_precision_supported, stop_requested, TrainError, TrainSummary, Trainer};
use crate::inference::{evaluate_task, input_of};
use crate::metrics::{EvalMetrics, Metric};
use crate::optim::{param_paths, AdamW, GradAccumulator};
use crate::tasks::{bce_with_logits, EvalTask};

type Model<AB> = BertForSequenceClassification<AB>;

/// How many micro-batches and optimizer steps a run has.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    pub(crate) micro_per_epoch: usize,
    pub(crate) steps_per_epoch: usize,
    pub(crate) total_steps: usize,
    pub(crate) warmup_steps: usize,
}

impl Schedule {
    /// The schedule of a run of `config` over `micro_per_epoch` micro-batches an epoch.
    pub(crate) fn new(config: &super::TrainConfig, micro_per_epoch: usize) -> Self {
        let steps_per_epoch = micro_per_epoch.div_ceil(config.grad_accum);
        let all = config.epochs * steps_per_epoch;
        let total_steps = config.max_steps.map_or(all, |m| m.min(all));
        Self {
            micro_per_epoch,
            steps_per_epoch,
            total_steps,
            warmup_steps: config.warmup.steps(total_steps),
        }
    }

    /// Micro-batches in the optimizer step that micro-batch `micro` (of its
    /// epoch) belongs to: `grad_accum`, or fewer in an epoch's short last step.
    pub(crate) fn micro_in_step(&self, micro: usize, grad_accum: usize) -> usize {
        let first = micro - micro % grad_accum;
        grad_accum.min(self.micro_per_epoch - first)
    }
}

/// What the loop does after an optimizer step.
enum Next {
    Step,
    Epoch,
    Stop,
}

/// A run in progress: the optimizer and where the run stands. The model
/// itself goes through the steps by value, as burn's optimizers take it.
pub(crate) struct Run<'t, 'a, AB: AutodiffBackend> {
    job: &'t Trainer<'a, AB>,
    opt: AdamW<AB::InnerBackend>,
    grads: GradAccumulator<AB::InnerBackend>,
    pub(crate) state: TrainerState,
    pub(crate) schedule: Schedule,
    loss_options: CrossEntropyOptions,
    /// What the head is trained for (the model config's `problem_type`).
    problem: ProblemType,
    /// Multi-label: `BCEWithLogitsLoss`'s `pos_weight` (`--class-weights`).
    pos_weight: Option<Vec<f32>>,
    /// The metric that picks the best checkpoint, for this problem type.
    metric: Metric,
    soft_targets: Option<&'a [Vec<f32>]>,
    params: Vec<(ParamId, usize)>,
    /// The current step's summed micro-batch losses and sequences.
    step_loss: f64,
    step_sequences: usize,
    pub(crate) sequences_total: usize,
    pub(crate) early_stopped: bool,
}

/// The teacher's probabilities when the run distils, after checking that there
/// is one row of `k` per training example.
fn soft_targets<'a>(data: &'a TrainData, distill: f64) -> Result<Option<&'a [Vec<f32>]>> {
    if distill <= 0.0 {
        return Ok(None);
    }
    if !data.train.knows_examples() {
        bail!(
            "distillation needs the training set in memory: it cannot be combined with streaming"
        );
    }
    let k = data.labels.len();
    match &data.soft_targets {
        Some(t) if t.len() == data.train.len() && t.iter().all(|p| p.len() == k) => Ok(Some(t)),
        _ => bail!(
            "distillation weight {distill}: the trainer needs the teacher's probabilities of all {} training examples",
            data.train.len()
        ),
    }
}

impl<'t, 'a, AB: AutodiffBackend> Run<'t, 'a, AB> {
    /// Checks the settings, resumes from the last checkpoint when asked, and
    /// meets the other replicas: the run as it stands before its next step.
    pub(crate) fn start(
        job: &'t Trainer<'a, AB>,
        mut model: Model<AB>,
    ) -> Result<(Self, Model<AB>)> {
        let (config, data, out) = (job.config, job.data, job.output);
        config.validate()?;
        ensure_precision_supported::<AB>(config.precision, job.device)?;
        if config.group_by_length && !data.train.is_encoded() {
            bail!("length grouping needs the training set encoded in memory: it cannot be combined with streaming or fixed batches");
        }
        // Every check before the output folder is made: a refused run leaves nothing.
        let problem = job.model_config.problem_type();
        let metric = crate::tasks::check_problem(config, problem)?;
        let (loss_options, pos_weight) = match problem {
            ProblemType::SingleLabelClassification => {
                let options = CrossEntropyOptions {
                    class_weights: class_weight_values(config, &data.train, data.labels.len())?,
                    label_smoothing: config.label_smoothing,
                };
                (options, None)
            }
            _ => (
                CrossEntropyOptions::default(),
                crate::tasks::pos_weight(config, &data.train, data.labels.len())?,
            ),
        };
        let soft_targets = soft_targets(data, config.distill)?;
        let main = job.replica.is_main();
        if main {
            std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
            remove_stale(out);
        }
        let mut opt = AdamW::new::<AB, _>(config.adamw(), &model);
        let mut state = TrainerState {
            config: Some(config.clone()),
            ..Default::default()
        };
        if job.resume {
            if let Some(resumed) = Self::resume(job, &mut model, &mut opt)? {
                state = resumed;
            }
        } else if main {
            check_fresh_output(out)?;
        }
        // f16 needs its loss scaled; a resumed run keeps the scale it had reached.
        state.loss_scaler = config
            .new_loss_scaler()
            .map(|fresh| state.loss_scaler.unwrap_or(fresh));
        job.replica.join::<AB::InnerBackend>(job.device)?;
        job.replica
            .agree_on_step::<AB::InnerBackend>(state.global_step, job.device)?;
        if job.replica.world > 1 {
            model = same_weights_as_main(model, job.replica)?;
        }
        let params = param_paths::<AB, _>(&model)
            .into_iter()
            .map(|(_, id, shape)| (id, shape.iter().product()))
            .collect();
        let run = Self {
            job,
            opt,
            grads: GradAccumulator::default(),
            state,
            schedule: Schedule::new(config, data.train.batches_per_epoch(config.batch_size)),
            loss_options,
            problem,
            pos_weight,
            metric,
            soft_targets,
            params,
            step_loss: 0.0,
            step_sequences: 0,
            sequences_total: 0,
            early_stopped: false,
        };
        run.announce();
        Ok((run, model))
    }

    fn announce(&self) {
        let (c, s) = (self.job.config, &self.schedule);
        tracing::info!(
            "training: {} examples, {} labels, {} steps ({} per epoch, {} warmup), batch {} x {} accumulation",
            self.job.data.train.len(),
            self.job.data.labels.len(),
            s.total_steps,
            s.steps_per_epoch,
            s.warmup_steps,
            c.batch_size,
            c.grad_accum
        );
    }

    /// The state of the last checkpoint in the output folder, loaded into
    /// `model` and `opt`; `None` when there is none.
    fn resume(
        job: &Trainer<'a, AB>,
        model: &mut Model<AB>,
        opt: &mut AdamW<AB::InnerBackend>,
    ) -> Result<Option<TrainerState>> {
        let Some((_, dir)) = list_checkpoints(job.output).pop() else {
            tracing::info!(
                "resume: no checkpoint in {}, starting afresh",
                job.output.display()
            );
            return Ok(None);
        };
        ensure_same_vocabulary(job.tokenizer, &dir, job.output)?;
        let mut state = load_checkpoint(&dir, model, opt, job.device)?;
        if state.config.as_ref() != Some(job.config) {
            tracing::warn!(
                "resuming {} with a configuration different from the one it started with",
                dir.display()
            );
        }
        state.config = Some(job.config.clone());
        tracing::info!(
            "resumed from {} (step {}, epoch {}, batch {})",
            dir.display(),
            state.global_step,
            state.epoch + 1,
            state.batch_in_epoch
        );
        Ok(Some(state))
    }

    /// Every epoch's batches through the steps, until the last step, early
    /// stopping, or a stop request.
    pub(crate) fn run_epochs(
        &mut self,
        mut model: Model<AB>,
        observer: &mut dyn TrainObserver,
    ) -> Result<Model<AB>> {
        let (config, tokenizer) = (self.job.config, self.job.tokenizer);
        'epochs: while self.state.epoch < config.epochs
            && self.state.global_step < self.schedule.total_steps
        {
            let seed = config.seed.wrapping_add(self.state.epoch as u64);
            let mut batches =
                self.job
                    .data
                    .train
                    .epoch(tokenizer, config, seed, self.state.batch_in_epoch);
            while self.state.batch_in_epoch < self.schedule.micro_per_epoch {
                let micro = self.state.batch_in_epoch;
                if micro % config.grad_accum == 0 {
                    self.seed_dropout();
                }
                let batch = batches.next(tokenizer)?;
                self.training_step(&model, &batch)?;
                let end_of_step = self.state.batch_in_epoch % config.grad_accum == 0
                    || self.state.batch_in_epoch == self.schedule.micro_per_epoch;
                if !end_of_step {
                    continue;
                }
                let record;
                (model, record) = self.optimizer_step(model, micro)?;
                observer.on_step(&record)?;
                match self.after_step(&model, &record, observer)? {
                    Next::Step => {}
                    // The next epoch has its own order: back to the outer loop.
                    Next::Epoch => break,
                    Next::Stop => break 'epochs,
                }
            }
        }
        Ok(model)
    }

    /// Dropout masks depend on (seed, step, replica) only: resuming reproduces them.
    fn seed_dropout(&self) {
        let seed = self
            .job
            .config
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(self.state.global_step as u64)
            .wrapping_add((self.job.replica.rank as u64) << 32);
        AB::seed(self.job.device, seed);
    }

    /// One micro-batch: forward, loss, backward; its gradients are added to
    /// the step's.
    fn training_step(&mut self, model: &Model<AB>, train: &TrainBatch) -> Result<()> {
        let (replica, device) = (self.job.replica, self.job.device);
        let batch = &train.batch;
        let rows = replica.rows(batch.batch_size);
        if !rows.is_empty() {
            let local = replica.share_of(batch, rows.clone());
            let input = input_of::<AB>(local.as_ref().unwrap_or(batch), device);
            let logits = autocast(self.job.config.precision, || model.forward(input));
            let mut loss = self.loss(logits.clone(), train, rows.clone())?;
            if replica.world > 1 {
                loss = loss.mul_scalar(self.share_of_loss(&train.labels, rows.clone()));
            }
            if let Some(soft) = self.distillation_loss(logits, train, rows) {
                let w = self.job.config.distill;
                loss = loss.mul_scalar(1.0 - w) + soft.mul_scalar(w);
            }
            // The step's gradient is the mean of its micro-batches', also in an
            // epoch's short last step (HF Trainer's `current_gradient_accumulation_steps`).
            let accum = self
                .schedule
                .micro_in_step(self.state.batch_in_epoch, self.job.config.grad_accum)
                as f64;
            let scaled = match self.state.loss_scaler {
                Some(s) => loss.clone().mul_scalar(s.scale / accum),
                None => loss.clone().div_scalar(accum),
            };
            let loss_value: f64 = loss.into_scalar().elem();
            self.grads.add::<AB, _>(model, &scaled.backward());
            self.step_loss += loss_value;
        }
        self.step_sequences += batch.batch_size;
        self.sequences_total += batch.batch_size;
        self.state.batch_in_epoch += 1;
        Ok(())
    }

    /// The loss of this replica's `rows` of the batch: cross entropy,
    /// `BCEWithLogits` or MSE, as the problem type says (HF's losses).
    fn loss(
        &self,
        logits: Tensor<AB, 2>,
        train: &TrainBatch,
        rows: std::ops::Range<usize>,
    ) -> Result<Tensor<AB, 1>> {
        let device = self.job.device;
        if self.problem == ProblemType::SingleLabelClassification {
            let labels: Vec<i64> = train.labels[rows].iter().map(|&l| l as i64).collect();
            let labels = Tensor::<AB, 1, Int>::from_data(labels.as_slice(), device);
            return Ok(classification_loss(
                logits,
                Labels::Classes(labels),
                &self.loss_options,
            ));
        }
        let [n, k] = logits.dims();
        let targets = train
            .targets
            .as_ref()
            .context("a multi-label or regression batch without float targets")?;
        let local = &targets[rows];
        if let Some(row) = local.iter().find(|r| r.len() != k) {
            bail!(
                "a target row of {} values for a head of {k} outputs",
                row.len()
            );
        }
        let flat: Vec<f32> = local.iter().flatten().copied().collect();
        let targets = Tensor::<AB, 1>::from_data(flat.as_slice(), device).reshape([n, k]);
        Ok(match self.problem {
            ProblemType::Regression => classification_loss(
                logits,
                Labels::Values(targets.reshape([n])),
                &self.loss_options,
            ),
            _ => bce_with_logits(logits, targets, self.pos_weight.as_deref()),
        })
    }

    /// This replica's share of the batch's loss: its rows' part of the
    /// (class-weighted) row count, so that the replicas' losses add up to the
    /// whole batch's mean.
    fn share_of_loss(&self, labels: &[usize], rows: std::ops::Range<usize>) -> f64 {
        let weight = |l: &usize| {
            self.loss_options
                .class_weights
                .as_ref()
                .map_or(1.0, |w| w[*l] as f64)
        };
        labels[rows].iter().map(weight).sum::<f64>() / labels.iter().map(weight).sum::<f64>()
    }

    /// Cross entropy against the teacher's probabilities, averaged over the
    /// whole batch (the replicas' parts add up to it); `None` without distillation.
    fn distillation_loss(
        &self,
        logits: Tensor<AB, 2>,
        train: &TrainBatch,
        rows: std::ops::Range<usize>,
    ) -> Option<Tensor<AB, 1>> {
        let (targets, examples) = (self.soft_targets?, train.examples.as_ref()?);
        let k = self.job.data.labels.len();
        let local: Vec<f32> = examples[rows.clone()]
            .iter()
            .flat_map(|&i| targets[i].iter().copied())
            .collect();
        let targets =
            Tensor::<AB, 1>::from_data(local.as_slice(), self.job.device).reshape([rows.len(), k]);
        Some(
            (targets * log_softmax(logits, 1))
                .sum()
                .neg()
                .div_scalar(train.batch.batch_size as f64),
        )
    }

    /// Sums the step's gradients and loss with the other replicas; the
    /// seconds it took.
    fn all_reduce(&mut self) -> Result<f64> {
        if self.job.replica.world == 1 {
            return Ok(0.0);
        }
        let started = Instant::now();
        let flat = self
            .grads
            .flatten(&self.params, &[self.step_loss as f32], self.job.device);
        let summed = self.job.replica.sum(flat)?;
        self.step_loss = self.grads.unflatten(summed, &self.params)[0] as f64;
        Ok(started.elapsed().as_secs_f64())
    }

    /// The optimizer step that ends micro-batch `micro`: all-reduce, loss
    /// unscaling, global-norm clipping, AdamW at the schedule's learning rate
    /// (or, for an f16 overflow, no step and half the loss scale).
    fn optimizer_step(
        &mut self,
        model: Model<AB>,
        micro: usize,
    ) -> Result<(Model<AB>, StepRecord)> {
        let config = self.job.config;
        let all_reduce_seconds = self.all_reduce()?;
        if !self.step_loss.is_finite() {
            return Err(TrainError::LossNotFinite {
                loss: self.step_loss,
                step: self.state.global_step + 1,
            }
            .into());
        }
        let s = &self.schedule;
        let lr = config.lr_scheduler.lr(
            config.lr,
            self.state.global_step,
            s.warmup_steps,
            s.total_steps,
        );
        if let Some(scaler) = self.state.loss_scaler {
            self.grads.scale(scaler.scale.recip());
        }
        let grad_norm = self.grads.clip_global_norm(config.max_grad_norm);
        let finite = grad_norm.is_finite();
        let model = if self
            .state
            .loss_scaler
            .as_mut()
            .is_none_or(|s| s.update(finite))
        {
            self.opt.step::<AB, _>(model, lr, &mut self.grads)
        } else {
            // f16 overflowed somewhere in the backward pass: GradScaler's
            // answer is to drop the step and retry at half the scale.
            self.grads.clear();
            self.state.skipped_steps += 1;
            tracing::debug!(
                "step {}: f16 gradients overflowed; skipped, loss scale now {}",
                self.state.global_step + 1,
                self.state.loss_scaler.map_or(1.0, |s| s.scale)
            );
            model
        };
        let micro_in_step = (micro % config.grad_accum) + 1;
        let record = self.advance(lr, grad_norm, micro_in_step, all_reduce_seconds);
        Ok((model, record))
    }

    /// Counts the step done and describes it.
    fn advance(
        &mut self,
        lr: f64,
        grad_norm: f64,
        micro_in_step: usize,
        all_reduce_seconds: f64,
    ) -> StepRecord {
        let state = &mut self.state;
        state.global_step += 1;
        if state.batch_in_epoch == self.schedule.micro_per_epoch {
            state.epoch += 1;
            state.batch_in_epoch = 0;
        }
        let record = StepRecord {
            step: state.global_step,
            epoch: state.epoch as f64
                + state.batch_in_epoch as f64 / self.schedule.micro_per_epoch as f64,
            loss: self.step_loss / micro_in_step as f64,
            lr,
            grad_norm,
            sequences: self.step_sequences,
            all_reduce_seconds,
            loss_scale: state.loss_scaler.map(|s| s.scale),
            skipped_steps: state.skipped_steps,
        };
        self.step_loss = 0.0;
        self.step_sequences = 0;
        record
    }

    /// Evaluation, checkpoint and the decision to go on, after a step.
    fn after_step(
        &mut self,
        model: &Model<AB>,
        record: &StepRecord,
        observer: &mut dyn TrainObserver,
    ) -> Result<Next> {
        let config = self.job.config;
        let step = self.state.global_step;
        let epoch_ended = self.state.batch_in_epoch == 0;
        let last = step >= self.schedule.total_steps;
        let eval_due = match config.eval_every {
            Some(n) => step % n == 0 || last,
            None => epoch_ended || last,
        };
        let (improved, reached) = if eval_due {
            self.evaluate_dev(model, record.epoch, observer)?
        } else {
            (false, false)
        };
        let save_due = match config.save_every {
            Some(n) => step % n == 0,
            None => eval_due,
        } || last;
        let interrupted = stop_requested() && self.job.replica.world == 1;
        if self.job.replica.is_main() && (save_due || improved || interrupted) {
            self.save(model)?;
        }
        if interrupted {
            return Err(TrainError::Interrupted {
                step,
                output: self.job.output.to_path_buf(),
            }
            .into());
        }
        if reached || self.out_of_patience() {
            self.early_stopped = true;
            return Ok(Next::Stop);
        }
        Ok(match (last, epoch_ended) {
            (true, _) => Next::Stop,
            (false, true) => Next::Epoch,
            (false, false) => Next::Step,
        })
    }

    fn save(&self, model: &Model<AB>) -> Result<()> {
        let job = self.job;
        save_checkpoint::<AB>(
            job.output,
            model,
            job.model_config,
            job.tokenizer,
            &self.opt,
            &self.state,
            job.config.keep_checkpoints,
        )
    }

    fn out_of_patience(&self) -> bool {
        let config = self.job.config;
        let Some(p) = config.patience else {
            return false;
        };
        let out = self.job.data.dev.is_some() && self.state.evals_without_improvement >= p;
        if out {
            tracing::info!(
                "early stopping: {p} evaluations without a better {}",
                self.metric
            );
        }
        out
    }

    /// Evaluates on the dev set (when there is one) and keeps the best score:
    /// whether it improved, and whether it reached `stop_at`.
    fn evaluate_dev(
        &mut self,
        model: &Model<AB>,
        epoch: f64,
        observer: &mut dyn TrainObserver,
    ) -> Result<(bool, bool)> {
        let Some(dev) = &self.job.data.dev else {
            return Ok((false, false));
        };
        let m = self.job.eval(model, dev)?;
        let metric = self.metric;
        let value = m.get(metric);
        let improved = self
            .state
            .best_metric
            .is_none_or(|best| metric.improves(value, best));
        if improved {
            self.state.best_metric = Some(value);
            self.state.best_step = Some(self.state.global_step);
            self.state.evals_without_improvement = 0;
        } else {
            self.state.evals_without_improvement += 1;
        }
        observer.on_eval(&EvalRecord {
            step: self.state.global_step,
            epoch,
            metrics: &m,
            best: improved,
        })?;
        let reached = self
            .job
            .config
            .stop_at
            .is_some_and(|target| metric.reaches(value, target));
        if reached {
            tracing::info!(
                "dev {metric} reached {}: stopping",
                self.job.config.stop_at.unwrap_or_default()
            );
        }
        Ok((improved, reached))
    }

    /// Restores the best weights (HF's `load_best_model_at_end`), writes the
    /// model folder and `eval.json` with the final dev and test scores.
    pub(crate) fn finish(
        self,
        mut model: Model<AB>,
        train_seconds: f64,
        observer: &mut dyn TrainObserver,
    ) -> Result<TrainSummary> {
        let job = self.job;
        let mut summary = TrainSummary {
            train_examples: job.data.train.len(),
            steps: self.state.global_step,
            early_stopped: self.early_stopped,
            best_step: self.state.best_step,
            dev: None,
            test: None,
            train_sequences_per_second: self.sequences_total as f64 / train_seconds.max(1e-9),
            train_seconds,
            pretraining: None,
        };
        if !job.replica.is_main() {
            // The checkpoints, and so the best weights, are replica 0's to keep.
            return Ok(summary);
        }
        if let Some(best) = self.state.best_step {
            if best != self.state.global_step || self.early_stopped {
                let mut fresh = AdamW::new::<AB, _>(self.opt.config.clone(), &model);
                let dir = checkpoint_dir(job.output, best);
                load_checkpoint(&dir, &mut model, &mut fresh, job.device)?;
                tracing::info!("kept the weights of step {best} (best {})", self.metric);
            }
        }
        save_classifier(&model, job.model_config, job.output)?;
        job.tokenizer.save(job.output)?;
        // Loading the folder then classifies long texts as training saw them.
        crate::long_text::TrainedLongText {
            long_text: job.config.long_text,
            stride: job.config.stride,
            chunk_pool: job.config.chunk_pool,
            max_length: job.config.max_length,
        }
        .save(job.output)?;
        let task = job.final_task(&model)?;
        let eval = |set: &Option<EncodedDataset>| {
            set.as_ref()
                .map(|d| job.eval_with(&model, d, &task))
                .transpose()
        };
        summary.dev = eval(&job.data.dev)?;
        summary.test = eval(&job.data.test)?;
        zhbert_model::write_atomic(
            &job.output.join(super::EVAL_FILE),
            serde_json::to_string_pretty(&summary)?.as_bytes(),
        )?;
        observer.on_end(&summary)?;
        Ok(summary)
    }
}

impl<AB: AutodiffBackend> Trainer<'_, AB> {
    /// The model's metrics on `set`, in the run's precision, without dropout.
    pub(crate) fn eval(&self, model: &Model<AB>, set: &EncodedDataset) -> Result<EvalMetrics> {
        self.eval_with(model, set, &self.eval_task())
    }

    /// How evaluations of this run score: its problem type, and for
    /// multi-label `threshold` for every label.
    fn eval_task(&self) -> EvalTask {
        EvalTask {
            problem_type: self.model_config.problem_type(),
            thresholds: vec![self.config.threshold; self.data.labels.len()],
        }
    }

    /// [`Trainer::eval`] scored as `task` says.
    fn eval_with(
        &self,
        model: &Model<AB>,
        set: &EncodedDataset,
        task: &EvalTask,
    ) -> Result<EvalMetrics> {
        autocast(self.config.precision, || {
            evaluate_task(
                &model.valid(),
                self.tokenizer,
                set,
                &self.data.labels,
                task,
                self.config.batch_size.max(32),
                self.device,
            )
        })
    }

    /// The scoring of the final model: for multi-label, its thresholds
    /// (tuned on the dev set with `tune_thresholds`), saved in
    /// `thresholds.json` for `eval` and `predict`.
    fn final_task(&self, model: &Model<AB>) -> Result<EvalTask> {
        let mut task = self.eval_task();
        if task.problem_type != ProblemType::MultiLabelClassification {
            return Ok(task);
        }
        let dev = self
            .data
            .dev
            .as_ref()
            .filter(|_| self.config.tune_thresholds);
        if let Some(dev) = dev {
            let logits = autocast(self.config.precision, || {
                crate::inference::document_logits(
                    &model.valid(),
                    self.tokenizer,
                    dev,
                    self.config.batch_size.max(32),
                    self.device,
                )
            })?;
            let probs = crate::tasks::sigmoid_rows(&logits);
            let truth = dev.document_targets().unwrap_or_default();
            task.thresholds = crate::tasks::tune_thresholds(&truth, &probs, self.config.threshold);
            tracing::info!("thresholds tuned on dev: {:?}", task.thresholds);
        } else if self.config.tune_thresholds {
            tracing::warn!(
                "no dev set to tune thresholds on: every label keeps {}",
                self.config.threshold
            );
        }
        crate::tasks::Thresholds {
            labels: self.data.labels.clone(),
            thresholds: task.thresholds.clone(),
            tuned: dev.is_some(),
        }
        .save(self.output)?;
        Ok(task)
    }
}
