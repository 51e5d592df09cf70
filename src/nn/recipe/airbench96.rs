//! airbench96 (airbench 0.1.8, `lib_airbench96.py`: 96.05% (n=200 runs) on
//! CIFAR-10; 46.3 s and 7.5 PFLOPs on an A100 by the package's README, against
//! airbench94's 3.83 s and 0.36).
//!
//! airbench94's recipe, hooks included, with three changes, all data:
//! - the network (`make_net96`): conv groups of 128/512/512 filters, each with
//!   a third conv → batch norm → GELU and a residual connection from its first
//!   GELU to its output;
//! - the augmentation: alternating flips, 4-pixel reflect translations (2 for
//!   airbench94) and a 12×12 cutout wholly inside the image (`batch_cutout`);
//! - 40 epochs at learning rate 9.0 per 1024 examples.
//!
//! Everything else is `lib_airbench96.hyp`'s and airbench94's alike: batch
//! 1024, Nesterov momentum 0.85, weight decay 0.0153 per 1024 examples,
//! label smoothing 0.2, batch-norm biases at 64× the rate, the whitening bias
//! trained for 3 epochs, Lookahead every 5 steps, flip-and-translate test-time
//! augmentation (`tta_level` 2) and logits scaled by 1/9.

use super::airbench94::{augmentation, family, layers};
use super::{Defaults, Recipe};
use crate::nn::arch::{Layer, Placement};

/// The conv groups' widths (`make_net96`).
const WIDTHS: [usize; 3] = [128, 512, 512];

/// airbench96 and its recipe: airbench94's family with residual groups and
/// its own augmentation.
pub fn recipe() -> Recipe {
    let base = family("airbench96", WIDTHS, 40.0, 9.0);
    Recipe {
        layers: layers(WIDTHS, true, 1.0 / 9.0),
        defaults: Defaults {
            augment: [
                augmentation(4),
                vec![Layer::Cutout {
                    size: 12,
                    placement: Placement::Inside,
                }],
            ]
            .concat(),
            ..base.defaults
        },
        ..base
    }
}
