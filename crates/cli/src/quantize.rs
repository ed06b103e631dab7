//! `--quantize`, one definition for the commands that classify (`predict`,
//! `eval`, `serve`, `bench infer`): it maps to
//! [`zhbert_train::ClassifierOptions::quantize`].

use zhbert_train::Quantize;

use crate::backend::BackendKind;

/// Quantized inference.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct QuantizeArgs {
    /// Quantize the linear layers for CPU inference: `int8` is dynamic int8
    /// as PyTorch's `quantize_dynamic` (weights per output channel at load,
    /// activations per row at run time); flex backend only.
    #[arg(long)]
    pub quantize: Option<Quantize>,
}

impl QuantizeArgs {
    /// The setting, or a one-line error when the backend has no such kernels.
    pub fn for_backend(&self, kind: BackendKind) -> anyhow::Result<Option<Quantize>> {
        if let Some(q) = self.quantize {
            anyhow::ensure!(
                kind == BackendKind::Flex,
                "--quantize {q} runs on the flex CPU backend only, not on --backend {}",
                kind.feature()
            );
        }
        Ok(self.quantize)
    }
}
