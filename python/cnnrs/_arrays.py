"""Argument normalisation shared by every public module: images, labels, counts.

One rule each, so ``Model.fit``, ``cross_validate``, ``grid_search``, the metrics
and the plots accept and refuse the same inputs with the same messages.

Labels
    ``(N,)``, an ``(N, 1)`` column, or ``(N, k)`` one-hot / score rows (reduced
    by argmax, so Keras's ``predict`` output works too). Integers, whole-number
    floats and **bools** are accepted: a bool array holds the classes 0 (False)
    and 1 (True), as scikit-learn and ``numpy.astype(int)`` read it, and a bool
    ``(N, k)`` array is one-hot. Strings, complex numbers and objects are refused
    (TypeError); negative labels and fractional or non-finite floats are refused
    (ValueError).
Images
    ``(N, H, W, C)`` or ``(N, H, W)`` (grayscale), real numbers. ``uint8`` and
    ``float32`` arrays pass through without a copy when they are C-contiguous;
    other integer arrays whose values fit 0..255 become ``uint8``, anything else
    ``float32``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["as_images", "as_labels", "augment_layers", "check_count", "class_count"]


def as_images(x: Any, name: str = "x") -> np.ndarray:
    """Images as a C-contiguous ``(N, H, W, C)`` uint8 or float32 array (no copy when
    ``x`` already is one)."""
    a = np.asarray(x)
    if a.dtype == object or a.dtype.kind in "bcSUVM":
        raise TypeError(
            f"{name} must hold real numbers (uint8 pixels or floats), got dtype {a.dtype}"
        )
    if a.ndim == 3:
        a = a[..., np.newaxis]  # (N, H, W) grayscale
    if a.ndim != 4:
        raise ValueError(
            f"{name} must be a batch of images (N, H, W, C) or (N, H, W), got shape {a.shape}"
        )
    if a.dtype != np.uint8:
        if a.dtype.kind in "iu" and a.size and a.min() >= 0 and a.max() <= 255:
            a = a.astype(np.uint8)
        else:
            if a.dtype.kind == "f" and a.dtype.itemsize > 4 and a.size:
                _check_float32_range(a, name)
            a = a.astype(np.float32, copy=False)
    return np.ascontiguousarray(a)


def _check_float32_range(a: np.ndarray, name: str) -> None:
    """Training computes in float32: a finite float64 pixel beyond its range would
    silently become infinity there, so it is refused with what was found."""
    finite = np.isfinite(a)
    if not finite.all():
        bad = a[~finite].flat[0]
        raise ValueError(f"{name} contains a non-finite value ({bad}); images must be finite")
    largest = float(np.abs(a).max())
    if largest > float(np.finfo(np.float32).max):
        raise ValueError(
            f"{name} has a pixel of magnitude {largest:g}, beyond float32's range "
            "(about 3.4e38) that training computes in; scale the images first"
        )


def as_labels(
    y: npt.ArrayLike, n: int | None = None, name: str = "y"
) -> tuple[npt.NDArray[np.int64], int | None]:
    """Integer labels ``(N,)`` (int64, C-contiguous; no copy when ``y`` already is
    that) and the width ``k`` of one-hot / score rows (None for plain labels).

    ``n``, when given, is the number of images the labels must match.
    """
    a = np.asarray(y)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold integer class labels, got dtype {a.dtype}")
    width = None
    if a.ndim == 2 and a.shape[1] > 1:
        width = int(a.shape[1])
        a = a.argmax(axis=1)
    elif a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    elif a.ndim != 1:
        raise ValueError(
            f"{name} must be labels (N,), a column (N, 1) or one-hot / score rows (N, k), "
            f"got shape {a.shape}"
        )
    if a.dtype.kind == "f" and not (np.all(np.isfinite(a)) and np.all(a == np.round(a))):
        raise ValueError(
            f"{name} must hold whole-number class labels, got values that are not integer"
        )
    labels = np.ascontiguousarray(a, dtype=np.int64)
    if n is not None and labels.shape[0] != n:
        raise ValueError(
            f"x has {n} images but {name} has {labels.shape[0]} labels; "
            "they must be the same length"
        )
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name} has a negative label ({labels.min()}); labels must be >= 0")
    return labels, width


#: The most classes a model may have (the Rust core's limit, checked here first so the
#: message can speak of the labels).
MAX_CLASSES = 100_000


def class_count(labels: np.ndarray, width: int | None = None, named: int = 0) -> int:
    """The number of classes: the largest label plus one, the one-hot width or the
    number of class names, whichever is largest, and at least 2."""
    seen = int(labels.max()) + 1 if labels.size else 0
    if seen > MAX_CLASSES:
        raise ValueError(
            f"y has a label of {seen - 1}, so the model would need {seen} classes; labels must "
            f"be class indices 0..k-1 with k at most {MAX_CLASSES}"
        )
    return max(seen, width or 0, named, 2)


def check_count(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an ``int`` >= ``minimum``; bools and non-integers are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def augment_layers(augment: Any) -> list[tuple[Any, ...]]:
    """``augment`` as a list of layer tuples; a lone name or tuple (a common slip for
    ``[("cutout", 2)]``) is refused with the spelling that works."""
    example = "[('random_flip', 'horizontal'), ('cutout', 2)]"
    lone = isinstance(augment, (str, bytes)) or (
        isinstance(augment, tuple) and bool(augment) and isinstance(augment[0], str)
    )
    if lone:
        one = augment if isinstance(augment, tuple) else (augment,)
        raise TypeError(
            f"augment must be a list of augmentation tuples such as {example}, got "
            f"{augment!r}; for this one augmentation write augment=[{one!r}]"
        )
    if not isinstance(augment, (list, tuple)):
        raise TypeError(f"augment must be a list of tuples such as {example}, got {augment!r}")
    layers = []
    for i, layer in enumerate(augment):
        if not isinstance(layer, (list, tuple)):
            raise TypeError(f"augment[{i}] must be a tuple such as ('cutout', 2), got {layer!r}")
        layers.append(tuple(layer))
    return layers
