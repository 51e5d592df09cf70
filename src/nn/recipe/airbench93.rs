//! airbench93 (airbench 0.1.8, `lib_airbench93.py`: 93.00% (n=50 runs) on CIFAR-10; about 1/4 of airbench94's FLOPs (~40% less wall-clock time on an A100)).
//! airbench94's network and recipe with conv-group widths [64, 128, 128], 11.0
//! epochs and learning rate 11.5 per 1024 examples: data only.

use super::airbench94::family;
use super::Recipe;

/// airbench93 and its recipe.
pub fn recipe() -> Recipe {
    family("airbench93", [64, 128, 128], 11.0, 11.5)
}
