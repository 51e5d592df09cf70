//! Datasets and folds: CIFAR-10 readers, k-fold splits.
