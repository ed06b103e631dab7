//! Classification metrics: accuracy, macro and micro F1, per-class precision,
//! recall and F1, and the confusion matrix (as scikit-learn defines them,
//! `zero_division=0`).

use serde::{Deserialize, Serialize};

/// Precision, recall, F1 and support of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Label name.
    pub label: String,
    /// TP / (TP + FP).
    pub precision: f64,
    /// TP / (TP + FN).
    pub recall: f64,
    /// Harmonic mean of the two.
    pub f1: f64,
    /// Examples whose true label is this one.
    pub support: usize,
}

/// The metrics of one evaluation.
///
/// Multi-label: `accuracy` is subset accuracy (exact match), F1s and
/// `per_class` are per label, `confusion` is empty, and `samples_f1` and
/// `hamming_loss` are set. Regression: `accuracy` and the F1s are NaN (left
/// out of JSON), and `mse`, `mae`, `pearson` and `spearman` are set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Mean cross entropy (multi-label: binary cross entropy; regression: MSE).
    pub loss: f64,
    /// Fraction predicted right.
    #[serde(default = "nan", skip_serializing_if = "is_nan")]
    pub accuracy: f64,
    /// Unweighted mean of the per-class F1.
    #[serde(default = "nan", skip_serializing_if = "is_nan")]
    pub macro_f1: f64,
    /// F1 over all decisions pooled (equals accuracy for single-label tasks).
    #[serde(default = "nan", skip_serializing_if = "is_nan")]
    pub micro_f1: f64,
    /// Per class, in label order.
    pub per_class: Vec<ClassMetrics>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
    /// Examples evaluated.
    pub examples: usize,
    /// Multi-label: the mean over examples of each one's F1 (scikit-learn's
    /// `average="samples"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples_f1: Option<f64>,
    /// Multi-label: the fraction of (example, label) decisions that are wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hamming_loss: Option<f64>,
    /// Regression: mean squared error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mse: Option<f64>,
    /// Regression: mean absolute error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    /// Regression: Pearson correlation of predictions and targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pearson: Option<f64>,
    /// Regression: Spearman rank correlation (ties at their mean rank).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spearman: Option<f64>,
}

fn nan() -> f64 {
    f64::NAN
}

fn is_nan(x: &f64) -> bool {
    x.is_nan()
}

impl EvalMetrics {
    /// Computes the metrics from true and predicted label ids and the mean loss.
    pub fn compute(labels: &[String], truth: &[usize], predicted: &[usize], loss: f64) -> Self {
        let k = labels.len();
        let mut confusion = vec![vec![0usize; k]; k];
        for (&t, &p) in truth.iter().zip(predicted) {
            confusion[t][p] += 1;
        }
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let per_class: Vec<ClassMetrics> = (0..k)
            .map(|c| {
                let tp = confusion[c][c];
                let predicted_c: usize = (0..k).map(|t| confusion[t][c]).sum();
                let support: usize = confusion[c].iter().sum();
                let precision = ratio(tp, predicted_c);
                let recall = ratio(tp, support);
                let f1 = if precision + recall == 0.0 {
                    0.0
                } else {
                    2.0 * precision * recall / (precision + recall)
                };
                ClassMetrics {
                    label: labels[c].clone(),
                    precision,
                    recall,
                    f1,
                    support,
                }
            })
            .collect();
        let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
        let accuracy = ratio(correct, truth.len());
        Self {
            loss,
            accuracy,
            macro_f1: per_class.iter().map(|c| c.f1).sum::<f64>() / k.max(1) as f64,
            // Single-label: pooled precision = pooled recall = accuracy.
            micro_f1: accuracy,
            per_class,
            confusion,
            examples: truth.len(),
            samples_f1: None,
            hamming_loss: None,
            mse: None,
            mae: None,
            pearson: None,
            spearman: None,
        }
    }

    /// The headline figures as one line: accuracy and macro F1
    /// (single-label), the F1s, subset accuracy and Hamming loss
    /// (multi-label), or the regression errors and correlations.
    pub fn headline(&self) -> String {
        let or_nan = |x: Option<f64>| x.unwrap_or(f64::NAN);
        if let Some(mse) = self.mse {
            format!(
                "mse {mse:.4} mae {:.4} pearson {:.4} spearman {:.4}",
                or_nan(self.mae),
                or_nan(self.pearson),
                or_nan(self.spearman)
            )
        } else if let Some(samples) = self.samples_f1 {
            format!(
                "micro_f1 {:.4} macro_f1 {:.4} samples_f1 {samples:.4} subset_accuracy {:.4} hamming_loss {:.4}",
                self.micro_f1,
                self.macro_f1,
                self.accuracy,
                or_nan(self.hamming_loss)
            )
        } else {
            format!(
                "accuracy {:.4} macro_f1 {:.4}",
                self.accuracy, self.macro_f1
            )
        }
    }

    /// The value of `metric`.
    pub fn get(&self, metric: Metric) -> f64 {
        let or_nan = |x: Option<f64>| x.unwrap_or(f64::NAN);
        match metric {
            Metric::Accuracy | Metric::SubsetAccuracy => self.accuracy,
            Metric::MacroF1 => self.macro_f1,
            Metric::MicroF1 => self.micro_f1,
            Metric::Loss => self.loss,
            Metric::SamplesF1 => or_nan(self.samples_f1),
            Metric::HammingLoss => or_nan(self.hamming_loss),
            Metric::Mse => or_nan(self.mse),
            Metric::Mae => or_nan(self.mae),
            Metric::Pearson => or_nan(self.pearson),
            Metric::Spearman => or_nan(self.spearman),
        }
    }

    /// The confusion matrix as aligned text, rows true, columns predicted.
    pub fn confusion_table(&self) -> String {
        let names: Vec<&str> = self.per_class.iter().map(|c| c.label.as_str()).collect();
        let w = names
            .iter()
            .map(|n| n.chars().count())
            .max()
            .unwrap_or(4)
            .max(6);
        let mut s = format!("{:>w$} | predicted\n", "true");
        s.push_str(&format!("{:>w$} |", ""));
        for n in &names {
            s.push_str(&format!(" {n:>w$}"));
        }
        s.push('\n');
        for (n, row) in names.iter().zip(&self.confusion) {
            s.push_str(&format!("{n:>w$} |"));
            for v in row {
                s.push_str(&format!(" {v:>w$}"));
            }
            s.push('\n');
        }
        s
    }
}

/// The metric that chooses the best checkpoint (HF's `metric_for_best_model`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Fraction predicted right.
    #[default]
    Accuracy,
    /// Unweighted mean of the per-class F1.
    MacroF1,
    /// F1 over all decisions pooled.
    MicroF1,
    /// Mean cross entropy (lower is better).
    Loss,
    /// Multi-label: mean F1 of each example.
    SamplesF1,
    /// Multi-label: fraction of examples with every label right (exact match).
    SubsetAccuracy,
    /// Multi-label: fraction of label decisions wrong (lower is better).
    HammingLoss,
    /// Regression: mean squared error (lower is better).
    Mse,
    /// Regression: mean absolute error (lower is better).
    Mae,
    /// Regression: Pearson correlation.
    Pearson,
    /// Regression: Spearman rank correlation.
    Spearman,
}

impl Metric {
    /// Every metric, in the order the error message lists them.
    pub const ALL: [Self; 11] = [
        Self::Accuracy,
        Self::MacroF1,
        Self::MicroF1,
        Self::Loss,
        Self::SamplesF1,
        Self::SubsetAccuracy,
        Self::HammingLoss,
        Self::Mse,
        Self::Mae,
        Self::Pearson,
        Self::Spearman,
    ];

    /// The metric a run of `problem` chooses its best checkpoint by:
    /// `accuracy`, the default, stands for micro F1 in multi-label runs
    /// (`subset_accuracy` asks for exact match) and for MSE in regression
    /// runs; a metric the problem has not is an error that lists those it has.
    pub fn for_problem(self, problem: zhbert_model::ProblemType) -> Result<Self, String> {
        use zhbert_model::ProblemType::*;
        let allowed: &[Self] = match problem {
            SingleLabelClassification => {
                &[Self::Accuracy, Self::MacroF1, Self::MicroF1, Self::Loss]
            }
            MultiLabelClassification => &[
                Self::MicroF1,
                Self::MacroF1,
                Self::SamplesF1,
                Self::SubsetAccuracy,
                Self::HammingLoss,
                Self::Loss,
            ],
            Regression => &[
                Self::Mse,
                Self::Mae,
                Self::Pearson,
                Self::Spearman,
                Self::Loss,
            ],
        };
        let chosen = match (problem, self) {
            (MultiLabelClassification, Self::Accuracy) => Self::MicroF1,
            (Regression, Self::Accuracy) => Self::Mse,
            _ => self,
        };
        if allowed.contains(&chosen) {
            return Ok(chosen);
        }
        let names: Vec<&str> = allowed.iter().map(|m| m.name()).collect();
        Err(format!(
            "metric {chosen}: not a metric of {} (use {})",
            crate::tasks::problem_name(problem),
            names.join(", ")
        ))
    }

    /// The metric's name (`--metric`, TOML, serde, `eval.json`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Accuracy => "accuracy",
            Self::MacroF1 => "macro_f1",
            Self::MicroF1 => "micro_f1",
            Self::Loss => "loss",
            Self::SamplesF1 => "samples_f1",
            Self::SubsetAccuracy => "subset_accuracy",
            Self::HammingLoss => "hamming_loss",
            Self::Mse => "mse",
            Self::Mae => "mae",
            Self::Pearson => "pearson",
            Self::Spearman => "spearman",
        }
    }

    /// Whether a larger value is better (all but the losses and errors).
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Self::Loss | Self::HammingLoss | Self::Mse | Self::Mae)
    }

    /// Whether `value` is better than `best`.
    pub fn improves(self, value: f64, best: f64) -> bool {
        if self.higher_is_better() {
            value > best
        } else {
            value < best
        }
    }

    /// Whether `value` has reached `target` (at least it, or at most it for loss).
    pub fn reaches(self, value: f64, target: f64) -> bool {
        if self.higher_is_better() {
            value >= target
        } else {
            value <= target
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Metric {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                format!("metric {s:?}: accuracy, macro_f1, micro_f1 or loss; multi-label also samples_f1, subset_accuracy, hamming_loss; regression mse, mae, pearson, spearman")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_sklearn_on_a_small_case() {
        // sklearn: y_true=[0,0,1,1,2,2], y_pred=[0,1,1,1,0,2]
        // precision [0.5, 0.667, 1.0], recall [0.5, 1.0, 0.5], f1 [0.5, 0.8, 0.667]; macro 0.6556; acc 0.6667
        let labels: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let m = EvalMetrics::compute(&labels, &[0, 0, 1, 1, 2, 2], &[0, 1, 1, 1, 0, 2], 0.0);
        assert!((m.accuracy - 4.0 / 6.0).abs() < 1e-12);
        assert!((m.per_class[1].precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.per_class[1].f1 - 0.8).abs() < 1e-12);
        assert!((m.macro_f1 - (0.5 + 0.8 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        assert_eq!(
            m.confusion,
            vec![vec![1, 1, 0], vec![0, 2, 0], vec![1, 0, 1]]
        );
        // A class never predicted has precision 0 (zero_division=0), not NaN.
        let m = EvalMetrics::compute(&labels, &[0, 1, 2], &[0, 0, 0], 0.0);
        assert_eq!(m.per_class[1].precision, 0.0);
        assert!(m.macro_f1.is_finite());
    }

    #[test]
    fn metrics_by_name() {
        for m in Metric::ALL {
            assert_eq!(m.name().parse::<Metric>(), Ok(m));
        }
        assert!("f1".parse::<Metric>().is_err());
        assert!(Metric::Loss.improves(0.1, 0.2) && !Metric::Accuracy.improves(0.1, 0.2));
        assert!(Metric::Loss.reaches(0.2, 0.2) && Metric::Accuracy.reaches(0.9, 0.8));
    }
}
