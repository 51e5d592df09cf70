"""Cross-validation and grid search: folds equal scikit-learn's, each fold trains a
fresh model on its training part only, and the grid search refits the best."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import KFold, ParameterGrid, StratifiedKFold

import cnnrs
from cnnrs import selection


@pytest.fixture(scope="module")
def cv_result(digits_all):
    x, y = digits_all
    return cnnrs.cross_validate(
        "custom", x, y, cv=5, epochs=8, batch_size=32, learning_rate=1e-3, verbose=0, device="cpu"
    )


def test_cross_validation_on_digits_is_accurate(cv_result):
    r = cv_result
    assert set(r) >= {"fold_accuracies", "mean_accuracy", "std_accuracy", "histories", "folds"}
    assert len(r["fold_accuracies"]) == 5
    assert r["mean_accuracy"] == pytest.approx(np.mean(r["fold_accuracies"]))
    assert r["std_accuracy"] == pytest.approx(np.std(r["fold_accuracies"]))
    assert r["mean_accuracy"] >= 0.95
    for h, acc in zip(r["histories"], r["fold_accuracies"]):
        assert len(h["val_accuracy"]) == 8
        assert h["val_accuracy"][-1] == pytest.approx(acc)


def test_folds_equal_sklearn_and_partition_the_data(cv_result, digits_all):
    x, _ = digits_all
    folds = cv_result["folds"]
    expected = list(KFold(5, shuffle=True, random_state=42).split(x))
    for (tr, va), (etr, eva) in zip(folds, expected):
        np.testing.assert_array_equal(tr, etr)
        np.testing.assert_array_equal(va, eva)
        assert np.intersect1d(tr, va).size == 0
        assert tr.size + va.size == len(x)
    np.testing.assert_array_equal(
        np.sort(np.concatenate([va for _, va in folds])), np.arange(len(x))
    )


def test_folds_validate_on_held_out_data_only(digits_all):
    """Training accuracy on the fold's training part is not what is reported:
    a model that memorises its training part scores lower on the held-out part."""
    x, y = digits_all
    x, y = x[:150], y[:150]
    r = cnnrs.cross_validate(
        "baseline",
        x,
        y,
        cv=3,
        epochs=25,
        batch_size=16,
        learning_rate=2e-3,
        verbose=0,
        device="cpu",
    )
    train_acc = np.array([h["accuracy"][-1] for h in r["histories"]])
    assert np.all(train_acc > 0.97)
    assert np.mean(r["fold_accuracies"]) < np.mean(train_acc)


def test_cv_accepts_sklearn_splitters_and_stratified(digits_all):
    x, y = digits_all
    x, y = x[:200], y[:200]
    splits = list(StratifiedKFold(4, shuffle=True, random_state=0).split(x, y))
    r = cnnrs.cross_validate("custom", x, y, cv=iter(splits), epochs=1, verbose=0, device="cpu")
    for (tr, va), (etr, eva) in zip(r["folds"], splits):
        np.testing.assert_array_equal(tr, etr)
        np.testing.assert_array_equal(va, eva)
    folds = selection.make_folds(x, y, 4, seed=0, stratified=True)
    for (tr, va), (etr, eva) in zip(folds, splits):
        np.testing.assert_array_equal(tr, etr)
        np.testing.assert_array_equal(va, eva)


def test_parameter_grid_order_equals_sklearn():
    grid = {"learning_rate": [1e-3, 5e-4], "architecture": ["baseline", "custom"], "epochs": [1, 3]}
    assert selection.parameter_grid(grid) == list(ParameterGrid(grid))
    grids = [{"architecture": ["custom"], "epochs": [1, 2]}, {"batch_size": [16]}]
    assert selection.parameter_grid(grids) == list(ParameterGrid(grids))


def test_grid_search_refits_the_best_on_all_data(digits_all):
    x, y = digits_all
    x, y = x[:400], y[:400]
    grid = {"architecture": ["custom", "baseline"], "epochs": [1, 4], "learning_rate": [1e-3]}
    r = cnnrs.grid_search(grid, x, y, cv=3, verbose=0, device="cpu")
    assert [res["params"] for res in r["results"]] == list(ParameterGrid(grid))
    means = [res["mean_accuracy"] for res in r["results"]]
    assert r["best_score"] == max(means)
    assert r["best_params"] == r["results"][int(np.argmax(means))]["params"]
    model = r["best_model"]
    assert isinstance(model, cnnrs.Model)
    assert model.architecture == r["best_params"]["architecture"]
    assert len(model.history["loss"]) == r["best_params"]["epochs"]
    # The refitted model saw all of x: its normalisation is that of the whole set.
    np.testing.assert_allclose(model.normalization["mean"], [x.mean()], rtol=1e-5)
    assert model.evaluate(x, y)["accuracy"] > 0.5


@pytest.mark.parametrize(
    "call, exc, message",
    [
        (lambda x, y: cnnrs.grid_search({}, x, y, verbose=0), ValueError, "empty"),
        (lambda x, y: cnnrs.grid_search([], x, y, verbose=0), ValueError, "empty"),
        (lambda x, y: cnnrs.grid_search({"epochs": []}, x, y, verbose=0), ValueError, "empty"),
        (
            lambda x, y: cnnrs.grid_search({"optimiser": ["sgd"]}, x, y, verbose=0),
            ValueError,
            "unknown parameter",
        ),
        (
            lambda x, y: cnnrs.cross_validate("custom", x, y, cv=50, verbose=0),
            ValueError,
            "more than",
        ),
        (lambda x, y: cnnrs.cross_validate("custom", x, y, cv=1, verbose=0), ValueError, ">= 2"),
        (lambda x, y: cnnrs.cross_validate("custom", x, y, cv="five", verbose=0), TypeError, "cv"),
        (
            lambda x, y: cnnrs.cross_validate("custom", x, y, batch_size=0, verbose=0),
            ValueError,
            "batch_size",
        ),
        (
            lambda x, y: cnnrs.cross_validate("custom", x, y[:10], verbose=0),
            ValueError,
            "same length",
        ),
        (
            lambda x, y: cnnrs.cross_validate("nope", x, y, verbose=0),
            ValueError,
            "unknown architecture",
        ),
        (
            lambda x, y: cnnrs.cross_validate("custom", x, y, backend="spark", verbose=0),
            ValueError,
            "backend",
        ),
    ],
)
def test_bad_input(call, exc, message, digits_all):
    x, y = digits_all
    with pytest.raises(exc, match=message):
        call(x[:20], y[:20])


def test_fold_score_is_the_last_epochs_validation_and_equals_evaluate(digits_all):
    """The score is read from the history, not recomputed; it is what evaluate gives."""
    x, y = digits_all
    x, y = x[:300], y[:300]
    train, val = selection.make_folds(x, y, 3, seed=0)[0]
    params = {"architecture": "custom", "epochs": 2, "batch_size": 32, "device": "cpu"}
    run = selection.fit_and_score(params, x, y, train, val, 10, seed=7)
    assert run["accuracy"] == run["history"]["val_accuracy"][-1]
    assert run["loss"] == run["history"]["val_loss"][-1]
    model = cnnrs.Model("custom", device="cpu", seed=7)
    model.build(x.shape[1:], 10)
    model.fit(x[train], y[train], epochs=2, batch_size=32, verbose=0)
    assert model.history["loss"] == run["history"]["loss"]  # the same training run
    scores = model.evaluate(x[val], y[val])
    assert scores["accuracy"] == pytest.approx(run["accuracy"], abs=1e-12)
    assert scores["loss"] == pytest.approx(run["loss"], rel=1e-6)


def test_data_is_converted_once_and_not_copied_again(digits_all, monkeypatch):
    """cross_validate converts x and y once; Model.fit passes typed arrays on as they are."""
    x, y = digits_all
    x, y = np.ascontiguousarray(x[:60]), y[:60]
    calls = []

    class Recorder:
        """Stands in for the Rust network: records the arrays fit receives."""

        num_classes = None
        class_names = None
        recipe = None

        @staticmethod
        def steps_per_epoch(n, batch_size):
            return -(-n // batch_size)

        def begin_fit(self, xa, ya, **kwargs):
            calls.append((xa, ya, kwargs))

        def fit_epoch(self, epoch, epochs, **kwargs):
            return {"loss": 1.0, "accuracy": 0.5}

        def end_fit(self):
            pass

    model = cnnrs.Model("custom", device="cpu", seed=0)
    monkeypatch.setattr(model, "_net", Recorder())
    model.fit(x, y, epochs=1, verbose=0)
    xa, ya, kwargs = calls[0]
    assert xa is x or np.shares_memory(xa, x)  # uint8, contiguous: passed through
    assert ya is y or np.shares_memory(ya, y)  # int64 labels: passed through
    assert set(kwargs) == {
        "num_classes", "batch_size", "validation_x", "validation_y", "shuffle",
        "total_steps", "base_learning_rate",
    }  # fmt: skip

    f32 = x.astype(np.float32)
    calls.clear()
    model.fit(f32, y, epochs=1, verbose=0)
    assert np.shares_memory(calls[0][0], f32)  # float32 is not copied either
