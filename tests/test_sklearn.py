"""cnnrs.sklearn.CNNClassifier where scikit-learn users put it: the estimator checks,
GridSearchCV (equal to cnnrs.grid_search), cross_val_score, Pipeline, joblib's process
workers and Ray backend, ConfusionMatrixDisplay, pickling, warm starts."""

from __future__ import annotations

import pickle

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.metrics import ConfusionMatrixDisplay
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import cnnrs
from cnnrs.callbacks import EarlyStopping
from cnnrs.sklearn import EXPECTED_FAILED_CHECKS, FALLBACK_ARCHITECTURE, CNNClassifier

#: The grid both searches run: two learning rates of the course's "custom" network, the
#: network's seed fixed (cnnrs.grid_search would otherwise seed fold i with seed + i,
#: where scikit-learn's clones all keep the estimator's one seed).
GRID = {"learning_rate": [1e-3, 4e-3], "seed": [7]}
FIXED = {"architecture": "custom", "epochs": 2, "batch_size": 32, "device": "cpu"}
FOLD_SEED = 42


@pytest.fixture(scope="module", autouse=True)
def one_libtorch_thread():
    """The networks here are tiny: one thread trains them as fast as two, and never
    waits for a second thread that a busy 2-core machine has given to someone else.
    (Both sides of every equality run with the same count.)"""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@parametrize_with_checks(
    [CNNClassifier(seed=0, device="cpu", threads=1)],
    expected_failed_checks=lambda estimator: EXPECTED_FAILED_CHECKS,
)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_the_checks_train_the_documented_fallback_network():
    x = np.random.default_rng(0).normal(size=(40, 3))
    y = np.arange(40) % 2
    clf = CNNClassifier(seed=0, epochs=1, device="cpu").fit(x, y)
    assert clf.architecture_ == FALLBACK_ARCHITECTURE
    assert clf.image_shape_ == (1, 1, 3) and clf.n_features_in_ == 3
    assert clf.model_.layer_specs[1] == {"type": "dense", "units": 100, "init": "he_uniform"}
    images = CNNClassifier(seed=0, epochs=1, device="cpu").fit(x.reshape(40, 1, 3, 1) + 1, y)
    assert images.architecture_ == FALLBACK_ARCHITECTURE  # too small to pool
    with pytest.raises(ValueError, match="pooling"):  # a named architecture never falls back
        CNNClassifier("custom", seed=0, epochs=1, device="cpu").fit(x, y)


@pytest.fixture(scope="module")
def digits(digits_split):
    """conftest's ``digits_split``, labels as scikit-learn takes them: (n,), not Keras's
    (n, 1) column (which gives scikit-learn's DataConversionWarning, an error here)."""
    (x, y), (x_test, y_test) = digits_split
    return (x, y.ravel()), (x_test, y_test.ravel())


@pytest.fixture(scope="module")
def cnnrs_search(digits):
    (x, y), _ = digits
    return cnnrs.grid_search(
        GRID, x, y, cv=5, seed=FOLD_SEED, verbose=0, threads_per_trial=1, **FIXED
    )


def _sklearn_search(x, y, **kwargs):
    search = GridSearchCV(
        CNNClassifier(threads=1, **FIXED),
        GRID,
        cv=KFold(5, shuffle=True, random_state=FOLD_SEED),
        **kwargs,
    )
    return search.fit(x, y)


def _fold_scores(search):
    return [
        [search.cv_results_[f"split{i}_test_score"][p] for i in range(5)]
        for p in range(len(search.cv_results_["params"]))
    ]


@pytest.fixture(scope="module")
def sklearn_search(digits):
    (x, y), _ = digits
    return _sklearn_search(x, y)


def test_grid_search_cv_equals_cnnrs_grid_search(cnnrs_search, sklearn_search, digits):
    """Same folds (KFold(5, shuffle=True, random_state=42)), same network seed, same
    thread count: the same fold accuracies, best parameters and refitted network."""
    assert _fold_scores(sklearn_search) == [r["fold_accuracies"] for r in cnnrs_search["results"]]
    assert sklearn_search.best_params_ == cnnrs_search["best_params"]
    assert sklearn_search.best_score_ == pytest.approx(cnnrs_search["best_score"], abs=1e-12)
    assert len({tuple(s) for s in _fold_scores(sklearn_search)}) == 2  # the rates differ
    _, (x_test, _) = digits
    np.testing.assert_array_equal(
        sklearn_search.predict_proba(x_test).astype(np.float32),
        cnnrs_search["best_model"].predict(x_test),
    )


def test_cross_val_score_equals_the_grid_search_folds(cnnrs_search, digits):
    (x, y), _ = digits
    best = cnnrs_search["results"][cnnrs_search["best_index"]]
    clf = CNNClassifier(threads=1, **FIXED).set_params(**best["params"])
    scores = cross_val_score(clf, x, y, cv=KFold(5, shuffle=True, random_state=FOLD_SEED))
    assert scores.tolist() == best["fold_accuracies"]
    assert scores.mean() > 0.7


def test_joblib_process_workers_give_the_same_search(sklearn_search, digits):
    (x, y), _ = digits
    with joblib.parallel_backend("loky"):
        parallel = _sklearn_search(x, y, n_jobs=2)
    assert _fold_scores(parallel) == _fold_scores(sklearn_search)
    assert parallel.best_params_ == sklearn_search.best_params_


def test_ray_joblib_backend_gives_the_same_search(sklearn_search, digits):
    ray = pytest.importorskip("ray")
    from ray.util.joblib import register_ray

    (x, y), _ = digits
    register_ray()
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    try:
        with joblib.parallel_backend("ray"):
            on_ray = _sklearn_search(x, y, n_jobs=2)
    finally:
        ray.shutdown()
    assert _fold_scores(on_ray) == _fold_scores(sklearn_search)
    assert on_ray.best_params_ == sklearn_search.best_params_


def test_a_pipeline_of_scaler_and_flat_rows(digits):
    """Flat rows scaled by StandardScaler, reshaped by input_shape: the same network
    as cnnrs.Model trained on the scaled rows reshaped by numpy."""
    (x, y), (x_test, y_test) = digits
    flat, flat_test = x.reshape(len(x), -1), x_test.reshape(len(x_test), -1)
    pipe = make_pipeline(
        StandardScaler(),
        CNNClassifier("custom", input_shape=(8, 8, 1), epochs=3, seed=1, device="cpu"),
    ).fit(flat, y)
    scaler = StandardScaler().fit(flat)
    model = cnnrs.Model("custom", device="cpu", seed=1)
    model.fit(scaler.transform(flat).reshape(-1, 8, 8, 1), y, epochs=3, verbose=0)
    expected = model.predict(scaler.transform(flat_test).reshape(-1, 8, 8, 1))
    np.testing.assert_array_equal(pipe.predict_proba(flat_test).astype(np.float32), expected)
    assert pipe.score(flat_test, y_test) == pytest.approx(
        np.mean(expected.argmax(axis=1) == y_test), abs=1e-12
    )
    assert pipe.score(flat_test, y_test) > 0.8


def test_a_pipeline_with_a_reshaping_step(digits):
    (x, y), (x_test, y_test) = digits
    to_images = FunctionTransformer(np.reshape, kw_args={"shape": (-1, 8, 8, 1)})
    pipe = make_pipeline(to_images, CNNClassifier("custom", epochs=3, seed=1, device="cpu"))
    pipe.fit(x.reshape(len(x), -1), y)
    direct = CNNClassifier("custom", epochs=3, seed=1, device="cpu").fit(x, y)
    np.testing.assert_array_equal(
        pipe.predict(x_test.reshape(len(x_test), -1)), direct.predict(x_test)
    )


def test_confusion_matrix_display_draws_the_study_matrix(digits):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (x, y), (x_test, y_test) = digits
    clf = CNNClassifier("baseline", epochs=2, seed=0, device="cpu").fit(x, y)
    display = ConfusionMatrixDisplay.from_estimator(clf, x_test, y_test)
    try:
        predicted = clf.predict(x_test)
        np.testing.assert_array_equal(
            display.confusion_matrix, cnnrs.metrics.confusion_matrix(y_test, predicted)
        )
        np.testing.assert_array_equal(
            display.confusion_matrix, sk_confusion_matrix(y_test, predicted)
        )
        assert np.trace(display.confusion_matrix) / len(y_test) > 0.8
    finally:
        plt.close(display.figure_)


def test_any_labels_give_the_same_network_as_their_indices(digits):
    """String labels are encoded as their sorted positions: "j".."a" for the digits
    0..9 is the network trained on 9 - y, with its outputs named."""
    (x, y), (x_test, _) = digits
    names = np.array(list("jihgfedcba"))
    by_index = CNNClassifier("custom", epochs=1, seed=3, device="cpu").fit(x, 9 - y)
    by_name = CNNClassifier("custom", epochs=1, seed=3, device="cpu").fit(x, names[y])
    np.testing.assert_array_equal(by_name.classes_, np.array(list("abcdefghij")))
    np.testing.assert_array_equal(by_name.predict_proba(x_test), by_index.predict_proba(x_test))
    np.testing.assert_array_equal(by_name.predict(x_test), names[9 - by_index.predict(x_test)])
    assert by_name.score(x, names[y]) == by_index.score(x, 9 - y) > 0.5


def test_images_and_flat_rows_with_input_shape_train_the_same_network(digits):
    (x, y), (x_test, _) = digits
    images = CNNClassifier("custom", epochs=1, seed=5, device="cpu").fit(x, y)
    rows = CNNClassifier("custom", epochs=1, seed=5, device="cpu", input_shape=(8, 8, 1))
    rows.fit(x.reshape(len(x), 64), y)
    np.testing.assert_array_equal(images.predict_proba(x_test), rows.predict_proba(x_test))
    np.testing.assert_array_equal(
        images.predict_proba(x_test), images.predict_proba(x_test.reshape(-1, 64))
    )
    assert images.n_features_in_ == rows.n_features_in_ == 64
    with pytest.raises(ValueError, match=r"images of shape \(8, 4, 2\).*fitted on images"):
        images.predict(x_test.reshape(-1, 8, 4, 2))


def test_warm_start_and_partial_fit_continue_one_network(digits):
    """Two one-epoch fits of one cnnrs.Model are the reference for both."""
    (x, y), (x_test, _) = digits
    model = cnnrs.Model("custom", device="cpu", seed=2)
    model.fit(x, y, epochs=1, verbose=0)
    model.fit(x, y, epochs=1, verbose=0)
    expected = model.predict(x_test)

    warm = CNNClassifier("custom", epochs=1, seed=2, device="cpu", warm_start=True)
    first = warm.fit(x, y).model_
    assert warm.fit(x, y).model_ is first
    np.testing.assert_array_equal(warm.predict_proba(x_test).astype(np.float32), expected)

    partial = CNNClassifier("custom", epochs=5, seed=2, device="cpu")  # partial_fit: 1 epoch
    partial.partial_fit(x, y, classes=np.arange(10)).partial_fit(x, y)
    np.testing.assert_array_equal(partial.predict_proba(x_test).astype(np.float32), expected)
    assert len(partial.history_["loss"]) == 1

    cold = CNNClassifier("custom", epochs=1, seed=2, device="cpu").fit(x, y)
    assert not np.array_equal(cold.predict_proba(x_test).astype(np.float32), expected)


def test_partial_fit_refuses_labels_it_was_not_told_of(digits):
    (x, y), _ = digits
    clf = CNNClassifier("custom", seed=0, device="cpu").partial_fit(x[y < 5], y[y < 5])
    with pytest.raises(ValueError, match=r"labels \[5, 6, 7, 8, 9\] that are not among"):
        clf.partial_fit(x, y)


def test_pickle_and_clone_keep_what_they_should(digits):
    (x, y), (x_test, _) = digits
    stop = EarlyStopping(monitor="loss", restore_best_weights=True)
    clf = CNNClassifier("custom", epochs=2, seed=0, device="cpu", callbacks=[stop]).fit(x, y)
    assert stop.best_weights is None and clf.callbacks_[0].best_weights is not None
    copied = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(copied.predict_proba(x_test), clf.predict_proba(x_test))
    np.testing.assert_array_equal(copied.classes_, clf.classes_)
    assert copied.history_ == clf.history_
    fresh = clone(clf)
    assert not hasattr(fresh, "model_") and fresh.get_params()["epochs"] == 2
    assert fresh.get_params()["callbacks"][0] is not stop


@pytest.mark.parametrize(
    ("params", "error", "words"),
    [
        ({"architecture": "resnet"}, ValueError, "resnet"),
        ({"epochs": "ten"}, TypeError, "epochs"),
        ({"epochs": 0}, ValueError, "epochs"),
        ({"batch_size": 2.5}, TypeError, "batch_size must be an integer, got float"),
        ({"learning_rate": "fast"}, TypeError, "learning_rate must be a number, got str"),
        ({"optimizer": "rmsprop"}, ValueError, "rmsprop"),
        ({"seed": -1}, ValueError, r"seed must be in \[0, 2\*\*63\), got -1"),
        ({"validation_split": 1.5}, ValueError, r"validation_split must be in \[0, 1\), got 1.5"),
        ({"input_shape": (8, 8)}, ValueError, r"input_shape must be .* got \(8, 8\)"),
        ({"input_shape": (4, 4, 1)}, ValueError, "input_shape=.* holds 16 values but X has 3"),
        ({"warm_start": "yes"}, TypeError, "warm_start must be True or False, got 'yes'"),
        ({"threads": 0}, ValueError, "threads must be >= 1, got 0"),
        ({"callbacks": "EarlyStopping"}, TypeError, "callbacks must be a list"),
        ({"device": "tpu"}, ValueError, "tpu"),
        ({"threads": 10**9}, ValueError, "threads must be <= 4096, got 1000000000"),
        ({"verbose": "loud"}, ValueError, "verbose must be 0, 1 or 2, got 'loud'"),
        ({"shuffle": "no"}, TypeError, "shuffle must be True or False, got 'no'"),
    ],
)
def test_bad_parameters_are_named_when_fit_runs(params, error, words):
    x = np.random.default_rng(0).normal(size=(20, 3))
    y = np.arange(20) % 2
    clf = CNNClassifier(**{"epochs": 1, "seed": 0, **params})  # stored as given: no error yet
    assert clf.get_params()[next(iter(params))] == next(iter(params.values()))
    with pytest.raises(error, match=words):
        clf.fit(x, y)


def test_bad_data_is_named():
    clf = CNNClassifier(epochs=1, seed=0, device="cpu")
    with pytest.raises(ValueError, match=r"X must be images .* got 5 dimensions"):
        clf.fit(np.zeros((10, 2, 2, 2, 2)), np.arange(10) % 2)
    with pytest.raises(ValueError, match=r"y has 1 class \(7\); a classifier needs at least 2"):
        clf.fit(np.zeros((10, 3)), np.full(10, 7))
    with pytest.raises(ValueError, match="requires y to be passed"):
        clf.fit(np.zeros((10, 3)), None)


def test_a_failed_fit_leaves_the_fitted_classifier_as_it_was():
    x = np.random.default_rng(0).normal(size=(30, 3))
    clf = CNNClassifier(epochs=1, seed=0, device="cpu").fit(x, np.arange(30) % 2)
    model, expected = clf.model_, clf.predict_proba(x)
    clf.set_params(optimizer="rmsprop")  # refused only when the new network is made
    with pytest.raises(ValueError, match="rmsprop"):
        clf.fit(np.zeros((30, 5)), np.arange(30) % 3)
    assert clf.model_ is model and clf.classes_.tolist() == [0, 1] and clf.n_features_in_ == 3
    np.testing.assert_array_equal(clf.predict_proba(x), expected)
    fresh = CNNClassifier(epochs=1, optimizer="rmsprop", device="cpu")
    with pytest.raises(ValueError, match="rmsprop"):
        fresh.fit(x, np.arange(30) % 2)
    assert not [k for k in vars(fresh) if k.endswith("_")]
