"""What every test run shares: a header naming the CPU and the dispatch levels the run
uses, so a tolerance failure in a CI log says which machine and level it came from;
and the digits fixtures that several test files train on.

``make test`` runs the tests marked ``numerics`` a second time with libtorch, oneDNN,
MKL and cnnrs's own kernels held to AVX2 (``make numerics-avx2``), so an AVX-512
machine also sees what an AVX2-only one computes.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnrs
from cnnrs._machine import cpu_description, dispatch_description


def pytest_report_header(config):  # noqa: ARG001 (pytest's hook signature)
    return [f"cpu: {cpu_description()}", f"dispatch: {dispatch_description()}"]


# --- the digits, shared by the test files -------------------------------------------
# Loaded once per run (session scope) and shared by every file that asks: no test may
# write into these arrays (copy first).


@pytest.fixture(scope="session")
def digits_all():
    """All 1797 of scikit-learn's digits in its order: x (1797, 8, 8, 1) uint8 with
    values 0..16, y (1797,) int64 — for folds and searches over the whole set."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.uint8)[..., np.newaxis], d.target.astype(np.int64)


@pytest.fixture(scope="session")
def digits_split():
    """``cnnrs.datasets.load_digits()``: ((x, y), (x_test, y_test)), 1438 + 359 images,
    labels as Keras's (n, 1) column."""
    return cnnrs.datasets.load_digits()


@pytest.fixture(scope="session")
def digits_small(digits_split):
    """The first 64 training digits, (x, y): enough for one quick step of a fit."""
    (x, y), _ = digits_split
    return x[:64], y[:64]


@pytest.fixture(scope="session")
def digits_upscaled(digits_split):
    """``digits_split`` with every image upscaled to 32×32 by ``cnnrs.study.upscale``
    (each pixel repeated 4×4; airbench94 needs >= 25×25)."""
    from cnnrs import study

    (x, y), (x_test, y_test) = digits_split
    return (study.upscale(x), y), (study.upscale(x_test), y_test)


# --- CIFAR-shaped random images, for the airbench equivalence tests ------------------


@pytest.fixture(scope="session")
def cifar_shaped():
    """:func:`cifar_shaped_images`, once per run."""
    return cifar_shaped_images()


def cifar_shaped_images() -> tuple[np.ndarray, np.ndarray]:
    """192 smooth random 32×32×3 uint8 images (8×8 noise upscaled 4×4 plus pixel noise,
    so neighbouring pixels correlate, as in photos) with labels of 10 classes (also
    benchmarks/numerics_levels.py's)."""
    rng = np.random.default_rng(0)
    base = rng.integers(40, 216, (192, 8, 8, 3)).astype(np.float64)
    x = np.kron(base, np.ones((1, 4, 4, 1)))
    x = np.clip(x + rng.normal(0, 10, x.shape), 0, 255).astype(np.uint8)
    y = rng.integers(0, 10, 192).astype(np.int64)
    return x, y
