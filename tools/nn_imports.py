"""Which files inside ``src/nn/`` import which: exits 1 if two import each other,
directly or in a circle (issue 17's rule: each room imports only rooms below it).

    python tools/nn_imports.py [--show]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

NN = Path(__file__).resolve().parents[1] / "src" / "nn"
# `super::x`, `crate::nn::x`, `super::super::x` (recipe/ files), and `use super::{a, b}`.
PATH = re.compile(r"\b(?:super::super|crate::nn|super)::(\{[^}]*\}|[a-z_]+)")


def module_of(path: Path) -> str:
    rel = path.relative_to(NN).with_suffix("")
    parts = [p for p in rel.parts if p != "mod"]
    return parts[0] if parts else "mod"


def graph() -> dict[str, set[str]]:
    modules = {module_of(p) for p in NN.rglob("*.rs")} - {"mod"}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for path in NN.rglob("*.rs"):
        me = module_of(path)
        if me == "mod":
            continue
        inside_recipe = path.parent.name == "recipe"
        # Code only: a doc comment's link to another room is not an import.
        code = "\n".join(
            line
            for line in path.read_text(encoding="utf-8").splitlines()
            if not line.lstrip().startswith("//")
        )
        for m in PATH.finditer(code):
            prefix = m.group(0).split("::")[0]
            names = re.findall(r"[a-z_]+", m.group(1))
            for name in names:
                # `super::` inside recipe/ names recipe's own files, not nn's.
                if inside_recipe and prefix == "super" and "super::super" not in m.group(0):
                    continue
                if name in modules and name != me:
                    edges[me].add(name)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def main() -> int:
    edges = graph()
    if "--show" in sys.argv:
        for m in sorted(edges):
            print(f"{m}: {' '.join(sorted(edges[m]))}")
    bad = cycles(edges)
    for c in bad:
        print("import circle: " + " -> ".join(c))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
