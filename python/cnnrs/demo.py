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
    plain one, airbench94 (the 94%-on-CIFAR-10 network) trained with its own recipe
    beside them (digits upscaled to 32×32, its smallest comfortable size), and one
    photo classified with ``predict_image``, and what the chosen network and airbench94
    learned (first-layer kernels beside Section 1's, feature maps, Grad-CAM). The bundled digits
    by default; CIFAR-10 with ``--dataset cifar10`` (read from ``--cifar-path`` or
    Keras's cache, downloaded when absent).

This module is the command line and its orchestration only: the options, the
configuration, and the order of the steps with their log lines. The steps
themselves are :mod:`cnnrs.study` (shared with the notebook), the figures
:mod:`cnnrs.plotting`, and the report files :mod:`cnnrs.report`.

The methodology is the one the study asks for: every fold trains a fresh model
on its training part only (``cnnrs.cross_validate``), the test images are
normalised with the training images' statistics (``cnnrs.Model`` fits them in
its first ``fit`` and reuses them), and the grid search refits a fresh model on
all training images with the best parameters (``grid_search()["best_model"]``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import datasets, kernels, plotting, study
from ._core import (
    CnnrsError,
    __version__,
    cuda_available,
    load_image,
    torch_version,
)
from ._machine import cpu_description, dispatch_description
from ._progress import StepLog, training_output
from ._sample import sample_image
from .models import COURSE_ARCHITECTURES
from .report import FigureFolder, write_report
from .selection import grid_search

__all__ = ["DemoConfig", "UsageError", "add_arguments", "config_from_args", "run_demo"]

DATASETS = ("digits", "cifar10")
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_OUT = "cnnrs-demo"
#: k of the k-fold cross-validation, as the study asks.
FOLDS = 5
SEED = 42


class UsageError(ValueError):
    """Arguments that parse but make no sense together (reported with exit code 2)."""


@dataclass
class Plan:
    """What Section 2 trains: the architectures, epochs and the grid."""

    cv_architectures: list[str]
    epochs: int
    cv_learning_rate: float
    batch_size: int
    grid_architectures: list[str]
    grid_epochs: list[int]
    grid_learning_rates: list[float]
    subset: int | None


def _plan(dataset: str, quick: bool, epochs: int | None, subset: int | None) -> Plan:
    """Defaults per dataset. ``epochs`` is the cross-validation's; the grid tries N/2 and N."""
    if quick:
        n = epochs or 3
        archs = ["baseline", "custom"]
        return Plan(
            cv_architectures=archs,
            epochs=n,
            cv_learning_rate=1e-3,
            batch_size=64,
            grid_architectures=archs,
            grid_epochs=[n],
            grid_learning_rates=[1e-3, 3e-3],
            subset=subset if subset is not None else (2000 if dataset == "cifar10" else None),
        )
    if dataset == "digits":
        # 8×8 digits train in seconds: every architecture is cross-validated, and the
        # grid uses the three quickest so the default run stays within a few minutes.
        n = epochs or 8
        grid_archs = ["baseline", "custom", "vgg3block"]
    else:
        # The course's grid (its 10 and 20 epochs with the default --epochs 20).
        n = epochs or 20
        grid_archs = ["vgg3block", "with_dropout_increasing", "custom"]
    return Plan(
        cv_architectures=list(COURSE_ARCHITECTURES),
        epochs=n,
        cv_learning_rate=1e-3,
        batch_size=64,
        grid_architectures=grid_archs,
        grid_epochs=sorted({max(1, n // 2), n}),
        grid_learning_rates=[1e-3, 5e-4],
        subset=subset,
    )


@dataclass
class DemoConfig:
    """Everything ``run_demo`` needs; build it with :func:`config_from_args`."""

    dataset: str = "digits"
    out: Path = field(default_factory=lambda: Path(DEFAULT_OUT))
    device: str = "auto"
    precision: str = "auto"
    epochs: int | None = None
    subset: int | None = None
    quick: bool = False
    cifar_path: Path | None = None
    image: Path | None = None
    photo: Path | None = None
    threads: int = 0
    verbose: int = 1
    seed: int = SEED


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


# --- Section 1 -----------------------------------------------------------------------


def section1(config: DemoConfig, figures: FigureFolder, log: StepLog) -> dict[str, Any]:
    """Worked examples, then the study kernels on the photo: convolution beside pooling."""
    log("Section 1: padding, convolution and pooling")
    worked = study.worked_examples()
    log(
        f"  worked examples: convolution {worked['convolution']['result'].tolist()}, "
        f"max pooling {worked['pooling']['max_pooling'].tolist()}"
    )
    log(f"  worked examples equal the course's answers: {worked['match_expected']}")

    if config.image is not None:
        image = load_image(config.image, grayscale=True)
        source = str(config.image)
    else:
        image = sample_image()
        source = "cnnrs.sample_image() (bundled 512×512 photo)"
    log(f"  image: {source}, shape {image.shape}")
    figures.save(
        plotting.plot_image(image, f"input image {image.shape[0]}×{image.shape[1]}"),
        "section1_image.png",
        "The input image of Section 1",
    )

    rows = study.kernel_responses(image, kernels.STUDY_KERNELS, p=2)
    for i, row in enumerate(rows, start=1):
        (fig,) = plotting.show_conv_and_pool(image, {row["name"]: row["kernel"]}, p=2)
        row["figure"] = figures.save(fig, f"kernel_{i}.png", row["name"])
        log(f"  {row['figure']}: {row['name']}")
    return {
        "worked_examples": worked,
        "image": {"source": source, "shape": image.shape},
        "kernels": rows,
    }


# --- Section 2 -----------------------------------------------------------------------


def _load_data(config: DemoConfig, log: StepLog) -> tuple[Any, Any, Any, Any, list[str]]:
    if config.dataset == "cifar10":
        log("  loading CIFAR-10" + (f" from {config.cifar_path}" if config.cifar_path else ""))
    try:
        (x, y), (xt, yt), names = study.load_dataset(config.dataset, config.cifar_path)
    except OSError as exc:
        if config.cifar_path is not None or isinstance(exc, FileNotFoundError):
            raise
        raise OSError(
            f"CIFAR-10 is not cached and could not be downloaded ({exc}); download "
            f"{datasets.CIFAR10_URL} elsewhere and pass --cifar-path to it"
        ) from exc
    return x, y, xt, yt, names


def _learned(
    model: Any, x: Any, y: Any, names: list[str], figures: FigureFolder, prefix: str, who: str
) -> dict[str, Any]:
    """What ``model`` learned (study.what_the_network_learned), as three figures named
    ``prefix``_filters/_feature_maps/_gradcam.png; returns the step's report."""
    learned = study.what_the_network_learned(model, x, y, names)
    f, maps, cam = learned["filters"], learned["feature_maps"], learned["gradcam"]
    figures.save(
        plotting.plot_filters(f["kernels"], compare=f["compared"]),
        f"{prefix}_filters.png",
        f"{who}: the learned kernels of {f['layer']}"
        + (", each beside the nearest of Section 1's kernels" if f["compared"] else ""),
    )
    figures.save(
        plotting.plot_feature_maps(maps["layers"], maps["image"]),
        f"{prefix}_feature_maps.png",
        f"{who}: feature maps of test image {maps['image_index']} through the first blocks",
    )
    figures.save(
        plotting.plot_gradcam(cam["images"], cam["heatmaps"], cam["y_true"], cam["y_pred"], names),
        f"{prefix}_gradcam.png",
        f"{who}: Grad-CAM at {cam['layer']} for {len(cam['indices'])} test images, "
        f"{cam['misclassified']} misclassified (red)",
    )
    return dict(learned["report"])


def section2(config: DemoConfig, figures: FigureFolder, log: StepLog) -> dict[str, Any]:
    """CV of each architecture, the grid search, and the refitted best model on the test set."""
    plan = _plan(config.dataset, config.quick, config.epochs, config.subset)
    log(f"Section 2: CNN classification on {config.dataset}")
    x, y, xt, yt, names = _load_data(config, log)
    full_train = len(x)
    if config.subset is not None or (plan.subset is not None and plan.subset < len(x)):
        n = plan.subset or len(x)
        if n > len(x):
            raise UsageError(f"--subset {n} is more than the {len(x)} training images")
        x, y = study.subset(x, y, n, config.seed)
    k = len(names)
    h, w, c = (int(d) for d in x.shape[1:])
    shape = (h, w, c)
    log(f"  training images {x.shape} (of {full_train}), test images {xt.shape}, {k} classes")
    if (
        config.dataset == "cifar10"
        and len(x) > 5000
        and not (config.device != "cpu" and cuda_available())
    ):
        log("  note: CIFAR-10 on a CPU takes hours; --subset N or --quick makes a shorter run")
    figures.save(
        plotting.plot_images(x, y, names, n=30),
        "training_images.png",
        "The first 30 training images with their class names",
    )

    course_threads = config.threads or study.training_threads(shape, config.device)
    summaries = study.architecture_summaries(plan.cv_architectures, shape, k, config.device)
    for arch, s in summaries.items():
        log(f"  architecture {arch}: {s['params']:,} parameters")

    log(
        f"  {FOLDS}-fold cross-validation of {len(plan.cv_architectures)} architectures, "
        f"{plan.epochs} epochs, learning rate {plan.cv_learning_rate:g}, "
        f"batch size {plan.batch_size}"
        + (f", libtorch threads: {course_threads}" if course_threads else "")
    )

    def cv_done(arch: str, r: dict[str, Any]) -> None:
        figures.save(
            plotting.plot_history(r["histories"], title=f"{arch}: {FOLDS}-fold cross-validation"),
            f"cv_curves_{arch}.png",
            f"Training curves of {arch} across the {FOLDS} folds",
        )
        log(
            f"  {arch}: mean accuracy {r['mean_accuracy']:.4f} ± {r['std_accuracy']:.4f} "
            f"({r['seconds']:.1f}s)"
        )

    with training_output(config.verbose) as verbose, study.libtorch_threads(course_threads):
        cv_runs = study.cross_validate_architectures(
            plan.cv_architectures,
            x,
            y,
            cv=FOLDS,
            epochs=plan.epochs,
            batch_size=plan.batch_size,
            learning_rate=plan.cv_learning_rate,
            seed=config.seed,
            device=config.device,
            precision=config.precision,
            verbose=verbose,
            on_result=cv_done,
        )
    cv = {a: {k_: v for k_, v in r.items() if k_ != "histories"} for a, r in cv_runs.items()}
    figures.save(
        plotting.plot_fold_accuracies(cv),
        "cv_accuracy.png",
        "Held-out accuracy of every fold, per architecture",
    )

    param_grid: dict[str, list[Any]] = {
        "architecture": plan.grid_architectures,
        "epochs": plan.grid_epochs,
        "learning_rate": plan.grid_learning_rates,
        "batch_size": [plan.batch_size],
        "device": [config.device],
        "precision": [config.precision],
    }
    n_points = len(plan.grid_architectures) * len(plan.grid_epochs) * len(plan.grid_learning_rates)
    log(
        f"  grid search: {n_points} combinations × {FOLDS} folds "
        f"(architecture {plan.grid_architectures}, epochs {plan.grid_epochs}, "
        f"learning rate {plan.grid_learning_rates})"
    )
    started = time.perf_counter()
    with training_output(config.verbose) as verbose, study.libtorch_threads(course_threads):
        gs = grid_search(param_grid, x, y, cv=FOLDS, seed=config.seed, verbose=verbose)
    grid_seconds = time.perf_counter() - started
    best_params = {
        k_: v for k_, v in gs["best_params"].items() if k_ not in ("device", "precision")
    }
    log(f"  best by cross-validation: {best_params}, accuracy {gs['best_score']:.4f}")
    log(f"  grid search and refit took {grid_seconds:.1f}s")
    best = gs["results"][gs["best_index"]]
    figures.save(
        plotting.plot_history(best["histories"], title=f"chosen parameters: {best_params}"),
        "training_curves.png",
        "Training curves of the chosen parameters across the folds "
        "(train solid, validation dashed)",
    )
    grid_rows = [
        {
            "params": {
                k_: v for k_, v in row["params"].items() if k_ not in ("device", "precision")
            },
            "mean_accuracy": row["mean_accuracy"],
            "std_accuracy": row["std_accuracy"],
            "fold_accuracies": row["fold_accuracies"],
        }
        for row in gs["results"]
    ]

    model = gs["best_model"]
    model.class_names = names
    test = study.evaluate_on_test(model, xt, yt, names)
    cm, report = test["confusion_matrix"], test["report"]
    log(f"  test accuracy of the refitted best model: {test['accuracy']:.4f}")
    figures.save(
        plotting.plot_confusion_matrix(cm, names, title="confusion matrix on the test set"),
        "confusion_matrix.png",
        "Confusion matrix on the test set (rows true, columns predicted)",
    )
    figures.save(
        plotting.plot_class_scores(report, names),
        "class_scores.png",
        "Per-class precision, recall and F1 on the test set",
    )
    hardest = study.hardest_classes(report, names)
    log(
        "  hardest classes (lowest F1): "
        + ", ".join(f"{h['class']} {h['f1-score']:.2f}" for h in hardest)
    )
    model.save(config.out / "model.safetensors")

    augment = study.AUGMENTATIONS[config.dataset]
    log(
        f"  the chosen network trained with augmentation {augment}, a cosine schedule and "
        "early stopping, beside the plain one (same seed, last 20% of the training images "
        "held out for both)"
    )
    with study.libtorch_threads(course_threads):
        recipe = study.compare_training_recipes(
            gs["best_params"], x, y, xt, yt, augment=augment, seed=config.seed
        )
    figures.save(
        plotting.plot_history(
            [recipe["plain"]["history"], recipe["recipe"]["history"]],
            title="plain vs augmentation + cosine schedule + early stopping",
            labels=["plain", "recipe"],
        ),
        "training_recipe.png",
        "The chosen network trained plainly and with augmentation, a cosine schedule and "
        "early stopping (train solid, validation dashed)",
    )
    for name in ("plain", "recipe"):
        r = recipe[name]
        log(
            f"  {name}: {r['epochs_run']} epochs, kept epoch {r['best_epoch']}, train-validation "
            f"gap {r['gap']:+.4f}, test accuracy {r['test_accuracy']:.4f}"
        )

    air_epochs = 3 if config.quick else None
    air_threads = config.threads or study.training_threads(
        study.upscale(x[:1]).shape[1:], config.device
    )
    log(
        "  airbench94 with its own recipe (SGD-Nesterov, label smoothing, Lookahead, "
        "alternating flips and translations, test-time augmentation)"
        + (", digits upscaled to 32×32" if config.dataset == "digits" else "")
        + (f", libtorch threads: {air_threads}" if air_threads else "")
    )
    with study.libtorch_threads(air_threads):
        air = study.fit_airbench94(
            x,
            y,
            xt,
            yt,
            epochs=air_epochs,
            device=config.device,
            precision=config.precision,
            seed=config.seed,
        )
    figures.save(
        plotting.plot_history(air["history"], title="airbench94 with its recipe"),
        "airbench94.png",
        "airbench94's training curve (its recipe; loss with label smoothing)",
    )
    log(
        f"  airbench94: test accuracy {air['test_accuracy']:.4f} "
        f"({air['test_accuracy_no_tta']:.4f} without TTA), {air['seconds']:.1f}s"
    )

    with tempfile.TemporaryDirectory(prefix="cnnrs-demo-") as tmp:
        if config.photo is not None:
            path, source = config.photo, f"--photo {config.photo}"
        else:
            path, source = study.write_test_image(xt, yt, names, tmp)
            source += " written to a temporary PNG"
        guess = model.predict_image(path)
    log(f"  photo ({source}): {guess['class_name']} ({guess['confidence']:.1%})")

    log("  what the networks learned: kernels beside Section 1's, feature maps, Grad-CAM")
    learned = {
        "chosen": _learned(model, xt, yt, names, figures, "learned", "the chosen network"),
        "airbench94": _learned(
            air["model"], study.upscale(xt), yt, names, figures, "airbench94_learned", "airbench94"
        ),
    }
    for who, r in learned.items():
        f = r["filters"]
        log(
            f"  {who}: {f['layer']} kernels {tuple(f['shape'])}"
            + (f", {f['strong']} close to a study kernel" if f["compared"] else "")
            + f"; Grad-CAM at {r['gradcam']['layer']}"
        )

    return {
        "dataset": {
            "name": config.dataset,
            "class_names": names,
            "train_size": len(x),
            "train_available": full_train,
            "test_size": len(xt),
            "image_shape": shape,
        },
        "settings": {
            "folds": FOLDS,
            "seed": config.seed,
            "quick": config.quick,
            "device": model.device,
            "precision": model.precision,
            "epochs": plan.epochs,
            "batch_size": plan.batch_size,
            "cv_learning_rate": plan.cv_learning_rate,
        },
        "architectures": summaries,
        "cross_validation": cv,
        "grid_search": {
            "param_grid": {
                k_: v for k_, v in param_grid.items() if k_ not in ("device", "precision")
            },
            "results": grid_rows,
            "best_index": gs["best_index"],
            "best_params": best_params,
            "best_score": gs["best_score"],
            "seconds": grid_seconds,
        },
        "test": {"accuracy": test["accuracy"], "loss": test["loss"]},
        "training_recipe": {
            **{k: v for k, v in recipe.items() if k not in ("plain", "recipe")},
            **{
                name: {k: v for k, v in recipe[name].items() if k != "history"}
                for name in ("plain", "recipe")
            },
        },
        "airbench94": {k: v for k, v in air.items() if k not in ("history", "model")},
        "what_the_network_learned": learned,
        "threads": {"course_networks": course_threads, "airbench94": air_threads},
        "confusion_matrix": cm,
        "classification_report": report,
        "hardest_classes": hardest,
        "most_confused": study.most_confused(cm, names),
        "photo": {
            "source": source,
            "class_index": guess["class_index"],
            "class_name": guess["class_name"],
            "confidence": guess["confidence"],
        },
        "model_file": "model.safetensors",
    }


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
    figures = FigureFolder(config.out)
    s1 = section1(config, figures, log)
    s2 = section2(config, figures, log)
    report = {
        "cnnrs_version": __version__,
        "torch_version": torch_version(),
        "machine": {"cpu": cpu_description(), "dispatch": dispatch_description()},
        "threads": threads,
        "seconds": log.elapsed(),
        "section1": s1,
        "section2": s2,
        "figures": figures.saved,
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
