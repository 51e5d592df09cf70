//! Progress of a long libtorch computation, seen from Python: Ctrl-C between
//! batches and the Keras-style printer.

use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::error::Error;
use crate::nn::train::{BatchProgress, EpochLogs, Monitor};

/// Progress for Python: checks Ctrl-C between batches and forwards progress
/// to a printer object with `batch(...)` and `epoch_end(...)` methods. A
/// Python exception (KeyboardInterrupt included) stops the work and is kept
/// to be raised once the GIL is back.
pub(super) struct PyMonitor {
    printer: Option<Py<PyAny>>,
    error: Option<PyErr>,
    last_draw: Option<Instant>,
}

const REDRAW: Duration = Duration::from_millis(100);

impl PyMonitor {
    pub(super) fn new(printer: Option<Py<PyAny>>) -> Self {
        PyMonitor {
            printer,
            error: None,
            last_draw: None,
        }
    }

    fn keep(&mut self, r: PyResult<()>) -> crate::Result<()> {
        r.map_err(|e| {
            self.error = Some(e);
            Error::Interrupted
        })
    }

    /// Turns the core's result into Python's, raising a kept exception first.
    pub(super) fn finish<T>(self, r: crate::Result<T>) -> PyResult<T> {
        match (self.error, r) {
            (Some(e), _) => Err(e),
            (None, r) => r.map_err(PyErr::from),
        }
    }
}

impl Monitor for PyMonitor {
    fn batch(&mut self, p: &BatchProgress) -> crate::Result<()> {
        let last = p.batch + 1 == p.batches;
        let due = self.last_draw.is_none_or(|t| t.elapsed() >= REDRAW);
        let draw = match (&self.printer, p.metrics) {
            (Some(_), Some(m)) if due || last => Some(m),
            _ => None,
        };
        if draw.is_some() {
            self.last_draw = Some(Instant::now());
        }
        let printer = self.printer.as_ref();
        let r = Python::attach(|py| {
            py.check_signals()?;
            if let (Some(printer), Some((loss, acc))) = (printer, draw) {
                printer.call_method1(
                    py,
                    "batch",
                    (p.epoch + 1, p.epochs, p.batch + 1, p.batches, loss, acc),
                )?;
            }
            Ok(())
        });
        self.keep(r)
    }

    fn epoch_end(&mut self, epoch: usize, epochs: usize, logs: &EpochLogs) -> crate::Result<()> {
        let Some(printer) = self.printer.as_ref() else {
            return Ok(());
        };
        let r = Python::attach(|py| {
            let d = logs_dict(py, logs)?;
            printer.call_method1(py, "epoch_end", (epoch + 1, epochs, d, logs.seconds))?;
            Ok(())
        });
        self.last_draw = None;
        self.keep(r)
    }
}

/// An epoch's logs as Keras names them: `{"loss", "accuracy"[, "val_loss", "val_accuracy"]}`.
pub(super) fn logs_dict<'py>(py: Python<'py>, logs: &EpochLogs) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("loss", logs.loss)?;
    d.set_item("accuracy", logs.accuracy)?;
    if let Some((l, a)) = logs.val {
        d.set_item("val_loss", l)?;
        d.set_item("val_accuracy", a)?;
    }
    Ok(d)
}
