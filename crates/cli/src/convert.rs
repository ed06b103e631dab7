//! `zhbert convert`: an HF checkpoint in any supported form to an HF folder with
//! `model.safetensors`, HF key names, `config.json` and the tokenizer files.

use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::backend::Flex;
use zhbert_model::{
    load_base, load_classifier, load_masked_lm, save_safetensors, BertConfig, LoadOptions,
};

#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// Source: a model folder (model.safetensors or pytorch_model.bin) or a Hub id.
    #[arg(long)]
    from: String,
    /// Destination folder (created; existing files of the same names are replaced).
    #[arg(long)]
    to: PathBuf,
}

/// Which head the checkpoint carries, from `architectures` in `config.json`.
fn architecture(config: &BertConfig) -> &str {
    config
        .extra
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(|a| a.as_str())
        .unwrap_or("BertModel")
}

pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    let src = zhbert_train::hub::resolve_model(&args.from)?;
    convert(&src, &args.to)
}

/// Converts on the CPU: weights are only moved, never computed with. The
/// destination is made once the checkpoint has loaded: a source that cannot be
/// converted leaves nothing behind.
pub fn convert(src: &Path, dst: &Path) -> anyhow::Result<()> {
    let config = BertConfig::from_file(src.join("config.json"))?;
    let device = Default::default();
    let arch = architecture(&config).to_string();
    let weights = dst.join("model.safetensors");
    let report = match arch.as_str() {
        "BertForSequenceClassification" => {
            let (model, _, report) =
                load_classifier::<Flex>(src, &LoadOptions::default(), &device)?;
            create(dst)?;
            save_safetensors(&model, &weights)?;
            report
        }
        "BertForMaskedLM" | "BertForPreTraining" => {
            let (model, _, report) = load_masked_lm::<Flex>(src, &device)?;
            create(dst)?;
            save_safetensors(&model, &weights)?;
            report
        }
        _ => {
            let (model, _, report) = load_base::<Flex>(src, &device)?;
            create(dst)?;
            save_safetensors(&model, &weights)?;
            report
        }
    };
    tracing::info!("{report}");
    if !report.unexpected.is_empty() {
        tracing::info!(
            "not converted (unused by {arch}): {}",
            report.unexpected.join(", ")
        );
    }
    let arch = if arch == "BertForPreTraining" {
        "BertForMaskedLM".into()
    } else {
        arch
    };
    config.save(dst.join("config.json"), &arch)?;
    let mut copied = 0;
    for name in zhbert_tokenizer::TOKENIZER_FILES {
        let from = src.join(name);
        if from.is_file() && src.canonicalize().ok() != dst.canonicalize().ok() {
            let bytes =
                std::fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
            zhbert_model::write_atomic(&dst.join(name), &bytes)?;
            copied += 1;
        }
    }
    tracing::info!("wrote {} ({arch}, {copied} tokenizer files)", dst.display());
    Ok(())
}

fn create(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}
