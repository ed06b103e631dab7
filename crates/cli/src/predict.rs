//! `zhbert predict`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use burn::tensor::backend::Backend;
use serde::Serialize;
use zhbert_data::{read_texts, TextFormat};
use zhbert_model::{load_classifier, LoadOptions};
use zhbert_tokenizer::BertTokenizer;
use zhbert_train::{classify, InferenceOptions};

use crate::{with_backend, BackendArgs};

#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    /// Model folder (HF layout) or Hub id.
    #[arg(long)]
    model: String,
    /// Texts: one per line (.txt), CSV/TSV with a text column, or JSONL with a text field; `-` for stdin.
    #[arg(long)]
    input: PathBuf,
    /// Where to write the JSONL predictions (default: stdout). Written atomically.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Column (CSV/TSV) or field (JSONL) that holds the text.
    #[arg(long, default_value = "text")]
    text_column: String,
    /// Input layout, when the extension does not tell.
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Longest input in tokens; longer texts are truncated (default: the model's limit, at most 512).
    #[arg(long)]
    max_length: Option<usize>,
    /// Also write the K most probable labels (K at least 1).
    #[arg(long, value_parser = at_least_one)]
    top_k: Option<usize>,
    /// Accept a checkpoint without a trained head and predict with a random one (for testing only).
    #[arg(long)]
    allow_fresh_head: bool,
    #[command(flatten)]
    backend: BackendArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum FormatArg {
    Lines,
    Csv,
    Tsv,
    Jsonl,
}

#[derive(Serialize)]
struct Scored<'a> {
    label: &'a str,
    score: f32,
}

#[derive(Serialize)]
struct OutputLine<'a> {
    label: &'a str,
    score: f32,
    probs: &'a [f32],
    logits: &'a [f32],
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<Vec<Scored<'a>>>,
}

pub fn run(args: PredictArgs) -> anyhow::Result<()> {
    let kind = args.backend.kind()?;
    with_backend!(kind, args.backend.device, |B, device| predict::<B>(
        &args, &device
    ))
}

fn predict<B: Backend>(args: &PredictArgs, device: &B::Device) -> anyhow::Result<()> {
    let dir = crate::hub::resolve_model(&args.model)?;
    let mut tokenizer = BertTokenizer::from_dir(&dir)?;
    let options = LoadOptions {
        labels: None,
        allow_fresh_head: args.allow_fresh_head,
    };
    let (model, config, report) = load_classifier::<B>(&dir, &options, device)?;
    tracing::info!("{report}");
    args.backend
        .configure_padding(&mut tokenizer, config.max_position_embeddings);
    let mut inference = InferenceOptions::for_config(&config);
    inference.batch_size = args.batch_size;
    if let Some(n) = args.max_length {
        anyhow::ensure!(
            (3..=config.max_position_embeddings).contains(&n),
            "--max-length {n}: must be between 3 and the model's max_position_embeddings ({})",
            config.max_position_embeddings
        );
        inference.max_length = n;
    }
    let format = match args.format {
        Some(FormatArg::Lines) => TextFormat::Lines,
        Some(FormatArg::Csv) => TextFormat::Csv,
        Some(FormatArg::Tsv) => TextFormat::Tsv,
        Some(FormatArg::Jsonl) => TextFormat::Jsonl,
        None => TextFormat::from_path(&args.input),
    };
    let texts: Vec<(String, Option<String>)> = read_texts(&args.input, format, &args.text_column)?
        .into_iter()
        .map(|t| (t, None))
        .collect();
    let start = std::time::Instant::now();
    let predictions = classify(&model, &tokenizer, &texts, &inference, device)?;
    let truncated = predictions
        .iter()
        .filter(|p| p.truncated_tokens > 0)
        .count();
    tracing::info!(
        "{} texts in {:.2}s ({:.1} texts/s){}",
        texts.len(),
        start.elapsed().as_secs_f64(),
        texts.len() as f64 / start.elapsed().as_secs_f64().max(1e-9),
        if truncated > 0 {
            format!(", {truncated} truncated to {} tokens", inference.max_length)
        } else {
            String::new()
        }
    );
    let labels = config.labels();
    let mut out = Vec::new();
    for p in &predictions {
        let top_k = args.top_k.map(|k| {
            let mut ids: Vec<usize> = (0..p.probs.len()).collect();
            ids.sort_by(|&a, &b| p.probs[b].total_cmp(&p.probs[a]));
            ids.into_iter()
                .take(k)
                .map(|i| Scored {
                    label: &labels[i],
                    score: p.probs[i],
                })
                .collect()
        });
        let line = OutputLine {
            label: &labels[p.label],
            score: p.probs[p.label],
            probs: &p.probs,
            logits: &p.logits,
            top_k,
        };
        serde_json::to_writer(&mut out, &line)?;
        out.push(b'\n');
    }
    match &args.output {
        Some(path) => zhbert_model::write_atomic(path, &out)
            .with_context(|| format!("writing predictions to {}", path.display()))?,
        None => std::io::stdout().lock().write_all(&out)?,
    }
    Ok(())
}

/// A count of at least 1 (`--top-k 0` would ask for an empty list).
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(k) => Ok(k),
        Err(e) => Err(e.to_string()),
    }
}
