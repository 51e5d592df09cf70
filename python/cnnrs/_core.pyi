"""Type stubs for the native module ``cnnrs._core`` (the Rust core).

Written by hand; ``tools/check_stubs.py`` (run by ``make lint``) compares every
name, signature, base class, method and property here with the compiled module.
"""

import os
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__version__: str
"""The package version, from Cargo.toml (the one place it is written)."""

class CnnrsError(Exception): ...
class DataFormatError(CnnrsError, ValueError): ...
class TorchError(CnnrsError): ...

def torch_version() -> str: ...
def cuda_available() -> bool: ...
def cuda_device_count() -> int: ...

class AtomicWriter:
    """A file written beside ``path`` under an unpredictable name, created
    exclusively (never through a symlink), and renamed over ``path`` by
    :meth:`commit`. Used as a context manager it commits on success and removes
    the temporary file on an exception."""

    def __init__(self, path: str | os.PathLike[str]) -> None: ...
    def write(self, data: bytes) -> None:
        """Appends ``data`` (bytes)."""
    def commit(self) -> None:
        """Syncs the file and renames it over the target."""
    def abort(self) -> None:
        """Removes the temporary file; the target stays as it was. Idempotent."""
    def __enter__(self) -> AtomicWriter: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        _exc_value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> bool: ...

def create_padding(
    image: npt.ArrayLike,
    d: int,
    mode: Literal["constant", "reflect", "edge"] = "constant",
    value: int | float = 0,
) -> npt.NDArray[Any]:
    """Pads both spatial axes of an image by ``d`` pixels on each side.

    Parameters
    ----------
    image : array_like
        ``(H, W)`` or ``(H, W, C)``, any real integer or float dtype.
    d : int
        Pixels added on each side, ``d >= 0``.
    mode : {"constant", "reflect", "edge"}, default "constant"
        How the border is filled, with the same results as ``numpy.pad``.
    value : int or float, default 0
        The fill value of ``"constant"``; must fit the image's dtype exactly
        (integers are taken as integers, so int64 values above 2**53 stay exact).

    Returns
    -------
    numpy.ndarray
        ``(H + 2d, W + 2d[, C])`` with the image's dtype.
    """

def convolution(
    image: npt.ArrayLike,
    kernel: npt.ArrayLike,
    stride: int = 1,
    padding: int | Literal["valid", "same"] = 0,
) -> npt.NDArray[Any]:
    """Convolves an image with a kernel as deep learning does (cross-correlation,
    the kernel is not flipped), summing over channels.

    Parameters
    ----------
    image : array_like
        ``(H, W)`` or ``(H, W, C)``, any real integer or float dtype.
    kernel : array_like
        ``(kh, kw)`` for a 2-D image, ``(kh, kw, C)`` for a 3-D one; or a bank of
        ``n`` such kernels, ``(n, kh, kw)`` / ``(n, kh, kw, C)``. Non-square is fine.
    stride : int, default 1
        Step between windows along both axes, ``>= 1``.
    padding : int or {"valid", "same"}, default 0
        Zeros added on each side. ``"valid"`` is 0. ``"same"`` is TensorFlow/Keras'
        rule: the output has ``ceil(H / stride)`` rows (``H`` with stride 1) and for
        an even kernel the extra padding row/column goes at the bottom/right.

    Returns
    -------
    numpy.ndarray
        ``(H', W')``, or ``(n, H', W')`` for a bank, with
        ``H' = (H + 2 * padding - kh) // stride + 1``. float32 stays float32,
        float64 stays float64, integers give exact int64 (as ``numpy.einsum``);
        mixed dtypes promote as numpy does (int16 with float32 is float32,
        int32 with float32 is float64).
    """

def pooling(
    image: npt.ArrayLike,
    p: int,
    pooling_type: Literal["max_pooling", "avg_pooling", "max", "avg"] = "max_pooling",
    stride: int = 1,
) -> npt.NDArray[Any]:
    """Max or average pooling over ``p × p`` windows, channel by channel.

    Parameters
    ----------
    image : array_like
        ``(H, W)`` or ``(H, W, C)``, any real integer or float dtype.
    p : int
        Window side, ``1 <= p <= min(H, W)``.
    pooling_type : {"max_pooling", "avg_pooling", "max", "avg"}, default "max_pooling"
    stride : int, default 1
        Step between windows along both axes, ``>= 1``.

    Returns
    -------
    numpy.ndarray
        ``(H', W'[, C])`` with ``H' = (H - p) // stride + 1``. Max keeps the dtype
        and propagates NaN like ``numpy.max``; average keeps float32/float64 and
        gives float64 for integers, like ``numpy.mean``.
    """

def load_image(
    path: str | os.PathLike[str],
    *,
    grayscale: bool = True,
    size: tuple[int, int] | None = None,
) -> npt.NDArray[np.uint8]:
    """Reads a GIF, PNG, JPEG or BMP image into a ``uint8`` array.

    Parameters
    ----------
    path : str or os.PathLike
    grayscale : bool, default True
        One luma channel, exactly as PIL's ``convert("L")`` (ITU-R 601:
        ``L = (19595 R + 38470 G + 7471 B + 32768) >> 16``); otherwise RGB.
    size : (int, int), optional
        Resize to ``(width, height)`` (PIL's order) with a bilinear filter;
        each side at most 32768 and at most 2**26 pixels.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` uint8 when grayscale, else ``(H, W, 3)``.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    cnnrs.DataFormatError
        The file is not a GIF/PNG/JPEG/BMP image, is corrupt, or is larger
        than cnnrs reads (256 MiB of file, 32768 pixels a side, 2**26 pixels).
    """

def _simd_isa() -> str:
    """The instruction set the image kernels run with: "avx512", "avx2+fma" or "baseline"."""

CIFAR10_CLASSES: list[str]

def kfold_indices(
    n: int, k: int, shuffle: bool = True, seed: int = 42
) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
    """Shuffled k-fold ``(train, val)`` index pairs, equal to scikit-learn's
    ``KFold(k, shuffle=shuffle, random_state=seed).split(range(n))``."""

def stratified_kfold_indices(
    labels: npt.ArrayLike, k: int, shuffle: bool = True, seed: int = 42
) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
    """Stratified k-fold ``(train, val)`` index pairs, equal to scikit-learn's
    ``StratifiedKFold(k, shuffle=shuffle, random_state=seed).split(x, labels)``."""

def locate_cifar10(root: str | os.PathLike[str]) -> tuple[str, str] | None:
    """``(kind, path)`` of CIFAR-10 at or below ``root``, kind ``"pickle"``,
    ``"binary"`` or ``"archive"``; None when nothing is there."""

def read_cifar10(
    root: str | os.PathLike[str],
) -> tuple[
    tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]],
    tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]],
]:
    """``((x_train, y_train), (x_test, y_test))`` from ``root`` in Keras layout."""

def confusion_matrix(
    y_true: npt.NDArray[np.int64], y_pred: npt.NDArray[np.int64], num_classes: int | None = None
) -> npt.NDArray[np.int64]:
    """Confusion matrix of 1-D int64 labels: rows true, columns predicted."""

def precision_recall_f1(
    cm: npt.NDArray[np.int64],
) -> tuple[
    npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int64]
]:
    """Per-class ``(precision, recall, f1, support)`` with ``zero_division=0``."""

def classification_scores(
    y_true: npt.NDArray[np.int64], y_pred: npt.NDArray[np.int64], num_classes: int | None = None
) -> dict[str, Any]:
    """The numbers of scikit-learn's ``classification_report(zero_division=0)``."""

def architectures() -> list[str]: ...
def course_architectures() -> list[str]: ...

MODEL_SETTINGS: list[str]
"""The keywords of ``cnnrs.Model`` that ``Model(settings=...)`` takes: the one list
the core resolves against the architecture's recipe."""

MUON_SETTINGS: list[str]
"""The settings ``cnnrs.optimizers.Muon`` takes (passed as ``optimizer``'s dict)."""

class WeightsSnapshot:
    """An opaque copy of every weight and batch-norm statistic of a ``Model``, kept
    on its device; ``Model.restore`` puts it back."""

class Model:
    """The Rust model behind ``cnnrs.Model`` (weights, optimiser state, normalisation)."""

    def __init__(
        self,
        architecture: str | Sequence[Sequence[Any]],
        device: str | None = None,
        seed: int | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None: ...
    def build(self, input_shape: tuple[int, int, int], num_classes: int) -> None: ...
    def begin_fit(
        self,
        x: npt.NDArray[Any],
        y: npt.NDArray[np.int64],
        *,
        num_classes: int,
        batch_size: int,
        validation_x: npt.NDArray[Any] | None = None,
        validation_y: npt.NDArray[np.int64] | None = None,
        shuffle: bool | None = None,
        total_steps: int | None = None,
        base_learning_rate: float | None = None,
    ) -> None:
        """Builds the model if needed, fits the normalisation (and a recipe's whitening)
        on the first fit and uploads the data to the device once, for ``fit_epoch``.
        ``total_steps`` (Lookahead's schedule) and ``base_learning_rate`` (decoupled
        weight decay) matter to recipes only."""
    def fit_epoch(
        self,
        epoch: int,
        epochs: int,
        *,
        learning_rates: float | Sequence[float],
        printer: Any = None,
        steps: int | None = None,
    ) -> dict[str, float]:
        """One epoch (0-based ``epoch`` of ``epochs``) at one rate, or one rate per
        batch run; ``steps`` runs only the first batches (a fractional last epoch).
        Returns ``{"loss", "accuracy"[, "val_loss", "val_accuracy"]}``."""
    def steps_per_epoch(self, n: int, batch_size: int) -> int:
        """Batches per epoch on ``n`` images (a recipe drops the last incomplete one)."""
    @property
    def batches_per_epoch(self) -> int | None:
        """Batches per epoch of the fit in progress (None outside a fit)."""
    def end_fit(self) -> None:
        """Frees the device copies of ``begin_fit``; idempotent."""
    def snapshot(self) -> WeightsSnapshot: ...
    def restore(self, snapshot: WeightsSnapshot) -> None: ...
    def state_dict(self) -> dict[str, npt.NDArray[np.float32]]: ...
    def load_state_dict(self, state: dict[str, npt.NDArray[np.float32]]) -> None: ...
    def evaluate(
        self,
        x: npt.NDArray[Any],
        y: npt.NDArray[np.int64],
        *,
        tta: str | None = None,
        tta_threshold: float | None = None,
    ) -> tuple[float, float]: ...
    def predict(
        self,
        x: npt.NDArray[Any],
        batch_size: int | None = None,
        *,
        tta: str | None = None,
        tta_threshold: float | None = None,
    ) -> npt.NDArray[np.float32]: ...
    @property
    def layer_names(self) -> list[str]:
        """The layers ``feature_maps`` and ``gradcam`` accept, in order (augmentation
        layers, which pass images through at inference, left out)."""
    def feature_maps(
        self,
        x: npt.NDArray[Any],
        layers: str | Sequence[str] | None = None,
        *,
        batch_size: int | None = None,
    ) -> dict[str, npt.NDArray[np.float32]]:
        """``{layer: activations}`` after each named layer (None: every one), in Keras's
        layouts: ``(N, H, W, C)`` maps, ``(N, units)`` vectors."""
    def filters(self, layer: str | None = None) -> tuple[str, npt.NDArray[np.float32]]:
        """``(layer, kernels (kh, kw, in, out))`` of a convolution (None: the first
        learned one; a conv group's first convolution)."""
    def gradcam(
        self,
        x: npt.NDArray[Any],
        class_index: int | Sequence[int] | npt.NDArray[np.integer[Any]] | None = None,
        layer: str | None = None,
        *,
        normalize: bool = True,
        batch_size: int | None = None,
    ) -> tuple[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]], str]:
        """``((heatmaps (N, H, W), classes (N,)), layer)``: Grad-CAM at ``layer`` (None:
        the last convolution) for ``class_index`` (None: each image's predicted class)."""
    def saliency(
        self,
        x: npt.NDArray[Any],
        class_index: int | Sequence[int] | npt.NDArray[np.integer[Any]] | None = None,
        *,
        normalize: bool = True,
        batch_size: int | None = None,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """``(saliency (N, H, W), classes (N,))``: the largest absolute input gradient
        over the channels of the class logit."""
    def save(self, path: str) -> None: ...
    @staticmethod
    def load(path: str, device: str | None = None, *, precision: str | None = None) -> Model: ...
    @property
    def architecture(self) -> str: ...
    @property
    def learning_rate(self) -> float: ...
    @property
    def device(self) -> str: ...
    @property
    def precision(self) -> str: ...
    @property
    def optimizer(self) -> str: ...
    @property
    def momentum(self) -> float: ...
    @property
    def nesterov(self) -> bool: ...
    @property
    def weight_decay(self) -> float: ...
    @property
    def muon(self) -> dict[str, Any] | None: ...
    @property
    def label_smoothing(self) -> float: ...
    @property
    def tta(self) -> str: ...
    @property
    def recipe(self) -> dict[str, Any] | None: ...
    @property
    def seed(self) -> int: ...
    @property
    def input_shape(self) -> tuple[int, int, int] | None: ...
    @property
    def num_classes(self) -> int | None: ...
    @property
    def class_names(self) -> list[str] | None: ...
    @class_names.setter
    def class_names(self, names: list[str] | None) -> None: ...
    @property
    def normalization(self) -> tuple[list[float], list[float]] | None: ...
    @property
    def layer_specs_json(self) -> str: ...
    @property
    def plan(self) -> list[dict[str, Any]] | None: ...
