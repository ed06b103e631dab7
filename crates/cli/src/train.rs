//! `zhbert train`: flags (and `--config FILE.toml`) into a
//! [`zhbert_train::FineTune`], then `fit`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::backend::Autodiff;
use serde::Deserialize;
use zhbert_data::Columns;
use zhbert_model::Precision;
use zhbert_train::{
    ClassWeights, ConfigError, FineTune, LrScheduler, Metric, TrainConfig, TrainError,
    TrainSummary, Warmup,
};

use crate::{with_backend, with_backend_devices, BackendArgs};

/// A TOML value of an option whose flag is text, read as the flag would be:
/// `warmup = 500`, `warmup = 0.1`, `class_weights = [1, 2.5]` as `500`, `0.1`,
/// `1,2.5`; strings as they are.
fn flag_text<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Value {
        Text(String),
        Integer(i64),
        Float(f64),
        List(Vec<f64>),
    }
    let text = Option::<Value>::deserialize(d)?.map(|v| match v {
        Value::Text(s) => s,
        Value::Integer(n) => n.to_string(),
        Value::Float(x) => x.to_string(),
        Value::List(xs) => xs.iter().map(f64::to_string).collect::<Vec<_>>().join(","),
    });
    text.map(|t| t.parse().map_err(serde::de::Error::custom))
        .transpose()
}

/// Every option of `zhbert train`; each can also come from `--config FILE.toml`
/// (same names, snake_case); flags win.
#[derive(clap::Args, Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainArgs {
    /// TOML file with any of these options.
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Training data: CSV/TSV with a header, JSONL, or text<TAB>label .txt (with class.txt).
    #[arg(long)]
    train: Option<PathBuf>,
    /// Development data (same layout); without it a split of --train is used.
    #[arg(long)]
    dev: Option<PathBuf>,
    /// Test data, evaluated once at the end.
    #[arg(long)]
    test: Option<PathBuf>,
    /// Model folder, Hub id, or preset to train from scratch (tiny-zh, tiny-zh-char).
    #[arg(long)]
    model: Option<String>,
    /// Output folder: an HF model folder plus metrics, plots, eval.json, checkpoints.
    #[arg(long, visible_alias = "output-dir")]
    output: Option<PathBuf>,
    /// Column or field of the text.
    #[arg(long)]
    text_column: Option<String>,
    /// Column or field of the second text (pair tasks).
    #[arg(long)]
    text_pair_column: Option<String>,
    /// Column or field of the label.
    #[arg(long)]
    label_column: Option<String>,
    /// Malformed rows: fail (default) or skip.
    #[arg(long, value_parser = ["fail", "skip"])]
    on_bad_row: Option<String>,
    /// Dev and test fractions when only --train is given [default: 0.1].
    #[arg(long, allow_negative_numbers = true)]
    split: Option<f64>,
    /// Passes over the training data [default: 3; presets: their own].
    #[arg(long, visible_alias = "num-train-epochs")]
    epochs: Option<usize>,
    /// Stop after this many optimizer steps.
    #[arg(long, allow_negative_numbers = true)]
    max_steps: Option<usize>,
    /// Peak learning rate [default: 5e-5; tiny-zh: 3e-4].
    #[arg(long, visible_alias = "learning-rate", allow_negative_numbers = true)]
    lr: Option<f64>,
    /// Sequences per batch (of all replicas together) [default: 32].
    #[arg(long, visible_alias = "per-device-train-batch-size")]
    batch_size: Option<usize>,
    /// Longest input in tokens; longer texts are truncated [default: 128; tiny-zh-char: 64].
    #[arg(long, visible_alias = "max-seq-length")]
    max_length: Option<usize>,
    /// Warmup: steps (500) or ratio (0.1) [default: 0; tiny-zh: 0.1].
    #[arg(long, visible_aliases = ["warmup-ratio", "warmup-steps"], allow_negative_numbers = true)]
    #[serde(deserialize_with = "flag_text")]
    warmup: Option<Warmup>,
    /// AdamW's decoupled weight decay, not on biases and LayerNorm [default: 0; tiny-zh: 0.01].
    #[arg(long, allow_negative_numbers = true)]
    weight_decay: Option<f64>,
    /// AdamW's beta1 (HF's adam_beta1; default 0.9).
    #[arg(long)]
    adam_beta1: Option<f64>,
    /// AdamW's beta2 (HF's adam_beta2; default 0.999).
    #[arg(long)]
    adam_beta2: Option<f64>,
    /// AdamW's eps (HF's adam_epsilon; default 1e-8).
    #[arg(long)]
    adam_epsilon: Option<f64>,
    /// Micro-batches per optimizer step [default: 1].
    #[arg(long, visible_alias = "gradient-accumulation-steps")]
    grad_accum: Option<usize>,
    /// Clip the global gradient norm (0 disables) [default: 1.0].
    #[arg(long, allow_negative_numbers = true)]
    max_grad_norm: Option<f64>,
    /// Seed of the split, data order, dropout and fresh weights [default: 42].
    #[arg(long)]
    seed: Option<u64>,
    /// Evaluate every N steps [default: each epoch].
    #[arg(long, visible_alias = "eval-steps")]
    eval_every: Option<usize>,
    /// Checkpoint every N steps [default: at each evaluation].
    #[arg(long, visible_alias = "save-steps")]
    save_every: Option<usize>,
    /// Checkpoints kept besides the best [default: 2].
    #[arg(long, visible_alias = "save-total-limit")]
    keep_checkpoints: Option<usize>,
    /// Early stopping: evaluations without improvement.
    #[arg(long)]
    patience: Option<usize>,
    /// Stop once the dev --metric reaches this value (time-to-accuracy runs).
    #[arg(long)]
    stop_at: Option<f64>,
    /// Metric for the best checkpoint: accuracy, macro_f1, micro_f1, loss [default: accuracy].
    #[arg(long, visible_alias = "metric-for-best-model")]
    metric: Option<Metric>,
    /// Class weights: auto or a comma-separated list in label order.
    #[arg(long)]
    #[serde(deserialize_with = "flag_text")]
    class_weights: Option<ClassWeights>,
    /// Label smoothing of the loss, in [0, 1) [default: 0].
    #[arg(long, allow_negative_numbers = true)]
    label_smoothing: Option<f32>,
    /// Batch texts of similar length together (`--group-by-length` or `--group-by-length false`).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    group_by_length: Option<bool>,
    /// Log every N steps when not on a terminal.
    #[arg(long)]
    log_every: Option<usize>,
    /// Learning rate after warmup (HF's lr_scheduler_type): linear (default),
    /// cosine, constant (no warmup) or constant_with_warmup. Fine-tuning only;
    /// --pretrain-epochs keeps its linear schedule.
    #[arg(long)]
    lr_scheduler: Option<LrScheduler>,
    /// Float type of matmuls and attention: fp32, bf16 or f16 (mixed precision:
    /// fp32 master weights, optimizer state, softmax, LayerNorm and loss; f16
    /// scales the loss dynamically). Needs flex, wgpu or cuda; pretraining
    /// (--pretrain-epochs) stays fp32.
    #[arg(long)]
    precision: Option<Precision>,
    /// HF's --bf16: the same as --precision bf16.
    #[arg(long, conflicts_with_all = ["precision", "fp16"])]
    #[serde(skip)]
    bf16: bool,
    /// HF's --fp16: the same as --precision f16.
    #[arg(long, conflicts_with = "precision")]
    #[serde(skip)]
    fp16: bool,
    /// f16's first loss scale (default 65536, as torch's GradScaler).
    #[arg(long)]
    initial_loss_scale: Option<f64>,
    /// Distillation weight: train on (1 - W) x the labels' loss + W x the loss
    /// against a char 1-3-gram TF-IDF + logistic regression teacher fitted on
    /// the training set (out of fold); 0: labels only (default; tiny-zh: 0.5).
    #[arg(long)]
    distill: Option<f64>,
    /// Read the training file again every epoch instead of holding it in memory
    /// (for files larger than memory; needs --dev).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    streaming: Option<bool>,
    /// With --streaming: examples held for shuffling (default 10000).
    #[arg(long)]
    shuffle_buffer: Option<usize>,
    /// Masked-LM pretraining epochs on the training texts before fine-tuning a
    /// preset (0: none; default: the preset's).
    #[arg(long)]
    pretrain_epochs: Option<usize>,
    /// Continue the run in --output from its last checkpoint.
    #[arg(long)]
    #[serde(skip)]
    resume: bool,
    /// Data-parallel training on these devices of one backend, one replica each:
    /// `cuda:0,cuda:1`, `wgpu:0,wgpu:1`, or `cpu,cpu`. --batch-size is the batch
    /// of all replicas together.
    #[arg(long)]
    #[serde(skip)]
    devices: Option<String>,
    /// Data-parallel training over this many machines (nodes): start one
    /// `zhbert train` per node with the same options and its --node-rank, and
    /// `zhbert orchestrator` somewhere they all reach.
    #[arg(long, requires_all = ["node_rank", "orchestrator", "node_address"])]
    #[serde(skip)]
    nodes: Option<usize>,
    /// This node's index, 0 to --nodes - 1; node 0 writes the output.
    #[arg(long, requires = "nodes")]
    #[serde(skip)]
    node_rank: Option<usize>,
    /// The orchestrator's address, ws://host:port.
    #[arg(long, requires = "nodes")]
    #[serde(skip)]
    orchestrator: Option<String>,
    /// This node's address as the other nodes reach it, ws://host:port (it
    /// serves gradients on that port).
    #[arg(long, requires = "nodes")]
    #[serde(skip)]
    node_address: Option<String>,
    #[command(flatten)]
    #[serde(skip)]
    backend: BackendArgs,
}

/// `a.or(b)` for every option: flags first, then the TOML file.
macro_rules! merge {
    ($a:ident, $b:ident, $($f:ident),*) => { $( if $a.$f.is_none() { $a.$f = $b.$f.take(); } )* };
}

impl TrainArgs {
    fn merged(mut self) -> Result<Self> {
        if let Some(path) = self.config.clone() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let mut file: TrainArgs = toml::from_str(&text).map_err(|e| {
                anyhow::anyhow!("{}: {}", path.display(), e.to_string().replace('\n', " "))
            })?;
            merge!(
                self,
                file,
                train,
                dev,
                test,
                model,
                output,
                text_column,
                text_pair_column,
                label_column,
                on_bad_row,
                split,
                epochs,
                max_steps,
                lr,
                batch_size,
                max_length,
                warmup,
                weight_decay,
                adam_beta1,
                adam_beta2,
                adam_epsilon,
                grad_accum,
                max_grad_norm,
                seed,
                eval_every,
                save_every,
                keep_checkpoints,
                patience,
                stop_at,
                metric,
                class_weights,
                label_smoothing,
                log_every,
                group_by_length,
                lr_scheduler,
                precision,
                initial_loss_scale,
                distill,
                pretrain_epochs,
                streaming,
                shuffle_buffer
            );
        }
        Ok(self)
    }

    /// Flags and file over `c` (the model's defaults: a preset's tuned
    /// settings, or HF's).
    fn apply(&self, c: &mut TrainConfig) {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f.clone() { c.$f = v; } )* };
        }
        if self.bf16 {
            c.precision = Precision::Bf16;
        }
        if self.fp16 {
            c.precision = Precision::F16;
        }
        set!(
            epochs,
            lr,
            batch_size,
            max_length,
            weight_decay,
            adam_beta1,
            adam_beta2,
            adam_epsilon,
            grad_accum,
            seed,
            keep_checkpoints,
            metric,
            label_smoothing,
            log_every,
            group_by_length,
            lr_scheduler,
            precision,
            distill,
            warmup
        );
        c.max_steps = self.max_steps.or(c.max_steps);
        c.eval_every = self.eval_every.or(c.eval_every);
        c.save_every = self.save_every.or(c.save_every);
        c.patience = self.patience.or(c.patience);
        c.stop_at = self.stop_at.or(c.stop_at);
        c.initial_loss_scale = self.initial_loss_scale.or(c.initial_loss_scale);
        c.class_weights = self.class_weights.clone().or(c.class_weights.take());
        if let Some(n) = self.max_grad_norm {
            // 0 turns clipping off, as HF's max_grad_norm 0 does.
            c.max_grad_norm = (n != 0.0).then_some(n);
        }
    }

    /// The job these options describe.
    fn fine_tune(&self) -> Result<FineTune> {
        let (Some(train), Some(model), Some(output)) = (&self.train, &self.model, &self.output)
        else {
            bail!("zhbert train needs --train, --model and --output (as flags or in --config)");
        };
        let options = self.clone();
        let mut job = FineTune::new(model.clone())
            .train_file(train)
            .output(output)
            .columns(Columns {
                text: self.text_column.clone().unwrap_or_else(|| "text".into()),
                text_pair: self.text_pair_column.clone(),
                label: self.label_column.clone().unwrap_or_else(|| "label".into()),
            })
            .skip_bad_rows(self.on_bad_row.as_deref() == Some("skip"))
            .split(self.split.unwrap_or(0.1))
            .resume(self.resume)
            .configure(move |c| options.apply(c));
        if let Some(dev) = &self.dev {
            job = job.dev_file(dev);
        }
        if let Some(test) = &self.test {
            job = job.test_file(test);
        }
        if let Some(n) = self.pretrain_epochs {
            job = job.pretrain_epochs(n);
        }
        if self.streaming.unwrap_or(false) {
            job = job.streaming(self.shuffle_buffer.unwrap_or(10_000));
        }
        if let Some(n) = self.backend.pad_to_multiple_of {
            job = job.pad_to_multiple_of(n);
        }
        job.train_config().map_err(in_flag_words)?;
        Ok(job)
    }
}

/// Ctrl-C or SIGTERM: the run finishes its step, writes a checkpoint and
/// stops with a line that says how to resume (as HF's Trainer users expect);
/// a second one ends the process at once.
fn stop_cleanly_on_signals() {
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // SAFETY: the handler only reads and stores an atomic flag, or exits:
        // both async-signal-safe.
        let registered = unsafe {
            signal_hook::low_level::register(signal, || {
                if zhbert_train::stop_requested() {
                    signal_hook::low_level::exit(130);
                }
                zhbert_train::request_stop();
            })
        };
        if let Err(e) = registered {
            tracing::warn!("cannot catch signal {signal}: {e}");
        }
    }
}

pub fn run(args: TrainArgs) -> Result<()> {
    let args = args.merged()?;
    let job = args.fine_tune()?;
    stop_cleanly_on_signals();
    let summary = if args.devices.is_some() || args.nodes.is_some() {
        run_data_parallel(&args, &job)?
    } else {
        let kind = args.backend.kind()?;
        Some(with_backend!(kind, args.backend.device, |B, device| job
            .fit::<Autodiff<B>>(&device)
            .map_err(in_flag_words))?)
    };
    // Only the process that wrote the output folder reports it.
    if let Some(summary) = summary {
        print_summary(&summary, args.output.as_deref().unwrap_or(Path::new(".")));
    }
    Ok(())
}

/// A library error in the words of the CLI: a setting named as its flag.
fn in_flag_words(e: anyhow::Error) -> anyhow::Error {
    if let Some(c) = e.downcast_ref::<ConfigError>() {
        return anyhow::anyhow!(
            "--{} {}: {}",
            c.option.replace('_', "-"),
            c.value,
            c.expected
        );
    }
    if let Some(TrainError::Interrupted { step, output }) = e.downcast_ref::<TrainError>() {
        return anyhow::anyhow!(
            "interrupted at step {step}; a checkpoint is in {}: run the same command with --resume to go on",
            output.display()
        );
    }
    e
}

fn print_summary(summary: &TrainSummary, output: &Path) {
    if let Some(p) = &summary.pretraining {
        let losses: Vec<f64> = p
            .epoch_losses
            .iter()
            .map(|l| (l * 1e4).round() / 1e4)
            .collect();
        println!(
            "pretrained {} steps in {:.0}s ({:.1} sequences/s), mlm loss by epoch {losses:?}",
            p.steps, p.seconds, p.sequences_per_second
        );
    }
    println!(
        "trained {} steps in {:.0}s ({:.1} sequences/s){}",
        summary.steps,
        summary.train_seconds,
        summary.train_sequences_per_second,
        if summary.early_stopped {
            ", stopped early"
        } else {
            ""
        }
    );
    if let Some(d) = &summary.dev {
        println!("dev accuracy {:.4} macro F1 {:.4}", d.accuracy, d.macro_f1);
    }
    if let Some(t) = &summary.test {
        println!("test accuracy {:.4} macro F1 {:.4}", t.accuracy, t.macro_f1);
    }
    println!(
        "model, metrics.jsonl, eval.json and plots in {}",
        output.display()
    );
}

/// `--devices` and `--nodes`: one replica per device, each in its own thread
/// with its own copy of the data and model; replica 0 logs and writes.
#[cfg(feature = "collective")]
fn run_data_parallel(args: &TrainArgs, job: &FineTune) -> Result<Option<TrainSummary>> {
    let (kind, devices) = match &args.devices {
        Some(list) => parse_devices(list, args.backend.backend)?,
        None => (args.backend.kind()?, vec![args.backend.device]),
    };
    let nodes = match (
        args.nodes,
        &args.node_rank,
        &args.orchestrator,
        &args.node_address,
    ) {
        (Some(count), Some(rank), Some(orchestrator), Some(address)) => Some(zhbert_train::Nodes {
            count,
            rank: *rank,
            orchestrator: orchestrator.clone(),
            address: address.clone(),
        }),
        _ => None,
    };
    with_backend_devices!(kind, &devices, |B, devices| job
        .fit_data_parallel::<Autodiff<B>>(&devices, nodes)
        .map_err(in_flag_words))
}

#[cfg(not(feature = "collective"))]
fn run_data_parallel(_args: &TrainArgs, _job: &FineTune) -> Result<Option<TrainSummary>> {
    bail!("--devices and --nodes need zhbert built with the `collective` feature")
}

/// `cuda:0,cuda:1` (or `cpu,cpu`): one backend and each device's index.
#[cfg(feature = "collective")]
fn parse_devices(
    list: &str,
    backend: Option<crate::backend::BackendKind>,
) -> Result<(crate::backend::BackendKind, Vec<Option<usize>>)> {
    use crate::backend::BackendKind;
    let mut kind = None;
    let mut devices = Vec::new();
    for item in list.split(',').map(str::trim) {
        let (name, index) = match item.split_once(':') {
            Some((name, i)) => (
                name,
                Some(i.parse::<usize>().map_err(|_| {
                    anyhow::anyhow!("--devices {list:?}: {item:?} is not backend:index")
                })?),
            ),
            None => (item, None),
        };
        let k = match name {
            "cpu" => match backend {
                Some(b @ (BackendKind::Flex | BackendKind::Ndarray)) => b,
                _ => BackendKind::available()
                    .into_iter()
                    .find(|b| matches!(b, BackendKind::Flex | BackendKind::Ndarray))
                    .ok_or_else(|| {
                        anyhow::anyhow!("--devices {list:?}: no CPU backend compiled in")
                    })?,
            },
            "flex" => BackendKind::Flex,
            "ndarray" => BackendKind::Ndarray,
            "wgpu" => BackendKind::Wgpu,
            "cuda" => BackendKind::Cuda,
            other => bail!("--devices {list:?}: unknown device {other:?} (cpu, cuda:N, wgpu:N)"),
        };
        if kind.is_some_and(|first| first != k) {
            bail!("--devices {list:?}: all devices must be of one backend");
        }
        if backend.is_some_and(|b| b != k) {
            bail!("--devices {list:?} does not match --backend");
        }
        kind = Some(k);
        devices.push(index);
    }
    let kind = kind.ok_or_else(|| anyhow::anyhow!("--devices is empty"))?;
    kind.ensure_compiled()?;
    Ok((kind, devices))
}

#[cfg(test)]
mod tests {
    use super::{ClassWeights, LrScheduler, TrainArgs, TrainConfig, Warmup};

    /// The configuration the options give over `TrainConfig::default()`.
    fn config_of(args: &TrainArgs) -> Result<TrainConfig, String> {
        let mut c = TrainConfig::default();
        args.apply(&mut c);
        c.validate().map(|()| c).map_err(|e| e.to_string())
    }

    #[test]
    fn toml_options_read_as_their_flags() {
        let args: TrainArgs =
            toml::from_str("warmup = 500\nclass_weights = [1, 2.5]\nlr_scheduler = \"cosine\"\n")
                .unwrap();
        let c = config_of(&args).unwrap();
        assert_eq!(c.warmup, Warmup::Steps(500));
        assert_eq!(c.lr_scheduler, LrScheduler::Cosine);
        assert_eq!(c.class_weights, Some(ClassWeights::List(vec![1.0, 2.5])));
        let args: TrainArgs = toml::from_str("warmup = 0.1\nclass_weights = \"auto\"\n").unwrap();
        let c = config_of(&args).unwrap();
        assert_eq!(c.warmup, Warmup::Ratio(0.1));
        assert_eq!(c.class_weights, Some(ClassWeights::Balanced));
        assert!(toml::from_str::<TrainArgs>("lr_scheduler = \"warm\"\n").is_err());
        assert!(toml::from_str::<TrainArgs>("metric = \"f1\"\n").is_err());
        assert!(toml::from_str::<TrainArgs>("warmup = 1.5\n").is_err());
    }

    /// The AdamW settings a run is given are those its optimizer gets (the
    /// parity test checks that optimizer against torch's with the same ones).
    #[test]
    fn adam_settings_reach_the_optimizer() {
        let args: TrainArgs = toml::from_str(
            "lr = 2e-5\nweight_decay = 0.1\nadam_beta1 = 0.8\nadam_beta2 = 0.98\nadam_epsilon = 1e-6\n",
        )
        .unwrap();
        let adamw = config_of(&args).unwrap().adamw();
        assert_eq!(
            adamw,
            zhbert_train::AdamWConfig {
                lr: 2e-5,
                beta1: 0.8,
                beta2: 0.98,
                eps: 1e-6,
                weight_decay: 0.1,
            }
        );
        for bad in [
            "adam_beta2 = 1.0",
            "adam_beta1 = -0.1",
            "adam_epsilon = -1e-8",
        ] {
            let err = config_of(&toml::from_str::<TrainArgs>(bad).unwrap()).unwrap_err();
            assert!(err.starts_with("adam_"), "{bad}: {err}");
        }
    }
}
