//! The tiny fixture classifier's gradients against PyTorch's
//! (`tests/fixtures/make_fixtures.py`: `grad.<HF name>`).

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use zhbert_model::*;

use super::{fixtures, input, to_vec, Expected};

pub type AB = Autodiff<Flex>;

pub fn tiny_dir() -> std::path::PathBuf {
    fixtures().join("tiny-bert")
}

/// Collects the gradient of every float parameter with its HF name.
struct Grads<'a> {
    grads: &'a <AB as AutodiffBackend>::Gradients,
    path: Vec<String>,
    out: Vec<(String, Vec<f32>)>,
}

impl ModuleVisitor<AB> for Grads<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        let name = hf_name(&self.path.join("."));
        let grad = param
            .val()
            .grad(self.grads)
            .unwrap_or_else(|| panic!("{name} has no gradient"));
        // burn keeps linear weights as [in, out]; torch as [out, in].
        let grad = if D == 2 && !name.contains("embeddings") {
            to_vec(grad.transpose())
        } else {
            to_vec(grad)
        };
        self.out.push((name, grad));
    }
}

/// One forward and backward pass of the tiny classifier.
pub struct TinyRun {
    pub logits: Vec<f32>,
    /// The loss on the fixture's labels (one value).
    pub loss: Vec<f32>,
    /// Every parameter's gradient by HF name, in PyTorch's layout.
    pub grads: Vec<(String, Vec<f32>)>,
}

/// The tiny classifier without dropout (PyTorch ran it in eval mode), with its
/// matmuls in `precision`, on the fixture's batch repeated `times` along the
/// batch: the mean loss, and so every gradient, is that of one copy.
pub fn tiny_gradients(e: &Expected, precision: Precision, times: usize) -> TinyRun {
    let mut config = BertConfig::from_file(tiny_dir().join("config.json")).unwrap();
    config.hidden_dropout_prob = 0.0;
    config.attention_probs_dropout_prob = 0.0;
    let device = Default::default();
    let mut model = config.init_classifier::<AB>(&device);
    load_weights_file(&mut model, &tiny_dir().join("model.safetensors")).unwrap();
    let x = input::<AB>(e, &device);
    let x = BertInput {
        input_ids: x.input_ids.repeat_dim(0, times),
        token_type_ids: x.token_type_ids.map(|t| t.repeat_dim(0, times)),
        attention_mask: x.attention_mask.map(|m| m.repeat_dim(0, times)),
    };
    let logits = autocast(precision, || model.forward(x));
    let labels = e
        .int_tensor::<AB, 1>("labels", &device)
        .repeat_dim(0, times);
    let loss = classification_loss(
        logits.clone(),
        Labels::Classes(labels),
        &CrossEntropyOptions::default(),
    );
    let loss_value = to_vec(loss.clone());
    let grads = loss.backward();
    let mut visitor = Grads {
        grads: &grads,
        path: vec![],
        out: vec![],
    };
    model.visit(&mut visitor);
    TinyRun {
        logits: to_vec(logits),
        loss: loss_value,
        grads: visitor.out,
    }
}

/// `‖got − want‖ / ‖want‖`.
pub fn relative_error(got: &[f32], want: &[f32]) -> f32 {
    let diff: f32 = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f32>()
        .sqrt();
    let norm: f32 = want.iter().map(|b| b * b).sum::<f32>().sqrt();
    diff / norm.max(1e-12)
}

/// Analytically zero: adding b to every key adds q·b to a whole row of
/// scores, which softmax ignores. Both sides hold rounding noise only.
pub fn is_key_bias(name: &str) -> bool {
    name.ends_with("attention.self.key.bias")
}

/// Every parameter's gradient within `rel` (relative, in norm) of PyTorch's,
/// and one for each parameter of the fixture.
pub fn assert_gradients_match(e: &Expected, grads: Vec<(String, Vec<f32>)>, rel: f32) {
    let expected = e.names().into_iter().filter(|n| n.starts_with("grad."));
    assert_eq!(grads.len(), expected.count(), "one gradient per parameter");
    for (name, got) in grads {
        let want = e.f32(&format!("grad.{name}"));
        let norm: f32 = want.iter().map(|b| b * b).sum::<f32>().sqrt();
        if is_key_bias(&name) {
            let ours: f32 = got.iter().map(|a| a * a).sum::<f32>().sqrt();
            assert!(
                ours < 1e-5 && norm < 1e-5,
                "{name}: {ours:e} vs {norm:e}, expected ~0"
            );
            continue;
        }
        assert!(
            norm > 1e-5,
            "{name}: a near-zero reference gradient proves nothing"
        );
        let err = relative_error(&got, &want);
        assert!(err <= rel, "{name}: relative gradient error {err:e}");
    }
}
