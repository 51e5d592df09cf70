"""cnnrs.metrics equals scikit-learn's confusion_matrix and classification_report."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

import cnnrs.metrics as cm


def _sk_report(y_true, y_pred, **kw):
    return skm.classification_report(y_true, y_pred, zero_division=0, **kw)


def _assert_report_equal(ours, theirs):
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        if isinstance(value, dict):
            assert list(ours[key]) == list(value)
            for field, v in value.items():
                assert ours[key][field] == v, (key, field)  # exact, not approximate
            assert isinstance(ours[key]["support"], int)
        else:
            assert ours[key] == value, key


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("k", [2, 3, 10, 17, 130])
def test_report_equals_sklearn(seed, k):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3000))
    y_true = rng.integers(0, k, size=n)
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, k, size=n))
    _assert_report_equal(
        cm.classification_report(y_true, y_pred), _sk_report(y_true, y_pred, output_dict=True)
    )
    assert cm.classification_report(y_true, y_pred, output_dict=False) == _sk_report(y_true, y_pred)
    np.testing.assert_array_equal(
        cm.confusion_matrix(y_true, y_pred), skm.confusion_matrix(y_true, y_pred)
    )


def test_classes_never_predicted_and_never_present():
    y_true = np.array([0, 0, 1, 1, 3, 3, 3])  # class 2 never present
    y_pred = np.array([0, 2, 0, 0, 3, 3, 0])  # class 1 never predicted
    _assert_report_equal(
        cm.classification_report(y_true, y_pred), _sk_report(y_true, y_pred, output_dict=True)
    )
    names = ["zero", "one", "two", "three", "four"]
    theirs = _sk_report(y_true, y_pred, labels=range(5), target_names=names, output_dict=True)
    _assert_report_equal(cm.classification_report(y_true, y_pred, names), theirs)
    _assert_report_equal(
        cm.classification_report(y_true, y_pred, num_classes=5),
        _sk_report(y_true, y_pred, labels=range(5), output_dict=True),
    )
    for digits in (0, 2, 4, 13):
        assert cm.classification_report(
            y_true, y_pred, names, output_dict=False, digits=digits
        ) == _sk_report(y_true, y_pred, labels=range(5), target_names=names, digits=digits)


def test_long_target_names_text():
    y = np.array([0, 1, 2, 1, 0])
    p = np.array([0, 1, 1, 1, 2])
    names = ["a very long class name indeed", "b", "c"]
    assert cm.classification_report(y, p, names, output_dict=False) == _sk_report(
        y, p, target_names=names
    )


@settings(max_examples=80, deadline=None)
@given(
    pairs=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)), min_size=1, max_size=200),
    digits=st.integers(0, 5),
)
def test_report_property(pairs, digits):
    y_true, y_pred = map(np.array, zip(*pairs))
    _assert_report_equal(
        cm.classification_report(y_true, y_pred), _sk_report(y_true, y_pred, output_dict=True)
    )
    assert cm.classification_report(y_true, y_pred, output_dict=False, digits=digits) == (
        _sk_report(y_true, y_pred, digits=digits)
    )


def test_one_hot_probabilities_and_columns():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=50)
    probs = rng.random((50, 4))
    pred = probs.argmax(axis=1)
    one_hot = np.eye(4)[y]
    expected = _sk_report(y, pred, output_dict=True)
    _assert_report_equal(cm.classification_report(one_hot, probs), expected)
    _assert_report_equal(cm.classification_report(y[:, None].astype(np.uint8), probs), expected)
    _assert_report_equal(cm.classification_report(y.astype(float), pred), expected)
    np.testing.assert_array_equal(
        cm.confusion_matrix(one_hot, probs, num_classes=4), skm.confusion_matrix(y, pred)
    )


def test_bool_labels_are_classes_0_and_1():
    """The same rule as cnnrs.Model's (cnnrs._arrays): False is 0, True is 1."""
    y = np.array([True, False, True, True])
    p = np.array([True, True, False, True])
    np.testing.assert_array_equal(cm.confusion_matrix(y, p), skm.confusion_matrix(y, p))
    np.testing.assert_array_equal(cm.confusion_matrix(y, p), [[0, 1], [1, 2]])


def test_confusion_matrix_orientation_and_num_classes():
    out = cm.confusion_matrix([0, 1, 1], [1, 1, 0], num_classes=3)
    np.testing.assert_array_equal(out, [[0, 1, 0], [1, 1, 0], [0, 0, 0]])
    assert out.dtype == np.int64


def test_precision_recall_f1_from_matrix():
    y = np.array([0, 1, 2, 2, 1])
    p = np.array([0, 2, 2, 1, 1])
    prec, rec, f1, sup = cm.precision_recall_f1(skm.confusion_matrix(y, p))
    sp, sr, sf, ss = skm.precision_recall_fscore_support(y, p, zero_division=0)
    np.testing.assert_array_equal(prec, sp)
    np.testing.assert_array_equal(rec, sr)
    np.testing.assert_array_equal(f1, sf)
    np.testing.assert_array_equal(sup, ss)


@pytest.mark.parametrize(
    "y_true, y_pred, kwargs, exc, match",
    [
        ([0, 1], [0], {}, ValueError, "same length"),
        ([0, -1], [0, 0], {}, ValueError, "negative"),
        ([0, 1], [0, 3], {"num_classes": 3}, ValueError, "out of range"),
        ([0.5, 1], [0, 1], {}, ValueError, "not integer"),
        ([np.nan, 1], [0, 1], {}, ValueError, "not integer"),
        (np.zeros((2, 2, 2)), [0, 1], {}, ValueError, "shape"),
        (["a", "b"], [0, 1], {}, TypeError, "integer class labels"),
        ([], [], {}, ValueError, "empty"),
    ],
)
def test_bad_input(y_true, y_pred, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        cm.classification_report(y_true, y_pred, **kwargs)
    if match != "empty":
        with pytest.raises(exc, match=match):
            cm.confusion_matrix(y_true, y_pred, **kwargs)


def test_target_names_must_cover_labels():
    with pytest.raises(ValueError, match="out of range"):
        cm.classification_report([0, 1, 2], [0, 1, 2], target_names=["a", "b"])
    with pytest.raises(ValueError, match="does not match"):
        cm.classification_report([0, 1], [0, 1], target_names=["a", "b"], num_classes=3)
