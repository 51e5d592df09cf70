"""The sample photo shipped inside the package."""

from __future__ import annotations

from importlib import resources

import numpy as np

from ._core import load_image


def sample_image() -> np.ndarray:
    """The 512×512 grayscale ``uint8`` "camera" photo (public domain, from scikit-image).

    Loaded from ``cnnrs/data/camera.png`` with :func:`cnnrs.load_image`, so it
    needs no download and no scikit-image.
    """
    with resources.as_file(resources.files("cnnrs") / "data" / "camera.png") as path:
        return load_image(path)
