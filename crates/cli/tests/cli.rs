//! The `zhbert` binary end to end: export a model, predict with it, and check
//! the logits against PyTorch; bad input gives one line and a non-zero exit.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{zhbert, zhbert_ok};

use burn::backend::Flex;
use zhbert_model::{load_classifier, load_weights_file, save_classifier, LoadOptions};
use zhbert_testkit::{fixtures, minilm_dir, tiny_char_model};
use zhbert_tokenizer::BertTokenizer;

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
    load_weights_file(&mut model, &fixtures().join("minilm/expected.safetensors")).unwrap();
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
        &std::fs::read_to_string(fixtures().join("minilm/texts.json")).unwrap(),
    )
    .unwrap();
    let input = tmp.path().join("texts.jsonl");
    let lines: Vec<String> = texts
        .iter()
        .map(|t| serde_json::json!({ "text": t }).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let want = f32s(&fixtures().join("minilm/expected.safetensors"), "logits");
    // Padded to the longest text of each batch, and to a multiple of 64 tokens
    // (the padding is masked: PyTorch's logits all the same).
    for pad in [None, Some("64")] {
        let output = tmp.path().join("out.jsonl");
        let mut args = vec![
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
        ];
        if let Some(multiple) = pad {
            args.extend(["--pad-to-multiple-of", multiple]);
        }
        zhbert_ok(&args);
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
                    "padding {pad:?}, text {i} logit {k}: {l} vs {} (diff {d:e})",
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
}

#[test]
fn bad_input_is_one_line_and_a_non_zero_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    minilm_classifier(&model);
    let m = model.to_str().unwrap();
    let bad_utf8 = tmp.path().join("bad.txt");
    std::fs::write(&bad_utf8, b"fine\n\xc3\x28 broken\n").unwrap();
    let one_label = tmp.path().join("one.tsv");
    std::fs::write(&one_label, "text\tlabel\n好\tpos\n很好\tpos\n").unwrap();
    let out = tmp.path().join("out.jsonl");
    let o = out.to_str().unwrap();
    let trained = tmp.path().join("trained");
    let t = trained.to_str().unwrap();
    let blank_line = tmp.path().join("blank.txt");
    std::fs::write(&blank_line, "好\n  \n差\n").unwrap();
    let two_labels = tmp.path().join("two.tsv");
    std::fs::write(&two_labels, "text\tlabel\n好\tpos\n差\tneg\n").unwrap();
    let two = two_labels.to_str().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let train = |extra: &[&'static str]| {
        let mut args = vec!["train", "--train", two, "--model", m, "--output", t];
        args.extend(extra);
        args
    };
    let base = minilm_dir();
    let cases: Vec<(Vec<&str>, &str)> =
        vec![
        (
            vec![
                "predict",
                "--model",
                m,
                "--input",
                blank_line.to_str().unwrap(),
                "--output",
                o,
            ],
            "blank.txt:2: the text is empty or only whitespace",
        ),
        (
            vec!["predict", "--model", m, "--text", "好", "--text", ""],
            "--text number 2: the text is empty or only whitespace",
        ),
        (
            train(&["--split", "0.9"]),
            "split fractions dev 0.9 + test 0.9 leave no training set",
        ),
        (train(&["--lr", "-1"]), "--lr -1: a learning rate in [0, 1]"),
        (train(&["--learning-rate=1e9"]), "--lr 1000000000: a learning rate in [0, 1]"),
        (
            train(&["--weight-decay", "-3"]),
            "--weight-decay -3: in [0, 1]",
        ),
        (
            train(&["--lr", "nan"]),
            "--lr NaN: a learning rate in [0, 1]",
        ),
        (
            vec!["train", "--train", tmp.path().to_str().unwrap(), "--model", m, "--output", t],
            "is a folder; give a data file",
        ),
        (
            vec!["convert", "--from", empty.to_str().unwrap(), "--to", t],
            "config.json: No such file",
        ),
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
            "bad.txt:2: the line is not valid UTF-8",
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
        (
            vec![
                "train",
                "--train",
                one_label.to_str().unwrap(),
                "--model",
                m,
                "--output",
                trained.to_str().unwrap(),
            ],
            "one.tsv: every example has the label \"pos\"; a classifier needs at least two labels",
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
        assert!(
            lines[0].matches("(os error").count() <= 1,
            "{args:?}: a cause printed twice: {stderr}"
        );
        assert!(!out.exists(), "no output file is left behind on error");
        assert!(!trained.exists(), "no model folder is left behind on error");
    }
}

/// Flags clap rejects stop before anything is read: its own exit code (2)
/// and message.
#[test]
fn top_k_zero_is_refused() {
    let run = zhbert(&["predict", "--model", "m", "--input", "x", "--top-k", "0"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("error: invalid value '0' for '--top-k <TOP_K>': must be at least 1"),
        "{stderr}"
    );
}

#[test]
fn convert_pytorch_bin_gives_the_same_tensors_as_safetensors() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    // Only the .bin and the config: the converter must read torch's pickle.
    for f in ["config.json", "pytorch_model.bin"] {
        std::fs::copy(fixtures().join("tiny-bert").join(f), src.join(f)).unwrap();
    }
    let dst = tmp.path().join("dst");
    zhbert_ok(&[
        "convert",
        "--from",
        src.to_str().unwrap(),
        "--to",
        dst.to_str().unwrap(),
    ]);
    assert_eq!(
        tensors_of(&dst.join("model.safetensors")),
        tensors_of(&fixtures().join("tiny-bert/model.safetensors"))
    );
}

/// The tiny random BERT of the fixtures with a 128-entry character vocabulary,
/// so that training runs take seconds, and 400 labelled texts from its characters.
fn tiny_model_and_data(dir: &Path) -> (PathBuf, PathBuf) {
    let model = dir.join("tiny");
    let chars = tiny_char_model(&model);
    let labels = ["negative", "neutral", "positive"];
    let mut csv = String::from("text,label\n");
    for i in 0..400 {
        // Two leading characters spell `i`, so no two texts are the same.
        let n = chars.len();
        let mut text = format!("{}{}", chars[i % n], chars[(i / n) % n]);
        text.extend((0..(2 + i % 9)).map(|j| chars[(i * 13 + j * 7) % n].as_str()));
        csv.push_str(&format!("{text},{}\n", labels[(i / 3 + i) % 3]));
    }
    let data = dir.join("train.csv");
    std::fs::write(&data, csv).unwrap();
    (model, data)
}

fn train_args<'a>(model: &'a str, data: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--model",
        model,
        "--train",
        data,
        "--output",
        out,
        "--epochs",
        "3",
        "--batch-size",
        "4",
        "--max-length",
        "24",
        "--lr",
        "1e-3",
        "--save-every",
        "1",
        "--keep-checkpoints",
        "3",
        "--eval-every",
        "40",
        "--log-every",
        "20",
    ]
}

#[test]
fn sigkill_at_any_moment_loses_nothing_but_the_last_steps() {
    killed_and_resumed_runs_end_where_the_straight_run_does(&[]);
}

/// The same with the training file streamed: resuming replays the epoch's
/// shuffle buffer up to the checkpoint's batch.
#[test]
fn sigkill_while_streaming_loses_nothing_but_the_last_steps() {
    killed_and_resumed_runs_end_where_the_straight_run_does(&[
        "--streaming",
        "--shuffle-buffer",
        "50",
    ]);
}

fn killed_and_resumed_runs_end_where_the_straight_run_does(extra: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = tiny_model_and_data(tmp.path());
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    let train_args = |m, d, out| {
        let mut args = train_args(m, d, out);
        if !extra.is_empty() {
            args.extend(["--dev", d]);
            args.extend(extra);
        }
        args
    };
    let straight = tmp.path().join("straight");
    let started = std::time::Instant::now();
    zhbert_ok(&train_args(m, d, straight.to_str().unwrap()));
    let took = started.elapsed().as_millis() as u64;

    let killed = tmp.path().join("killed");
    let out = killed.to_str().unwrap();
    let mut kills = 0;
    // Kill at varied moments, each a fraction of the uninterrupted run's time.
    for percent in [30u64, 20, 35, 25, 40, 30, 45, 60, 80, 100, 150, 300] {
        let delay_ms = took * percent / 100;
        let mut args = train_args(m, d, out);
        args.push("--resume");
        let mut child = Command::new(env!("CARGO_BIN_EXE_zhbert"))
            .args(&args)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "a resumed run failed: {status}");
            break;
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        // Killed, or finished in between; never failed on its own.
        assert!(
            status.success() || std::os::unix::process::ExitStatusExt::signal(&status) == Some(9),
            "a resumed run failed: {status}"
        );
        kills += 1;
        // Every checkpoint that is visible is complete and readable.
        for entry in std::fs::read_dir(killed.join("checkpoints"))
            .into_iter()
            .flatten()
        {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            if name.starts_with("checkpoint-") {
                let state: serde_json::Value = serde_json::from_str(
                    &std::fs::read_to_string(path.join("trainer_state.json")).unwrap(),
                )
                .unwrap();
                assert!(state["global_step"].as_u64().is_some());
                f32s(&path.join("model.safetensors"), "classifier.weight");
                f32s(
                    &path.join("optimizer.safetensors"),
                    "exp_avg.classifier.weight",
                );
            }
        }
    }
    assert!(
        kills >= 2,
        "the run finished before it could be killed twice"
    );
    let mut args = train_args(m, d, out);
    args.push("--resume");
    zhbert_ok(&args);
    // Killed and resumed as often as it took, it ends exactly where the straight
    // run did: the same last step, every weight and AdamW moment of its
    // checkpoint bit for bit, and the same kept model.
    let last = |run: &Path| {
        let mut steps: Vec<u64> = std::fs::read_dir(run.join("checkpoints"))
            .unwrap()
            .filter_map(|e| {
                e.unwrap()
                    .file_name()
                    .to_str()?
                    .strip_prefix("checkpoint-")?
                    .parse()
                    .ok()
            })
            .collect();
        steps.sort();
        *steps.last().unwrap()
    };
    assert_eq!(
        last(&killed),
        last(&straight),
        "last step after {kills} kills"
    );
    let checkpoint = |run: &Path| run.join(format!("checkpoints/checkpoint-{}", last(run)));
    for file in ["model.safetensors", "optimizer.safetensors"] {
        let (k, s) = (
            tensors_of(&checkpoint(&killed).join(file)),
            tensors_of(&checkpoint(&straight).join(file)),
        );
        assert!(k.len() > 10, "{file}: {} tensors", k.len());
        assert!(k == s, "{file} of the last checkpoint after {kills} kills");
    }
    assert!(
        tensors_of(&killed.join("model.safetensors"))
            == tensors_of(&straight.join("model.safetensors")),
        "the kept model after {kills} kills"
    );
}

/// Every tensor of a safetensors file: name, shape and bytes, by name.
fn tensors_of(path: &Path) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.shape().to_vec(), t.data().to_vec()))
        .collect();
    v.sort();
    v
}

#[test]
fn train_eval_predict_on_your_own_csv_and_toml_config() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = tiny_model_and_data(tmp.path());
    let out = tmp.path().join("out");
    let config = tmp.path().join("run.toml");
    std::fs::write(
        &config,
        format!(
            "model = {:?}\ntrain = {:?}\noutput = {:?}\nepochs = 1\nbatch_size = 8\nmax_length = 24\nlr = 1e-3\nwarmup = 0.1\nlr_scheduler = \"cosine\"\nlog_every = 1\nclass_weights = \"auto\"\nlabel_smoothing = 0.1\npatience = 2\nmetric = \"macro_f1\"\n",
            model, data, out
        ),
    )
    .unwrap();
    // Flags win over the file: 2 epochs, not 1.
    let run = zhbert_ok(&[
        "train",
        "--config",
        config.to_str().unwrap(),
        "--epochs",
        "2",
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("test accuracy"), "{stdout}");
    // Resuming the finished run reports it: the same lines, nothing rewritten.
    let files = ["eval.json", "metrics.jsonl", "model.safetensors"];
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(out.join(f)).unwrap())
        .collect();
    let again = zhbert_ok(&[
        "train",
        "--config",
        config.to_str().unwrap(),
        "--epochs",
        "2",
        "--resume",
    ]);
    assert_eq!(String::from_utf8_lossy(&again.stdout), stdout);
    for (f, bytes) in files.iter().zip(&before) {
        assert!(
            &std::fs::read(out.join(f)).unwrap() == bytes,
            "{f} rewritten"
        );
    }
    for f in [
        "model.safetensors",
        "config.json",
        "vocab.txt",
        "tokenizer.json",
        "eval.json",
        "metrics.jsonl",
        "loss.svg",
        "confusion.svg",
    ] {
        assert!(out.join(f).is_file(), "{f} missing from the output folder");
    }
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eval.json")).unwrap()).unwrap();
    // 400 rows, stratified 80/10/10 (rounded per class), 2 epochs of batches of 8.
    let train_n = eval["train_examples"].as_u64().unwrap();
    assert_eq!(
        train_n + 2 * eval["test"]["examples"].as_u64().unwrap(),
        400
    );
    let total = 2 * train_n.div_ceil(8) as usize;
    assert_eq!(eval["steps"].as_u64().unwrap() as usize, total);
    // The file's scheduler and warmup ratio reach the trainer: cosine after
    // ceil(0.1 x total) warmup steps, step by step.
    let warmup = (0.1 * total as f64).ceil() as usize;
    let lrs: Vec<(u64, f64)> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|m| Some((m["step"].as_u64()?, m["lr"].as_f64()?)))
        .collect();
    assert_eq!(lrs.len(), total, "log_every = 1: one record per step");
    for &(step, lr) in &lrs {
        // Records count steps from 1, the schedule from 0.
        let want = zhbert_train::LrScheduler::Cosine.lr(1e-3, step as usize - 1, warmup, total);
        assert!(
            (lr - want).abs() < 1e-12,
            "step {step}: lr {lr}, cosine {want}"
        );
    }
    let config_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config_json["id2label"]["2"], "positive");

    zhbert_ok(&[
        "eval",
        "--model",
        out.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eval-train.json")).unwrap())
            .unwrap();
    assert_eq!(metrics["examples"], 400);
    let confusion: Vec<Vec<u64>> = serde_json::from_value(metrics["confusion"].clone()).unwrap();
    assert_eq!(confusion.iter().flatten().sum::<u64>(), 400);

    let run = zhbert_ok(&[
        "predict",
        "--model",
        out.to_str().unwrap(),
        "--input",
        data.to_str().unwrap(),
        "--top-k",
        "3",
    ]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&run.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 400);
    let probs: Vec<f32> = serde_json::from_value(lines[0]["probs"].clone()).unwrap();
    assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-5);

    // Unknown labels in dev data fail with file and line.
    let dev = tmp.path().join("dev.csv");
    std::fs::write(&dev, "text,label\n好,positive\n差,angry\n").unwrap();
    let run = zhbert(&[
        "train",
        "--model",
        model.to_str().unwrap(),
        "--train",
        data.to_str().unwrap(),
        "--dev",
        dev.to_str().unwrap(),
        "--output",
        tmp.path().join("o2").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1));
    assert!(
        stderr.contains("dev.csv:3: unknown label \"angry\""),
        "{stderr}"
    );
}

/// A preset run with masked-LM pretraining keeps the pretrained model as an HF
/// folder; a run killed after pretraining resumes from that folder and ends
/// with the same weights, bit for bit, as the run that was never stopped.
#[test]
fn preset_pretrains_then_fine_tunes_and_resumes_after_pretraining() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, data) = tiny_model_and_data(tmp.path());
    let data = data.to_str().unwrap();
    let run = |out: &Path, resume: bool| {
        let mut args = vec![
            "train",
            "--model",
            "tiny-zh",
            "--train",
            data,
            "--output",
            out.to_str().unwrap(),
            "--pretrain-epochs",
            "2",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--max-length",
            "24",
        ];
        if resume {
            args.push("--resume");
        }
        let run = zhbert_ok(&args);
        String::from_utf8_lossy(&run.stdout).into_owned()
    };
    let straight = tmp.path().join("straight");
    let stdout = run(&straight, false);
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(straight.join("eval.json")).unwrap())
            .unwrap();
    // Two epochs of batches of 64 over the training split's texts.
    let steps = 2 * eval["train_examples"].as_u64().unwrap().div_ceil(64);
    let pretrained_line = format!("pretrained {steps} steps");
    assert!(stdout.contains(&pretrained_line), "{stdout}");
    let pretrained = straight.join("pretrained");
    let (_, config, report) =
        zhbert_model::load_masked_lm::<Flex>(&pretrained, &Default::default()).unwrap();
    assert!(report.missing.is_empty(), "{report}");
    assert_eq!(config.max_position_embeddings, 128);
    assert!(std::fs::read_to_string(pretrained.join("config.json"))
        .unwrap()
        .contains("BertForMaskedLM"));

    // Killed after pretraining: only the pretrained folder was written.
    let resumed = tmp.path().join("resumed");
    std::fs::create_dir_all(resumed.join("pretrained")).unwrap();
    for f in std::fs::read_dir(&pretrained).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), resumed.join("pretrained").join(f.file_name())).unwrap();
    }
    let stdout = run(&resumed, true);
    assert!(
        !stdout.contains(&pretrained_line),
        "pretrained again: {stdout}"
    );
    let bytes = std::fs::read(straight.join("model.safetensors")).unwrap();
    let names = safetensors::SafeTensors::deserialize(&bytes)
        .unwrap()
        .names()
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    assert!(names.len() > 60);
    for name in names {
        assert_eq!(
            f32s(&resumed.join("model.safetensors"), &name),
            f32s(&straight.join("model.safetensors"), &name),
            "{name}"
        );
    }
}

/// A free TCP port on loopback (the OS picks it; it is released at once).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits for every child to exit successfully, killing all of them if one
/// fails or `limit` passes (a replica left alone would wait forever).
fn wait_all(children: &mut [std::process::Child], limit: std::time::Duration) {
    let started = std::time::Instant::now();
    let mut done = vec![false; children.len()];
    while done.iter().any(|d| !d) {
        for (i, child) in children.iter_mut().enumerate() {
            if done[i] {
                continue;
            }
            if let Some(status) = child.try_wait().unwrap() {
                done[i] = true;
                if !status.success() {
                    let mut stderr = String::new();
                    use std::io::Read;
                    child
                        .stderr
                        .take()
                        .unwrap()
                        .read_to_string(&mut stderr)
                        .unwrap();
                    for c in children.iter_mut() {
                        let _ = c.kill();
                    }
                    panic!("process {i} failed: {stderr}");
                }
            }
        }
        if started.elapsed() > limit {
            for c in children.iter_mut() {
                let _ = c.kill();
            }
            panic!("data-parallel run did not finish in {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Two processes on loopback, acting as two nodes of data-parallel training
/// (burn-collective, its global orchestrator in a third process), each
/// computing about half of every batch, end with the weights and losses of one
/// process computing whole batches; so do two replicas in one process
/// (`--devices`). Odd batches split 3/4, and class weights make the halves'
/// shares of the loss unequal.
#[test]
fn two_nodes_on_loopback_train_the_weights_of_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = tiny_model_and_data(tmp.path());
    // Dropout off: replicas draw their own masks, one process draws another.
    let config_path = model.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["hidden_dropout_prob"] = 0.0.into();
    config["attention_probs_dropout_prob"] = 0.0.into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    let args = |out: &str| -> Vec<String> {
        [
            "train",
            "--model",
            m,
            "--train",
            d,
            "--output",
            out,
            "--max-steps",
            "20",
            "--batch-size",
            "7",
            "--max-length",
            "24",
            "--lr",
            "1e-3",
            "--class-weights",
            "auto",
            "--log-every",
            "1",
            "--eval-every",
            "20",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let single = tmp.path().join("single");
    let single_args = args(single.to_str().unwrap());
    zhbert_ok(&single_args.iter().map(String::as_str).collect::<Vec<_>>());

    let port = free_port();
    let mut children = vec![Command::new(env!("CARGO_BIN_EXE_zhbert"))
        .args(["orchestrator", "--port", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()];
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed().as_secs() < 30,
            "the orchestrator did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let nodes: Vec<PathBuf> = (0..2)
        .map(|r| tmp.path().join(format!("node{r}")))
        .collect();
    for (rank, out) in nodes.iter().enumerate() {
        let mut a = args(out.to_str().unwrap());
        a.extend([
            "--nodes".into(),
            "2".into(),
            "--node-rank".into(),
            rank.to_string(),
            "--orchestrator".into(),
            format!("ws://127.0.0.1:{port}"),
            "--node-address".into(),
            format!("ws://127.0.0.1:{}", free_port()),
        ]);
        children.push(
            Command::new(env!("CARGO_BIN_EXE_zhbert"))
                .args(&a)
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    let mut orchestrator = children.remove(0);
    // A second orchestrator on the same port says so (burn-collective only logs it).
    let port_arg = port.to_string();
    let busy = fails_with_one_line(&["orchestrator", "--port", &port_arg]);
    assert!(busy.contains("cannot listen on port"), "{busy}");
    wait_all(&mut children, std::time::Duration::from_secs(300));
    orchestrator.kill().unwrap();
    orchestrator.wait().unwrap();

    // Node 0 writes the output; node 1 only trains.
    assert!(!nodes[1].join("model.safetensors").exists());
    trained_alike(&nodes[0], &single, &model);

    // Two replicas in one process, one per device (`cuda:0,cuda:1` on a GPU
    // machine; here the CPU twice), through burn-collective's local all-reduce.
    let devices = tmp.path().join("devices");
    let mut a = args(devices.to_str().unwrap());
    a.extend(["--devices".into(), "cpu,cpu".into()]);
    zhbert_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    trained_alike(&devices, &single, &model);

    // A replica that fails (here replica 0: the folder holds a finished run)
    // ends the process with one line, instead of leaving the other waiting for it.
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let stderr = fails_with_one_line(&refs);
    assert!(stderr.contains("already holds checkpoints"), "{stderr}");
}

/// Runs zhbert, which must end within a minute with exit code 1 and one line
/// on stderr (returned): a hang fails the test instead of stalling it.
fn fails_with_one_line(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_zhbert"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed().as_secs() > 60 {
            child.kill().unwrap();
            panic!("{args:?} did not end");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert_eq!(status.code(), Some(1), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    stderr
}

/// Data-parallel output `parallel` against `single`'s, both trained 20 steps
/// from `model`: the same weights (within 1e-5 relative, per tensor) and the
/// same loss at every step.
fn trained_alike(parallel: &Path, single: &Path, model: &Path) {
    let relative = |a: &[f32], b: &[f32]| {
        let diff: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
        let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
        (diff / norm).sqrt()
    };
    let names: Vec<String> = {
        let bytes = std::fs::read(single.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.names().into_iter().map(String::from).collect()
    };
    assert!(names.len() > 30, "{names:?}");
    let mut worst = (0.0f64, String::new());
    for name in &names {
        if name.ends_with("attention.self.key.bias") {
            // Softmax does not change when every key moves by one vector, so this
            // bias's gradient is zero but for rounding, and AdamW's normalised step
            // turns that rounding into moves of up to lr: any two summation orders
            // (one batch, or two halves) take it apart, so it is not compared.
            continue;
        }
        let one = f32s(&single.join("model.safetensors"), name);
        let two = f32s(&parallel.join("model.safetensors"), name);
        let r = relative(&two, &one);
        assert!(
            r <= 1e-5,
            "{}: {name}: relative difference {r:e}",
            parallel.display()
        );
        if r > worst.0 {
            worst = (r, name.clone());
        }
    }
    println!(
        "{}: largest relative difference {:e} ({})",
        parallel.display(),
        worst.0,
        worst.1
    );
    // The comparison has teeth: 20 steps moved the weights well beyond it.
    let query = "bert.encoder.layer.0.attention.self.query.weight";
    let moved = relative(
        &f32s(&model.join("model.safetensors"), query),
        &f32s(&single.join("model.safetensors"), query),
    );
    assert!(moved > 1e-3, "weights moved only {moved:e}");
    // Every step's loss (the sum of the replicas' shares) is the whole batch's.
    let losses = |out: &Path| -> Vec<f64> {
        std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter_map(|v| v["loss"].as_f64())
            .collect()
    };
    let (one, two) = (losses(single), losses(parallel));
    assert_eq!(one.len(), 20);
    assert_eq!(two.len(), 20);
    for (step, (a, b)) in one.iter().zip(&two).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs(),
            "step {}: loss {b} against {a}",
            step + 1
        );
    }
}

/// `zhbert bench --precision`: the JSON line says which precision ran, and what
/// the workload cannot do in half precision is refused with one line.
#[test]
fn bench_records_its_precision_and_refuses_half_precision_texts() {
    let model = fixtures().join("tiny-bert");
    let model = model.to_str().unwrap();
    for (workload, precision) in [("train", "fp32"), ("train", "bf16"), ("infer", "f16")] {
        let run = zhbert_ok(&[
            "bench",
            workload,
            "--model",
            model,
            "--steps",
            "1",
            "--warmup",
            "0",
            "--batch-size",
            "2",
            "--seq-len",
            "8",
            "--precision",
            precision,
        ]);
        let stdout = String::from_utf8_lossy(&run.stdout);
        let line: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(line["precision"], precision, "{stdout}");
        assert_eq!(line["workload"], workload, "{stdout}");
        assert!(line["items_per_second"].as_f64().unwrap() > 0.0, "{stdout}");
    }
    let texts = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(texts.path(), "很好\n").unwrap();
    let err = fails_with_one_line(&[
        "bench",
        "infer",
        "--model",
        model,
        "--texts",
        texts.path().to_str().unwrap(),
        "--precision",
        "bf16",
    ]);
    assert!(err.contains("--texts times fp32 inference only"), "{err}");
}
