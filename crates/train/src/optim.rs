//! AdamW as `torch.optim.AdamW`, with HF's parameter groups (no weight decay on
//! biases and LayerNorm weights), gradient accumulation, clipping by global norm
//! as `torch.nn.utils.clip_grad_norm_`, and HF's learning-rate schedules
//! (`get_linear_schedule_with_warmup` and the others of [`LrScheduler`]).
//!
//! burn's own optimizers clip per tensor and cannot be told which parameters to
//! exempt from weight decay, so the step is written here. State is kept flat (one
//! 1-D tensor per parameter) so that parameters of every rank share one map.

use std::collections::HashMap;
use std::path::Path;

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};

/// Dynamic loss scaling for f16 training, as `torch.amp.GradScaler` does it:
/// the loss is multiplied by `scale` before the backward pass so that small
/// gradients do not underflow f16, the gradients are divided by it before the
/// step, and a step whose gradients overflowed is skipped and the scale halved;
/// after [`LossScaler::GROWTH_INTERVAL`] good steps in a row it doubles.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossScaler {
    /// The factor the loss is multiplied by (a power of two: scaling is exact).
    pub scale: f64,
    /// Steps in a row whose gradients were finite.
    pub good_steps: usize,
}

impl LossScaler {
    /// GradScaler's initial scale, 2^16.
    pub const INIT: f64 = 65536.0;
    /// GradScaler's `growth_interval`.
    pub const GROWTH_INTERVAL: usize = 2000;

    /// A scaler at `scale`.
    pub fn new(scale: f64) -> Self {
        Self {
            scale,
            good_steps: 0,
        }
    }

    /// Records whether a step's gradients were finite, adjusts the scale, and
    /// says whether the step may be taken.
    pub fn update(&mut self, finite: bool) -> bool {
        if finite {
            self.good_steps += 1;
            if self.good_steps == Self::GROWTH_INTERVAL {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
        } else {
            self.scale /= 2.0;
            self.good_steps = 0;
        }
        finite
    }
}

/// AdamW hyperparameters (torch's defaults, HF's lr).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// `beta1`.
    pub beta1: f64,
    /// `beta2`.
    pub beta2: f64,
    /// `eps`.
    pub eps: f64,
    /// Decoupled weight decay, applied to every parameter but biases and LayerNorm weights.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 5e-5,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// How the learning rate moves over training: HF's `lr_scheduler_type`
/// (`transformers.get_scheduler`), the ones a fine-tuning run uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrScheduler {
    /// Warmup, then linearly down to 0 at the last step (HF's default,
    /// `get_linear_schedule_with_warmup`).
    #[default]
    Linear,
    /// Warmup, then half a cosine down to 0 at the last step.
    Cosine,
    /// The peak from the first step; warmup is ignored, as in HF.
    Constant,
    /// Warmup, then the peak.
    ConstantWithWarmup,
}

impl LrScheduler {
    /// The learning rate of optimizer step `step` (from 0), as HF's scheduler
    /// gives it, beyond `total_steps` included.
    pub fn lr(self, peak: f64, step: usize, warmup_steps: usize, total_steps: usize) -> f64 {
        if step < warmup_steps && self != Self::Constant {
            return peak * step as f64 / warmup_steps.max(1) as f64;
        }
        let after_warmup = total_steps.saturating_sub(warmup_steps).max(1) as f64;
        match self {
            Self::Linear => {
                peak * (total_steps.saturating_sub(step) as f64 / after_warmup).max(0.0)
            }
            Self::Cosine => {
                let progress = step.saturating_sub(warmup_steps) as f64 / after_warmup;
                peak * (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
            }
            Self::Constant | Self::ConstantWithWarmup => peak,
        }
    }
}

impl LrScheduler {
    /// Every scheduler, in the order the error message lists them.
    pub const ALL: [Self; 4] = [
        Self::Linear,
        Self::Cosine,
        Self::Constant,
        Self::ConstantWithWarmup,
    ];

    /// HF's name of the scheduler (`--lr-scheduler`, TOML and serde).
    pub fn name(self) -> &'static str {
        match self {
            Self::Linear => "linear",
            Self::Cosine => "cosine",
            Self::Constant => "constant",
            Self::ConstantWithWarmup => "constant_with_warmup",
        }
    }
}

impl std::fmt::Display for LrScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for LrScheduler {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|x| x.name() == s).ok_or_else(|| {
            format!("learning-rate scheduler {s:?}: linear, cosine, constant or constant_with_warmup")
        })
    }
}

/// Every float parameter's HF-style path (`bert.encoder.layer.0...`), id and size.
#[derive(Default)]
struct ParamPaths {
    stack: Vec<String>,
    out: Vec<(String, ParamId, Vec<usize>)>,
}

impl<B: Backend> ModuleVisitor<B> for ParamPaths {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.out
            .push((self.stack.join("."), param.id, param.val().dims().to_vec()));
    }
}

/// (path, id, shape) of every float parameter of a module, in visiting order.
pub fn param_paths<B: Backend, M: Module<B>>(module: &M) -> Vec<(String, ParamId, Vec<usize>)> {
    let mut v = ParamPaths::default();
    module.visit(&mut v);
    v.out
}

/// HF's rule: no weight decay on biases and LayerNorm weights.
pub fn decays(path: &str) -> bool {
    !(path.ends_with("bias") || path.ends_with(".beta") || path.contains("layer_norm"))
}

/// Gradients summed over micro-batches, flat, by parameter.
pub struct GradAccumulator<B: Backend> {
    grads: HashMap<ParamId, Tensor<B, 1>>,
    /// Parameters in the module's visiting order: the global norm is summed in
    /// this fixed order, never in a hash map's, so every run (and every resumed
    /// run) rounds it the same way.
    order: Vec<ParamId>,
}

struct Collect<'a, AB: AutodiffBackend> {
    grads: &'a AB::Gradients,
    into: &'a mut HashMap<ParamId, Tensor<AB::InnerBackend, 1>>,
    order: &'a mut Vec<ParamId>,
}

impl<AB: AutodiffBackend> ModuleVisitor<AB> for Collect<'_, AB> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        let Some(g) = param.val().grad(self.grads) else {
            return;
        };
        let n = g.shape().num_elements();
        let g = g.reshape([n]);
        let sum = match self.into.remove(&param.id) {
            Some(acc) => acc + g,
            None => {
                self.order.push(param.id);
                g
            }
        };
        self.into.insert(param.id, sum);
    }
}

impl<B: Backend> Default for GradAccumulator<B> {
    fn default() -> Self {
        Self {
            grads: HashMap::new(),
            order: Vec::new(),
        }
    }
}

impl<B: Backend> GradAccumulator<B> {
    /// Adds the gradients of one backward pass.
    pub fn add<AB, M>(&mut self, model: &M, grads: &AB::Gradients)
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        model.visit(&mut Collect::<AB> {
            grads,
            into: &mut self.grads,
            order: &mut self.order,
        });
    }

    /// Whether any gradient has been added since the last step.
    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }

    /// Drops the gradients (after a step, or instead of one).
    pub fn clear(&mut self) {
        self.grads.clear();
        self.order.clear();
    }

    /// Multiplies every gradient by `factor` (undoing a loss scale).
    pub fn scale(&mut self, factor: f64) {
        for g in self.grads.values_mut() {
            *g = g.clone().mul_scalar(factor);
        }
    }

    /// The gradients of `params` (id and number of elements, in a fixed order),
    /// end to end in one tensor, then `extra`: what data-parallel replicas sum in
    /// one all-reduce. A parameter without a gradient here (a replica whose share
    /// of a batch was empty) counts as zeros.
    pub(crate) fn flatten(
        &self,
        params: &[(ParamId, usize)],
        extra: &[f32],
        device: &B::Device,
    ) -> Tensor<B, 1> {
        let mut parts: Vec<Tensor<B, 1>> = params
            .iter()
            .map(|(id, n)| match self.grads.get(id) {
                Some(g) => g.clone(),
                None => Tensor::zeros([*n], device),
            })
            .collect();
        parts.push(Tensor::from_data(
            TensorData::new(extra.to_vec(), [extra.len()]),
            device,
        ));
        Tensor::cat(parts, 0)
    }

    /// The inverse of [`flatten`](Self::flatten): every parameter's gradient
    /// taken from `flat`; returns the extra values at its end.
    pub(crate) fn unflatten(
        &mut self,
        flat: Tensor<B, 1>,
        params: &[(ParamId, usize)],
    ) -> Vec<f32> {
        self.grads.clear();
        self.order.clear();
        let mut at = 0;
        for (id, n) in params {
            self.grads.insert(*id, flat.clone().slice(at..at + n));
            self.order.push(*id);
            at += n;
        }
        let total = flat.dims()[0];
        flat.slice(at..total)
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32 values")
    }

    /// `clip_grad_norm_`: the global L2 norm of all gradients (returned), and
    /// every gradient scaled by `max_norm / (norm + 1e-6)` when that is below 1.
    pub fn clip_global_norm(&mut self, max_norm: Option<f64>) -> f64 {
        let Some(total) = self
            .order
            .iter()
            .map(|id| sum_of_squares(&self.grads[id]))
            .reduce(|a, b| a + b)
        else {
            return 0.0;
        };
        let norm = total.sqrt().into_scalar().elem::<f64>();
        if let Some(max) = max_norm {
            let coef = max / (norm + 1e-6);
            if coef < 1.0 {
                for g in self.grads.values_mut() {
                    *g = g.clone().mul_scalar(coef);
                }
            }
        }
        norm
    }
}

/// `Σ g²` of a flat tensor: the squares as rows of 1,024 (the tail padded with
/// zeros), each row summed, then the row sums. On Mesa's lavapipe, burn 0.21's
/// wgpu reductions of a long 1-D tensor gave a wrong global norm for MiniLM's
/// gradients (0.560 where the gradients, read back and summed on the host,
/// give 0.584), whether summed whole, in slices of 2^20 elements or as a dot
/// product; summed as rows it is right, from a fresh autotune cache too
/// (`five_steps_on_wgpu_match_pytorch_and_flex`).
fn sum_of_squares<B: Backend>(g: &Tensor<B, 1>) -> Tensor<B, 1> {
    const ROW: usize = 1024;
    let n = g.dims()[0];
    if n == 0 {
        return Tensor::zeros([1], &g.device());
    }
    let rows = n.div_ceil(ROW);
    let padded = if rows * ROW == n {
        g.clone()
    } else {
        Tensor::cat(
            vec![g.clone(), Tensor::zeros([rows * ROW - n], &g.device())],
            0,
        )
    };
    padded.powi_scalar(2).reshape([rows, ROW]).sum_dim(1).sum()
}

/// One AdamW step's scalars, as torch computes them.
struct StepScalars {
    /// `1 - lr·weight_decay` where the parameter decays.
    decay: Option<f64>,
    beta1: f64,
    beta2: f64,
    /// `sqrt(1 - β2^t)`.
    bc2_sqrt: f64,
    eps: f64,
    /// `lr / (1 - β1^t)`.
    step_size: f64,
}

/// AdamW on one flat parameter as tensor ops (every backend): torch's
/// `denom = sqrt(v) / sqrt(1 - β2^t) + eps; p -= lr / (1 - β1^t) · m / denom`
/// after the decoupled decay. The updated parameter and moments.
#[allow(clippy::type_complexity)]
fn composed_update<B: Backend>(
    mut p: Tensor<B, 1>,
    grad: Tensor<B, 1>,
    moments: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
    s: &StepScalars,
) -> (Tensor<B, 1>, Tensor<B, 1>, Tensor<B, 1>) {
    if let Some(decay) = s.decay {
        p = p.mul_scalar(decay);
    }
    let (m, v) = match moments {
        Some((m, v)) => (
            m.mul_scalar(s.beta1) + grad.clone().mul_scalar(1.0 - s.beta1),
            v.mul_scalar(s.beta2) + grad.powi_scalar(2).mul_scalar(1.0 - s.beta2),
        ),
        None => (
            grad.clone().mul_scalar(1.0 - s.beta1),
            grad.powi_scalar(2).mul_scalar(1.0 - s.beta2),
        ),
    };
    let denom = v.clone().sqrt().div_scalar(s.bc2_sqrt).add_scalar(s.eps);
    let p = p - (m.clone() / denom).mul_scalar(s.step_size);
    (p, m, v)
}

#[cfg(feature = "flex")]
mod flex_adamw;

/// AdamW's moments, by parameter id, flat.
pub struct AdamW<B: Backend> {
    /// Hyperparameters.
    pub config: AdamWConfig,
    /// Optimizer steps taken.
    pub step: usize,
    moments: HashMap<ParamId, (Tensor<B, 1>, Tensor<B, 1>)>,
    no_decay: std::collections::HashSet<ParamId>,
}

struct Update<'a, AB: AutodiffBackend> {
    opt: &'a mut AdamW<AB::InnerBackend>,
    grads: &'a mut HashMap<ParamId, Tensor<AB::InnerBackend, 1>>,
    lr: f64,
}

impl<AB: AutodiffBackend> ModuleMapper<AB> for Update<'_, AB> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove(&id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let c = &self.opt.config;
        let t = self.opt.step as i32;
        let shape = tensor.dims();
        let require_grad = tensor.is_require_grad();
        let n = grad.shape().num_elements();
        let p = tensor.inner().reshape([n]);
        let decays = c.weight_decay != 0.0 && !self.opt.no_decay.contains(&id);
        let scalars = StepScalars {
            decay: decays.then(|| 1.0 - self.lr * c.weight_decay),
            beta1: c.beta1,
            beta2: c.beta2,
            bc2_sqrt: (1.0 - c.beta2.powi(t)).sqrt(),
            eps: c.eps,
            step_size: self.lr / (1.0 - c.beta1.powi(t)),
        };
        let moments = self.opt.moments.remove(&id);
        #[cfg(feature = "flex")]
        let (p, m, v) = match flex_adamw::update(p, grad, moments, &scalars) {
            Ok(updated) => updated,
            Err((p, grad, moments)) => composed_update(p, grad, moments, &scalars),
        };
        #[cfg(not(feature = "flex"))]
        let (p, m, v) = composed_update(p, grad, moments, &scalars);
        self.opt.moments.insert(id, (m, v));
        let mut out = Tensor::<AB, D>::from_inner(p.reshape(shape));
        if require_grad {
            out = out.require_grad();
        }
        Param::from_mapped_value(id, out, mapper)
    }
}

impl<B: Backend> AdamW<B> {
    /// A fresh optimizer for `model` (whose parameter paths decide weight decay).
    pub fn new<AB: AutodiffBackend<InnerBackend = B>, M: AutodiffModule<AB>>(
        config: AdamWConfig,
        model: &M,
    ) -> Self {
        let no_decay = param_paths::<AB, M>(model)
            .into_iter()
            .filter(|(path, _, _)| !decays(path))
            .map(|(_, id, _)| id)
            .collect();
        Self {
            config,
            step: 0,
            moments: HashMap::new(),
            no_decay,
        }
    }

    /// One optimizer step with learning rate `lr` on the accumulated gradients,
    /// which it consumes.
    pub fn step<AB, M>(&mut self, model: M, lr: f64, grads: &mut GradAccumulator<B>) -> M
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        self.step += 1;
        let mut update = Update::<AB> {
            opt: self,
            grads: &mut grads.grads,
            lr,
        };
        let model = model.map(&mut update);
        grads.clear();
        model
    }

    /// The moments as named f32 tensors (`exp_avg.<path>`, `exp_avg_sq.<path>`),
    /// for checkpoints.
    pub fn state_tensors<AB: AutodiffBackend<InnerBackend = B>, M: AutodiffModule<AB>>(
        &self,
        model: &M,
    ) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut out = Vec::new();
        for (path, id, shape) in param_paths::<AB, M>(model) {
            if let Some((m, v)) = self.moments.get(&id) {
                for (kind, t) in [("exp_avg", m), ("exp_avg_sq", v)] {
                    let data = t
                        .clone()
                        .into_data()
                        .convert::<f32>()
                        .to_vec::<f32>()
                        .expect("f32 state");
                    out.push((format!("{kind}.{path}"), shape.clone(), data));
                }
            }
        }
        out
    }

    /// Restores the moments written by [`AdamW::state_tensors`].
    pub fn load_state<AB: AutodiffBackend<InnerBackend = B>, M: AutodiffModule<AB>>(
        &mut self,
        model: &M,
        tensors: &HashMap<String, Vec<f32>>,
        step: usize,
        device: &B::Device,
    ) -> anyhow::Result<()> {
        self.moments.clear();
        self.step = step;
        for (path, id, shape) in param_paths::<AB, M>(model) {
            let n: usize = shape.iter().product();
            let get = |kind: &str| -> anyhow::Result<Option<Tensor<B, 1>>> {
                match tensors.get(&format!("{kind}.{path}")) {
                    None => Ok(None),
                    Some(v) if v.len() == n => Ok(Some(Tensor::from_data(
                        TensorData::new(v.clone(), [n]),
                        device,
                    ))),
                    Some(v) => anyhow::bail!(
                        "optimizer state {kind}.{path} has {} values, the parameter {n}",
                        v.len()
                    ),
                }
            };
            match (get("exp_avg")?, get("exp_avg_sq")?) {
                (Some(m), Some(v)) => {
                    self.moments.insert(id, (m, v));
                }
                (None, None) if step == 0 => {}
                _ => anyhow::bail!("optimizer state for {path} is missing"),
            }
        }
        Ok(())
    }
}

/// Reads a safetensors file of f32 tensors into a map (optimizer checkpoints).
pub fn read_f32_tensors(path: &Path) -> anyhow::Result<HashMap<String, Vec<f32>>> {
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        anyhow::ensure!(
            view.dtype() == safetensors::Dtype::F32,
            "{}: {name} is not f32",
            path.display()
        );
        out.insert(
            name,
            view.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        );
    }
    Ok(out)
}

/// Writes named f32 tensors as safetensors (the caller makes it atomic).
pub fn write_f32_tensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
) -> anyhow::Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| {
            (
                n.clone(),
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_matches_get_linear_schedule_with_warmup() {
        // HF: lr_lambda(step) = step/warmup before warmup, else (total-step)/(total-warmup).
        assert_eq!(LrScheduler::Linear.lr(1.0, 0, 2, 20), 0.0);
        assert_eq!(LrScheduler::Linear.lr(1.0, 1, 2, 20), 0.5);
        assert_eq!(LrScheduler::Linear.lr(1.0, 2, 2, 20), 1.0);
        assert_eq!(LrScheduler::Linear.lr(1.0, 11, 2, 20), 0.5);
        assert_eq!(LrScheduler::Linear.lr(1.0, 20, 2, 20), 0.0);
        assert_eq!(LrScheduler::Linear.lr(1.0, 0, 0, 10), 1.0);
    }

    #[test]
    fn decay_groups_follow_hf() {
        assert!(decays(
            "bert.encoder.layer.0.attention.self_attn.query.weight"
        ));
        assert!(decays("bert.embeddings.word_embeddings.weight"));
        assert!(!decays(
            "bert.encoder.layer.0.attention.self_attn.query.bias"
        ));
        assert!(!decays("bert.embeddings.layer_norm.gamma"));
        assert!(!decays("bert.embeddings.layer_norm.beta"));
        assert!(!decays("cls.predictions.bias"));
    }

    /// The one-pass Flex update gives the composed ops' bits: three steps,
    /// with and without decay, over a length that is no multiple of a task.
    #[cfg(feature = "flex")]
    #[test]
    fn flex_one_pass_update_equals_the_composed_ops() {
        use burn::backend::Flex;
        use rand::{Rng, SeedableRng};
        let n = 3 * (1 << 14) + 77;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut values = |scale: f32| -> Tensor<Flex, 1> {
            let v: Vec<f32> = (0..n).map(|_| rng.random_range(-scale..scale)).collect();
            Tensor::from_data(TensorData::new(v, [n]), &Default::default())
        };
        for decay in [None, Some(1.0 - 2e-3 * 0.01)] {
            let (mut fused, mut composed) = ((values(1.0), None), (values(1.0), None));
            composed.0 = fused.0.clone();
            for t in 1..=3 {
                let s = StepScalars {
                    decay,
                    beta1: 0.9,
                    beta2: 0.999,
                    bc2_sqrt: (1.0 - 0.999f64.powi(t)).sqrt(),
                    eps: 1e-8,
                    step_size: 2e-3 / (1.0 - 0.9f64.powi(t)),
                };
                let grad = values(1e-2);
                let Ok((p, m, v)) = flex_adamw::update(fused.0, grad.clone(), fused.1, &s) else {
                    panic!("Flex f32 takes the one-pass path");
                };
                fused = (p, Some((m, v)));
                let (p, m, v) = composed_update(composed.0, grad, composed.1, &s);
                composed = (p, Some((m, v)));
                let bits = |t: &Tensor<Flex, 1>| -> Vec<u32> {
                    t.to_data()
                        .to_vec::<f32>()
                        .unwrap()
                        .iter()
                        .map(|x| x.to_bits())
                        .collect()
                };
                let (fm, fv) = fused.1.as_ref().unwrap();
                let (cm, cv) = composed.1.as_ref().unwrap();
                assert!(
                    bits(&fused.0) == bits(&composed.0),
                    "step {t}: parameters differ"
                );
                assert!(
                    bits(fm) == bits(cm) && bits(fv) == bits(cv),
                    "step {t}: moments differ"
                );
            }
        }
    }
}
