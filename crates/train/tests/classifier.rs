//! `Classifier`: the same logits as `classify` on the same model, in input
//! order; PyTorch's logits on the MiniLM fixture; top-k sorted; blank texts,
//! a missing head and a bad max length refused with errors that say which.

use std::path::Path;

use burn::backend::Flex;
use zhbert_data::{Dataset, Example};
use zhbert_model::{load_classifier, load_weights_file, save_classifier, LoadOptions};
use zhbert_testkit::{fixtures, minilm_dir};
use zhbert_tokenizer::BertTokenizer;
use zhbert_train::{
    classify, ClassPrediction, Classifier, ClassifierOptions, EmptyTextError, InferenceOptions,
};

/// MiniLM with the classification head PyTorch drew (labels neg, pos),
/// written as an HF folder.
fn minilm_classifier(dir: &Path) {
    let device = Default::default();
    let options = LoadOptions {
        labels: Some(vec!["neg".into(), "pos".into()]),
        allow_fresh_head: true,
    };
    let (mut model, config, _) = load_classifier::<Flex>(&minilm_dir(), &options, &device).unwrap();
    load_weights_file(&mut model, &fixtures().join("minilm/expected.safetensors")).unwrap();
    save_classifier(&model, &config, dir).unwrap();
    BertTokenizer::from_dir(minilm_dir())
        .unwrap()
        .save(dir)
        .unwrap();
}

fn pytorch_logits() -> Vec<f32> {
    let bytes = std::fs::read(fixtures().join("minilm/expected.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor("logits")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn texts() -> Vec<String> {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("minilm/texts.json")).unwrap())
        .unwrap()
}

#[test]
fn predict_matches_classify_in_input_order() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    minilm_classifier(&dir);
    let device = Default::default();
    // Batches of 3: length grouping reorders the texts inside predict.
    let classifier = Classifier::<Flex>::load(&dir, &device)
        .unwrap()
        .with_batch_size(3)
        .unwrap();
    assert_eq!(classifier.labels(), ["neg", "pos"]);
    assert_eq!(classifier.model_dir(), Some(dir.as_path()));
    assert_eq!(classifier.batch_size(), 3);

    // The reference: the same folder through load_classifier and classify.
    let tokenizer = BertTokenizer::from_dir(&dir).unwrap();
    let (model, config, _) =
        load_classifier::<Flex>(&dir, &LoadOptions::default(), &device).unwrap();
    let mut options = InferenceOptions::for_config(&config);
    options.batch_size = 3;

    let texts = texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let got = classifier.predict(&refs).unwrap();
    let inputs: Vec<(String, Option<String>)> = texts.iter().map(|t| (t.clone(), None)).collect();
    let want = classify(&model, &tokenizer, &inputs, &options, &device).unwrap();
    assert_eq!(got.len(), texts.len(), "one prediction per text");
    let pytorch = pytorch_logits();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.logits, w.logits, "text {i}: logits of classify");
        assert_eq!(g.probs, w.probs, "text {i}");
        assert_eq!(g.label_id, w.label, "text {i}");
        assert_eq!(g.label, classifier.labels()[w.label], "text {i}");
        assert_eq!(g.score, w.probs[w.label], "text {i}");
        assert_eq!(g.truncated_tokens, w.truncated_tokens, "text {i}");
        for k in 0..2 {
            let d = (g.logits[k] - pytorch[i * 2 + k]).abs();
            assert!(d <= 1e-4, "text {i} logit {k}: PyTorch differs by {d:e}");
        }
    }
    // Owned strings work as well as &str.
    assert_eq!(classifier.predict(&texts).unwrap(), got);

    // Pairs, mixed with single texts in the reference, in input order.
    let pairs = [
        ("质量很好", "物流也快"),
        (refs[0], refs[1]),
        ("太差了", "不会再买"),
    ];
    let got = classifier.predict_pairs(&pairs).unwrap();
    let inputs: Vec<(String, Option<String>)> = pairs
        .iter()
        .map(|(a, b)| (a.to_string(), Some(b.to_string())))
        .collect();
    let want = classify(&model, &tokenizer, &inputs, &options, &device).unwrap();
    assert_eq!(got.len(), pairs.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.logits, w.logits, "pair {i}");
    }
    // A pair is not the text alone.
    let single = classifier.predict(&[refs[0]]).unwrap();
    assert_ne!(single[0].logits, got[1].logits);

    // Padding to a multiple of 64 is masked: the same logits (to rounding).
    let padded = Classifier::<Flex>::load_with(
        &dir,
        &ClassifierOptions {
            pad_to_multiple_of: Some(64),
            batch_size: 5,
            ..Default::default()
        },
        &device,
    )
    .unwrap();
    for (i, (a, b)) in padded
        .predict(&refs)
        .unwrap()
        .iter()
        .zip(classifier.predict(&refs).unwrap())
        .enumerate()
    {
        for k in 0..2 {
            assert!((a.logits[k] - b.logits[k]).abs() <= 1e-4, "text {i}");
        }
    }
}

#[test]
fn top_k_is_sorted_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    minilm_classifier(&dir);
    let classifier = Classifier::<Flex>::load(&dir, &Default::default()).unwrap();
    let texts = texts();
    for p in classifier.predict(&texts).unwrap() {
        let all = p.top_k(10);
        assert_eq!(all.len(), 2, "at most every label");
        assert!(all.windows(2).all(|w| w[0].1 >= w[1].1), "{all:?}");
        assert_eq!(p.top_k(1), vec![(p.label.as_str(), p.score)]);
        assert!(p.top_k(0).is_empty());
        let mut names: Vec<&str> = all.iter().map(|(l, _)| *l).collect();
        names.sort();
        assert_eq!(names, ["neg", "pos"]);
        assert!((p.probs.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
    let p = ClassPrediction::clone(&classifier.predict(&["好"]).unwrap()[0]);
    assert!(format!("{p:?}").starts_with("ClassPrediction { label: "));
}

#[test]
fn blank_texts_missing_heads_and_bad_lengths_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    minilm_classifier(&dir);
    let device = Default::default();
    let classifier = Classifier::<Flex>::load(&dir, &device).unwrap();

    let err = classifier.predict(&["好", " \t", "差"]).unwrap_err();
    assert_eq!(
        err.downcast_ref::<EmptyTextError>(),
        Some(&EmptyTextError {
            index: 1,
            second_of_pair: false
        })
    );
    assert!(err.to_string().contains("input 1"), "{err}");
    assert!(classifier.predict(&[""]).is_err());
    let err = classifier
        .predict_pairs(&[("好", "很好"), ("好", "")])
        .unwrap_err();
    assert_eq!(
        err.downcast_ref::<EmptyTextError>(),
        Some(&EmptyTextError {
            index: 1,
            second_of_pair: true
        })
    );
    assert!(classifier.predict::<&str>(&[]).unwrap().is_empty());

    // MiniLM as published has no classification head.
    let err = Classifier::<Flex>::load(minilm_dir(), &device).unwrap_err();
    let Some(zhbert_model::ModelError::MissingHead { reason, .. }) = err.downcast_ref() else {
        panic!("not a MissingHead error: {err:#}");
    };
    assert_eq!(reason, "it has no classification head");
    assert!(
        err.to_string()
            .contains("a checkpoint without a trained classification head"),
        "{err}"
    );
    let fresh = Classifier::<Flex>::load_with(
        minilm_dir(),
        &ClassifierOptions {
            allow_fresh_head: true,
            ..Default::default()
        },
        &device,
    )
    .unwrap();
    assert!(fresh.load_report().unwrap().fresh_head);
    assert_eq!(fresh.predict(&["好"]).unwrap().len(), 1);

    let limit = classifier.config().max_position_embeddings;
    for bad in [0, 2, limit + 1] {
        let err = Classifier::<Flex>::load(&dir, &device)
            .unwrap()
            .with_max_length(bad)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("max length {bad}")) && err.contains(&limit.to_string()),
            "{err}"
        );
    }
    let short = Classifier::<Flex>::load(&dir, &device)
        .unwrap()
        .with_max_length(4)
        .unwrap();
    let p = short.predict(&["质量很好物流也快"]).unwrap();
    assert!(p[0].truncated_tokens > 0);
    assert!(Classifier::<Flex>::load(&dir, &device)
        .unwrap()
        .with_batch_size(0)
        .is_err());
}

#[test]
fn evaluate_scores_labelled_data_with_the_model_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    minilm_classifier(&dir);
    let classifier = Classifier::<Flex>::load(&dir, &Default::default()).unwrap();
    let texts = texts();
    let predicted = classifier.predict(&texts).unwrap();
    // The model's own predictions as truth, with the labels in the other
    // order: matched by name, accuracy 1.
    let data = Dataset {
        labels: vec!["pos".into(), "neg".into()],
        examples: texts
            .iter()
            .zip(&predicted)
            .map(|(t, p)| Example {
                text: t.clone(),
                text_pair: None,
                label: 1 - p.label_id,
                target: Default::default(),
            })
            .collect(),
    };
    let m = classifier.evaluate(&data).unwrap();
    assert_eq!(m.examples, texts.len());
    assert_eq!(m.accuracy, 1.0);
    let unknown = Dataset {
        labels: vec!["angry".into()],
        examples: vec![Example {
            text: "好".into(),
            text_pair: None,
            label: 0,
            target: Default::default(),
        }],
    };
    let err = classifier.evaluate(&unknown).unwrap_err().to_string();
    assert!(err.contains("\"angry\""), "{err}");
}

#[test]
fn new_from_parts_refuses_a_tokenizer_of_another_model() {
    let device = Default::default();
    let tiny = fixtures().join("tiny-bert");
    let (model, config, _) =
        load_classifier::<Flex>(&tiny, &LoadOptions::default(), &device).unwrap();
    let minilm_tokenizer = BertTokenizer::from_dir(minilm_dir()).unwrap();
    let err = Classifier::new(model, minilm_tokenizer, config, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("vocab_size is 128"), "{err}");

    // The same model from parts, with a vocabulary that fits it.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    minilm_classifier(&dir);
    let (model, config, _) =
        load_classifier::<Flex>(&dir, &LoadOptions::default(), &device).unwrap();
    let tokenizer = BertTokenizer::from_dir(&dir).unwrap();
    let from_parts = Classifier::new(model, tokenizer, config, &device).unwrap();
    assert_eq!(from_parts.model_dir(), None);
    assert!(from_parts.load_report().is_none());
    let loaded = Classifier::<Flex>::load(&dir, &device).unwrap();
    let texts = texts();
    assert_eq!(
        from_parts.predict(&texts).unwrap(),
        loaded.predict(&texts).unwrap()
    );
}
