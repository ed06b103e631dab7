//! Prometheus metrics in the text exposition format. A handful of counters
//! and histograms behind short mutexes: written once per request or batch,
//! far from any contention that would justify a metrics crate and its
//! global recorder (which a router mounted in another app would fight over).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Latency buckets, in seconds.
const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Batch sizes in requests.
const REQUESTS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
/// Batch sizes in padded tokens.
const TOKENS: &[f64] = &[
    16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0,
];

/// A cumulative histogram over fixed bucket bounds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    data: Mutex<HistogramData>,
}

#[derive(Debug, Default, Clone)]
struct HistogramData {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            data: Mutex::new(HistogramData {
                counts: vec![0; bounds.len()],
                ..Default::default()
            }),
        }
    }

    /// Records one value.
    pub fn observe(&self, value: f64) {
        let mut d = self.data.lock().unwrap_or_else(|e| e.into_inner());
        for (count, &bound) in d.counts.iter_mut().zip(self.bounds) {
            if value <= bound {
                *count += 1;
            }
        }
        d.sum += value;
        d.count += 1;
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.data.lock().unwrap_or_else(|e| e.into_inner()).count
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let d = self.data.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (count, bound) in d.counts.iter().zip(self.bounds) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", d.count);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", d.sum, d.count);
    }
}

/// Everything `/metrics` reports.
#[derive(Debug)]
pub struct Metrics {
    responses: Mutex<BTreeMap<u16, u64>>,
    /// Seconds from the request's arrival to its response.
    pub request_duration: Histogram,
    /// Seconds an input waited in the queue before its batch ran.
    pub queue_duration: Histogram,
    /// Seconds of each batch's forward pass.
    pub inference_duration: Histogram,
    /// Inputs per batch.
    pub batch_requests: Histogram,
    /// Padded tokens per batch (inputs × longest).
    pub batch_tokens: Histogram,
    /// Inputs waiting for the model now.
    pub queue_depth: AtomicUsize,
    /// Requests being handled now.
    pub in_flight: AtomicUsize,
    /// Requests whose client went away before the response was ready
    /// (closed the connection): they have no status.
    pub requests_cancelled: AtomicU64,
    /// Inputs taken off the queue unrun because their request was cancelled.
    pub inputs_dropped: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            responses: Mutex::default(),
            request_duration: Histogram::new(SECONDS),
            queue_duration: Histogram::new(SECONDS),
            inference_duration: Histogram::new(SECONDS),
            batch_requests: Histogram::new(REQUESTS),
            batch_tokens: Histogram::new(TOKENS),
            queue_depth: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            requests_cancelled: AtomicU64::new(0),
            inputs_dropped: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Counts one response with its status.
    pub fn record_response(&self, status: u16, seconds: f64) {
        *self
            .responses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(status)
            .or_default() += 1;
        self.request_duration.observe(seconds);
    }

    /// Responses sent so far, by status.
    pub fn responses(&self) -> BTreeMap<u16, u64> {
        self.responses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP zhbert_requests_total HTTP responses sent, by status.\n");
        out.push_str("# TYPE zhbert_requests_total counter\n");
        for (status, n) in self.responses() {
            let _ = writeln!(out, "zhbert_requests_total{{status=\"{status}\"}} {n}");
        }
        let histograms = [
            (
                &self.request_duration,
                "zhbert_request_duration_seconds",
                "Time from request to response.",
            ),
            (
                &self.queue_duration,
                "zhbert_queue_duration_seconds",
                "Time an input waited for its batch.",
            ),
            (
                &self.inference_duration,
                "zhbert_inference_duration_seconds",
                "Time of each batch's forward pass.",
            ),
            (
                &self.batch_requests,
                "zhbert_batch_size_requests",
                "Inputs per batch.",
            ),
            (
                &self.batch_tokens,
                "zhbert_batch_size_tokens",
                "Padded tokens per batch (inputs times the longest).",
            ),
        ];
        for (h, name, help) in histograms {
            h.render(&mut out, name, help);
        }
        // Counters and gauges: one value each, read now.
        let values = [
            (
                self.requests_cancelled.load(Ordering::Relaxed),
                "zhbert_requests_cancelled_total",
                "Requests whose client went away before the response.",
                "counter",
            ),
            (
                self.inputs_dropped.load(Ordering::Relaxed),
                "zhbert_inputs_dropped_total",
                "Inputs of cancelled requests dropped from the queue unrun.",
                "counter",
            ),
            (
                self.queue_depth.load(Ordering::Relaxed) as u64,
                "zhbert_queue_depth",
                "Inputs waiting for the model.",
                "gauge",
            ),
            (
                self.in_flight.load(Ordering::Relaxed) as u64,
                "zhbert_requests_in_flight",
                "Requests being handled.",
                "gauge",
            ),
        ];
        for (value, name, help, kind) in values {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        for v in [1.0, 3.0, 3.0, 1000.0] {
            m.batch_requests.observe(v);
        }
        m.record_response(200, 0.001);
        let text = m.render();
        assert!(text.contains("zhbert_batch_size_requests_bucket{le=\"1\"} 1\n"));
        assert!(text.contains("zhbert_batch_size_requests_bucket{le=\"4\"} 3\n"));
        assert!(text.contains("zhbert_batch_size_requests_bucket{le=\"512\"} 3\n"));
        assert!(text.contains("zhbert_batch_size_requests_bucket{le=\"+Inf\"} 4\n"));
        assert!(text.contains("zhbert_batch_size_requests_sum 1007\n"));
        assert!(text.contains("zhbert_requests_total{status=\"200\"} 1\n"));
    }
}
