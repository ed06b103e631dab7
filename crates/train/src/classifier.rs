//! A text classifier loaded once and used many times: the model, its
//! tokenizer, its config and the inference settings in one value.
//!
//! ```no_run
//! use burn::backend::Flex;
//! use zhbert_train::Classifier;
//!
//! # fn main() -> anyhow::Result<()> {
//! let device = Default::default();
//! // A local HF folder (config.json, weights, vocab) or a Hugging Face Hub id.
//! let classifier = Classifier::<Flex>::load("out", &device)?;
//! for p in classifier.predict(&["质量很好", "太差了"])? {
//!     println!("{} {:.3}", p.label, p.score);
//! }
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use zhbert_data::{Dataset, LongTextOptions};
use zhbert_model::{
    load_classifier, BertConfig, BertForSequenceClassification, LoadOptions, LoadReport,
    ProblemType, Quantize,
};
use zhbert_tokenizer::BertTokenizer;

use crate::inference::{classify, InferenceOptions, Prediction};
use crate::metrics::EvalMetrics;

/// How [`Classifier::load_with`] loads a model and classifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifierOptions {
    /// Accept a checkpoint without a trained classification head and classify
    /// with a freshly initialised (random) one. For testing only; otherwise
    /// such a checkpoint is a [`zhbert_model::ModelError::MissingHead`].
    pub allow_fresh_head: bool,
    /// Sequences per forward pass (at least 1). Default 32.
    pub batch_size: usize,
    /// Longest input in tokens, special tokens included; longer texts are
    /// truncated. `None`: the model's `max_position_embeddings`, at most 512;
    /// for a model trained on windows or heads and tails (`long_text.json`),
    /// the max length it was trained at.
    pub max_length: Option<usize>,
    /// Pad every batch to a multiple of this many tokens (HF's
    /// `pad_to_multiple_of`); fewer distinct shapes for GPU backends. The
    /// padding is masked, so outputs do not change. `None`: pad to the longest.
    pub pad_to_multiple_of: Option<usize>,
    /// Quantize the linear layers for CPU inference ([`Classifier::quantize`]);
    /// `None`: fp32.
    pub quantize: Option<Quantize>,
}

impl Default for ClassifierOptions {
    fn default() -> Self {
        Self {
            allow_fresh_head: false,
            batch_size: 32,
            max_length: None,
            pad_to_multiple_of: None,
            quantize: None,
        }
    }
}

/// An input text that is empty or only whitespace: there is nothing to classify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmptyTextError {
    /// Position of the input in the slice given, counting from 0.
    pub index: usize,
    /// True when the second text of a pair is the empty one.
    pub second_of_pair: bool,
}

impl fmt::Display for EmptyTextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let which = if self.second_of_pair {
            "the second text of input"
        } else {
            "input"
        };
        write!(
            f,
            "{which} {} (counting from 0) is empty or only whitespace: there is nothing to classify",
            self.index
        )
    }
}

impl std::error::Error for EmptyTextError {}

/// The classification of one input.
#[derive(Clone, PartialEq)]
pub struct ClassPrediction {
    /// Name of the most probable label.
    pub label: String,
    /// Its probability (softmax for single-label, sigmoid for multi-label; the
    /// raw value for regression).
    pub score: f32,
    /// Its id (index into [`Classifier::labels`], `probs` and `logits`).
    pub label_id: usize,
    /// Probability of every label, in label order.
    pub probs: Vec<f32>,
    /// Raw scores of the head, in label order.
    pub logits: Vec<f32>,
    /// Tokens cut because the input was longer than the max length (0: none).
    pub truncated_tokens: usize,
    /// Windows the input was split into, their logits pooled into these
    /// (1 unless the classifier splits long texts into chunks).
    pub windows: usize,
    /// Multi-label: the names of the labels whose probability is over their
    /// threshold ([`Classifier::thresholds`]), most probable first (possibly
    /// none). Single-label: the label; regression: empty.
    pub labels_over_threshold: Vec<String>,
    labels: Arc<[String]>,
}

impl ClassPrediction {
    fn new(
        p: Prediction,
        labels: &Arc<[String]>,
        thresholds: &[f32],
        problem: ProblemType,
    ) -> Self {
        let labels_over_threshold = match problem {
            ProblemType::SingleLabelClassification => vec![labels[p.label].clone()],
            ProblemType::MultiLabelClassification => {
                crate::tasks::labels_over(&p.probs, thresholds)
                    .into_iter()
                    .map(|i| labels[i].clone())
                    .collect()
            }
            ProblemType::Regression => Vec::new(),
        };
        Self {
            label: labels[p.label].clone(),
            score: p.probs[p.label],
            label_id: p.label,
            probs: p.probs,
            logits: p.logits,
            truncated_tokens: p.truncated_tokens,
            windows: p.windows,
            labels_over_threshold,
            labels: Arc::clone(labels),
        }
    }

    /// The `k` most probable labels with their probabilities, most probable
    /// first (on ties, the lower label id first); all labels when `k` is larger.
    pub fn top_k(&self, k: usize) -> Vec<(&str, f32)> {
        let mut ids: Vec<usize> = (0..self.probs.len()).collect();
        ids.sort_by(|&a, &b| self.probs[b].total_cmp(&self.probs[a]));
        ids.into_iter()
            .take(k)
            .map(|i| (self.labels[i].as_str(), self.probs[i]))
            .collect()
    }

    /// Whether the input was cut to the max length.
    pub fn is_truncated(&self) -> bool {
        self.truncated_tokens > 0
    }
}

impl fmt::Debug for ClassPrediction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClassPrediction")
            .field("label", &self.label)
            .field("score", &self.score)
            .field("label_id", &self.label_id)
            .field("probs", &self.probs)
            .field("logits", &self.logits)
            .field("truncated_tokens", &self.truncated_tokens)
            .field("windows", &self.windows)
            .field("labels_over_threshold", &self.labels_over_threshold)
            .finish()
    }
}

/// A sequence classifier ready to use: a [`BertForSequenceClassification`],
/// its [`BertTokenizer`] and [`BertConfig`], and how to batch and truncate.
/// Load once, classify many times; inputs are batched by length and the
/// results come back in input order.
pub struct Classifier<B: Backend> {
    model: BertForSequenceClassification<B>,
    tokenizer: BertTokenizer,
    config: BertConfig,
    labels: Arc<[String]>,
    inference: InferenceOptions,
    /// Multi-label: one decision threshold per label.
    thresholds: Vec<f32>,
    device: B::Device,
    dir: Option<PathBuf>,
    load_report: Option<LoadReport>,
}

impl<B: Backend> fmt::Debug for Classifier<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Classifier")
            .field("dir", &self.dir)
            .field("labels", &self.labels)
            .field("batch_size", &self.inference.batch_size)
            .field("max_length", &self.inference.max_length)
            .field("problem_type", &self.inference.problem_type)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> Classifier<B> {
    /// Loads a trained classifier with the default [`ClassifierOptions`]:
    /// `model` is a local HF model folder (config.json, model.safetensors or
    /// pytorch_model.bin, vocab.txt or tokenizer.json) or a Hugging Face Hub
    /// id, fetched once into the HF cache.
    pub fn load(model: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        Self::load_with(model, &ClassifierOptions::default(), device)
    }

    /// [`Classifier::load`] with options. A checkpoint without a trained
    /// classification head is a [`zhbert_model::ModelError::MissingHead`] unless
    /// `options.allow_fresh_head`; a max length outside 3 to the model's
    /// `max_position_embeddings` is an error.
    pub fn load_with(
        model: impl AsRef<Path>,
        options: &ClassifierOptions,
        device: &B::Device,
    ) -> Result<Self> {
        let dir = crate::hub::resolve_model(&model.as_ref().to_string_lossy())?;
        let tokenizer = BertTokenizer::from_dir(&dir)?;
        let load = LoadOptions {
            labels: None,
            allow_fresh_head: options.allow_fresh_head,
        };
        let (mut model, config, report) = load_classifier::<B>(&dir, &load, device)?;
        if let Some(quantize) = options.quantize {
            model = model.quantize(quantize)?;
        }
        tracing::info!("{report}");
        let mut classifier = Self::new(model, tokenizer, config, device)
            .with_context(|| dir.display().to_string())?
            .with_batch_size(options.batch_size)?;
        if let Some(n) = options.max_length {
            classifier = classifier.with_max_length(n)?;
        }
        if let Some(n) = options.pad_to_multiple_of {
            classifier = classifier.with_pad_to_multiple_of(n);
        }
        if let Some(thresholds) = crate::tasks::Thresholds::load(&dir, &classifier.labels)? {
            classifier.thresholds = thresholds;
        }
        classifier = classifier.with_trained_long_text(&dir, options.max_length.is_none())?;
        classifier.dir = Some(dir);
        classifier.load_report = Some(report);
        Ok(classifier)
    }

    /// A classifier from parts already in memory (a model just trained, a
    /// tokenizer built in code), with batch 32 and the model's max length (at
    /// most 512). A tokenizer with more tokens than the model's `vocab_size`
    /// is an error (its ids would index past the embeddings).
    pub fn new(
        model: BertForSequenceClassification<B>,
        tokenizer: BertTokenizer,
        config: BertConfig,
        device: &B::Device,
    ) -> Result<Self> {
        if tokenizer.vocab_size() > config.vocab_size {
            bail!(
                "the tokenizer has {} tokens but the model's vocab_size is {}: they do not belong together",
                tokenizer.vocab_size(),
                config.vocab_size
            );
        }
        Ok(Self {
            model,
            tokenizer,
            labels: config.labels().into(),
            inference: InferenceOptions::for_config(&config),
            thresholds: vec![0.5; config.num_labels()],
            config,
            device: device.clone(),
            dir: None,
            load_report: None,
        })
    }

    /// The classifier with its linear layers quantized for CPU inference:
    /// `Quantize::Int8` is dynamic int8 as PyTorch's `quantize_dynamic`
    /// (weights per output channel now, activations per row as they come;
    /// [`zhbert_model::quantize`]), on the Flex backend only (elsewhere an
    /// error that says so). Also [`ClassifierOptions::quantize`].
    pub fn quantize(mut self, quantize: Quantize) -> Result<Self> {
        self.model = self.model.quantize(quantize)?;
        Ok(self)
    }

    /// How the model is quantized (`None`: fp32).
    pub fn quantization(&self) -> Option<Quantize> {
        self.model.quantization()
    }

    /// Sequences per forward pass; at least 1.
    pub fn with_batch_size(mut self, batch_size: usize) -> Result<Self> {
        if batch_size == 0 {
            bail!("batch size 0: must be at least 1");
        }
        self.inference.batch_size = batch_size;
        Ok(self)
    }

    /// Longest input in tokens (special tokens included); longer texts are
    /// truncated. Between 3 (`[CLS]`, one token, `[SEP]`) and the model's
    /// `max_position_embeddings`.
    pub fn with_max_length(mut self, max_length: usize) -> Result<Self> {
        let limit = self.config.max_position_embeddings;
        if !(3..=limit).contains(&max_length) {
            bail!(
                "max length {max_length}: must be between 3 and the model's max_position_embeddings ({limit})"
            );
        }
        self.inference
            .long_text
            .check(max_length)
            .map_err(anyhow::Error::msg)?;
        self.inference.max_length = max_length;
        Ok(self)
    }

    /// What happens to texts longer than the max length: truncation (the
    /// default), head and tail, or windows whose logits are pooled into one
    /// prediction per text ([`zhbert_data::long_text`]); a stride that leaves
    /// windows no new token at the max length is an error.
    pub fn with_long_text(mut self, long_text: LongTextOptions) -> Result<Self> {
        long_text
            .check(self.inference.max_length)
            .map_err(anyhow::Error::msg)?;
        self.inference.long_text = long_text;
        Ok(self)
    }

    /// The long-text settings the model in `dir` was trained with
    /// (`long_text.json`), when it was trained on windows or heads and tails;
    /// the trained max length too unless `take_max_length` is false (the
    /// caller chose one).
    fn with_trained_long_text(mut self, dir: &Path, take_max_length: bool) -> Result<Self> {
        let Some(saved) = crate::long_text::TrainedLongText::load(dir)? else {
            return Ok(self);
        };
        if saved.long_text == crate::LongText::Truncate {
            return Ok(self);
        }
        if take_max_length {
            self = self.with_max_length(saved.max_length)?;
        }
        tracing::info!(
            "long texts as the model was trained: {} (stride {}, {} pooling) at max length {}",
            saved.long_text,
            saved.stride,
            saved.chunk_pool,
            self.inference.max_length
        );
        self.with_long_text(saved.options())
            .with_context(|| format!("{}", dir.join(crate::long_text::LONG_TEXT_FILE).display()))
    }

    /// How texts longer than the max length are handled.
    pub fn long_text(&self) -> &LongTextOptions {
        &self.inference.long_text
    }

    /// Pads every batch to a multiple of `multiple` tokens (never past the
    /// model's `max_position_embeddings`); 0 or 1 turns it off. See
    /// [`BertTokenizer::set_pad_to_multiple_of`].
    pub fn with_pad_to_multiple_of(mut self, multiple: usize) -> Self {
        self.tokenizer
            .set_pad_to_multiple_of(multiple, self.config.max_position_embeddings);
        self
    }

    /// Classifies texts: one prediction per text, in input order. An empty or
    /// whitespace-only text is an [`EmptyTextError`] naming its index.
    pub fn predict<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<ClassPrediction>> {
        let inputs: Vec<(String, Option<String>)> = texts
            .iter()
            .enumerate()
            .map(|(index, t)| {
                let t = t.as_ref();
                check_text(t, index, false)?;
                Ok((t.to_string(), None))
            })
            .collect::<Result<_>>()?;
        self.run(&inputs)
    }

    /// Classifies text pairs (`[CLS] a [SEP] b [SEP]`, as HF's
    /// `tokenizer(a, b)`): one prediction per pair, in input order. Neither
    /// text may be empty or only whitespace.
    pub fn predict_pairs<S: AsRef<str>, T: AsRef<str>>(
        &self,
        pairs: &[(S, T)],
    ) -> Result<Vec<ClassPrediction>> {
        let inputs: Vec<(String, Option<String>)> = pairs
            .iter()
            .enumerate()
            .map(|(index, (a, b))| {
                let (a, b) = (a.as_ref(), b.as_ref());
                check_text(a, index, false)?;
                check_text(b, index, true)?;
                Ok((a.to_string(), Some(b.to_string())))
            })
            .collect::<Result<_>>()?;
        self.run(&inputs)
    }

    fn run(&self, inputs: &[(String, Option<String>)]) -> Result<Vec<ClassPrediction>> {
        let predictions = classify(
            &self.model,
            &self.tokenizer,
            inputs,
            &self.inference,
            &self.device,
        )?;
        Ok(predictions
            .into_iter()
            .map(|p| {
                let problem = self.inference.problem_type;
                ClassPrediction::new(p, &self.labels, &self.thresholds, problem)
            })
            .collect())
    }

    /// Loss, accuracy, F1 per class, macro and micro, and the confusion matrix
    /// on labelled data, encoded with this classifier's tokenizer and max
    /// length. The data's labels are matched to the model's by name; a label
    /// the model does not know is an error.
    pub fn evaluate(&self, data: &Dataset) -> Result<EvalMetrics> {
        if data.examples.is_empty() {
            bail!("no examples to evaluate");
        }
        // A regression target is a value, whatever its column is called.
        let regression = self.inference.problem_type == ProblemType::Regression;
        let to_model: Vec<usize> = data
            .labels
            .iter()
            .map(|name| {
                if regression {
                    return Ok(0);
                }
                self.labels.iter().position(|l| l == name).with_context(|| {
                    format!(
                        "the data has the label {name:?}, which the model does not know (its labels: {})",
                        self.labels.join(", ")
                    )
                })
            })
            .collect::<Result<_>>()?;
        let max_length = self.inference.max_length;
        let long = &self.inference.long_text;
        let mut encoded =
            crate::long_text::encode_split("data", data, &self.tokenizer, max_length, long)?;
        for label in &mut encoded.labels {
            *label = to_model[*label];
        }
        let task = crate::tasks::EvalTask {
            problem_type: self.inference.problem_type,
            thresholds: self.thresholds.clone(),
        };
        if task.problem_type == ProblemType::MultiLabelClassification {
            // The data's multi-hot columns in the model's label order.
            for row in encoded.targets.iter_mut().flatten() {
                let mut ordered = vec![0.0; self.labels.len()];
                for (j, &y) in row.iter().enumerate() {
                    ordered[to_model[j]] = y;
                }
                *row = ordered;
            }
        }
        crate::inference::evaluate_task(
            &self.model,
            &self.tokenizer,
            &encoded,
            &self.labels,
            &task,
            self.inference.batch_size,
            &self.device,
        )
    }

    /// Multi-label: the decision threshold of each label, in label order
    /// (`thresholds.json` of the model folder, else 0.5 each).
    pub fn thresholds(&self) -> &[f32] {
        &self.thresholds
    }

    /// Multi-label: one threshold for every label, in (0, 1).
    pub fn with_threshold(mut self, threshold: f32) -> Result<Self> {
        if !(threshold > 0.0 && threshold < 1.0) {
            bail!("threshold {threshold}: must be in (0, 1)");
        }
        self.thresholds = vec![threshold; self.labels.len()];
        Ok(self)
    }

    /// What the model's head is trained for (its config's `problem_type`).
    pub fn problem_type(&self) -> ProblemType {
        self.inference.problem_type
    }

    /// Label names, in id order (the config's `id2label`).
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The model's config.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &BertTokenizer {
        &self.tokenizer
    }

    /// The model.
    pub fn model(&self) -> &BertForSequenceClassification<B> {
        &self.model
    }

    /// The device the model is on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// How inputs are batched and truncated.
    pub fn inference_options(&self) -> &InferenceOptions {
        &self.inference
    }

    /// Sequences per forward pass.
    pub fn batch_size(&self) -> usize {
        self.inference.batch_size
    }

    /// Longest input in tokens.
    pub fn max_length(&self) -> usize {
        self.inference.max_length
    }

    /// The model folder it was loaded from (the HF cache folder for a Hub id);
    /// `None` for a classifier made with [`Classifier::new`].
    pub fn model_dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// What loading the checkpoint found (tensors loaded, missing, fresh head);
    /// `None` for a classifier made with [`Classifier::new`].
    pub fn load_report(&self) -> Option<&LoadReport> {
        self.load_report.as_ref()
    }

    /// The model, tokenizer and config back.
    pub fn into_parts(self) -> (BertForSequenceClassification<B>, BertTokenizer, BertConfig) {
        (self.model, self.tokenizer, self.config)
    }
}

fn check_text(text: &str, index: usize, second_of_pair: bool) -> Result<(), EmptyTextError> {
    if text.trim().is_empty() {
        return Err(EmptyTextError {
            index,
            second_of_pair,
        });
    }
    Ok(())
}
