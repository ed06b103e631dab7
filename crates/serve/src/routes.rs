//! The HTTP routes: TEI's `/predict`, `/health`, `/info`, `/metrics` (and
//! its aliases `/`, `/invocations`, `/ping`), JSON errors for everything else.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use zhbert_model::ProblemType;
use zhbert_tokenizer::Encoded;
use zhbert_train::inference::softmax_row;
use zhbert_train::long_text::LongText;

use crate::api::{
    ApiError, PredictInputs, PredictRequest, PredictResponse, Scored, Sequence, TruncationDirection,
};
use crate::engine::{Engine, Job, ModelInfo};
use crate::metrics::Metrics;
use crate::truncation::encode_left;
use crate::ServeConfig;

/// What every handler shares.
pub(crate) struct AppState {
    pub engine: Engine,
    pub info: ModelInfo,
    pub config: ServeConfig,
    pub permits: Arc<Semaphore>,
    pub metrics: Arc<Metrics>,
}

type Shared = State<Arc<AppState>>;

pub(crate) fn router(state: Arc<AppState>) -> Router {
    let metrics = Arc::clone(&state.metrics);
    Router::new()
        .route("/predict", post(predict))
        .route("/", post(predict).get(health))
        .route("/invocations", post(predict))
        .route("/health", get(health))
        .route("/ping", get(health))
        .route("/info", get(info))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(metrics, track))
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

/// Counts in-flight requests and every response by status; a guard, so a
/// request whose client went away (hyper then drops the handler, and with it
/// its place in the queue) is taken off the gauge and counted as cancelled.
async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    struct InFlight {
        metrics: Arc<Metrics>,
        answered: bool,
    }
    impl Drop for InFlight {
        fn drop(&mut self) {
            self.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
            if !self.answered {
                self.metrics
                    .requests_cancelled
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let mut guard = InFlight {
        metrics: Arc::clone(&metrics),
        answered: false,
    };
    let started = Instant::now();
    let response = next.run(request).await;
    guard.answered = true;
    metrics.record_response(response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

async fn predict(State(state): Shared, body: Body) -> Result<Json<PredictResponse>, ApiError> {
    // The permit is taken before the body is read, so that at most
    // max_concurrent_requests bodies are ever held: backpressure, not a queue.
    let _permit: OwnedSemaphorePermit = Arc::clone(&state.permits)
        .try_acquire_owned()
        .map_err(|_| ApiError::overloaded())?;
    let bytes = read_body(body, state.config.payload_limit, state.config.body_timeout).await?;
    let request = PredictRequest::from_json(&bytes)?;
    let single = matches!(request.inputs, PredictInputs::Single(_));
    let inputs = request.inputs.into_vec();
    if inputs.len() > state.config.max_client_batch_size {
        return Err(ApiError::too_large(format!(
            "batch size {} > maximum allowed batch size {}",
            inputs.len(),
            state.config.max_client_batch_size
        )));
    }
    let truncate = request.truncate.unwrap_or(state.config.auto_truncate);
    let direction = request.truncation_direction;
    let encoded = inputs
        .iter()
        .enumerate()
        .map(|(i, s)| encode(&state.info, s, i, single, truncate, direction))
        .collect::<Result<Vec<_>, _>>()?;
    // One job per row: an input split into windows (--long-text chunks) has several.
    let receivers = encoded
        .into_iter()
        .map(|rows| rows.into_iter().map(|e| enqueue(&state, e)).collect())
        .collect::<Result<Vec<Vec<_>>, _>>()?;
    let mut answers = Vec::with_capacity(receivers.len());
    for windows in receivers {
        let mut rows = Vec::with_capacity(windows.len());
        for receiver in windows {
            rows.push(
                receiver
                    .await
                    .map_err(|_| ApiError::backend("the inference thread stopped".into()))?
                    .map_err(ApiError::backend)?,
            );
        }
        let logits = match rows.len() {
            1 => rows.remove(0),
            _ => zhbert_train::long_text::pool_rows(&rows, state.info.long_text.pool),
        };
        answers.push(scores(&state.info, logits, request.raw_scores));
    }
    Ok(Json(match (single, answers.pop()) {
        (true, Some(answer)) => PredictResponse::Single(answer),
        (_, last) => {
            answers.extend(last);
            PredictResponse::Batch(answers)
        }
    }))
}

/// The whole body, within `limit` bytes and `timeout`: a client that sends
/// slower would hold its request slot (a permit) as long as it likes.
async fn read_body(
    body: Body,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<axum::body::Bytes, ApiError> {
    let read = tokio::time::timeout(timeout, axum::body::to_bytes(body, limit));
    let Ok(read) = read.await else {
        return Err(ApiError::timeout(format!(
            "the request body did not arrive within {:.1} s",
            timeout.as_secs_f64()
        )));
    };
    read.map_err(|e| {
        let inner = e.into_inner();
        if inner.is::<http_body_util::LengthLimitError>() {
            ApiError::too_large(format!("the request body is larger than {limit} bytes"))
        } else {
            ApiError::validation(format!("reading the request body: {inner}"))
        }
    })
}

/// Tokenizes one input into its rows (several for a long text split into
/// windows); an empty text, and a text longer than the max length without
/// `truncate` that would be cut (truncate, head-tail), are refused (422) as
/// TEI refuses them.
fn encode(
    info: &ModelInfo,
    input: &Sequence,
    index: usize,
    single: bool,
    truncate: bool,
    direction: TruncationDirection,
) -> Result<Vec<Encoded>, ApiError> {
    let which = if single {
        "the input".to_string()
    } else {
        format!("input {index}")
    };
    let (a, b) = match input {
        Sequence::Single(a) => (a.as_str(), None),
        Sequence::Pair(a, b) => (a.as_str(), Some(b.as_str())),
    };
    if a.trim().is_empty() || b.is_some_and(|b| b.trim().is_empty()) {
        return Err(ApiError::validation(format!(
            "{which} is empty or only whitespace: there is nothing to classify"
        )));
    }
    let rows = match (direction, info.long_text.mode) {
        (TruncationDirection::Right, _) => info
            .long_text
            .encode(&info.tokenizer, a, b, info.max_length),
        (TruncationDirection::Left, LongText::Truncate) => {
            encode_left(&info.tokenizer, a, b, info.max_length).map(|e| vec![e])
        }
        (TruncationDirection::Left, mode) => {
            return Err(ApiError::validation(format!(
                "truncation_direction \"Left\" applies to --long-text truncate; this server cuts long texts with --long-text {mode}"
            )))
        }
    }
    .map_err(|e| ApiError::tokenizer(format!("{which}: {e}")))?;
    let cut: usize = rows.iter().map(|r| r.truncated_tokens).sum();
    if cut > 0 && !truncate {
        return Err(ApiError::validation(format!(
            "`inputs` must have at most {} tokens. Given: {} ({which}; send \"truncate\": true to cut it)",
            info.max_length,
            rows[0].input_ids.len() + cut
        )));
    }
    Ok(rows)
}

fn enqueue(
    state: &AppState,
    encoded: Encoded,
) -> Result<oneshot::Receiver<Result<Vec<f32>, String>>, ApiError> {
    let (reply, receiver) = oneshot::channel();
    let job = Job {
        encoded,
        enqueued: Instant::now(),
        reply,
    };
    state.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
    state.engine.sender.send(job).map_err(|_| {
        state.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
        ApiError::unhealthy()
    })?;
    Ok(receiver)
}

/// Every label with its score, highest first (ties: lower label id first),
/// the scores computed as `zhbert predict` computes them.
fn scores(info: &ModelInfo, logits: Vec<f32>, raw_scores: bool) -> Vec<Scored> {
    let values = match (raw_scores, info.problem_type) {
        (true, _) | (_, ProblemType::Regression) => logits,
        (false, ProblemType::SingleLabelClassification) => softmax_row(&logits),
        (false, ProblemType::MultiLabelClassification) => {
            logits.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect()
        }
    };
    let mut scored: Vec<Scored> = values
        .into_iter()
        .zip(&info.labels)
        .map(|(score, label)| Scored {
            score,
            label: label.clone(),
        })
        .collect();
    scored.sort_by(|x, y| y.score.total_cmp(&x.score));
    scored
}

async fn health(State(state): Shared) -> Result<StatusCode, ApiError> {
    if state.engine.alive.load(Ordering::SeqCst) {
        Ok(StatusCode::OK)
    } else {
        Err(ApiError::unhealthy())
    }
}

async fn info(State(state): Shared) -> Json<serde_json::Value> {
    let labels = &state.info.labels;
    let id2label: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i.to_string(), l.as_str().into()))
        .collect();
    let label2id: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.clone(), i.into()))
        .collect();
    let c = &state.config;
    Json(serde_json::json!({
        "model_id": c.model_id,
        "model_sha": null,
        "model_dtype": "float32",
        "model_type": {"classifier": {"id2label": id2label, "label2id": label2id}},
        "max_concurrent_requests": c.max_concurrent_requests,
        "max_input_length": state.info.max_length,
        "max_batch_tokens": c.max_batch_tokens,
        "max_batch_requests": c.max_batch_requests,
        "max_client_batch_size": c.max_client_batch_size,
        "auto_truncate": c.auto_truncate,
        "tokenization_workers": tokio::runtime::Handle::current().metrics().num_workers(),
        "version": env!("CARGO_PKG_VERSION"),
        "sha": null,
        "docker_label": null,
        "backend": c.backend,
        "labels": labels,
        "problem_type": state.info.problem_type,
        "payload_limit": c.payload_limit,
        "workers": c.workers,
        "body_timeout_s": c.body_timeout.as_secs_f64(),
    }))
}

async fn metrics_text(State(state): Shared) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        error: format!(
            "no route {}: the routes are POST /predict, GET /health, GET /info, GET /metrics",
            uri.path()
        ),
        error_type: "not_found",
    }
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        error: format!(
            "method {} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
        error_type: "method_not_allowed",
    }
}
