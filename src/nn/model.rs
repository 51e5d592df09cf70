//! A trainable classifier: an architecture, its parameters on a device, the
//! Adam optimiser, the precision it trains in, and the input normalisation
//! fitted on the training data. `Model` owns the model; the loops live in
//! [`super::train`], inputs in [`super::input`], the file format in
//! [`super::checkpoint`].

use std::time::Instant;

use tch::nn::{self, VarStore};
use tch::{Device, Kind, Tensor};

use super::arch::{self, Layer, Plan};
use super::device::{Layout, PREFERRED_LAYOUT};
use super::input::{check_labels, Images, Normalization};
use super::network::{Network, BN_BIAS_GROUP};
use super::optim::{OptimizerKind, OptimizerSpec};
use super::precision::{GradScaler, Precision};
use super::recipe::{self, Decoupled, Lookahead};
use super::torch_ext::{deep_copy, with_autocast, Generator};
use super::train::{
    self, DeviceData, EpochLogs, FitConfig, History, Inference, LearningRates, Monitor, Rates,
    Trainer, Tta,
};
use crate::error::{Error, Result};

/// Everything a model is made from before it sees data.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    /// A built-in name, or "custom_layers" for user specs.
    pub architecture: String,
    pub layers: Vec<Layer>,
    pub learning_rate: f64,
    pub device: Device,
    /// As asked; resolved for the device by [`Model::new`].
    pub precision: Precision,
    pub seed: u64,
    pub optimizer: OptimizerSpec,
    /// Keras's `CategoricalCrossentropy(label_smoothing=...)`, in [0, 1).
    pub label_smoothing: f64,
    /// A recipe's optimiser parametrisation (airbench94's), or None for
    /// plain `torch.optim` semantics.
    pub decoupled: Option<Decoupled>,
    /// Test-time augmentation of `evaluate`/`predict` when the call names none.
    pub tta: Tta,
}

/// How a fit runs, beyond its data.
#[derive(Clone, Copy, Debug)]
pub struct FitOptions {
    pub batch_size: usize,
    pub shuffle: bool,
    /// The steps the whole fit will take (Lookahead's schedule needs it).
    pub total_steps: usize,
    /// The learning rate the fit's schedule starts from (decoupled weight
    /// decay is relative to it).
    pub base_rate: f64,
}

/// The parts that exist once the model knows its input shape and classes.
pub(super) struct Built {
    pub(super) vs: VarStore,
    pub(super) net: Network,
    opt: nn::Optimizer,
    pub(super) plan: Plan,
    pub(super) input_shape: [usize; 3],
    pub(super) num_classes: usize,
    pub(super) normalization: Option<Normalization>,
    scaler: Option<GradScaler>,
}

/// The data of a fit in progress, on the device, between `begin_fit` and `end_fit`.
struct Session {
    data: DeviceData,
    val: Option<DeviceData>,
    batch_size: usize,
    shuffle: bool,
    /// Drop the last incomplete batch of each epoch (the recipe's loader does).
    drop_last: bool,
    lookahead: Option<Lookahead>,
}

impl Session {
    fn batches(&self) -> usize {
        batches_per_epoch(self.data.len(), self.batch_size, self.drop_last)
    }
}

/// Batches of an epoch over `n` images: with `drop_last` (a recipe's loader)
/// the last incomplete batch is dropped, unless it is the only one.
#[must_use]
pub fn batches_per_epoch(n: usize, batch_size: usize, drop_last: bool) -> usize {
    if drop_last && n >= batch_size {
        n / batch_size
    } else {
        n.div_ceil(batch_size)
    }
}

impl ModelConfig {
    /// Whether fits drop each epoch's last incomplete batch (a recipe does).
    #[must_use]
    pub fn drop_last(&self) -> bool {
        self.decoupled.is_some()
    }
}

/// One variable of [`Model::state_dict`]: name, shape and float32 values.
pub type StateEntry = (String, Vec<usize>, Vec<f32>);

/// A copy of every variable (weights and batch-norm statistics), on the device.
pub struct Snapshot {
    tensors: Vec<(String, Tensor)>,
}

/// A CNN classifier with Keras's training semantics.
///
/// Every random draw (weight initialisation, shuffling, dropout) comes from
/// the model's own generator, seeded with `config.seed`, so the same seed
/// gives the same history whatever other threads or models draw meanwhile.
pub struct Model {
    config: ModelConfig,
    gen: Generator,
    session: Option<Session>,
    class_names: Option<Vec<String>>,
    built: Option<Built>,
}

impl Model {
    /// A model that builds its parameters at the first `fit` (input shape and
    /// class count come from the data), like a Keras `Sequential` without
    /// `input_shape`. `config.precision` is resolved for the device here.
    ///
    /// # Errors
    /// `InvalidArgument` for a non-positive or non-finite learning rate, or a
    /// precision the device cannot run.
    pub fn new(mut config: ModelConfig) -> Result<Self> {
        let lr = config.learning_rate;
        if !(lr.is_finite() && lr > 0.0) {
            return Err(Error::invalid(format!(
                "learning_rate must be a positive finite number, got {lr}"
            )));
        }
        for (i, layer) in config.layers.iter().enumerate() {
            layer.validate(i)?;
        }
        config.optimizer.validate()?;
        if let Some(d) = &config.decoupled {
            d.validate()?;
            // Its optimiser has a second group, the conv groups' batch-norm biases.
            if !config
                .layers
                .iter()
                .any(|l| matches!(l, Layer::ConvGroup { .. }))
            {
                return Err(Error::invalid(
                    "a decoupled recipe needs airbench's conv_group layers (their batch-norm \
                     biases are its second parameter group)",
                ));
            }
            if config.optimizer.kind != OptimizerKind::Sgd {
                return Err(Error::invalid(format!(
                    "{}'s recipe trains with SGD (its learning_rate and weight_decay are per 1024 \
                     examples); optimizer must be \"sgd\", got {:?}",
                    config.architecture,
                    config.optimizer.kind.name()
                )));
            }
        }
        if !(0.0..1.0).contains(&config.label_smoothing) {
            return Err(Error::invalid(format!(
                "label_smoothing must be a number in [0, 1), got {}",
                config.label_smoothing
            )));
        }
        config.precision = config.precision.resolve(config.device)?;
        if config.device.is_cuda() {
            tch::Cuda::cudnn_set_benchmark(true);
        }
        let gen = Generator::new(config.device, config.seed)?;
        Ok(Model {
            config,
            gen,
            session: None,
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
        let plan = arch::plan(&self.config.layers, input_shape, num_classes).map_err(|e| {
            if self.config.architecture == "airbench94" {
                Error::invalid(format!(
                    "{e}; airbench94 needs images of at least 25×25 pixels (CIFAR's 32×32): \
                     upscale smaller ones, e.g. np.kron(x, np.ones((1, 4, 4, 1), x.dtype))"
                ))
            } else {
                e
            }
        })?;
        let vs = VarStore::new(self.config.device);
        let mut net = Network::build(
            &vs.root(),
            &self.config.layers,
            &plan,
            input_shape[2],
            &mut self.gen,
        )?;
        net.set_layout(PREFERRED_LAYOUT)?;
        let opt = self
            .config
            .optimizer
            .build(&vs, self.config.learning_rate)?;
        let scaler = (self.config.precision == Precision::Fp16).then(GradScaler::default);
        self.built = Some(Built {
            vs,
            net,
            opt,
            plan,
            input_shape,
            num_classes,
            normalization: None,
            scaler,
        });
        Ok(())
    }

    #[must_use]
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }
    #[must_use]
    pub fn architecture(&self) -> &str {
        &self.config.architecture
    }
    #[must_use]
    pub fn layers(&self) -> &[Layer] {
        &self.config.layers
    }
    #[must_use]
    pub fn learning_rate(&self) -> f64 {
        self.config.learning_rate
    }
    #[must_use]
    pub fn device(&self) -> Device {
        self.config.device
    }
    /// The precision this model trains in (resolved: never `Auto`).
    #[must_use]
    pub fn precision(&self) -> Precision {
        self.config.precision
    }
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.config.seed
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
    pub(super) fn built(&self) -> Option<&Built> {
        self.built.as_ref()
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

    /// Sets statistics read from a file (the checkpoint reader's way in).
    pub(super) fn set_normalization(&mut self, n: Normalization) -> Result<()> {
        let b = self
            .built
            .as_mut()
            .ok_or_else(|| Error::invalid("the model is not built"))?;
        if n.mean.len() != b.input_shape[2] {
            return Err(Error::invalid(format!(
                "normalisation has {} channels but the model takes {}",
                n.mean.len(),
                b.input_shape[2]
            )));
        }
        b.normalization = Some(n);
        Ok(())
    }

    fn ready(&self, x: &Images, what: &str) -> Result<&Built> {
        let b = self.built.as_ref().ok_or_else(|| {
            Error::invalid(format!(
                "{what}: the model has not been trained yet; call fit first"
            ))
        })?;
        if b.normalization.is_none() {
            return Err(Error::invalid(format!(
                "{what}: the model has not been trained yet; call fit first"
            )));
        }
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

    /// Builds the model for `x` and fits the normalisation on it unless it
    /// has one already (the first fit's statistics are kept, as Keras's
    /// `Normalization.adapt` once). `fit` calls this; the binding calls it
    /// first to publish the model's shape before the epochs start.
    ///
    /// # Errors
    /// As [`Model::build`] and [`Normalization::fit`].
    pub fn prepare(&mut self, x: Images, num_classes: usize) -> Result<Option<Tensor>> {
        x.validate("x")?;
        self.build(x.image_shape(), num_classes)?;
        let b = self.built.as_mut().expect("built above");
        if b.normalization.is_some() {
            return Ok(None);
        }
        let raw = x.to_device(self.config.device)?;
        b.normalization = Some(Normalization::fit(&raw)?);
        Ok(Some(raw))
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
        cfg.validate()?;
        let batches = x.len().div_ceil(cfg.batch_size);
        let options = FitOptions {
            batch_size: cfg.batch_size,
            shuffle: cfg.shuffle,
            total_steps: batches * cfg.epochs,
            base_rate: self.config.learning_rate,
        };
        self.begin_fit(x, y, num_classes, validation, options)?;
        let rates = LearningRates::Constant(self.config.learning_rate);
        let mut history = History::default();
        let result = (0..cfg.epochs).try_for_each(|epoch| {
            let logs = self.fit_epoch(epoch, cfg.epochs, &rates, None, monitor)?;
            history.loss.push(logs.loss);
            history.accuracy.push(logs.accuracy);
            if let Some((l, a)) = logs.val {
                history.val_loss.push(l);
                history.val_accuracy.push(a);
            }
            Ok(())
        });
        self.end_fit();
        result.map(|()| history)
    }

    /// Starts a fit: builds the model for `x` if needed, fits the
    /// normalisation on the first fit, and puts the data on the device once.
    /// Then [`Model::fit_epoch`] runs epochs and [`Model::end_fit`] frees it.
    ///
    /// # Errors
    /// `InvalidArgument` for inconsistent data or settings.
    pub fn begin_fit(
        &mut self,
        x: Images,
        y: &[i64],
        num_classes: usize,
        validation: Option<(Images, &[i64])>,
        options: FitOptions,
    ) -> Result<()> {
        self.session = None;
        let FitOptions {
            batch_size,
            shuffle,
            total_steps,
            base_rate,
        } = options;
        if !(base_rate.is_finite() && base_rate > 0.0) {
            return Err(Error::invalid(format!(
                "the base learning rate must be a positive finite number, got {base_rate}"
            )));
        }
        if batch_size == 0 {
            return Err(Error::invalid("batch_size must be >= 1, got 0"));
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
        let (raw, first_fit) = match self.prepare(x, num_classes)? {
            Some(raw) => (raw, true),
            None => (x.to_device(self.config.device)?, false),
        };
        let device = self.config.device;
        let built = self.built.as_mut().expect("prepared above");
        let norm = built
            .normalization
            .as_ref()
            .expect("prepared above")
            .on(device)?;
        let mut lookahead = None;
        if let Some(d) = self.config.decoupled {
            if d.lookahead_every > 0 {
                // Copied before the whitening is fitted, as the reference does.
                let vars = built.vs.variables().into_values().collect();
                lookahead = Some(Lookahead::new(vars, d.lookahead_every, total_steps)?);
            }
            let (wd, wd_biases) =
                d.torch_weight_decays(self.config.optimizer.weight_decay, base_rate, batch_size);
            built.opt.set_weight_decay_group(0, wd);
            built.opt.set_weight_decay_group(BN_BIAS_GROUP, wd_biases);
        }
        if let (true, Some((w, _))) = (first_fit, built.net.whitening()) {
            let k = w.size()[2];
            let m = raw.size()[0].min(recipe::WHITENING_IMAGES as i64);
            let first = norm.batch(&raw.f_narrow(0, 0, m)?, Layout::Contiguous)?;
            // In float32 whatever autocast the calling thread has on.
            let weights = tch::no_grad(|| {
                with_autocast(device, None, || {
                    recipe::whitening_weights(&first, k, recipe::WHITENING_EPS)
                })
            })??;
            built.net.set_whitening(&weights)?;
        }
        let flips = if self.config.layers.contains(&Layer::AlternatingFlip) {
            let n = raw.size()[0];
            Some(
                self.gen
                    .bernoulli(0.5, &[n])?
                    .f_to_device(device)?
                    .f_to_kind(Kind::Bool)?,
            )
        } else {
            None
        };
        let on_device = |x: Tensor, y: &[i64], flips: Option<Tensor>| -> Result<DeviceData> {
            Ok(DeviceData {
                x,
                y: Tensor::f_from_slice(y)?.f_to_device(device)?,
                norm: norm.clone(),
                layout: PREFERRED_LAYOUT,
                flips,
            })
        };
        let data = on_device(raw, y, flips)?;
        let val = match validation {
            Some((vx, vy)) => Some(on_device(vx.to_device(device)?, vy, None)?),
            None => None,
        };
        self.session = Some(Session {
            data,
            val,
            batch_size,
            shuffle,
            drop_last: self.config.drop_last(),
            lookahead,
        });
        Ok(())
    }

    /// The number of batches an epoch of the fit in progress has.
    #[must_use]
    pub fn batches_per_epoch(&self) -> Option<usize> {
        self.session.as_ref().map(Session::batches)
    }

    /// Runs one epoch of the fit started by [`Model::begin_fit`] with the
    /// given learning rates, then the validation pass. `steps` cuts the
    /// epoch short (a fractional last epoch).
    ///
    /// # Errors
    /// `InvalidArgument` without a fit in progress or for bad rates,
    /// `Interrupted` when the monitor stops it, `Torch` for libtorch failures.
    pub fn fit_epoch(
        &mut self,
        epoch: usize,
        epochs: usize,
        rates: &LearningRates,
        steps: Option<usize>,
        monitor: &mut dyn Monitor,
    ) -> Result<EpochLogs> {
        let session = self
            .session
            .as_mut()
            .ok_or_else(|| Error::invalid("fit_epoch: no fit in progress; call begin_fit first"))?;
        let full = session.batches();
        let batches = match steps {
            Some(s) if s == 0 || s > full => {
                return Err(Error::invalid(format!(
                    "steps must be in [1, {full}] (the batches of an epoch), got {s}"
                )))
            }
            Some(s) => s,
            None => full,
        };
        rates.validate(batches)?;
        let device = self.config.device;
        let built = self
            .built
            .as_mut()
            .expect("a session implies a built model");
        let rate_map = match self.config.decoupled {
            Some(decoupled) => {
                if let Some((_, b)) = built.net.whitening() {
                    let _ = b.set_requires_grad(epoch < decoupled.whiten_bias_epochs);
                }
                Rates::Decoupled {
                    momentum: self.config.optimizer.momentum,
                    decoupled,
                }
            }
            None => Rates::Plain,
        };
        let start = Instant::now();
        let mut trainer = Trainer {
            net: &built.net,
            opt: &mut built.opt,
            gen: &mut self.gen,
            autocast: self.config.precision.autocast(),
            scaler: built.scaler.as_mut(),
            label_smoothing: self.config.label_smoothing,
            rates: rate_map,
            lookahead: session.lookahead.as_mut(),
        };
        let n = session.data.len() as i64;
        let order = if session.shuffle {
            trainer.gen.randperm(n)?
        } else {
            Tensor::f_arange(n, (Kind::Int64, device))?
        };
        let (loss, accuracy) = train::train_epoch(
            &mut trainer,
            &session.data,
            &order,
            rates,
            epoch,
            epochs,
            (session.batch_size, batches),
            monitor,
        )?;
        let how = Inference {
            autocast: self.config.precision.autocast(),
            tta: Tta::None,
            label_smoothing: self.config.label_smoothing,
        };
        let val = match &session.val {
            Some(v) => Some(train::evaluate(&built.net, how, v, monitor)?),
            None => None,
        };
        let logs = EpochLogs {
            loss,
            accuracy,
            val,
            seconds: start.elapsed().as_secs_f64(),
        };
        monitor.epoch_end(epoch, epochs, &logs)?;
        Ok(logs)
    }

    /// Ends the fit in progress, freeing its copies of the data. Idempotent.
    pub fn end_fit(&mut self) {
        self.session = None;
    }

    /// A copy of every weight and batch-norm statistic (for Keras's
    /// `restore_best_weights`).
    ///
    /// # Errors
    /// `InvalidArgument` before the model is built; libtorch failures.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let b = self.built.as_ref().ok_or_else(|| {
            Error::invalid("snapshot: the model has no weights yet; call fit first")
        })?;
        let tensors =
            b.vs.variables()
                .into_iter()
                .map(|(name, t)| Ok((name, deep_copy(&t)?)))
                .collect::<Result<_>>()?;
        Ok(Snapshot { tensors })
    }

    /// Puts back the weights of a [`Model::snapshot`] of this model.
    ///
    /// # Errors
    /// `InvalidArgument` for a snapshot of another architecture.
    pub fn restore(&mut self, snapshot: &Snapshot) -> Result<()> {
        let b = self
            .built
            .as_ref()
            .ok_or_else(|| Error::invalid("restore: the model has no weights yet"))?;
        let vars = b.vs.variables();
        let fits = vars.len() == snapshot.tensors.len()
            && snapshot
                .tensors
                .iter()
                .all(|(name, t)| vars.get(name).is_some_and(|v| v.size() == t.size()));
        if !fits {
            return Err(Error::invalid(
                "restore: the snapshot was taken from a model of another architecture",
            ));
        }
        for (name, t) in &snapshot.tensors {
            let mut v = vars[name].shallow_clone();
            tch::no_grad(|| v.f_copy_(t))?;
        }
        Ok(())
    }

    /// Every variable (weights, frozen weights, batch-norm statistics) as
    /// (name, shape, float32 values), sorted by name: PyTorch's `state_dict`
    /// in its layouts (convolutions `(out, in, kh, kw)`, dense `(out, in)`).
    ///
    /// # Errors
    /// `InvalidArgument` before the model is built; libtorch failures.
    pub fn state_dict(&self) -> Result<Vec<StateEntry>> {
        let b = self.built.as_ref().ok_or_else(|| {
            Error::invalid("state_dict: the model has no weights yet; call fit or build first")
        })?;
        let mut vars: Vec<(String, Tensor)> = b.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars.into_iter()
            .map(|(name, t)| {
                let t = t
                    .f_to_device(Device::Cpu)?
                    .f_to_kind(Kind::Float)?
                    .f_contiguous()?;
                let shape = t.size().iter().map(|&d| d as usize).collect();
                let values = Vec::<f32>::try_from(t.f_flatten(0, -1)?)?;
                Ok((name, shape, values))
            })
            .collect()
    }

    /// Sets every variable from `values` (name → (shape, float32 values)), as
    /// PyTorch's strict `load_state_dict`: the names must be exactly the
    /// model's and every shape must match; nothing changes otherwise.
    ///
    /// # Errors
    /// `InvalidArgument` naming the first missing, unexpected or misshapen entry.
    pub fn load_state_dict(&mut self, values: &[(String, Vec<usize>, &[f32])]) -> Result<()> {
        let b = self.built.as_ref().ok_or_else(|| {
            Error::invalid("load_state_dict: the model has no weights yet; call build first")
        })?;
        let vars = b.vs.variables();
        let mut checked = Vec::with_capacity(values.len());
        for (name, shape, data) in values {
            let var = vars.get(name).ok_or_else(|| {
                let mut known: Vec<&String> = vars.keys().collect();
                known.sort();
                Error::invalid(format!(
                    "load_state_dict: unexpected key {name:?}; the model's keys are {known:?}"
                ))
            })?;
            let expected: Vec<usize> = var.size().iter().map(|&d| d as usize).collect();
            if *shape != expected || shape.iter().product::<usize>() != data.len() {
                return Err(Error::invalid(format!(
                    "load_state_dict: {name:?} has shape {shape:?}, the model's is {expected:?}"
                )));
            }
            // A NaN or infinite weight makes every prediction NaN: refuse it before
            // anything is copied, so a refused load leaves the model as it was.
            if let Some(i) = data.iter().position(|v| !v.is_finite()) {
                return Err(Error::invalid(format!(
                    "load_state_dict: {name:?} holds a non-finite value ({}) at flat index \
                     {i}; every weight must be a finite number",
                    data[i]
                )));
            }
            checked.push((var, data));
        }
        if let Some(missing) = vars
            .keys()
            .find(|k| !values.iter().any(|(n, _, _)| n == *k))
        {
            return Err(Error::invalid(format!(
                "load_state_dict: missing key {missing:?} (every variable must be given)"
            )));
        }
        for (var, data) in checked {
            let t = Tensor::f_from_slice(data)?
                .f_view(var.size().as_slice())?
                .f_to_device(var.device())?;
            let mut v = var.shallow_clone();
            tch::no_grad(|| v.f_copy_(&t))?;
        }
        Ok(())
    }

    fn inference(&self, tta: Tta) -> Inference {
        Inference {
            autocast: self.config.precision.autocast(),
            tta,
            label_smoothing: self.config.label_smoothing,
        }
    }

    /// Mean cross-entropy and accuracy on (x, y) in inference mode.
    ///
    /// # Errors
    /// `InvalidArgument` for an untrained model or inconsistent data.
    pub fn evaluate(
        &self,
        x: Images,
        y: &[i64],
        tta: Tta,
        monitor: &mut dyn Monitor,
    ) -> Result<(f64, f64)> {
        let b = self.ready(&x, "evaluate")?;
        check_labels(y, x.len(), b.num_classes, "evaluate")?;
        let device = self.config.device;
        let norm = b.normalization.as_ref().expect("ready").on(device)?;
        let data = DeviceData {
            x: x.to_device(device)?,
            y: Tensor::f_from_slice(y)?.f_to_device(device)?,
            norm,
            layout: PREFERRED_LAYOUT,
            flips: None,
        };
        train::evaluate(&b.net, self.inference(tta), &data, monitor)
    }

    /// Class probabilities, row-major (N × classes).
    ///
    /// # Errors
    /// `InvalidArgument` for an untrained model or images of the wrong shape.
    pub fn predict(
        &self,
        x: Images,
        batch_size: usize,
        tta: Tta,
        monitor: &mut dyn Monitor,
    ) -> Result<Vec<f32>> {
        if batch_size == 0 {
            return Err(Error::invalid("batch_size must be >= 1, got 0"));
        }
        let b = self.ready(&x, "predict")?;
        let device = self.config.device;
        let norm = b.normalization.as_ref().expect("ready").on(device)?;
        train::predict(
            &b.net,
            self.inference(tta),
            &x.to_device(device)?,
            &norm,
            PREFERRED_LAYOUT,
            batch_size,
            monitor,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::input::Pixels;
    use crate::nn::train::Silent;
    use crate::nn::{checkpoint, device::parse_device};

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

    fn model(seed: u64) -> Model {
        Model::new(ModelConfig {
            architecture: "baseline".into(),
            layers: arch::builtin("baseline").unwrap(),
            learning_rate: 1e-3,
            device: Device::Cpu,
            precision: Precision::Fp32,
            seed,
            optimizer: OptimizerSpec::default(),
            label_smoothing: 0.0,
            decoupled: None,
            tta: Tta::None,
        })
        .unwrap()
    }

    #[test]
    fn learns_a_separable_problem_and_round_trips() {
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
        let (loss, acc) = m.evaluate(images, &y, Tta::None, &mut Silent).unwrap();
        assert!(acc > 0.95, "accuracy {acc}");
        assert_eq!((loss, acc), (h.val_loss[2], h.val_accuracy[2]));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        checkpoint::save(&m, &path).unwrap();
        let loaded = checkpoint::load(&path, Device::Cpu, None).unwrap();
        let p1 = m.predict(images, 64, Tta::None, &mut Silent).unwrap();
        let p2 = loaded.predict(images, 64, Tta::None, &mut Silent).unwrap();
        assert_eq!(p1, p2);
        assert_eq!(loaded.normalization(), m.normalization());

        std::fs::write(&path, b"not a model").unwrap();
        assert!(matches!(
            checkpoint::load(&path, Device::Cpu, None),
            Err(Error::Format(_))
        ));
    }

    #[test]
    fn same_seed_same_history() {
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
            m.predict(images, 4, Tta::None, &mut Silent).is_err(),
            "untrained model must refuse"
        );
        assert!(parse_device("gpu").is_err());
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
    }
}
