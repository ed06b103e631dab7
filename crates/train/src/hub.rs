//! Model folders: a local path, or a Hugging Face Hub id fetched into the usual
//! HF cache (`~/.cache/huggingface/hub`, or `HF_HOME`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// Weight files of a BERT model folder, tried in order.
#[cfg_attr(not(feature = "hub"), allow(dead_code))]
const WEIGHT_FILES: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];

/// A local folder as it is; otherwise a Hub model id (`bert-base-chinese`,
/// `hfl/chinese-roberta-wwm-ext`) downloaded once and then read from the cache.
pub fn resolve_model(arg: &str) -> anyhow::Result<PathBuf> {
    let path = Path::new(arg);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if path.exists() {
        bail!(
            "{arg}: a file, not a model: a model is an HF folder (config.json, weights, vocab), a Hub id or a preset name"
        );
    }
    let looks_like_id = !arg.is_empty()
        && arg.split('/').count() <= 2
        && !arg.starts_with('.')
        && !arg.starts_with('/')
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if !looks_like_id {
        bail!("{arg}: no such folder");
    }
    download(arg).with_context(|| {
        format!(
            "{arg} is not a local folder and could not be fetched from the Hugging Face Hub; \
             if you have the model on disk, pass its folder (--model /path/to/{arg}), \
             or set HF_HUB_OFFLINE=1 to use the local cache only"
        )
    })
}

#[cfg(not(feature = "hub"))]
fn download(id: &str) -> anyhow::Result<PathBuf> {
    bail!("{id}: this build has no Hugging Face Hub support (feature `hub`)")
}

#[cfg(feature = "hub")]
fn download(id: &str) -> anyhow::Result<PathBuf> {
    let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1");
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .build()?;
    let repo = api.model(id.to_string());
    let cache = hf_hub::Cache::from_env().model(id.to_string());
    let get = |name: &str| -> anyhow::Result<PathBuf> {
        if let Some(p) = cache.get(name) {
            return Ok(p);
        }
        if offline {
            bail!("{name} is not in the local cache and HF_HUB_OFFLINE=1");
        }
        Ok(repo.get(name)?)
    };
    let config = get("config.json")?;
    let weights = WEIGHT_FILES.iter().find_map(|name| get(name).ok());
    if weights.is_none() {
        bail!("the repository has neither {}", WEIGHT_FILES.join(" nor "));
    }
    // Tokenizer files are optional one by one; at least one must exist.
    let tokenizer_found = zhbert_tokenizer::TOKENIZER_FILES
        .iter()
        .filter(|name| get(name).is_ok())
        .count();
    if tokenizer_found == 0 {
        bail!("the repository has no tokenizer files (vocab.txt or tokenizer.json)");
    }
    Ok(config
        .parent()
        .expect("a cached file has a folder")
        .to_path_buf())
}
