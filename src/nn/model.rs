//! A trainable classifier: an architecture, its parameters on a device, the
//! Adam optimiser, and the input normalisation fitted on the training data.
//! Training, evaluation, prediction and (atomic) save/load live here.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::nn::{self, OptimizerConfig, VarStore};
use tch::{Device, Kind, Reduction, Tensor};

use super::arch::{self, Layer, Plan};
use super::network::Network;
use crate::error::{Error, Result};

/// Keras's Adam defaults (beta_1 0.9, beta_2 0.999, epsilon 1e-7).
const ADAM_EPS: f64 = 1e-7;
/// Batch size for evaluation and prediction.
pub const INFERENCE_BATCH: usize = 256;

/// Images in Keras layout (N, H, W, C), borrowed from the caller, contiguous.
#[derive(Clone, Copy, Debug)]
pub enum Pixels<'a> {
    U8(&'a [u8]),
    F32(&'a [f32]),
}

#[derive(Clone, Copy, Debug)]
pub struct Images<'a> {
    pub pixels: Pixels<'a>,
    /// (N, H, W, C)
    pub shape: [usize; 4],
}

impl Images<'_> {
    #[must_use]
    pub fn len(&self) -> usize {
        self.shape[0]
    }
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.shape[0] == 0
    }
    /// (H, W, C)
    #[must_use]
    pub fn image_shape(&self) -> [usize; 3] {
        [self.shape[1], self.shape[2], self.shape[3]]
    }

    fn validate(&self, what: &str) -> Result<()> {
        let numel: usize = self.shape.iter().product();
        let len = match self.pixels {
            Pixels::U8(p) => p.len(),
            Pixels::F32(p) => {
                if let Some(pos) = p.iter().position(|v| !v.is_finite()) {
                    return Err(Error::invalid(format!(
                        "{what} contains a non-finite value ({}) at flat index {pos}; \
                         images must be finite numbers",
                        p[pos]
                    )));
                }
                p.len()
            }
        };
        assert_eq!(
            len, numel,
            "binding layer passed a buffer of the wrong length"
        );
        if self.shape.contains(&0) {
            return Err(Error::invalid(format!(
                "{what} must be a non-empty batch of images (N, H, W, C), got shape {:?}",
                self.shape
            )));
        }
        Ok(())
    }

    /// The images on `device` as float32 NCHW.
    fn to_tensor(self, device: Device) -> Tensor {
        let shape = self.shape.map(|d| d as i64);
        let t = match self.pixels {
            Pixels::U8(p) => Tensor::from_slice(p),
            Pixels::F32(p) => Tensor::from_slice(p),
        };
        t.to_device(device)
            .view(shape)
            .permute([0, 3, 1, 2])
            .to_kind(Kind::Float)
            .contiguous()
    }
}

/// Per-channel mean and standard deviation, fitted on training images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalization {
    fn fit(x: &Tensor) -> Self {
        let mean = x.mean_dim([0i64, 2, 3].as_slice(), false, Kind::Float);
        let std = x
            .std_correction([0i64, 2, 3].as_slice(), 0, false)
            .clamp_min(1e-7);
        Normalization {
            mean: Vec::<f32>::try_from(mean.to_device(Device::Cpu)).unwrap_or_default(),
            std: Vec::<f32>::try_from(std.to_device(Device::Cpu)).unwrap_or_default(),
        }
    }

    fn apply(&self, x: &Tensor) -> Tensor {
        let c = i64::try_from(self.mean.len()).unwrap_or(0);
        let mean = Tensor::from_slice(&self.mean)
            .to_device(x.device())
            .view([1, c, 1, 1]);
        let std = Tensor::from_slice(&self.std)
            .to_device(x.device())
            .view([1, c, 1, 1]);
        ((x - mean) / std).contiguous()
    }
}

/// How `fit` runs.
#[derive(Clone, Debug)]
pub struct FitConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub shuffle: bool,
}

/// Metrics of one epoch, as Keras logs them.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochLogs {
    pub loss: f64,
    pub accuracy: f64,
    pub val: Option<(f64, f64)>,
    pub seconds: f64,
}

/// Progress inside an epoch. `metrics` (running loss and accuracy) is filled
/// only on batches where reading them costs no device synchronisation worth
/// mentioning: every batch on CPU, every few batches on CUDA, and the last.
#[derive(Clone, Copy, Debug)]
pub struct BatchProgress {
    pub epoch: usize,
    pub epochs: usize,
    pub batch: usize,
    pub batches: usize,
    pub metrics: Option<(f64, f64)>,
}

/// Receives progress; returning `Err` (e.g. [`Error::Interrupted`]) stops the
/// work between two batches, leaving the model consistent and usable.
pub trait Monitor {
    /// Called between batches of any long computation.
    ///
    /// # Errors
    /// Whatever should stop the computation.
    fn batch(&mut self, progress: &BatchProgress) -> Result<()>;
    /// Called after each epoch.
    ///
    /// # Errors
    /// Whatever should stop training.
    fn epoch_end(&mut self, epoch: usize, epochs: usize, logs: &EpochLogs) -> Result<()>;
}

/// A monitor that watches nothing.
pub struct Silent;

impl Monitor for Silent {
    fn batch(&mut self, _: &BatchProgress) -> Result<()> {
        Ok(())
    }
    fn epoch_end(&mut self, _: usize, _: usize, _: &EpochLogs) -> Result<()> {
        Ok(())
    }
}

/// Keras's history: one value per epoch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    pub loss: Vec<f64>,
    pub accuracy: Vec<f64>,
    pub val_loss: Vec<f64>,
    pub val_accuracy: Vec<f64>,
}

/// What is saved beside the weights, as JSON in the safetensors header.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SavedMeta {
    format: u32,
    architecture: String,
    layers: Vec<Layer>,
    learning_rate: f64,
    input_shape: [usize; 3],
    num_classes: usize,
    class_names: Option<Vec<String>>,
    normalization: Normalization,
    seed: u64,
}

const FORMAT_VERSION: u32 = 1;
const META_KEY: &str = "cnnrs";

struct Built {
    vs: VarStore,
    net: Network,
    opt: nn::Optimizer,
    plan: Plan,
    input_shape: [usize; 3],
    num_classes: usize,
    normalization: Option<Normalization>,
}

/// Parses "auto", "cpu", "cuda" or "cuda:N".
///
/// # Errors
/// `InvalidArgument` for any other string or a CUDA device that is not there.
pub fn parse_device(spec: &str) -> Result<Device> {
    let count = super::cuda_device_count();
    let cuda = |i: usize| {
        if i < count {
            Ok(Device::Cuda(i))
        } else if count == 0 {
            Err(Error::invalid(format!(
                "device {spec:?} was requested but libtorch sees no CUDA device; \
                 use device=\"cpu\" or \"auto\""
            )))
        } else {
            Err(Error::invalid(format!(
                "device {spec:?} does not exist: libtorch sees {count} CUDA device(s), cuda:0..cuda:{}",
                count - 1
            )))
        }
    };
    match spec {
        "auto" => Ok(if count > 0 {
            Device::Cuda(0)
        } else {
            Device::Cpu
        }),
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(0),
        s => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => cuda(i),
            _ => Err(Error::invalid(format!(
                "device must be \"auto\", \"cpu\", \"cuda\" or \"cuda:N\", got {spec:?}"
            ))),
        },
    }
}

/// The name of a device as users write it.
#[must_use]
pub fn device_name(d: Device) -> String {
    match d {
        Device::Cuda(i) => format!("cuda:{i}"),
        Device::Mps => "mps".into(),
        Device::Vulkan => "vulkan".into(),
        Device::Cpu => "cpu".into(),
    }
}

/// A CNN classifier with Keras's training semantics.
pub struct Model {
    architecture: String,
    layers: Vec<Layer>,
    learning_rate: f64,
    device: Device,
    seed: u64,
    fits: u64,
    class_names: Option<Vec<String>>,
    built: Option<Built>,
}

fn check_labels(y: &[i64], n: usize, classes: usize, what: &str) -> Result<()> {
    if y.len() != n {
        return Err(Error::invalid(format!(
            "{what}: x has {n} images but y has {} labels; they must be the same length",
            y.len()
        )));
    }
    if let Some(bad) = y
        .iter()
        .find(|&&v| v < 0 || v >= i64::try_from(classes).unwrap_or(i64::MAX))
    {
        return Err(Error::invalid(format!(
            "{what}: label {bad} is out of range; labels must be integers in [0, {classes})"
        )));
    }
    Ok(())
}

impl Model {
    /// A model that builds its parameters at the first `fit` (input shape and
    /// class count come from the data), like a Keras `Sequential` without `input_shape`.
    ///
    /// # Errors
    /// `InvalidArgument` for a non-positive or non-finite learning rate.
    pub fn new(
        architecture: String,
        layers: Vec<Layer>,
        learning_rate: f64,
        device: Device,
        seed: u64,
    ) -> Result<Self> {
        if !(learning_rate.is_finite() && learning_rate > 0.0) {
            return Err(Error::invalid(format!(
                "learning_rate must be a positive finite number, got {learning_rate}"
            )));
        }
        if device.is_cuda() {
            tch::Cuda::cudnn_set_benchmark(true);
        }
        Ok(Model {
            architecture,
            layers,
            learning_rate,
            device,
            seed,
            fits: 0,
            class_names: None,
            built: None,
        })
    }

    /// Allocates and initialises the parameters for `input_shape` (H, W, C)
    /// and `num_classes`. Called by `fit`; call it yourself to inspect
    /// `plan()` before training.
    ///
    /// # Errors
    /// `InvalidArgument` if the architecture cannot take that input, or the
    /// model is already built for a different one.
    pub fn build(&mut self, input_shape: [usize; 3], num_classes: usize) -> Result<()> {
        if let Some(b) = &self.built {
            if b.input_shape == input_shape && b.num_classes == num_classes {
                return Ok(());
            }
            return Err(Error::invalid(format!(
                "this model is built for images of shape {:?} and {} classes; got {:?} and {}",
                b.input_shape, b.num_classes, input_shape, num_classes
            )));
        }
        if let Some(names) = &self.class_names {
            if names.len() != num_classes {
                return Err(Error::invalid(format!(
                    "class_names has {} names but the data has {num_classes} classes",
                    names.len()
                )));
            }
        }
        let plan = arch::plan(&self.layers, input_shape, num_classes)?;
        tch::manual_seed(self.seed as i64);
        let vs = VarStore::new(self.device);
        let net = Network::build(&vs.root(), &self.layers, &plan, input_shape[2])?;
        let opt = nn::Adam::default()
            .eps(ADAM_EPS)
            .build(&vs, self.learning_rate)?;
        self.built = Some(Built {
            vs,
            net,
            opt,
            plan,
            input_shape,
            num_classes,
            normalization: None,
        });
        Ok(())
    }

    #[must_use]
    pub fn architecture(&self) -> &str {
        &self.architecture
    }
    #[must_use]
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }
    #[must_use]
    pub fn learning_rate(&self) -> f64 {
        self.learning_rate
    }
    #[must_use]
    pub fn device(&self) -> Device {
        self.device
    }
    /// The shape/parameter plan, once built.
    #[must_use]
    pub fn plan(&self) -> Option<&Plan> {
        self.built.as_ref().map(|b| &b.plan)
    }
    /// (H, W, C) the model takes, once built.
    #[must_use]
    pub fn input_shape(&self) -> Option<[usize; 3]> {
        self.built.as_ref().map(|b| b.input_shape)
    }
    #[must_use]
    pub fn num_classes(&self) -> Option<usize> {
        self.built.as_ref().map(|b| b.num_classes)
    }
    #[must_use]
    pub fn normalization(&self) -> Option<&Normalization> {
        self.built.as_ref().and_then(|b| b.normalization.as_ref())
    }
    #[must_use]
    pub fn class_names(&self) -> Option<&[String]> {
        self.class_names.as_deref()
    }

    /// Sets the class names (one per class), saved with the model. Before the
    /// model is built the count is checked by `build`.
    ///
    /// # Errors
    /// `InvalidArgument` if the count disagrees with the built model.
    pub fn set_class_names(&mut self, names: Option<Vec<String>>) -> Result<()> {
        if let (Some(n), Some(k)) = (&names, self.num_classes()) {
            if n.len() != k {
                return Err(Error::invalid(format!(
                    "class_names has {} names but the model has {k} classes",
                    n.len()
                )));
            }
        }
        self.class_names = names;
        Ok(())
    }

    fn ready(&self, x: &Images, what: &str) -> Result<&Built> {
        let b = self.built.as_ref().ok_or_else(|| {
            Error::invalid(format!(
                "{what}: the model has not been trained yet; call fit first"
            ))
        })?;
        x.validate("x")?;
        if x.image_shape() != b.input_shape {
            return Err(Error::invalid(format!(
                "{what}: the model takes images of shape {:?} (H, W, C), got {:?}",
                b.input_shape,
                x.image_shape()
            )));
        }
        Ok(b)
    }

    /// Normalised float32 NCHW images on the model's device.
    fn prepare(&self, x: Images) -> Tensor {
        let t = x.to_tensor(self.device);
        match self.normalization() {
            Some(n) => n.apply(&t),
            None => t,
        }
    }

    /// Trains for `cfg.epochs` epochs on (x, y), Keras-style: the reported
    /// loss and accuracy are running means over the epoch's batches; the
    /// validation metrics are computed after each epoch in inference mode.
    /// The first fit also fits the per-channel normalisation on `x`.
    ///
    /// # Errors
    /// `InvalidArgument` for inconsistent data or settings, `Interrupted`
    /// when the monitor stops it, `Torch` for libtorch failures.
    pub fn fit(
        &mut self,
        x: Images,
        y: &[i64],
        num_classes: usize,
        validation: Option<(Images, &[i64])>,
        cfg: &FitConfig,
        monitor: &mut dyn Monitor,
    ) -> Result<History> {
        if cfg.batch_size == 0 {
            return Err(Error::invalid("batch_size must be >= 1, got 0"));
        }
        if cfg.epochs == 0 {
            return Err(Error::invalid("epochs must be >= 1, got 0"));
        }
        x.validate("x")?;
        check_labels(y, x.len(), num_classes, "fit")?;
        if let Some((vx, vy)) = &validation {
            vx.validate("validation x")?;
            check_labels(vy, vx.len(), num_classes, "validation_data")?;
            if vx.image_shape() != x.image_shape() {
                return Err(Error::invalid(format!(
                    "validation images have shape {:?} but training images {:?}",
                    vx.image_shape(),
                    x.image_shape()
                )));
            }
        }
        self.build(x.image_shape(), num_classes)?;
        let device = self.device;
        let raw = x.to_tensor(device);
        let built = self.built.as_mut().expect("built above");
        let norm = built
            .normalization
            .get_or_insert_with(|| Normalization::fit(&raw))
            .clone();
        let xt = norm.apply(&raw);
        drop(raw);
        let yt = Tensor::from_slice(y).to_device(device);
        let val = validation.map(|(vx, vy)| {
            (
                norm.apply(&vx.to_tensor(device)),
                Tensor::from_slice(vy).to_device(device),
            )
        });

        self.fits += 1;
        tch::manual_seed(self.seed.wrapping_add(self.fits.wrapping_mul(0x9E37_79B9)) as i64);
        let built = self.built.as_mut().expect("built above");
        let mut history = History::default();
        for epoch in 0..cfg.epochs {
            let start = Instant::now();
            let (loss, accuracy) = train_epoch(built, &xt, &yt, epoch, cfg, monitor)?;
            let val_metrics = match &val {
                Some((vx, vy)) => Some(evaluate_tensors(&built.net, vx, vy, monitor)?),
                None => None,
            };
            let logs = EpochLogs {
                loss,
                accuracy,
                val: val_metrics,
                seconds: start.elapsed().as_secs_f64(),
            };
            history.loss.push(logs.loss);
            history.accuracy.push(logs.accuracy);
            if let Some((l, a)) = logs.val {
                history.val_loss.push(l);
                history.val_accuracy.push(a);
            }
            monitor.epoch_end(epoch, cfg.epochs, &logs)?;
        }
        Ok(history)
    }

    /// Mean cross-entropy and accuracy on (x, y) in inference mode.
    ///
    /// # Errors
    /// `InvalidArgument` for an untrained model or inconsistent data.
    pub fn evaluate(&self, x: Images, y: &[i64], monitor: &mut dyn Monitor) -> Result<(f64, f64)> {
        let b = self.ready(&x, "evaluate")?;
        check_labels(y, x.len(), b.num_classes, "evaluate")?;
        let xt = self.prepare(x);
        let yt = Tensor::from_slice(y).to_device(self.device);
        evaluate_tensors(&b.net, &xt, &yt, monitor)
    }

    /// Class probabilities, row-major (N × classes).
    ///
    /// # Errors
    /// `InvalidArgument` for an untrained model or images of the wrong shape.
    pub fn predict(
        &self,
        x: Images,
        batch_size: usize,
        monitor: &mut dyn Monitor,
    ) -> Result<Vec<f32>> {
        if batch_size == 0 {
            return Err(Error::invalid("batch_size must be >= 1, got 0"));
        }
        let b = self.ready(&x, "predict")?;
        let xt = self.prepare(x);
        let n = x.len();
        let mut out = Vec::with_capacity(n * b.num_classes);
        let batches = n.div_ceil(batch_size);
        for i in 0..batches {
            let len = batch_size.min(n - i * batch_size);
            let xb = xt.narrow(0, (i * batch_size) as i64, len as i64);
            let p = tch::no_grad(|| b.net.probabilities(&xb)).to_device(Device::Cpu);
            out.extend(Vec::<f32>::try_from(p.flatten(0, -1))?);
            monitor.batch(&BatchProgress {
                epoch: 0,
                epochs: 1,
                batch: i,
                batches,
                metrics: None,
            })?;
        }
        Ok(out)
    }

    /// Writes the weights and everything needed to use them again to `path`
    /// (safetensors, metadata as JSON in its header). The file appears
    /// whole or not at all: it is written beside `path` and renamed.
    ///
    /// # Errors
    /// `InvalidArgument` for an untrained model, `Io` for write failures.
    pub fn save(&self, path: &Path) -> Result<()> {
        let b = self.built.as_ref().ok_or_else(|| {
            Error::invalid("save: the model has not been built or trained yet; call fit first")
        })?;
        let normalization = b.normalization.clone().ok_or_else(|| {
            Error::invalid("save: the model has not been trained yet; call fit first")
        })?;
        let meta = SavedMeta {
            format: FORMAT_VERSION,
            architecture: self.architecture.clone(),
            layers: self.layers.clone(),
            learning_rate: self.learning_rate,
            input_shape: b.input_shape,
            num_classes: b.num_classes,
            class_names: self.class_names.clone(),
            normalization,
            seed: self.seed,
        };
        let meta_json = serde_json::to_string(&meta).map_err(|e| Error::format(e.to_string()))?;
        let mut tensors = Vec::new();
        for (name, t) in b.vs.variables() {
            let t = t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
            let shape: Vec<usize> = t
                .size()
                .iter()
                .map(|&d| usize::try_from(d).unwrap_or(0))
                .collect();
            let data: Vec<f32> = Vec::try_from(t.flatten(0, -1))?;
            let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            tensors.push((name, F32View { shape, bytes }));
        }
        let info = HashMap::from([(META_KEY.to_string(), meta_json)]);
        let buffer = safetensors::serialize(tensors, &Some(info))
            .map_err(|e| Error::format(format!("cannot serialise the model: {e}")))?;
        crate::fileio::write_atomically(path, &buffer)
    }

    /// Reads a model written by [`Model::save`] onto `device`.
    ///
    /// # Errors
    /// `NotFound`/`Io` for unreadable files, `Format` for files that are not
    /// complete cnnrs models.
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        let buffer = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let bad = |why: String| {
            Error::format(format!(
                "{} is not a valid cnnrs model file: {why}",
                path.display()
            ))
        };
        let st =
            safetensors::SafeTensors::deserialize(&buffer).map_err(|e| bad(format!("{e:?}")))?;
        let (_, header) =
            safetensors::SafeTensors::read_metadata(&buffer).map_err(|e| bad(format!("{e:?}")))?;
        let meta_json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(
                || bad("it has no cnnrs metadata (was it written by Model.save?)".into()),
            )?;
        let meta: SavedMeta = serde_json::from_str(meta_json).map_err(|e| bad(e.to_string()))?;
        if meta.format != FORMAT_VERSION {
            return Err(bad(format!(
                "format version {} is not supported (this cnnrs reads version {FORMAT_VERSION})",
                meta.format
            )));
        }
        let mut model = Model::new(
            meta.architecture,
            meta.layers,
            meta.learning_rate,
            device,
            meta.seed,
        )
        .map_err(|e| bad(e.to_string()))?;
        model
            .build(meta.input_shape, meta.num_classes)
            .map_err(|e| bad(e.to_string()))?;
        if meta.normalization.mean.len() != meta.input_shape[2]
            || meta.normalization.std.len() != meta.input_shape[2]
        {
            return Err(bad(
                "normalisation statistics do not match the channel count".into(),
            ));
        }
        let built = model.built.as_mut().expect("built above");
        built.normalization = Some(meta.normalization);
        let vars = built.vs.variables();
        if st.len() != vars.len() {
            return Err(bad(format!(
                "it holds {} tensors but the architecture has {}",
                st.len(),
                vars.len()
            )));
        }
        for (name, var) in vars {
            let view = st
                .tensor(&name)
                .map_err(|_| bad(format!("tensor {name:?} is missing")))?;
            let expected: Vec<usize> = var
                .size()
                .iter()
                .map(|&d| usize::try_from(d).unwrap_or(0))
                .collect();
            if view.dtype() != safetensors::Dtype::F32 || view.shape() != expected.as_slice() {
                return Err(bad(format!(
                    "tensor {name:?} is {:?} {:?}, expected F32 {expected:?}",
                    view.dtype(),
                    view.shape()
                )));
            }
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let src = Tensor::from_slice(&values)
                .view(var.size().as_slice())
                .to_device(device);
            tch::no_grad(|| {
                let mut var = var;
                var.copy_(&src);
            });
        }
        model.class_names = meta.class_names;
        Ok(model)
    }
}

/// One pass over the shuffled training data; returns the epoch's running
/// (loss, accuracy) as Keras reports them. Batches are gathered on the device;
/// the running sums stay there and are read only when progress shows them
/// (every batch on CPU, every 25th and the last on CUDA).
fn train_epoch(
    built: &mut Built,
    x: &Tensor,
    y: &Tensor,
    epoch: usize,
    cfg: &FitConfig,
    monitor: &mut dyn Monitor,
) -> Result<(f64, f64)> {
    let device = x.device();
    let n = usize::try_from(x.size()[0]).unwrap_or(0);
    let batches = n.div_ceil(cfg.batch_size);
    let sync_every = if device.is_cuda() { 25 } else { 1 };
    let order = if cfg.shuffle {
        Tensor::randperm(n as i64, (Kind::Int64, device))
    } else {
        Tensor::arange(n as i64, (Kind::Int64, device))
    };
    let mut loss_sum = Tensor::zeros([], (Kind::Float, device));
    let mut correct = Tensor::zeros([], (Kind::Int64, device));
    let mut seen = 0usize;
    let mut metrics = (0.0, 0.0);
    for b in 0..batches {
        let len = cfg.batch_size.min(n - b * cfg.batch_size);
        let idx = order.narrow(0, (b * cfg.batch_size) as i64, len as i64);
        let yb = y.index_select(0, &idx);
        let logits = built.net.forward_t(&x.index_select(0, &idx), true);
        let loss = logits.cross_entropy_for_logits(&yb);
        built.opt.backward_step(&loss);
        seen += len;
        tch::no_grad(|| {
            let _ = loss_sum.g_add_(&(loss.detach() * len as f64));
            let _ = correct.g_add_(&logits.argmax(-1, false).eq_tensor(&yb).sum(Kind::Int64));
        });
        let read = b + 1 == batches || b % sync_every == 0;
        if read {
            metrics = (
                loss_sum.double_value(&[]) / seen as f64,
                correct.int64_value(&[]) as f64 / seen as f64,
            );
        }
        monitor.batch(&BatchProgress {
            epoch,
            epochs: cfg.epochs,
            batch: b,
            batches,
            metrics: read.then_some(metrics),
        })?;
    }
    Ok(metrics)
}

fn evaluate_tensors(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    monitor: &mut dyn Monitor,
) -> Result<(f64, f64)> {
    let n = usize::try_from(x.size()[0]).unwrap_or(0);
    let device = x.device();
    let mut loss_sum = Tensor::zeros([], (Kind::Double, device));
    let mut correct = Tensor::zeros([], (Kind::Int64, device));
    let batches = n.div_ceil(INFERENCE_BATCH);
    for i in 0..batches {
        let len = INFERENCE_BATCH.min(n - i * INFERENCE_BATCH);
        let (start, len64) = ((i * INFERENCE_BATCH) as i64, len as i64);
        tch::no_grad(|| {
            let logits = net.forward_t(&x.narrow(0, start, len64), false);
            let yb = y.narrow(0, start, len64);
            let l = logits.cross_entropy_loss::<Tensor>(&yb, None, Reduction::Sum, -100, 0.0);
            let _ = loss_sum.g_add_(&l.to_kind(Kind::Double));
            let _ = correct.g_add_(&logits.argmax(-1, false).eq_tensor(&yb).sum(Kind::Int64));
        });
        monitor.batch(&BatchProgress {
            epoch: 0,
            epochs: 1,
            batch: i,
            batches,
            metrics: None,
        })?;
    }
    Ok((
        loss_sum.double_value(&[]) / n as f64,
        correct.int64_value(&[]) as f64 / n as f64,
    ))
}

struct F32View {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl safetensors::View for F32View {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::arch;

    /// Two separable classes: images whose top half is bright vs bottom half.
    fn toy(n: usize) -> (Vec<u8>, Vec<i64>) {
        let mut x = vec![0u8; n * 8 * 8];
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let class = i % 2;
            for r in 0..8 {
                for c in 0..8 {
                    let bright = (r < 4) == (class == 0);
                    x[i * 64 + r * 8 + c] = if bright { 200 } else { 20 }
                        + u8::try_from((i * 7 + r * 3 + c) % 16).unwrap();
                }
            }
            y.push(i64::try_from(class).unwrap());
        }
        (x, y)
    }

    /// libtorch's random generator is process-wide: tests that train hold this
    /// lock so parallel tests do not draw from it in between.
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn model(seed: u64) -> Model {
        Model::new(
            "baseline".into(),
            arch::builtin("baseline").unwrap(),
            1e-3,
            Device::Cpu,
            seed,
        )
        .unwrap()
    }

    #[test]
    fn learns_a_separable_problem_and_round_trips() {
        let _rng = RNG.lock().unwrap();
        let (x, y) = toy(64);
        let images = Images {
            pixels: Pixels::U8(&x),
            shape: [64, 8, 8, 1],
        };
        let mut m = model(1);
        let cfg = FitConfig {
            epochs: 3,
            batch_size: 16,
            shuffle: true,
        };
        let h = m
            .fit(images, &y, 2, Some((images, &y)), &cfg, &mut Silent)
            .unwrap();
        assert_eq!(h.loss.len(), 3);
        assert_eq!(h.val_accuracy.len(), 3);
        let (_, acc) = m.evaluate(images, &y, &mut Silent).unwrap();
        assert!(acc > 0.95, "accuracy {acc}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        m.save(&path).unwrap();
        let loaded = Model::load(&path, Device::Cpu).unwrap();
        let p1 = m.predict(images, 64, &mut Silent).unwrap();
        let p2 = loaded.predict(images, 64, &mut Silent).unwrap();
        assert_eq!(p1, p2);
        assert_eq!(loaded.normalization(), m.normalization());

        std::fs::write(&path, b"not a model").unwrap();
        assert!(matches!(
            Model::load(&path, Device::Cpu),
            Err(Error::Format(_))
        ));
    }

    #[test]
    fn same_seed_same_history() {
        let _rng = RNG.lock().unwrap();
        let (x, y) = toy(32);
        let images = Images {
            pixels: Pixels::U8(&x),
            shape: [32, 8, 8, 1],
        };
        let cfg = FitConfig {
            epochs: 2,
            batch_size: 8,
            shuffle: true,
        };
        let a = model(7)
            .fit(images, &y, 2, None, &cfg, &mut Silent)
            .unwrap();
        let b = model(7)
            .fit(images, &y, 2, None, &cfg, &mut Silent)
            .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn bad_input_is_an_error() {
        let (x, y) = toy(8);
        let images = Images {
            pixels: Pixels::U8(&x),
            shape: [8, 8, 8, 1],
        };
        let cfg = FitConfig {
            epochs: 1,
            batch_size: 4,
            shuffle: false,
        };
        let mut m = model(0);
        assert!(m.fit(images, &y[..7], 2, None, &cfg, &mut Silent).is_err());
        assert!(m.fit(images, &[5; 8], 2, None, &cfg, &mut Silent).is_err());
        let zero = FitConfig {
            batch_size: 0,
            ..cfg.clone()
        };
        assert!(m.fit(images, &y, 2, None, &zero, &mut Silent).is_err());
        let nan = vec![f32::NAN; 8 * 64];
        let bad = Images {
            pixels: Pixels::F32(&nan),
            shape: [8, 8, 8, 1],
        };
        assert!(m.fit(bad, &y, 2, None, &cfg, &mut Silent).is_err());
        assert!(
            m.predict(images, 4, &mut Silent).is_err(),
            "untrained model must refuse"
        );
        assert!(parse_device("gpu").is_err());
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
    }
}
