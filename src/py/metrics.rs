//! Bindings for `crate::metrics`. Labels arrive as 1-D int64 arrays; the
//! Python layer (`cnnrs.metrics`) turns one-hot, probabilities and `(N, 1)`
//! columns into those first.

use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::args;
use crate::metrics;

fn num_classes_arg(obj: &Bound<'_, PyAny>) -> PyResult<Option<usize>> {
    if obj.is_none() {
        return Ok(None);
    }
    args::usize_in(obj, "num_classes", 1, metrics::MAX_CLASSES).map(Some)
}

fn to_vec(a: &PyReadonlyArray1<'_, i64>) -> Vec<i64> {
    a.as_array().to_vec()
}

/// Confusion matrix of integer labels: rows true, columns predicted.
///
/// Parameters
/// ----------
/// y_true, y_pred : numpy.ndarray
///     1-D int64 labels in ``0..num_classes``, same length.
/// num_classes : int, optional
///     Matrix size, at most 10 000; default the largest label in either
///     input plus one.
///
/// Returns
/// -------
/// numpy.ndarray
///     int64 ``(num_classes, num_classes)`` counts.
#[pyfunction]
#[pyo3(signature = (y_true, y_pred, num_classes=None))]
fn confusion_matrix<'py>(
    py: Python<'py>,
    y_true: PyReadonlyArray1<'py, i64>,
    y_pred: PyReadonlyArray1<'py, i64>,
    #[pyo3(from_py_with = num_classes_arg)] num_classes: Option<usize>,
) -> PyResult<Bound<'py, PyArray2<i64>>> {
    let (t, p) = (to_vec(&y_true), to_vec(&y_pred));
    let cm = py.detach(|| metrics::confusion_matrix(&t, &p, num_classes))?;
    Ok(cm.into_pyarray(py))
}

type Scores<'py> = (
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<i64>>,
);

fn scores_to_py(py: Python<'_>, s: metrics::ClassScores) -> Scores<'_> {
    (
        s.precision.into_pyarray(py),
        s.recall.into_pyarray(py),
        s.f1.into_pyarray(py),
        s.support.into_pyarray(py),
    )
}

/// Per-class precision, recall, F1 and support of a confusion matrix.
///
/// Parameters
/// ----------
/// cm : numpy.ndarray
///     int64 ``(k, k)``, rows true, columns predicted.
///
/// Returns
/// -------
/// tuple of numpy.ndarray
///     ``(precision, recall, f1, support)``; a score whose denominator is 0
///     is 0 (scikit-learn's ``zero_division=0``).
#[pyfunction]
fn precision_recall_f1<'py>(
    py: Python<'py>,
    cm: PyReadonlyArray2<'py, i64>,
) -> PyResult<Scores<'py>> {
    let cm = cm.as_array().to_owned();
    let s = py.detach(|| metrics::precision_recall_f1(cm.view()))?;
    Ok(scores_to_py(py, s))
}

/// The numbers of scikit-learn's ``classification_report(zero_division=0)``.
///
/// Parameters
/// ----------
/// y_true, y_pred : numpy.ndarray
///     1-D int64 labels, same length, not empty.
/// num_classes : int, optional
///     Report every label ``0..num_classes``; default the labels present in
///     either input.
///
/// Returns
/// -------
/// dict
///     ``labels`` (int64), ``precision``, ``recall``, ``f1-score`` (float64),
///     ``support`` (int64) per reported label; ``accuracy``; ``macro avg`` and
///     ``weighted avg`` as ``(precision, recall, f1)``; ``total`` samples.
#[pyfunction]
#[pyo3(signature = (y_true, y_pred, num_classes=None))]
fn classification_scores<'py>(
    py: Python<'py>,
    y_true: PyReadonlyArray1<'py, i64>,
    y_pred: PyReadonlyArray1<'py, i64>,
    #[pyo3(from_py_with = num_classes_arg)] num_classes: Option<usize>,
) -> PyResult<Bound<'py, PyDict>> {
    let (t, p) = (to_vec(&y_true), to_vec(&y_pred));
    let r = py.detach(|| metrics::classification_report(&t, &p, num_classes))?;
    let labels: Vec<i64> = r
        .labels
        .iter()
        .map(|&l| l as i64) // labels are below MAX_CLASSES
        .collect();
    let (precision, recall, f1, support) = scores_to_py(py, r.scores);
    let out = PyDict::new(py);
    out.set_item("labels", labels.into_pyarray(py))?;
    out.set_item("precision", precision)?;
    out.set_item("recall", recall)?;
    out.set_item("f1-score", f1)?;
    out.set_item("support", support)?;
    out.set_item("accuracy", r.accuracy)?;
    let avg = |a: metrics::Averages| (a.precision, a.recall, a.f1);
    out.set_item("macro avg", avg(r.macro_avg))?;
    out.set_item("weighted avg", avg(r.weighted_avg))?;
    out.set_item("total", r.total)?;
    Ok(out)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(confusion_matrix, m)?)?;
    m.add_function(wrap_pyfunction!(precision_recall_f1, m)?)?;
    m.add_function(wrap_pyfunction!(classification_scores, m)?)?;
    Ok(())
}
