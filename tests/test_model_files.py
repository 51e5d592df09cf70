"""Model files from elsewhere are validated before anything is allocated from
them, and saving can neither be redirected through a symlink nor collide."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

import cnnrs


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_split):
    (x, y), _ = digits_split
    model = cnnrs.Model("custom", seed=0, device="cpu")
    model.fit(x[:256], y[:256], epochs=1, verbose=0)
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    model.save(path)
    return model, path, x[:32]


def split(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def join(header: dict, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def with_meta(path: Path, out: Path, **changes) -> Path:
    header, data = split(path)
    meta = json.loads(header["__metadata__"]["cnnrs"])
    meta.update(changes)
    header["__metadata__"]["cnnrs"] = json.dumps(meta)
    out.write_bytes(join(header, data))
    return out


def test_round_trip_keeps_everything(trained, tmp_path):
    model, path, x = trained
    loaded = cnnrs.Model.load(path, device="cpu")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.input_shape == model.input_shape
    assert loaded.precision == model.precision == "fp32"
    np.testing.assert_array_equal(loaded.normalization["std"], model.normalization["std"])


@pytest.mark.parametrize(
    "change, words",
    [
        ({"layers": [{"type": "maxpool", "size": 0}, {"type": "flatten"}]}, "pool size"),
        ({"layers": [{"type": "dropout", "rate": 5.0}, {"type": "flatten"}]}, "dropout rate"),
        ({"normalization": {"mean": [0.0], "std": [0.0]}}, "std > 0"),
        ({"normalization": {"mean": [1e39], "std": [1.0]}}, "finite"),
        ({"normalization": {"mean": [float("nan")], "std": [1.0]}}, "not a valid"),
        ({"num_classes": 10**9}, "num_classes"),
        ({"format": 99}, "format version"),
        ({"input_shape": [8, 8, 2]}, "channel count"),
        ({"input_shape": [16, 16, 1]}, "weights"),
        ({"layers": "conv"}, "not a valid"),
    ],
)
def test_inconsistent_metadata_is_a_data_format_error(trained, tmp_path, change, words):
    _, path, _ = trained
    bad = with_meta(path, tmp_path / "bad.safetensors", **change)
    with pytest.raises(cnnrs.DataFormatError, match=words):
        cnnrs.Model.load(bad, device="cpu")
    # DataFormatError is a ValueError too, as Python users catch bad files.
    with pytest.raises(ValueError):
        cnnrs.Model.load(bad, device="cpu")


def test_truncated_and_padded_files_are_refused(trained, tmp_path):
    _, path, _ = trained
    raw = path.read_bytes()
    for name, content in [
        ("short", raw[:-4]),
        ("long", raw + b"\0" * 4),
        ("header", raw[:20]),
        ("empty", b""),
        ("huge-header", struct.pack("<Q", 2**62) + b"{}"),
    ]:
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(cnnrs.DataFormatError):
            cnnrs.Model.load(p, device="cpu")


def test_endless_and_odd_files_are_refused(tmp_path):
    with pytest.raises(cnnrs.DataFormatError, match="regular file"):
        cnnrs.Model.load("/dev/zero", device="cpu")
    with pytest.raises(OSError, match="is a directory"):
        cnnrs.Model.load(tmp_path, device="cpu")
    with pytest.raises(FileNotFoundError):
        cnnrs.Model.load(tmp_path / "missing.safetensors", device="cpu")


def test_a_tiny_file_claiming_a_huge_network_allocates_nothing(trained, tmp_path):
    """A few hundred bytes whose metadata describes a 200,000-unit dense layer: refused
    from the header alone, before any weight is allocated (checked in a child's peak RSS)."""
    _, path, _ = trained
    header, _ = split(path)
    meta = json.loads(header["__metadata__"]["cnnrs"])
    dense = {"type": "dense", "units": 200_000, "init": "he_uniform"}
    meta["layers"] = [{"type": "flatten"}, dense]
    tiny = {"__metadata__": {"cnnrs": json.dumps(meta)}}
    bad = tmp_path / "tiny.safetensors"
    bad.write_bytes(join(tiny, b""))
    assert bad.stat().st_size < 1000
    code = textwrap.dedent(
        f"""
        import resource, cnnrs
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            cnnrs.Model.load({str(bad)!r}, device="cpu")
        except cnnrs.DataFormatError as e:
            print("refused:", e)
        grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print("grew_kib", grew)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout, out.stdout
    grew = int(out.stdout.split("grew_kib")[1])
    assert grew < 50_000, f"loading grew the process by {grew} KiB"


def test_save_replaces_a_planted_symlink_instead_of_writing_through_it(trained, tmp_path):
    model, _, _ = trained
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "model.safetensors"
    target.symlink_to(victim)
    # The temporary-name scheme of earlier versions, planted too.
    (tmp_path / f".model.safetensors.tmp-{os.getpid()}").symlink_to(victim)
    model.save(target)
    assert victim.read_text() == "precious"
    assert not target.is_symlink()
    assert cnnrs.Model.load(target, device="cpu").input_shape == model.input_shape
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_concurrent_saves_to_one_path_never_collide(trained, tmp_path):
    model, _, x = trained
    target = tmp_path / "shared.safetensors"
    errors: list[BaseException] = []

    def save() -> None:
        try:
            for _ in range(3):
                model.save(target)
        except BaseException as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=save) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    loaded = cnnrs.Model.load(target, device="cpu")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.safetensors"]


def test_save_into_a_missing_folder_is_an_oserror(trained, tmp_path):
    model, _, _ = trained
    with pytest.raises(FileNotFoundError):
        model.save(tmp_path / "no" / "such" / "m.safetensors")
