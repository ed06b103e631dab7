//! `zhbert train` and `zhbert eval`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use burn::backend::Autodiff;
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::Deserialize;
use zhbert_data::{
    encode_dataset, read_dataset, stratified_split, BadRows, Columns, Dataset, EncodedDataset,
    ReadOptions, StreamingDataset,
};
use zhbert_model::{
    load_classifier, load_masked_lm, save_safetensors, BertConfig, BertForSequenceClassification,
    LoadOptions, Precision,
};
use zhbert_tokenizer::BertTokenizer;
use zhbert_train::{
    check_fresh_output, evaluate, list_checkpoints, preset, presets, pretrain_mlm, train_replica,
    ClassWeights, LrScheduler, PretrainConfig, Replica, TrainConfig, TrainData, TrainSet, Warmup,
};

use crate::{with_backend, BackendArgs};

/// A TOML value of an option whose flag is text: `warmup = 500`, `warmup =
/// 0.1`, `class_weights = [1, 2.5]` read as the flag would be written (`500`,
/// `0.1`, `1,2.5`), strings as they are.
fn flag_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Value {
        Text(String),
        Integer(i64),
        Float(f64),
        List(Vec<f64>),
    }
    Ok(Option::<Value>::deserialize(d)?.map(|v| match v {
        Value::Text(s) => s,
        Value::Integer(n) => n.to_string(),
        Value::Float(x) => x.to_string(),
        Value::List(xs) => xs.iter().map(f64::to_string).collect::<Vec<_>>().join(","),
    }))
}

/// Every option of `zhbert train`; each can also come from `--config FILE.toml`
/// (same names, snake_case); flags win.
#[derive(clap::Args, Debug, Default, Deserialize)]
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
    #[arg(long)]
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
    /// Dev and test fractions when only --train is given (default 0.1).
    #[arg(long)]
    split: Option<f64>,
    #[arg(long)]
    epochs: Option<usize>,
    /// Stop after this many optimizer steps.
    #[arg(long)]
    max_steps: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    max_length: Option<usize>,
    /// Warmup: steps (500) or ratio (0.1).
    #[arg(long)]
    #[serde(deserialize_with = "flag_text")]
    warmup: Option<String>,
    #[arg(long)]
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
    #[arg(long)]
    grad_accum: Option<usize>,
    /// Clip the global gradient norm (0 disables).
    #[arg(long)]
    max_grad_norm: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Evaluate every N steps (default: each epoch).
    #[arg(long)]
    eval_every: Option<usize>,
    /// Checkpoint every N steps (default: at each evaluation).
    #[arg(long)]
    save_every: Option<usize>,
    /// Checkpoints kept besides the best.
    #[arg(long)]
    keep_checkpoints: Option<usize>,
    /// Early stopping: evaluations without improvement.
    #[arg(long)]
    patience: Option<usize>,
    /// Stop once the dev --metric reaches this value (time-to-accuracy runs).
    #[arg(long)]
    stop_at: Option<f64>,
    /// Metric for the best checkpoint: accuracy, macro_f1, micro_f1, loss.
    #[arg(long)]
    metric: Option<String>,
    /// Class weights: auto or a comma-separated list in label order.
    #[arg(long)]
    #[serde(deserialize_with = "flag_text")]
    class_weights: Option<String>,
    #[arg(long)]
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

    /// The training configuration: flags and file over the preset's tuned
    /// settings over HF's defaults.
    fn train_config(&self, base: TrainConfig) -> Result<TrainConfig> {
        let mut c = base;
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f.clone() { c.$f = v; } )* };
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
            distill
        );
        c.max_steps = self.max_steps.or(c.max_steps);
        c.eval_every = self.eval_every.or(c.eval_every);
        c.save_every = self.save_every.or(c.save_every);
        c.patience = self.patience.or(c.patience);
        c.stop_at = self.stop_at.or(c.stop_at);
        c.initial_loss_scale = self.initial_loss_scale.or(c.initial_loss_scale);
        if let Some(w) = &self.warmup {
            c.warmup = Warmup::parse(w)?;
        }
        if let Some(n) = self.max_grad_norm {
            c.max_grad_norm = (n > 0.0).then_some(n);
        }
        if let Some(w) = &self.class_weights {
            c.class_weights = Some(if w == "auto" {
                ClassWeights::Auto(w.clone())
            } else {
                ClassWeights::List(
                    w.split(',')
                        .map(|x| {
                            x.trim().parse::<f32>().map_err(|_| {
                                anyhow::anyhow!("--class-weights {w:?}: auto or numbers like 1,2.5")
                            })
                        })
                        .collect::<Result<_>>()?,
                )
            });
        }
        c.validate()?;
        Ok(c)
    }

    fn read_options(&self, known_labels: Option<Vec<String>>) -> ReadOptions {
        ReadOptions {
            format: None,
            columns: Columns {
                text: self.text_column.clone().unwrap_or_else(|| "text".into()),
                text_pair: self.text_pair_column.clone(),
                label: self.label_column.clone().unwrap_or_else(|| "label".into()),
            },
            bad_rows: if self.on_bad_row.as_deref() == Some("skip") {
                BadRows::Skip
            } else {
                BadRows::Fail
            },
            known_labels,
        }
    }
}

fn read(path: &Path, options: &ReadOptions) -> Result<Dataset> {
    let (data, report) = read_dataset(path, options)?;
    tracing::info!("{report}");
    for bad in report.bad_rows.iter().take(5) {
        tracing::warn!("skipped {bad}");
    }
    Ok(data)
}

pub fn run(args: TrainArgs) -> Result<()> {
    let args = args.merged()?;
    if args.devices.is_some() || args.nodes.is_some() {
        return run_data_parallel(&args);
    }
    let kind = args.backend.kind()?;
    with_backend!(
        kind,
        args.backend.device,
        |B, device| run_on::<Autodiff<B>>(&args, &device, &Replica::alone())
    )
}

/// `--devices` and `--nodes`: one replica per device, each in its own thread
/// with its own copy of the data and model; replica 0 logs and writes.
#[cfg(feature = "collective")]
fn run_data_parallel(args: &TrainArgs) -> Result<()> {
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
    let topology = zhbert_train::Topology {
        devices: devices.len(),
        nodes,
    };
    if args.pretrain_epochs.is_some_and(|n| n > 0) {
        bail!("--pretrain-epochs runs on one device: pretrain first, then train the pretrained folder on several");
    }
    let replicas = (0..devices.len())
        .map(|i| topology.replica(i))
        .collect::<Result<Vec<_>>>()?;
    tracing::info!(
        "data-parallel: {} replicas ({} on this node), this node's are {}",
        topology.world(),
        devices.len(),
        replicas
            .iter()
            .map(|r| r.rank.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = replicas
            .iter()
            .zip(&devices)
            .map(|(replica, &index)| {
                scope.spawn(move || {
                    let _ = index; // unused when only CPU backends are compiled in
                    let run = || {
                        with_backend!(kind, index, |B, device| run_on::<Autodiff<B>>(
                            args, &device, replica
                        ))
                    };
                    let result = if replica.is_main() {
                        run()
                    } else {
                        tracing::subscriber::with_default(
                            tracing::subscriber::NoSubscriber::default(),
                            run,
                        )
                    };
                    // The other replicas would wait for this one forever (in
                    // burn-collective's register or all-reduce): end the process.
                    // Checkpoints and outputs are written atomically.
                    if let Err(e) = &result {
                        eprintln!("error: replica {}: {e:#}", replica.rank);
                        std::process::exit(1);
                    }
                    result
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a replica's thread panicked")))
            })
            .collect()
    });
    results.into_iter().collect()
}

#[cfg(not(feature = "collective"))]
fn run_data_parallel(_args: &TrainArgs) -> Result<()> {
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

fn encode(
    name: &str,
    data: &Dataset,
    tokenizer: &BertTokenizer,
    max_length: usize,
) -> Result<EncodedDataset> {
    let e = encode_dataset(data, tokenizer, max_length)?;
    if e.truncated > 0 {
        tracing::info!(
            "{name}: {} of {} texts longer than {max_length} tokens ({:.1}%), {} tokens cut",
            e.truncated,
            data.examples.len(),
            100.0 * e.truncated as f64 / data.examples.len() as f64,
            e.tokens_cut
        );
    }
    Ok(e)
}

fn run_on<AB: AutodiffBackend>(
    args: &TrainArgs,
    device: &AB::Device,
    replica: &Replica,
) -> Result<()> {
    let (Some(train_path), Some(model_arg), Some(output)) =
        (&args.train, &args.model, &args.output)
    else {
        bail!("zhbert train needs --train, --model and --output (as flags or in --config)");
    };
    let preset = preset(model_arg);
    let config = args.train_config(preset.as_ref().map(|p| p.train.clone()).unwrap_or_default())?;
    AB::seed(device, config.seed);

    // Streaming: the training file is scanned now and read again every epoch;
    // `all` then carries only its labels.
    let mut streamed = None;
    let all = if args.streaming.unwrap_or(false) {
        if preset.is_some() {
            bail!("--streaming: a preset builds its vocabulary and pretrains from the training texts in memory; stream with a pretrained --model");
        }
        if args.dev.is_none() {
            bail!("--streaming needs --dev: splitting a file needs all of it in memory");
        }
        let (data, report) = StreamingDataset::scan(train_path, &args.read_options(None))?;
        tracing::info!("{report} (streamed: read again every epoch)");
        let labels = data.labels.clone();
        streamed = Some(Arc::new(data));
        Dataset {
            examples: vec![],
            labels,
        }
    } else {
        read(train_path, &args.read_options(None))?
    };
    let labels = all.labels.clone();
    if let [only] = labels.as_slice() {
        // HF reads `num_labels: 1` as a regression head, so a one-label
        // training set would save a model that `transformers` misreads.
        bail!(
            "{}: every example has the label {only:?}; a classifier needs at least two labels",
            train_path.display()
        );
    }
    let known = args.read_options(Some(labels.clone()));
    let (train_set, dev_set, test_set) = match (&args.dev, &args.test) {
        (None, None) => {
            let f = args.split.unwrap_or(0.1);
            let [t, d, s] = stratified_split(&all, f, f, config.seed);
            tracing::info!(
                "no --dev/--test: stratified split of {} by seed {}: train {}, dev {}, test {}",
                train_path.display(),
                config.seed,
                t.examples.len(),
                d.examples.len(),
                s.examples.len()
            );
            (t, Some(d), Some(s))
        }
        (dev, test) => (
            all,
            dev.as_ref().map(|p| read(p, &known)).transpose()?,
            test.as_ref().map(|p| read(p, &known)).transpose()?,
        ),
    };

    let (tokenizer, model, model_config) = match &preset {
        Some(p) => {
            let mut tokenizer = p.tokenizer(
                train_set
                    .examples
                    .iter()
                    .flat_map(|e| std::iter::once(e.text.as_str()).chain(e.text_pair.as_deref())),
                config.max_length,
            )?;
            let pretrain = PretrainConfig {
                epochs: args.pretrain_epochs.unwrap_or(p.pretrain.epochs),
                seed: config.seed,
                ..p.pretrain.clone()
            };
            let positions = if pretrain.epochs > 0 {
                config.max_length.max(pretrain.max_length)
            } else {
                config.max_length
            };
            args.backend.configure_padding(&mut tokenizer, positions);
            let model_config = p.model_config(tokenizer.vocab_size(), &labels, positions);
            tracing::info!(
                "preset {}: {} layers, hidden {}, vocabulary of {} entries from the training text, {:.1}M parameters, trained from scratch",
                p.name,
                p.layers,
                p.hidden_size,
                tokenizer.vocab_size(),
                model_config.num_parameters() as f64 / 1e6
            );
            let mut model = model_config.init_classifier::<AB>(device);
            if pretrain.epochs > 0 {
                self_pretrain::<AB>(
                    &mut model,
                    &model_config,
                    &tokenizer,
                    &train_set,
                    &pretrain,
                    output,
                    args.resume,
                    device,
                )?;
            }
            (tokenizer, model, model_config)
        }
        None => {
            let dir = crate::hub::resolve_model(model_arg).with_context(|| {
                format!(
                    "--model {model_arg} is not a preset ({})",
                    presets()
                        .iter()
                        .map(|p| p.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            let mut tokenizer = BertTokenizer::from_dir(&dir)?;
            let options = LoadOptions {
                labels: Some(labels.clone()),
                allow_fresh_head: true,
            };
            let (model, model_config, report) = load_classifier::<AB>(&dir, &options, device)?;
            tracing::info!("{report}");
            args.backend
                .configure_padding(&mut tokenizer, model_config.max_position_embeddings);
            if config.max_length > model_config.max_position_embeddings {
                bail!(
                    "--max-length {} exceeds the model's max_position_embeddings {}",
                    config.max_length,
                    model_config.max_position_embeddings
                );
            }
            (tokenizer, model, model_config)
        }
    };
    let soft_targets = if config.distill > 0.0 && streamed.is_none() {
        let started = std::time::Instant::now();
        let targets = zhbert_train::teacher::distillation_targets(&train_set, config.seed)?;
        let agree = targets
            .iter()
            .zip(&train_set.examples)
            .filter(|(p, e)| zhbert_train::inference::argmax(p) == e.label)
            .count();
        tracing::info!(
            "distillation teacher (char 1-3-gram TF-IDF + logistic regression, {} folds): out-of-fold accuracy {:.4} on the training set, {:.1} s",
            zhbert_train::teacher::TEACHER_FOLDS,
            agree as f64 / targets.len().max(1) as f64,
            started.elapsed().as_secs_f64()
        );
        Some(targets)
    } else {
        None
    };
    let data = TrainData {
        soft_targets,
        train: match streamed {
            Some(data) => TrainSet::Streaming {
                data,
                shuffle_buffer: args.shuffle_buffer.unwrap_or(10_000),
                max_length: config.max_length,
            },
            None => encode("train", &train_set, &tokenizer, config.max_length)?.into(),
        },
        dev: dev_set
            .as_ref()
            .map(|d| encode("dev", d, &tokenizer, config.max_length))
            .transpose()?,
        test: test_set
            .as_ref()
            .map(|d| encode("test", d, &tokenizer, config.max_length))
            .transpose()?,
        labels,
    };
    let summary = train_replica::<AB>(
        model,
        &model_config,
        &tokenizer,
        &data,
        &config,
        output,
        args.resume,
        device,
        replica,
    )?;
    if !replica.is_main() {
        return Ok(());
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
    Ok(())
}

/// Masked-LM pretraining of a fresh preset model on its training texts; the
/// encoder it learns replaces `model`'s. The pretrained `BertForMaskedLM` is kept
/// as an HF model folder in `<output>/pretrained`, which `--resume` reuses; when
/// fine-tuning checkpoints exist, they hold the weights and this does nothing.
#[allow(clippy::too_many_arguments)]
fn self_pretrain<AB: AutodiffBackend>(
    model: &mut BertForSequenceClassification<AB>,
    model_config: &BertConfig,
    tokenizer: &BertTokenizer,
    train_set: &Dataset,
    pretrain: &PretrainConfig,
    output: &Path,
    resume: bool,
    device: &AB::Device,
) -> Result<()> {
    if !resume {
        check_fresh_output(output)?;
    } else if !list_checkpoints(output).is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(output).with_context(|| format!("creating {}", output.display()))?;
    let dir = output.join("pretrained");
    let mlm = if resume && dir.join("model.safetensors").is_file() {
        let (mlm, _, report) = load_masked_lm::<AB>(&dir, device)?;
        tracing::info!(
            "--resume: pretrained encoder from {} ({report})",
            dir.display()
        );
        mlm
    } else {
        let texts = encode("pretraining", train_set, tokenizer, pretrain.max_length)?;
        let (mlm, summary) = pretrain_mlm::<AB>(
            model_config.init_masked_lm::<AB>(device),
            tokenizer,
            &texts.encoded,
            pretrain,
            &output.join("pretrain_metrics.jsonl"),
            device,
        )?;
        println!(
            "pretrained {} steps in {:.0}s ({:.1} sequences/s), mlm loss by epoch {:?}",
            summary.steps,
            summary.seconds,
            summary.sequences_per_second,
            summary
                .epoch_losses
                .iter()
                .map(|l| (l * 1e4).round() / 1e4)
                .collect::<Vec<_>>()
        );
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        save_safetensors(&mlm, &dir.join("model.safetensors"))?;
        model_config.save(dir.join("config.json"), "BertForMaskedLM")?;
        tokenizer.save(&dir)?;
        mlm
    };
    model.bert.embeddings = mlm.bert.embeddings;
    model.bert.encoder = mlm.bert.encoder;
    // burn draws a fresh parameter's values when it is first read. Read the new
    // pooler and classifier now, from a known seed, so that a run resumed after
    // pretraining fine-tunes from the same head as a run that never stopped.
    AB::seed(device, pretrain.seed.wrapping_add(1));
    if let Some(pooler) = &model.bert.pooler {
        pooler.dense.weight.val();
    }
    model.classifier.weight.val();
    Ok(())
}

/// `zhbert eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Model folder (a trained classifier).
    #[arg(long)]
    model: String,
    /// Labelled data (CSV/TSV/JSONL/.txt).
    #[arg(long)]
    data: PathBuf,
    /// Where to write the metrics as JSON (default: eval-<data name>.json in the model folder).
    #[arg(long)]
    output: Option<PathBuf>,
    #[arg(long, default_value = "text")]
    text_column: String,
    #[arg(long)]
    text_pair_column: Option<String>,
    #[arg(long, default_value = "label")]
    label_column: String,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Longest input in tokens (default: the model's limit, at most 512).
    #[arg(long)]
    max_length: Option<usize>,
    #[command(flatten)]
    backend: BackendArgs,
}

pub fn run_eval(args: EvalArgs) -> Result<()> {
    let kind = args.backend.kind()?;
    with_backend!(kind, args.backend.device, |B, device| eval_on::<B>(
        &args, &device
    ))
}

fn eval_on<B: Backend>(args: &EvalArgs, device: &B::Device) -> Result<()> {
    let dir = crate::hub::resolve_model(&args.model)?;
    let mut tokenizer = BertTokenizer::from_dir(&dir)?;
    let (model, config, report) = load_classifier::<B>(&dir, &LoadOptions::default(), device)?;
    tracing::info!("{report}");
    args.backend
        .configure_padding(&mut tokenizer, config.max_position_embeddings);
    let options = ReadOptions {
        format: None,
        columns: Columns {
            text: args.text_column.clone(),
            text_pair: args.text_pair_column.clone(),
            label: args.label_column.clone(),
        },
        bad_rows: BadRows::Fail,
        known_labels: Some(config.labels()),
    };
    let data = read(&args.data, &options)?;
    let max_length = args
        .max_length
        .unwrap_or(config.max_position_embeddings.min(512));
    let encoded = encode("data", &data, &tokenizer, max_length)?;
    let m = evaluate(
        &model,
        &tokenizer,
        &encoded,
        &config.labels(),
        args.batch_size,
        device,
    )?;
    println!("{}: {} examples", args.data.display(), m.examples);
    println!(
        "loss {:.4} accuracy {:.4} macro F1 {:.4} micro F1 {:.4}",
        m.loss, m.accuracy, m.macro_f1, m.micro_f1
    );
    for c in &m.per_class {
        println!(
            "  {:>12}  precision {:.4} recall {:.4} F1 {:.4} support {}",
            c.label, c.precision, c.recall, c.f1, c.support
        );
    }
    print!("{}", m.confusion_table());
    let out = args.output.clone().unwrap_or_else(|| {
        let stem = args
            .data
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("data");
        dir.join(format!("eval-{stem}.json"))
    });
    zhbert_model::write_atomic(&out, serde_json::to_string_pretty(&m)?.as_bytes())?;
    println!("metrics written to {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::TrainArgs;

    #[test]
    fn toml_options_read_as_their_flags() {
        let args: TrainArgs =
            toml::from_str("warmup = 500\nclass_weights = [1, 2.5]\nlr_scheduler = \"cosine\"\n")
                .unwrap();
        let c = args.train_config(Default::default()).unwrap();
        assert_eq!(c.warmup, super::Warmup::Steps(500));
        assert_eq!(c.lr_scheduler, super::LrScheduler::Cosine);
        assert_eq!(
            c.class_weights,
            Some(super::ClassWeights::List(vec![1.0, 2.5]))
        );
        let args: TrainArgs = toml::from_str("warmup = 0.1\nclass_weights = \"auto\"\n").unwrap();
        let c = args.train_config(Default::default()).unwrap();
        assert_eq!(c.warmup, super::Warmup::Ratio(0.1));
        assert_eq!(
            c.class_weights,
            Some(super::ClassWeights::Auto("auto".into()))
        );
        assert!(toml::from_str::<TrainArgs>("lr_scheduler = \"warm\"\n").is_err());
    }

    /// The AdamW settings a run is given are those its optimizer gets (the
    /// parity test checks that optimizer against torch's with the same ones).
    #[test]
    fn adam_settings_reach_the_optimizer() {
        let args: TrainArgs = toml::from_str(
            "lr = 2e-5\nweight_decay = 0.1\nadam_beta1 = 0.8\nadam_beta2 = 0.98\nadam_epsilon = 1e-6\n",
        )
        .unwrap();
        let adamw = args.train_config(Default::default()).unwrap().adamw();
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
            let err = toml::from_str::<TrainArgs>(bad)
                .unwrap()
                .train_config(Default::default())
                .unwrap_err();
            assert!(err.to_string().starts_with("adam "), "{bad}: {err}");
        }
    }
}
