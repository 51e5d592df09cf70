//! airbench94_muon (Keller Jordan, `airbench94_muon.py` in the public
//! repository KellerJordan/cifar10-airbench: 94.01% on CIFAR-10 in 2.59 s on
//! an A100), written from the reference's computation, not its code:
//!
//! - airbench94's network, but the classifier divides by its 256 inputs
//!   (not 9) and starts at unit standard deviation;
//! - Muon on the conv groups' filters (momentum 0.6, Nesterov, 3 bfloat16
//!   Newton–Schulz iterations, each filter bank renormalised to norm
//!   `sqrt(out)` before its step, no rate adjustment) at rate 0.24;
//! - Nesterov SGD (momentum 0.85) for the rest, at `torch.optim`'s own rates:
//!   the classifier at 0.67, batch-norm biases at 0.053, the whitening bias
//!   at 0.053 decaying linearly to 0 over the 3 epochs it trains; weight
//!   decay 2e-6 per example (`wd / lr` of each group), the loss summed;
//! - every rate decays linearly to 0 over the fit (airbench's triangle with
//!   its peak at the start), batch 2000 (the last incomplete batch dropped),
//!   8 epochs; no Lookahead;
//! - airbench94's label smoothing 0.2, alternating flips, 2-pixel reflect
//!   translations, whitening and flip-and-translate test-time augmentation.

use tch::Tensor;

use super::airbench94::{augmentation, freeze_whitening_bias, input_hint, layers};
use super::whitening::fit_whitening;
use super::{Defaults, Hooks, Recipe, Settings};
use crate::error::Result;
use crate::nn::input::DeviceNormalization;
use crate::nn::muon::{AdjustLr, Variant};
use crate::nn::network::Network;
use crate::nn::optim::{MuonOptions, OptimizerKind, OptimizerSpec};
use crate::nn::precision::Precision;
use crate::nn::tta::Tta;

/// Muon's rate; the SGD groups' are given relative to it.
const MUON_LR: f64 = 0.24;
const HEAD_LR: f64 = 0.67;
const BIAS_LR: f64 = 0.053;

/// airbench94_muon and its recipe.
pub fn recipe() -> Recipe {
    Recipe {
        name: "airbench94_muon",
        layers: layers([64, 256, 256], false, 1.0 / 256.0),
        input_hint: input_hint("airbench94_muon"),
        defaults: Defaults {
            learning_rate: MUON_LR,
            optimizer: OptimizerSpec {
                kind: OptimizerKind::Muon,
                momentum: 0.6,
                nesterov: true,
                weight_decay: 0.0,
                muon: MuonOptions {
                    variant: Variant::Airbench,
                    ns_steps: 3,
                    adjust_lr: AdjustLr::None,
                    renormalize: true,
                    dense: false,
                    fallback: OptimizerKind::Sgd,
                    // The groups' rates come from the settings below.
                    fallback_lr_ratio: 1.0,
                    fallback_momentum: 0.85,
                    fallback_nesterov: true,
                    fallback_weight_decay: 2e-6,
                },
            },
            label_smoothing: 0.2,
            precision: Precision::Auto,
            augment: augmentation(2),
            tta: Tta::FlipTranslate,
            batch_size: 2000,
            epochs: 8.0,
            // 1 − step / steps: the triangle with its peak at the start.
            triangle: (1.0, 0.0, 0.0),
        },
        settings: Settings {
            bias_scaler: BIAS_LR / MUON_LR,
            whiten_bias_epochs: 3,
            lookahead_every: 0,
            other_scaler: HEAD_LR / MUON_LR,
            per_kilostep: false,
            whitening_decays: true,
        },
        hooks: Hooks {
            setup: Some(setup),
            epoch_begin: Some(freeze_whitening_bias),
            step: None,
        },
    }
}

/// At the first fit: the classifier rescaled to unit standard deviation
/// (the reference's `reset`), then the whitening fitted.
fn setup(net: &Network, raw: &Tensor, norm: &DeviceNormalization) -> Result<()> {
    if let Some(w) = net.classifier() {
        let mut w = w.shallow_clone();
        tch::no_grad(|| -> Result<()> {
            let scale = w.f_std(true)?.f_reciprocal()?;
            let _ = w.f_mul_(&scale)?;
            Ok(())
        })?;
    }
    fit_whitening(net, raw, norm)
}
