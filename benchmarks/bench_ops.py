"""Image operations: cnnrs against the course's numpy code, SciPy, OpenCV and PyTorch.

Run: ``python benchmarks/bench_ops.py`` (about 2-3 minutes). Every peer is timed in
the same run on the same inputs; each number is the median of repeated calls
(numpy in, numpy out, so PyTorch includes ``from_numpy``/``.numpy()``, both
zero-copy). The table goes to stdout and into the "## Image operations" section
of ``benchmarks/RESULTS.md`` (other sections are kept).

Ratios are ``peer time / cnnrs time``: above 1 means cnnrs is faster.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import time
from typing import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

import cnnrs

THREADS = os.cpu_count() or 1
SIZES = (512, 4096)
DTYPES = (np.float32, np.float64)
RESULTS = pathlib.Path(__file__).with_name("RESULTS.md")
SECTION = "## Image operations"
NOTES = """\
Notes: the course's `einsum` convolution and `mean` pooling are compiled numpy loops, not
Python loops, so ≥ 100× over them is out of reach where the work is bound by memory: a
3×3 float64 convolution of 4096² reads and writes 256 MB, which takes this machine about
as long as two `x.copy()` of the image. The 512² cases are cache-resident; there the gap
to 100× is arithmetic (nine multiply-adds per pixel on one core: at 512² cnnrs stays on
the calling thread, since waking rayon's workers beside OpenCV's and PyTorch's pools
cost more than it saved; re-measured for the current kernel, with the machine partly
loaded: 0.054–0.057 ms on rayon's pool vs 0.044 ms on the calling thread). The fused 3×3
convolution computes four output rows per pass (each loaded input row serves three of
them), writes its output without zeroing it first, and stores each step only after
loading the next one's inputs (a fresh 1 MB output usually lies a multiple of 4 KiB from
a fresh input, and stores just ahead of the next loads in the low 12 address bits stalled
those loads: 0.053 vs 0.043 ms at 512²). The fused 2×2 poolings now also write their
output without zeroing it first, and max pooling computes two output rows per pass (the
shared middle row is loaded once for both); in interleaved runs against `cv2.dilate`
(30 rounds, this machine) that took 2×2 max pooling from 0.041 to 0.026 ms at 512²
float32, 0.063 to 0.046 ms float64, about 6.3 to 5.3 ms at 4096² float32 and 11.5 to
9.1 ms float64; average pooling at 512² float32 went from 0.038 to 0.030 ms. At 4096²
the pooling is memory-bound, and a quarter to a third of its time is the kernel zeroing
the fresh 64 MB output's huge pages on first touch (`clear_page_erms` in `perf`), which
OpenCV's output pays too. Streaming (non-temporal) stores for large outputs were tried
and dropped: the just-zeroed lines are still in cache, so they saved no
read-for-ownership traffic and made 4096² float32 slower (medians of back-to-back calls
11 ms vs 7 ms). 2×2 max pooling at 4096² float32 is still bimodal in this benchmark's
rounds: calls made right after another cnnrs call often take 9–11 ms, as long as on one
thread (`RAYON_NUM_THREADS=1`: 9.7 ms), against 5.2–5.5 ms when another library's call
came between (1.2–1.4× `cv2.dilate` in interleaved runs of 30 rounds); the cause was not
found within the time box (`perf` shows the fresh output's page zeroing split unevenly
between rayon's two workers, and OpenBLAS threads spinning beside them). The same holds
for every 4096² float32 row: two back-to-back full runs of the same code gave 3×3
convolution 0.87× and 1.6× OpenCV, max pooling 1.39× and 1.4×, so a 4096² ratio in the
table can land at parity or below. This run shared the 2-core machine with two other
engineers' builds and tests (load average 1.7–4 during the runs), so its absolute times
are slower than an idle machine's; each run was made twice and the quieter one kept.

The 2×2 max and average pooling rows share one window function (`window_2x2`) and the
generic rows one row reduction (`reduce_row`) since the pooling fold; the same script,
run twice before and twice after on the same machine, quieter run of each kept (ms,
ratio to `cv2.dilate`/`cv2.blur` in the same run):

| operation | size | dtype | before | after |
|---|---|---|---:|---:|
| max pool 2×2 s1 | 512² | float32 | 0.068 (1.1×) | 0.065 (1.0×) |
| avg pool 2×2 s1 | 512² | float32 | 0.050 (1.8×) | 0.050 (1.7×) |
| max pool 2×2 s1 | 512² | float64 | 0.156 (1.5×) | 0.156 (1.5×) |
| avg pool 2×2 s1 | 512² | float64 | 0.108 (2.3×) | 0.108 (2.1×) |
| max pool 2×2 s1 | 4096² | float32 | 16.0 (1.5×) | 14.8 (1.5×) |
| avg pool 2×2 s1 | 4096² | float32 | 16.1 (1.4×) | 14.8 (1.6×) |
| max pool 2×2 s1 | 4096² | float64 | 31.3 (1.9×) | 17.7 (1.8×) |
| avg pool 2×2 s1 | 4096² | float64 | 31.5 (1.7×) | 20.1 (2.6×) |

The cache-resident 512² rows are unchanged within noise (the fold costs nothing); the
4096² rows moved with the machine's load (the other engineers' builds), not the code.
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


def main() -> None:
    import cv2
    import scipy
    import torch

    cv2.setNumThreads(THREADS)
    torch.set_num_threads(THREADS)
    rng = np.random.default_rng(0)
    rows = []
    started = time.perf_counter()
    for n in SIZES:
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
                print(f"{label} cnnrs {ours * 1e3:9.3f} ms  {cells}")
                sys.stdout.flush()
    elapsed = time.perf_counter() - started

    def fmt(r: float | None) -> str:
        return "—" if r is None else (f"{r:,.0f}×" if r >= 100 else f"{r:.2f}×")

    lines = [
        SECTION,
        "",
        f"Machine: {cpu_name()}, {THREADS} cores, {platform.system()} {platform.release()}; "
        f"cnnrs kernels compiled for `{cnnrs._core._simd_isa()}` (picked at run time).",
        f"Date: {datetime.date.today().isoformat()}. Command: `python benchmarks/bench_ops.py` "
        f"({elapsed:.0f} s).",
        f"Threads: cnnrs (rayon) {THREADS}, OpenCV {cv2.getNumThreads()} "
        f"(`cv2.setNumThreads({THREADS})`), PyTorch {torch.get_num_threads()} "
        f"(`torch.set_num_threads({THREADS})`); the course's numpy code and SciPy use one.",
        f"Versions: numpy {np.__version__}, SciPy {scipy.__version__}, OpenCV {cv2.__version__}, "
        f"PyTorch {torch.__version__}.",
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
        "",
        "| operation | size | dtype | cnnrs (ms) | " + " | ".join(COLUMNS) + " |",
        "|---|---|---|---:|" + "---:|" * len(COLUMNS),
    ]
    for op, n, dt, ours, ratios in rows:
        cells = " | ".join(fmt(ratios.get(c)) for c in COLUMNS)
        lines.append(f"| {op} | {n}² | {dt} | {ours * 1e3:.3f} | {cells} |")

    # The targets, checked on this run's numbers.
    def all_ratio(pred: Callable[[str, str], bool], column: str, bound: float) -> list[str]:
        return [
            f"{op} {n}² {dt}: {ratios[column]:.2f}×"
            for op, n, dt, _, ratios in rows
            if pred(op, dt) and ratios[column] < bound
        ]

    misses = {
        "≥ 100× faster than the course's numpy": all_ratio(
            lambda op, dt: True, "course numpy", 100
        ),
        "float32 3×3 convolution and 2×2 max pooling at or below OpenCV's time": all_ratio(
            lambda op, dt: dt == "float32" and not op.startswith("avg"), "OpenCV", 1.0
        ),
        "float64 faster than OpenCV's float64": all_ratio(
            lambda op, dt: dt == "float64", "OpenCV", 1.0
        ),
    }
    lines += ["", "Targets (this run):", ""]
    for target, missed in misses.items():
        verdict = "met" if not missed else "missed for " + "; ".join(missed)
        lines.append(f"- {target}: {verdict}.")
    lines += ["", NOTES.rstrip("\n")]
    section = "\n".join(lines) + "\n"
    print()
    print(section)

    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
