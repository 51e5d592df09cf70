//! Datasets and folds: CIFAR-10 readers (python-pickle and binary batches,
//! folders or `.tar.gz` archives) and scikit-learn-identical k-fold splits.

pub mod cifar;
pub mod folds;
mod mt19937;
mod pickle;
