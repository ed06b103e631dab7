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

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use tokio::sync::{mpsc, oneshot};
use zhbert_model::ProblemType;
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

/// The batch limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_batch_tokens: usize,
    pub max_batch_requests: usize,
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
            serve_batches(&classifier, receiver, limits, &metrics);
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

/// The thread's loop: a batch as soon as the model is free, until the
/// channel closes and the queue is empty.
fn serve_batches<B: Backend>(
    classifier: &Classifier<B>,
    mut receiver: mpsc::UnboundedReceiver<Job>,
    limits: Limits,
    metrics: &Metrics,
) {
    let mut carried = None;
    while let Some(batch) = next_batch(&mut receiver, &mut carried, limits, metrics) {
        run_batch(classifier, batch, metrics);
    }
}

fn padded_tokens(count: usize, longest: usize) -> usize {
    count * longest
}

/// Takes queued inputs in arrival order while they fit the limits; the first
/// that does not is carried to the next batch. Inputs whose client has gone
/// are dropped here, unrun. `None` once the channel is closed and drained.
pub(crate) fn next_batch(
    receiver: &mut mpsc::UnboundedReceiver<Job>,
    carried: &mut Option<Job>,
    limits: Limits,
    metrics: &Metrics,
) -> Option<Vec<Job>> {
    let mut batch: Vec<Job> = Vec::new();
    let mut longest = 0;
    loop {
        let job = match carried.take() {
            Some(job) => job,
            None if batch.is_empty() => receiver.blocking_recv()?,
            None => match receiver.try_recv() {
                Ok(job) => job,
                Err(_) => break,
            },
        };
        if job.reply.is_closed() {
            metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
            continue;
        }
        let len = job.encoded.input_ids.len();
        let fits = padded_tokens(batch.len() + 1, longest.max(len)) <= limits.max_batch_tokens
            && batch.len() < limits.max_batch_requests;
        if !batch.is_empty() && !fits {
            *carried = Some(job);
            break;
        }
        longest = longest.max(len);
        metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
        batch.push(job);
    }
    Some(batch)
}

/// Runs one batch, sorted by length and split into forward passes of similar
/// lengths ([`length_groups`]), and sends each input its logits. A panic
/// inside the backend fails this batch's requests (424), not the server.
fn run_batch<B: Backend>(classifier: &Classifier<B>, mut batch: Vec<Job>, metrics: &Metrics) {
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
    let (encoded, replies): (Vec<Encoded>, Vec<_>) =
        batch.into_iter().map(|j| (j.encoded, j.reply)).unzip();
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let mut logits = Vec::with_capacity(encoded.len());
        for group in length_groups(&encoded) {
            logits.extend(logits_of(
                classifier.model(),
                classifier.tokenizer(),
                group,
                group.len(),
                classifier.device(),
            )?);
        }
        anyhow::Ok(logits)
    }));
    metrics
        .inference_duration
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(Ok(logits)) => {
            for (reply, row) in replies.into_iter().zip(logits) {
                let _ = reply.send(Ok(row));
            }
        }
        Ok(Err(e)) => fail(replies, format!("inference failed: {e:#}")),
        Err(_) => fail(replies, "inference panicked".to_string()),
    }
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
        let (sender, mut receiver) = mpsc::unbounded_channel();
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
        };
        let mut carried = None;
        let mut next =
            || next_batch(&mut receiver, &mut carried, limits, &metrics).map(|b| lengths(&b));
        // 10, 30, 20: 3 × 30 = 90 tokens; a 4th would pass max_batch_requests.
        assert_eq!(next(), Some(vec![10, 30, 20]));
        // 40 then 5: 2 × 40 = 80; a third 5 makes 120 > 100.
        assert_eq!(next(), Some(vec![40, 5]));
        assert_eq!(next(), Some(vec![5, 5]));
        assert_eq!(next(), None);
        assert_eq!(metrics.queue_depth.load(Ordering::Relaxed), 0);
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
