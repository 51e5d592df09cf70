//! The one error type of the crate. Core modules return `Result<_, Error>`;
//! the binding layer maps each variant onto a Python exception in one place
//! (`py::errors`), so a user sees `ValueError`, `TypeError`, `FileNotFoundError`
//! or a `cnnrs.CnnrsError` subclass, never a panic.

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
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
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
        PyException, PyFileNotFoundError, PyKeyboardInterrupt, PyOSError, PyTypeError, PyValueError,
    };
    use pyo3::PyErr;

    pyo3::create_exception!(
        cnnrs,
        CnnrsError,
        PyException,
        "Base class of the runtime errors cnnrs raises (corrupt files, libtorch failures)."
    );
    pyo3::create_exception!(
        cnnrs,
        DataFormatError,
        CnnrsError,
        "A file exists but its content is not valid: a corrupt image, dataset batch or model file."
    );
    pyo3::create_exception!(
        cnnrs,
        TorchError,
        CnnrsError,
        "libtorch reported a failure while building, training or running a model."
    );

    impl From<Error> for PyErr {
        fn from(err: Error) -> PyErr {
            let msg = err.to_string();
            match err {
                Error::InvalidArgument(_) => PyValueError::new_err(msg),
                Error::InvalidType(_) => PyTypeError::new_err(msg),
                Error::NotFound(path) => PyFileNotFoundError::new_err((
                    2,
                    "No such file or directory",
                    path.display().to_string(),
                )),
                Error::Io { .. } => PyOSError::new_err(msg),
                Error::Format(_) => DataFormatError::new_err(msg),
                Error::Torch(_) => TorchError::new_err(msg),
                Error::Interrupted => PyKeyboardInterrupt::new_err(msg),
            }
        }
    }
}

#[cfg(feature = "python")]
pub use python::{CnnrsError, DataFormatError, TorchError};
