"""Named 3×3 convolution kernels of the study, as read-only numpy arrays.

Each kernel has a one-line description of what it does to an image::

    >>> from cnnrs import kernels
    >>> kernels.names()
    ['sobel_x', 'sobel_y', 'prewitt_x', 'prewitt_y', 'laplacian', 'sharpen', ...]
    >>> kernels.describe("sobel_x")
    'Sobel X: horizontal gradient; bright on vertical edges (dark-to-light left to right).'
    >>> cnnrs.convolution(image, kernels.SOBEL_X, padding="same")

``STUDY_KERNELS`` maps the course notebook's readable titles ("Kernel 1" …
"Kernel 5" and the Gaussian blur) to its kernels, in the notebook's order.

:func:`nearest` finds, for a kernel a network learned, the study kernel it is most
like by normalised correlation (what ``cnnrs.plotting.plot_filters`` shows).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "DESCRIPTIONS",
    "GAUSSIAN_BLUR",
    "IDENTITY",
    "KERNELS",
    "LAPLACIAN",
    "PREWITT_X",
    "PREWITT_Y",
    "SHARPEN",
    "SOBEL_X",
    "SOBEL_Y",
    "STUDY_KERNELS",
    "correlation",
    "describe",
    "get",
    "names",
    "nearest",
]


def _frozen(rows: list[list[float]], scale: float = 1.0) -> np.ndarray:
    a = np.array(rows, dtype=np.float64) * scale
    a.flags.writeable = False
    return a


SOBEL_X = _frozen([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
SOBEL_Y = _frozen([[1, 2, 1], [0, 0, 0], [-1, -2, -1]])
PREWITT_X = _frozen([[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]])
PREWITT_Y = _frozen([[-1, -1, -1], [0, 0, 0], [1, 1, 1]])
LAPLACIAN = _frozen([[0, 1, 0], [1, -4, 1], [0, 1, 0]])
SHARPEN = _frozen([[0, -1, 0], [-1, 5, -1], [0, -1, 0]])
GAUSSIAN_BLUR = _frozen([[1, 2, 1], [2, 4, 2], [1, 2, 1]], 1.0 / 16.0)
IDENTITY = _frozen([[0, 0, 0], [0, 1, 0], [0, 0, 0]])

#: Every named kernel, by name.
KERNELS: dict[str, np.ndarray] = {
    "sobel_x": SOBEL_X,
    "sobel_y": SOBEL_Y,
    "prewitt_x": PREWITT_X,
    "prewitt_y": PREWITT_Y,
    "laplacian": LAPLACIAN,
    "sharpen": SHARPEN,
    "gaussian_blur": GAUSSIAN_BLUR,
    "identity": IDENTITY,
}

#: One line per kernel: what it does to an image.
DESCRIPTIONS: dict[str, str] = {
    "sobel_x": "Sobel X: horizontal gradient; bright on vertical edges "
    "(dark-to-light left to right).",
    "sobel_y": "Sobel Y: vertical gradient; bright on horizontal edges (light above dark).",
    "prewitt_x": "Prewitt X: horizontal gradient without centre weighting; finds vertical edges.",
    "prewitt_y": "Prewitt Y: vertical gradient without centre weighting; "
    "finds horizontal edges (dark above light).",
    "laplacian": "Laplacian: second derivative; outlines edges in every direction, "
    "flat areas go to 0.",
    "sharpen": "Sharpen: identity plus a negative Laplacian; boosts edges and fine detail.",
    "gaussian_blur": "Gaussian blur (normalised, sums to 1): smooths noise and fine detail.",
    "identity": "Identity: leaves the image unchanged (a reference for the others).",
}

#: The course notebook's kernels with readable titles, in its order.
STUDY_KERNELS: dict[str, np.ndarray] = {
    "Kernel 1: vertical edges (Prewitt-like, [1, 0, -1] rows)": _frozen(
        [[1, 0, -1], [1, 0, -1], [1, 0, -1]]
    ),
    "Kernel 2: horizontal edges (Prewitt Y)": PREWITT_Y,
    "Kernel 3: Sobel X (vertical edges)": SOBEL_X,
    "Kernel 4: Sobel Y (horizontal edges)": SOBEL_Y,
    "Kernel 5: outline (Laplacian with -5 centre, darkens flat areas)": _frozen(
        [[0, 1, 0], [1, -5, 1], [0, 1, 0]]
    ),
    "Gaussian blur (1/16 [[1, 2, 1], [2, 4, 2], [1, 2, 1]])": GAUSSIAN_BLUR,
}


def names() -> list[str]:
    """Names accepted by :func:`get` and :func:`describe`, in a stable order."""
    return list(KERNELS)


def get(name: str) -> np.ndarray:
    """The kernel called ``name`` (a read-only float64 ``(3, 3)`` array).

    Raises
    ------
    KeyError
        ``name`` is not one of :func:`names`; the message lists them.
    """
    try:
        return KERNELS[name]
    except KeyError:
        raise KeyError(f"unknown kernel {name!r}; known kernels: {', '.join(KERNELS)}") from None


def describe(name: str | None = None) -> str:
    """One line on what kernel ``name`` does, or one line per kernel if ``name`` is None."""
    if name is None:
        return "\n".join(f"{n:14s} {DESCRIPTIONS[n]}" for n in KERNELS)
    get(name)
    return DESCRIPTIONS[name]


def correlation(a: Any, b: Any) -> float:
    """Normalised correlation of two kernels of the same shape: the Pearson correlation
    of their values, in [-1, 1]. It ignores scale and offset (a kernel and ``2 * k + 1``
    correlate 1; a kernel and its negative -1); 0 when either kernel is constant."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if np.shape(a) != np.shape(b):
        raise ValueError(f"kernels must have the same shape, got {np.shape(a)} and {np.shape(b)}")
    x, y = x - x.mean(), y - y.mean()
    norm = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(np.clip(x @ y / norm, -1.0, 1.0)) if norm > 0 else 0.0


def nearest(kernel: Any, candidates: Mapping[str, Any] | None = None) -> tuple[str, float]:
    """The candidate most like ``kernel`` by :func:`correlation`, as ``(name, r)``.

    The absolute correlation decides, since an edge detector and its negative find the
    same edges (with the opposite sign); ``r`` keeps the sign. ``kernel`` is ``(kh,
    kw)``, or ``(kh, kw, in)`` as a learned filter of a colour network is, compared
    through the sum over its input channels (what it does to a gray image).
    ``candidates`` defaults to :data:`STUDY_KERNELS`; only those of ``kernel``'s size
    are compared.

    Raises
    ------
    ValueError
        No candidate has ``kernel``'s size.
    """
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim == 3:
        k = k.sum(axis=2)
    if k.ndim != 2:
        raise ValueError(f"kernel must be (kh, kw) or (kh, kw, in), got shape {np.shape(kernel)}")
    pool = STUDY_KERNELS if candidates is None else candidates
    scored = [(name, correlation(k, c)) for name, c in pool.items() if np.shape(c) == k.shape]
    if not scored:
        raise ValueError(f"no candidate kernel is {k.shape[0]}×{k.shape[1]}")
    return max(scored, key=lambda item: abs(item[1]))
