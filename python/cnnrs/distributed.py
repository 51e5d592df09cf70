"""The Ray backend of :func:`cnnrs.cross_validate` and :func:`cnnrs.grid_search`.

Every (configuration, fold) pair is one Ray task that runs
:func:`cnnrs.selection.fit_and_score` (defined in the private ``cnnrs._trial``,
which both backends import), the same unit of work as the local loop,
with the same seed (``seed + fold index``) and the same libtorch thread count
(``threads_per_trial``, by default the driver's ``torch.get_num_threads()``), so on
CPU the results equal the local backend's.

The images and labels are put in Ray's object store once and shared by every
task. A task is a pure function of its arguments: it builds a fresh model, trains
it and returns a dict, writing nothing anywhere. So a task that Ray retries after
a system failure (its worker or node died) starts from scratch and can never see
a half-written state. A task that raises is not retried; its exception, like any
failure left after the retries, is reported in place of that run's scores as
``{"error": "<type>: <message>"}`` while the other runs finish.

Ray is an optional dependency: ``pip install 'cnnrs[ray]'``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

try:
    import ray
    import ray.exceptions
except ImportError as err:
    raise ImportError(
        "backend='ray' needs Ray, an optional dependency of cnnrs: "
        "pip install 'cnnrs[ray]' (or pip install 'ray>=2.9')"
    ) from err

import numpy as np

from ._trial import Fold, fit_and_score

__all__ = ["default_resources", "run_grid_on_ray"]

_RAY_KEYS = {"cpu": "CPU", "gpu": "GPU", "memory": "memory"}


def default_resources(threads: int = 1) -> dict[str, float]:
    """One GPU per trial when the cluster has GPUs, else one CPU per libtorch thread
    the trial runs."""
    if ray.cluster_resources().get("GPU", 0) > 0:
        return {"CPU": 1, "GPU": 1}
    return {"CPU": threads}


def _normalise_resources(resources: Mapping[str, Any]) -> dict[str, float]:
    if not isinstance(resources, Mapping):
        raise TypeError(
            'resources_per_trial must be a dict such as {"CPU": 2, "GPU": 1}, '
            f"got {type(resources).__name__}"
        )
    out: dict[str, float] = {}
    for key, value in resources.items():
        name = _RAY_KEYS.get(str(key).lower(), str(key))
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"resources_per_trial[{key!r}] must be a number, got {value!r}")
        if not value >= 0:
            raise ValueError(f"resources_per_trial[{key!r}] must be >= 0, got {value}")
        out[name] = float(value)
    out.setdefault("CPU", 1.0)
    return out


def _check_feasible(resources: Mapping[str, float]) -> None:
    """Raises rather than letting Ray wait forever for a node that does not exist."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if any(all(node.get(k, 0) >= v for k, v in resources.items() if v > 0) for node in nodes):
        return
    offered = "; ".join(
        ", ".join(f"{k}={v:g}" for k, v in sorted(node.items()) if k in ("CPU", "GPU", "memory"))
        for node in nodes
    )
    raise ValueError(
        f"no node of the Ray cluster can run a trial that needs {dict(resources)}; "
        f"its nodes offer: {offered or 'nothing'}. Pass a smaller resources_per_trial "
        "(or threads_per_trial, which sets the default CPUs per trial)."
    )


def _task_options(resources: Mapping[str, float], max_retries: int) -> dict[str, Any]:
    custom = {k: v for k, v in resources.items() if k not in ("CPU", "GPU", "memory")}
    options: dict[str, Any] = {
        "num_cpus": resources["CPU"],
        "num_gpus": resources.get("GPU", 0),
        # Retries are for system failures (a dead worker or node, an OOM kill) and
        # start the pure task from scratch; an exception in our code is a result.
        "max_retries": max_retries,
        "retry_exceptions": False,
    }
    if "memory" in resources:
        options["memory"] = resources["memory"]
    if custom:
        options["resources"] = custom
    return options


@ray.remote
def _fit_and_score_task(
    params: Mapping[str, Any],
    x: np.ndarray,
    y: np.ndarray,
    folds: list[Fold],
    fold: int,
    num_classes: int,
    seed: int,
    threads: int,
) -> dict[str, Any]:
    """One (configuration, fold) run in a Ray worker: pure, so safe to retry."""
    params = dict(params)
    if params.get("device", "auto") == "auto":
        params["device"] = "cuda" if ray.get_gpu_ids() else "cpu"
    train, val = folds[fold]
    # The driver's thread count, not the node's cores (libtorch's default): the count
    # changes a CPU run's sums, and the local backend runs with this one.
    return fit_and_score(params, x, y, train, val, num_classes, seed=seed, threads=threads)


def _describe_error(err: BaseException) -> str:
    cause = getattr(err, "cause", None) if isinstance(err, ray.exceptions.RayTaskError) else None
    err = cause if cause is not None else err
    message = str(err).strip()
    return f"{type(err).__name__}: {message}" if message else type(err).__name__


def _gather(refs: Sequence[ray.ObjectRef]) -> list[dict[str, Any]]:
    """Each ref's result, or ``{"error": ...}`` for one that failed; never stops early."""
    out = []
    for ref in refs:
        try:
            out.append(ray.get(ref))
        except ray.exceptions.RayError as err:  # task raised, worker/node died, OOM, cancelled
            out.append({"error": _describe_error(err)})
    return out


def run_grid_on_ray(
    grid: Sequence[Mapping[str, Any]],
    x: np.ndarray,
    y: np.ndarray,
    folds: Sequence[Fold],
    num_classes: int,
    *,
    seed: int,
    threads: int = 1,
    resources_per_trial: Mapping[str, Any] | None = None,
    address: str | None = None,
    max_retries: int = 1,
) -> list[list[dict[str, Any]]]:
    """Scores every (configuration, fold) pair as a Ray task.

    Parameters
    ----------
    grid : list of dict
        The configurations, as for :func:`cnnrs.selection.fit_and_score`.
    x, y, folds, num_classes
        Prepared images, labels, (train_idx, val_idx) pairs and class count.
    seed : int
        Fold ``i`` is trained with ``seed + i``, as in the local backend.
    threads : int
        libtorch's CPU threads in every trial, as in the local backend.
    resources_per_trial : dict, optional
        Ray resources for one run, e.g. ``{"CPU": 2}`` or ``{"GPU": 1}``
        (``"memory"`` in bytes and custom resources are passed on). Default: one
        GPU per trial when the cluster has GPUs, else ``threads`` CPUs. The trial
        runs ``threads`` libtorch threads whatever it was given.
    address : str, optional
        Cluster to connect to when Ray is not initialised yet (``"auto"``,
        ``"ray://host:10001"``...); ``None`` starts or finds one as ``ray.init()``
        does. An already initialised Ray is used as it is.
    max_retries : int
        How often Ray reruns a run whose worker or node died (from scratch).

    Returns
    -------
    list of list of dict
        Per configuration (grid order), per fold (fold order), the
        ``fit_and_score`` dict, or ``{"error": "<type>: <message>"}`` for a run
        that failed.
    """
    if isinstance(max_retries, bool) or not isinstance(max_retries, (int, np.integer)):
        raise TypeError(f"max_retries must be an integer, got {type(max_retries).__name__}")
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries}")
    if not ray.is_initialized():
        ray.init(address=address)
    if resources_per_trial is None:
        resources = default_resources(threads)
    else:
        resources = _normalise_resources(resources_per_trial)
    _check_feasible(resources)
    task = _fit_and_score_task.options(**_task_options(resources, int(max_retries)))

    x_ref, y_ref, folds_ref = ray.put(x), ray.put(y), ray.put(list(folds))
    refs = [
        [
            task.remote(dict(params), x_ref, y_ref, folds_ref, i, num_classes, seed + i, threads)
            for i in range(len(folds))
        ]
        for params in grid
    ]
    try:
        return [_gather(row) for row in refs]
    except BaseException:  # Ctrl-C in the driver: stop the runs still going
        for row in refs:
            for ref in row:
                ray.cancel(ref, force=True)
        raise
