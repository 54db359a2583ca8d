"""The one rule for a path the user names as an output (predict --out, explore --write-clean, cam --out,
the report's files, a sweep's journal): write only to a new path, or over a file this same kind of
command wrote before. Never over an input, a run-folder file, a recipe, an image, a folder or anything
else the user owns; a refusal is one line saying why and which new path to use instead.

A command's earlier output is recognised by the ledger it keeps in the folder, `.sketchbook_outputs.json`
({file name: {"by": command, "size": bytes, "mtime_ns": ...}}: a file edited or replaced since no longer
matches), or by the command's own `recognise` test (a header, a name pattern) for outputs that predate it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable

from engine.errors import UserError
from engine.system.atomic import write_text

LEDGER = ".sketchbook_outputs.json"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp"}


def _what(path: Path) -> str:
    """What a file the command must not replace looks like, for the refusal."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "an image"
    if suffix == ".py":
        return "a recipe or other Python file"
    if suffix in (".pt", ".pth", ".ckpt", ".safetensors", ".npy"):
        return "a checkpoint or array"
    return "a file"


def _ledger(folder: Path) -> dict:
    try:
        return json.loads((folder / LEDGER).read_text())
    except (OSError, ValueError):
        return {}


def _stamp(path: Path) -> dict:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class OutputGuard:
    """The output rule for one command (`command`, e.g. "predict.py --out") and its input files."""

    def __init__(self, command: str, inputs: Iterable[str | Path | None] = (), example: str = "out.csv",
                 recognise: Callable[[Path], bool] = lambda path: False):
        self.command, self.example, self.recognise = command, example, recognise
        self.inputs = [Path(p).resolve() for p in inputs if p]

    def _instead(self, folder: Path) -> Path:
        stem, suffix = Path(self.example).stem, Path(self.example).suffix
        candidate, n = folder / self.example, 2
        while candidate.exists():
            candidate, n = folder / f"{stem}_{n}{suffix}", n + 1
        return candidate

    def check(self, path: str | Path) -> Path:
        """`path` if the command may write it; else a one-line UserError (why, and a new path to use)."""
        path = Path(path)
        if path.is_dir():
            raise UserError(f"{self.command} {path} is a folder; name a file in it, e.g. {self._instead(path)}")
        resolved = path.resolve()
        if resolved in self.inputs:
            raise UserError(f"{self.command} {path} is an input of this command; writing there would replace "
                            f"it: pick a new file, e.g. {self._instead(resolved.parent)}")
        if not path.exists() and not path.is_symlink():
            return path
        if path.is_file() and (self._in_ledger(path) or self.recognise(path)):
            return path
        raise UserError(f"{self.command} {path} exists and is {_what(path)} that {self.command.split()[0]} did not "
                        f"write; it is never replaced: pick a new file, e.g. {self._instead(resolved.parent)} "
                        f"(or delete {path} first if it may go)")

    def folder(self, path: str | Path, names: Iterable[str] = ()) -> Path:
        """The output folder `path`, made, with each of `names` in it checked; a file at `path` is one line
        (mkdir would be a traceback)."""
        folder = Path(path)
        if folder.exists() and not folder.is_dir():
            raise UserError(f"{self.command} {folder} is a file; it names a folder for the outputs, e.g. "
                            f"{folder.with_name(folder.stem + '_out')}")
        for name in names:
            self.check(folder / name)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _in_ledger(self, path: Path) -> bool:
        return ledger_entry(path).get("by") == self.command.split()[0]

    def wrote(self, *paths: str | Path, note: dict | None = None) -> None:
        """Note in each file's folder that this command wrote it, so that its next run may replace it (`note`:
        more to keep with each entry, e.g. what it was made from)."""
        by_folder: dict[Path, list[Path]] = {}
        for p in map(Path, paths):
            by_folder.setdefault(p.parent, []).append(p)
        for folder, written in by_folder.items():
            ledger = {name: entry for name, entry in _ledger(folder).items() if (folder / name).exists()}
            for p in written:
                ledger[p.name] = {"by": self.command.split()[0], **(note or {}), **_stamp(p)}
            try:
                write_text(folder / LEDGER, json.dumps(ledger, indent=0, sort_keys=True))
            except OSError:  # a read-only ledger only means the next run asks before replacing these files
                pass


def ledger_entry(path: str | Path) -> dict:
    """What the ledger says of a file a command wrote ({} when it did not, or the file changed since)."""
    path = Path(path)
    entry = _ledger(path.parent).get(path.name) or {}
    return entry if path.is_file() and {k: entry.get(k) for k in ("size", "mtime_ns")} == _stamp(path) else {}


def csv_header(path: Path) -> str:
    """The first line of a text file ('' if it cannot be read): how a CSV output is recognised."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline().strip()
    except OSError:
        return ""


def drawn_by_matplotlib(path: Path) -> bool:
    """Whether a file is a PNG that matplotlib drew (its text chunk says so): how a plot is recognised."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return False
    return head.startswith(b"\x89PNG") and b"Matplotlib" in head
