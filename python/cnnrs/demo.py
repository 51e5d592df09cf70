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
    (accuracy, confusion matrix, per-class precision/recall/F1) and one photo
    classified with ``predict_image``. The bundled digits by default; CIFAR-10
    with ``--dataset cifar10`` (read from ``--cifar-path`` or Keras's cache,
    downloaded when absent).

The methodology is the one the study asks for: every fold trains a fresh model
on its training part only (``cnnrs.cross_validate``), the test images are
normalised with the training images' statistics (``cnnrs.Model`` fits them in
its first ``fit`` and reuses them), and the grid search refits a fresh model on
all training images with the best parameters (``grid_search()["best_model"]``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
    from .models import ARCHITECTURES

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
        cv_architectures=list(ARCHITECTURES),
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
        help="CPU threads for libtorch; 0 (default) picks 1 for the tiny digits, where "
        "threads cost more than they save, and libtorch's default otherwise",
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
        from . import cuda_available

        if not cuda_available():
            raise UsageError("--device cuda, but libtorch sees no CUDA device; use auto or cpu")
    return DemoConfig(
        dataset=args.dataset,
        out=args.out.expanduser(),
        device=args.device,
        epochs=args.epochs,
        subset=args.subset,
        quick=args.quick,
        cifar_path=None if args.cifar_path is None else args.cifar_path.expanduser(),
        image=None if args.image is None else args.image.expanduser(),
        photo=None if args.photo is None else args.photo.expanduser(),
        threads=args.threads,
        verbose=args.verbose,
    )


# --- output helpers ------------------------------------------------------------------


class _Log:
    """Progress lines on stdout, each stamped with the time since the start."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def __call__(self, message: str = "") -> None:
        print(f"[{self.elapsed():6.1f}s] {message}" if message else "", flush=True)


class _LineFilter(io.TextIOBase):
    """A stdout stand-in that forwards, indented, only the lines matching ``keep``."""

    def __init__(self, target: Any, keep: re.Pattern[str] | None) -> None:
        self.target = target
        self.keep = keep
        self.buffer = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.buffer += text
        *lines, self.buffer = re.split(r"[\r\n]", self.buffer)
        for line in lines:
            if line.strip() and (self.keep is None or self.keep.search(line)):
                self.target.write(f"           {line}\n")
        self.target.flush()
        return len(text)

    def flush(self) -> None:
        self.target.flush()


@contextlib.contextmanager
def _training_output(verbose: int) -> Iterator[int]:
    """Routes cnnrs's training output by ``--verbose``; yields cnnrs's own verbose level."""
    if verbose == 0:
        yield 0
        return
    keep = re.compile(r"validation accuracy|mean accuracy|Refitting") if verbose == 1 else None
    sink = _LineFilter(sys.stdout, keep)
    with contextlib.redirect_stdout(sink):
        yield 2


def _jsonable(value: Any) -> Any:
    """numpy scalars/arrays and paths as plain JSON values."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _write_atomic(path: Path, text: str) -> None:
    """Writes ``text`` beside ``path`` and renames it over, so readers never see half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is for sharing
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class _Figures:
    """Saves figures into the output folder and remembers what each shows."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.saved: dict[str, str] = {}

    def save(self, fig: Any, name: str, caption: str) -> str:
        fig.savefig(self.out / name, dpi=100)
        self.saved[name] = caption
        return name


# --- Section 1 -----------------------------------------------------------------------

WORKED_CONVOLUTION: dict[str, Any] = {
    "image": [[1, 2, 0], [4, 5, 6], [7, 8, 9]],
    "kernel": [[1, 0], [0, -1]],
    "expected": [[-4, -4], [-4, -4]],
}
WORKED_POOLING: dict[str, Any] = {
    "image": [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]],
    "p": 2,
    "expected_max": [[6, 7, 8], [10, 11, 12], [14, 15, 16]],
    "expected_avg": [[3.5, 4.5, 5.5], [7.5, 8.5, 9.5], [11.5, 12.5, 13.5]],
}


def section1(config: DemoConfig, figures: _Figures, log: _Log) -> dict[str, Any]:
    """Worked examples, then the study kernels on the photo: convolution beside pooling."""
    from . import convolution, kernels, load_image, pooling, sample_image
    from .plotting import _figure_class, show_conv_and_pool

    log("Section 1: padding, convolution and pooling")
    conv = convolution(
        np.array(WORKED_CONVOLUTION["image"]), np.array(WORKED_CONVOLUTION["kernel"])
    )
    pool_in = np.array(WORKED_POOLING["image"])
    pooled_max = pooling(pool_in, 2, "max_pooling")
    pooled_avg = pooling(pool_in, 2, "avg_pooling")
    worked: dict[str, Any] = {
        "convolution": {**WORKED_CONVOLUTION, "result": conv},
        "pooling": {**WORKED_POOLING, "max_pooling": pooled_max, "avg_pooling": pooled_avg},
    }
    matches = (
        np.array_equal(conv, WORKED_CONVOLUTION["expected"])
        and np.array_equal(pooled_max, WORKED_POOLING["expected_max"])
        and np.allclose(pooled_avg, WORKED_POOLING["expected_avg"])
    )
    worked["match_expected"] = bool(matches)
    log(f"  worked examples: convolution {conv.tolist()}, max pooling {pooled_max.tolist()}")
    log(f"  worked examples equal the course's answers: {matches}")

    if config.image is not None:
        image = load_image(config.image, grayscale=True)
        source = str(config.image)
    else:
        image = sample_image()
        source = "cnnrs.sample_image() (bundled 512×512 photo)"
    log(f"  image: {source}, shape {image.shape}")
    fig = _figure_class()(figsize=(5, 5), layout="constrained")
    ax = fig.subplots()
    ax.imshow(image, cmap="gray")
    ax.set_title(f"input image {image.shape[0]}×{image.shape[1]}")
    ax.axis("off")
    figures.save(fig, "section1_image.png", "The input image of Section 1")

    rows = []
    for i, (title, kernel) in enumerate(kernels.STUDY_KERNELS.items(), start=1):
        (fig,) = show_conv_and_pool(image, {title: kernel}, p=2)
        name = figures.save(fig, f"kernel_{i}.png", title)
        conv_image = convolution(image, kernel, padding="same")
        pooled = pooling(conv_image, 2, "max_pooling")
        rows.append(
            {
                "name": title,
                "kernel": kernel,
                "figure": name,
                "convolution_shape": conv_image.shape,
                "pooling_shape": pooled.shape,
                "mean_abs_response": float(np.mean(np.abs(conv_image))),
            }
        )
        log(f"  {name}: {title}")
    return {
        "worked_examples": worked,
        "image": {"source": source, "shape": image.shape},
        "kernels": rows,
    }


# --- Section 2 -----------------------------------------------------------------------


def _load_data(config: DemoConfig, log: _Log) -> tuple[Any, Any, Any, Any, list[str]]:
    from . import datasets

    if config.dataset == "digits":
        (x, y), (xt, yt) = datasets.load_digits()
        names = list(datasets.DIGITS_CLASSES)
    else:
        log("  loading CIFAR-10" + (f" from {config.cifar_path}" if config.cifar_path else ""))
        try:
            (x, y), (xt, yt) = datasets.load_cifar10(config.cifar_path)
        except OSError as exc:
            if config.cifar_path is not None or isinstance(exc, FileNotFoundError):
                raise
            raise OSError(
                f"CIFAR-10 is not cached and could not be downloaded ({exc}); download "
                f"{datasets.CIFAR10_URL} elsewhere and pass --cifar-path to it"
            ) from exc
        names = list(datasets.CIFAR10_CLASSES)
    return x, y, xt, yt, names


def _subset(x: Any, y: Any, n: int, seed: int) -> tuple[Any, Any]:
    if n > len(x):
        raise UsageError(f"--subset {n} is more than the {len(x)} training images")
    keep = np.sort(np.random.default_rng(seed).choice(len(x), size=n, replace=False))
    return x[keep], y[keep]


def _summaries(
    archs: Sequence[str], shape: tuple[int, int, int], k: int, device: str
) -> dict[str, dict[str, Any]]:
    from .models import Model

    out = {}
    for arch in archs:
        lines: list[str] = []
        model = Model(arch, device=device, seed=0, input_shape=shape, num_classes=k)
        model.summary(print_fn=lines.append)
        out[arch] = {"params": model.count_params(), "summary": "\n".join(lines)}
    return out


def _cv_figure(cv: Mapping[str, Mapping[str, Any]]) -> Any:
    from .plotting import _figure_class

    names = list(cv)
    fig = _figure_class()(figsize=(max(6.0, 1.3 * len(names) + 2), 4.5), layout="constrained")
    ax = fig.subplots()
    ax.boxplot([cv[a]["fold_accuracies"] for a in names])
    for i, a in enumerate(names, start=1):
        accs = cv[a]["fold_accuracies"]
        ax.plot(np.full(len(accs), i), accs, "o", color="C0", alpha=0.6)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=20, ha="right")
    ax.set_ylabel("held-out fold accuracy")
    ax.set_title(f"{FOLDS}-fold cross-validation accuracy per architecture")
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def _photo(config: DemoConfig, xt: Any, yt: Any, names: list[str], tmp: Path) -> tuple[Path, str]:
    """The photo to classify: ``--photo``, or test image 0 written to a temporary PNG."""
    if config.photo is not None:
        return config.photo, f"--photo {config.photo}"
    import matplotlib.pyplot as plt

    image = np.asarray(xt[0])
    if image.shape[2] == 1:
        # Gray as equal RGB channels: load_image's grayscale conversion gives back the
        # very same pixel values (the digits' 0..16), so the model sees what it trained on.
        image = np.repeat(image, 3, axis=2)
    path = tmp / "test_image_0.png"
    plt.imsave(path, image.astype(np.uint8))
    label = int(np.asarray(yt).reshape(-1)[0])
    return path, f"test image 0 (true class {names[label]!r}) written to a temporary PNG"


def section2(config: DemoConfig, figures: _Figures, log: _Log) -> dict[str, Any]:
    """CV of each architecture, the grid search, and the refitted best model on the test set."""
    from . import metrics, plotting
    from .selection import cross_validate, grid_search

    plan = _plan(config.dataset, config.quick, config.epochs, config.subset)
    log(f"Section 2: CNN classification on {config.dataset}")
    x, y, xt, yt, names = _load_data(config, log)
    full_train = len(x)
    if config.subset is not None or (plan.subset is not None and plan.subset < len(x)):
        x, y = _subset(x, y, plan.subset or len(x), config.seed)
    k = len(names)
    h, w, c = (int(d) for d in x.shape[1:])
    shape = (h, w, c)
    log(f"  training images {x.shape} (of {full_train}), test images {xt.shape}, {k} classes")
    from . import cuda_available

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

    summaries = _summaries(plan.cv_architectures, shape, k, config.device)
    for arch, s in summaries.items():
        log(f"  architecture {arch}: {s['params']:,} parameters")

    cv: dict[str, dict[str, Any]] = {}
    log(
        f"  {FOLDS}-fold cross-validation of {len(plan.cv_architectures)} architectures, "
        f"{plan.epochs} epochs, learning rate {plan.cv_learning_rate:g}, "
        f"batch size {plan.batch_size}"
    )
    for arch in plan.cv_architectures:
        started = time.perf_counter()
        with _training_output(config.verbose) as verbose:
            r = cross_validate(
                arch,
                x,
                y,
                cv=FOLDS,
                epochs=plan.epochs,
                batch_size=plan.batch_size,
                learning_rate=plan.cv_learning_rate,
                seed=config.seed,
                verbose=verbose,
                device=config.device,
            )
        seconds = time.perf_counter() - started
        cv[arch] = {
            "fold_accuracies": r["fold_accuracies"],
            "mean_accuracy": r["mean_accuracy"],
            "std_accuracy": r["std_accuracy"],
            "epochs": plan.epochs,
            "learning_rate": plan.cv_learning_rate,
            "batch_size": plan.batch_size,
            "seconds": seconds,
        }
        figures.save(
            plotting.plot_history(r["histories"], title=f"{arch}: {FOLDS}-fold cross-validation"),
            f"cv_curves_{arch}.png",
            f"Training curves of {arch} across the {FOLDS} folds",
        )
        log(
            f"  {arch}: mean accuracy {r['mean_accuracy']:.4f} ± {r['std_accuracy']:.4f} "
            f"({seconds:.1f}s)"
        )
    figures.save(
        _cv_figure(cv), "cv_accuracy.png", "Held-out accuracy of every fold, per architecture"
    )

    param_grid: dict[str, list[Any]] = {
        "architecture": plan.grid_architectures,
        "epochs": plan.grid_epochs,
        "learning_rate": plan.grid_learning_rates,
        "batch_size": [plan.batch_size],
        "device": [config.device],
    }
    n_points = len(plan.grid_architectures) * len(plan.grid_epochs) * len(plan.grid_learning_rates)
    log(
        f"  grid search: {n_points} combinations × {FOLDS} folds "
        f"(architecture {plan.grid_architectures}, epochs {plan.grid_epochs}, "
        f"learning rate {plan.grid_learning_rates})"
    )
    started = time.perf_counter()
    with _training_output(config.verbose) as verbose:
        gs = grid_search(param_grid, x, y, cv=FOLDS, seed=config.seed, verbose=verbose)
    grid_seconds = time.perf_counter() - started
    best_params = {k_: v for k_, v in gs["best_params"].items() if k_ != "device"}
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
            "params": {k_: v for k_, v in row["params"].items() if k_ != "device"},
            "mean_accuracy": row["mean_accuracy"],
            "std_accuracy": row["std_accuracy"],
            "fold_accuracies": row["fold_accuracies"],
        }
        for row in gs["results"]
    ]

    model = gs["best_model"]
    model.class_names = names
    test = model.evaluate(xt, yt)
    probs = model.predict(xt)
    y_pred = probs.argmax(axis=1)
    y_true = np.asarray(yt).reshape(-1)
    cm = metrics.confusion_matrix(y_true, y_pred, num_classes=k)
    report = metrics.classification_report(y_true, y_pred, target_names=names)
    assert isinstance(report, dict)
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
    by_f1 = sorted(names, key=lambda c: (report[c]["f1-score"], c))
    hardest = [{"class": c, **report[c]} for c in by_f1[:3]]
    off = cm.copy()
    np.fill_diagonal(off, 0)
    pairs = [
        {"true": names[int(i)], "predicted": names[int(j)], "count": int(off[i, j])}
        for i, j in zip(*np.unravel_index(np.argsort(off, axis=None)[::-1][:5], off.shape))
        if off[i, j] > 0
    ]
    log(
        "  hardest classes (lowest F1): "
        + ", ".join(f"{h['class']} {h['f1-score']:.2f}" for h in hardest)
    )
    model.save(config.out / "model.safetensors")

    with tempfile.TemporaryDirectory(prefix="cnnrs-demo-") as tmp:
        path, source = _photo(config, xt, yt, names, Path(tmp))
        guess = model.predict_image(path)
    log(f"  photo ({source}): {guess['class_name']} ({guess['confidence']:.1%})")

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
            "epochs": plan.epochs,
            "batch_size": plan.batch_size,
            "cv_learning_rate": plan.cv_learning_rate,
        },
        "architectures": summaries,
        "cross_validation": cv,
        "grid_search": {
            "param_grid": {k_: v for k_, v in param_grid.items() if k_ != "device"},
            "results": grid_rows,
            "best_index": gs["best_index"],
            "best_params": best_params,
            "best_score": gs["best_score"],
            "seconds": grid_seconds,
        },
        "test": {"accuracy": test["accuracy"], "loss": test["loss"]},
        "confusion_matrix": cm,
        "classification_report": report,
        "hardest_classes": hardest,
        "most_confused": pairs,
        "photo": {
            "source": source,
            "class_index": guess["class_index"],
            "class_name": guess["class_name"],
            "confidence": guess["confidence"],
        },
        "model_file": "model.safetensors",
    }


# --- reports -------------------------------------------------------------------------


def _fmt_pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def render_markdown(report: Mapping[str, Any]) -> str:
    """``report.md``: the same numbers as ``report.json``, for people."""
    s1, s2 = report["section1"], report["section2"]
    names = s2["dataset"]["class_names"]
    out = [
        "# cnnrs study report",
        "",
        f"cnnrs {report['cnnrs_version']} on libtorch {report['torch_version']}, "
        f"device `{s2['settings']['device']}`, {report['seconds']:.0f} s in all.",
        "",
        "## Section 1: convolution and pooling",
        "",
        "Worked examples (the course's): convolving `[[1,2,0],[4,5,6],[7,8,9]]` with "
        f"`[[1,0],[0,-1]]` gives `{s1['worked_examples']['convolution']['result']}`; 2×2 max "
        f"pooling of `1..16` (4×4) gives `{s1['worked_examples']['pooling']['max_pooling']}` "
        f"and average pooling `{s1['worked_examples']['pooling']['avg_pooling']}`. "
        f"Equal to the expected answers: **{s1['worked_examples']['match_expected']}**.",
        "",
        f"Image: {s1['image']['source']}, shape {tuple(s1['image']['shape'])}. Each kernel's "
        '"same"-padded convolution (size kept) beside its 2×2 max pooling (stride 1, no '
        "padding: one pixel smaller).",
        "",
        "| figure | kernel | convolution | pooling | mean abs response |",
        "|---|---|---|---|---|",
    ]
    for k in s1["kernels"]:
        out.append(
            f"| [{k['figure']}]({k['figure']}) | {k['name']} | {tuple(k['convolution_shape'])} "
            f"| {tuple(k['pooling_shape'])} | {k['mean_abs_response']:.1f} |"
        )
    ds = s2["dataset"]
    st = s2["settings"]
    out += [
        "",
        f"## Section 2: CNN classification on {ds['name']}",
        "",
        f"{ds['train_size']} training images (of {ds['train_available']}), {ds['test_size']} "
        f"test images of shape {tuple(ds['image_shape'])}, {len(names)} classes. "
        "![training images](training_images.png)",
        "",
        "Methodology: every fold trains a fresh model on its training part only and is scored "
        "on its held-out part; the test images are normalised with the training images' "
        "per-channel mean and standard deviation (the model fits them once, in `fit`); the "
        "grid search picks the parameters by mean cross-validation accuracy and then trains a "
        "fresh model with them on all the training images.",
        "",
        f"### {st['folds']}-fold cross-validation ({st['epochs']} epochs, learning rate "
        f"{st['cv_learning_rate']:g}, batch size {st['batch_size']})",
        "",
        "| architecture | parameters | "
        + " | ".join(f"fold {i + 1}" for i in range(st["folds"]))
        + " | mean | std |",
        "|---|---:|" + "---:|" * (st["folds"] + 2),
    ]
    for arch, r in s2["cross_validation"].items():
        folds = " | ".join(f"{a:.4f}" for a in r["fold_accuracies"])
        params = s2["architectures"][arch]["params"]
        out.append(
            f"| {arch} | {params:,} | {folds} | **{r['mean_accuracy']:.4f}** "
            f"| {r['std_accuracy']:.4f} |"
        )
    out += ["", "![cross-validation](cv_accuracy.png)", "", "### Grid search", ""]
    out += [
        "| # | architecture | epochs | learning rate | mean CV accuracy | std |",
        "|---|---|---:|---:|---:|---:|",
    ]
    gs = s2["grid_search"]
    for i, row in enumerate(gs["results"]):
        p = row["params"]
        mark = " ← best" if i == gs["best_index"] else ""
        out.append(
            f"| {i + 1} | {p['architecture']} | {p['epochs']} | {p['learning_rate']:g} "
            f"| {row['mean_accuracy']:.4f}{mark} | {row['std_accuracy']:.4f} |"
        )
    test = s2["test"]
    out += [
        "",
        f"Chosen: `{gs['best_params']}` (mean CV accuracy {gs['best_score']:.4f}), refitted on "
        f"all training images and saved as `{s2['model_file']}`.",
        "",
        "![training curves](training_curves.png)",
        "",
        "### Test set",
        "",
        f"Test accuracy **{_fmt_pct(test['accuracy'])}** (loss {test['loss']:.4f}).",
        "",
        "Confusion matrix (rows true, columns predicted):",
        "",
        "| true \\ predicted | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for name, row in zip(names, s2["confusion_matrix"]):
        out.append(f"| **{name}** | " + " | ".join(str(v) for v in row) + " |")
    rep = s2["classification_report"]
    out += [
        "",
        "![confusion matrix](confusion_matrix.png)",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in [*names, "macro avg", "weighted avg"]:
        r = rep[name]
        out.append(
            f"| {name} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1-score']:.3f} "
            f"| {r['support']} |"
        )
    hardest = ", ".join(f"{h['class']} (F1 {h['f1-score']:.3f})" for h in s2["hardest_classes"])
    confused = ", ".join(
        f"{p['true']} → {p['predicted']} ({p['count']})" for p in s2["most_confused"]
    )
    photo = s2["photo"]
    out += [
        "",
        "![per-class scores](class_scores.png)",
        "",
        f"Hardest classes (lowest F1): {hardest}.",
        f"Most frequent confusions (true → predicted): {confused or 'none'}.",
        "",
        f"Photo: {photo['source']} → **{photo['class_name']}** "
        f"({_fmt_pct(photo['confidence'])} confidence).",
        "",
        "## Figures",
        "",
    ]
    out += [f"- [{name}]({name}): {caption}" for name, caption in report["figures"].items()]
    out.append("")
    return "\n".join(out)


# --- entry point ---------------------------------------------------------------------


def _set_threads(config: DemoConfig) -> int:
    import torch

    threads = config.threads or (1 if config.dataset == "digits" else 0)
    if threads:
        torch.set_num_threads(threads)
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

    from . import __version__, torch_version

    logger = _Log()
    config.out.mkdir(parents=True, exist_ok=True)
    threads = _set_threads(config)
    logger(f"cnnrs {__version__} demo: writing to {config.out.resolve()} ({threads} CPU threads)")
    figures = _Figures(config.out)
    s1 = section1(config, figures, logger)
    s2 = section2(config, figures, logger)
    report = {
        "cnnrs_version": __version__,
        "torch_version": torch_version(),
        "threads": threads,
        "seconds": logger.elapsed(),
        "section1": s1,
        "section2": s2,
        "figures": figures.saved,
    }
    report = _jsonable(report)
    _write_atomic(config.out / "report.json", json.dumps(report, indent=2) + "\n")
    _write_atomic(config.out / "report.md", render_markdown(report))
    return report


def command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The ``demo`` subcommand: exit code 0, 1 (the study failed) or 2 (bad arguments)."""
    from . import CnnrsError

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
