//! One model, every CPU backend: the same checkpoint and inputs give the same
//! outputs on Flex and ndarray (each also checked against PyTorch in parity.rs).

mod common;

use burn::backend::{Flex, NdArray};
use burn::tensor::backend::Backend;
use common::*;
use zhbert_model::*;

fn logits<B: Backend>(dir: &std::path::Path, e: &Expected, options: &LoadOptions) -> Vec<f32> {
    let device = Default::default();
    let (mut model, _, _) = load_classifier::<B>(dir, options, &device).unwrap();
    if options.allow_fresh_head {
        // MiniLM has no head: use the one PyTorch drew, on both backends.
        load_weights_file(&mut model, &fixtures().join("minilm/expected.safetensors")).unwrap();
    }
    let input = BertInput {
        input_ids: e.int_tensor("input_ids", &device),
        token_type_ids: Some(e.int_tensor("token_type_ids", &device)),
        attention_mask: Some(e.int_tensor("attention_mask", &device)),
    };
    to_vec(model.forward(input))
}

#[test]
fn flex_and_ndarray_agree_within_1e_4() {
    let tiny = fixtures().join("tiny-bert");
    let e = Expected::open(tiny.join("expected.safetensors"));
    let options = LoadOptions::default();
    let (flex, nd) = (
        logits::<Flex>(&tiny, &e, &options),
        logits::<NdArray>(&tiny, &e, &options),
    );
    assert_close("tiny: ndarray vs flex", &nd, &flex, 1e-4);
    assert_close("tiny: ndarray vs pytorch", &nd, &e.f32("logits"), 1e-4);

    let e = Expected::open(fixtures().join("minilm/expected.safetensors"));
    let options = LoadOptions {
        labels: Some(vec!["a".into(), "b".into()]),
        allow_fresh_head: true,
    };
    let (flex, nd) = (
        logits::<Flex>(&minilm_dir(), &e, &options),
        logits::<NdArray>(&minilm_dir(), &e, &options),
    );
    assert_close("minilm: ndarray vs flex", &nd, &flex, 1e-4);
    assert_close("minilm: ndarray vs pytorch", &nd, &e.f32("logits"), 1e-4);
}
