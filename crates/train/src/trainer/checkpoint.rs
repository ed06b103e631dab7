//! Checkpoints: written into a hidden folder and renamed into place, old ones
//! renamed away before deletion, so that a run killed at any moment leaves only
//! complete checkpoints; read back for `resume` and for the best weights.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};
use zhbert_model::{save_classifier, BertConfig, BertForSequenceClassification};
use zhbert_tokenizer::BertTokenizer;

use super::config::TrainConfig;
use crate::optim::{read_f32_tensors, write_f32_tensors, AdamW, LossScaler};

/// Where a run stands; saved in every checkpoint as `trainer_state.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub global_step: usize,
    /// Current epoch (0-based).
    pub epoch: usize,
    /// Next micro-batch of the epoch.
    pub batch_in_epoch: usize,
    /// Best value of the chosen metric so far.
    pub best_metric: Option<f64>,
    /// Step of the best checkpoint.
    pub best_step: Option<usize>,
    /// Evaluations since the best.
    pub evals_without_improvement: usize,
    /// The configuration the run was started with.
    pub config: Option<TrainConfig>,
    /// f16 training's loss scale.
    #[serde(default)]
    pub loss_scaler: Option<LossScaler>,
    /// Steps skipped because their f16 gradients overflowed.
    #[serde(default)]
    pub skipped_steps: usize,
}

pub(crate) fn checkpoint_dir(out: &Path, step: usize) -> PathBuf {
    out.join("checkpoints").join(format!("checkpoint-{step}"))
}

/// Complete checkpoints (those with `trainer_state.json`), by step.
pub fn list_checkpoints(out: &Path) -> Vec<(usize, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(out.join("checkpoints")) else {
        return vec![];
    };
    let mut v: Vec<(usize, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let step = name.strip_prefix("checkpoint-")?.parse().ok()?;
            e.path()
                .join("trainer_state.json")
                .is_file()
                .then(|| (step, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// Fails when `out` holds checkpoints of an earlier run, which a run without
/// resuming would mix with its own.
pub fn check_fresh_output(out: &Path) -> Result<()> {
    if !list_checkpoints(out).is_empty() {
        bail!(
            "{} already holds checkpoints: resume that run, or choose another output folder",
            out.display()
        );
    }
    Ok(())
}

/// Writes a checkpoint into a temporary folder and renames it into place, so
/// that a kill at any moment leaves either the old set or the new one.
#[allow(clippy::too_many_arguments)]
pub(crate) fn save_checkpoint<AB: AutodiffBackend>(
    out: &Path,
    model: &BertForSequenceClassification<AB>,
    model_config: &BertConfig,
    tokenizer: &BertTokenizer,
    opt: &AdamW<AB::InnerBackend>,
    state: &TrainerState,
    keep: usize,
) -> Result<()> {
    let dir = checkpoint_dir(out, state.global_step);
    let tmp = dir.with_file_name(format!(".checkpoint-{}.tmp", state.global_step));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    save_classifier(model, model_config, &tmp)?;
    tokenizer.save(&tmp)?;
    write_f32_tensors(
        &tmp.join("optimizer.safetensors"),
        &opt.state_tensors::<AB, _>(model),
    )?;
    zhbert_model::write_atomic(
        &tmp.join("trainer_state.json"),
        serde_json::to_string_pretty(state)?.as_bytes(),
    )?;
    // fsync the files' folder before it becomes visible under its final name.
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).ok();
    remove_checkpoint(&dir);
    std::fs::rename(&tmp, &dir)
        .with_context(|| format!("renaming {} into place", tmp.display()))?;
    // Keep the last `keep` and the best.
    let all = list_checkpoints(out);
    let cut = all.len().saturating_sub(keep.max(1));
    for (step, path) in &all[..cut] {
        if Some(*step) != state.best_step {
            remove_checkpoint(path);
        }
    }
    Ok(())
}

/// Fails when the run being resumed recorded a vocabulary other than
/// `tokenizer`'s (in its last checkpoint `dir`, or, from older zhbert versions,
/// only in the finished run's folder `out`): its weights would be fed other
/// token ids. A preset's vocabulary is rebuilt from the training text, so
/// another text, or another zhbert's rule for it, gives another one.
pub(crate) fn ensure_same_vocabulary(
    tokenizer: &BertTokenizer,
    dir: &Path,
    out: &Path,
) -> Result<()> {
    let Some(path) = [dir, out]
        .iter()
        .map(|d| d.join("vocab.txt"))
        .find(|p| p.is_file())
    else {
        return Ok(());
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let saved: Vec<&str> = text.lines().collect();
    let moved = saved
        .iter()
        .enumerate()
        .filter(|&(i, t)| tokenizer.token_to_id(t) != Some(i as u32))
        .count();
    if moved > 0 || saved.len() != tokenizer.vocab_size() {
        bail!(
            "{}: the run in {} used another vocabulary than this one ({} entries there, {} here, {moved} of them at other ids; a preset builds its own from the training text): delete that folder or choose another output folder",
            path.display(),
            out.display(),
            saved.len(),
            tokenizer.vocab_size(),
        );
    }
    Ok(())
}

/// Renames a checkpoint out of sight, then deletes it: a kill during the deletion
/// leaves a hidden folder, never a half-deleted `checkpoint-N`.
fn remove_checkpoint(path: &Path) {
    if !path.exists() {
        return;
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("checkpoint");
    let doomed = path.with_file_name(format!(".{name}.deleting"));
    if std::fs::rename(path, &doomed).is_ok() {
        let _ = std::fs::remove_dir_all(&doomed);
    }
}

/// Removes what a killed run may have left half-written or half-deleted.
pub(crate) fn remove_stale(out: &Path) {
    let Ok(entries) = std::fs::read_dir(out.join("checkpoints")) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && (name.ends_with(".tmp") || name.ends_with(".deleting")) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Loads weights and optimizer state of a checkpoint into a freshly built model.
pub(crate) fn load_checkpoint<AB: AutodiffBackend>(
    dir: &Path,
    model: &mut BertForSequenceClassification<AB>,
    opt: &mut AdamW<AB::InnerBackend>,
    device: &AB::Device,
) -> Result<TrainerState> {
    let state_file = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&state_file)
        .with_context(|| format!("reading {}", state_file.display()))?;
    let state: TrainerState = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a trainer state", state_file.display()))?;
    let report = zhbert_model::load_weights_file(model, &dir.join("model.safetensors"))?;
    if !report.missing.is_empty() {
        bail!(
            "{}: checkpoint lacks {} tensors of the model",
            dir.display(),
            report.missing.len()
        );
    }
    let tensors = read_f32_tensors(&dir.join("optimizer.safetensors"))?;
    // AdamW's bias correction counts the steps it took, not the skipped ones.
    let steps_taken = state.global_step - state.skipped_steps;
    opt.load_state::<AB, _>(model, &tensors, steps_taken, &device.clone())
        .with_context(|| format!("{}: optimizer.safetensors", dir.display()))?;
    Ok(state)
}
