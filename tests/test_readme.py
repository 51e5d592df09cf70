"""The README is the contract with a new user: its commands are the ones CI runs,
and its quickstart code runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [
        line.strip() for line in ci.splitlines() if line.strip() and not line.startswith("#")
    ]
    test_command = commands[-1]
    assert test_command == "make test"
    assert re.search(r"^make test\b", README, re.M), "README must show the command CI runs"
    assert re.search(r"^make demo\b", README, re.M), "README must show the demo command"
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test:", makefile, re.M) and re.search(r"^demo:", makefile, re.M)


def test_quickstart_runs(tmp_path, monkeypatch):
    block = re.search(r"## Quickstart\n\n```python\n(.*?)```", README, re.S)
    assert block, "README has a Quickstart python block"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)
    assert (tmp_path / "digits.safetensors").exists()
    assert namespace["model"].evaluate(namespace["x_test"], namespace["y_test"])["accuracy"] > 0.5


def test_training_options_example_runs(tmp_path, monkeypatch):
    block = re.search(r"### Training options\n\n.*?```python\n(.*?)```", README, re.S)
    assert block, "README has a Training options python block"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)
    assert (tmp_path / "best.safetensors").exists()
    assert len(namespace["history"]["learning_rate"]) >= 1
    assert namespace["probs"].shape == (len(namespace["x_test"]), 10)


def test_scikit_learn_example_runs(monkeypatch):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    block = re.search(r"### With scikit-learn\n\n.*?```python\n(.*?)```", README, re.S)
    assert block, "README has a With scikit-learn python block"
    namespace: dict = {}
    try:
        exec(compile(block.group(1), "README.md", "exec"), namespace)
    finally:
        plt.close("all")
    x_test, y_test = namespace["x_test"], namespace["y_test"]
    search, restored = namespace["search"], namespace["restored"]
    assert search.score(x_test, y_test) > 0.8
    assert (restored.predict(x_test) == search.predict(x_test)).all()
    flat = x_test.reshape(len(x_test), -1)
    assert namespace["pipe"].score(flat, y_test) > 0.8
