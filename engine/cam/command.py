"""Explain images with a checkpoint: load it, show each image the model's eval view, compute class activation
maps, write a PNG page per image plus cams.csv, or one grid of a run's most confident validation mistakes.

The command behind cam.py; maps come from engine.cam.gradcam, pages from engine.cam.figures, the checkpoint
and the eval view from engine.predict.inference (the same view validation and predict.py use).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from engine import run_folder
from engine.cam.figures import save_mistakes_grid, save_page
from engine.cam.gradcam import compute_cams, find_target_layer, ink_mass, list_layers, resolve_target
from engine.data.batches.loader import eval_dataset
from engine.data.pixels.images import load_image
from engine.errors import UserError
from engine.evaluate.predictions import confident_mistakes, read_predictions
from engine.predict.inference import Member, load_member, pick_device
from engine.system.atomic import write_csv
from engine.system.outputs import OutputGuard

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


def image_paths(items: Sequence[str]) -> list[Path]:
    """Image files, and every image file below the folders, in a stable order."""
    paths = []
    for item in map(Path, items):
        if item.is_dir():
            paths += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.is_file():
            paths.append(item)
        else:
            raise UserError(f"image '{item}' not found")
    if not paths:
        raise UserError("no images given (or the folders hold none); pass image files, folders or --mistakes RUN")
    return paths


def readable(paths: Sequence[Path]) -> list[Path]:
    """The images that decode; each one that does not is skipped with a warning (one bad file must not
    cost the rest of a folder)."""
    kept = []
    for p in paths:
        try:
            load_image(str(p))
            kept.append(p)
        except UserError:
            print(f"warning: skipping {p}: it could not be decoded", file=sys.stderr)
    if not kept:
        raise UserError(f"none of the {len(paths)} image(s) could be decoded")
    return kept


def page_names(paths: Sequence[Path]) -> list[str]:
    """File stems, made unique (a.png in two folders -> a, a_1)."""
    names, used = [], {}
    for p in paths:
        n = used.get(p.stem, 0)
        used[p.stem] = n + 1
        names.append(p.stem if n == 0 else f"{p.stem}_{n}")
    return names


def model_inputs(member: Member, paths: Sequence[Path]) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 batch exactly as the model sees it, normalised float batch on the model's device)."""
    views = eval_dataset([str(p) for p in paths], member.recipe.image_size, member.crop_pct)
    seen = torch.stack([views[i][0] for i in range(len(views))])
    return seen, member.normalize(seen.to(next(member.model.parameters()).device))


def explain_images(member: Member, paths: list[Path], out: Path, target: str | None = None,
                   method: str = "gradcam", layer: str | None = None, top_k: int = 1, batch_size: int = 16,
                   save_maps: bool = False, show_progress: bool = True) -> pd.DataFrame:
    """A page per image (and .npy maps with save_maps); returns one row per map for cams.csv."""

    classes, image_size = member.classes, member.recipe.image_size
    target_class = resolve_target(target, classes) if target is not None else None
    layer = layer or find_target_layer(member.model, image_size)
    rows, names = [], page_names(paths)
    with tqdm(total=len(paths), unit="img", disable=not show_progress or len(paths) <= batch_size,
              desc="cam") as bar:
        for start in range(0, len(paths), batch_size):
            batch = paths[start:start + batch_size]
            seen, x = model_inputs(member, batch)
            res = compute_cams(member.model, x, target_class, method, layer, top_k)
            for i, path in enumerate(batch):
                name, targets = names[start + i], res.targets[i].tolist()
                save_page(out / f"{name}_cam.png", seen[i], res.maps[i], targets, res.probs[i],
                          res.flat[i].tolist(), classes, str(path), member.background)
                if save_maps:
                    np.save(out / f"{name}_cam.npy", res.maps[i].numpy().astype(np.float32))
                for rank, cls in enumerate(targets):
                    on_ink, ink_area = ink_mass(res.maps[i, rank], seen[i], member.background)
                    rows.append({"image_path": str(path), "page": f"{name}_cam.png", "class": cls,
                                 "class_name": classes[cls], "prob": float(res.probs[i, cls]),
                                 "cam_on_ink": on_ink, "ink_area": ink_area, "flat": bool(res.flat[i, rank])})
            bar.update(len(batch))
    table = pd.DataFrame(rows)
    flat = int(table["flat"].sum())
    if flat:
        print(f"note: {flat} of {len(table)} maps were constant: layer '{layer}' is {res.grid[0]}x{res.grid[1]} "
              f"at {image_size} px; an earlier layer gives finer maps (--list-layers, --layer NAME)")
    return table


def explain_mistakes(run: Path, out: Path, count: int = 16, method: str = "gradcam", layer: str | None = None,
                     data_dir: str | None = None, batch_size: int = 16, device: str | None = None) -> Path:
    """One grid PNG: per confident mistake, the map of the predicted and of the true class."""
    table, _ = read_predictions(run)
    wrong = confident_mistakes(table, count)
    if wrong.empty:
        raise UserError(f"no wrong predictions in '{run}': nothing to show")
    cells, classes = {}, []
    for fold, group in wrong.groupby("fold"):
        member = load_member(run_folder.resolve_checkpoint(run, run_folder.BEST, int(fold)), pick_device(device))
        classes, root = member.classes, Path(data_dir or member.recipe.data_dir)
        paths = [root / p for p in group["image_path"]]
        if not paths[0].is_file():
            raise UserError(f"'{paths[0]}' not found: pass the folder the image paths are relative to with --data-dir")
        for start in range(0, len(paths), batch_size):
            part = group.iloc[start:start + batch_size]
            seen, x = model_inputs(member, paths[start:start + batch_size])
            pairs = torch.tensor(part[["pred", "target"]].to_numpy(dtype=np.int64).copy())
            res = compute_cams(member.model, x, pairs, method, layer)
            for i, index in enumerate(part.index):
                cells[index] = {"image": seen[i], "pred_map": res.maps[i, 0], "true_map": res.maps[i, 1],
                                "pred": int(pairs[i, 0]), "target": int(pairs[i, 1]), "probs": res.probs[i],
                                "name": Path(part.at[index, "image_path"]).name}
    path = out / "mistakes.png"
    save_mistakes_grid(path, [cells[i] for i in wrong.index], classes)
    return path


def print_layers(member: Member) -> None:
    """The layers a map can come from, the automatic choice starred."""
    model, size = member.model, member.recipe.image_size
    auto = find_target_layer(model, size)
    print(f"layers of {member.recipe.model} at {size} px (* = automatic choice):")
    for name, kind, shape in list_layers(model, size):
        print(f"{'*' if name == auto else ' '} {name:<40} {kind:<24} {'x'.join(map(str, shape[1:]))}")


def _cam_wrote(path: Path) -> bool:
    """A file an earlier cam.py wrote, by its name: a page, a map, the table, the mistakes grid."""
    return path.name.endswith(("_cam.png", "_cam.npy")) or path.name in ("cams.csv", "mistakes.png")


def output_guard(inputs: Sequence[Path]) -> OutputGuard:
    """cam.py's output rule: a new file or one cam.py wrote; never an image it explains."""
    return OutputGuard("cam.py --out", inputs, example="cams", recognise=_cam_wrote)


def run_cam(images: Sequence[str] = (), ckpt: str | None = None, runs_dir: str = "runs", target: str | None = None,
            top_k: int = 1, method: str = "gradcam", layer: str | None = None, list_layers: bool = False,
            out: str | None = None, save_maps: bool = False, mistakes: str | None = None, count: int = 16,
            data_dir: str | None = None, batch_size: int = 16, device: str | None = None,
            no_progress: bool = False) -> None:
    """Everything cam.py does (its options, by name): pages + cams.csv, --list-layers, or the --mistakes grid."""
    if top_k < 1 or batch_size < 1 or count < 1:
        raise UserError("--top-k, --batch-size and --count must be at least 1")
    if mistakes:
        guard = output_guard([])
        folder = guard.folder(out or Path(mistakes) / "cams", ["mistakes.png"])
        guard.wrote(explain_mistakes(Path(mistakes), folder, count, method, layer, data_dir, batch_size, device))
        print(f"wrote {folder / 'mistakes.png'}")
        return
    path = run_folder.resolve_checkpoint(ckpt or run_folder.newest_run(runs_dir), run_folder.BEST)
    member = load_member(path, pick_device(device))
    if list_layers:
        print_layers(member)
        return
    paths = readable(image_paths(images))
    guard = output_guard(paths)  # every file is checked before the first map: a refusal costs nothing
    names = [f"{name}{suffix}" for name in page_names(paths) for suffix in ("_cam.png", "_cam.npy")[:1 + save_maps]]
    folder = guard.folder(out or run_folder.output_folder_of(path) / "cams", names + ["cams.csv"])
    pages = [folder / name for name in names + ["cams.csv"]]
    print(f"{path}: {member.recipe.model}, {len(member.classes)} classes, {method}, ink: what differs from the "
          f"paper {member.background}")
    table = explain_images(member, paths, folder, target, method, layer, top_k, batch_size, save_maps, not no_progress)
    write_csv(table, folder / "cams.csv")
    guard.wrote(*pages)
    on_ink = table.loc[~table["flat"], "cam_on_ink"]
    print(f"wrote {len(paths)} page(s) and cams.csv to {folder}/; " + (
        f"median share of the map on ink {on_ink.median():.0%} (ink covers {table['ink_area'].median():.0%} "
        f"of pixels)" if len(on_ink) else "no map had spatial signal"))
