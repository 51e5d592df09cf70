//! airbench95 (airbench 0.1.8, `lib_airbench95.py`: 95.01% (n=200 runs) on CIFAR-10; wider conv groups and 15 epochs: about 10 s on an A100).
//! airbench94's network and recipe with conv-group widths [128, 384, 384], 15.0
//! epochs and learning rate 10.0 per 1024 examples: data only.

use super::airbench94::family;
use super::Recipe;

/// airbench95 and its recipe.
pub fn recipe() -> Recipe {
    family("airbench95", [128, 384, 384], 15.0, 10.0)
}
