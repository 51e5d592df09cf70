//! The binding layer: thin `#[pyfunction]`/`#[pyclass]` wrappers that extract
//! arguments, validate what Python can get wrong, release the GIL around the
//! core call and convert results back to numpy. No math lives here.

mod args;
mod data;
mod detached;
mod fileio;
mod inspect;
mod metrics;
mod nn;
mod nn_args;
mod ops;
mod progress;
mod runtime;

use pyo3::prelude::*;

/// Adds every binding to the module; called once by the `#[pymodule]` in lib.rs.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    runtime::register(m)?;
    ops::register(m)?;
    data::register(m)?;
    fileio::register(m)?;
    metrics::register(m)?;
    nn::register(m)?;
    Ok(())
}
