"""The Ray backend: one Ray task per (configuration, fold), results equal to the local
backend for the same seeds on CPU, failed runs reported while the rest finish, and a
clear ImportError without Ray.

The Ray tests share one local Ray instance with a CPU per libtorch thread (at least 2)
and no GPU (so trials run on CPU and can be compared bit for bit with the local loop)
and are skipped when Ray is not installed; the ImportError test runs either way.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

import cnnrs

GRID = {
    "architecture": ["custom"],
    "learning_rate": [1e-3, 3e-3],
    "epochs": [2],
    "batch_size": [32],
}


@pytest.fixture(scope="module")
def digits(digits_all):
    """The first 300 of all the digits (conftest's ``digits_all``)."""
    x, y = digits_all
    return x[:300], y[:300]


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(
        # A trial asks for a CPU per libtorch thread of the driver by default.
        num_cpus=max(2, torch.get_num_threads()),
        num_gpus=0,
        include_dashboard=False,
        object_store_memory=200 * 1024**2,
        log_to_driver=False,  # the failing trials' tracebacks belong in the results, not here
    )
    yield ray
    ray.shutdown()


def _assert_same_runs(ray_result, local_result):
    assert ray_result["fold_accuracies"] == local_result["fold_accuracies"]
    assert ray_result["histories"] == local_result["histories"]
    assert ray_result["mean_accuracy"] == local_result["mean_accuracy"]
    assert ray_result["std_accuracy"] == local_result["std_accuracy"]


@pytest.fixture(scope="module")
def ray_search(ray_cluster, digits):
    """The grid plus a point that fails inside its tasks (a negative learning rate is
    only rejected when the task builds the model)."""
    x, y = digits
    grid = [GRID, {**GRID, "learning_rate": [-1.0]}]
    return cnnrs.grid_search(
        grid, x, y, cv=3, verbose=0, refit=False, backend="ray", threads_per_trial=1
    )


def test_grid_search_on_ray_equals_local(ray_search, digits):
    x, y = digits
    local = cnnrs.grid_search(
        GRID, x, y, cv=3, verbose=0, refit=False, device="cpu", threads_per_trial=1
    )
    assert len(ray_search["results"]) == 3
    for r, expected in zip(ray_search["results"][:2], local["results"]):
        assert r["params"] == expected["params"]
        assert "errors" not in r
        _assert_same_runs(r, expected)
        assert len(r["histories"][0]["val_accuracy"]) == 2
    assert ray_search["best_index"] == local["best_index"]
    assert ray_search["best_score"] == local["best_score"]
    for (tr, va), (etr, eva) in zip(ray_search["folds"], local["folds"]):
        np.testing.assert_array_equal(tr, etr)
        np.testing.assert_array_equal(va, eva)


def test_failed_trials_are_reported_and_the_rest_finish(ray_search):
    failed = ray_search["results"][2]
    assert failed["params"]["learning_rate"] == -1.0
    assert len(failed["errors"]) == 3
    for error in failed["errors"]:
        assert error.startswith("ValueError: ")
        assert "learning_rate must be a positive finite number" in error
    assert np.isnan(failed["mean_accuracy"])
    assert all(np.isnan(a) for a in failed["fold_accuracies"])
    assert ray_search["best_index"] in (0, 1)
    assert all(len(r["fold_accuracies"]) == 3 for r in ray_search["results"][:2])


KW = dict(cv=3, epochs=2, batch_size=32, learning_rate=1e-3, verbose=0)


@pytest.mark.numerics
def test_cross_validate_on_ray_equals_local_with_the_defaults(ray_cluster, digits):
    """The default thread count is the driver's, in both backends (a Ray trial with one
    CPU and one thread beside a local run with two gave 0.8748 vs 0.8737)."""
    x, y = digits
    # device "auto" (the default) runs on CPU in a task that got no GPU
    on_ray = cnnrs.cross_validate("custom", x, y, backend="ray", **KW)
    local = cnnrs.cross_validate("custom", x, y, **KW)
    assert set(on_ray) == set(local)
    _assert_same_runs(on_ray, local)


@pytest.mark.numerics
@pytest.mark.parametrize("threads", [1, 2])
def test_cross_validate_on_ray_equals_local_at_each_thread_count(ray_cluster, digits, threads):
    x, y = digits
    on_ray = cnnrs.cross_validate(
        "custom",
        x,
        y,
        backend="ray",
        threads_per_trial=threads,
        resources_per_trial={"CPU": 1},
        **KW,
    )
    local = cnnrs.cross_validate("custom", x, y, device="cpu", threads_per_trial=threads, **KW)
    _assert_same_runs(on_ray, local)


def test_the_thread_count_changes_the_numbers_so_it_is_one_setting(digits):
    """Why threads_per_trial exists: the same seed on 1 and 2 threads differs."""
    x, y = digits
    before = torch.get_num_threads()
    one = cnnrs.cross_validate("custom", x, y, device="cpu", threads_per_trial=1, **KW)
    two = cnnrs.cross_validate("custom", x, y, device="cpu", threads_per_trial=2, **KW)
    assert one["histories"] != two["histories"]
    assert torch.get_num_threads() == before  # each trial's count is put back


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", 10**7])
def test_threads_per_trial_is_validated(digits, bad):
    x, y = digits
    before = torch.get_num_threads()
    with pytest.raises((TypeError, ValueError), match="threads_per_trial"):
        cnnrs.cross_validate("custom", x, y, threads_per_trial=bad, **KW)
    assert torch.get_num_threads() == before


def test_resources_per_trial_become_task_options(ray_cluster):
    from cnnrs.distributed import _normalise_resources, _task_options

    resources = _normalise_resources({"gpu": 1, "memory": 2e9, "accelerator_type:H100": 0.001})
    assert _task_options(resources, 1) == {
        "num_cpus": 1.0,
        "num_gpus": 1.0,
        "memory": 2e9,
        "resources": {"accelerator_type:H100": 0.001},
        "max_retries": 1,
        "retry_exceptions": False,
    }
    with pytest.raises(ValueError, match=">= 0"):
        _normalise_resources({"CPU": -1})


def test_a_crashed_worker_is_reported_and_the_others_finish(ray_cluster):
    from cnnrs.distributed import _gather

    @ray_cluster.remote(max_retries=0)
    def run(crash):
        if crash:
            os._exit(1)
        return {"accuracy": 1.0}

    runs = _gather([run.remote(False), run.remote(True), run.remote(False)])
    assert runs[0] == runs[2] == {"accuracy": 1.0}
    assert runs[1]["error"].startswith("WorkerCrashedError")


def test_resources_the_cluster_lacks_are_refused(ray_cluster, digits):
    x, y = digits
    with pytest.raises(ValueError, match="no node of the Ray cluster"):
        cnnrs.cross_validate(
            "custom", x, y, cv=3, epochs=1, verbose=0, backend="ray", resources_per_trial={"GPU": 1}
        )
    with pytest.raises(TypeError, match="resources_per_trial"):
        cnnrs.cross_validate(
            "custom", x, y, cv=3, epochs=1, verbose=0, backend="ray", resources_per_trial=2
        )


def test_without_ray_the_backend_says_how_to_install_it(monkeypatch, digits):
    x, y = digits
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    monkeypatch.delitem(sys.modules, "cnnrs.distributed", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'cnnrs\[ray\]'"):
        cnnrs.cross_validate("custom", x, y, cv=3, epochs=1, verbose=0, backend="ray")
    with pytest.raises(ImportError, match=r"pip install 'cnnrs\[ray\]'"):
        cnnrs.grid_search(GRID, x, y, cv=3, verbose=0, backend="ray")
