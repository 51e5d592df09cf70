"""Figures for the study. matplotlib is an optional extra: ``pip install cnnrs[plot]``.

Figures are built with :class:`matplotlib.figure.Figure` directly, not through
``pyplot``: nothing is shown or kept in pyplot's global state, so the functions
work the same in scripts, tests and notebooks (``display(fig)`` or ``fig.savefig``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._core import convolution, pooling

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["show_conv_and_pool"]


def _figure_class() -> type[Figure]:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - exercised by a monkeypatched import
        raise ImportError(
            "cnnrs.plotting needs matplotlib; install it with `pip install cnnrs[plot]`"
        ) from exc
    return Figure


def show_conv_and_pool(
    image: Any,
    kernels: Mapping[str, Any] | Sequence[Any],
    p: int = 2,
    pooling_type: str = "max_pooling",
    stride: int = 1,
) -> list[Figure]:
    """One figure per kernel: the "same"-padded convolution beside its pooling.

    Parameters
    ----------
    image : array_like
        ``(H, W)`` grayscale image (or ``(H, W, C)`` with ``(kh, kw, C)`` kernels).
    kernels : dict of str to array_like, or list of array_like
        The kernels; a dict's keys become the figure titles, a list's kernels
        are titled "kernel 1", "kernel 2", ...
    p : int, default 2
        Pooling window side.
    pooling_type : {"max_pooling", "avg_pooling"}, default "max_pooling"
    stride : int, default 1
        Pooling stride.

    Returns
    -------
    list of matplotlib.figure.Figure
        Not shown; display them in a notebook or save them with ``savefig``.
    """
    figure_class = _figure_class()
    items = (
        list(kernels.items())
        if isinstance(kernels, Mapping)
        else [(f"kernel {i}", k) for i, k in enumerate(kernels, start=1)]
    )
    figures = []
    for title, kernel in items:
        conv = convolution(image, kernel, padding="same")
        pooled = pooling(conv, p, pooling_type, stride)
        fig = figure_class(figsize=(9, 4.5), layout="constrained")
        axes = fig.subplots(1, 2)
        for ax, data, name in (
            (axes[0], conv, f"convolution (same) {conv.shape[0]}×{conv.shape[1]}"),
            (axes[1], pooled, f"{pooling_type} p={p} {pooled.shape[0]}×{pooled.shape[1]}"),
        ):
            ax.imshow(np.asarray(data), cmap="gray")
            ax.set_title(name, fontsize=10)
            ax.axis("off")
        fig.suptitle(str(title))
        figures.append(fig)
    return figures
