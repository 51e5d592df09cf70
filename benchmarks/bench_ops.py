"""Image operations: cnnrs against the course's numpy code, SciPy, OpenCV and PyTorch.

Run: ``python benchmarks/bench_ops.py`` (about 5 minutes). It runs the comparison
twice, back to back, each in a fresh process: at the instruction set the CPU has
(AVX-512 where present) and forced down to AVX2 for every peer that dispatches at
run time (``--isa avx2`` runs only that one; ``--isa native`` only the first):

- cnnrs: ``CNNRS_SIMD=avx2``;
- OpenCV: ``OPENCV_CPU_DISABLE`` naming its AVX-512 features;
- PyTorch: ``ATEN_CPU_CAPABILITY=avx2``;
- numpy: ``NPY_DISABLE_CPU_FEATURES`` naming its AVX-512 targets (SciPy's
  ``ndimage``/``signal`` loops have no run-time dispatch).

These are read when the libraries load, so a run whose environment lacks them
re-executes itself with them set, and each run checks that every peer reports the
level asked for before it times anything. On an AVX-512 machine the AVX2 run thus
shows what an AVX2-only CPU runs (on a faster core).

Every peer is timed in the same run on the same inputs; each number is the median
of repeated calls (numpy in, numpy out, so PyTorch includes
``from_numpy``/``.numpy()``, both zero-copy). The tables go to stdout and, for a
full run (both levels, all sizes), into the "## Image operations" section of
``benchmarks/RESULTS.md`` (other sections are kept).

Ratios are ``peer time / cnnrs time``: above 1 means cnnrs is faster.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

THREADS = os.cpu_count() or 1
SIZES = (512, 4096)
DTYPES = (np.float32, np.float64)
RESULTS = pathlib.Path(__file__).with_name("RESULTS.md")
SECTION = "## Image operations"
# The environment of each level: its variables are set and the others of
# ENV_VARS removed, so that nothing from the caller's environment leaks into a run.
OPENCV_AVX512 = (
    "AVX512F,AVX512BW,AVX512CD,AVX512DQ,AVX512VL,AVX512IFMA,AVX512VBMI,AVX512VBMI2,"
    "AVX512VNNI,AVX512BITALG,AVX512VPOPCNTDQ,AVX512-COMMON,AVX512-SKX,AVX512-CNL,"
    "AVX512-CLX,AVX512-ICL"
)
LEVELS: dict[str, dict[str, str]] = {
    "native": {},
    "avx2": {
        "CNNRS_SIMD": "avx2",
        "OPENCV_CPU_DISABLE": OPENCV_AVX512,
        "ATEN_CPU_CAPABILITY": "avx2",
        "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    },
}
ENV_VARS = {name for env in LEVELS.values() for name in env}
NOTES = """\
Notes. The tables above are this run's, on the machine named at the top. Figures below
from earlier work say where they were measured; "the Xeon" is the Intel Xeon (2 cores,
AVX-512) on which this section's tables were measured before the AVX2 level was added.

The course's `einsum` convolution and `mean` pooling are compiled numpy loops, not
Python loops, so ≥ 100× over them is out of reach where the work is bound by memory (a
3×3 float64 convolution of 4096² reads and writes 256 MB). The 512² cases are
cache-resident; there the gap to 100× is arithmetic: nine multiply-adds per pixel on one
core (at 512² cnnrs stays on the calling thread, since waking rayon's workers beside
OpenCV's and PyTorch's pools cost more than it saved: 0.054–0.057 ms on rayon's pool vs
0.044 ms on the calling thread, on the Xeon). OpenCV's `filter2D` keeps only the non-zero
taps of a small kernel (six of this one's nine); cnnrs computes all nine, so that
`0 × inf` gives NaN as numpy's definition does. On this machine OpenCV's `filter2D` and
`dilate` took the same time with and without AVX-512 (its AVX2 code runs either way);
its `blur` was slower without (0.076 vs 0.048 ms at 512² float32, a quick check).

The fused 3×3 convolution computes four output rows per pass (each loaded input row
serves three of them) and writes its output without zeroing it first. With AVX-512 it
stores each step only after loading the next one's inputs (a fresh 1 MB output usually
lies a multiple of 4 KiB from a fresh input, and stores just ahead of the next loads in
the low 12 address bits stalled those loads: 0.053 vs 0.043 ms at 512², on the Xeon).
With AVX2 it no longer does: holding a step's results needs more than AVX2's 16 vector
registers, and the spills cost more than the stalls (two builds loaded in one process and
timed in alternation with `CNNRS_SIMD=avx2`, this machine: float32 1–7% faster at 512²
and 12% at 1024², float64 8–29%). AVX2 and AVX-512 compute the same sums in the same
order, so the results are bit-identical at both levels (a Rust test checks it). Tried for
AVX2 and dropped, on this machine: going down the image in strips of 8 columns with the
nine taps in registers and only partial sums carried (16 registers, no spills): 0.17 ms
at 512² float32 against 0.065 (rows 2 KiB apart fall into a few cache sets), and still
0.072 ms at 500² (back-to-back calls); blocks of 2 rows instead of 4 (0.072 against 0.060
ms float32, separate runs); in the A/B, blocks of 3 or 6 rows (within the noise), the
nine taps as broadcast vectors or copied to the stack (3–6% slower), and extra
overlapping steps in place of the zero-padded copies before the first aligned step and
after the last whole one (3–9% slower: the border columns still need their padded
steps).

The fused 2×2 poolings write their output without zeroing it first, and max pooling
computes two output rows per pass (the shared middle row is loaded once for both); on
the Xeon, in interleaved runs against `cv2.dilate` (30 rounds), that took 2×2 max pooling
from 0.041 to 0.026 ms at 512² float32 and 0.063 to 0.046 ms float64. Their row loops are
plain slices that the compiler vectorises at every level; they were not changed for AVX2.
At 4096² the pooling is memory-bound, and a quarter to a third of its time is the kernel
zeroing the fresh 64 MB output's huge pages on first touch (`clear_page_erms` in `perf`,
on the Xeon), which OpenCV's output pays too. Streaming (non-temporal) stores for large
outputs were tried and dropped on the Xeon (4096² float32 11 ms vs 7 ms). The 4096² rows
are noisy: on the Xeon two back-to-back full runs of the same code gave 3×3 convolution
0.87× and 1.6× OpenCV, and 2×2 max pooling at 4096² float32 was bimodal (calls right
after another cnnrs call took about twice as long; the cause was not found), so a 4096²
ratio can land at parity or below. This run shared the 2-core machine with another
engineer's builds and test runs, so its absolute times are slower than an idle
machine's, and the two levels were measured one after the other, not interleaved.
"""


# --- the course's numpy code (the study's from-scratch reference) ------------


def course_convolution(image: np.ndarray, kernel: np.ndarray, padding: int) -> np.ndarray:
    padded = np.pad(image, padding)
    windows = sliding_window_view(padded, kernel.shape)
    return np.einsum("ijkl,kl->ij", windows, kernel)


def course_pooling(image: np.ndarray, p: int, kind: str) -> np.ndarray:
    windows = sliding_window_view(image, (p, p))
    return windows.max(axis=(2, 3)) if kind == "max" else windows.mean(axis=(2, 3))


# --- timing ----------------------------------------------------------------


def interleaved_medians(calls: dict[str, tuple[Callable[[], object], bool]], n: int) -> dict:
    """Median time of each call, timed in rounds: in each round every peer makes
    one untimed call (so the thread pool of the peer before it has gone quiet
    and its own is awake) and then a few timed ones. A burst of load from
    elsewhere on the machine thus hits all peers alike. Slow peers (the course's
    numpy, correlate2d) take part in fewer rounds."""
    rounds, per_round = (15, 1) if n >= 4096 else (20, 5)
    slow_rounds = 2 if n >= 4096 else 3
    times: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(rounds):
        for name, (fn, slow) in calls.items():
            if slow and r >= slow_rounds:
                continue
            fn()
            for _ in range(1 if slow else per_round):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def peers(x: np.ndarray, op: str) -> dict[str, tuple[Callable[[], object], bool]]:
    """name -> (call, is_slow) for operation ``op`` on image ``x``."""
    import cv2
    import scipy.ndimage as ndi
    import scipy.signal as sig
    import torch
    import torch.nn.functional as F

    import cnnrs

    k = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], dtype=x.dtype) / 4
    t = torch.from_numpy(x)[None, None]
    tk = torch.from_numpy(np.ascontiguousarray(k))[None, None]
    ones = np.ones((2, 2), np.uint8)
    if op == "conv 3x3 same":
        return {
            "cnnrs": (lambda: cnnrs.convolution(x, k, padding="same"), False),
            "course numpy": (lambda: course_convolution(x, k, 1), True),
            "scipy.signal.correlate2d": (lambda: sig.correlate2d(x, k, mode="same"), True),
            "scipy.ndimage.correlate": (lambda: ndi.correlate(x, k, mode="constant"), False),
            "cv2.filter2D": (
                lambda: cv2.filter2D(x, -1, k, borderType=cv2.BORDER_CONSTANT),
                False,
            ),
            "torch conv2d": (lambda: F.conv2d(t, tk, padding=1)[0, 0].numpy(), False),
        }
    if op == "max pool 2x2 s1":
        return {
            "cnnrs": (lambda: cnnrs.pooling(x, 2, "max_pooling"), False),
            "course numpy": (lambda: course_pooling(x, 2, "max"), True),
            "scipy.ndimage.maximum_filter": (lambda: ndi.maximum_filter(x, size=2), False),
            "cv2.dilate": (lambda: cv2.dilate(x, ones), False),
            "torch max_pool2d": (lambda: F.max_pool2d(t, 2, stride=1)[0, 0].numpy(), False),
        }
    return {
        "cnnrs": (lambda: cnnrs.pooling(x, 2, "avg_pooling"), False),
        "course numpy": (lambda: course_pooling(x, 2, "avg"), True),
        "scipy.ndimage.uniform_filter": (lambda: ndi.uniform_filter(x, size=2), False),
        "cv2.blur": (lambda: cv2.blur(x, (2, 2)), False),
        "torch avg_pool2d": (lambda: F.avg_pool2d(t, 2, stride=1)[0, 0].numpy(), False),
    }


PEER_COLUMNS = {
    "course numpy": "course numpy",
    "scipy.signal.correlate2d": "scipy",
    "scipy.ndimage.correlate": "ndimage",
    "scipy.ndimage.maximum_filter": "ndimage",
    "scipy.ndimage.uniform_filter": "ndimage",
    "cv2.filter2D": "OpenCV",
    "cv2.dilate": "OpenCV",
    "cv2.blur": "OpenCV",
    "torch conv2d": "PyTorch",
    "torch max_pool2d": "PyTorch",
    "torch avg_pool2d": "PyTorch",
}
COLUMNS = ["course numpy", "scipy", "ndimage", "OpenCV", "PyTorch"]


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def cpu_flags() -> str:
    """The CPU's vector flags (AVX, FMA, AVX-512, AMX) as lscpu lists them."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    for line in out.splitlines():
        if line.startswith("Flags:"):
            flags = line.split(":", 1)[1].split()
            simd = [f for f in flags if re.match(r"(avx|fma|amx)", f)]
            amx = "" if any(f.startswith("amx") for f in flags) else ", no AMX"
            return " ".join(simd) + amx
    return "unknown"


def peer_isas() -> dict[str, str]:
    """The instruction set each peer dispatches to in this process."""
    import cv2
    import torch

    import cnnrs

    # cv::CPU_AVX2 = 11, cv::CPU_AVX_512F = 13 (the Python module has no names for them)
    opencv = (
        "AVX-512"
        if cv2.checkHardwareSupport(13)
        else ("AVX2" if cv2.checkHardwareSupport(11) else "SSE4")
    )
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

        on = [t for t in __cpu_dispatch__ if __cpu_features__.get(t)]
        numpy = on[-1] if on else "baseline"
    except ImportError:
        numpy = "unknown"
    return {
        "cnnrs": cnnrs._core._simd_isa(),
        "OpenCV": opencv,
        "PyTorch": torch.backends.cpu.get_cpu_capability(),
        "numpy": numpy,
    }


def check_level(level: str, isas: dict[str, str]) -> None:
    """Exits if a peer ignored the environment of ``level``."""
    if level != "avx2":
        return
    want = {"cnnrs": "avx2+fma", "OpenCV": "AVX2", "PyTorch": "AVX2"}
    wrong = {k: isas[k] for k, v in want.items() if isas[k] != v}
    if wrong or "X86_V4" in isas["numpy"] or "AVX512" in isas["numpy"]:
        sys.exit(f"--isa avx2: peers not at AVX2: {isas}")


def run_level(level: str, sizes: tuple[int, ...]) -> dict[str, Any]:
    """Times every operation at ``level`` (this process's environment)."""
    import cv2
    import scipy
    import torch

    isas = peer_isas()
    check_level(level, isas)
    print(f"[{level}] " + ", ".join(f"{k} {v}" for k, v in isas.items()), flush=True)
    cv2.setNumThreads(THREADS)
    torch.set_num_threads(THREADS)
    rng = np.random.default_rng(0)
    rows = []
    started = time.perf_counter()
    for n in sizes:
        base = rng.random((n, n))
        for dtype in DTYPES:
            x = base.astype(dtype)
            for op in ("conv 3x3 same", "max pool 2x2 s1", "avg pool 2x2 s1"):
                timings = interleaved_medians(peers(x, op), n)
                ours = timings.pop("cnnrs")
                ratios = {PEER_COLUMNS[name]: t / ours for name, t in timings.items()}
                rows.append((op, n, np.dtype(dtype).name, ours, ratios))
                cells = "  ".join(f"{c} {ratios[c]:7.1f}x" for c in COLUMNS if c in ratios)
                label = f"{op:16s} {n:5d}² {np.dtype(dtype).name:8s}"
                print(f"[{level}] {label} cnnrs {ours * 1e3:9.3f} ms  {cells}", flush=True)
    return {
        "level": level,
        "isas": isas,
        "elapsed": time.perf_counter() - started,
        "rows": rows,
        "threads": {"OpenCV": cv2.getNumThreads(), "PyTorch": torch.get_num_threads()},
        "versions": {
            "numpy": np.__version__,
            "SciPy": scipy.__version__,
            "OpenCV": cv2.__version__,
            "PyTorch": torch.__version__,
        },
    }


def level_table(res: dict[str, Any]) -> list[str]:
    """The markdown table and target check of one level's run."""

    def fmt(r: float | None) -> str:
        return "—" if r is None else (f"{r:,.0f}×" if r >= 100 else f"{r:.2f}×")

    rows = res["rows"]
    lines = [
        "| operation | size | dtype | cnnrs (ms) | " + " | ".join(COLUMNS) + " |",
        "|---|---|---|---:|" + "---:|" * len(COLUMNS),
    ]
    for op, n, dt, ours, ratios in rows:
        cells = " | ".join(fmt(ratios.get(c)) for c in COLUMNS)
        lines.append(f"| {op} | {n}² | {dt} | {ours * 1e3:.3f} | {cells} |")

    # The targets, checked on this run's numbers.
    def all_ratio(pred: Callable[[str, int, str], bool], column: str, bound: float) -> list[str]:
        return [
            f"{op} {n}² {dt}: {ratios[column]:.2f}×"
            for op, n, dt, _, ratios in rows
            if pred(op, n, dt) and ratios[column] < bound
        ]

    misses = {
        "≥ 100× faster than the course's numpy": all_ratio(
            lambda op, n, dt: True, "course numpy", 100
        ),
        "every 512² row at or below OpenCV's time": all_ratio(
            lambda op, n, dt: n == 512, "OpenCV", 1.0
        ),
        "float32 3×3 convolution and 2×2 max pooling at or below OpenCV's time": all_ratio(
            lambda op, n, dt: dt == "float32" and not op.startswith("avg"), "OpenCV", 1.0
        ),
        "float64 faster than OpenCV's float64": all_ratio(
            lambda op, n, dt: dt == "float64", "OpenCV", 1.0
        ),
    }
    lines += ["", "Targets (this run):", ""]
    for target, missed in misses.items():
        verdict = "met" if not missed else "missed for " + "; ".join(missed)
        lines.append(f"- {target}: {verdict}.")
    return lines


def section(results: list[dict[str, Any]]) -> str:
    """The "## Image operations" section for runs at several levels."""
    first = results[0]
    lines = [
        SECTION,
        "",
        f"Machine: {cpu_name()}, {THREADS} cores, {platform.system()} {platform.release()}; "
        f"vector flags: {cpu_flags()}.",
        f"Date: {datetime.date.today().isoformat()}. Command: `python benchmarks/bench_ops.py` "
        f"({sum(r['elapsed'] for r in results):.0f} s of timing; the levels back to back, "
        "each in a fresh process).",
        f"Threads: cnnrs (rayon) {THREADS}, OpenCV {first['threads']['OpenCV']} "
        f"(`cv2.setNumThreads({THREADS})`), PyTorch {first['threads']['PyTorch']} "
        f"(`torch.set_num_threads({THREADS})`); the course's numpy code and SciPy use one.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in first["versions"].items()) + ".",
        "",
        "Each cell is **peer time / cnnrs time** (above 1: cnnrs is faster). Times are "
        "medians of calls made in rounds (each round: one untimed call per peer, then 5 timed "
        "at 512² and 1 at 4096²; 20 and 15 rounds, 3 and 2 for the course's numpy and "
        "correlate2d), so load from elsewhere on the shared machine hits all peers alike; "
        'numpy in and numpy out. "course numpy" is the study\'s '
        "`sliding_window_view` + `einsum` convolution (after `np.pad`) and "
        '`sliding_window_view` + `max`/`mean` pooling; convolutions are 3×3 with "same" '
        "zero padding (OpenCV `BORDER_CONSTANT`, PyTorch `padding=1`); pooling is 2×2, "
        "stride 1 (OpenCV `dilate`/`blur`, SciPy `maximum_filter`/`uniform_filter`, "
        "which return the full size).",
    ]
    titles = {
        "native": "At the detected level",
        "avx2": "Forced down to AVX2 (on the same AVX-512 machine)",
    }
    for res in results:
        isas = "; ".join(f"{k} `{v}`" for k, v in res["isas"].items())
        lines += ["", f"### {titles[res['level']]}", ""]
        if res["level"] == "avx2":
            env = LEVELS["avx2"]
            lines += [
                "The same machine, every peer that dispatches at run time held to AVX2 "
                "(as on an AVX2-only CPU, though with this CPU's faster core and caches): "
                f"`CNNRS_SIMD={env['CNNRS_SIMD']}`, "
                f"`ATEN_CPU_CAPABILITY={env['ATEN_CPU_CAPABILITY']}`, "
                f'`NPY_DISABLE_CPU_FEATURES="{env["NPY_DISABLE_CPU_FEATURES"]}"` and '
                f"`OPENCV_CPU_DISABLE={env['OPENCV_CPU_DISABLE']}`.",
                "",
            ]
        lines += [f"Dispatch: {isas}.", ""]
        lines += level_table(res)
    lines += ["", NOTES.rstrip("\n")]
    return "\n".join(lines) + "\n"


def write_results(text_section: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: text_section + "\n", text).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + text_section
    RESULTS.write_text(text)
    print(f"wrote {RESULTS}")


def level_env(level: str) -> dict[str, str]:
    """This process's environment with ``level``'s variables (and no other level's)."""
    kept = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    return {**kept, **LEVELS[level]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--isa", choices=["all", *LEVELS], default="all")
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--json", help=argparse.SUPPRESS)  # where a level's run leaves its rows
    args = ap.parse_args()
    sizes = tuple(args.sizes)

    if args.isa != "all":
        env = level_env(args.isa)
        if any(os.environ.get(k) != env.get(k) for k in ENV_VARS):
            # The libraries read these when they load: start again with them set.
            os.execve(sys.executable, [sys.executable, *sys.argv], env)
        res = run_level(args.isa, sizes)
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps(res))
        else:
            print("\n".join(level_table(res)))
        return

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for level in LEVELS:
            out = pathlib.Path(tmp, f"{level}.json")
            cmd = [sys.executable, __file__, "--isa", level, "--json", str(out), "--sizes"]
            subprocess.run([*cmd, *map(str, sizes)], env=level_env(level), check=True)
            results.append(json.loads(out.read_text()))
    text_section = section(results)
    print()
    print(text_section)
    if sizes == SIZES:
        write_results(text_section)
    else:
        print("(not written to RESULTS.md: only a run of every size is)")


if __name__ == "__main__":
    main()
