"""Figures for the study. matplotlib is an optional extra: ``pip install cnnrs[plot]``.

Figures are built with :class:`matplotlib.figure.Figure` directly, not through
``pyplot``: nothing is shown or kept in pyplot's global state, so the functions
work the same in scripts, tests and notebooks (``display(fig)`` or ``fig.savefig``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from . import kernels as study_kernels
from ._arrays import as_labels
from ._core import convolution, pooling

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "plot_class_scores",
    "plot_confusion_matrix",
    "plot_feature_maps",
    "plot_filters",
    "plot_fold_accuracies",
    "plot_gradcam",
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


# --- what the network learned (cnnrs.Model.filters / feature_maps / gradcam) -----------


def _short(name: str) -> str:
    """A study kernel's title without its explanation: "Kernel 3", "Gaussian blur"."""
    return name.split(":")[0].split(" (")[0]


def _kernel_axes(ax: Any, kernel: np.ndarray, title: str) -> None:
    """A kernel as a small image: red positive, blue negative, white 0, with its values."""
    limit = float(np.abs(kernel).max()) or 1.0
    ax.imshow(kernel, cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_filters(
    filters: Any,
    candidates: Mapping[str, Any] | None = None,
    n: int = 16,
    compare: bool | None = None,
    title: str | None = None,
) -> Figure:
    """A convolution's learned kernels as small images, each beside the study kernel it is
    most like (:func:`cnnrs.kernels.nearest`, normalised correlation ``r``).

    Parameters
    ----------
    filters : array_like
        ``(kh, kw, in, out)`` kernels, as ``Model.filters()`` returns them. Each is shown
        summed over its input channels: what it does to a gray image.
    candidates : dict of str to array_like, optional
        Kernels to compare with; default ``cnnrs.kernels.STUDY_KERNELS`` (Section 1's).
    n : int, default 16
        How many filters (the first ``n``).
    compare : bool, optional
        Whether to show the nearest candidate beside each filter. Default: when the
        filters read pixels (at most 3 input channels) and a candidate has their size;
        a deeper layer's kernels read feature maps, where a pixel kernel means little.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Pairs of images, four pairs a row: the learned kernel (red positive, blue
        negative) and the study kernel, multiplied by the sign of ``r`` so the two look
        alike when they match.
    """
    f = np.asarray(filters, dtype=np.float64)
    if f.ndim != 4:
        raise ValueError(f"filters must be (kh, kw, in, out), got shape {f.shape}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    pool = study_kernels.STUDY_KERNELS if candidates is None else candidates
    summed = f.sum(axis=2)  # (kh, kw, out)
    if compare is None:
        compare = f.shape[2] <= 3 and any(np.shape(k) == summed.shape[:2] for k in pool.values())
    count = min(n, f.shape[3])
    per_row = 4
    rows = -(-count // per_row)
    width = 2 if compare else 1
    fig = _figure_class()(figsize=(1.5 * per_row * width, 1.6 * rows + 0.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, per_row * width, squeeze=False))
    for ax in axes.ravel():
        ax.set_axis_off()
    for j in range(count):
        row, col = divmod(j, per_row)
        learned = summed[:, :, j]
        ax = axes[row, col * width]
        ax.set_axis_on()
        _kernel_axes(ax, learned, f"filter {j}")
        if compare:
            name, r = study_kernels.nearest(learned, pool)
            twin = axes[row, col * width + 1]
            twin.set_axis_on()
            _kernel_axes(
                twin, np.sign(r or 1.0) * np.asarray(pool[name]), f"{_short(name)} r={r:+.2f}"
            )
    channels = f"summed over {f.shape[2]} input channels" if f.shape[2] > 1 else "one channel"
    fig.suptitle(
        title
        or f"{count} of {f.shape[3]} learned {f.shape[0]}×{f.shape[1]} kernels ({channels})"
        + (", each beside the nearest study kernel" if compare else ""),
        fontsize=10,
    )
    return fig


def plot_feature_maps(
    maps: Mapping[str, Any],
    image: Any = None,
    channels: int = 8,
    title: str | None = None,
) -> Figure:
    """One image's activations after each layer: a row per layer, its most active channels.

    Parameters
    ----------
    maps : dict of str to array_like
        ``Model.feature_maps(...)``: ``{layer: (N, H, W, C)}`` (the first image is
        shown) or ``{layer: (H, W, C)}``; layers without maps (dense, flatten) are
        skipped.
    image : array_like, optional
        The input image, drawn at the start of the first row.
    channels : int, default 8
        Channels per layer: those with the largest mean activation, strongest first.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    rows = []
    for name, value in maps.items():
        a = np.asarray(value)
        if a.ndim == 4:
            a = a[0]
        if a.ndim == 3:
            rows.append((name, a))
    if not rows:
        raise ValueError("maps holds no feature maps (H, W, C); pass convolution or pooling layers")
    cols = channels + (image is not None)
    fig = _figure_class()(figsize=(1.3 * cols, 1.45 * len(rows) + 0.5), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(rows), cols, squeeze=False))
    for ax in axes.ravel():
        ax.set_axis_off()
    for r, (name, a) in enumerate(rows):
        first = 0
        if image is not None:
            if r == 0:
                pixels, cmap = _displayable(np.asarray(image))
                axes[0, 0].imshow(pixels, cmap=cmap)
                axes[0, 0].set_title("input", fontsize=8)
            first = 1
        strongest = np.argsort(a.mean(axis=(0, 1)))[::-1][:channels]
        for k, c in enumerate(strongest):
            ax = axes[r, first + k]
            ax.imshow(a[:, :, c], cmap="viridis")
            ax.set_title(f"{name} [{c}]" if k == 0 else f"[{c}]", fontsize=7)
        axes[r, first].text(
            -0.1,
            0.5,
            f"{a.shape[0]}×{a.shape[1]}×{a.shape[2]}",
            fontsize=7,
            transform=axes[r, first].transAxes,
            rotation=90,
            ha="right",
            va="center",
        )
    fig.suptitle(title or "feature maps: the most active channels of each layer", fontsize=10)
    return fig


def plot_gradcam(
    images: Any,
    heatmaps: Any,
    y_true: Any = None,
    y_pred: Any = None,
    class_names: Sequence[str] | None = None,
    alpha: float = 0.5,
    title: str | None = None,
) -> Figure:
    """Grad-CAM heatmaps over their images: a column per image, the image above and the
    heatmap laid over it below, titled with the predicted and the true class.

    Parameters
    ----------
    images : array_like
        ``(N, H, W, C)`` or ``(N, H, W)`` images.
    heatmaps : array_like
        ``(N, H, W)``, e.g. ``Model.gradcam(images)``.
    y_true, y_pred : array_like, optional
        True and predicted labels; a wrong prediction is titled in red.
    class_names : sequence of str, optional
    alpha : float, default 0.5
        Opacity of the heatmap over the image.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    x = np.asarray(images)
    maps = np.asarray(heatmaps, dtype=np.float64)
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4 or maps.ndim != 3 or maps.shape != x.shape[:3]:
        raise ValueError(
            f"heatmaps must be (N, H, W) for images (N, H, W[, C]); got {maps.shape} for "
            f"{np.shape(images)}"
        )
    n = len(x)
    if n == 0:
        raise ValueError("images is empty")
    true = None if y_true is None else as_labels(y_true, n, "y_true")[0]
    pred = None if y_pred is None else as_labels(y_pred, n, "y_pred")[0]

    def name(label: Any) -> str:
        return class_names[int(label)] if class_names is not None else str(int(label))

    fig = _figure_class()(figsize=(1.6 * n + 0.4, 3.7), layout="constrained")
    axes = np.atleast_2d(fig.subplots(2, n, squeeze=False))
    for i in range(n):
        pixels, cmap = _displayable(x[i])
        for ax in axes[:, i]:
            ax.imshow(pixels, cmap=cmap)
            ax.set_axis_off()
        axes[1, i].imshow(maps[i], cmap="jet", alpha=alpha, vmin=0, vmax=max(maps[i].max(), 1e-12))
        parts = []
        if pred is not None:
            parts.append(f"pred {name(pred[i])}")
        if true is not None:
            parts.append(f"true {name(true[i])}")
        wrong = pred is not None and true is not None and pred[i] != true[i]
        axes[0, i].set_title("\n".join(parts), fontsize=8, color="red" if wrong else "black")
    fig.suptitle(title or "Grad-CAM: where the evidence for the predicted class lies", fontsize=10)
    return fig
