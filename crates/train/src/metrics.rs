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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Mean cross entropy.
    pub loss: f64,
    /// Fraction predicted right.
    pub accuracy: f64,
    /// Unweighted mean of the per-class F1.
    pub macro_f1: f64,
    /// F1 over all decisions pooled (equals accuracy for single-label tasks).
    pub micro_f1: f64,
    /// Per class, in label order.
    pub per_class: Vec<ClassMetrics>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
    /// Examples evaluated.
    pub examples: usize,
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
        }
    }

    /// The value of `metric`.
    pub fn get(&self, metric: Metric) -> f64 {
        match metric {
            Metric::Accuracy => self.accuracy,
            Metric::MacroF1 => self.macro_f1,
            Metric::MicroF1 => self.micro_f1,
            Metric::Loss => self.loss,
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
}

impl Metric {
    /// Every metric, in the order the error message lists them.
    pub const ALL: [Self; 4] = [Self::Accuracy, Self::MacroF1, Self::MicroF1, Self::Loss];

    /// The metric's name (`--metric`, TOML, serde, `eval.json`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Accuracy => "accuracy",
            Self::MacroF1 => "macro_f1",
            Self::MicroF1 => "micro_f1",
            Self::Loss => "loss",
        }
    }

    /// Whether a larger value is better (all but loss).
    pub fn higher_is_better(self) -> bool {
        self != Self::Loss
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
            .ok_or_else(|| format!("metric {s:?}: accuracy, macro_f1, micro_f1 or loss"))
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
