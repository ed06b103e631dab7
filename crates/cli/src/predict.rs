//! `zhbert predict`: a thin layer over [`zhbert_train::Classifier`].

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::tensor::backend::Backend;
use serde::Serialize;
use zhbert_data::{read_texts, TextFormat};
use zhbert_model::{ModelError, ProblemType};
use zhbert_train::{Classifier, ClassifierOptions, EmptyTextError};

use crate::{with_backend, BackendArgs};

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("texts").required(true).args(["input", "text"])))]
pub struct PredictArgs {
    /// Model folder (HF layout) or Hub id.
    #[arg(long)]
    model: String,
    /// Texts: one per line (.txt), CSV/TSV with a text column, or JSONL with a text field; `-` for stdin.
    #[arg(long)]
    input: Option<PathBuf>,
    /// A text to classify, instead of --input (repeat for several: one output line each, in order).
    #[arg(long)]
    text: Vec<String>,
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
    #[command(flatten)]
    long_text: crate::long_text::LongTextArgs,
    /// Also write the K most probable labels (K at least 1).
    #[arg(long, value_parser = at_least_one)]
    top_k: Option<usize>,
    /// Accept a checkpoint without a trained head and predict with a random one (for testing only).
    #[arg(long)]
    allow_fresh_head: bool,
    /// Multi-label: one threshold for every label, in (0, 1) (default: the
    /// model's thresholds.json, else 0.5).
    #[arg(long)]
    threshold: Option<f32>,
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    quantize: crate::quantize::QuantizeArgs,
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

/// A multi-label prediction: the labels over their thresholds, most probable
/// first, and the sigmoid of every label.
#[derive(Serialize)]
struct MultiLabelLine<'a> {
    labels: &'a [String],
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

/// Says how many texts the model could read next to nothing of (more than half
/// of their tokens `[UNK]`): their predictions say little about them.
fn warn_mostly_unknown(
    tokenizer: &zhbert_tokenizer::BertTokenizer,
    texts: &[String],
) -> anyhow::Result<()> {
    let mut unknown = 0;
    for text in texts {
        unknown += usize::from(tokenizer.is_mostly_unknown(text)?);
    }
    if unknown > 0 {
        tracing::warn!(
            "{unknown} of {} texts are mostly [UNK] (more than half of their tokens outside the model's vocabulary): their predictions say little about them",
            texts.len()
        );
    }
    Ok(())
}

fn predict<B: Backend>(args: &PredictArgs, device: &B::Device) -> anyhow::Result<()> {
    let options = ClassifierOptions {
        allow_fresh_head: args.allow_fresh_head,
        batch_size: args.batch_size,
        max_length: None,
        pad_to_multiple_of: args.backend.pad_to_multiple_of,
        quantize: args.quantize.for_backend(args.backend.kind()?)?,
    };
    let mut classifier =
        Classifier::<B>::load_with(&args.model, &options, device).map_err(|e| {
            with_flag_for_fresh_head(e, "fine-tune it first (zhbert train), or pass --allow-fresh-head to predict with a random head")
        })?;
    classifier = args.long_text.apply(classifier, args.max_length)?;
    if let Some(t) = args.threshold {
        classifier = classifier.with_threshold(t)?;
    }
    let format = args.input.as_ref().map(|input| match args.format {
        Some(FormatArg::Lines) => TextFormat::Lines,
        Some(FormatArg::Csv) => TextFormat::Csv,
        Some(FormatArg::Tsv) => TextFormat::Tsv,
        Some(FormatArg::Jsonl) => TextFormat::Jsonl,
        None => TextFormat::from_path(input),
    });
    let texts = match (&args.input, format) {
        (Some(input), Some(format)) => read_texts(input, format, &args.text_column)?,
        _ => args.text.clone(),
    };
    // Where the library's blank-text error points, in the user's terms.
    let describe = |index: usize| match (&args.input, format) {
        (Some(input), Some(format)) => where_in_file(input, format, &args.text_column, index),
        _ => format!("--text number {}", index + 1),
    };
    let start = std::time::Instant::now();
    let predictions = classifier.predict(&texts).map_err(|e| {
        match e.downcast_ref::<EmptyTextError>() {
            Some(blank) => anyhow::anyhow!(
                "{}: the text is empty or only whitespace; there is nothing to classify (remove it from the input)",
                describe(blank.index)
            ),
            None => e,
        }
    })?;
    let truncated = predictions.iter().filter(|p| p.is_truncated()).count();
    warn_mostly_unknown(classifier.tokenizer(), &texts)?;
    tracing::info!(
        "{} texts in {:.2}s ({:.1} texts/s){}",
        texts.len(),
        start.elapsed().as_secs_f64(),
        texts.len() as f64 / start.elapsed().as_secs_f64().max(1e-9),
        if truncated > 0 {
            format!(
                ", {truncated} truncated to {} tokens",
                classifier.max_length()
            )
        } else {
            String::new()
        }
    );
    crate::long_text::log_split(&predictions, &classifier);
    let mut out = Vec::new();
    for p in &predictions {
        let top_k = args.top_k.map(|k| {
            p.top_k(k)
                .into_iter()
                .map(|(label, score)| Scored { label, score })
                .collect()
        });
        match classifier.problem_type() {
            ProblemType::SingleLabelClassification => {
                let line = OutputLine {
                    label: &p.label,
                    score: p.score,
                    probs: &p.probs,
                    logits: &p.logits,
                    top_k,
                };
                serde_json::to_writer(&mut out, &line)?;
            }
            ProblemType::MultiLabelClassification => {
                let line = MultiLabelLine {
                    labels: &p.labels_over_threshold,
                    probs: &p.probs,
                    logits: &p.logits,
                    top_k,
                };
                serde_json::to_writer(&mut out, &line)?;
            }
            ProblemType::Regression => {
                serde_json::to_writer(&mut out, &serde_json::json!({ "score": p.score }))?;
            }
        }
        out.push(b'\n');
    }
    match &args.output {
        Some(path) => zhbert_model::write_atomic(path, &out)
            .with_context(|| format!("writing predictions to {}", path.display()))?,
        None => std::io::stdout().lock().write_all(&out)?,
    }
    Ok(())
}

/// A checkpoint without a trained head: the library's message with the CLI's
/// way out (`way_out`) instead of the library option's; other errors as they are.
pub(crate) fn with_flag_for_fresh_head(e: anyhow::Error, way_out: &str) -> anyhow::Error {
    match e.downcast_ref::<ModelError>() {
        Some(ModelError::MissingHead { path, reason }) => anyhow::anyhow!(
            "{}: a checkpoint without a trained classification head ({reason}); {way_out}",
            path.display()
        ),
        _ => e,
    }
}

/// Where the `index`th text of an input file is: `file:line` for a text file
/// (one text per line, every line read); for CSV/TSV and JSONL, whose texts do
/// not map to lines one to one, the record number.
fn where_in_file(path: &Path, format: TextFormat, column: &str, index: usize) -> String {
    let name = if path == Path::new("-") {
        "<stdin>".to_string()
    } else {
        path.display().to_string()
    };
    match format {
        TextFormat::Lines => format!("{name}:{}", index + 1),
        _ => format!("{name}: record {} ({column:?})", index + 1),
    }
}

/// A count of at least 1 (`--top-k 0` would ask for an empty list).
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(k) => Ok(k),
        Err(e) => Err(e.to_string()),
    }
}

/// `--max-length N` on a classifier, refused in the flag's words when the
/// model cannot take it.
pub(crate) fn with_max_length_flag<B: burn::tensor::backend::Backend>(
    classifier: zhbert_train::Classifier<B>,
    n: usize,
) -> anyhow::Result<zhbert_train::Classifier<B>> {
    let limit = classifier.config().max_position_embeddings;
    classifier.with_max_length(n).map_err(|_| {
        anyhow::anyhow!(
            "--max-length {n}: must be between 3 and the model's max_position_embeddings ({limit})"
        )
    })
}
