//! The one error type of the crate. Core modules return `Result<_, Error>`;
//! the `From<Error> for PyErr` at the bottom of this file maps each variant
//! onto a Python exception in one place, so a user sees `ValueError`,
//! `TypeError`, `FileNotFoundError`, `MemoryError` or a `cnnrs.CnnrsError`
//! subclass, never a panic.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An argument the user passed is out of its accepted range or shape
    /// (maps to `ValueError`). The message names the argument, what is
    /// accepted and what came.
    #[error("{0}")]
    InvalidArgument(String),

    /// An argument has the wrong kind or dtype (maps to `TypeError`).
    #[error("{0}")]
    InvalidType(String),

    /// A file that should exist does not (maps to `FileNotFoundError`).
    #[error("no such file or directory: {}", .0.display())]
    NotFound(PathBuf),

    /// Any other I/O failure while reading or writing `path` (maps to `OSError`).
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file exists but its content is not what it claims to be: a corrupt
    /// image, a truncated CIFAR batch, a damaged model file
    /// (maps to `cnnrs.DataFormatError`).
    #[error("{0}")]
    Format(String),

    /// libtorch reported a failure (maps to `cnnrs.TorchError`).
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),

    /// The user interrupted a long computation (maps to `KeyboardInterrupt`).
    #[error("interrupted")]
    Interrupted,

    /// An allocation was refused, or would exceed what the machine can give
    /// (maps to `MemoryError`).
    #[error("{0}")]
    OutOfMemory(String),

    /// The object can no longer be used safely, e.g. a model whose training
    /// step failed halfway (maps to `cnnrs.CnnrsError`).
    #[error("{0}")]
    Unusable(String),
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    /// Shorthand for [`Error::InvalidType`].
    pub fn invalid_type(msg: impl Into<String>) -> Self {
        Error::InvalidType(msg.into())
    }

    /// Shorthand for [`Error::Format`].
    pub fn format(msg: impl Into<String>) -> Self {
        Error::Format(msg.into())
    }

    /// Wraps an I/O error on `path`, turning "not found" into [`Error::NotFound`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound(path)
        } else {
            Error::Io { path, source }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Formats a shape as numpy prints it: `(3, 3)`, `(5,)`.
#[must_use]
pub fn shape_str(shape: &[usize]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(feature = "python")]
mod python {
    use super::Error;
    use pyo3::exceptions::{
        PyException, PyFileNotFoundError, PyKeyboardInterrupt, PyMemoryError, PyOSError,
        PyTypeError, PyValueError,
    };
    use pyo3::prelude::*;
    use pyo3::sync::PyOnceLock;
    use pyo3::types::{PyTuple, PyType};
    use pyo3::PyErr;

    pyo3::create_exception!(
        cnnrs,
        CnnrsError,
        PyException,
        "Base class of the runtime errors cnnrs raises (corrupt files, libtorch failures)."
    );
    pyo3::create_exception!(
        cnnrs,
        TorchError,
        CnnrsError,
        "libtorch reported a failure while building, training or running a model."
    );

    /// `cnnrs.DataFormatError(CnnrsError, ValueError)`: a file exists but its
    /// content is not valid. It is a `ValueError` too, as `json.JSONDecodeError`
    /// is, so `except ValueError` catches a bad file the way Python users expect.
    /// `create_exception!` takes one base, so the type is made here with both.
    pub fn data_format_error(py: Python<'_>) -> &Bound<'_, PyType> {
        static TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        TYPE.get_or_init(py, || {
            let bases = PyTuple::new(
                py,
                [py.get_type::<CnnrsError>(), py.get_type::<PyValueError>()],
            )
            .expect("a tuple of two types");
            // SAFETY: a correct call of the C API: the name is "module.Name",
            // the doc a NUL-terminated string, the bases a tuple of exception
            // types; the result is a new reference to a type, or NULL with an
            // exception set, which `assume_owned_or_err` turns into `Err`.
            let ptr = unsafe {
                pyo3::ffi::PyErr_NewExceptionWithDoc(
                    c"cnnrs.DataFormatError".as_ptr(),
                    c"A file exists but its content is not valid: a corrupt image, dataset batch \
                      or model file. Both a cnnrs.CnnrsError and a ValueError."
                        .as_ptr(),
                    bases.as_ptr(),
                    std::ptr::null_mut(),
                )
            };
            // SAFETY: `ptr` is the new reference (or NULL) returned just above.
            unsafe { Bound::from_owned_ptr_or_err(py, ptr) }
                .and_then(|t| Ok(t.cast_into::<PyType>()?.unbind()))
                .expect("Failed to initialize cnnrs.DataFormatError")
        })
        .bind(py)
    }

    /// libtorch's message without the C++ stack trace it appends, which
    /// tells a Python user nothing.
    #[must_use]
    pub fn torch_message(msg: &str) -> &str {
        msg.split("\nException raised from")
            .next()
            .unwrap_or(msg)
            .trim_end()
    }

    /// Whether libtorch failed because memory ran out (CPU or CUDA).
    fn is_out_of_memory(msg: &str) -> bool {
        msg.contains("can't allocate memory")
            || msg.contains("CUDA out of memory")
            || msg.contains("DefaultCPUAllocator: not enough memory")
    }

    impl From<Error> for PyErr {
        fn from(err: Error) -> PyErr {
            let msg = err.to_string();
            match err {
                Error::Torch(_) if is_out_of_memory(&msg) => {
                    PyMemoryError::new_err(torch_message(&msg).to_string())
                }
                Error::Torch(_) => TorchError::new_err(torch_message(&msg).to_string()),
                Error::InvalidArgument(_) => PyValueError::new_err(msg),
                Error::InvalidType(_) => PyTypeError::new_err(msg),
                Error::NotFound(path) => PyFileNotFoundError::new_err((
                    2,
                    "No such file or directory",
                    path.display().to_string(),
                )),
                Error::Io { .. } => PyOSError::new_err(msg),
                Error::Format(_) => {
                    Python::attach(|py| PyErr::from_type(data_format_error(py).clone(), msg))
                }
                Error::Interrupted => PyKeyboardInterrupt::new_err(msg),
                Error::OutOfMemory(_) => PyMemoryError::new_err(msg),
                Error::Unusable(_) => CnnrsError::new_err(msg),
            }
        }
    }
}

#[cfg(feature = "python")]
pub use python::{data_format_error, torch_message, CnnrsError, TorchError};
