"""Datasets in Keras layout: CIFAR-10 and scikit-learn's handwritten digits.

CIFAR-10 is read by the Rust core (a restricted pickle reader that never runs
pickle code, the binary batches, or the ``.tar.gz`` archives in memory); this
module only decides where to look and downloads the official archive when
nothing is found locally.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.request
from pathlib import Path

import numpy as np
import numpy.typing as npt

from . import _core

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "DIGITS_CLASSES",
    "load_cifar10",
    "load_digits",
]

#: The ten CIFAR-10 class names, in label order.
CIFAR10_CLASSES: list[str] = list(_core.CIFAR10_CLASSES)
#: Where the official python-pickle archive is downloaded from.
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
#: MD5 of that archive, checked before it is cached.
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
#: File name of the cached archive.
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
#: The digit class names, in label order.
DIGITS_CLASSES: list[str] = [str(i) for i in range(10)]

_DIGITS_FILE = Path(__file__).parent / "data" / "digits.csv.gz"

Arrays = tuple[
    tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]],
    tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]],
]


def _cache_dir() -> Path:
    """Keras's dataset cache: ``$KERAS_HOME/datasets`` or ``~/.keras/datasets``."""
    home = os.environ.get("KERAS_HOME")
    return (Path(home) if home else Path.home() / ".keras") / "datasets"


def _search_roots() -> list[Path]:
    roots = [_cache_dir(), Path.home() / ".keras" / "datasets"]
    return list(dict.fromkeys(roots))


def _download(url: str, dest: Path, md5: str) -> Path:
    """Streams ``url`` into ``dest`` through the package's atomic writer, keeping it
    only if its MD5 matches; on any failure nothing is left behind."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.md5(usedforsecurity=False)
    with _core.AtomicWriter(dest) as out, urllib.request.urlopen(url, timeout=60) as response:
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
        if digest.hexdigest() != md5:
            raise _core.DataFormatError(
                f"download of {url} is corrupt: MD5 {digest.hexdigest()}, expected {md5}; "
                "nothing was cached"
            )
    return dest


def load_cifar10(path: str | os.PathLike[str] | None = None, download: bool = True) -> Arrays:
    """CIFAR-10 exactly as ``keras.datasets.cifar10.load_data()`` returns it.

    Parameters
    ----------
    path : str or os.PathLike, optional
        A folder of python-pickle batches (``data_batch_1``..``test_batch``) or
        binary batches (``*.bin``), a folder holding one in a Keras, torchvision
        or ``tar xzf`` layout, or ``cifar-10-python.tar.gz`` /
        ``cifar-10-binary.tar.gz``. Default: look in Keras's caches
        (``$KERAS_HOME/datasets``, ``~/.keras/datasets``).
    download : bool, default True
        With no ``path`` and nothing cached, download the official archive
        (``CIFAR10_URL``), check its MD5 and cache it in Keras's cache folder.

    Returns
    -------
    tuple
        ``((x_train, y_train), (x_test, y_test))``: uint8 images
        ``(50000, 32, 32, 3)`` / ``(10000, 32, 32, 3)`` channels last and uint8
        labels ``(N, 1)``; class names in ``CIFAR10_CLASSES``.

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``, or nothing cached and ``download`` is False; the
        message lists the places searched.
    cnnrs.DataFormatError
        A batch, the archive or a download is corrupt or truncated.
    """
    if path is not None:
        root = Path(path).expanduser()
        if _core.locate_cifar10(root) is None:
            raise FileNotFoundError(
                f"no CIFAR-10 batches or archive at {root} (looked for data_batch_1..5 and "
                "test_batch, their .bin versions, cifar-10-batches-py/ and -bin/ folders, and "
                "cifar-10-python.tar.gz / cifar-10-binary.tar.gz)"
            )
        return _core.read_cifar10(root)
    roots = _search_roots()
    for root in roots:
        if _core.locate_cifar10(root) is not None:
            return _core.read_cifar10(root)
    if not download:
        places = ", ".join(str(r) for r in roots)
        raise FileNotFoundError(
            f"CIFAR-10 is not cached in {places} (nor in their cifar-10-batches-py/ and "
            "cifar-10-batches-bin/ folders or archives); pass download=True or path=..."
        )
    dest = _cache_dir() / CIFAR10_ARCHIVE
    print(f"Downloading {CIFAR10_URL} to {dest} (about 170 MB)", file=sys.stderr)
    return _core.read_cifar10(_download(CIFAR10_URL, dest, CIFAR10_MD5))


def load_digits(test_size: float = 0.2, seed: int = 0) -> Arrays:
    """scikit-learn's handwritten digits, split into train and test in Keras layout.

    1797 images of 8×8 pixels from the copy of scikit-learn's ``digits.csv.gz``
    (BSD-3) shipped with cnnrs. scikit-learn's pixels count 0..16; here they are
    scaled exactly to the 0..255 of every other uint8 image, ``round(v * 255 /
    16)`` (0 → 0, 8 → 128, 16 → 255), so a digit saved as PNG or shown by any
    viewer looks like a digit. Training is unaffected: ``cnnrs.Model``
    normalises its inputs.

    Parameters
    ----------
    test_size : float, default 0.2
        Fraction of each class held out for testing, in (0, 1).
    seed : int, default 0
        Seed of the split (numpy ``default_rng``); the same seed gives the
        same split.

    Returns
    -------
    tuple
        ``((x_train, y_train), (x_test, y_test))``: uint8 images
        ``(N, 8, 8, 1)`` and uint8 labels ``(N, 1)``, each split in file
        order; class names in ``DIGITS_CLASSES``.
    """
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    raw = np.loadtxt(_DIGITS_FILE, delimiter=",", dtype=np.uint8)
    # Exact: v * 255 / 16 is never halfway between integers except at v = 8 (127.5 → 128).
    images = ((raw[:, :64].astype(np.uint16) * 255 + 8) // 16).astype(np.uint8).reshape(-1, 8, 8, 1)
    labels = raw[:, 64:65]
    rng = np.random.default_rng(seed)
    test = np.zeros(len(raw), dtype=bool)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels[:, 0] == c))
        test[members[: int(round(test_size * len(members)))]] = True
    return (images[~test], labels[~test]), (images[test], labels[test])
