//! `--long-text` end to end: train on a small file with long texts (the data
//! summary says how many were split into how many windows), predict one line
//! per text in input order whose logits pool the windows' (each window's text
//! predicted on its own with truncation as the reference), the same without
//! flags (the model folder records its settings), eval per document, and
//! one-line errors for impossible settings.

mod common;

use std::path::Path;
use std::process::Command;

use common::{zhbert, zhbert_ok};
use zhbert_testkit::tiny_char_model;

fn text(cjk: &[String], seed: usize, n: usize) -> String {
    zhbert_testkit::one_token_text(cjk, seed, n)
}

/// Windows of 14 text tokens sharing 4 (--max-length 16 --stride 4), as text.
fn window_texts(text: &str) -> Vec<String> {
    zhbert_testkit::one_token_windows(text, 14, 10)
}

fn logits(jsonl: &[u8]) -> Vec<Vec<f32>> {
    String::from_utf8_lossy(jsonl)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            serde_json::from_value(v["logits"].clone()).unwrap()
        })
        .collect()
}

const CHUNKS: [&str; 6] = [
    "--max-length",
    "16",
    "--long-text",
    "chunks",
    "--stride",
    "4",
];

/// The training texts: 6, 45, 12, 70, 9, 33, 20, 58 and 15 characters.
fn train_texts(cjk: &[String]) -> Vec<String> {
    [6, 45, 12, 70, 9, 33, 20, 58, 15]
        .into_iter()
        .enumerate()
        .map(|(i, n)| text(cjk, i, n))
        .collect()
}

fn train(dir: &Path, cjk: &[String]) -> String {
    let labels = ["negative", "neutral", "positive"];
    let mut csv = String::from("text,label\n");
    for (i, t) in train_texts(cjk).iter().enumerate() {
        csv += &format!("{t},{}\n", labels[i % 3]);
    }
    std::fs::write(dir.join("train.csv"), csv).unwrap();
    let p = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let mut args = vec![
        "train".to_string(),
        "--train".into(),
        p("train.csv"),
        "--dev".into(),
        p("train.csv"),
        "--model".into(),
        p("model"),
        "--output".into(),
        p("run"),
        "--epochs".into(),
        "1".into(),
        "--batch-size".into(),
        "4".into(),
    ];
    args.extend(CHUNKS.iter().map(|s| s.to_string()));
    // The data summary is logged at info.
    let run = Command::new(env!("CARGO_BIN_EXE_zhbert"))
        .args(&args)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(run.status.success(), "{log}");
    log
}

#[test]
fn chunks_train_predict_and_eval_per_document() {
    let d = tempfile::tempdir().unwrap();
    let cjk = tiny_char_model(&d.path().join("model"));
    let log = train(d.path(), &cjk);
    // 45, 70, 33, 20, 58 and 15 characters (17 tokens with [CLS] and [SEP]).
    let windows: Vec<usize> = train_texts(&cjk)
        .iter()
        .map(|t| window_texts(t).len())
        .collect();
    assert_eq!(windows, [1, 5, 1, 7, 1, 3, 2, 6, 2]);
    let want = "train: 6 of 9 texts longer than 16 tokens (66.7%): 6 split into 25 windows (stride 4, mean pooling), 28 rows in all";
    assert!(log.contains(want), "{log}");
    let p = |name: &str| d.path().join(name).to_string_lossy().into_owned();

    let texts: Vec<String> = [40, 8, 64, 14, 15, 100]
        .into_iter()
        .enumerate()
        .map(|(i, n)| text(&cjk, i + 30, n))
        .collect();
    std::fs::write(p("texts.txt"), texts.join("\n") + "\n").unwrap();
    let windows: Vec<String> = texts.iter().flat_map(|t| window_texts(t)).collect();
    std::fs::write(p("windows.txt"), windows.join("\n") + "\n").unwrap();
    let (run, input) = (p("run"), p("texts.txt"));
    let mut args = vec!["predict", "--model", &run, "--input", &input];
    args.extend(CHUNKS);
    args.extend(["--chunk-pool", "max"]);
    let got = logits(&zhbert_ok(&args).stdout);
    assert_eq!(got.len(), texts.len(), "one line per text");
    let rows = logits(
        &zhbert_ok(&[
            "predict",
            "--model",
            &run,
            "--input",
            &p("windows.txt"),
            "--max-length",
            "16",
            "--long-text",
            "truncate",
        ])
        .stdout,
    );
    let mut start = 0;
    for (i, t) in texts.iter().enumerate() {
        let n = window_texts(t).len();
        for k in 0..3 {
            let max = rows[start..start + n]
                .iter()
                .map(|r| r[k])
                .fold(f32::MIN, f32::max);
            assert!((got[i][k] - max).abs() < 1e-5, "text {i} label {k}");
        }
        start += n;
    }

    // The model folder recorded how it was trained: without flags, predict
    // classifies windows of 16 tokens sharing 4, their logits averaged.
    let trained = logits(&zhbert_ok(&["predict", "--model", &run, "--input", &input]).stdout);
    let mut args = vec!["predict", "--model", &run, "--input", &input];
    args.extend(CHUNKS);
    args.extend(["--chunk-pool", "mean"]);
    assert_eq!(trained, logits(&zhbert_ok(&args).stdout));
    assert_ne!(trained, got, "mean pooling, not the max asked for above");
    // A max length too short for the trained stride says whose stride it is.
    let short = zhbert(&[
        "predict",
        "--model",
        &run,
        "--text",
        "很好",
        "--max-length",
        "5",
    ]);
    assert_eq!(short.status.code(), Some(1));
    let err = String::from_utf8_lossy(&short.stderr);
    assert!(
        err.starts_with("error: the stride the model was trained with, 4: with --long-text chunks, must be less than --max-length 5 minus 2"),
        "{err}"
    );

    let (out, data) = (p("eval.json"), p("train.csv"));
    let mut args = vec!["eval", "--model", &run, "--data", &data, "--output", &out];
    args.extend(CHUNKS);
    zhbert_ok(&args);
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(m["examples"], 9, "eval scores documents, not windows");
}

#[test]
fn impossible_long_text_settings_are_one_line_errors() {
    let d = tempfile::tempdir().unwrap();
    tiny_char_model(&d.path().join("model"));
    let model = d.path().join("model").to_string_lossy().into_owned();
    let run = zhbert(&[
        "predict",
        "--model",
        &model,
        "--text",
        "很好",
        "--max-length",
        "16",
        "--long-text",
        "chunks",
        "--stride",
        "14",
    ]);
    assert_eq!(run.status.code(), Some(1));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.starts_with("error: --stride 14: with --long-text chunks, must be less than --max-length 16 minus 2"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let run = zhbert(&[
        "predict",
        "--model",
        &model,
        "--text",
        "很好",
        "--long-text",
        "pieces",
    ]);
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("truncate, head-tail or chunks"));
    // Training refuses the stride before reading anything.
    let run = zhbert(&[
        "train",
        "--train",
        "missing.csv",
        "--model",
        &model,
        "--output",
        &d.path().join("out").to_string_lossy(),
        "--max-length",
        "16",
        "--long-text",
        "chunks",
        "--stride",
        "20",
    ]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.starts_with("error: --stride 20: with chunks, must be less than"),
        "{err}"
    );
}
