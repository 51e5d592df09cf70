//! The training loop and the inference loops, and the progress protocol they
//! report through. A step takes what it needs (network, optimiser, the
//! precision's loss scaler), not the whole model.

use tch::nn::Optimizer;
use tch::{Device, Kind, Reduction, Tensor};

use super::device::Layout;
use super::input::DeviceNormalization;
use super::network::Network;
use super::precision::{Autocast, GradScaler};
use super::torch_ext::Generator;
use crate::error::{Error, Result};

/// Batch size for evaluation and prediction.
pub const INFERENCE_BATCH: usize = 256;

/// How `fit` runs.
#[derive(Clone, Debug)]
pub struct FitConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub shuffle: bool,
}

impl FitConfig {
    /// # Errors
    /// `InvalidArgument` for a zero batch size or epoch count.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::invalid("batch_size must be >= 1, got 0"));
        }
        if self.epochs == 0 {
            return Err(Error::invalid("epochs must be >= 1, got 0"));
        }
        Ok(())
    }
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

impl BatchProgress {
    /// Progress of batch `batch` of an evaluation or prediction (no metrics).
    #[must_use]
    pub fn inference(batch: usize, batches: usize) -> Self {
        BatchProgress {
            epoch: 0,
            epochs: 1,
            batch,
            batches,
            metrics: None,
        }
    }
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

/// Images and labels resident on the device: raw NHWC pixels (uint8 or
/// float32) plus the normalisation that turns a batch into network input.
pub struct DeviceData {
    pub x: Tensor,
    pub y: Tensor,
    pub norm: DeviceNormalization,
    pub layout: Layout,
}

impl DeviceData {
    #[must_use]
    pub fn len(&self) -> usize {
        usize::try_from(self.x.size()[0]).unwrap_or(0)
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The batch at `idx` (int64 indices on the device) as network input and labels.
    fn gather(&self, idx: &Tensor) -> Result<(Tensor, Tensor)> {
        let xb = self
            .norm
            .batch(&self.x.f_index_select(0, idx)?, self.layout)?;
        Ok((xb, self.y.f_index_select(0, idx)?))
    }

    /// The contiguous batch `[start, start + len)`.
    fn slice(&self, start: usize, len: usize) -> Result<(Tensor, Tensor)> {
        let (s, l) = (start as i64, len as i64);
        let xb = self.norm.batch(&self.x.f_narrow(0, s, l)?, self.layout)?;
        Ok((xb, self.y.f_narrow(0, s, l)?))
    }
}

/// The learning rate of each step of an epoch: one for all, or one per batch
/// (schedules such as one-cycle change it every step).
#[derive(Clone, Debug, PartialEq)]
pub enum LearningRates {
    Constant(f64),
    PerStep(Vec<f64>),
}

impl LearningRates {
    /// # Errors
    /// `InvalidArgument` for a non-finite or negative rate, or a per-step
    /// list whose length is not the number of batches.
    pub fn validate(&self, batches: usize) -> Result<()> {
        let rates: &[f64] = match self {
            LearningRates::Constant(r) => std::slice::from_ref(r),
            LearningRates::PerStep(r) => {
                if r.len() != batches {
                    return Err(Error::invalid(format!(
                        "learning_rates must hold one rate per batch ({batches}), got {}",
                        r.len()
                    )));
                }
                r
            }
        };
        match rates.iter().find(|r| !(r.is_finite() && **r >= 0.0)) {
            Some(bad) => Err(Error::invalid(format!(
                "learning rates must be finite numbers >= 0, got {bad}"
            ))),
            None => Ok(()),
        }
    }

    fn at(&self, step: usize) -> f64 {
        match self {
            LearningRates::Constant(r) => *r,
            LearningRates::PerStep(r) => r[step],
        }
    }
}

/// Test-time augmentation for evaluate/predict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tta {
    None,
    /// The mean of the probabilities of each image and its horizontal mirror.
    Flip,
}

/// How inference runs: precision and test-time augmentation; the loss's
/// label smoothing (Keras's compiled loss applies it in evaluate too).
#[derive(Clone, Copy, Debug)]
pub struct Inference {
    pub autocast: Autocast,
    pub tta: Tta,
    pub label_smoothing: f64,
}

impl Inference {
    /// Log-probabilities of a normalised batch, in float32.
    fn log_probs(&self, net: &Network, xb: &Tensor) -> Result<Tensor> {
        let device = xb.device();
        let run = |x: &Tensor| -> Result<Tensor> {
            Ok(self
                .autocast
                .run(device, || net.forward(x))??
                .f_to_kind(Kind::Float)?
                .f_log_softmax(-1, Kind::Float)?)
        };
        match self.tta {
            Tta::None => run(xb),
            Tta::Flip => {
                // log((p_a + p_b) / 2) as a logsumexp, finite even where both
                // probabilities underflow.
                let both = Tensor::f_stack(&[run(xb)?, run(&xb.f_flip([3])?)?], 0)?;
                Ok(both
                    .f_logsumexp([0i64].as_slice(), false)?
                    .f_sub_scalar(std::f64::consts::LN_2)?)
            }
        }
    }
}

/// Summed cross-entropy of log-probabilities against labels, with label
/// smoothing `ls` as Keras and PyTorch define it:
/// `(1 - ls) * nll + ls * mean_k(-log p_k)` per sample.
fn smoothed_nll_sum(logp: &Tensor, y: &Tensor, ls: f64) -> Result<Tensor> {
    let nll = logp
        .f_gather(1, &y.f_unsqueeze(1)?, false)?
        .f_neg()?
        .f_sum(Kind::Double)?;
    if ls == 0.0 {
        return Ok(nll);
    }
    let uniform = logp
        .f_mean_dim(-1, false, Kind::Double)?
        .f_neg()?
        .f_sum(Kind::Double)?;
    Ok(nll
        .f_mul_scalar(1.0 - ls)?
        .f_add(&uniform.f_mul_scalar(ls)?)?)
}

/// How many rows of `scores` have their largest entry at the label (int64 scalar).
fn hits(scores: &Tensor, y: &Tensor) -> Result<Tensor> {
    Ok(scores
        .f_argmax(-1, false)?
        .f_eq_tensor(y)?
        .f_sum(Kind::Int64)?)
}

/// What one optimisation step needs.
pub struct Trainer<'a> {
    pub net: &'a Network,
    pub opt: &'a mut Optimizer,
    /// The model's own generator: dropout masks (and shuffling, by the caller).
    pub gen: &'a mut Generator,
    pub autocast: Autocast,
    pub scaler: Option<&'a mut GradScaler>,
    pub label_smoothing: f64,
}

impl Trainer<'_> {
    /// Forward, loss, backward and update on one batch; returns the logits
    /// (for the running accuracy) and the mean loss, both still on the device.
    fn step(&mut self, xb: &Tensor, yb: &Tensor) -> Result<(Tensor, Tensor)> {
        // Gradients on, whatever the calling thread's torch state is (a user's
        // `with torch.no_grad():` around fit must not break training).
        tch::with_grad(|| self.step_with_grad(xb, yb))
    }

    fn step_with_grad(&mut self, xb: &Tensor, yb: &Tensor) -> Result<(Tensor, Tensor)> {
        let (net, gen) = (self.net, &mut *self.gen);
        let logits = self
            .autocast
            .run(xb.device(), || net.forward_train(xb, gen))??;
        // The loss is computed in float32 whatever precision the logits have.
        let loss = logits
            .f_to_kind(Kind::Float)?
            .f_cross_entropy_loss::<Tensor>(
                yb,
                None,
                Reduction::Mean,
                -100,
                self.label_smoothing,
            )?;
        if let Some(scaler) = self.scaler.as_deref_mut() {
            scaler.step(self.opt, &loss)?;
        } else {
            self.opt.zero_grad();
            loss.f_backward()?;
            self.opt.step();
        }
        Ok((logits.detach(), loss.detach()))
    }
}

/// One pass over the (shuffled) training data; returns the epoch's running
/// (loss, accuracy) as Keras reports them. Batches are gathered on the device;
/// the running sums stay there and are read only when progress shows them
/// (every batch on CPU, every 25th and the last on CUDA).
///
/// # Errors
/// Whatever the monitor returns, or libtorch failures.
#[allow(clippy::too_many_arguments)]
pub fn train_epoch(
    trainer: &mut Trainer<'_>,
    data: &DeviceData,
    order: &Tensor,
    rates: &LearningRates,
    epoch: usize,
    epochs: usize,
    batch_size: usize,
    monitor: &mut dyn Monitor,
) -> Result<(f64, f64)> {
    let device = data.x.device();
    let n = data.len();
    let batches = n.div_ceil(batch_size);
    let sync_every = if device.is_cuda() { 25 } else { 1 };
    let mut loss_sum = Tensor::f_zeros([], (Kind::Float, device))?;
    let mut correct = Tensor::f_zeros([], (Kind::Int64, device))?;
    let mut seen = 0usize;
    let mut metrics = (0.0, 0.0);
    let mut rate = f64::NAN;
    for b in 0..batches {
        let len = batch_size.min(n - b * batch_size);
        let idx = order.f_narrow(0, (b * batch_size) as i64, len as i64)?;
        let (xb, yb) = data.gather(&idx)?;
        if rates.at(b) != rate {
            rate = rates.at(b);
            trainer.opt.set_lr(rate);
        }
        let (logits, loss) = trainer.step(&xb, &yb)?;
        seen += len;
        tch::no_grad(|| -> Result<()> {
            let _ = loss_sum.f_add_(&loss.f_mul_scalar(len as f64)?)?;
            let _ = correct.f_add_(&hits(&logits, &yb)?)?;
            Ok(())
        })?;
        let read = b + 1 == batches || b % sync_every == 0;
        if read {
            metrics = (
                loss_sum.f_double_value(&[])? / seen as f64,
                correct.f_int64_value(&[])? as f64 / seen as f64,
            );
        }
        monitor.batch(&BatchProgress {
            epoch,
            epochs,
            batch: b,
            batches,
            metrics: read.then_some(metrics),
        })?;
    }
    Ok(metrics)
}

/// Mean cross-entropy (with `how.label_smoothing`) and accuracy over
/// `data`, in inference mode.
///
/// # Errors
/// Whatever the monitor returns, or libtorch failures.
pub fn evaluate(
    net: &Network,
    how: Inference,
    data: &DeviceData,
    monitor: &mut dyn Monitor,
) -> Result<(f64, f64)> {
    let n = data.len();
    let device = data.x.device();
    let mut loss_sum = Tensor::f_zeros([], (Kind::Double, device))?;
    let mut correct = Tensor::f_zeros([], (Kind::Int64, device))?;
    let batches = n.div_ceil(INFERENCE_BATCH);
    for i in 0..batches {
        let len = INFERENCE_BATCH.min(n - i * INFERENCE_BATCH);
        let (xb, yb) = data.slice(i * INFERENCE_BATCH, len)?;
        tch::no_grad(|| -> Result<()> {
            let logp = how.log_probs(net, &xb)?;
            let _ = loss_sum.f_add_(&smoothed_nll_sum(&logp, &yb, how.label_smoothing)?)?;
            let _ = correct.f_add_(&hits(&logp, &yb)?)?;
            Ok(())
        })?;
        monitor.batch(&BatchProgress::inference(i, batches))?;
    }
    Ok((
        loss_sum.f_double_value(&[])? / n as f64,
        correct.f_int64_value(&[])? as f64 / n as f64,
    ))
}

/// Class probabilities of `x` (raw NHWC on the device), row-major (N × classes).
///
/// # Errors
/// Whatever the monitor returns, or libtorch failures.
pub fn predict(
    net: &Network,
    how: Inference,
    x: &Tensor,
    norm: &DeviceNormalization,
    layout: Layout,
    batch_size: usize,
    monitor: &mut dyn Monitor,
) -> Result<Vec<f32>> {
    let n = usize::try_from(x.size()[0]).unwrap_or(0);
    let mut out = Vec::new();
    let batches = n.div_ceil(batch_size);
    for i in 0..batches {
        let len = batch_size.min(n - i * batch_size);
        let raw = x.f_narrow(0, (i * batch_size) as i64, len as i64)?;
        let xb = norm.batch(&raw, layout)?;
        let p = tch::no_grad(|| -> Result<Tensor> {
            Ok(how.log_probs(net, &xb)?.f_exp()?.f_to_device(Device::Cpu)?)
        })?;
        out.extend(Vec::<f32>::try_from(p.f_flatten(0, -1)?)?);
        monitor.batch(&BatchProgress::inference(i, batches))?;
    }
    Ok(out)
}
