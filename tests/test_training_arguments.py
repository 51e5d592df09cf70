"""Bad arguments to Model and fit: a clear ValueError/TypeError naming the argument,
before anything large is allocated; numpy scalars work wherever Python numbers do."""

from __future__ import annotations

import numpy as np
import pytest

import cnnrs


def test_a_huge_label_is_refused_before_a_huge_output_layer(digits_small):
    x, _ = digits_small
    y = np.zeros(len(x), dtype=np.int64)
    y[-1] = 10**9
    with pytest.raises(ValueError, match=r"y has a label of 1000000000.*at most 100000"):
        cnnrs.Model("custom", device="cpu").fit(x, y, epochs=1, verbose=0)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ([("flatten",), ("dense", 10**12)], "dense units must be in"),
        ([("conv", 2**40), ("flatten",)], "conv filters must be in"),
        ([("flatten",), ("dense", 200_000)], "more than 536870912 parameters"),
        ([("maxpool", 10**6), ("flatten",)], "pool size"),
    ],
)
def test_absurd_layers_are_refused_by_name(digits_small, spec, words):
    x, y = digits_small
    with pytest.raises(ValueError, match=words):
        model = cnnrs.Model(spec, device="cpu")
        model.fit(x.repeat(8, 1).repeat(8, 2), y, epochs=1, verbose=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"device": "gpu"}, ValueError, "device must be"),
        ({"device": 3}, TypeError, "device must be"),
        ({"precision": 16}, TypeError, "precision"),
        ({"momentum": 0.5}, ValueError, 'momentum applies to optimizer="sgd" or "muon" only'),
    ],
)
def test_model_arguments_name_themselves(kwargs, error, words):
    with pytest.raises(error, match=words):
        cnnrs.Model("custom", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"epochs": "1"}, TypeError, "epochs"),
        ({"epochs": -0.5}, ValueError, "epochs"),
        ({"epochs": 0}, ValueError, "epochs"),
        ({"batch_size": -1}, ValueError, "batch_size"),
        ({"batch_size": "64"}, TypeError, "batch_size"),
    ],
)
def test_fit_arguments_name_themselves(digits_small, kwargs, error, words):
    x, y = digits_small
    model = cnnrs.Model("custom", device="cpu", seed=0)
    with pytest.raises(error, match=words):
        model.fit(x, y, verbose=0, **({"epochs": 1} | kwargs))
    # The model is still usable afterwards.
    assert len(model.fit(x, y, epochs=1, verbose=0)["loss"]) == 1


def test_numpy_scalars_work_like_python_numbers(digits_small):
    x, y = digits_small
    model = cnnrs.Model("custom", learning_rate=np.float32(1e-3), device="cpu", seed=np.int64(3))
    assert model.learning_rate == pytest.approx(1e-3)
    history = model.fit(x, y, epochs=np.int32(2), batch_size=np.int64(16), verbose=0)
    assert len(history["loss"]) == 2
    assert model.predict(x, batch_size=np.int16(8)).shape == (64, 10)


def test_label_smoothing_changes_training_itself(digits_small):
    x, y = digits_small
    plain = cnnrs.Model("custom", device="cpu", seed=5)
    smooth = cnnrs.Model("custom", device="cpu", seed=5, label_smoothing=0.2)
    plain.fit(x, y, epochs=2, verbose=0, shuffle=False)
    smooth.fit(x, y, epochs=2, verbose=0, shuffle=False)
    # Same seed, same batches: only the loss differs, so the weights must too.
    assert not np.allclose(plain.predict(x), smooth.predict(x))


def test_fit_inside_torch_no_grad_still_trains(digits_small):
    import torch

    x, y = digits_small
    model = cnnrs.Model("custom", device="cpu", seed=0)
    with torch.no_grad():
        history = model.fit(x, y, epochs=2, verbose=0)
    assert history["loss"][1] < history["loss"][0]


def test_loading_a_fifo_is_refused_at_once(tmp_path):
    import os

    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(cnnrs.DataFormatError, match="not a regular file"):
        cnnrs.Model.load(fifo, device="cpu")


def test_load_keeps_the_seed(digits_small, tmp_path):
    x, y = digits_small
    model = cnnrs.Model("custom", device="cpu", seed=1234)
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "m.safetensors")
    assert cnnrs.Model.load(tmp_path / "m.safetensors", device="cpu").seed == 1234
