"""Hostile use of the training surface: no unbounded plan, no silent NaN weights, and
errors that name what the user wrote. The cases that could allocate without bound run
in a memory-capped child process (``run_isolated`` from test_hostile_inputs)."""

from __future__ import annotations

import numpy as np
import pytest
from test_hostile_inputs import run_isolated

import cnnrs
from cnnrs import schedules, study
from cnnrs.callbacks import ReduceLROnPlateau

# --- silent corruption: weights -------------------------------------------------------


def _built():
    m = cnnrs.Model("custom", device="cpu", seed=0, input_shape=(8, 8, 1), num_classes=10)
    return m, m.state_dict()


@pytest.mark.parametrize(
    "poison, error, fragment",
    [
        (lambda a: np.full(a.shape, None, dtype=object), TypeError, "real numbers"),
        (
            lambda a: np.where(np.arange(a.size).reshape(a.shape) == 0, np.nan, a),
            ValueError,
            "non-finite",
        ),
        (lambda a: np.full(a.shape, np.inf, np.float32), ValueError, "non-finite"),
        (lambda a: np.full(a.shape, 1e300), ValueError, "non-finite"),  # inf as float32
        (lambda a: np.full(a.shape, "1.0"), TypeError, "real numbers"),
        (lambda a: np.zeros(a.shape, bool), TypeError, "real numbers"),
    ],
)
def test_a_refused_load_names_the_tensor_and_changes_nothing(poison, error, fragment):
    m, before = _built()
    # The last tensor poisoned: every other one would already have been checked.
    key = sorted(before)[-1]
    bad = {**{k: v + 1 for k, v in before.items()}, key: poison(before[key])}
    with pytest.raises(error, match=fragment) as info:
        m.load_state_dict(bad)
    assert key in str(info.value)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_a_model_file_with_a_nan_weight_is_refused(tmp_path, digits_small):
    x, y = digits_small
    m = cnnrs.Model("custom", device="cpu", seed=0)
    m.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "m.safetensors"
    m.save(path)
    data = bytearray(path.read_bytes())
    data[-4:] = np.array([np.nan], np.float32).tobytes()  # the last weight of the file
    path.write_bytes(bytes(data))
    with pytest.raises(cnnrs.DataFormatError, match="non-finite"):
        cnnrs.Model.load(path)


# --- unbounded allocation -------------------------------------------------------------


def test_a_plan_costs_one_epoch_whatever_the_epochs():
    plan = schedules.plan("cosine", 1e-3, 2**31, 100, total_steps=2**31 * 100)
    assert plan.shape == (2**31, 100)
    last = plan[2**31 - 1]
    assert last.shape == (100,) and np.all((last >= 0) & (last < 1e-3))
    # CosineAnnealingLR's formula at the first steps and at the very last one.
    total = 2**31 * 100
    np.testing.assert_allclose(plan[0][:3], 1e-3 * (1 + np.cos(np.pi * np.arange(3) / total)) / 2)
    np.testing.assert_allclose(last[-1], 1e-3 * (1 + np.cos(np.pi * (total - 1) / total)) / 2)


def test_a_fit_of_two_to_the_31_epochs_with_a_schedule_allocates_no_plan():
    # Stopped by a callback after the first epoch; before, the plan alone took 32 GiB.
    out = run_isolated(
        """
        from cnnrs.callbacks import Callback
        class Stop(Callback):
            def on_epoch_end(self, epoch, logs=None):
                self.model.stop_training = True
        (x, y), _ = cnnrs.datasets.load_digits()
        m = cnnrs.Model("custom", device="cpu", seed=0)
        h = m.fit(x[:64], y[:64], epochs=2.0**31, lr_schedule="cosine", verbose=0,
                  callbacks=[Stop()])
        print("epochs run", len(h["loss"]))
        """,
        timeout=120,
    )
    assert "epochs run 1" in out


@pytest.mark.parametrize("epochs", [2**31 + 1, 2**40, 0, -3])
def test_absurd_integer_epochs_are_refused_in_terms_of_epochs(digits_small, epochs):
    x, y = digits_small
    with pytest.raises(ValueError, match=r"epochs must be a number in \(0, 2\*\*31\]"):
        cnnrs.Model("custom", device="cpu").fit(x, y, epochs=epochs, verbose=0)


# --- valid input refused ----------------------------------------------------------------


def test_numpy_scalars_in_schedule_options_are_numbers():
    a = np.asarray(schedules.plan(("onecycle", {"pct_start": np.float32(0.3)}), 1e-3, 2, 10))
    b = np.asarray(schedules.plan(("onecycle", {"pct_start": 0.3}), 1e-3, 2, 10))
    np.testing.assert_allclose(a, b, rtol=1e-6)
    t = schedules.plan(("triangle", {"peak": np.float64(0.5), "start": np.float32(0.1)}), 1, 1, 8)
    np.testing.assert_allclose(
        np.asarray(t),
        np.asarray(schedules.plan(("triangle", {"peak": 0.5, "start": 0.1}), 1, 1, 8)),
        rtol=1e-6,
    )


# --- errors that name what the user wrote ---------------------------------------------


@pytest.mark.parametrize(
    "augment, fragment",
    [
        ("cutout", "augment=[('cutout',)]"),
        (("cutout", 2), "augment=[('cutout', 2)]"),
        (5, "augment must be a list"),
        ([("cutout", 2), "random_flip"], "augment[1] must be a tuple"),
    ],
)
def test_augment_slips_say_how_to_write_it(augment, fragment):
    with pytest.raises(TypeError) as info:
        cnnrs.Model("custom", device="cpu", augment=augment)
    assert fragment in str(info.value)


@pytest.mark.parametrize("steps", [1, 3, 7])
def test_onecycle_on_few_steps_equals_pytorchs(steps):
    import torch

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=1e-3, total_steps=steps, cycle_momentum=False
    )
    ref = []
    for _ in range(steps):
        ref.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ours = np.asarray(schedules.plan("onecycle", 1e-3, 1, steps)).ravel()
    np.testing.assert_allclose(ours, ref, rtol=1e-12)


def test_onecycle_whose_warm_up_has_no_step_says_so(digits_small):
    x, y = digits_small
    with pytest.raises(ValueError, match="pct_start=0.5 over 2 steps gives the warm-up a single"):
        cnnrs.Model("custom", device="cpu").fit(
            x[:64],
            y[:64],
            epochs=1,
            batch_size=32,
            lr_schedule=("onecycle", {"pct_start": 0.5}),
            verbose=0,
        )


@pytest.mark.parametrize("factor", [np.nan, 0.0, 1.0, -0.5, np.inf])
def test_reduce_lr_on_plateau_refuses_a_bad_factor_when_made(factor):
    with pytest.raises(ValueError, match="factor"):
        ReduceLROnPlateau(factor=factor)


@pytest.mark.parametrize("shape", [(-1, 8, 1), (8, 0, 1), (8.5, 8, 1), ("8", 8, 1)])
def test_input_shape_names_itself(shape):
    with pytest.raises((TypeError, ValueError), match=r"input_shape must be \(height, width"):
        cnnrs.Model("custom", device="cpu", input_shape=shape, num_classes=10)


@pytest.mark.parametrize("side, error", [(32.5, TypeError), (0, ValueError), (10**6, ValueError)])
def test_upscale_validates_side(side, error):
    with pytest.raises(error, match="side"):
        study.upscale(np.zeros((2, 8, 8, 1), np.uint8), side)


@pytest.mark.parametrize("split", [0, 0.0, 1, -0.2, "0.2", None])
def test_compare_training_recipes_needs_a_held_out_part(digits_small, split):
    x, y = digits_small
    with pytest.raises(ValueError, match=r"validation_split must be a number in \(0, 1\)"):
        study.compare_training_recipes(
            {"architecture": "custom", "epochs": 1}, x, y, x, y, augment=[], validation_split=split
        )


# --- callbacks copied for every fold --------------------------------------------------


def test_a_callback_that_has_run_can_be_copied_into_cross_validate(digits_small):
    from cnnrs.callbacks import EarlyStopping

    x, y = digits_small
    stopper = EarlyStopping(monitor="loss", patience=1, restore_best_weights=True)
    cnnrs.Model("custom", device="cpu", seed=0).fit(x, y, epochs=2, verbose=0, callbacks=[stopper])
    assert stopper.best_weights is not None  # holds a snapshot of that model's weights
    cv = cnnrs.cross_validate("custom", x, y, cv=2, epochs=1, verbose=0, callbacks=[stopper])
    assert len(cv["fold_accuracies"]) == 2


def test_an_uncopyable_callback_is_named(digits_small):
    import threading

    from cnnrs.callbacks import Callback

    class Holds(Callback):
        def __init__(self):
            super().__init__()
            self.lock = threading.Lock()  # locks cannot be deep-copied

    x, y = digits_small
    with pytest.raises(TypeError, match=r"callbacks\[1\] \(Holds\) cannot be deep-copied"):
        cnnrs.cross_validate(
            "custom", x, y, cv=2, epochs=1, verbose=0, callbacks=[ReduceLROnPlateau(), Holds()]
        )


def test_flip_translate_on_images_too_small_to_pad_says_so():
    m = cnnrs.Model([("flatten",), ("dense", 4)], device="cpu", seed=0)
    x = np.random.default_rng(0).integers(0, 255, (8, 1, 1, 1)).astype(np.uint8)
    m.fit(x, np.arange(8) % 2, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"needs images of at least 2×2 pixels.*got 1×1"):
        m.predict(x, tta="flip_translate")
    assert m.predict(x, tta="flip").shape == (8, 2)


@pytest.mark.parametrize(
    "make, error, fragment",
    [
        (lambda: cnnrs.callbacks.EarlyStopping(min_delta=np.nan), ValueError, "min_delta"),
        (lambda: cnnrs.callbacks.EarlyStopping(monitor=3), TypeError, "monitor"),
        (lambda: cnnrs.callbacks.EarlyStopping(baseline=np.inf), ValueError, "baseline"),
        (lambda: ReduceLROnPlateau(min_delta=np.inf), ValueError, "min_delta"),
        (lambda: ReduceLROnPlateau(monitor=None), TypeError, "monitor"),
        (lambda: cnnrs.callbacks.ModelCheckpoint(3), TypeError, "filepath"),
    ],
)
def test_callback_arguments_are_checked_when_made(make, error, fragment):
    with pytest.raises(error, match=fragment):
        make()


def test_numpy_scalars_are_callback_numbers():
    r = ReduceLROnPlateau(factor=np.float32(0.5), min_delta=np.float64(1e-3), patience=np.int64(2))
    assert (r.factor, r.patience) == (0.5, 2)


def test_a_bad_augmentation_setting_names_its_place_in_augment():
    with pytest.raises(ValueError, match=r"augment\[1\]: random_crop pad"):
        cnnrs.Model("custom", device="cpu", augment=[("cutout", 2), ("random_crop", np.nan)])
