"""cnnrs.callbacks and the epoch loop of ``Model.fit``, against Keras 3's rules.

The loop is driven here over a scripted stand-in for the Rust network, so each
callback sees exactly the metrics written below and every decision (the epoch
that stops, the weights restored, the rates sent to each epoch) is checked
exactly. The same callbacks on the real network are in test_training_options.py.
"""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest

import cnnrs
from cnnrs import schedules
from cnnrs.callbacks import (
    Callback,
    CallbackList,
    EarlyStopping,
    LearningRateScheduler,
    ModelCheckpoint,
    MonitorCallback,
    ReduceLROnPlateau,
)
from cnnrs.models import Model


class ScriptedNetwork:
    """Stands in for ``_core.Model``: epoch ``e`` reports ``val_loss = losses[e]``
    and ``val_accuracy = 1 - losses[e]``; its "weights" are the last epoch's number."""

    recipe = None
    tta = "none"

    @staticmethod
    def steps_per_epoch(n, batch_size):
        return -(-n // batch_size)

    def __init__(self, losses, learning_rate=1e-3):
        self.losses = list(losses)
        self.learning_rate = learning_rate
        self.num_classes = 2
        self.class_names = None
        self.rates = []
        self.calls = []
        self.weights = None
        self.restored = []
        self.saved = []

    def begin_fit(self, x, y, **kwargs):
        self.calls.append("begin_fit")
        self.x, self.y, self.kwargs = x, y, kwargs

    def fit_epoch(self, epoch, epochs, *, learning_rates, printer=None, steps=None):
        self.rates.append(learning_rates)
        self.weights = epoch
        v = self.losses[epoch]
        logs = {"loss": v, "accuracy": 0.5}
        if self.kwargs.get("validation_x") is not None:
            logs |= {"val_loss": v, "val_accuracy": 1 - v}
        return logs

    def end_fit(self):
        self.calls.append("end_fit")

    def snapshot(self):
        return ("weights of epoch", self.weights)

    def restore(self, snapshot):
        self.weights = snapshot[1]
        self.restored.append(snapshot[1])

    def save(self, path):
        self.saved.append(path)


def scripted(losses, learning_rate=1e-3):
    model = Model.__new__(Model)
    model._net = ScriptedNetwork(losses, learning_rate)
    model.seed = 0
    model.history = {}
    model._learning_rate = learning_rate
    model.stop_training = False
    model._fit_lock = threading.Lock()
    model._fit_thread = None
    return model


X = np.zeros((10, 4, 4, 1), np.uint8)
Y = np.arange(10) % 2


def fit(model, epochs=None, **kwargs):
    epochs = epochs or len(model._net.losses)
    kwargs.setdefault("validation_data", (X[:2], Y[:2]))
    return model.fit(X, Y, epochs=epochs, batch_size=4, verbose=0, **kwargs)


# --- EarlyStopping -----------------------------------------------------------------


def test_early_stopping_stops_after_patience_epochs_without_improvement():
    model = scripted([1.0, 0.5, 0.6, 0.7, 0.8, 0.9])
    stop = EarlyStopping(patience=2)
    history = fit(model, callbacks=[stop])
    assert len(history["val_loss"]) == 4  # epochs 2 and 3 did not improve on epoch 1
    assert stop.stopped_epoch == 3 and stop.best == 0.5 and stop.best_epoch == 1
    assert model._net.restored == []  # restore_best_weights is off
    assert model._net.calls == ["begin_fit", "end_fit"]


def test_early_stopping_restores_the_best_epoch_at_the_end():
    model = scripted([1.0, 0.5, 0.6, 0.7, 0.8, 0.9])
    fit(model, callbacks=[EarlyStopping(patience=2, restore_best_weights=True)])
    assert model._net.restored == [1]
    # Keras 3 restores at the end of training even when patience never ran out.
    model = scripted([1.0, 0.4, 0.6])
    fit(model, callbacks=[EarlyStopping(patience=5, restore_best_weights=True)])
    assert model._net.restored == [1]


@pytest.mark.parametrize(
    "kwargs,losses,stopped",
    [
        ({"patience": 0}, [1.0, 1.0, 0.5], 1),
        ({"patience": 1, "min_delta": 0.1}, [1.0, 0.95, 0.5], 1),
        ({"patience": 2}, [1.0, 1.0, 1.0, 1.0], 2),
        ({"patience": 2, "baseline": 0.3}, [1.0, 1.0, 1.0, 1.0], 1),
        ({"patience": 1, "start_from_epoch": 2}, [1.0, 2.0, 3.0, 3.0, 3.0], 3),
        ({"patience": 1, "monitor": "val_accuracy"}, [0.5, 0.6, 0.7], 1),
        ({"patience": 1, "monitor": "val_loss", "mode": "max"}, [0.5, 0.4, 0.3], 1),
    ],
)
def test_early_stopping_follows_keras_rules(kwargs, losses, stopped):
    model = scripted(losses)
    stop = EarlyStopping(**kwargs)
    history = fit(model, callbacks=[stop])
    assert stop.stopped_epoch == stopped
    assert len(history["loss"]) == stopped + 1


def test_early_stopping_state_is_reset_by_a_new_fit():
    stop = EarlyStopping(patience=0)
    fit(scripted([1.0, 2.0, 3.0]), callbacks=[stop])
    assert stop.stopped_epoch == 1
    history = fit(scripted([3.0, 2.0, 1.0]), callbacks=[stop])
    assert stop.stopped_epoch == 0 and len(history["loss"]) == 3


def test_early_stopping_on_a_missing_metric_warns_as_keras():
    model = scripted([1.0, 0.5])
    with pytest.warns(UserWarning, match="Early stopping conditioned on metric `val_loss`"):
        history = fit(model, validation_data=None, callbacks=[EarlyStopping()])
    assert len(history["loss"]) == 2


def test_early_stopping_bad_arguments():
    with pytest.raises(ValueError, match="patience must be >= 0"):
        EarlyStopping(patience=-1)
    with pytest.raises(ValueError, match="automatically determine"):
        fit(scripted([1.0]), callbacks=[EarlyStopping(monitor="f1")])
    with pytest.warns(UserWarning, match="mode sideways is unknown"):
        assert EarlyStopping(mode="sideways").mode == "auto"


# --- ModelCheckpoint --------------------------------------------------------------


def test_model_checkpoint_saves_every_epoch_with_formatted_names():
    model = scripted([1.0, 0.5, 0.7])
    fit(model, callbacks=[ModelCheckpoint("m-{epoch:02d}-{val_loss:.2f}.safetensors")])
    assert model._net.saved == [
        "m-01-1.00.safetensors",
        "m-02-0.50.safetensors",
        "m-03-0.70.safetensors",
    ]


def test_model_checkpoint_save_best_only_writes_only_on_improvement(capsys):
    model = scripted([1.0, 0.5, 0.7, 0.4, 0.4])
    fit(model, callbacks=[ModelCheckpoint("e{epoch}", save_best_only=True, verbose=1)])
    assert model._net.saved == ["e1", "e2", "e4"]
    out = capsys.readouterr().out
    assert "Epoch 3: val_loss did not improve from 0.50000" in out
    assert "Epoch 4: val_loss improved from 0.50000 to 0.40000, saving model to e4" in out
    model = scripted([0.5, 0.6, 0.4])
    fit(model, callbacks=[ModelCheckpoint("a{epoch}", "val_accuracy", save_best_only=True)])
    assert model._net.saved == ["a1", "a3"]  # accuracy = 1 - loss: 0.5, 0.4, 0.6


# --- ReduceLROnPlateau and schedules -------------------------------------------------


def test_reduce_lr_on_plateau_lowers_model_learning_rate():
    model = scripted([1.0, 1.0, 1.0, 1.0, 0.5, 0.5], learning_rate=1e-2)
    reduce = ReduceLROnPlateau(factor=0.5, patience=1, cooldown=1, min_lr=2e-3)
    history = fit(model, callbacks=[reduce])
    # Keras's order: epoch 1 waits 1 epoch -> 5e-3 and a cooldown of 1; epoch 2 first
    # counts the cooldown down to 0, then waits 1 -> 2.5e-3; epoch 3 -> max(1.25e-3,
    # min_lr) = 2e-3; epoch 4 improves; epoch 5 is at min_lr already.
    assert model._net.rates == [1e-2, 1e-2, 5e-3, 2.5e-3, 2e-3, 2e-3]
    assert history["learning_rate"] == model._net.rates
    assert model.learning_rate == 2e-3
    assert ReduceLROnPlateau().patience == 10  # Keras's defaults
    with pytest.raises(ValueError, match="factor >= 1.0"):
        ReduceLROnPlateau(factor=1.5)


def test_named_schedule_sends_its_per_step_rates():
    model = scripted([1.0] * 4)
    history = fit(model, lr_schedule="cosine")  # 10 images, batch 4: 3 steps per epoch
    plan = np.asarray(schedules.plan("cosine", 1e-3, 4, 3))
    assert model._net.rates == plan.tolist()
    assert history["learning_rate"] == plan[:, -1].tolist()
    assert model.learning_rate == 1e-3  # a named schedule leaves the attribute alone


def test_step_schedule_sends_one_rate_per_epoch():
    model = scripted([1.0] * 5)
    fit(model, lr_schedule=("step", 2, 0.1))
    assert model._net.rates == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-5], rel=1e-12)


def test_a_callback_changing_the_rate_scales_the_rest_of_a_schedule():
    model = scripted([1.0, 1.0, 1.0], learning_rate=1e-2)
    fit(model, lr_schedule="onecycle", callbacks=[ReduceLROnPlateau(factor=0.5, patience=1)])
    plan = np.asarray(schedules.plan("onecycle", 1e-2, 3, 3))
    np.testing.assert_allclose(model._net.rates[0], plan[0], rtol=1e-15)
    np.testing.assert_allclose(model._net.rates[1], plan[1], rtol=1e-15)
    np.testing.assert_allclose(model._net.rates[2], plan[2] * 0.5, rtol=1e-15)


@pytest.mark.parametrize(
    "schedule", [lambda epoch: 1e-3 / (epoch + 1), lambda epoch, lr: lr if epoch == 0 else lr / 2]
)
def test_schedule_functions_set_model_learning_rate_like_keras(schedule):
    model = scripted([1.0] * 3)
    history = fit(model, lr_schedule=schedule)
    assert history["learning_rate"][:2] == pytest.approx([1e-3, 5e-4], rel=1e-12)
    assert model.learning_rate == history["learning_rate"][-1]
    model = scripted([1.0] * 3)
    history_cb = fit(model, callbacks=[LearningRateScheduler(schedule)])
    assert history_cb["learning_rate"] == history["learning_rate"]


def test_model_learning_rate_is_settable_and_checked():
    model = scripted([1.0])
    model.learning_rate = 0.5
    assert model.learning_rate == 0.5
    with pytest.raises(ValueError, match="positive finite"):
        model.learning_rate = 0.0
    with pytest.raises(TypeError, match="must be a number"):
        model.learning_rate = "fast"


# --- the loop: stop_training, errors, validation_split --------------------------------


class StopAt(Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(dict(logs))
        if epoch == self.epoch:
            self.model.stop_training = True


def test_stop_training_from_a_custom_callback_ends_the_fit_after_that_epoch():
    model = scripted([1.0] * 5)
    cb = StopAt(1)
    history = fit(model, callbacks=[cb])
    assert len(history["loss"]) == 2 and len(cb.seen) == 2
    assert set(cb.seen[0]) == {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"}
    assert cb.params == {"epochs": 5, "steps": 3, "verbose": 0}


class Boom(Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("callback failed")


def test_a_callback_that_raises_propagates_and_end_fit_still_runs():
    model = scripted([1.0] * 4)
    with pytest.raises(RuntimeError, match="callback failed"):
        fit(model, callbacks=[Boom()])
    assert model._net.calls == ["begin_fit", "end_fit"]
    assert len(model.history["loss"]) == 1  # the epochs finished before the error


def test_validation_split_takes_the_last_rows_before_shuffling():
    model = scripted([1.0])
    fit(model, validation_data=None, validation_split=0.3)  # floor(10 * 0.7) = 7
    net = model._net
    assert net.x.shape[0] == 7 and net.kwargs["validation_x"].shape[0] == 3
    np.testing.assert_array_equal(net.kwargs["validation_y"], Y[7:])
    np.testing.assert_array_equal(net.y, Y[:7])
    # validation_data takes precedence, as in Keras
    model = scripted([1.0])
    fit(model, validation_split=0.3)
    assert model._net.x.shape[0] == 10 and model._net.kwargs["validation_x"].shape[0] == 2


@pytest.mark.parametrize(
    "split,exc,message",
    [
        (-0.1, ValueError, r"validation_split must be in \[0, 1\)"),
        (1.0, ValueError, r"validation_split must be in \[0, 1\)"),
        ("0.2", TypeError, "validation_split must be a number"),
        (0.95, ValueError, "not sufficient to split"),
    ],
)
def test_bad_validation_split(split, exc, message):
    model = scripted([1.0])
    with pytest.raises(exc, match=message):
        fit(model, validation_data=None, validation_split=split)
    assert model._net.calls == []  # refused before any work


def test_callback_list_refuses_what_it_cannot_run():
    class PerBatch(Callback):
        def on_train_batch_end(self, batch, logs=None):
            pass

    with pytest.raises(TypeError, match="on_train_batch_end"):
        CallbackList([PerBatch()])
    with pytest.raises(TypeError, match="Callback instances"):
        CallbackList([object()])
    with pytest.raises(TypeError, match="list of Callback"):
        CallbackList("early")
    model = scripted([1.0])
    with pytest.raises(TypeError, match="on_train_batch_end"):
        fit(model, callbacks=[PerBatch()])
    assert model._net.calls == []


def test_deepcopy_gives_fresh_callbacks_without_the_model():
    model = scripted([1.0, 2.0, 3.0])
    stop = EarlyStopping(patience=0)
    fit(model, callbacks=[stop])
    twin = copy.deepcopy(stop)
    assert stop.model is model and twin.model is None
    assert twin.stopped_epoch == stop.stopped_epoch and twin is not stop


class FitsAgain(Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.fit(X, Y, epochs=1, verbose=0)


def test_fit_from_inside_its_own_fit_is_refused():
    model = scripted([1.0, 1.0])
    with pytest.raises(RuntimeError, match="already fitting"):
        fit(model, callbacks=[FitsAgain()])
    assert model._net.calls == ["begin_fit", "end_fit"]
    assert len(fit(model)["loss"]) == 2  # and fits again afterwards


# --- MonitorCallback: the one "did it improve" rule ----------------------------------


def test_the_three_metric_watchers_share_monitor_callback():
    for cls in (EarlyStopping, ModelCheckpoint, ReduceLROnPlateau):
        assert issubclass(cls, MonitorCallback)
        # None of them carries its own copy of the rule.
        for name in ("_is_improvement", "_set_monitor_op", "get_monitor_value"):
            assert name not in vars(cls), (cls.__name__, name)


# (mode, min_delta, current, reference, improved), worked by hand in binary fractions so
# no rounding decides: "min" improves when current + min_delta < reference, "max" when
# current - min_delta > reference.
RULE_CASES = [
    ("min", 0.0, 0.25, 0.5, True),
    ("min", 0.0, 0.5, 0.5, False),
    ("min", 0.0, 0.75, 0.5, False),
    ("min", 0.125, 0.375, 0.5, False),  # 0.5 is not < 0.5
    ("min", 0.125, 0.25, 0.5, True),  # 0.375 < 0.5
    ("max", 0.0, 0.75, 0.5, True),
    ("max", 0.0, 0.5, 0.5, False),
    ("max", 0.0, 0.25, 0.5, False),
    ("max", 0.25, 0.75, 0.5, False),  # 0.5 is not > 0.5
    ("max", 0.25, 1.0, 0.5, True),  # 0.75 > 0.5
    ("min", 0.125, 123.0, None, True),  # anything beats no reference
    ("max", 0.125, -123.0, None, True),
]
WATCHERS = {
    "MonitorCallback": lambda mode, d: MonitorCallback(mode=mode, min_delta=d),
    "EarlyStopping": lambda mode, d: EarlyStopping(mode=mode, min_delta=d),
    "ReduceLROnPlateau": lambda mode, d: ReduceLROnPlateau(mode=mode, min_delta=d),
    "ModelCheckpoint": lambda mode, d: ModelCheckpoint("m", mode=mode),  # min_delta is 0
}


@pytest.mark.parametrize(
    "watcher,mode,min_delta,current,reference,improved",
    [
        (name, *case)
        for name in WATCHERS
        for case in RULE_CASES
        if name != "ModelCheckpoint" or case[1] == 0.0
    ],
)
def test_improvement_rule(watcher, mode, min_delta, current, reference, improved):
    cb = WATCHERS[watcher](mode, min_delta)
    assert cb.min_delta == min_delta
    cb._set_monitor_op()
    assert cb.monitor_op == mode
    assert cb._is_improvement(current, reference) is improved


@pytest.mark.parametrize(
    "monitor,direction",
    [("loss", "min"), ("val_loss", "min"), ("accuracy", "max"), ("val_acc", "max")],
)
def test_auto_mode_reads_cnnrs_metric_names(monitor, direction):
    for cls in (MonitorCallback, EarlyStopping, ReduceLROnPlateau):
        cb = cls(monitor=monitor)
        cb._set_monitor_op()
        assert cb.monitor_op == direction, cls.__name__
    with pytest.raises(ValueError, match="MonitorCallback callback received monitor=f1"):
        MonitorCallback(monitor="f1")._set_monitor_op()
    # ReduceLROnPlateau keeps Keras's own rule: "acc" in the name maximises, else minimise.
    for monitor, direction in (("f1", "min"), ("val_top5_acc", "max")):
        plateau = ReduceLROnPlateau(monitor=monitor)
        assert plateau.monitor_op == direction


def test_monitor_callback_checks_its_arguments():
    with pytest.raises(TypeError, match="monitor must be a metric name"):
        MonitorCallback(monitor=3)
    with pytest.raises(ValueError, match="min_delta must be a finite number"):
        MonitorCallback(min_delta=np.nan)
    with pytest.warns(UserWarning, match="MonitorCallback mode up is unknown"):
        assert MonitorCallback(mode="up").mode == "auto"
    assert MonitorCallback(baseline=0.25).best == 0.25


class BestSoFar(MonitorCallback):
    """A user's own watcher: records the epochs where the monitored metric improved."""

    def on_train_begin(self, logs=None):
        self._set_monitor_op()
        self.best = None
        self.improved_at = []

    def on_epoch_end(self, epoch, logs=None):
        current = self.get_monitor_value(logs)
        if current is not None and self._is_improvement(current, self.best):
            self.best = current
            self.improved_at.append(epoch)


def test_a_user_subclass_of_monitor_callback_watches_a_real_fit(digits_split):
    (x, y), _ = digits_split
    model = cnnrs.Model("custom", device="cpu", seed=0)
    watcher = BestSoFar(monitor="accuracy")
    history = model.fit(x[:256], y[:256], epochs=4, batch_size=32, verbose=0, callbacks=[watcher])
    acc = history["accuracy"]
    # Worked from the history: an epoch improves when it beats every earlier one.
    expected = [e for e in range(len(acc)) if all(acc[e] > a for a in acc[:e])]
    assert watcher.improved_at == expected and watcher.best == max(acc)
    assert watcher.monitor_op == "max"
    with pytest.warns(UserWarning, match="BestSoFar conditioned on metric `val_loss`"):
        model.fit(x[:64], y[:64], epochs=1, verbose=0, callbacks=[BestSoFar()])
