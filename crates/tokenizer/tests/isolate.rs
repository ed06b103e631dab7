//! `BertTokenizer::isolate_unknown_chars` (what `tiny-zh` reads text with)
//! against `transformers`: `tests/fixtures/make_isolating_cases.py` loads the
//! folder zhbert saved (`tokenizer/isolating/`, written by the ignored test
//! `write_isolating_folder` below) with `AutoTokenizer.from_pretrained`, checks
//! its ids against a plain Python statement of the rule on top of
//! `BertTokenizerLegacy`, and writes them with the texts: reviews, and runs
//! of Chinese holding an emoji, a rare character or more than 100 characters.

use std::path::PathBuf;

use serde::Deserialize;
use zhbert_testkit::fixtures;
use zhbert_tokenizer::{BertTokenizer, TokenizerConfig};

#[derive(Deserialize)]
struct Case {
    text: String,
    input_ids: Vec<u32>,
    /// The ids without the isolation (transformers' `BertTokenizer`).
    plain_ids: Vec<u32>,
}

fn folder() -> PathBuf {
    fixtures().join("tokenizer/isolating")
}

/// The tokenizer as the `tiny-zh` preset builds it, from the merge-learned
/// vocabulary of `make_wordpiece_vocab.py`.
fn isolating_from_vocab() -> BertTokenizer {
    let config = TokenizerConfig {
        tokenize_chinese_chars: false,
        model_max_length: 128,
        ..TokenizerConfig::default()
    };
    let mut tokenizer =
        BertTokenizer::from_vocab_file(fixtures().join("tokenizer/wordpiece_vocab.txt"), config)
            .unwrap();
    tokenizer.isolate_unknown_chars().unwrap();
    tokenizer
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(fixtures().join("tokenizer/isolating_cases.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Writes `tokenizer/isolating/` (run by `cargo xtask fixtures --run
/// isolating_folder`).
#[test]
#[ignore]
fn write_isolating_folder() {
    isolating_from_vocab().save(folder()).unwrap();
}

#[test]
fn unknown_chars_and_long_runs_match_transformers() {
    let cases = cases();
    let fresh = isolating_from_vocab();
    let loaded = BertTokenizer::from_dir(folder()).unwrap();
    let unk = fresh.unk_id().unwrap();
    let mut changed = 0;
    for c in &cases {
        let short: String = c.text.chars().take(40).collect();
        assert_eq!(
            fresh.encode(&c.text, None, None).unwrap().input_ids,
            c.input_ids,
            "built from vocab.txt: {short:?}"
        );
        assert_eq!(
            loaded.encode(&c.text, None, None).unwrap().input_ids,
            c.input_ids,
            "loaded from the saved folder: {short:?}"
        );
        changed += usize::from(c.input_ids != c.plain_ids);
    }
    // The cases hold both kinds: texts whose [UNK] runs are now read, and
    // texts without one, unchanged (checked per text by the script).
    assert!(changed >= 10, "only {changed} cases differ from plain BERT");
    assert!(cases.len() - changed >= 100);
    // `手机很差劲😡垃圾` keeps its words: one [UNK], for the emoji.
    let emoji = fresh.encode("手机很差劲😡垃圾", None, None).unwrap();
    let unks = emoji.input_ids.iter().filter(|&&id| id == unk).count();
    assert_eq!(unks, 1, "{:?}", emoji.input_ids);
    assert!(emoji.input_ids.len() > 5);
    // What `zhbert predict` warns about: texts it reads next to nothing of.
    assert!(!fresh.is_mostly_unknown("手机很差劲😡垃圾").unwrap());
    assert!(fresh.is_mostly_unknown("㊣㊣").unwrap());
    assert!(fresh.is_mostly_unknown("😡很😡").unwrap());
    assert!(!fresh.is_mostly_unknown("").unwrap());
}

#[test]
fn the_folder_is_what_zhbert_saves_today() {
    let dir = tempfile::tempdir().unwrap();
    isolating_from_vocab().save(dir.path()).unwrap();
    for name in zhbert_tokenizer::TOKENIZER_FILES {
        let saved = std::fs::read_to_string(dir.path().join(name)).unwrap();
        let fixture = std::fs::read_to_string(folder().join(name)).unwrap();
        assert!(
            saved == fixture,
            "{name} differs from tests/fixtures/tokenizer/isolating/{name}: \
             run `cargo xtask fixtures --run isolating_folder make_isolating_cases`"
        );
    }
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["tokenizer_class"], "PreTrainedTokenizerFast");
}
