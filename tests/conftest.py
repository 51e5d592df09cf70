"""What every test run shares: a header naming the CPU and the dispatch levels the run
uses, so a tolerance failure in a CI log says which machine and level it came from.

``make test`` runs the tests marked ``numerics`` a second time with libtorch, oneDNN,
MKL and cnnrs's own kernels held to AVX2 (``make numerics-avx2``), so an AVX-512
machine also sees what an AVX2-only one computes.
"""

from __future__ import annotations

from cnnrs._machine import cpu_description, dispatch_description


def pytest_report_header(config):  # noqa: ARG001 (pytest's hook signature)
    return [f"cpu: {cpu_description()}", f"dispatch: {dispatch_description()}"]
