"""Learning-rate schedules for ``Model.fit(lr_schedule=...)``, as PyTorch defines them.

A schedule is resolved once per fit into a plan of learning rates, one per
training step, computed here in numpy; the Rust loop then applies one rate per
batch. The accepted values:

``None``
    The constant ``model.learning_rate``.
``"cosine"``
    ``torch.optim.lr_scheduler.CosineAnnealingLR`` stepped after every batch with
    ``T_max`` the total number of steps and ``eta_min=0``: from the base rate
    down to zero over the fit.
``"onecycle"`` or ``("onecycle", {"pct_start": ..., ...})``
    ``torch.optim.lr_scheduler.OneCycleLR`` stepped after every batch with
    ``max_lr`` the base rate and PyTorch's defaults (``pct_start=0.3``,
    ``anneal_strategy="cos"``, ``div_factor=25``, ``final_div_factor=1e4``,
    ``three_phase=False``); the dict may change any of those five. The momentum
    is not cycled (``cycle_momentum=False``).
``"constant"``
    The constant ``model.learning_rate`` (what None means for architectures
    without a recipe of their own).
``"triangle"`` or ``("triangle", {"start": ..., "peak": ..., "end": ...})``
    airbench's triangular schedule over all the fit's steps (defaults 0.2,
    0.23, 0.07): linear from ``start`` × the base rate to the base rate at step
    ``int(peak · total)``, then linear to ``end`` × the base rate.
``("step", every_epochs, factor)``
    ``torch.optim.lr_scheduler.StepLR(step_size=every_epochs, gamma=factor)``
    stepped after every epoch.
a callable
    Keras's ``LearningRateScheduler``: called at the start of every epoch as
    ``schedule(epoch)`` or, when it takes two arguments, ``schedule(epoch, lr)``
    with the current rate; what it returns becomes ``model.learning_rate``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any, Callable

import numpy as np

__all__ = [
    "ONECYCLE_DEFAULTS",
    "TRIANGLE_DEFAULTS",
    "EpochFunction",
    "Plan",
    "check_epochs",
    "check_rate",
    "cosine",
    "epoch_function",
    "onecycle",
    "plan",
    "step",
    "triangle",
    "validate",
]

#: ``OneCycleLR``'s defaults, which ``("onecycle", {...})`` may change.
ONECYCLE_DEFAULTS: dict[str, Any] = {
    "pct_start": 0.3,
    "anneal_strategy": "cos",
    "div_factor": 25.0,
    "final_div_factor": 1e4,
    "three_phase": False,
}


def _is_number(value: Any) -> bool:
    """A real number, Python's or numpy's (bools are not numbers here)."""
    return not isinstance(value, (bool, np.bool_)) and isinstance(
        value, (int, float, np.integer, np.floating)
    )


def _fraction(value: Any, name: str) -> float:
    """``value`` as a float in [0, 1]; numpy scalars are numbers too."""
    if not _is_number(value) or not 0 <= float(value) <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _positive(value: Any, name: str) -> float:
    if not _is_number(value):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


def check_rate(value: Any, name: str = "learning_rate") -> float:
    """``value`` as a float learning rate; anything but a positive finite number is refused."""
    return _positive(value, name)


def _steps(total_steps: int, at: np.ndarray | None) -> np.ndarray:
    """The step indices a schedule is read at: ``at``, or every step of the fit."""
    return np.arange(total_steps, dtype=np.float64) if at is None else at.astype(np.float64)


def cosine(base_lr: float, total_steps: int, at: np.ndarray | None = None) -> np.ndarray:
    """The rate of each of ``total_steps`` steps (or of the steps ``at``) under
    ``CosineAnnealingLR(T_max=total_steps, eta_min=0)``: ``base_lr * (1 + cos(pi * t /
    total_steps)) / 2`` for step ``t``.

    PyTorch computes the same curve as a running product of ratios; the two agree to
    rounding (under 1e-14 relative over thousands of steps).
    """
    t = _steps(total_steps, at)
    return base_lr * (1.0 + np.cos(np.pi * t / total_steps)) / 2.0


def onecycle(
    base_lr: float, total_steps: int, at: np.ndarray | None = None, **options: Any
) -> np.ndarray:
    """The rate of each of ``total_steps`` steps (or of the steps ``at``) under
    ``OneCycleLR(max_lr=base_lr, total_steps=total_steps, **options)``, computed with
    PyTorch's formula."""
    unknown = set(options) - set(ONECYCLE_DEFAULTS)
    if unknown:
        raise ValueError(
            f"unknown onecycle option(s) {sorted(unknown)}; accepted: {sorted(ONECYCLE_DEFAULTS)}"
        )
    o = {**ONECYCLE_DEFAULTS, **options}
    pct = _fraction(o["pct_start"], "onecycle pct_start")
    if o["anneal_strategy"] not in ("cos", "linear"):
        raise ValueError(
            f"onecycle anneal_strategy must be 'cos' or 'linear', got {o['anneal_strategy']!r}"
        )
    div = _positive(o["div_factor"], "onecycle div_factor")
    final_div = _positive(o["final_div_factor"], "onecycle final_div_factor")
    initial = base_lr / div
    minimum = initial / final_div
    if o["three_phase"]:
        phases = [
            (float(pct * total_steps) - 1, initial, base_lr),
            (float(2 * pct * total_steps) - 2, base_lr, initial),
            (total_steps - 1.0, initial, minimum),
        ]
    else:
        phases = [
            (float(pct * total_steps) - 1, initial, base_lr),
            (total_steps - 1.0, base_lr, minimum),
        ]
    if phases[0][0] == 0.0:  # step 0 ends the warm-up where it starts: 0 / 0
        raise ValueError(
            f"onecycle with pct_start={pct:g} over {total_steps} steps gives the warm-up a "
            "single step that starts and ends it (PyTorch's OneCycleLR divides by zero "
            "there); give the fit more steps or another pct_start"
        )
    steps = _steps(total_steps, at)
    rates = np.empty(len(steps), dtype=np.float64)
    done = np.zeros(len(steps), dtype=bool)
    start = 0.0
    for i, (end, lr_from, lr_to) in enumerate(phases):
        here = ~done if i == len(phases) - 1 else ~done & (steps <= end)
        frac = (steps[here] - start) / (end - start)
        if o["anneal_strategy"] == "cos":
            rates[here] = lr_to + (lr_from - lr_to) / 2.0 * (np.cos(np.pi * frac) + 1)
        else:
            rates[here] = (lr_to - lr_from) * frac + lr_from
        done |= here
        start = end
    return rates


#: airbench94's triangle: (start, peak, end).
TRIANGLE_DEFAULTS: dict[str, float] = {"start": 0.2, "peak": 0.23, "end": 0.07}


def triangle(
    base_lr: float, total_steps: int, at: np.ndarray | None = None, **options: Any
) -> np.ndarray:
    """The rate of each of ``total_steps`` steps (or of the steps ``at``) under airbench's
    triangular schedule:
    ``base_lr`` times the piecewise-linear curve through ``(0, start)``,
    ``(int(peak * total_steps), 1)`` and ``(total_steps, end)``, read at step ``t``
    (as its ``LambdaLR`` reads ``lr_schedule[t]``)."""
    unknown = set(options) - set(TRIANGLE_DEFAULTS)
    if unknown:
        raise ValueError(
            f"unknown triangle option(s) {sorted(unknown)}; accepted: {sorted(TRIANGLE_DEFAULTS)}"
        )
    o = {**TRIANGLE_DEFAULTS, **options}
    for key in ("start", "end"):
        if not _is_number(o[key]):
            raise TypeError(f"triangle {key} must be a number, got {o[key]!r}")
        o[key] = float(o[key])
        if not (math.isfinite(o[key]) and o[key] >= 0):
            raise ValueError(f"triangle {key} must be a finite number >= 0, got {o[key]}")
    peak = _fraction(o["peak"], "triangle peak")
    top = int(peak * total_steps)
    t = _steps(total_steps, at)
    up = o["start"] + (1.0 - o["start"]) * t / top if top > 0 else np.ones(len(t))
    down = 1.0 + (o["end"] - 1.0) * (t - top) / max(total_steps - top, 1)
    return base_lr * np.where(t < top, up, down)


def check_epochs(value: Any) -> float | int:
    """``epochs`` as a positive int, or a positive float (a fractional last epoch)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"epochs must be a number, got {type(value).__name__}")
    if isinstance(value, (int, np.integer)):
        if not 1 <= value <= 2**31:
            raise ValueError(f"epochs must be a number in (0, 2**31], got {value}")
        return int(value)
    if not (math.isfinite(value) and 0 < value <= 2**31):
        raise ValueError(f"epochs must be a number in (0, 2**31], got {value}")
    return float(value)


def step(base_lr: float, epochs: int, every_epochs: int, factor: float) -> np.ndarray:
    """The rate of each epoch under ``StepLR(step_size=every_epochs, gamma=factor)``."""
    e = np.arange(epochs)
    return base_lr * float(factor) ** (e // every_epochs)


class EpochFunction:
    """A ``(epoch) -> lr`` or ``(epoch, lr) -> lr`` function, called as Keras's
    ``LearningRateScheduler`` calls it (the arity decides; see :func:`epoch_function`)."""

    def __init__(self, schedule: Callable[..., Any]) -> None:
        if not callable(schedule):
            raise TypeError(f"schedule must be callable, got {type(schedule).__name__}")
        self.schedule = schedule
        self.takes_rate = _takes_two_arguments(schedule)

    def __call__(self, epoch: int, lr: float) -> float:
        value = self.schedule(epoch, lr) if self.takes_rate else self.schedule(epoch)
        if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)
        ):
            raise ValueError(
                f"the learning-rate schedule must return a number, got {value!r} for epoch {epoch}"
            )
        return _positive(value, f"the learning rate the schedule gave for epoch {epoch}")


def _takes_two_arguments(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False  # a builtin without a signature: the one-argument form
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in params):
        return True
    return len(positional) >= 2


def epoch_function(schedule: Callable[..., Any]) -> EpochFunction:
    """Wraps a Keras-style schedule function; see :class:`EpochFunction`."""
    return EpochFunction(schedule)


def _check_spec(spec: Any) -> tuple[str, tuple[Any, ...]]:
    """``spec`` as (kind, arguments); raises for anything that is not a schedule."""
    if isinstance(spec, str):
        if spec in ("cosine", "onecycle", "triangle", "constant"):
            return spec, ()
        if spec == "step":
            raise ValueError(
                "lr_schedule 'step' needs its settings: ('step', every_epochs, factor)"
            )
        raise ValueError(
            f"lr_schedule must be None, 'constant', 'cosine', 'onecycle', ('onecycle', {{...}}), "
            f"'triangle', ('triangle', {{...}}), "
            f"('step', every_epochs, factor) or a function of the epoch, got {spec!r}"
        )
    if isinstance(spec, (tuple, list)) and spec and isinstance(spec[0], str):
        kind, *args = spec
        if kind == "onecycle" and len(args) == 1 and isinstance(args[0], Mapping):
            onecycle(1.0, 10, **args[0])  # validates the options
            return "onecycle", (dict(args[0]),)
        if kind == "triangle" and len(args) == 1 and isinstance(args[0], Mapping):
            triangle(1.0, 10, **args[0])  # validates the options
            return "triangle", (dict(args[0]),)
        if kind == "step" and len(args) == 2:
            every, factor = args
            if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
                raise ValueError(
                    f"lr_schedule ('step', every_epochs, factor): every_epochs must be an "
                    f"integer >= 1, got {every!r}"
                )
            _positive(factor, "lr_schedule ('step', every_epochs, factor): factor")
            return "step", (int(every), float(factor))
    raise ValueError(
        f"lr_schedule must be None, 'constant', 'cosine', 'onecycle', ('onecycle', {{...}}), "
        f"'triangle', ('triangle', {{...}}), "
        f"('step', every_epochs, factor) or a function of the epoch, got {spec!r}"
    )


def validate(spec: Any) -> None:
    """Raises ValueError/TypeError unless ``spec`` is a schedule ``plan`` accepts."""
    if spec is None or callable(spec):
        return
    _check_spec(spec)


class Plan:
    """The rates of a fit under a named schedule, computed an epoch at a time:
    ``plan[epoch]`` is that epoch's ``steps_per_epoch`` rates. Nothing is computed
    for the epochs a fit never reaches, so any number of epochs costs the memory of
    one (a plan of every step up front took 32 GiB for ``epochs=2**31``)."""

    def __init__(
        self, kind: str, args: tuple[Any, ...], base_lr: float, epochs: int, steps: int, total: int
    ) -> None:
        self.kind, self.args, self.base_lr = kind, args, base_lr
        self.epochs, self.steps_per_epoch, self.total_steps = epochs, steps, total
        self[0]  # the options' checks that depend on the fit's length, before it starts

    def __len__(self) -> int:
        return self.epochs

    @property
    def shape(self) -> tuple[int, int]:
        return (self.epochs, self.steps_per_epoch)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """Every epoch's rates at once, ``(epochs, steps_per_epoch)``: for tests and
        plots of short fits (it allocates the whole plan)."""
        out = np.stack([self[e] for e in range(self.epochs)])
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, epoch: int) -> np.ndarray:
        if not 0 <= epoch < self.epochs:
            raise IndexError(f"epoch {epoch} is outside the plan's {self.epochs} epochs")
        first = epoch * self.steps_per_epoch
        # The unused tail of a last epoch cut short repeats the last rate.
        at = np.minimum(np.arange(first, first + self.steps_per_epoch), self.total_steps - 1)
        options = self.args[0] if self.args else {}
        if self.kind == "cosine":
            return cosine(self.base_lr, self.total_steps, at)
        if self.kind == "onecycle":
            return onecycle(self.base_lr, self.total_steps, at, **options)
        if self.kind == "triangle":
            return triangle(self.base_lr, self.total_steps, at, **options)
        every, factor = self.args  # "step": one rate for the whole epoch
        return np.full(self.steps_per_epoch, self.base_lr * factor ** (epoch // every))


def plan(
    spec: Any,
    base_lr: float,
    epochs: int,
    steps_per_epoch: int,
    total_steps: int | None = None,
) -> Plan | None:
    """The rates of a fit for a named schedule, as a :class:`Plan` (``plan[epoch]``,
    shape ``(steps_per_epoch,)``); None for ``None``, ``"constant"`` and functions
    (which run epoch by epoch).

    ``total_steps`` (default ``epochs * steps_per_epoch``) is the steps the fit
    takes when its last epoch is cut short: the schedule spans those, and the
    unused tail of the last epoch repeats its last rate.
    """
    if spec is None or callable(spec):
        return None
    kind, args = _check_spec(spec)
    full = epochs * steps_per_epoch
    total = full if total_steps is None else min(total_steps, full)
    if kind == "constant":
        return None
    return Plan(kind, args, base_lr, epochs, steps_per_epoch, total)
