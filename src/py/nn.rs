//! Bindings for `crate::nn`: the `Network` class behind `cnnrs.Model`.
//!
//! Arrays are extracted before the GIL is released; training runs detached and
//! re-attaches only between batches to check for Ctrl-C and hand progress to
//! the Python printer. libtorch panics are caught and raised as `TorchError`.

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ndarray::Array2;
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray1, PyReadonlyArray4, PyUntypedArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use crate::error::{Error, TorchError};
use crate::nn::arch::{self, Layer, SpecArg};
use crate::nn::model::{self, BatchProgress, EpochLogs, FitConfig, Images, Model, Monitor, Pixels};

/// Images as numpy gave them: uint8 or float32 (N, H, W, C).
enum ImageArg<'py> {
    U8(PyReadonlyArray4<'py, u8>),
    F32(PyReadonlyArray4<'py, f32>),
}

/// The images' pixels, borrowed when contiguous, else copied in order.
enum Owned<'a> {
    U8(Cow<'a, [u8]>),
    F32(Cow<'a, [f32]>),
}

fn contiguous<T: Copy, D: ndarray::Dimension>(v: ndarray::ArrayView<'_, T, D>) -> Cow<'_, [T]> {
    match v.to_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(v.iter().copied().collect()),
    }
}

fn extract_images<'py>(x: &Bound<'py, PyAny>, what: &str) -> PyResult<ImageArg<'py>> {
    if let Ok(a) = x.extract::<PyReadonlyArray4<'py, u8>>() {
        return Ok(ImageArg::U8(a));
    }
    if let Ok(a) = x.extract::<PyReadonlyArray4<'py, f32>>() {
        return Ok(ImageArg::F32(a));
    }
    Err(PyTypeError::new_err(format!(
        "{what} must be a 4-D uint8 or float32 array (N, H, W, C)"
    )))
}

impl ImageArg<'_> {
    fn shape(&self) -> [usize; 4] {
        let s = match self {
            ImageArg::U8(a) => a.shape(),
            ImageArg::F32(a) => a.shape(),
        };
        [s[0], s[1], s[2], s[3]]
    }

    fn owned(&self) -> Owned<'_> {
        match self {
            ImageArg::U8(a) => Owned::U8(contiguous(a.as_array())),
            ImageArg::F32(a) => Owned::F32(contiguous(a.as_array())),
        }
    }
}

fn images<'a>(data: &'a Owned<'_>, shape: [usize; 4]) -> Images<'a> {
    let pixels = match data {
        Owned::U8(d) => Pixels::U8(d),
        Owned::F32(d) => Pixels::F32(d),
    };
    Images { pixels, shape }
}

fn labels<'a>(y: &'a PyReadonlyArray1<'_, i64>) -> Cow<'a, [i64]> {
    contiguous(y.as_array())
}

/// Progress for Python: checks Ctrl-C between batches and forwards progress
/// to a printer object with `batch(...)` and `epoch_end(...)` methods. A
/// Python exception (KeyboardInterrupt included) stops the work and is kept
/// to be raised once the GIL is back.
struct PyMonitor {
    printer: Option<Py<PyAny>>,
    error: Option<PyErr>,
    last_draw: Option<Instant>,
}

const REDRAW: Duration = Duration::from_millis(100);

impl PyMonitor {
    fn new(printer: Option<Py<PyAny>>) -> Self {
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
    fn finish<T>(self, r: crate::Result<T>) -> PyResult<T> {
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
            let d = PyDict::new(py);
            d.set_item("loss", logs.loss)?;
            d.set_item("accuracy", logs.accuracy)?;
            if let Some((l, a)) = logs.val {
                d.set_item("val_loss", l)?;
                d.set_item("val_accuracy", a)?;
            }
            printer.call_method1(py, "epoch_end", (epoch + 1, epochs, d, logs.seconds))?;
            Ok(())
        });
        self.last_draw = None;
        self.keep(r)
    }
}

/// Runs `f` with the GIL released, turning a libtorch panic into `TorchError`.
fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> PyResult<T> + Send) -> PyResult<T> {
    py.detach(|| catch_unwind(AssertUnwindSafe(f)))
        .unwrap_or_else(|payload| {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_else(|| "unknown failure".into());
            Err(TorchError::new_err(format!("libtorch failed: {msg}")))
        })
}

fn spec_arg(v: &Bound<'_, PyAny>, layer: usize) -> PyResult<SpecArg> {
    if v.is_instance_of::<pyo3::types::PyBool>() {
        return Err(Error::invalid(format!("layer {layer}: unexpected boolean argument")).into());
    }
    if let Ok(i) = v.extract::<i64>() {
        return Ok(SpecArg::Int(i));
    }
    if let Ok(f) = v.extract::<f64>() {
        return Ok(SpecArg::Float(f));
    }
    if let Ok(s) = v.extract::<String>() {
        return Ok(SpecArg::Str(s));
    }
    Err(Error::invalid(format!(
        "layer {layer}: arguments must be numbers or strings, got {}",
        v.get_type().name()?
    ))
    .into())
}

/// A built-in name or a list of layer tuples, as layer specs.
fn architecture_arg(a: &Bound<'_, PyAny>) -> PyResult<(String, Vec<Layer>)> {
    if let Ok(name) = a.cast::<PyString>() {
        let name = name.to_cow()?.into_owned();
        let layers = arch::builtin(&name)?;
        return Ok((name, layers));
    }
    let Ok(items) = a.try_iter() else {
        return Err(PyTypeError::new_err(
            "architecture must be a built-in name (str) or a list of layer tuples such as \
             [(\"conv\", 32), (\"maxpool\", 2), (\"flatten\",), (\"dense\", 128)]",
        ));
    };
    let mut specs = Vec::new();
    for (i, item) in items.enumerate() {
        let item = item?;
        let parts: Vec<Bound<'_, PyAny>> = if let Ok(s) = item.cast::<PyString>() {
            vec![s.clone().into_any()]
        } else if let Ok(t) = item.cast::<PyTuple>() {
            t.iter().collect()
        } else if let Ok(l) = item.cast::<PyList>() {
            l.iter().collect()
        } else {
            return Err(Error::invalid(format!(
                "layer {i}: each layer must be a tuple like (\"conv\", 32), got {}",
                item.repr()?
            ))
            .into());
        };
        let Some((kind, args)) = parts.split_first() else {
            return Err(Error::invalid(format!("layer {i}: empty layer tuple")).into());
        };
        let kind: String = kind.extract().map_err(|_| {
            Error::invalid(format!(
                "layer {i}: the first item must be the layer type (a str)"
            ))
        })?;
        let args = args
            .iter()
            .map(|v| spec_arg(v, i))
            .collect::<PyResult<_>>()?;
        specs.push((kind.to_lowercase(), args));
    }
    Ok(("custom_layers".to_string(), arch::parse_specs(&specs)?))
}

/// The Rust network behind `cnnrs.Model`: architecture, weights, optimiser,
/// normalisation. Thread-safe; every method releases the GIL while it works.
#[pyclass(name = "Network", module = "cnnrs._core")]
pub struct PyNetwork {
    inner: Mutex<Model>,
}

impl PyNetwork {
    fn lock(&self) -> MutexGuard<'_, Model> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[pymethods]
impl PyNetwork {
    #[new]
    #[pyo3(signature = (architecture, learning_rate=5e-4, device="auto", seed=0))]
    fn new(
        architecture: &Bound<'_, PyAny>,
        learning_rate: f64,
        device: &str,
        seed: u64,
    ) -> PyResult<Self> {
        let (name, layers) = architecture_arg(architecture)?;
        let device = model::parse_device(device)?;
        let m = Model::new(name, layers, learning_rate, device, seed)?;
        Ok(PyNetwork {
            inner: Mutex::new(m),
        })
    }

    /// Allocates the weights for images of `input_shape` (H, W, C) and `num_classes`.
    fn build(
        &self,
        py: Python<'_>,
        input_shape: (usize, usize, usize),
        num_classes: usize,
    ) -> PyResult<()> {
        let (h, w, c) = input_shape;
        detached(py, || Ok(self.lock().build([h, w, c], num_classes)?))
    }

    #[pyo3(signature = (x, y, num_classes, epochs, batch_size, validation_x=None, validation_y=None, shuffle=true, printer=None))]
    #[allow(clippy::too_many_arguments)]
    fn fit<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        y: PyReadonlyArray1<'py, i64>,
        num_classes: usize,
        epochs: usize,
        batch_size: usize,
        validation_x: Option<&Bound<'py, PyAny>>,
        validation_y: Option<PyReadonlyArray1<'py, i64>>,
        shuffle: bool,
        printer: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let xa = extract_images(x, "x")?;
        let va = validation_x
            .map(|v| extract_images(v, "validation x"))
            .transpose()?;
        let (xo, yo) = (xa.owned(), labels(&y));
        let vo = va.as_ref().map(ImageArg::owned);
        let vy = validation_y.as_ref().map(labels);
        let cfg = FitConfig {
            epochs,
            batch_size,
            shuffle,
        };
        let x_shape = xa.shape();
        let mut monitor = PyMonitor::new(printer);
        let val_shape = va.as_ref().map(ImageArg::shape);
        let history = detached(py, || {
            let val = match (&vo, val_shape, &vy) {
                (Some(o), Some(shape), Some(l)) => Some((images(o, shape), l.as_ref())),
                _ => None,
            };
            let r = self.lock().fit(
                images(&xo, x_shape),
                &yo,
                num_classes,
                val,
                &cfg,
                &mut monitor,
            );
            Ok((r, monitor))
        })
        .and_then(|(r, monitor)| monitor.finish(r))?;
        let d = PyDict::new(py);
        d.set_item("loss", history.loss)?;
        d.set_item("accuracy", history.accuracy)?;
        if vo.is_some() {
            d.set_item("val_loss", history.val_loss)?;
            d.set_item("val_accuracy", history.val_accuracy)?;
        }
        Ok(d)
    }

    /// (loss, accuracy) on (x, y).
    fn evaluate(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        y: PyReadonlyArray1<'_, i64>,
    ) -> PyResult<(f64, f64)> {
        let xa = extract_images(x, "x")?;
        let (xo, yo, shape) = (xa.owned(), labels(&y), xa.shape());
        let mut monitor = PyMonitor::new(None);
        detached(py, || {
            let r = self.lock().evaluate(images(&xo, shape), &yo, &mut monitor);
            Ok((r, monitor))
        })
        .and_then(|(r, monitor)| monitor.finish(r))
    }

    /// Class probabilities (N, classes), float32.
    #[pyo3(signature = (x, batch_size=256))]
    fn predict<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        batch_size: usize,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let xa = extract_images(x, "x")?;
        let (xo, shape) = (xa.owned(), xa.shape());
        let mut monitor = PyMonitor::new(None);
        let (probs, k) = detached(py, || {
            let m = self.lock();
            let r = m.predict(images(&xo, shape), batch_size, &mut monitor);
            Ok(((r, m.num_classes().unwrap_or(0)), monitor))
        })
        .and_then(|((r, k), monitor)| Ok((monitor.finish(r)?, k)))?;
        let n = xa.shape()[0];
        let arr =
            Array2::from_shape_vec((n, k), probs).map_err(|e| Error::format(e.to_string()))?;
        Ok(arr.into_pyarray(py))
    }

    /// Writes the model to `path` atomically.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        detached(py, || Ok(self.lock().save(&path)?))
    }

    /// Reads a model written by `save`.
    #[staticmethod]
    #[pyo3(signature = (path, device="auto"))]
    fn load(py: Python<'_>, path: PathBuf, device: &str) -> PyResult<Self> {
        let device = model::parse_device(device)?;
        let m = detached(py, || Ok(Model::load(&path, device)?))?;
        Ok(PyNetwork {
            inner: Mutex::new(m),
        })
    }

    #[getter]
    fn architecture(&self) -> String {
        self.lock().architecture().to_string()
    }

    #[getter]
    fn learning_rate(&self) -> f64 {
        self.lock().learning_rate()
    }

    #[getter]
    fn device(&self) -> String {
        model::device_name(self.lock().device())
    }

    #[getter]
    fn input_shape(&self) -> Option<(usize, usize, usize)> {
        self.lock().input_shape().map(|[h, w, c]| (h, w, c))
    }

    #[getter]
    fn num_classes(&self) -> Option<usize> {
        self.lock().num_classes()
    }

    #[getter]
    fn class_names(&self) -> Option<Vec<String>> {
        self.lock().class_names().map(<[String]>::to_vec)
    }

    #[setter]
    fn set_class_names(&self, names: Option<Vec<String>>) -> PyResult<()> {
        Ok(self.lock().set_class_names(names)?)
    }

    /// (mean, std) per channel fitted on the training images, or None before fit.
    #[getter]
    fn normalization(&self) -> Option<(Vec<f32>, Vec<f32>)> {
        self.lock()
            .normalization()
            .map(|n| (n.mean.clone(), n.std.clone()))
    }

    /// The hidden layer specs as JSON (`[{"type": "conv", "filters": 32, ...}, ...]`).
    #[getter]
    fn layer_specs_json(&self) -> PyResult<String> {
        serde_json::to_string(self.lock().layers()).map_err(|e| Error::format(e.to_string()).into())
    }

    /// Keras-style layer table once built: dicts of name, type, output_shape,
    /// trainable_params, non_trainable_params (head included).
    #[getter]
    fn plan<'py>(&self, py: Python<'py>) -> PyResult<Option<Vec<Bound<'py, PyDict>>>> {
        let m = self.lock();
        let Some(plan) = m.plan() else {
            return Ok(None);
        };
        plan.layers
            .iter()
            .map(|l| {
                let d = PyDict::new(py);
                d.set_item("name", &l.name)?;
                d.set_item("type", l.kind)?;
                d.set_item("output_shape", PyTuple::new(py, &l.output_shape)?)?;
                d.set_item("trainable_params", l.trainable_params)?;
                d.set_item("non_trainable_params", l.non_trainable_params)?;
                Ok(d)
            })
            .collect::<PyResult<Vec<_>>>()
            .map(Some)
    }
}

/// Names of the built-in architectures.
#[pyfunction]
fn architectures() -> Vec<&'static str> {
    arch::ARCHITECTURES.to_vec()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyNetwork>()?;
    m.add_function(wrap_pyfunction!(architectures, m)?)?;
    Ok(())
}
