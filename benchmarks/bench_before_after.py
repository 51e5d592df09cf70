"""Training speed of two builds of cnnrs on the same machine in the same run: did a
change to the training core slow ``fit`` down?

Runs ``bench_train.py`` (the course networks, and ``--arch airbench94``) once per build
and round, alternating the builds, each in its own process with ``PYTHONPATH`` set to
that build's ``cnnrs`` package folder, and compares cnnrs's images/s. Every process
also times the PyTorch peers, so each build is also shown as a ratio to PyTorch
measured beside it (which cancels load from elsewhere on the machine).

Make a "before" build from an older commit without touching your checkout::

    git worktree add /tmp/before <commit>
    (cd /tmp/before && LIBTORCH_USE_PYTORCH=1 maturin develop --release --skip-install)
    python benchmarks/bench_before_after.py --before /tmp/before/python [--write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _results import write_section  # noqa: E402

HERE = Path(__file__).parent
AFTER = HERE.parent / "python"
COURSE = ["--n", "2048", "--epochs", "1", "--rounds", "3", "--batch-sizes", "64,256"]
COURSE += ["--archs", "baseline,with_batch_norm", "--precisions", "fp32,bf16"]
AIRBENCH = ["--arch", "airbench94", "--n", "2048", "--epochs", "1", "--rounds", "2"]


def rows(build: Path, args: list[str]) -> dict[str, tuple[float, float]]:
    """``{peer: (cnnrs images/s, best PyTorch images/s)}`` of one bench_train run."""
    env = dict(os.environ, PYTHONPATH=str(build))
    out = subprocess.run(
        [sys.executable, str(HERE / "bench_train.py"), *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    table = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in out.splitlines()
        if line.startswith("|") and not line.startswith("|---")
    ]
    found: dict[str, tuple[float, float]] = {}
    if "--arch" in args:  # | peer | seconds per epoch | images/s |
        speed = {r[0]: float(r[2].replace(",", "")) for r in table if r[0] != "peer"}
        for p in ("fp32", "bf16"):
            peers = [v for k, v in speed.items() if k.startswith("airbench loop " + p)]
            if f"cnnrs {p}" in speed and peers:
                found[f"airbench94 {p}"] = (speed[f"cnnrs {p}"], max(peers))
        return found
    for r in table:  # | architecture | batch | precision | cnnrs | NCHW | channels_last | ratio |
        if r[0] == "architecture" or len(r) < 7:
            continue
        n = [float(v.replace(",", "")) for v in r[3:6]]
        found[f"{r[0]} batch {r[1]} {r[2]}"] = (n[0], max(n[1], n[2]))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="a build's python/ folder")
    parser.add_argument("--after", type=Path, default=AFTER, help="default: this checkout")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the builds")
    parser.add_argument("--label", default="before", help="what the before build is")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args()
    runs: dict[str, dict[str, list[tuple[float, float]]]] = {"before": {}, "after": {}}
    for i in range(args.rounds):
        order = [("before", args.before), ("after", args.after)]
        for name, build in order if i % 2 == 0 else order[::-1]:
            for bench in (COURSE, AIRBENCH):
                for peer, value in rows(build, bench).items():
                    runs[name].setdefault(peer, []).append(value)
        print(f"round {i + 1}/{args.rounds} done", file=sys.stderr)

    sys.path.insert(0, str(args.after))
    from cnnrs._machine import cpu_description, dispatch_description

    lines = [
        f"Machine: {cpu_description()}; {dispatch_description()}. "
        f"Command: `python benchmarks/bench_before_after.py --before <{args.label}> "
        f"--rounds {args.rounds}`. Before: {args.label}; after: this commit. Each cell is "
        f"the median over {args.rounds} alternating runs, each a separate process running "
        "bench_train.py (course networks: 2048 images, 1 epoch, median of 3 fits; "
        "airbench94: 2048 images, 1 epoch, median of 2 fits).",
        "",
        "| peer | before images/s | after images/s | after / before "
        "| before / best PyTorch | after / best PyTorch |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for peer in runs["after"]:
        b, a = runs["before"].get(peer), runs["after"][peer]
        if not b:
            continue
        bs = statistics.median(v[0] for v in b)
        as_ = statistics.median(v[0] for v in a)
        br = statistics.median(v[0] / v[1] for v in b)
        ar = statistics.median(v[0] / v[1] for v in a)
        lines.append(
            f"| {peer} | {bs:,.0f} | {as_:,.0f} | {as_ / bs:.2f}× | {br:.2f}× | {ar:.2f}× |"
        )
    print("\n".join(lines))
    if args.write:
        write_section("## Training core before vs after", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
