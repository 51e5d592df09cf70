"""load_image against PIL, and the bundled sample image."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

import cnnrs

PIL = pytest.importorskip("PIL.Image")


def rgb_image(h: int = 37, w: int = 53) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("fmt", ["png", "bmp", "gif"])
def test_lossless_formats_match_pil_exactly(tmp_path, fmt):
    path = tmp_path / f"x.{fmt}"
    img = PIL.fromarray(rgb_image())
    if fmt == "gif":
        img = img.quantize(colors=200)  # GIF holds a palette
    img.save(path)
    with PIL.open(path) as pil:
        want_gray = np.asarray(pil.convert("L"))
        want_rgb = np.asarray(pil.convert("RGB"))
    gray = cnnrs.load_image(path)
    assert gray.dtype == np.uint8 and gray.shape == want_gray.shape
    np.testing.assert_array_equal(gray, want_gray)
    np.testing.assert_array_equal(cnnrs.load_image(str(path), grayscale=False), want_rgb)


def test_rgba_and_gray_pngs_match_pil(tmp_path):
    rgb = rgb_image()
    alpha = np.full(rgb.shape[:2] + (1,), 128, np.uint8)
    for name, arr in [("rgba", np.concatenate([rgb, alpha], axis=-1)), ("gray", rgb[..., 0])]:
        path = tmp_path / f"{name}.png"
        PIL.fromarray(arr).save(path)
        with PIL.open(path) as pil:
            np.testing.assert_array_equal(cnnrs.load_image(path), np.asarray(pil.convert("L")))


def test_jpeg_is_close_to_pil(tmp_path):
    """JPEG decoders may differ by a level or two (IDCT rounding), not more."""
    path = tmp_path / "x.jpg"
    smooth = np.linspace(0, 255, 64 * 80 * 3).reshape(64, 80, 3).astype(np.uint8)
    PIL.fromarray(smooth).save(path, quality=95)
    with PIL.open(path) as pil:
        want = np.asarray(pil.convert("L")).astype(int)
    got = cnnrs.load_image(path).astype(int)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 3


def test_size_resizes_to_width_height(tmp_path):
    path = tmp_path / "x.png"
    PIL.fromarray(rgb_image(40, 60)).save(path)
    small = cnnrs.load_image(path, size=(32, 24))
    assert small.shape == (24, 32) and small.dtype == np.uint8
    assert cnnrs.load_image(path, grayscale=False, size=[32, 32]).shape == (32, 32, 3)
    flat = tmp_path / "flat.png"
    PIL.fromarray(np.full((50, 70, 3), 77, np.uint8)).save(flat)
    np.testing.assert_array_equal(cnnrs.load_image(flat, size=(32, 32)), 77)
    # bilinear downscaling keeps the mean brightness
    with PIL.open(path) as pil:
        ref = np.asarray(pil.convert("L").resize((32, 24), PIL.Resampling.BILINEAR)).astype(float)
    assert abs(small.mean() - ref.mean()) < 2


def test_path_like_and_str(tmp_path):
    path = tmp_path / "x.png"
    PIL.fromarray(rgb_image()).save(path)
    np.testing.assert_array_equal(cnnrs.load_image(path), cnnrs.load_image(str(path)))
    assert isinstance(path, pathlib.PurePath)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        cnnrs.load_image(tmp_path / "nope.png")


def test_corrupt_and_foreign_files_are_data_format_errors(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(cnnrs.DataFormatError, match="corrupt or unsupported image"):
        cnnrs.load_image(bad)
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(cnnrs.DataFormatError, match="not a GIF, PNG, JPEG or BMP image"):
        cnnrs.load_image(text)
    assert issubclass(cnnrs.DataFormatError, cnnrs.CnnrsError)


@pytest.mark.parametrize(
    ("size", "exc", "match"),
    [
        (
            (0, 5),
            ValueError,
            r"size must be \(width, height\) with both sides in \[1, 32768\].* got \(0, 5\)",
        ),
        ((5,), ValueError, "size must be a pair"),
        ((-1, 5), ValueError, "size must be"),
        ("ab", TypeError, "size"),
    ],
)
def test_bad_size(tmp_path, size, exc, match):
    path = tmp_path / "x.png"
    PIL.fromarray(rgb_image()).save(path)
    with pytest.raises(exc, match=match):
        cnnrs.load_image(path, size=size)


def test_bad_path_type():
    with pytest.raises(TypeError):
        cnnrs.load_image(42)


def test_directory_is_an_os_error(tmp_path):
    with pytest.raises(OSError):
        cnnrs.load_image(tmp_path)


def test_sample_image_is_scikit_image_camera():
    img = cnnrs.sample_image()
    assert img.shape == (512, 512) and img.dtype == np.uint8
    skdata = pytest.importorskip("skimage.data")
    np.testing.assert_array_equal(img, skdata.camera())
