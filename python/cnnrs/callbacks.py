"""Keras's training callbacks for ``Model.fit(callbacks=[...])``.

The same names, arguments, defaults and behaviour as ``keras.callbacks`` in Keras 3:
:class:`EarlyStopping`, :class:`ModelCheckpoint`, :class:`ReduceLROnPlateau`,
:class:`LearningRateScheduler`, the :class:`Callback` base class for your own, and
:class:`MonitorCallback`, the base of the three that watch a metric: it holds the one
"did it improve" rule they share (Keras 3's ``keras/src/callbacks/monitor_callback.py``).
``fit`` calls ``on_train_begin``, then ``on_epoch_begin``/``on_epoch_end`` around
every epoch and ``on_train_end``; the per-batch loop runs in Rust, so batch hooks
(``on_train_batch_end`` ...) are not called, and a callback that defines one is
refused rather than silently ignored.

Between epochs the model is free: a callback may call ``self.model.evaluate``,
``predict`` or ``save``, set ``self.model.learning_rate`` (what Keras callbacks do
with ``model.optimizer.learning_rate``) or ``self.model.stop_training = True``.
The ``logs`` dict of ``on_epoch_end`` holds ``loss``, ``accuracy``, ``val_loss``,
``val_accuracy`` (with validation data) and ``learning_rate``; what a callback
adds to it goes into the history.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from collections.abc import Iterable
from typing import Any, Callable

import numpy as np

from .schedules import epoch_function

__all__ = [
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "MonitorCallback",
    "ReduceLROnPlateau",
]

_BATCH_HOOKS = (
    "on_batch_begin",
    "on_batch_end",
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_test_batch_begin",
    "on_test_batch_end",
    "on_predict_batch_begin",
    "on_predict_batch_end",
)


class Callback:
    """Base class of the callbacks: override the hooks you need.

    Attributes
    ----------
    model : cnnrs.Model
        The model being trained, set by ``fit`` (``None`` before).
    params : dict
        ``{"epochs", "steps", "verbose"}`` of the running fit.
    """

    #: Attributes that hold one fit's device state (weight snapshots): a copy gets
    #: None there, as ``on_train_begin`` would set them anyway.
    _fit_state: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._model: Any = None
        self.params: dict[str, Any] = {}

    @property
    def model(self) -> Any:
        return getattr(self, "_model", None)

    def set_model(self, model: Any) -> None:
        self._model = model

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Called once before the first epoch."""

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        """Called once after the last epoch (also after an early stop), with the
        last epoch's logs."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Called before epoch ``epoch`` (0-based)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Called after epoch ``epoch`` (0-based) with its metrics."""

    def __deepcopy__(self, memo: dict[int, Any]) -> Callback:
        """A copy with fresh state and no model attached (cross-validation gives every
        fold its own copy of the callbacks)."""
        cls = type(self)
        new = cls.__new__(cls)
        memo[id(self)] = new
        for key, value in self.__getstate__().items():
            new.__dict__[key] = copy.deepcopy(value, memo)
        return new

    def __getstate__(self) -> dict[str, Any]:
        """What a pickle or copy carries: everything but the model and one fit's device
        state (a weight snapshot lives on the device of the model it came from), so a
        callback that has run pickles to joblib and Ray workers as a fresh one would."""
        return {
            key: None if key == "_model" or key in self._fit_state else value
            for key, value in self.__dict__.items()
        }


class CallbackList:
    """Calls every callback's hook in order (Keras's ``CallbackList``)."""

    def __init__(
        self,
        callbacks: Iterable[Callback] | None = None,
        model: Any = None,
        **params: Any,
    ) -> None:
        if callbacks is None:
            callbacks = []
        elif isinstance(callbacks, Callback):
            callbacks = [callbacks]
        elif isinstance(callbacks, (str, bytes)) or not isinstance(callbacks, Iterable):
            raise TypeError(f"callbacks must be a list of Callback, got {type(callbacks).__name__}")
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(
                    f"callbacks must be cnnrs.callbacks.Callback instances, got {type(cb).__name__}"
                )
            batch_hooks = [h for h in _BATCH_HOOKS if hasattr(cb, h)]
            if batch_hooks:
                raise TypeError(
                    f"{type(cb).__name__} defines {', '.join(batch_hooks)}, but cnnrs runs the "
                    "batches in Rust and calls only the train and epoch hooks"
                )
        if model is not None:
            self.set_model(model)
        if params:
            self.set_params(params)

    def __iter__(self) -> Any:
        return iter(self.callbacks)

    def __len__(self) -> int:
        return len(self.callbacks)

    def set_model(self, model: Any) -> None:
        for cb in self.callbacks:
            cb.set_model(model)

    def set_params(self, params: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.set_params(params)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        for cb in self.callbacks:
            cb.on_train_begin(logs)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        for cb in self.callbacks:
            cb.on_train_end(logs)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)


def _monitor(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"monitor must be a metric name (str) such as 'val_loss', got {value!r}")
    return value


def _finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return float(value)


def _non_negative(value: Any, name: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be >= 0 (and finite), got {value}")
    return value


class MonitorCallback(Callback):
    """Base of the callbacks that watch one metric: the "did it improve" rule they share.

    It holds the metric's name, the direction it should move (``mode``), the smallest
    change that counts (``min_delta``) and the best value so far (``best``), and
    decides with :meth:`_is_improvement`. :class:`EarlyStopping`,
    :class:`ModelCheckpoint` and :class:`ReduceLROnPlateau` derive from it; so can a
    callback of your own.

    Parameters
    ----------
    monitor : str, default "val_loss"
        The ``logs`` key to watch.
    mode : {"auto", "min", "max"}, default "auto"
        "min": lower is better, "max": higher is better, "auto": read from the
        metric's name (:meth:`_auto_mode`). An unknown mode warns and falls back
        to "auto", as in Keras.
    min_delta : float, default 0
        A change smaller than this does not count as an improvement. Kept with its
        sign (a subclass that wants Keras's ``abs`` passes ``abs(min_delta)``).
    baseline : float, optional
        The first value of ``best`` (``None``: the first value seen improves).

    Attributes
    ----------
    best : float or None
        The best value seen so far (or ``baseline``).
    monitor_op : {"min", "max"} or None
        The resolved direction, set by :meth:`_set_monitor_op` (``None`` before).
    """

    #: How the unknown-``mode`` warning names the callback.
    _mode_name = "MonitorCallback"
    #: The warning when ``monitor`` is not in the epoch's logs (``{monitor}`` and
    #: ``{available}`` are filled in).
    _missing_message = (
        "{cls} conditioned on metric `{monitor}` which is not available. "
        "Available metrics are: {available}"
    )

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "auto",
        min_delta: float = 0,
        baseline: float | None = None,
    ) -> None:
        super().__init__()
        self.monitor = _monitor(monitor)
        self.min_delta = _finite(min_delta, "min_delta")
        self.mode = self._check_mode(mode)
        self.best: float | None = baseline
        self.monitor_op: str | None = None

    def _check_mode(self, mode: str) -> str:
        if mode not in ("auto", "min", "max"):
            # stacklevel: this, MonitorCallback.__init__, the subclass's __init__, its caller.
            warnings.warn(
                f"{self._mode_name} mode {mode} is unknown, fallback to auto mode.", stacklevel=4
            )
            return "auto"
        return mode

    def _auto_mode(self) -> str:
        """The direction for ``mode="auto"``: cnnrs's metrics' own (Keras reads it from
        the compiled metric; the loss falls, accuracy rises); an unknown name raises."""
        metric = self.monitor.removeprefix("val_")
        if metric == "loss":
            return "min"
        if metric in ("accuracy", "acc"):
            return "max"
        raise ValueError(
            f"{type(self).__name__} callback received monitor={self.monitor} but cnnrs "
            "isn't able to automatically determine whether that metric should be "
            "maximized or minimized. Pass `mode='max'` in order to use the highest metric "
            "value, or pass `mode='min'` in order to use the lowest value."
        )

    def _set_monitor_op(self) -> None:
        """Resolves the direction ("min" or "max") from ``mode`` and ``monitor``."""
        self.monitor_op = self.mode if self.mode != "auto" else self._auto_mode()

    def _is_improvement(self, current: float, reference: float | None) -> bool:
        """Whether ``current`` beats ``reference`` by more than ``min_delta`` in the
        monitored direction; anything beats ``None``."""
        if reference is None:
            return True
        if self.monitor_op is None:
            self._set_monitor_op()
        if self.monitor_op == "min":
            return bool(current + self.min_delta < reference)
        return bool(current - self.min_delta > reference)

    def get_monitor_value(self, logs: dict[str, Any] | None) -> Any:
        """The monitored value from ``logs``, or ``None`` with a warning when it is not
        there (the callback then skips the epoch, as in Keras)."""
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is None:
            # stacklevel: this, the subclass's on_epoch_end, whoever called it.
            warnings.warn(
                self._missing_message.format(
                    cls=type(self).__name__, monitor=self.monitor, available=",".join(logs)
                ),
                stacklevel=3,
            )
        return value


class EarlyStopping(MonitorCallback):
    """Stops training when a monitored metric has stopped improving (Keras 3's rule).

    Parameters
    ----------
    monitor : str, default "val_loss"
        The ``logs`` key to watch.
    min_delta : float, default 0
        A change smaller than this does not count as an improvement.
    patience : int, default 0
        Epochs without improvement after which training stops.
    verbose : int, default 0
        1 prints when it stops and when it restores weights.
    mode : {"auto", "min", "max"}, default "auto"
        "auto" minimises losses and maximises accuracies.
    baseline : float, optional
        Training stops if the metric does not beat this within ``patience`` epochs.
    restore_best_weights : bool, default False
        At the end of training (stopped early or not), put back the weights of the
        best epoch, as Keras 3 does.
    start_from_epoch : int, default 0
        Epochs of warm-up during which nothing is watched.

    Attributes
    ----------
    stopped_epoch : int
        The 0-based epoch that stopped training (0 when it ran to the end).
    best_epoch : int
        The 0-based epoch with the best value.
    """

    _fit_state = ("best_weights",)
    _mode_name = "EarlyStopping"
    _missing_message = (
        "Early stopping conditioned on metric `{monitor}` which is not "
        "available. Available metrics are: {available}"
    )

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0,
        patience: int = 0,
        verbose: int = 0,
        mode: str = "auto",
        baseline: float | None = None,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
    ) -> None:
        _monitor(monitor)
        self.patience = _non_negative(patience, "patience")
        self.verbose = verbose
        self.baseline = baseline if baseline is None else _finite(baseline, "baseline")
        super().__init__(monitor, mode, abs(_finite(min_delta, "min_delta")))
        self.wait = 0
        self.stopped_epoch = 0
        self.restore_best_weights = restore_best_weights
        self.best_weights: Any = None
        self.start_from_epoch = _non_negative(start_from_epoch, "start_from_epoch")
        self.best_epoch = 0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        # Allow instances to be re-used.
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.monitor_op is None:
            self._set_monitor_op()
        current = self.get_monitor_value(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            # The first watched epoch's weights are the best seen so far.
            self.best_weights = self.model.snapshot()
            self.best_epoch = epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.snapshot()
            # Only restart wait if we beat both the baseline and our previous best.
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print(
                    "Restoring model weights from the end of the best epoch: "
                    f"{self.best_epoch + 1}."
                )
            self.model.restore(self.best_weights)


class ModelCheckpoint(MonitorCallback):
    """Saves the model after every epoch, or only when the monitored metric improves.

    Parameters
    ----------
    filepath : str or os.PathLike
        Where to save (with ``Model.save``, atomically). May hold Keras's format
        fields: ``"ckpt-{epoch:02d}-{val_loss:.2f}.safetensors"`` (``epoch`` is
        1-based, the other names are ``logs`` keys).
    monitor : str, default "val_loss"
    verbose : int, default 0
        1 prints a line for every save (and every skipped one with
        ``save_best_only``).
    save_best_only : bool, default False
        Save only when ``monitor`` improves on the best value so far.
    mode : {"auto", "min", "max"}, default "auto"
    """

    _mode_name = "ModelCheckpoint"
    _missing_message = "Can save best model only with {monitor} available, skipping."

    def __init__(
        self,
        filepath: Any,
        monitor: str = "val_loss",
        verbose: int = 0,
        save_best_only: bool = False,
        mode: str = "auto",
    ) -> None:
        try:
            self.filepath = os.fspath(filepath)
        except TypeError:
            raise TypeError(
                f"filepath must be a path (str or os.PathLike), got {filepath!r}"
            ) from None
        if not isinstance(self.filepath, str):
            self.filepath = os.fsdecode(self.filepath)
        super().__init__(monitor, mode)  # min_delta 0: any strict gain saves
        self.verbose = verbose
        self.save_best_only = save_best_only

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.monitor_op is None:
            self._set_monitor_op()
        if self.best is None:
            self.best = np.inf if self.monitor_op == "min" else -np.inf

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        path = self.filepath.format(epoch=epoch + 1, **logs)
        if not self.save_best_only:
            if self.verbose > 0:
                print(f"\nEpoch {epoch + 1}: saving model to {path}")
            self.model.save(path)
            return
        current = self.get_monitor_value(logs)
        if current is None:
            return
        assert self.best is not None
        if self._is_improvement(current, self.best):
            if self.verbose > 0:
                print(
                    f"\nEpoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to "
                    f"{current:.5f}, saving model to {path}"
                )
            self.best = current
            self.model.save(path)
        elif self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5f}")


class ReduceLROnPlateau(MonitorCallback):
    """Lowers ``model.learning_rate`` when a metric has stopped improving (Keras 3's rule).

    Parameters
    ----------
    monitor : str, default "val_loss"
    factor : float, default 0.1
        The new rate is ``rate * factor``; must be < 1.
    patience : int, default 10
        Epochs without improvement before the rate is lowered.
    verbose : int, default 0
    mode : {"auto", "min", "max"}, default "auto"
        "auto" maximises a monitor whose name holds "acc", minimises anything else.
    min_delta : float, default 1e-4
        A change smaller than this does not count as an improvement.
    cooldown : int, default 0
        Epochs to wait after a reduction before counting again.
    min_lr : float, default 0.0
        The rate is never lowered below this.
    """

    _mode_name = "Learning rate reduction"
    _missing_message = (
        "Learning rate reduction is conditioned on metric `{monitor}` which is not "
        "available. Available metrics are: {available}."
    )

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        verbose: int = 0,
        mode: str = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
    ) -> None:
        # Checked here, not when the first plateau comes mid-fit: a NaN or 0 factor
        # would make the rate NaN or 0 only then.
        if _non_negative(factor, "factor") >= 1.0 or factor == 0:
            raise ValueError(
                "ReduceLROnPlateau does not support a factor >= 1.0 or <= 0 (the new rate "
                f"is rate * factor). Received factor={factor}"
            )
        _monitor(monitor)
        self.factor = float(factor)
        self.min_lr = _non_negative(min_lr, "min_lr")
        super().__init__(monitor, mode, min_delta)
        self.patience = _non_negative(patience, "patience")
        self.verbose = verbose
        self.cooldown = _non_negative(cooldown, "cooldown")
        self.cooldown_counter = 0
        self.wait = 0
        self._reset()

    def _auto_mode(self) -> str:
        """Keras's rule for this callback: maximise a monitor whose name holds "acc",
        minimise anything else (never raises)."""
        return "max" if "acc" in self.monitor else "min"

    def _reset(self) -> None:
        self._set_monitor_op()
        self.best = -np.inf if self.monitor_op == "max" else np.inf
        self.cooldown_counter = 0
        self.wait = 0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._reset()

    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        current = self.get_monitor_value(logs)
        if current is None:
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._is_improvement(current, self.best):
            self.best = current
            self.wait = 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience:
                old_lr = float(self.model.learning_rate)
                if old_lr > np.float32(self.min_lr):
                    new_lr = max(old_lr * self.factor, self.min_lr)
                    self.model.learning_rate = new_lr
                    if self.verbose > 0:
                        print(
                            f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate "
                            f"to {new_lr}."
                        )
                    self.cooldown_counter = self.cooldown
                    self.wait = 0


class LearningRateScheduler(Callback):
    """Sets ``model.learning_rate`` at the start of every epoch from a function.

    Parameters
    ----------
    schedule : callable
        ``schedule(epoch, lr) -> new_lr`` (``epoch`` 0-based, ``lr`` the current
        rate) or ``schedule(epoch) -> new_lr``; the arity decides which.
    verbose : int, default 0
        1 prints the rate it sets.
    """

    def __init__(self, schedule: Callable[..., Any], verbose: int = 0) -> None:
        super().__init__()
        self.schedule = schedule
        self._function = epoch_function(schedule)
        self.verbose = verbose

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        learning_rate = self._function(epoch, float(self.model.learning_rate))
        self.model.learning_rate = learning_rate
        if self.verbose > 0:
            print(
                f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to "
                f"{learning_rate}."
            )
