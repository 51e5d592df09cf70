//! What a model is made from before it sees data ([`ModelConfig`]), and the
//! one function that decides it from the architecture's recipe and what the
//! user gave ([`ModelConfig::resolve`]): the binding calls it, and a model
//! file's settings go through [`ModelConfig::validate`] like a user's.

use tch::Device;

use super::arch::{self, Layer};
use super::muon::{AdjustLr, Variant};
use super::optim::{MuonOptions, OptimizerKind, OptimizerSpec};
use super::precision::Precision;
use super::recipe::{self, Recipe};
use super::tta::Tta;
use crate::error::{Error, Result};

/// Everything a model is made from before it sees data.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    /// A built-in name, or "custom_layers" for user specs.
    pub architecture: String,
    /// The hidden layers, augmentation first.
    pub layers: Vec<Layer>,
    pub learning_rate: f64,
    pub device: Device,
    /// As asked; resolved for the device by [`super::Model::new`].
    pub precision: Precision,
    pub seed: u64,
    pub optimizer: OptimizerSpec,
    /// Keras's `CategoricalCrossentropy(label_smoothing=...)`, in [0, 1).
    pub label_smoothing: f64,
    /// Test-time augmentation of `evaluate`/`predict` when the call names none.
    pub tta: Tta,
    /// The recipe the model trains by (its settings and hooks), or None for
    /// plain `torch.optim` semantics.
    pub recipe: Option<Recipe>,
}

/// An architecture as users give it.
#[derive(Clone, Debug)]
pub enum Architecture {
    /// A built-in name: one of the course's, or a recipe's.
    Named(String),
    /// Layer specs (already parsed).
    Layers(Vec<Layer>),
}

/// What the user gave; None takes the recipe's default, else Keras's.
#[derive(Clone, Debug, Default)]
pub struct Given {
    pub learning_rate: Option<f64>,
    pub seed: u64,
    pub precision: Option<Precision>,
    pub optimizer: Option<OptimizerKind>,
    pub momentum: Option<f64>,
    pub nesterov: Option<bool>,
    pub weight_decay: Option<f64>,
    /// Muon's other settings (with `optimizer="muon"`).
    pub muon: Option<MuonGiven>,
    pub label_smoothing: Option<f64>,
    /// Augmentation layers (`Some(vec![])` turns a recipe's off).
    pub augment: Option<Vec<Layer>>,
}

/// Muon's settings the user gave; None takes the recipe's, else the default.
#[derive(Clone, Copy, Debug, Default)]
pub struct MuonGiven {
    pub variant: Option<Variant>,
    pub ns_steps: Option<usize>,
    pub adjust_lr: Option<AdjustLr>,
    pub renormalize: Option<bool>,
    pub dense: Option<bool>,
    pub fallback: Option<OptimizerKind>,
    pub fallback_lr_ratio: Option<f64>,
    pub fallback_momentum: Option<f64>,
    pub fallback_nesterov: Option<bool>,
    pub fallback_weight_decay: Option<f64>,
}

impl MuonGiven {
    /// `base` with what the user gave put over it.
    #[must_use]
    pub fn over(&self, base: MuonOptions) -> MuonOptions {
        MuonOptions {
            variant: self.variant.unwrap_or(base.variant),
            ns_steps: self.ns_steps.unwrap_or(base.ns_steps),
            adjust_lr: self.adjust_lr.unwrap_or(base.adjust_lr),
            renormalize: self.renormalize.unwrap_or(base.renormalize),
            dense: self.dense.unwrap_or(base.dense),
            fallback: self.fallback.unwrap_or(base.fallback),
            fallback_lr_ratio: self.fallback_lr_ratio.unwrap_or(base.fallback_lr_ratio),
            fallback_momentum: self.fallback_momentum.unwrap_or(base.fallback_momentum),
            fallback_nesterov: self.fallback_nesterov.unwrap_or(base.fallback_nesterov),
            fallback_weight_decay: self
                .fallback_weight_decay
                .unwrap_or(base.fallback_weight_decay),
        }
    }
}

/// Keras's default learning rate for the course's networks (Adam).
pub const DEFAULT_LEARNING_RATE: f64 = 5e-4;
/// Muon's default rate (`torch.optim.Muon`'s and `keras.optimizers.Muon`'s).
pub const MUON_LEARNING_RATE: f64 = 1e-3;

/// The names of every built-in architecture: the course's, then the recipes'.
#[must_use]
pub fn architectures() -> Vec<&'static str> {
    let mut names = arch::COURSE.to_vec();
    names.extend(recipe::names());
    names
}

impl ModelConfig {
    /// The model's settings from its architecture (and the recipe a named
    /// one carries) and what the user gave, which overrides the recipe.
    ///
    /// # Errors
    /// `InvalidArgument` for an unknown name (listing the known ones), a
    /// setting that does not apply (momentum with Adam, a recipe's SGD
    /// replaced), or values out of range.
    pub fn resolve(architecture: Architecture, device: Device, given: Given) -> Result<Self> {
        let (name, hidden, recipe) = match architecture {
            Architecture::Layers(layers) => ("custom_layers".to_string(), layers, None),
            Architecture::Named(name) => {
                if let Some(r) = recipe::named(&name) {
                    let layers = r.layers.clone();
                    (name, layers, Some(r))
                } else if let Some(layers) = arch::course(&name) {
                    (name, layers, None)
                } else {
                    return Err(Error::invalid(format!(
                        "unknown architecture {name:?}; known architectures are {}, or pass a \
                         list of layer specs such as [(\"conv\", 32), (\"maxpool\", 2), \
                         (\"flatten\",), (\"dense\", 128)]",
                        architectures()
                            .iter()
                            .map(|a| format!("{a:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            }
        };
        let defaults = recipe.as_ref().map(|r| &r.defaults);
        let mut layers = given
            .augment
            .unwrap_or_else(|| defaults.map(|d| d.augment.clone()).unwrap_or_default());
        layers.extend(hidden);
        let base = defaults.map_or_else(OptimizerSpec::default, |d| d.optimizer);
        let kind = given.optimizer.unwrap_or(base.kind);
        if !kind.has_momentum() && given.momentum.is_some() {
            return Err(Error::invalid(format!(
                "momentum applies to optimizer=\"sgd\" or \"muon\" only, not {:?}",
                kind.name()
            )));
        }
        if kind != OptimizerKind::Muon && given.muon.is_some() {
            return Err(Error::invalid(format!(
                "Muon's settings apply to optimizer=\"muon\" only, not {:?}",
                kind.name()
            )));
        }
        // Muon's momentum and Nesterov are torch.optim.Muon's defaults unless a
        // recipe that trains with Muon sets them.
        let base = if kind == OptimizerKind::Muon && base.kind != OptimizerKind::Muon {
            OptimizerSpec {
                kind,
                momentum: 0.95,
                nesterov: true,
                weight_decay: 0.0,
                muon: MuonOptions::default(),
            }
        } else {
            base
        };
        let config = ModelConfig {
            architecture: name,
            layers,
            learning_rate: given.learning_rate.unwrap_or(match defaults {
                Some(d) => d.learning_rate,
                None if kind == OptimizerKind::Muon => MUON_LEARNING_RATE,
                None => DEFAULT_LEARNING_RATE,
            }),
            device,
            precision: given
                .precision
                .unwrap_or(defaults.map_or(Precision::Fp32, |d| d.precision)),
            seed: given.seed,
            optimizer: OptimizerSpec {
                kind,
                momentum: given.momentum.unwrap_or(base.momentum),
                nesterov: given.nesterov.unwrap_or(base.nesterov),
                weight_decay: given.weight_decay.unwrap_or(base.weight_decay),
                muon: given.muon.map_or(base.muon, |m| m.over(base.muon)),
            },
            label_smoothing: given
                .label_smoothing
                .unwrap_or(defaults.map_or(0.0, |d| d.label_smoothing)),
            tta: defaults.map_or(Tta::None, |d| d.tta),
            recipe,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks every setting (a model file's too).
    ///
    /// # Errors
    /// `InvalidArgument` naming the first setting out of range.
    pub fn validate(&self) -> Result<()> {
        let lr = self.learning_rate;
        if !(lr.is_finite() && lr > 0.0) {
            return Err(Error::invalid(format!(
                "learning_rate must be a positive finite number, got {lr}"
            )));
        }
        for (i, layer) in self.layers.iter().enumerate() {
            layer.validate(i)?;
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(Error::invalid(format!(
                "label_smoothing must be a number in [0, 1), got {}",
                self.label_smoothing
            )));
        }
        let Some(r) = &self.recipe else {
            return self.optimizer.validate();
        };
        r.settings.validate()?;
        // Its optimiser has a second group, the conv groups' batch-norm biases.
        if !self
            .layers
            .iter()
            .any(|l| matches!(l, Layer::ConvGroup { .. }))
        {
            return Err(Error::invalid(
                "a decoupled recipe needs airbench's conv_group layers (their batch-norm \
                 biases are its second parameter group)",
            ));
        }
        let theirs = r.defaults.optimizer.kind;
        if self.optimizer.kind != theirs {
            return Err(Error::invalid(format!(
                "{}'s recipe trains with {} (its learning_rate and weight_decay are its \
                 parametrisation's); optimizer must be {:?}, got {:?}",
                self.architecture,
                theirs.name().to_uppercase(),
                theirs.name(),
                self.optimizer.kind.name()
            )));
        }
        if theirs == OptimizerKind::Muon && self.optimizer.muon.fallback != OptimizerKind::Sgd {
            return Err(Error::invalid(format!(
                "{}'s recipe steps the weights Muon does not with SGD; fallback must be \
                 \"sgd\", got {:?}",
                self.architecture,
                self.optimizer.muon.fallback.name()
            )));
        }
        // After the demand for SGD: what a user replacing a recipe's optimiser hears first.
        self.optimizer.validate()
    }

    /// Whether fits drop each epoch's last incomplete batch (a recipe's loader does).
    #[must_use]
    pub fn drop_last(&self) -> bool {
        self.recipe.is_some()
    }

    /// Batches of an epoch over `n` images in batches of `batch_size`: the
    /// one rule. With [`Self::drop_last`] the last incomplete batch is
    /// dropped, unless it is the only one.
    #[must_use]
    pub fn batches_per_epoch(&self, n: usize, batch_size: usize) -> usize {
        if self.drop_last() && n >= batch_size {
            n / batch_size
        } else {
            n.div_ceil(batch_size)
        }
    }
}
