//! Long texts through the library: a `Classifier` with `--long-text chunks`
//! gives one prediction per text, in input order, whose logits are the mean
//! (or max) of its windows' logits computed separately; its evaluation
//! scores documents; `FineTune` trains on every window with its document's
//! label, for single-label, multi-label and regression, and the model it
//! saves loads with those settings. Tiny model of the
//! fixtures (zhbert-testkit), so it runs in seconds.

use std::path::Path;

use burn::backend::{Autodiff, Flex};
use zhbert_data::{Dataset, Example, Target};
use zhbert_testkit::tiny_char_model;
use zhbert_train::{ChunkPool, Classifier, ClassifierOptions, FineTune, LongText, LongTextOptions};

const MAX_LENGTH: usize = 16;
const STRIDE: usize = 4;
/// Text tokens of a window, and how far the next one starts.
const ROOM: usize = MAX_LENGTH - 2;
const STEP: usize = ROOM - STRIDE;

fn text(cjk: &[String], seed: usize, n: usize) -> String {
    zhbert_testkit::one_token_text(cjk, seed, n)
}

/// Short and long texts mixed: 5, 40, 14, 15, 61, 9 and 100 characters.
fn texts(cjk: &[String]) -> Vec<String> {
    [5, 40, 14, 15, 61, 9, 100]
        .iter()
        .enumerate()
        .map(|(i, &n)| text(cjk, i, n))
        .collect()
}

fn window_texts(text: &str) -> Vec<String> {
    zhbert_testkit::one_token_windows(text, ROOM, STEP)
}

fn chunks(pool: ChunkPool) -> LongTextOptions {
    LongTextOptions {
        mode: LongText::Chunks,
        stride: STRIDE,
        pool,
    }
}

fn load(dir: &Path) -> Classifier<Flex> {
    let options = ClassifierOptions {
        max_length: Some(MAX_LENGTH),
        batch_size: 4,
        ..Default::default()
    };
    Classifier::<Flex>::load_with(dir, &options, &Default::default()).unwrap()
}

fn pooled(rows: &[Vec<f32>], pool: ChunkPool) -> Vec<f32> {
    (0..rows[0].len())
        .map(|k| {
            let column = rows.iter().map(|r| r[k]);
            match pool {
                ChunkPool::Mean => column.sum::<f32>() / rows.len() as f32,
                ChunkPool::Max => column.fold(f32::MIN, f32::max),
            }
        })
        .collect()
}

#[test]
fn chunked_predictions_pool_their_windows_in_input_order() {
    let tmp = tempfile::tempdir().unwrap();
    let cjk = tiny_char_model(tmp.path());
    let texts = texts(&cjk);
    let mut classifier = load(tmp.path());
    let mut got = Vec::new();
    for pool in [ChunkPool::Mean, ChunkPool::Max] {
        classifier = classifier.with_long_text(chunks(pool)).unwrap();
        got.push(classifier.predict(&texts).unwrap());
    }
    // The reference: each window's text classified on its own, truncation off.
    let plain = classifier
        .with_long_text(LongTextOptions::default())
        .unwrap();
    for (i, t) in texts.iter().enumerate() {
        let windows = window_texts(t);
        let rows: Vec<Vec<f32>> = plain
            .predict(&windows)
            .unwrap()
            .into_iter()
            .map(|p| p.logits)
            .collect();
        for (p, pool) in [ChunkPool::Mean, ChunkPool::Max].into_iter().enumerate() {
            let prediction = &got[p][i];
            assert_eq!(prediction.windows, windows.len(), "text {i}");
            assert_eq!(prediction.truncated_tokens, 0);
            let want = pooled(&rows, pool);
            for (g, w) in prediction.logits.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-5, "text {i} {pool}: {g} against {w}");
            }
        }
    }
    assert_eq!(got[0].len(), texts.len(), "one prediction per text");
    assert!(got[0].iter().filter(|p| p.windows > 1).count() >= 4);
    // Max and mean differ where there are several windows.
    assert_ne!(got[0][6].logits, got[1][6].logits);
}

#[test]
fn chunked_evaluation_scores_documents() {
    let tmp = tempfile::tempdir().unwrap();
    let cjk = tiny_char_model(tmp.path());
    let classifier = load(tmp.path())
        .with_long_text(chunks(ChunkPool::Mean))
        .unwrap();
    let labels = classifier.labels().to_vec();
    let data = Dataset {
        examples: texts(&cjk)
            .into_iter()
            .enumerate()
            .map(|(i, text)| Example {
                text,
                text_pair: None,
                label: i % labels.len(),
                target: Target::Class,
            })
            .collect(),
        labels: labels.clone(),
    };
    let m = classifier.evaluate(&data).unwrap();
    assert_eq!(m.examples, data.examples.len(), "one row per document");
    let texts: Vec<&str> = data.examples.iter().map(|e| e.text.as_str()).collect();
    let predictions = classifier.predict(&texts).unwrap();
    let (mut right, mut loss) = (0, 0.0);
    for (p, e) in predictions.iter().zip(&data.examples) {
        right += usize::from(p.label_id == e.label);
        loss -= (p.probs[e.label] as f64).ln();
    }
    assert_eq!(m.accuracy, right as f64 / texts.len() as f64);
    let loss = loss / texts.len() as f64;
    assert!((m.loss - loss).abs() < 1e-5, "{} against {loss}", m.loss);
}

/// Train and dev data of `task`: each text with its label, multi-hot labels or value.
fn data(cjk: &[String], target: impl Fn(usize) -> (usize, Target), labels: &[&str]) -> Dataset {
    Dataset {
        examples: [5, 40, 14, 61, 9, 33, 27, 50]
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let (label, target) = target(i);
                Example {
                    text: text(cjk, i + 20, n),
                    text_pair: None,
                    label,
                    target,
                }
            })
            .collect(),
        labels: labels.iter().map(|l| l.to_string()).collect(),
    }
}

#[test]
fn fine_tune_trains_on_every_window_for_each_task() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    let cjk = tiny_char_model(&model);
    let tasks = [
        data(&cjk, |i| (i % 2, Target::Class), &["neg", "pos"]),
        data(
            &cjk,
            |i| {
                (
                    0,
                    Target::Labels([0, 1].into_iter().filter(|b| (i >> b) & 1 == 1).collect()),
                )
            },
            &["x", "y"],
        ),
        data(&cjk, |i| (0, Target::Value(i as f32 * 0.5)), &["score"]),
    ];
    for (t, train) in tasks.into_iter().enumerate() {
        let windows: usize = train
            .examples
            .iter()
            .map(|e| window_texts(&e.text).len())
            .sum();
        let documents = train.examples.len();
        let out = tmp.path().join(format!("run-{t}"));
        let summary = FineTune::new(model.to_string_lossy())
            .train_data(train.clone())
            .dev_data(train)
            .configure(|c| {
                c.epochs = 1;
                c.batch_size = 4;
                c.max_length = MAX_LENGTH;
                c.long_text = LongText::Chunks;
                c.stride = STRIDE;
                c.chunk_pool = ChunkPool::Max;
            })
            .output(&out)
            .fit::<Autodiff<Flex>>(&Default::default())
            .unwrap();
        assert_eq!(
            summary.train_examples, windows,
            "task {t}: one example per window"
        );
        assert!(windows > documents + 5);
        assert_eq!(summary.steps, windows.div_ceil(4), "task {t}");
        let dev = summary.dev.unwrap();
        assert_eq!(dev.examples, documents, "task {t}: scored per document");
        // The saved model classifies long texts as it was trained, with no
        // options: windows of MAX_LENGTH tokens sharing STRIDE, max-pooled.
        let classifier = Classifier::<Flex>::load(&out, &Default::default()).unwrap();
        assert_eq!(*classifier.long_text(), chunks(ChunkPool::Max), "task {t}");
        assert_eq!(classifier.max_length(), MAX_LENGTH, "task {t}");
        let long = text(&cjk, 3, 45);
        let p = classifier.predict(&[&long]).unwrap();
        assert_eq!(p[0].windows, window_texts(&long).len(), "task {t}");
    }
}

#[test]
fn chunks_that_cannot_move_on_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_char_model(tmp.path());
    let e = load(tmp.path())
        .with_long_text(LongTextOptions {
            mode: LongText::Chunks,
            stride: MAX_LENGTH - 2,
            pool: ChunkPool::Mean,
        })
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("stride 14: must be less than the max length 16"),
        "{e}"
    );
    let config = zhbert_train::TrainConfig {
        long_text: LongText::Chunks,
        stride: 126,
        ..Default::default()
    };
    assert_eq!(config.validate().unwrap_err().option, "stride");
}
