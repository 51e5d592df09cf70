//! k-fold cross-validation splits identical to scikit-learn's `KFold` and
//! `StratifiedKFold`, so a fold trained here is the fold a Keras notebook
//! built with scikit-learn trains on.

use super::mt19937::Mt19937;
use crate::{Error, Result};

/// One split: `(train_indices, validation_indices)`, both sorted ascending.
pub type Fold = (Vec<usize>, Vec<usize>);

/// The most indices a set of splits may hold (`n` per fold, `k` folds):
/// 2**28 int64 indices are 2 GiB, far beyond any dataset a study splits.
pub const MAX_INDICES: usize = 1 << 28;

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
    if n.saturating_mul(k) > MAX_INDICES {
        return Err(Error::invalid(format!(
            "n × k must be at most {MAX_INDICES} (the splits hold n indices per fold), \
             got n={n}, k={k}"
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

/// Class codes for labels of any hashable kind, numbered by first appearance:
/// what [`stratified_kfold`] needs, since its folds depend only on which
/// samples share a class (so the bindings need not call `numpy.unique`).
#[must_use]
pub fn codes_by_first_appearance<K: Eq + std::hash::Hash>(
    labels: impl IntoIterator<Item = K>,
) -> Vec<i64> {
    let mut index_of = std::collections::HashMap::new();
    labels
        .into_iter()
        .map(|label| {
            let next = index_of.len() as i64;
            *index_of.entry(label).or_insert(next)
        })
        .collect()
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
    // Round robin over the class codes sorted ascending: class `c`'s members
    // take the positions `start..start + count`, position `p` going to fold
    // `p % k`; sorted, those folds are scikit-learn's per-class allocation.
    // (Built per class, so memory is O(n), not O(classes × k).)
    let mut rng = Mt19937::new(seed);
    let mut fold_of = vec![0usize; n];
    // The samples of each class in order, classes one after another.
    let mut by_class: Vec<usize> = (0..n).collect();
    by_class.sort_by_key(|&i| encoded[i]);
    let mut start = 0;
    for &count in &counts {
        let mut folds_for_class: Vec<usize> = (start..start + count).map(|p| p % k).collect();
        folds_for_class.sort_unstable();
        if shuffle {
            rng.shuffle(&mut folds_for_class);
        }
        for (&i, fold) in by_class[start..start + count].iter().zip(folds_for_class) {
            fold_of[i] = fold;
        }
        start += count;
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
    fn codes_number_classes_by_first_appearance() {
        let codes = codes_by_first_appearance(["b", "a", "b", "c", "a"]);
        assert_eq!(codes, [0, 1, 0, 2, 1]);
        let y = [1, 0, 1, 0, 1, 0, 2, 2];
        let by_code = stratified_kfold(&codes_by_first_appearance(y), 2, true, 42).unwrap();
        assert_eq!(by_code, stratified_kfold(&y, 2, true, 42).unwrap());
    }

    #[test]
    fn many_classes_and_folds_stay_linear() {
        // 20 000 singleton classes and one big one: each class used to scan
        // all samples (6e8 steps) and fill a classes × k table.
        let mut y: Vec<i64> = (0..20_000).collect();
        y.extend(std::iter::repeat_n(-1, 10_000));
        let folds = stratified_kfold(&y, 100, true, 0).unwrap();
        let sizes: Vec<usize> = folds.iter().map(|f| f.1.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 30_000);
        assert!(sizes.iter().all(|&s| s == 300), "{sizes:?}");
        assert!(matches!(
            stratified_kfold(&y, 100_000, false, 0),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            kfold(1 << 20, 1 << 10, false, 0),
            Err(Error::InvalidArgument(_))
        ));
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
