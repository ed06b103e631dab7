//! The `zhbert` binary end to end: export a model, predict with it, and check
//! the logits against PyTorch; bad input gives one line and a non-zero exit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use burn::backend::Flex;
use zhbert_model::{load_classifier, load_weights_file, save_classifier, LoadOptions};
use zhbert_tokenizer::BertTokenizer;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn minilm_dir() -> PathBuf {
    let dir = std::env::var_os("ZHBERT_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/assets/minilm"));
    assert!(
        dir.is_dir(),
        "{} missing: run `cargo xtask assets`",
        dir.display()
    );
    dir
}

fn zhbert(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zhbert"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn f32s(path: &Path, name: &str) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// MiniLM with the classification head PyTorch drew, exported as an HF folder.
fn minilm_classifier(dir: &Path) {
    let device = Default::default();
    let options = LoadOptions {
        labels: Some(vec!["neg".into(), "pos".into()]),
        allow_fresh_head: true,
    };
    let (mut model, config, _) = load_classifier::<Flex>(&minilm_dir(), &options, &device).unwrap();
    load_weights_file(
        &mut model,
        &root().join("tests/fixtures/minilm/expected.safetensors"),
    )
    .unwrap();
    save_classifier(&model, &config, dir).unwrap();
    BertTokenizer::from_dir(minilm_dir())
        .unwrap()
        .save(dir)
        .unwrap();
}

#[test]
fn predict_on_an_exported_model_gives_pytorchs_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    minilm_classifier(&model);
    let texts: Vec<String> = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/minilm/texts.json")).unwrap(),
    )
    .unwrap();
    let input = tmp.path().join("texts.jsonl");
    let lines: Vec<String> = texts
        .iter()
        .map(|t| serde_json::json!({ "text": t }).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let output = tmp.path().join("out.jsonl");
    let run = zhbert(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--batch-size",
        "5",
        "--top-k",
        "2",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let want = f32s(
        &root().join("tests/fixtures/minilm/expected.safetensors"),
        "logits",
    );
    let got: Vec<serde_json::Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), texts.len(), "one line per input, in order");
    for (i, line) in got.iter().enumerate() {
        let logits: Vec<f32> = serde_json::from_value(line["logits"].clone()).unwrap();
        for (k, l) in logits.iter().enumerate() {
            let d = (l - want[i * 2 + k]).abs();
            assert!(
                d <= 1e-4,
                "text {i} logit {k}: {l} vs {} (diff {d:e})",
                want[i * 2 + k]
            );
        }
        let label = if want[i * 2] >= want[i * 2 + 1] {
            "neg"
        } else {
            "pos"
        };
        assert_eq!(line["label"], label);
        assert_eq!(line["top_k"].as_array().unwrap().len(), 2);
    }
}

#[test]
fn bad_input_is_one_line_and_a_non_zero_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    minilm_classifier(&model);
    let m = model.to_str().unwrap();
    let bad_utf8 = tmp.path().join("bad.txt");
    std::fs::write(&bad_utf8, b"fine\n\xc3\x28 broken\n").unwrap();
    let out = tmp.path().join("out.jsonl");
    let o = out.to_str().unwrap();
    let base = minilm_dir();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "predict",
                "--model",
                m,
                "--input",
                bad_utf8.to_str().unwrap(),
                "--output",
                o,
            ],
            "bad.txt:2: not valid UTF-8",
        ),
        (
            vec![
                "predict",
                "--model",
                m,
                "--input",
                "/nonexistent/in.txt",
                "--output",
                o,
            ],
            "/nonexistent/in.txt: No such file",
        ),
        (
            vec![
                "predict",
                "--model",
                "/nonexistent/model",
                "--input",
                "x",
                "--output",
                o,
            ],
            "/nonexistent/model: no such folder",
        ),
        (
            vec![
                "predict",
                "--model",
                m,
                "--input",
                bad_utf8.to_str().unwrap(),
                "--max-length",
                "9999",
            ],
            "--max-length 9999",
        ),
        (
            vec!["predict", "--model", m, "--input", "x", "--backend", "cuda"],
            "backend cuda is not compiled into this zhbert",
        ),
        (
            vec![
                "predict",
                "--model",
                base.to_str().unwrap(),
                "--input",
                bad_utf8.to_str().unwrap(),
            ],
            "it has no classification head",
        ),
    ];
    for (args, want) in cases {
        let run = zhbert(&args);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line, got {stderr}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(want),
            "{args:?}: {stderr}"
        );
        assert!(!out.exists(), "no output file is left behind on error");
    }
}

#[test]
fn convert_pytorch_bin_gives_the_same_tensors_as_safetensors() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    // Only the .bin and the config: the converter must read torch's pickle.
    for f in ["config.json", "pytorch_model.bin"] {
        std::fs::copy(root().join("tests/fixtures/tiny-bert").join(f), src.join(f)).unwrap();
    }
    let dst = tmp.path().join("dst");
    let run = zhbert(&[
        "convert",
        "--from",
        src.to_str().unwrap(),
        "--to",
        dst.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let read = |p: &Path| {
        let bytes = std::fs::read(p).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut v: Vec<(String, Vec<usize>, Vec<u8>)> = st
            .tensors()
            .into_iter()
            .map(|(n, t)| (n, t.shape().to_vec(), t.data().to_vec()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        read(&dst.join("model.safetensors")),
        read(&root().join("tests/fixtures/tiny-bert/model.safetensors"))
    );
}
