//! `zhbert eval`: a thin layer over [`zhbert_train::Classifier::evaluate`].

use std::path::PathBuf;

use anyhow::Result;
use burn::tensor::backend::Backend;
use zhbert_data::{read_dataset, BadRows, Columns, ReadOptions};
use zhbert_train::{Classifier, ClassifierOptions};

use crate::{with_backend, BackendArgs};

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
    /// Multi-label CSV/TSV: the separator of a cell's labels ("|").
    #[arg(long)]
    label_separator: Option<String>,
    /// Multi-label: one threshold for every label, in (0, 1) (default: the
    /// model's thresholds.json, else 0.5).
    #[arg(long)]
    threshold: Option<f32>,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Longest input in tokens (default: the model's limit, at most 512).
    #[arg(long)]
    max_length: Option<usize>,
    #[command(flatten)]
    long_text: crate::long_text::LongTextArgs,
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    quantize: crate::quantize::QuantizeArgs,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let kind = args.backend.kind()?;
    with_backend!(kind, args.backend.device, |B, device| eval_on::<B>(
        &args, &device
    ))
}

fn eval_on<B: Backend>(args: &EvalArgs, device: &B::Device) -> Result<()> {
    let options = ClassifierOptions {
        allow_fresh_head: false,
        batch_size: args.batch_size,
        max_length: None,
        pad_to_multiple_of: args.backend.pad_to_multiple_of,
        quantize: args.quantize.for_backend(args.backend.kind()?)?,
    };
    let mut classifier =
        Classifier::<B>::load_with(&args.model, &options, device).map_err(|e| {
            crate::predict::with_flag_for_fresh_head(
                e,
                "fine-tune it first (zhbert train): eval measures a trained head",
            )
        })?;
    classifier = args.long_text.apply(classifier, args.max_length)?;
    if let Some(t) = args.threshold {
        classifier = classifier.with_threshold(t)?;
    }
    let read_options = ReadOptions {
        format: None,
        columns: Columns {
            text: args.text_column.clone(),
            text_pair: args.text_pair_column.clone(),
            label: args.label_column.clone(),
            label_separator: args.label_separator.clone(),
        },
        bad_rows: BadRows::Fail,
        known_labels: Some(classifier.labels().to_vec()),
        // The data is read as the model was trained: its labels as lists or values.
        task: Some(zhbert_train::tasks::task_of(classifier.problem_type())),
    };
    let (data, report) = read_dataset(&args.data, &read_options)?;
    tracing::info!("{report}");
    let m = classifier.evaluate(&data)?;
    println!("{}: {} examples", args.data.display(), m.examples);
    if m.samples_f1.is_some() || m.mse.is_some() {
        println!("loss {:.4} {}", m.loss, m.headline());
    } else {
        println!(
            "loss {:.4} accuracy {:.4} macro F1 {:.4} micro F1 {:.4}",
            m.loss, m.accuracy, m.macro_f1, m.micro_f1
        );
    }
    for c in &m.per_class {
        println!(
            "  {:>12}  precision {:.4} recall {:.4} F1 {:.4} support {}",
            c.label, c.precision, c.recall, c.f1, c.support
        );
    }
    if !m.confusion.is_empty() {
        print!("{}", m.confusion_table());
    }
    let out = args.output.clone().unwrap_or_else(|| {
        let stem = args
            .data
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("data");
        classifier
            .model_dir()
            .expect("a loaded classifier has a folder")
            .join(format!("eval-{stem}.json"))
    });
    zhbert_model::write_atomic(&out, serde_json::to_string_pretty(&m)?.as_bytes())?;
    println!("metrics written to {}", out.display());
    Ok(())
}
