//! Multi-label classification and regression (HF's `problem_type`): the loss
//! with `pos_weight` (`torch.nn.BCEWithLogitsLoss`), their metrics as
//! scikit-learn and scipy define them (`zero_division=0`), and the per-label
//! decision thresholds of a multi-label model (`thresholds.json`).

use std::path::Path;

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use zhbert_data::{EncodedDataset, Task};
use zhbert_model::{classification_loss, CrossEntropyOptions, Labels, ProblemType};

use crate::metrics::{ClassMetrics, EvalMetrics, Metric};
use crate::trainer::{ClassWeights, TrainConfig, TrainSet};

/// The file of a multi-label model's decision thresholds, in its folder.
pub const THRESHOLDS_FILE: &str = "thresholds.json";

/// The logistic function.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The sigmoid of every logit.
pub fn sigmoid_rows(logits: &[Vec<f32>]) -> Vec<Vec<f32>> {
    logits
        .iter()
        .map(|row| row.iter().map(|&x| sigmoid(x)).collect())
        .collect()
}

/// The data crate's task of a problem type.
pub fn task_of(problem: ProblemType) -> Task {
    match problem {
        ProblemType::SingleLabelClassification => Task::SingleLabel,
        ProblemType::MultiLabelClassification => Task::MultiLabel,
        ProblemType::Regression => Task::Regression,
    }
}

/// The problem type of a data crate's task.
pub fn problem_of(task: Task) -> ProblemType {
    match task {
        Task::SingleLabel => ProblemType::SingleLabelClassification,
        Task::MultiLabel => ProblemType::MultiLabelClassification,
        Task::Regression => ProblemType::Regression,
    }
}

/// The problem's name as HF writes it (`multi_label_classification`).
pub fn problem_name(problem: ProblemType) -> String {
    serde_json::to_value(problem)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// Refuses settings a problem type has no meaning for (label smoothing,
/// distillation and class weights are single-label's, except class weights
/// as multi-label's `pos_weight`; thresholds are multi-label's), and returns
/// the metric that picks the best checkpoint ([`Metric::for_problem`]).
pub fn check_problem(config: &TrainConfig, problem: ProblemType) -> Result<Metric> {
    let name = problem_name(problem);
    if problem != ProblemType::SingleLabelClassification {
        anyhow::ensure!(
            config.label_smoothing == 0.0,
            "label smoothing {}: defined for single-label classification only (a {name} run has no classes to smooth over); leave it at 0",
            config.label_smoothing
        );
        anyhow::ensure!(
            config.distill == 0.0,
            "distillation {}: the teacher is single-label; a {name} run needs a distillation weight of 0",
            config.distill
        );
    }
    anyhow::ensure!(
        problem != ProblemType::Regression || config.class_weights.is_none(),
        "class weights: a regression run has no classes to weigh"
    );
    anyhow::ensure!(
        problem == ProblemType::MultiLabelClassification || !config.tune_thresholds,
        "tune thresholds: only multi-label runs have thresholds (this run is {name})"
    );
    config
        .metric
        .for_problem(problem)
        .map_err(anyhow::Error::msg)
}

/// Multi-label `pos_weight` from `--class-weights`: the list as given, or
/// `auto` ([`balanced_pos_weight`]); `None` without class weights.
pub fn pos_weight(config: &TrainConfig, train: &TrainSet, k: usize) -> Result<Option<Vec<f32>>> {
    Ok(match &config.class_weights {
        None => None,
        Some(ClassWeights::List(w)) => {
            anyhow::ensure!(w.len() == k, "{} class weights for {k} labels", w.len());
            Some(w.clone())
        }
        Some(ClassWeights::Balanced) => Some(balanced_pos_weight(&train.positives(k), train.len())),
    })
}

/// `torch.nn.BCEWithLogitsLoss(pos_weight=...)` over `[n, k]` logits and 0/1
/// targets, averaged over every (example, label), as HF computes the
/// multi-label loss. Without `pos_weight` it is the model's own loss.
pub fn bce_with_logits<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 2>,
    pos_weight: Option<&[f32]>,
) -> Tensor<B, 1> {
    let Some(pw) = pos_weight else {
        return classification_loss(
            logits,
            Labels::MultiHot(targets),
            &CrossEntropyOptions::default(),
        );
    };
    let k = pw.len();
    let pw = Tensor::<B, 1>::from_data(pw, &logits.device()).reshape([1, k]);
    // torch's stable form: (1 - y) x + (1 + (pw - 1) y) (log1p(e^-|x|) + max(-x, 0)).
    let log_weight = (pw - 1.0) * targets.clone() + 1.0;
    let softplus_neg =
        (logits.clone().abs().neg().exp() + 1.0).log() + logits.clone().neg().clamp_min(0.0);
    let loss = targets.neg().add_scalar(1.0) * logits + log_weight * softplus_neg;
    loss.mean()
}

/// `pos_weight` of `--class-weights auto` for multi-label: per label, texts
/// without it over texts with it (0 for a label no text carries), what
/// torch's documentation suggests for `BCEWithLogitsLoss`.
pub fn balanced_pos_weight(positives: &[usize], examples: usize) -> Vec<f32> {
    positives
        .iter()
        .map(|&p| {
            if p == 0 {
                0.0
            } else {
                (examples - p) as f32 / p as f32
            }
        })
        .collect()
}

/// How predictions of a problem type are scored.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalTask {
    /// Single-label, multi-label or regression.
    pub problem_type: ProblemType,
    /// Multi-label: a label is predicted when its sigmoid is over its
    /// threshold (one per label); unused otherwise.
    pub thresholds: Vec<f32>,
}

impl EvalTask {
    /// Single-label scoring (argmax).
    pub fn single_label() -> Self {
        Self {
            problem_type: ProblemType::SingleLabelClassification,
            thresholds: Vec::new(),
        }
    }
}

/// The metrics of multi-label or regression `logits` (one row per document
/// of `data`: [`zhbert_data::EncodedDataset::pool_logits`]) against `data`'s
/// targets.
pub fn score_logits(
    labels: &[String],
    data: &EncodedDataset,
    logits: &[Vec<f32>],
    task: &EvalTask,
) -> Result<EvalMetrics> {
    let targets = &data
        .document_targets()
        .context("the dataset has no multi-label or regression targets")?;
    match task.problem_type {
        ProblemType::Regression => {
            let truth: Vec<f32> = targets.iter().map(|t| t[0]).collect();
            let predicted: Vec<f32> = logits.iter().map(|l| l[0]).collect();
            Ok(regression_metrics(&truth, &predicted))
        }
        _ => {
            let probs = sigmoid_rows(logits);
            let loss = mean_bce(logits, targets);
            Ok(multi_label_metrics(
                labels,
                targets,
                &probs,
                &task.thresholds,
                loss,
            ))
        }
    }
}

/// Mean binary cross entropy of logits against 0/1 targets, in f64.
fn mean_bce(logits: &[Vec<f32>], targets: &[Vec<f32>]) -> f64 {
    let mut sum = 0.0;
    let mut n = 0usize;
    for (row, truth) in logits.iter().zip(targets) {
        for (&x, &y) in row.iter().zip(truth) {
            let (x, y) = (x as f64, y as f64);
            sum += x.max(0.0) - x * y + (-x.abs()).exp().ln_1p();
            n += 1;
        }
    }
    sum / n.max(1) as f64
}

/// The label ids whose probability is over their threshold, most probable first.
pub fn labels_over(probs: &[f32], thresholds: &[f32]) -> Vec<usize> {
    let mut ids: Vec<usize> = (0..probs.len())
        .filter(|&i| probs[i] > thresholds[i])
        .collect();
    ids.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    ids
}

/// F1 from true positives, false positives and false negatives
/// (scikit-learn's `2tp / (2tp + fp + fn)`, 0 when that is 0/0).
fn f1(tp: usize, fp: usize, fn_: usize) -> f64 {
    let d = 2 * tp + fp + fn_;
    if d == 0 {
        0.0
    } else {
        2.0 * tp as f64 / d as f64
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Multi-label metrics of `probs` at `thresholds` against 0/1 `truth`: micro,
/// macro and samples F1, per-label precision/recall/F1/support, subset
/// accuracy and Hamming loss (scikit-learn on indicator matrices,
/// `zero_division=0`).
pub fn multi_label_metrics(
    labels: &[String],
    truth: &[Vec<f32>],
    probs: &[Vec<f32>],
    thresholds: &[f32],
    loss: f64,
) -> EvalMetrics {
    let k = labels.len();
    let (mut tp, mut fp, mut fn_) = (vec![0usize; k], vec![0usize; k], vec![0usize; k]);
    let (mut exact, mut wrong, mut samples_f1) = (0usize, 0usize, 0.0f64);
    for (t, p) in truth.iter().zip(probs) {
        let (mut row_tp, mut row_fp, mut row_fn) = (0, 0, 0);
        for j in 0..k {
            match (t[j] > 0.5, p[j] > thresholds[j]) {
                (true, true) => {
                    tp[j] += 1;
                    row_tp += 1;
                }
                (false, true) => {
                    fp[j] += 1;
                    row_fp += 1;
                }
                (true, false) => {
                    fn_[j] += 1;
                    row_fn += 1;
                }
                (false, false) => {}
            }
        }
        wrong += row_fp + row_fn;
        exact += usize::from(row_fp + row_fn == 0);
        samples_f1 += f1(row_tp, row_fp, row_fn);
    }
    let per_class: Vec<ClassMetrics> = (0..k)
        .map(|j| ClassMetrics {
            label: labels[j].clone(),
            precision: ratio(tp[j], tp[j] + fp[j]),
            recall: ratio(tp[j], tp[j] + fn_[j]),
            f1: f1(tp[j], fp[j], fn_[j]),
            support: tp[j] + fn_[j],
        })
        .collect();
    let n = truth.len();
    let sum = |v: &[usize]| v.iter().sum::<usize>();
    EvalMetrics {
        loss,
        accuracy: ratio(exact, n),
        macro_f1: per_class.iter().map(|c| c.f1).sum::<f64>() / k.max(1) as f64,
        micro_f1: f1(sum(&tp), sum(&fp), sum(&fn_)),
        per_class,
        confusion: Vec::new(),
        examples: n,
        samples_f1: Some(samples_f1 / n.max(1) as f64),
        hamming_loss: Some(ratio(wrong, n * k)),
        mse: None,
        mae: None,
        pearson: None,
        spearman: None,
    }
}

/// Regression metrics: MSE (also the loss, as HF's), MAE, Pearson and
/// Spearman (scipy's `pearsonr`, `spearmanr`; NaN for a constant side).
pub fn regression_metrics(truth: &[f32], predicted: &[f32]) -> EvalMetrics {
    let n = truth.len().max(1) as f64;
    let diffs = truth
        .iter()
        .zip(predicted)
        .map(|(&t, &p)| p as f64 - t as f64);
    let mse = diffs.clone().map(|d| d * d).sum::<f64>() / n;
    let mae = diffs.map(f64::abs).sum::<f64>() / n;
    let (t, p): (Vec<f64>, Vec<f64>) = truth
        .iter()
        .zip(predicted)
        .map(|(&t, &p)| (t as f64, p as f64))
        .unzip();
    EvalMetrics {
        loss: mse,
        accuracy: f64::NAN,
        macro_f1: f64::NAN,
        micro_f1: f64::NAN,
        per_class: Vec::new(),
        confusion: Vec::new(),
        examples: truth.len(),
        samples_f1: None,
        hamming_loss: None,
        mse: Some(mse),
        mae: Some(mae),
        pearson: Some(pearson(&t, &p)),
        spearman: Some(pearson(&ranks(&t), &ranks(&p))),
    }
}

/// Pearson's correlation coefficient.
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    sab / (saa * sbb).sqrt()
}

/// Ranks from 1, ties at their mean rank (scipy's `rankdata`).
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut out = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        let mean = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            out[o] = mean;
        }
        i = j + 1;
    }
    out
}

/// Per label, the threshold that maximises its F1 on `truth`/`probs` (dev):
/// midpoints between consecutive distinct probabilities are tried, the best
/// F1 wins and ties go to the threshold nearest `default`; a label without
/// a positive example keeps `default`.
pub fn tune_thresholds(truth: &[Vec<f32>], probs: &[Vec<f32>], default: f32) -> Vec<f32> {
    let k = probs.first().map_or(0, Vec::len);
    (0..k)
        .map(|j| {
            let mut pairs: Vec<(f32, bool)> = probs
                .iter()
                .zip(truth)
                .map(|(p, t)| (p[j], t[j] > 0.5))
                .collect();
            if !pairs.iter().any(|&(_, positive)| positive) {
                return default;
            }
            pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
            best_threshold(&pairs, default)
        })
        .collect()
}

/// The best threshold of one label over `(probability, is positive)` sorted
/// by probability (see [`tune_thresholds`]).
fn best_threshold(pairs: &[(f32, bool)], default: f32) -> f32 {
    let positives = pairs.iter().filter(|p| p.1).count();
    // Below everything: every text predicted positive.
    let (mut tp, mut fp) = (positives, pairs.len() - positives);
    let mut best = (f1(tp, fp, 0), pairs[0].0 - 1e-6);
    for i in 0..pairs.len() {
        // Moving the threshold over pairs[i] makes it negative.
        if pairs[i].1 {
            tp -= 1;
        } else {
            fp -= 1;
        }
        if i + 1 < pairs.len() && pairs[i + 1].0 == pairs[i].0 {
            continue;
        }
        let t = match pairs.get(i + 1) {
            Some(next) => (pairs[i].0 + next.0) / 2.0,
            None => pairs[i].0,
        };
        let score = f1(tp, fp, positives - tp);
        let nearer = (t - default).abs() < (best.1 - default).abs();
        if score > best.0 || (score == best.0 && nearer) {
            best = (score, t);
        }
    }
    best.1
}

/// `thresholds.json`: the per-label thresholds of a multi-label model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Thresholds {
    /// Label names, in id order.
    pub labels: Vec<String>,
    /// One threshold per label.
    pub thresholds: Vec<f32>,
    /// Whether they were tuned on the dev set (`--tune-thresholds`), rather
    /// than all `--threshold`.
    pub tuned: bool,
}

impl Thresholds {
    /// Writes `thresholds.json` in `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        crate::json_file::save(&dir.join(THRESHOLDS_FILE), self)
    }

    /// The thresholds of the model in `dir`, checked against its `labels`;
    /// `None` when it has no `thresholds.json`.
    pub fn load(dir: &Path, labels: &[String]) -> Result<Option<Vec<f32>>> {
        let path = dir.join(THRESHOLDS_FILE);
        let Some(t) = crate::json_file::load::<Thresholds>(&path, "a thresholds file")? else {
            return Ok(None);
        };
        anyhow::ensure!(
            t.labels == labels && t.thresholds.len() == labels.len(),
            "{}: its labels {:?} are not the model's {:?}",
            path.display(),
            t.labels,
            labels
        );
        Ok(Some(t.thresholds))
    }
}
