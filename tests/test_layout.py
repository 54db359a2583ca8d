"""The layout's promises: stages import one way, no import circles, small modules, one owner per run-folder name
(engine/run_folder.py), and a README map that names every module in its own folder."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from engine import run_folder

ROOT = Path(__file__).resolve().parent.parent
ENGINE = ROOT / "engine"
CLIS = ["train.py", "predict.py", "sweep.py", "cam.py", "engine/report.py", "engine/explore/__main__.py",
        "engine/runs/__main__.py"]
# a unit may import only units of a lower rank (or itself): system <- run_folder, data (neither imports the other)
# <- evaluate <- train <- predict <- the side features <- the runs table and the report command
RANK = {"errors": 0, "system": 1, "matmul_padding": 1, "input_size": 1, "recipe": 2, "checkpoint": 2, "models": 2,
        "model_speed": 2, "run_folder": 3, "data": 3, "evaluate": 5, "train": 6, "predict": 7, "cam": 8, "explore": 8,
        "sweep": 8, "report": 9, "runs": 9}
# inside data, its rooms import one way too: pixels <- caches and stores <- tables and folds <- batches
DATA_RANK = {"pixels": 0, "stores": 1, "tables": 2, "batches": 3}
COMMAND_RANK = 10  # a package's __main__ is a command line (`python -m engine.runs`): it may import any stage
RUN_FOLDER_NAMES = tuple(v for k, v in vars(run_folder).items()  # every file name the owner holds
                         if k.isupper() and isinstance(v, str) and "." in v)


def engine_imports(path: Path) -> set[str]:
    """Every engine module a file imports, also inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "engine":
            found |= {f"engine.{a.name}" for a in node.names} if node.module == "engine" else {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "engine"}
    return found


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def unit(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def rank(module: str) -> int:
    return COMMAND_RANK if module.endswith(".__main__") else RANK[unit(module)]


MODULES = {module_name(p): engine_imports(p) for p in ENGINE.rglob("*.py")}


def test_every_unit_has_a_rank():
    assert {unit(m) for m in MODULES if m != "engine"} <= set(RANK)


def test_stages_import_one_way():
    upward = [f"{m} imports {t}" for m, targets in MODULES.items() for t in targets
              if m != "engine" and unit(t) != unit(m) and rank(t) >= rank(m)]
    assert not upward, "\n".join(upward)


def test_data_rooms_import_one_way():
    rooms = {m: targets for m, targets in MODULES.items() if m.startswith("engine.data.") and m.count(".") >= 3}
    assert {m.split(".")[2] for m in rooms} == set(DATA_RANK)  # every module of data/ is in a room
    upward = [f"{m} imports {t}" for m, targets in rooms.items() for t in targets if t.startswith("engine.data.")
              and t.split(".")[2] != m.split(".")[2] and DATA_RANK[t.split(".")[2]] >= DATA_RANK[m.split(".")[2]]]
    assert not upward, "\n".join(upward)


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of a module graph, or None (depth-first search for a back edge)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return path[path.index(t):] + [t]
            if t not in state and (circle := visit(t, path + [t])):
                return circle
        state[m] = 2
        return None
    return next((c for m in sorted(graph) if m not in state and (c := visit(m, [m]))), None)


def test_no_import_circles():
    graph = {m: {t if t in MODULES else t.rsplit(".", 1)[0] for t in targets}  # `from pkg import f` names a function
             for m, targets in MODULES.items()}
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the check itself works
    assert find_circle(graph) is None


def test_modules_and_commands_stay_small():
    big = [f"{p.relative_to(ROOT)}: {n}" for p in ENGINE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 300]
    long_clis = [f"{c}: {n}" for c in CLIS if (n := len((ROOT / c).read_text().splitlines())) > 100]
    assert not big and not long_clis, big + long_clis


def test_run_folder_names_are_spelled_only_in_run_folder_py():
    assert {"recipe.json", "train.log", "last.pt", "split.csv", "_probs.csv"} <= set(RUN_FOLDER_NAMES)
    assert run_folder.WANDB_ID == "wandb_id"  # (also a sweep results column, so not searched for)
    spelled = []
    for path in [*ENGINE.rglob("*.py"), *(ROOT / c for c in CLIS)]:
        if path == ENGINE / "run_folder.py":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                      and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                if any(node.value == name or node.value.endswith("/" + name) for name in RUN_FOLDER_NAMES):
                    spelled.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert not spelled, "\n".join(spelled)


def readme_map() -> dict[str, str]:
    """The README's layout tree as {folder under engine/ ("" for engine/ itself): the text of its entry}; a root
    module's entry is its `name.py` line. Folders nest by indentation; a line with no name first continues the entry."""
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("    engine/\n", readme.index("## Layout")):readme.index("Where to change what")]
    entries: dict[str, str] = {"": ""}
    stack: list[tuple[int, str]] = [(4, "")]  # (indent, folder) of the open folders; engine/ is at indent 4
    current = ""
    for line in block.splitlines()[1:]:
        if not line.strip():
            continue
        indent, first, rest = len(line) - len(line.lstrip()), line.split()[0], line.strip()[len(line.split()[0]):]
        if first.endswith("/") and indent - stack[-1][0] <= 2:
            while indent <= stack[-1][0]:
                stack.pop()
            current = f"{stack[-1][1]}{first}"
            stack.append((indent, current))
            entries[current] = rest
        elif first.endswith(".py") and indent == 6:
            current = ""
            entries[""] += f" {first} {rest}"
        else:
            entries[current] += " " + line.strip()
    return entries


def test_readme_map_names_every_module_in_its_own_folder():
    """The README's layout tree names every module under its own folder's entry, and every folder it names exists,
    so the map cannot go stale (a name in another folder's entry does not count)."""
    import re
    entries = readme_map()
    assert entries["data/pixels/"].startswith(" ") and "device_augment" in entries["data/pixels/"]  # the parse works
    assert "device_augment" not in entries["data/stores/"]
    missing = []
    for init in sorted(ENGINE.rglob("__init__.py")):
        folder = "" if init.parent == ENGINE else f"{init.parent.relative_to(ENGINE)}/"
        if folder not in entries:
            missing.append(f"engine/{folder} has no entry")
            continue
        stems = [q.stem for q in init.parent.glob("*.py") if q.stem not in ("__init__", "__main__")]
        names = [f"{s}.py" for s in stems] if folder == "" else stems
        missing += [f"engine/{folder}{n if n.endswith('.py') else n + '.py'}" for n in names
                    if not re.search(rf"(?<![\w/]){re.escape(n)}\b", entries[folder])]
    stale = [f"engine/{f}" for f in entries if f and not (ENGINE / f / "__init__.py").is_file()]
    assert not missing and not stale, f"the README's layout tree lacks {missing}; names folders that are gone: {stale}"


def test_every_package_docstring_names_its_modules():
    """Each package's docstring lists every job it has: a module (or room) it does not name is a stale map."""
    import re
    stale = []
    for init in sorted(ENGINE.rglob("__init__.py")):
        if init.parent == ENGINE:  # the root: the README map describes it
            continue
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        parts = [p.stem for p in init.parent.glob("*.py") if p.stem not in ("__init__", "__main__")]
        parts += [p.name for p in init.parent.iterdir() if (p / "__init__.py").is_file()]
        stale += [f"{init.relative_to(ROOT)}: {part}" for part in parts if not re.search(rf"\b{part}\b", doc)]
    assert not stale, "name these in the package docstring:\n" + "\n".join(stale)
