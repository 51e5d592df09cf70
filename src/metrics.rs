//! Classification metrics: confusion matrix, per-class precision, recall and
//! F1, and the averages of scikit-learn's `classification_report`.
//!
//! Every number equals scikit-learn's with `zero_division=0` to the last bit:
//! the divisions are the same and sums use numpy's pairwise summation.

use ndarray::{Array1, Array2, ArrayView2};

use crate::{Error, Result};

/// The most classes a confusion matrix may have: a 10 000 × 10 000 matrix
/// is 800 MB of counts. More is a mistake (labels that are not class
/// indices, a sample count passed as `num_classes`), refused before any
/// allocation.
pub const MAX_CLASSES: usize = 10_000;

/// Counts of `(true, predicted)` pairs: rows are true labels, columns
/// predicted labels, as in scikit-learn. Labels are `0..num_classes`;
/// `num_classes` defaults to the largest label in either input plus one.
///
/// # Errors
/// [`Error::InvalidArgument`] when the inputs differ in length, a label is
/// negative or not below `num_classes`, or both inputs are empty and
/// `num_classes` is not given.
pub fn confusion_matrix(
    y_true: &[i64],
    y_pred: &[i64],
    num_classes: Option<usize>,
) -> Result<Array2<i64>> {
    if y_true.len() != y_pred.len() {
        return Err(Error::invalid(format!(
            "y_true and y_pred must have the same length, got {} and {}",
            y_true.len(),
            y_pred.len()
        )));
    }
    let (name, negative) = match (
        y_true.iter().find(|&&l| l < 0),
        y_pred.iter().find(|&&l| l < 0),
    ) {
        (Some(l), _) => ("y_true", Some(*l)),
        (None, Some(l)) => ("y_pred", Some(*l)),
        (None, None) => ("", None),
    };
    if let Some(l) = negative {
        return Err(Error::invalid(format!(
            "{name} holds the negative label {l}; labels must be class indices 0..k-1"
        )));
    }
    let largest = [("y_true", y_true), ("y_pred", y_pred)]
        .into_iter()
        .filter_map(|(name, labels)| labels.iter().max().map(|&m| (m, name)))
        .max();
    let k = match (num_classes, largest) {
        (Some(k), _) if !(1..=MAX_CLASSES).contains(&k) => {
            return Err(Error::invalid(format!(
                "num_classes must be an integer in [1, {MAX_CLASSES}], got {k}"
            )))
        }
        (Some(k), Some((max, name))) if usize::try_from(max).map_or(true, |m| m >= k) => {
            return Err(Error::invalid(format!(
                "{name} holds label {max}, out of range for num_classes={k} (labels must be 0..{})",
                k - 1
            )))
        }
        (Some(k), _) => k,
        (None, Some((max, name))) => usize::try_from(max)
            .ok()
            .filter(|&m| m < MAX_CLASSES)
            .map(|m| m + 1)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "{name} holds label {max}: a confusion matrix has at most {MAX_CLASSES} \
                     classes (labels 0..{}); pass class indices",
                    MAX_CLASSES - 1
                ))
            })?,
        (None, None) => {
            return Err(Error::invalid(
                "cannot infer num_classes from empty labels; pass num_classes",
            ))
        }
    };
    let mut counts: Vec<i64> = Vec::new();
    counts.try_reserve_exact(k * k).map_err(|_| {
        Error::OutOfMemory(format!(
            "cannot allocate a {k} x {k} confusion matrix ({} MiB)",
            (k * k * 8) >> 20
        ))
    })?;
    counts.resize(k * k, 0);
    let mut cm = Array2::from_shape_vec((k, k), counts).expect("k * k counts");
    for (&t, &p) in y_true.iter().zip(y_pred) {
        // Both are checked non-negative and below k above.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        {
            cm[[t as usize, p as usize]] += 1;
        }
    }
    Ok(cm)
}

/// Per-class scores from a confusion matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassScores {
    /// `tp / (tp + fp)`, 0 where nothing was predicted as the class.
    pub precision: Array1<f64>,
    /// `tp / (tp + fn)`, 0 where the class never occurs.
    pub recall: Array1<f64>,
    /// `2 tp / (2 tp + fp + fn)`, 0 where both are undefined.
    pub f1: Array1<f64>,
    /// Occurrences of each class in the true labels.
    pub support: Array1<i64>,
}

fn check_square(cm: ArrayView2<'_, i64>) -> Result<()> {
    let (r, c) = cm.dim();
    if r != c || r == 0 {
        return Err(Error::invalid(format!(
            "confusion matrix must be square (k, k) with k >= 1, got shape ({r}, {c})"
        )));
    }
    if cm.iter().any(|&v| v < 0) {
        return Err(Error::invalid("confusion matrix holds negative counts"));
    }
    // Row plus column sums (support + predicted) must fit in i64, or the
    // scores would be computed from wrapped counts.
    let total: i128 = cm.iter().map(|&v| i128::from(v)).sum();
    if total > i128::from(i64::MAX / 2) {
        return Err(Error::invalid(format!(
            "confusion matrix counts sum to {total}, more than 2**62; they are not sample counts"
        )));
    }
    Ok(())
}

#[allow(clippy::cast_precision_loss)]
fn divide(num: f64, den: i64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num / den as f64
    }
}

/// Precision, recall, F1 and support of every class of `cm` (rows true,
/// columns predicted), with scikit-learn's `zero_division=0`.
///
/// # Errors
/// [`Error::InvalidArgument`] when `cm` is not square or holds negative counts.
#[allow(clippy::cast_precision_loss)]
pub fn precision_recall_f1(cm: ArrayView2<'_, i64>) -> Result<ClassScores> {
    check_square(cm)?;
    let tp = cm.diag().to_owned();
    let support = cm.sum_axis(ndarray::Axis(1));
    let predicted = cm.sum_axis(ndarray::Axis(0));
    let k = tp.len();
    let mut scores = ClassScores {
        precision: Array1::zeros(k),
        recall: Array1::zeros(k),
        f1: Array1::zeros(k),
        support: support.clone(),
    };
    for i in 0..k {
        scores.precision[i] = divide(tp[i] as f64, predicted[i]);
        scores.recall[i] = divide(tp[i] as f64, support[i]);
        // sklearn: (1 + beta²) tp / (beta² true + pred) with beta = 1
        scores.f1[i] = divide(2.0 * tp[i] as f64, support[i] + predicted[i]);
    }
    Ok(scores)
}

/// numpy's pairwise summation of float64 (`np.sum` on a contiguous array),
/// reproduced so that averages equal scikit-learn's bit for bit.
#[must_use]
pub fn pairwise_sum(a: &[f64]) -> f64 {
    const BLOCK: usize = 128;
    let n = a.len();
    if n < 8 {
        a.iter().fold(-0.0, |acc, &x| acc + x)
    } else if n <= BLOCK {
        let mut r = [0.0; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - n % 8 {
            for j in 0..8 {
                r[j] += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &x in &a[i..] {
            res += x;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum(&a[..n2]) + pairwise_sum(&a[n2..])
    }
}

/// Averages of one score over the reported classes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Averages {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// Everything scikit-learn's `classification_report` prints, as numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The reported class labels, ascending.
    pub labels: Vec<usize>,
    /// Scores of those labels, in the same order.
    pub scores: ClassScores,
    /// Fraction of correct predictions.
    pub accuracy: f64,
    /// Unweighted mean over the reported classes.
    pub macro_avg: Averages,
    /// Mean weighted by support.
    pub weighted_avg: Averages,
    /// Number of samples.
    pub total: i64,
}

#[allow(clippy::cast_precision_loss)]
fn macro_mean(a: &Array1<f64>) -> f64 {
    pairwise_sum(a.as_slice().expect("owned 1-D")) / a.len() as f64
}

#[allow(clippy::cast_precision_loss)]
fn weighted_mean(a: &Array1<f64>, w: &Array1<i64>) -> f64 {
    let weights: Vec<f64> = w.iter().map(|&x| x as f64).collect();
    let products: Vec<f64> = a.iter().zip(&weights).map(|(x, w)| x * w).collect();
    let scale = pairwise_sum(&weights);
    if scale == 0.0 {
        0.0
    } else {
        pairwise_sum(&products) / scale
    }
}

/// scikit-learn's `classification_report(..., zero_division=0)` as numbers.
///
/// Without `num_classes` the report covers the labels present in `y_true` or
/// `y_pred` (scikit-learn's default); with it, every label `0..num_classes`
/// (scikit-learn's `labels=range(num_classes)`).
///
/// # Errors
/// As [`confusion_matrix`]; also when the inputs are empty.
#[allow(clippy::cast_precision_loss)]
pub fn classification_report(
    y_true: &[i64],
    y_pred: &[i64],
    num_classes: Option<usize>,
) -> Result<Report> {
    if y_true.is_empty() {
        return Err(Error::invalid("y_true and y_pred are empty"));
    }
    let cm = confusion_matrix(y_true, y_pred, num_classes)?;
    let all = precision_recall_f1(cm.view())?;
    let labels: Vec<usize> = if num_classes.is_some() {
        (0..cm.nrows()).collect()
    } else {
        (0..cm.nrows())
            .filter(|&i| cm.row(i).sum() > 0 || cm.column(i).sum() > 0)
            .collect()
    };
    let pick_f = |a: &Array1<f64>| labels.iter().map(|&i| a[i]).collect::<Array1<f64>>();
    let scores = ClassScores {
        precision: pick_f(&all.precision),
        recall: pick_f(&all.recall),
        f1: pick_f(&all.f1),
        support: labels.iter().map(|&i| all.support[i]).collect(),
    };
    let average = |mean: &dyn Fn(&Array1<f64>) -> f64| Averages {
        precision: mean(&scores.precision),
        recall: mean(&scores.recall),
        f1: mean(&scores.f1),
    };
    let macro_avg = average(&macro_mean);
    let weighted_avg = average(&|a| weighted_mean(a, &scores.support));
    let total = scores.support.sum();
    let correct = cm.diag().sum();
    Ok(Report {
        accuracy: divide(correct as f64, total),
        labels,
        macro_avg,
        weighted_avg,
        total,
        scores,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn confusion_rows_are_true_labels() {
        let cm = confusion_matrix(&[0, 1, 2, 2], &[0, 2, 2, 1], None).unwrap();
        assert_eq!(cm, array![[1, 0, 0], [0, 0, 1], [0, 1, 1]]);
        let cm = confusion_matrix(&[0], &[0], Some(3)).unwrap();
        assert_eq!(cm.dim(), (3, 3));
    }

    #[test]
    fn confusion_rejects_bad_labels() {
        assert!(confusion_matrix(&[0, 1], &[0], None).is_err());
        assert!(confusion_matrix(&[0, -1], &[0, 0], None).is_err());
        assert!(confusion_matrix(&[0, 3], &[0, 0], Some(3)).is_err());
        assert!(confusion_matrix(&[], &[], None).is_err());
        for k in [0, MAX_CLASSES + 1, 10_000_000_000] {
            let err = confusion_matrix(&[0], &[0], Some(k)).unwrap_err();
            assert!(err.to_string().contains("num_classes"), "{err}");
        }
        let err = confusion_matrix(&[0], &[1_000_000_000], None).unwrap_err();
        assert!(err.to_string().contains("y_pred"), "{err}");
    }

    #[test]
    fn scores_by_hand() {
        // class 0: tp 1, fp 0, fn 0; class 1: tp 0, fp 1, fn 1; class 2: tp 1, fp 1, fn 1
        let cm = array![[1, 0, 0], [0, 0, 1], [0, 1, 1]];
        let s = precision_recall_f1(cm.view()).unwrap();
        assert_eq!(s.precision, array![1.0, 0.0, 0.5]);
        assert_eq!(s.recall, array![1.0, 0.0, 0.5]);
        assert_eq!(s.f1, array![1.0, 0.0, 0.5]);
        assert_eq!(s.support, array![1, 1, 2]);
    }

    #[test]
    fn never_predicted_class_scores_zero() {
        let cm = array![[2, 0], [1, 0]];
        let s = precision_recall_f1(cm.view()).unwrap();
        assert_eq!(s.precision[1], 0.0);
        assert_eq!(s.f1[1], 0.0);
    }

    #[test]
    fn report_covers_present_labels_only() {
        let r = classification_report(&[0, 3, 3], &[0, 3, 0], None).unwrap();
        assert_eq!(r.labels, [0, 3]);
        assert_eq!(r.total, 3);
        assert!((r.accuracy - 2.0 / 3.0).abs() < 1e-15);
        let r = classification_report(&[0, 3, 3], &[0, 3, 0], Some(5)).unwrap();
        assert_eq!(r.labels, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn pairwise_sum_is_exact_on_integers() {
        let a: Vec<f64> = (0..1000).map(f64::from).collect();
        assert_eq!(pairwise_sum(&a), 499_500.0);
        assert_eq!(pairwise_sum(&[]), 0.0);
    }
}
