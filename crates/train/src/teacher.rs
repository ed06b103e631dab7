//! A character n-gram teacher for distillation: TF-IDF of character 1-3-grams
//! and multinomial logistic regression, the model of scikit-learn's
//! `TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)`
//! and `LogisticRegression` (`benchmarks/tfidf_baseline.py`).
//!
//! Why: on a small corpus of short Chinese texts this linear model is hard to
//! beat from scratch (0.850 on the sentiment corpus, where a small BERT reaches
//! about 0.84): it sees every overlapping n-gram, where a BERT sees one
//! segmentation and has too few examples to learn the rest. A BERT trained on
//! its probabilities as well as on the labels ([`crate::TrainConfig::distill`])
//! is taught what the n-grams carry and stays a plain
//! `BertForSequenceClassification` (on the sentiment corpus: a point of dev
//! accuracy; `benchmarks/README.md`).
//!
//! [`out_of_fold_probabilities`] gives each training example the probabilities
//! of a teacher that never saw it (k folds), so that they are as uncertain as
//! the teacher is on new text, not the near-certain answers it gives on its own
//! training data.

use std::collections::HashMap;
use std::sync::Mutex;

use zhbert_data::Dataset;

use anyhow::{bail, Result};
use argmin::core::{CostFunction, Executor, Gradient, State, TerminationReason};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// A text as sorted `(feature, value)` pairs, L2-normalised.
pub type SparseRow = Vec<(u32, f32)>;

/// sklearn's `TfidfVectorizer(analyzer="char", ngram_range=(1, max_n),
/// sublinear_tf=True)` with its defaults (lowercase, smooth idf, L2 norm).
#[derive(Debug, Clone)]
pub struct CharNgramTfidf {
    max_n: usize,
    vocab: HashMap<String, u32>,
    idf: Vec<f32>,
}

/// sklearn's char analyzer: lowercase, runs of two or more whitespace
/// characters as one space, then every n-gram of 1 to `max_n` characters.
fn char_ngrams(text: &str, max_n: usize) -> Vec<String> {
    let mut chars: Vec<char> = Vec::with_capacity(text.len());
    let mut spaces = 0;
    for c in text.to_lowercase().chars() {
        if c.is_whitespace() {
            spaces += 1;
            if spaces == 2 {
                // The first of the run is already in; it becomes the one space.
                *chars.last_mut().expect("a whitespace before") = ' ';
            }
            if spaces >= 2 {
                continue;
            }
        } else {
            spaces = 0;
        }
        chars.push(c);
    }
    let mut grams = Vec::new();
    for n in 1..=max_n.min(chars.len()) {
        grams.extend(chars.windows(n).map(|w| w.iter().collect::<String>()));
    }
    grams
}

impl CharNgramTfidf {
    /// Learns the n-grams and their idf from `texts`.
    pub fn fit(texts: &[&str], max_n: usize) -> Self {
        let mut vocab: HashMap<String, u32> = HashMap::new();
        let mut df: Vec<u32> = Vec::new();
        for text in texts {
            let mut grams = char_ngrams(text, max_n);
            grams.sort_unstable();
            grams.dedup();
            for g in grams {
                let next = vocab.len() as u32;
                let id = *vocab.entry(g).or_insert(next);
                if id as usize == df.len() {
                    df.push(0);
                }
                df[id as usize] += 1;
            }
        }
        let n = texts.len() as f64;
        let idf = df
            .iter()
            .map(|&d| (((1.0 + n) / (1.0 + d as f64)).ln() + 1.0) as f32)
            .collect();
        Self { max_n, vocab, idf }
    }

    /// Number of features (n-grams seen by [`CharNgramTfidf::fit`]).
    pub fn len(&self) -> usize {
        self.idf.len()
    }

    /// The feature of an n-gram, if it was seen in fitting.
    pub fn feature(&self, ngram: &str) -> Option<u32> {
        self.vocab.get(ngram).copied()
    }

    /// Whether no n-gram was seen.
    pub fn is_empty(&self) -> bool {
        self.idf.is_empty()
    }

    /// The TF-IDF row of a text (n-grams not seen in fitting are ignored).
    pub fn transform(&self, text: &str) -> SparseRow {
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for g in char_ngrams(text, self.max_n) {
            if let Some(&id) = self.vocab.get(&g) {
                *counts.entry(id).or_default() += 1;
            }
        }
        let mut row: SparseRow = counts
            .into_iter()
            .map(|(id, tf)| (id, (1.0 + (tf as f32).ln()) * self.idf[id as usize]))
            .collect();
        row.sort_unstable_by_key(|&(id, _)| id);
        let norm = row.iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|(_, v)| *v /= norm);
        }
        row
    }
}

/// Multinomial logistic regression with an L2 penalty on the weights (not the
/// biases): minimises `C · Σ cross-entropy + ½ ‖W‖²`, sklearn's objective, by
/// L-BFGS. With two classes it is sklearn's binary model at twice the C.
///
/// As sklearn, the solver works on that objective divided by `C · n` (the mean
/// loss plus `‖W‖² / (2Cn)`: the same optimum) and stops when the gradient's
/// norm falls below `tolerance`.
#[derive(Debug, Clone)]
pub struct LogisticRegression {
    classes: usize,
    features: usize,
    /// `[features × classes]` weights, then `classes` biases.
    params: Vec<f64>,
}

/// L-BFGS rounds of [`LogisticRegression::fit`], and iterations in each.
const ROUNDS: usize = 10;
const ITERATIONS_PER_ROUND: u64 = 100;

/// Rows per parallel chunk of the objective.
const CHUNK_ROWS: usize = 2048;

/// The objective for argmin.
struct Objective<'a> {
    rows: &'a [SparseRow],
    labels: &'a [usize],
    classes: usize,
    features: usize,
    c: f64,
    /// The last point evaluated with its cost and gradient: argmin asks for
    /// the cost and the gradient of the same point separately, and one pass
    /// over the rows gives both.
    last: Mutex<Option<Evaluation>>,
}

/// A point, and the objective's cost and gradient there.
type Evaluation = (Vec<f64>, f64, Vec<f64>);

/// A row's class scores under `params` (`[features × classes]` weights, then
/// the biases).
fn scores(params: &[f64], features: usize, classes: usize, row: &SparseRow) -> Vec<f64> {
    let k = classes;
    let mut z = params[features * k..].to_vec();
    for &(f, v) in row {
        let w = &params[f as usize * k..(f as usize + 1) * k];
        z.iter_mut().zip(w).for_each(|(z, w)| *z += w * v as f64);
    }
    z
}

impl Objective<'_> {
    /// Cost and gradient of the scaled objective, from the cache or from one
    /// pass over the rows (in chunks, one gradient buffer per chunk).
    fn cost_and_gradient(&self, params: &[f64]) -> (f64, Vec<f64>) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, cost, grad)) = last.as_ref() {
            if at.as_slice() == params {
                return (*cost, grad.clone());
            }
        }
        let k = self.classes;
        // Fixed chunks summed in order: the same sums, bit for bit, on any
        // number of threads, so that every node of a data-parallel run
        // distils the same targets.
        let partial: Vec<(f64, Vec<f64>)> = self
            .rows
            .par_chunks(CHUNK_ROWS)
            .zip(self.labels.par_chunks(CHUNK_ROWS))
            .map(|(rows, labels)| {
                let mut loss = 0.0;
                let mut grad = vec![0.0; params.len()];
                for (row, &y) in rows.iter().zip(labels) {
                    let p = softmax(scores(params, self.features, k, row));
                    loss -= p[y].max(1e-300).ln();
                    for (j, &pj) in p.iter().enumerate() {
                        let d = pj - f64::from(u8::from(j == y));
                        grad[self.features * k + j] += d;
                        for &(f, v) in row {
                            grad[f as usize * k + j] += d * v as f64;
                        }
                    }
                }
                (loss, grad)
            })
            .collect();
        let mut loss = 0.0;
        let mut grad = vec![0.0; params.len()];
        for (l, g) in partial {
            loss += l;
            grad.iter_mut().zip(&g).for_each(|(a, b)| *a += b);
        }
        let n = self.rows.len().max(1) as f64;
        let weights = self.features * k;
        let reg = 1.0 / (self.c * n);
        let penalty: f64 = params[..weights].iter().map(|w| w * w).sum::<f64>() * reg / 2.0;
        grad.iter_mut().for_each(|g| *g /= n);
        grad[..weights]
            .iter_mut()
            .zip(&params[..weights])
            .for_each(|(g, w)| *g += w * reg);
        let cost = loss / n + penalty;
        *last = Some((params.to_vec(), cost, grad.clone()));
        (cost, grad)
    }
}

impl CostFunction for Objective<'_> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, params: &Vec<f64>) -> Result<f64, argmin::core::Error> {
        Ok(self.cost_and_gradient(params).0)
    }
}

impl Gradient for Objective<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, params: &Vec<f64>) -> Result<Vec<f64>, argmin::core::Error> {
        Ok(self.cost_and_gradient(params).1)
    }
}

fn softmax(mut z: Vec<f64>) -> Vec<f64> {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    z.iter_mut().for_each(|x| *x = (*x - max).exp());
    let sum: f64 = z.iter().sum();
    z.iter_mut().for_each(|x| *x /= sum);
    z
}

impl LogisticRegression {
    /// Fits `classes` classes to `rows` of `features` features, stopping when
    /// the scaled objective's gradient norm is below `tolerance` (or after
    /// 1,000 iterations).
    pub fn fit(
        rows: &[SparseRow],
        labels: &[usize],
        classes: usize,
        features: usize,
        c: f64,
        tolerance: f64,
    ) -> Result<Self> {
        if rows.len() != labels.len() || labels.iter().any(|&y| y >= classes) {
            bail!("logistic regression: labels do not fit the rows or the classes");
        }
        let mut params = vec![0.0; features * classes + classes];
        // Rounds of L-BFGS, each from the last one's point: argmin's line
        // search can give up close to the optimum (rounding makes a step look
        // uphill), and an error would lose the run; a failed round keeps the
        // point the previous round reached.
        for round in 0..ROUNDS {
            let objective = Objective {
                rows,
                labels,
                classes,
                features,
                c,
                last: Mutex::new(None),
            };
            let solver = LBFGS::new(MoreThuenteLineSearch::new(), 10)
                .with_tolerance_grad(tolerance)?
                .with_tolerance_cost(0.0)?;
            let start = params.clone();
            match Executor::new(objective, solver)
                .configure(|state| state.param(start).max_iters(ITERATIONS_PER_ROUND))
                .run()
            {
                Ok(result) => {
                    let state = result.state();
                    if let Some(best) = state.get_best_param() {
                        params = best.clone();
                    }
                    if state.get_termination_reason() != Some(&TerminationReason::MaxItersReached) {
                        break;
                    }
                }
                Err(e) if round > 0 => {
                    tracing::debug!("logistic regression: round {round} stopped: {e}");
                    break;
                }
                Err(e) => bail!("logistic regression: {e}"),
            }
        }
        Ok(Self {
            classes,
            features,
            params,
        })
    }

    /// Class probabilities of a row.
    pub fn predict_proba(&self, row: &SparseRow) -> Vec<f64> {
        softmax(scores(&self.params, self.features, self.classes, row))
    }
}

/// Each text's class probabilities from a char 1-3-gram TF-IDF + logistic
/// regression teacher fitted on the other `folds - 1` folds (folds drawn by
/// `seed`, stratified by label as sklearn's `StratifiedKFold`).
pub fn out_of_fold_probabilities(
    texts: &[&str],
    labels: &[usize],
    classes: usize,
    folds: usize,
    c: f64,
    seed: u64,
) -> Result<Vec<Vec<f32>>> {
    if folds < 2 || texts.len() < folds {
        bail!("distillation needs at least {folds} training texts for {folds} teacher folds");
    }
    let fold_of = teacher_folds(labels, classes, folds, seed);
    let mut out = vec![Vec::new(); texts.len()];
    for fold in 0..folds {
        let (fit, held): (Vec<usize>, Vec<usize>) =
            (0..texts.len()).partition(|&i| fold_of[i] != fold);
        let fit_texts: Vec<&str> = fit.iter().map(|&i| texts[i]).collect();
        let tfidf = CharNgramTfidf::fit(&fit_texts, 3);
        let rows: Vec<SparseRow> = fit_texts.par_iter().map(|t| tfidf.transform(t)).collect();
        let fit_labels: Vec<usize> = fit.iter().map(|&i| labels[i]).collect();
        let lr = LogisticRegression::fit(&rows, &fit_labels, classes, tfidf.len(), c, 1e-5)?;
        for i in held {
            let p = lr.predict_proba(&tfidf.transform(texts[i]));
            out[i] = p.into_iter().map(|x| x as f32).collect();
        }
    }
    Ok(out)
}

/// The fold of each example, stratified by label as sklearn's
/// `StratifiedKFold`: each label's examples, shuffled by `seed`, dealt
/// round-robin over `folds`.
pub fn teacher_folds(labels: &[usize], classes: usize, folds: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut fold_of = vec![0usize; labels.len()];
    let mut dealt = 0;
    for class in 0..classes {
        let mut members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        members.shuffle(&mut rng);
        for i in members {
            fold_of[i] = dealt % folds;
            dealt += 1;
        }
    }
    fold_of
}

/// Folds of the teacher in [`distillation_targets`].
pub const TEACHER_FOLDS: usize = 5;

/// The teacher's `C`: the value `benchmarks/tfidf_baseline.py` chose on dev
/// for sklearn's `LogisticRegression(C=10)`.
pub const TEACHER_C: f64 = 10.0;

/// The `C` of [`LogisticRegression`] that fits sklearn's model at `c`: with two
/// classes sklearn fits its binary model, whose optimum is the multinomial
/// one's at half the C (at `c` itself the teacher would be sklearn's at `2c`:
/// as accurate, but surer of itself than the baseline it stands for).
fn sklearn_equivalent_c(c: f64, classes: usize) -> f64 {
    if classes == 2 {
        c / 2.0
    } else {
        c
    }
}

/// What [`crate::TrainData::soft_targets`] holds for distillation: each
/// training example's out-of-fold teacher probabilities (a pair's two texts
/// joined by a space), in the order of `data.examples`.
pub fn distillation_targets(data: &Dataset, seed: u64) -> Result<Vec<Vec<f32>>> {
    let texts: Vec<String> = data
        .examples
        .iter()
        .map(|e| match &e.text_pair {
            Some(pair) => format!("{} {pair}", e.text),
            None => e.text.clone(),
        })
        .collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let labels: Vec<usize> = data.examples.iter().map(|e| e.label).collect();
    out_of_fold_probabilities(
        &texts,
        &labels,
        data.labels.len(),
        TEACHER_FOLDS,
        sklearn_equivalent_c(TEACHER_C, data.labels.len()),
        seed,
    )
}

/// [`distillation_targets`], timed, with the teacher's out-of-fold accuracy
/// on the training set logged.
pub fn fit_teacher(data: &Dataset, seed: u64) -> Result<Vec<Vec<f32>>> {
    let started = std::time::Instant::now();
    let targets = distillation_targets(data, seed)?;
    let agree = targets
        .iter()
        .zip(&data.examples)
        .filter(|(p, e)| crate::inference::argmax(p) == e.label)
        .count();
    tracing::info!(
        "distillation teacher (char 1-3-gram TF-IDF + logistic regression, {TEACHER_FOLDS} folds): out-of-fold accuracy {:.4} on the training set, {:.1} s",
        agree as f64 / targets.len().max(1) as f64,
        started.elapsed().as_secs_f64()
    );
    Ok(targets)
}
