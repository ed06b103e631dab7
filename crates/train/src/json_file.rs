//! Small JSON files a model folder carries beside its weights
//! (`thresholds.json`, `long_text.json`): written atomically, optional when
//! read.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{de::DeserializeOwned, Serialize};

/// Writes `value` as pretty JSON to `path`, atomically.
pub(crate) fn save(path: &Path, value: &impl Serialize) -> Result<()> {
    zhbert_model::write_atomic(path, serde_json::to_string_pretty(value)?.as_bytes())?;
    Ok(())
}

/// The value in `path`; `None` when there is no such file, an error naming
/// the file and `what` it should be when it does not parse.
pub(crate) fn load<T: DeserializeOwned>(path: &Path, what: &str) -> Result<Option<T>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let value =
        serde_json::from_str(&text).with_context(|| format!("{}: not {what}", path.display()))?;
    Ok(Some(value))
}
