"""Classification metrics with scikit-learn's names, orientation and numbers.

The counting and the scores are computed in Rust (``cnnrs._core``); this module
only normalises label arrays (one-hot or probability rows, ``(N, 1)`` columns,
bools as 0/1: the package's one rule, in ``cnnrs._arrays``) and lays the numbers
out as scikit-learn's ``classification_report`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _core
from ._arrays import as_labels

__all__ = ["accuracy_score", "classification_report", "confusion_matrix", "precision_recall_f1"]


def _as_labels(y: npt.ArrayLike, name: str) -> npt.NDArray[np.int64]:
    return as_labels(y, name=name)[0]


def accuracy_score(
    y_true: Any, y_pred: Any, *, normalize: bool = True, sample_weight: Any = None
) -> float:
    """The fraction (or, with ``normalize=False``, the number) of labels predicted
    right: ``sklearn.metrics.accuracy_score`` with its signature and result.

    Parameters
    ----------
    y_true, y_pred : array_like
        Class labels ``(N,)`` / ``(N, 1)``: numbers as the other metrics take them
        (also one-hot / probability rows ``(N, k)``, reduced by argmax, so
        ``model.predict`` output works; scikit-learn would read such a 2-D array as
        a multilabel indicator), or any other labels, such as strings, compared as
        they are.
    normalize : bool, default True
        True: the fraction right; False: the count (the sum of the weights) right.
    sample_weight : array_like (N,), optional
        A weight per label.

    Returns
    -------
    float
    """
    if not isinstance(normalize, (bool, np.bool_)):
        raise TypeError(f"normalize must be True or False, got {normalize!r}")
    t, p = np.asarray(y_true), np.asarray(y_pred)
    numeric = t.dtype.kind in "biuf" and p.dtype.kind in "biuf"
    if numeric:
        t, p = _as_labels(t, "y_true"), _as_labels(p, "y_pred")
    else:
        t, p = (_label_column(a, name) for a, name in ((t, "y_true"), (p, "y_pred")))
    if t.shape[0] != p.shape[0]:
        raise ValueError(
            f"y_true has {t.shape[0]} labels but y_pred has {p.shape[0]}; "
            "they must be the same length"
        )
    if t.shape[0] == 0:
        raise ValueError("y_true and y_pred are empty; accuracy needs at least one label")
    right = t == p
    if sample_weight is None:
        return float(right.mean() if normalize else right.sum())
    w = np.asarray(sample_weight)
    if w.dtype.kind not in "biuf" or w.shape != (t.shape[0],):
        raise ValueError(
            f"sample_weight must be {t.shape[0]} numbers, one per label, got "
            f"{w.dtype} array of shape {w.shape}"
        )
    if normalize:
        return float(np.average(right, weights=w))
    return float(np.dot(right, w))


def _label_column(a: np.ndarray, name: str) -> np.ndarray:
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValueError(f"{name} must be labels (N,) or a column (N, 1), got shape {a.shape}")
    return a


def confusion_matrix(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, num_classes: int | None = None
) -> npt.NDArray[np.int64]:
    """Confusion matrix: rows are true labels, columns predicted labels.

    Parameters
    ----------
    y_true, y_pred : array_like
        Class labels ``0..k-1`` of shape ``(N,)`` or ``(N, 1)``, or one-hot /
        probability rows ``(N, k)`` (reduced by argmax).
    num_classes : int, optional
        Number of classes; default the largest label in either input plus one.

    Returns
    -------
    numpy.ndarray
        int64 ``(num_classes, num_classes)``; entry ``[i, j]`` counts samples of
        class ``i`` predicted as ``j`` (scikit-learn's orientation).

    Raises
    ------
    ValueError
        Lengths differ, a label is negative or not below ``num_classes``, or a
        float label is not an integer.
    TypeError
        The labels are not numbers.
    """
    return _core.confusion_matrix(
        _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred"), num_classes
    )


def precision_recall_f1(
    cm: npt.ArrayLike,
) -> tuple[
    npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int64]
]:
    """Per-class precision, recall, F1 and support of a confusion matrix.

    Parameters
    ----------
    cm : array_like
        ``(k, k)`` counts, rows true, columns predicted.

    Returns
    -------
    tuple of numpy.ndarray
        ``(precision, recall, f1, support)``; a score whose denominator is 0
        is 0 (scikit-learn's ``zero_division=0``).
    """
    a = np.asarray(cm)
    if a.dtype.kind not in "biu":
        raise TypeError(f"cm must hold integer counts, got dtype {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"cm must be 2-D (k, k), got shape {a.shape}")
    return _core.precision_recall_f1(np.ascontiguousarray(a, dtype=np.int64))


def classification_report(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    target_names: Sequence[str] | None = None,
    output_dict: bool = True,
    digits: int = 2,
    *,
    num_classes: int | None = None,
) -> dict[str, Any] | str:
    """Precision, recall, F1 and support per class, as scikit-learn reports them.

    Equal to ``sklearn.metrics.classification_report(y_true, y_pred,
    output_dict=..., digits=..., zero_division=0)``; with ``target_names`` or
    ``num_classes`` it reports ``labels=range(k)`` like scikit-learn's
    ``labels=`` argument, otherwise the labels present in either input.

    Parameters
    ----------
    y_true, y_pred : array_like
        Class labels ``(N,)`` / ``(N, 1)``, or one-hot / probability rows
        ``(N, k)`` (reduced by argmax).
    target_names : sequence of str, optional
        Names of classes ``0..k-1``, used as the keys / row names.
    output_dict : bool, default True
        Return a dict (scikit-learn's ``output_dict=True`` layout); False
        returns scikit-learn's text table.
    digits : int, default 2
        Digits of the scores in the text table.
    num_classes : int, optional
        Report every class ``0..num_classes-1`` even if absent.

    Returns
    -------
    dict or str
        ``{name: {"precision", "recall", "f1-score", "support"}, ...,
        "accuracy": float, "macro avg": {...}, "weighted avg": {...}}``
        (supports are ints), or the text table.

    Raises
    ------
    ValueError
        Bad labels (see ``confusion_matrix``), empty inputs, or
        ``target_names`` and ``num_classes`` that disagree.
    """
    if target_names is not None:
        target_names = [str(n) for n in target_names]
        if num_classes is not None and num_classes != len(target_names):
            raise ValueError(
                f"num_classes={num_classes} does not match the {len(target_names)} target_names"
            )
        num_classes = len(target_names)
    scores = _core.classification_scores(
        _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred"), num_classes
    )
    labels = [int(label) for label in scores["labels"]]
    names = (
        [target_names[i] for i in labels] if target_names is not None else list(map(str, labels))
    )
    headers = ("precision", "recall", "f1-score", "support")
    rows: list[tuple[str, float, float, float, float]] = [
        (name, float(p), float(r), float(f), int(s))
        for name, p, r, f, s in zip(
            names, scores["precision"], scores["recall"], scores["f1-score"], scores["support"]
        )
    ]
    total = int(scores["total"])
    averages = [(key, *scores[key], total) for key in ("macro avg", "weighted avg")]
    if output_dict:
        report: dict[str, Any] = {row[0]: dict(zip(headers, row[1:])) for row in rows}
        report["accuracy"] = float(scores["accuracy"])
        for row in averages:
            report[row[0]] = dict(zip(headers, row[1:]))
        return report

    if scores["accuracy"] == 0.0:
        # scikit-learn's counts turn float when no prediction is right (its
        # "pathological case" zeros are float), so its table shows "5.0"; match it.
        rows = [(*row[:4], float(row[4])) for row in rows]
        averages = [(*row[:4], float(row[4])) for row in averages]
    shown_total = averages[0][4]
    width = max(max((len(n) for n in names), default=0), len("weighted avg"), digits)
    text = ("{:>{width}s} " + " {:>9}" * 4).format("", *headers, width=width) + "\n\n"
    row_fmt = "{:>{width}s} " + " {:>9.{digits}f}" * 3 + " {:>9}\n"
    for row in rows:
        text += row_fmt.format(*row, width=width, digits=digits)
    text += "\n"
    accuracy_fmt = "{:>{width}s} " + " {:>9.{digits}}" * 2 + " {:>9.{digits}f}" + " {:>9}\n"
    text += accuracy_fmt.format(
        "accuracy", "", "", scores["accuracy"], shown_total, width=width, digits=digits
    )
    for row in averages:
        text += row_fmt.format(*row, width=width, digits=digits)
    return text
