"""Hostile files and absurd arguments: each is refused with a Python exception
that names what is wrong, never a crash, a hang, an abort or a PanicException.

The inputs that used to crash the process (a stack overflow on a deeply nested
pickle, an abort when a gzip bomb or ``/dev/zero`` exhausted memory) run in a
child process with its address space capped (``RLIMIT_AS``: what the child
holds after ``import cnnrs`` plus 2 GiB) and a timeout, so a regression shows
as a failed test rather than a dead pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cnnrs
from cnnrs import _core

CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]

CHILD_PRELUDE = """
import resource
import numpy as np
import cnnrs
from cnnrs import _core

with open("/proc/self/status") as f:
    vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize"))
cap = vm + (2 << 30)
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

def expect(exc, fragment, call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except exc as e:
        assert fragment in str(e), f"{fragment!r} not in {e!r}"
        print("refused:", type(e).__name__, str(e)[:200])
        return
    raise AssertionError(f"{call} did not raise {exc.__name__}")
"""


def run_isolated(body: str, timeout: float = 60) -> str:
    """Runs ``body`` after CHILD_PRELUDE in a memory-capped child; returns its stdout."""
    package_root = str(Path(cnnrs.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([package_root, *sys.path]))
    proc = subprocess.run(
        [sys.executable, "-c", CHILD_PRELUDE + textwrap.dedent(body) + "\nprint('CHILD-OK')"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    assert proc.returncode == 0 and "CHILD-OK" in proc.stdout, (
        f"child exited with {proc.returncode}\nstdout:\n{proc.stdout}\n"
        f"stderr:\n{proc.stderr[-3000:]}"
    )
    return proc.stdout


# --- hostile files ---------------------------------------------------------


def nested_tuples(depth: int) -> bytes:
    """A protocol-2 pickle of ``depth`` nested 1-tuples around 0 (TUPLE1 opcodes)."""
    return b"\x80\x02K\x00" + b"\x85" * depth + b"."


def nested_lists(depth: int) -> bytes:
    """``depth`` nested lists: EMPTY_LIST ``depth + 1`` times, then APPEND ``depth`` times."""
    return b"\x80\x02" + b"]" * (depth + 1) + b"a" * depth + b"."


@pytest.mark.parametrize("make", [nested_tuples, nested_lists])
def test_deeply_nested_pickle_is_a_data_format_error(tmp_path, make):
    for name in CIFAR_BATCHES:
        (tmp_path / name).write_bytes(make(100_000))
    out = run_isolated(
        f"""
        expect(cnnrs.DataFormatError, "tuples, lists and dicts",
               _core.read_cifar10, {str(tmp_path)!r})
        """
    )
    assert "refused: DataFormatError" in out


def test_self_referencing_pickle_is_a_data_format_error(tmp_path):
    # {"data": <list that holds itself>, "labels": <the same list>}: the
    # reader must not follow the cycle (printing it would never end).
    batch = b"\x80\x02}q\x00(X\x04\x00\x00\x00data]q\x01h\x01aX\x06\x00\x00\x00labelsh\x01u."
    for name in CIFAR_BATCHES:
        (tmp_path / name).write_bytes(batch)
    with pytest.raises(cnnrs.DataFormatError, match="not a numpy array"):
        _core.read_cifar10(tmp_path)


def gzip_bomb_tar(path: Path, member: str, size: int) -> None:
    """A .tar.gz whose member ``member`` holds ``size`` zero bytes, written in a
    few MB: the deflate blocks of a fully flushed 16 MiB of zeros are identical,
    so one is compressed and repeated. The gzip trailer is left out (the reader
    must refuse the member long before it gets there)."""
    info = tarfile.TarInfo(member)
    info.size = size
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    chunk = 16 << 20
    comp = zlib.compressobj(1, zlib.DEFLATED, -15)
    head = comp.compress(header) + comp.flush(zlib.Z_FULL_FLUSH)
    zeros = b"\0" * chunk
    block = comp.compress(zeros) + comp.flush(zlib.Z_FULL_FLUSH)
    again = comp.compress(zeros) + comp.flush(zlib.Z_FULL_FLUSH)
    assert block == again, "flushed deflate blocks of equal input must repeat"
    with path.open("wb") as f:
        f.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")  # gzip header, no name
        f.write(head)
        for _ in range(size // chunk):
            f.write(block)


def test_gzip_bomb_member_is_refused_while_streaming(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    gzip_bomb_tar(archive, "cifar-10-batches-py/data_batch_1", 6 << 30)
    assert archive.stat().st_size < 32 << 20
    out = run_isolated(
        f"""
        expect(cnnrs.DataFormatError, "larger than any CIFAR-10 batch",
               _core.read_cifar10, {str(archive)!r})
        """
    )
    assert "refused: DataFormatError" in out


def test_archive_expanding_beyond_cifar_is_refused(tmp_path):
    # Many members that are not batches, 600 MiB in all: skipped, but the
    # archive is bounded as a whole (the official one expands to 178 MB).
    archive = tmp_path / "cifar-10-python.tar.gz"
    gzip_bomb_tar(archive, "cifar-10-batches-py/padding.bin", 600 << 20)
    with pytest.raises(cnnrs.DataFormatError, match="expands to more than"):
        _core.read_cifar10(archive)


def test_small_valid_archive_still_reads(tmp_path):
    import pickle
    import tarfile as tf

    archive = tmp_path / "cifar-10-python.tar.gz"
    rng = np.random.default_rng(0)
    with tf.open(archive, "w:gz") as t:
        for name in CIFAR_BATCHES:
            batch = {
                "data": rng.integers(0, 256, (3, 3072), dtype=np.uint8),
                "labels": [1, 2, 3],
            }
            raw = pickle.dumps(batch, protocol=2)
            info = tf.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            import io

            t.addfile(info, io.BytesIO(raw))
    (x_train, y_train), (x_test, _) = _core.read_cifar10(archive)
    assert x_train.shape == (15, 32, 32, 3) and x_test.shape == (3, 32, 32, 3)
    assert y_train[:3, 0].tolist() == [1, 2, 3]


def test_oversized_batch_file_is_refused(tmp_path):
    # A binary batch of more images than CIFAR-10 batches hold.
    record = bytes(3073)
    for name in CIFAR_BATCHES:
        (tmp_path / f"{name}.bin").write_bytes(record * 2)
    (tmp_path / "data_batch_1.bin").write_bytes(record * 10_001)
    with pytest.raises(cnnrs.DataFormatError, match="at most 10000"):
        _core.read_cifar10(tmp_path)


def test_load_image_of_dev_zero_is_a_data_format_error():
    out = run_isolated(
        'expect(cnnrs.DataFormatError, "not a regular file", cnnrs.load_image, "/dev/zero")'
    )
    assert "refused: DataFormatError" in out


def test_image_with_huge_declared_dimensions_is_refused(tmp_path):
    # A GIF header declaring 65535 × 65535 pixels (4 GiB of RGBA) and no data.
    path = tmp_path / "huge.gif"
    path.write_bytes(b"GIF89a\xff\xff\xff\xff\x00\x00\x00" + b"\x2c" + bytes(8) + b"\x00\x02\x00;")
    with pytest.raises(cnnrs.DataFormatError):
        cnnrs.load_image(path)


def test_resize_to_an_absurd_size_is_refused_before_allocating(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)
    out = run_isolated(
        f"""
        expect(ValueError, "size must be", cnnrs.load_image, {str(path)!r}, size=(100000, 100000))
        expect(ValueError, "size", cnnrs.load_image, {str(path)!r}, size=(2**40, 1))
        """
    )
    assert out.count("refused: ValueError") == 2


# --- absurd arguments ------------------------------------------------------


def test_confusion_matrix_sizes_are_bounded():
    out = run_isolated(
        """
        y = np.array([0, 1])
        for k in (30000, 10**10, 2**64):
            expect(ValueError, "num_classes", _core.confusion_matrix, y, y, num_classes=k)
            expect(ValueError, "num_classes", cnnrs.metrics.confusion_matrix, y, y, num_classes=k)
        expect(ValueError, "y_pred", cnnrs.metrics.confusion_matrix, [0], [10**9])
        expect(ValueError, "y_true", cnnrs.metrics.classification_report, [10**9], [0])
        """
    )
    assert out.count("refused: ValueError") == 8


def test_huge_padding_is_refused_before_allocating():
    out = run_isolated(
        """
        img = np.zeros((4, 4), np.float32)
        expect(ValueError, "d makes a result", cnnrs.create_padding, img, 40000)
        expect(ValueError, "padding", cnnrs.convolution, img, np.ones((3, 3)), padding=40000)
        """
    )
    assert out.count("refused: ValueError") == 2


def test_kfold_sizes_are_bounded():
    out = run_isolated(
        """
        expect(ValueError, "n × k", _core.kfold_indices, 10**12, 2)
        expect(ValueError, "n × k", _core.stratified_kfold_indices, np.zeros(2**20, np.int8), 2**10)
        """
    )
    assert out.count("refused: ValueError") == 2


IMG = np.arange(25, dtype=np.float64).reshape(5, 5)
K = np.ones((3, 3))


@pytest.fixture(scope="module")
def png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "x.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)
    return path


BAD_ARGUMENTS = [
    # (call, exception, the argument the message must name)
    (lambda png: cnnrs.convolution(IMG, K, stride=1.5), TypeError, "stride"),
    (lambda png: cnnrs.convolution(IMG, K, stride=None), TypeError, "stride"),
    (lambda png: cnnrs.convolution(IMG, K, stride=-1), ValueError, "stride"),
    (lambda png: cnnrs.convolution(IMG, K, stride=2**70), ValueError, "stride"),
    (lambda png: cnnrs.convolution(IMG, K, stride=True), TypeError, "stride"),
    (lambda png: cnnrs.convolution(IMG, K, padding=None), TypeError, "padding"),
    (lambda png: cnnrs.convolution(IMG, K, padding=-(2**70)), ValueError, "padding"),
    (lambda png: cnnrs.convolution(IMG, K, padding="full"), ValueError, "padding"),
    (lambda png: cnnrs.convolution(None, K), TypeError, "image"),
    (lambda png: cnnrs.convolution(IMG, "abc"), TypeError, "kernel"),
    (lambda png: cnnrs.convolution([[1, 2], [3]], K), ValueError, "image"),
    (lambda png: cnnrs.convolution(IMG, np.ones((3, 3), bool)), TypeError, "kernel"),
    (lambda png: cnnrs.pooling(IMG, 2, None), TypeError, "pooling_type"),
    (lambda png: cnnrs.pooling(IMG, 2, 3), TypeError, "pooling_type"),
    (lambda png: cnnrs.pooling(IMG, 2, "median"), ValueError, "pooling_type"),
    (lambda png: cnnrs.pooling(IMG, None), TypeError, "p"),
    (lambda png: cnnrs.pooling(IMG, -1), ValueError, "p must"),
    (lambda png: cnnrs.pooling(IMG, 2**64), ValueError, "p must"),
    (lambda png: cnnrs.pooling(IMG, 2, stride=0.5), TypeError, "stride"),
    (lambda png: cnnrs.pooling(IMG, 2, stride=-3), ValueError, "stride"),
    (lambda png: cnnrs.pooling("abc", 2), TypeError, "image"),
    (lambda png: cnnrs.create_padding(IMG, 1.5), TypeError, "d must"),
    (lambda png: cnnrs.create_padding(IMG, -1), ValueError, "d must"),
    (lambda png: cnnrs.create_padding(IMG, 2**64), ValueError, "d must"),
    (lambda png: cnnrs.create_padding(IMG, 1, None), TypeError, "mode"),
    (lambda png: cnnrs.create_padding(IMG, 1, "wrap"), ValueError, "mode"),
    (lambda png: cnnrs.create_padding(IMG, 1, "constant", "x"), TypeError, "value"),
    (lambda png: cnnrs.create_padding(IMG, 1, "constant", None), TypeError, "value"),
    (lambda png: cnnrs.create_padding(IMG.astype(np.uint8), 1, value=-1), ValueError, "value"),
    (lambda png: cnnrs.create_padding(IMG.astype(np.int64), 1, value=2**63), ValueError, "value"),
    (lambda png: cnnrs.create_padding(IMG.astype(np.int64), 1, value=2**200), ValueError, "value"),
    (lambda png: cnnrs.load_image(png, grayscale=1), TypeError, "grayscale"),
    (lambda png: cnnrs.load_image(png, grayscale=None), TypeError, "grayscale"),
    (lambda png: cnnrs.load_image(png, size=32), TypeError, "size"),
    (lambda png: cnnrs.load_image(png, size=(32, 1.5)), TypeError, "size"),
    (lambda png: cnnrs.load_image(png, size=(32, -1)), ValueError, "size"),
    (lambda png: cnnrs.load_image(42), TypeError, "path"),
    (lambda png: _core.kfold_indices(10, 2.0), TypeError, "k must"),
    (lambda png: _core.kfold_indices(-10, 2), ValueError, "n must"),
    (lambda png: _core.kfold_indices(10, 2, "yes"), TypeError, "shuffle"),
    (lambda png: _core.kfold_indices(10, 2, True, -1), ValueError, "seed"),
    (lambda png: _core.kfold_indices(10, 2, True, 2**32), ValueError, "seed"),
    (lambda png: _core.kfold_indices(10, 2, True, 1.5), TypeError, "seed"),
    (lambda png: _core.stratified_kfold_indices([0, 1] * 5, -2), ValueError, "k must"),
    (lambda png: _core.stratified_kfold_indices([0, 1] * 5, 2, seed=None), TypeError, "seed"),
    (lambda png: _core.stratified_kfold_indices([[0, 1], [2]], 2), ValueError, "labels"),
    (lambda png: _core.stratified_kfold_indices([1j, 2j], 2), TypeError, "labels"),
    (lambda png: _core.stratified_kfold_indices(np.zeros((4, 2)), 2), ValueError, "labels"),
    (lambda png: _core.read_cifar10(None), TypeError, "root"),
    (lambda png: _core.locate_cifar10(3), TypeError, "root"),
    (lambda png: _core.confusion_matrix([0], [0]), TypeError, "y_true"),
    (
        lambda png: _core.confusion_matrix(np.array([0]), np.array([0]), num_classes=-1),
        ValueError,
        "num_classes",
    ),
    (
        lambda png: _core.confusion_matrix(np.array([0]), np.array([0]), num_classes=2.5),
        TypeError,
        "num_classes",
    ),
    (
        lambda png: _core.classification_scores(np.array([0]), np.array([0]), num_classes="3"),
        TypeError,
        "num_classes",
    ),
    (lambda png: _core.precision_recall_f1(np.full((2, 2), 2**62)), ValueError, "sum to"),
]


def _full_message(e: BaseException) -> str:
    return " ".join([str(e), *getattr(e, "__notes__", [])])


@pytest.mark.parametrize(("call", "exc", "name"), BAD_ARGUMENTS)
def test_bad_argument_names_itself(png, call, exc, name):
    with pytest.raises(BaseException) as info:
        call(png)
    # Exactly the documented kind: never a PanicException or OverflowError.
    assert type(info.value) is exc, f"{type(info.value).__name__}: {info.value}"
    assert name in _full_message(info.value), _full_message(info.value)


def test_numpy_scalars_are_accepted_as_numbers(tmp_path):
    x = np.arange(64, dtype=np.float32).reshape(8, 8)
    k = np.ones((3, 3), np.float32)
    np.testing.assert_array_equal(
        cnnrs.convolution(x, k, np.int64(2), np.int32(1)), cnnrs.convolution(x, k, 2, 1)
    )
    np.testing.assert_array_equal(
        cnnrs.pooling(x, np.uint8(2), "avg_pooling", np.int16(2)),
        cnnrs.pooling(x, 2, "avg_pooling", 2),
    )
    np.testing.assert_array_equal(
        cnnrs.create_padding(x, np.int64(1), "constant", np.float32(0.5)),
        np.pad(x, 1, constant_values=0.5),
    )
    np.testing.assert_array_equal(
        cnnrs.create_padding(x.astype(np.int16), np.int64(1), value=np.int64(-7)),
        np.pad(x.astype(np.int16), 1, constant_values=-7),
    )
    folds = _core.kfold_indices(np.int64(10), np.int32(3), np.bool_(True), np.uint32(5))
    want = _core.kfold_indices(10, 3, True, 5)
    for (a, b), (c, d) in zip(folds, want):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    cm = _core.confusion_matrix(np.array([0, 2]), np.array([0, 1]), num_classes=np.int64(3))
    assert cm.shape == (3, 3)
    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(path)
    assert cnnrs.load_image(path, size=(np.int64(3), np.int32(2))).shape == (2, 3)


# --- numeric edge cases -----------------------------------------------------


def test_int64_padding_value_above_2_53_is_exact():
    x = np.zeros((2, 2), np.int64)
    v = 2**62 + 1
    out = cnnrs.create_padding(x, 1, value=v)
    np.testing.assert_array_equal(out, np.pad(x, 1, constant_values=v))
    assert int(out[0, 0]) == v
    u = np.zeros((2, 2), np.uint64)
    out = cnnrs.create_padding(u, 1, value=2**64 - 1)
    assert int(out[0, 0]) == 2**64 - 1
    out = cnnrs.create_padding(u, 1, value=np.uint64(2**63 + 3))
    assert int(out[0, 0]) == 2**63 + 3
    with pytest.raises(ValueError, match="value"):
        cnnrs.create_padding(u, 1, value=2**64)
    # a float just past int64 used to saturate to 2**63 - 1
    with pytest.raises(ValueError, match="value"):
        cnnrs.create_padding(x, 1, value=float(2**63))
    # floats still round as numpy does
    f = cnnrs.create_padding(np.zeros((1, 1), np.float32), 1, value=2**62 + 1)
    assert f[0, 0] == np.float32(2**62)


def exact_correlation(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Valid cross-correlation in Python ints (no overflow, no rounding)."""
    w = np.lib.stride_tricks.sliding_window_view(x.astype(object), k.shape)
    return (w * k.astype(object)).sum(axis=(-2, -1))


def test_uint64_convolution_is_exact_or_refused():
    x = np.array([[2**63 - 10, 5], [7, 2**62]], np.uint64)
    k = np.array([[1]], np.uint64)
    out = cnnrs.convolution(x, k)
    assert out.dtype == np.int64
    assert out.astype(object).tolist() == exact_correlation(x, k).tolist()

    big = np.array([[2**63, 1], [2, 3]], np.uint64)
    with pytest.raises(ValueError, match="2\\*\\*63"):
        cnnrs.convolution(big, k)
    with pytest.raises(ValueError, match="kernel"):
        cnnrs.convolution(np.ones((2, 2), np.int64), big)


def test_int64_convolution_never_wraps():
    x = np.full((4, 4), 2**61, np.int64)
    k = np.ones((2, 2), np.int64)
    with pytest.raises(ValueError, match="overflow"):
        cnnrs.convolution(x, k)  # 4 · 2**61 = 2**63 does not fit
    x = np.full((4, 4), 2**60 - 1, np.int64)
    x[1, 2] = -(2**60)
    k = np.array([[1, -1], [1, 1]], np.int64)
    out = cnnrs.convolution(x, k)
    assert out.astype(object).tolist() == exact_correlation(x, k).tolist()


# --- labels are encoded in Rust --------------------------------------------


@pytest.mark.parametrize(
    "labels",
    [
        np.array([3, 1, 3, 2, 1, 2, 3, 1], np.int8),
        np.array([0.5, -0.0, 0.5, 0.0, 2.0, 2, 0.5, -0.0]),
        np.array([np.nan, 1.0, np.nan, 1.0, 2.0, 2.0, np.nan, 1.0], np.float32),
        np.array(["cat", "dog", "cat", "bird", "dog", "bird", "cat", "dog"]),
        np.array([b"a", b"bb", b"a", b"bb", b"c", b"c", b"a", b"bb"]),
        np.array(["x", 1, "x", 1, 2.0, 2, "x", 1], dtype=object),
        [True, False, True, False, True, False, True, False],
        np.array([[1], [2], [1], [2], [1], [2], [3], [3]], np.uint64),
    ],
)
def test_stratified_folds_match_scikit_learn_for_any_label_kind(labels):
    skms = pytest.importorskip("sklearn.model_selection")
    y = np.asarray(labels)
    flat = y.ravel()
    if flat.dtype == object:
        # numpy cannot sort mixed objects; group them by value as Python does
        keys = [v if isinstance(v, str) else float(v) for v in flat]
        codes = np.array([keys.index(v) for v in keys])
    else:
        # what the binding used to compute with numpy.unique
        codes = np.unique(flat, return_inverse=True)[1].ravel()
    want = list(skms.StratifiedKFold(2, shuffle=True, random_state=7).split(codes, codes))
    got = _core.stratified_kfold_indices(labels, 2, True, 7)
    assert len(got) == len(want)
    for (tr, va), (wtr, wva) in zip(got, want):
        np.testing.assert_array_equal(tr, wtr)
        np.testing.assert_array_equal(va, wva)
