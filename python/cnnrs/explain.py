"""The study's step "what the network learned", shared by ``cnnrs demo`` and the notebook
(and re-exported by :mod:`cnnrs.study`): it ties Section 1's hand-made kernels to the
kernels a trained network learned.

:func:`what_the_network_learned` gathers, for a trained model, its first layer's learned
kernels and the study kernel each is nearest to, one test image's feature maps through
the first blocks, and Grad-CAM heatmaps for a handful of test images including
misclassified ones, with a short reading of what the numbers show. Like every step of
:mod:`cnnrs.study` it returns plain data; the figures are ``cnnrs.plotting``'s
(``plot_filters``, ``plot_feature_maps``, ``plot_gradcam``) and the caller's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import kernels
from ._arrays import as_images, check_count
from .models import Model

__all__ = ["STRONG_MATCH", "what_the_network_learned"]

#: A learned kernel whose normalised correlation with a study kernel reaches this (in
#: absolute value) is called close to it.
STRONG_MATCH = 0.8
#: Layer types drawn as feature maps, those that end a block (lower the resolution), and
#: the learned convolutions (airbench's whitening is fitted once and frozen, not learned).
_MAP_TYPES = {"Conv2D", "MaxPooling2D", "AveragePooling2D", "Whitening", "ConvGroup"}
_BLOCK_ENDS = {"MaxPooling2D", "AveragePooling2D", "ConvGroup"}
_LEARNED_CONVS = {"Conv2D", "ConvGroup"}


def _short(name: str) -> str:
    return name.split(":")[0].split(" (")[0]


def _model_images(model: Model, x: Any) -> np.ndarray:
    """``x`` checked against the model's input shape."""
    images = as_images(x, "x_test")
    shape = model.input_shape
    if shape is None:
        raise ValueError("the model has not been trained yet; call fit first")
    if images.shape[1:] != tuple(shape):
        raise ValueError(
            f"x_test must be images of the model's input shape {tuple(shape)}, got "
            f"{images.shape[1:]}; airbench94 trained on digits takes them as it was trained, "
            "study.upscale(x_test)"
        )
    return images


def _chance_level(size: tuple[int, int], candidates: dict[str, Any], draws: int = 2000) -> float:
    """The mean best |r| random Gaussian kernels of ``size`` reach against ``candidates``:
    what "like a study kernel" means by chance (seeded, so the same every run)."""
    rng = np.random.default_rng(0)
    return float(
        np.mean([abs(kernels.nearest(rng.normal(size=size), candidates)[1]) for _ in range(draws)])
    )


def _convolutions(model: Model) -> list[dict[str, Any]]:
    """The model's learned convolutions (``model.layers`` rows), in order."""
    convs = [row for row in model.layers if row["type"] in _LEARNED_CONVS]
    if not convs:
        raise ValueError(f"{model.architecture} has no convolution to look inside")
    return convs


def _filters_step(model: Model) -> tuple[dict[str, Any], str]:
    layer = _convolutions(model)[0]["name"]
    names = model.layer_names
    learned = model.filters(layer)
    kh, kw, c_in, c_out = learned.shape
    candidates = dict(kernels.STUDY_KERNELS)
    compared = c_in <= 3 and any(np.shape(k) == (kh, kw) for k in candidates.values())
    whitening = "whitening" in names
    out: dict[str, Any] = {
        "layer": layer,
        "kernels": learned,
        "shape": learned.shape,
        "compared": compared,
        "matches": [],
    }
    lead = ""
    if whitening:
        lead = (
            f"{model.architecture}'s first layer is its whitening convolution (2×2 kernels "
            "fitted to the training images' patches when the fit starts and frozen: not "
            f"learned); shown instead are the first conv group's {c_out} learned {kh}×{kw} "
            f"kernels, which read the whitening's {c_in} channels, not pixels. "
        )
        # airbench initialises its first min(in, out) kernels as identities (dirac_).
        summed = np.abs(learned.sum(axis=2))
        centre = summed[kh // 2, kw // 2] / np.maximum(summed.sum(axis=(0, 1)), 1e-12)
        identities = int(np.sum(centre[: min(c_in, c_out)] > 0.8))
        out["identity_like"] = identities
        if identities:
            lead += (
                f"{identities} of its first {min(c_in, c_out)} kernels, which start as "
                "identities (airbench's dirac initialisation), still mostly pass their "
                "channel through (over 80% of the weight at the centre). "
            )
    if not compared:
        return out, lead + (
            "They are not compared with Section 1's kernels, which act on pixels."
            if whitening
            else f"The first layer's kernels read {c_in} channels; they are not compared with "
            "Section 1's pixel kernels."
        )
    matches: list[dict[str, Any]] = []
    for j in range(c_out):
        name, r = kernels.nearest(learned[:, :, :, j], candidates)
        matches.append({"filter": j, "kernel": name, "r": r})
    out["matches"] = matches
    best = np.array([abs(m["r"]) for m in matches])
    chance = _chance_level((kh, kw), candidates)
    strong = [m for m in matches if abs(m["r"]) >= STRONG_MATCH]
    common = Counter(_short(m["kernel"]) for m in strong).most_common(3)
    out.update(mean_best_r=float(best.mean()), chance_best_r=chance, strong=len(strong))
    colour = " (each summed over its colour channels)" if c_in > 1 else ""
    text = (
        f"The first layer ({layer}) learned {c_out} {kh}×{kw} kernels{colour}. By normalised "
        f"correlation with Section 1's kernels, {len(strong)} of them "
        + ("is" if len(strong) == 1 else "are")
        + f" close to one (|r| ≥ {STRONG_MATCH})"
        + (": " + ", ".join(f"{k} ({n})" for k, n in common) if common else "")
        + f". Their mean best |r| is {best.mean():.2f}, against {chance:.2f} for random "
        f"kernels of the same size, "
    )
    gain = best.mean() - chance
    if gain > 0.15:
        text += "so the network learned edge and blob detectors of the kind Section 1 built."
    elif gain > 0.05:
        text += (
            "a little more like Section 1's kernels than chance: mostly mixtures of edge "
            "and blob detectors rather than copies of them."
        )
    else:
        text += (
            "no more like Section 1's kernels than chance: this network solved its task "
            "with kernels of its own."
        )
    return out, lead + text


def _feature_map_layers(model: Model, blocks: int) -> list[str]:
    """The layers drawn as feature maps: convolutions and pooling up to the end of the
    ``blocks``-th block (the ``blocks``-th layer that lowers the resolution)."""
    chosen, ended = [], 0
    for row in model.layers:
        if row["type"] not in _MAP_TYPES:
            continue
        chosen.append(row["name"])
        ended += row["type"] in _BLOCK_ENDS
        if ended == blocks:
            break
    return chosen


def _pick(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> list[int]:
    """Up to ``n`` test images in test order: the first misclassified ones (at most half
    of them), then the first correctly classified ones."""
    wrong = np.flatnonzero(y_true != y_pred)[: n // 2]
    right = np.flatnonzero(y_true == y_pred)[: n - len(wrong)]
    return sorted(int(i) for i in np.concatenate([wrong, right]))


def what_the_network_learned(
    model: Model,
    x_test: Any,
    y_test: Any,
    class_names: Sequence[str],
    *,
    image_index: int = 0,
    n_gradcam: int = 8,
    blocks: int = 2,
) -> dict[str, Any]:
    """What a trained model learned, in three views, with a short reading.

    Parameters
    ----------
    model : cnnrs.Model
        A trained model: a course network or airbench94 (whose first layer is the frozen
        whitening; its first conv group's kernels are shown instead).
    x_test, y_test : array_like
        Test images of the model's input shape (for airbench94 trained on upscaled
        digits, ``study.upscale(x_test)``) and their labels.
    class_names : sequence of str
    image_index : int, default 0
        The test image whose feature maps are drawn.
    n_gradcam : int, default 8
        How many test images get a Grad-CAM heatmap: the first misclassified ones (up to
        half), then the first correctly classified ones.
    blocks : int, default 2
        Feature maps through this many blocks (a block ends where the resolution drops:
        a pooling layer or an airbench conv group).

    Returns
    -------
    dict
        ``{"architecture", "filters": {"layer", "kernels" (kh, kw, in, out), "shape",
        "compared", "matches": [{"filter", "kernel", "r"}], ...}, "feature_maps":
        {"image_index", "image", "true", "layers": {name: (H, W, C)}}, "gradcam":
        {"layer", "indices", "images", "heatmaps" (n, H, W), "y_true", "y_pred",
        "misclassified", "ink_share", "ink_area"}, "summary", "report"}``;
        ``report`` holds the same without the arrays, for ``report.json``.
    """
    check_count(n_gradcam, "n_gradcam")
    check_count(blocks, "blocks")
    images = _model_images(model, x_test)
    y_true = np.asarray(y_test).reshape(-1).astype(np.int64)
    if len(y_true) != len(images):
        raise ValueError(f"x_test has {len(images)} images but y_test has {len(y_true)} labels")
    if not 0 <= image_index < len(images):
        raise ValueError(f"image_index must be in [0, {len(images)}), got {image_index}")
    names = list(class_names)

    filters, filters_text = _filters_step(model)

    layers = _feature_map_layers(model, blocks)
    maps = model.feature_maps(images[image_index : image_index + 1], layers)
    feature_maps = {
        "image_index": image_index,
        "image": images[image_index],
        "true": names[int(y_true[image_index])],
        "layers": {k: v[0] for k, v in maps.items()},
    }
    first, last_map = next(iter(maps.values())), list(maps.values())[-1]
    sizes = [f"{v.shape[1]}×{v.shape[2]}×{v.shape[3]}" for v in (first, last_map)]
    change = []
    if last_map.shape[1] * last_map.shape[2] < first.shape[1] * first.shape[2]:
        change.append("fewer positions, each summarising a larger part of the image")
    if last_map.shape[3] > first.shape[3]:
        change.append("more channels, each a combination of the earlier ones")
    maps_text = (
        f"Test image {image_index} (a {feature_maps['true']}) through {', '.join(layers)}: "
        f"the maps go from {sizes[0]} to {sizes[1]}"
        + (": " + " and ".join(change) if change else "")
        + "."
    )

    # Grad-CAM explains the plain forward pass (no test-time augmentation): its classes.
    y_pred = model.predict(images, tta="none").argmax(axis=1)
    picked = _pick(y_true, y_pred, n_gradcam)
    last = _convolutions(model)[-1]
    layer = last["name"]
    heatmaps = model.gradcam(images[picked], layer=layer)
    wrong = int(np.sum(y_true[picked] != y_pred[picked]))
    gradcam: dict[str, Any] = {
        "layer": layer,
        "indices": picked,
        "images": images[picked],
        "heatmaps": heatmaps,
        "y_true": y_true[picked],
        "y_pred": y_pred[picked],
        "misclassified": wrong,
        "misclassified_in_test": int(np.sum(y_true != y_pred)),
    }
    size = last["output_shape"][1:3]
    at = (
        f"{size[0]}×{size[1]}, upscaled to {images.shape[1]}×{images.shape[2]}, so the "
        "heatmaps are coarse"
        if tuple(size) != images.shape[1:3]
        else f"at the input's {size[0]}×{size[1]}"
    )
    cam_text = (
        f"Grad-CAM at {layer} ({at}) for {len(picked)} test images, "
        f"{wrong} of them misclassified ({gradcam['misclassified_in_test']} of "
        f"{len(images)} test images are, without test-time augmentation)."
    )
    if images.shape[3] == 1 and len(picked):
        # On grayscale images the object is the ink: pixels brighter than the image's mean.
        ink = images[picked, :, :, 0] > images[picked, :, :, 0].mean(axis=(1, 2), keepdims=True)
        mass = heatmaps.sum(axis=(1, 2))
        share = np.where(mass > 0, (heatmaps * ink).sum(axis=(1, 2)) / np.maximum(mass, 1e-12), 0)
        gradcam["ink_share"] = float(share.mean())
        gradcam["ink_area"] = float(ink.mean())
        ratio = share.mean() / max(ink.mean(), 1e-12)
        cam_text += (
            f" On average {share.mean():.0%} of a heatmap's mass lies on the ink, which "
            f"covers {ink.mean():.0%} of the image: "
            + (
                "the evidence the network uses sits mostly on the strokes."
                if ratio > 1.5
                else "somewhat more on the strokes than their area alone would give, with "
                "much of it on the background around them (where a stroke is missing also "
                "tells digits apart)."
                if ratio > 1.1
                else "no more on the strokes than off them: the network reads the background "
                "around the strokes as much as the strokes."
            )
        )

    report = {
        "architecture": model.architecture,
        "filters": {k: v for k, v in filters.items() if k != "kernels"},
        "feature_maps": {
            "image_index": image_index,
            "true": feature_maps["true"],
            "layers": layers,
        },
        "gradcam": {
            k: (v.tolist() if isinstance(v, np.ndarray) else v)
            for k, v in gradcam.items()
            if k not in ("images", "heatmaps")
        },
    }
    summary = " ".join([filters_text, maps_text, cam_text])
    report["summary"] = summary
    return {
        "architecture": model.architecture,
        "filters": filters,
        "feature_maps": feature_maps,
        "gradcam": gradcam,
        "summary": summary,
        "report": report,
    }
