"""libtorch's CPU thread count, the one setting besides the seed that changes a CPU
training run's numbers: a convolution's gradient sums its terms in an order that
depends on how many threads share the work, so 1 and 2 threads differ in the last
bits and, after a few epochs, in the third decimal of an accuracy.

One rule for everyone who runs training: model selection runs every trial with a
fixed count in both backends (:func:`trial_threads`), and the study sets the count
per step (:func:`libtorch_threads`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ._arrays import check_count

__all__ = ["all_cores", "libtorch_threads", "trial_threads"]

#: The most threads anyone may ask for (a typo such as 10**6 is refused, not started).
MAX_THREADS = 4096


def all_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container or
    ``taskset`` may narrow), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def trial_threads(threads_per_trial: Any = None) -> int:
    """The libtorch threads each trial of a cross-validation or grid search runs with:
    ``threads_per_trial``, or libtorch's current count in this process. The local
    backend and every Ray task use the same number, so they give the same results."""
    if threads_per_trial is None:
        return int(torch.get_num_threads())
    threads = check_count(threads_per_trial, "threads_per_trial")
    if threads > MAX_THREADS:
        raise ValueError(f"threads_per_trial must be <= {MAX_THREADS}, got {threads}")
    return threads


@contextmanager
def libtorch_threads(threads: int | None) -> Iterator[int]:
    """Runs the block with libtorch on ``threads`` CPU threads (``None``: as it is) and
    puts the previous count back afterwards; yields the count in force."""
    before = int(torch.get_num_threads())
    if threads is None or threads == before:
        yield before
        return
    torch.set_num_threads(int(threads))
    try:
        yield int(threads)
    finally:
        torch.set_num_threads(before)
