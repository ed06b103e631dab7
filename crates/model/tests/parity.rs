//! The model against PyTorch `transformers` on the fixtures of
//! `tests/fixtures/make_fixtures.py`: hidden states, pooled output, logits,
//! losses and every parameter's gradient.

mod common;

use burn::backend::Flex;
use burn::tensor::{Int, Tensor};
use common::grads::*;
use common::*;
use zhbert_model::*;

type B = Flex;

/// Loads the tiny classifier from one of its two weight files.
fn tiny_from(file: &str, config: BertConfig) -> (BertForSequenceClassification<B>, LoadReport) {
    let device = Default::default();
    let mut model = config.init_classifier::<B>(&device);
    let report = load_weights_file(&mut model, &tiny_dir().join(file)).unwrap();
    (model, report)
}

#[test]
fn tiny_bert_forward_matches_pytorch_from_both_formats() {
    let e = Expected::open(tiny_dir().join("expected.safetensors"));
    let config = BertConfig::from_file(tiny_dir().join("config.json")).unwrap();
    let device = Default::default();
    for file in ["model.safetensors", "pytorch_model.bin"] {
        let (model, report) = tiny_from(file, config.clone());
        assert_eq!(report.loaded.len(), 41, "{file}: {report}");
        assert!(
            report.missing.is_empty() && report.unexpected.is_empty(),
            "{report:?}"
        );
        let out = model.bert.forward(input(&e, &device));
        assert_close(
            &format!("{file} last_hidden_state"),
            &to_vec(out.last_hidden_state),
            &e.f32("last_hidden_state"),
            1e-4,
        );
        assert_close(
            &format!("{file} pooler_output"),
            &to_vec(out.pooler_output.unwrap()),
            &e.f32("pooler_output"),
            1e-4,
        );
        let logits = model.forward(input(&e, &device));
        assert_close(
            &format!("{file} logits"),
            &to_vec(logits.clone()),
            &e.f32("logits"),
            1e-4,
        );

        let loss = classification_loss(
            logits.clone(),
            Labels::Classes(e.int_tensor("labels", &device)),
            &CrossEntropyOptions::default(),
        );
        assert_close("loss", &to_vec(loss), &e.f32("loss"), 1e-5);
        let multi = classification_loss(
            logits,
            Labels::MultiHot(e.float_tensor("multi_labels", &device)),
            &CrossEntropyOptions::default(),
        );
        assert_close(
            "loss_multi_label",
            &to_vec(multi),
            &e.f32("loss_multi_label"),
            1e-5,
        );
    }
}

#[test]
fn activations_gelu_new_and_relu_match_pytorch() {
    let e = Expected::open(tiny_dir().join("expected.safetensors"));
    let device = Default::default();
    let gelu = e.f32("logits");
    for (act, key) in [
        (HiddenAct::GeluNew, "logits.gelu_new"),
        (HiddenAct::Relu, "logits.relu"),
    ] {
        let mut config = BertConfig::from_file(tiny_dir().join("config.json")).unwrap();
        config.hidden_act = act;
        let (model, _) = tiny_from("model.safetensors", config);
        let want = e.f32(key);
        let got = to_vec(model.forward(input(&e, &device)));
        // gelu and gelu_new differ by ~1e-4 here: the bound must be well below
        // that distance or the test could not tell them apart.
        let tol = 1e-5;
        assert!(
            max_abs_diff(&gelu, &want) > 4.0 * tol,
            "{key}: reference too close to gelu to tell"
        );
        assert_close(key, &got, &want, tol);
    }
}

#[test]
fn gradients_of_every_parameter_match_pytorch() {
    let e = Expected::open(tiny_dir().join("expected.safetensors"));
    let TinyRun { loss, grads, .. } = tiny_gradients(&e, Precision::Fp32, 1);
    assert_close("loss (autodiff)", &loss, &e.f32("loss"), 1e-5);
    assert_gradients_match(&e, grads, 1e-4);
}

/// zhbert's `autocast` against PyTorch's `torch.autocast` on the same model
/// (`tests/fixtures/make_autocast.py`). The two cannot round at exactly the
/// same points, so each is measured by its distance from the fp32 reference:
/// zhbert's must be of the size PyTorch's is (within 3x), and not close to
/// zero, which would mean the half type was never used.
#[test]
fn autocast_errors_are_those_of_pytorch_autocast() {
    let e = Expected::open(tiny_dir().join("expected.safetensors"));
    let torch = Expected::open(tiny_dir().join("autocast.safetensors"));
    let fp32_error = max_abs_diff(
        &tiny_gradients(&e, Precision::Fp32, 1).logits,
        &e.f32("logits"),
    );
    for precision in [Precision::Bf16, Precision::F16] {
        let TinyRun {
            logits,
            loss,
            grads,
        } = tiny_gradients(&e, precision, 1);
        let ours = max_abs_diff(&logits, &e.f32("logits"));
        let theirs = max_abs_diff(&torch.f32(&format!("logits.{precision}")), &e.f32("logits"));
        eprintln!("{precision}: logits off fp32 by {ours:e} (PyTorch autocast {theirs:e}, zhbert fp32 {fp32_error:e})");
        assert!(
            ours > 10.0 * fp32_error && ours > theirs / 3.0,
            "{precision}: logits as exact as fp32 ({ours:e}): no half-precision matmul ran"
        );
        assert!(
            ours <= 3.0 * theirs,
            "{precision}: logits off by {ours:e}, PyTorch's autocast by {theirs:e}"
        );
        let loss_ours = (loss[0] - e.f32("loss")[0]).abs();
        let loss_theirs = (torch.f32(&format!("loss.{precision}"))[0] - e.f32("loss")[0]).abs();
        assert!(
            loss_ours <= 3.0 * loss_theirs.max(1e-4),
            "{precision}: loss off by {loss_ours:e}, PyTorch's by {loss_theirs:e}"
        );
        for (name, got) in grads {
            if is_key_bias(&name) {
                continue;
            }
            let want = e.f32(&format!("grad.{name}"));
            let ours = relative_error(&got, &want);
            let theirs = relative_error(&torch.f32(&format!("grad.{precision}.{name}")), &want);
            eprintln!("  {name}: gradient error {ours:.2e} (PyTorch {theirs:.2e})");
            assert!(
                ours <= 3.0 * theirs.max(1e-3),
                "{precision} {name}: gradient off by {ours:e} relative, PyTorch's autocast by {theirs:e}"
            );
        }
    }
}

#[test]
fn masked_lm_matches_pytorch_from_both_formats() {
    let dir = fixtures().join("tiny-bert-mlm");
    let e = Expected::open(dir.join("expected.safetensors"));
    let config = BertConfig::from_file(dir.join("config.json")).unwrap();
    let device = Default::default();
    for file in ["model.safetensors", "pytorch_model.bin"] {
        let mut model = config.init_masked_lm::<B>(&device);
        let report = load_weights_file(&mut model, &dir.join(file)).unwrap();
        assert!(
            report.missing.is_empty() && report.unexpected.is_empty(),
            "{file}: {report:?}"
        );
        let logits = model.forward(input(&e, &device));
        assert_close(
            &format!("{file} mlm_logits"),
            &to_vec(logits.clone()),
            &e.f32("mlm_logits"),
            1e-4,
        );
        let loss = model.loss(logits, e.int_tensor("mlm_labels", &device));
        assert_close("mlm_loss", &to_vec(loss), &e.f32("mlm_loss"), 1e-5);
    }
    // The folder loader reads the same thing.
    let (model, _, _) = load_masked_lm::<B>(&dir, &device).unwrap();
    let logits = model.forward(input(&e, &device));
    assert_close(
        "load_masked_lm",
        &to_vec(logits.clone()),
        &e.f32("mlm_logits"),
        1e-4,
    );
    // Logits at the labelled positions only (pretraining's path) are PyTorch's rows.
    let vocab = logits.dims()[2];
    let labels = to_vec(e.int_tensor::<B, 2>("mlm_labels", &device).float());
    let positions: Vec<i64> = (0..labels.len() as i64)
        .filter(|&i| labels[i as usize] != -100.0)
        .collect();
    assert!(!positions.is_empty());
    let expected: Vec<f32> = positions
        .iter()
        .flat_map(|&p| e.f32("mlm_logits")[p as usize * vocab..(p as usize + 1) * vocab].to_vec())
        .collect();
    let at = model.forward_at(
        input(&e, &device),
        Tensor::<B, 1, Int>::from_data(positions.as_slice(), &device),
    );
    assert_close("forward_at", &to_vec(at), &expected, 1e-4);
}

#[test]
fn minilm_hidden_states_and_logits_match_pytorch() {
    let dir = minilm_dir();
    let e = Expected::open(fixtures().join("minilm/expected.safetensors"));
    let device = Default::default();
    let (base, _, report) = load_base::<B>(&dir, &device).unwrap();
    assert!(
        report.missing.is_empty() && report.unexpected.is_empty(),
        "{report:?}"
    );
    let out = base.forward(input(&e, &device));
    assert_close(
        "minilm last_hidden_state",
        &to_vec(out.last_hidden_state),
        &e.f32("last_hidden_state"),
        1e-4,
    );
    assert_close(
        "minilm pooler_output",
        &to_vec(out.pooler_output.unwrap()),
        &e.f32("pooler_output"),
        1e-4,
    );

    // A base checkpoint for classification: body loaded, head fresh ...
    let options = LoadOptions {
        labels: Some(vec!["a".into(), "b".into()]),
        allow_fresh_head: true,
    };
    let (mut model, config, report) = load_classifier::<B>(&dir, &options, &device).unwrap();
    assert!(report.fresh_head);
    let mut missing = report.missing.clone();
    missing.sort();
    assert_eq!(missing, vec!["classifier.bias", "classifier.weight"]);
    assert_eq!(config.labels(), vec!["a", "b"]);
    // ... then the head PyTorch drew, from the fixture: same logits.
    load_weights_file(&mut model, &fixtures().join("minilm/expected.safetensors")).unwrap();
    let logits = model.forward(input(&e, &device));
    assert_close("minilm logits", &to_vec(logits), &e.f32("logits"), 1e-4);

    // Without permission, a missing head is an error, not a silent random head.
    let err = load_classifier::<B>(&dir, &LoadOptions::default(), &device).unwrap_err();
    assert!(err.to_string().contains("no classification head"), "{err}");
}

/// The tensors of a safetensors file as (dtype, shape, bytes), by name.
fn tensors(
    path: &std::path::Path,
) -> std::collections::BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            (
                name,
                (
                    format!("{:?}", view.dtype()),
                    view.shape().to_vec(),
                    view.data().to_vec(),
                ),
            )
        })
        .collect()
}

#[test]
fn export_round_trip_is_bit_exact_for_both_source_formats() {
    let device = Default::default();
    let original = tensors(&tiny_dir().join("model.safetensors"));
    for file in ["model.safetensors", "pytorch_model.bin"] {
        let (model, _) = tiny_from(
            file,
            BertConfig::from_file(tiny_dir().join("config.json")).unwrap(),
        );
        let out = tempfile::tempdir().unwrap();
        let config = BertConfig::from_file(tiny_dir().join("config.json")).unwrap();
        save_classifier(&model, &config, out.path()).unwrap();
        // Same HF names, dtypes, shapes and bytes as the file transformers wrote.
        assert_eq!(
            tensors(&out.path().join("model.safetensors")),
            original,
            "from {file}"
        );
        // And it loads back through the folder loader to the same outputs.
        let (back, back_config, report) =
            load_classifier::<B>(out.path(), &LoadOptions::default(), &device).unwrap();
        assert!(!report.fresh_head && report.missing.is_empty() && report.unexpected.is_empty());
        assert_eq!(back_config.labels(), config.labels());
        let e = Expected::open(tiny_dir().join("expected.safetensors"));
        assert_eq!(
            to_vec(back.forward(input(&e, &device))),
            to_vec(model.forward(input(&e, &device)))
        );
    }
}

#[test]
fn checkpoints_that_do_not_fit_are_clear_errors() {
    let device = Default::default();
    // A config whose hidden size disagrees with the weights.
    let dir = tempfile::tempdir().unwrap();
    let mut config = BertConfig::from_file(tiny_dir().join("config.json")).unwrap();
    config.intermediate_size = 48;
    config
        .save(
            dir.path().join("config.json"),
            "BertForSequenceClassification",
        )
        .unwrap();
    std::fs::copy(
        tiny_dir().join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let err = load_classifier::<B>(dir.path(), &LoadOptions::default(), &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tensor bert.encoder.layer.0.intermediate.dense.weight has shape [64, 32] in the checkpoint but the config needs [48, 32]"),
        "{err}"
    );
    // A different label count: an error for prediction, a fresh head when allowed.
    let labels: Vec<String> = ["a", "b"].map(String::from).to_vec();
    let options = LoadOptions {
        labels: Some(labels),
        allow_fresh_head: false,
    };
    let err = load_classifier::<B>(&tiny_dir(), &options, &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("classifier.weight has shape [3, 32], the labels need [2, 32]"),
        "{err}"
    );
    let options = LoadOptions {
        allow_fresh_head: true,
        ..options
    };
    let (model, _, report) = load_classifier::<B>(&tiny_dir(), &options, &device).unwrap();
    assert!(report.fresh_head);
    assert_eq!(model.num_labels(), 2);
    // No weights at all; a truncated file.
    let empty = tempfile::tempdir().unwrap();
    std::fs::copy(
        tiny_dir().join("config.json"),
        empty.path().join("config.json"),
    )
    .unwrap();
    let err = load_classifier::<B>(empty.path(), &LoadOptions::default(), &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no model.safetensors or pytorch_model.bin"),
        "{err}"
    );
    let bytes = std::fs::read(tiny_dir().join("model.safetensors")).unwrap();
    std::fs::write(
        empty.path().join("model.safetensors"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    let err = load_classifier::<B>(empty.path(), &LoadOptions::default(), &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.safetensors: cannot read checkpoint"),
        "{err}"
    );
}

/// bert-base-chinese's shape (vocab 21128, 12 layers, hidden 768), random weights:
/// too big for a fixture, so run by hand after
/// `python3 tests/fixtures/make_fixtures.py --big /tmp/big-bert`:
/// `ZHBERT_BIG_DIR=/tmp/big-bert cargo test --release -p zhbert-model -- --ignored --nocapture`.
#[test]
#[ignore = "needs the output of make_fixtures.py --big (400 MB)"]
fn bert_base_chinese_shape_matches_pytorch() {
    let dir =
        std::path::PathBuf::from(std::env::var("ZHBERT_BIG_DIR").expect("set ZHBERT_BIG_DIR"));
    let e = Expected::open(dir.join("expected.safetensors"));
    let device = Default::default();
    let options = LoadOptions::default();
    let (model, config, report) = load_classifier::<B>(&dir, &options, &device).unwrap();
    assert_eq!(
        (
            config.vocab_size,
            config.num_hidden_layers,
            config.hidden_size
        ),
        (21128, 12, 768)
    );
    assert!(report.missing.is_empty() && !report.fresh_head, "{report}");
    let out = model.bert.forward(input(&e, &device));
    assert_close(
        "big last_hidden_state",
        &to_vec(out.last_hidden_state),
        &e.f32("last_hidden_state"),
        1e-4,
    );
    assert_close(
        "big pooler_output",
        &to_vec(out.pooler_output.unwrap()),
        &e.f32("pooler_output"),
        1e-4,
    );
    assert_close(
        "big logits",
        &to_vec(model.forward(input(&e, &device))),
        &e.f32("logits"),
        1e-4,
    );
}
