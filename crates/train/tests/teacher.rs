//! The distillation teacher against scikit-learn (`tests/fixtures/make_teacher.py`):
//! the same TF-IDF values, and the same logistic regression optimum.

use zhbert_testkit::fixtures;
use zhbert_train::teacher::{CharNgramTfidf, LogisticRegression, SparseRow};

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
