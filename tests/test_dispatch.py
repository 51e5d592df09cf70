"""The AVX2 dispatch level that ``make numerics-avx2`` runs at really takes effect: an
AVX-512 machine held to AVX2 computes as an AVX2-only CPU does, in libtorch (ATen),
oneDNN and cnnrs's own image kernels, and "auto" precision trains in float32 there
(an AVX2-only CPU has no native bfloat16; oneDNN would emulate it, slower than fp32).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cnnrs._machine import DISPATCH_VARIABLES, cpu_info

AVX2_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "CNNRS_SIMD": "avx2",
}

PROBE = """
import json, torch, cnnrs
from cnnrs._machine import dispatch_description
print(json.dumps({
    "aten": torch.backends.cpu.get_cpu_capability(),
    "onednn_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
    "cnnrs_simd": cnnrs._core._simd_isa(),
    "auto": cnnrs.Model("custom", device="cpu", precision="auto").precision,
    "description": dispatch_description(),
}))
"""


def _cpu_flags() -> set[str]:
    return cpu_info()[1]


def _probe(env: dict[str, str]) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in DISPATCH_VARIABLES}
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_variables_are_the_ones_the_makefile_sets():
    with open(os.path.join(os.path.dirname(__file__), "..", "Makefile")) as f:
        makefile = f.read()
    line = next(ln for ln in makefile.splitlines() if ln.startswith("AVX2_ENV"))
    assert dict(kv.split("=") for kv in line.split(":=", 1)[1].split()) == AVX2_ENV
    assert set(AVX2_ENV) == set(DISPATCH_VARIABLES)


@pytest.mark.skipif("avx2" not in _cpu_flags() or "fma" not in _cpu_flags(), reason="no AVX2")
def test_holding_every_library_to_avx2_takes_effect():
    held = _probe(AVX2_ENV)
    assert held["aten"] == "AVX2"
    assert held["onednn_bf16"] is False
    assert held["auto"] == "fp32"
    assert held["cnnrs_simd"] == "avx2+fma"
    assert "forced: ATEN_CPU_CAPABILITY=avx2" in held["description"]


def test_without_the_variables_each_library_runs_at_the_cpus_best():
    free = _probe({})
    flags = _cpu_flags()
    if "avx512f" in flags and "avx512bw" in flags:
        assert free["aten"] in ("AVX512", "AVX512_VNNI", "AVX512_BF16")
        assert free["cnnrs_simd"] == "avx512"
    elif "avx2" in flags and "fma" in flags:
        assert free["aten"] == "AVX2"
        assert free["cnnrs_simd"] == "avx2+fma"
    assert free["onednn_bf16"] == ("avx512_bf16" in flags)
    assert free["auto"] == ("bf16" if "avx512_bf16" in flags else "fp32")
    assert "forced" not in free["description"]
