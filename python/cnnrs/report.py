"""The study's report: ``report.json`` (every number) and ``report.md`` (the same for
people), and the figures beside them, all written through ``_core.AtomicWriter`` so a
reader never sees half a file.

:func:`write_report` takes the nested dict that ``cnnrs demo`` builds (``section1``,
``section2``, ``figures``, versions and timing) and :func:`render_markdown` lays it
out; :class:`FigureFolder` saves figures and remembers their captions for the list
at the end of the report.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._core import AtomicWriter
from .study import airbench_family_table

__all__ = ["FigureFolder", "jsonable", "render_markdown", "write_bytes", "write_report"]


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically: beside it, then renamed over it."""
    with AtomicWriter(path) as out:
        out.write(data)


def jsonable(value: Any) -> Any:
    """numpy scalars/arrays, tuples and paths as plain JSON values."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    return value


class FigureFolder:
    """Saves figures as PNG files into ``out`` and remembers what each shows."""

    def __init__(self, out: str | os.PathLike[str], dpi: int = 100) -> None:
        self.out = Path(out)
        self.dpi = dpi
        #: file name -> caption, in the order saved
        self.saved: dict[str, str] = {}

    def save(self, fig: Any, name: str, caption: str) -> str:
        """Writes ``fig`` to ``out/name`` and returns ``name``."""
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=self.dpi)
        write_bytes(self.out / name, buffer.getvalue())
        self.saved[name] = caption
        return name


def write_report(out: str | os.PathLike[str], report: Mapping[str, Any]) -> dict[str, Any]:
    """Writes ``out/report.json`` and ``out/report.md``; returns the report as plain JSON
    values (what ``report.json`` holds)."""
    plain = jsonable(report)
    folder = Path(out)
    write_bytes(folder / "report.json", (json.dumps(plain, indent=2) + "\n").encode("utf-8"))
    write_bytes(folder / "report.md", render_markdown(plain).encode("utf-8"))
    return plain


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
        f"Machine (every time below was measured on it): {report['machine']['cpu']}; "
        f"{report['machine']['dispatch']}.",
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
    recipe = s2.get("training_recipe")
    if recipe is not None:
        out += [
            "",
            "### Augmentation, a schedule and early stopping",
            "",
            f"The chosen network trained again with augmentation `{recipe['augment']}`, a "
            f"`{recipe['lr_schedule']}` learning-rate schedule and early stopping (patience "
            f"{recipe['patience']}, best weights restored, up to {recipe['epochs']['recipe']} "
            f"epochs), beside the plain one; both with the same seed on the same split (the "
            f"last {recipe['validation_split']:.0%} of the training images watched, not "
            "trained on).",
            "",
            "| training | epochs run | epoch kept | train acc. | validation acc. | gap "
            "| test acc. |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name in ("plain", "recipe"):
            r = recipe[name]
            out.append(
                f"| {name} | {r['epochs_run']} | {r['best_epoch']} | {r['train_accuracy']:.4f} "
                f"| {r['val_accuracy']:.4f} | {r['gap']:+.4f} | {r['test_accuracy']:.4f} |"
            )
        out += ["", recipe["summary"], "", "![training recipe](training_recipe.png)"]
    family = s2.get("airbench_family")
    if family:
        out += [
            "",
            "### The airbench family",
            "",
            "Keller Jordan's CIFAR-10 speed records cnnrs ships, each `cnnrs.Model(name)` with "
            "its recipe; the accuracy and time are the reference's, as its authors published "
            "them for one A100 GPU (not measured here):",
            "",
            airbench_family_table(family),
        ]
    air = s2.get("airbench94")
    if air is not None:
        out += [
            "",
            "### airbench94 with its own recipe",
            "",
            f"Keller Jordan's CIFAR-10 speed-record network (airbench 0.1.8, 94% on CIFAR-10 "
            f"in about 10 epochs on a GPU), trained with its recipe: batches of "
            f"{air['batch_size']}, {air['epochs']} epochs, {air['precision']}"
            + (
                f", images upscaled to {air['image_shape'][0]}×{air['image_shape'][1]}"
                if air["upscaled"]
                else ""
            )
            + ".",
            "",
            "| test accuracy (flip + translate TTA) | without TTA | seconds |",
            "|---:|---:|---:|",
            f"| {air['test_accuracy']:.4f} | {air['test_accuracy_no_tta']:.4f} "
            f"| {air['seconds']:.1f} |",
            "",
            air["summary"],
            "",
            "![airbench94](airbench94.png)",
        ]
    learned = s2.get("what_the_network_learned")
    if learned is not None:
        out += [
            "",
            "### What the networks learned",
            "",
            "Section 1 convolved a photo with hand-made kernels; here are the kernels the "
            "networks learned, each (where they read pixels) beside the nearest of Section "
            "1's by normalised correlation, one test image's feature maps through the first "
            "blocks, and Grad-CAM heatmaps (Selvaraju et al., 2017) of test images, "
            "misclassified ones titled in red.",
        ]
        for who, prefix in (("chosen", "learned"), ("airbench94", "airbench94_learned")):
            r = learned.get(who)
            if r is None:
                continue
            out += [
                "",
                f"**{'The chosen network' if who == 'chosen' else 'airbench94'}** "
                f"({r['architecture']}): {r['summary']}",
                "",
                f"![{who} filters]({prefix}_filters.png) "
                f"![{who} feature maps]({prefix}_feature_maps.png) "
                f"![{who} Grad-CAM]({prefix}_gradcam.png)",
            ]
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
