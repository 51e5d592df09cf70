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


# --- what the network learned ------------------------------------------------------------


def test_plot_filters_pairs_each_filter_with_its_nearest_study_kernel():
    from cnnrs import kernels

    names = list(kernels.STUDY_KERNELS)
    stack = np.stack([kernels.STUDY_KERNELS[n] for n in names], axis=-1)  # (3, 3, 6)
    filters = np.stack([-2 * stack, np.zeros_like(stack)], axis=2)  # (3, 3, 2, 6): in=2
    fig = plotting.plot_filters(filters, n=6, compare=True)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[:4] == ["filter 0", "Kernel 1 r=-1.00", "filter 1", "Kernel 2 r=-1.00"]
    assert "Gaussian blur r=-1.00" in titles
    # The study kernel is drawn with the sign of r, so a match looks like the filter.
    shown = fig.axes[1].images[0].get_array()
    np.testing.assert_allclose(shown, -kernels.STUDY_KERNELS[names[0]])
    assert "summed over 2 input channels" in fig._suptitle.get_text()
    fig.savefig(io.BytesIO(), format="png")
    # A deeper layer's kernels (many input channels) are shown alone by default.
    deep = plotting.plot_filters(np.ones((3, 3, 16, 4)))
    assert [ax.get_title() for ax in deep.axes if ax.get_title()] == [
        f"filter {i}" for i in range(4)
    ]
    with pytest.raises(ValueError, match=r"\(kh, kw, in, out\)"):
        plotting.plot_filters(np.ones((3, 3, 4)))


def test_plot_feature_maps_shows_the_most_active_channels_per_layer():
    rng = np.random.default_rng(0)
    conv = rng.random((2, 8, 8, 5))
    conv[0, :, :, 3] += 10  # the most active channel of the first image
    maps = {"conv2d": conv, "max_pooling2d": conv[:, ::2, ::2], "dense": rng.random((2, 16))}
    fig = plotting.plot_feature_maps(maps, image=np.zeros((8, 8, 1), np.uint8), channels=3)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[0] == "input" and titles[1] == "conv2d [3]"
    assert "max_pooling2d [3]" in titles and not any("dense" in t for t in titles)
    fig.savefig(io.BytesIO(), format="png")
    with pytest.raises(ValueError, match="no feature maps"):
        plotting.plot_feature_maps({"dense": rng.random((2, 16))})


def test_plot_gradcam_titles_predicted_and_true_and_marks_mistakes():
    images = np.zeros((3, 8, 8, 1), np.uint8)
    maps = np.random.default_rng(1).random((3, 8, 8))
    fig = plotting.plot_gradcam(images, maps, y_true=[1, 2, 0], y_pred=[1, 0, 0], class_names="abc")
    tops = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in tops] == ["pred b\ntrue b", "pred a\ntrue c", "pred a\ntrue a"]
    assert [ax.title.get_color() for ax in tops] == ["black", "red", "black"]
    assert len(fig.axes[4].images) == 2  # the image and the heatmap over it
    fig.savefig(io.BytesIO(), format="png")
    with pytest.raises(ValueError, match=r"heatmaps must be \(N, H, W\)"):
        plotting.plot_gradcam(images, maps[:2])
