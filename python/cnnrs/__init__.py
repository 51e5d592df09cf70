"""cnnrs: convolutional neural networks, from image operations to CIFAR-10.

Image operations (padding, convolution, pooling, image loading) are written from
scratch in Rust; CNN training runs in Rust on libtorch. numpy in, numpy out.
"""

# libtorch must be loaded (by torch's own import) before our extension links to it;
# the name is deleted again below, so `cnnrs.torch` is not part of the API by accident.
import torch  # isort: skip

from . import datasets, kernels, metrics, optimizers
from ._core import (
    CnnrsError,
    DataFormatError,
    TorchError,
    __version__,
    convolution,
    create_padding,
    cuda_available,
    cuda_device_count,
    load_image,
    pooling,
    torch_version,
)
from ._sample import sample_image
from .models import ARCHITECTURES, COURSE_ARCHITECTURES, Model
from .selection import cross_validate, grid_search, parameter_grid

del torch

__all__ = [
    "ARCHITECTURES",
    "COURSE_ARCHITECTURES",
    "CnnrsError",
    "DataFormatError",
    "Model",
    "TorchError",
    "__version__",
    "convolution",
    "create_padding",
    "cross_validate",
    "cuda_available",
    "cuda_device_count",
    "datasets",
    "grid_search",
    "kernels",
    "load_image",
    "metrics",
    "optimizers",
    "parameter_grid",
    "pooling",
    "sample_image",
    "torch_version",
]
