//! cnnrs: convolutional neural networks from image operations to CIFAR-10.
//!
//! The crate is split by what each room may touch:
//! - [`ops`]: padding, convolution, pooling and image I/O on `ndarray` (no Python, no torch);
//! - [`nn`]: architectures, training, evaluation on libtorch through `tch` (no Python);
//! - [`data`]: CIFAR-10 readers and cross-validation folds (no Python);
//! - [`metrics`]: confusion matrix and per-class scores (no Python);
//! - [`fileio`]: the one atomic writer and the bounded reader (no Python);
//! - `py` (feature `python`): the thin PyO3 layer that converts, validates and
//!   releases the GIL, and holds the one `#[pymodule]`.

pub mod data;
pub mod error;
pub mod fileio;
pub mod metrics;
pub mod nn;
pub mod ops;

#[cfg(feature = "python")]
mod py;

pub use error::{Error, Result};

/// The native module `cnnrs._core`: the exception types and every binding of `py`.
#[cfg(feature = "python")]
#[pyo3::pymodule]
#[pyo3(name = "_core")]
fn core_module(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
    use pyo3::types::PyModuleMethods;
    let py = m.py();
    m.add("CnnrsError", py.get_type::<error::CnnrsError>())?;
    m.add("DataFormatError", error::data_format_error(py))?;
    m.add("TorchError", py.get_type::<error::TorchError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    py::register(m)
}
