"""cnnrs.plotting's Section 2 figures: whole epochs on the training curves, single images,
fold accuracies, and image grids titled by the shared label rule."""

from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from cnnrs import plotting  # noqa: E402


def _tick_values(ax):
    lo, hi = ax.get_xlim()
    return [t for t in ax.get_xticks() if lo <= t <= hi]


@pytest.mark.parametrize("epochs", [2, 3, 4, 7, 30])
def test_training_curves_have_whole_epoch_ticks(epochs):
    rng = np.random.default_rng(0)
    history = {
        key: rng.random(epochs).tolist() for key in ("loss", "accuracy", "val_loss", "val_accuracy")
    }
    fig = plotting.plot_history([history, history], title="t")
    for ax in fig.axes:
        ticks = _tick_values(ax)
        assert ticks, "no ticks"
        assert all(float(t).is_integer() for t in ticks), ticks
        assert ax.get_xlabel() == "epoch"
    fig.savefig(io.BytesIO(), format="png")


def test_plot_image_gray_and_colour():
    gray = plotting.plot_image(np.arange(64, dtype=np.uint8).reshape(8, 8), "eight")
    (ax,) = gray.axes
    assert ax.get_title() == "eight"
    assert ax.images[0].get_cmap().name == "gray"
    colour = plotting.plot_image(np.zeros((4, 5, 3), np.uint8))
    assert colour.axes[0].get_title() == "4×5"
    single = plotting.plot_image(np.zeros((4, 5, 1), np.uint8))
    assert single.axes[0].images[0].get_array().shape == (4, 5)


def test_plot_fold_accuracies_one_box_per_architecture():
    results = {
        "baseline": {"fold_accuracies": [0.9, 0.92, 0.95]},
        "custom": {"fold_accuracies": [0.8, 0.85, 0.83]},
    }
    fig = plotting.plot_fold_accuracies(results)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["baseline", "custom"]
    assert ax.get_title().startswith("3-fold")
    with pytest.raises(ValueError, match="empty"):
        plotting.plot_fold_accuracies({})


def test_plot_images_takes_every_label_encoding():
    x = np.zeros((4, 8, 8, 1), np.uint8)
    for y in ([0, 1, 1, 0], np.eye(2)[[0, 1, 1, 0]], np.array([False, True, True, False])):
        fig = plotting.plot_images(x, y, ["no", "yes"], n=4)
        assert [ax.get_title() for ax in fig.axes[:4]] == ["no", "yes", "yes", "no"]
    with pytest.raises(ValueError, match="negative"):
        plotting.plot_images(x, [0, -1, 0, 0], ["no", "yes"])
