//! Optimisers as users name them (Keras's names): Adam with Keras's defaults,
//! AdamW (decoupled weight decay), SGD with momentum and Nesterov, and Muon
//! on the filters (and, if asked, hidden dense weights) with one of the
//! others for the rest; [`Optimiser`] steps them as one.

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{COptimizer, Tensor};

use super::muon::{AdjustLr, Muon, MuonRule, Variant, MAX_NS_STEPS};
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
    Muon,
}

/// The accepted names, in the order messages list them.
pub const OPTIMIZERS: [&str; 4] = ["adam", "adamw", "sgd", "muon"];

impl OptimizerKind {
    /// Parses "adam", "adamw", "sgd" or "muon".
    ///
    /// # Errors
    /// `InvalidArgument` naming the accepted values.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "adam" => Ok(OptimizerKind::Adam),
            "adamw" => Ok(OptimizerKind::AdamW),
            "sgd" => Ok(OptimizerKind::Sgd),
            "muon" => Ok(OptimizerKind::Muon),
            other => Err(Error::invalid(format!(
                "optimizer must be one of \"adam\", \"adamw\", \"sgd\", \"muon\", got {other:?}"
            ))),
        }
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        OPTIMIZERS[self as usize]
    }

    /// Whether `momentum` and `nesterov` are this optimiser's settings.
    #[must_use]
    pub fn has_momentum(self) -> bool {
        matches!(self, OptimizerKind::Sgd | OptimizerKind::Muon)
    }
}

/// Muon's settings beyond momentum, Nesterov and weight decay (which are the
/// [`OptimizerSpec`]'s), and the optimiser of the weights Muon does not
/// step (biases, batch norms, the output layer, ...).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MuonOptions {
    /// Whose rounding the update follows (model files before it: torch's).
    #[serde(default)]
    pub variant: Variant,
    /// Newton–Schulz iterations per step (`torch.optim.Muon`'s 5; airbench's 3).
    pub ns_steps: usize,
    pub adjust_lr: AdjustLr,
    /// airbench's filter renormalisation to norm `sqrt(out)` before each step.
    pub renormalize: bool,
    /// Muon also steps the hidden dense layers' weights (never the output layer's).
    pub dense: bool,
    /// The other weights' optimiser: adam, adamw or sgd.
    pub fallback: OptimizerKind,
    /// The other weights' learning rate, as a multiple of Muon's.
    pub fallback_lr_ratio: f64,
    /// SGD's momentum and Nesterov, when the fallback is SGD.
    pub fallback_momentum: f64,
    pub fallback_nesterov: bool,
    pub fallback_weight_decay: f64,
}

impl Default for MuonOptions {
    /// `torch.optim.Muon`'s iteration, with AdamW (as PyTorch's and Keras's
    /// documentation advise) at Muon's rate for the rest.
    fn default() -> Self {
        MuonOptions {
            variant: Variant::Torch,
            ns_steps: 5,
            adjust_lr: AdjustLr::MatchRmsAdamw,
            renormalize: false,
            dense: false,
            fallback: OptimizerKind::AdamW,
            fallback_lr_ratio: 1.0,
            fallback_momentum: 0.9,
            fallback_nesterov: false,
            fallback_weight_decay: 0.0,
        }
    }
}

impl MuonOptions {
    /// The optimiser of the weights Muon does not step.
    #[must_use]
    pub fn fallback_spec(&self) -> OptimizerSpec {
        OptimizerSpec {
            kind: self.fallback,
            momentum: self.fallback_momentum,
            nesterov: self.fallback_nesterov,
            weight_decay: self.fallback_weight_decay,
            muon: MuonOptions::default(),
        }
    }

    /// # Errors
    /// `InvalidArgument` naming the setting that is out of range.
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_NS_STEPS).contains(&self.ns_steps) {
            return Err(Error::invalid(format!(
                "ns_steps must be in [1, {MAX_NS_STEPS}], got {}",
                self.ns_steps
            )));
        }
        if self.fallback == OptimizerKind::Muon {
            return Err(Error::invalid(
                "fallback must be one of \"adam\", \"adamw\", \"sgd\" (the optimiser of \
                 the weights Muon does not step), got \"muon\"",
            ));
        }
        let r = self.fallback_lr_ratio;
        if !(r.is_finite() && r >= 0.0) {
            return Err(Error::invalid(format!(
                "fallback_lr_ratio must be a finite number >= 0, got {r}"
            )));
        }
        self.fallback_spec()
            .validate()
            .map_err(|e| Error::invalid(format!("Muon's fallback optimiser: {e}")))
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
    /// Adam/SGD: L2 penalty added to the gradient (as `torch.optim`); AdamW
    /// and Muon: decoupled decay.
    pub weight_decay: f64,
    /// Muon's other settings (read when `kind` is Muon).
    #[serde(default)]
    pub muon: MuonOptions,
}

impl Default for OptimizerSpec {
    fn default() -> Self {
        OptimizerSpec {
            kind: OptimizerKind::Adam,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
            muon: MuonOptions::default(),
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
        if self.nesterov && (!self.kind.has_momentum() || self.momentum == 0.0) {
            return Err(Error::invalid(
                "nesterov=True needs optimizer=\"sgd\" or \"muon\" with momentum > 0",
            ));
        }
        if self.kind == OptimizerKind::Muon {
            self.muon.validate()?;
        }
        Ok(())
    }

    /// The (momentum, weight decay) of the SGD a recipe parametrises: this
    /// optimiser's, or with Muon its fallback's.
    #[must_use]
    pub fn sgd_part(&self) -> (f64, f64) {
        if self.kind == OptimizerKind::Muon {
            (self.muon.fallback_momentum, self.muon.fallback_weight_decay)
        } else {
            (self.momentum, self.weight_decay)
        }
    }

    /// The libtorch optimiser of this kind (Adam, AdamW or SGD) at `lr`, with
    /// no parameters yet.
    fn libtorch(&self, lr: f64) -> Result<COptimizer> {
        // Keras's betas (torch's too); tch's nn::Adam/AdamW defaults otherwise.
        let (b1, b2) = (0.9, 0.999);
        Ok(match self.kind {
            OptimizerKind::Adam => {
                COptimizer::adam(lr, b1, b2, self.weight_decay, ADAM_EPS, false)?
            }
            OptimizerKind::AdamW => {
                COptimizer::adamw(lr, b1, b2, self.weight_decay, ADAM_EPS, false)?
            }
            OptimizerKind::Sgd => {
                COptimizer::sgd(lr, self.momentum, 0.0, self.weight_decay, self.nesterov)?
            }
            OptimizerKind::Muon => self.muon.fallback_spec().libtorch(lr)?,
        })
    }

    /// The optimiser of every trainable variable of `vs` at `learning_rate`:
    /// with Muon, `muon_weights` (the network's filters, and hidden dense
    /// weights if asked) are Muon's and the rest the fallback's.
    ///
    /// # Errors
    /// libtorch failures.
    pub fn build(
        &self,
        vs: &VarStore,
        muon_weights: Vec<Tensor>,
        learning_rate: f64,
    ) -> Result<Optimiser> {
        let muon = if self.kind == OptimizerKind::Muon {
            let rule = MuonRule {
                variant: self.muon.variant,
                momentum: self.momentum,
                nesterov: self.nesterov,
                ns_steps: self.muon.ns_steps,
                weight_decay: self.weight_decay,
                adjust_lr: self.muon.adjust_lr,
                renormalize: self.muon.renormalize,
            };
            Some(Muon::new(muon_weights, rule, learning_rate)?)
        } else {
            None
        };
        let ratio = if muon.is_some() {
            self.muon.fallback_lr_ratio
        } else {
            1.0
        };
        let mut rest = self.libtorch(learning_rate * ratio)?;
        let mut rest_vars = Vec::new();
        let taken: Vec<_> = muon
            .iter()
            .flat_map(|m| m.params().iter().map(Tensor::data_ptr))
            .collect();
        let variables = vs.variables_.lock().map_err(|_| {
            Error::invalid("the model's variables are poisoned by an earlier panic")
        })?;
        for var in &variables.trainable_variables {
            if !taken.contains(&var.tensor.data_ptr()) {
                rest.add_parameters(&var.tensor, var.group)?;
                rest_vars.push(var.tensor.shallow_clone());
            }
        }
        Ok(Optimiser {
            rest,
            rest_vars,
            muon,
            fallback_lr_ratio: ratio,
        })
    }
}

/// The optimiser of a model's trainable variables: one libtorch optimiser
/// (Adam, AdamW or SGD; its groups are the variables' `VarStore` groups),
/// and Muon on the weights it owns, if any.
pub struct Optimiser {
    rest: COptimizer,
    rest_vars: Vec<Tensor>,
    muon: Option<Muon>,
    fallback_lr_ratio: f64,
}

impl Optimiser {
    /// Sets the learning rate of every weight (the fallback's at its ratio).
    ///
    /// # Errors
    /// libtorch failures.
    pub fn set_lr(&mut self, lr: f64) -> Result<()> {
        self.set_muon_lr(lr);
        Ok(self.rest.set_learning_rate(lr * self.fallback_lr_ratio)?)
    }

    /// Sets the learning rate of one group of the libtorch optimiser.
    ///
    /// # Errors
    /// libtorch failures (a group the model does not have).
    pub fn set_lr_group(&mut self, group: usize, lr: f64) -> Result<()> {
        Ok(self.rest.set_learning_rate_group(group, lr)?)
    }

    /// Sets Muon's learning rate (nothing without Muon).
    pub fn set_muon_lr(&mut self, lr: f64) {
        if let Some(m) = &mut self.muon {
            m.set_lr(lr);
        }
    }

    /// Sets the weight decay of one group of the libtorch optimiser.
    ///
    /// # Errors
    /// libtorch failures (a group the model does not have).
    pub fn set_weight_decay_group(&mut self, group: usize, wd: f64) -> Result<()> {
        Ok(self.rest.set_weight_decay_group(group, wd)?)
    }

    /// Clears every gradient.
    ///
    /// # Errors
    /// libtorch failures.
    pub fn zero_grad(&mut self) -> Result<()> {
        if let Some(m) = &mut self.muon {
            m.zero_grad();
        }
        Ok(self.rest.zero_grad()?)
    }

    /// One step of every optimiser.
    ///
    /// # Errors
    /// libtorch failures.
    pub fn step(&mut self) -> Result<()> {
        self.rest.step()?;
        if let Some(m) = &mut self.muon {
            m.step()?;
        }
        Ok(())
    }

    /// Every variable either optimiser steps.
    #[must_use]
    pub fn variables(&self) -> Vec<Tensor> {
        let muon = self.muon.iter().flat_map(Muon::params);
        self.rest_vars
            .iter()
            .chain(muon)
            .map(Tensor::shallow_clone)
            .collect()
    }
}

/// SGD (and Muon) in airbench's decoupled parametrisation (a recipe's): the
/// loss is summed over the batch, and each parameter group steps at its own
/// multiple of the schedule's rate. airbench94's rates are per 1024 examples
/// (`per_kilostep`: divided by [`Self::kilostep_scale`]); airbench94_muon's
/// are `torch.optim`'s own.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecoupledSgd {
    pub momentum: f64,
    /// Learning-rate multiplier (not weight decay) of batch-norm biases.
    pub bias_scaler: f64,
    /// Learning-rate multiplier of the other weights SGD steps (1 for
    /// airbench94; with Muon on the filters, the head's).
    pub other_scaler: f64,
    /// Rates per 1024 examples (airbench94) rather than `torch.optim`'s.
    pub per_kilostep: bool,
    /// The whitening bias steps as a bias whose rate decays linearly to 0
    /// over the epochs it trains (airbench94_muon), not with the other weights.
    pub whitening_decays: bool,
}

/// The `torch.optim` settings of each parameter group for one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupRates {
    /// Group 0: every weight SGD steps but the biases below.
    pub other: f64,
    /// [`super::network`]'s batch-norm bias group.
    pub biases: f64,
    /// [`super::network`]'s whitening bias group.
    pub whitening: f64,
    /// Muon's rate (when Muon steps the filters).
    pub muon: f64,
}

impl DecoupledSgd {
    /// `1024 · (1 + 1 / (1 − momentum))`: how much larger Nesterov steps are
    /// than per-example gradients, for 1024 examples, if gradients were constant.
    #[must_use]
    pub fn kilostep_scale(&self) -> f64 {
        1024.0 * (1.0 + 1.0 / (1.0 - self.momentum))
    }

    /// The `torch.optim` rate of a parameter at multiplier 1.
    fn unit(&self, rate: f64) -> f64 {
        if self.per_kilostep {
            rate / self.kilostep_scale()
        } else {
            rate
        }
    }

    /// `torch.optim`'s learning rates for the schedule's rate `rate` at
    /// `progress` (the fraction of the whitening bias's training done:
    /// `step / whitening steps`).
    #[must_use]
    pub fn torch_rates(&self, rate: f64, base_rate: f64, whitening_progress: f64) -> GroupRates {
        let lr = self.unit(rate);
        let other = lr * self.other_scaler;
        GroupRates {
            other,
            biases: lr * self.bias_scaler,
            whitening: if self.whitening_decays {
                self.unit(base_rate) * self.bias_scaler * (1.0 - whitening_progress).max(0.0)
            } else {
                other
            },
            muon: lr,
        }
    }

    /// `torch.optim.SGD`'s weight-decay coefficients for a decoupled
    /// `weight_decay`, the fit's base rate and batch size: the reference's
    /// `wd / lr` of each group at its initial rate, so that each step decays
    /// the weights by `weight_decay · batch` (per 1024 examples' kilostep
    /// scale where the rates are) times the schedule's factor.
    #[must_use]
    pub fn torch_weight_decays(
        &self,
        weight_decay: f64,
        base_rate: f64,
        batch: usize,
    ) -> GroupRates {
        let wd = weight_decay * batch as f64 / base_rate;
        let other = wd / self.other_scaler;
        let biases = wd / self.bias_scaler;
        GroupRates {
            other,
            biases,
            whitening: if self.whitening_decays { biases } else { other },
            muon: 0.0,
        }
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
        let muon = |f: fn(&mut MuonOptions)| {
            let mut s = OptimizerSpec {
                kind: OptimizerKind::Muon,
                ..OptimizerSpec::default()
            };
            f(&mut s.muon);
            s.validate().is_err()
        };
        assert!(!muon(|_| ()));
        assert!(muon(|m| m.ns_steps = 0));
        assert!(muon(|m| m.ns_steps = 100));
        assert!(muon(|m| m.fallback = OptimizerKind::Muon));
        assert!(muon(|m| m.fallback_lr_ratio = f64::INFINITY));
        assert!(muon(|m| m.fallback_momentum = 1.5));
    }

    #[test]
    fn decoupled_rates_are_the_references() {
        let d = DecoupledSgd {
            momentum: 0.85,
            bias_scaler: 64.0,
            other_scaler: 1.0,
            per_kilostep: true,
            whitening_decays: false,
        };
        // lib_airbench94: kilostep = 1024 (1 + 1 / 0.15); lr = 11.5 / kilostep.
        let kilo = 1024.0 * (1.0 + 1.0 / 0.15);
        let r = d.torch_rates(11.5, 11.5, 0.5);
        let (lr, lr_b) = (r.other, r.biases);
        assert!((lr - 11.5 / kilo).abs() < 1e-15 && r.whitening == lr);
        assert!((lr_b - 64.0 * 11.5 / kilo).abs() < 1e-13);
        // wd = 0.0153 · 1024 / kilostep; SGD's weight_decay = wd / lr, wd / lr_biases.
        let wd = 0.0153 * 1024.0 / kilo;
        let w = d.torch_weight_decays(0.0153, 11.5, 1024);
        assert!((w.other - wd / lr).abs() < 1e-12 && (w.biases - wd / lr_b).abs() < 1e-12);
        assert_eq!(w.whitening, w.other);

        // airbench94_muon: torch's own rates; head 0.67, biases 0.053 for Muon's 0.24,
        // the whitening bias at 0.053 · (1 − step / whitening steps); wd = 2e-6 · 2000.
        let m = DecoupledSgd {
            momentum: 0.85,
            bias_scaler: 0.053 / 0.24,
            other_scaler: 0.67 / 0.24,
            per_kilostep: false,
            whitening_decays: true,
        };
        let r = m.torch_rates(0.12, 0.24, 0.25);
        assert!((r.muon - 0.12).abs() < 1e-15 && (r.other - 0.335).abs() < 1e-12);
        assert!((r.biases - 0.0265).abs() < 1e-12 && (r.whitening - 0.053 * 0.75).abs() < 1e-12);
        let w = m.torch_weight_decays(2e-6, 0.24, 2000);
        assert!((w.other - 0.004 / 0.67).abs() < 1e-12 && (w.biases - 0.004 / 0.053).abs() < 1e-12);
        assert_eq!(w.whitening, w.biases);
    }
}
