//! Bindings for `crate::nn`: the `Model` class behind `cnnrs.Model`.
//!
//! Arrays are extracted before the GIL is released; training runs detached and
//! re-attaches only between batches to check for Ctrl-C and hand progress to
//! the Python printer. Every call that needs the model goes through
//! [`Detached`] (GIL released before the lock, panics caught as `TorchError`);
//! the settings are the model's own [`ModelConfig`], shared, read lock-free.
//! Arguments are parsed in `nn_args.rs`, progress in `progress.rs`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use ndarray::Array2;
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray1, PyUntypedArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::args;
use super::detached::{panic_message, Access, Detached};
use super::nn_args::{
    architecture_arg, extract_images, given_arg, images, labels, DeviceArg, ImageArg, PrecisionArg,
    TtaArg, MODEL_SETTINGS, MUON_SETTINGS,
};
use super::progress::{logs_dict, PyMonitor};
use crate::error::Error;
use crate::nn::arch::{self, Plan};
use crate::nn::built::Snapshot;
use crate::nn::config::{self, ModelConfig};
use crate::nn::fit::FitOptions;
use crate::nn::input::Normalization;
use crate::nn::model::Model;
use crate::nn::optim::OptimizerKind;
use crate::nn::train::LearningRates;
use crate::nn::tta::TestTime;
use crate::nn::{checkpoint, device};

/// An opaque copy of a model's weights (`Model.snapshot()`), for `restore`.
#[pyclass(name = "WeightsSnapshot", module = "cnnrs._core")]
pub struct PyWeightsSnapshot {
    inner: Mutex<Snapshot>,
}

/// What never changes once a model has its weights: shape, classes, plan.
/// Published once (lock-free) so readers never wait for a fit in progress.
struct Facts {
    input_shape: [usize; 3],
    num_classes: usize,
    plan: Plan,
}

/// The Rust model behind `cnnrs.Model`: architecture, weights, optimiser,
/// normalisation.
///
/// Nothing waits for the model's lock while attached to the interpreter:
/// settings are the shared, immutable [`ModelConfig`]; the shape, plan and
/// normalisation are published once, lock-free, when they become known;
/// everything else goes through [`Detached::with`]. So a thread reading
/// `input_shape` during another thread's `fit` returns at once, and a second
/// `fit` on the same model waits its turn. A libtorch failure in the middle
/// of a training step leaves the model marked unusable (`cnnrs.CnnrsError`),
/// never silently half-updated.
#[pyclass(name = "Model", module = "cnnrs._core")]
pub struct PyModel {
    config: Arc<ModelConfig>,
    layers_json: String,
    facts: OnceLock<Facts>,
    normalization: OnceLock<Normalization>,
    class_names: Mutex<Option<Vec<String>>>,
    model: Detached<Model>,
}

impl PyModel {
    fn from_model(m: Model) -> PyResult<Self> {
        let layers_json =
            serde_json::to_string(m.layers()).map_err(|e| Error::format(e.to_string()))?;
        let mut net = PyModel {
            config: Arc::clone(m.config()),
            layers_json,
            facts: OnceLock::new(),
            normalization: OnceLock::new(),
            class_names: Mutex::new(m.class_names().map(<[String]>::to_vec)),
            model: Detached::new(m),
        };
        let (facts, normalization) = (&net.facts, &net.normalization);
        publish(facts, normalization, net.model.get_mut());
        Ok(net)
    }

    /// The one way to the model: [`Detached::with`], then publishes what
    /// became known.
    pub(super) fn with_model<T: Send>(
        &self,
        py: Python<'_>,
        what: &str,
        access: Access,
        f: impl FnOnce(&mut Model) -> PyResult<T> + Send,
    ) -> PyResult<T> {
        self.model.with(py, what, access, f, |m| {
            publish(&self.facts, &self.normalization, m);
        })
    }

    /// `tta` (None: the model's own) gated at `tta_threshold` (None: none).
    fn test_time(
        &self,
        tta: Option<TtaArg>,
        tta_threshold: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<TestTime> {
        let tta = tta.map_or(self.config.tta, |t| t.0);
        let below = tta_threshold
            .map(|t| args::number(t, "tta_threshold", true))
            .transpose()?;
        Ok(TestTime::new(tta, below)?)
    }
}

/// Sets the lock-free facts from `m`, once each.
fn publish(facts: &OnceLock<Facts>, normalization: &OnceLock<Normalization>, m: &Model) {
    if let (Some(input_shape), Some(num_classes), Some(plan)) =
        (m.input_shape(), m.num_classes(), m.plan())
    {
        let _ = facts.set(Facts {
            input_shape,
            num_classes,
            plan: plan.clone(),
        });
    }
    if let Some(n) = m.normalization() {
        let _ = normalization.set(n.clone());
    }
}

#[pymethods]
impl PyModel {
    /// `settings`: the keywords the user gave `cnnrs.Model` (see
    /// `MODEL_SETTINGS`); the rest come from the architecture's recipe or
    /// Keras's defaults, in `ModelConfig::resolve`.
    #[new]
    #[pyo3(signature = (architecture, device=None, seed=None, settings=None))]
    fn new(
        py: Python<'_>,
        architecture: &Bound<'_, PyAny>,
        device: Option<DeviceArg>,
        seed: Option<&Bound<'_, PyAny>>,
        settings: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let architecture = architecture_arg(architecture)?;
        let seed = seed
            .map(|v| args::int_in(v, "seed", 0, i64::MAX))
            .transpose()?
            .unwrap_or(0) as u64;
        let given = given_arg(settings, seed)?;
        let m = py.detach(|| -> crate::Result<Model> {
            let device = match device {
                Some(d) => d.0,
                None => device::parse_device("auto")?,
            };
            Model::new(ModelConfig::resolve(architecture, device, given)?)
        })?;
        PyModel::from_model(m)
    }

    /// Starts a fit: builds the model if needed, fits the normalisation on
    /// the first fit and puts the data on the device once. `total_steps`
    /// defaults to one epoch's.
    #[pyo3(signature = (x, y, *, num_classes, batch_size, validation_x=None, validation_y=None, shuffle=None, total_steps=None, base_learning_rate=None))]
    #[allow(clippy::too_many_arguments)]
    fn begin_fit<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        y: PyReadonlyArray1<'py, i64>,
        num_classes: &Bound<'py, PyAny>,
        batch_size: &Bound<'py, PyAny>,
        validation_x: Option<&Bound<'py, PyAny>>,
        validation_y: Option<PyReadonlyArray1<'py, i64>>,
        shuffle: Option<&Bound<'py, PyAny>>,
        total_steps: Option<&Bound<'py, PyAny>>,
        base_learning_rate: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<()> {
        let batch_size = args::usize_in(batch_size, "batch_size", 1, 1 << 31)?;
        let shuffle = shuffle.map_or(Ok(true), |s| args::flag(s, "shuffle"))?;
        let n = y.len();
        let total_steps = total_steps.map_or(
            Ok(self.config.batches_per_epoch(n, batch_size).max(1)),
            |t| args::usize_in(t, "total_steps", 1, 1 << 40),
        )?;
        let base_rate = base_learning_rate.map_or(Ok(self.config.learning_rate), |r| {
            args::positive_number(r, "base_learning_rate")
        })?;
        let options = FitOptions {
            batch_size,
            shuffle,
            total_steps,
            base_rate,
        };
        let num_classes = args::usize_in(num_classes, "num_classes", 2, arch::MAX_CLASSES)?;
        let xa = extract_images(x, "x")?;
        let va = validation_x
            .map(|v| extract_images(v, "validation x"))
            .transpose()?;
        let (xo, yo) = (xa.owned(), labels(&y));
        let vo = va.as_ref().map(ImageArg::owned);
        let vy = validation_y.as_ref().map(labels);
        let (x_shape, val_shape) = (xa.shape(), va.as_ref().map(ImageArg::shape));
        self.with_model(py, "fit", Access::Write, |m| {
            let val = match (&vo, val_shape, &vy) {
                (Some(o), Some(shape), Some(l)) => Some((images(o, shape), l.as_ref())),
                _ => None,
            };
            Ok(m.begin_fit(images(&xo, x_shape), &yo, num_classes, val, options)?)
        })
    }

    /// One epoch of the fit started by `begin_fit`; returns that epoch's logs.
    /// `learning_rates` is one rate for the epoch or one per batch run;
    /// `steps` runs only the first batches (a fractional last epoch).
    #[pyo3(signature = (epoch, epochs, *, learning_rates, printer=None, steps=None))]
    fn fit_epoch<'py>(
        &self,
        py: Python<'py>,
        epoch: &Bound<'py, PyAny>,
        epochs: &Bound<'py, PyAny>,
        learning_rates: &Bound<'py, PyAny>,
        printer: Option<Py<PyAny>>,
        steps: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let steps = steps
            .map(|s| args::usize_in(s, "steps", 1, 1 << 40))
            .transpose()?;
        let epochs = args::usize_in(epochs, "epochs", 1, 1 << 31)?;
        let epoch = args::usize_in(epoch, "epoch", 0, epochs - 1)?;
        let rates = if let Ok(r) = args::number(learning_rates, "learning_rates", true) {
            LearningRates::Constant(r)
        } else {
            let rates: Vec<f64> = learning_rates.extract().map_err(|_| {
                PyTypeError::new_err(format!(
                    "learning_rates must be a number or a sequence of numbers, one per batch; got {}",
                    args::short_repr(learning_rates)
                ))
            })?;
            LearningRates::PerStep(rates)
        };
        let mut monitor = PyMonitor::new(printer);
        let r = self.with_model(py, "fit", Access::Write, |m| {
            Ok(m.fit_epoch(epoch, epochs, &rates, steps, &mut monitor))
        });
        let logs = monitor.finish(r?)?;
        logs_dict(py, &logs)
    }

    /// Batches per epoch of a fit on `n` images in batches of `batch_size`
    /// (a recipe drops each epoch's last incomplete batch).
    fn steps_per_epoch(
        &self,
        n: &Bound<'_, PyAny>,
        batch_size: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        let n = args::usize_in(n, "n", 1, usize::MAX)?;
        let batch_size = args::usize_in(batch_size, "batch_size", 1, 1 << 31)?;
        Ok(self.config.batches_per_epoch(n, batch_size))
    }

    /// Batches per epoch of the fit in progress (None outside a fit).
    #[getter]
    fn batches_per_epoch(&self, py: Python<'_>) -> PyResult<Option<usize>> {
        self.with_model(py, "batches_per_epoch", Access::Read, |m| {
            Ok(m.batches_per_epoch())
        })
    }

    /// Ends the fit in progress, freeing its device copies of the data. Idempotent.
    fn end_fit(&self, py: Python<'_>) -> PyResult<()> {
        self.with_model(py, "end_fit", Access::Read, |m| {
            m.end_fit();
            Ok(())
        })
    }

    /// A copy of every weight and batch-norm statistic, for `restore`.
    fn snapshot(&self, py: Python<'_>) -> PyResult<PyWeightsSnapshot> {
        let snap = self.with_model(py, "snapshot", Access::Read, |m| Ok(m.snapshot()?))?;
        Ok(PyWeightsSnapshot {
            inner: Mutex::new(snap),
        })
    }

    /// Puts back the weights of a `snapshot` of this model.
    fn restore(&self, py: Python<'_>, snapshot: PyRef<'_, PyWeightsSnapshot>) -> PyResult<()> {
        let snap = &snapshot.inner;
        self.with_model(py, "restore", Access::Write, |m| {
            let s = snap.lock().unwrap_or_else(PoisonError::into_inner);
            Ok(m.restore(&s)?)
        })
    }

    /// Every variable as {name: float32 array}, PyTorch's layouts, sorted by name.
    fn state_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let entries = self.with_model(py, "state_dict", Access::Read, |m| Ok(m.state_dict()?))?;
        let d = PyDict::new(py);
        for (name, shape, values) in entries {
            let arr = ndarray::ArrayD::from_shape_vec(shape, values)
                .map_err(|e| Error::format(e.to_string()))?;
            d.set_item(name, arr.into_pyarray(py))?;
        }
        Ok(d)
    }

    /// Sets every variable from {name: float32 array} (strict: same names, same shapes).
    fn load_state_dict(&self, py: Python<'_>, state: &Bound<'_, PyDict>) -> PyResult<()> {
        let mut owned = Vec::with_capacity(state.len());
        for (k, v) in state.iter() {
            let name = args::str_key(&k, "state_dict")?;
            let arr: numpy::PyReadonlyArrayDyn<'_, f32> = v.extract().map_err(|_| {
                PyTypeError::new_err(format!(
                    "state_dict[{name:?}] must be a float32 array, got {}",
                    args::short_repr(&v)
                ))
            })?;
            let shape = arr.shape().to_vec();
            let values = super::nn_args::contiguous(arr.as_array()).into_owned();
            owned.push((name, shape, values));
        }
        self.with_model(py, "load_state_dict", Access::Write, |m| {
            let view: Vec<(String, Vec<usize>, &[f32])> = owned
                .iter()
                .map(|(n, s, v)| (n.clone(), s.clone(), v.as_slice()))
                .collect();
            Ok(m.load_state_dict(&view)?)
        })
    }

    #[getter]
    fn optimizer(&self) -> &'static str {
        self.config.optimizer.kind.name()
    }

    #[getter]
    fn momentum(&self) -> f64 {
        self.config.optimizer.momentum
    }

    #[getter]
    fn nesterov(&self) -> bool {
        self.config.optimizer.nesterov
    }

    #[getter]
    fn weight_decay(&self) -> f64 {
        self.config.optimizer.weight_decay
    }

    /// Muon's settings beyond momentum, Nesterov and weight decay (None
    /// unless the optimiser is Muon), by `cnnrs.optimizers.Muon`'s names.
    #[getter]
    fn muon<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let o = &self.config.optimizer;
        if o.kind != OptimizerKind::Muon {
            return Ok(None);
        }
        let m = &o.muon;
        let d = PyDict::new(py);
        d.set_item("variant", m.variant.name())?;
        d.set_item("ns_steps", m.ns_steps)?;
        d.set_item("adjust_lr", m.adjust_lr.name())?;
        d.set_item("renormalize", m.renormalize)?;
        d.set_item("dense", m.dense)?;
        d.set_item("fallback", m.fallback.name())?;
        d.set_item("fallback_lr_ratio", m.fallback_lr_ratio)?;
        d.set_item("fallback_momentum", m.fallback_momentum)?;
        d.set_item("fallback_nesterov", m.fallback_nesterov)?;
        d.set_item("fallback_weight_decay", m.fallback_weight_decay)?;
        Ok(Some(d))
    }

    #[getter]
    fn label_smoothing(&self) -> f64 {
        self.config.label_smoothing
    }

    /// The test-time augmentation evaluate/predict use when a call names none.
    #[getter]
    fn tta(&self) -> &'static str {
        self.config.tta.name()
    }

    /// The fit defaults of the architecture's recipe: batch_size, epochs
    /// (fractional) and the triangle schedule's (start, peak, end); None for
    /// architectures without one.
    #[getter]
    fn recipe<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(r) = &self.config.recipe else {
            return Ok(None);
        };
        let d = PyDict::new(py);
        d.set_item("batch_size", r.defaults.batch_size)?;
        d.set_item("epochs", r.defaults.epochs)?;
        d.set_item("triangle", r.defaults.triangle)?;
        Ok(Some(d))
    }

    /// Allocates the weights for images of `input_shape` (H, W, C) and `num_classes`.
    fn build(
        &self,
        py: Python<'_>,
        input_shape: (usize, usize, usize),
        num_classes: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let (h, w, c) = input_shape;
        let k = args::usize_in(num_classes, "num_classes", 2, arch::MAX_CLASSES)?;
        self.with_model(py, "build", Access::Write, |m| Ok(m.build([h, w, c], k)?))
    }

    /// (loss, accuracy) on (x, y); `tta` (None: the model's own) and
    /// `tta_threshold` as `predict`.
    #[pyo3(signature = (x, y, *, tta=None, tta_threshold=None))]
    fn evaluate(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        y: PyReadonlyArray1<'_, i64>,
        tta: Option<TtaArg>,
        tta_threshold: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<(f64, f64)> {
        let tta = self.test_time(tta, tta_threshold)?;
        let xa = extract_images(x, "x")?;
        let (xo, yo, shape) = (xa.owned(), labels(&y), xa.shape());
        let mut monitor = PyMonitor::new(None);
        let r = self.with_model(py, "evaluate", Access::Read, |m| {
            Ok(m.evaluate(images(&xo, shape), &yo, tta, &mut monitor))
        });
        monitor.finish(r?)
    }

    /// Class probabilities (N, classes), float32; `tta="flip"` averages each
    /// image's probabilities with its horizontal mirror's, `"flip_translate"`
    /// airbench's logits over mirrors and one-pixel translations, `"none"`
    /// neither; None: the model's own default. `tta_threshold` (a probability):
    /// the augmentation only for the images whose top class probability
    /// without it is below the threshold.
    #[pyo3(signature = (x, batch_size=None, *, tta=None, tta_threshold=None))]
    fn predict<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        batch_size: Option<&Bound<'py, PyAny>>,
        tta: Option<TtaArg>,
        tta_threshold: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let tta = self.test_time(tta, tta_threshold)?;
        let batch_size =
            batch_size.map_or(Ok(256), |b| args::usize_in(b, "batch_size", 1, 1 << 31))?;
        let xa = extract_images(x, "x")?;
        let (xo, shape) = (xa.owned(), xa.shape());
        let mut monitor = PyMonitor::new(None);
        let r = self.with_model(py, "predict", Access::Read, |m| {
            let k = m.num_classes().unwrap_or(0);
            Ok(m.predict(images(&xo, shape), batch_size, tta, &mut monitor)
                .map(|p| (p, k)))
        });
        let (probs, k) = monitor.finish(r?)?;
        let arr = Array2::from_shape_vec((shape[0], k), probs)
            .map_err(|e| Error::format(e.to_string()))?;
        Ok(arr.into_pyarray(py))
    }

    // -- inspection: crate::nn::inspect, its argument handling in inspect.rs --

    /// The layers `feature_maps` and `gradcam` accept, in order (the
    /// augmentation layers, which pass images through at inference, left out).
    #[getter]
    fn layer_names(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        super::inspect::layer_names(self, py)
    }

    /// {layer name: activations} after each named layer (None: every one),
    /// float32 in Keras's layouts: (N, H, W, C) maps, (N, units) vectors.
    #[pyo3(signature = (x, layers=None, *, batch_size=None))]
    fn feature_maps<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        layers: Option<&Bound<'py, PyAny>>,
        batch_size: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        super::inspect::feature_maps(self, py, x, layers, batch_size)
    }

    /// (layer name, kernels (kh, kw, in, out) float32) of a convolution
    /// (None: the first learned one).
    #[pyo3(signature = (layer=None))]
    fn filters<'py>(
        &self,
        py: Python<'py>,
        layer: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<(String, Bound<'py, numpy::PyArrayDyn<f32>>)> {
        super::inspect::filters(self, py, layer)
    }

    /// ((heatmaps (N, H, W) float32, classes (N,) int64), layer name): Grad-CAM
    /// at `layer` (None: the last convolution) for `class_index` (None: each
    /// image's predicted class).
    #[pyo3(signature = (x, class_index=None, layer=None, *, normalize=true, batch_size=None))]
    fn gradcam<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        class_index: Option<&Bound<'py, PyAny>>,
        layer: Option<&Bound<'py, PyAny>>,
        normalize: bool,
        batch_size: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<(super::inspect::HeatmapArrays<'py>, String)> {
        super::inspect::gradcam(self, py, x, class_index, layer, normalize, batch_size)
    }

    /// (saliency (N, H, W) float32, classes (N,) int64): the largest absolute
    /// input gradient over the channels of the `class_index` logit.
    #[pyo3(signature = (x, class_index=None, *, normalize=true, batch_size=None))]
    fn saliency<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        class_index: Option<&Bound<'py, PyAny>>,
        normalize: bool,
        batch_size: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<super::inspect::HeatmapArrays<'py>> {
        super::inspect::saliency(self, py, x, class_index, normalize, batch_size)
    }

    /// Writes the model to `path` atomically.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        self.with_model(py, "save", Access::Read, |m| {
            Ok(checkpoint::save(m, &path)?)
        })
    }

    /// Reads a model written by `save`.
    #[staticmethod]
    #[pyo3(signature = (path, device=None, *, precision=None))]
    fn load(
        py: Python<'_>,
        path: PathBuf,
        device: Option<DeviceArg>,
        precision: Option<PrecisionArg>,
    ) -> PyResult<Self> {
        let precision = precision.map(|p| p.0);
        let m = py.detach(|| -> crate::Result<Model> {
            let device = match device {
                Some(d) => d.0,
                None => device::parse_device("auto")?,
            };
            catch_unwind(AssertUnwindSafe(|| {
                checkpoint::load(&path, device, precision)
            }))
            .unwrap_or_else(|p| {
                Err(Error::format(format!(
                    "{} could not be loaded: {}",
                    path.display(),
                    panic_message(p.as_ref())
                )))
            })
        })?;
        PyModel::from_model(m)
    }

    #[getter]
    fn architecture(&self) -> &str {
        &self.config.architecture
    }

    /// The constructor's learning rate (the recipe's when none was given).
    #[getter]
    fn learning_rate(&self) -> f64 {
        self.config.learning_rate
    }

    #[getter]
    fn device(&self) -> String {
        device::device_name(self.config.device)
    }

    /// The precision the model trains in, resolved for its device ("auto" never shows).
    #[getter]
    fn precision(&self) -> &'static str {
        self.config.precision.name()
    }

    #[getter]
    fn seed(&self) -> u64 {
        self.config.seed
    }

    #[getter]
    fn input_shape(&self) -> Option<(usize, usize, usize)> {
        self.facts.get().map(|f| {
            let [h, w, c] = f.input_shape;
            (h, w, c)
        })
    }

    #[getter]
    fn num_classes(&self) -> Option<usize> {
        self.facts.get().map(|f| f.num_classes)
    }

    #[getter]
    fn class_names(&self, py: Python<'_>) -> Option<Vec<String>> {
        // Brief, but still a lock: never waited for while attached.
        py.detach(|| {
            self.class_names
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        })
    }

    #[setter]
    fn set_class_names(&self, py: Python<'_>, names: Option<Vec<String>>) -> PyResult<()> {
        self.with_model(py, "class_names", Access::Read, |m| {
            let kept = names.clone();
            m.set_class_names(names)?;
            // Under the model lock, so the cache and the model never disagree.
            *self
                .class_names
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = kept;
            Ok(())
        })
    }

    /// (mean, std) per channel fitted on the training images, or None before fit.
    #[getter]
    fn normalization(&self) -> Option<(Vec<f32>, Vec<f32>)> {
        self.normalization
            .get()
            .map(|n| (n.mean.clone(), n.std.clone()))
    }

    /// The hidden layer specs as JSON (`[{"type": "conv", "filters": 32, ...}, ...]`).
    #[getter]
    fn layer_specs_json(&self) -> &str {
        &self.layers_json
    }

    /// Keras-style layer table once built: dicts of name, type, output_shape,
    /// trainable_params, non_trainable_params (head included).
    #[getter]
    fn plan<'py>(&self, py: Python<'py>) -> PyResult<Option<Vec<Bound<'py, PyDict>>>> {
        let Some(facts) = self.facts.get() else {
            return Ok(None);
        };
        facts
            .plan
            .layers
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

/// Names of the built-in architectures: the course's, then the recipes'.
#[pyfunction]
fn architectures() -> Vec<&'static str> {
    config::architectures()
}

/// Names of the course's architectures (the built-in ones without a recipe).
#[pyfunction]
fn course_architectures() -> Vec<&'static str> {
    arch::COURSE.to_vec()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyModel>()?;
    m.add_function(wrap_pyfunction!(course_architectures, m)?)?;
    m.add_class::<PyWeightsSnapshot>()?;
    m.add_function(wrap_pyfunction!(architectures, m)?)?;
    m.add("MODEL_SETTINGS", MODEL_SETTINGS.to_vec())?;
    m.add("MUON_SETTINGS", MUON_SETTINGS.to_vec())?;
    Ok(())
}
