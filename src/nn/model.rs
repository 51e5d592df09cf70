//! A trainable classifier ([`Model`]): its settings ([`ModelConfig`], fixed
//! at construction and shared, never copied), its own random generator, the
//! parts it gets once built ([`Built`]), and the fit in progress
//! ([`Session`]). It validates what comes in once, then hands the work to
//! [`super::fit`] (training), [`super::train`] (inference) and
//! [`super::built`] (weights).

use std::sync::Arc;

use tch::nn::VarStore;
use tch::{Device, Tensor};

use super::arch::{self, Layer, Plan};
use super::built::{Built, Snapshot, StateEntry};
use super::config::ModelConfig;
use super::device::PREFERRED_LAYOUT;
use super::fit::{FitOptions, Session};
use super::input::{check_labels, Images, Normalization};
use super::network::Network;
use super::precision::{GradScaler, Precision};
use super::torch_ext::Generator;
use super::train::{self, DeviceData, EpochLogs, Inference, LearningRates, Monitor};
use super::tta::TestTime;
use crate::error::{Error, Result};

/// A CNN classifier with Keras's training semantics.
///
/// Every random draw (weight initialisation, shuffling, dropout) comes from
/// the model's own generator, seeded with `config.seed`, so the same seed
/// gives the same history whatever other threads or models draw meanwhile.
pub struct Model {
    config: Arc<ModelConfig>,
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
    /// `InvalidArgument` for settings out of range ([`ModelConfig::validate`])
    /// or a precision the device cannot run.
    pub fn new(mut config: ModelConfig) -> Result<Self> {
        config.validate()?;
        config.precision = config.precision.resolve(config.device)?;
        if config.device.is_cuda() {
            tch::Cuda::cudnn_set_benchmark(true);
        }
        let gen = Generator::new(config.device, config.seed)?;
        Ok(Model {
            config: Arc::new(config),
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
        let config = &self.config;
        let plan =
            arch::plan(&config.layers, input_shape, num_classes).map_err(|e| {
                match &config.recipe {
                    Some(r) => Error::invalid(format!("{e}; {}", r.input_hint)),
                    None => e,
                }
            })?;
        let vs = VarStore::new(config.device);
        let mut net = Network::build(
            &vs.root(),
            &config.layers,
            &plan,
            input_shape[2],
            &mut self.gen,
        )?;
        net.set_layout(PREFERRED_LAYOUT)?;
        let muon_weights = net.muon_weights(config.optimizer.muon.dense);
        let opt = config
            .optimizer
            .build(&vs, muon_weights, config.learning_rate)?;
        let scaler = (config.precision == Precision::Fp16).then(GradScaler::default);
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

    /// The settings, shared: the binding reads them without the model's lock.
    #[must_use]
    pub fn config(&self) -> &Arc<ModelConfig> {
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
    pub fn device(&self) -> Device {
        self.config.device
    }
    /// The precision this model trains in (resolved: never `Auto`).
    #[must_use]
    pub fn precision(&self) -> Precision {
        self.config.precision
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
        let untrained = || {
            Error::invalid(format!(
                "{what}: the model has not been trained yet; call fit first"
            ))
        };
        let b = self.built.as_ref().ok_or_else(untrained)?;
        if b.normalization.is_none() {
            return Err(untrained());
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

    /// Builds the model for `x` (validated) and fits the normalisation on it
    /// unless it has one already (the first fit's statistics are kept, as
    /// Keras's `Normalization.adapt` once). Returns the images on the device
    /// and whether this was the first fit.
    fn prepare(&mut self, x: Images, num_classes: usize) -> Result<(Tensor, bool)> {
        self.build(x.image_shape(), num_classes)?;
        let raw = x.to_device(self.config.device)?;
        let b = self.built.as_mut().expect("built above");
        if b.normalization.is_some() {
            return Ok((raw, false));
        }
        b.normalization = Some(Normalization::fit(&raw)?);
        Ok((raw, true))
    }

    /// Batches per epoch of a fit on `n` images (the one rule: a recipe drops
    /// each epoch's last incomplete batch).
    #[must_use]
    pub fn steps_per_epoch(&self, n: usize, batch_size: usize) -> usize {
        self.config.batches_per_epoch(n, batch_size)
    }

    /// Starts a fit: validates the data once, builds the model for `x` if
    /// needed, fits the normalisation on the first fit, and puts the data on
    /// the device once. Then [`Model::fit_epoch`] runs epochs and
    /// [`Model::end_fit`] frees it.
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
        options.validate()?;
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
        let (raw, first_fit) = self.prepare(x, num_classes)?;
        let val = match validation {
            Some((vx, vy)) => Some((vx.to_device(self.config.device)?, vy)),
            None => None,
        };
        let built = self.built.as_mut().expect("prepared above");
        self.session = Some(Session::initialize(
            &self.config,
            built,
            &mut self.gen,
            (raw, y, first_fit),
            val,
            options,
        )?);
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
        let built = self
            .built
            .as_mut()
            .expect("a session implies a built model");
        session.epoch(
            &self.config,
            built,
            &mut self.gen,
            (epoch, epochs),
            rates,
            steps,
            monitor,
        )
    }

    /// Ends the fit in progress, freeing its copies of the data. Idempotent.
    pub fn end_fit(&mut self) {
        self.session = None;
    }

    /// Trains `epochs` whole epochs at the constructor's constant learning
    /// rate: a thin caller of `begin_fit`/`fit_epoch`/`end_fit` (the Python
    /// layer drives those itself, with schedules and callbacks).
    ///
    /// # Errors
    /// As [`Model::begin_fit`] and [`Model::fit_epoch`].
    pub fn fit(
        &mut self,
        (x, y, num_classes): (Images, &[i64], usize),
        validation: Option<(Images, &[i64])>,
        (epochs, batch_size, shuffle): (usize, usize, bool),
        monitor: &mut dyn Monitor,
    ) -> Result<Vec<EpochLogs>> {
        if epochs == 0 || batch_size == 0 {
            return Err(Error::invalid(format!(
                "epochs and batch_size must be >= 1, got {epochs} and {batch_size}"
            )));
        }
        let steps = self.steps_per_epoch(x.len().max(1), batch_size);
        let options = FitOptions {
            batch_size,
            shuffle,
            total_steps: steps * epochs,
            base_rate: self.config.learning_rate,
        };
        self.begin_fit(x, y, num_classes, validation, options)?;
        let rates = LearningRates::Constant(self.config.learning_rate);
        let logs = (0..epochs)
            .map(|epoch| self.fit_epoch(epoch, epochs, &rates, None, monitor))
            .collect();
        self.end_fit();
        logs
    }

    fn weights(&self, what: &str) -> Result<&Built> {
        self.built.as_ref().ok_or_else(|| {
            Error::invalid(format!(
                "{what}: the model has no weights yet; call fit (or build) first"
            ))
        })
    }

    /// A copy of every weight and batch-norm statistic (for Keras's
    /// `restore_best_weights`).
    ///
    /// # Errors
    /// `InvalidArgument` before the model is built; libtorch failures.
    pub fn snapshot(&self) -> Result<Snapshot> {
        self.weights("snapshot")?.snapshot()
    }

    /// Puts back the weights of a [`Model::snapshot`] of this model.
    ///
    /// # Errors
    /// `InvalidArgument` before the model is built or for a snapshot of
    /// another architecture.
    pub fn restore(&mut self, snapshot: &Snapshot) -> Result<()> {
        self.weights("restore")?.restore(snapshot)
    }

    /// Every variable as (name, shape, float32 values), sorted by name, in
    /// PyTorch's layouts.
    ///
    /// # Errors
    /// `InvalidArgument` before the model is built; libtorch failures.
    pub fn state_dict(&self) -> Result<Vec<StateEntry>> {
        self.weights("state_dict")?.state_dict()
    }

    /// Sets every variable, as PyTorch's strict `load_state_dict`.
    ///
    /// # Errors
    /// `InvalidArgument` before the model is built, or naming the first
    /// missing, unexpected, misshapen or non-finite entry.
    pub fn load_state_dict(&mut self, values: &[(String, Vec<usize>, &[f32])]) -> Result<()> {
        self.weights("load_state_dict")?.load_state_dict(values)
    }

    fn inference(&self, test_time: TestTime) -> Inference {
        Inference {
            autocast: self.config.precision.autocast(),
            test_time,
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
        tta: impl Into<TestTime>,
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
        train::evaluate(&b.net, self.inference(tta.into()), &data, monitor)
    }

    /// Class probabilities, row-major (N × classes).
    ///
    /// # Errors
    /// `InvalidArgument` for an untrained model or images of the wrong shape.
    pub fn predict(
        &self,
        x: Images,
        batch_size: usize,
        tta: impl Into<TestTime>,
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
            self.inference(tta.into()),
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
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::nn::config::{Architecture, Given};
    use crate::nn::input::Pixels;
    use crate::nn::optim::{MuonOptions, OptimizerKind, OptimizerSpec};
    use crate::nn::recipe::{Defaults, Hooks, Recipe, Settings};
    use crate::nn::train::{Silent, StepHook};
    use crate::nn::tta::Tta;

    /// Two separable classes: images whose top half is bright vs bottom half.
    pub(crate) fn toy(n: usize) -> (Vec<u8>, Vec<i64>) {
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
        let given = Given {
            seed,
            learning_rate: Some(1e-3),
            ..Given::default()
        };
        Model::new(
            ModelConfig::resolve(Architecture::Named("baseline".into()), Device::Cpu, given)
                .unwrap(),
        )
        .unwrap()
    }

    fn images(x: &[u8], n: usize) -> Images<'_> {
        Images {
            pixels: Pixels::U8(x),
            shape: [n, 8, 8, 1],
        }
    }

    #[test]
    fn learns_a_separable_problem() {
        let (x, y) = toy(64);
        let mut m = model(1);
        let logs = m
            .fit(
                (images(&x, 64), &y, 2),
                Some((images(&x, 64), &y)),
                (3, 16, true),
                &mut Silent,
            )
            .unwrap();
        assert_eq!(logs.len(), 3);
        let (loss, acc) = m
            .evaluate(images(&x, 64), &y, Tta::None, &mut Silent)
            .unwrap();
        assert!(acc > 0.95, "accuracy {acc}");
        assert_eq!(Some((loss, acc)), logs[2].val);
    }

    #[test]
    fn same_seed_same_history() {
        let (x, y) = toy(32);
        let run = |seed| {
            model(seed)
                .fit((images(&x, 32), &y, 2), None, (2, 8, true), &mut Silent)
                .unwrap()
                .into_iter()
                .map(|l| (l.loss, l.accuracy))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn bad_input_is_an_error() {
        let (x, y) = toy(8);
        let mut m = model(0);
        let fit = |m: &mut Model, y: &[i64], batch| {
            m.fit((images(&x, 8), y, 2), None, (1, batch, false), &mut Silent)
        };
        assert!(fit(&mut m, &y[..7], 4).is_err());
        assert!(fit(&mut m, &[5; 8], 4).is_err());
        assert!(fit(&mut m, &y, 0).is_err());
        let nan = vec![f32::NAN; 8 * 64];
        let bad = Images {
            pixels: Pixels::F32(&nan),
            shape: [8, 8, 8, 1],
        };
        assert!(m
            .fit((bad, &y, 2), None, (1, 4, false), &mut Silent)
            .is_err());
        assert!(
            m.predict(images(&x, 8), 4, Tta::None, &mut Silent).is_err(),
            "untrained model must refuse"
        );
    }

    /// Counts the steps a recipe's hook saw (one counter per test recipe).
    static STEPS: AtomicUsize = AtomicUsize::new(0);
    static EPOCHS: AtomicUsize = AtomicUsize::new(0);

    struct CountSteps;
    impl StepHook for CountSteps {
        fn after_step(&mut self) -> crate::Result<()> {
            STEPS.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }

    /// A second recipe, defined only here: data and hooks are all it takes.
    fn tiny() -> Recipe {
        Recipe {
            name: "tiny",
            layers: vec![
                Layer::ConvGroup {
                    filters: 4,
                    residual: false,
                },
                Layer::Flatten,
                Layer::Classifier { scale: 1.0 },
            ],
            input_hint: "tiny needs 4×4 images or larger".into(),
            defaults: Defaults {
                learning_rate: 2.0,
                optimizer: OptimizerSpec {
                    kind: OptimizerKind::Sgd,
                    momentum: 0.9,
                    nesterov: true,
                    weight_decay: 0.0,
                    muon: MuonOptions::default(),
                },
                label_smoothing: 0.0,
                precision: Precision::Fp32,
                augment: vec![],
                tta: Tta::Flip,
                batch_size: 8,
                epochs: 3.0,
                triangle: (1.0, 0.5, 1.0),
            },
            settings: Settings {
                bias_scaler: 2.0,
                whiten_bias_epochs: 0,
                lookahead_every: 0,
                other_scaler: 1.0,
                per_kilostep: true,
                whitening_decays: false,
            },
            hooks: Hooks {
                setup: None,
                epoch_begin: Some(|_, _, _| {
                    EPOCHS.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }),
                step: Some(|_, _, _| Ok(Some(Box::new(CountSteps)))),
            },
        }
    }

    #[test]
    fn a_recipe_is_one_value_of_data_and_hooks() {
        let r = tiny();
        let mut config = ModelConfig::resolve(
            Architecture::Layers(r.layers.clone()),
            Device::Cpu,
            Given::default(),
        )
        .unwrap();
        config.architecture = r.name.into();
        config.learning_rate = r.defaults.learning_rate;
        config.optimizer = r.defaults.optimizer;
        config.tta = r.defaults.tta;
        config.recipe = Some(r);
        let mut m = Model::new(config).unwrap();
        let (x, y) = toy(36);
        // 36 images in batches of 8: the recipe drops the last 4 each epoch.
        assert_eq!(m.steps_per_epoch(36, 8), 4);
        let logs = m
            .fit((images(&x, 36), &y, 2), None, (3, 8, true), &mut Silent)
            .unwrap();
        assert_eq!(STEPS.load(Ordering::Relaxed), 12);
        assert_eq!(EPOCHS.load(Ordering::Relaxed), 3);
        let (_, acc) = m
            .evaluate(images(&x, 36), &y, Tta::Flip, &mut Silent)
            .unwrap();
        assert!(acc > 0.9, "accuracy {acc}, losses {logs:?}");
    }
}
