"""CIFAR-10 readers on synthetic batches in every format and layout, and the digits loader.

CIFAR-10 itself cannot be downloaded here, so each test writes small batches
the way the official files (Python 2 protocol-2 pickles, binary records,
``.tar.gz`` archives) and later re-pickles are written, and checks that what
comes back equals, byte for byte, the arrays that went in, in Keras layout.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest

import cnnrs.datasets as ds
from cnnrs import _core

BATCHES = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"]
ALL = [*BATCHES, "test_batch"]


def make_batches(rows: int = 7, test_rows: int = 5, seed: int = 0):
    """Planar (N, 3072) uint8 data and int labels for the six batches."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in ALL:
        n = test_rows if name == "test_batch" else rows
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).tolist()
        out[name] = (data, labels)
    return out


def expected(batches):
    """What keras.datasets.cifar10.load_data() makes of the batches."""

    def keras(names):
        data = np.concatenate([batches[n][0] for n in names])
        labels = np.concatenate([batches[n][1] for n in names]).astype(np.uint8)
        return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels.reshape(-1, 1)

    return keras(BATCHES), keras(["test_batch"])


def assert_dataset_equal(got, want):
    for (gx, gy), (wx, wy) in zip(got, want):
        assert gx.dtype == np.uint8 and gy.dtype == np.uint8
        assert gx.shape == wx.shape and gy.shape == wy.shape
        np.testing.assert_array_equal(gx, wx)
        np.testing.assert_array_equal(gy, wy)


# --- writers --------------------------------------------------------------------------


def sstr(b: bytes) -> bytes:
    """SHORT_BINSTRING: a Python 2 ``str``."""
    return b"U" + bytes([len(b)]) + b


def py2_pickle(data: np.ndarray, labels, claimed_rows: int | None = None) -> bytes:
    """A batch exactly as Python 2's cPickle (protocol 2) wrote the official files:
    str keys and pixels as BINSTRING, the array through ``_reconstruct`` + BUILD."""
    rows = data.shape[0] if claimed_rows is None else claimed_rows
    raw = data.tobytes()
    out = bytearray(b"\x80\x02}q\x01(")
    out += sstr(b"data")
    out += b"cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03K\x00\x85"
    out += sstr(b"b") + b"\x87Rq\x04(K\x01M" + struct.pack("<H", rows) + b"M\x00\x0c\x86"
    out += b"cnumpy\ndtype\nq\x05" + sstr(b"u1") + b"K\x00K\x01\x87Rq\x06(K\x03" + sstr(b"|")
    out += b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89T" + struct.pack("<I", len(raw))
    out += raw + b"tb"
    out += sstr(b"labels") + b"]q\x07(" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
    out += sstr(b"batch_label") + sstr(b"training batch 1 of 5")
    out += sstr(b"filenames") + b"]q\x08(" + sstr(b"a_001.png") + sstr(b"b_002.png") + b"e"
    out += b"u."
    return bytes(out)


def py3_pickle(data: np.ndarray, labels, protocol: int, str_keys: bool = False) -> bytes:
    key = (lambda k: k) if str_keys else (lambda k: k.encode())
    batch = {
        key("batch_label"): b"training batch",
        key("labels"): labels if isinstance(labels, np.ndarray) else list(labels),
        key("data"): data,
        key("filenames"): [b"x.png"] * len(labels),
    }
    return pickle.dumps(batch, protocol=protocol)


def bin_batch(data: np.ndarray, labels) -> bytes:
    return b"".join(bytes([label]) + row.tobytes() for row, label in zip(data, labels))


def write_folder(folder: Path, batches, fmt="py2", protocol=2, skip=()):
    folder.mkdir(parents=True, exist_ok=True)
    for name, (data, labels) in batches.items():
        if name in skip:
            continue
        if fmt == "bin":
            (folder / f"{name}.bin").write_bytes(bin_batch(data, labels))
        elif fmt == "py2":
            (folder / name).write_bytes(py2_pickle(data, labels))
        else:
            (folder / name).write_bytes(py3_pickle(data, labels, protocol))
    (folder / ("batches.meta.txt" if fmt == "bin" else "batches.meta")).write_bytes(b"meta")
    return folder


def write_archive(path: Path, batches, fmt="py2", skip=()):
    top = "cifar-10-batches-bin" if fmt == "bin" else "cifar-10-batches-py"
    with tarfile.open(path, "w:gz") as tar:

        def add(name, payload):
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))

        add("readme.html", b"<html></html>")
        for name, (data, labels) in batches.items():
            if name in skip:
                continue
            if fmt == "bin":
                add(f"{name}.bin", bin_batch(data, labels))
            else:
                add(name, py2_pickle(data, labels))
    return path


# --- the writers themselves are sound ---------------------------------------------------


def test_handcrafted_python2_pickle_is_what_pickle_reads():
    data, labels = make_batches()["data_batch_1"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy.core is deprecated in numpy 2
        batch = pickle.loads(py2_pickle(data, labels), encoding="bytes")
    np.testing.assert_array_equal(batch[b"data"], data)
    assert batch[b"labels"] == labels


# --- formats and layouts ----------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt, protocol", [("py2", 2), ("py3", 2), ("py3", 3), ("py3", 4), ("py3", 5), ("bin", 0)]
)
def test_folder_formats(tmp_path, fmt, protocol):
    batches = make_batches()
    folder = write_folder(tmp_path / "b", batches, fmt, protocol)
    assert_dataset_equal(ds.load_cifar10(folder), expected(batches))


def test_str_keys_and_numpy_labels(tmp_path):
    batches = make_batches()
    for name, (data, labels) in batches.items():
        blob = py3_pickle(data, np.array(labels, dtype=np.int64), 4, str_keys=True)
        (tmp_path / name).write_bytes(blob)
    assert_dataset_equal(ds.load_cifar10(tmp_path), expected(batches))


@pytest.mark.parametrize(
    "layout",
    [
        "cifar-10-batches-py",
        "cifar-10-batches-py/cifar-10-batches-py",
        "cifar-10-batches-py-target/cifar-10-batches-py",
        "cifar-10-batches-py_extracted/cifar-10-batches-py",
    ],
)
def test_keras_and_torchvision_layouts(tmp_path, layout):
    batches = make_batches(seed=3)
    write_folder(tmp_path / layout, batches)
    assert_dataset_equal(ds.load_cifar10(tmp_path), expected(batches))
    kind, where = _core.locate_cifar10(tmp_path)
    assert kind == "pickle" and Path(where) == tmp_path / layout


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("cifar-10-python.tar.gz", "py2"),
        ("cifar-10-batches-py.tar.gz", "py2"),
        ("cifar-10-binary.tar.gz", "bin"),
    ],
)
def test_archives(tmp_path, name, fmt):
    batches = make_batches(seed=5)
    archive = write_archive(tmp_path / name, batches, fmt)
    want = expected(batches)
    assert_dataset_equal(ds.load_cifar10(archive), want)  # the archive itself
    assert_dataset_equal(ds.load_cifar10(tmp_path), want)  # a folder holding it
    assert _core.locate_cifar10(tmp_path)[0] == "archive"


def test_class_names():
    assert ds.CIFAR10_CLASSES == [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]


# --- the Keras cache and the download -----------------------------------------------------


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty home and Keras cache, so nothing of the real machine is seen."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    return tmp_path


def test_finds_keras_cache(home):
    batches = make_batches(seed=9)
    write_folder(home / "keras" / "datasets" / "cifar-10-batches-py", batches)
    assert_dataset_equal(ds.load_cifar10(download=False), expected(batches))


def test_finds_default_keras_folder(home, monkeypatch):
    monkeypatch.delenv("KERAS_HOME")
    batches = make_batches(seed=10)
    write_folder(home / "home" / ".keras" / "datasets" / "cifar-10-batches-py", batches)
    assert_dataset_equal(ds.load_cifar10(download=False), expected(batches))


def test_nothing_local_without_download_lists_places(home):
    with pytest.raises(FileNotFoundError) as err:
        ds.load_cifar10(download=False)
    assert str(home / "keras" / "datasets") in str(err.value)
    assert str(home / "home" / ".keras" / "datasets") in str(err.value)


def test_path_with_nothing_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no CIFAR-10"):
        ds.load_cifar10(tmp_path)
    with pytest.raises(FileNotFoundError):
        ds.load_cifar10(tmp_path / "missing")


def test_download_verifies_and_caches_atomically(home, monkeypatch):
    batches = make_batches(seed=11)
    archive = write_archive(home / "served.tar.gz", batches)
    monkeypatch.setattr(ds, "CIFAR10_URL", archive.as_uri())
    monkeypatch.setattr(ds, "CIFAR10_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    assert_dataset_equal(ds.load_cifar10(), expected(batches))
    cache = home / "keras" / "datasets"
    assert sorted(p.name for p in cache.iterdir()) == ["cifar-10-python.tar.gz"]
    assert (cache / "cifar-10-python.tar.gz").read_bytes() == archive.read_bytes()
    # Next time the cache is used, not the URL.
    monkeypatch.setattr(ds, "CIFAR10_URL", (home / "gone.tar.gz").as_uri())
    assert_dataset_equal(ds.load_cifar10(), expected(batches))


def test_download_with_wrong_md5_caches_nothing(home, monkeypatch):
    archive = write_archive(home / "served.tar.gz", make_batches())
    monkeypatch.setattr(ds, "CIFAR10_URL", archive.as_uri())
    monkeypatch.setattr(ds, "CIFAR10_MD5", "0" * 32)
    with pytest.raises(_core.DataFormatError, match="MD5"):
        ds.load_cifar10()
    assert list((home / "keras" / "datasets").iterdir()) == []


def test_download_failure_caches_nothing(home, monkeypatch):
    monkeypatch.setattr(ds, "CIFAR10_URL", (home / "nowhere.tar.gz").as_uri())
    with pytest.raises(OSError):
        ds.load_cifar10()
    assert list((home / "keras" / "datasets").iterdir()) == []


def test_download_cut_off_midway_leaves_nothing(home, monkeypatch):
    """The archive is streamed into the package's atomic writer: a connection that
    dies after some bytes leaves neither a partial archive nor a temporary file."""
    import urllib.request

    class Dying(io.BytesIO):
        def read(self, size=-1):
            if self.tell() > 0:
                raise ConnectionResetError("connection reset by peer")
            return super().read(1000)

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Dying(b"x" * 5000))
    with pytest.raises(ConnectionResetError):
        ds.load_cifar10()
    assert list((home / "keras" / "datasets").iterdir()) == []


# --- corrupt, truncated and hostile files -------------------------------------------------


def test_pickle_that_runs_code_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    batches = make_batches()
    folder = write_folder(tmp_path / "b", batches)
    (folder / "data_batch_2").write_bytes(
        pickle.dumps({b"data": Evil(), b"labels": [0]}, protocol=2)
    )
    with pytest.raises(_core.DataFormatError, match=r"data_batch_2.*system"):
        ds.load_cifar10(folder)
    assert not marker.exists()
    # The same payload at protocol 4 (STACK_GLOBAL) and as a dict value deep inside.
    (folder / "data_batch_2").write_bytes(pickle.dumps([{"x": Evil()}], protocol=4))
    with pytest.raises(_core.DataFormatError, match="system"):
        ds.load_cifar10(folder)
    assert not marker.exists()


def test_unsupported_opcode_is_named(tmp_path):
    batches = make_batches()
    folder = write_folder(tmp_path / "b", batches)
    (folder / "test_batch").write_bytes(pickle.dumps({"data": 1}, protocol=0))
    with pytest.raises(_core.DataFormatError, match=r"test_batch.*opcode"):
        ds.load_cifar10(folder)


def test_other_global_is_refused(tmp_path):
    batches = make_batches()
    folder = write_folder(tmp_path / "b", batches)
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": {1, 2}}, protocol=2))
    with pytest.raises(_core.DataFormatError, match="refusing pickle global"):
        ds.load_cifar10(folder)


def test_truncated_pickle(tmp_path):
    batches = make_batches()
    folder = write_folder(tmp_path / "b", batches)
    blob = (folder / "data_batch_4").read_bytes()
    for cut in (len(blob) // 2, len(blob) - 1, 3):
        (folder / "data_batch_4").write_bytes(blob[:cut])
        with pytest.raises(_core.DataFormatError, match=r"data_batch_4.*(truncated|STOP)"):
            ds.load_cifar10(folder)


def test_wrong_length_data_and_labels(tmp_path):
    batches = make_batches()
    folder = write_folder(tmp_path / "b", batches)
    data, labels = batches["data_batch_3"]
    (folder / "data_batch_3").write_bytes(py2_pickle(data, labels, claimed_rows=len(labels) + 1))
    with pytest.raises(_core.DataFormatError, match=r"data_batch_3.*needs \d+ bytes"):
        ds.load_cifar10(folder)
    (folder / "data_batch_3").write_bytes(py2_pickle(data, labels[:-1]))
    with pytest.raises(_core.DataFormatError, match="labels"):
        ds.load_cifar10(folder)
    (folder / "data_batch_3").write_bytes(py3_pickle(data[:, :100], labels, 4))
    with pytest.raises(_core.DataFormatError, match="3072"):
        ds.load_cifar10(folder)
    (folder / "data_batch_3").write_bytes(py3_pickle(data.astype(np.int16), labels, 4))
    with pytest.raises(_core.DataFormatError, match="uint8"):
        ds.load_cifar10(folder)
    (folder / "data_batch_3").write_bytes(py2_pickle(data, [10] * len(labels)))
    with pytest.raises(_core.DataFormatError, match="label 10"):
        ds.load_cifar10(folder)


def test_missing_test_batch(tmp_path):
    batches = make_batches()
    folder = write_folder(tmp_path / "b", batches, skip={"test_batch"})
    with pytest.raises(FileNotFoundError, match="test_batch"):
        ds.load_cifar10(folder)
    archive = write_archive(tmp_path / "a.tar.gz", batches, skip={"test_batch"})
    with pytest.raises(_core.DataFormatError, match="lacks.*test_batch"):
        ds.load_cifar10(archive)


def test_truncated_bin(tmp_path):
    batches = make_batches()
    folder = write_folder(tmp_path / "b", batches, "bin")
    blob = (folder / "data_batch_5.bin").read_bytes()
    (folder / "data_batch_5.bin").write_bytes(blob[:-10])
    with pytest.raises(_core.DataFormatError, match=r"data_batch_5\.bin.*3073"):
        ds.load_cifar10(folder)


def test_corrupt_and_truncated_gzip(tmp_path):
    archive = write_archive(tmp_path / "cifar-10-python.tar.gz", make_batches())
    blob = archive.read_bytes()
    archive.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(_core.DataFormatError, match=r"cifar-10-python\.tar\.gz.*corrupt"):
        ds.load_cifar10(archive)
    archive.write_bytes(blob[:20] + bytes(255 - b for b in blob[20:]))
    with pytest.raises(_core.DataFormatError, match="corrupt"):
        ds.load_cifar10(archive)


# --- digits ---------------------------------------------------------------------------------


def test_digits_match_sklearn_and_split_is_complete():
    from sklearn.datasets import load_digits as sk_load_digits

    (xtr, ytr), (xte, yte) = ds.load_digits()
    assert xtr.dtype == np.uint8 and ytr.dtype == np.uint8
    assert xtr.shape[1:] == (8, 8, 1) and ytr.shape[1:] == (1,)
    assert len(xtr) + len(xte) == 1797
    assert abs(len(xte) - 0.2 * 1797) <= 10
    sk = sk_load_digits()
    ours = np.concatenate([xtr, xte]).reshape(-1, 64).astype(np.int64)
    ours = np.column_stack([ours, np.concatenate([ytr, yte])[:, 0]])
    # scikit-learn's 0..16 scaled exactly to 0..255: round(v * 255 / 16).
    scaled = np.array([round(v * 255 / 16) for v in range(17)])
    assert scaled[[0, 8, 16]].tolist() == [0, 128, 255]
    theirs = np.column_stack([scaled[sk.images.reshape(-1, 64).astype(np.int64)], sk.target])
    # Same multiset of (image, label) rows: the split is disjoint and complete.
    np.testing.assert_array_equal(ours[np.lexsort(ours.T)], theirs[np.lexsort(theirs.T)])
    # Each class is held out in proportion.
    for c in range(10):
        share = np.sum(yte == c) / (np.sum(yte == c) + np.sum(ytr == c))
        assert abs(share - 0.2) < 0.02
    assert ds.DIGITS_CLASSES == [str(i) for i in range(10)]
    assert xtr.max() == 255 and xtr.min() == 0  # real 0..255 pixels, not 0..16


def test_a_digit_saved_as_png_is_visible(tmp_path):
    """A digit written to PNG shows white strokes on black, not an almost black square."""
    import cnnrs

    pytest.importorskip("matplotlib")
    from matplotlib.image import imsave

    (x, _), _ = ds.load_digits()
    path = tmp_path / "digit.png"
    imsave(path, np.repeat(x[0], 3, axis=2))
    back = cnnrs.load_image(path)
    np.testing.assert_array_equal(back, x[0, :, :, 0])
    assert back.max() >= 200


def test_digits_split_is_deterministic():
    a = ds.load_digits(seed=1)
    b = ds.load_digits(seed=1)
    c = ds.load_digits(seed=2)
    for (x1, y1), (x2, y2) in zip(a, b):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(a[1][0], c[1][0])
    (xtr, _), (xte, _) = ds.load_digits(test_size=0.5)
    assert abs(len(xte) - len(xtr)) <= 10
    with pytest.raises(ValueError, match="test_size"):
        ds.load_digits(test_size=1.0)
