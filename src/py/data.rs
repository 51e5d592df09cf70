//! Bindings for `crate::data`: k-fold indices and the CIFAR-10 readers.

use std::path::PathBuf;

use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArray4, PyArrayDescrMethods, PyReadonlyArrayDyn,
    PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::PyString;

use super::args;
use crate::data::{cifar, folds};
use crate::Error;

type PySplit<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<i64>>);
type PyXY<'py> = (Bound<'py, PyArray4<u8>>, Bound<'py, PyArray2<u8>>);

fn n_arg(obj: &Bound<'_, PyAny>) -> PyResult<usize> {
    args::usize_in(obj, "n", 0, usize::MAX)
}

fn k_arg(obj: &Bound<'_, PyAny>) -> PyResult<usize> {
    args::usize_in(obj, "k", 0, usize::MAX)
}

fn shuffle_arg(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    args::flag(obj, "shuffle")
}

fn seed_arg(obj: &Bound<'_, PyAny>) -> PyResult<u32> {
    args::int_in(obj, "seed", 0, i64::from(u32::MAX)).map(|s| s as u32)
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
    #[pyo3(from_py_with = n_arg)] n: usize,
    #[pyo3(from_py_with = k_arg)] k: usize,
    #[pyo3(from_py_with = shuffle_arg)] shuffle: bool,
    #[pyo3(from_py_with = seed_arg)] seed: u32,
) -> PyResult<Vec<PySplit<'_>>> {
    let splits = py.detach(|| folds::kfold(n, k, shuffle, seed))?;
    Ok(to_py_splits(py, splits))
}

/// One label as a hashable key: its bytes for fixed-width dtypes (ints,
/// bools, fixed-width strings, dates), floats with -0.0 made 0.0 and every
/// NaN one NaN (as `numpy.unique` groups them), and ints, floats and strings
/// of an object array by value.
#[derive(Clone, PartialEq, Eq, Hash)]
enum LabelKey {
    Raw(Vec<u8>),
    Int(i128),
    Float(u64),
    Text(String),
}

fn float_key(v: f64) -> LabelKey {
    if v.is_nan() {
        LabelKey::Float(f64::NAN.to_bits())
    } else if v == 0.0 {
        LabelKey::Int(0)
    } else if v.fract() == 0.0 && v.abs() < 1e30 {
        // 2.0 and 2 are one class, as numpy compares them.
        LabelKey::Int(v as i128)
    } else {
        LabelKey::Float(v.to_bits())
    }
}

/// Class codes (numbered by first appearance) for a label array-like of
/// shape (N,) or (N, 1), of any dtype numpy can compare, computed here
/// rather than by `numpy.unique`: the folds depend only on which samples
/// share a class.
fn label_codes(labels: &Bound<'_, PyAny>) -> PyResult<Vec<i64>> {
    let arr = args::array_like(labels, "labels", true)?;
    match arr.shape() {
        [_] | [_, 1] => {}
        shape => {
            return Err(Error::invalid(format!(
                "labels must be 1-D (N,) or a column (N, 1), got shape {}",
                crate::error::shape_str(shape)
            ))
            .into())
        }
    }
    let dtype = arr.dtype();
    let (kind, size) = (dtype.kind(), dtype.itemsize());
    let keys: Vec<LabelKey> = match kind {
        b'f' if size == 4 => {
            let a: PyReadonlyArrayDyn<'_, f32> = arr.extract()?;
            a.as_array()
                .iter()
                .map(|&v| float_key(f64::from(v)))
                .collect()
        }
        b'f' if size == 8 => {
            let a: PyReadonlyArrayDyn<'_, f64> = arr.extract()?;
            a.as_array().iter().map(|&v| float_key(v)).collect()
        }
        b'O' => {
            let a: PyReadonlyArrayDyn<'_, Py<PyAny>> = arr.extract()?;
            a.as_array()
                .iter()
                .map(|v| object_key(v.bind(labels.py())))
                .collect::<PyResult<_>>()?
        }
        b'b' | b'i' | b'u' | b'U' | b'S' | b'M' | b'm' => {
            // SAFETY: the array is C-contiguous and aligned (asked of
            // `array_like`), so its `len * itemsize` bytes start at `data`;
            // the GIL is held and nothing runs Python code while they are
            // copied into owned keys.
            let bytes = unsafe {
                let raw = &*arr.as_array_ptr();
                std::slice::from_raw_parts(
                    raw.fields.data.cast::<u8>().cast_const(),
                    arr.len() * size,
                )
            };
            bytes
                .chunks_exact(size.max(1))
                .map(|b| LabelKey::Raw(b.to_vec()))
                .collect()
        }
        _ => {
            return Err(Error::invalid_type(format!(
                "labels must be integers, floats, bools or strings, got dtype {dtype}"
            ))
            .into())
        }
    };
    Ok(folds::codes_by_first_appearance(keys))
}

fn object_key(v: &Bound<'_, PyAny>) -> PyResult<LabelKey> {
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(LabelKey::Text(s.to_cow()?.into_owned()));
    }
    if let Ok(Some(i)) = args::exact_int(v, "labels") {
        return Ok(LabelKey::Int(i));
    }
    if let Ok(b) = v.cast::<pyo3::types::PyBool>() {
        return Ok(LabelKey::Int(i128::from(b.is_true())));
    }
    if let Ok(f) = v.extract::<f64>() {
        return Ok(float_key(f));
    }
    Err(Error::invalid_type(format!(
        "labels must be integers, floats, bools or strings, got {}",
        args::short_repr(v)
    ))
    .into())
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
    #[pyo3(from_py_with = k_arg)] k: usize,
    #[pyo3(from_py_with = shuffle_arg)] shuffle: bool,
    #[pyo3(from_py_with = seed_arg)] seed: u32,
) -> PyResult<Vec<PySplit<'py>>> {
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
