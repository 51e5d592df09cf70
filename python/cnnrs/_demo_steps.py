"""The steps of ``cnnrs demo``, in the order :func:`cnnrs.demo.run_demo` runs them.

Each step takes the run (:class:`Run`: the settings, the figure folder, the log, and
what earlier steps left for later ones) and returns its part of the report. The
computation is :mod:`cnnrs.study`'s (shared with the notebook); a step adds the log
lines and figures around it.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import datasets, kernels, plotting, study
from ._core import cuda_available, load_image
from ._progress import StepLog, training_output
from ._sample import sample_image
from .models import COURSE_ARCHITECTURES
from .report import FigureFolder
from .selection import grid_search

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


@dataclass
class Run:
    """One demo run: its settings and outputs, and what a step leaves for the next."""

    config: DemoConfig
    figures: FigureFolder
    log: StepLog
    state: dict[str, Any] = field(default_factory=dict)


def _without(d: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys}


# --- Section 1 -----------------------------------------------------------------------


def image_operations(run: Run) -> dict[str, Any]:
    """Worked examples, then the study kernels on the photo: convolution beside pooling."""
    config, figures, log = run.config, run.figures, run.log
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


def training_data(run: Run) -> dict[str, Any]:
    """Loads the dataset (a subset when asked) and shows the first training images."""
    config, log, s = run.config, run.log, run.state
    plan = s["plan"] = _plan(config.dataset, config.quick, config.epochs, config.subset)
    log(f"Section 2: CNN classification on {config.dataset}")
    x, y, xt, yt, names = _load_data(config, log)
    full_train = len(x)
    if config.subset is not None or (plan.subset is not None and plan.subset < len(x)):
        n = plan.subset or len(x)
        if n > len(x):
            raise UsageError(f"--subset {n} is more than the {len(x)} training images")
        x, y = study.subset(x, y, n, config.seed)
    shape = tuple(int(d) for d in x.shape[1:])
    s.update(x=x, y=y, xt=xt, yt=yt, names=names, shape=shape)
    s["course_threads"] = config.threads or study.training_threads(shape, config.device)
    log(
        f"  training images {x.shape} (of {full_train}), test images {xt.shape}, "
        f"{len(names)} classes"
    )
    if (
        config.dataset == "cifar10"
        and len(x) > 5000
        and not (config.device != "cpu" and cuda_available())
    ):
        log("  note: CIFAR-10 on a CPU takes hours; --subset N or --quick makes a shorter run")
    run.figures.save(
        plotting.plot_images(x, y, names, n=30),
        "training_images.png",
        "The first 30 training images with their class names",
    )
    return {
        "dataset": {
            "name": config.dataset,
            "class_names": names,
            "train_size": len(x),
            "train_available": full_train,
            "test_size": len(xt),
            "image_shape": shape,
        }
    }


def cross_validation(run: Run) -> dict[str, Any]:
    """A summary and a k-fold cross-validation of every architecture of the plan."""
    config, log, s, plan = run.config, run.log, run.state, run.state["plan"]
    threads = s["course_threads"]
    summaries = study.architecture_summaries(
        plan.cv_architectures, s["shape"], len(s["names"]), config.device
    )
    for arch, summary in summaries.items():
        log(f"  architecture {arch}: {summary['params']:,} parameters")
    log(
        f"  {FOLDS}-fold cross-validation of {len(plan.cv_architectures)} architectures, "
        f"{plan.epochs} epochs, learning rate {plan.cv_learning_rate:g}, "
        f"batch size {plan.batch_size}" + (f", libtorch threads: {threads}" if threads else "")
    )

    def cv_done(arch: str, r: dict[str, Any]) -> None:
        run.figures.save(
            plotting.plot_history(r["histories"], title=f"{arch}: {FOLDS}-fold cross-validation"),
            f"cv_curves_{arch}.png",
            f"Training curves of {arch} across the {FOLDS} folds",
        )
        log(
            f"  {arch}: mean accuracy {r['mean_accuracy']:.4f} ± {r['std_accuracy']:.4f} "
            f"({r['seconds']:.1f}s)"
        )

    with training_output(config.verbose) as verbose, study.libtorch_threads(threads):
        cv_runs = study.cross_validate_architectures(
            plan.cv_architectures,
            s["x"],
            s["y"],
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
    cv = {a: _without(r, "histories") for a, r in cv_runs.items()}
    run.figures.save(
        plotting.plot_fold_accuracies(cv),
        "cv_accuracy.png",
        "Held-out accuracy of every fold, per architecture",
    )
    return {"architectures": summaries, "cross_validation": cv}


def grid_search_and_refit(run: Run) -> dict[str, Any]:
    """The grid search over architecture × epochs × learning rate, refitting the best."""
    config, log, s, plan = run.config, run.log, run.state, run.state["plan"]
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
    with training_output(config.verbose) as verbose, study.libtorch_threads(s["course_threads"]):
        gs = grid_search(param_grid, s["x"], s["y"], cv=FOLDS, seed=config.seed, verbose=verbose)
    seconds = time.perf_counter() - started
    best_params = _without(gs["best_params"], "device", "precision")
    log(f"  best by cross-validation: {best_params}, accuracy {gs['best_score']:.4f}")
    log(f"  grid search and refit took {seconds:.1f}s")
    best = gs["results"][gs["best_index"]]
    run.figures.save(
        plotting.plot_history(best["histories"], title=f"chosen parameters: {best_params}"),
        "training_curves.png",
        "Training curves of the chosen parameters across the folds "
        "(train solid, validation dashed)",
    )
    s["model"], s["best_params"] = gs["best_model"], gs["best_params"]
    s["model"].class_names = s["names"]
    return {
        "settings": {
            "folds": FOLDS,
            "seed": config.seed,
            "quick": config.quick,
            "device": s["model"].device,
            "precision": s["model"].precision,
            "epochs": plan.epochs,
            "batch_size": plan.batch_size,
            "cv_learning_rate": plan.cv_learning_rate,
        },
        "grid_search": {
            "param_grid": _without(param_grid, "device", "precision"),
            "results": [
                {
                    "params": _without(row["params"], "device", "precision"),
                    "mean_accuracy": row["mean_accuracy"],
                    "std_accuracy": row["std_accuracy"],
                    "fold_accuracies": row["fold_accuracies"],
                }
                for row in gs["results"]
            ],
            "best_index": gs["best_index"],
            "best_params": best_params,
            "best_score": gs["best_score"],
            "seconds": seconds,
        },
    }


def test_set(run: Run) -> dict[str, Any]:
    """The refitted best model on the test set: accuracy, confusion matrix, per-class
    scores, the hardest classes; the model is saved beside the report."""
    log, s, names = run.log, run.state, run.state["names"]
    test = study.evaluate_on_test(s["model"], s["xt"], s["yt"], names)
    cm, report = test["confusion_matrix"], test["report"]
    log(f"  test accuracy of the refitted best model: {test['accuracy']:.4f}")
    run.figures.save(
        plotting.plot_confusion_matrix(cm, names, title="confusion matrix on the test set"),
        "confusion_matrix.png",
        "Confusion matrix on the test set (rows true, columns predicted)",
    )
    run.figures.save(
        plotting.plot_class_scores(report, names),
        "class_scores.png",
        "Per-class precision, recall and F1 on the test set",
    )
    hardest = study.hardest_classes(report, names)
    log(
        "  hardest classes (lowest F1): "
        + ", ".join(f"{h['class']} {h['f1-score']:.2f}" for h in hardest)
    )
    s["model"].save(run.config.out / "model.safetensors")
    return {
        "test": {"accuracy": test["accuracy"], "loss": test["loss"]},
        "confusion_matrix": cm,
        "classification_report": report,
        "hardest_classes": hardest,
        "most_confused": study.most_confused(cm, names),
        "model_file": "model.safetensors",
    }


def training_recipe(run: Run) -> dict[str, Any]:
    """The chosen network with augmentation, a cosine schedule and early stopping,
    beside the plain one."""
    config, log, s = run.config, run.log, run.state
    augment = study.AUGMENTATIONS[config.dataset]
    log(
        f"  the chosen network trained with augmentation {augment}, a cosine schedule and "
        "early stopping, beside the plain one (same seed, last 20% of the training images "
        "held out for both)"
    )
    with study.libtorch_threads(s["course_threads"]):
        recipe = study.compare_training_recipes(
            s["best_params"], s["x"], s["y"], s["xt"], s["yt"], augment=augment, seed=config.seed
        )
    run.figures.save(
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
    return {
        "training_recipe": {
            **_without(recipe, "plain", "recipe"),
            **{name: _without(recipe[name], "history") for name in ("plain", "recipe")},
        }
    }


def airbench94(run: Run) -> dict[str, Any]:
    """airbench94 trained with its own recipe (digits upscaled to 32×32)."""
    config, log, s = run.config, run.log, run.state
    family = study.airbench_family()
    log(
        "  the airbench family cnnrs ships (accuracy and time: the reference's, published "
        "for an A100, not measured here):"
    )
    for line in study.airbench_family_table(family).splitlines():
        log(f"    {line}")
    threads = config.threads or study.training_threads(
        study.upscale(s["x"][:1]).shape[1:], config.device
    )
    log(
        "  airbench94 with its own recipe (SGD-Nesterov, label smoothing, Lookahead, "
        "alternating flips and translations, test-time augmentation)"
        + (", digits upscaled to 32×32" if config.dataset == "digits" else "")
        + (f", libtorch threads: {threads}" if threads else "")
    )
    with study.libtorch_threads(threads):
        air = study.fit_airbench94(
            s["x"],
            s["y"],
            s["xt"],
            s["yt"],
            epochs=3 if config.quick else None,
            device=config.device,
            precision=config.precision,
            seed=config.seed,
        )
    run.figures.save(
        plotting.plot_history(air["history"], title="airbench94 with its recipe"),
        "airbench94.png",
        "airbench94's training curve (its recipe; loss with label smoothing)",
    )
    log(
        f"  airbench94: test accuracy {air['test_accuracy']:.4f} "
        f"({air['test_accuracy_no_tta']:.4f} without TTA), {air['seconds']:.1f}s"
    )
    s["airbench94_model"] = air["model"]
    return {
        "airbench94": _without(air, "history", "model"),
        "airbench_family": family,
        "threads": {"course_networks": s["course_threads"], "airbench94": threads},
    }


def photo(run: Run) -> dict[str, Any]:
    """One photo classified with ``predict_image`` (``--photo``, or a test image)."""
    config, s = run.config, run.state
    with tempfile.TemporaryDirectory(prefix="cnnrs-demo-") as tmp:
        if config.photo is not None:
            path, source = config.photo, f"--photo {config.photo}"
        else:
            path, source = study.write_test_image(s["xt"], s["yt"], s["names"], tmp)
            source += " written to a temporary PNG"
        guess = s["model"].predict_image(path)
    run.log(f"  photo ({source}): {guess['class_name']} ({guess['confidence']:.1%})")
    return {
        "photo": {
            "source": source,
            "class_index": guess["class_index"],
            "class_name": guess["class_name"],
            "confidence": guess["confidence"],
        }
    }


def _learned(run: Run, model: Any, x: Any, prefix: str, who: str) -> dict[str, Any]:
    """What ``model`` learned (study.what_the_network_learned), as three figures named
    ``prefix``_filters/_feature_maps/_gradcam.png; returns the step's report."""
    names = run.state["names"]
    learned = study.what_the_network_learned(model, x, run.state["yt"], names)
    f, maps, cam = learned["filters"], learned["feature_maps"], learned["gradcam"]
    run.figures.save(
        plotting.plot_filters(f["kernels"], compare=f["compared"]),
        f"{prefix}_filters.png",
        f"{who}: the learned kernels of {f['layer']}"
        + (", each beside the nearest of Section 1's kernels" if f["compared"] else ""),
    )
    run.figures.save(
        plotting.plot_feature_maps(maps["layers"], maps["image"]),
        f"{prefix}_feature_maps.png",
        f"{who}: feature maps of test image {maps['image_index']} through the first blocks",
    )
    run.figures.save(
        plotting.plot_gradcam(cam["images"], cam["heatmaps"], cam["y_true"], cam["y_pred"], names),
        f"{prefix}_gradcam.png",
        f"{who}: Grad-CAM at {cam['layer']} for {len(cam['indices'])} test images, "
        f"{cam['misclassified']} misclassified (red)",
    )
    return dict(learned["report"])


def what_the_networks_learned(run: Run) -> dict[str, Any]:
    """The chosen network's and airbench94's first-layer kernels beside Section 1's,
    feature maps of one test image, and Grad-CAM on test images (misclassified first)."""
    s = run.state
    run.log("  what the networks learned: kernels beside Section 1's, feature maps, Grad-CAM")
    learned = {
        "chosen": _learned(run, s["model"], s["xt"], "learned", "the chosen network"),
        "airbench94": _learned(
            run, s["airbench94_model"], study.upscale(s["xt"]), "airbench94_learned", "airbench94"
        ),
    }
    for who, r in learned.items():
        f = r["filters"]
        run.log(
            f"  {who}: {f['layer']} kernels {tuple(f['shape'])}"
            + (f", {f['strong']} close to a study kernel" if f["compared"] else "")
            + f"; Grad-CAM at {r['gradcam']['layer']}"
        )
    return {"what_the_network_learned": learned}


#: Section 2, in order.
SECTION2 = (
    training_data,
    cross_validation,
    grid_search_and_refit,
    test_set,
    training_recipe,
    airbench94,
    photo,
    what_the_networks_learned,
)
