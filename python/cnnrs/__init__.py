"""cnnrs: convolutional neural networks, from image operations to CIFAR-10.

Image operations (padding, convolution, pooling, image loading) are written from
scratch in Rust; CNN training runs in Rust on libtorch. numpy in, numpy out.
"""

# libtorch must be loaded (by torch's own import) before our extension links to it.
import torch  # noqa: F401  isort: skip

from ._core import (  # noqa: E402
    CnnrsError,
    DataFormatError,
    TorchError,
    cuda_available,
    cuda_device_count,
    torch_version,
)

# --- image operations (issue 2) ---
# isort: split
# --- end image operations ---
# --- training (issue 3) ---
from . import (  # noqa: E402
    datasets,
    kernels,  # noqa: E402
    metrics,
)
from ._core import convolution, create_padding, load_image, pooling  # noqa: E402
from ._images import sample_image  # noqa: E402
from .models import ARCHITECTURES, Model  # noqa: E402
from .selection import cross_validate, grid_search, parameter_grid  # noqa: E402

# --- end training ---

__version__ = "0.1.0"

__all__ = [
    "CnnrsError",
    "DataFormatError",
    "TorchError",
    "__version__",
    "cuda_available",
    "cuda_device_count",
    "torch_version",
    # --- image operations names ---
    "convolution",
    "create_padding",
    "kernels",
    "load_image",
    "pooling",
    "sample_image",
    # --- training names ---
    "ARCHITECTURES",
    "Model",
    "datasets",
    "metrics",
    "cross_validate",
    "grid_search",
    "parameter_grid",
]
