//! [`FineTune`]: one call from data files (or datasets in memory) and a model
//! name to a trained HF model folder — what `zhbert train` does, as a library.
//!
//! ```no_run
//! use burn::backend::{Autodiff, Flex};
//! use zhbert_train::{FineTune, TrainConfig};
//!
//! let summary = FineTune::new("tiny-zh")
//!     .train_file("train.csv")
//!     .dev_file("dev.csv")
//!     .configure(|c| c.epochs = 1)
//!     .output("out")
//!     .fit::<Autodiff<Flex>>(&Default::default())?;
//! println!("{summary:?}");
//! # anyhow::Ok(())
//! ```
//!
//! The model is a local HF folder, a Hub id, or a preset trained from scratch
//! ([`crate::presets`]). The settings start from the model's defaults (a
//! preset's tuned ones, [`TrainConfig::default`] otherwise):
//! [`FineTune::configure`] changes some of them, [`FineTune::config`]
//! replaces them all.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use burn::tensor::backend::AutodiffBackend;
use zhbert_data::{
    encode_dataset, read_dataset, stratified_split, BadRows, Columns, Dataset, EncodedDataset,
    ReadOptions, StreamingDataset, Target, Task,
};
use zhbert_model::{
    load_classifier, BertConfig, BertForSequenceClassification, LoadOptions, ProblemType,
};
use zhbert_tokenizer::BertTokenizer;

use crate::parallel::Replica;
use crate::presets::{preset, presets, Preset, MAX_BUDGET_EPOCHS};
use crate::pretrain::{PretrainConfig, PretrainSummary};
use crate::trainer::{train_replica, TrainConfig, TrainData, TrainSet, TrainSummary};

/// Why a [`FineTune`] job cannot start: its inputs, before any training.
/// [`FineTune::fit`] returns it inside its `anyhow::Error`
/// (`err.downcast_ref::<JobError>()`), as it does [`crate::TrainError`],
/// [`crate::ConfigError`] and the data, model and tokenizer crates' errors.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Neither a training file nor a training dataset was given.
    #[error("no training data: call .train_file(path) or .train_data(dataset)")]
    NoTrainData,
    /// No output folder was given.
    #[error("no output folder: call .output(dir) before .fit()")]
    NoOutput,
    /// Multi-label data in which no example carries a label.
    #[error("{data}: no text carries a label; a multi-label classifier needs at least one")]
    NoLabel {
        /// The training file (or "the training data" in memory).
        data: String,
    },
    /// Single-label data with one label: HF reads `num_labels: 1` as a
    /// regression head, so such a model would be misread by `transformers`.
    #[error(
        "{data}: every example has the label {label:?}; a classifier needs at least two labels"
    )]
    OneLabel {
        /// The training file (or "the training data" in memory).
        data: String,
        /// The only label.
        label: String,
    },
    /// Streaming was asked for a job it cannot serve.
    #[error("cannot stream the training data: {0}")]
    CannotStream(&'static str),
    /// The model is neither a preset, a folder nor a Hub id that resolves.
    #[error("{model} is not a preset ({presets})")]
    UnknownModel {
        /// The model as given.
        model: String,
        /// The presets' names.
        presets: String,
    },
    /// The maximum length is over the model's position embeddings.
    #[error("max length {max_length} exceeds the model's max_position_embeddings {positions}")]
    TooLong {
        /// The configured maximum length.
        max_length: usize,
        /// The model's `max_position_embeddings`.
        positions: usize,
    },
    /// Masked-LM pretraining was asked of a data-parallel run.
    #[error("masked-LM pretraining runs on one device: pretrain first, then train the pretrained folder on several")]
    PretrainOnSeveralDevices,
}

/// Labelled data: a file in any layout zhbert reads, or a dataset in memory.
#[derive(Debug, Clone)]
enum DataSource {
    /// CSV/TSV with a header, JSONL, or `text<TAB>label` `.txt` (with `class.txt`).
    File(PathBuf),
    /// Examples already read.
    Memory(Dataset),
}

impl DataSource {
    fn path(&self) -> Option<&Path> {
        match self {
            Self::File(p) => Some(p),
            Self::Memory(_) => None,
        }
    }
}

/// A change to the model's default settings.
type Tweak = Arc<dyn Fn(&mut TrainConfig) + Send + Sync>;

/// A fine-tuning job, built step by step and run by [`FineTune::fit`].
#[derive(Clone)]
pub struct FineTune {
    model: String,
    train: Option<DataSource>,
    dev: Option<DataSource>,
    test: Option<DataSource>,
    columns: Columns,
    bad_rows: BadRows,
    split: f64,
    base: Option<TrainConfig>,
    tweaks: Vec<Tweak>,
    output: Option<PathBuf>,
    resume: bool,
    pretrain_epochs: Option<usize>,
    streaming: bool,
    shuffle_buffer: usize,
    pad_to_multiple_of: Option<usize>,
}

/// The splits of a run's data, read.
struct Splits {
    train: Dataset,
    dev: Option<Dataset>,
    test: Option<Dataset>,
    /// The training file, scanned, when it is streamed (`train` then holds only
    /// its labels).
    streamed: Option<Arc<StreamingDataset>>,
}

impl FineTune {
    /// A job on `model`: a local HF folder, a Hub id (`bert-base-chinese`), or
    /// a preset name (`tiny-zh`, `tiny-zh-char`).
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            train: None,
            dev: None,
            test: None,
            columns: Columns::default(),
            bad_rows: BadRows::Fail,
            split: 0.1,
            base: None,
            tweaks: Vec::new(),
            output: None,
            resume: false,
            pretrain_epochs: None,
            streaming: false,
            shuffle_buffer: 10_000,
            pad_to_multiple_of: None,
        }
    }

    /// The training data file. With neither dev nor test data, a stratified
    /// split of it is used (`split` of it each, by the run's seed).
    pub fn train_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.train = Some(DataSource::File(path.into()));
        self
    }

    /// The development data file, for evaluations and the best checkpoint.
    pub fn dev_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.dev = Some(DataSource::File(path.into()));
        self
    }

    /// The test data file, evaluated once at the end.
    pub fn test_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.test = Some(DataSource::File(path.into()));
        self
    }

    /// Training examples in memory.
    pub fn train_data(mut self, data: Dataset) -> Self {
        self.train = Some(DataSource::Memory(data));
        self
    }

    /// Development examples in memory (labels as in the training data).
    pub fn dev_data(mut self, data: Dataset) -> Self {
        self.dev = Some(DataSource::Memory(data));
        self
    }

    /// Test examples in memory (labels as in the training data).
    pub fn test_data(mut self, data: Dataset) -> Self {
        self.test = Some(DataSource::Memory(data));
        self
    }

    /// Where text, second text and label are in the files (default `text`,
    /// none, `label`).
    pub fn columns(mut self, columns: Columns) -> Self {
        self.columns = columns;
        self
    }

    /// Skip malformed rows (counted in the report) instead of failing.
    pub fn skip_bad_rows(mut self, skip: bool) -> Self {
        self.bad_rows = if skip { BadRows::Skip } else { BadRows::Fail };
        self
    }

    /// The dev and test fractions of the split made when only training data is
    /// given (default 0.1 each).
    pub fn split(mut self, fraction: f64) -> Self {
        self.split = fraction;
        self
    }

    /// Replaces the model's default settings with `config` entirely (a preset's
    /// tuned settings included); later [`configure`](Self::configure) calls
    /// still apply on top.
    pub fn config(mut self, config: TrainConfig) -> Self {
        self.base = Some(config);
        self
    }

    /// Changes some settings, on top of the model's defaults (a preset's tuned
    /// ones, or [`TrainConfig::default`]) or of [`config`](Self::config).
    pub fn configure(mut self, change: impl Fn(&mut TrainConfig) + Send + Sync + 'static) -> Self {
        self.tweaks.push(Arc::new(change));
        self
    }

    /// The output folder: an HF model folder plus metrics, plots, `eval.json`
    /// and `checkpoints/`.
    pub fn output(mut self, dir: impl Into<PathBuf>) -> Self {
        self.output = Some(dir.into());
        self
    }

    /// Continue the run in the output folder from its last checkpoint (a
    /// finished run is reported, not trained again).
    pub fn resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }

    /// Masked-LM pretraining epochs on the training texts before a preset is
    /// fine-tuned (default: the preset's).
    pub fn pretrain_epochs(mut self, epochs: usize) -> Self {
        self.pretrain_epochs = Some(epochs);
        self
    }

    /// Read the training file again every epoch instead of holding it, through
    /// a shuffle buffer of `buffer` examples (for files larger than memory;
    /// needs dev data and a pretrained model).
    pub fn streaming(mut self, buffer: usize) -> Self {
        self.streaming = true;
        self.shuffle_buffer = buffer;
        self
    }

    /// Pad every batch to a multiple of `n` tokens (HF's `pad_to_multiple_of`).
    pub fn pad_to_multiple_of(mut self, n: usize) -> Self {
        self.pad_to_multiple_of = Some(n);
        self
    }

    /// The preset named by the model, if it is one.
    pub fn preset(&self) -> Option<Preset> {
        preset(&self.model)
    }

    /// The masked-LM pretraining epochs of this job (0 without a preset).
    pub fn pretraining_epochs(&self) -> usize {
        self.preset()
            .map_or(0, |p| self.pretrain_epochs.unwrap_or(p.pretrain.epochs))
    }

    /// The settings the job trains with: the model's defaults, or
    /// [`config`](Self::config), with every [`configure`](Self::configure) applied; checked.
    /// A preset's default epochs and metric depend on the training data
    /// ([`Preset::train_config_for`]); here they are its tuned ones, and
    /// [`fit`](Self::fit) trains with [`train_config_for`](Self::train_config_for).
    pub fn train_config(&self) -> Result<TrainConfig> {
        self.settings(None)
    }

    /// The settings the job trains `train` with: [`train_config`](Self::train_config),
    /// with a preset's defaults for `train` ([`Preset::train_config_for`]:
    /// the epochs its budget gives, the metric of the problem).
    pub fn train_config_for(&self, train: &Dataset) -> Result<TrainConfig> {
        self.settings(Some(train))
    }

    fn settings(&self, train: Option<&Dataset>) -> Result<TrainConfig> {
        let configured = |mut config: TrainConfig| {
            for tweak in &self.tweaks {
                tweak(&mut config);
            }
            config
        };
        let config = match (&self.base, self.preset()) {
            (Some(c), _) => configured(c.clone()),
            (None, Some(p)) => {
                let defaults = match train {
                    // Read as the run will read it (a given max length,
                    // long-text mode or problem type included); given
                    // epochs or metric still win.
                    Some(train) => p.train_config_for(train, &configured(p.train.clone())),
                    None => p.train.clone(),
                };
                configured(defaults)
            }
            (None, None) => configured(TrainConfig::default()),
        };
        config.validate()?;
        Ok(config)
    }

    fn output_dir(&self) -> Result<&Path> {
        self.output
            .as_deref()
            .ok_or_else(|| JobError::NoOutput.into())
    }

    /// Reads the data, builds or loads the model, fine-tunes it on `device` and
    /// writes the output folder; its summary.
    pub fn fit<AB: AutodiffBackend>(&self, device: &AB::Device) -> Result<TrainSummary> {
        self.fit_replica::<AB>(device, &Replica::alone())
    }

    /// [`fit`](Self::fit) as one replica of a data-parallel run: every replica
    /// calls it with the same job, its own device and its [`Replica`]
    /// ([`crate::Topology::replica`]); replica 0 writes the output folder.
    pub fn fit_replica<AB: AutodiffBackend>(
        &self,
        device: &AB::Device,
        replica: &Replica,
    ) -> Result<TrainSummary> {
        let mut config = self.train_config()?;
        let output = self.output_dir()?;
        AB::seed(device, config.seed);
        let splits = self.read_splits(&config)?;
        if let Some(preset) = self.preset().filter(|_| self.base.is_none()) {
            config = self.train_config_for(&splits.train)?;
            if let Some(budget) = preset.epoch_budget {
                tracing::info!(
                    "preset {}: {} epochs by default on these {} training texts (as many as read about {budget} characters, {} to {MAX_BUDGET_EPOCHS}); this run: {}",
                    preset.name,
                    preset.epochs_for(&splits.train, &config),
                    splits.train.examples.len(),
                    preset.train.epochs,
                    config.epochs
                );
            }
        }
        let problem = problem_for(&mut config, &splits.train);
        // Before a model is built: settings this problem type has no use for.
        crate::tasks::check_problem(&config, problem)?;
        // Chunks make more batches than examples, known only once tokenized.
        let chunks = config.long_text == zhbert_data::LongText::Chunks;
        if self.resume && replica.world == 1 && !chunks {
            let examples = match &splits.streamed {
                Some(data) => data.len(),
                None => splits.train.examples.len(),
            };
            // Before the vocabulary, the teacher and the model are built again.
            let batches = examples.div_ceil(config.batch_size);
            if let Some(done) = crate::trainer::finished_run(output, &config, batches) {
                return Ok(done);
            }
        }
        let ((tokenizer, model, mut model_config), pretraining) = match self.preset() {
            Some(p) => self.fresh_preset::<AB>(&p, &config, &splits.train, device)?,
            None => (
                self.pretrained::<AB>(&config, &splits.train.labels, device)?,
                None,
            ),
        };
        // HF's name in config.json; single-label leaves it unset, as before.
        if problem != ProblemType::SingleLabelClassification {
            model_config.problem_type = Some(problem);
        }
        let data = self.encode(&config, splits, &tokenizer)?;
        let mut summary = train_replica::<AB>(
            model,
            &model_config,
            &tokenizer,
            &data,
            &config,
            output,
            self.resume,
            device,
            replica,
        )?;
        summary.pretraining = pretraining;
        Ok(summary)
    }

    /// The training, dev and test data: read, or split from the training data.
    fn read_splits(&self, config: &TrainConfig) -> Result<Splits> {
        let source = self.train.as_ref().ok_or(JobError::NoTrainData)?;
        let forced = config.problem_type.map(crate::tasks::task_of);
        if self.streaming && config.long_text == zhbert_data::LongText::Chunks {
            return Err(JobError::CannotStream("--long-text chunks makes batches of windows; hold the training set in memory, or stream with truncate or head-tail").into());
        }
        let (all, streamed) = self.read_train(source, forced)?;
        let name = source
            .path()
            .map_or("the training data".into(), |p| p.display().to_string());
        let task = all.task();
        if all.labels.is_empty() {
            return Err(JobError::NoLabel { data: name }.into());
        }
        if let (Task::SingleLabel, [only]) = (task, all.labels.as_slice()) {
            // HF reads `num_labels: 1` as a regression head, so a one-label
            // training set would save a model that `transformers` misreads.
            let label = only.clone();
            return Err(JobError::OneLabel { data: name, label }.into());
        }
        if self.dev.is_none() && self.test.is_none() {
            let [train, dev, test] = stratified_split(&all, self.split, self.split, config.seed)?;
            tracing::info!(
                "no dev or test data: stratified split of {name} by seed {}: train {}, dev {}, test {}",
                config.seed,
                train.examples.len(),
                dev.examples.len(),
                test.examples.len()
            );
            return Ok(Splits {
                train,
                dev: Some(dev),
                test: Some(test),
                streamed,
            });
        }
        let labels = &all.labels;
        Ok(Splits {
            dev: self
                .dev
                .as_ref()
                .map(|d| self.read(d, Some(labels), Some(task)))
                .transpose()?,
            test: self
                .test
                .as_ref()
                .map(|d| self.read(d, Some(labels), Some(task)))
                .transpose()?,
            train: all,
            streamed,
        })
    }

    /// The training data, or for streaming its scan (and a dataset of its labels only).
    fn read_train(
        &self,
        source: &DataSource,
        task: Option<Task>,
    ) -> Result<(Dataset, Option<Arc<StreamingDataset>>)> {
        if !self.streaming {
            return Ok((self.read(source, None, task)?, None));
        }
        if task.is_some_and(|t| t != Task::SingleLabel) || self.columns.label_separator.is_some() {
            return Err(JobError::CannotStream("it reads single-label data only: multi-label and regression runs hold the training set in memory").into());
        }
        let DataSource::File(path) = source else {
            return Err(JobError::CannotStream(
                "it reads a file: give the training data as a file",
            )
            .into());
        };
        if self.preset().is_some() {
            return Err(JobError::CannotStream("a preset builds its vocabulary and pretrains from the training texts in memory; stream with a pretrained model").into());
        }
        if self.dev.is_none() {
            return Err(JobError::CannotStream(
                "it needs dev data: splitting a file needs all of it in memory",
            )
            .into());
        }
        let (data, report) = StreamingDataset::scan(path, &self.read_options(None, None))?;
        tracing::info!("{report} (streamed: read again every epoch)");
        let labels = data.labels.clone();
        let empty = Dataset {
            examples: vec![],
            labels,
        };
        Ok((empty, Some(Arc::new(data))))
    }

    fn read_options(&self, known_labels: Option<&[String]>, task: Option<Task>) -> ReadOptions {
        ReadOptions {
            format: None,
            columns: self.columns.clone(),
            bad_rows: self.bad_rows,
            known_labels: known_labels.map(<[String]>::to_vec),
            task,
        }
    }

    /// One data source as a dataset; `known` labels refuse any other, a
    /// `task` reads it as that (else it is told from the data).
    fn read(
        &self,
        source: &DataSource,
        known: Option<&[String]>,
        task: Option<Task>,
    ) -> Result<Dataset> {
        let path = match source {
            DataSource::Memory(data) => return in_memory(data, known),
            DataSource::File(path) => path,
        };
        let (data, report) = read_dataset(path, &self.read_options(known, task))?;
        tracing::info!("{report}");
        for bad in report.bad_rows.iter().take(5) {
            tracing::warn!("skipped {bad}");
        }
        Ok(data)
    }

    /// A preset's tokenizer (its vocabulary built from the training texts) and
    /// fresh model, pretrained as a masked LM first when the preset asks.
    fn fresh_preset<AB: AutodiffBackend>(
        &self,
        preset: &Preset,
        config: &TrainConfig,
        train: &Dataset,
        device: &AB::Device,
    ) -> Result<(Model<AB>, Option<PretrainSummary>)> {
        let texts = train
            .examples
            .iter()
            .flat_map(|e| std::iter::once(e.text.as_str()).chain(e.text_pair.as_deref()));
        if let Some(warning) = preset.small_data_warning(train.examples.len()) {
            tracing::warn!("{warning}");
        }
        let mut tokenizer = preset.tokenizer(texts, config.max_length)?;
        let pretrain = PretrainConfig {
            epochs: self.pretraining_epochs(),
            seed: config.seed,
            ..preset.pretrain.clone()
        };
        let positions = if pretrain.epochs > 0 {
            config.max_length.max(pretrain.max_length)
        } else {
            config.max_length
        };
        if let Some(n) = self.pad_to_multiple_of {
            tokenizer.set_pad_to_multiple_of(n, positions);
        }
        let model_config = preset.model_config(tokenizer.vocab_size(), &train.labels, positions);
        tracing::info!(
            "preset {}: {} layers, hidden {}, vocabulary of {} entries from the training text, {:.1}M parameters, trained from scratch",
            preset.name,
            preset.layers,
            preset.hidden_size,
            tokenizer.vocab_size(),
            model_config.num_parameters() as f64 / 1e6
        );
        let mut model = model_config.init_classifier::<AB>(device);
        let mut pretraining = None;
        if pretrain.epochs > 0 {
            let out = self.output_dir()?;
            let job = crate::pretrain::SelfPretraining {
                model_config: &model_config,
                tokenizer: &tokenizer,
                train,
                config: &pretrain,
                output: out,
                resume: self.resume,
            };
            pretraining = job.run::<AB>(&mut model, device)?;
        }
        Ok(((tokenizer, model, model_config), pretraining))
    }

    /// A pretrained checkpoint (folder or Hub id) with a classification head
    /// for `labels` (fresh when it has none, or another).
    fn pretrained<AB: AutodiffBackend>(
        &self,
        config: &TrainConfig,
        labels: &[String],
        device: &AB::Device,
    ) -> Result<Model<AB>> {
        let names: Vec<&str> = presets().iter().map(|p| p.name).collect();
        let dir =
            crate::hub::resolve_model(&self.model).with_context(|| JobError::UnknownModel {
                model: self.model.clone(),
                presets: names.join(", "),
            })?;
        let mut tokenizer = BertTokenizer::from_dir(&dir)?;
        let options = LoadOptions {
            labels: Some(labels.to_vec()),
            allow_fresh_head: true,
        };
        let (model, model_config, report) = load_classifier::<AB>(&dir, &options, device)?;
        tracing::info!("{report}");
        let positions = model_config.max_position_embeddings;
        if let Some(n) = self.pad_to_multiple_of {
            tokenizer.set_pad_to_multiple_of(n, positions);
        }
        if config.max_length > positions {
            let max_length = config.max_length;
            return Err(JobError::TooLong {
                max_length,
                positions,
            }
            .into());
        }
        Ok((tokenizer, model, model_config))
    }

    /// The splits tokenized, and the teacher's probabilities when the run distils.
    fn encode(
        &self,
        config: &TrainConfig,
        splits: Splits,
        tokenizer: &BertTokenizer,
    ) -> Result<TrainData> {
        let soft_targets = match (&splits.streamed, config.distill > 0.0) {
            (None, true) => Some(crate::teacher::fit_teacher(&splits.train, config.seed)?),
            _ => None,
        };
        let long = config.long_text_options();
        let encode = |name: &str, d: &Dataset| {
            crate::long_text::encode_split(name, d, tokenizer, config.max_length, &long)
        };
        let dev = splits.dev.as_ref().map(|d| encode("dev", d)).transpose()?;
        let test = splits
            .test
            .as_ref()
            .map(|d| encode("test", d))
            .transpose()?;
        let train = match splits.streamed {
            Some(data) => TrainSet::Streaming {
                data,
                shuffle_buffer: self.shuffle_buffer,
                max_length: config.max_length,
                long_text: config.long_text,
            },
            None => encode("train", &splits.train)?.into(),
        };
        // The teacher's probabilities are per document; each window takes its document's.
        let soft_targets = match (&train, soft_targets) {
            (TrainSet::Encoded(rows), Some(t)) => Some(rows.per_row(&t)),
            (_, t) => t,
        };
        Ok(TrainData {
            train,
            dev,
            test,
            labels: splits.train.labels,
            soft_targets,
        })
    }
}

/// A tokenizer, a model and its configuration.
type Model<AB> = (BertTokenizer, BertForSequenceClassification<AB>, BertConfig);

/// A dataset given in memory, checked against the training labels: its label
/// ids are re-mapped to theirs by name.
fn in_memory(data: &Dataset, known: Option<&[String]>) -> Result<Dataset> {
    let Some(known) = known else {
        return Ok(data.clone());
    };
    let ids: Vec<usize> =
        data.labels
            .iter()
            .map(|l| {
                known.iter().position(|k| k == l).with_context(|| {
                    format!("label {l:?} is not among the training labels {known:?}")
                })
            })
            .collect::<Result<_>>()?;
    let mut out = data.clone();
    out.labels = known.to_vec();
    for e in &mut out.examples {
        match &mut e.target {
            Target::Labels(labels) => {
                labels.iter_mut().for_each(|l| *l = ids[*l]);
                labels.sort_unstable();
            }
            Target::Value(_) => {}
            Target::Class => e.label = ids[e.label],
        }
    }
    Ok(out)
}

/// The problem type of a run on `train`: the configured one, or the data's.
/// Distillation, single-label only, is turned off for the others (a
/// preset's default), with a warning.
fn problem_for(config: &mut TrainConfig, train: &Dataset) -> ProblemType {
    let problem = config
        .problem_type
        .unwrap_or_else(|| crate::tasks::problem_of(train.task()));
    if problem != ProblemType::SingleLabelClassification && config.distill > 0.0 {
        tracing::warn!(
            "distillation {} turned off: its teacher is single-label, this run is {}",
            config.distill,
            crate::tasks::problem_name(problem)
        );
        config.distill = 0.0;
    }
    problem
}

/// Tokenizes a split, and logs how many texts `max_length` cuts.
pub(crate) fn encode_logged(
    name: &str,
    data: &Dataset,
    tokenizer: &BertTokenizer,
    max_length: usize,
) -> Result<EncodedDataset> {
    let e = encode_dataset(data, tokenizer, max_length)?;
    if e.truncated > 0 {
        tracing::info!(
            "{name}: {} of {} texts longer than {max_length} tokens ({:.1}%), {} tokens cut",
            e.truncated,
            data.examples.len(),
            100.0 * e.truncated as f64 / data.examples.len() as f64,
            e.tokens_cut
        );
    }
    Ok(e)
}

#[cfg(feature = "collective")]
impl FineTune {
    /// Data-parallel [`fit`](Self::fit): one replica per device of `devices`
    /// (one backend), each in its own thread; with `nodes`, this process is one
    /// node of several ([`crate::Nodes`]). The batch size is the batch of all
    /// replicas together. Replica 0 logs and writes the output folder; its
    /// summary comes back where this process holds it (`None` on the other
    /// nodes). A replica that fails would
    /// leave the others waiting in burn-collective forever, so its error ends
    /// the process (exit code 1) after printing it; outputs and checkpoints
    /// are written atomically.
    pub fn fit_data_parallel<AB: AutodiffBackend>(
        &self,
        devices: &[AB::Device],
        nodes: Option<crate::Nodes>,
    ) -> Result<Option<TrainSummary>> {
        if self.pretraining_epochs() > 0 {
            return Err(JobError::PretrainOnSeveralDevices.into());
        }
        let topology = crate::Topology {
            devices: devices.len(),
            nodes,
        };
        let replicas = (0..devices.len())
            .map(|i| topology.replica(i))
            .collect::<Result<Vec<_>>>()?;
        let ranks: Vec<String> = replicas.iter().map(|r| r.rank.to_string()).collect();
        tracing::info!(
            "data-parallel: {} replicas ({} on this node), this node's are {}",
            topology.world(),
            devices.len(),
            ranks.join(", ")
        );
        let summaries: Vec<Result<TrainSummary>> = std::thread::scope(|scope| {
            let handles: Vec<_> = replicas
                .iter()
                .zip(devices)
                .map(|(replica, device)| {
                    scope.spawn(move || self.replica_thread::<AB>(device, replica))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a replica's thread panicked")))
                })
                .collect()
        });
        let mut main = None;
        for (replica, summary) in replicas.iter().zip(summaries) {
            let summary = summary?;
            if replica.is_main() {
                main = Some(summary);
            }
        }
        Ok(main)
    }

    /// One replica's thread: only replica 0 logs.
    fn replica_thread<AB: AutodiffBackend>(
        &self,
        device: &AB::Device,
        replica: &Replica,
    ) -> Result<TrainSummary> {
        let run = || self.fit_replica::<AB>(device, replica);
        let result = if replica.is_main() {
            run()
        } else {
            tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), run)
        };
        if let Err(e) = &result {
            eprintln!("error: replica {}: {e:#}", replica.rank);
            std::process::exit(1);
        }
        result
    }
}
