//! `zhbert serve` as a process: its scores are `zhbert predict`'s on the same
//! texts, and SIGTERM under load answers every request it accepted, then
//! exits 0.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zhbert_testkit::tiny_char_model;

fn texts(chars: &[String], n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            (0..1 + (i * 5) % 30)
                .map(|j| chars[(i * 13 + j * 7) % chars.len()].as_str())
                .collect()
        })
        .collect()
}

/// Starts `zhbert serve` on a free port and returns it with its address.
fn serve(model: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_zhbert"))
        .args(["serve", "--model", model.to_str().unwrap(), "--port", "0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .trim()
        .strip_prefix("zhbert serve: listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (child, address)
}

/// One POST /predict on a fresh connection: `Some((status, body))` for a
/// complete response, `None` when the connection was refused or closed
/// before a whole response came.
fn predict(address: &str, body: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(address).ok()?;
    let request = format!(
        "POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let response = String::from_utf8(response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let length: usize = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("content-length: ")
            .map(|v| v.trim().parse().unwrap())
    })?;
    (body.len() == length).then(|| (head[9..12].parse().unwrap(), body.to_string()))
}

#[test]
fn serve_answers_what_predict_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    let chars = tiny_char_model(&model);
    let texts = texts(&chars, 12);
    let mut args = vec![
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--batch-size",
        "1",
    ];
    for t in &texts {
        args.extend(["--text", t.as_str()]);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_zhbert"))
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let labels = ["negative", "neutral", "positive"];
    let (mut child, address) = serve(&model);
    for (text, line) in texts
        .iter()
        .zip(String::from_utf8(out.stdout).unwrap().lines())
    {
        let want: serde_json::Value = serde_json::from_str(line).unwrap();
        let body = serde_json::json!({ "inputs": text }).to_string();
        let (status, got) = predict(&address, &body).unwrap();
        assert_eq!(status, 200, "{got}");
        let got: Vec<serde_json::Value> = serde_json::from_str(&got).unwrap();
        let got: HashMap<&str, f64> = got
            .iter()
            .map(|s| (s["label"].as_str().unwrap(), s["score"].as_f64().unwrap()))
            .collect();
        for (i, label) in labels.iter().enumerate() {
            // Both print the same f32: equal as written.
            assert_eq!(
                got[label],
                want["probs"][i].as_f64().unwrap(),
                "{text} {label}"
            );
        }
    }
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

#[test]
fn sigterm_under_load_answers_every_accepted_request() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    let chars = tiny_char_model(&model);
    let bodies: Arc<Vec<String>> = Arc::new(
        texts(&chars, 50)
            .iter()
            .map(|t| serde_json::json!({ "inputs": [[t], [t, "是"]] }).to_string())
            .collect(),
    );
    let (mut child, address) = serve(&model);
    let stopping = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..16)
        .map(|c| {
            let (address, bodies, stopping) =
                (address.clone(), Arc::clone(&bodies), Arc::clone(&stopping));
            std::thread::spawn(move || {
                let (mut answered, mut other, mut unanswered) = (0u64, 0u64, 0u64);
                for i in 0.. {
                    match predict(&address, &bodies[(c + i) % bodies.len()]) {
                        Some((200, _)) => answered += 1,
                        Some(_) => other += 1,
                        // Before SIGTERM every request must be answered; after
                        // it, the server stops accepting.
                        None if stopping.load(Ordering::SeqCst) => {
                            unanswered += 1;
                            if unanswered > 50 {
                                break;
                            }
                        }
                        None => panic!("a request failed before SIGTERM"),
                    }
                }
                (answered, other, unanswered)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    stopping.store(true, Ordering::SeqCst);
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let started = Instant::now();
    let status = child.wait().unwrap();
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(status.success(), "exit {status:?}");
    let (mut answered, mut other) = (0, 0);
    for c in clients {
        let (a, o, _) = c.join().unwrap();
        answered += a;
        other += o;
    }
    let mut rest = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut rest)
        .unwrap();
    // The server's own count of responses it produced: every one of them
    // reached its client whole (nothing accepted was cut off).
    let served: u64 = rest
        .trim()
        .strip_prefix("zhbert serve: stopped after answering ")
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("no summary line in {rest:?}"))
        .parse()
        .unwrap();
    eprintln!("{answered} answered under load, {served} served");
    assert_eq!(other, 0);
    assert!(answered > 50, "the load ran ({answered} answered)");
    assert_eq!(served, answered);
}
