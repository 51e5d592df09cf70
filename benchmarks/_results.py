"""The one writer of benchmarks/RESULTS.md sections, shared by the benchmark scripts
(run from this folder, so ``import _results`` finds it)."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def write_section(heading: str, lines: list[str]) -> None:
    """Replaces (or appends) the ``heading`` section of benchmarks/RESULTS.md."""
    table = "\n".join([heading, "", *lines]) + "\n"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n"
    section = re.compile(re.escape(heading) + r"\n.*?(?=\n## |\Z)", flags=re.S)
    if section.search(text):
        text = section.sub(lambda _: table.rstrip("\n") + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + table
    RESULTS.write_text(text)
