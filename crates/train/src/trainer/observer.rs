//! What a run reports as it goes: [`TrainObserver`] is told of every optimizer
//! step, every evaluation and the end, as HF's `TrainerCallback`s are. The
//! default, [`Reporter`], draws the progress bar (or log lines off a terminal),
//! appends `metrics.jsonl` and draws the plots.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use super::TrainSummary;
use crate::metrics::EvalMetrics;

/// Where a run starts, as observers are told of it.
#[derive(Debug, Clone)]
pub struct TrainPlan {
    /// Optimizer steps of the whole run.
    pub total_steps: usize,
    /// The step it starts from (after a resume, the checkpoint's).
    pub start_step: usize,
    /// Replicas of a data-parallel run (1 otherwise).
    pub replicas: usize,
}

/// One optimizer step.
#[derive(Debug, Clone)]
pub struct StepRecord {
    /// Optimizer steps done, this one included.
    pub step: usize,
    /// Epochs done, as a fraction.
    pub epoch: f64,
    /// Mean loss of the step's micro-batches.
    pub loss: f64,
    /// The learning rate of the step.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Sequences in the step (all replicas).
    pub sequences: usize,
    /// Seconds spent summing gradients with the other replicas.
    pub all_reduce_seconds: f64,
    /// f16's loss scale after the step.
    pub loss_scale: Option<f64>,
    /// Steps skipped so far because their f16 gradients overflowed.
    pub skipped_steps: usize,
}

/// One evaluation on the dev set.
#[derive(Debug, Clone)]
pub struct EvalRecord<'a> {
    /// Optimizer steps done.
    pub step: usize,
    /// Epochs done, as a fraction.
    pub epoch: f64,
    /// The metrics.
    pub metrics: &'a EvalMetrics,
    /// Whether it is the best so far.
    pub best: bool,
}

/// Told of a run's progress (HF's `TrainerCallback`); every method does
/// nothing by default. An error stops the run.
pub trait TrainObserver {
    /// Before the first step.
    fn on_start(&mut self, _plan: &TrainPlan) -> Result<()> {
        Ok(())
    }
    /// After every optimizer step.
    fn on_step(&mut self, _step: &StepRecord) -> Result<()> {
        Ok(())
    }
    /// After every evaluation on the dev set.
    fn on_eval(&mut self, _eval: &EvalRecord<'_>) -> Result<()> {
        Ok(())
    }
    /// After the last step, before the best weights are restored and evaluated.
    fn on_training_done(&mut self) {}
    /// Once the output folder holds the model and `eval.json`.
    fn on_end(&mut self, _summary: &TrainSummary) -> Result<()> {
        Ok(())
    }
}

/// An observer that reports nothing (data-parallel replicas other than 0).
impl TrainObserver for () {}

/// The default observer: a progress bar on a terminal, log lines every
/// `log_every` steps elsewhere; `metrics.jsonl` (one line per logged step and
/// per evaluation); `loss.svg`, `metrics.svg` and `confusion.svg` at the end.
pub struct Reporter {
    out: PathBuf,
    labels: Vec<String>,
    log_every: usize,
    total_steps: usize,
    replicas: usize,
    log: Option<MetricsLog>,
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
    sequences: usize,
    window: Window,
}

/// What happened since the last logged step.
struct Window {
    started: Instant,
    sequences: usize,
    loss_sum: f64,
    steps: usize,
    all_reduce_seconds: f64,
}

impl Window {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            sequences: 0,
            loss_sum: 0.0,
            steps: 0,
            all_reduce_seconds: 0.0,
        }
    }
}

impl Reporter {
    /// Reports into output folder `out`, whose labels are `labels`.
    pub fn new(out: &Path, labels: &[String], log_every: usize) -> Self {
        Self {
            out: out.to_path_buf(),
            labels: labels.to_vec(),
            log_every: log_every.max(1),
            total_steps: 0,
            replicas: 1,
            log: None,
            bar: None,
            started: Instant::now(),
            sequences: 0,
            window: Window::new(),
        }
    }

    /// A line for the user: above the bar, or as a log line.
    fn say(&self, line: String) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => tracing::info!("{line}"),
        }
    }

    /// The `metrics.jsonl` line and log line of the steps since the last one.
    fn log_window(&mut self, step: &StepRecord) -> Result<()> {
        let w = std::mem::replace(&mut self.window, Window::new());
        let speed = w.sequences as f64 / w.started.elapsed().as_secs_f64().max(1e-9);
        let avg = w.loss_sum / w.steps.max(1) as f64;
        let mut line = serde_json::json!({
            "step": step.step, "epoch": step.epoch, "loss": avg, "lr": step.lr,
            "grad_norm": step.grad_norm, "sequences_per_second": speed,
            "elapsed_seconds": self.started.elapsed().as_secs_f64(),
        });
        if let Some(scale) = step.loss_scale {
            line["loss_scale"] = scale.into();
            line["skipped_steps"] = step.skipped_steps.into();
        }
        if self.replicas > 1 {
            // Seconds per step spent summing gradients with the other replicas.
            line["all_reduce_seconds"] = (w.all_reduce_seconds / w.steps.max(1) as f64).into();
        }
        if let Some(log) = &mut self.log {
            log.write(line)?;
        }
        if self.bar.is_none() {
            tracing::info!(
                "step {}/{} epoch {:.2} loss {avg:.4} lr {:.2e} grad_norm {:.3} {speed:.1} seq/s",
                step.step,
                self.total_steps,
                step.epoch,
                step.lr,
                step.grad_norm
            );
        }
        Ok(())
    }
}

impl TrainObserver for Reporter {
    fn on_start(&mut self, plan: &TrainPlan) -> Result<()> {
        self.total_steps = plan.total_steps;
        self.replicas = plan.replicas;
        self.log = Some(MetricsLog::open(
            &self.out.join("metrics.jsonl"),
            plan.start_step,
        )?);
        self.bar = progress_bar(plan.total_steps, plan.start_step);
        self.started = Instant::now();
        self.window = Window::new();
        Ok(())
    }

    fn on_step(&mut self, step: &StepRecord) -> Result<()> {
        self.sequences += step.sequences;
        self.window.sequences += step.sequences;
        self.window.loss_sum += step.loss;
        self.window.steps += 1;
        self.window.all_reduce_seconds += step.all_reduce_seconds;
        if step.step % self.log_every == 0 || step.step == self.total_steps {
            self.log_window(step)?;
        }
        if let Some(bar) = &self.bar {
            bar.set_position(step.step as u64);
            bar.set_message(format!(
                "loss {:.4} lr {:.2e} {:.1} seq/s",
                step.loss,
                step.lr,
                self.sequences as f64 / self.started.elapsed().as_secs_f64()
            ));
        }
        Ok(())
    }

    fn on_eval(&mut self, eval: &EvalRecord<'_>) -> Result<()> {
        let m = eval.metrics;
        self.say(format!(
            "eval step {}: loss {:.4} {}{}",
            eval.step,
            m.loss,
            m.headline(),
            if eval.best { " (best)" } else { "" }
        ));
        if let Some(log) = &mut self.log {
            log.write(serde_json::json!({
                "step": eval.step, "epoch": eval.epoch, "eval": m,
                "elapsed_seconds": self.started.elapsed().as_secs_f64(),
            }))?;
        }
        Ok(())
    }

    fn on_training_done(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn on_end(&mut self, summary: &TrainSummary) -> Result<()> {
        let shown = match (&summary.dev, &summary.test) {
            (Some(dev), _) => Some(("dev", dev)),
            (None, Some(test)) => Some(("test", test)),
            (None, None) => None,
        };
        if let Err(e) = crate::plots::write_plots(&self.out, &self.labels, shown) {
            tracing::warn!("plots not written: {e:#}");
        }
        Ok(())
    }
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
