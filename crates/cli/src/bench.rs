//! `zhbert bench WORKLOAD`: one timed workload per process, one JSON line on stdout.
//!
//! `cargo xtask bench` runs these interleaved with `benchmarks/pytorch_bench.py`,
//! which takes the same arguments and prints the same fields, so that each
//! process's peak resident memory belongs to one workload only.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use burn::backend::Autodiff;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Int, Tensor};
use clap::{Args, Subcommand};
use zhbert_model::{
    autocast, load_classifier, BertConfig, BertForSequenceClassification, BertInput, LoadOptions,
    Precision,
};
use zhbert_tokenizer::{BertTokenizer, Padding};
use zhbert_train::ensure_precision_supported;
use zhbert_train::inference::{classify, InferenceOptions};
use zhbert_train::{
    Replica, StepRecord, TrainConfig, TrainData, TrainObserver, TrainSet, Trainer, Warmup,
};

use crate::{with_backend, BackendArgs};

/// The random model with bert-base-chinese's shape (vocabulary 21128, 12 layers, hidden 768).
pub const BERT_BASE_SHAPE: &str = "bert-base-chinese-shape";

#[derive(Subcommand)]
pub enum BenchCommand {
    /// GFLOP/s of a square f32 matmul: the backend's practical peak.
    Matmul(MatmulArgs),
    /// Texts/s of batch tokenization (truncation to --max-length).
    Tokenize(TokenizeArgs),
    /// Sequences/s of the classifier's forward pass (eval mode, no gradients).
    Infer(ModelArgs),
    /// Sequences/s of full training steps through the library's training loop:
    /// forward, loss, backward, global-norm clipping, AdamW, schedule.
    Train(ModelArgs),
}

#[derive(Args)]
pub struct MatmulArgs {
    /// Side of the square matrices.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Timed repetitions (after one untimed).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    #[command(flatten)]
    backend: BackendArgs,
}

#[derive(Args)]
pub struct TokenizeArgs {
    /// Model folder whose tokenizer is used, or a vocab.txt.
    #[arg(long)]
    vocab: PathBuf,
    /// One text per line.
    #[arg(long)]
    texts: PathBuf,
    /// Use the first N lines.
    #[arg(long, default_value_t = 20_000)]
    limit: usize,
    #[arg(long, default_value_t = 128)]
    max_length: usize,
    /// Timed repetitions (after one untimed).
    #[arg(long, default_value_t = 3)]
    steps: usize,
}

#[derive(Args)]
pub struct ModelArgs {
    /// Model folder (a fresh 2-label head is added when it has none), or
    /// `bert-base-chinese-shape` for random weights of that shape.
    #[arg(long)]
    model: String,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Sequence length of the random full-length inputs.
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    /// Timed batches (after --warmup untimed ones).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Inference only: classify these texts (one per line, truncated to
    /// --seq-len) with length-grouped batches instead of random full-length
    /// inputs; tokenization is included in the time.
    #[arg(long)]
    texts: Option<PathBuf>,
    /// Use the first N lines of --texts.
    #[arg(long, default_value_t = 2_000)]
    limit: usize,
    /// Float type of matmuls and attention (autocast, as `zhbert train
    /// --precision`). The train workload times bf16 and f16 without loss
    /// scaling: one scale multiply per step, and no skipped steps on random data.
    #[arg(long, default_value = "fp32")]
    precision: Precision,
    #[command(flatten)]
    backend: BackendArgs,
    /// Inference only: run the linear layers quantized (`int8`, flex only).
    #[command(flatten)]
    quantize: crate::quantize::QuantizeArgs,
}

/// Runs one workload and prints its JSON line.
pub fn run(command: BenchCommand) -> Result<()> {
    // The backend each model workload ran on (tokenization has none).
    let (mut result, kind) = match command {
        BenchCommand::Matmul(args) => {
            let kind = args.backend.kind()?;
            let r = with_backend!(kind, args.backend.device, |B, device| matmul::<B>(
                &args, &device
            ))?;
            (r, Some(kind))
        }
        BenchCommand::Tokenize(args) => (tokenize(&args)?, None),
        BenchCommand::Infer(args) => {
            let kind = args.backend.kind()?;
            let r = with_backend!(kind, args.backend.device, |B, device| infer::<B>(
                &args, &device
            ))?;
            (r, Some(kind))
        }
        BenchCommand::Train(args) => {
            let kind = args.backend.kind()?;
            let r = with_backend!(kind, args.backend.device, |B, device| train::<Autodiff<B>>(
                &args, &device
            ))?;
            (r, Some(kind))
        }
    };
    if let Some(kind) = kind {
        result["backend"] = kind.feature().into();
    }
    result["implementation"] = "zhbert".into();
    result["threads"] = rayon::current_num_threads().into();
    result["peak_rss_mb"] = peak_rss_mb().into();
    println!("{result}");
    Ok(())
}

/// The process's peak resident set (VmHWM), in MiB; 0 where /proc is absent.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn matmul<B: Backend>(args: &MatmulArgs, device: &B::Device) -> Result<serde_json::Value> {
    let n = args.size;
    let a = Tensor::<B, 2>::random([n, n], Distribution::Normal(0.0, 1.0), device);
    let b = Tensor::<B, 2>::random([n, n], Distribution::Normal(0.0, 1.0), device);
    // Reading one element back waits for the (possibly asynchronous) device.
    let sync = |t: Tensor<B, 2>| t.slice([0..1, 0..1]).into_scalar();
    sync(a.clone().matmul(b.clone()));
    let start = Instant::now();
    for _ in 0..args.steps {
        sync(a.clone().matmul(b.clone()));
    }
    let secs = start.elapsed().as_secs_f64();
    let flops = 2.0 * (n as f64).powi(3) * args.steps as f64;
    Ok(serde_json::json!({
        "workload": "matmul", "size": n, "steps": args.steps, "seconds": secs,
        "gflops": flops / secs / 1e9,
    }))
}

/// Lines of a text file, at most `limit`, empty ones skipped.
fn read_lines(path: &Path, limit: usize) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(limit)
        .map(String::from)
        .collect();
    anyhow::ensure!(!lines.is_empty(), "{}: no texts", path.display());
    Ok(lines)
}

fn tokenize(args: &TokenizeArgs) -> Result<serde_json::Value> {
    let tokenizer = if args.vocab.is_dir() {
        BertTokenizer::from_dir(&args.vocab)?
    } else {
        BertTokenizer::from_vocab_file(&args.vocab, Default::default())?
    };
    let texts: Vec<(String, Option<String>)> = read_lines(&args.texts, args.limit)?
        .into_iter()
        .map(|t| (t, None))
        .collect();
    // Padded to the longest, as `tokenizer(texts, truncation=True, padding=True)` does.
    let run = || -> Result<usize> {
        let batch = tokenizer.encode_batch(&texts, Some(args.max_length), Padding::Longest)?;
        Ok(batch.attention_mask.iter().map(|&m| m as usize).sum())
    };
    let tokens = run()?;
    let start = Instant::now();
    for _ in 0..args.steps {
        run()?;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(serde_json::json!({
        "workload": "tokenize", "texts": texts.len(), "tokens": tokens, "steps": args.steps,
        "seconds": secs, "items_per_second": (texts.len() * args.steps) as f64 / secs,
    }))
}

/// The model to time, and its config.
fn model_of<B: Backend>(
    name: &str,
    device: &B::Device,
) -> Result<(BertForSequenceClassification<B>, BertConfig)> {
    if name == BERT_BASE_SHAPE {
        let mut config = BertConfig::new(21128);
        config.set_labels(&["0".to_string(), "1".to_string()]);
        return Ok((config.init_classifier(device), config));
    }
    let options = LoadOptions {
        allow_fresh_head: true,
        ..LoadOptions::default()
    };
    let (model, config, _) = load_classifier::<B>(Path::new(name), &options, device)?;
    Ok((model, config))
}

/// Forward FLOPs of one sequence of `len` tokens, counted as in the BERT and
/// scaling-law papers: 2 per multiply-add of the encoder's matmuls (Q, K, V,
/// output, the two feed-forward layers, QKᵀ and the attention-weighted sum),
/// plus pooler and head; embeddings, softmax and LayerNorm are left out.
pub fn forward_flops(config: &BertConfig, len: usize) -> f64 {
    let (h, f, l) = (
        config.hidden_size as f64,
        config.intermediate_size as f64,
        len as f64,
    );
    let per_layer = 2.0 * l * (4.0 * h * h + 2.0 * h * f) + 4.0 * l * l * h;
    config.num_hidden_layers as f64 * per_layer + 2.0 * h * h + 2.0 * h * config.num_labels() as f64
}

fn random_input<B: Backend>(
    config: &BertConfig,
    args: &ModelArgs,
    device: &B::Device,
) -> BertInput<B> {
    let shape = [args.batch_size, args.seq_len];
    BertInput {
        input_ids: Tensor::<B, 2, Int>::random(
            shape,
            Distribution::Uniform(1.0, config.vocab_size as f64),
            device,
        ),
        token_type_ids: Some(Tensor::zeros(shape, device)),
        attention_mask: Some(Tensor::ones(shape, device)),
    }
}

fn model_fields(args: &ModelArgs, config: &BertConfig) -> serde_json::Value {
    serde_json::json!({
        "model": args.model, "layers": config.num_hidden_layers, "hidden": config.hidden_size,
        "vocab": config.vocab_size, "batch_size": args.batch_size, "seq_len": args.seq_len,
        "steps": args.steps, "precision": args.precision.to_string(),
        "quantize": args.quantize.quantize.map(|q| q.to_string()),
    })
}

fn infer<B: Backend>(args: &ModelArgs, device: &B::Device) -> Result<serde_json::Value> {
    ensure_precision_supported::<B>(args.precision, device)?;
    let (mut model, config) = model_of::<B>(&args.model, device)?;
    if let Some(q) = args.quantize.for_backend(args.backend.kind()?)? {
        model = model.quantize(q)?;
    }
    let mut out = model_fields(args, &config);
    if let Some(path) = &args.texts {
        anyhow::ensure!(
            args.precision == Precision::Fp32,
            "--texts times fp32 inference only"
        );
        let mut tokenizer = BertTokenizer::from_dir(&args.model).with_context(|| {
            format!(
                "{}: the texts workload needs the model's tokenizer",
                args.model
            )
        })?;
        args.backend
            .configure_padding(&mut tokenizer, config.max_position_embeddings);
        let texts: Vec<(String, Option<String>)> = read_lines(path, args.limit)?
            .into_iter()
            .map(|t| (t, None))
            .collect();
        let options = InferenceOptions {
            batch_size: args.batch_size,
            max_length: args.seq_len,
            ..InferenceOptions::for_config(&config)
        };
        for _ in 0..args.warmup {
            classify(
                &model,
                &tokenizer,
                &texts[..args.batch_size.min(texts.len())],
                &options,
                device,
            )?;
        }
        let start = Instant::now();
        let mut classified = 0usize;
        for _ in 0..args.steps {
            let predictions = classify(&model, &tokenizer, &texts, &options, device)?;
            classified += predictions.len();
        }
        let secs = start.elapsed().as_secs_f64();
        out["workload"] = "infer-texts".into();
        out["texts"] = texts.len().into();
        out["seconds"] = secs.into();
        out["items_per_second"] = (classified as f64 / secs).into();
        return Ok(out);
    }
    let input = random_input::<B>(&config, args, device);
    let secs = timed(args, || {
        autocast(args.precision, || model.forward(input.clone())).into_data();
    });
    record_throughput(&mut out, "infer", secs, args, &config, 1.0);
    Ok(out)
}

/// Seconds for `args.steps` calls of `run`, after `args.warmup` untimed ones.
fn timed(args: &ModelArgs, mut run: impl FnMut()) -> f64 {
    for _ in 0..args.warmup {
        run();
    }
    let start = Instant::now();
    for _ in 0..args.steps {
        run();
    }
    start.elapsed().as_secs_f64()
}

/// Speed fields of a fixed-shape workload; `passes` forward FLOPs per
/// sequence (3 for training: backward is twice the forward).
fn record_throughput(
    out: &mut serde_json::Value,
    workload: &str,
    secs: f64,
    args: &ModelArgs,
    config: &BertConfig,
    passes: f64,
) {
    let seqs = (args.steps * args.batch_size) as f64;
    out["workload"] = workload.into();
    out["seconds"] = secs.into();
    out["items_per_second"] = (seqs / secs).into();
    out["gflops"] = (passes * seqs * forward_flops(config, args.seq_len) / secs / 1e9).into();
}

/// Times the library's training loop ([`Trainer::fit`], as `zhbert train`
/// runs it) on random full-length batches: forward, loss, backward, clipping,
/// AdamW and the schedule, without data loading or evaluation. The first
/// `--warmup` steps are not timed; the run stops after the timed ones.
fn train<AB: AutodiffBackend>(args: &ModelArgs, device: &AB::Device) -> Result<serde_json::Value> {
    anyhow::ensure!(args.texts.is_none(), "--texts is for the infer workload");
    anyhow::ensure!(
        args.quantize.quantize.is_none(),
        "--quantize is for the infer workload"
    );
    ensure_precision_supported::<AB>(args.precision, device)?;
    let (model, config) = model_of::<AB>(&args.model, device)?;
    let mut out = model_fields(args, &config);
    // The batches are random ids: nothing is tokenized, the loop only saves a vocabulary.
    let tokenizer = BertTokenizer::from_vocab(
        &["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].map(String::from),
        Default::default(),
    )?;
    let data = TrainData {
        train: TrainSet::Batches(random_batches::<AB>(&config, args, device)),
        dev: None,
        test: None,
        labels: config.labels(),
        soft_targets: None,
    };
    let settings = TrainConfig {
        epochs: 1,
        batch_size: args.batch_size,
        lr: 5e-5,
        warmup: Warmup::Steps(0),
        max_grad_norm: Some(1.0),
        precision: args.precision,
        ..Default::default()
    };
    let output = tempfile::tempdir()?;
    let trainer = Trainer::<AB> {
        model_config: &config,
        tokenizer: &tokenizer,
        data: &data,
        config: &settings,
        output: output.path(),
        resume: false,
        device,
        replica: &Replica::alone(),
    };
    let mut clock = StepClock {
        untimed: args.warmup,
        timed: args.steps,
        started: None,
        seconds: None,
    };
    match trainer.fit(model, &mut clock) {
        Err(e) if e.is::<EnoughSteps>() => {}
        Err(e) => return Err(e),
        Ok(_) => anyhow::bail!("the run ended before the timed steps"),
    }
    let secs = clock.seconds.context("no step was timed")?;
    record_throughput(&mut out, "train", secs, args, &config, 3.0);
    Ok(out)
}

/// `--warmup` + `--steps` random full-length batches with random labels.
fn random_batches<B: Backend>(
    config: &BertConfig,
    args: &ModelArgs,
    device: &B::Device,
) -> Vec<(zhbert_tokenizer::Batch, Vec<usize>)> {
    let (n, len) = (args.batch_size, args.seq_len);
    (0..args.warmup + args.steps)
        .map(|_| {
            let ids = random_input::<B>(config, args, device)
                .input_ids
                .into_data();
            let labels = Tensor::<B, 1, Int>::random(
                [n],
                Distribution::Uniform(0.0, config.num_labels() as f64),
                device,
            )
            .into_data();
            let batch = zhbert_tokenizer::Batch {
                batch_size: n,
                seq_len: len,
                input_ids: ids.iter::<i64>().map(|x| x as u32).collect(),
                token_type_ids: vec![0; n * len],
                attention_mask: vec![1; n * len],
                truncated_tokens: vec![0; n],
            };
            (batch, labels.iter::<i64>().map(|l| l as usize).collect())
        })
        .collect()
}

/// Stops the timed run: the observer's way to end [`Trainer::fit`] early.
#[derive(Debug)]
struct EnoughSteps;

impl std::fmt::Display for EnoughSteps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the timed steps are done")
    }
}

impl std::error::Error for EnoughSteps {}

/// Times the optimizer steps after the `untimed` first ones.
struct StepClock {
    untimed: usize,
    timed: usize,
    started: Option<(Instant, usize)>,
    seconds: Option<f64>,
}

impl TrainObserver for StepClock {
    fn on_start(&mut self, _plan: &zhbert_train::TrainPlan) -> Result<()> {
        if self.untimed == 0 {
            self.started = Some((Instant::now(), 0));
        }
        Ok(())
    }

    fn on_step(&mut self, step: &StepRecord) -> Result<()> {
        // Steps count from 1; the clock starts when the untimed ones are done.
        if step.step == self.untimed {
            self.started = Some((Instant::now(), step.step));
        }
        let Some((start, from)) = self.started else {
            return Ok(());
        };
        if step.step - from == self.timed {
            self.seconds = Some(start.elapsed().as_secs_f64());
            return Err(EnoughSteps.into());
        }
        Ok(())
    }
}
