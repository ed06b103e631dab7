//! Long texts: the windows of `--long-text chunks` against those
//! `transformers` returns with `return_overflowing_tokens=True, stride=N`,
//! head-tail ids against the fixture's (computed from transformers'
//! untruncated encoding), and a chunked dataset's rows, labels and pooling.
//! Fixtures: `tests/fixtures/make_long_text.py`.

use zhbert_data::long_text::windows;
use zhbert_data::{
    encode_long_texts, ChunkPool, Dataset, Example, LongText, LongTextOptions, Target,
};
use zhbert_tokenizer::{BertTokenizer, TokenizerConfig};

fn tokenizer() -> BertTokenizer {
    let vocab = zhbert_testkit::fixtures().join("tokenizer/zh_char_vocab.txt");
    BertTokenizer::from_vocab_file(vocab, TokenizerConfig::default()).unwrap()
}

fn cases() -> Vec<serde_json::Value> {
    let path = zhbert_testkit::fixtures().join("long-text/cases.jsonl");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

fn options(mode: LongText, stride: usize) -> LongTextOptions {
    LongTextOptions {
        mode,
        stride,
        pool: ChunkPool::Mean,
    }
}

#[test]
fn chunks_are_the_windows_transformers_returns() {
    let t = tokenizer();
    let (mut split, mut pairs) = (0, 0);
    for case in cases() {
        let text = case["text"].as_str().unwrap();
        let pair = case["text_pair"].as_str();
        let max_length = case["max_length"].as_u64().unwrap() as usize;
        let stride = case["stride"].as_u64().unwrap() as usize;
        let got = options(LongText::Chunks, stride)
            .encode(&t, text, pair, max_length)
            .unwrap();
        let want = case["windows"].as_array().unwrap();
        let label = format!("{text:?} / {pair:?} at {max_length}, stride {stride}");
        assert_eq!(got.len(), want.len(), "windows of {label}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g.input_ids, ids(&w["input_ids"]), "{label}");
            assert_eq!(g.token_type_ids, ids(&w["token_type_ids"]), "{label}");
            assert_eq!(g.attention_mask, vec![1; g.input_ids.len()]);
            assert_eq!(g.truncated_tokens, 0, "a window loses nothing");
        }
        split += usize::from(want.len() > 1);
        pairs += usize::from(pair.is_some() && want.len() > 1);
    }
    // The fixture does exercise splitting, of texts and of pairs.
    assert!(split >= 80 && pairs >= 10, "{split} split, {pairs} pairs");
}

#[test]
fn head_tail_keeps_the_start_and_the_end() {
    let t = tokenizer();
    let mut cut = 0;
    for case in cases() {
        let text = case["text"].as_str().unwrap();
        let pair = case["text_pair"].as_str();
        let max_length = case["max_length"].as_u64().unwrap() as usize;
        let got = options(LongText::HeadTail, 0)
            .encode(&t, text, pair, max_length)
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].input_ids,
            ids(&case["head_tail"]),
            "{text:?} at {max_length}"
        );
        let truncate = t.encode(text, pair, Some(max_length)).unwrap();
        // The same length and the same count of tokens cut as truncation.
        assert_eq!(got[0].input_ids.len(), truncate.input_ids.len());
        assert_eq!(got[0].token_type_ids, truncate.token_type_ids);
        assert_eq!(got[0].truncated_tokens, truncate.truncated_tokens);
        cut += usize::from(truncate.truncated_tokens > 0);
    }
    assert!(cut >= 80, "{cut}");
}

#[test]
fn windows_step_by_the_size_less_the_stride() {
    // tokenizers' documented example: 19 tokens, windows of 6 sharing 2.
    assert_eq!(windows(19, 6, 2), [0..6, 4..10, 8..14, 12..18, 16..19]);
    assert_eq!(windows(6, 6, 0), [0..6]);
}

fn example(text: &str, label: usize, target: Target) -> Example {
    Example {
        text: text.into(),
        text_pair: None,
        label,
        target,
    }
}

#[test]
fn a_chunked_dataset_has_one_row_per_window_with_its_documents_label() {
    let t = tokenizer();
    let long: String = "这本书装订得很差拿到书没看一天就裂成好几份了".repeat(3);
    let data = Dataset {
        examples: vec![
            example("很好", 1, Target::Labels(vec![1])),
            example(&long, 0, Target::Labels(vec![0, 2])),
            example("太差了", 2, Target::Labels(vec![])),
        ],
        labels: vec!["a".into(), "b".into(), "c".into()],
    };
    let long_options = LongTextOptions {
        mode: LongText::Chunks,
        stride: 4,
        pool: ChunkPool::Max,
    };
    let e = encode_long_texts(&data, &t, 16, &long_options).unwrap();
    let n = long.chars().count();
    // Windows of 14 text tokens moving by 10 over n tokens.
    let expected_windows = 1 + (n - 14).div_ceil(10);
    assert_eq!(e.windows, vec![1, expected_windows, 1]);
    assert_eq!(e.encoded.len(), expected_windows + 2);
    assert_eq!(e.documents(), 3);
    assert_eq!(e.split_documents(), 1);
    assert_eq!(e.truncated, 1);
    assert_eq!(e.tokens_cut, 0);
    let mut labels = vec![1];
    labels.extend(vec![0; expected_windows]);
    labels.push(2);
    assert_eq!(e.labels, labels);
    assert_eq!(e.document_labels(), vec![1, 0, 2]);
    let targets = e.targets.as_ref().unwrap();
    assert_eq!(targets[1], vec![1.0, 0.0, 1.0]);
    assert_eq!(targets[expected_windows], vec![1.0, 0.0, 1.0]);
    assert_eq!(e.document_targets().unwrap()[2], vec![0.0, 0.0, 0.0]);
    // Pooling: row r's logits are (r, -r); the long document's max is its last window's.
    let logits: Vec<Vec<f32>> = (0..e.encoded.len())
        .map(|r| vec![r as f32, -(r as f32)])
        .collect();
    let pooled = e.pool_logits(&logits);
    assert_eq!(pooled.len(), 3);
    assert_eq!(pooled[0], vec![0.0, 0.0]);
    assert_eq!(pooled[1], vec![expected_windows as f32, -1.0]);
    assert_eq!(pooled[2], logits[expected_windows + 1]);
}

#[test]
fn impossible_windows_are_refused_in_one_line() {
    let t = tokenizer();
    let chunks = options(LongText::Chunks, 14);
    let err = chunks.check(16).unwrap_err();
    assert!(err.starts_with("stride 14: must be less than"), "{err}");
    assert!(options(LongText::Chunks, 13).check(16).is_ok());
    // A second text that leaves the first no room past the stride.
    let long = "很好".repeat(20);
    let err = options(LongText::Chunks, 4)
        .encode(&t, &long, Some("太差了太差了太差了"), 16)
        .unwrap_err()
        .to_string();
    assert!(err.contains("second text of a pair has 9 tokens"), "{err}");
    assert!(!err.contains('\n'));
}
