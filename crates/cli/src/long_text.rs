//! `--long-text`, `--stride`, `--chunk-pool` for the commands that classify
//! with a trained model (eval, predict, serve); `zhbert train` takes the same
//! flags from [`zhbert_train::TrainConfig`]. Values and checks are
//! [`zhbert_train::LongTextOptions`]'.

use zhbert_train::{ChunkPool, ClassPrediction, Classifier, LongText, LongTextOptions};

/// What happens to texts longer than --max-length. A flag not given keeps
/// what the model folder says it was trained with (`long_text.json`), else
/// truncation.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct LongTextArgs {
    /// Texts longer than --max-length: truncate (keep the start), head-tail
    /// (keep a quarter of the room from the start and the rest from the end:
    /// 128 + 382 at 512) or chunks (windows of --max-length tokens sharing
    /// --stride; a text's prediction pools its windows' logits). Default: as
    /// the model was trained, else truncate.
    #[arg(long)]
    long_text: Option<LongText>,
    /// With --long-text chunks: tokens consecutive windows share (HF's
    /// `stride`), less than --max-length - 2. Default: as trained, else 0.
    #[arg(long)]
    stride: Option<usize>,
    /// With --long-text chunks: pool the windows' logits by their mean or
    /// max. Default: as trained, else mean.
    #[arg(long)]
    chunk_pool: Option<ChunkPool>,
}

impl LongTextArgs {
    /// The classifier with `--max-length` (when given) and these settings
    /// over those it was loaded with, refused in the flags' words when they
    /// do not fit the model.
    pub fn apply<B: burn::tensor::backend::Backend>(
        &self,
        mut classifier: Classifier<B>,
        max_length: Option<usize>,
    ) -> anyhow::Result<Classifier<B>> {
        let trained = *classifier.long_text();
        let options = LongTextOptions {
            mode: self.long_text.unwrap_or(trained.mode),
            stride: self.stride.unwrap_or(trained.stride),
            pool: self.chunk_pool.unwrap_or(trained.pool),
        };
        if let Some(n) = max_length {
            // Truncation first: any max length fits it, so a refusal below
            // names the stride, not the length.
            classifier = classifier.with_long_text(LongTextOptions::default())?;
            classifier = crate::predict::with_max_length_flag(classifier, n)?;
        }
        let max_length = classifier.max_length();
        let stride = match self.stride {
            Some(_) => "--stride",
            None => "the stride the model was trained with,",
        };
        classifier.with_long_text(options).map_err(|_| {
            anyhow::anyhow!(
                "{stride} {}: with --long-text chunks, must be less than --max-length {max_length} minus 2 (a window's [CLS] and [SEP])",
                options.stride
            )
        })
    }
}

/// Logs how many texts were split into how many windows, if any.
pub fn log_split<B: burn::tensor::backend::Backend>(
    predictions: &[ClassPrediction],
    classifier: &Classifier<B>,
) {
    let split: Vec<usize> = predictions
        .iter()
        .map(|p| p.windows)
        .filter(|&n| n > 1)
        .collect();
    if !split.is_empty() {
        tracing::info!(
            "{} texts longer than {} tokens split into {} windows, their logits pooled ({})",
            split.len(),
            classifier.max_length(),
            split.iter().sum::<usize>(),
            classifier.long_text().pool
        );
    }
}
