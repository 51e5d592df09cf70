"""k-fold indices equal scikit-learn's KFold and StratifiedKFold, split for split."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.model_selection import KFold, StratifiedKFold

import cnnrs  # noqa: F401  (loads libtorch before the extension)
from cnnrs import _core


def _same(ours, theirs):
    theirs = list(theirs)
    assert len(ours) == len(theirs)
    for (tr, va), (str_, sva) in zip(ours, theirs):
        assert tr.dtype == np.int64 and va.dtype == np.int64
        np.testing.assert_array_equal(tr, str_)
        np.testing.assert_array_equal(va, sva)


@pytest.mark.parametrize(
    "n, k", [(n, k) for n in [2, 5, 10, 11, 97, 1000, 50000] for k in [2, 3, 5, 10] if k <= n]
)
@pytest.mark.parametrize("seed", [0, 1, 42, 2**32 - 1])
def test_kfold_equals_sklearn(n, k, seed):
    _same(
        _core.kfold_indices(n, k, shuffle=True, seed=seed),
        KFold(k, shuffle=True, random_state=seed).split(np.zeros(n)),
    )


@pytest.mark.parametrize("n, k", [(10, 3), (11, 5), (7, 7)])
def test_kfold_unshuffled_equals_sklearn(n, k):
    _same(_core.kfold_indices(n, k, shuffle=False), KFold(k).split(np.zeros(n)))


def test_kfold_defaults_are_shuffle_seed_42():
    _same(_core.kfold_indices(100, 5), KFold(5, shuffle=True, random_state=42).split(range(100)))


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 400),
    k=st.integers(2, 12),
    seed=st.integers(0, 2**32 - 1),
)
def test_kfold_property(n, k, seed):
    k = min(k, n)
    _same(
        _core.kfold_indices(n, k, True, seed),
        KFold(k, shuffle=True, random_state=seed).split(np.zeros(n)),
    )


@pytest.mark.parametrize("seed", [0, 7, 42])
@pytest.mark.parametrize("k", [2, 3, 5, 10])
@pytest.mark.parametrize("n_classes", [2, 3, 10])
def test_stratified_equals_sklearn(seed, k, n_classes):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, size=537)
    _same(
        _core.stratified_kfold_indices(y, k, shuffle=True, seed=seed),
        StratifiedKFold(k, shuffle=True, random_state=seed).split(y, y),
    )
    _same(_core.stratified_kfold_indices(y, k, shuffle=False), StratifiedKFold(k).split(y, y))


@settings(max_examples=60, deadline=None)
@given(
    y=st.lists(st.integers(-3, 6), min_size=4, max_size=300),
    k=st.integers(2, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_stratified_property(y, k, seed):
    y = np.array(y)
    counts = np.unique(y, return_counts=True)[1]
    if k > len(y) or np.all(counts < k) or counts.min() < k:
        return  # errors, or sklearn's "least populated class" warning
    _same(
        _core.stratified_kfold_indices(y, k, True, seed),
        StratifiedKFold(k, shuffle=True, random_state=seed).split(y, y),
    )


def test_stratified_small_class_allowed_like_sklearn():
    # sklearn warns that class 2 has fewer than k members but still splits.
    y = np.array([0] * 10 + [1] * 10 + [2] * 2)
    with pytest.warns(UserWarning, match="least populated"):
        theirs = list(StratifiedKFold(5, shuffle=True, random_state=3).split(y, y))
    _same(_core.stratified_kfold_indices(y, 5, seed=3), theirs)


def test_stratified_accepts_keras_column_and_strings():
    y = np.random.default_rng(0).integers(0, 4, size=(200, 1)).astype(np.uint8)
    theirs = list(StratifiedKFold(4, shuffle=True, random_state=42).split(y, y[:, 0]))
    _same(_core.stratified_kfold_indices(y, 4), theirs)
    names = np.array(["cat", "dog", "ant", "bee"])[y[:, 0]]
    _same(_core.stratified_kfold_indices(names, 4), theirs)


def test_cifar_sized_stratified_is_fast_and_equal():
    y = np.repeat(np.arange(10), 5000)
    np.random.default_rng(1).shuffle(y)
    _same(
        _core.stratified_kfold_indices(y, 5),
        StratifiedKFold(5, shuffle=True, random_state=42).split(y, y),
    )


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least 2 folds"):
        _core.kfold_indices(10, 1)
    with pytest.raises(ValueError, match="more folds than samples"):
        _core.kfold_indices(3, 4)
    with pytest.raises(ValueError, match="seed"):
        _core.kfold_indices(10, 2, seed=-1)
    with pytest.raises(ValueError, match="seed"):
        _core.kfold_indices(10, 2, seed=2**32)
    with pytest.raises(ValueError, match="members in each class"):
        _core.stratified_kfold_indices([0, 1, 2, 3], 2)
    with pytest.raises(ValueError, match="1-D"):
        _core.stratified_kfold_indices(np.zeros((4, 2)), 2)
