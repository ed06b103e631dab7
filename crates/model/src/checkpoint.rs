//! HF checkpoints in and out: `model.safetensors` and `pytorch_model.bin` through
//! burn-store, with HF key names, and a report of what was loaded.

use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::DType;
use burn_store::{
    ApplyError, ApplyResult, BurnToPyTorchAdapter, ChainAdapter, KeyRemapper, ModuleAdapter,
    ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore, TensorSnapshot,
};

use crate::bert::{BertForMaskedLM, BertForSequenceClassification, BertModel};
use crate::config::BertConfig;
use crate::ModelError;

/// The weight file formats zhbert reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointFormat {
    /// `model.safetensors`.
    Safetensors,
    /// `pytorch_model.bin` (torch's zip pickle).
    PytorchBin,
}

/// Finds the weights of an HF model folder: `model.safetensors` first, then
/// `pytorch_model.bin`, as `from_pretrained` does.
pub fn find_weights(dir: &Path) -> Result<(PathBuf, CheckpointFormat), ModelError> {
    for (name, format) in [
        ("model.safetensors", CheckpointFormat::Safetensors),
        ("pytorch_model.bin", CheckpointFormat::PytorchBin),
    ] {
        let path = dir.join(name);
        if path.is_file() {
            return Ok((path, format));
        }
    }
    Err(ModelError::invalid(
        dir,
        "no model.safetensors or pytorch_model.bin in this folder",
    ))
}

/// What a checkpoint load did, in HF key names.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// The weight file.
    pub file: PathBuf,
    /// Tensors of the model filled from the checkpoint.
    pub loaded: Vec<String>,
    /// Tensors of the model the checkpoint lacks (left freshly initialised).
    pub missing: Vec<String>,
    /// Tensors of the checkpoint the model does not use.
    pub unexpected: Vec<String>,
    /// Tensors whose checkpoint shape did not fit: (name, checkpoint shape, model shape).
    pub mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// True when the classification head was initialised fresh instead of loaded.
    pub fresh_head: bool,
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} tensors loaded, {} missing, {} unexpected",
            self.file.display(),
            self.loaded.len(),
            self.missing.len(),
            self.unexpected.len()
        )?;
        if self.fresh_head {
            write!(f, ", classification head freshly initialised")?;
        }
        Ok(())
    }
}

/// Whether the model loaded into has a head (`bert.` before the encoder's
/// paths) or is the bare `BertModel`; decides where HF's `bert.` prefix goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Base,
    WithHead,
}

/// HF key → burn module path.
fn load_remapper(target: Target) -> KeyRemapper {
    let mut patterns = vec![
        // Straight to burn's names, so that burn-store's own weight/gamma fallback
        // (which reports the checkpoint key as unused) is never needed.
        (r"(^|\.)LayerNorm\.(weight|gamma)$", "${1}layer_norm.gamma"),
        (r"(^|\.)LayerNorm\.(bias|beta)$", "${1}layer_norm.beta"),
        (r"\.attention\.self\.", ".attention.self_attn."),
    ];
    patterns.push(match target {
        // Base-model checkpoints have no prefix; head checkpoints have `bert.`.
        Target::WithHead => (r"^(embeddings|encoder|pooler)\.", "bert.${1}."),
        Target::Base => (r"^bert\.", ""),
    });
    KeyRemapper::from_patterns(patterns).expect("valid patterns")
}

/// burn module path → HF key (also used to name tensors in messages).
fn save_remapper() -> KeyRemapper {
    KeyRemapper::from_patterns(vec![
        (r"(^|\.)layer_norm\.", "${1}LayerNorm."),
        (r"\.attention\.self_attn\.", ".attention.self."),
    ])
    .expect("valid patterns")
}

/// The HF name of a burn parameter path (for messages and reports).
pub fn hf_name(burn_path: &str) -> String {
    let mut name = save_remapper()
        .to_regex_pairs()
        .iter()
        .fold(burn_path.to_string(), |s, (re, to)| {
            re.replace_all(&s, to.as_str()).into_owned()
        });
    if let Some(stem) = name.strip_suffix("LayerNorm.gamma") {
        name = format!("{stem}LayerNorm.weight");
    } else if let Some(stem) = name.strip_suffix("LayerNorm.beta") {
        name = format!("{stem}LayerNorm.bias");
    }
    name
}

/// burn stores linear weights as `[in, out]`, torch as `[out, in]`: messages show torch's.
fn hf_shape(burn_path: &str, dims: &[usize]) -> Vec<usize> {
    let is_linear_weight =
        burn_path.ends_with(".weight") && dims.len() == 2 && !burn_path.contains("embeddings");
    let mut d = dims.to_vec();
    if is_linear_weight {
        d.reverse();
    }
    d
}

/// Casts f16/bf16/f64 checkpoints to the model's f32 on the fly, as
/// `from_pretrained` does with `torch_dtype=float32`.
#[derive(Clone)]
struct ToF32;

impl ModuleAdapter for ToF32 {
    fn adapt(&self, snapshot: &TensorSnapshot) -> TensorSnapshot {
        if matches!(snapshot.dtype, DType::F32) || !snapshot.dtype.is_float() {
            return snapshot.clone();
        }
        let inner = snapshot.clone_data_fn();
        TensorSnapshot::from_closure(
            Rc::new(move || inner().map(|d| d.convert_dtype(DType::F32))),
            DType::F32,
            snapshot.shape.clone(),
            snapshot.path_stack.clone().unwrap_or_default(),
            snapshot.container_stack.clone().unwrap_or_default(),
            snapshot.tensor_id.unwrap_or_default(),
        )
    }
    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(self.clone())
    }
}

/// Applies a checkpoint file to any module whose paths follow the HF names.
fn apply_file<B: Backend, M: ModuleSnapshot<B>>(
    module: &mut M,
    file: &Path,
    format: CheckpointFormat,
    target: Target,
) -> Result<ApplyResult, ModelError> {
    let err =
        |e: &dyn fmt::Display| ModelError::invalid(file, format!("cannot read checkpoint: {e}"));
    let adapter = ChainAdapter::new(ToF32, PyTorchToBurnAdapter);
    let result = match format {
        CheckpointFormat::Safetensors => {
            let mut store = SafetensorsStore::from_file(file)
                .with_from_adapter(adapter)
                .remap(load_remapper(target))
                .allow_partial(true)
                .validate(false);
            module.load_from(&mut store).map_err(|e| err(&e))
        }
        CheckpointFormat::PytorchBin => {
            let mut store = PytorchStore::from_file(file)
                .remap(load_remapper(target))
                .allow_partial(true)
                .validate(false);
            // PytorchStore applies PyTorchToBurnAdapter itself; add the cast.
            let snapshots: Vec<TensorSnapshot> = {
                use burn_store::ModuleStore;
                store
                    .get_all_snapshots()
                    .map_err(|e| err(&e))?
                    .values()
                    .cloned()
                    .collect()
            };
            Ok(module.apply(snapshots, None, Some(Box::new(adapter)), false))
        }
    }?;
    // Tensors are reference counted: the clone is cheap, `map` rewrites them once.
    *module = module.clone().map(&mut Contiguous);
    Ok(result)
}

/// Rewrites every parameter into a fresh row-major buffer. burn-store hands
/// linear weights over as transposed views of the file's layout; a matmul over
/// a view sums in another order than over a contiguous tensor, so a model would
/// compute differently (in the last bits) right after a load than after an
/// optimizer step, and a resumed run would drift from the run it continues.
struct Contiguous;

impl<B: Backend> burn::module::ModuleMapper<B> for Contiguous {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<burn::tensor::Tensor<B, D>>,
    ) -> burn::module::Param<burn::tensor::Tensor<B, D>> {
        param.map(|t| {
            let require_grad = t.is_require_grad();
            let fresh = burn::tensor::Tensor::from_data(t.to_data(), &t.device());
            if require_grad {
                fresh.require_grad()
            } else {
                fresh
            }
        })
    }
}

/// Turns burn-store's result into a report in HF names; shape mismatches outside
/// `head_prefix` and read errors are errors.
fn report(
    file: &Path,
    result: ApplyResult,
    head_prefix: Option<&str>,
    ignore_unused: &[&str],
) -> Result<LoadReport, ModelError> {
    let mut rep = LoadReport {
        file: file.to_path_buf(),
        ..Default::default()
    };
    for e in result.errors {
        match e {
            ApplyError::ShapeMismatch {
                path,
                expected,
                found,
            } => {
                let name = hf_name(&path);
                let want = hf_shape(&path, &expected.to_vec());
                let got = hf_shape(&path, &found.to_vec());
                if head_prefix.is_some_and(|p| path.starts_with(p)) {
                    rep.mismatched.push((name, got, want));
                } else {
                    return Err(ModelError::invalid(
                        file,
                        format!("tensor {name} has shape {got:?} in the checkpoint but the config needs {want:?}"),
                    ));
                }
            }
            other => return Err(ModelError::invalid(file, other.to_string())),
        }
    }
    rep.loaded = result.applied.iter().map(|p| hf_name(p)).collect();
    rep.missing = result.missing.iter().map(|(p, _)| hf_name(p)).collect();
    rep.unexpected = result
        .unused
        .iter()
        .filter(|k| !ignore_unused.iter().any(|suffix| k.ends_with(suffix)))
        .map(|p| hf_name(p))
        .collect();
    Ok(rep)
}

/// Buffers and tied weights HF writes that are not parameters of their own.
const NOT_PARAMETERS: [&str; 3] = [
    "position_ids",
    "cls.predictions.decoder.weight",
    "cls.predictions.decoder.bias",
];

/// How a classification model is loaded.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Label names to give the head (training on a new label set). `None` keeps
    /// the checkpoint's `id2label`.
    pub labels: Option<Vec<String>>,
    /// Accept a checkpoint without a fitting head and initialise one (HF
    /// `ignore_mismatched_sizes`); otherwise that is an error.
    pub allow_fresh_head: bool,
}

/// Loads `BertForSequenceClassification` from an HF model folder (base or
/// classification checkpoint, keys with or without `bert.`).
pub fn load_classifier<B: Backend>(
    dir: &Path,
    options: &LoadOptions,
    device: &B::Device,
) -> Result<(BertForSequenceClassification<B>, BertConfig, LoadReport), ModelError> {
    let config = BertConfig::from_file(dir.join("config.json"))?;
    load_classifier_with_config(dir, config, options, device)
}

/// [`load_classifier`] with a config given by the caller (for example with
/// dropout changed); the weights still come from `dir`.
pub fn load_classifier_with_config<B: Backend>(
    dir: &Path,
    mut config: BertConfig,
    options: &LoadOptions,
    device: &B::Device,
) -> Result<(BertForSequenceClassification<B>, BertConfig, LoadReport), ModelError> {
    if let Some(labels) = &options.labels {
        config.set_labels(labels);
    }
    let (file, format) = find_weights(dir)?;
    let mut model = config.init_classifier::<B>(device);
    let result = apply_file(&mut model, &file, format, Target::WithHead)?;
    let mut rep = report(&file, result, Some("classifier."), &NOT_PARAMETERS)?;
    let head_missing = rep.missing.iter().any(|k| k.starts_with("classifier."));
    rep.fresh_head = head_missing || !rep.mismatched.is_empty();
    require_present(&file, &rep, &["classifier.", "bert.pooler."])?;
    if rep.fresh_head && !options.allow_fresh_head {
        let why = match rep.mismatched.first() {
            Some((name, got, want)) => {
                format!("its {name} has shape {got:?}, the labels need {want:?}")
            }
            None => "it has no classification head".into(),
        };
        return Err(ModelError::MissingHead {
            path: file.clone(),
            reason: why,
        });
    }
    if rep.fresh_head {
        tracing::warn!(
            "{}: classification head ({} labels) is freshly initialised, not loaded",
            file.display(),
            config.num_labels()
        );
    }
    if rep.missing.iter().any(|k| k.starts_with("bert.pooler.")) {
        tracing::warn!(
            "{}: no pooler weights; the pooler is freshly initialised",
            file.display()
        );
    }
    Ok((model, config, rep))
}

/// Fails when the checkpoint lacks tensors other than those under `optional`
/// prefixes (which stay freshly initialised, as in HF).
fn require_present(file: &Path, rep: &LoadReport, optional: &[&str]) -> Result<(), ModelError> {
    let required: Vec<&String> = rep
        .missing
        .iter()
        .filter(|k| !optional.iter().any(|p| k.starts_with(p)))
        .collect();
    match required.first() {
        None => Ok(()),
        Some(first) => Err(ModelError::invalid(
            file,
            format!(
                "{} tensors of the model are not in the checkpoint (first: {first}); is this a BERT checkpoint for this config?",
                required.len()
            ),
        )),
    }
}

/// Reads `config.json`, builds the model with `init` and fills it from the
/// folder's weights.
fn load_folder<B: Backend, M: ModuleSnapshot<B>>(
    dir: &Path,
    target: Target,
    init: impl FnOnce(&BertConfig) -> M,
    optional: &[&str],
) -> Result<(M, BertConfig, LoadReport), ModelError> {
    let config = BertConfig::from_file(dir.join("config.json"))?;
    let (file, format) = find_weights(dir)?;
    let mut model = init(&config);
    let result = apply_file(&mut model, &file, format, target)?;
    let rep = report(&file, result, None, &NOT_PARAMETERS)?;
    require_present(&file, &rep, optional)?;
    Ok((model, config, rep))
}

/// Loads `BertModel` (encoder and pooler) from an HF model folder.
pub fn load_base<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(BertModel<B>, BertConfig, LoadReport), ModelError> {
    load_folder(
        dir,
        Target::Base,
        |c| c.init_model::<B>(true, device),
        &["pooler."],
    )
}

/// Loads `BertForMaskedLM` from an HF model folder.
pub fn load_masked_lm<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(BertForMaskedLM<B>, BertConfig, LoadReport), ModelError> {
    load_folder(
        dir,
        Target::WithHead,
        |c| c.init_masked_lm::<B>(device),
        &[],
    )
}

/// Loads the weights of one file (safetensors, or `.bin`) into a model with a
/// head (`BertForSequenceClassification`, `BertForMaskedLM`); keys may come with
/// or without `bert.`. Used for checkpoints and partial files such as a head.
pub fn load_weights_file<B: Backend, M: ModuleSnapshot<B>>(
    module: &mut M,
    file: &Path,
) -> Result<LoadReport, ModelError> {
    let format = if file.extension().is_some_and(|e| e == "bin") {
        CheckpointFormat::PytorchBin
    } else {
        CheckpointFormat::Safetensors
    };
    let result = apply_file(module, file, format, Target::WithHead)?;
    report(file, result, None, &NOT_PARAMETERS)
}

/// Writes a module's weights as `model.safetensors` with HF key names and
/// torch's layouts, atomically (temporary file, then rename).
pub fn save_safetensors<B: Backend, M: Module<B> + ModuleSnapshot<B>>(
    module: &M,
    path: &Path,
) -> Result<(), ModelError> {
    let mut store = SafetensorsStore::from_bytes(None)
        .with_to_adapter(BurnToPyTorchAdapter)
        .remap(save_remapper())
        .metadata("format", "pt");
    let cannot =
        |e: &dyn fmt::Display| ModelError::invalid(path, format!("cannot write weights: {e}"));
    module.save_into(&mut store).map_err(|e| cannot(&e))?;
    let bytes = store.get_bytes().map_err(|e| cannot(&e))?;
    crate::write_atomic(path, &bytes)
}

/// Writes a classification model as an HF folder: `model.safetensors` and
/// `config.json` (the caller adds the tokenizer files).
pub fn save_classifier<B: Backend>(
    model: &BertForSequenceClassification<B>,
    config: &BertConfig,
    dir: &Path,
) -> Result<(), ModelError> {
    // Quantizing drops the fp32 weights of the quantized layers: what is
    // left could only be saved as empty tensors.
    if model.quantization().is_some() {
        return Err(ModelError::invalid(
            dir,
            "a quantized model cannot be saved: its quantized layers keep int8 weights only; save the fp32 model",
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    save_safetensors(model, &dir.join("model.safetensors"))?;
    config.save(dir.join("config.json"), "BertForSequenceClassification")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(
            hf_name("bert.encoder.layer.3.attention.self_attn.query.weight"),
            "bert.encoder.layer.3.attention.self.query.weight"
        );
        assert_eq!(
            hf_name("bert.embeddings.layer_norm.gamma"),
            "bert.embeddings.LayerNorm.weight"
        );
        assert_eq!(hf_shape("bert.pooler.dense.weight", &[3, 5]), vec![5, 3]);
        assert_eq!(
            hf_shape("bert.embeddings.word_embeddings.weight", &[3, 5]),
            vec![3, 5]
        );
    }
}
