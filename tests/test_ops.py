"""create_padding, convolution and pooling against numpy/scipy/PyTorch references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.lib.stride_tricks import sliding_window_view

import cnnrs

# cnnrs's kernels against scipy/numpy at each level CNNRS_SIMD allows (make numerics-avx2).
pytestmark = pytest.mark.numerics

INT_DTYPES = [np.uint8, np.int8, np.uint16, np.int16, np.int32, np.uint32, np.int64]
FLOAT_DTYPES = [np.float32, np.float64]
ALL_DTYPES = INT_DTYPES + FLOAT_DTYPES
FAST = settings(max_examples=50, deadline=None)


# --- references (the course's numpy code, made general) -------------------


def ref_pad(x: np.ndarray, d: int, mode: str = "constant", value: float = 0) -> np.ndarray:
    widths = ((d, d), (d, d)) + ((0, 0),) * (x.ndim - 2)
    if mode == "constant":
        return np.pad(x, widths, mode=mode, constant_values=value)
    return np.pad(x, widths, mode=mode)


def same_pads(n: int, k: int, s: int) -> tuple[int, int]:
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def ref_conv(x: np.ndarray, k: np.ndarray, stride: int = 1, padding: int | str = 0) -> np.ndarray:
    """Cross-correlation by sliding_window_view + einsum on a zero-padded image."""
    bank = k.ndim == x.ndim + 1
    ks = k if bank else k[None]
    kh, kw = ks.shape[1:3]
    if padding == "same":
        (pt, pb), (pl, pr) = same_pads(x.shape[0], kh, stride), same_pads(x.shape[1], kw, stride)
    else:
        pt = pb = pl = pr = 0 if padding == "valid" else int(padding)
    both_int = x.dtype.kind in "iu" and k.dtype.kind in "iu"
    dtype = np.int64 if both_int else np.result_type(x.dtype, k.dtype)
    xp = np.pad(x.astype(dtype), ((pt, pb), (pl, pr)) + ((0, 0),) * (x.ndim - 2))
    win = sliding_window_view(xp, (kh, kw), axis=(0, 1))[::stride, ::stride]
    if x.ndim == 2:
        out = np.einsum("ijab,nab->nij", win, ks.astype(dtype))
    else:
        out = np.einsum("ijcab,nabc->nij", win, ks.astype(dtype))
    return out if bank else out[0]


def ref_pool(x: np.ndarray, p: int, kind: str, stride: int = 1) -> np.ndarray:
    win = sliding_window_view(x, (p, p), axis=(0, 1))[::stride, ::stride]
    return win.max(axis=(-2, -1)) if kind.startswith("max") else win.mean(axis=(-2, -1))


def assert_close(got: np.ndarray, want: np.ndarray, scale: float = 1.0) -> None:
    assert got.shape == want.shape
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    if want.dtype.kind in "iu":
        np.testing.assert_array_equal(got, want)
    else:
        eps = np.finfo(want.dtype).eps
        np.testing.assert_allclose(got, want, rtol=64 * eps, atol=64 * eps * scale, equal_nan=True)


def values(dtype: type) -> st.SearchStrategy:
    if np.dtype(dtype).kind == "f":
        return st.floats(-100, 100, width=np.dtype(dtype).itemsize * 8)
    info = np.iinfo(dtype)
    return st.integers(max(info.min, -100), min(info.max, 100))


@st.composite
def images(draw, max_side: int = 16, channels: bool | None = None) -> np.ndarray:
    dtype = draw(st.sampled_from(ALL_DTYPES))
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    with_c = draw(st.booleans()) if channels is None else channels
    shape = (h, w, draw(st.integers(1, 3))) if with_c else (h, w)
    return draw(hnp.arrays(dtype, shape, elements=values(dtype)))


# --- the course's worked examples -----------------------------------------


def test_course_convolution_example():
    image = np.array([[1, 2, 0], [4, 5, 6], [7, 8, 9]])
    kernel = np.array([[1, 0], [0, -1]])
    out = cnnrs.convolution(image, kernel)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [[-4, -4], [-4, -4]])


def test_course_pooling_example():
    image = np.arange(1, 17).reshape(4, 4)
    np.testing.assert_array_equal(cnnrs.pooling(image, 2), [[6, 7, 8], [10, 11, 12], [14, 15, 16]])
    avg = cnnrs.pooling(image, 2, "avg_pooling")
    assert avg.dtype == np.float64
    np.testing.assert_array_equal(avg, [[3.5, 4.5, 5.5], [7.5, 8.5, 9.5], [11.5, 12.5, 13.5]])
    np.testing.assert_array_equal(cnnrs.pooling(image, 2, "max"), cnnrs.pooling(image, 2))
    np.testing.assert_array_equal(cnnrs.pooling(image, 2, "avg"), avg)


def test_course_padding_positional():
    lena = np.arange(9, dtype=np.uint8).reshape(3, 3)
    out = cnnrs.create_padding(lena, 1)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.pad(lena, 1))
    np.testing.assert_array_equal(cnnrs.create_padding(lena, d=1), out)


# --- padding ---------------------------------------------------------------


@FAST
@given(images(), st.integers(0, 20), st.sampled_from(["constant", "reflect", "edge"]))
def test_padding_matches_numpy_pad(x, d, mode):
    out = cnnrs.create_padding(x, d, mode)
    want = ref_pad(x, d, mode)
    assert out.dtype == x.dtype
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_padding_constant_value(dtype):
    x = np.ones((2, 3, 2), dtype=dtype)
    out = cnnrs.create_padding(x, 2, "constant", 7)
    np.testing.assert_array_equal(out, ref_pad(x, 2, "constant", 7))
    assert out.dtype == dtype


def test_padding_value_must_fit_the_dtype():
    with pytest.raises(ValueError, match="value must be an integer in \\[0, 255\\]"):
        cnnrs.create_padding(np.zeros((2, 2), np.uint8), 1, value=300)
    with pytest.raises(ValueError, match="value"):
        cnnrs.create_padding(np.zeros((2, 2), np.int16), 1, value=0.5)
    out = cnnrs.create_padding(np.zeros((2, 2), np.float32), 1, value=np.nan)
    assert np.isnan(out[0, 0])


# --- convolution -----------------------------------------------------------


@st.composite
def conv_cases(draw):
    x = draw(images())
    c = x.shape[2] if x.ndim == 3 else None
    kdtype = draw(st.sampled_from([x.dtype.type, *ALL_DTYPES]))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    bank = draw(st.booleans())
    shape = (kh, kw) + ((c,) if c else ())
    if bank:
        shape = (draw(st.integers(1, 3)), *shape)
    k = draw(hnp.arrays(kdtype, shape, elements=values(kdtype)))
    stride = draw(st.integers(1, 3))
    padding = draw(st.one_of(st.integers(0, 3), st.sampled_from(["valid", "same"])))
    return x, k, stride, padding


def fits(x: np.ndarray, k: np.ndarray, stride: int, padding: int | str) -> bool:
    kh, kw = k.shape[-3:-1] if x.ndim == 3 else k.shape[-2:]
    if padding == "same":
        return True
    p = 0 if padding == "valid" else padding
    return kh <= x.shape[0] + 2 * p and kw <= x.shape[1] + 2 * p


@FAST
@given(conv_cases())
def test_convolution_matches_einsum(case):
    x, k, stride, padding = case
    if not fits(x, k, stride, padding):
        with pytest.raises(ValueError, match="larger than the padded image"):
            cnnrs.convolution(x, k, stride, padding)
        return
    got = cnnrs.convolution(x, k, stride=stride, padding=padding)
    want = ref_conv(x, k, stride, padding)
    scale = float(np.abs(x).astype(np.float64).max() * np.abs(k).astype(np.float64).sum())
    assert_close(got, want, scale)


@FAST
@given(images(max_side=40, channels=False), st.sampled_from([0, 1, "same"]))
def test_convolution_3x3_fast_path_float32(x, padding):
    """The fused 3×3 / SIMD path on images wide enough to use full vectors."""
    x = x.astype(np.float32)
    k = np.arange(-4, 5, dtype=np.float32).reshape(3, 3) / 3
    if not fits(x, k, 1, padding):
        return
    got = cnnrs.convolution(x, k, padding=padding)
    assert_close(got, ref_conv(x, k, 1, padding), float(np.abs(x).max()) * 7)


def test_convolution_same_keeps_size_and_pads_bottom_right_for_even_kernels():
    x = np.arange(30, dtype=np.int64).reshape(5, 6)
    k = np.ones((2, 2), np.int64)
    out = cnnrs.convolution(x, k, padding="same")
    assert out.shape == (5, 6)
    assert out[0, 0] == x[0, 0] + x[0, 1] + x[1, 0] + x[1, 1]
    assert out[4, 5] == x[4, 5]
    assert cnnrs.convolution(x, np.ones((3, 3)), stride=2, padding="same").shape == (3, 3)


@pytest.mark.parametrize(
    ("a", "b", "want"),
    [
        (np.uint8, np.int16, np.int64),
        (np.int32, np.uint64, np.int64),
        (np.uint8, np.float32, np.float32),
        (np.int16, np.float32, np.float32),
        (np.int32, np.float32, np.float64),
        (np.float32, np.float64, np.float64),
        (np.float32, np.float32, np.float32),
        (np.int64, np.float64, np.float64),
    ],
)
def test_convolution_dtype_promotion(a, b, want):
    x = np.arange(16).reshape(4, 4).astype(a)
    k = np.ones((3, 3), dtype=b)
    out = cnnrs.convolution(x, k)
    assert out.dtype == want
    np.testing.assert_allclose(out, ref_conv(x.astype(np.int64), k.astype(np.int64)))


def test_convolution_bank_with_channels_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(23, 19, 3))
    k = rng.normal(size=(4, 3, 5, 3))
    for stride, padding in [(1, 0), (2, 1), (3, 2)]:
        got = cnnrs.convolution(x, k, stride=stride, padding=padding)
        want = torch.nn.functional.conv2d(
            torch.from_numpy(x.transpose(2, 0, 1))[None],
            torch.from_numpy(k.transpose(0, 3, 1, 2)),
            stride=stride,
            padding=padding,
        )[0].numpy()
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_convolution_float32_large_image_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 301)).astype(np.float32)
    k = rng.normal(size=(3, 3)).astype(np.float32)
    got = cnnrs.convolution(x, k, padding=1)
    want = torch.nn.functional.conv2d(
        torch.from_numpy(x)[None, None], torch.from_numpy(k)[None, None], padding=1
    )
    np.testing.assert_allclose(got, want[0, 0].numpy(), rtol=1e-5, atol=1e-5)


def test_convolution_matches_scipy_correlate2d():
    signal = pytest.importorskip("scipy.signal")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 33))
    k = rng.normal(size=(3, 5))
    np.testing.assert_allclose(
        cnnrs.convolution(x, k), signal.correlate2d(x, k, mode="valid"), rtol=1e-12, atol=1e-12
    )


def test_convolution_nan_and_inf_propagate_like_numpy():
    x = np.ones((6, 7))
    x[2, 3] = np.nan
    x[4, 0] = np.inf
    k = np.arange(9.0).reshape(3, 3) - 4
    for padding in (0, 1, "same"):
        assert_close(cnnrs.convolution(x, k, padding=padding), ref_conv(x, k, 1, padding))


# --- pooling ---------------------------------------------------------------


@FAST
@given(
    images(),
    st.integers(1, 5),
    st.sampled_from(["max_pooling", "avg_pooling", "max", "avg"]),
    st.integers(1, 3),
)
def test_pooling_matches_sliding_window_view(x, p, kind, stride):
    if p > min(x.shape[:2]):
        with pytest.raises(ValueError, match="p must be between 1 and"):
            cnnrs.pooling(x, p, kind, stride)
        return
    got = cnnrs.pooling(x, p, kind, stride)
    want = ref_pool(x, p, kind, stride)
    if kind.startswith("max"):
        assert got.dtype == x.dtype
        np.testing.assert_array_equal(got, want)
    else:
        assert_close(got, want, float(np.abs(x).max()))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_pooling_nan_propagates_like_numpy_max(dtype):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(9, 40)).astype(dtype)
    x[3, 7] = np.nan
    x[8, 39] = np.nan
    x[0, 20] = np.inf
    for p, stride in [(2, 1), (3, 1), (2, 2)]:
        got = cnnrs.pooling(x, p, "max", stride)
        np.testing.assert_array_equal(got, ref_pool(x, p, "max", stride))
        assert_close(cnnrs.pooling(x, p, "avg", stride), ref_pool(x, p, "avg", stride), 4)


def test_pooling_keeps_channels_apart():
    x = np.stack([np.arange(16).reshape(4, 4), -np.arange(16).reshape(4, 4)], axis=-1)
    out = cnnrs.pooling(x, 2)
    assert out.shape == (3, 3, 2)
    np.testing.assert_array_equal(out[..., 0], cnnrs.pooling(x[..., 0], 2))
    np.testing.assert_array_equal(out[..., 1], cnnrs.pooling(x[..., 1], 2))


# --- odd memory layouts ------------------------------------------------------


def layouts(x: np.ndarray) -> list[np.ndarray]:
    big = x.astype(x.dtype.newbyteorder(">"))
    return [
        x[::-1, ::-1],
        x[::2, 1::3],
        np.asfortranarray(x),
        big,
        x.T,
        x.tolist(),  # array_like
    ]


@pytest.mark.parametrize("i", range(6))
def test_any_memory_layout_works(i):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(20, 24))
    k = rng.normal(size=(3, 3))
    view = layouts(x)[i]
    ref = np.asarray(view, dtype=np.float64)
    assert_close(cnnrs.convolution(view, k, padding="same"), ref_conv(ref, k, 1, "same"), 30)
    np.testing.assert_array_equal(cnnrs.pooling(view, 2), ref_pool(ref, 2, "max"))
    np.testing.assert_array_equal(
        cnnrs.create_padding(view, 2, "reflect"), ref_pad(ref, 2, "reflect")
    )
    for kview in layouts(k):
        assert_close(
            cnnrs.convolution(ref, kview), ref_conv(ref, np.asarray(kview, np.float64)), 30
        )


def test_big_endian_integers_keep_their_values():
    x = np.arange(12, dtype=">i2").reshape(3, 4)
    out = cnnrs.create_padding(x, 1)
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, np.pad(x.astype(np.int16), 1))


def test_inputs_are_not_modified():
    x = np.arange(25.0).reshape(5, 5)
    k = np.ones((3, 3))
    before = x.copy()
    cnnrs.convolution(x, k, padding="same")
    cnnrs.pooling(x, 2)
    cnnrs.create_padding(x, 1)
    np.testing.assert_array_equal(x, before)


# --- bad input -------------------------------------------------------------

IMG = np.zeros((5, 5))


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (
            lambda: cnnrs.convolution(np.zeros(5), np.ones((1, 1))),
            ValueError,
            r"image must be 2-D \(H, W\) or 3-D \(H, W, C\), got shape \(5,\)",
        ),
        (
            lambda: cnnrs.convolution(np.zeros((2, 2, 2, 2)), np.ones((1, 1))),
            ValueError,
            "image must be 2-D",
        ),
        (
            lambda: cnnrs.convolution(IMG, np.ones((1, 3, 3, 1))),
            ValueError,
            r"kernel must be 2-D \(kh, kw\) or a 3-D bank \(n, kh, kw\) "
            r"for a 2-D image of shape \(5, 5\), got shape \(1, 3, 3, 1\)",
        ),
        (
            lambda: cnnrs.convolution(np.zeros((5, 5, 3)), np.ones((3, 3))),
            ValueError,
            r"kernel must be 3-D \(kh, kw, C\) or a 4-D bank",
        ),
        (
            lambda: cnnrs.convolution(np.zeros((5, 5, 3)), np.ones((3, 3, 2))),
            ValueError,
            r"kernel has 2 channels .*\(1, 3, 3, 2\).* but the image has 3",
        ),
        (
            lambda: cnnrs.convolution(IMG, np.ones((6, 6))),
            ValueError,
            r"kernel \(6, 6\) is larger than the padded image \(5, 5\)",
        ),
        (
            lambda: cnnrs.convolution(np.zeros((0, 5)), np.ones((1, 1))),
            ValueError,
            "image must be non-empty",
        ),
        (lambda: cnnrs.convolution(IMG, np.ones((0, 3))), ValueError, "kernel must be non-empty"),
        (
            lambda: cnnrs.convolution(IMG, np.ones((3, 3)), stride=0),
            ValueError,
            "stride must be an integer >= 1, got 0",
        ),
        (
            lambda: cnnrs.convolution(IMG, np.ones((3, 3)), padding=-1),
            ValueError,
            'padding must be an integer >= 0, "valid" or "same", got -1',
        ),
        (
            lambda: cnnrs.convolution(IMG, np.ones((3, 3)), padding="full"),
            ValueError,
            'padding must be an integer >= 0, "valid" or "same", got \'full\'',
        ),
        (
            lambda: cnnrs.convolution(IMG, np.ones((3, 3)), padding=1.5),
            TypeError,
            "padding must be an int",
        ),
        (
            lambda: cnnrs.convolution(IMG, np.ones((3, 3)), padding=True),
            TypeError,
            "padding must be an int",
        ),
        (
            lambda: cnnrs.convolution(IMG.astype(complex), np.ones((3, 3))),
            TypeError,
            "image must hold real numbers .* got dtype complex128",
        ),
        (
            lambda: cnnrs.convolution(IMG, np.ones((3, 3), dtype=bool)),
            TypeError,
            "kernel must hold real numbers .* got dtype bool",
        ),
        (
            lambda: cnnrs.convolution(IMG.astype(object), np.ones((3, 3))),
            TypeError,
            "image must hold real numbers .* got dtype object",
        ),
        (
            lambda: cnnrs.convolution(IMG.astype(np.float16), np.ones((3, 3))),
            TypeError,
            "got dtype float16",
        ),
        (
            lambda: cnnrs.convolution("abc", np.ones((3, 3))),
            TypeError,
            "image must hold real numbers",
        ),
        (lambda: cnnrs.create_padding(IMG, -1), ValueError, "d must be an integer >= 0, got -1"),
        (
            lambda: cnnrs.create_padding(IMG, 10**15),
            ValueError,
            "d makes a result .* fits in memory",
        ),
        (
            lambda: cnnrs.create_padding(IMG, 2**62),
            ValueError,
            "d makes a result .* fits in memory",
        ),
        (
            lambda: cnnrs.convolution(IMG, np.ones((3, 3)), padding=10**15),
            ValueError,
            "fits in memory",
        ),
        (
            lambda: cnnrs.convolution(IMG, np.ones((3, 3)), padding=2**62),
            ValueError,
            "fits in memory",
        ),
        (
            lambda: cnnrs.create_padding(IMG, 1, "wrap"),
            ValueError,
            'mode must be one of "constant", "reflect", "edge", got "wrap"',
        ),
        (lambda: cnnrs.create_padding(np.zeros((0, 3)), 1), ValueError, "image must be non-empty"),
        (lambda: cnnrs.create_padding(np.zeros(3), 1), ValueError, "image must be 2-D"),
        (
            lambda: cnnrs.create_padding(IMG > 0, 1),
            TypeError,
            "image must hold real numbers .* got dtype bool",
        ),
        (
            lambda: cnnrs.pooling(IMG, 7),
            ValueError,
            r"p must be between 1 and the image's smaller side 5 \(H=5, W=5\), got 7",
        ),
        (
            lambda: cnnrs.pooling(IMG, 6),
            ValueError,
            "p must be between 1 and the image's smaller side 5",
        ),
        (lambda: cnnrs.pooling(IMG, -2), ValueError, "p must be an integer >= 1, got -2"),
        (lambda: cnnrs.pooling(IMG, 0), ValueError, "p must be an integer >= 1, got 0"),
        (
            lambda: cnnrs.pooling(IMG, 2, stride=0),
            ValueError,
            "stride must be an integer >= 1, got 0",
        ),
        (
            lambda: cnnrs.pooling(IMG, 2, "min_pooling"),
            ValueError,
            'pooling_type must be one of "max_pooling", "avg_pooling", "max", "avg", '
            'got "min_pooling"',
        ),
        (lambda: cnnrs.pooling(np.zeros((5, 0)), 1), ValueError, "image must be non-empty"),
        (lambda: cnnrs.pooling(IMG.astype(np.complex64), 2), TypeError, "got dtype complex64"),
        (lambda: cnnrs.pooling(IMG, 2.5), TypeError, r"p must be an integer, got 2\.5 \(float\)"),
    ],
)
def test_bad_input_raises_a_clear_error(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
