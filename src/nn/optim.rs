//! Optimisers as users name them (Keras's names): Adam with Keras's defaults,
//! AdamW (decoupled weight decay) and SGD with momentum and Nesterov.

use serde::{Deserialize, Serialize};
use tch::nn::{self, OptimizerConfig, VarStore};

use crate::error::{Error, Result};

/// Keras's Adam defaults (beta_1 0.9, beta_2 0.999, epsilon 1e-7).
const ADAM_EPS: f64 = 1e-7;

/// Which optimiser.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Adam,
    AdamW,
    Sgd,
}

/// The accepted names, in the order messages list them.
pub const OPTIMIZERS: [&str; 3] = ["adam", "adamw", "sgd"];

impl OptimizerKind {
    /// Parses "adam", "adamw" or "sgd".
    ///
    /// # Errors
    /// `InvalidArgument` naming the accepted values.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "adam" => Ok(OptimizerKind::Adam),
            "adamw" => Ok(OptimizerKind::AdamW),
            "sgd" => Ok(OptimizerKind::Sgd),
            other => Err(Error::invalid(format!(
                "optimizer must be one of \"adam\", \"adamw\", \"sgd\", got {other:?}"
            ))),
        }
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Adam => "adam",
            OptimizerKind::AdamW => "adamw",
            OptimizerKind::Sgd => "sgd",
        }
    }
}

/// An optimiser and its settings (the learning rate is set per step).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimizerSpec {
    pub kind: OptimizerKind,
    /// SGD's momentum (Keras's default for us: 0.9; 0 is plain SGD).
    pub momentum: f64,
    /// SGD's Nesterov momentum.
    pub nesterov: bool,
    /// Adam/SGD: L2 penalty added to the gradient (as `torch.optim`); AdamW: decoupled decay.
    pub weight_decay: f64,
}

impl Default for OptimizerSpec {
    fn default() -> Self {
        OptimizerSpec {
            kind: OptimizerKind::Adam,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
}

impl OptimizerSpec {
    /// # Errors
    /// `InvalidArgument` naming the setting that is out of range.
    pub fn validate(&self) -> Result<()> {
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::invalid(format!(
                "weight_decay must be a finite number >= 0, got {}",
                self.weight_decay
            )));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(Error::invalid(format!(
                "momentum must be a number in [0, 1), got {}",
                self.momentum
            )));
        }
        if self.nesterov && (self.kind != OptimizerKind::Sgd || self.momentum == 0.0) {
            return Err(Error::invalid(
                "nesterov=True needs optimizer=\"sgd\" with momentum > 0",
            ));
        }
        Ok(())
    }

    /// The libtorch optimiser over every trainable variable of `vs`.
    ///
    /// # Errors
    /// libtorch failures.
    pub fn build(&self, vs: &VarStore, learning_rate: f64) -> Result<nn::Optimizer> {
        Ok(match self.kind {
            OptimizerKind::Adam => nn::Adam {
                eps: ADAM_EPS,
                wd: self.weight_decay,
                ..nn::Adam::default()
            }
            .build(vs, learning_rate)?,
            OptimizerKind::AdamW => nn::AdamW {
                eps: ADAM_EPS,
                wd: self.weight_decay,
                ..nn::AdamW::default()
            }
            .build(vs, learning_rate)?,
            OptimizerKind::Sgd => nn::Sgd {
                momentum: self.momentum,
                dampening: 0.0,
                wd: self.weight_decay,
                nesterov: self.nesterov,
            }
            .build(vs, learning_rate)?,
        })
    }
}

/// SGD in airbench's decoupled parametrisation (a recipe's): the learning
/// rate and weight decay are per 1024 examples, the loss is summed over the
/// batch, and the batch-norm biases (the optimiser's second group) step at
/// `bias_scaler` times the rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecoupledSgd {
    pub momentum: f64,
    /// Learning-rate multiplier (not weight decay) of batch-norm biases.
    pub bias_scaler: f64,
}

impl DecoupledSgd {
    /// `1024 · (1 + 1 / (1 − momentum))`: how much larger Nesterov steps are
    /// than per-example gradients, for 1024 examples, if gradients were constant.
    #[must_use]
    pub fn kilostep_scale(&self) -> f64 {
        1024.0 * (1.0 + 1.0 / (1.0 - self.momentum))
    }

    /// `torch.optim.SGD`'s learning rates (other parameters, batch-norm
    /// biases) for a decoupled rate `rate`.
    #[must_use]
    pub fn torch_rates(&self, rate: f64) -> (f64, f64) {
        let lr = rate / self.kilostep_scale();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ranges() {
        for n in OPTIMIZERS {
            assert_eq!(OptimizerKind::parse(n).unwrap().name(), n);
        }
        assert!(OptimizerKind::parse("rmsprop").is_err());
        let bad = |f: fn(&mut OptimizerSpec)| {
            let mut s = OptimizerSpec::default();
            f(&mut s);
            s.validate().is_err()
        };
        assert!(bad(|s| s.weight_decay = -1.0));
        assert!(bad(|s| s.weight_decay = f64::NAN));
        assert!(bad(|s| s.momentum = 1.0));
        assert!(bad(|s| s.nesterov = true));
        assert!(OptimizerSpec::default().validate().is_ok());
    }

    #[test]
    fn decoupled_rates_are_the_references() {
        let d = DecoupledSgd {
            momentum: 0.85,
            bias_scaler: 64.0,
        };
        // lib_airbench94: kilostep = 1024 (1 + 1 / 0.15); lr = 11.5 / kilostep.
        let kilo = 1024.0 * (1.0 + 1.0 / 0.15);
        let (lr, lr_b) = d.torch_rates(11.5);
        assert!((lr - 11.5 / kilo).abs() < 1e-15);
        assert!((lr_b - 64.0 * 11.5 / kilo).abs() < 1e-13);
        // wd = 0.0153 · 1024 / kilostep; SGD's weight_decay = wd / lr, wd / lr_biases.
        let wd = 0.0153 * 1024.0 / kilo;
        let (w, w_b) = d.torch_weight_decays(0.0153, 11.5, 1024);
        assert!((w - wd / lr).abs() < 1e-12 && (w_b - wd / lr_b).abs() < 1e-12);
    }
}
