"""cnnrs.metrics.accuracy_score against scikit-learn's, argument for argument."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from cnnrs import metrics

RNG = np.random.default_rng(0)
Y_TRUE = RNG.integers(0, 5, 200)
Y_PRED = np.where(RNG.random(200) < 0.7, Y_TRUE, RNG.integers(0, 5, 200))
WEIGHTS = RNG.random(200) * 3


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("weights", [None, WEIGHTS, np.arange(200)])
def test_equals_scikit_learn(normalize, weights):
    ours = metrics.accuracy_score(Y_TRUE, Y_PRED, normalize=normalize, sample_weight=weights)
    theirs = skm.accuracy_score(Y_TRUE, Y_PRED, normalize=normalize, sample_weight=weights)
    assert type(ours) is float
    assert ours == pytest.approx(theirs, rel=1e-12)


def test_string_labels_and_columns_equal_scikit_learn():
    names = np.array(["cat", "dog", "bird"])
    t, p = names[Y_TRUE % 3], names[Y_PRED % 3]
    assert metrics.accuracy_score(t, p) == skm.accuracy_score(t, p)
    assert metrics.accuracy_score(t[:, None], list(p)) == skm.accuracy_score(t, p)
    assert metrics.accuracy_score([1, 0, 1], [1.0, 0.0, 0.0]) == pytest.approx(2 / 3)


def test_probability_rows_are_reduced_by_argmax_as_the_other_metrics_do():
    probs = np.eye(5)[Y_PRED] * 0.6 + 0.08
    assert metrics.accuracy_score(Y_TRUE, probs) == skm.accuracy_score(Y_TRUE, Y_PRED)


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"y_pred": Y_PRED[:10]}, ValueError, "y_true has 200 labels but y_pred has 10"),
        ({"sample_weight": WEIGHTS[:3]}, ValueError, "sample_weight must be 200 numbers"),
        ({"sample_weight": ["a"] * 200}, ValueError, "sample_weight must be 200 numbers"),
        ({"normalize": "yes"}, TypeError, "normalize must be True or False, got 'yes'"),
        ({"y_pred": np.zeros((200, 2, 2))}, ValueError, "y_pred must be labels"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, error, words):
    args = {"y_true": Y_TRUE, "y_pred": Y_PRED, **kwargs}
    with pytest.raises(error, match=words):
        metrics.accuracy_score(**args)


def test_empty_labels_are_refused():
    with pytest.raises(ValueError, match="empty"):
        metrics.accuracy_score([], [])
