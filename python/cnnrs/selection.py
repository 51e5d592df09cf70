"""Model selection done right: k-fold cross-validation and grid search.

Each fold trains a *fresh* model on its training part only and is scored on
its held-out part; the grid search returns a *fresh* model trained on all the
data with the best parameters. The fold splits are scikit-learn's
``KFold(cv, shuffle=True, random_state=seed)`` exactly (computed in Rust).

The unit of work, :func:`fit_and_score` (in the private ``cnnrs._trial``,
re-exported here), is shared by the local loop here and by the Ray backend
(:mod:`cnnrs.distributed`). The data is converted once, here, to uint8/float32
images and int64 labels; every trial receives those arrays.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from . import schedules
from ._arrays import as_images, as_labels, check_count, class_count
from ._threads import libtorch_threads, trial_threads
from ._trial import Fold, copy_callbacks, fit_and_score, make_folds, split_params
from .models import Model

__all__ = [
    "Fold",
    "cross_validate",
    "fit_and_score",
    "grid_search",
    "make_folds",
    "parameter_grid",
]


def _prepare(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """The one conversion of the data: typed arrays every trial then shares."""
    xa = as_images(x)
    ya, width = as_labels(y, xa.shape[0])
    return xa, ya, class_count(ya, width)


def cross_validate(
    architecture: Any,
    x: Any,
    y: Any,
    cv: Any = 5,
    epochs: float | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    seed: int = 42,
    stratified: bool = False,
    verbose: int = 1,
    device: str = "auto",
    backend: str = "local",
    threads_per_trial: int | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """k-fold cross-validation of one architecture: a fresh model per fold.

    Returns ``{"fold_accuracies", "mean_accuracy", "std_accuracy", "histories",
    "folds"}`` where ``folds`` are the (train_idx, val_idx) pairs used and each
    history has ``loss``/``accuracy`` (training part) and ``val_loss``/
    ``val_accuracy`` (held-out part) per epoch. ``backend="ray"`` runs the folds
    as Ray tasks (see :mod:`cnnrs.distributed`; ``resources_per_trial``,
    ``address`` and ``max_retries`` go to it). ``epochs``, ``batch_size`` and
    ``learning_rate`` default as ``Model``/``fit`` do (10, 64, 5e-4, or the
    architecture's recipe: airbench94's 9.9, 1024, 11.5).

    ``threads_per_trial`` is libtorch's CPU thread count for every fold, in both
    backends (default: libtorch's current count, ``torch.get_num_threads()``): the
    thread count changes a CPU run's float sums, so the same seed and the same count
    give the same fold accuracies locally and on Ray.
    """
    threads = trial_threads(threads_per_trial)
    ray_kwargs = _ray_options(backend, kwargs)
    given = {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate}
    if epochs is not None:
        given["epochs"] = schedules.check_epochs(epochs)
    if batch_size is not None:
        given["batch_size"] = check_count(batch_size, "batch_size")
    params = {
        "architecture": architecture,
        **{k: v for k, v in given.items() if v is not None},
        "device": device,
        **kwargs,
    }
    split_params(params)  # unknown keyword -> ValueError before any work
    xa, ya, num_classes = _prepare(x, y)
    result = _evaluate_grid(
        [params], xa, ya, num_classes, cv, seed, stratified, verbose, backend, threads, ray_kwargs
    )
    return result[0]


def _ray_options(backend: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Takes the Ray backend's own options out of ``kwargs`` (which then holds only
    model and fit parameters)."""
    if backend != "ray":
        return {}
    return {
        k: kwargs.pop(k) for k in ("resources_per_trial", "address", "max_retries") if k in kwargs
    }


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
    threads: int,
    kwargs: Mapping[str, Any],
) -> list[dict[str, Any]]:
    folds = make_folds(xa, ya, cv, seed, stratified)
    if backend == "ray":
        from .distributed import run_grid_on_ray

        scored = run_grid_on_ray(
            grid, xa, ya, folds, num_classes, seed=seed, threads=threads, **kwargs
        )
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
                    threads=threads,
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
    threads_per_trial: int | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Cross-validates every combination of ``param_grid`` and refits the best.

    Keys: ``architecture``, ``learning_rate``, ``batch_size``, ``epochs`` and any
    other ``Model``/``fit`` argument (``device``, ``shuffle``, ``optimizer``,
    ``augment``, ``lr_schedule``, ``callbacks``, ``validation_split``, ...);
    callbacks are deep-copied for every fold and for the refit. Returns
    ``{"results": [{"params", "mean_accuracy", "std_accuracy",
    "fold_accuracies"}, ...], "best_params", "best_score", "best_index",
    "best_model"}`` with results in ParameterGrid order and ``best_model`` a
    fresh model trained on all of ``x`` with ``best_params`` (None when
    ``refit=False``). Other keyword arguments are parameters shared by every
    point of the grid (``callbacks=[...]``, ``lr_schedule="cosine"``,
    ``validation_split=0.1``, ...; they show in each ``params``), except the Ray
    backend's options (``resources_per_trial``, ``address``, ``max_retries``).
    Like scikit-learn's fit parameters they are not part of ``params`` and
    ``best_params``, which hold the grid's own keys. ``threads_per_trial`` is as for
    :func:`cross_validate` (the refit runs with it too).
    """
    threads = trial_threads(threads_per_trial)
    ray_kwargs = _ray_options(backend, kwargs)
    grid = parameter_grid(param_grid)
    for key in kwargs:
        if any(key in params for params in grid):
            raise ValueError(f"{key!r} is both in param_grid and a keyword argument; give it once")
    full = [{**params, **kwargs} for params in grid]
    for params in full:
        split_params(params)
    xa, ya, num_classes = _prepare(x, y)
    results = _evaluate_grid(
        full, xa, ya, num_classes, cv, seed, stratified, verbose, backend, threads, ray_kwargs
    )
    for r, params in zip(results, grid):
        r["params"] = dict(params)
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
        model_kw, fit_kw = split_params(full[best])
        model_kw.setdefault("seed", seed)
        if fit_kw.get("callbacks") is not None:
            fit_kw["callbacks"] = copy_callbacks(fit_kw["callbacks"])
        model = Model(**model_kw)
        model.build(xa.shape[1:], num_classes)
        with libtorch_threads(threads):
            model.fit(xa, ya, verbose=verbose, **fit_kw)
        out["best_model"] = model
    return out
