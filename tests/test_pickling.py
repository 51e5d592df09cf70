"""Pickling and copying: a trained ``Model`` (and the callbacks that ran with it) go
through ``pickle``, ``copy.deepcopy`` and joblib's workers and predict the same."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys

import numpy as np
import pytest

import cnnrs
from cnnrs.callbacks import EarlyStopping, ReduceLROnPlateau


@pytest.fixture(scope="module")
def trained(digits_split):
    (x, y), _ = digits_split
    model = cnnrs.Model(
        "custom", learning_rate=1e-3, device="cpu", seed=3, class_names="0123456789"
    )
    model.fit(x[:400], y[:400], epochs=2, batch_size=32, verbose=0)
    return model


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_a_trained_model_round_trips_with_the_same_predictions(trained, digits_split, how):
    _, (x_test, _) = digits_split
    if how == "pickle":
        copied = pickle.loads(pickle.dumps(trained))
    else:
        copied = copy.deepcopy(trained)
    assert copied is not trained
    np.testing.assert_array_equal(copied.predict(x_test), trained.predict(x_test))
    assert copied.state_dict().keys() == trained.state_dict().keys()
    for key, value in trained.state_dict().items():
        np.testing.assert_array_equal(copied.state_dict()[key], value)
    assert (copied.seed, copied.device, copied.input_shape) == (3, "cpu", (8, 8, 1))
    assert copied.class_names == list("0123456789")
    assert copied.history == trained.history
    assert copied.learning_rate == trained.learning_rate


def test_a_copy_trains_on_independently(trained, digits_split):
    (x, y), (x_test, _) = digits_split
    before = trained.predict(x_test)
    copied = copy.deepcopy(trained)
    copied.fit(x[400:600], y[400:600], epochs=1, verbose=0)
    assert not np.array_equal(copied.predict(x_test), before)
    np.testing.assert_array_equal(trained.predict(x_test), before)


def test_the_learning_rate_a_callback_set_survives(digits_split):
    (x, y), _ = digits_split
    model = cnnrs.Model("custom", learning_rate=1e-3, device="cpu", seed=0)
    model.fit(x[:200], y[:200], epochs=1, verbose=0)
    model.learning_rate = 2.5e-4  # as ReduceLROnPlateau sets it
    assert pickle.loads(pickle.dumps(model)).learning_rate == 2.5e-4


def test_an_untrained_model_is_refused_by_name():
    model = cnnrs.Model("custom", device="cpu", seed=0)
    with pytest.raises(TypeError, match=r"cannot pickle or copy cnnrs\.Model\('custom'.*fit it"):
        pickle.dumps(model)
    with pytest.raises(TypeError, match="untrained cnnrs.Model"):
        copy.deepcopy(model)


def test_a_pickled_model_loads_in_a_fresh_interpreter(trained, digits_split, tmp_path):
    """What a joblib or Ray worker does: unpickle in another process."""
    _, (x_test, _) = digits_split
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(trained))
    np.save(tmp_path / "x.npy", x_test)
    script = (
        "import pickle, sys, numpy as np\n"
        "m = pickle.loads(open(sys.argv[1] + '/model.pkl', 'rb').read())\n"
        "np.save(sys.argv[1] + '/p.npy', m.predict(np.load(sys.argv[1] + '/x.npy')))\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=300)
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), trained.predict(x_test))


def test_callbacks_that_ran_pickle_and_copy_as_fresh_ones(digits_split):
    """An EarlyStopping that kept a weight snapshot used to fail with "cannot pickle
    'cnnrs._core.WeightsSnapshot'"; a copy drops the snapshot and the model, as the copy
    every cross-validation fold gets does."""
    (x, y), _ = digits_split
    stop = EarlyStopping(monitor="loss", patience=3, restore_best_weights=True)
    plateau = ReduceLROnPlateau(monitor="loss", patience=5)
    model = cnnrs.Model("custom", device="cpu", seed=0)
    model.fit(x[:200], y[:200], epochs=2, verbose=0, callbacks=[stop, plateau])
    assert stop.best_weights is not None and stop.model is model
    for copied in (pickle.loads(pickle.dumps(stop)), copy.deepcopy(stop)):
        assert copied.best_weights is None and copied.model is None
        assert (copied.monitor, copied.patience, copied.restore_best_weights) == ("loss", 3, True)
        assert copied.best == stop.best
    assert pickle.loads(pickle.dumps(plateau)).patience == 5
    assert stop.best_weights is not None  # the original keeps its state


def test_an_object_that_cannot_be_pickled_is_named():
    snapshot_holder = cnnrs.Model("custom", device="cpu", seed=0)
    snapshot_holder.build((8, 8, 1), 10)
    with pytest.raises(TypeError, match="WeightsSnapshot"):
        pickle.dumps(snapshot_holder.snapshot())


@pytest.mark.skipif(cnnrs.cuda_available(), reason="maps a CUDA model where there is no GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_a_cuda_model_opens_on_the_cpu_without_a_gpu(trained, digits_split, device):
    """The state a GPU machine would pickle (its device named "cuda:N") opens here on
    the CPU, as torch.load's map_location would put it."""
    _, (x_test, _) = digits_split
    state = trained.__getstate__()
    state["_net"]["device"] = device
    model = cnnrs.Model.__new__(cnnrs.Model)
    model.__setstate__(state)
    assert model.device == "cpu"
    np.testing.assert_array_equal(model.predict(x_test), trained.predict(x_test))


def test_damaged_pickled_weights_are_a_data_format_error(trained):
    state = trained.__getstate__()
    state["_net"]["safetensors"] = state["_net"]["safetensors"][:-100]
    model = cnnrs.Model.__new__(cnnrs.Model)
    with pytest.raises(
        cnnrs.DataFormatError,
        match=r"^the pickled cnnrs.Model is not a valid cnnrs model file: it is",
    ):
        model.__setstate__(state)
