//! `zhbert train`: flags (and `--config FILE.toml`) into a
//! [`zhbert_train::FineTune`], then `fit`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::backend::Autodiff;
use serde::{Deserialize, Serialize};
use zhbert_data::Columns;
use zhbert_model::Precision;
use zhbert_train::{ConfigError, FineTune, JobError, TrainConfig, TrainError, TrainSummary};

use crate::{with_backend, BackendArgs};

/// The job's options that a `--config` TOML file can also give: what to
/// train on, from what, and where to write it. Unset here is "not given", so
/// that the file fills in what the flags leave out.
#[derive(clap::Args, Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobArgs {
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
    /// Multi-label CSV/TSV: the separator of a cell's labels ("|":
    /// `sports|finance`; an empty cell is no label); makes the run multi-label.
    #[arg(long)]
    label_separator: Option<String>,
    /// Malformed rows: fail (default) or skip.
    #[arg(long, value_parser = ["fail", "skip"])]
    on_bad_row: Option<String>,
    /// Dev and test fractions when only --train is given [default: 0.1].
    #[arg(long, allow_negative_numbers = true)]
    split: Option<f64>,
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
}

/// Every option of `zhbert train`: the job's ([`JobArgs`]: data, model,
/// output, ...) and the run's settings from [`TrainConfig`] (flattened: one
/// definition each). Either can also come from `--config FILE.toml` (same
/// names, snake_case); flags win over the file, the file over the model's
/// defaults.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TrainArgs {
    /// TOML file with any of these options.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    job: JobArgs,
    /// Continue the run in --output from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Data-parallel training on these devices of one backend, one replica each:
    /// `cuda:0,cuda:1`, `wgpu:0,wgpu:1`, or `cpu,cpu`. --batch-size is the batch
    /// of all replicas together.
    #[arg(long)]
    devices: Option<String>,
    /// Data-parallel training over this many machines (nodes): start one
    /// `zhbert train` per node with the same options and its --node-rank, and
    /// `zhbert orchestrator` somewhere they all reach.
    #[arg(long, requires_all = ["node_rank", "orchestrator", "node_address"])]
    nodes: Option<usize>,
    /// This node's index, 0 to --nodes - 1; node 0 writes the output.
    #[arg(long, requires = "nodes")]
    node_rank: Option<usize>,
    /// The orchestrator's address, ws://host:port.
    #[arg(long, requires = "nodes")]
    orchestrator: Option<String>,
    /// This node's address as the other nodes reach it, ws://host:port (it
    /// serves gradients on that port).
    #[arg(long, requires = "nodes")]
    node_address: Option<String>,
    /// HF's --bf16: the same as --precision bf16.
    #[arg(long, conflicts_with_all = ["precision", "fp16"])]
    bf16: bool,
    /// HF's --fp16: the same as --precision f16.
    #[arg(long, conflicts_with = "precision")]
    fp16: bool,
    #[command(flatten)]
    settings: TrainConfig,
    /// The settings given in the TOML file and as flags, by name: what
    /// changes the model's defaults.
    #[arg(skip)]
    given: serde_json::Map<String, serde_json::Value>,
    #[command(flatten)]
    backend: BackendArgs,
}

/// The names of [`TrainConfig`]'s settings, as in TOML and serde.
fn setting_names() -> Vec<String> {
    match serde_json::to_value(TrainConfig::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => unreachable!("TrainConfig serializes as a map"),
    }
}

impl JobArgs {
    /// Each option of `self` (the flags), or where unset, of `file`. Through
    /// serde, so that an option added to [`JobArgs`] is merged with no more code.
    fn or(self, file: JobArgs) -> Result<JobArgs> {
        let serde_json::Value::Object(mut merged) = serde_json::to_value(&self)? else {
            unreachable!("JobArgs serializes as a map");
        };
        let serde_json::Value::Object(from_file) = serde_json::to_value(&file)? else {
            unreachable!("JobArgs serializes as a map");
        };
        for (name, value) in from_file {
            if merged.get(&name).is_none_or(|v| v.is_null()) {
                merged.insert(name, value);
            }
        }
        Ok(serde_json::from_value(serde_json::Value::Object(merged))?)
    }
}

impl TrainArgs {
    /// The options with the TOML file read in, and the settings given by the
    /// file and by flags (`matches`: which flags were on the command line).
    fn merged(mut self, matches: &clap::ArgMatches) -> Result<Self> {
        let names = setting_names();
        if let Some(path) = self.config.clone() {
            let (file, settings) = read_toml(&path, &names)?;
            self.given = settings;
            self.job = self.job.or(file)?;
        }
        // 0 turns clipping off, as HF's max_grad_norm 0 does.
        if self.settings.max_grad_norm == Some(0.0) {
            self.settings.max_grad_norm = None;
        }
        // Checked as values before they become JSON, where NaN has no place.
        self.settings
            .validate()
            .map_err(|e| in_flag_words(e.into()))?;
        let flags = serde_json::to_value(&self.settings)?;
        for name in &names {
            if matches.value_source(name) == Some(clap::parser::ValueSource::CommandLine) {
                self.given.insert(name.clone(), flags[name].clone());
            }
        }
        if self.bf16 || self.fp16 {
            let precision = if self.bf16 {
                Precision::Bf16
            } else {
                Precision::F16
            };
            self.given
                .insert("precision".into(), serde_json::to_value(precision)?);
        }
        // The file's 0 too.
        if self.given.get("max_grad_norm").and_then(|v| v.as_f64()) == Some(0.0) {
            self.given
                .insert("max_grad_norm".into(), serde_json::Value::Null);
        }
        Ok(self)
    }

    /// The given settings over `c` (the model's defaults: a preset's tuned
    /// settings, or HF's).
    fn apply(&self, c: &TrainConfig) -> Result<TrainConfig, serde_json::Error> {
        let mut value = serde_json::to_value(c)?;
        for (name, v) in &self.given {
            value[name] = v.clone();
        }
        serde_json::from_value(value)
    }

    /// The job these options describe.
    fn fine_tune(&self) -> Result<FineTune> {
        let (Some(train), Some(model), Some(output)) =
            (&self.job.train, &self.job.model, &self.job.output)
        else {
            bail!("zhbert train needs --train, --model and --output (as flags or in --config)");
        };
        // Every given value is of its setting's type: checked once here, so
        // that applying them to the model's defaults cannot fail.
        self.apply(&TrainConfig::default())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let options = self.clone();
        let mut job = FineTune::new(model.clone())
            .train_file(train)
            .output(output)
            .columns(Columns {
                text: self
                    .job
                    .text_column
                    .clone()
                    .unwrap_or_else(|| "text".into()),
                text_pair: self.job.text_pair_column.clone(),
                label: self
                    .job
                    .label_column
                    .clone()
                    .unwrap_or_else(|| "label".into()),
                label_separator: self.job.label_separator.clone(),
            })
            .skip_bad_rows(self.job.on_bad_row.as_deref() == Some("skip"))
            .split(self.job.split.unwrap_or(0.1))
            .resume(self.resume)
            .configure(move |c| *c = options.apply(c).expect("checked in fine_tune"));
        if let Some(dev) = &self.job.dev {
            job = job.dev_file(dev);
        }
        if let Some(test) = &self.job.test {
            job = job.test_file(test);
        }
        if let Some(n) = self.job.pretrain_epochs {
            job = job.pretrain_epochs(n);
        }
        if self.job.streaming.unwrap_or(false) {
            job = job.streaming(self.job.shuffle_buffer.unwrap_or(10_000));
        }
        if let Some(n) = self.backend.pad_to_multiple_of {
            job = job.pad_to_multiple_of(n);
        }
        job.train_config().map_err(in_flag_words)?;
        Ok(job)
    }
}

/// A `--config` TOML file: the job's options, and the settings it gives (by
/// name, checked against [`TrainConfig`]'s types).
fn read_toml(
    path: &Path,
    names: &[String],
) -> Result<(JobArgs, serde_json::Map<String, serde_json::Value>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let in_file = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!("{}: {}", path.display(), e.to_string().replace('\n', " "))
    };
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| in_file(&e))?;
    let mut settings = serde_json::Map::new();
    for name in names {
        if let Some(v) = table.remove(name) {
            settings.insert(name.clone(), serde_json::to_value(v)?);
        }
    }
    // Each setting as its type reads it (`warmup = 0.1`, `metric = "loss"`).
    let mut check = serde_json::to_value(TrainConfig::default())?;
    for (name, v) in &settings {
        check[name] = v.clone();
    }
    serde_json::from_value::<TrainConfig>(check).map_err(|e| in_file(&e))?;
    let args = JobArgs::deserialize(toml::Value::Table(table)).map_err(|e| in_file(&e))?;
    Ok((args, settings))
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

/// `zhbert train`; `matches` are its own (which flags the command line gave).
pub fn run(args: TrainArgs, matches: &clap::ArgMatches) -> Result<()> {
    let args = args.merged(matches)?;
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
        print_summary(
            &summary,
            args.job.output.as_deref().unwrap_or(Path::new(".")),
        );
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
    match e.downcast_ref::<JobError>() {
        Some(JobError::TooLong {
            max_length,
            positions,
        }) => anyhow::anyhow!(
            "--max-length {max_length} exceeds the model's max_position_embeddings {positions}"
        ),
        Some(JobError::CannotStream(why)) => anyhow::anyhow!("--streaming: {why}"),
        Some(JobError::PretrainOnSeveralDevices) => anyhow::anyhow!(
            "--pretrain-epochs runs on one device: pretrain first, then train the pretrained folder with --devices"
        ),
        _ => e,
    }
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
    // Single-label's line as it always was; the other tasks' headline figures.
    let line = |m: &zhbert_train::EvalMetrics| match (m.samples_f1, m.mse) {
        (None, None) => format!("accuracy {:.4} macro F1 {:.4}", m.accuracy, m.macro_f1),
        _ => m.headline(),
    };
    if let Some(d) = &summary.dev {
        println!("dev {}", line(d));
    }
    if let Some(t) = &summary.test {
        println!("test {}", line(t));
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
    crate::with_backend_devices!(kind, &devices, |B, devices| job
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
    use super::{read_toml, setting_names, JobArgs, TrainArgs, TrainConfig};
    use zhbert_train::{ClassWeights, LrScheduler, Metric, Warmup};

    /// The configuration a `--config` file gives over `TrainConfig::default()`.
    fn config_of(toml: &str) -> Result<TrainConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        std::fs::write(&path, toml).unwrap();
        let (_, given) = read_toml(&path, &setting_names()).map_err(|e| e.to_string())?;
        let args = TrainArgs {
            given,
            ..Default::default()
        };
        let c = args
            .apply(&TrainConfig::default())
            .map_err(|e| e.to_string())?;
        c.validate().map(|()| c).map_err(|e| e.to_string())
    }

    #[test]
    fn toml_options_read_as_their_flags() {
        let c = config_of("warmup = 500\nclass_weights = [1, 2.5]\nlr_scheduler = \"cosine\"\n")
            .unwrap();
        assert_eq!(c.warmup, Warmup::Steps(500));
        assert_eq!(c.lr_scheduler, LrScheduler::Cosine);
        assert_eq!(c.class_weights, Some(ClassWeights::List(vec![1.0, 2.5])));
        let c =
            config_of("warmup = 0.1\nclass_weights = \"auto\"\nmetric = \"macro_f1\"\n").unwrap();
        assert_eq!(c.warmup, Warmup::Ratio(0.1));
        assert_eq!(c.class_weights, Some(ClassWeights::Balanced));
        assert_eq!(c.metric, Metric::MacroF1);
        // Text as the flag would be written reads too.
        assert_eq!(
            config_of("warmup = \"0.1\"\n").unwrap().warmup,
            Warmup::Ratio(0.1)
        );
        for bad in [
            "lr_scheduler = \"warm\"\n",
            "metric = \"f1\"\n",
            "warmup = 1.5\n",
            "epochs = \"three\"\n",
            "no_such_option = 1\n",
        ] {
            assert!(config_of(bad).is_err(), "{bad}");
        }
    }

    /// A job option given as a flag wins over the file's; the file gives
    /// those the flags leave out, and a key that is no option is an error.
    #[test]
    fn job_options_merge_flags_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        std::fs::write(
            &path,
            "train = \"file.csv\"\ndev = \"dev.csv\"\nsplit = 0.2\nepochs = 2\n",
        )
        .unwrap();
        let (file, given) = read_toml(&path, &setting_names()).unwrap();
        assert_eq!(given["epochs"], 2);
        let flags = JobArgs {
            train: Some("flag.csv".into()),
            label_column: Some("tag".into()),
            ..Default::default()
        };
        let job = flags.or(file).unwrap();
        assert_eq!(job.train, Some("flag.csv".into()));
        assert_eq!(job.dev, Some("dev.csv".into()));
        assert_eq!(job.split, Some(0.2));
        assert_eq!(job.label_column.as_deref(), Some("tag"));
        assert_eq!(job.test, None);
        std::fs::write(&path, "trian = \"file.csv\"\n").unwrap();
        let err = read_toml(&path, &setting_names()).unwrap_err().to_string();
        assert!(err.contains("trian"), "{err}");
    }

    /// The AdamW settings a run is given are those its optimizer gets (the
    /// parity test checks that optimizer against torch's with the same ones).
    #[test]
    fn adam_settings_reach_the_optimizer() {
        let adamw = config_of(
            "lr = 2e-5\nweight_decay = 0.1\nadam_beta1 = 0.8\nadam_beta2 = 0.98\nadam_epsilon = 1e-6\n",
        )
        .unwrap()
        .adamw();
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
            let err = config_of(bad).unwrap_err();
            assert!(err.starts_with("adam_"), "{bad}: {err}");
        }
    }
}
