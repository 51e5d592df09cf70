//! libtorch runtime facts: version and CUDA availability.

use pyo3::prelude::*;

use crate::nn;

/// The libtorch version cnnrs was built against, e.g. ``"2.11.0"``.
#[pyfunction]
fn torch_version() -> String {
    nn::torch_version()
}

/// Whether libtorch sees a usable CUDA device.
#[pyfunction]
fn cuda_available(py: Python<'_>) -> bool {
    py.detach(nn::cuda_available)
}

/// Number of CUDA devices libtorch sees (0 without CUDA).
#[pyfunction]
fn cuda_device_count(py: Python<'_>) -> usize {
    py.detach(nn::cuda_device_count)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(torch_version, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_available, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_device_count, m)?)?;
    Ok(())
}
