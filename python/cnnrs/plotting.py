"""Figures for the study. matplotlib is an optional extra: ``pip install cnnrs[plot]``.

Figures are built with :class:`matplotlib.figure.Figure` directly, not through
``pyplot``: nothing is shown or kept in pyplot's global state, so the functions
work the same in scripts, tests and notebooks (``display(fig)`` or ``fig.savefig``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._arrays import as_labels
from ._core import convolution, pooling

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "plot_class_scores",
    "plot_confusion_matrix",
    "plot_fold_accuracies",
    "plot_history",
    "plot_image",
    "plot_images",
    "show_conv_and_pool",
]


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
        pooled = pooling(conv, p, pooling_type, stride)  # type: ignore[arg-type]
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


def plot_image(image: Any, title: str | None = None, size: float = 5.0) -> Figure:
    """One image, without axes: grayscale for ``(H, W)`` or ``(H, W, 1)``, colour for
    ``(H, W, 3)``.

    Parameters
    ----------
    image : array_like
        ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)``; uint8 pixels or floats.
    title : str, optional
        Default: the image's size, e.g. "512×512".
    size : float, default 5
        Width and height of the figure in inches.

    Returns
    -------
    matplotlib.figure.Figure
    """
    pixels, cmap = _displayable(np.asarray(image))
    fig = _figure_class()(figsize=(size, size), layout="constrained")
    ax = fig.subplots()
    ax.imshow(pixels, cmap=cmap)
    ax.set_title(title if title is not None else f"{pixels.shape[0]}×{pixels.shape[1]}")
    ax.axis("off")
    return fig


def _displayable(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """An (H, W) or (H, W, 3) image imshow can draw, and the colormap it needs."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        return image, "gray"
    if image.dtype != np.uint8:
        lo, hi = float(np.min(image)), float(np.max(image))
        image = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image, dtype=float)
    return image, None


def plot_images(
    x: Any, y: Any, class_names: Sequence[str] | None = None, n: int = 30, ncols: int = 10
) -> Figure:
    """A grid of the first ``n`` images titled with their class names (3×10 by default).

    Parameters
    ----------
    x : array_like
        Images ``(N, H, W, C)`` or ``(N, H, W)``; uint8 pixels or floats.
    y : array_like
        Labels ``(N,)``, ``(N, 1)`` or one-hot ``(N, k)``.
    class_names : sequence of str, optional
        Title of each label; default the label number.
    n : int, default 30
        How many images (at most ``N``).
    ncols : int, default 10
        Images per row.

    Returns
    -------
    matplotlib.figure.Figure
    """
    images = np.asarray(x)
    labels, _ = as_labels(y)
    if images.ndim not in (3, 4):
        raise ValueError(f"x must be images (N, H, W[, C]), got shape {images.shape}")
    if len(labels) != len(images):
        raise ValueError(f"x has {len(images)} images but y has {len(labels)} labels")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    n = min(n, len(images))
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig = _figure_class()(figsize=(1.3 * ncols, 1.5 * nrows + 0.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i >= n:
            continue
        image, cmap = _displayable(images[i])
        ax.imshow(image, cmap=cmap)
        label = int(labels[i])
        title = class_names[label] if class_names is not None else str(label)
        ax.set_title(title, fontsize=9)
    return fig


def plot_history(
    histories: Mapping[str, Sequence[float]] | Sequence[Mapping[str, Sequence[float]]],
    title: str | None = None,
    labels: Sequence[str] | None = None,
) -> Figure:
    """Loss and accuracy per epoch, training and validation, one line pair per fold.

    Parameters
    ----------
    histories : dict or list of dict
        Keras history dicts (``loss``, ``accuracy`` and optionally ``val_loss``,
        ``val_accuracy``), e.g. ``cross_validate(...)["histories"]``.
    title : str, optional
        Figure title.
    labels : list of str, optional
        A name per history for the legend (default "fold 1", "fold 2", ...).

    Returns
    -------
    matplotlib.figure.Figure
        Two subplots: loss (left) and accuracy (right); training solid,
        validation dashed, one colour per fold; whole epochs on the x axis.
    """
    from matplotlib.ticker import MaxNLocator

    runs = [histories] if isinstance(histories, Mapping) else list(histories)
    if not runs:
        raise ValueError("histories is empty")
    if labels is not None and len(labels) != len(runs):
        raise ValueError(f"labels has {len(labels)} names for {len(runs)} histories")
    fig = _figure_class()(figsize=(12, 4.5), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for i, history in enumerate(runs):
            colour = f"C{i % 10}"
            tag = labels[i] if labels else f"fold {i + 1}" if len(runs) > 1 else "model"
            for key, style, kind in ((metric, "-", "train"), (f"val_{metric}", "--", "val")):
                values = history.get(key)
                if values:
                    epochs = np.arange(1, len(values) + 1)
                    ax.plot(epochs, values, style, color=colour, alpha=0.8, label=f"{tag} {kind}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.5
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} across folds" if len(runs) > 1 and not labels else metric)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    if title:
        fig.suptitle(title)
    return fig


def plot_confusion_matrix(
    cm: Any,
    class_names: Sequence[str] | None = None,
    normalize: bool = False,
    title: str | None = None,
) -> Figure:
    """A heatmap of a confusion matrix with the count in every cell.

    Parameters
    ----------
    cm : array_like
        ``(k, k)`` counts; rows are true classes, columns predicted classes
        (``cnnrs.metrics.confusion_matrix``'s orientation).
    class_names : sequence of str, optional
        Axis labels; default ``0..k-1``.
    normalize : bool, default False
        Colour by the fraction of each true class (row) instead of the count;
        the cells still show counts.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    counts = np.asarray(cm)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"cm must be a square (k, k) matrix, got shape {counts.shape}")
    k = counts.shape[0]
    names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"class_names has {len(names)} names but cm has {k} classes")
    shade = counts.astype(float)
    if normalize:
        rows = shade.sum(axis=1, keepdims=True)
        shade = np.divide(shade, rows, out=np.zeros_like(shade), where=rows > 0)
    side = max(4.5, 0.6 * k + 2.5)
    fig = _figure_class()(figsize=(side + 1, side), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(shade, cmap="Blues", vmin=0)
    fig.colorbar(
        im, ax=ax, fraction=0.046, label="fraction of true class" if normalize else "count"
    )
    threshold = shade.max() / 2 if shade.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{counts[i, j]:g}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if shade[i, j] > threshold else "black",
            )
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "confusion matrix")
    return fig


def plot_class_scores(
    report: Mapping[str, Any], class_names: Sequence[str] | None = None, title: str | None = None
) -> Figure:
    """Per-class precision, recall and F1 as grouped bars.

    Parameters
    ----------
    report : dict
        ``cnnrs.metrics.classification_report(..., output_dict=True)`` (scikit-learn's layout).
    class_names : sequence of str, optional
        The classes to show, in order; default every per-class entry of ``report``.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    summary = {"accuracy", "macro avg", "weighted avg", "micro avg", "samples avg"}
    names = (
        [str(c) for c in class_names]
        if class_names is not None
        else [k for k, v in report.items() if k not in summary and isinstance(v, Mapping)]
    )
    missing = [c for c in names if c not in report]
    if missing:
        raise KeyError(f"report has no entry for classes {missing}")
    if not names:
        raise ValueError("report has no per-class entries")
    metrics = ("precision", "recall", "f1-score")
    width = 0.8 / len(metrics)
    x = np.arange(len(names))
    fig = _figure_class()(figsize=(max(6.0, 0.8 * len(names) + 2), 4.5), layout="constrained")
    ax = fig.subplots()
    for m, metric in enumerate(metrics):
        values = [float(report[c][metric]) for c in names]
        ax.bar(x + (m - 1) * width, values, width, label=metric, color=f"C{m}")
    if "macro avg" in report:
        ax.axhline(float(report["macro avg"]["f1-score"]), color="gray", ls=":", label="macro F1")
    ax.set_xticks(x, names, rotation=45 if max(len(c) for c in names) > 3 else 0, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.set_title(title or "per-class precision, recall and F1")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return fig


def plot_fold_accuracies(
    results: Mapping[str, Mapping[str, Any]], title: str | None = None
) -> Figure:
    """Held-out accuracy of every fold, one box (and its points) per configuration.

    Parameters
    ----------
    results : dict
        ``{name: {"fold_accuracies": [...], ...}}``, e.g. ``{arch:
        cnnrs.cross_validate(arch, ...)}`` or :func:`cnnrs.study.cross_validate_architectures`.
    title : str, optional
        Default: "k-fold cross-validation accuracy per architecture".

    Returns
    -------
    matplotlib.figure.Figure
    """
    names = list(results)
    if not names:
        raise ValueError("results is empty")
    accuracies = [list(results[a]["fold_accuracies"]) for a in names]
    fig = _figure_class()(figsize=(max(6.0, 1.3 * len(names) + 2), 4.5), layout="constrained")
    ax = fig.subplots()
    ax.boxplot(accuracies)
    for i, accs in enumerate(accuracies, start=1):
        ax.plot(np.full(len(accs), i), accs, "o", color="C0", alpha=0.6)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=20, ha="right")
    ax.set_ylabel("held-out fold accuracy")
    folds = max(len(a) for a in accuracies)
    ax.set_title(title or f"{folds}-fold cross-validation accuracy per architecture")
    ax.grid(True, axis="y", alpha=0.3)
    return fig
