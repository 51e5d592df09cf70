"""Gated test-time augmentation: ``predict(..., tta_threshold=t)`` applies the
augmentation only to the images whose top class probability without it is below ``t``
(as the hiverge CIFAR-10 record applies airbench's TTA). What does it save, and what
does it cost in accuracy, against full TTA and none?

airbench94 is trained with its recipe (batches of 128) on scikit-learn's digits upscaled
to 32×32 (real images, bundled), once for ``--epochs`` (default: the recipe's 9.9) and
once for 3 epochs (a network unsure of more images); then each setting predicts the 359
test digits (accuracy, share augmented) and the test digits repeated to ``--n`` images
(seconds, median of ``--rounds``; flip_translate costs six forward passes per image, a
gated run one plus six per unsure image). --write replaces the "## Gated test-time
augmentation" section of benchmarks/RESULTS.md.

    python benchmarks/bench_tta.py [--n 4096] [--rounds 5] [--write]
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import cnnrs
from cnnrs import study
from cnnrs._machine import cpu_description, dispatch_description

sys.path.insert(0, str(Path(__file__).parent))
from _results import write_section  # noqa: E402

#: None: every image. airbench's label smoothing (0.2) keeps its top probabilities
#: below about 0.82, so the useful gates lie lower than for a network trained without.
THRESHOLDS = (None, 0.9, 0.7, 0.5, 0.4, 0.3)


def measure(model: cnnrs.Model, xt, yt, big, rounds: int) -> list[str]:
    plain = model.predict(xt, tta="none")
    unsure_of = plain.max(1)
    rows = []
    settings = [("none", None)] + [("flip_translate", t) for t in THRESHOLDS]
    seconds = {}
    for tta, t in settings:
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            model.predict(big, tta=tta, tta_threshold=t)
            times.append(time.perf_counter() - start)
        seconds[(tta, t)] = statistics.median(times)
    full = seconds[("flip_translate", None)]
    for tta, t in settings:
        p = model.predict(xt, tta=tta, tta_threshold=t)
        accuracy = float(np.mean(p.argmax(1) == yt))
        if tta == "none":
            share = 0.0
        else:
            share = 1.0 if t is None else float(np.mean(unsure_of < t))
        label = "none" if tta == "none" else ("all" if t is None else f"below {t:g}")
        s = seconds[(tta, t)]
        rows.append(
            f"| {label} | {accuracy:.4f} | {100 * share:.1f}% | {s:.2f} | {full / s:.2f}× |"
        )
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=float, default=None, help="default: the recipe's 9.9")
    ap.add_argument("--n", type=int, default=4096, help="images per timed predict")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = ap.parse_args()
    if args.rounds < 1 or args.n < 1:
        ap.error("--rounds and --n must be >= 1")
    start = time.perf_counter()
    (x, y), (xt, yt) = cnnrs.datasets.load_digits()
    x, xt, yt = study.upscale(x), study.upscale(xt), yt[:, 0]
    big = np.resize(xt, (args.n, *xt.shape[1:]))
    body = []
    for epochs in (args.epochs, 3.0):
        model = cnnrs.Model("airbench94", seed=0)
        model.fit(x, y, batch_size=128, epochs=epochs, verbose=0)
        shown = model.recipe["epochs"] if epochs is None else epochs
        body += [
            f"airbench94 after {shown:g} epoch{'s' if shown != 1 else ''} ({model.precision}):",
            "",
            "| flip_translate for | test accuracy | images augmented | seconds "
            f"per {args.n} | speed vs all |",
            "|---|---:|---:|---:|---:|",
            *measure(model, xt, yt, big, args.rounds),
            "",
        ]
    command = "python benchmarks/bench_tta.py " + shlex.join(sys.argv[1:])
    lines = [
        f"Machine: {cpu_description()}; {dispatch_description()}. Date: "
        f"{datetime.date.today()}. Command: `{command}` ({time.perf_counter() - start:.0f} s). "
        f"Threads: libtorch {torch.get_num_threads()}. cnnrs {cnnrs.__version__}.",
        "",
        "scikit-learn's 1797 digits upscaled to 32×32 (1438 train, 359 test); accuracy on "
        f"the test digits, time to predict them repeated to {args.n} images (median of "
        f"{args.rounds}).",
        "",
        *body,
    ]
    heading = "## Gated test-time augmentation"
    print("\n".join([heading, "", *lines]))
    if args.write:
        write_section(heading, lines)


if __name__ == "__main__":
    main()
