//! `zhbert-serve`: a zhbert classifier over HTTP, with the `/predict` API of
//! Hugging Face's text-embeddings-inference (TEI) and its token-budget dynamic
//! batching. `zhbert serve --model DIR` runs it; this crate is the same server
//! as a library, whose [`axum::Router`] another app can mount.
//!
//! ```no_run
//! use burn::backend::Flex;
//! use zhbert_serve::{shutdown_signal, ServeConfig, Server};
//! use zhbert_train::Classifier;
//!
//! # fn main() -> anyhow::Result<()> {
//! let config = ServeConfig { model_id: "runs/reviews".into(), ..Default::default() };
//! // The model is loaded on the inference thread, which owns it from then on.
//! let server = Server::start(
//!     || Classifier::<Flex>::load("runs/reviews", &Default::default()),
//!     config,
//! )?;
//! tokio::runtime::Runtime::new()?.block_on(async {
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//!     // Or mount it: Router::new().nest("/classify", server.router())
//!     server.serve(listener, shutdown_signal()).await
//! })?;
//! # Ok(())
//! # }
//! ```
//!
//! ```sh
//! curl 127.0.0.1:8080/predict -H 'Content-Type: application/json' -d '{"inputs": "质量很好"}'
//! # [{"score":0.98,"label":"正面"},{"score":0.02,"label":"负面"}]
//! ```
//!
//! How it works: handlers parse and tokenize (on tokio's worker threads, in
//! parallel) and queue each input; one thread owns the model and, whenever it
//! is free, takes queued inputs in arrival order until the padded batch
//! (inputs × longest) would pass [`ServeConfig::max_batch_tokens`] or the
//! batch [`ServeConfig::max_batch_requests`], runs it, and answers each input.
//! A lone request runs at once; under load the queue fills while a batch runs.
//! With [`ServeConfig::workers`] above 1 (CPU backends), that many threads run
//! batches side by side, each on its share of the cores. A request body has
//! [`ServeConfig::body_timeout`] to arrive (else 408); a request whose client
//! disconnects is dropped, and its inputs still queued never run.

pub mod api;
mod engine;
pub mod metrics;
mod routes;
mod truncation;

use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Result};
use burn::tensor::backend::Backend;
use tokio::sync::Semaphore;
use zhbert_train::Classifier;

pub use engine::ModelInfo;
pub use metrics::Metrics;

/// The server's limits and what `/info` reports. The defaults are
/// `zhbert serve`'s (and TEI's where TEI has the setting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// The model's name in `/info` (the folder or Hub id given).
    pub model_id: String,
    /// The backend's name in `/info`.
    pub backend: String,
    /// Most padded tokens (inputs × longest) in one forward pass; at least
    /// the model's max length. Default 16384.
    pub max_batch_tokens: usize,
    /// Most inputs in one forward pass (`None`: only the token budget limits).
    pub max_batch_requests: Option<usize>,
    /// Requests handled at once; one more is answered 429. Default 512.
    pub max_concurrent_requests: usize,
    /// Most inputs in one request; more is answered 413. Default 32.
    pub max_client_batch_size: usize,
    /// Truncate long inputs when a request does not say (`truncate`). Default
    /// false: a text longer than the max length is answered 422, as in TEI.
    pub auto_truncate: bool,
    /// Largest request body in bytes; larger is answered 413. Default 2 MB (TEI's).
    pub payload_limit: usize,
    /// Longest a request body may take to arrive; a slower one is answered
    /// 408, so a slow client cannot hold a request slot. Default 30 s.
    pub body_timeout: Duration,
    /// Inference workers: each takes its own batches from the queue and runs
    /// them on an equal share of the cores (a rayon pool of its own). Default
    /// 1 (one batch at a time over all cores, what a GPU wants); on a CPU
    /// backend, [`default_workers`] keeps every core busy under load.
    pub workers: usize,
}

/// The workers `zhbert serve` runs on a CPU backend: one per core, at most
/// 4 (above that, a lone request would run on too small a share of the cores).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            model_id: String::new(),
            backend: String::new(),
            max_batch_tokens: 16384,
            max_batch_requests: None,
            max_concurrent_requests: 512,
            max_client_batch_size: 32,
            auto_truncate: false,
            payload_limit: 2_000_000,
            body_timeout: Duration::from_secs(30),
            workers: 1,
        }
    }
}

impl ServeConfig {
    fn check(&self) -> Result<()> {
        for (name, value) in [
            ("max batch tokens", self.max_batch_tokens),
            ("max batch requests", self.max_batch_requests.unwrap_or(1)),
            ("max concurrent requests", self.max_concurrent_requests),
            ("max client batch size", self.max_client_batch_size),
            ("payload limit", self.payload_limit),
            ("workers", self.workers),
        ] {
            if value == 0 {
                bail!("{name} 0: must be at least 1");
            }
        }
        if self.body_timeout.is_zero() {
            bail!("body timeout 0: must be more than 0 s");
        }
        Ok(())
    }
}

/// A loaded model behind the HTTP routes, with its inference thread.
pub struct Server {
    state: Arc<routes::AppState>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts the inference thread, loads the model there with `load` (so the
    /// model never has to cross threads), runs a warm-up batch, and returns
    /// once the server can answer. Errors of `load` come back here.
    pub fn start<B, F>(load: F, config: ServeConfig) -> Result<Self>
    where
        B: Backend,
        F: FnOnce() -> Result<Classifier<B>> + Send + 'static,
    {
        config.check()?;
        let metrics = Arc::new(Metrics::default());
        let limits = engine::Limits {
            max_batch_tokens: config.max_batch_tokens,
            max_batch_requests: config.max_batch_requests.unwrap_or(usize::MAX),
            workers: config.workers,
        };
        let (engine, info, thread) = engine::start(load, limits, Arc::clone(&metrics))?;
        let state = routes::AppState {
            engine,
            info,
            permits: Arc::new(Semaphore::new(config.max_concurrent_requests)),
            config,
            metrics,
        };
        Ok(Self {
            state: Arc::new(state),
            thread: Some(thread),
        })
    }

    /// [`Server::start`] with a classifier already loaded (on a backend whose
    /// models may move to another thread).
    pub fn new<B: Backend>(classifier: Classifier<B>, config: ServeConfig) -> Result<Self>
    where
        Classifier<B>: Send + 'static,
    {
        Self::start(move || Ok(classifier), config)
    }

    /// The routes, to serve or to mount in another app (`nest`, `merge`).
    pub fn router(&self) -> axum::Router {
        routes::router(Arc::clone(&self.state))
    }

    /// The model's labels, max length and tokenizer.
    pub fn model_info(&self) -> &ModelInfo {
        &self.state.info
    }

    /// The settings it runs with.
    pub fn config(&self) -> &ServeConfig {
        &self.state.config
    }

    /// The metrics `/metrics` reports.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.state.metrics)
    }

    /// Serves on `listener` until `shutdown` completes; then stops accepting,
    /// answers every request already accepted, and stops the inference thread.
    /// Returns the metrics, whose response counts say what was answered.
    pub async fn serve(
        mut self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Arc<Metrics>> {
        let metrics = self.metrics();
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await?;
        let thread = self.thread.take();
        // Every handler has finished: dropping the state closes the queue, and
        // the inference thread ends once it is empty.
        drop(self);
        if let Some(thread) = thread {
            tokio::task::spawn_blocking(move || engine::join(thread, Duration::from_secs(30)))
                .await?;
        }
        Ok(metrics)
    }
}

/// For programs without a tokio runtime (as `zhbert serve`): serves `server`
/// on an already bound listener, on a runtime of its own, until Ctrl-C or
/// SIGTERM, then answers what was accepted and returns the metrics.
pub fn serve_blocking(server: Server, listener: std::net::TcpListener) -> Result<Arc<Metrics>> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        server.serve(listener, shutdown_signal()).await
    })
}

/// Completes on Ctrl-C or SIGTERM (what `docker stop` and Kubernetes send).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: answering the requests already accepted");
}
