//! The load generator and driver of `cargo xtask bench --only serve`: starts
//! `zhbert serve` and then `benchmarks/serve/python_server.py` (FastAPI +
//! `transformers`) on the same model, sends both the same review texts as
//! single-text `/predict` requests at several concurrencies (a fixed count
//! each), and writes requests/s, p50, p99, errors and peak RSS as JSON.
//!
//! ```sh
//! cargo run --release -p zhbert-serve --example serve_bench -- \
//!     --zhbert target/release/zhbert --model-src target/assets/minilm \
//!     --texts target/assets/reviews.txt --out benchmarks/results/serve.json
//! ```

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use burn::backend::Flex;
use serde_json::{json, Value};
use zhbert_model::{load_classifier, save_classifier, LoadOptions};
use zhbert_tokenizer::BertTokenizer;

struct Options {
    zhbert: PathBuf,
    python: Option<String>,
    model_src: PathBuf,
    texts: PathBuf,
    out: PathBuf,
    levels: Vec<(usize, usize)>,
    work: PathBuf,
    soak_secs: u64,
    /// More arguments for `zhbert serve` (`--serve-arg --workers --serve-arg 1`).
    serve_args: Vec<String>,
}

fn parse() -> Result<Options> {
    let mut o = Options {
        zhbert: "target/release/zhbert".into(),
        python: Some("python3".into()),
        model_src: "target/assets/minilm".into(),
        texts: "target/assets/reviews.txt".into(),
        out: "benchmarks/results/serve.json".into(),
        levels: vec![(1, 200), (8, 400), (32, 800), (128, 800)],
        work: "target/serve-bench".into(),
        soak_secs: 0,
        serve_args: Vec::new(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--zhbert" => o.zhbert = value()?.into(),
            "--python" => o.python = Some(value()?.clone()),
            "--no-python" => o.python = None,
            "--model-src" => o.model_src = value()?.into(),
            "--texts" => o.texts = value()?.into(),
            "--out" => o.out = value()?.into(),
            "--work" => o.work = value()?.into(),
            // Then load at concurrency 32 for this long, RSS sampled each minute.
            "--soak-secs" => o.soak_secs = value()?.parse()?,
            "--serve-arg" => o.serve_args.push(value()?.clone()),
            // concurrency:count,...
            "--levels" => {
                o.levels = value()?
                    .split(',')
                    .map(|l| {
                        let (c, n) = l.split_once(':').context("--levels c:n,c:n")?;
                        Ok((c.parse()?, n.parse()?))
                    })
                    .collect::<Result<_>>()?
            }
            other => bail!("unknown option {other}"),
        }
    }
    Ok(o)
}

/// MiniLM with a two-label head (drawn once, saved), as an HF folder that
/// both zhbert and `transformers` load: the same weights for both servers.
fn make_model(src: &Path, dir: &Path) -> Result<()> {
    if dir.join("model.safetensors").is_file() {
        return Ok(());
    }
    let options = LoadOptions {
        labels: Some(vec!["negative".into(), "positive".into()]),
        allow_fresh_head: true,
    };
    let (model, config, _) = load_classifier::<Flex>(src, &options, &Default::default())?;
    save_classifier(&model, &config, dir)?;
    BertTokenizer::from_dir(src)?.save(dir)?;
    Ok(())
}

/// The first column of a TSV with a header, or every line of a text file.
fn read_texts(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let header = usize::from(path.extension().is_some_and(|e| e == "tsv"));
    Ok(text
        .lines()
        .skip(header)
        .filter_map(|l| l.split('\t').next())
        .filter(|t| !t.trim().is_empty())
        .map(String::from)
        .collect())
}

fn start_zhbert(zhbert: &Path, model: &Path, extra: &[String]) -> Result<(Child, String)> {
    let mut child = Command::new(zhbert)
        .args([
            "serve",
            "--model",
            &model.display().to_string(),
            "--port",
            "0",
        ])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", zhbert.display()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().context("stdout")?).read_line(&mut line)?;
    let address = line
        .trim()
        .strip_prefix("zhbert serve: listening on ")
        .with_context(|| format!("zhbert serve printed {line:?}"))?
        .to_string();
    Ok((child, address))
}

fn start_python(python: &str, model: &Path) -> Result<(Child, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benchmarks/serve/python_server.py");
    let child = Command::new(python)
        .arg(script)
        .arg(model)
        .arg(port.to_string())
        .spawn()
        .context("starting the Python server")?;
    Ok((child, format!("http://127.0.0.1:{port}")))
}

async fn wait_healthy(address: &str) -> Result<()> {
    let started = Instant::now();
    let client = reqwest::Client::new();
    while started.elapsed() < Duration::from_secs(300) {
        if let Ok(r) = client.get(format!("{address}/health")).send().await {
            if r.status() == 200 {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("{address} did not become healthy in 300 s")
}

/// `count` single-text requests from `concurrency` clients.
async fn load(address: &str, texts: Arc<Vec<String>>, concurrency: usize, count: usize) -> Value {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let clients: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, texts) = (Arc::clone(&next), Arc::clone(&texts));
            let url = format!("{address}/predict");
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let (mut latencies, mut errors) = (Vec::new(), 0usize);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let t0 = Instant::now();
                    // A stride through the file mixes its negative and positive halves.
                    let text = &texts[(i * 7919) % texts.len()];
                    let body = json!({"inputs": text, "truncate": true});
                    let ok = match client.post(&url).json(&body).send().await {
                        Ok(r) => r.status() == 200 && r.json::<Value>().await.is_ok(),
                        Err(_) => false,
                    };
                    match ok {
                        true => latencies.push(t0.elapsed().as_secs_f64()),
                        false => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for c in clients {
        let (l, e) = c.await.unwrap_or_default();
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    json!({
        "concurrency": concurrency, "requests": count, "errors": errors,
        "requests_per_s": latencies.len() as f64 / elapsed,
        "p50_ms": pct(0.50) * 1e3, "p99_ms": pct(0.99) * 1e3,
    })
}

/// User and system CPU seconds of a process and all its threads so far
/// (`/proc/PID/stat`, in clock ticks of 1/100 s, Linux's `USER_HZ`).
fn cpu_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(f64::NAN)
}

/// The machine's 1-minute load average: how busy the cores were with
/// everything else.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Peak resident memory of a process, in MB (`VmHWM`).
fn peak_rss_mb(pid: u32) -> f64 {
    memory_mb(pid, "VmHWM:")
}

/// A memory field of `/proc/PID/status`, in MB.
fn memory_mb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Load at concurrency 32 for `secs` seconds, in rounds of 320 requests;
/// the server's RSS (`VmRSS`) after each minute, to see whether it grows.
async fn soak(address: &str, texts: &Arc<Vec<String>>, secs: u64, pid: u32) -> Value {
    if secs == 0 {
        return Value::Null;
    }
    let started = Instant::now();
    let (mut rounds, mut errors, mut rss_each_minute) = (0, 0, Vec::new());
    while started.elapsed().as_secs() < secs {
        let r = load(address, Arc::clone(texts), 32, 320).await;
        rounds += 1;
        errors += r["errors"].as_u64().unwrap_or(0);
        if started.elapsed().as_secs() / 60 > rss_each_minute.len() as u64 {
            rss_each_minute.push(memory_mb(pid, "VmRSS:"));
            println!(
                "soak {} min: RSS {:.1} MB, {errors} errors",
                rss_each_minute.len(),
                rss_each_minute.last().unwrap()
            );
        }
    }
    json!({"seconds": started.elapsed().as_secs(), "requests": rounds * 320, "errors": errors, "rss_mb_each_minute": rss_each_minute})
}

/// Scores of the first texts, to check that both servers compute the same model.
async fn probe(address: &str, texts: &[String]) -> Result<Vec<Value>> {
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    for t in texts {
        let r = client
            .post(format!("{address}/predict"))
            .json(&json!({"inputs": t, "truncate": true}))
            .send()
            .await?;
        out.push(r.json().await?);
    }
    Ok(out)
}

async fn bench_server(
    name: &str,
    mut child: Child,
    address: String,
    o: &Options,
    texts: &Arc<Vec<String>>,
) -> Result<Value> {
    let run = async {
        wait_healthy(&address).await?;
        let probe = probe(&address, &texts[..20]).await?;
        load(&address, Arc::clone(texts), 4, 40).await; // warm-up
        let mut levels = Vec::new();
        for &(concurrency, count) in &o.levels {
            let (cpu, load_avg) = (cpu_seconds(child.id()), load_average());
            let mut r = load(&address, Arc::clone(texts), concurrency, count).await;
            // CPU time the server spent per answered request: what the work
            // costs, less at the mercy of other processes than requests/s.
            let answered = count as f64 - r["errors"].as_f64().unwrap_or(0.0);
            r["server_cpu_ms_per_request"] =
                json!((cpu_seconds(child.id()) - cpu) * 1e3 / answered.max(1.0));
            r["load_average_before"] = json!(load_avg);
            println!("{name:>7} c={concurrency:<4} {r}");
            levels.push(r);
        }
        let soak = soak(&address, texts, o.soak_secs, child.id()).await;
        anyhow::Ok(
            json!({"levels": levels, "peak_rss_mb": peak_rss_mb(child.id()), "probe": probe, "soak": soak}),
        )
    };
    let result = run.await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    result
}

fn compare(z: &Value, p: &Value) -> Value {
    let ratio = |a: &Value, b: &Value| a.as_f64().zip(b.as_f64()).map(|(a, b)| a / b);
    let levels: Vec<Value> = z["levels"]
        .as_array()
        .into_iter()
        .flatten()
        .zip(p["levels"].as_array().into_iter().flatten())
        .map(|(z, p)| {
            json!({
                "concurrency": z["concurrency"],
                "requests_per_s_ratio": ratio(&z["requests_per_s"], &p["requests_per_s"]),
                "p50_ratio": ratio(&z["p50_ms"], &p["p50_ms"]),
                "p99_ratio": ratio(&z["p99_ms"], &p["p99_ms"]),
                "server_cpu_per_request_ratio": ratio(&z["server_cpu_ms_per_request"], &p["server_cpu_ms_per_request"]),
            })
        })
        .collect();
    // Largest difference between the two servers' probabilities on the probe texts.
    let score = |v: &Value, label: &str| {
        v.as_array()
            .and_then(|a| a.iter().find(|s| s["label"] == label))
            .and_then(|s| s["score"].as_f64())
    };
    let diff = z["probe"]
        .as_array()
        .into_iter()
        .flatten()
        .zip(p["probe"].as_array().into_iter().flatten())
        .flat_map(|(a, b)| {
            ["negative", "positive"].map(|l| {
                score(a, l)
                    .zip(score(b, l))
                    .map_or(f64::NAN, |(x, y)| (x - y).abs())
            })
        })
        .fold(0.0, f64::max);
    json!({"levels": levels, "rss_ratio": ratio(&z["peak_rss_mb"], &p["peak_rss_mb"]), "max_probability_difference": diff})
}

fn python_ready(python: &str) -> bool {
    Command::new(python)
        .args(["-c", "import fastapi, uvicorn, torch, transformers"])
        .status()
        .is_ok_and(|s| s.success())
}

fn main() -> Result<()> {
    let o = parse()?;
    let model = o.work.join("minilm-classifier");
    make_model(&o.model_src, &model)?;
    let texts = Arc::new(read_texts(&o.texts)?);
    let runtime = tokio::runtime::Runtime::new()?;
    let (child, address) = start_zhbert(&o.zhbert, &model, &o.serve_args)?;
    let zhbert = runtime.block_on(bench_server("zhbert", child, address, &o, &texts))?;
    let python = match &o.python {
        Some(python) if !python_ready(python) => {
            println!("Python side skipped: {python} lacks fastapi, uvicorn, torch or transformers (pip install fastapi uvicorn torch transformers)");
            None
        }
        Some(python) => {
            let (child, address) = start_python(python, &model)?;
            Some(runtime.block_on(bench_server("python", child, address, &o, &texts))?)
        }
        None => None,
    };
    let comparison = python.as_ref().map(|p| compare(&zhbert, p));
    let result = json!({
        "workload": format!("single-text POST /predict with \"truncate\": true, texts of {}, MiniLM-L6 with a 2-label head", o.texts.display()),
        "cpu_threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "zhbert": zhbert, "python_fastapi_transformers": python, "zhbert_over_python": comparison,
    });
    if let Some(dir) = o.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&o.out, serde_json::to_string_pretty(&result)? + "\n")?;
    println!(
        "{}\nwritten to {}",
        serde_json::to_string_pretty(&result["zhbert_over_python"])?,
        o.out.display()
    );
    Ok(())
}
