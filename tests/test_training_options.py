"""The Keras training options on the real network: every option must reach the
training loop (each test would fail if it were ignored), bad values are refused
with the argument named, and the model stays usable after any failure."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cnnrs
from cnnrs import schedules
from cnnrs.callbacks import Callback, EarlyStopping, ModelCheckpoint, ReduceLROnPlateau


def model(**kwargs):
    kwargs.setdefault("device", "cpu")
    kwargs.setdefault("seed", 0)
    return cnnrs.Model(kwargs.pop("architecture", "custom"), **kwargs)


def weights_norm(path):
    """The L2 norm of every float32 tensor in a saved model (safetensors layout)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header.pop("__metadata__")
    body = raw[8 + n :]
    total = 0.0
    for info in header.values():
        a, b = info["data_offsets"]
        total += float(np.sum(np.frombuffer(body[a:b], dtype="<f4").astype(np.float64) ** 2))
    return total**0.5


# --- schedules and learning rates ---------------------------------------------------


def test_history_learning_rate_follows_the_schedule(digits_all):
    x, y = digits_all[0][:300], digits_all[1][:300]
    m = model(learning_rate=1e-3)
    h = m.fit(x, y, epochs=3, batch_size=64, verbose=0, lr_schedule="cosine")
    steps = -(-300 // 64)
    assert (
        h["learning_rate"] == np.asarray(schedules.plan("cosine", 1e-3, 3, steps))[:, -1].tolist()
    )
    h2 = model(learning_rate=1e-3).fit(x, y, epochs=3, batch_size=64, verbose=0)
    assert h2["learning_rate"] == [1e-3] * 3
    assert h["loss"][1:] != h2["loss"][1:]  # the rates reached the optimiser
    h3 = model(learning_rate=1e-3).fit(
        x, y, epochs=3, batch_size=64, verbose=0, lr_schedule=("step", 1, 0.5)
    )
    assert h3["learning_rate"] == pytest.approx([1e-3, 5e-4, 2.5e-4], rel=1e-12)


def test_early_stopping_stops_on_a_plateau(digits_all):
    x, y = digits_all[0][:300], digits_all[1][:300]
    m = model(learning_rate=1e-9)  # the weights barely move: val_loss is flat
    stop = EarlyStopping(min_delta=1e-3, patience=2)
    h = m.fit(x, y, epochs=10, validation_split=0.2, verbose=0, callbacks=[stop])
    assert len(h["loss"]) == 3 and stop.stopped_epoch == 2


def test_restore_best_weights_gives_back_the_best_epoch_exactly(digits_all):
    x, y = digits_all
    xv, yv = x[1500:], y[1500:]
    m = model(learning_rate=2e-2)  # a high rate: val_loss goes up and down
    stop = EarlyStopping(patience=100, restore_best_weights=True)
    h = m.fit(x[:1500], y[:1500], epochs=6, validation_data=(xv, yv), verbose=0, callbacks=[stop])
    best = int(np.argmin(h["val_loss"]))
    assert stop.best_epoch == best
    scores = m.evaluate(xv, yv)
    assert scores["loss"] == pytest.approx(h["val_loss"][best], rel=1e-6)
    assert scores["accuracy"] == pytest.approx(h["val_accuracy"][best], abs=1e-9)


def test_reduce_lr_on_plateau_lowers_the_rate_the_network_uses(digits_all):
    x, y = digits_all[0][:300], digits_all[1][:300]
    m = model(learning_rate=1e-9)
    h = m.fit(
        x, y, epochs=4, validation_split=0.2, verbose=0,
        callbacks=[ReduceLROnPlateau(factor=0.5, patience=1, min_delta=1e-3)],
    )  # fmt: skip
    assert h["learning_rate"] == pytest.approx([1e-9, 1e-9, 5e-10, 2.5e-10], rel=1e-12)
    assert m.learning_rate == pytest.approx(1.25e-10, rel=1e-12)


# --- the loop ---------------------------------------------------------------------------


def test_validation_split_scores_exactly_the_last_rows(digits_all):
    x, y = digits_all[0][:500], digits_all[1][:500]
    m = model()
    h = m.fit(x, y, epochs=2, validation_split=0.25, verbose=0)
    split = 375  # floor(500 * 0.75)
    scores = m.evaluate(x[split:], y[split:])
    assert scores["loss"] == pytest.approx(h["val_loss"][-1], rel=1e-6)
    assert scores["accuracy"] == pytest.approx(h["val_accuracy"][-1], abs=1e-9)
    np.testing.assert_allclose(m.normalization["mean"], [x[:split].mean()], rtol=1e-5)


class StopAt(Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.stop_training = True


class Boom(Callback):
    def on_epoch_end(self, epoch, logs=None):
        # The model is free between epochs: a callback may use it.
        self.model.evaluate(np.zeros((2, 8, 8, 1), np.uint8), [0, 1])
        raise RuntimeError("callback failed")


def test_stop_training_and_a_failing_callback_leave_the_model_usable(digits_all):
    x, y = digits_all[0][:200], digits_all[1][:200]
    m = model()
    assert len(m.fit(x, y, epochs=5, verbose=0, callbacks=[StopAt(1)])["loss"]) == 2
    with pytest.raises(RuntimeError, match="callback failed"):
        m.fit(x, y, epochs=3, verbose=0, callbacks=[Boom()])
    assert m.history == {}  # as Keras: the failed epoch is not recorded
    assert m.predict(x[:5]).shape == (5, 10)
    assert len(m.fit(x, y, epochs=1, verbose=0)["loss"]) == 1  # fits again


def test_model_checkpoint_writes_the_best_model(tmp_path, digits_all):
    x, y = digits_all
    xv, yv = x[1500:], y[1500:]
    path = tmp_path / "best.safetensors"
    m = model(learning_rate=2e-2)
    h = m.fit(
        x[:1500], y[:1500], epochs=5, validation_data=(xv, yv), verbose=0,
        callbacks=[ModelCheckpoint(path, save_best_only=True)],
    )  # fmt: skip
    best = int(np.argmin(h["val_loss"]))
    saved = cnnrs.Model.load(path, device="cpu")
    assert saved.evaluate(xv, yv)["loss"] == pytest.approx(h["val_loss"][best], rel=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["best.safetensors"]


# --- optimisers, weight decay, label smoothing ---------------------------------------


def test_optimizers_and_weight_decay_reach_the_training(tmp_path, digits_all):
    x, y = digits_all[0][:400], digits_all[1][:400]
    histories, norms = {}, {}
    for name, kwargs in {
        "adam": {},
        "sgd": {"optimizer": "sgd", "learning_rate": 1e-2},
        "sgd_nesterov": {"optimizer": "sgd", "learning_rate": 1e-2, "nesterov": True},
        "adamw": {"optimizer": "adamw"},
        "adamw_decay": {"optimizer": "adamw", "weight_decay": 0.5},
        "adam_l2": {"weight_decay": 0.05},
    }.items():
        m = model(**kwargs)
        histories[name] = m.fit(x, y, epochs=3, verbose=0)["loss"]
        m.save(tmp_path / f"{name}.safetensors")
        norms[name] = weights_norm(tmp_path / f"{name}.safetensors")
    assert m.weight_decay == 0.05 and m.optimizer == "adam"
    assert histories["sgd"] != histories["adam"]
    assert histories["sgd"] != histories["sgd_nesterov"]
    assert norms["adamw_decay"] < norms["adamw"]
    assert norms["adam_l2"] < norms["adam"]
    loaded = cnnrs.Model.load(tmp_path / "adamw_decay.safetensors", device="cpu")
    assert (loaded.optimizer, loaded.weight_decay) == ("adamw", 0.5)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.numerics
def test_label_smoothing_is_torchs_cross_entropy(digits_all, smoothing):
    x, y = digits_all[0][:300], digits_all[1][:300]
    m = model(label_smoothing=smoothing)
    m.fit(x, y, epochs=2, verbose=0)
    assert m.label_smoothing == smoothing
    probs = torch.from_numpy(m.predict(x).astype(np.float64))
    expected = F.cross_entropy(probs.log(), torch.from_numpy(y), label_smoothing=smoothing)
    # Keras's evaluate reports the compiled loss, smoothing included.
    assert m.evaluate(x, y)["loss"] == pytest.approx(float(expected), rel=1e-4)


# --- augmentation and test-time augmentation ------------------------------------------


def left_or_right(n, seed=0):
    """8×8 images whose label says which half is bright: a horizontal flip swaps it."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 40, (n, 8, 8, 1)).astype(np.uint8)
    for i, label in enumerate(y):
        x[i, :, 4 * label : 4 * label + 4] += 200
    return x, y


def test_random_flip_runs_in_training_only_and_in_its_direction():
    x, y = left_or_right(600)
    xt, yt = left_or_right(200, seed=1)
    acc = {}
    for mode in (None, "vertical", "horizontal"):
        augment = None if mode is None else [("random_flip", mode)]
        m = model(learning_rate=3e-3, augment=augment)
        h = m.fit(x, y, epochs=4, verbose=0)
        acc[mode] = (h["accuracy"][-1], m.evaluate(xt, yt)["accuracy"])
    assert acc[None][0] > 0.95 and acc["vertical"][0] > 0.95  # the task survives
    # A horizontal flip makes the training labels a coin toss.
    assert acc["horizontal"][0] < 0.75


@pytest.mark.numerics
def test_inference_ignores_the_augmentation(digits_all):
    x, y = digits_all[0][:300], digits_all[1][:300]
    augment = [("random_crop", 1, "reflect"), ("random_translation", 0.1), ("cutout", 2)]
    a = model(augment=augment)
    a.fit(x, y, epochs=2, verbose=0)
    assert [s["type"] for s in a.layer_specs[:3]] == ["random_crop", "random_translation", "cutout"]
    p = a.predict(x)
    np.testing.assert_array_equal(p, a.predict(x))
    # The same weights in a network without augmentation predict the same.
    b = model()
    b.fit(x, y, epochs=1, verbose=0)  # the same normalisation (same images)
    b.restore(a.snapshot())
    np.testing.assert_allclose(b.predict(x), p, rtol=1e-6, atol=1e-7)


def test_cutout_inside_zeroes_one_whole_square_inside_the_image():
    """``("cutout", 12, "inside")``, airbench96's: one 12×12 square wholly inside each
    image. No public call runs an augmentation alone, so a linear classifier shows what
    it saw: one SGD step (no momentum, no decay) on one image changes the weights of
    exactly the inputs that were not zero (a weight's gradient is its input times the
    output's error), and the cutout's pixels are the zeros."""
    rng = np.random.default_rng(0)
    corners = set()
    for seed in range(12):
        m = cnnrs.Model(
            [("cutout", 12, "inside"), ("flatten",)],
            learning_rate=0.1,
            device="cpu",
            seed=seed,
            precision="fp32",
            optimizer="sgd",
            momentum=0.0,
            input_shape=(32, 32, 3),
            num_classes=2,
        )
        assert m.layer_specs[0] == {"type": "cutout", "size": 12, "placement": "inside"}
        before = m.state_dict()["dense.weight"]
        x = rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
        m.fit(x, np.zeros(1, np.int64), epochs=1, batch_size=1, verbose=0)
        # The dense layer reads the flattened (C, H, W) image.
        seen = (m.state_dict()["dense.weight"] != before).any(0).reshape(3, 32, 32)
        assert (seen == seen[0]).all()  # every channel alike
        rows, cols = np.nonzero(~seen[0])
        assert len(rows) == 144, len(rows)  # never clipped at a border
        top, left = rows.min(), cols.min()
        assert top <= 20 and left <= 20
        np.testing.assert_array_equal(~seen[0][top : top + 12, left : left + 12], True)
        corners.add((int(top), int(left)))
    assert len(corners) > 6, corners  # drawn, not fixed


@pytest.mark.numerics
def test_tta_flip_is_the_mean_of_the_image_and_its_mirror(digits_all):
    x, y = digits_all[0][:300], digits_all[1][:300]
    m = model()
    m.fit(x, y, epochs=1, verbose=0)
    mean = (m.predict(x) + m.predict(x[:, :, ::-1])) / 2
    np.testing.assert_allclose(m.predict(x, tta="flip"), mean, atol=1e-6)
    loss = F.nll_loss(torch.from_numpy(mean.astype(np.float64)).log(), torch.from_numpy(y))
    scores = m.evaluate(x, y, tta="flip")
    assert scores["loss"] == pytest.approx(float(loss), rel=1e-4)
    assert scores["accuracy"] == pytest.approx(float(np.mean(mean.argmax(1) == y)))
    with pytest.raises(ValueError, match="tta"):
        m.predict(x, tta="rotate")


# --- bad values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"augment": [("random_crop", -1)]}, "random_crop"),
        ({"augment": [("random_flip", "diagonal")]}, "random_flip"),
        ({"augment": [("rotate", 10)]}, "rotate"),
    ],
)
def test_bad_options_are_refused_with_their_name(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        model(**kwargs)


def test_bad_fit_options_leave_the_model_usable(digits_all):
    x, y = digits_all[0][:200], digits_all[1][:200]
    m = model()
    m.fit(x, y, epochs=1, verbose=0)
    for kwargs in (
        {"validation_split": 1.5},
        {"lr_schedule": "linear"},
        {"callbacks": [EarlyStopping(patience=3), "stop"]},
    ):
        with pytest.raises((ValueError, TypeError)):
            m.fit(x, y, epochs=1, verbose=0, **kwargs)
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=-1)
    assert len(m.fit(x, y, epochs=1, verbose=0)["loss"]) == 1


# --- cross-validation and the grid ----------------------------------------------------------


class CountEpochs(Callback):
    """Stops once it has seen two epochs in all: state that must not cross folds."""

    def __init__(self):
        super().__init__()
        self.epochs_seen = 0

    def on_epoch_end(self, epoch, logs=None):
        self.epochs_seen += 1
        if self.epochs_seen >= 2:
            self.model.stop_training = True


def test_cross_validation_gives_each_fold_fresh_callbacks(digits_all):
    x, y = digits_all[0][:300], digits_all[1][:300]
    counter, stop = CountEpochs(), EarlyStopping(patience=0, min_delta=10.0)
    r = cnnrs.cross_validate(
        "custom", x, y, cv=3, epochs=4, verbose=0, device="cpu", callbacks=[counter, stop]
    )
    # Every fold stops after its own second epoch (min_delta 10: no epoch improves).
    assert [len(h["loss"]) for h in r["histories"]] == [2, 2, 2]
    assert counter.epochs_seen == 0 and counter.model is None  # the caller's copy is untouched
    assert stop.model is None and stop.stopped_epoch == 0


def test_grid_search_takes_training_options(digits_all):
    x, y = digits_all[0][:200], digits_all[1][:200]
    r = cnnrs.grid_search(
        {"augment": [None, [("random_translation", 0.1)]], "lr_schedule": [None, "cosine"]},
        x, y, cv=2, verbose=0, device="cpu", epochs=1, validation_split=0.2,
        callbacks=[EarlyStopping(patience=0)],
    )  # fmt: skip
    assert len(r["results"]) == 4
    assert set(r["best_params"]) == {"augment", "lr_schedule"}
    assert all(len(h["val_loss"]) == 1 for res in r["results"] for h in res["histories"])
    assert r["best_model"].history["learning_rate"]


def test_augmentation_does_not_hurt_digits_cross_validation(digits_all):
    """3-fold CV on the digits with and without the study's digits augmentation (a 2×2
    cutout): equal within noise (measured 0.9652 against 0.9673, fold std 0.01)."""
    x, y = digits_all
    scores = {}
    for name, augment in {"plain": None, "augmented": [("cutout", 2)]}.items():
        r = cnnrs.cross_validate(
            "custom", x, y, cv=3, epochs=8, learning_rate=1e-3, verbose=0, device="cpu",
            augment=augment,
        )  # fmt: skip
        scores[name] = r["mean_accuracy"]
    assert scores["augmented"] > scores["plain"] - 0.02, scores
