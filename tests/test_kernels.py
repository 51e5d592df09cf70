"""cnnrs.kernels: the study's named kernels."""

from __future__ import annotations

import numpy as np
import pytest

import cnnrs
from cnnrs import kernels


def test_named_kernels_are_read_only_3x3_with_descriptions():
    assert kernels.names() == list(kernels.KERNELS)
    assert set(kernels.DESCRIPTIONS) == set(kernels.KERNELS)
    for name in kernels.names():
        k = kernels.get(name)
        assert k.shape == (3, 3) and k.dtype == np.float64
        assert not k.flags.writeable
        line = kernels.describe(name)
        assert line and "\n" not in line
    with pytest.raises(ValueError):
        kernels.SOBEL_X[0, 0] = 5


def test_describe_all_lists_every_kernel():
    text = kernels.describe()
    assert len(text.splitlines()) == len(kernels.KERNELS)


def test_unknown_kernel_names_the_known_ones():
    with pytest.raises(KeyError, match="sobel_x"):
        kernels.get("sobel_z")


def test_values_match_the_course():
    np.testing.assert_array_equal(kernels.SOBEL_X, [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    np.testing.assert_array_equal(kernels.SOBEL_Y, [[1, 2, 1], [0, 0, 0], [-1, -2, -1]])
    np.testing.assert_allclose(kernels.GAUSSIAN_BLUR.sum(), 1.0)
    study = list(kernels.STUDY_KERNELS.values())
    assert len(study) == 6
    np.testing.assert_array_equal(study[0], [[1, 0, -1]] * 3)
    np.testing.assert_array_equal(study[1], [[-1, -1, -1], [0, 0, 0], [1, 1, 1]])
    np.testing.assert_array_equal(study[2], kernels.SOBEL_X)
    np.testing.assert_array_equal(study[3], kernels.SOBEL_Y)
    np.testing.assert_array_equal(study[4], [[0, 1, 0], [1, -5, 1], [0, 1, 0]])
    np.testing.assert_array_equal(study[5] * 16, [[1, 2, 1], [2, 4, 2], [1, 2, 1]])


def test_kernels_do_what_they_say():
    img = np.zeros((8, 8))
    img[:, 4:] = 1.0  # a vertical edge, dark to light
    edge_x = cnnrs.convolution(img, kernels.SOBEL_X, padding="same")
    assert edge_x[4, 3] > 0 and edge_x[4, 4] > 0 and edge_x[4, 1] == 0
    np.testing.assert_array_equal(cnnrs.convolution(img, kernels.SOBEL_Y)[2:-2], 0)
    np.testing.assert_array_equal(cnnrs.convolution(img, kernels.IDENTITY, padding=1), img)
    np.testing.assert_allclose(cnnrs.convolution(np.ones((5, 5)), kernels.GAUSSIAN_BLUR), 1.0)
    np.testing.assert_array_equal(cnnrs.convolution(np.ones((5, 5)), kernels.LAPLACIAN), 0)
