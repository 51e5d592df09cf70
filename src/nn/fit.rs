//! A fit in progress, in skorch's named steps: [`Session::initialize`] (data
//! on the device once, the recipe's hooks made and its setup run, the
//! optimiser parametrised), then [`Session::epoch`] per epoch (the recipe's
//! epoch hook, [`train::train_epoch`] over the batches, validation). This is
//! the only way batches are trained; [`super::Model`] holds the session
//! between `begin_fit` and `end_fit`, and its `fit` is a thin caller.

use std::time::Instant;

use tch::{Kind, Tensor};

use super::arch::Layer;
use super::built::Built;
use super::config::ModelConfig;
use super::device::PREFERRED_LAYOUT;
use super::network::{BN_BIAS_GROUP, WHITENING_BIAS_GROUP};
use super::torch_ext::Generator;
use super::train::{
    self, DeviceData, EpochLogs, Inference, LearningRates, Monitor, Parametrisation, StepHook,
    Trainer,
};
use super::tta::Tta;
use crate::error::{Error, Result};

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

impl FitOptions {
    /// # Errors
    /// `InvalidArgument` for a zero batch size or step count, or a base rate
    /// that is not a positive finite number.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::invalid("batch_size must be >= 1, got 0"));
        }
        if self.total_steps == 0 {
            return Err(Error::invalid("total_steps must be >= 1, got 0"));
        }
        let r = self.base_rate;
        if !(r.is_finite() && r > 0.0) {
            return Err(Error::invalid(format!(
                "the base learning rate must be a positive finite number, got {r}"
            )));
        }
        Ok(())
    }
}

/// The data and state of a fit in progress, on the device.
pub struct Session {
    data: DeviceData,
    val: Option<DeviceData>,
    batch_size: usize,
    shuffle: bool,
    batches: usize,
    step_hook: Option<Box<dyn StepHook>>,
    /// The steps taken so far, and the fit's base rate.
    steps: usize,
    base_rate: f64,
}

impl Session {
    /// Starts a fit on `raw` (the training images on the device) and `y`:
    /// makes the recipe's step hook, runs its setup on the first fit, sets
    /// the optimiser's decoupled weight decays, and puts the labels (and the
    /// validation data) on the device.
    ///
    /// # Errors
    /// libtorch failures.
    pub fn initialize(
        config: &ModelConfig,
        built: &mut Built,
        gen: &mut Generator,
        (raw, y, first_fit): (Tensor, &[i64], bool),
        validation: Option<(Tensor, &[i64])>,
        options: FitOptions,
    ) -> Result<Self> {
        let device = config.device;
        let norm = built
            .normalization
            .as_ref()
            .ok_or_else(|| Error::invalid("the model has no normalisation; prepare it first"))?
            .on(device)?;
        let mut step_hook = None;
        if let Some(r) = &config.recipe {
            if let Some(make) = r.hooks.step {
                step_hook = make(&r.settings, &built.vs, options.total_steps)?;
            }
            let (momentum, weight_decay) = config.optimizer.sgd_part();
            let wd = r.sgd(momentum).torch_weight_decays(
                weight_decay,
                options.base_rate,
                options.batch_size,
            );
            built.opt.set_weight_decay_group(0, wd.other)?;
            built.opt.set_weight_decay_group(BN_BIAS_GROUP, wd.biases)?;
            if built.net.whitening().is_some() {
                built
                    .opt
                    .set_weight_decay_group(WHITENING_BIAS_GROUP, wd.whitening)?;
            }
            if let (true, Some(setup)) = (first_fit, r.hooks.setup) {
                setup(&built.net, &raw, &norm)?;
            }
        }
        let flips = if config.layers.contains(&Layer::AlternatingFlip) {
            let n = raw.size()[0];
            Some(
                gen.bernoulli(0.5, &[n])?
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
            Some((vx, vy)) => Some(on_device(vx, vy, None)?),
            None => None,
        };
        Ok(Session {
            batches: config.batches_per_epoch(data.len(), options.batch_size),
            data,
            val,
            batch_size: options.batch_size,
            shuffle: options.shuffle,
            step_hook,
            steps: 0,
            base_rate: options.base_rate,
        })
    }

    /// The number of batches an epoch has.
    #[must_use]
    pub fn batches(&self) -> usize {
        self.batches
    }

    /// One epoch at the given learning rates, then the validation pass.
    /// `steps` cuts the epoch short (a fractional last epoch).
    ///
    /// # Errors
    /// `InvalidArgument` for bad rates or steps, `Interrupted` when the
    /// monitor stops it, `Torch` for libtorch failures.
    #[allow(clippy::too_many_arguments)]
    pub fn epoch(
        &mut self,
        config: &ModelConfig,
        built: &mut Built,
        gen: &mut Generator,
        (epoch, epochs): (usize, usize),
        rates: &LearningRates,
        steps: Option<usize>,
        monitor: &mut dyn Monitor,
    ) -> Result<EpochLogs> {
        let full = self.batches;
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
        let parametrisation = match &config.recipe {
            Some(r) => {
                if let Some(hook) = r.hooks.epoch_begin {
                    hook(&r.settings, &built.net, epoch)?;
                }
                Parametrisation::Decoupled {
                    sgd: r.sgd(config.optimizer.sgd_part().0),
                    base_rate: self.base_rate,
                    whitening_steps: r.settings.whiten_bias_epochs * self.batches,
                }
            }
            None => Parametrisation::Plain,
        };
        let start = Instant::now();
        let mut trainer = Trainer {
            net: &built.net,
            opt: &mut built.opt,
            gen,
            autocast: config.precision.autocast(),
            scaler: built.scaler.as_mut(),
            label_smoothing: config.label_smoothing,
            parametrisation,
            step_hook: self
                .step_hook
                .as_deref_mut()
                .map(|h| h as &mut dyn StepHook),
            step: self.steps,
        };
        let n = self.data.len() as i64;
        let order = if self.shuffle {
            trainer.gen.randperm(n)?
        } else {
            Tensor::f_arange(n, (Kind::Int64, config.device))?
        };
        let (loss, accuracy) = train::train_epoch(
            &mut trainer,
            &self.data,
            &order,
            rates,
            epoch,
            epochs,
            (self.batch_size, batches),
            monitor,
        )?;
        self.steps = trainer.step;
        let how = Inference {
            autocast: config.precision.autocast(),
            test_time: Tta::None.into(),
            label_smoothing: config.label_smoothing,
        };
        let val = match &self.val {
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
}
