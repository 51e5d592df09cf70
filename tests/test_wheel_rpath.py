"""tools/wheel_rpath.py, which `make wheel` runs: the extension in the wheel points at
the torch beside it, never at the build machine's folders, and RECORD stays true."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import cnnrs

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("patchelf") is None, reason="needs patchelf")


def _tool():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import wheel_rpath
    finally:
        sys.path.pop(0)
    return wheel_rpath


def test_the_rpath_is_set_and_record_rewritten(tmp_path):
    tool = _tool()
    extension = next(Path(cnnrs.__file__).parent.glob("_core*.so"))
    wheel = tmp_path / "cnnrs-0-cp39-abi3-manylinux_2_34_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("cnnrs/", b"")
        z.write(extension, "cnnrs/_core.abi3.so")
        z.writestr("cnnrs/__init__.py", b"x = 1\n")
        z.writestr("cnnrs-0.dist-info/RECORD", b"stale\n")
    assert tool.main([str(wheel), "--check"]) == 1
    assert tool.main([str(wheel)]) == 0
    assert tool.main([str(wheel), "--check"]) == 0
    with zipfile.ZipFile(wheel) as z:
        z.extract("cnnrs/_core.abi3.so", tmp_path)
        record = z.read("cnnrs-0.dist-info/RECORD").decode().splitlines()
        files = {n: z.read(n) for n in z.namelist() if not n.endswith(("/", "RECORD"))}
    rpath = subprocess.run(
        ["patchelf", "--print-rpath", str(tmp_path / "cnnrs/_core.abi3.so")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert rpath == "$ORIGIN/../torch/lib"
    expected = {
        f"{name},sha256="
        + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        + f",{len(data)}"
        for name, data in files.items()
    }
    assert set(record) == expected | {"cnnrs-0.dist-info/RECORD,,"}
