"""The machine a number came from: CPU model, cores, the vector instruction sets that
decide speed and the last bits of results (AVX2, AVX-512, AVX-512 BF16, AMX), and the
dispatch levels libtorch, oneDNN and cnnrs's own kernels run at (which the
environment can hold below the CPU's best). Every timing the demo, the tests' header
and the benchmarks print names it.
"""

from __future__ import annotations

import os
import platform

__all__ = ["DISPATCH_VARIABLES", "cpu_description", "cpu_info", "dispatch_description"]

#: Environment variables that hold a library below the CPU's best instruction set.
DISPATCH_VARIABLES = (
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "MKL_ENABLE_INSTRUCTIONS",
    "CNNRS_SIMD",
)

_ISA_FLAGS = (
    ("AVX2", "avx2"),
    ("AVX-512", "avx512f"),
    ("AVX-512 BF16", "avx512_bf16"),
    ("AMX", "amx_tile"),
)


def cpu_info() -> tuple[str, set[str]]:
    """The CPU's model name and its flags, as /proc/cpuinfo lists them (none elsewhere)."""
    model, flags = platform.processor() or platform.machine() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return model, flags


def cpu_description() -> str:
    """``"AMD EPYC, 2 cores, AVX2 / AVX-512 / AVX-512 BF16"``: the model, the cores and
    the instruction sets this CPU has (of those that matter here)."""
    model, flags = cpu_info()
    isa = [name for name, flag in _ISA_FLAGS if flag in flags]
    return f"{model}, {os.cpu_count()} cores, {' / '.join(isa) or 'no AVX2'}"


def dispatch_description() -> str:
    """What libtorch runs at: ATen's kernel level, whether oneDNN has native bfloat16,
    the thread count, and the dispatch variables set in the environment, if any."""
    import torch

    from . import _core

    forced = ", ".join(f"{k}={os.environ[k]}" for k in DISPATCH_VARIABLES if k in os.environ)
    bf16 = "native" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "not native"
    return (
        f"ATen {torch.backends.cpu.get_cpu_capability()}, oneDNN bf16 {bf16}, "
        f"cnnrs image kernels {_core._simd_isa()}, libtorch threads {torch.get_num_threads()}"
        + (f"; forced: {forced}" if forced else "")
    )
