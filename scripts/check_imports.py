"""The package's import structure: circles, imports that run back up, function-local imports, folder sizes.

    python scripts/check_imports.py            # prints the report; exit status 1 when a rule is broken

Rules (issue 22; ``tests/test_import_structure.py`` runs them on every test run):

1. **No circles** between modules: the graph of every ``diffguard`` import (module-level and function-local) has no
   strongly connected component of more than one module.
2. **Nothing runs back up**: the same graph contracted to rooms (a sub-package, or a top-level module on its own) has
   no circle either, so every import between rooms goes one way, down the data flow.
3. **Function-local imports only for optional dependencies**: an ``import`` inside a function must carry the comment
   ``# optional: <package>`` naming the extra that provides it.
4. **No room holds more than 15 %** of the package's lines.

Imports by string (``importlib.import_module``, the detector registry's discovery) are not edges: they are how a
registry finds its members, never a dependency of the code that names them.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "diffguard"
MAX_SHARE = 0.15


@dataclass
class Report:
    module_cycles: list[list[str]] = field(default_factory=list)
    room_cycles: list[list[str]] = field(default_factory=list)
    local_imports: list[str] = field(default_factory=list)
    shares: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        too_big = [r for r, s in self.shares.items() if s > MAX_SHARE]
        return not (self.module_cycles or self.room_cycles or self.local_imports or too_big)


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _targets(node: ast.Import | ast.ImportFrom, package: str, known: dict[str, Path]) -> list[str]:
    """The modules an import statement depends on: ``from pkg import sub`` depends on ``pkg.sub`` only (a parent
    package is imported before any of its modules anyway), ``from mod import name`` on ``mod``."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        up = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(up + ([node.module] if node.module else []))
    subs = [f"{base}.{a.name}" for a in node.names]
    return [t if t in known else base for t in subs]


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(known: dict[str, Path]) -> tuple[dict[str, set[str]], list[str]]:
    """(module -> modules it imports, function-local imports lacking an ``# optional:`` comment)."""
    edges: dict[str, set[str]] = defaultdict(set)
    local = []
    for name, path in known.items():
        text = path.read_text()
        lines = text.splitlines()
        tree = ast.parse(text)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        in_function = {id(sub) for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                       for sub in ast.walk(node) if isinstance(sub, (ast.Import, ast.ImportFrom))}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if id(node) in in_function and "# optional:" not in lines[node.lineno - 1]:
                local.append(f"{path.relative_to(path.parents[len(name.split('.')) - (path.name != '__init__.py')])}:{node.lineno}")
            for target in _targets(node, package, known):
                found = _resolve(target, known) if target.startswith("diffguard") else None
                if found and found != name:
                    edges[name].add(found)
    return edges, local


def cycles(edges: dict[str, set[str]], nodes: list[str]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def room(module: str) -> str:
    """The room of a module: its sub-package (``diffguard.run``), or the top-level module itself."""
    parts = module.split(".")
    if len(parts) > 2 or (PACKAGE / parts[-1]).is_dir():
        return ".".join(parts[:2])
    return module


def check(root: Path = PACKAGE) -> Report:
    known = modules(root)
    edges, local = import_graph(known)
    rooms: dict[str, set[str]] = defaultdict(set)
    for a, targets in edges.items():
        for b in targets:
            if room(a) != room(b) and room(a) != "diffguard" and room(b) != "diffguard":
                rooms[room(a)].add(room(b))
    # the package's own __init__ (the public API) sits on top of everything, so it is left out of the room graph
    sizes: dict[str, int] = defaultdict(int)
    for name, path in known.items():
        if path.parent != root:
            sizes[room(name)] += len(path.read_text().splitlines())
    total = sum(len(p.read_text().splitlines()) for p in known.values())
    return Report(module_cycles=cycles(edges, list(known)),
                  room_cycles=cycles(rooms, sorted({room(m) for m in known})),
                  local_imports=local,
                  shares={r: n / total for r, n in sorted(sizes.items(), key=lambda kv: -kv[1])})


def main() -> int:
    report = check()
    print(f"module circles: {len(report.module_cycles)}")
    for c in report.module_cycles:
        print("  " + " <-> ".join(c))
    print(f"room circles (imports that run back up): {len(report.room_cycles)}")
    for c in report.room_cycles:
        print("  " + " <-> ".join(c))
    print(f"function-local imports without '# optional:': {len(report.local_imports)}")
    for where in report.local_imports:
        print("  " + where)
    print("largest rooms (share of the package's lines):")
    for name, share in list(report.shares.items())[:5]:
        print(f"  {name:28s} {100 * share:5.1f} %{'  > 15 %' if share > MAX_SHARE else ''}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
