//! `--long-text`, `--stride`, `--chunk-pool` for the commands that classify
//! with a trained model (eval, predict, serve); `zhbert train` takes the same
//! flags from [`zhbert_train::TrainConfig`]. Values and checks are
//! [`zhbert_train::LongTextOptions`]'.

use zhbert_train::{ChunkPool, ClassPrediction, Classifier, LongText, LongTextOptions};

/// What happens to texts longer than --max-length.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct LongTextArgs {
    /// Texts longer than --max-length: truncate (keep the start), head-tail
    /// (keep a quarter of the room from the start and the rest from the end:
    /// 128 + 382 at 512) or chunks (windows of --max-length tokens sharing
    /// --stride; a text's prediction pools its windows' logits).
    #[arg(long, default_value_t = LongText::Truncate)]
    long_text: LongText,
    /// With --long-text chunks: tokens consecutive windows share (HF's
    /// `stride`), less than --max-length - 2.
    #[arg(long, default_value_t = 0)]
    stride: usize,
    /// With --long-text chunks: pool the windows' logits by their mean or max.
    #[arg(long, default_value_t = ChunkPool::Mean)]
    chunk_pool: ChunkPool,
}

impl LongTextArgs {
    /// The classifier with `--max-length` (when given) and these settings,
    /// refused in the flags' words when they do not fit the model.
    pub fn apply<B: burn::tensor::backend::Backend>(
        &self,
        mut classifier: Classifier<B>,
        max_length: Option<usize>,
    ) -> anyhow::Result<Classifier<B>> {
        if let Some(n) = max_length {
            classifier = crate::predict::with_max_length_flag(classifier, n)?;
        }
        let options = LongTextOptions {
            mode: self.long_text,
            stride: self.stride,
            pool: self.chunk_pool,
        };
        let max_length = classifier.max_length();
        classifier.with_long_text(options).map_err(|_| {
            anyhow::anyhow!(
                "--stride {}: with --long-text chunks, must be less than --max-length {max_length} minus 2 (a window's [CLS] and [SEP])",
                self.stride
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
