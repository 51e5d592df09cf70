"""Model selection done right: k-fold cross-validation and grid search.

Each fold trains a *fresh* model on its training part only and is scored on
its held-out part; the grid search returns a *fresh* model trained on all the
data with the best parameters. The fold splits are scikit-learn's
``KFold(cv, shuffle=True, random_state=seed)`` exactly (computed in Rust).

The unit of work, :func:`fit_and_score`, is shared by the local loop here and
by the Ray backend (:mod:`cnnrs.distributed`).
"""

from __future__ import annotations

import inspect
import itertools
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from . import _core
from ._progress import FoldProgress
from .models import Model, _check_count, _images, _labels

_MODEL_ARGS = {
    name
    for name in inspect.signature(Model.__init__).parameters
    if name not in ("self", "input_shape", "num_classes")
}
_FIT_ARGS = {
    name
    for name in inspect.signature(Model.fit).parameters
    if name not in ("self", "x", "y", "validation_data", "verbose", "progress")
}

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


def _split_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    model_kw, fit_kw = {}, {}
    for key, value in params.items():
        if key in _MODEL_ARGS:
            model_kw[key] = value
        elif key in _FIT_ARGS:
            fit_kw[key] = value
        else:
            accepted = ", ".join(sorted(_MODEL_ARGS | _FIT_ARGS))
            raise ValueError(f"unknown parameter {key!r}; accepted: {accepted}")
    return model_kw, fit_kw


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
) -> dict[str, Any]:
    """Trains a fresh model with ``params`` on ``x[train_idx]`` and scores it on ``x[val_idx]``.

    Returns ``{"accuracy", "loss", "history"}``; ``history`` holds the per-epoch
    validation metrics on the held-out part.
    """
    model_kw, fit_kw = _split_params(params)
    model_kw.setdefault("seed", seed)
    model = Model(**model_kw)
    model.build(x.shape[1:], num_classes)
    printer = FoldProgress(fold[0], fold[1], verbose) if verbose else None
    history = model.fit(
        x[train_idx],
        y[train_idx],
        validation_data=(x[val_idx], y[val_idx]),
        verbose=0,
        progress=printer,
        **fit_kw,
    )
    scores = model.evaluate(x[val_idx], y[val_idx])
    return {"accuracy": scores["accuracy"], "loss": scores["loss"], "history": history}


def _prepare(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray, int]:
    xa = _images(x)
    ya, width = _labels(y, xa.shape[0])
    num_classes = max(int(ya.max()) + 1 if ya.size else 0, width or 0, 2)
    return xa, ya, num_classes


def cross_validate(
    architecture: Any,
    x: Any,
    y: Any,
    cv: Any = 5,
    epochs: int = 10,
    batch_size: int = 64,
    learning_rate: float = 5e-4,
    seed: int = 42,
    stratified: bool = False,
    verbose: int = 1,
    device: str = "auto",
    backend: str = "local",
    **kwargs: Any,
) -> dict[str, Any]:
    """k-fold cross-validation of one architecture: a fresh model per fold.

    Returns ``{"fold_accuracies", "mean_accuracy", "std_accuracy", "histories",
    "folds"}`` where ``folds`` are the (train_idx, val_idx) pairs used and each
    history has ``loss``/``accuracy`` (training part) and ``val_loss``/
    ``val_accuracy`` (held-out part) per epoch. ``backend="ray"`` runs the folds
    as Ray tasks (see :mod:`cnnrs.distributed`; ``resources_per_trial``,
    ``address`` and ``max_retries`` go to it).
    """
    ray_kwargs: dict[str, Any] = {}
    if backend == "ray":  # options of the Ray backend, not model parameters
        ray_kwargs = {
            k: kwargs.pop(k)
            for k in ("resources_per_trial", "address", "max_retries")
            if k in kwargs
        }
    params = {
        "architecture": architecture,
        "epochs": _check_count(epochs, "epochs"),
        "batch_size": _check_count(batch_size, "batch_size"),
        "learning_rate": learning_rate,
        "device": device,
        **kwargs,
    }
    _split_params(params)  # unknown keyword -> ValueError before any work
    xa, ya, num_classes = _prepare(x, y)
    result = _evaluate_grid(
        [params], xa, ya, num_classes, cv, seed, stratified, verbose, backend, ray_kwargs
    )
    return result[0]


def _evaluate_grid(
    grid: Sequence[Mapping[str, Any]],
    xa: np.ndarray,
    ya: np.ndarray,
    num_classes: int,
    cv: Any,
    seed: int,
    stratified: bool,
    verbose: int,
    backend: str,
    kwargs: Mapping[str, Any],
) -> list[dict[str, Any]]:
    folds = make_folds(xa, ya, cv, seed, stratified)
    if backend == "ray":
        from .distributed import run_grid_on_ray

        scored = run_grid_on_ray(grid, xa, ya, folds, num_classes, seed=seed, **kwargs)
    elif backend == "local":
        scored = []
        for params in grid:
            runs = []
            for i, (train, val) in enumerate(folds):
                run = fit_and_score(
                    params,
                    xa,
                    ya,
                    train,
                    val,
                    num_classes,
                    seed=seed + i,
                    verbose=verbose,
                    fold=(i + 1, len(folds)),
                )
                if verbose:
                    print(f"Fold {i + 1}/{len(folds)} validation accuracy: {run['accuracy']:.4f}")
                    sys.stdout.flush()
                runs.append(run)
            scored.append(runs)
    else:
        raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
    results: list[dict[str, Any]] = []
    for params, runs in zip(grid, scored):
        ok = [r for r in runs if "error" not in r]
        accs = [r["accuracy"] for r in ok]
        results.append(
            {
                "params": dict(params),
                "fold_accuracies": [r.get("accuracy", float("nan")) for r in runs],
                "mean_accuracy": float(np.mean(accs)) if accs else float("nan"),
                "std_accuracy": float(np.std(accs)) if accs else float("nan"),
                "histories": [r.get("history") for r in runs],
                "folds": folds,
                "errors": [r.get("error") for r in runs],
            }
        )
        if verbose and accs:
            print(
                f"{_describe(params)}: mean accuracy {results[-1]['mean_accuracy']:.4f} "
                f"(± {results[-1]['std_accuracy']:.4f}) over {len(accs)} folds"
            )
    for r in results:
        if not any(e is not None for e in r["errors"]):
            del r["errors"]
    return results


def _describe(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items() if k != "device")


def parameter_grid(
    param_grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Sequence[Any]]],
) -> list[dict[str, Any]]:
    """All parameter combinations in scikit-learn's ``ParameterGrid`` order.

    Keys are sorted and the last key varies fastest; a list of dicts is
    expanded dict by dict.
    """
    grids = [param_grid] if isinstance(param_grid, Mapping) else list(param_grid)
    if not grids:
        raise ValueError("param_grid is empty; give at least one parameter with values")
    out: list[dict[str, Any]] = []
    for g in grids:
        if not isinstance(g, Mapping):
            raise TypeError(f"param_grid must be a dict or a list of dicts, got {type(g).__name__}")
        if not g:
            out.append({})
            continue
        keys = sorted(g)
        values = []
        for k in keys:
            v = g[k]
            if isinstance(v, (str, bytes)) or not isinstance(v, Iterable):
                raise TypeError(f"param_grid[{k!r}] must be a list of values, got {v!r}")
            v = list(v)
            if not v:
                raise ValueError(f"param_grid[{k!r}] is empty; give at least one value")
            values.append(v)
        out.extend(dict(zip(keys, combo)) for combo in itertools.product(*values))
    if all(not p for p in out):
        raise ValueError("param_grid is empty; give at least one parameter with values")
    return out


def grid_search(
    param_grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Sequence[Any]]],
    x: Any,
    y: Any,
    cv: Any = 5,
    seed: int = 42,
    verbose: int = 1,
    stratified: bool = False,
    refit: bool = True,
    backend: str = "local",
    **kwargs: Any,
) -> dict[str, Any]:
    """Cross-validates every combination of ``param_grid`` and refits the best.

    Keys: ``architecture``, ``learning_rate``, ``batch_size``, ``epochs`` and any
    other ``Model``/``fit`` argument (``device``, ``shuffle``, ...). Returns
    ``{"results": [{"params", "mean_accuracy", "std_accuracy",
    "fold_accuracies"}, ...], "best_params", "best_score", "best_index",
    "best_model"}`` with results in ParameterGrid order and ``best_model`` a
    fresh model trained on all of ``x`` with ``best_params`` (None when
    ``refit=False``). Extra keyword arguments go to the Ray backend.
    """
    grid = parameter_grid(param_grid)
    for params in grid:
        _split_params(params)
    xa, ya, num_classes = _prepare(x, y)
    results = _evaluate_grid(
        grid, xa, ya, num_classes, cv, seed, stratified, verbose, backend, kwargs
    )
    means = [r["mean_accuracy"] for r in results]
    if all(np.isnan(m) for m in means):
        raise RuntimeError("every grid point failed; see the errors in the results")
    best = int(np.nanargmax(means))
    out: dict[str, Any] = {
        "results": [
            {
                k: r[k]
                for k in ("params", "mean_accuracy", "std_accuracy", "fold_accuracies", "histories")
            }
            | ({"errors": r["errors"]} if "errors" in r else {})
            for r in results
        ],
        "best_index": best,
        "best_params": dict(grid[best]),
        "best_score": means[best],
        "folds": results[0]["folds"],
        "best_model": None,
    }
    if refit:
        if verbose:
            print(f"Refitting the best parameters on all {len(y)} images: {_describe(grid[best])}")
        model_kw, fit_kw = _split_params(grid[best])
        model_kw.setdefault("seed", seed)
        model = Model(**model_kw)
        model.build(xa.shape[1:], num_classes)
        model.fit(xa, ya, verbose=verbose, **fit_kw)
        out["best_model"] = model
    return out
