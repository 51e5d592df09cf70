//! Training recipes that an architecture carries: today airbench94's (Keller
//! Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU", 2024; PyPI
//! `airbench` 0.1.8, `lib_airbench94.py` and `utils.py`). Written from the
//! reference's computation, not its code:
//!
//! - the defaults a model of that architecture takes when the user passes
//!   nothing else ([`Recipe`]);
//! - SGD in the reference's decoupled parametrisation: learning rate and
//!   weight decay per 1024 examples, the loss summed over the batch, batch-norm
//!   biases at `bias_scaler` times the learning rate ([`Decoupled`]);
//! - Lookahead-style weight averaging every 5 steps ([`Lookahead`]);
//! - the whitening layer's initialisation from the training images' 2×2
//!   patches ([`whitening_weights`]).
//!
//! The learning-rate schedule (the reference's triangle) lives with the other
//! schedules in Python (`cnnrs.schedules.triangle`), which plans every rate.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::arch::{Fill, Layer};
use super::optim::{OptimizerKind, OptimizerSpec};
use super::precision::Precision;
use super::torch_ext::deep_copy;
use super::train::Tta;
use crate::error::Result;

/// How a recipe's optimiser differs from plain `torch.optim.SGD`; saved with
/// the model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decoupled {
    /// Learning-rate multiplier (not weight decay) of batch-norm biases.
    pub bias_scaler: f64,
    /// The whitening layer's bias trains during this many epochs of a fit.
    pub whiten_bias_epochs: usize,
    /// Lookahead averaging every this many steps (0: none).
    pub lookahead_every: usize,
}

impl Decoupled {
    /// # Errors
    /// `InvalidArgument` for settings out of range (a model file's included).
    pub fn validate(&self) -> Result<()> {
        if !(self.bias_scaler.is_finite() && self.bias_scaler > 0.0)
            || self.whiten_bias_epochs > 1 << 20
            || self.lookahead_every > 1 << 20
        {
            return Err(crate::error::Error::invalid(format!(
                "recipe settings out of range: {self:?}"
            )));
        }
        Ok(())
    }

    /// `1024 · (1 + 1 / (1 − momentum))`: how much larger Nesterov steps are
    /// than per-example gradients, for 1024 examples, if gradients were constant.
    #[must_use]
    pub fn kilostep_scale(momentum: f64) -> f64 {
        1024.0 * (1.0 + 1.0 / (1.0 - momentum))
    }

    /// `torch.optim.SGD`'s learning rates (other parameters, batch-norm
    /// biases) for a decoupled rate `rate`.
    #[must_use]
    pub fn torch_rates(&self, rate: f64, momentum: f64) -> (f64, f64) {
        let lr = rate / Self::kilostep_scale(momentum);
        (lr, lr * self.bias_scaler)
    }

    /// `torch.optim.SGD`'s weight-decay coefficients (other parameters,
    /// batch-norm biases) for a decoupled `weight_decay`, the fit's base
    /// decoupled rate and batch size: the reference's `wd / lr` and
    /// `wd / lr_biases`, so that each step decays the weights by
    /// `weight_decay · batch / kilostep_scale` times the schedule's factor.
    #[must_use]
    pub fn torch_weight_decays(
        &self,
        weight_decay: f64,
        base_rate: f64,
        batch: usize,
    ) -> (f64, f64) {
        let wd = weight_decay * batch as f64 / base_rate;
        (wd, wd / self.bias_scaler)
    }
}

/// Everything an architecture's recipe sets when the user does not.
#[derive(Clone, Debug, PartialEq)]
pub struct Recipe {
    pub learning_rate: f64,
    pub optimizer: OptimizerSpec,
    pub label_smoothing: f64,
    pub precision: Precision,
    pub augment: Vec<Layer>,
    pub tta: Tta,
    pub decoupled: Decoupled,
    pub batch_size: usize,
    /// Fractional, as the reference's (the last epoch is cut short).
    pub epochs: f64,
    /// The triangle schedule's (start, peak position, end), as factors of the
    /// learning rate over the fit's steps.
    pub triangle: (f64, f64, f64),
}

/// How many of the first fit's images the whitening layer is fitted on.
pub const WHITENING_IMAGES: usize = 5000;
/// Added to the eigenvalues before scaling the whitening filters.
pub const WHITENING_EPS: f64 = 5e-4;

/// The recipe `architecture` carries, if any.
#[must_use]
pub fn for_architecture(architecture: &str) -> Option<Recipe> {
    (architecture == "airbench94").then(|| Recipe {
        learning_rate: 11.5,
        optimizer: OptimizerSpec {
            kind: OptimizerKind::Sgd,
            momentum: 0.85,
            nesterov: true,
            weight_decay: 0.0153,
        },
        label_smoothing: 0.2,
        precision: Precision::Auto,
        augment: vec![
            Layer::AlternatingFlip,
            Layer::RandomCrop {
                pad: 2,
                fill: Fill::Reflect,
            },
        ],
        tta: Tta::FlipTranslate,
        decoupled: Decoupled {
            bias_scaler: 64.0,
            whiten_bias_epochs: 3,
            lookahead_every: 5,
        },
        batch_size: 1024,
        epochs: 9.9,
        triangle: (0.2, 0.23, 0.07),
    })
}

/// The whitening convolution's weights from normalised images `x` (N, C, H,
/// W): every `k`×`k` patch (stride 1), their uncentred covariance, its
/// eigenvectors in descending order of eigenvalue scaled by
/// `1 / sqrt(eigenvalue + eps)`, then the same negated: `(2·C·k², C, k, k)`.
/// The same operations, in the same order, as the reference (so the same
/// eigenvector signs from the same LAPACK).
///
/// # Errors
/// libtorch failures.
pub fn whitening_weights(x: &Tensor, k: i64, eps: f64) -> Result<Tensor> {
    let c = x.size()[1];
    let patches = x
        .f_unfold(2, k, 1)?
        .f_unfold(3, k, 1)?
        .f_transpose(1, 3)?
        .f_reshape([-1, c, k, k])?
        .f_to_kind(Kind::Float)?;
    let n = patches.size()[0];
    let flat = patches.f_view([n, -1])?;
    let cov = flat.f_tr()?.f_matmul(&flat)?.f_div_scalar(n as f64)?;
    let (values, vectors) = cov.f_linalg_eigh("U")?;
    let d = c * k * k;
    let values = values.f_flip([0])?.f_view([-1, 1, 1, 1])?;
    let vectors = vectors.f_tr()?.f_reshape([d, c, k, k])?.f_flip([0])?;
    let scaled = vectors.f_div(&values.f_add_scalar(eps)?.f_sqrt()?)?;
    Ok(Tensor::f_cat(&[&scaled, &scaled.f_neg()?], 0)?)
}

/// The reference's `LookaheadState`: a copy of every variable; every
/// `every` steps the copy moves towards the weights by `1 − decay` (decay
/// `0.95⁵ · (step / total)³`) and the weights become the copy; at the last
/// step the weights become the copy.
pub struct Lookahead {
    pairs: Vec<(Tensor, Tensor)>,
    every: usize,
    step: usize,
    total: usize,
}

impl Lookahead {
    /// Copies `variables` (weights and batch-norm statistics), in order.
    ///
    /// # Errors
    /// libtorch failures.
    pub fn new(variables: Vec<Tensor>, every: usize, total: usize) -> Result<Self> {
        let pairs = variables
            .into_iter()
            .map(|v| {
                let copy = deep_copy(&v)?;
                Ok((v, copy))
            })
            .collect::<Result<_>>()?;
        Ok(Lookahead {
            pairs,
            every: every.max(1),
            step: 0,
            total: total.max(1),
        })
    }

    /// Steps taken so far.
    #[must_use]
    pub fn steps(&self) -> usize {
        self.step
    }

    fn update(&mut self, decay: f64) -> Result<()> {
        tch::no_grad(|| -> Result<()> {
            for (v, ema) in &mut self.pairs {
                let _ = ema.f_lerp_(v, 1.0 - decay)?;
                v.f_copy_(ema)?;
            }
            Ok(())
        })
    }

    /// Called after every optimiser step.
    ///
    /// # Errors
    /// libtorch failures.
    pub fn after_step(&mut self) -> Result<()> {
        self.step += 1;
        if self.step % self.every == 0 {
            let t = self.step as f64 / self.total as f64;
            self.update(0.95f64.powi(5) * t.powi(3))?;
        }
        if self.step == self.total {
            self.update(1.0)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoupled_rates_are_the_references() {
        let d = for_architecture("airbench94").unwrap().decoupled;
        // lib_airbench94: kilostep = 1024 (1 + 1 / 0.15); lr = 11.5 / kilostep.
        let kilo = 1024.0 * (1.0 + 1.0 / 0.15);
        let (lr, lr_b) = d.torch_rates(11.5, 0.85);
        assert!((lr - 11.5 / kilo).abs() < 1e-15);
        assert!((lr_b - 64.0 * 11.5 / kilo).abs() < 1e-13);
        // wd = 0.0153 · 1024 / kilostep; SGD's weight_decay = wd / lr, wd / lr_biases.
        let wd = 0.0153 * 1024.0 / kilo;
        let (w, w_b) = d.torch_weight_decays(0.0153, 11.5, 1024);
        assert!((w - wd / lr).abs() < 1e-12 && (w_b - wd / lr_b).abs() < 1e-12);
        assert!(for_architecture("baseline").is_none());
    }

    #[test]
    fn whitening_whitens() {
        // Correlated 2-channel images: after whitening, the first half of the
        // filters gives patch features with (near) identity covariance.
        let g = Tensor::randn([64, 1, 8, 8], (Kind::Float, tch::Device::Cpu));
        let x = Tensor::cat(&[&g, &(&g * 0.5 + Tensor::randn_like(&g) * 0.1)], 1);
        let w = whitening_weights(&x, 2, 0.0).unwrap();
        assert_eq!(w.size(), [16, 2, 2, 2]);
        let half = w.narrow(0, 0, 8);
        let y = x.conv2d::<Tensor>(&half, None, [1, 1], [0, 0], [1, 1], 1);
        let f = y.permute([0, 2, 3, 1]).reshape([-1, 8]);
        let cov = f.tr().matmul(&f) / f.size()[0] as f64;
        let eye = Tensor::eye(8, (Kind::Float, tch::Device::Cpu));
        let err = (cov - eye).abs().max().double_value(&[]);
        assert!(err < 1e-3, "{err}");
    }

    #[test]
    fn lookahead_follows_the_reference_schedule() {
        let w = Tensor::zeros([1], (Kind::Float, tch::Device::Cpu));
        let mut la = Lookahead::new(vec![w.shallow_clone()], 5, 10).unwrap();
        let mut ema = 0.0f64;
        for step in 1..=10u32 {
            // The optimiser moves the weight to `step`.
            tch::no_grad(|| {
                let _ = w.shallow_clone().fill_(f64::from(step));
            });
            la.after_step().unwrap();
            let mut expect = f64::from(step);
            if step % 5 == 0 {
                let decay = 0.95f64.powi(5) * (f64::from(step) / 10.0).powi(3);
                ema = decay * ema + (1.0 - decay) * f64::from(step);
                expect = ema;
            }
            let got = w.double_value(&[0]);
            assert!(
                (got - expect).abs() < 1e-5,
                "step {step}: {got} vs {expect}"
            );
        }
    }
}
