//! Bindings for `crate::data`: k-fold indices and the CIFAR-10 readers.

use std::path::PathBuf;

use numpy::{IntoPyArray, PyArray1, PyArray2, PyArray4, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::data::{cifar, folds};
use crate::Error;

type PySplit<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<i64>>);
type PyXY<'py> = (Bound<'py, PyArray4<u8>>, Bound<'py, PyArray2<u8>>);

fn seed_u32(seed: i64) -> PyResult<u32> {
    u32::try_from(seed).map_err(|_| {
        Error::invalid(format!("seed must be between 0 and 2**32 - 1, got {seed}")).into()
    })
}

fn to_py_splits(py: Python<'_>, splits: Vec<folds::Fold>) -> Vec<PySplit<'_>> {
    let to_i64 = |v: Vec<usize>| -> Vec<i64> {
        v.into_iter()
            .map(|i| i64::try_from(i).expect("index fits in i64"))
            .collect()
    };
    splits
        .into_iter()
        .map(|(train, val)| (to_i64(train).into_pyarray(py), to_i64(val).into_pyarray(py)))
        .collect()
}

/// Shuffled k-fold ``(train, val)`` index pairs, equal to scikit-learn's
/// ``KFold(k, shuffle=shuffle, random_state=seed).split(range(n))``.
///
/// Parameters
/// ----------
/// n : int
///     Number of samples.
/// k : int
///     Number of folds, ``2 <= k <= n``.
/// shuffle : bool, default True
///     Shuffle before splitting (numpy's legacy ``RandomState(seed)``).
/// seed : int, default 42
///     Seed in ``[0, 2**32)``; ignored when ``shuffle`` is false.
///
/// Returns
/// -------
/// list of tuple of numpy.ndarray
///     ``k`` pairs ``(train, val)`` of sorted int64 indices.
#[pyfunction]
#[pyo3(signature = (n, k, shuffle=true, seed=42))]
fn kfold_indices(
    py: Python<'_>,
    n: usize,
    k: usize,
    shuffle: bool,
    seed: i64,
) -> PyResult<Vec<PySplit<'_>>> {
    let seed = seed_u32(seed)?;
    let splits = py.detach(|| folds::kfold(n, k, shuffle, seed))?;
    Ok(to_py_splits(py, splits))
}

/// Class codes for any label array-like of shape (N,) or (N, 1). The folds
/// depend only on which samples share a class, so codes from `np.unique`
/// give the same folds as the labels themselves, whatever their dtype.
fn label_codes(labels: &Bound<'_, PyAny>) -> PyResult<Vec<i64>> {
    let py = labels.py();
    let np = py.import("numpy")?;
    let arr = np.call_method1("asarray", (labels,))?;
    let shape: Vec<usize> = arr.getattr("shape")?.extract()?;
    let arr = match shape.as_slice() {
        [_] => arr,
        [_, 1] => arr.call_method0("ravel")?,
        _ => {
            return Err(Error::invalid(format!(
                "labels must be 1-D (N,) or a column (N, 1), got shape {}",
                crate::error::shape_str(&shape)
            ))
            .into())
        }
    };
    let kwargs = PyDict::new(py);
    kwargs.set_item("return_inverse", true)?;
    let (_, inverse): (Bound<'_, PyAny>, Bound<'_, PyAny>) =
        np.call_method("unique", (arr,), Some(&kwargs))?.extract()?;
    let codes = inverse.call_method1("astype", ("int64",))?;
    let codes: PyReadonlyArray1<'_, i64> = codes.call_method0("ravel")?.extract()?;
    Ok(codes.as_array().to_vec())
}

/// Stratified k-fold ``(train, val)`` index pairs, equal to scikit-learn's
/// ``StratifiedKFold(k, shuffle=shuffle, random_state=seed).split(x, labels)``.
///
/// Parameters
/// ----------
/// labels : array_like
///     Class labels, shape ``(N,)`` or ``(N, 1)`` (Keras layout), any dtype.
/// k : int
///     Number of folds; at least one class must have ``k`` members.
/// shuffle : bool, default True
///     Shuffle each class's fold assignment (numpy's legacy ``RandomState(seed)``).
/// seed : int, default 42
///     Seed in ``[0, 2**32)``; ignored when ``shuffle`` is false.
///
/// Returns
/// -------
/// list of tuple of numpy.ndarray
///     ``k`` pairs ``(train, val)`` of sorted int64 indices.
#[pyfunction]
#[pyo3(signature = (labels, k, shuffle=true, seed=42))]
fn stratified_kfold_indices<'py>(
    py: Python<'py>,
    labels: &Bound<'py, PyAny>,
    k: usize,
    shuffle: bool,
    seed: i64,
) -> PyResult<Vec<PySplit<'py>>> {
    let seed = seed_u32(seed)?;
    let codes = label_codes(labels)?;
    let splits = py.detach(|| folds::stratified_kfold(&codes, k, shuffle, seed))?;
    Ok(to_py_splits(py, splits))
}

/// Finds CIFAR-10 at or below ``root``.
///
/// Parameters
/// ----------
/// root : str or os.PathLike
///     A batch folder, an archive, or a folder holding either in a Keras,
///     torchvision or plain-extraction layout.
///
/// Returns
/// -------
/// tuple of (str, str) or None
///     ``(kind, path)`` with kind ``"pickle"``, ``"binary"`` or ``"archive"``;
///     None when nothing is there.
#[pyfunction]
fn locate_cifar10(py: Python<'_>, root: PathBuf) -> Option<(&'static str, PathBuf)> {
    py.detach(|| cifar::locate(&root)).map(|source| {
        let kind = match source {
            cifar::Source::PickleDir(_) => "pickle",
            cifar::Source::BinDir(_) => "binary",
            cifar::Source::Archive(_) => "archive",
        };
        (kind, source.path().to_path_buf())
    })
}

/// Reads CIFAR-10 from ``root`` (see ``locate_cifar10``) in Keras layout.
///
/// Parameters
/// ----------
/// root : str or os.PathLike
///     Where the batches or the archive are.
///
/// Returns
/// -------
/// tuple
///     ``((x_train, y_train), (x_test, y_test))``: uint8 images
///     ``(N, 32, 32, 3)`` and uint8 labels ``(N, 1)``.
///
/// Raises
/// ------
/// FileNotFoundError
///     Nothing at ``root``, or a batch file is missing.
/// cnnrs.DataFormatError
///     A batch or the archive is corrupt, truncated or not CIFAR-10.
#[pyfunction]
fn read_cifar10(py: Python<'_>, root: PathBuf) -> PyResult<(PyXY<'_>, PyXY<'_>)> {
    let ds = py.detach(|| cifar::load(&root))?;
    let pair = |s: cifar::Split| (s.images.into_pyarray(py), s.labels.into_pyarray(py));
    Ok((pair(ds.train), pair(ds.test)))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(kfold_indices, m)?)?;
    m.add_function(wrap_pyfunction!(stratified_kfold_indices, m)?)?;
    m.add_function(wrap_pyfunction!(locate_cifar10, m)?)?;
    m.add_function(wrap_pyfunction!(read_cifar10, m)?)?;
    m.add("CIFAR10_CLASSES", cifar::CLASSES.to_vec())?;
    Ok(())
}
