"""How far cnnrs's numbers drift across CPU dispatch levels and thread counts, and how
far the reference's own drift: the measurement behind the tolerances of
tests/test_airbench.py (`weight_tolerance`, the loss `rtol`).

Each configuration (libtorch, oneDNN and MKL at the CPU's best level, held to AVX2, or
held to their baseline; 1 and 2 libtorch threads) runs in its own process, since the
dispatch variables are read once at start-up. Each process trains airbench94 (or
``--arch``'s network of the family) and the reference (airbench 0.1.8's modules and a
transcription of its loop, from tests/test_airbench.py) for the test's 14 steps on the
test's images from the same weights, and reports:

- the worst relative difference of the per-epoch losses;
- per group of tensors (the biases trained at 64x the rate with the whitening bias;
  everything else), the worst difference to the reference relative to the tensor's
  largest value, as the test measures it.

The parent then compares the reference's final weights across configurations (how far
the reference disagrees with itself), prints one table and, with --write, puts it in
the "## Numerics across CPU dispatch levels" section of benchmarks/RESULTS.md (for
another ``--arch``, a section of its own named after it).

    python benchmarks/numerics_levels.py [--arch airbench96] [--write]
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _results import write_section

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Numerics across CPU dispatch levels"

#: Each level's environment (read by libtorch, oneDNN and MKL at start-up).
LEVELS = {
    "best": {},
    "AVX2": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    },
    "baseline": {
        "ATEN_CPU_CAPABILITY": "default",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
    },
}
THREADS = (1, 2)


def group(name: str) -> str:
    return "biases (64x rate, whitening)" if name.endswith(".bias") else "other tensors"


def child(out: Path, arch: str) -> None:
    """One configuration: train both, save the reference's weights, print the errors."""
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    import test_airbench as t
    from conftest import cifar_shaped_images

    import cnnrs

    x, y = cifar_shaped_images()  # the test's cifar_shaped fixture
    n = t.STEP_IMAGES.get(arch, 192)
    x, y, batch, lib = x[:n], y[:n], n // 3, t.FAMILY[arch]
    torch.manual_seed(2)
    ref = t.reference_net(lib)
    model = cnnrs.Model(arch, device="cpu", seed=0, precision="fp32", augment=[])
    model.build((32, 32, 3), 10)
    t.copy_into_cnnrs(ref, model, t.NAMES[arch])
    history = model.fit(x, y, epochs=4.4, batch_size=batch, shuffle=False, verbose=0)
    losses = t.reference_train(
        ref, t.normalized(x, model), torch.from_numpy(y), batch, 4.4, 5000, lib
    )
    ours, theirs = model.state_dict(), ref.state_dict()
    worst: dict[str, tuple[float, str]] = {}
    for name, key in t.NAMES[arch].items():
        expected = theirs[key].numpy()
        scale = max(float(np.abs(expected).max()), 1e-3)
        err = float(np.abs(ours[name] - expected).max()) / scale
        g = group(name)
        if err >= worst.get(g, (-1.0, ""))[0]:
            worst[g] = (err, name)
    np.savez(out, **{name: theirs[key].numpy() for name, key in t.NAMES[arch].items()})
    rel = np.abs(np.array(history["loss"]) - np.array(losses)) / np.abs(np.array(losses))
    print(
        json.dumps(
            {
                "aten": torch.backends.cpu.get_cpu_capability(),
                "loss": float(rel.max()),
                "worst": worst,
            }
        )
    )


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--arch",
        default="airbench94",
        choices=("airbench93", "airbench94", "airbench95", "airbench96"),
        help="a network of airbench 0.1.8's family",
    )
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.arch)
        return
    sys.path.insert(0, str(ROOT / "python"))
    from cnnrs._machine import DISPATCH_VARIABLES, cpu_description

    started = time.perf_counter()
    clean = {k: v for k, v in os.environ.items() if k not in DISPATCH_VARIABLES}
    rows, refs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for (level, env), threads in itertools.product(LEVELS.items(), THREADS):
            out = Path(tmp) / f"{level}_{threads}.npz"
            run = subprocess.run(
                [sys.executable, __file__, "--child", str(out), "--arch", args.arch],
                env={**clean, **env, "OMP_NUM_THREADS": str(threads)},
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(run.stdout.strip().splitlines()[-1])
            rows.append((level, threads, r))
            refs[(level, threads)] = dict(np.load(out))
            print(level, threads, r)
    self_drift: dict[str, tuple[float, str]] = {}
    for a, b in itertools.combinations(refs, 2):
        for name, va in refs[a].items():
            vb = refs[b][name]
            err = float(np.abs(va - vb).max()) / max(float(np.abs(vb).max()), 1e-3)
            g = group(name)
            if err >= self_drift.get(g, (-1.0, ""))[0]:
                self_drift[g] = (err, name)
    groups = sorted({g for _, _, r in rows for g in r["worst"]})
    arch = "" if args.arch == "airbench94" else f" --arch {args.arch}"
    lines = [
        f"Machine: {cpu_description()}. Date: {datetime.date.today()}. Command: "
        f"`python benchmarks/numerics_levels.py{arch}` ({time.perf_counter() - started:.0f} s).",
        "",
        f"{args.arch} against its reference, 14 SGD steps from the same weights in float32 "
        "(tests/test_airbench.py's training test), each configuration in its own process. "
        "Levels: *best* is what the CPU offers, *AVX2* and *baseline* hold libtorch "
        "(`ATEN_CPU_CAPABILITY`), oneDNN (`ONEDNN_MAX_CPU_ISA`) and MKL "
        "(`MKL_ENABLE_INSTRUCTIONS`) down. Weight errors are relative to each tensor's "
        "largest value; the worst tensor of each group is named.",
        "",
        "| level (ATen) | threads | per-epoch loss, rel. | " + " | ".join(groups) + " |",
        "|---|---:|---:|" + "---|" * len(groups),
    ]
    for level, threads, r in rows:
        cells = " | ".join(f"{r['worst'][g][0]:.1e} ({r['worst'][g][1]})" for g in groups)
        lines.append(f"| {level} ({r['aten']}) | {threads} | {r['loss']:.1e} | {cells} |")
    cells = " | ".join(f"{self_drift[g][0]:.1e} ({self_drift[g][1]})" for g in groups)
    lines.append(f"| the reference against itself, across all rows | | | {cells} |")
    print("\n".join(lines))
    if args.write:
        write_section(SECTION if args.arch == "airbench94" else f"{SECTION}: {args.arch}", lines)


if __name__ == "__main__":
    main(sys.argv[1:])
