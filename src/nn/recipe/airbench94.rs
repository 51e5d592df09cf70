//! airbench94 (Keller Jordan, "94% on CIFAR-10 in 3.29 seconds on a single
//! GPU", 2024; PyPI `airbench` 0.1.8, `lib_airbench94.py` and `utils.py`),
//! written from the reference's computation, not its code:
//!
//! - the network (`make_net94`): a data-fitted 2×2 whitening convolution,
//!   three conv groups, max pooling and a scaled linear classifier;
//! - SGD in the decoupled parametrisation ([`DecoupledSgd`]): learning rate
//!   11.5 and weight decay 0.0153 per 1024 examples, Nesterov momentum 0.85,
//!   batch-norm biases at 64× the rate, the loss summed over the batch;
//! - label smoothing 0.2, alternating flips and 2-pixel reflect translations,
//!   batch 1024 (the loader drops each epoch's last incomplete batch), 9.9
//!   epochs on the triangle schedule, flip-and-translate test-time
//!   augmentation;
//! - hooks: the whitening fitted on the first 5000 images at the first fit,
//!   its bias trained for the first 3 epochs of each fit, and Lookahead
//!   averaging every 5 steps.
//!
//! [`DecoupledSgd`]: crate::nn::optim::DecoupledSgd

use tch::nn::VarStore;

use super::lookahead::Lookahead;
use super::whitening::fit_whitening;
use super::{Defaults, Hooks, Recipe, Settings};
use crate::error::Result;
use crate::nn::arch::{Fill, Layer};
use crate::nn::network::Network;
use crate::nn::optim::{MuonOptions, OptimizerKind, OptimizerSpec};
use crate::nn::precision::Precision;
use crate::nn::train::StepHook;
use crate::nn::tta::Tta;

/// airbench94 and its recipe.
pub fn recipe() -> Recipe {
    family("airbench94", [64, 256, 256], 9.9, 11.5)
}

/// A network of airbench's 93/94/95 family, which differ only in the conv
/// groups' `widths`, the `epochs` and the learning rate `lr` (per 1024
/// examples); everything else, hooks included, is airbench94's.
pub(super) fn family(name: &'static str, widths: [usize; 3], epochs: f64, lr: f64) -> Recipe {
    Recipe {
        name,
        layers: layers(widths, false, 1.0 / 9.0),
        input_hint: input_hint(name),
        defaults: Defaults {
            learning_rate: lr,
            optimizer: OptimizerSpec {
                kind: OptimizerKind::Sgd,
                momentum: 0.85,
                nesterov: true,
                weight_decay: 0.0153,
                muon: MuonOptions::default(),
            },
            label_smoothing: 0.2,
            precision: Precision::Auto,
            augment: augmentation(2),
            tta: Tta::FlipTranslate,
            batch_size: 1024,
            epochs,
            triangle: (0.2, 0.23, 0.07),
        },
        settings: Settings {
            bias_scaler: 64.0,
            whiten_bias_epochs: 3,
            lookahead_every: 5,
            other_scaler: 1.0,
            per_kilostep: true,
            whitening_decays: false,
        },
        hooks: Hooks {
            setup: Some(fit_whitening),
            epoch_begin: Some(freeze_whitening_bias),
            step: Some(lookahead),
        },
    }
}

/// The family's network (`make_net94`, `make_net96`), for 32×32 images:
/// whitening, three conv groups of `widths` (each with a third, residual
/// conv where `residual`), max pooling and a classifier scaled by `scale`.
pub(super) fn layers([a, b, c]: [usize; 3], residual: bool, scale: f64) -> Vec<Layer> {
    let group = |filters| Layer::ConvGroup { filters, residual };
    vec![
        Layer::Whitening { kernel_size: 2 },
        group(a),
        group(b),
        group(c),
        Layer::MaxPool { size: 3 },
        Layer::Flatten,
        Layer::Classifier { scale },
    ]
}

/// The family's training augmentation: alternating flips and reflect
/// translations by up to `translate` pixels.
pub(super) fn augmentation(translate: usize) -> Vec<Layer> {
    vec![
        Layer::AlternatingFlip,
        Layer::RandomCrop {
            pad: translate,
            fill: Fill::Reflect,
        },
    ]
}

/// What a user with images too small for `name` is told.
pub(super) fn input_hint(name: &str) -> String {
    format!(
        "{name} needs images of at least 25×25 pixels (CIFAR's 32×32): upscale smaller \
         ones, e.g. np.kron(x, np.ones((1, 4, 4, 1), x.dtype))"
    )
}

/// The whitening bias trains during the first `whiten_bias_epochs` of a fit.
#[allow(clippy::unnecessary_wraps)] // a hook's signature
pub(super) fn freeze_whitening_bias(s: &Settings, net: &Network, epoch: usize) -> Result<()> {
    if let Some((_, b)) = net.whitening() {
        let _ = b.set_requires_grad(epoch < s.whiten_bias_epochs);
    }
    Ok(())
}

/// Lookahead over every variable (batch-norm statistics too), as the reference.
fn lookahead(s: &Settings, vs: &VarStore, total: usize) -> Result<Option<Box<dyn StepHook>>> {
    if s.lookahead_every == 0 {
        return Ok(None);
    }
    let vars = vs.variables().into_values().collect();
    Ok(Some(Box::new(Lookahead::new(
        vars,
        s.lookahead_every,
        total,
    )?)))
}
