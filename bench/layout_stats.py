"""The layout in numbers: engine/'s modules and lines, the longest functions, and the import drawing at room level
(a room: a top-level module or package of engine/, data/ split into its four rooms): rooms, arrows between them,
arrows inside a cycle, imports made inside functions.

    python bench/layout_stats.py               # this checkout
    python bench/layout_stats.py /tmp/old      # another checkout, to compare
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path


def module_name(root: Path, path: Path) -> str:
    return ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def room(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None
    return ".".join(parts[:3]) if parts[1] == "data" and len(parts) >= 3 else parts[1]


def imports(tree: ast.AST) -> tuple[set[str], int]:
    """The engine modules a file imports, and how many of its engine imports sit inside functions."""
    inside = {id(x) for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
              for x in ast.walk(n)}
    found, late = set(), 0
    for n in ast.walk(tree):
        names = set()
        if isinstance(n, ast.ImportFrom) and n.module and n.module.split(".")[0] == "engine":
            names = {f"engine.{a.name}" for a in n.names} if n.module == "engine" else {n.module}
        elif isinstance(n, ast.Import):
            names = {a.name for a in n.names if a.name.split(".")[0] == "engine"}
        late += bool(names) and id(n) in inside
        found |= names
    return found, late


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one room (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                on.discard(w)
                component.append(w)
            on.discard(v)
            found.append(component + [v])
    for v in graph:
        if v not in index:
            visit(v)
    return [c for c in found if len(c) > 1]


def main(root: Path) -> None:
    files = sorted((root / "engine").rglob("*.py"))
    trees = {f: ast.parse(f.read_text()) for f in files}
    lines = {f: len(f.read_text().splitlines()) for f in files}
    print(f"engine/: {len(files)} modules, {sum(lines.values())} lines, "
          f"{sum(f.name == '__init__.py' for f in files)} packages")
    print("over 200 lines: " + ", ".join(f"{f.relative_to(root)} {n}" for f, n in lines.items() if n > 200))
    spans = [(n.end_lineno - n.lineno + 1, f"{f.relative_to(root)}:{n.lineno} {n.name}")
             for f in files + [root / c for c in ("train.py", "predict.py", "sweep.py", "cam.py")]
             for n in ast.walk(trees.get(f) or ast.parse(f.read_text()))
             if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    print("longest functions:\n" + "\n".join(f"  {n:4d}  {name}" for n, name in sorted(spans, reverse=True)[:10]))
    arrows, late = set(), 0
    for f, tree in trees.items():
        targets, inside = imports(tree)
        late += inside
        here = room(module_name(root, f))
        arrows |= {(here, room(t)) for t in targets if here and room(t) and room(t) != here}
    rooms = sorted({room(module_name(root, f)) for f in files} - {None})
    graph = {r: {b for a, b in arrows if a == r} for r in rooms}
    circles = cycles(graph)
    inside_cycle = sorted((a, b) for a, b in arrows if any(a in c and b in c for c in circles))
    print(f"drawing: {len(rooms)} rooms, {len(arrows)} arrows, {len(circles)} room cycle(s) {circles}, "
          f"{len(inside_cycle)} arrow(s) in a cycle {inside_cycle}, {late} engine import(s) inside functions")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent).resolve())
