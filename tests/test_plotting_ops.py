"""cnnrs.plotting.show_conv_and_pool."""

from __future__ import annotations

import builtins

import numpy as np
import pytest

from cnnrs import kernels, plotting

pytest.importorskip("matplotlib")


def test_one_figure_per_kernel_with_conv_and_pool():
    img = np.random.default_rng(0).integers(0, 255, (32, 40)).astype(np.uint8)
    figs = plotting.show_conv_and_pool(img, kernels.STUDY_KERNELS, p=2)
    assert len(figs) == len(kernels.STUDY_KERNELS)
    for fig, title in zip(figs, kernels.STUDY_KERNELS):
        assert fig._suptitle.get_text() == title
        conv_ax, pool_ax = fig.axes
        assert conv_ax.images[0].get_array().shape == (32, 40)  # "same" padding
        assert pool_ax.images[0].get_array().shape == (31, 39)  # 2x2, stride 1


def test_list_of_kernels_and_average_pooling():
    img = np.random.default_rng(1).random((20, 20))
    figs = plotting.show_conv_and_pool(
        img, [kernels.SOBEL_X, kernels.LAPLACIAN], p=3, pooling_type="avg_pooling", stride=3
    )
    assert [f._suptitle.get_text() for f in figs] == ["kernel 1", "kernel 2"]
    assert figs[0].axes[1].images[0].get_array().shape == (6, 6)
    figs[0].savefig(__import__("io").BytesIO(), format="png")


def test_missing_matplotlib_says_how_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ImportError, match=r"pip install cnnrs\[plot\]"):
        plotting.show_conv_and_pool(np.zeros((4, 4)), [kernels.IDENTITY])
