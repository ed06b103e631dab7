//! Mixed precision, the role `torch.autocast` plays in PyTorch: inside
//! [`autocast`], the model's matmuls (every linear layer, `QKᵀ` and the
//! attention-weighted sum) run in bf16 or f16, while the weights stay fp32
//! (their casts are part of the autodiff graph, so gradients arrive in fp32)
//! and softmax, LayerNorm, residual sums and the loss stay in fp32.
//!
//! ```no_run
//! # use burn::backend::Flex;
//! # use zhbert_model::{autocast, BertConfig, BertInput, Precision};
//! # let device = Default::default();
//! # let model = BertConfig::new(100).init_classifier::<Flex>(&device);
//! # let input = BertInput::from_ids(&[2, 7, 3], &[0, 0, 0], &[1, 1, 1], 1, 3, &device);
//! let logits = autocast(Precision::Bf16, || model.forward(input)); // fp32 logits
//! ```
//!
//! The setting is per thread, like torch's, so data-parallel replicas on their
//! own threads each set their own.

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;

use burn::nn::Linear;

use crate::quantize::kernel::Activation;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor};
use serde::{Deserialize, Serialize};

/// The float type a model's matmuls run in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in fp32.
    #[default]
    Fp32,
    /// Matmuls in bfloat16: fp32's range, 8 bits of mantissa.
    Bf16,
    /// Matmuls in float16: 11 bits of mantissa but a range that ends at 65,504,
    /// which is why training in it scales the loss.
    F16,
}

impl Precision {
    /// The half type the matmuls run in (`None` for fp32).
    pub fn half(self) -> Option<FloatDType> {
        match self {
            Self::Fp32 => None,
            Self::Bf16 => Some(FloatDType::BF16),
            Self::F16 => Some(FloatDType::F16),
        }
    }

    /// Whether the backend can compute in this precision on `device` (burn's
    /// ndarray backend has no half types).
    pub fn supported<B: Backend>(self, device: &B::Device) -> bool {
        self.half()
            .is_none_or(|half| B::supports_dtype(device, DType::from(half)))
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Fp32 => "fp32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
        })
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fp32" | "f32" => Ok(Self::Fp32),
            "bf16" => Ok(Self::Bf16),
            "f16" | "fp16" => Ok(Self::F16),
            _ => Err(format!("precision {s:?}: fp32, bf16 or f16")),
        }
    }
}

thread_local! {
    static COMPUTE: Cell<Option<FloatDType>> = const { Cell::new(None) };
}

/// Runs `f` with this thread's matmuls in `precision`; the previous setting
/// comes back afterwards, even if `f` panics.
pub fn autocast<R>(precision: Precision, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<FloatDType>);
    impl Drop for Restore {
        fn drop(&mut self) {
            COMPUTE.set(self.0);
        }
    }
    let _restore = Restore(COMPUTE.replace(precision.half()));
    f()
}

/// Whether this thread is inside [`autocast`] with a half type.
pub(crate) fn autocast_active() -> bool {
    COMPUTE.get().is_some()
}

/// `x` in the compute type (unchanged outside [`autocast`]).
pub(crate) fn to_compute<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    match COMPUTE.get() {
        Some(half) => x.cast(half),
        None => x,
    }
}

/// A linear layer in the compute type: input, weight and bias cast to it, and
/// the output left in it. Outside [`autocast`], the layer as it is.
pub(crate) fn linear<B: Backend, const D: usize>(
    layer: &Linear<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    linear_act(layer, x, Activation::Identity)
}

/// `gelu(linear(layer, x))`, the GELU fused into the int8 kernel's output
/// step when the layer is quantized (one pass over the output instead of
/// two; the same bits, see [`crate::quantize::kernel::gelu`]).
pub(crate) fn linear_gelu<B: Backend, const D: usize>(
    layer: &Linear<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    linear_act(layer, x, Activation::Gelu)
}

fn linear_act<B: Backend, const D: usize>(
    layer: &Linear<B>,
    x: Tensor<B, D>,
    act: Activation,
) -> Tensor<B, D> {
    // A layer of a model quantized to int8 runs zhbert's int8 kernel.
    #[cfg(feature = "flex")]
    let x = match crate::quantize::try_linear(layer, x, act) {
        Ok(y) => return y,
        Err(x) => x,
    };
    // fp32 inference on the CPU runs zhbert's own kernel where it is the
    // faster one (`crate::dense`).
    #[cfg(feature = "flex")]
    let x = match crate::dense::try_linear(layer, x, act) {
        Ok(y) => return y,
        Err(x) => x,
    };
    let y = linear_fp(layer, x);
    match act {
        Activation::Identity => y,
        Activation::Gelu => burn::tensor::activation::gelu(y),
    }
}

fn linear_fp<B: Backend, const D: usize>(layer: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    // A quantized model's weights are empty (dropped at quantization); burn's
    // own shape error would not say why.
    assert!(
        layer.weight.dims()[0] != 0 || x.dims()[D - 1] == 0,
        "this linear layer was quantized to int8 and its fp32 weights dropped: \
         run it through BertForSequenceClassification::forward"
    );
    match COMPUTE.get() {
        None => layer.forward(x),
        Some(half) => burn::tensor::module::linear(
            x.cast(half),
            layer.weight.val().cast(half),
            layer.bias.as_ref().map(|b| b.val().cast(half)),
        ),
    }
}
