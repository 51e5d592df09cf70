//! Bindings for `crate::fileio`: the atomic writer every Python writer of the
//! package (demo reports, dataset downloads) uses, so there is one way to save.

use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::prelude::*;

use crate::error::Error;
use crate::fileio::AtomicFile;

/// A file written beside ``path`` under an unpredictable name, created
/// exclusively (never through a symlink), and renamed over ``path`` by
/// :meth:`commit`. Used as a context manager it commits on success and removes
/// the temporary file on an exception::
///
///     with AtomicWriter("report.md") as f:
///         f.write(text.encode())
#[pyclass(name = "AtomicWriter", module = "cnnrs._core")]
pub struct PyAtomicWriter {
    inner: Mutex<Option<AtomicFile>>,
}

impl PyAtomicWriter {
    fn take(&self) -> Option<AtomicFile> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

#[pymethods]
impl PyAtomicWriter {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let file = py.detach(|| AtomicFile::create(&path))?;
        Ok(PyAtomicWriter {
            inner: Mutex::new(Some(file)),
        })
    }

    /// Appends ``data`` (bytes).
    fn write(&self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        let data = data.to_vec();
        py.detach(|| {
            let mut guard = self
                .inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match guard.as_mut() {
                Some(f) => f.write(&data),
                None => Err(Error::invalid(
                    "this AtomicWriter was already committed or aborted",
                )),
            }
        })?;
        Ok(())
    }

    /// Syncs the file and renames it over the target.
    fn commit(&self, py: Python<'_>) -> PyResult<()> {
        let file = py
            .detach(|| self.take())
            .ok_or_else(|| Error::invalid("this AtomicWriter was already committed or aborted"))?;
        py.detach(|| file.commit())?;
        Ok(())
    }

    /// Removes the temporary file; the target stays as it was. Idempotent.
    fn abort(&self, py: Python<'_>) {
        if let Some(f) = py.detach(|| self.take()) {
            f.abort();
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (exc_type, _exc_value, _traceback))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc_value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if exc_type.is_some() {
            self.abort(py);
        } else if let Some(file) = py.detach(|| self.take()) {
            py.detach(|| file.commit())?;
        }
        Ok(false)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyAtomicWriter>()
}
