//! Training recipes, one file each: a recipe is data (the network it builds,
//! the defaults a model of its architecture takes, the optimiser's
//! parametrisation) plus named hooks the fit calls (setup at the first fit,
//! at each epoch's start, after each step). Adding one means adding a file
//! and naming it in [`RECIPES`].
//!
//! Today: airbench94 (Keller Jordan's 94%-on-CIFAR-10 record, PyPI
//! `airbench` 0.1.8), its siblings airbench93, airbench95 (the same recipe
//! at other widths, epochs and rates) and airbench96 (residual conv groups
//! and cutout too), and airbench94_muon (the newer record: Muon on the
//! filters, no Lookahead). Their building blocks are
//! shared: the data-fitted [`whitening`] layer and [`lookahead`] weight
//! averaging.

mod airbench93;
mod airbench94;
mod airbench94_muon;
mod airbench95;
mod airbench96;
pub mod lookahead;
pub mod whitening;

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::Tensor;

use super::arch::Layer;
use super::input::DeviceNormalization;
use super::network::Network;
use super::optim::{DecoupledSgd, OptimizerSpec};
use super::precision::Precision;
use super::train::StepHook;
use super::tta::Tta;
use crate::error::{Error, Result};

/// The recipes cnnrs ships, each an architecture users name.
pub const RECIPES: [fn() -> Recipe; 5] = [
    airbench93::recipe,
    airbench94::recipe,
    airbench95::recipe,
    airbench96::recipe,
    airbench94_muon::recipe,
];

/// The settings of a recipe that a fit reads and a model file saves: the
/// optimiser's decoupled parametrisation and what the hooks are told.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Learning-rate multiplier (not weight decay) of batch-norm biases.
    pub bias_scaler: f64,
    /// The whitening layer's bias trains during this many epochs of a fit.
    pub whiten_bias_epochs: usize,
    /// Lookahead averaging every this many steps (0: none).
    pub lookahead_every: usize,
    /// Learning-rate multiplier of the other weights SGD steps (see
    /// [`DecoupledSgd`]; model files from before it hold 1).
    #[serde(default = "one")]
    pub other_scaler: f64,
    /// Rates per 1024 examples (airbench94's) rather than `torch.optim`'s.
    #[serde(default = "yes")]
    pub per_kilostep: bool,
    /// The whitening bias's rate decays to 0 over the epochs it trains.
    #[serde(default)]
    pub whitening_decays: bool,
}

fn one() -> f64 {
    1.0
}

fn yes() -> bool {
    true
}

impl Settings {
    /// # Errors
    /// `InvalidArgument` for settings out of range (a model file's included).
    pub fn validate(&self) -> Result<()> {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !(positive(self.bias_scaler) && positive(self.other_scaler))
            || self.whiten_bias_epochs > 1 << 20
            || self.lookahead_every > 1 << 20
        {
            return Err(Error::invalid(format!(
                "recipe settings out of range: {self:?}"
            )));
        }
        Ok(())
    }

    /// The optimiser's parametrisation for SGD with `momentum`.
    #[must_use]
    pub fn sgd(&self, momentum: f64) -> DecoupledSgd {
        DecoupledSgd {
            momentum,
            bias_scaler: self.bias_scaler,
            other_scaler: self.other_scaler,
            per_kilostep: self.per_kilostep,
            whitening_decays: self.whitening_decays,
        }
    }
}

/// What a recipe sets when the user does not.
#[derive(Clone, Debug, PartialEq)]
pub struct Defaults {
    pub learning_rate: f64,
    pub optimizer: OptimizerSpec,
    pub label_smoothing: f64,
    pub precision: Precision,
    /// Augmentation layers put in front of the network.
    pub augment: Vec<Layer>,
    pub tta: Tta,
    /// `fit`'s defaults (the Python layer reads them once).
    pub batch_size: usize,
    /// Fractional, as airbench's (the last epoch is cut short).
    pub epochs: f64,
    /// The triangle schedule's (start, peak position, end), as factors of the
    /// learning rate over the fit's steps.
    pub triangle: (f64, f64, f64),
}

/// At the first fit, once the normalisation is fitted: the network, the
/// fit's raw images on the device and their normalisation.
pub type SetupHook = fn(&Network, &Tensor, &DeviceNormalization) -> Result<()>;

/// At the start of each epoch of a fit (0-based).
pub type EpochHook = fn(&Settings, &Network, usize) -> Result<()>;

/// Made at the start of every fit: the hook run after each optimiser step
/// (given the model's variables and the steps the fit will take), or None.
pub type StepHookMaker = fn(&Settings, &VarStore, usize) -> Result<Option<Box<dyn StepHook>>>;

/// Where a recipe changes a fit. Each hook is optional.
#[derive(Clone, Copy, Debug, Default)]
pub struct Hooks {
    /// At the first fit, once the normalisation is fitted, with the fit's raw
    /// images on the device (whitening is fitted here).
    pub setup: Option<SetupHook>,
    /// At the start of each epoch of a fit (0-based), e.g. to freeze a bias.
    pub epoch_begin: Option<EpochHook>,
    /// Called before `setup`, so a copy of the weights it takes is the initial one.
    pub step: Option<StepHookMaker>,
}

/// A training recipe an architecture carries.
#[derive(Clone, Debug)]
pub struct Recipe {
    /// The architecture's name.
    pub name: &'static str,
    /// The network's hidden layers (augmentation not included).
    pub layers: Vec<Layer>,
    /// Added to a shape error: what input the network needs.
    pub input_hint: String,
    pub defaults: Defaults,
    pub settings: Settings,
    pub hooks: Hooks,
}

impl Recipe {
    /// The optimiser's parametrisation for SGD with `momentum`.
    #[must_use]
    pub fn sgd(&self, momentum: f64) -> DecoupledSgd {
        self.settings.sgd(momentum)
    }
}

/// The recipe of the architecture named `name`, if it carries one.
#[must_use]
pub fn named(name: &str) -> Option<Recipe> {
    RECIPES.iter().map(|r| r()).find(|r| r.name == name)
}

/// The names of the architectures that carry recipes.
#[must_use]
pub fn names() -> Vec<&'static str> {
    RECIPES.iter().map(|r| r().name).collect()
}
