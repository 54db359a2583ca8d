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

from engine.errors import exit_process, run_command


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Class activation maps for a trained sketchbook model.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files or folders of images")
    p.add_argument("--ckpt", metavar="RUN_OR_CKPT", help="run folder or .pt file (default: newest run's best.pt)")
    p.add_argument("--runs", dest="runs_dir", default="runs", help="where to look for the newest run (default: runs)")
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
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available, else cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)

    def explain() -> None:
        from engine.cam.command import run_cam  # late: --help and argument errors answer before torch loads
        run_cam(**vars(args))
    return run_command(explain)


if __name__ == "__main__":
    exit_process(main())
