//! Dynamic int8 quantization for CPU inference, what
//! `torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, torch.qint8)`
//! does in PyTorch: every linear layer's weights are quantized to int8 once
//! (per output channel), and each layer's input is quantized per row when it
//! runs; the product is integer, then dequantized with the bias added.
//! Attention's own products, softmax, GELU and LayerNorm stay fp32.
//!
//! ```no_run
//! # use burn::backend::Flex;
//! # use zhbert_model::{BertConfig, BertInput, Quantize};
//! # let device = Default::default();
//! # let model = BertConfig::new(100).init_classifier::<Flex>(&device);
//! # let input = BertInput::from_ids(&[2, 7, 3], &[0, 0, 0], &[1, 1, 1], 1, 3, &device);
//! let model = model.quantize(Quantize::Int8)?;   // packs the weights once
//! let logits = model.forward(input);             // fp32 logits, int8 matmuls
//! # Ok::<(), zhbert_model::QuantizeError>(())
//! ```
//!
//! It runs on burn's Flex CPU backend only (the kernels are zhbert's own, in
//! [`kernel`]: AVX2 chosen at run time, a portable fallback); on another
//! backend [`BertForSequenceClassification::quantize`] is a
//! [`QuantizeError`]. The int8 copies are keyed by the id of each layer's
//! weight parameter, and the model's forward pass hands them to its linear
//! layers (the same run-time dispatch as [`crate::attention`]). The fp32
//! weights of the quantized layers are dropped (left as `[0, n]` tensors
//! under the same ids; biases, embeddings and LayerNorm stay fp32), which is
//! what makes the quantized model smaller. A quantized model is therefore
//! for inference only: it cannot be trained (that needs an autodiff backend,
//! where quantizing is an error), and it must not be saved or have weights
//! loaded into it (the quantized layers' weights are empty, and loading does
//! not re-quantize).
//!
//! Numbers formats and their reasons: [`kernel`].
//!
//! [`BertForSequenceClassification::quantize`]: crate::BertForSequenceClassification::quantize

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use burn::module::ParamId;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

pub mod kernel;

use kernel::{Kernel, PackedWeight};

/// How a model's linear layers are quantized for inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quantize {
    /// Dynamic int8: weights per output channel at load, activations per
    /// row at run time.
    Int8,
}

impl fmt::Display for Quantize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Int8 => "int8",
        })
    }
}

impl FromStr for Quantize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "int8" => Ok(Self::Int8),
            _ => Err(format!("quantization {s:?}: only int8 is supported")),
        }
    }
}

/// A model that cannot be quantized where it is.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    /// The backend is not burn's Flex CPU backend.
    #[error("int8 quantization runs on the flex CPU backend only, not on {backend}")]
    Backend {
        /// The backend's name.
        backend: String,
    },
}

/// The int8 weights of a model's linear layers, by the id of each layer's
/// weight parameter.
#[derive(Debug)]
pub struct Int8Linears {
    layers: HashMap<ParamId, PackedWeight>,
    kernel: Kernel,
}

impl Int8Linears {
    /// Quantizes and packs `layers`; the backend must be Flex.
    pub fn pack<B: Backend>(
        layers: &[&Linear<B>],
        device: &B::Device,
    ) -> Result<Self, QuantizeError> {
        if !is_flex::<B>() {
            return Err(QuantizeError::Backend {
                backend: B::name(device),
            });
        }
        let layers = layers
            .iter()
            .map(|layer| {
                let [k, n] = layer.weight.dims();
                let weight = layer.weight.val().into_data().convert::<f32>();
                let bias = layer.bias.as_ref().map(|b| {
                    b.val()
                        .into_data()
                        .convert::<f32>()
                        .to_vec::<f32>()
                        .expect("f32")
                });
                let weight = weight.to_vec::<f32>().expect("f32");
                let packed = PackedWeight::pack(&weight, k, n, bias.as_deref());
                (layer.weight.id, packed)
            })
            .collect();
        Ok(Self {
            layers,
            kernel: Kernel::detect(),
        })
    }

    /// Layers quantized.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether no layer is quantized.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Bytes the int8 weights take.
    pub fn bytes(&self) -> usize {
        self.layers.values().map(PackedWeight::bytes).sum()
    }

    /// The kernel the products run on (the fastest this CPU has).
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }
}

/// Hands the memory freed by dropping the fp32 weights back to the system.
/// glibc keeps freed heap blocks for reuse; the weights were allocated while
/// loading, below later allocations, so without a trim the process's RSS
/// stays that of the fp32 model (measured: 245 MB for MiniLM either way).
pub(crate) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: glibc's malloc_trim takes no pointers and only returns
        // free pages to the kernel.
        unsafe { malloc_trim(0) };
    }
}

fn is_flex<B: Backend>() -> bool {
    #[cfg(feature = "flex")]
    {
        std::any::TypeId::of::<B>() == std::any::TypeId::of::<burn_flex::Flex>()
    }
    #[cfg(not(feature = "flex"))]
    {
        false
    }
}

thread_local! {
    /// The int8 weights of the model whose forward pass runs on this thread.
    static ACTIVE: RefCell<Option<Arc<Int8Linears>>> = const { RefCell::new(None) };
}

/// Runs `f` (a forward pass) with `weights` available to the linear layers
/// of this thread; the previous setting comes back afterwards, even if `f`
/// panics.
pub(crate) fn scoped<R>(weights: Option<&Arc<Int8Linears>>, f: impl FnOnce() -> R) -> R {
    let Some(weights) = weights else {
        return f();
    };
    struct Restore(Option<Arc<Int8Linears>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            ACTIVE.set(self.0.take());
        }
    }
    let _restore = Restore(ACTIVE.replace(Some(weights.clone())));
    f()
}

/// `act(layer(x))` through the int8 kernel when the running model quantized
/// this layer (and `x` is a Flex tensor), else `x` back.
#[cfg(feature = "flex")]
pub(crate) fn try_linear<B: Backend, const D: usize>(
    layer: &Linear<B>,
    x: burn::tensor::Tensor<B, D>,
    act: kernel::Activation,
) -> Result<burn::tensor::Tensor<B, D>, burn::tensor::Tensor<B, D>> {
    use burn::tensor::DType;

    let Some(weights) = ACTIVE.with_borrow(Clone::clone) else {
        return Err(x);
    };
    let packed = match weights.layers.get(&layer.weight.id) {
        Some(p) if p.in_features() == x.dims()[D - 1] => p,
        _ => return Err(x),
    };
    // The layer's fp32 weights were dropped at quantization, so there is no
    // other path: inside `autocast` the input comes in half (and is read as
    // f32) and the output goes back to it.
    let dtype = x.dtype();
    let rows = crate::cpu::FlexRows::of(x)?;
    let quantized = kernel::QuantizedRows::quantize(rows.values(), rows.rows(), rows.features());
    let y = kernel::matmul_act(&quantized, packed, weights.kernel, act);
    let out = rows.output::<B>(y, packed.out_features());
    Ok(match dtype {
        DType::F32 => out,
        half => out.cast(half),
    })
}
