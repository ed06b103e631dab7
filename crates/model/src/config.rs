//! `config.json` of an HF BERT model.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// The feed-forward activation, `hidden_act` in `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HiddenAct {
    /// Exact GELU with `erf` (HF `gelu`).
    Gelu,
    /// The tanh approximation of GELU (HF `gelu_new`, also `gelu_pytorch_tanh`).
    #[serde(alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluNew,
    /// ReLU.
    Relu,
}

/// What the classification head is trained for, HF's `problem_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemType {
    /// One label per text, softmax cross entropy.
    SingleLabelClassification,
    /// Any number of labels per text, sigmoid and binary cross entropy.
    MultiLabelClassification,
    /// One real value per text, mean squared error.
    Regression,
}

/// HF `BertConfig`, read from and written to `config.json`.
///
/// Fields zhbert does not use (`architectures`, `transformers_version`, ...) are
/// kept in [`BertConfig::extra`] so a round trip does not lose them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BertConfig {
    /// Size of the WordPiece vocabulary.
    pub vocab_size: usize,
    /// Width of every hidden state.
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    /// Number of encoder layers.
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    /// Attention heads per layer; must divide `hidden_size`.
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    #[serde(default = "d_intermediate")]
    pub intermediate_size: usize,
    /// Feed-forward activation.
    #[serde(default = "d_act")]
    pub hidden_act: HiddenAct,
    /// Dropout on embeddings and sublayer outputs.
    #[serde(default = "d_dropout")]
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities.
    #[serde(default = "d_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// Longest sequence the position embeddings cover.
    #[serde(default = "d_positions")]
    pub max_position_embeddings: usize,
    /// Number of segment (token type) ids.
    #[serde(default = "d_types")]
    pub type_vocab_size: usize,
    /// Standard deviation of the normal initialisation of fresh weights.
    #[serde(default = "d_init")]
    pub initializer_range: f64,
    /// Epsilon of every LayerNorm.
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    /// Id of `[PAD]` (HF may write `null`).
    #[serde(default)]
    pub pad_token_id: Option<usize>,
    /// Dropout before the classifier; `None` uses `hidden_dropout_prob`.
    #[serde(default)]
    pub classifier_dropout: Option<f64>,
    /// Only `absolute` is supported.
    #[serde(default = "d_pos_type")]
    pub position_embedding_type: String,
    /// Label names by id. HF writes the keys as strings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub id2label: BTreeMap<String, String>,
    /// Ids by label name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub label2id: BTreeMap<String, usize>,
    /// HF's `num_labels` is derived from `id2label`; some configs also write it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_labels: Option<usize>,
    /// What the head is trained for; `None` lets the labels decide, as in HF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem_type: Option<ProblemType>,
    /// Every other field of `config.json`, kept as it was.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn d_hidden() -> usize {
    768
}
fn d_layers() -> usize {
    12
}
fn d_heads() -> usize {
    12
}
fn d_intermediate() -> usize {
    3072
}
fn d_act() -> HiddenAct {
    HiddenAct::Gelu
}
fn d_dropout() -> f64 {
    0.1
}
fn d_positions() -> usize {
    512
}
fn d_types() -> usize {
    2
}
fn d_init() -> f64 {
    0.02
}
fn d_eps() -> f64 {
    1e-12
}
fn d_pos_type() -> String {
    "absolute".into()
}

impl BertConfig {
    /// A config with BERT-base's defaults for everything but the vocabulary size.
    pub fn new(vocab_size: usize) -> Self {
        serde_json::from_value(serde_json::json!({ "vocab_size": vocab_size }))
            .expect("defaults are valid")
    }

    /// Reads and checks `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let config: Self = serde_json::from_str(&text)
            .map_err(|e| ModelError::invalid(path, format!("not a BERT config: {e}")))?;
        config
            .validate()
            .map_err(|message| ModelError::invalid(path, message))?;
        Ok(config)
    }

    /// Writes `config.json` (atomically), with the labels and the architecture.
    pub fn save(&self, path: impl AsRef<Path>, architecture: &str) -> Result<(), ModelError> {
        let mut config = self.clone();
        config.extra.insert("model_type".into(), "bert".into());
        config
            .extra
            .insert("architectures".into(), serde_json::json!([architecture]));
        let text = serde_json::to_string_pretty(&config).expect("config serializes");
        crate::write_atomic(path.as_ref(), text.as_bytes())
    }

    /// Checks what would otherwise fail deep inside the model.
    pub fn validate(&self) -> Result<(), String> {
        if self.hidden_size == 0 || self.num_attention_heads == 0 {
            return Err("hidden_size and num_attention_heads must be positive".into());
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.position_embedding_type != "absolute" {
            return Err(format!(
                "position_embedding_type {:?} is not supported (only \"absolute\")",
                self.position_embedding_type
            ));
        }
        if let Some(n) = self.num_labels {
            if !self.id2label.is_empty() && self.id2label.len() != n {
                return Err(format!(
                    "num_labels is {n} but id2label has {} entries",
                    self.id2label.len()
                ));
            }
        }
        for key in self.id2label.keys() {
            if key.parse::<usize>().is_err() {
                return Err(format!("id2label key {key:?} is not an integer"));
            }
        }
        Ok(())
    }

    /// Number of labels of the classification head: from `id2label`, else
    /// `num_labels`, else 2 (HF's default).
    pub fn num_labels(&self) -> usize {
        if !self.id2label.is_empty() {
            self.id2label.len()
        } else {
            self.num_labels.unwrap_or(2)
        }
    }

    /// Label names in id order; `LABEL_i` where the config has none, as HF does.
    pub fn labels(&self) -> Vec<String> {
        (0..self.num_labels())
            .map(|i| {
                self.id2label
                    .get(&i.to_string())
                    .cloned()
                    .unwrap_or_else(|| format!("LABEL_{i}"))
            })
            .collect()
    }

    /// Sets the labels (`id2label`, `label2id`, `num_labels`) from names in id order.
    pub fn set_labels(&mut self, labels: &[String]) {
        self.id2label = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (i.to_string(), l.clone()))
            .collect();
        self.label2id = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), i))
            .collect();
        self.num_labels = Some(labels.len());
    }

    /// The problem type, decided as HF does when the config does not say: one
    /// label means regression, otherwise single-label classification.
    pub fn problem_type(&self) -> ProblemType {
        self.problem_type.unwrap_or(if self.num_labels() == 1 {
            ProblemType::Regression
        } else {
            ProblemType::SingleLabelClassification
        })
    }

    /// Dropout before the classifier.
    pub fn classifier_dropout(&self) -> f64 {
        self.classifier_dropout.unwrap_or(self.hidden_dropout_prob)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Parameters of the encoder (embeddings, layers, pooler), for FLOP and memory estimates.
    pub fn num_parameters(&self) -> usize {
        let h = self.hidden_size;
        let i = self.intermediate_size;
        let emb =
            (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) * h + 2 * h;
        // q, k, v, o; feed-forward in and out; two LayerNorms.
        let layer = 4 * (h * h + h) + (h * i + i) + (i * h + h) + 2 * (2 * h);
        emb + self.num_hidden_layers * layer + (h * h + h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_hf_config_and_keeps_unknown_fields() {
        let json = r#"{"vocab_size": 21128, "hidden_act": "gelu", "id2label": {"0": "neg", "1": "pos"},
            "label2id": {"neg": 0, "pos": 1}, "architectures": ["BertForMaskedLM"], "directionality": "bidi"}"#;
        let c: BertConfig = serde_json::from_str(json).unwrap();
        assert_eq!(c.num_labels(), 2);
        assert_eq!(c.labels(), vec!["neg", "pos"]);
        assert_eq!(c.hidden_size, 768);
        assert_eq!(c.extra["directionality"], "bidi");
        let back: BertConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn rejects_what_the_model_cannot_run() {
        let mut c = BertConfig::new(10);
        c.hidden_size = 100;
        c.num_attention_heads = 12;
        assert!(c.validate().unwrap_err().contains("multiple"));
        let mut c = BertConfig::new(10);
        c.position_embedding_type = "relative_key".into();
        assert!(c.validate().is_err());
    }

    #[test]
    fn problem_type_follows_hf() {
        let mut c = BertConfig::new(10);
        assert_eq!(c.problem_type(), ProblemType::SingleLabelClassification);
        c.num_labels = Some(1);
        assert_eq!(c.problem_type(), ProblemType::Regression);
        assert_eq!(c.labels(), vec!["LABEL_0"]);
    }
}
