"""Checks that ``python/cnnrs/_core.pyi`` describes the compiled ``cnnrs._core``.

The stub is written by hand, so it can drift from the Rust bindings. This script
imports the built extension and compares, with the stub read by ``ast``:

- the module's names (functions, classes, constants; private ones too);
- for every function, method and class constructor, the parameters' names,
  kinds (positional-only, keyword-only, ...), whether each has a default, and the
  default's value where the stub writes a literal (``...`` is not compared);
- every class's base classes, methods and properties.

Runtime signatures come from ``inspect.signature`` (PyO3's ``__text_signature__``).
Exits 0 when they agree, 1 with one line per difference otherwise::

    python tools/check_stubs.py [--stub python/cnnrs/_core.pyi]
"""

from __future__ import annotations

import argparse
import ast
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STUB = ROOT / "python" / "cnnrs" / "_core.pyi"

# Attributes every extension module has; not part of the API.
MODULE_DUNDERS = {
    "__all__",
    "__builtins__",
    "__doc__",
    "__file__",
    "__loader__",
    "__name__",
    "__package__",
    "__path__",
    "__spec__",
}
# Class members PyO3 or Python add to every class; constructors are compared apart.
CLASS_DUNDERS_SKIPPED = {
    "__dict__",
    "__doc__",
    "__init__",
    "__module__",
    "__new__",
    "__weakref__",
}
KINDS = {
    "POSITIONAL_ONLY": "positional-only",
    "POSITIONAL_OR_KEYWORD": "positional",
    "VAR_POSITIONAL": "*args",
    "KEYWORD_ONLY": "keyword-only",
    "VAR_KEYWORD": "**kwargs",
}
NO_VALUE = object()  # a default the stub does not spell out (``...``)


@dataclass(frozen=True)
class Param:
    name: str
    kind: str
    has_default: bool
    default: Any = NO_VALUE

    def show(self) -> str:
        prefix = {"*args": "*", "**kwargs": "**"}.get(self.kind, "")
        default = ""
        if self.has_default:
            default = "=..." if self.default is NO_VALUE else f"={self.default!r}"
        return f"{prefix}{self.name}{default}"


def show(params: list[Param]) -> str:
    parts: list[str] = []
    for i, p in enumerate(params):
        if p.kind == "keyword-only" and not any(
            q.kind in ("keyword-only", "*args") for q in params[:i]
        ):
            parts.append("*")
        parts.append(p.show())
        if p.kind == "positional-only" and (i + 1 == len(params) or params[i + 1].kind != p.kind):
            parts.append("/")
    return "(" + ", ".join(parts) + ")"


# --- the stub ---------------------------------------------------------------------------


@dataclass
class StubClass:
    bases: list[str]
    methods: dict[str, list[Param] | None]  # None: a property
    constructor: list[Param] | None


def _literal(node: ast.expr | None) -> Any:
    if node is None:
        return NO_VALUE
    if isinstance(node, ast.Constant) and node.value is Ellipsis:
        return NO_VALUE
    try:
        return ast.literal_eval(node)
    except ValueError:
        return NO_VALUE


def stub_params(fn: ast.FunctionDef, drop_first: bool) -> list[Param]:
    a = fn.args
    positional = [*a.posonlyargs, *a.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(a.defaults))
    defaults += list(a.defaults)
    params = [
        Param(
            arg.arg,
            "positional-only" if i < len(a.posonlyargs) else "positional",
            default is not None,
            _literal(default),
        )
        for i, (arg, default) in enumerate(zip(positional, defaults))
    ]
    if drop_first:
        params = params[1:]
    if a.vararg:
        params.append(Param(a.vararg.arg, "*args", False))
    for arg, default in zip(a.kwonlyargs, a.kw_defaults):
        params.append(Param(arg.arg, "keyword-only", default is not None, _literal(default)))
    if a.kwarg:
        params.append(Param(a.kwarg.arg, "**kwargs", False))
    return params


def _decorators(fn: ast.FunctionDef) -> set[str]:
    names = set()
    for d in fn.decorator_list:
        if isinstance(d, ast.Name):
            names.add(d.id)
        elif isinstance(d, ast.Attribute):
            names.add(d.attr)  # e.g. @class_names.setter
    return names


def read_stub(path: Path) -> tuple[dict[str, list[Param]], dict[str, StubClass], set[str]]:
    """(functions, classes, constants) declared at the top level of the stub."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    functions: dict[str, list[Param]] = {}
    classes: dict[str, StubClass] = {}
    constants: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            functions[node.name] = stub_params(node, drop_first=False)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            constants.add(node.target.id)
        elif isinstance(node, ast.Assign):
            constants.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ClassDef):
            cls = StubClass([ast.unparse(b) for b in node.bases], {}, None)
            for item in node.body:
                if not isinstance(item, ast.FunctionDef):
                    continue
                decorators = _decorators(item)
                if "property" in decorators or "setter" in decorators:
                    cls.methods[item.name] = None
                elif item.name in ("__init__", "__new__"):
                    cls.constructor = stub_params(item, drop_first=True)
                else:
                    static = "staticmethod" in decorators
                    cls.methods[item.name] = stub_params(item, drop_first=not static)
            classes[node.name] = cls
    return functions, classes, constants


# --- the compiled module ------------------------------------------------------------------


def runtime_params(obj: Any, drop_first: bool) -> list[Param] | None:
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    params = [
        Param(
            p.name,
            KINDS[p.kind.name],
            p.default is not inspect.Parameter.empty,
            NO_VALUE if p.default is inspect.Parameter.empty else p.default,
        )
        for p in signature.parameters.values()
    ]
    return params[1:] if drop_first else params


def _same(runtime: list[Param], stub: list[Param]) -> bool:
    if len(runtime) != len(stub):
        return False
    for r, s in zip(runtime, stub):
        if (r.name, r.kind, r.has_default) != (s.name, s.kind, s.has_default):
            return False
        if s.default is not NO_VALUE and r.default != s.default:
            return False
    return True


def compare(module: Any, stub: Path) -> list[str]:
    """The differences between ``module`` and the stub, one readable line each."""
    functions, classes, constants = read_stub(stub)
    problems: list[str] = []
    runtime_names = {n for n in dir(module) if n not in MODULE_DUNDERS}
    stub_names = set(functions) | set(classes) | constants
    for name in sorted(runtime_names - stub_names):
        kind = type(getattr(module, name)).__name__
        problems.append(f"{name}: in the extension ({kind}) but not in the stub")
    for name in sorted(stub_names - runtime_names):
        problems.append(f"{name}: in the stub but not in the extension")

    for name in sorted(runtime_names & stub_names):
        obj = getattr(module, name)
        if name in functions:
            if not callable(obj) or isinstance(obj, type):
                problems.append(f"{name}: a function in the stub, a {type(obj).__name__} here")
                continue
            _check_signature(problems, name, runtime_params(obj, False), functions[name])
        elif name in classes:
            if not isinstance(obj, type):
                problems.append(f"{name}: a class in the stub, a {type(obj).__name__} here")
                continue
            _check_class(problems, name, obj, classes[name])
        elif callable(obj) and not isinstance(obj, type):
            problems.append(f"{name}: a function in the extension, a constant in the stub")
    return problems


def _check_signature(
    problems: list[str], where: str, runtime: list[Param] | None, stub: list[Param]
) -> None:
    if runtime is None:
        problems.append(f"{where}: the extension gives no signature to compare (stub {show(stub)})")
    elif not _same(runtime, stub):
        problems.append(f"{where}: extension {show(runtime)} != stub {show(stub)}")


def _check_class(problems: list[str], name: str, cls: type, stub: StubClass) -> None:
    bases = [b.__name__ for b in cls.__bases__ if b is not object]
    if sorted(bases) != sorted(b for b in stub.bases if b != "object"):
        problems.append(f"{name}: bases are {bases} in the extension, {stub.bases} in the stub")

    constructor = runtime_params(cls, False) if "__new__" in vars(cls) else None
    if constructor is not None or stub.constructor is not None:
        if stub.constructor is None:
            problems.append(f"{name}: the stub has no __init__ for {name}{show(constructor or [])}")
        else:
            _check_signature(problems, f"{name}()", constructor, stub.constructor)

    members: dict[str, Any] = {}
    for member, value in vars(cls).items():
        if member in CLASS_DUNDERS_SKIPPED:
            continue
        if member.startswith("__") and member.endswith("__"):
            # #[pymethods] dunders such as __enter__ are methods; slot wrappers
            # (__repr__, __str__ ...) come from the type and are not compared.
            if type(value).__name__ != "method_descriptor":
                continue
        members[member] = value
    for member in sorted(set(members) - set(stub.methods)):
        problems.append(f"{name}.{member}: in the extension but not in the stub")
    for member in sorted(set(stub.methods) - set(members)):
        problems.append(f"{name}.{member}: in the stub but not in the extension")
    for member in sorted(set(members) & set(stub.methods)):
        value = members[member]
        where = f"{name}.{member}"
        is_property = inspect.isdatadescriptor(value) and not callable(value)
        if stub.methods[member] is None:
            if not is_property:
                problems.append(f"{where}: a property in the stub, a method in the extension")
            continue
        if is_property:
            problems.append(f"{where}: a method in the stub, a property in the extension")
            continue
        static = isinstance(value, staticmethod)
        runtime = runtime_params(getattr(cls, member), drop_first=not static)
        _check_signature(problems, where, runtime, stub.methods[member] or [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stub", type=Path, default=DEFAULT_STUB)
    args = parser.parse_args(argv)
    import torch  # noqa: F401  (libtorch must be loaded before the extension)

    import cnnrs._core as core

    problems = compare(core, args.stub)
    if problems:
        print(f"{args.stub} does not match {core.__file__}:", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"{args.stub.name} matches the extension ({len(dir(core))} names checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
