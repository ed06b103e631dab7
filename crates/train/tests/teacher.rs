//! The distillation teacher against scikit-learn (`tests/fixtures/make_teacher.py`):
//! the same TF-IDF values, and the same logistic regression optimum.

use zhbert_data::{Dataset, Example};
use zhbert_testkit::fixtures;
use zhbert_train::teacher::{
    distillation_targets, teacher_folds, CharNgramTfidf, LogisticRegression, SparseRow,
    TEACHER_FOLDS,
};

#[test]
fn tfidf_and_logistic_regression_match_scikit_learn() {
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("teacher/expected.json")).unwrap(),
    )
    .unwrap();
    let strings = |k: &str| -> Vec<String> { serde_json::from_value(expected[k].clone()).unwrap() };
    let fit_texts = strings("fit_texts");
    let fit_texts: Vec<&str> = fit_texts.iter().map(String::as_str).collect();
    let fit_labels: Vec<usize> = serde_json::from_value(expected["fit_labels"].clone()).unwrap();
    let tfidf = CharNgramTfidf::fit(&fit_texts, 3);
    assert_eq!(
        tfidf.len(),
        expected["vocabulary_size"].as_u64().unwrap() as usize
    );

    let rows: Vec<SparseRow> = fit_texts.iter().map(|t| tfidf.transform(t)).collect();
    let lr = LogisticRegression::fit(&rows, &fit_labels, 2, tfidf.len(), 10.0, 1e-9).unwrap();
    let want_tfidf: Vec<Vec<(String, f64)>> =
        serde_json::from_value(expected["tfidf"].clone()).unwrap();
    let want_proba: Vec<Vec<f64>> = serde_json::from_value(expected["proba"].clone()).unwrap();
    let mut worst_proba = 0.0f64;
    for (i, text) in strings("texts").iter().enumerate() {
        // The same n-grams with the same values.
        let got = tfidf.transform(text);
        assert_eq!(got.len(), want_tfidf[i].len(), "{text:?}: n-grams");
        for (ngram, want) in &want_tfidf[i] {
            let id = tfidf
                .feature(ngram)
                .unwrap_or_else(|| panic!("{ngram:?} unknown"));
            let value = got.iter().find(|&&(f, _)| f == id).map(|&(_, v)| v);
            assert!(
                value.is_some_and(|v| (v as f64 - want).abs() < 1e-6),
                "{text:?} {ngram:?}: tf-idf {value:?} vs {want}"
            );
        }
        let p = lr.predict_proba(&tfidf.transform(text));
        for (g, w) in p.iter().zip(&want_proba[i]) {
            worst_proba = worst_proba.max((g - w).abs());
        }
    }
    eprintln!("largest probability difference from scikit-learn: {worst_proba:e}");
    // Both solvers stop near the same strictly convex optimum.
    assert!(worst_proba < 1e-4, "{worst_proba:e}");
}

/// The 160 reviews of the parity fixture with three labels: a review under 14
/// characters is class 2, else its sentiment (as `make_teacher.py --oof`).
fn three_class_reviews() -> Dataset {
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("train-parity/expected.json")).unwrap(),
    )
    .unwrap();
    let examples = expected["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let text = e["text"].as_str().unwrap().to_string();
            let label = if text.chars().count() >= 14 {
                e["label"].as_u64().unwrap() as usize
            } else {
                2
            };
            Example {
                text,
                text_pair: None,
                label,
                target: Default::default(),
            }
        })
        .collect();
    Dataset {
        examples,
        labels: ["negative", "positive", "short"].map(String::from).to_vec(),
    }
}

fn labels_of(data: &Dataset) -> Vec<usize> {
    data.examples.iter().map(|e| e.label).collect()
}

/// Writes `teacher/folds.json`, the folds zhbert draws for the fixture, which
/// `make_teacher.py --oof` fits scikit-learn on.
#[test]
#[ignore = "writes a fixture input: run before make_teacher.py --oof"]
fn write_teacher_folds() {
    let data = three_class_reviews();
    let folds = teacher_folds(&labels_of(&data), 3, TEACHER_FOLDS, 42);
    std::fs::write(
        fixtures().join("teacher/folds.json"),
        serde_json::json!({ "seed": 42, "folds": folds }).to_string() + "\n",
    )
    .unwrap();
}

/// The production path (`distillation_targets`: its folds, `C` through
/// `sklearn_equivalent_c`, the production solver tolerance) against
/// scikit-learn's out-of-fold probabilities on the same folds, three classes.
#[test]
fn distillation_targets_match_scikit_learn_out_of_fold() {
    let want: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("teacher/oof.json")).unwrap(),
    )
    .unwrap();
    let data = three_class_reviews();
    let labels = labels_of(&data);
    let want_labels: Vec<usize> = serde_json::from_value(want["labels"].clone()).unwrap();
    assert_eq!(labels, want_labels, "the fixture's labels");
    let folds: Vec<usize> = serde_json::from_value(want["folds"].clone()).unwrap();
    assert_eq!(
        teacher_folds(&labels, 3, TEACHER_FOLDS, 42),
        folds,
        "the folds drawn"
    );
    // Stratified: every fold holds a fifth of each class, give or take one.
    for class in 0..3 {
        let per_fold: Vec<usize> = (0..TEACHER_FOLDS)
            .map(|f| {
                (0..labels.len())
                    .filter(|&i| labels[i] == class && folds[i] == f)
                    .count()
            })
            .collect();
        let (lo, hi) = (
            per_fold.iter().min().unwrap(),
            per_fold.iter().max().unwrap(),
        );
        assert!(hi - lo <= 1, "class {class}: {per_fold:?}");
    }

    let got = distillation_targets(&data, 42).unwrap();
    let want_proba: Vec<Vec<f64>> = serde_json::from_value(want["proba"].clone()).unwrap();
    let worst = got
        .iter()
        .zip(&want_proba)
        .flat_map(|(g, w)| g.iter().zip(w).map(|(&g, &w)| (g as f64 - w).abs()))
        .fold(0.0f64, f64::max);
    eprintln!("largest out-of-fold probability difference from scikit-learn: {worst:e}");
    // The production solver stops at a gradient tolerance of 1e-5 where the
    // fixture ran scikit-learn to 1e-10: 5.6e-5 measured, under the 1e-4 the
    // first test holds the two optima to.
    assert!(worst < 1e-4, "{worst:e}");
}
