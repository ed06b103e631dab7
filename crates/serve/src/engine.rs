//! The inference thread and its batching. burn models are not `Sync` in
//! general (and a GPU backend wants one thread driving it), so one plain
//! thread owns the [`Classifier`] for its whole life: it is loaded there, and
//! handlers only send it tokenized inputs over a channel.
//!
//! Batching is TEI's token-budget batching: when the model is free, the thread
//! takes queued inputs in arrival order until the next one would make the
//! padded batch (inputs × longest) pass `max_batch_tokens` or the batch pass
//! `max_batch_requests`. There is no fixed wait: a lone input runs at once,
//! and under load the queue fills while the previous batch runs.
//!
//! With `workers` above 1 (CPU backends), the loading thread hands a clone of
//! the model (the same weights) to each further worker thread; every worker
//! takes its batches from the one queue, at most an equal share of it among
//! the free workers, and runs them on its own rayon pool.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use tokio::sync::{mpsc, oneshot};
use zhbert_model::{BertForSequenceClassification, ProblemType};
use zhbert_tokenizer::{BertTokenizer, Encoded};
use zhbert_train::{logits_of, Classifier};

use crate::metrics::Metrics;

/// What the server needs to know about the model, taken from the
/// [`Classifier`] on the inference thread.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// Label names in id order.
    pub labels: Vec<String>,
    /// Longest input in tokens, special tokens included.
    pub max_length: usize,
    /// Softmax, sigmoid or raw scores.
    pub problem_type: ProblemType,
    /// Inputs longer than `max_length`: truncated, head and tail, or windows
    /// whose logits are pooled (the [`Classifier`]'s setting).
    pub long_text: zhbert_train::long_text::LongTextOptions,
    /// The tokenizer, for the handlers.
    pub tokenizer: BertTokenizer,
    /// Where the model was loaded from, when it was.
    pub model_dir: Option<std::path::PathBuf>,
}

/// One input waiting for the model; the logits go back through `reply`.
pub(crate) struct Job {
    pub encoded: Encoded,
    pub enqueued: Instant,
    pub reply: oneshot::Sender<Result<Vec<f32>, String>>,
}

/// The handlers' side of the inference thread.
pub(crate) struct Engine {
    pub sender: mpsc::UnboundedSender<Job>,
    pub alive: Arc<AtomicBool>,
}

/// The batch limits, and how many workers run batches.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_batch_tokens: usize,
    pub max_batch_requests: usize,
    /// Inference workers, each running its own batches on its own share of
    /// the cores (see [`crate::ServeConfig::workers`]).
    pub workers: usize,
}

/// The queue every worker takes its batches from, and the input that did not
/// fit the last batch taken.
pub(crate) struct Queue {
    pub receiver: mpsc::UnboundedReceiver<Job>,
    pub carried: Option<Job>,
}

/// What the workers share: the queue (one worker forms its batch at a time)
/// and how many of them are not running a batch.
struct Workers {
    queue: Mutex<Queue>,
    idle: AtomicUsize,
    limits: Limits,
    metrics: Arc<Metrics>,
}

/// What a worker needs for forward passes. A clone of the model shares its
/// weights (burn tensors are reference-counted), so a second worker costs
/// only its activations.
struct Replica<B: Backend> {
    model: BertForSequenceClassification<B>,
    tokenizer: BertTokenizer,
    device: B::Device,
}

impl<B: Backend> Replica<B> {
    fn of(c: &Classifier<B>) -> Self {
        Self {
            model: c.model().clone(),
            tokenizer: c.tokenizer().clone(),
            device: c.device().clone(),
        }
    }
}

/// Starts the inference thread: it loads the model with `load`, runs a
/// warm-up batch, and then serves batches until every sender is dropped.
/// Returns once the warm-up ran (or with the loading error).
pub(crate) fn start<B, F>(
    load: F,
    limits: Limits,
    metrics: Arc<Metrics>,
) -> Result<(Engine, ModelInfo, JoinHandle<()>)>
where
    B: Backend,
    F: FnOnce() -> Result<Classifier<B>> + Send + 'static,
{
    let (sender, receiver) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let alive = Arc::new(AtomicBool::new(false));
    let thread_alive = Arc::clone(&alive);
    let thread = std::thread::Builder::new()
        .name("zhbert-inference".into())
        .spawn(move || {
            let classifier = match load().and_then(|c| warm_up(&c).map(|()| c)) {
                Ok(c) => c,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            if limits.max_batch_tokens < classifier.max_length() {
                let _ = ready_tx.send(Err(anyhow::anyhow!(
                    "max batch tokens {} is below the max length {}: the longest input would never fit a batch",
                    limits.max_batch_tokens,
                    classifier.max_length()
                )));
                return;
            }
            thread_alive.store(true, Ordering::SeqCst);
            let _ = ready_tx.send(Ok(model_info(&classifier)));
            run_workers(&classifier, receiver, limits, metrics);
            thread_alive.store(false, Ordering::SeqCst);
        })
        .context("starting the inference thread")?;
    match ready_rx.recv() {
        Ok(Ok(info)) => Ok((Engine { sender, alive }, info, thread)),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => bail!("the inference thread stopped while loading the model"),
    }
}

fn model_info<B: Backend>(c: &Classifier<B>) -> ModelInfo {
    ModelInfo {
        labels: c.labels().to_vec(),
        max_length: c.max_length(),
        problem_type: c.inference_options().problem_type,
        long_text: *c.long_text(),
        tokenizer: c.tokenizer().clone(),
        model_dir: c.model_dir().map(|p| p.to_path_buf()),
    }
}

/// One forward pass before the server says it is healthy: the first pass of
/// a backend allocates and (on GPUs) compiles, which no client should wait for.
fn warm_up<B: Backend>(c: &Classifier<B>) -> Result<()> {
    let started = Instant::now();
    c.predict(&["warm-up"])
        .context("the warm-up batch failed")?;
    tracing::info!("warm-up batch in {:.3}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Runs `limits.workers` workers on the queue, this thread being the first,
/// until the channel closes and the queue is empty. With several workers,
/// each runs on its own rayon pool of an equal share of the cores: on a CPU,
/// two batches side by side keep every core busy through the single-threaded
/// parts of a forward pass (element-wise ops, small matmuls) that one batch
/// spread over all cores would leave idle.
fn run_workers<B: Backend>(
    classifier: &Classifier<B>,
    receiver: mpsc::UnboundedReceiver<Job>,
    limits: Limits,
    metrics: Arc<Metrics>,
) {
    let workers = Arc::new(Workers {
        queue: Mutex::new(Queue {
            receiver,
            carried: None,
        }),
        idle: AtomicUsize::new(limits.workers),
        limits,
        metrics,
    });
    let threads =
        (limits.workers > 1).then(|| (rayon::current_num_threads() / limits.workers).max(1));
    let mut others = Vec::new();
    for w in 1..limits.workers {
        let (replica, shared) = (Replica::of(classifier), Arc::clone(&workers));
        let spawned = std::thread::Builder::new()
            .name(format!("zhbert-inference-{w}"))
            .spawn(move || worker(replica, &shared, threads));
        match spawned {
            Ok(handle) => others.push(handle),
            Err(e) => {
                // One worker fewer: the others still drain the queue.
                workers.idle.fetch_sub(1, Ordering::SeqCst);
                tracing::error!("starting inference worker {w}: {e}");
            }
        }
    }
    worker(Replica::of(classifier), &workers, threads);
    for handle in others {
        let _ = handle.join();
    }
}

/// One worker: its own rayon pool of `threads` threads when given (else the
/// global pool), and a batch whenever it is free.
fn worker<B: Backend>(replica: Replica<B>, workers: &Workers, threads: Option<usize>) {
    let pool = threads.and_then(|n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("zhbert-compute-{i}"))
            .build()
            .map_err(|e| tracing::warn!("inference worker on the global pool: {e}"))
            .ok()
    });
    match pool {
        Some(pool) => pool.install(move || worker_loop(&replica, workers)),
        None => worker_loop(&replica, workers),
    }
}

fn worker_loop<B: Backend>(replica: &Replica<B>, workers: &Workers) {
    loop {
        let batch = {
            let mut queue = workers.queue.lock().unwrap_or_else(|e| e.into_inner());
            let batch = next_batch(&mut queue, workers.limits, &workers.idle, &workers.metrics);
            if batch.is_some() {
                workers.idle.fetch_sub(1, Ordering::SeqCst);
            }
            batch
        };
        let Some(batch) = batch else { return };
        run_batch(replica, batch, &workers.metrics);
        workers.idle.fetch_add(1, Ordering::SeqCst);
    }
}

/// How many inputs a free worker takes: an equal share of what is queued
/// among the free workers (itself included), so that one worker does not
/// take everything while another has nothing to do.
fn fair_share(queued: usize, idle_workers: usize) -> usize {
    queued.div_ceil(idle_workers.max(1)).max(1)
}

fn padded_tokens(count: usize, longest: usize) -> usize {
    count * longest
}

/// Takes queued inputs in arrival order while they fit the limits and the
/// worker's [`fair_share`]; the first that does not is carried to the next
/// batch. Inputs whose client has gone are dropped here, unrun. `None` once
/// the channel is closed and drained.
pub(crate) fn next_batch(
    queue: &mut Queue,
    limits: Limits,
    idle_workers: &AtomicUsize,
    metrics: &Metrics,
) -> Option<Vec<Job>> {
    let mut batch: Vec<Job> = Vec::new();
    let mut longest = 0;
    let mut max_requests = limits.max_batch_requests;
    loop {
        let job = match queue.carried.take() {
            Some(job) => job,
            None if batch.is_empty() => queue.receiver.blocking_recv()?,
            None => match queue.receiver.try_recv() {
                Ok(job) => job,
                Err(_) => break,
            },
        };
        if job.reply.is_closed() {
            metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
            metrics.inputs_dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if batch.is_empty() {
            let queued = metrics.queue_depth.load(Ordering::Relaxed);
            let share = fair_share(queued, idle_workers.load(Ordering::SeqCst));
            max_requests = limits.max_batch_requests.min(share);
        }
        let len = job.encoded.input_ids.len();
        let fits = padded_tokens(batch.len() + 1, longest.max(len)) <= limits.max_batch_tokens
            && batch.len() < max_requests;
        if !batch.is_empty() && !fits {
            queue.carried = Some(job);
            break;
        }
        longest = longest.max(len);
        metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
        batch.push(job);
    }
    Some(batch)
}

/// Runs one batch, sorted by length and split into forward passes of similar
/// lengths ([`length_groups`]), shortest first, and sends each input its
/// logits as soon as its pass is done. A panic inside the backend fails that
/// pass's requests (424), not the server.
fn run_batch<B: Backend>(replica: &Replica<B>, mut batch: Vec<Job>, metrics: &Metrics) {
    let started = Instant::now();
    batch.sort_by_key(|j| std::cmp::Reverse(j.encoded.input_ids.len()));
    let longest = batch.first().map_or(0, |j| j.encoded.input_ids.len());
    for job in &batch {
        metrics
            .queue_duration
            .observe(started.duration_since(job.enqueued).as_secs_f64());
    }
    metrics.batch_requests.observe(batch.len() as f64);
    metrics
        .batch_tokens
        .observe(padded_tokens(batch.len(), longest) as f64);
    let (encoded, mut replies): (Vec<Encoded>, Vec<_>) =
        batch.into_iter().map(|j| (j.encoded, j.reply)).unzip();
    // Shortest first: the short inputs' answers need not wait for the long.
    for group in length_groups(&encoded).into_iter().rev() {
        let group_replies = replies.split_off(replies.len() - group.len());
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            logits_of(
                &replica.model,
                &replica.tokenizer,
                group,
                group.len(),
                &replica.device,
            )
        }));
        match result {
            Ok(Ok(logits)) => {
                for (reply, row) in group_replies.into_iter().zip(logits) {
                    let _ = reply.send(Ok(row));
                }
            }
            Ok(Err(e)) => fail(group_replies, format!("inference failed: {e:#}")),
            Err(_) => fail(group_replies, "inference panicked".to_string()),
        }
    }
    metrics
        .inference_duration
        .observe(started.elapsed().as_secs_f64());
}

/// Splits inputs sorted longest first into forward passes whose inputs are
/// all at least 3/4 of the pass's longest: arrival order mixes a 300-token
/// review with 20-token ones, and one pass padding all to 300 would spend
/// most of its work (attention quadratically) on padding.
fn length_groups(sorted: &[Encoded]) -> Vec<&[Encoded]> {
    let mut groups = Vec::new();
    let mut start = 0;
    for i in 1..=sorted.len() {
        let longest = sorted[start].input_ids.len();
        if i == sorted.len() || sorted[i].input_ids.len() * 4 < longest * 3 {
            groups.push(&sorted[start..i]);
            start = i;
        }
    }
    groups
}

fn fail(replies: Vec<oneshot::Sender<Result<Vec<f32>, String>>>, message: String) {
    tracing::error!("{message}");
    for reply in replies {
        let _ = reply.send(Err(message.clone()));
    }
}

/// Waits up to `limit` for the inference thread to finish its queue.
pub(crate) fn join(thread: JoinHandle<()>, limit: Duration) {
    let started = Instant::now();
    while !thread.is_finished() && started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(10));
    }
    if thread.is_finished() {
        let _ = thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(len: usize) -> (Job, oneshot::Receiver<Result<Vec<f32>, String>>) {
        let (reply, receiver) = oneshot::channel();
        let encoded = Encoded {
            input_ids: vec![1; len],
            token_type_ids: vec![0; len],
            attention_mask: vec![1; len],
            truncated_tokens: 0,
        };
        let enqueued = Instant::now();
        (
            Job {
                encoded,
                enqueued,
                reply,
            },
            receiver,
        )
    }

    fn lengths(batch: &[Job]) -> Vec<usize> {
        batch.iter().map(|j| j.encoded.input_ids.len()).collect()
    }

    #[test]
    fn batches_follow_the_token_budget_in_arrival_order() {
        let (sender, receiver) = mpsc::unbounded_channel();
        let metrics = Metrics::default();
        let mut kept = Vec::new();
        for len in [10, 30, 20, 40, 5, 5, 5] {
            let (j, r) = job(len);
            kept.push(r);
            metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
            sender.send(j).unwrap();
        }
        // A client that went away: its input is dropped, never run.
        let (gone, _) = job(7);
        metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
        sender.send(gone).unwrap();
        drop(sender);
        let limits = Limits {
            max_batch_tokens: 100,
            max_batch_requests: 3,
            workers: 1,
        };
        let mut queue = Queue {
            receiver,
            carried: None,
        };
        let idle = AtomicUsize::new(1);
        let mut next = || next_batch(&mut queue, limits, &idle, &metrics).map(|b| lengths(&b));
        // 10, 30, 20: 3 × 30 = 90 tokens; a 4th would pass max_batch_requests.
        assert_eq!(next(), Some(vec![10, 30, 20]));
        // 40 then 5: 2 × 40 = 80; a third 5 makes 120 > 100.
        assert_eq!(next(), Some(vec![40, 5]));
        assert_eq!(next(), Some(vec![5, 5]));
        assert_eq!(next(), None);
        assert_eq!(metrics.queue_depth.load(Ordering::Relaxed), 0);
        assert_eq!(metrics.inputs_dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn free_workers_share_the_queue() {
        let (sender, receiver) = mpsc::unbounded_channel();
        let metrics = Metrics::default();
        let mut kept = Vec::new();
        for len in [10; 7] {
            let (j, r) = job(len);
            kept.push(r);
            metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
            sender.send(j).unwrap();
        }
        let limits = Limits {
            max_batch_tokens: 1000,
            max_batch_requests: usize::MAX,
            workers: 3,
        };
        let mut queue = Queue {
            receiver,
            carried: None,
        };
        // Three free workers, 7 queued: the first takes 3 (7 / 3 rounded up);
        // with two free and 4 left, the next takes 2; the last one, the rest.
        let idle = AtomicUsize::new(3);
        let mut next = || next_batch(&mut queue, limits, &idle, &metrics).map(|b| b.len());
        assert_eq!(next(), Some(3));
        idle.store(2, Ordering::SeqCst);
        assert_eq!(next(), Some(2));
        idle.store(1, Ordering::SeqCst);
        assert_eq!(next(), Some(2));
    }

    #[test]
    fn length_groups_keep_padding_under_a_quarter() {
        let sorted: Vec<Encoded> = [100, 90, 76, 74, 20, 16, 15]
            .map(|n| job(n).0.encoded)
            .to_vec();
        let groups: Vec<Vec<usize>> = length_groups(&sorted)
            .iter()
            .map(|g| g.iter().map(|e| e.input_ids.len()).collect())
            .collect();
        assert_eq!(groups, [vec![100, 90, 76], vec![74], vec![20, 16, 15]]);
    }
}
