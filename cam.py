"""Where does the model look? Class activation maps (GradCAM, GradCAM++, LayerCAM) from a checkpoint.

    python cam.py img.png                               # newest run's best model, predicted class
    python cam.py a.png b.png --target cat --method gradcam++ --out cams/
    python cam.py some/folder --top-k 3 --save-maps      # every image in the folder, 3 classes each
    python cam.py --mistakes runs/resnext/20260101-120000  # the run's most confident validation mistakes
    python cam.py --list-layers                          # layers a map can come from
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from engine.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Class activation maps for a trained sketchbook model.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files or folders of images")
    p.add_argument("--ckpt", metavar="RUN_OR_CKPT", help="run folder or .pt file (default: newest run's best.pt)")
    p.add_argument("--runs", default="runs", help="where to look for the newest run (default: runs)")
    p.add_argument("--target", help="class to explain, by index or name (default: the predicted class)")
    p.add_argument("--top-k", type=int, default=1, help="explain each image's K most likely classes (default 1)")
    p.add_argument("--method", default="gradcam", choices=("gradcam", "gradcam++", "layercam"))
    p.add_argument("--layer", help="layer the map comes from (default: the last spatial feature map)")
    p.add_argument("--list-layers", action="store_true", help="print the layers a map can come from, then stop")
    p.add_argument("--out", help="output folder (default: cams/ in the run folder)")
    p.add_argument("--save-maps", action="store_true", help="also save each image's raw maps as .npy (K x H x W)")
    p.add_argument("--mistakes", metavar="RUN", help="one grid of the run's most confident validation mistakes")
    p.add_argument("--count", type=int, default=16, help="how many mistakes to show (default 16)")
    p.add_argument("--data-dir", help="with --mistakes: folder the image paths are relative to (default: the recipe's)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


@dataclass
class Explainer:
    """A checkpoint's model with exactly its eval view: transform (uint8 -> uint8) and normalisation."""
    model: torch.nn.Module
    transform: object
    normalize: torch.nn.Module
    classes: list[str]
    recipe: object
    run_dir: Path

    def inputs(self, paths: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 batch as the model sees it, normalised float batch on the model's device)."""
        from engine.images import load_image
        seen = torch.stack([self.transform(load_image(str(p))) for p in paths])
        device = next(self.model.parameters()).device
        return seen, self.normalize(seen.to(device))


def load_explainer(ckpt_path: Path, device: str) -> Explainer:
    """Model, eval transform and classes from a checkpoint, in fp32 on `device`."""
    from engine.checkpoint import load_checkpoint
    from engine.models import build_model, data_config
    from engine.recipe import from_dict
    from engine.transforms import Normalize, build_eval_transform
    ckpt = load_checkpoint(ckpt_path)
    recipe, classes = from_dict(ckpt["recipe"]), list(ckpt["classes"])
    model = build_model(recipe.model, len(classes))
    model.load_state_dict({k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})
    channels_last = recipe.channels_last if recipe.channels_last is not None else device.startswith("cuda")
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format).eval()
    data = ckpt.get("data") or data_config(model)
    normalize = Normalize(data["mean"], data["std"], channels_last).to(device)
    run_dir = ckpt_path.parent.parent if ckpt_path.parent.name.startswith("fold") else ckpt_path.parent
    return Explainer(model, build_eval_transform(recipe.image_size, data["crop_pct"]), normalize, classes, recipe, run_dir)


def image_paths(items: list[str]) -> list[Path]:
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


def page_names(paths: list[Path]) -> list[str]:
    """File stems, made unique (a.png in two folders -> a, a_1)."""
    names, used = [], {}
    for p in paths:
        n = used.get(p.stem, 0)
        used[p.stem] = n + 1
        names.append(p.stem if n == 0 else f"{p.stem}_{n}")
    return names


def explain_images(ex: Explainer, paths: list[Path], args: argparse.Namespace, out: Path) -> pd.DataFrame:
    """A page per image (and .npy maps with --save-maps); returns one row per map for cams.csv."""
    from tqdm import tqdm

    from engine.cam_figures import save_page
    from engine.gradcam import compute_cams, find_target_layer, ink_mass, resolve_target
    target = resolve_target(args.target, ex.classes) if args.target is not None else None
    layer = args.layer or find_target_layer(ex.model, ex.recipe.image_size)
    rows, names = [], page_names(paths)
    with tqdm(total=len(paths), unit="img", disable=args.no_progress or len(paths) <= args.batch_size,
              desc="cam") as bar:
        for start in range(0, len(paths), args.batch_size):
            batch = paths[start:start + args.batch_size]
            seen, x = ex.inputs(batch)
            res = compute_cams(ex.model, x, target, args.method, layer, args.top_k)
            for i, path in enumerate(batch):
                name, targets = names[start + i], res.targets[i].tolist()
                save_page(out / f"{name}_cam.png", seen[i], res.maps[i], targets, res.probs[i],
                          res.flat[i].tolist(), ex.classes, str(path))
                if args.save_maps:
                    np.save(out / f"{name}_cam.npy", res.maps[i].numpy().astype(np.float32))
                for rank, cls in enumerate(targets):
                    on_ink, ink_area = ink_mass(res.maps[i, rank], seen[i])
                    rows.append({"image_path": str(path), "page": f"{name}_cam.png", "class": cls,
                                 "class_name": ex.classes[cls], "prob": float(res.probs[i, cls]),
                                 "cam_on_ink": on_ink, "ink_area": ink_area, "flat": bool(res.flat[i, rank])})
            bar.update(len(batch))
    table = pd.DataFrame(rows)
    flat = int(table["flat"].sum())
    if flat:
        print(f"note: {flat} of {len(table)} maps were constant: layer '{layer}' is {res.grid[0]}x{res.grid[1]} "
              f"at {ex.recipe.image_size} px; an earlier layer gives finer maps (--list-layers, --layer NAME)")
    return table


def load_predictions(run: Path) -> pd.DataFrame:
    """The run's out-of-fold predictions (oof.csv) or every fold's val_predictions.csv, with a fold column."""
    if (run / "oof.csv").is_file():
        table = pd.read_csv(run / "oof.csv")
        table["fold"] = table["fold"] if "fold" in table else 0
    else:
        files = sorted(run.glob("fold*/val_predictions.csv"))
        if not files:
            raise UserError(f"no oof.csv or fold*/val_predictions.csv in '{run}'; pass a run folder")
        table = pd.concat([pd.read_csv(f).assign(fold=int(f.parent.name[4:])) for f in files], ignore_index=True)
    missing = {"image_path", "target", "pred", "confidence"} - set(table.columns)
    if missing:
        raise UserError(f"predictions in '{run}' lack columns {sorted(missing)}")
    return table


def explain_mistakes(run: Path, args: argparse.Namespace, out: Path) -> Path:
    """One grid PNG: per confident mistake, the map of the predicted and of the true class."""
    from engine.cam_figures import save_mistakes_grid
    from engine.checkpoint import resolve_checkpoint
    from engine.gradcam import compute_cams
    table = load_predictions(run)
    wrong = table[table["pred"] != table["target"]].sort_values("confidence", ascending=False).head(args.count)
    if wrong.empty:
        raise UserError(f"no wrong predictions in '{run}': nothing to show")
    cells, classes = {}, []
    for fold, group in wrong.groupby("fold"):
        ex = load_explainer(resolve_checkpoint(run, "best.pt", int(fold)), args.device)
        classes, data_dir = ex.classes, Path(args.data_dir or ex.recipe.data_dir)
        paths = [data_dir / p for p in group["image_path"]]
        if not paths[0].is_file():
            raise UserError(f"'{paths[0]}' not found: pass the folder the image paths are relative to with --data-dir")
        for start in range(0, len(paths), args.batch_size):
            part = group.iloc[start:start + args.batch_size]
            seen, x = ex.inputs(paths[start:start + args.batch_size])
            pairs = torch.tensor(part[["pred", "target"]].to_numpy(dtype=np.int64).copy())
            res = compute_cams(ex.model, x, pairs, args.method, args.layer)
            for i, index in enumerate(part.index):
                cells[index] = {"image": seen[i], "pred_map": res.maps[i, 0], "true_map": res.maps[i, 1],
                                "pred": int(pairs[i, 0]), "target": int(pairs[i, 1]), "probs": res.probs[i],
                                "name": Path(part.at[index, "image_path"]).name}
    path = out / "mistakes.png"
    save_mistakes_grid(path, [cells[i] for i in wrong.index], classes)
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.top_k < 1 or args.batch_size < 1 or args.count < 1:
            raise UserError("--top-k, --batch-size and --count must be at least 1")
        from engine.checkpoint import newest_run, resolve_checkpoint
        if args.mistakes:
            out = Path(args.out or Path(args.mistakes) / "cams")
            out.mkdir(parents=True, exist_ok=True)
            print(f"wrote {explain_mistakes(Path(args.mistakes), args, out)}")
            return 0
        ckpt = resolve_checkpoint(args.ckpt or newest_run(args.runs), "best.pt")
        ex = load_explainer(ckpt, args.device)
        if args.list_layers:
            from engine.gradcam import find_target_layer, list_layers
            auto = find_target_layer(ex.model, ex.recipe.image_size)
            print(f"layers of {ex.recipe.model} at {ex.recipe.image_size} px (* = automatic choice):")
            for name, kind, shape in list_layers(ex.model, ex.recipe.image_size):
                print(f"{'*' if name == auto else ' '} {name:<40} {kind:<24} {'x'.join(map(str, shape[1:]))}")
            return 0
        paths = image_paths(args.images)
        out = Path(args.out or ex.run_dir / "cams")
        out.mkdir(parents=True, exist_ok=True)
        print(f"{ckpt}: {ex.recipe.model}, {len(ex.classes)} classes, {args.method}")
        table = explain_images(ex, paths, args, out)
        tmp = out / ".cams.csv.tmp"
        table.to_csv(tmp, index=False)
        tmp.replace(out / "cams.csv")
        on_ink = table.loc[~table["flat"], "cam_on_ink"]
        print(f"wrote {len(paths)} page(s) and cams.csv to {out}/; " + (
            f"median share of the map on ink {on_ink.median():.0%} (ink covers {table['ink_area'].median():.0%} "
            f"of pixels)" if len(on_ink) else "no map had spatial signal"))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
