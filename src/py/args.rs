//! Scalar arguments as Python users pass them: ints, floats, bools, numpy
//! scalars, with errors that name the argument, say what came and what is
//! accepted. Every binding extracts its scalar arguments through these
//! (`#[pyo3(from_py_with = ...)]` or a call at the top of the wrapper), so
//! `stride=1.5`, `p=None` or `epochs=-1` never surface as PyO3's own
//! "'float' object cannot be interpreted as an integer" or an `OverflowError`.
//! Array arguments are converted here too ([`array_like`]), with errors that
//! name them.

use numpy::{npyffi, PyUntypedArray, PY_ARRAY_API};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyString};

/// `repr(obj)` for messages, shortened so a huge list does not flood them.
pub fn short_repr(obj: &Bound<'_, PyAny>) -> String {
    let r = obj
        .repr()
        .map_or_else(|_| "<unprintable>".to_string(), |s| s.to_string());
    if r.chars().count() > 60 {
        format!("{}...", r.chars().take(57).collect::<String>())
    } else {
        r
    }
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map_or_else(|_| "object".to_string(), |n| n.to_string())
}

/// Whether `obj` is an integer for Python users: `int` or a numpy integer
/// (anything with `__index__`), but not `bool`.
fn as_index<'py>(obj: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
    if obj.is_instance_of::<PyBool>() || obj.is_instance_of::<PyFloat>() {
        return None;
    }
    // numpy.bool_ has __index__ in old numpy versions; it is not a count.
    if type_name(obj) == "bool" || type_name(obj) == "bool_" {
        return None;
    }
    obj.call_method0("__index__").ok()
}

/// An integer argument in `[min, max]`, for sizes, counts and indices.
///
/// # Errors
/// `TypeError` for non-integers (floats, bools, None, strings), `ValueError`
/// naming `name` and the accepted range for integers outside it.
pub fn int_in(obj: &Bound<'_, PyAny>, name: &str, min: i64, max: i64) -> PyResult<i64> {
    let Some(index) = as_index(obj) else {
        return Err(PyTypeError::new_err(format!(
            "{name} must be an integer, got {} ({})",
            short_repr(obj),
            type_name(obj)
        )));
    };
    let range = || {
        if max == i64::MAX {
            format!("an integer >= {min}")
        } else {
            format!("an integer in [{min}, {max}]")
        }
    };
    match index.extract::<i64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(PyValueError::new_err(format!(
            "{name} must be {}, got {}",
            range(),
            short_repr(obj)
        ))),
    }
}

/// A count or size: an integer in `[min, max]` as `usize`.
///
/// # Errors
/// As [`int_in`].
pub fn usize_in(obj: &Bound<'_, PyAny>, name: &str, min: usize, max: usize) -> PyResult<usize> {
    let to_i = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
    int_in(obj, name, to_i(min), to_i(max)).map(|v| v as usize)
}

/// A dict's key as a `String`; `what` names the dict in the error.
///
/// # Errors
/// `TypeError` for a key that is not a `str`.
pub fn str_key(key: &Bound<'_, PyAny>, what: &str) -> PyResult<String> {
    key.extract().map_err(|_| {
        PyTypeError::new_err(format!("{what} keys must be str, got {}", short_repr(key)))
    })
}

/// A real number (int, float or numpy scalar, not bool); `finite` refuses
/// NaN and infinities.
///
/// # Errors
/// `TypeError` for non-numbers, `ValueError` for non-finite values when `finite`.
pub fn number(obj: &Bound<'_, PyAny>, name: &str, finite: bool) -> PyResult<f64> {
    let not_number = || {
        PyTypeError::new_err(format!(
            "{name} must be a real number, got {} ({})",
            short_repr(obj),
            type_name(obj)
        ))
    };
    if obj.is_instance_of::<PyBool>() || obj.is_instance_of::<PyString>() {
        return Err(not_number());
    }
    let v = if let Ok(v) = obj.extract::<f64>() {
        v
    } else if let Some(i) = as_index(obj) {
        // Ints beyond f64's exponent range are not a use case; refuse them clearly.
        i.extract::<f64>().map_err(|_| not_number())?
    } else {
        return Err(not_number());
    };
    if finite && !v.is_finite() {
        return Err(PyValueError::new_err(format!(
            "{name} must be a finite number, got {}",
            short_repr(obj)
        )));
    }
    Ok(v)
}

/// A positive finite number (a learning rate, a scale).
///
/// # Errors
/// As [`number`], and `ValueError` for values <= 0.
pub fn positive_number(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<f64> {
    let v = number(obj, name, true)?;
    if v > 0.0 {
        Ok(v)
    } else {
        Err(PyValueError::new_err(format!(
            "{name} must be a positive finite number, got {}",
            short_repr(obj)
        )))
    }
}

/// A bool, or a numpy bool; 0 and 1 are not accepted (they are usually a
/// mistaken positional argument).
///
/// # Errors
/// `TypeError` for anything else.
pub fn flag(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<bool> {
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(b.is_true());
    }
    if type_name(obj) == "bool" || type_name(obj) == "bool_" {
        return obj.is_truthy();
    }
    Err(PyTypeError::new_err(format!(
        "{name} must be True or False, got {} ({})",
        short_repr(obj),
        type_name(obj)
    )))
}

/// A string argument chosen from `accepted` (compared as given).
///
/// # Errors
/// `TypeError` for non-strings and `ValueError` for other strings; both list
/// the accepted values.
pub fn choice<'a>(obj: &Bound<'_, PyAny>, name: &str, accepted: &[&'a str]) -> PyResult<&'a str> {
    let list = accepted
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let Ok(s) = obj.cast::<PyString>() else {
        return Err(PyTypeError::new_err(format!(
            "{name} must be one of {list}, got {} ({})",
            short_repr(obj),
            type_name(obj)
        )));
    };
    let s = s.to_cow()?;
    accepted
        .iter()
        .find(|a| **a == s.as_ref())
        .copied()
        .ok_or_else(|| PyValueError::new_err(format!("{name} must be one of {list}, got {s:?}")))
}

/// `obj` as a numpy array, converted by numpy's C API (`PyArray_CheckFromAny`,
/// what `numpy.asarray` runs, without importing numpy functions from Rust):
/// arrays come back as they are when already aligned and in native byte
/// order (views, negative strides and Fortran order included), otherwise as
/// a copy; lists and other array-likes are converted. `c_contiguous` also
/// asks for C order.
///
/// # Errors
/// The conversion's `TypeError`/`ValueError`, with a message that names
/// `name` (a ragged list, an object numpy cannot read).
pub fn array_like<'py>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    c_contiguous: bool,
) -> PyResult<Bound<'py, PyUntypedArray>> {
    let py = obj.py();
    let mut flags = npyffi::NPY_ARRAY_ALIGNED | npyffi::NPY_ARRAY_NOTSWAPPED;
    if c_contiguous {
        flags |= npyffi::NPY_ARRAY_C_CONTIGUOUS;
    }
    // SAFETY: `obj` is a live object; a NULL descriptor lets numpy choose the
    // dtype; the result is a new reference or NULL with an exception set.
    let ptr = unsafe {
        PY_ARRAY_API.PyArray_CheckFromAny(
            py,
            obj.as_ptr(),
            std::ptr::null_mut(),
            0,
            0,
            flags,
            std::ptr::null_mut(),
        )
    };
    // SAFETY: `ptr` is the new reference (or NULL) returned just above.
    let converted = unsafe { Bound::from_owned_ptr_or_err(py, ptr) };
    match converted {
        Ok(arr) => Ok(arr.cast_into::<PyUntypedArray>()?),
        Err(e) if e.is_instance_of::<PyTypeError>(py) => Err(PyTypeError::new_err(format!(
            "{name} must be an array-like of numbers, got {} ({}): {}",
            short_repr(obj),
            type_name(obj),
            e.value(py)
        ))),
        Err(e) if e.is_instance_of::<PyValueError>(py) => Err(PyValueError::new_err(format!(
            "{name} must be an array-like of numbers, got {} ({}): {}",
            short_repr(obj),
            type_name(obj),
            e.value(py)
        ))),
        Err(e) => Err(e),
    }
}

/// An exact integer (Python int or numpy integer, not bool) as `i128`, or
/// `None` when `obj` is no integer; `name` is for the range error.
///
/// # Errors
/// `ValueError` for integers outside `i128`.
pub fn exact_int(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Option<i128>> {
    let Some(index) = as_index(obj) else {
        return Ok(None);
    };
    index.extract::<i128>().map(Some).map_err(|_| {
        PyValueError::new_err(format!(
            "{name} is too large an integer, got {}",
            short_repr(obj)
        ))
    })
}

/// A pair of integers (a tuple, list or other sequence of two), each as
/// [`int_in`] checks it.
///
/// # Errors
/// `TypeError` for non-sequences (strings included) and non-integers,
/// `ValueError` for sequences of another length or values out of range.
pub fn int_pair(obj: &Bound<'_, PyAny>, name: &str, what: &str) -> PyResult<(i64, i64)> {
    let items: Vec<Bound<'_, PyAny>> = if obj.is_instance_of::<PyString>() {
        None
    } else {
        obj.extract().ok()
    }
    .ok_or_else(|| {
        PyTypeError::new_err(format!(
            "{name} must be a pair {what} of integers, got {} ({})",
            short_repr(obj),
            type_name(obj)
        ))
    })?;
    match items.as_slice() {
        [a, b] => Ok((
            int_in(a, name, i64::MIN, i64::MAX)?,
            int_in(b, name, i64::MIN, i64::MAX)?,
        )),
        other => Err(PyValueError::new_err(format!(
            "{name} must be a pair {what}, got {} values",
            other.len()
        ))),
    }
}
