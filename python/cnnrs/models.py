"""``cnnrs.Model``: a Keras-like CNN classifier trained in Rust on libtorch.

This module only normalises arguments (array layouts, label encodings) and
prints; building, training, evaluation and saving happen in ``cnnrs._core``.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Sequence
from typing import Any, Callable, Generic, TypeVar, Union, overload

import numpy as np

from . import _core, _pickling, schedules
from ._arrays import as_images, as_labels, augment_layers, check_count, class_count
from ._fit_turns import fit_turn
from ._look_inside import LookInside
from ._progress import KerasProgress
from .callbacks import Callback, CallbackList, LearningRateScheduler
from .optimizers import Muon

Architecture = Union[str, Sequence[Sequence[Any]]]

ARCHITECTURES: tuple[str, ...] = tuple(_core.architectures())
"""Names of the built-in architectures: the course's six, then the ones that carry a
training recipe ("airbench93", "airbench94", "airbench95", "airbench96")."""

COURSE_ARCHITECTURES: tuple[str, ...] = tuple(_core.course_architectures())
"""The course's six networks (Keras's, for any image size), which the study compares."""


def _check_split(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"validation_split must be a number, got {type(value).__name__}")
    if not 0 <= value < 1:
        raise ValueError(f"validation_split must be in [0, 1), got {value}")
    return float(value)


T = TypeVar("T")


class _FromCore(Generic[T]):
    """A read-only attribute of ``Model`` answered by its core model (``_net``), where
    the settings live once (``ModelConfig`` in Rust)."""

    def __init__(self, doc: str = "") -> None:
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _FromCore[T]: ...
    @overload
    def __get__(self, obj: Model, owner: type | None = None) -> T: ...
    def __get__(self, obj: Model | None, owner: type | None = None) -> T | _FromCore[T]:
        return self if obj is None else getattr(obj._net, self.name)


class Model(LookInside):
    """A CNN classifier with Keras's ``fit``/``evaluate``/``predict``.

    Parameters
    ----------
    architecture : str or list of tuples
        A built-in name (see ``cnnrs.ARCHITECTURES``: "baseline", "vgg3block",
        "with_dropout_0.2", "with_dropout_increasing", "custom", "with_batch_norm")
        or layer specs such as ``[("conv", 32), ("batchnorm",), ("maxpool", 2),
        ("dropout", 0.2), ("flatten",), ("dense", 128)]``. The softmax output
        layer is added for the number of classes in the data. airbench's layers
        may be written too: ``("whitening", 2)``, ``("conv_group", 128)`` (or
        ``("conv_group", 128, "residual")``, airbench96's group: a third conv and a
        residual connection) and ``("classifier", 1 / 9)`` (last; replaces the head).

        ``"airbench94"`` is Keller Jordan's 94%-on-CIFAR-10 network (airbench
        0.1.8) and carries its training recipe: unless you pass them, it trains
        with SGD (Nesterov momentum 0.85) in the reference's decoupled form
        (``learning_rate=11.5`` and ``weight_decay=0.0153`` per 1024 examples,
        the loss summed over the batch, batch-norm biases at 64× the rate), label
        smoothing 0.2, alternating flips and 2-pixel reflect translations,
        Lookahead averaging every 5 steps, precision "auto", and ``fit`` defaults
        to ``batch_size=1024``, ``epochs=9.9`` (the last epoch cut short, as the
        reference) and its triangular schedule (``lr_schedule="triangle"``);
        ``evaluate``/``predict`` default to ``tta="flip_translate"``. It needs
        images of at least 25×25 pixels (CIFAR's 32×32). ``"airbench93"`` and
        ``"airbench95"`` are its siblings from the same package: the same recipe with
        conv groups of 64/128/128 and 11 epochs (93.0% on CIFAR-10 in about 1/4 of
        the FLOPs), or 128/384/384, 15 epochs and ``learning_rate=10.0`` (95.0%).
        ``"airbench96"`` (96.05%, about 20× airbench94's FLOPs) gives its conv groups
        of 128/512/512 a third conv and a residual connection, adds a 12×12 cutout
        wholly inside the image and translates by up to 4 pixels, and trains 40
        epochs at ``learning_rate=9.0``; the rest of the recipe is airbench94's.
        ``"airbench94_muon"`` is the newer 94% record (KellerJordan/cifar10-airbench):
        Muon on the filters and Nesterov SGD on the rest, batch 2000, 8 epochs, a
        linear decay, no Lookahead.
    learning_rate : float, default 5e-4 (Muon: 1e-3)
        The optimiser's learning rate. ``model.learning_rate`` is the current one
        and may be set between epochs (``ReduceLROnPlateau`` does).
    device : str
        "auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:N".
    seed : int, optional
        Seeds weight initialisation, shuffling and dropout; the same seed on
        CPU gives the same history. None draws a random seed.
    precision : {"fp32", "bf16", "fp16", "auto"}, default "fp32"
        "fp32" (the default, as Keras; the same seed gives the same history on
        CPU); "bf16": mixed precision as libtorch's autocast does it (weights and
        optimiser state in float32, convolutions and dense layers in bfloat16),
        on CPU and CUDA; "fp16": the same with float16 and dynamic loss scaling
        (CUDA only; a ValueError on CPU); "auto": the fastest safe choice for the
        device: bf16 on CUDA GPUs with native bfloat16 (compute capability >= 8)
        and on CPUs with AVX-512 BF16 (every AMX CPU has it), fp16 on older
        GPUs, fp32 otherwise. ``model.precision`` tells what was picked.
    optimizer : {"adam", "adamw", "sgd", "muon"} or cnnrs.optimizers.Muon, default "adam"
        "adam" with Keras's defaults (beta_1 0.9, beta_2 0.999, epsilon 1e-7);
        "adamw": Adam with decoupled weight decay (``keras.optimizers.AdamW``,
        ``torch.optim.AdamW``); "sgd": stochastic gradient descent with momentum;
        "muon": Muon (``torch.optim.Muon``) on the convolutions' filters and AdamW
        on the rest; ``cnnrs.optimizers.Muon(...)`` sets its other knobs.
    momentum : float, default 0.9 (Muon: 0.95)
        SGD's or Muon's momentum (only with "sgd" or "muon"; Keras's ``SGD``
        defaults to 0).
    nesterov : bool, default False (Muon: True)
        Nesterov momentum (only with "sgd" or "muon").
    weight_decay : float, default 0.0
        "adam" and "sgd": an L2 penalty added to the gradient, as
        ``torch.optim.Adam``/``SGD(weight_decay=...)``; "adamw" and "muon":
        decoupled decay.
    label_smoothing : float, default 0.0
        In [0, 1): the targets become ``(1 - s) * one_hot + s / num_classes``, as
        ``keras.losses.CategoricalCrossentropy(label_smoothing=s)``.
    augment : list of tuples, optional (``[]`` turns a recipe's augmentation off)
        Random augmentation layers put in front of the network, run on the device in
        training steps only (inference sees the images as they are), as Keras's
        preprocessing layers: ``("random_flip", "horizontal" | "vertical" |
        "horizontal_and_vertical")``, ``("random_crop", pad)`` or ``("random_crop",
        pad, "reflect")`` (pad, then crop back to size at a random place, as
        torchvision's ``RandomCrop(size, padding=pad)``), ``("random_translation",
        fraction)`` (a shift of up to ``fraction`` of the height and width, zero
        fill) and ``("cutout", size)`` (one random ``size``×``size`` square of
        zeros per image, its centre anywhere, clipped at the borders; ``("cutout",
        size, "inside")`` keeps it wholly inside the image, as airbench96), and
        airbench's ``("alternating_flip",)`` (each image gets one random mirror at
        the start of a fit and is mirrored again every other epoch). Drawn from the
        model's own generator, so the seed decides them. The same specs may also
        open an ``architecture`` list.
    input_shape, num_classes : optional
        Build the weights now, e.g. to call ``summary()`` before ``fit``;
        otherwise both come from the first ``fit``'s data.
    class_names : list of str, optional
        Saved with the model and used by ``predict_image``.
    """

    def __init__(
        self,
        architecture: Architecture = "with_batch_norm",
        learning_rate: float | None = None,
        device: str = "auto",
        seed: int | None = None,
        *,
        precision: str | None = None,
        optimizer: str | Muon | None = None,
        momentum: float | None = None,
        nesterov: bool | None = None,
        weight_decay: float | None = None,
        label_smoothing: float | None = None,
        augment: Sequence[Sequence[Any]] | None = None,
        input_shape: tuple[int, int, int] | None = None,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if seed is None:
            seed = secrets.randbits(63)
        elif isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an integer or None, got {type(seed).__name__}")
        elif not 0 <= seed < 2**63:
            raise ValueError(f"seed must be in [0, 2**63), got {seed}")
        if learning_rate is not None and (
            isinstance(learning_rate, (bool, np.bool_))
            or not isinstance(learning_rate, (int, float, np.integer, np.floating))
        ):
            raise TypeError(f"learning_rate must be a number, got {type(learning_rate).__name__}")
        if augment is not None:
            augment = augment_layers(augment)
        # The keywords the user gave, by the names the core resolves (its one list):
        # the rest come from the architecture's recipe (airbench94) or Keras's
        # defaults, and a setting that does not apply (momentum with Adam) is
        # refused there, not ignored.
        given = locals()
        settings = {k: given[k] for k in _core.MODEL_SETTINGS if given[k] is not None}
        if isinstance(optimizer, Muon):
            # A setting given both here and to Muon() is refused by the core.
            settings["optimizer"] = optimizer.settings()
        self._attach(_core.Model(architecture, device, int(seed), settings))
        if class_names is not None:
            self._net.class_names = [str(c) for c in class_names]
            num_classes = num_classes or len(class_names)
        if input_shape is not None:
            if num_classes is None:
                raise ValueError("give num_classes (or class_names) together with input_shape")
            self.build(input_shape, num_classes)

    def _attach(self, net: _core.Model) -> None:
        """The one place a ``Model`` gets its core model and per-fit state."""
        self._net = net
        self.seed: int = net.seed
        self._learning_rate = net.learning_rate
        self.stop_training = False
        self.history: dict[str, list[float]] = {}

    # -- construction -----------------------------------------------------
    def build(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        """Allocates the weights for images of ``input_shape`` (H, W, C)."""
        try:
            shape = tuple(check_count(d, f"input_shape[{i}]") for i, d in enumerate(input_shape))
        except TypeError:
            raise TypeError(
                f"input_shape must be (height, width, channels) of integers >= 1, "
                f"got {input_shape!r}"
            ) from None
        except ValueError:
            raise ValueError(
                f"input_shape must be (height, width, channels) of integers >= 1, "
                f"got {input_shape!r}"
            ) from None
        if len(shape) != 3:
            raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}")
        self._net.build(shape, check_count(num_classes, "num_classes", 2))

    # Settings, fixed at construction, read from the core (where they live once).
    architecture = _FromCore[str]()
    optimizer = _FromCore[str]('The optimiser\'s name: "adam", "adamw", "sgd" or "muon".')
    momentum = _FromCore[float]()
    nesterov = _FromCore[bool]()
    weight_decay = _FromCore[float]()
    muon = _FromCore["dict[str, Any] | None"](
        "Muon's other settings (``cnnrs.optimizers.Muon``'s names), or None without Muon."
    )
    label_smoothing = _FromCore[float]()
    tta = _FromCore[str](
        "The test-time augmentation ``evaluate``/``predict`` use when the call names "
        'none: "none", or "flip_translate" for airbench94.'
    )
    recipe = _FromCore["dict[str, Any] | None"](
        "The fit defaults the architecture's recipe sets (``batch_size``, ``epochs``, "
        "``triangle``: the schedule's start, peak position and end), or None."
    )
    device = _FromCore[str]()
    precision = _FromCore[str](
        'The precision the model trains in, resolved for its device ("auto" never shows).'
    )
    input_shape = _FromCore["tuple[int, int, int] | None"]()
    num_classes = _FromCore["int | None"]()

    @property
    def learning_rate(self) -> float:
        """The current learning rate: the constructor's until something sets it
        (a callback between epochs, an ``lr_schedule`` function, or you)."""
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self._learning_rate = schedules.check_rate(value, "learning_rate")

    @property
    def class_names(self) -> list[str] | None:
        return self._net.class_names

    @class_names.setter
    def class_names(self, names: Sequence[str] | None) -> None:
        self._net.class_names = None if names is None else [str(c) for c in names]

    @property
    def normalization(self) -> dict[str, np.ndarray] | None:
        """Per-channel ``mean`` and ``std`` fitted on the training images."""
        stats = self._net.normalization
        if stats is None:
            return None
        return {"mean": np.asarray(stats[0]), "std": np.asarray(stats[1])}

    @property
    def layer_specs(self) -> list[dict[str, Any]]:
        """The hidden layers as dicts (``{"type": "conv", "filters": 32, ...}``); the
        softmax head is not listed."""
        return json.loads(self._net.layer_specs_json)

    @property
    def layers(self) -> list[dict[str, Any]]:
        """Keras-style layer table (name, type, output_shape, params); needs a built model."""
        plan = self._net.plan
        if plan is None:
            raise ValueError(
                "the model is not built yet: call fit, or pass input_shape and num_classes"
            )
        for layer in plan:
            layer["output_shape"] = (None, *layer["output_shape"])
            layer["params"] = layer["trainable_params"] + layer["non_trainable_params"]
        return plan

    def count_params(self) -> int:
        """Total number of parameters, trainable and not (as Keras counts them)."""
        return sum(layer["params"] for layer in self.layers)

    def summary(self, print_fn: Callable[[str], Any] | None = None) -> None:
        """Prints the layers, their output shapes and parameter counts, like Keras."""
        print_fn = print if print_fn is None else print_fn
        layers = self.layers
        rows = [
            (f"{r['name']} ({r['type']})", str(r["output_shape"]), f"{r['params']:,}")
            for r in layers
        ]
        w0 = max(len("Layer (type)"), *(len(r[0]) for r in rows)) + 2
        w1 = max(len("Output Shape"), *(len(r[1]) for r in rows)) + 2
        w2 = max(len("Param #"), *(len(r[2]) for r in rows))
        line = "─" * (w0 + w1 + w2)
        trainable = sum(r["trainable_params"] for r in layers)
        frozen = sum(r["non_trainable_params"] for r in layers)
        out = [f'Model: "{self.architecture}"', line]
        out.append(f"{'Layer (type)':<{w0}}{'Output Shape':<{w1}}{'Param #':>{w2}}")
        out.append(line)
        out.extend(f"{a:<{w0}}{b:<{w1}}{c:>{w2}}" for a, b, c in rows)
        out.append(line)
        out.append(f" Total params: {trainable + frozen:,}")
        out.append(f" Trainable params: {trainable:,}")
        out.append(f" Non-trainable params: {frozen:,}")
        print_fn("\n".join(out))

    # -- training and use -------------------------------------------------
    def fit(
        self,
        x: Any,
        y: Any,
        epochs: float | None = None,
        batch_size: int | None = None,
        validation_data: tuple[Any, Any] | None = None,
        shuffle: bool = True,
        verbose: int = 1,
        *,
        validation_split: float = 0.0,
        callbacks: Sequence[Callback] | None = None,
        lr_schedule: Any = None,
        progress: Any = None,
    ) -> dict[str, list[float]]:
        """Trains on (x, y) and returns the Keras history dict.

        Parameters
        ----------
        x : array_like
            Images (N, H, W, C) (or (N, H, W) grayscale), uint8 pixels or floats.
            The first fit also fits the per-channel normalisation on them.
        y : array_like
            Labels (N,) / (N, 1) or one-hot (N, k).
        epochs : int or float, default 10 (airbench94: 9.9)
            A fractional count runs its last epoch short, as airbench does:
            ``ceil(steps_per_epoch * epochs)`` steps in all.
        batch_size : int, default 64 (airbench94: 1024, dropping each epoch's
            last incomplete batch as its reference loader does)
        validation_data : (x_val, y_val), optional
            Scored after every epoch (``val_loss``, ``val_accuracy``); it takes
            precedence over ``validation_split``, as in Keras.
        shuffle : bool, default True
            Reshuffle the training images every epoch.
        verbose : {0, 1, 2}, default 1
            0 silent, 1 a progress bar, 2 one line per epoch.
        validation_split : float, default 0.0
            In [0, 1): hold out the *last* ``validation_split`` of ``x``/``y``
            (taken before any shuffling, split at ``floor(N * (1 - split))``, as
            Keras does) and score it as ``validation_data``.
        callbacks : list of cnnrs.callbacks.Callback, optional
            Keras's callbacks (``EarlyStopping``, ``ModelCheckpoint``,
            ``ReduceLROnPlateau``, ``LearningRateScheduler``, your own).
        lr_schedule : str, tuple or callable, optional
            None: the architecture's own (airbench94's ``"triangle"``), else
            constant. ``"constant"``, ``"triangle"`` or ``("triangle", {"start":
            0.2, "peak": 0.23, "end": 0.07})`` (airbench's: linear from ``start`` ×
            the rate up to the rate at ``peak`` of the steps, then down to ``end`` ×),
            ``"cosine"``, ``"onecycle"``, ``("onecycle", {...})``, ``("step",
            every_epochs, factor)`` (as PyTorch's ``CosineAnnealingLR``,
            ``OneCycleLR``, ``StepLR``; see :mod:`cnnrs.schedules`) or a function
            ``epoch -> lr`` / ``(epoch, lr) -> lr`` (Keras's
            ``LearningRateScheduler``). A named schedule starts from
            ``model.learning_rate`` at the start of the fit and leaves that
            attribute alone; if a callback changes ``model.learning_rate`` during
            the fit, the rest of the schedule is scaled by the same factor. A
            function sets ``model.learning_rate`` at every epoch, as Keras does.
        progress : object, optional
            A printer with ``batch(...)`` and ``epoch_end(...)`` in place of the
            Keras progress bar.

        Returns
        -------
        dict
            ``{"loss", "accuracy"[, "val_loss", "val_accuracy"], "learning_rate"}``,
            one value per epoch run (``learning_rate`` is the rate of the epoch's
            last step), plus anything callbacks add to the logs. Also kept as
            ``model.history``, filled epoch by epoch.

        Ctrl-C stops between batches with KeyboardInterrupt; like any exception
        (from a callback too) it leaves the model usable, with the epochs done.
        """
        recipe = self.recipe
        if epochs is None:
            epochs = recipe["epochs"] if recipe else 10
        if batch_size is None:
            batch_size = recipe["batch_size"] if recipe else 64
        if lr_schedule is None and recipe:
            start, peak, end = recipe["triangle"]
            lr_schedule = ("triangle", {"start": start, "peak": peak, "end": end})
        xa = as_images(x)
        ya, width = as_labels(y, xa.shape[0])
        epochs = schedules.check_epochs(epochs)
        batch_size = check_count(batch_size, "batch_size")
        num_classes = self._resolve_classes(ya, width)
        split = _check_split(validation_split)
        vx = vy = None
        if validation_data is not None:
            if len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (x_val, y_val)")
            vx = as_images(validation_data[0], "validation x")
            vy, _ = as_labels(validation_data[1], vx.shape[0], "validation y")
        elif split:
            n = xa.shape[0]
            split_at = int(math.floor(n * (1.0 - split)))
            if split_at == 0 or split_at == n:
                raise ValueError(
                    f"Training data contains {n} samples, which is not sufficient to split it "
                    f"into a validation and training set as specified by "
                    f"`validation_split={validation_split}`. Either provide more data, or a "
                    "different value for the `validation_split` argument."
                )
            xa, vx = xa[:split_at], xa[split_at:]
            ya, vy = ya[:split_at], ya[split_at:]
        schedules.validate(lr_schedule)
        hooks = CallbackList(callbacks)
        if callable(lr_schedule):
            hooks.callbacks.insert(0, LearningRateScheduler(lr_schedule))
        steps = self._net.steps_per_epoch(xa.shape[0], batch_size)
        total = math.ceil(steps * epochs)
        rounds = -(-total // steps)
        hooks.set_model(self)
        hooks.set_params({"epochs": rounds, "steps": steps, "verbose": verbose})
        base = self.learning_rate
        planned = schedules.plan(lr_schedule, base, rounds, steps, total_steps=total)
        printer = progress
        if printer is None and verbose:
            printer = KerasProgress(verbose)

        with fit_turn(self):
            return self._run_fit(
                xa,
                ya,
                vx,
                vy,
                num_classes,
                (rounds, steps, total),
                batch_size,
                shuffle,
                hooks,
                planned,
                base,
                printer,
            )

    def _run_fit(
        self,
        xa: np.ndarray,
        ya: np.ndarray,
        vx: np.ndarray | None,
        vy: np.ndarray | None,
        num_classes: int,
        counts: tuple[int, int, int],
        batch_size: int,
        shuffle: bool,
        hooks: CallbackList,
        planned: schedules.Plan | None,
        base: float,
        printer: Any,
    ) -> dict[str, list[float]]:
        epochs, steps, total = counts
        history: dict[str, list[float]] = {}
        self.history = history
        self.stop_training = False
        self._net.begin_fit(
            xa,
            ya,
            num_classes=num_classes,
            batch_size=batch_size,
            validation_x=vx,
            validation_y=vy,
            shuffle=bool(shuffle),
            total_steps=total,
            base_learning_rate=base,
        )
        try:
            hooks.on_train_begin()
            logs: dict[str, Any] = {}
            for epoch in range(epochs):
                hooks.on_epoch_begin(epoch)
                run = min(steps, total - epoch * steps)
                rates: float | list[float]
                if planned is None:
                    rates = last = self.learning_rate
                else:
                    row = planned[epoch][:run] * (self.learning_rate / base)
                    last = float(row[-1])
                    rates = last if np.all(row == last) else row.tolist()
                logs = dict(
                    self._net.fit_epoch(
                        epoch,
                        epochs,
                        learning_rates=rates,
                        printer=printer,
                        steps=run if run < steps else None,
                    )
                )
                logs["learning_rate"] = last
                hooks.on_epoch_end(epoch, logs)
                for key, value in logs.items():
                    history.setdefault(key, []).append(value)
                if self.stop_training:
                    break
            hooks.on_train_end(logs)
        finally:
            self._net.end_fit()
        return history

    def _resolve_classes(self, y: np.ndarray, width: int | None) -> int:
        if self._net.num_classes is not None:
            return self._net.num_classes
        return class_count(y, width, len(self.class_names or []))

    def evaluate(
        self,
        x: Any,
        y: Any,
        verbose: int = 0,
        *,
        tta: str | None = None,
        tta_threshold: float | None = None,
    ) -> dict[str, float]:
        """Mean cross-entropy and accuracy on (x, y): ``{"loss", "accuracy"}``.

        ``tta`` (test-time augmentation) and ``tta_threshold`` as in :meth:`predict`;
        the loss is then the cross-entropy of the averaged prediction.
        """
        xa = as_images(x)
        ya, _ = as_labels(y, xa.shape[0])
        loss, accuracy = self._net.evaluate(xa, ya, tta=tta, tta_threshold=tta_threshold)
        if verbose:
            print(f"{xa.shape[0]} images - accuracy: {accuracy:.4f} - loss: {loss:.4f}")
        return {"loss": loss, "accuracy": accuracy}

    def predict(
        self,
        x: Any,
        batch_size: int = 256,
        verbose: int = 0,
        *,
        tta: str | None = None,
        tta_threshold: float | None = None,
    ) -> np.ndarray:
        """Class probabilities, shape (N, num_classes), float32.

        ``tta`` (test-time augmentation): ``"flip"``, the mean of the probabilities
        of each image and its horizontal mirror; ``"flip_translate"``, airbench's
        ``tta_level=2`` (the softmax of the mean logits of the image and its mirror,
        weight 1/2, and of its two one-pixel diagonal reflect-padded translations and
        their mirrors, 1/8 each); ``"none"``, the image alone; None, the default,
        the model's own (``model.tta``: "flip_translate" for airbench94, else "none").

        ``tta_threshold`` (a probability in (0, 1]): the augmentation only for the
        images the network is unsure of, those whose top class probability without
        it is below the threshold; the rest keep their plain prediction. One forward
        pass per image plus the augmentation's (six for ``"flip_translate"``) per
        unsure one, as the hiverge CIFAR-10 record applies airbench's TTA;
        ``benchmarks/bench_tta.py`` measures what it saves and costs.
        """
        del verbose  # prediction is quick; kept for Keras compatibility
        return self._net.predict(
            as_images(x),
            check_count(batch_size, "batch_size"),
            tta=tta,
            tta_threshold=tta_threshold,
        )

    def state_dict(self) -> dict[str, np.ndarray]:
        """Every weight, frozen weight and batch-norm statistic as float32 arrays,
        keyed and laid out as PyTorch's ``state_dict`` (convolutions ``(out, in, kh,
        kw)``, dense ``(out, in)``; keys such as ``"conv2d.weight"``), sorted by name."""
        return dict(self._net.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Sets every variable from a :meth:`state_dict`-shaped mapping (arrays or
        anything ``np.asarray`` takes), as PyTorch's strict ``load_state_dict``: the
        keys must be exactly the model's and the shapes must match; nothing changes
        otherwise. The model must be built (``fit``, or ``input_shape`` and
        ``num_classes``)."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict of arrays, got {type(state).__name__}")
        arrays = {}
        for key, value in state.items():
            try:
                a = np.asarray(value)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"state[{key!r}] must be an array of numbers ({exc})") from None
            # An object array of None would become NaN, bools 0/1: only real numbers
            # are weights (and the core refuses non-finite ones).
            if a.dtype.kind not in "iuf":
                raise TypeError(
                    f"state[{key!r}] must be an array of real numbers, got dtype {a.dtype}"
                )
            with np.errstate(over="ignore"):  # a float64 beyond float32 becomes inf, refused
                arrays[key] = np.ascontiguousarray(a, dtype=np.float32)
        self._net.load_state_dict(arrays)

    def snapshot(self) -> Any:
        """A copy of every weight and batch-norm statistic, kept on the device, for
        :meth:`restore` (what ``EarlyStopping(restore_best_weights=True)`` keeps;
        Keras's ``get_weights`` without the trip to numpy)."""
        return self._net.snapshot()

    def restore(self, snapshot: Any) -> None:
        """Puts back the weights of a :meth:`snapshot` of this model."""
        self._net.restore(snapshot)

    def predict_image(self, image: Any, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """Classifies one photo: a path (GIF/PNG/JPEG/BMP) or an (H, W[, C]) array.

        The photo is loaded, resized to the model's input size (bilinear) and
        normalised with the training statistics. Returns ``{"class_index",
        "class_name", "confidence", "probabilities"}``.
        """
        if self.input_shape is None:
            raise ValueError("the model has not been trained yet; call fit first")
        h, w, c = self.input_shape
        if isinstance(image, (str, os.PathLike)):
            pixels = _core.load_image(image, grayscale=(c == 1), size=(w, h))
        else:
            pixels = self._resize_array(np.asarray(image), (h, w, c))
        if pixels.ndim == 2:
            pixels = pixels[..., np.newaxis]
        probs = self.predict(pixels[np.newaxis])[0]
        idx = int(np.argmax(probs))
        names = list(class_names) if class_names is not None else self.class_names
        if names is not None and len(names) != probs.shape[0]:
            raise ValueError(
                f"class_names has {len(names)} names but the model has {probs.shape[0]} classes"
            )
        return {
            "class_index": idx,
            "class_name": names[idx] if names is not None else None,
            "confidence": float(probs[idx]),
            "probabilities": probs,
        }

    @staticmethod
    def _resize_array(a: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
        h, w, c = shape
        if a.ndim == 2:
            a = a[..., np.newaxis]
        if a.ndim != 3:
            raise ValueError(f"image must be (H, W) or (H, W, C), got shape {a.shape}")
        if a.shape[2] != c:
            raise ValueError(f"image has {a.shape[2]} channels, the model takes {c}")
        if a.shape[:2] != (h, w):
            raise ValueError(
                f"image is {a.shape[0]}x{a.shape[1]} but the model takes {h}x{w}; "
                "pass a file path to resize automatically, or resize with "
                "cnnrs.load_image(path, size=(w, h))"
            )
        return a

    # -- persistence --------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Saves weights, architecture, input shape, class names and normalisation.

        One safetensors file, written beside ``path`` and renamed over it, so a
        failure never leaves a half-written file.
        """
        self._net.save(os.fspath(path))

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], device: str = "auto", *, precision: str | None = None
    ) -> Model:
        """Reads a model written by :meth:`save`.

        ``precision`` defaults to the one it was saved with (float32 where the
        device cannot run that, e.g. an "fp16" model loaded on a CPU).
        """
        model = cls.__new__(cls)
        model._attach(_core.Model.load(os.fspath(path), device, precision=precision))
        return model

    def __repr__(self) -> str:
        shape = self.input_shape
        built = f"input_shape={shape}, num_classes={self.num_classes}" if shape else "not built"
        return (
            f"cnnrs.Model({self.architecture!r}, learning_rate={self.learning_rate}, "
            f"device={self.device!r}, {built})"
        )

    # -- pickling and copying ---------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return _pickling.model_state(self)

    def __setstate__(self, state: dict[str, Any]) -> None:
        _pickling.restore_model(self, state)
