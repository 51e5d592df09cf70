//! k-fold cross-validation splits identical to scikit-learn's `KFold` and
//! `StratifiedKFold`, so a fold trained here is the fold a Keras notebook
//! built with scikit-learn trains on.

use super::mt19937::Mt19937;
use crate::{Error, Result};

/// One split: `(train_indices, validation_indices)`, both sorted ascending.
pub type Fold = (Vec<usize>, Vec<usize>);

fn check_k(n: usize, k: usize) -> Result<()> {
    if k < 2 {
        return Err(Error::invalid(format!(
            "k-fold cross-validation needs at least 2 folds, got k={k}"
        )));
    }
    if k > n {
        return Err(Error::invalid(format!(
            "cannot have more folds than samples: k={k}, n_samples={n}"
        )));
    }
    Ok(())
}

/// Turns a fold number per sample into `k` sorted `(train, val)` splits, as
/// scikit-learn's `_BaseKFold.split` does through boolean test masks.
fn splits_from_fold_ids(fold_of: &[usize], k: usize) -> Vec<Fold> {
    (0..k)
        .map(|fold| {
            let (mut train, mut val) = (Vec::new(), Vec::new());
            for (i, &f) in fold_of.iter().enumerate() {
                if f == fold {
                    val.push(i);
                } else {
                    train.push(i);
                }
            }
            (train, val)
        })
        .collect()
}

/// Shuffled (or not) k-fold splits equal to scikit-learn's
/// `KFold(k, shuffle=shuffle, random_state=seed).split(range(n))`: each
/// `(train_idx, val_idx)` sorted ascending, exactly as scikit-learn yields them.
///
/// The first `n % k` folds hold `n / k + 1` samples, the others `n / k`.
/// `seed` is ignored when `shuffle` is false.
///
/// # Errors
/// [`Error::InvalidArgument`] when `k < 2` or `k > n`.
pub fn kfold(n: usize, k: usize, shuffle: bool, seed: u32) -> Result<Vec<Fold>> {
    check_k(n, k)?;
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        Mt19937::new(seed).shuffle(&mut order);
    }
    let mut fold_of = vec![0usize; n];
    let mut start = 0;
    for fold in 0..k {
        let size = n / k + usize::from(fold < n % k);
        for &i in &order[start..start + size] {
            fold_of[i] = fold;
        }
        start += size;
    }
    Ok(splits_from_fold_ids(&fold_of, k))
}

/// Same as [`kfold`] for scikit-learn's
/// `StratifiedKFold(k, shuffle=shuffle, random_state=seed).split(x, labels)`:
/// each class is spread over the folds as evenly as its count allows.
///
/// Classes are numbered by first appearance, the per-fold allocation is the
/// round robin over the sorted class numbers, and with `shuffle` each class's
/// fold assignment is shuffled in that order from one `RandomState(seed)` —
/// scikit-learn's `_make_test_folds` step for step. Like scikit-learn, a class
/// with fewer than `k` members is allowed (it is missing from some folds)
/// unless every class is that small.
///
/// # Errors
/// [`Error::InvalidArgument`] when `k < 2`, `k > labels.len()`, or every
/// class has fewer than `k` members.
pub fn stratified_kfold(labels: &[i64], k: usize, shuffle: bool, seed: u32) -> Result<Vec<Fold>> {
    let n = labels.len();
    check_k(n, k)?;
    // Encode classes by order of first appearance.
    let mut classes: Vec<i64> = Vec::new();
    let mut encoded = Vec::with_capacity(n);
    let mut index_of = std::collections::HashMap::new();
    for &label in labels {
        let code = *index_of.entry(label).or_insert_with(|| {
            classes.push(label);
            classes.len() - 1
        });
        encoded.push(code);
    }
    let n_classes = classes.len();
    let mut counts = vec![0usize; n_classes];
    for &c in &encoded {
        counts[c] += 1;
    }
    if counts.iter().all(|&c| c < k) {
        return Err(Error::invalid(format!(
            "k={k} cannot be greater than the number of members in each class \
             (the largest class has {})",
            counts.iter().max().copied().unwrap_or(0)
        )));
    }
    // allocation[class][fold]: round robin over the class codes sorted ascending.
    let mut allocation = vec![vec![0usize; k]; n_classes];
    let mut position = 0;
    for (class, &count) in counts.iter().enumerate() {
        for _ in 0..count {
            allocation[class][position % k] += 1;
            position += 1;
        }
    }
    let mut rng = Mt19937::new(seed);
    let mut fold_of = vec![0usize; n];
    for (class, per_fold) in allocation.iter().enumerate() {
        let mut folds_for_class: Vec<usize> = per_fold
            .iter()
            .enumerate()
            .flat_map(|(fold, &count)| std::iter::repeat_n(fold, count))
            .collect();
        if shuffle {
            rng.shuffle(&mut folds_for_class);
        }
        let members = encoded
            .iter()
            .enumerate()
            .filter(|&(_, &c)| c == class)
            .map(|(i, _)| i);
        for (i, fold) in members.zip(folds_for_class) {
            fold_of[i] = fold;
        }
    }
    Ok(splits_from_fold_ids(&fold_of, k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kfold_unshuffled_blocks() {
        let folds = kfold(5, 2, false, 0).unwrap();
        assert_eq!(folds[0], (vec![3, 4], vec![0, 1, 2]));
        assert_eq!(folds[1], (vec![0, 1, 2], vec![3, 4]));
    }

    #[test]
    fn kfold_matches_sklearn_seed_42() {
        // [v.tolist() for _, v in KFold(3, shuffle=True, random_state=42).split(range(10))]
        let folds = kfold(10, 3, true, 42).unwrap();
        let vals: Vec<Vec<usize>> = folds.iter().map(|f| f.1.clone()).collect();
        assert_eq!(vals, [vec![0, 1, 5, 8], vec![2, 7, 9], vec![3, 4, 6]]);
    }

    #[test]
    fn stratified_matches_sklearn_seed_42() {
        // StratifiedKFold(2, shuffle=True, random_state=42).split(y, y) with
        // y = [1, 0, 1, 0, 1, 0, 2, 2]
        let y = [1, 0, 1, 0, 1, 0, 2, 2];
        let folds = stratified_kfold(&y, 2, true, 42).unwrap();
        let vals: Vec<Vec<usize>> = folds.iter().map(|f| f.1.clone()).collect();
        assert_eq!(vals, [vec![0, 2, 5, 7], vec![1, 3, 4, 6]]);
    }

    #[test]
    fn rejects_bad_k() {
        assert!(matches!(
            kfold(5, 1, true, 0),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            kfold(3, 4, true, 0),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            stratified_kfold(&[0, 1, 2, 3], 2, true, 0),
            Err(Error::InvalidArgument(_))
        ));
    }
}
