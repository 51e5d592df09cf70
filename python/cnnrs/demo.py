"""The study, headless: ``python -m cnnrs demo`` (or the ``cnnrs demo`` console script).

Runs both sections of the study and writes what a notebook would show into one
folder: the figures as PNG files and the numbers as ``report.json`` and
``report.md``.

Section 1
    The course's worked examples of convolution and pooling, then the study's
    kernels on a 512×512 photo (the bundled one, or ``--image``), each as its
    "same"-padded convolution beside a 2×2 max pooling.
Section 2
    A CNN classifier chosen by cross-validation: a summary and a 5-fold
    cross-validation of every architecture, a grid search over architecture ×
    epochs × learning rate, then the refitted best model on the test set
    (accuracy, confusion matrix, per-class precision/recall/F1), the chosen network
    trained again with augmentation, a cosine schedule and early stopping beside the
    plain one, the airbench family listed with its reference's published accuracy and
    A100 time, airbench94 (the 94%-on-CIFAR-10 network) trained with its own recipe
    beside them (digits upscaled to 32×32, its smallest comfortable size), and one
    photo classified with ``predict_image``, and what the chosen network and airbench94
    learned (first-layer kernels beside Section 1's, feature maps, Grad-CAM). The bundled
    digits
    by default; CIFAR-10 with ``--dataset cifar10`` (read from ``--cifar-path`` or
    Keras's cache, downloaded when absent).

This module is the command line and its orchestration only: the options, the
configuration, and the order of the named steps (:mod:`cnnrs._demo_steps`, each a
log line or two and its figures around :mod:`cnnrs.study`'s computation, shared
with the notebook); the figures are :mod:`cnnrs.plotting`'s, the report files
:mod:`cnnrs.report`'s.

The methodology is the one the study asks for: every fold trains a fresh model
on its training part only (``cnnrs.cross_validate``), the test images are
normalised with the training images' statistics (``cnnrs.Model`` fits them in
its first ``fit`` and reuses them), and the grid search refits a fresh model on
all training images with the best parameters (``grid_search()["best_model"]``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import _demo_steps as steps
from ._core import CnnrsError, __version__, cuda_available, torch_version
from ._demo_steps import DATASETS, DEFAULT_OUT, DEVICES, FOLDS, DemoConfig, UsageError
from ._machine import cpu_description, dispatch_description
from ._progress import StepLog
from .report import FigureFolder, write_report

__all__ = ["DemoConfig", "UsageError", "add_arguments", "config_from_args", "run_demo"]

# --- command line ------------------------------------------------------------------


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_count = _int_at_least(0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``demo`` subcommand's options."""
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        default="digits",
        help="digits: the bundled 8×8 handwritten digits (default, runs in minutes on a CPU); "
        "cifar10: CIFAR-10, read from --cifar-path or Keras's cache, downloaded if absent",
    )
    parser.add_argument(
        "--epochs",
        type=_positive_int,
        metavar="N",
        help="epochs of each architecture's cross-validation; the grid search tries N/2 and N "
        "(default 8 for digits, 20 for cifar10, 3 with --quick)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(DEFAULT_OUT),
        metavar="DIR",
        help=f"folder for the figures and report.md/report.json (default ./{DEFAULT_OUT}/)",
    )
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="auto: CUDA when present, else CPU (default)",
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default="auto",
        help="training precision: auto (default: bf16 where the CPU or GPU computes it "
        "natively, fp16 on older GPUs, else fp32), fp32, bf16 (mixed), fp16 (CUDA only)",
    )
    parser.add_argument(
        "--subset",
        type=_positive_int,
        metavar="N",
        help="train on a random N of the training images (default all; 2000 for cifar10 "
        "with --quick); the test set is always used whole",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: two architectures, 3 epochs, a 2-point grid",
    )
    parser.add_argument(
        "--cifar-path",
        type=Path,
        metavar="PATH",
        help="CIFAR-10 batches folder or cifar-10-python.tar.gz (with --dataset cifar10)",
    )
    parser.add_argument(
        "--image",
        type=Path,
        metavar="PATH",
        help="photo for Section 1, e.g. your lena.gif (default: the bundled 512×512 photo)",
    )
    parser.add_argument(
        "--photo",
        type=Path,
        metavar="PATH",
        help="photo to classify with the chosen model (default: a test image written to a "
        "temporary PNG)",
    )
    parser.add_argument(
        "--threads",
        type=_count,
        default=0,
        metavar="N",
        help="CPU threads for libtorch in every step; 0 (default) lets each training step "
        "pick (cnnrs.study.training_threads, measured by benchmarks/bench_threads.py: 1 "
        "for the tiny 8x8 digits, every core for airbench94's 32x32 images)",
    )
    parser.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=1,
        help="0: one line per step; 1: also each fold's accuracy (default); 2: also every epoch",
    )


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    """Checks what argparse cannot (combinations, files); raises :class:`UsageError`."""
    if args.cifar_path is not None and args.dataset != "cifar10":
        raise UsageError("--cifar-path needs --dataset cifar10")
    for name in ("cifar_path", "image", "photo"):
        path = getattr(args, name)
        if path is not None and not path.expanduser().exists():
            raise UsageError(f"--{name.replace('_', '-')} {path}: no such file or folder")
    for name in ("image", "photo"):
        path = getattr(args, name)
        if path is not None and not path.expanduser().is_file():
            raise UsageError(f"--{name} {path} is not a file")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} exists and is not a folder")
    if args.subset is not None and args.subset < 10 * FOLDS:
        raise UsageError(
            f"--subset {args.subset} is too small for {FOLDS}-fold cross-validation; "
            f"give at least {10 * FOLDS}"
        )
    if args.device == "cuda":
        if not cuda_available():
            raise UsageError("--device cuda, but libtorch sees no CUDA device; use auto or cpu")
    if args.precision == "fp16" and (args.device == "cpu" or not cuda_available()):
        raise UsageError("--precision fp16 needs a CUDA device; use auto, bf16 or fp32")
    return DemoConfig(
        dataset=args.dataset,
        out=args.out.expanduser(),
        device=args.device,
        precision=args.precision,
        epochs=args.epochs,
        subset=args.subset,
        quick=args.quick,
        cifar_path=None if args.cifar_path is None else args.cifar_path.expanduser(),
        image=None if args.image is None else args.image.expanduser(),
        photo=None if args.photo is None else args.photo.expanduser(),
        threads=args.threads,
        verbose=args.verbose,
    )


# --- entry point ---------------------------------------------------------------------


def _set_threads(config: DemoConfig) -> int:
    """``--threads N`` for every step; without it each training step picks its own
    (study.training_threads, in section2)."""
    import torch

    if config.threads:
        torch.set_num_threads(config.threads)
    return int(torch.get_num_threads())


def run_demo(config: DemoConfig) -> dict[str, Any]:
    """Runs the study into ``config.out``; returns the report written to ``report.json``.

    Raises
    ------
    UsageError
        Settings that only turn out wrong once the data is loaded (``--subset`` too big).
    FileNotFoundError, cnnrs.CnnrsError
        Missing or corrupt data, training failures.
    """
    import matplotlib

    matplotlib.use("Agg")

    log = StepLog()
    config.out.mkdir(parents=True, exist_ok=True)
    threads = _set_threads(config)
    log(f"cnnrs {__version__} demo: writing to {config.out.resolve()} ({threads} CPU threads)")
    log(f"  machine: {cpu_description()}; {dispatch_description()}")
    run = steps.Run(config, FigureFolder(config.out), log)
    s1 = steps.image_operations(run)
    s2: dict[str, Any] = {}
    for step in steps.SECTION2:
        s2.update(step(run))
    report = {
        "cnnrs_version": __version__,
        "torch_version": torch_version(),
        "machine": {"cpu": cpu_description(), "dispatch": dispatch_description()},
        "threads": threads,
        "seconds": log.elapsed(),
        "section1": s1,
        "section2": s2,
        "figures": run.figures.saved,
    }
    return write_report(config.out, report)


def command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The ``demo`` subcommand: exit code 0, 1 (the study failed) or 2 (bad arguments)."""
    try:
        config = config_from_args(args)
        report = run_demo(config)
    except UsageError as exc:
        parser.error(str(exc))  # usage + message on stderr, exit code 2
    except (FileNotFoundError, CnnrsError, OSError) as exc:
        print(f"cnnrs demo: error: {exc}", file=sys.stderr)
        return 1
    s2 = report["section2"]
    out = config.out.resolve()
    print()
    print(f"Study finished in {report['seconds']:.0f}s. Results in {out}/:")
    print(f"  report.md, report.json, {len(report['figures'])} figures, model.safetensors")
    best = s2["grid_search"]["best_params"]
    print(f"  best by {FOLDS}-fold CV: {best} (CV accuracy {s2['grid_search']['best_score']:.4f})")
    print(f"  test accuracy: {s2['test']['accuracy']:.4f}")
    hardest = ", ".join(h["class"] for h in s2["hardest_classes"])
    print(f"  hardest classes: {hardest}")
    return 0
