"""cnnrs.schedules: the per-step learning rates of each schedule against the rates
PyTorch's own schedulers give an SGD optimiser stepped the same way."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnrs import schedules


def torch_rates(make, total, base=1e-3):
    """The learning rate of each of ``total`` optimiser steps under the scheduler ``make``."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base, momentum=0.9)
    scheduler = make(opt)
    rates = []
    for _ in range(total):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return np.array(rates)


@pytest.mark.parametrize("epochs,steps", [(1, 7), (3, 17), (10, 100), (30, 100)])
def test_cosine_equals_cosine_annealing_lr_per_step(epochs, steps):
    total = epochs * steps
    ours = np.asarray(schedules.plan("cosine", 1e-3, epochs, steps))
    ref = torch_rates(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total), total)
    assert ours.shape == (epochs, steps)
    np.testing.assert_allclose(ours.ravel(), ref, rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"anneal_strategy": "linear"},
        {"three_phase": True},
        {"pct_start": 0.25, "div_factor": 10, "final_div_factor": 100},
    ],
)
@pytest.mark.parametrize("epochs,steps", [(2, 9), (5, 40)])
def test_onecycle_equals_onecycle_lr_per_step(options, epochs, steps):
    total = epochs * steps
    spec = ("onecycle", options) if options else "onecycle"
    ours = np.asarray(schedules.plan(spec, 3e-3, epochs, steps))
    ref = torch_rates(
        lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o, max_lr=3e-3, total_steps=total, cycle_momentum=False, **options
        ),
        total,
        base=3e-3,
    )
    np.testing.assert_allclose(ours.ravel(), ref, rtol=1e-12, atol=0)
    assert ours.max() <= 3e-3 * (1 + 1e-12)  # the peak is max_lr, reached on a whole step or not


def test_step_equals_step_lr_per_epoch():
    epochs, steps = 7, 5
    ours = np.asarray(schedules.plan(("step", 3, 0.5), 1e-2, epochs, steps))
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    ref = []
    for _ in range(epochs):
        ref.append([opt.param_groups[0]["lr"]] * steps)
        opt.step()
        sched.step()
    np.testing.assert_allclose(ours, np.array(ref), rtol=1e-12, atol=0)


def test_no_schedule_and_functions_have_no_plan():
    assert schedules.plan(None, 1e-3, 3, 4) is None
    assert schedules.plan(lambda epoch: 1e-3, 1e-3, 3, 4) is None


def test_epoch_function_takes_keras_one_or_two_argument_forms():
    one = schedules.epoch_function(lambda epoch: 0.1 / (epoch + 1))
    two = schedules.epoch_function(lambda epoch, lr: lr * 0.5)
    assert not one.takes_rate and two.takes_rate
    assert one(3, 1.0) == pytest.approx(0.025)
    assert two(3, 1.0) == 0.5

    def with_default(epoch, lr=None):
        return 0.1

    assert schedules.epoch_function(with_default).takes_rate  # Keras passes (epoch, lr)


@pytest.mark.parametrize(
    "spec,exc,message",
    [
        ("linear", ValueError, "lr_schedule must be"),
        ("step", ValueError, "needs its settings"),
        (("step", 0, 0.5), ValueError, "every_epochs"),
        (("step", 2, -1.0), ValueError, "factor"),
        (("step", 2, "x"), TypeError, "factor"),
        (("onecycle", {"pct": 0.2}), ValueError, "unknown onecycle option"),
        (("onecycle", {"pct_start": 1.5}), ValueError, "pct_start"),
        (("onecycle", {"anneal_strategy": "exp"}), ValueError, "anneal_strategy"),
        (3, ValueError, "lr_schedule must be"),
    ],
)
def test_bad_schedules_are_refused(spec, exc, message):
    with pytest.raises(exc, match=message):
        schedules.validate(spec)


def test_schedule_function_must_return_a_positive_number():
    with pytest.raises(ValueError, match="must return a number"):
        schedules.epoch_function(lambda epoch: "fast")(0, 1e-3)
    with pytest.raises(ValueError, match="positive finite"):
        schedules.epoch_function(lambda epoch: -1.0)(0, 1e-3)
