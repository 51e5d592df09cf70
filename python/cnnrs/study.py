"""The study's steps, one function each, shared by ``cnnrs demo`` and the notebook.

Section 1 (convolution and pooling): :func:`worked_examples`, :func:`kernel_responses`.
Section 2 (a CNN chosen by cross-validation): :func:`load_dataset`, :func:`subset`,
:func:`architecture_summaries`, :func:`cross_validate_architectures`, then
``cnnrs.grid_search``, :func:`compare_training_recipes` (the chosen network
trained plainly and with augmentation, a schedule and early stopping),
:func:`evaluate_on_test`, :func:`hardest_classes`, :func:`most_confused`,
:func:`write_test_image` (a test image as a PNG file for ``Model.predict_image``) and
:func:`fit_airbench94` (the 94%-on-CIFAR-10 network with its own recipe, beside the
course's networks), :func:`airbench_family` (the speed-record family cnnrs ships, with
the reference's published accuracy and time beside each) and
:func:`what_the_network_learned` (learned kernels beside Section 1's, feature maps and
Grad-CAM; in :mod:`cnnrs.explain`).

Threads: :func:`training_threads` says how many libtorch threads a step's training
should run on (measured by ``benchmarks/bench_threads.py``); the demo and the notebook
run each step under it with :func:`libtorch_threads`.

Each function computes and returns plain data (dicts, lists, arrays); printing,
figures and reports are the caller's. The methodology lives in what they call:
every fold trains a fresh model (``cnnrs.cross_validate``), the test images are
normalised with the training statistics (``cnnrs.Model``), and the grid search
refits a fresh model on all training images.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import _core, datasets, metrics
from ._arrays import as_images, augment_layers, check_count
from ._threads import all_cores, libtorch_threads
from ._trial import split_params
from .callbacks import EarlyStopping
from .explain import what_the_network_learned
from .models import Model
from .selection import cross_validate

__all__ = [
    "WORKED_CONVOLUTION",
    "WORKED_POOLING",
    "AUGMENTATIONS",
    "SMALL_IMAGE_PIXELS",
    "architecture_summaries",
    "compare_training_recipes",
    "AIRBENCH_PUBLISHED",
    "airbench_family",
    "airbench_family_table",
    "fit_airbench94",
    "upscale",
    "cross_validate_architectures",
    "evaluate_on_test",
    "hardest_classes",
    "kernel_responses",
    "libtorch_threads",
    "load_dataset",
    "most_confused",
    "subset",
    "training_threads",
    "what_the_network_learned",
    "worked_examples",
    "write_test_image",
]

#: The course's worked convolution: image, kernel and the expected answer.
WORKED_CONVOLUTION: dict[str, Any] = {
    "image": [[1, 2, 0], [4, 5, 6], [7, 8, 9]],
    "kernel": [[1, 0], [0, -1]],
    "expected": [[-4, -4], [-4, -4]],
}
#: The course's worked pooling: a 4×4 image, p = 2 (stride 1), the expected answers.
WORKED_POOLING: dict[str, Any] = {
    "image": [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]],
    "p": 2,
    "expected_max": [[6, 7, 8], [10, 11, 12], [14, 15, 16]],
    "expected_avg": [[3.5, 4.5, 5.5], [7.5, 8.5, 9.5], [11.5, 12.5, 13.5]],
}


# --- Section 1 -----------------------------------------------------------------------


#: Images with fewer pixels than this train on one libtorch thread on a CPU, larger
#: ones on every core. Measured by benchmarks/bench_threads.py (table in RESULTS.md,
#: with the CPU) on two cores: the course's networks on the 8×8 digits run 1.4–1.5x
#: faster per epoch on 2 threads on an idle machine but 1.4–2.9x slower while another
#: program keeps one core busy (libtorch's threads wait for each other at each of the
#: many tiny operations), so one thread, which never goes badly wrong, is worth the
#: small loss; airbench94 on 32×32 images runs 1.9x faster on 2 threads idle, a gain
#: worth taking (1.6x slower with a core busy). The bound lies between the two sizes
#: measured.
SMALL_IMAGE_PIXELS = 16 * 16


def training_threads(image_shape: Sequence[int], device: str = "auto") -> int | None:
    """The libtorch threads to train on images of ``image_shape`` ``(H, W[, C])``: on a
    CPU, 1 for images of fewer than :data:`SMALL_IMAGE_PIXELS` pixels and every core of
    the process otherwise; ``None`` (leave it as it is) on CUDA, where the GPU does the
    work. Use it with :func:`libtorch_threads`."""
    if len(image_shape) < 2 or min(int(d) for d in image_shape[:2]) < 1:
        raise ValueError(f"image_shape must be (H, W[, C]) with H, W >= 1, got {image_shape!r}")
    if device != "cpu" and (device.startswith("cuda") or _core.cuda_available()):
        return None
    h, w = int(image_shape[0]), int(image_shape[1])
    return 1 if h * w < SMALL_IMAGE_PIXELS else all_cores()


def worked_examples() -> dict[str, Any]:
    """The course's worked convolution and pooling, computed by cnnrs.

    Returns
    -------
    dict
        ``{"convolution": {..., "result"}, "pooling": {..., "max_pooling",
        "avg_pooling"}, "match_expected": bool}``.
    """
    conv = _core.convolution(
        np.array(WORKED_CONVOLUTION["image"]), np.array(WORKED_CONVOLUTION["kernel"])
    )
    pool_in = np.array(WORKED_POOLING["image"])
    pooled_max = _core.pooling(pool_in, 2, "max_pooling")
    pooled_avg = _core.pooling(pool_in, 2, "avg_pooling")
    matches = (
        np.array_equal(conv, WORKED_CONVOLUTION["expected"])
        and np.array_equal(pooled_max, WORKED_POOLING["expected_max"])
        and np.allclose(pooled_avg, WORKED_POOLING["expected_avg"])
    )
    return {
        "convolution": {**WORKED_CONVOLUTION, "result": conv},
        "pooling": {**WORKED_POOLING, "max_pooling": pooled_max, "avg_pooling": pooled_avg},
        "match_expected": bool(matches),
    }


def kernel_responses(image: Any, kernels: Mapping[str, Any], p: int = 2) -> list[dict[str, Any]]:
    """Each kernel's "same"-padded convolution of ``image`` and its ``p``×``p`` max pooling.

    Returns
    -------
    list of dict
        Per kernel, in order: ``{"name", "kernel", "convolution_shape",
        "pooling_shape", "mean_abs_response"}`` (the mean absolute convolution).
    """
    rows = []
    for name, kernel in kernels.items():
        conv = _core.convolution(image, kernel, padding="same")
        pooled = _core.pooling(conv, p, "max_pooling")
        rows.append(
            {
                "name": name,
                "kernel": kernel,
                "convolution_shape": conv.shape,
                "pooling_shape": pooled.shape,
                "mean_abs_response": float(np.mean(np.abs(conv))),
            }
        )
    return rows


# --- Section 2 -----------------------------------------------------------------------


def load_dataset(
    name: str, cifar_path: str | os.PathLike[str] | None = None
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], list[str]]:
    """``((x_train, y_train), (x_test, y_test), class_names)`` of ``"digits"`` or ``"cifar10"``.

    CIFAR-10 is read from ``cifar_path`` or Keras's cache, downloaded when absent
    (see :func:`cnnrs.datasets.load_cifar10`).
    """
    if name == "digits":
        train, test = datasets.load_digits()
        return train, test, list(datasets.DIGITS_CLASSES)
    if name == "cifar10":
        train, test = datasets.load_cifar10(cifar_path)
        return train, test, list(datasets.CIFAR10_CLASSES)
    raise ValueError(f"dataset must be 'digits' or 'cifar10', got {name!r}")


def subset(x: Any, y: Any, n: int, seed: int) -> tuple[Any, Any]:
    """A random ``n`` of the images and their labels, kept in their original order.

    The same ``seed`` picks the same images. Raises ValueError when ``n`` is more
    than the images available.
    """
    if n > len(x):
        raise ValueError(f"a subset of {n} is more than the {len(x)} images available")
    keep = np.sort(np.random.default_rng(seed).choice(len(x), size=n, replace=False))
    return x[keep], y[keep]


def architecture_summaries(
    architectures: Sequence[str],
    input_shape: tuple[int, int, int],
    num_classes: int,
    device: str = "auto",
) -> dict[str, dict[str, Any]]:
    """``{architecture: {"params": int, "summary": str}}``: each built for the data,
    with Keras's ``summary()`` table as text."""
    out = {}
    for arch in architectures:
        lines: list[str] = []
        model = Model(arch, device=device, seed=0, input_shape=input_shape, num_classes=num_classes)
        model.summary(print_fn=lines.append)
        out[arch] = {"params": model.count_params(), "summary": "\n".join(lines)}
    return out


def cross_validate_architectures(
    architectures: Sequence[str],
    x: Any,
    y: Any,
    *,
    cv: int = 5,
    epochs: int = 10,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    seed: int = 42,
    device: str = "auto",
    precision: str = "fp32",
    verbose: int = 0,
    on_result: Callable[[str, dict[str, Any]], Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """``cnnrs.cross_validate`` of each architecture with the same folds and settings.

    Parameters
    ----------
    on_result : callable, optional
        Called as ``on_result(architecture, result)`` as soon as each one is done,
        e.g. to print or plot while the next one trains.

    Returns
    -------
    dict
        ``{architecture: {"fold_accuracies", "mean_accuracy", "std_accuracy",
        "histories", "epochs", "learning_rate", "batch_size", "seconds"}}`` in the
        order given.
    """
    results: dict[str, dict[str, Any]] = {}
    for arch in architectures:
        started = time.perf_counter()
        r = cross_validate(
            arch,
            x,
            y,
            cv=cv,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            seed=seed,
            verbose=verbose,
            device=device,
            precision=precision,
        )
        results[arch] = {
            "fold_accuracies": r["fold_accuracies"],
            "mean_accuracy": r["mean_accuracy"],
            "std_accuracy": r["std_accuracy"],
            "histories": r["histories"],
            "epochs": epochs,
            "learning_rate": learning_rate,
            "batch_size": batch_size,
            "seconds": time.perf_counter() - started,
        }
        if on_result is not None:
            on_result(arch, results[arch])
    return results


def evaluate_on_test(
    model: Model, x_test: Any, y_test: Any, class_names: Sequence[str]
) -> dict[str, Any]:
    """The chosen model on the test set.

    Returns
    -------
    dict
        ``{"accuracy", "loss", "probabilities", "y_true", "y_pred",
        "confusion_matrix", "report"}``: ``report`` is
        ``cnnrs.metrics.classification_report``'s dict keyed by class name, the
        confusion matrix has rows true and columns predicted.
    """
    names = list(class_names)
    scores = model.evaluate(x_test, y_test)
    probabilities = model.predict(x_test)
    y_pred = probabilities.argmax(axis=1)
    y_true = np.asarray(y_test).reshape(-1)
    cm = metrics.confusion_matrix(y_true, y_pred, num_classes=len(names))
    report = metrics.classification_report(y_true, y_pred, target_names=names)
    return {
        "accuracy": scores["accuracy"],
        "loss": scores["loss"],
        "probabilities": probabilities,
        "y_true": y_true,
        "y_pred": y_pred,
        "confusion_matrix": cm,
        "report": report,
    }


def hardest_classes(
    report: Mapping[str, Any], class_names: Sequence[str], n: int = 3
) -> list[dict[str, Any]]:
    """The ``n`` classes with the lowest F1 (ties by name), each as ``{"class",
    "precision", "recall", "f1-score", "support"}``."""
    by_f1 = sorted(class_names, key=lambda c: (report[c]["f1-score"], c))
    return [{"class": c, **report[c]} for c in by_f1[:n]]


def most_confused(cm: Any, class_names: Sequence[str], n: int = 5) -> list[dict[str, Any]]:
    """The ``n`` most frequent mistakes, off-diagonal cells of the confusion matrix
    (rows true), as ``{"true", "predicted", "count"}``, largest first; cells that
    are 0 are left out."""
    off = np.array(cm, copy=True)
    np.fill_diagonal(off, 0)
    cells = np.unravel_index(np.argsort(off, axis=None)[::-1][:n], off.shape)
    return [
        {"true": class_names[int(i)], "predicted": class_names[int(j)], "count": int(off[i, j])}
        for i, j in zip(*cells)
        if off[i, j] > 0
    ]


def write_test_image(
    x_test: Any,
    y_test: Any,
    class_names: Sequence[str],
    folder: str | os.PathLike[str],
    index: int = 0,
) -> tuple[Path, str]:
    """Writes test image ``index`` to ``folder/test_image_<index>.png``, for
    ``Model.predict_image`` to classify from a file as it would a photo.

    A grayscale image is saved as three equal channels, which ``cnnrs.load_image``
    converts back to exactly the same pixel values. Needs matplotlib.

    Returns
    -------
    (pathlib.Path, str)
        The file and a description naming the image's true class.
    """
    from matplotlib.image import imsave

    image = np.asarray(x_test[index])
    if image.ndim == 2:
        image = image[..., np.newaxis]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    path = Path(folder) / f"test_image_{index}.png"
    buffer = io.BytesIO()
    imsave(buffer, image.astype(np.uint8), format="png")
    with _core.AtomicWriter(path) as out:
        out.write(buffer.getvalue())
    label = int(np.asarray(y_test).reshape(-1)[index])
    return path, f"test image {index} (true class {class_names[label]!r})"


#: Augmentations that suit each dataset. CIFAR-10: the standard recipe (mirror
#: images, shift by up to 4 pixels, cut out an 8×8 square). Digits: cutout only. The
#: 8×8 digits are already centred and size-normalised, so a shift of even one pixel
#: (an eighth of the image) moves them off the distribution the test set comes from.
#: 5-fold CV of "custom" (rate 1e-3), mean accuracy at 8 / 16 epochs: no augmentation
#: 0.972 / 0.983, ("cutout", 2) 0.974 / 0.981, ("random_translation", 0.125) and
#: ("random_crop", 1) 0.953 / 0.972 (fold std about 0.01). Flips would turn digits
#: into other symbols.
AUGMENTATIONS: dict[str, list[tuple[Any, ...]]] = {
    "digits": [("cutout", 2)],
    "cifar10": [("random_flip", "horizontal"), ("random_crop", 4), ("cutout", 8)],
}


def compare_training_recipes(
    params: Mapping[str, Any],
    x: Any,
    y: Any,
    x_test: Any,
    y_test: Any,
    *,
    augment: Sequence[Sequence[Any]],
    lr_schedule: Any = "cosine",
    patience: int = 3,
    epochs_factor: int = 2,
    validation_split: float = 0.2,
    seed: int = 42,
) -> dict[str, Any]:
    """The chosen parameters trained twice on the same split: plainly, and with
    ``augment``, ``lr_schedule`` and early stopping (restoring the best epoch).

    Both train on the first ``1 - validation_split`` of ``x`` with the same seed and
    are watched on its last ``validation_split`` (Keras's ``validation_split``, the
    same held-out rows for both); both are then scored on the test set, with
    test-time flips (``tta="flip"``) when ``augment`` flips images.

    Parameters
    ----------
    params : dict
        ``Model``/``fit`` arguments, e.g. ``grid_search(...)["best_params"]``.
    epochs_factor : int, default 2
        The recipe may run ``epochs_factor`` times the plain run's epochs: early
        stopping decides when to stop, which is what it is for.

    Returns
    -------
    dict
        ``{"plain": run, "recipe": run, "augment", "lr_schedule", "patience",
        "epochs", "validation_split", "summary"}`` where each run is ``{"history",
        "epochs_run", "best_epoch", "train_accuracy", "val_accuracy", "gap",
        "test_accuracy", "test_loss"}`` (``gap``: training minus validation accuracy
        at the epoch kept) and ``summary`` says in words what changed.
    """
    # The comparison is made on the held-out part: without one there is nothing to
    # compare (and early stopping nothing to watch). Checked before any training.
    if (
        isinstance(validation_split, bool)
        or not isinstance(validation_split, (int, float, np.integer, np.floating))
        or not 0 < float(validation_split) < 1
    ):
        raise ValueError(
            "validation_split must be a number in (0, 1): the two runs are compared on "
            f"that held-out part, got {validation_split!r}"
        )
    augment = augment_layers(augment)
    check_count(patience, "patience", 0)
    check_count(epochs_factor, "epochs_factor")
    flips = any(layer and layer[0] == "random_flip" for layer in augment)
    recipes: dict[str, dict[str, Any]] = {
        "plain": {},
        "recipe": {
            "augment": augment,
            "lr_schedule": lr_schedule,
            "epochs": int(params.get("epochs", 10)) * epochs_factor,
            "callbacks": [EarlyStopping(patience=patience, restore_best_weights=True)],
        },
    }
    runs: dict[str, dict[str, Any]] = {}
    for name, extra in recipes.items():
        kwargs = {**params, **extra}
        model_kw, fit_kw = split_params(kwargs)
        model_kw.setdefault("seed", seed)
        model = Model(**model_kw)
        history = model.fit(x, y, validation_split=validation_split, verbose=0, **fit_kw)
        stopper = next(
            (c for c in fit_kw.get("callbacks", []) if isinstance(c, EarlyStopping)), None
        )
        kept = stopper.best_epoch if stopper is not None else len(history["loss"]) - 1
        scores = model.evaluate(x_test, y_test, tta="flip" if flips else None)
        runs[name] = {
            "history": history,
            "epochs_run": len(history["loss"]),
            "best_epoch": kept + 1,
            "train_accuracy": history["accuracy"][kept],
            "val_accuracy": history["val_accuracy"][kept],
            "gap": history["accuracy"][kept] - history["val_accuracy"][kept],
            "test_accuracy": scores["accuracy"],
            "test_loss": scores["loss"],
        }
    plain, recipe = runs["plain"], runs["recipe"]
    recipe_epochs = int(params.get("epochs", 10)) * epochs_factor
    change = recipe["test_accuracy"] - plain["test_accuracy"]
    layers = ", ".join(str(layer[0]) for layer in augment)
    summary = (
        f"With augmentation ({layers}), a {lr_schedule} schedule and early stopping, the test "
        f"accuracy went from {plain['test_accuracy']:.4f} to {recipe['test_accuracy']:.4f} "
        f"({change:+.4f}); the gap between training and validation accuracy went from "
        f"{plain['gap']:+.4f} to {recipe['gap']:+.4f}"
        + (
            " (augmented training images are harder, so training accuracy sits lower)"
            if recipe["gap"] < plain["gap"]
            else ""
        )
        + f". Early stopping kept epoch {recipe['best_epoch']} of {recipe['epochs_run']} run"
        + f" (of at most {recipe_epochs}; the plain run had {plain['epochs_run']})."
        + (" Test scores average each image with its mirror (tta='flip')." if flips else "")
    )
    return {
        "plain": plain,
        "recipe": recipe,
        "augment": [list(layer) for layer in augment],
        "lr_schedule": lr_schedule,
        "patience": patience,
        "epochs": {"plain": int(params.get("epochs", 10)), "recipe": recipe_epochs},
        "validation_split": validation_split,
        "summary": summary,
    }


#: airbench94 takes 32×32 images (CIFAR's); it needs at least 25×25.
AIRBENCH_SIDE = 32
#: The largest side :func:`upscale` makes (beyond any network here; bounds its copy).
MAX_UPSCALE_SIDE = 1024


def upscale(x: Any, side: int = AIRBENCH_SIDE) -> np.ndarray:
    """Images (N, H, W, C) enlarged by repeating each pixel ``ceil(side / min(H, W))``
    times along both axes (digits' 8×8 become 32×32); unchanged when already large.
    Takes what ``Model.fit`` takes: (N, H, W) grayscale gets its channel axis."""
    x = as_images(x)
    side = check_count(side, "side")
    if side > MAX_UPSCALE_SIDE:
        raise ValueError(f"side must be <= {MAX_UPSCALE_SIDE} pixels, got {side}")
    factor = -(-side // min(x.shape[1], x.shape[2]))
    if factor <= 1:
        return x
    return np.kron(x, np.ones((1, factor, factor, 1), dtype=x.dtype))


#: What the references' authors published for each airbench recipe on one NVIDIA A100:
#: CIFAR-10 test accuracy with their test-time augmentation, the mean over runs (the
#: headers of airbench 0.1.8's ``lib_airbench9x.py``: "93.00 in n=50", "94.01 in
#: n=1000 runs", "95.01 in n=200 runs", "96.05 in n=200 runs"; airbench94_muon.py's in
#: the KellerJordan/cifar10-airbench README), and seconds of training (Keller Jordan,
#: "94% on CIFAR-10 in 3.29 Seconds on a Single GPU", 2024, and that README: airbench95
#: 10.4 s, airbench96 "46s" as in the paper, airbench94_muon 2.59 s). ``None`` where no
#: time was published (airbench93: "~40% less wallclock time" than airbench94). Not
#: measured by cnnrs.
AIRBENCH_PUBLISHED: dict[str, tuple[float, float | None]] = {
    "airbench93": (0.9300, None),
    "airbench94": (0.9401, 3.29),
    "airbench95": (0.9501, 10.4),
    "airbench96": (0.9605, 46.0),
    "airbench94_muon": (0.9401, 2.59),
}


def airbench_family() -> list[dict[str, Any]]:
    """The airbench recipes cnnrs ships, in :data:`AIRBENCH_PUBLISHED`'s order, one
    row each: what cnnrs builds (``conv_groups`` widths, ``residual``,
    ``parameters`` for 32×32×3 images and 10 classes, the recipe's ``epochs``,
    ``batch_size``, ``optimizer`` and ``learning_rate``) beside what the reference's
    authors published for it on an A100 (``reference_accuracy``,
    ``reference_seconds``; :data:`AIRBENCH_PUBLISHED`), so the trade-off shows before a
    choice."""
    rows = []
    for name, (accuracy, seconds) in AIRBENCH_PUBLISHED.items():
        model = Model(name, input_shape=(32, 32, 3), num_classes=10, device="cpu")
        groups = [s for s in model.layer_specs if s["type"] == "conv_group"]
        recipe = model.recipe or {}
        rows.append(
            {
                "architecture": name,
                "conv_groups": [int(g["filters"]) for g in groups],
                "residual": any(g.get("residual", False) for g in groups),
                "parameters": model.count_params(),
                "epochs": recipe.get("epochs"),
                "batch_size": recipe.get("batch_size"),
                "optimizer": model.optimizer,
                "learning_rate": model.learning_rate,
                "reference_accuracy": accuracy,
                "reference_seconds": seconds,
            }
        )
    return rows


def airbench_family_table(rows: Sequence[Mapping[str, Any]] | None = None) -> str:
    """:func:`airbench_family` as a Markdown table (the demo's report and log, the
    notebook), the reference's columns labelled as the reference's."""
    rows = airbench_family() if rows is None else rows
    out = [
        "| architecture | conv groups | parameters | epochs | batch | optimizer | "
        "reference accuracy (A100) | reference time (A100) |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        groups = " / ".join(str(w) for w in r["conv_groups"]) + (
            ", residual" if r["residual"] else ""
        )
        seconds = r["reference_seconds"]
        out.append(
            f"| {r['architecture']} | {groups} | {r['parameters']:,} | {r['epochs']:g} "
            f"| {r['batch_size']} | {r['optimizer']} (lr {r['learning_rate']:g}) "
            f"| {100 * r['reference_accuracy']:.2f}% "
            f"| {'not published' if seconds is None else f'{seconds:g} s'} |"
        )
    return "\n".join(out)


def fit_airbench94(
    x: Any,
    y: Any,
    x_test: Any,
    y_test: Any,
    *,
    epochs: float | None = None,
    device: str = "auto",
    precision: str | None = None,
    seed: int = 42,
    architecture: str = "airbench94",
) -> dict[str, Any]:
    """Trains ``cnnrs.Model("airbench94")`` (or another of :func:`airbench_family`,
    ``architecture``) with its own recipe and scores it on the test set, with its
    test-time augmentation and without.

    Images smaller than 32×32 are upscaled (:func:`upscale`; digits' 8×8 → 32×32),
    since the network pools 32×32 down to 1×1. Batches are the recipe's (1024;
    airbench94_muon's 2000) when the training set holds at least 8 of them, else 128:
    airbench's rates are per 1024 examples and Muon's update is normalised, so they
    keep their meaning, and a small set still gets enough steps. ``epochs`` defaults
    to the recipe's (airbench94's 9.9).

    Returns ``{"history", "test_accuracy", "test_accuracy_no_tta", "test_loss",
    "seconds", "epochs", "batch_size", "image_shape", "upscaled", "precision",
    "summary", "architecture", "model"}`` (``model``: the trained network, for
    :func:`what_the_network_learned` on ``upscale(x_test)``).
    """
    if not isinstance(architecture, str):
        raise TypeError(
            f"architecture must be the name of one of the airbench family "
            f"{list(AIRBENCH_PUBLISHED)}, got {type(architecture).__name__}"
        )
    if architecture not in AIRBENCH_PUBLISHED:
        raise ValueError(
            f"architecture must be one of the airbench family {list(AIRBENCH_PUBLISHED)}, "
            f"got {architecture!r}"
        )
    xa, xt = upscale(x), upscale(x_test)
    model = Model(architecture, device=device, seed=seed, precision=precision)
    recipe = model.recipe or {}
    batch = recipe.get("batch_size", 1024)
    if len(xa) < 8 * batch:
        batch = 128
    started = time.perf_counter()
    history = model.fit(xa, y, epochs=epochs, batch_size=batch, verbose=0)
    seconds = time.perf_counter() - started
    scores = model.evaluate(xt, y_test)
    plain = model.evaluate(xt, y_test, tta="none")
    run_epochs = recipe.get("epochs") if epochs is None else epochs
    upscaled = xa.shape[1:3] != np.shape(x)[1:3]
    summary = (
        f"{architecture} (Keller Jordan's CIFAR-10 speed record network, with its recipe) "
        "reached "
        f"{scores['accuracy']:.4f} test accuracy ({plain['accuracy']:.4f} without test-time "
        f"augmentation) after {run_epochs} epochs in {seconds:.1f}s on {model.device} "
        f"({model.precision})"
        + (f", on images upscaled to {xa.shape[1]}×{xa.shape[2]}" if upscaled else "")
        + "."
    )
    return {
        "history": history,
        "test_accuracy": scores["accuracy"],
        "test_accuracy_no_tta": plain["accuracy"],
        "test_loss": scores["loss"],
        "seconds": seconds,
        "epochs": run_epochs,
        "batch_size": batch,
        "image_shape": tuple(int(d) for d in xa.shape[1:]),
        "upscaled": bool(upscaled),
        "precision": model.precision,
        "summary": summary,
        "architecture": architecture,
        "model": model,
    }
