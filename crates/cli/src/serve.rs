//! `zhbert serve`: the HTTP classifier of [`zhbert_serve`] on a port, until
//! Ctrl-C or SIGTERM.

use std::io::Write;

use burn::tensor::backend::Backend;
use zhbert_serve::{serve_blocking, ServeConfig, Server};
use zhbert_train::{Classifier, ClassifierOptions};

use crate::predict::with_flag_for_fresh_head;
use crate::{with_backend, BackendArgs, BackendKind};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Model folder (HF layout) or Hub id.
    #[arg(long)]
    model: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port; the address is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Longest input in tokens (default: the model's limit, at most 512); longer
    /// inputs are refused (422) unless the request says `"truncate": true`.
    #[arg(long)]
    max_length: Option<usize>,
    #[command(flatten)]
    long_text: crate::long_text::LongTextArgs,
    /// Most padded tokens (inputs × longest) in one forward pass.
    #[arg(long, default_value_t = 16384, value_parser = at_least_one)]
    max_batch_tokens: usize,
    /// Most inputs in one forward pass (default: only the token budget limits).
    #[arg(long, value_parser = at_least_one)]
    max_batch_requests: Option<usize>,
    /// Requests handled at once; more are answered 429 (backpressure).
    #[arg(long, default_value_t = 512, value_parser = at_least_one)]
    max_concurrent_requests: usize,
    /// Most inputs in one request; more are answered 413.
    #[arg(long, default_value_t = 32, value_parser = at_least_one)]
    max_client_batch_size: usize,
    /// Truncate inputs longer than the max length unless a request says `"truncate": false`.
    #[arg(long)]
    auto_truncate: bool,
    /// Largest request body in bytes; larger are answered 413.
    #[arg(long, default_value_t = 2_000_000, value_parser = at_least_one)]
    payload_limit: usize,
    /// Seconds a request body may take to arrive; slower is answered 408.
    #[arg(long, default_value_t = 30, value_parser = at_least_one)]
    body_timeout: usize,
    /// Inference workers, each running its own batches on its share of the
    /// cores (default: one per core up to 4 on CPU backends, 1 on GPUs).
    #[arg(long, value_parser = at_least_one)]
    workers: Option<usize>,
    /// Accept a checkpoint without a trained head and serve a random one (for testing only).
    #[arg(long)]
    allow_fresh_head: bool,
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    quantize: crate::quantize::QuantizeArgs,
}

fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let kind = args.backend.kind()?;
    let backend = kind.feature().to_string();
    with_backend!(kind, args.backend.device, |B, device| serve::<B>(
        &args, device, backend
    ))
}

fn serve<B: Backend>(args: &ServeArgs, device: B::Device, backend: String) -> anyhow::Result<()> {
    let options = ClassifierOptions {
        allow_fresh_head: args.allow_fresh_head,
        batch_size: 32,
        max_length: None,
        pad_to_multiple_of: args.backend.pad_to_multiple_of,
        quantize: args.quantize.for_backend(args.backend.kind()?)?,
    };
    let (model, max_length) = (args.model.clone(), args.max_length);
    let long_text = args.long_text.clone();
    let load = move || {
        let classifier = Classifier::<B>::load_with(&model, &options, &device).map_err(|e| {
            with_flag_for_fresh_head(e, "fine-tune it first (zhbert train), or pass --allow-fresh-head to serve a random head")
        })?;
        long_text.apply(classifier, max_length)
    };
    let config = ServeConfig {
        model_id: args.model.clone(),
        backend,
        max_batch_tokens: args.max_batch_tokens,
        max_batch_requests: args.max_batch_requests,
        max_concurrent_requests: args.max_concurrent_requests,
        max_client_batch_size: args.max_client_batch_size,
        auto_truncate: args.auto_truncate,
        payload_limit: args.payload_limit,
        body_timeout: std::time::Duration::from_secs(args.body_timeout as u64),
        // Batches side by side pay on a CPU; a GPU wants one stream of them.
        workers: args.workers.unwrap_or(match args.backend.kind()? {
            BackendKind::Flex | BackendKind::Ndarray => zhbert_serve::default_workers(),
            _ => 1,
        }),
    };
    // Bind first: a port in use ends at once, before the model loads.
    let address = format!("{}:{}", args.host, args.port);
    let listener = std::net::TcpListener::bind(&address)
        .map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))?;
    let server = Server::start(load, config)?;
    let local = listener.local_addr()?;
    let info = server.model_info();
    tracing::info!(
        "{} labels ({}), max length {}",
        info.labels.len(),
        info.labels.join(", "),
        info.max_length
    );
    // On stdout and flushed: scripts and tests started with --port 0 read it.
    println!("zhbert serve: listening on http://{local}");
    std::io::stdout().flush()?;
    let metrics = serve_blocking(server, listener)?;
    let responses = metrics.responses();
    let total: u64 = responses.values().sum();
    let by_status: Vec<String> = responses
        .iter()
        .map(|(s, n)| format!("{n} × {s}"))
        .collect();
    println!(
        "zhbert serve: stopped after answering {total} requests ({})",
        by_status.join(", ")
    );
    Ok(())
}
