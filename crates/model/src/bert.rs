//! BERT as in HF `modeling_bert.py`, the whole model in one file.
//!
//! Module and field names follow HF's state-dict keys (`embeddings.word_embeddings`,
//! `encoder.layer.N.attention.self.query`, ...), so that checkpoint import is a
//! rename of two words (`LayerNorm` → `layer_norm`, `self` → `self_attn`, which Rust
//! reserves) and a transpose of the linear weights, nothing more.

use std::sync::Arc;

use burn::module::{Module, Param};
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig,
    Linear, LinearConfig,
};
use burn::tensor::activation::{gelu, gelu_approximate, log_softmax, relu};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use crate::attention::{has_fused_kernel, self_attention, AttentionShape};
use crate::config::{BertConfig, HiddenAct};
use crate::precision::{autocast_active, linear, to_compute};
use crate::quantize::{Int8Linears, Quantize, QuantizeError};

/// Added to the attention scores of padding positions. Large enough that their
/// softmax weight is exactly 0 in f32, small enough to stay finite in f16.
const MASK_VALUE: f32 = -1.0e4;

/// Largest attention mask, in elements, that is expanded to `[batch, heads, seq, seq]`.
const MASK_MATERIALIZE_MAX: usize = 1 << 24;

/// The inputs of a forward pass, as the tokenizer makes them.
#[derive(Debug, Clone)]
pub struct BertInput<B: Backend> {
    /// `[batch, seq]` token ids.
    pub input_ids: Tensor<B, 2, Int>,
    /// `[batch, seq]` segment ids; zeros when `None`.
    pub token_type_ids: Option<Tensor<B, 2, Int>>,
    /// `[batch, seq]` 1 for tokens, 0 for padding; all ones when `None`.
    pub attention_mask: Option<Tensor<B, 2, Int>>,
}

impl<B: Backend> BertInput<B> {
    /// Builds the tensors from a row-major batch, such as `zhbert_tokenizer::Batch`.
    pub fn from_ids(
        input_ids: &[u32],
        token_type_ids: &[u32],
        attention_mask: &[u32],
        batch_size: usize,
        seq_len: usize,
        device: &B::Device,
    ) -> Self {
        let tensor = |v: &[u32]| {
            let data: Vec<i64> = v.iter().map(|&x| x as i64).collect();
            Tensor::<B, 1, Int>::from_data(data.as_slice(), device).reshape([batch_size, seq_len])
        };
        Self {
            input_ids: tensor(input_ids),
            token_type_ids: Some(tensor(token_type_ids)),
            attention_mask: Some(tensor(attention_mask)),
        }
    }
}

/// A linear layer initialised as HF does: weights ~ N(0, range), zero bias.
fn hf_linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    config: &BertConfig,
    device: &B::Device,
) -> Linear<B> {
    let mut linear = LinearConfig::new(d_in, d_out)
        .with_initializer(Initializer::Normal {
            mean: 0.0,
            std: config.initializer_range,
        })
        .init(device);
    linear.bias = Some(Param::from_tensor(Tensor::zeros([d_out], device)));
    linear
}

fn hf_embedding<B: Backend>(
    n: usize,
    d: usize,
    config: &BertConfig,
    device: &B::Device,
) -> Embedding<B> {
    EmbeddingConfig::new(n, d)
        .with_initializer(Initializer::Normal {
            mean: 0.0,
            std: config.initializer_range,
        })
        .init(device)
}

fn hf_layer_norm<B: Backend>(config: &BertConfig, device: &B::Device) -> LayerNorm<B> {
    LayerNormConfig::new(config.hidden_size)
        .with_epsilon(config.layer_norm_eps)
        .init(device)
}

/// Word, position and token-type embeddings, summed, then LayerNorm and dropout.
#[derive(Module, Debug)]
pub struct BertEmbeddings<B: Backend> {
    /// `[vocab_size, hidden]`; also the MLM decoder's weight (tied).
    pub word_embeddings: Embedding<B>,
    /// `[max_position_embeddings, hidden]`.
    pub position_embeddings: Embedding<B>,
    /// `[type_vocab_size, hidden]`.
    pub token_type_embeddings: Embedding<B>,
    /// HF `LayerNorm`.
    pub layer_norm: LayerNorm<B>,
    dropout: Dropout,
}

impl<B: Backend> BertEmbeddings<B> {
    fn new(config: &BertConfig, device: &B::Device) -> Self {
        let h = config.hidden_size;
        let mut word_embeddings = hf_embedding(config.vocab_size, h, config, device);
        // HF zeroes the padding row at init (`padding_idx`).
        if let Some(p) = config.pad_token_id.filter(|&p| p < config.vocab_size) {
            // Detached so the parameter stays a leaf of the autodiff graph.
            let w = word_embeddings
                .weight
                .val()
                .slice_assign([p..p + 1, 0..h], Tensor::zeros([1, h], device));
            word_embeddings.weight = Param::from_tensor(w.detach());
        }
        Self {
            word_embeddings,
            position_embeddings: hf_embedding(config.max_position_embeddings, h, config, device),
            token_type_embeddings: hf_embedding(config.type_vocab_size, h, config, device),
            layer_norm: hf_layer_norm(config, device),
            dropout: DropoutConfig::new(config.hidden_dropout_prob).init(),
        }
    }

    /// `[batch, seq]` ids → `[batch, seq, hidden]`.
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        token_type_ids: Tensor<B, 2, Int>,
    ) -> Tensor<B, 3> {
        let [batch, seq_len] = input_ids.dims();
        let device = input_ids.device();
        // One row of ids per sequence, so that the sum below is of three
        // tensors of one shape: a `[1, seq, hidden]` broadcast is an
        // element-by-element strided loop on the CPU backends.
        let positions = Tensor::<B, 1, Int>::arange(0..seq_len as i64, &device)
            .reshape([1, seq_len])
            .repeat_dim(0, batch);
        let x = self.word_embeddings.forward(input_ids)
            + self.token_type_embeddings.forward(token_type_ids)
            + self.position_embeddings.forward(positions);
        self.dropout.forward(self.layer_norm.forward(x))
    }
}

/// HF `BertSelfAttention`: scaled dot-product attention over all heads at once.
#[derive(Module, Debug)]
pub struct BertSelfAttention<B: Backend> {
    /// Query projection.
    pub query: Linear<B>,
    /// Key projection.
    pub key: Linear<B>,
    /// Value projection.
    pub value: Linear<B>,
    dropout: Dropout,
    num_heads: usize,
    head_dim: usize,
}

impl<B: Backend> BertSelfAttention<B> {
    fn new(config: &BertConfig, device: &B::Device) -> Self {
        let h = config.hidden_size;
        Self {
            query: hf_linear(h, h, config, device),
            key: hf_linear(h, h, config, device),
            value: hf_linear(h, h, config, device),
            dropout: DropoutConfig::new(config.attention_probs_dropout_prob).init(),
            num_heads: config.num_attention_heads,
            head_dim: config.head_dim(),
        }
    }

    /// `[batch, seq, hidden]` and an additive mask that broadcasts to
    /// `[batch, heads, seq, seq]` (none: every position is attended) → `[batch, seq, hidden]`.
    pub fn forward(&self, x: Tensor<B, 3>, mask_bias: Option<Tensor<B, 4>>) -> Tensor<B, 3> {
        let [b, l, h] = x.dims();
        self.forward_tokens(x.reshape([b * l, h]), b, mask_bias)
            .reshape([b, l, h])
    }

    /// [`Self::forward`] on `[batch * seq, hidden]` rows: each projection is
    /// one 2-D matmul, and its weight gradient one `xᵀ·dy` over all tokens
    /// (burn's linear on 3-D input makes a batched matmul whose weight
    /// gradient is `batch` partial products summed afterwards). The attention
    /// itself is one op ([`crate::attention`]) that reads the heads from these
    /// rows without splitting them where the backend allows.
    pub fn forward_tokens(
        &self,
        x: Tensor<B, 2>,
        batch: usize,
        mask_bias: Option<Tensor<B, 4>>,
    ) -> Tensor<B, 2> {
        // The residual stream's type: scores return to it for the softmax, and
        // the output for the residual sum (a no-op outside autocast).
        let full = x.dtype();
        let shape = AttentionShape {
            batch,
            heads: self.num_heads,
            scale: (self.head_dim as f64).sqrt().recip(),
            dropout: self.dropout.prob,
            float: full,
        };
        let q = linear(&self.query, x.clone());
        let k = linear(&self.key, x.clone());
        let v = linear(&self.value, x);
        self_attention(q, k, v, mask_bias, shape).cast(full)
    }
}

/// The block HF has twice under two names, [`BertSelfOutput`] after attention
/// and [`BertOutput`] after the feed-forward: projection, dropout, residual,
/// LayerNorm. One definition, as the two differ only in their input width.
#[derive(Module, Debug)]
pub struct BertResidualOutput<B: Backend> {
    /// Output projection.
    pub dense: Linear<B>,
    /// HF `LayerNorm`.
    pub layer_norm: LayerNorm<B>,
    dropout: Dropout,
}

impl<B: Backend> BertResidualOutput<B> {
    fn new(d_in: usize, config: &BertConfig, device: &B::Device) -> Self {
        Self {
            dense: hf_linear(d_in, config.hidden_size, config, device),
            layer_norm: hf_layer_norm(config, device),
            dropout: DropoutConfig::new(config.hidden_dropout_prob).init(),
        }
    }

    /// `LayerNorm(dropout(dense(x)) + residual)`, on `[..., features]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>, residual: Tensor<B, D>) -> Tensor<B, D> {
        let projected = linear(&self.dense, x).cast(residual.dtype());
        self.layer_norm
            .forward(self.dropout.forward(projected) + residual)
    }
}

/// HF `BertSelfOutput`: the attention block's projection, residual and LayerNorm.
pub type BertSelfOutput<B> = BertResidualOutput<B>;

/// HF `BertOutput`: the feed-forward's second projection, residual and LayerNorm.
pub type BertOutput<B> = BertResidualOutput<B>;

/// HF `BertAttention`: self-attention and its output block.
#[derive(Module, Debug)]
pub struct BertAttention<B: Backend> {
    /// HF key `self` (a Rust keyword).
    pub self_attn: BertSelfAttention<B>,
    /// HF `BertSelfOutput`.
    pub output: BertSelfOutput<B>,
}

impl<B: Backend> BertAttention<B> {
    /// Self-attention, then its output block, on `[batch * seq, hidden]` rows.
    pub fn forward(
        &self,
        x: Tensor<B, 2>,
        batch: usize,
        mask_bias: Option<Tensor<B, 4>>,
    ) -> Tensor<B, 2> {
        let attn = self.self_attn.forward_tokens(x.clone(), batch, mask_bias);
        self.output.forward(attn, x)
    }
}

/// HF `BertIntermediate`: the first feed-forward projection and its activation.
#[derive(Module, Debug)]
pub struct BertIntermediate<B: Backend> {
    /// `[hidden → intermediate]`.
    pub dense: Linear<B>,
    #[module(skip)]
    act: HiddenAct,
}

impl<B: Backend> BertIntermediate<B> {
    /// `act(dense(x))`, on `[..., hidden]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self.act {
            // Fused into the int8 kernel when the layer is quantized.
            HiddenAct::Gelu => crate::precision::linear_gelu(&self.dense, x),
            act => act.forward(linear(&self.dense, x)),
        }
    }
}

impl HiddenAct {
    /// Applies the activation.
    pub fn forward<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Self::Gelu => gelu(x),
            Self::GeluNew => gelu_approximate(x),
            Self::Relu => relu(x),
        }
    }
}

/// HF `BertLayer`: attention then feed-forward.
#[derive(Module, Debug)]
pub struct BertLayer<B: Backend> {
    /// Attention block.
    pub attention: BertAttention<B>,
    /// Feed-forward in.
    pub intermediate: BertIntermediate<B>,
    /// Feed-forward out with residual and LayerNorm (HF `BertOutput`).
    pub output: BertOutput<B>,
}

impl<B: Backend> BertLayer<B> {
    fn new(config: &BertConfig, device: &B::Device) -> Self {
        Self {
            attention: BertAttention {
                self_attn: BertSelfAttention::new(config, device),
                output: BertResidualOutput::new(config.hidden_size, config, device),
            },
            intermediate: BertIntermediate {
                dense: hf_linear(config.hidden_size, config.intermediate_size, config, device),
                act: config.hidden_act,
            },
            output: BertResidualOutput::new(config.intermediate_size, config, device),
        }
    }

    /// One encoder layer, `[batch, seq, hidden]` → `[batch, seq, hidden]`.
    pub fn forward(&self, x: Tensor<B, 3>, mask_bias: Option<Tensor<B, 4>>) -> Tensor<B, 3> {
        let [b, l, h] = x.dims();
        // Tokens as rows: every projection below is one 2-D matmul.
        let x = x.reshape([b * l, h]);
        let x = self.attention.forward(x, b, mask_bias);
        let inner = self.intermediate.forward(x.clone());
        self.output.forward(inner, x).reshape([b, l, h])
    }
}

/// HF `BertEncoder`.
#[derive(Module, Debug)]
pub struct BertEncoder<B: Backend> {
    /// The layers, `encoder.layer.N` in HF keys.
    pub layer: Vec<BertLayer<B>>,
}

impl<B: Backend> BertEncoder<B> {
    /// Every layer in turn, `[batch, seq, hidden]` → `[batch, seq, hidden]`.
    pub fn forward(&self, mut x: Tensor<B, 3>, mask_bias: Option<Tensor<B, 4>>) -> Tensor<B, 3> {
        for layer in &self.layer {
            x = layer.forward(x, mask_bias.clone());
        }
        x
    }
}

/// HF `BertPooler`: `tanh(dense(h[CLS]))`.
#[derive(Module, Debug)]
pub struct BertPooler<B: Backend> {
    /// `[hidden → hidden]`.
    pub dense: Linear<B>,
}

impl<B: Backend> BertPooler<B> {
    /// `[batch, seq, hidden]` → `[batch, hidden]`.
    pub fn forward(&self, hidden: Tensor<B, 3>) -> Tensor<B, 2> {
        let [b, _, h] = hidden.dims();
        let full = hidden.dtype();
        let cls = hidden.narrow(1, 0, 1).reshape([b, h]);
        linear(&self.dense, cls).tanh().cast(full)
    }
}

/// The outputs of [`BertModel::forward`] (HF's `BaseModelOutputWithPooling`).
#[derive(Debug, Clone)]
pub struct BertModelOutput<B: Backend> {
    /// `[batch, seq, hidden]`.
    pub last_hidden_state: Tensor<B, 3>,
    /// `[batch, hidden]`, when the model has a pooler.
    pub pooler_output: Option<Tensor<B, 2>>,
}

/// HF `BertModel`: embeddings, encoder and (optionally) pooler.
#[derive(Module, Debug)]
pub struct BertModel<B: Backend> {
    /// Embeddings.
    pub embeddings: BertEmbeddings<B>,
    /// Encoder layers.
    pub encoder: BertEncoder<B>,
    /// Pooler; `BertForMaskedLM` has none.
    pub pooler: Option<BertPooler<B>>,
}

impl BertConfig {
    /// A freshly initialised `BertModel` (HF's `_init_weights`).
    pub fn init_model<B: Backend>(&self, with_pooler: bool, device: &B::Device) -> BertModel<B> {
        BertModel {
            embeddings: BertEmbeddings::new(self, device),
            encoder: BertEncoder {
                layer: (0..self.num_hidden_layers)
                    .map(|_| BertLayer::new(self, device))
                    .collect(),
            },
            pooler: with_pooler.then(|| BertPooler {
                dense: hf_linear(self.hidden_size, self.hidden_size, self, device),
            }),
        }
    }

    /// A freshly initialised `BertForSequenceClassification` with `num_labels()` outputs.
    pub fn init_classifier<B: Backend>(
        &self,
        device: &B::Device,
    ) -> BertForSequenceClassification<B> {
        BertForSequenceClassification {
            bert: self.init_model(true, device),
            dropout: DropoutConfig::new(self.classifier_dropout()).init(),
            classifier: hf_linear(self.hidden_size, self.num_labels(), self, device),
            int8: None,
        }
    }

    /// A freshly initialised `BertForMaskedLM`.
    pub fn init_masked_lm<B: Backend>(&self, device: &B::Device) -> BertForMaskedLM<B> {
        BertForMaskedLM {
            bert: self.init_model(false, device),
            cls: BertOnlyMlmHead {
                predictions: BertLmPredictionHead {
                    transform: BertPredictionHeadTransform {
                        dense: hf_linear(self.hidden_size, self.hidden_size, self, device),
                        act: self.hidden_act,
                        layer_norm: hf_layer_norm(self, device),
                    },
                    bias: Param::from_tensor(Tensor::zeros([self.vocab_size], device)),
                },
            },
        }
    }
}

impl<B: Backend> BertModel<B> {
    /// The forward pass of HF `BertModel`.
    pub fn forward(&self, input: BertInput<B>) -> BertModelOutput<B> {
        let BertInput {
            input_ids,
            token_type_ids,
            attention_mask,
        } = input;
        let [b, l] = input_ids.dims();
        let device = input_ids.device();
        let token_type_ids = token_type_ids.unwrap_or_else(|| Tensor::zeros([b, l], &device));
        let heads = self
            .encoder
            .layer
            .first()
            .map_or(1, |layer| layer.attention.self_attn.num_heads);
        let mask_bias = attention_mask.map(|mask| {
            let bias = (mask.float().neg() + 1.0)
                .mul_scalar(MASK_VALUE)
                .reshape([b, 1, 1, l]);
            // CPU backends add a [b, 1, 1, l] broadcast element by element
            // (burn-flex has no fast path for it), 12% of a MiniLM forward when
            // done in every layer. Expanded once to [b, heads, l, l] it is a
            // plain in-place add; past 64 MiB the broadcast is kept. zhbert's
            // attention kernel reads the broadcast mask as it is.
            let kernel = has_fused_kernel::<B>() && !autocast_active();
            if !kernel && b * heads * l * l <= MASK_MATERIALIZE_MAX {
                Tensor::zeros([b, heads, l, l], &device) + bias
            } else {
                bias
            }
        });
        let x = self.embeddings.forward(input_ids, token_type_ids);
        let x = self.encoder.forward(x, mask_bias);
        let pooler_output = self.pooler.as_ref().map(|p| p.forward(x.clone()));
        BertModelOutput {
            last_hidden_state: x,
            pooler_output,
        }
    }
}

/// Training targets for a classification head, matching [`ProblemType`](crate::ProblemType).
#[derive(Debug, Clone)]
pub enum Labels<B: Backend> {
    /// `[batch]` class ids (single-label).
    Classes(Tensor<B, 1, Int>),
    /// `[batch, num_labels]` 0/1 targets (multi-label).
    MultiHot(Tensor<B, 2>),
    /// `[batch]` real targets (regression).
    Values(Tensor<B, 1>),
}

/// Options of the single-label loss that `torch.nn.CrossEntropyLoss` offers.
#[derive(Debug, Clone, Default)]
pub struct CrossEntropyOptions {
    /// Per-class weights (`weight=`); the mean is weighted like torch's.
    pub class_weights: Option<Vec<f32>>,
    /// `label_smoothing=`.
    pub label_smoothing: f32,
}

/// HF `BertForSequenceClassification`.
#[derive(Module, Debug)]
pub struct BertForSequenceClassification<B: Backend> {
    /// The encoder, `bert.*` in HF keys.
    pub bert: BertModel<B>,
    dropout: Dropout,
    /// `[hidden → num_labels]`.
    pub classifier: Linear<B>,
    /// The int8 copies of the linear layers' weights, once [`Self::quantize`]d
    /// (not part of the record: the parameters stay fp32, under their names).
    #[module(skip)]
    int8: Option<Arc<Int8Linears>>,
}

impl<B: Backend> BertForSequenceClassification<B> {
    /// `[batch, num_labels]` logits.
    pub fn forward(&self, input: BertInput<B>) -> Tensor<B, 2> {
        crate::quantize::scoped(self.int8.as_ref(), || {
            let pooled = self
                .bert
                .forward(input)
                .pooler_output
                .expect("a classification model has a pooler");
            let full = pooled.dtype();
            linear(&self.classifier, self.dropout.forward(pooled)).cast(full)
        })
    }

    /// The model with every linear layer (the six of each encoder layer,
    /// pooler and head) quantized for inference ([`crate::quantize`]). Only
    /// on burn's Flex CPU backend; elsewhere a [`QuantizeError`]. The fp32
    /// weights of those layers are dropped (their biases stay), so the model
    /// is smaller, and it is for inference only: training needs an autodiff
    /// backend, where this is a [`QuantizeError`]; do not save it (those
    /// layers' weights would be written empty). Quantizing a quantized model
    /// changes nothing.
    pub fn quantize(mut self, quantize: Quantize) -> Result<Self, QuantizeError> {
        if self.int8.is_some() {
            return Ok(self);
        }
        match quantize {
            Quantize::Int8 => {
                let device = self.classifier.weight.device();
                let mut layers = self.linears_mut();
                let refs: Vec<&Linear<B>> = layers.iter().map(|l| &**l).collect();
                let weights = Int8Linears::pack(&refs, &device)?;
                for layer in &mut layers {
                    // `[0, n]` under the same id: the int8 kernel finds the
                    // layer by id, and `num_labels` still reads `n`.
                    let [_, n] = layer.weight.dims();
                    let empty = Tensor::empty([0, n], &device);
                    layer.weight = Param::initialized(layer.weight.id, empty);
                }
                drop(layers);
                crate::quantize::release_freed_memory();
                self.int8 = Some(Arc::new(weights));
            }
        }
        Ok(self)
    }

    /// How the model is quantized (`None`: fp32).
    pub fn quantization(&self) -> Option<Quantize> {
        self.int8.as_ref().map(|_| Quantize::Int8)
    }

    /// Every linear layer, in the order of the forward pass.
    fn linears_mut(&mut self) -> Vec<&mut Linear<B>> {
        let mut layers = Vec::new();
        for layer in &mut self.bert.encoder.layer {
            let attention = &mut layer.attention.self_attn;
            layers.extend([
                &mut attention.query,
                &mut attention.key,
                &mut attention.value,
            ]);
            layers.push(&mut layer.attention.output.dense);
            layers.push(&mut layer.intermediate.dense);
            layers.push(&mut layer.output.dense);
        }
        layers.extend(self.bert.pooler.as_mut().map(|p| &mut p.dense));
        layers.push(&mut self.classifier);
        layers
    }

    /// Number of outputs of the head.
    pub fn num_labels(&self) -> usize {
        self.classifier.weight.dims()[1]
    }

    /// Replaces the head with a fresh one of `num_labels` outputs (HF's
    /// `ignore_mismatched_sizes`).
    pub fn reset_head(&mut self, config: &BertConfig, device: &B::Device) {
        self.classifier = hf_linear(config.hidden_size, config.num_labels(), config, device);
    }
}

/// The loss HF computes for `labels`, averaged over the batch.
pub fn classification_loss<B: Backend>(
    logits: Tensor<B, 2>,
    labels: Labels<B>,
    options: &CrossEntropyOptions,
) -> Tensor<B, 1> {
    match labels {
        Labels::Classes(targets) => cross_entropy(logits, targets, options, None),
        Labels::MultiHot(targets) => {
            // BCE with logits, stable form: max(x,0) - x*y + log(1 + e^-|x|).
            let loss = logits.clone().clamp_min(0.0) - logits.clone() * targets
                + (logits.abs().neg().exp() + 1.0).log();
            loss.mean()
        }
        Labels::Values(targets) => {
            let [b, n] = logits.dims();
            assert_eq!(n, 1, "regression needs exactly one label");
            (logits.reshape([b]) - targets).powi_scalar(2).mean()
        }
    }
}

/// `torch.nn.functional.cross_entropy` over `[n, classes]` logits, with class
/// weights, label smoothing and `ignore_index` (positions equal to it count for nothing).
pub fn cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    options: &CrossEntropyOptions,
    ignore_index: Option<i64>,
) -> Tensor<B, 1> {
    let [n, classes] = logits.dims();
    let device = logits.device();
    let logp = log_softmax(logits, 1);
    let keep = match ignore_index {
        Some(ignore) => targets.clone().not_equal_elem(ignore).float(),
        None => Tensor::ones([n], &device),
    };
    // Ignored positions gather class 0 and are then zeroed by `keep`.
    let safe_targets = targets.clone().mask_fill(keep.clone().equal_elem(0.0), 0);
    let nll = logp
        .clone()
        .gather(1, safe_targets.clone().reshape([n, 1]))
        .reshape([n])
        .neg();
    let weights = options
        .class_weights
        .as_ref()
        .map(|w| Tensor::<B, 1>::from_data(w.as_slice(), &device));
    // Per-row weight of its target class (1 without class weights), 0 when ignored.
    let row_weight = match &weights {
        Some(w) => w.clone().select(0, safe_targets) * keep.clone(),
        None => keep.clone(),
    };
    let denom = row_weight.clone().sum();
    let loss = (nll * row_weight).sum() / denom.clone();
    let eps = options.label_smoothing;
    if eps == 0.0 {
        return loss;
    }
    // torch: the smoothing term is the class-weighted sum of -log p over all
    // classes, divided by the same denominator as the main term.
    let per_class = match weights {
        Some(w) => logp.neg() * w.reshape([1, classes]),
        None => logp.neg(),
    };
    let smooth = (per_class.sum_dim(1).reshape([n]) * keep).sum() / denom;
    loss.mul_scalar(1.0 - eps) + smooth.mul_scalar(eps / classes as f32)
}

/// HF `BertPredictionHeadTransform`.
#[derive(Module, Debug)]
pub struct BertPredictionHeadTransform<B: Backend> {
    /// `[hidden → hidden]`.
    pub dense: Linear<B>,
    #[module(skip)]
    act: HiddenAct,
    /// HF `LayerNorm`.
    pub layer_norm: LayerNorm<B>,
}

/// HF `BertLMPredictionHead`; the decoder weight is the word embedding matrix.
#[derive(Module, Debug)]
pub struct BertLmPredictionHead<B: Backend> {
    /// Dense, activation, LayerNorm.
    pub transform: BertPredictionHeadTransform<B>,
    /// `[vocab_size]` output bias (HF `cls.predictions.bias`).
    pub bias: Param<Tensor<B, 1>>,
}

/// HF `BertOnlyMLMHead`.
#[derive(Module, Debug)]
pub struct BertOnlyMlmHead<B: Backend> {
    /// The prediction head.
    pub predictions: BertLmPredictionHead<B>,
}

/// HF `BertForMaskedLM`, decoder tied to the word embeddings.
#[derive(Module, Debug)]
pub struct BertForMaskedLM<B: Backend> {
    /// The encoder (without pooler).
    pub bert: BertModel<B>,
    /// HF `cls`.
    pub cls: BertOnlyMlmHead<B>,
}

impl<B: Backend> BertForMaskedLM<B> {
    /// `[batch, seq, vocab]` logits.
    pub fn forward(&self, input: BertInput<B>) -> Tensor<B, 3> {
        let hidden = self.bert.forward(input).last_hidden_state;
        let [b, l, h] = hidden.dims();
        let logits = self.predict(hidden.reshape([b * l, h]));
        let vocab = logits.dims()[1];
        logits.reshape([b, l, vocab])
    }

    /// `[positions, vocab]` logits at the given flat positions (`row * seq + column`)
    /// only: pretraining predicts 15% of the tokens, so the vocabulary projection
    /// of the others would be wasted work.
    pub fn forward_at(&self, input: BertInput<B>, positions: Tensor<B, 1, Int>) -> Tensor<B, 2> {
        let hidden = self.bert.forward(input).last_hidden_state;
        let [b, l, h] = hidden.dims();
        self.predict(hidden.reshape([b * l, h]).select(0, positions))
    }

    /// The prediction head on `[rows, hidden]` states: transform, then the decoder
    /// tied to the word embeddings.
    fn predict(&self, hidden: Tensor<B, 2>) -> Tensor<B, 2> {
        let full = hidden.dtype();
        let t = &self.cls.predictions.transform;
        let x = t
            .layer_norm
            .forward(t.act.forward(linear(&t.dense, hidden)).cast(full));
        let decoder = self.bert.embeddings.word_embeddings.weight.val(); // [vocab, hidden]
        let vocab = decoder.dims()[0];
        let logits = to_compute(x)
            .matmul(to_compute(decoder.transpose()))
            .cast(full);
        logits + self.cls.predictions.bias.val().reshape([1, vocab])
    }

    /// HF's MLM loss: cross entropy over positions whose label is not -100.
    pub fn loss(&self, logits: Tensor<B, 3>, labels: Tensor<B, 2, Int>) -> Tensor<B, 1> {
        let [b, l, v] = logits.dims();
        cross_entropy(
            logits.reshape([b * l, v]),
            labels.reshape([b * l]),
            &CrossEntropyOptions::default(),
            Some(-100),
        )
    }
}
