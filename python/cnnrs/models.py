"""``cnnrs.Model``: a Keras-like CNN classifier trained in Rust on libtorch.

This module only normalises arguments (array layouts, label encodings) and
prints; building, training, evaluation and saving happen in ``cnnrs._core``.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Sequence
from typing import Any, Callable, Union

import numpy as np

from . import _core
from ._arrays import as_images, as_labels, check_count, class_count
from ._progress import KerasProgress

Architecture = Union[str, Sequence[Sequence[Any]]]

ARCHITECTURES: tuple[str, ...] = tuple(_core.architectures())
"""Names of the built-in architectures, as the course defines them."""


class Model:
    """A CNN classifier with Keras's ``fit``/``evaluate``/``predict``.

    Parameters
    ----------
    architecture : str or list of tuples
        A built-in name (see ``cnnrs.ARCHITECTURES``: "baseline", "vgg3block",
        "with_dropout_0.2", "with_dropout_increasing", "custom", "with_batch_norm")
        or layer specs such as ``[("conv", 32), ("batchnorm",), ("maxpool", 2),
        ("dropout", 0.2), ("flatten",), ("dense", 128)]``. The softmax output
        layer is added for the number of classes in the data.
    learning_rate : float
        Adam's learning rate (other Adam settings are Keras's defaults).
    device : str
        "auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:N".
    seed : int, optional
        Seeds weight initialisation, shuffling and dropout; the same seed on
        CPU gives the same history. None draws a random seed.
    precision : {"fp32", "bf16", "fp16", "auto"}
        "fp32" (the default, as Keras; the same seed gives the same history on
        CPU); "bf16": mixed precision as libtorch's autocast does it (weights and
        optimiser state in float32, convolutions and dense layers in bfloat16),
        on CPU and CUDA; "fp16": the same with float16 and dynamic loss scaling
        (CUDA only; a ValueError on CPU); "auto": the fastest safe choice for the
        device: bf16 on CUDA GPUs with native bfloat16 (compute capability >= 8)
        and on CPUs with AVX-512 BF16 (every AMX CPU has it), fp16 on older
        GPUs, fp32 otherwise. ``model.precision`` tells what was picked.
    input_shape, num_classes : optional
        Build the weights now, e.g. to call ``summary()`` before ``fit``;
        otherwise both come from the first ``fit``'s data.
    class_names : list of str, optional
        Saved with the model and used by ``predict_image``.
    """

    def __init__(
        self,
        architecture: Architecture = "with_batch_norm",
        learning_rate: float = 5e-4,
        device: str = "auto",
        seed: int | None = None,
        *,
        precision: str = "fp32",
        input_shape: tuple[int, int, int] | None = None,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if seed is None:
            seed = secrets.randbits(63)
        elif isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an integer or None, got {type(seed).__name__}")
        elif not 0 <= seed < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {seed}")
        if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)):
            raise TypeError(f"learning_rate must be a number, got {type(learning_rate).__name__}")
        self._net = _core.Network(
            architecture, float(learning_rate), device, int(seed), precision=precision
        )
        self.seed = int(seed)
        self.history: dict[str, list[float]] = {}
        if class_names is not None:
            self._net.class_names = [str(c) for c in class_names]
            num_classes = num_classes or len(class_names)
        if input_shape is not None:
            if num_classes is None:
                raise ValueError("give num_classes (or class_names) together with input_shape")
            self.build(input_shape, num_classes)

    # -- construction -----------------------------------------------------
    def build(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        """Allocates the weights for images of ``input_shape`` (H, W, C)."""
        shape = tuple(int(d) for d in input_shape)
        if len(shape) != 3:
            raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}")
        self._net.build(shape, check_count(num_classes, "num_classes", 2))

    @property
    def architecture(self) -> str:
        return self._net.architecture

    @property
    def learning_rate(self) -> float:
        return self._net.learning_rate

    @property
    def device(self) -> str:
        return self._net.device

    @property
    def precision(self) -> str:
        """The precision the model trains in, resolved for its device ("auto" never shows)."""
        return self._net.precision

    @property
    def input_shape(self) -> tuple[int, int, int] | None:
        return self._net.input_shape

    @property
    def num_classes(self) -> int | None:
        return self._net.num_classes

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
        epochs: int = 10,
        batch_size: int = 64,
        validation_data: tuple[Any, Any] | None = None,
        shuffle: bool = True,
        verbose: int = 1,
        *,
        progress: Any = None,
    ) -> dict[str, list[float]]:
        """Trains on (x, y) and returns the Keras history dict.

        ``x`` is (N, H, W, C) (or (N, H, W) grayscale), uint8 pixels or floats;
        ``y`` is labels (N,) / (N, 1) or one-hot (N, k). The first fit also
        fits the per-channel normalisation on ``x``. Returns
        ``{"loss", "accuracy"[, "val_loss", "val_accuracy"]}``, one value per epoch.
        Ctrl-C stops between batches with KeyboardInterrupt; the model stays usable.
        """
        xa = as_images(x)
        ya, width = as_labels(y, xa.shape[0])
        epochs = check_count(epochs, "epochs")
        batch_size = check_count(batch_size, "batch_size")
        num_classes = self._resolve_classes(ya, width)
        vx = vy = None
        if validation_data is not None:
            if len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (x_val, y_val)")
            vx = as_images(validation_data[0], "validation x")
            vy, _ = as_labels(validation_data[1], vx.shape[0], "validation y")
        printer = progress
        if printer is None and verbose:
            printer = KerasProgress(verbose)
        history = self._net.fit(
            xa,
            ya,
            num_classes=num_classes,
            epochs=epochs,
            batch_size=batch_size,
            validation_x=vx,
            validation_y=vy,
            shuffle=bool(shuffle),
            printer=printer,
        )
        self.history = history
        return history

    def _resolve_classes(self, y: np.ndarray, width: int | None) -> int:
        if self._net.num_classes is not None:
            return self._net.num_classes
        return class_count(y, width, len(self.class_names or []))

    def evaluate(self, x: Any, y: Any, verbose: int = 0) -> dict[str, float]:
        """Mean cross-entropy and accuracy on (x, y): ``{"loss", "accuracy"}``."""
        xa = as_images(x)
        ya, _ = as_labels(y, xa.shape[0])
        loss, accuracy = self._net.evaluate(xa, ya)
        if verbose:
            print(f"{xa.shape[0]} images - accuracy: {accuracy:.4f} - loss: {loss:.4f}")
        return {"loss": loss, "accuracy": accuracy}

    def predict(self, x: Any, batch_size: int = 256, verbose: int = 0) -> np.ndarray:
        """Class probabilities, shape (N, num_classes), float32."""
        del verbose  # prediction is quick; kept for Keras compatibility
        return self._net.predict(as_images(x), check_count(batch_size, "batch_size"))

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
        model._net = _core.Network.load(os.fspath(path), device, precision=precision)
        model.seed = 0
        model.history = {}
        return model

    def __repr__(self) -> str:
        shape = self.input_shape
        built = f"input_shape={shape}, num_classes={self.num_classes}" if shape else "not built"
        return (
            f"cnnrs.Model({self.architecture!r}, learning_rate={self.learning_rate}, "
            f"device={self.device!r}, {built})"
        )
