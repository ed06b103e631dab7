//! The server over real HTTP on a free port, against `Classifier::predict`
//! on the same model: scores equal, every bad request answered with its
//! status and TEI's JSON error, and many concurrent clients without an error.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::backend::Flex;
use serde_json::{json, Value};
use zhbert_serve::api::{PredictResponse, Scored};
use zhbert_serve::{ServeConfig, Server};
use zhbert_testkit::tiny_char_model;
use zhbert_train::{
    ChunkPool, ClassPrediction, Classifier, ClassifierOptions, LongText, LongTextOptions,
};

/// `n` texts of 1 to 40 characters from the vocabulary, all different.
fn texts(chars: &[String], n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let len = 1 + (i * 7) % 40;
            (0..len)
                .map(|j| chars[(i * 31 + j * 17 + i / chars.len()) % chars.len()].as_str())
                .collect()
        })
        .collect()
}

struct Running {
    url: String,
    runtime: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<anyhow::Result<Arc<zhbert_serve::Metrics>>>>,
}

impl Running {
    fn start(model: &Path, config: ServeConfig) -> Self {
        let model = model.to_path_buf();
        Self::start_with(
            move || Classifier::<Flex>::load(&model, &Default::default()),
            config,
        )
    }

    /// A server of the classifier `load` gives.
    fn start_with(
        load: impl FnOnce() -> anyhow::Result<Classifier<Flex>> + Send + 'static,
        config: ServeConfig,
    ) -> Self {
        let server = Server::start(load, config).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let done = runtime.spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        Self {
            url,
            runtime,
            stop: Some(stop),
            done: Some(done),
        }
    }

    fn post(&self, body: Value) -> (u16, Value) {
        let url = format!("{}/predict", self.url);
        self.runtime.block_on(async {
            let r = reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json().await.unwrap())
        })
    }

    /// Stops the server and returns its metrics.
    fn stop(mut self) -> Arc<zhbert_serve::Metrics> {
        let _ = self.stop.take().unwrap().send(());
        let done = self.done.take().unwrap();
        self.runtime.block_on(done).unwrap().unwrap()
    }
}

fn scores_of(p: &ClassPrediction, labels: &[String], raw: bool) -> Vec<Scored> {
    let values = if raw { &p.logits } else { &p.probs };
    let mut s: Vec<Scored> = values
        .iter()
        .zip(labels)
        .map(|(&score, label)| Scored {
            score,
            label: label.clone(),
        })
        .collect();
    s.sort_by(|a, b| b.score.total_cmp(&a.score));
    s
}

fn single(v: Value) -> Vec<Scored> {
    match serde_json::from_value(v).unwrap() {
        PredictResponse::Single(s) => s,
        other => panic!("expected one list, got {other:?}"),
    }
}

fn batch(v: Value) -> Vec<Vec<Scored>> {
    match serde_json::from_value(v).unwrap() {
        PredictResponse::Batch(b) => b,
        other => panic!("expected a list of lists, got {other:?}"),
    }
}

fn close(got: &[Scored], want: &[Scored], tolerance: f32) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.label, w.label, "{got:?} vs {want:?}");
        assert!(
            (g.score - w.score).abs() <= tolerance,
            "{got:?} vs {want:?}"
        );
    }
}

#[test]
fn scores_equal_classifier_predict() {
    let tmp = tempfile::tempdir().unwrap();
    let chars = tiny_char_model(tmp.path());
    let oracle = Classifier::<Flex>::load(tmp.path(), &Default::default()).unwrap();
    let labels = oracle.labels().to_vec();
    let server = Running::start(tmp.path(), ServeConfig::default());
    let texts = texts(&chars, 24);
    for text in &texts {
        let want = &oracle.predict(&[text]).unwrap()[0];
        // Alone, a request runs in a batch of one: bit for bit predict's.
        let (status, body) = server.post(json!({"inputs": text}));
        assert_eq!(status, 200, "{body}");
        assert_eq!(single(body), scores_of(want, &labels, false), "{text}");
        let (_, raw) = server.post(json!({"inputs": text, "raw_scores": true}));
        assert_eq!(single(raw), scores_of(want, &labels, true), "{text}");
    }
    // A batch in one request: input order; padded with the others, so equal
    // within float rounding (the padding is masked).
    let want = oracle.predict(&texts).unwrap();
    let inputs: Vec<Vec<&String>> = texts.iter().map(|t| vec![t]).collect();
    let (status, body) = server.post(json!({ "inputs": inputs }));
    assert_eq!(status, 200, "{body}");
    let got = batch(body);
    assert_eq!(got.len(), texts.len());
    for (g, w) in got.iter().zip(&want) {
        close(g, &scores_of(w, &labels, false), 1e-5);
    }
    // Pairs: ["a", "b"] is one pair (TEI), [["a", "b"], ...] a batch of pairs.
    let pairs = [(&texts[3], &texts[8]), (&texts[5], &texts[1])];
    let want = oracle.predict_pairs(&pairs).unwrap();
    let (_, body) = server.post(json!({"inputs": [pairs[0].0, pairs[0].1]}));
    assert_eq!(single(body), scores_of(&want[0], &labels, false));
    let (_, body) =
        server.post(json!({"inputs": [[pairs[0].0, pairs[0].1], [pairs[1].0, pairs[1].1]]}));
    for (g, w) in batch(body).iter().zip(&want) {
        close(g, &scores_of(w, &labels, false), 1e-5);
    }
    server.stop();
}

/// A raw HTTP/1.1 exchange, for requests a client library would not send.
fn raw_request(url: &str, request: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(url.trim_start_matches("http://")).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn call(url: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    raw_request(url, &request)
}

#[test]
fn bad_requests_get_their_status_and_a_json_error() {
    let tmp = tempfile::tempdir().unwrap();
    let chars = tiny_char_model(tmp.path());
    let config = ServeConfig {
        max_concurrent_requests: 2,
        max_client_batch_size: 4,
        payload_limit: 4096,
        ..Default::default()
    };
    let server = Running::start(tmp.path(), config);
    let long: String = chars.iter().take(100).map(String::as_str).collect();
    let five = json!({"inputs": [["a"], ["b"], ["c"], ["d"], ["e"]]}).to_string();
    let huge = json!({ "inputs": "很".repeat(2000) }).to_string();
    let long_body = json!({ "inputs": long }).to_string();
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        ("POST", "/predict", "not json".into(), 422, "validation"),
        ("POST", "/predict", "{}".into(), 422, "validation"),
        (
            "POST",
            "/predict",
            r#"{"inputs": []}"#.into(),
            422,
            "validation",
        ),
        (
            "POST",
            "/predict",
            r#"{"inputs": 5}"#.into(),
            422,
            "validation",
        ),
        (
            "POST",
            "/predict",
            r#"{"inputs": ["a", "b", "c"]}"#.into(),
            422,
            "validation",
        ),
        (
            "POST",
            "/predict",
            r#"{"inputs": [["a"], "b"]}"#.into(),
            422,
            "validation",
        ),
        (
            "POST",
            "/predict",
            r#"{"inputs": ""}"#.into(),
            422,
            "validation",
        ),
        (
            "POST",
            "/predict",
            r#"{"inputs": " \n"}"#.into(),
            422,
            "validation",
        ),
        (
            "POST",
            "/predict",
            r#"{"inputs": [["a"], ["a", ""]]}"#.into(),
            422,
            "validation",
        ),
        (
            "POST",
            "/predict",
            r#"{"inputs": "a", "raw_scores": 1}"#.into(),
            422,
            "validation",
        ),
        ("POST", "/predict", long_body.clone(), 422, "validation"),
        ("POST", "/predict", five, 413, "validation"),
        ("POST", "/predict", huge, 413, "validation"),
        ("GET", "/nowhere", String::new(), 404, "not_found"),
        ("POST", "/health", String::new(), 405, "method_not_allowed"),
        ("GET", "/predict", String::new(), 405, "method_not_allowed"),
        ("DELETE", "/info", String::new(), 405, "method_not_allowed"),
    ];
    for (method, path, body, status, error_type) in &cases {
        let (got, json) = call(&server.url, method, path, body);
        assert_eq!(got, *status, "{method} {path} {body:.80}: {json}");
        assert_eq!(
            json["error_type"], *error_type,
            "{method} {path} {body:.80}"
        );
        assert!(
            json["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{json}"
        );
    }
    // The same long text with truncate: answered, as predict answers it.
    let (status, _) = call(
        &server.url,
        "POST",
        "/predict",
        &json!({"inputs": long, "truncate": true}).to_string(),
    );
    assert_eq!(status, 200);

    // Two requests whose bodies never finish hold both permits: the third is
    // refused at once (429), not queued.
    let hold = |_| {
        let mut s = TcpStream::connect(server.url.trim_start_matches("http://")).unwrap();
        s.write_all(b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{\"inp")
            .unwrap();
        s
    };
    let held: Vec<TcpStream> = (0..2).map(hold).collect();
    std::thread::sleep(Duration::from_millis(200));
    let (status, json) = call(&server.url, "POST", "/predict", r#"{"inputs": "a"}"#);
    assert_eq!(
        (status, json["error_type"].as_str()),
        (429, Some("overloaded")),
        "{json}"
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        call(&server.url, "POST", "/predict", r#"{"inputs": "一"}"#).0,
        200
    );

    let (status, info) = call(&server.url, "GET", "/info", "");
    assert_eq!(status, 200);
    assert_eq!(
        info["model_type"]["classifier"]["id2label"]["2"],
        "positive"
    );
    assert_eq!(info["max_input_length"], 64);
    assert_eq!(info["max_client_batch_size"], 4);
    assert_eq!(call(&server.url, "GET", "/health", "").0, 200);
    let metrics = server.stop();
    let responses = metrics.responses();
    assert_eq!(responses[&429], 1);
    assert_eq!(responses[&404], 1);
}

#[test]
fn many_concurrent_clients_get_their_own_answers() {
    const CLIENTS: usize = 64;
    const REQUESTS: usize = 1000;
    let tmp = tempfile::tempdir().unwrap();
    let chars = tiny_char_model(tmp.path());
    let oracle = Classifier::<Flex>::load(tmp.path(), &Default::default()).unwrap();
    let labels = oracle.labels().to_vec();
    let texts = texts(&chars, 97);
    let want: Vec<Vec<Scored>> = oracle
        .predict(&texts)
        .unwrap()
        .iter()
        .map(|p| scores_of(p, &labels, false))
        .collect();
    // Two workers sharing the queue: each answer must still be its own text's.
    let config = ServeConfig {
        workers: 2,
        ..Default::default()
    };
    let server = Running::start(tmp.path(), config);
    let (texts, want) = (Arc::new(texts), Arc::new(want));
    let started = Instant::now();
    let url = format!("{}/predict", server.url);
    let errors: usize = server.runtime.block_on(async {
        let clients = (0..CLIENTS).map(|c| {
            let (url, texts, want) = (url.clone(), Arc::clone(&texts), Arc::clone(&want));
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut errors = 0;
                for r in 0..REQUESTS {
                    let i = (c * REQUESTS + r) % texts.len();
                    let response = client
                        .post(&url)
                        .json(&json!({"inputs": texts[i]}))
                        .send()
                        .await;
                    let Ok(response) = response else {
                        errors += 1;
                        continue;
                    };
                    if response.status() != 200 {
                        errors += 1;
                        continue;
                    }
                    let got = single(response.json().await.unwrap());
                    // Each answer is its own text's, whatever shared its batch.
                    close(&got, &want[i], 1e-5);
                }
                errors
            })
        });
        futures_sum(clients.collect()).await
    });
    let elapsed = started.elapsed();
    let metrics = server.stop();
    assert_eq!(errors, 0);
    assert_eq!(metrics.responses()[&200], (CLIENTS * REQUESTS) as u64);
    let batches = metrics.batch_requests.count();
    eprintln!(
        "{} requests in {:.1}s ({:.0}/s), {batches} batches",
        CLIENTS * REQUESTS,
        elapsed.as_secs_f64(),
        (CLIENTS * REQUESTS) as f64 / elapsed.as_secs_f64()
    );
    assert!(
        (batches as usize) < CLIENTS * REQUESTS,
        "concurrent requests share batches"
    );
}

async fn futures_sum(handles: Vec<tokio::task::JoinHandle<usize>>) -> usize {
    let mut sum = 0;
    for h in handles {
        sum += h.await.unwrap();
    }
    sum
}

#[test]
fn truncation_direction_left_keeps_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let chars = tiny_char_model(tmp.path());
    let oracle = Classifier::<Flex>::load(tmp.path(), &Default::default()).unwrap();
    let labels = oracle.labels().to_vec();
    let server = Running::start(tmp.path(), ServeConfig::default());
    // One token per character; max length 64: 62 text tokens, 61 for a pair.
    let text: String = chars
        .iter()
        .cycle()
        .skip(3)
        .take(100)
        .map(String::as_str)
        .collect();
    let end: String = text.chars().skip(100 - 62).collect();
    let want_left = &oracle.predict(&[&end]).unwrap()[0];
    let want_right = &oracle.predict(&[&text]).unwrap()[0];
    assert_ne!(
        want_left.probs, want_right.probs,
        "the test needs ends that differ"
    );
    for (direction, want) in [
        ("Left", want_left),
        ("Right", want_right),
        ("right", want_right),
    ] {
        let body = json!({"inputs": text, "truncate": true, "truncation_direction": direction});
        let (status, got) = server.post(body);
        assert_eq!(status, 200, "{got}");
        assert_eq!(single(got), scores_of(want, &labels, false), "{direction}");
    }
    // A pair of 70 and 10 tokens: longest_first cuts 19 from the first,
    // from its start when the direction is left.
    let a: String = text.chars().take(70).collect();
    let b: String = text.chars().skip(80).take(10).collect();
    let a_end: String = a.chars().skip(19).collect();
    let want = &oracle.predict_pairs(&[(&a_end, &b)]).unwrap()[0];
    let body = json!({"inputs": [a, b], "truncate": true, "truncation_direction": "Left"});
    let (status, got) = server.post(body);
    assert_eq!(status, 200, "{got}");
    assert_eq!(single(got), scores_of(want, &labels, false));
    // Without truncate a long text is refused whatever the direction.
    let body = json!({"inputs": text, "truncation_direction": "Left"});
    assert_eq!(server.post(body).0, 422);
    server.stop();
}

#[test]
fn a_body_slower_than_the_timeout_is_answered_408() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_char_model(tmp.path());
    let config = ServeConfig {
        max_concurrent_requests: 1,
        body_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let server = Running::start(tmp.path(), config);
    // Half a body, then nothing: the only request slot would be held forever.
    let mut slow = TcpStream::connect(server.url.trim_start_matches("http://")).unwrap();
    slow.write_all(b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{\"inp")
        .unwrap();
    // A bound on the wait, so a server that never answers fails the test.
    slow.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut response = Vec::new();
    let _ = slow.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    let body: Value = serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error_type"], "timeout", "{body}");
    // The slot is free again.
    let (status, _) = call(&server.url, "POST", "/predict", r#"{"inputs": "一"}"#);
    assert_eq!(status, 200);
    let metrics = server.stop();
    assert_eq!(metrics.responses()[&408], 1);
}

/// `/metrics` as a map from metric (with its labels) to value.
fn scrape(url: &str) -> std::collections::HashMap<String, f64> {
    let request = "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let mut stream = TcpStream::connect(url.trim_start_matches("http://")).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect()
}

#[test]
fn clients_that_disconnect_cost_only_their_own_work() {
    const CLIENTS: usize = 100;
    const INPUTS: usize = 32;
    let tmp = tempfile::tempdir().unwrap();
    let chars = tiny_char_model(tmp.path());
    let oracle = Classifier::<Flex>::load(tmp.path(), &Default::default()).unwrap();
    let labels = oracle.labels().to_vec();
    // One input per forward pass on one worker: 3,200 passes queue up behind
    // each other, so most clients are gone before their inputs' turn.
    let config = ServeConfig {
        max_batch_requests: Some(1),
        workers: 1,
        ..Default::default()
    };
    let server = Running::start(tmp.path(), config);
    let inputs: Vec<Vec<String>> = texts(&chars, INPUTS)
        .into_iter()
        .map(|t| vec![t.repeat(3)])
        .collect();
    let body = json!({"inputs": inputs, "truncate": true}).to_string();
    let request = format!(
        "POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let address = server.url.trim_start_matches("http://").to_string();
    let sent: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| {
            let mut s = TcpStream::connect(&address).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            s
        })
        .collect();
    // Each client hangs up without reading its answer.
    drop(sent);
    // Wait (bounded) until the server is idle: nothing queued, only this
    // scrape in flight, and the counts unchanged over three scrapes. (A
    // request whose client was gone before its handler first ran is not
    // counted at all: it cost nothing.)
    let started = Instant::now();
    let (mut scrapes, mut last, mut stable) = (0.0, Vec::new(), 0);
    let counted = |m: &std::collections::HashMap<String, f64>, scrapes: f64| {
        // The earlier scrapes are 200s too.
        let ok = m.get("zhbert_requests_total{status=\"200\"}").copied();
        vec![
            ok.unwrap_or(0.0) - scrapes,
            m["zhbert_requests_cancelled_total"],
            m["zhbert_inputs_dropped_total"],
            m["zhbert_batch_size_requests_count"],
        ]
    };
    let metrics = loop {
        let m = scrape(&server.url);
        let now = counted(&m, scrapes);
        scrapes += 1.0;
        let idle = m["zhbert_queue_depth"] == 0.0 && m["zhbert_requests_in_flight"] == 1.0;
        stable = if idle && now == last && now[0] + now[1] > 0.0 {
            stable + 1
        } else {
            0
        };
        if stable == 3 {
            break now;
        }
        last = now;
        assert!(started.elapsed() < Duration::from_secs(120), "{m:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let [answered, cancelled, dropped, run] = metrics[..] else {
        unreachable!()
    };
    eprintln!("{answered} answered, {cancelled} cancelled, {dropped} inputs dropped, {run} run");
    assert!(answered + cancelled <= CLIENTS as f64);
    assert!(cancelled > 0.0);
    // A cancelled request's inputs that had not reached the model never do:
    // every input either ran (one per pass) or was dropped, none twice.
    assert!(dropped > 0.0);
    assert_eq!(run + dropped, (answered + cancelled) * INPUTS as f64);
    // And the server goes on answering, correctly.
    let text = &texts(&chars, 3)[2];
    let want = &oracle.predict(&[text]).unwrap()[0];
    let (status, body) = server.post(json!({ "inputs": text }));
    assert_eq!(status, 200);
    assert_eq!(single(body), scores_of(want, &labels, false));
    server.stop();
}

/// The tiny model with `long` as its long-text handling, at max length 16.
fn long_text_classifier(dir: &Path, long: LongTextOptions) -> anyhow::Result<Classifier<Flex>> {
    let options = ClassifierOptions {
        max_length: Some(16),
        ..Default::default()
    };
    Classifier::<Flex>::load_with(dir, &options, &Default::default())?.with_long_text(long)
}

fn by_label(scored: &Value, labels: &[String]) -> Vec<f32> {
    labels
        .iter()
        .map(|l| {
            let s = scored.as_array().unwrap().iter().find(|s| s["label"] == *l);
            s.unwrap()["score"].as_f64().unwrap() as f32
        })
        .collect()
}

/// `zhbert serve` with `--long-text`: the server classifies long texts as the
/// `Classifier` it serves does. With chunks a text longer than the max length
/// is answered without `truncate` (nothing is cut), its scores those of
/// `Classifier::predict` (its windows' logits pooled); with head-tail a long
/// text needs `truncate`, as with truncation, and is cut the Classifier's way.
#[test]
fn the_server_pools_windows_and_cuts_head_tail_as_the_classifier() {
    let tmp = tempfile::tempdir().unwrap();
    let cjk = tiny_char_model(tmp.path());
    let long: String = (0..57)
        .map(|j| cjk[(j * 5 + 1) % cjk.len()].as_str())
        .collect();
    let short: String = cjk[..6].concat();
    for mode in [LongText::Chunks, LongText::HeadTail] {
        let long_text = LongTextOptions {
            mode,
            stride: 3,
            pool: ChunkPool::Max,
        };
        let oracle = long_text_classifier(tmp.path(), long_text).unwrap();
        let labels = oracle.labels().to_vec();
        let dir = tmp.path().to_path_buf();
        let server = Running::start_with(
            move || long_text_classifier(&dir, long_text),
            ServeConfig::default(),
        );
        let want = oracle.predict(&[&long, &short]).unwrap();
        assert_eq!(
            want[0].windows,
            if mode == LongText::Chunks { 5 } else { 1 }
        );
        let (status, body) = server.post(json!({"inputs": long, "raw_scores": true}));
        match mode {
            LongText::Chunks => {
                assert_eq!(status, 200, "{body}");
                for (g, w) in by_label(&body, &labels).iter().zip(&want[0].logits) {
                    assert!((g - w).abs() < 1e-5, "{mode}: {g} against {w}");
                }
            }
            _ => {
                assert_eq!(status, 422, "{body}");
                assert!(
                    body["error"].as_str().unwrap().contains("truncate"),
                    "{body}"
                );
            }
        }
        let request = json!({"inputs": [[long], [short]], "raw_scores": true, "truncate": true});
        let (status, body) = server.post(request);
        assert_eq!(status, 200, "{body}");
        for (i, w) in want.iter().enumerate() {
            for (g, w) in by_label(&body[i], &labels).iter().zip(&w.logits) {
                assert!((g - w).abs() < 1e-5, "{mode} input {i}: {g} against {w}");
            }
        }
        server.stop();
    }
}
