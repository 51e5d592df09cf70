//! The training step and epoch, the inference loops, and the progress
//! protocol they report through. A step takes what it needs (network,
//! optimiser, the precision's loss scaler, a recipe's step hook), not the
//! whole model; [`super::fit`] drives them.

use tch::{Device, Kind, Reduction, Tensor};

use super::device::Layout;
use super::input::DeviceNormalization;
use super::network::{Network, BN_BIAS_GROUP, WHITENING_BIAS_GROUP};
use super::optim::{DecoupledSgd, Optimiser};
use super::precision::{Autocast, GradScaler};
use super::torch_ext::{with_autocast, Generator};
use super::tta::{TestTime, Tta};
use crate::error::{Error, Result};

/// Batch size for evaluation and prediction.
pub const INFERENCE_BATCH: usize = 256;

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

/// Images and labels resident on the device: raw NHWC pixels (uint8 or
/// float32) plus the normalisation that turns a batch into network input.
pub struct DeviceData {
    pub x: Tensor,
    pub y: Tensor,
    pub norm: DeviceNormalization,
    pub layout: Layout,
    /// Alternating flips: whether each image is mirrored on even epochs
    /// (it is mirrored on odd epochs otherwise).
    pub flips: Option<Tensor>,
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

    /// The batch at `idx` (int64 indices on the device) of epoch `epoch` as
    /// network input and labels.
    fn gather(&self, idx: &Tensor, epoch: usize) -> Result<(Tensor, Tensor)> {
        let mut raw = self.x.f_index_select(0, idx)?;
        if let Some(flips) = &self.flips {
            let mut mask = flips.f_index_select(0, idx)?;
            if epoch % 2 == 1 {
                mask = mask.f_logical_not()?;
            }
            let n = mask.size()[0];
            // NHWC: the width is axis 2.
            raw = raw
                .f_flip([2])?
                .f_where_self(&mask.f_view([n, 1, 1, 1])?, &raw)?;
        }
        let xb = self.norm.batch(&raw, self.layout)?;
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

/// How inference runs: precision and test-time augmentation; the loss's
/// label smoothing (Keras's compiled loss applies it in evaluate too).
#[derive(Clone, Copy, Debug)]
pub struct Inference {
    pub autocast: Autocast,
    pub test_time: TestTime,
    pub label_smoothing: f64,
}

impl Inference {
    /// Log-probabilities of a normalised batch, in float32: with the test-time
    /// augmentation's views, for every image or (gated) for those whose top
    /// class probability without them is below the gate. Batch norm runs on
    /// its running statistics here, so a subset's rows equal the full
    /// batch's.
    fn log_probs(&self, net: &Network, xb: &Tensor) -> Result<Tensor> {
        let (tta, below) = (self.test_time.tta(), self.test_time.below());
        let Some(below) = below.filter(|_| tta != Tta::None) else {
            return self.views(tta, net, xb);
        };
        let plain = self.views(Tta::None, net, xb)?;
        let unsure = plain
            .f_amax([-1i64].as_slice(), false)?
            .f_lt(below.ln())?
            .f_nonzero()?
            .f_squeeze_dim(1)?;
        if unsure.size()[0] == 0 {
            return Ok(plain);
        }
        let augmented = self.views(tta, net, &xb.f_index_select(0, &unsure)?)?;
        Ok(plain.f_index_copy(0, &unsure, &augmented)?)
    }

    /// Log-probabilities of a normalised batch with `tta`'s views, in float32.
    fn views(&self, tta: Tta, net: &Network, xb: &Tensor) -> Result<Tensor> {
        let device = xb.device();
        let logits = |x: &Tensor| -> Result<Tensor> {
            Ok(self
                .autocast
                .run(device, || net.forward(x))??
                .f_to_kind(Kind::Float)?)
        };
        let run = |x: &Tensor| -> Result<Tensor> { Ok(logits(x)?.f_log_softmax(-1, Kind::Float)?) };
        let mirror = |x: &Tensor| -> Result<Tensor> {
            Ok(logits(x)?
                .f_add(&logits(&x.f_flip([3])?)?)?
                .f_mul_scalar(0.5)?)
        };
        match tta {
            Tta::None => run(xb),
            Tta::FlipTranslate => {
                let s = xb.size();
                let (h, w) = (s[2], s[3]);
                if h < 2 || w < 2 {
                    return Err(Error::invalid(format!(
                        "tta=\"flip_translate\" needs images of at least 2×2 pixels (it \
                         reflect-pads them by one), got {h}×{w}; use tta=\"flip\" or \"none\""
                    )));
                }
                let padded = xb.f_reflection_pad2d([1, 1, 1, 1])?;
                let up_left = padded.f_narrow(2, 0, h)?.f_narrow(3, 0, w)?;
                let down_right = padded.f_narrow(2, 2, h)?.f_narrow(3, 2, w)?;
                let translated = mirror(&up_left)?
                    .f_add(&mirror(&down_right)?)?
                    .f_mul_scalar(0.5)?;
                Ok(mirror(xb)?
                    .f_mul_scalar(0.5)?
                    .f_add(&translated.f_mul_scalar(0.5)?)?
                    .f_log_softmax(-1, Kind::Float)?)
            }
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

/// How a step's learning rate reaches the optimiser.
#[derive(Clone, Copy, Debug)]
pub enum Parametrisation {
    /// The rate as given, for every parameter; the loss is the batch mean.
    Plain,
    /// A recipe's decoupled rates (each group at its multiple of the
    /// schedule's rate), with the loss summed over the batch.
    Decoupled {
        sgd: DecoupledSgd,
        /// The fit's base rate (the whitening bias's own schedule starts there).
        base_rate: f64,
        /// The steps the whitening bias trains (its schedule's length).
        whitening_steps: usize,
    },
}

/// Runs after every optimiser step of a fit (a recipe's, e.g. Lookahead).
pub trait StepHook: Send {
    /// # Errors
    /// libtorch failures.
    fn after_step(&mut self) -> Result<()>;
}

/// What one optimisation step needs.
pub struct Trainer<'a> {
    pub net: &'a Network,
    pub opt: &'a mut Optimiser,
    /// The model's own generator: dropout masks (and shuffling, by the caller).
    pub gen: &'a mut Generator,
    pub autocast: Autocast,
    pub scaler: Option<&'a mut GradScaler>,
    pub label_smoothing: f64,
    pub parametrisation: Parametrisation,
    pub step_hook: Option<&'a mut dyn StepHook>,
    /// Steps the fit has taken before this one (its schedule's position).
    pub step: usize,
}

impl Trainer<'_> {
    fn set_rate(&mut self, rate: f64) -> Result<()> {
        match self.parametrisation {
            Parametrisation::Plain => self.opt.set_lr(rate),
            Parametrisation::Decoupled {
                sgd,
                base_rate,
                whitening_steps,
            } => {
                let progress = self.step as f64 / whitening_steps.max(1) as f64;
                let r = sgd.torch_rates(rate, base_rate, progress);
                self.opt.set_lr_group(0, r.other)?;
                self.opt.set_lr_group(BN_BIAS_GROUP, r.biases)?;
                if self.net.whitening().is_some() {
                    self.opt.set_lr_group(WHITENING_BIAS_GROUP, r.whitening)?;
                }
                self.opt.set_muon_lr(r.muon);
                Ok(())
            }
        }
    }

    /// Forward, loss, backward and update on one batch; returns the logits
    /// (for the running accuracy) and the mean loss, both still on the device.
    fn step(&mut self, xb: &Tensor, yb: &Tensor) -> Result<(Tensor, Tensor)> {
        // Gradients on and autocast off (the forward pass sets its own), whatever
        // the calling thread's torch state is: a user's `with torch.no_grad():`
        // around fit must not break training, nor a `torch.autocast` block change
        // its precision (the backward pass runs on this thread too).
        tch::with_grad(|| with_autocast(xb.device(), None, || self.step_with_grad(xb, yb))?)
    }

    fn step_with_grad(&mut self, xb: &Tensor, yb: &Tensor) -> Result<(Tensor, Tensor)> {
        let (net, gen) = (self.net, &mut *self.gen);
        let logits = self
            .autocast
            .run(xb.device(), || net.forward_train(xb, gen))??;
        // The loss is computed in float32 whatever precision the logits have.
        let reduction = match self.parametrisation {
            Parametrisation::Plain => Reduction::Mean,
            Parametrisation::Decoupled { .. } => Reduction::Sum,
        };
        let loss = logits
            .f_to_kind(Kind::Float)?
            .f_cross_entropy_loss::<Tensor>(yb, None, reduction, -100, self.label_smoothing)?;
        if let Some(scaler) = self.scaler.as_deref_mut() {
            scaler.step(self.opt, &loss)?;
        } else {
            self.opt.zero_grad()?;
            loss.f_backward()?;
            self.opt.step()?;
        }
        self.step += 1;
        if let Some(hook) = self.step_hook.as_deref_mut() {
            hook.after_step()?;
        }
        let mean = match reduction {
            Reduction::Sum => loss.detach().f_div_scalar(yb.size()[0] as f64)?,
            _ => loss.detach(),
        };
        Ok((logits.detach(), mean))
    }
}

/// One pass of `batches` batches over the (shuffled) training data; returns
/// the epoch's running (loss, accuracy) as Keras reports them. Batches are
/// gathered on the device;
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
    (batch_size, batches): (usize, usize),
    monitor: &mut dyn Monitor,
) -> Result<(f64, f64)> {
    let device = data.x.device();
    let n = data.len();
    let sync_every = if device.is_cuda() { 25 } else { 1 };
    let mut loss_sum = Tensor::f_zeros([], (Kind::Float, device))?;
    let mut correct = Tensor::f_zeros([], (Kind::Int64, device))?;
    let mut seen = 0usize;
    let mut metrics = (0.0, 0.0);
    for b in 0..batches {
        let len = batch_size.min(n - b * batch_size);
        let idx = order.f_narrow(0, (b * batch_size) as i64, len as i64)?;
        let (xb, yb) = data.gather(&idx, epoch)?;
        trainer.set_rate(rates.at(b))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::augment::Augment;
    use crate::nn::input::Normalization;

    /// airbench's loader: each image gets one random mirror when the fit starts
    /// (`batch_flip_lr`, probability 1/2) and all are mirrored on odd epochs.
    #[test]
    fn alternating_flips_mirror_each_image_on_every_other_epoch() {
        let n = 2000i64;
        // 1×4 single-channel images whose pixels are their column: 0 1 2 3.
        let row = Tensor::from_slice(&[0u8, 1, 2, 3]).view([1, 1, 4, 1]);
        let x = row.expand([n, 1, 4, 1], false).contiguous();
        let mut gen = Generator::new(Device::Cpu, 3).unwrap();
        let flips = gen.bernoulli(0.5, &[n]).unwrap().to_kind(Kind::Bool);
        let data = DeviceData {
            x,
            y: Tensor::zeros([n], (Kind::Int64, Device::Cpu)),
            norm: Normalization {
                mean: vec![0.0],
                std: vec![1.0],
            }
            .on(Device::Cpu)
            .unwrap(),
            layout: Layout::Contiguous,
            flips: Some(flips),
        };
        let all = Tensor::arange(n, (Kind::Int64, Device::Cpu));
        let mirrored = |epoch: usize| -> Vec<bool> {
            let (xb, _) = data.gather(&all, epoch).unwrap();
            // NCHW: the first column holds 3 where the image is mirrored.
            let first = xb.select(3, 0).flatten(0, -1);
            Vec::<f32>::try_from(first)
                .unwrap()
                .into_iter()
                .map(|v| v == 3.0)
                .collect()
        };
        let e0 = mirrored(0);
        let share = e0.iter().filter(|&&m| m).count() as f64 / n as f64;
        assert!((share - 0.5).abs() < 0.05, "{share}");
        for epoch in 1..6 {
            let e = mirrored(epoch);
            for (a, b) in e0.iter().zip(&e) {
                assert_eq!(*b, *a != (epoch % 2 == 1), "epoch {epoch}");
            }
        }
    }

    /// airbench's `batch_crop` of reflect-padded images: independent shifts in
    /// [-2, 2] on each axis, uniform, and the crop a window of the image
    /// reflected at its borders (edge pixel not repeated).
    #[test]
    fn translations_are_uniform_reflect_padded_windows_of_two_pixels() {
        let (n, h, w) = (5000i64, 6i64, 7i64);
        let values: Vec<f32> = (0..h * w).map(|v| v as f32).collect();
        let image = Tensor::from_slice(&values).view([1, 1, h, w]);
        let x = image.expand([n, 1, h, w], false).contiguous();
        let mut gen = Generator::new(Device::Cpu, 5).unwrap();
        let out = Augment::Crop {
            pad: 2,
            reflect: true,
        }
        .apply(&x, &mut gen)
        .unwrap();
        let reflect = |i: i64, len: i64| {
            if i < 0 {
                -i
            } else if i >= len {
                2 * (len - 1) - i
            } else {
                i
            }
        };
        let out = Vec::<f32>::try_from(out.flatten(0, -1)).unwrap();
        let mut counts = [[0usize; 5]; 5];
        for img in out.chunks((h * w) as usize) {
            let found = (-2..=2i64)
                .flat_map(|dy| (-2..=2i64).map(move |dx| (dy, dx)))
                .find(|&(dy, dx)| {
                    (0..h).all(|r| {
                        (0..w).all(|c| {
                            let src = reflect(r + dy, h) * w + reflect(c + dx, w);
                            img[(r * w + c) as usize] == src as f32
                        })
                    })
                });
            let (dy, dx) = found.expect("every crop is a reflect-padded window");
            counts[(dy + 2) as usize][(dx + 2) as usize] += 1;
        }
        // 200 expected per shift; 5 standard deviations either side.
        for row in counts {
            for c in row {
                assert!((130..=270).contains(&c), "{counts:?}");
            }
        }
    }
}
