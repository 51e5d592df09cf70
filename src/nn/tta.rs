//! Test-time augmentation, as users name it (`tta=`): which views of each
//! image inference averages. A leaf both recipes and the inference loop take.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Test-time augmentation for evaluate/predict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tta {
    #[default]
    None,
    /// The mean of the probabilities of each image and its horizontal mirror.
    Flip,
    /// airbench's `tta_level=2`: the mean of the logits of each image and its
    /// mirror (weight 1/2), and of its two one-pixel diagonal translations
    /// (reflect-padded) and their mirrors (weight 1/4 each pair).
    FlipTranslate,
}

impl Tta {
    /// The names users pass (`tta=`), in the order messages list them.
    pub const NAMES: [&'static str; 3] = ["none", "flip", "flip_translate"];

    /// # Errors
    /// `InvalidArgument` naming the accepted values.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Tta::None),
            "flip" => Ok(Tta::Flip),
            "flip_translate" => Ok(Tta::FlipTranslate),
            other => Err(Error::invalid(format!(
                "tta must be None, \"none\", \"flip\" or \"flip_translate\", got {other:?}"
            ))),
        }
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}
