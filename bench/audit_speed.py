"""Seconds the training data audit takes over N sketch JPEGs (500 x 400, ink strokes on white paper),
where every JPEG is decoded once in full to catch damage in the middle (issue 18), as medians of
interleaved rounds. --engine DIR times another checkout's audit (e.g. one before the full decode).

    python bench/audit_speed.py --images 2000 --rounds 3
    python bench/audit_speed.py --images 2000 --rounds 3 --engine /path/to/old/checkout
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
TIMED = """
import sys, time
sys.path.insert(0, sys.argv[1])
import pandas as pd
from engine.data.tables.audit import audit_table
table = pd.read_csv(sys.argv[2]); table["path"] = [sys.argv[3] + "/" + p for p in table["image_path"]]
start = time.perf_counter(); audit = audit_table(table); print(time.perf_counter() - start, len(audit.problems))
"""


def make_images(folder: Path, n: int) -> Path:
    import numpy as np
    from PIL import Image, ImageDraw
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        image = Image.new("L", (500, 400), 255)
        draw = ImageDraw.Draw(image)
        for _ in range(30):
            draw.line([tuple(rng.integers(0, 400, 2).tolist()) for _ in range(2)], fill=0, width=3)
        image.convert("RGB").save(folder / f"{i:05d}.jpg", quality=90)
        rows.append(f"c{i % 10},{i:05d}.jpg,{i % 10}")
    csv = folder / "train.csv"
    csv.write_text("class_name,image_path,target\n" + "\n".join(rows) + "\n")
    return csv


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--engine", action="append", default=[], help="another checkout to time as well")
    args = p.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="audit_speed_"))
    try:
        csv = make_images(folder, args.images)
        times = {str(e): [] for e in [HERE, *args.engine]}
        for _ in range(args.rounds):
            for engine in times:
                out = subprocess.run([sys.executable, "-c", TIMED, engine, str(csv), str(folder)],
                                     capture_output=True, text=True, check=True).stdout.split()
                times[engine].append(float(out[0]))
        for engine, values in times.items():
            print(f"{engine}: median {statistics.median(values):.2f} s for {args.images} JPEGs "
                  f"({1e3 * statistics.median(values) / args.images:.2f} ms each)")
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
