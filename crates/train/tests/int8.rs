//! `Classifier` with int8 linear layers (`ClassifierOptions::quantize`,
//! `Classifier::quantize`): the option reaches the model, and both ways of
//! asking give the same classifier.

use burn::backend::Flex;
use zhbert_testkit::tiny_char_model;
use zhbert_train::{Classifier, ClassifierOptions, Quantize};

#[test]
fn int8_is_a_load_option_and_a_method_of_classifier() {
    let dir = tempfile::tempdir().unwrap();
    let chars = tiny_char_model(dir.path());
    let texts: Vec<String> = (0..24)
        .map(|i| {
            chars
                .iter()
                .cycle()
                .skip(i * 3)
                .take(5 + i)
                .cloned()
                .collect()
        })
        .collect();
    let device = Default::default();
    let fp32 = Classifier::<Flex>::load(dir.path(), &device).unwrap();
    let options = ClassifierOptions {
        quantize: Some(Quantize::Int8),
        ..Default::default()
    };
    let int8 = Classifier::<Flex>::load_with(dir.path(), &options, &device).unwrap();
    assert_eq!(fp32.quantization(), None);
    assert_eq!(int8.quantization(), Some(Quantize::Int8));
    let (a, b) = (fp32.predict(&texts).unwrap(), int8.predict(&texts).unwrap());
    // The int8 path ran; how close it is to fp32 is zhbert-model's test
    // (tests/int8.rs, against PyTorch's quantize_dynamic on this same model).
    assert!(a.iter().zip(&b).any(|(p, q)| p.logits != q.logits));
    for (p, q) in a.iter().zip(&b) {
        assert!(q.logits.iter().all(|v| v.is_finite()));
        assert_eq!(p.logits.len(), q.logits.len());
    }
    // The same, quantized after loading.
    let later = Classifier::<Flex>::load(dir.path(), &device)
        .unwrap()
        .quantize(Quantize::Int8)
        .unwrap();
    let c = later.predict(&texts).unwrap();
    for (q, r) in b.iter().zip(&c) {
        assert_eq!(q.logits, r.logits);
    }
}
