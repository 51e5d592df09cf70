"""The unit of model selection, shared by the local loop (:mod:`cnnrs.selection`) and
the Ray backend (:mod:`cnnrs.distributed`): the folds, the split of a parameter dict
into ``Model`` and ``fit`` arguments, and one trial, :func:`fit_and_score`.

The arguments a parameter dict may hold are read from the signatures of
``Model.__init__`` and ``Model.fit``, so a new ``Model`` option is searchable
without touching this module.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from . import _core
from ._progress import FoldProgress
from ._threads import libtorch_threads
from .models import Model

__all__ = [
    "FIT_ARGS",
    "MODEL_ARGS",
    "Fold",
    "copy_callbacks",
    "fit_and_score",
    "make_folds",
    "split_params",
]

#: ``Model(...)`` arguments a parameter dict may set (the data decides the rest).
MODEL_ARGS = frozenset(
    name
    for name in inspect.signature(Model.__init__).parameters
    if name not in ("self", "input_shape", "num_classes")
)
#: ``Model.fit(...)`` arguments a parameter dict may set.
FIT_ARGS = frozenset(
    name
    for name in inspect.signature(Model.fit).parameters
    if name not in ("self", "x", "y", "validation_data", "verbose", "progress")
)

Fold = tuple[np.ndarray, np.ndarray]


def make_folds(
    x: np.ndarray, y: np.ndarray, cv: Any, seed: int = 42, stratified: bool = False
) -> list[Fold]:
    """The (train_idx, val_idx) pairs for ``cv``.

    ``cv`` is an int (shuffled k-fold equal to scikit-learn's
    ``KFold(cv, shuffle=True, random_state=seed)``, or ``StratifiedKFold`` with
    ``stratified=True``) or any iterable of index pairs, e.g.
    ``KFold(5, shuffle=True, random_state=42).split(x)``.
    """
    n = x.shape[0]
    if isinstance(cv, (int, np.integer)) and not isinstance(cv, bool):
        k = int(cv)
        if k < 2:
            raise ValueError(f"cv must be >= 2 folds, got {k}")
        if k > n:
            raise ValueError(f"cv={k} folds is more than the {n} images available")
        if stratified:
            return list(_core.stratified_kfold_indices(y, k, True, int(seed)))
        return list(_core.kfold_indices(n, k, True, int(seed)))
    if isinstance(cv, (str, bytes, bool)) or not isinstance(cv, Iterable):
        raise TypeError(
            "cv must be a number of folds (int) or an iterable of (train_idx, val_idx) pairs, "
            f"got {type(cv).__name__}"
        )
    folds = []
    for i, pair in enumerate(cv):
        try:
            train, val = pair
        except (TypeError, ValueError):
            raise ValueError(f"fold {i} must be a (train_idx, val_idx) pair") from None
        train = np.asarray(train, dtype=np.int64).ravel()
        val = np.asarray(val, dtype=np.int64).ravel()
        for name, idx in (("train", train), ("validation", val)):
            if idx.size == 0:
                raise ValueError(f"fold {i} has an empty {name} part")
            if idx.min() < 0 or idx.max() >= n:
                raise ValueError(
                    f"fold {i} {name} indices must lie in [0, {n}), got {idx.min()}..{idx.max()}"
                )
        folds.append((train, val))
    if not folds:
        raise ValueError("cv gave no folds")
    return folds


def split_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``params`` as ``(Model(...) keywords, fit(...) keywords)``; an unknown key is a
    ValueError that lists the accepted ones."""
    model_kw, fit_kw = {}, {}
    for key, value in params.items():
        if key in MODEL_ARGS:
            model_kw[key] = value
        elif key in FIT_ARGS:
            fit_kw[key] = value
        else:
            accepted = ", ".join(sorted(MODEL_ARGS | FIT_ARGS))
            raise ValueError(f"unknown parameter {key!r}; accepted: {accepted}")
    return model_kw, fit_kw


def copy_callbacks(callbacks: Iterable[Any]) -> list[Any]:
    """A fresh deep copy of each callback (every fold and refit starts from clean
    callback state); one that cannot be copied is named in the error."""
    out = []
    for i, cb in enumerate(callbacks):
        try:
            out.append(copy.deepcopy(cb))
        except Exception as exc:  # noqa: BLE001 (any failure of a user's object)
            raise TypeError(
                f"callbacks[{i}] ({type(cb).__name__}) cannot be deep-copied, which every "
                f"fold needs to start from fresh callback state: {type(exc).__name__}: {exc}"
            ) from exc
    return out


def fit_and_score(
    params: Mapping[str, Any],
    x: np.ndarray,
    y: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    num_classes: int,
    *,
    seed: int,
    verbose: int = 0,
    fold: tuple[int, int] = (1, 1),
    threads: int | None = None,
) -> dict[str, Any]:
    """Trains a fresh model with ``params`` on ``x[train_idx]`` and scores it on ``x[val_idx]``.

    ``x`` and ``y`` are the prepared arrays (uint8/float32 images, int64 labels), so
    the only copies are the two index selections. Returns ``{"accuracy", "loss",
    "history"}``.

    The model is scored by ``model.evaluate(x[val_idx], y[val_idx])`` at the end of
    training. Without callbacks or ``validation_split`` that is the last epoch's
    ``val_accuracy`` / ``val_loss`` (same network, same normalisation, inference
    mode), taken from the history. ``callbacks`` are deep-copied, so every trial
    starts from fresh callback state. With ``validation_split`` the callbacks watch
    the last part of the fold's *training* images and the held-out part is only
    used for the score; without it they watch the held-out part itself.

    ``threads`` is libtorch's CPU thread count for the trial (``None``: as it is);
    both backends pass the same number (see :mod:`cnnrs._threads`).
    """
    with libtorch_threads(threads):
        model_kw, fit_kw = split_params(params)
        model_kw.setdefault("seed", seed)
        if fit_kw.get("callbacks") is not None:
            fit_kw["callbacks"] = copy_callbacks(fit_kw["callbacks"])
        model = Model(**model_kw)
        model.build(x.shape[1:], num_classes)
        printer = FoldProgress(fold[0], fold[1], verbose) if verbose else None
        inner_split = bool(fit_kw.get("validation_split"))
        history = model.fit(
            x[train_idx],
            y[train_idx],
            validation_data=None if inner_split else (x[val_idx], y[val_idx]),
            verbose=0,
            progress=printer,
            **fit_kw,
        )
        if inner_split or fit_kw.get("callbacks") or model.tta != "none":
            # Callbacks may have restored earlier weights or stopped early, and a recipe's
            # test-time augmentation (airbench94's) is part of its score: score the model.
            scores = model.evaluate(x[val_idx], y[val_idx])
            accuracy, loss = scores["accuracy"], scores["loss"]
        else:
            accuracy, loss = history["val_accuracy"][-1], history["val_loss"][-1]
        return {"accuracy": accuracy, "loss": loss, "history": history}
