"""The package's shape: no import cycle, no module borrowing another's private names,
every module importable on its own, and the hand-written stub equal to the extension."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import cnnrs

PACKAGE = Path(cnnrs.__file__).parent
ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
SUBMODULES = {*MODULES, "_core"}


def _imports(module: str) -> list[tuple[str, list[str], int]]:
    """(imported cnnrs module, names taken from it, line) for every import in ``module``,
    at the top level or inside functions."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                source = node.module or ""
            elif node.level == 0 and (node.module or "").startswith("cnnrs"):
                source = (node.module or "").removeprefix("cnnrs").lstrip(".")
            else:
                continue
            names = [a.name for a in node.names]
            if source == "":  # `from . import x`: x must be a module, never a re-export
                for name in names:
                    found.append((name if name in SUBMODULES else "__init__", [], node.lineno))
            else:
                found.append((source, names, node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("cnnrs."):
                    found.append((alias.name.split(".")[1], [], node.lineno))
    return found


def test_modules_never_import_from_the_package_init():
    """``__init__`` imports every module, so a module importing from it is a cycle."""
    offenders = [
        f"{m}.py:{line}" for m in MODULES for source, _, line in _imports(m) if source == "__init__"
    ]
    assert not offenders, f"import from the module that defines the name instead: {offenders}"


def test_import_graph_has_no_cycle():
    graph = {m: {s for s, _, _ in _imports(m) if s in MODULES} for m in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for m in MODULES:
        if m not in state:
            visit(m, [m])


def test_no_module_uses_another_modules_private_names():
    """Private helpers shared by several modules live in ``_``-modules made for that."""
    offenders = []
    for m in MODULES:
        tree = ast.parse((PACKAGE / f"{m}.py").read_text(encoding="utf-8"))
        public_modules = set()
        for source, names, line in _imports(m):
            if source.startswith("_") or source == "__init__":
                continue
            offenders += [f"{m}.py:{line} {source}.{n}" for n in names if n.startswith("_")]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and not node.module:
                public_modules.update(
                    a.asname or a.name for a in node.names if not a.name.startswith("_")
                )
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in public_modules
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                offenders.append(f"{m}.py:{node.lineno} {node.value.id}.{node.attr}")
    assert not offenders


def test_every_module_imports_first_in_a_fresh_interpreter():
    """Each module imported on its own, first, as a user's script would: an import cycle
    shows up as an ImportError about a partially initialised module."""
    modules = list(MODULES)
    try:
        import ray  # noqa: F401
    except ImportError:
        modules.remove("distributed")
    script = (
        "import importlib, sys\n"
        "import torch\n"
        "import cnnrs._core\n"
        "failures = []\n"
        f"for name in {modules!r}:\n"
        "    for key in [k for k in sys.modules if k == 'cnnrs' or k.startswith('cnnrs.')]:\n"
        "        if key != 'cnnrs._core':\n"
        "            del sys.modules[key]\n"
        "    try:\n"
        "        importlib.import_module('cnnrs.' + name)\n"
        "    except Exception as exc:\n"
        "        failures.append(f'cnnrs.{name}: {type(exc).__name__}: {exc}')\n"
        "print('\\n'.join(failures))\n"
        "sys.exit(1 if failures else 0)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_version_comes_from_the_extension():
    assert cnnrs.__version__ == cnnrs._core.__version__
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'dynamic = ["version"]' in pyproject
    assert not any(line.startswith("version") for line in pyproject.splitlines())


def _check_stubs():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import check_stubs
    finally:
        sys.path.pop(0)
    return check_stubs


def test_stub_matches_the_extension():
    check_stubs = _check_stubs()
    assert check_stubs.compare(cnnrs._core, check_stubs.DEFAULT_STUB) == []


def test_stub_checker_reports_drift(tmp_path):
    check_stubs = _check_stubs()
    stub = check_stubs.DEFAULT_STUB.read_text(encoding="utf-8")
    drifted = (
        stub.replace("__version__: str\n", "")
        .replace(
            "class DataFormatError(CnnrsError, ValueError)", "class DataFormatError(CnnrsError)"
        )
        .replace("def save(self, path: str)", "def save(self, *, path: str)")
        .replace("    def abort(self) -> None:", "    def abort(self, now: bool) -> None:")
        .replace(
            "n: int, k: int, shuffle: bool = True, seed: int = 42",
            "n: int, k: int, shuffle: bool = True, seed: int = 1",
        )
        + "\ndef removed_long_ago() -> None: ...\n"
    )
    path = tmp_path / "_core.pyi"
    path.write_text(drifted, encoding="utf-8")
    problems = "\n".join(check_stubs.compare(cnnrs._core, path))
    assert "__version__: in the extension" in problems
    assert "DataFormatError: bases" in problems
    assert "Model.save: extension (path) != stub (*, path)" in problems
    assert "AtomicWriter.abort" in problems
    assert "seed=1" in problems
    assert "removed_long_ago: in the stub but not in the extension" in problems
    assert check_stubs.main(["--stub", str(path)]) == 1


def test_no_two_files_in_src_nn_import_each_other():
    """Issue 17's rule: each room of the training core imports only rooms below it,
    so a newcomer can read them bottom-up (tools/nn_imports.py finds circles)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tools" / "nn_imports.py"
    spec = importlib.util.spec_from_file_location("nn_imports", path)
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    edges = tool.graph()
    # The tool sees real imports: the model uses the fit session and the recipes.
    assert {"fit", "config", "built"} <= edges["model"]
    assert "recipe" in edges["config"]
    assert tool.cycles(edges) == []
    # And it would see a circle.
    edges["tta"] = {"model"}
    assert tool.cycles(edges)


def test_nothing_is_public_by_accident():
    """Every public name of ``cnnrs`` is in ``__all__`` or is one of its own modules;
    ``cnnrs.torch`` (from the ``import torch`` that loads libtorch) was reachable."""
    stray = [
        name
        for name in dir(cnnrs)
        if not name.startswith("_")
        and name not in cnnrs.__all__
        and getattr(getattr(cnnrs, name), "__name__", None) != f"cnnrs.{name}"
    ]
    assert stray == []
    assert not hasattr(cnnrs, "torch")
    assert sorted(cnnrs.__all__) == sorted(set(cnnrs.__all__))


def test_model_keywords_exist_once():
    """The settings cnnrs.Model passes on are named once, by the core that resolves them
    (``_core.MODEL_SETTINGS``); the Python signature documents them, and nothing else
    lists them, so a new setting cannot reach one side only."""
    import inspect

    params = inspect.signature(cnnrs.Model.__init__).parameters
    assert set(cnnrs._core.MODEL_SETTINGS) <= set(params)
    assert "settings" not in params
    # The scikit-learn estimator passes the same settings by the same list.
    sklearn = pytest.importorskip("cnnrs.sklearn")
    estimator = inspect.signature(sklearn.CNNClassifier.__init__).parameters
    assert set(cnnrs._core.MODEL_SETTINGS) <= set(estimator)
    with pytest.raises(TypeError, match='unexpected setting "colour".*learning_rate'):
        cnnrs._core.Model("baseline", "cpu", 0, {"colour": "red"})
    with pytest.raises(TypeError, match="settings keys must be str"):
        cnnrs._core.Model("baseline", "cpu", 0, {1: 2})
    # What the user did not give comes from the recipe (airbench94's) or Keras's.
    air = cnnrs.Model("airbench94", device="cpu", seed=0, momentum=0.5)
    assert (air.learning_rate, air.momentum, air.optimizer) == (11.5, 0.5, "sgd")
    plain = cnnrs.Model("baseline", device="cpu", seed=0)
    assert (plain.learning_rate, plain.optimizer) == (5e-4, "adam")
