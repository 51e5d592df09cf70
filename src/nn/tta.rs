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

/// Test-time augmentation for one `evaluate`/`predict` call: the views
/// ([`Tta`]) and, optionally, only for the images the plain forward pass is
/// unsure of (a gate, as the hiverge record applies airbench's TTA): images
/// whose top class probability without TTA is at least `below` keep that
/// prediction, the rest get the views.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TestTime {
    tta: Tta,
    /// The gate, in (0, 1] ([`TestTime::new`] checks it): `None` applies
    /// `tta` to every image.
    below: Option<f64>,
}

impl From<Tta> for TestTime {
    fn from(tta: Tta) -> Self {
        TestTime { tta, below: None }
    }
}

impl TestTime {
    /// `tta`, gated at `below` where given.
    ///
    /// # Errors
    /// `InvalidArgument` for a gate outside (0, 1].
    pub fn new(tta: Tta, below: Option<f64>) -> Result<Self> {
        if let Some(b) = below {
            if !(b > 0.0 && b <= 1.0) {
                return Err(Error::invalid(format!(
                    "tta_threshold must be a probability in (0, 1] (test-time augmentation \
                     for the images whose top class probability is below it), got {b}"
                )));
            }
        }
        Ok(TestTime { tta, below })
    }

    #[must_use]
    pub fn tta(self) -> Tta {
        self.tta
    }

    /// The gate (`None`: every image gets the views).
    #[must_use]
    pub fn below(self) -> Option<f64> {
        self.below
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_are_probabilities() {
        for ok in [1e-9, 0.5, 1.0] {
            assert_eq!(TestTime::new(Tta::Flip, Some(ok)).unwrap().below, Some(ok));
        }
        for bad in [0.0, -0.1, 1.0 + 1e-9, f64::NAN, f64::INFINITY] {
            let e = TestTime::new(Tta::Flip, Some(bad)).unwrap_err();
            assert!(e.to_string().contains("tta_threshold"), "{e}");
        }
        assert_eq!(TestTime::from(Tta::None), TestTime::default());
    }
}
