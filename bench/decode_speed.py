"""Microseconds `engine.data.pixels.images.load_image` takes per image (thread CPU time, median of interleaved rounds)
for a 32 x 32 digit PNG (grey) and a 500 x 400 JPEG sketch; --engine DIR times another checkout's decoder.

    python bench/decode_speed.py --rounds 7
    python bench/decode_speed.py --rounds 7 --engine /path/to/old/checkout
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
TIMED = """
import sys, time
sys.path.insert(0, sys.argv[1])
from engine.data.pixels.images import load_image
for path in sys.argv[2:]:
    load_image(path)  # warm-up: imports and the first call's set-up
    n = 2000
    start = time.thread_time()
    for _ in range(n):
        load_image(path)
    print(path, 1e6 * (time.thread_time() - start) / n)
"""


def make_images(folder: Path) -> list[str]:
    """A digit PNG (32 x 32 grey, as the demo writes) and a 500 x 400 JPEG of dark strokes on white."""
    import numpy as np
    from PIL import Image, ImageDraw
    rng = np.random.default_rng(0)
    digit = Image.fromarray((255 * (1 - rng.random((8, 8)) ** 3)).astype(np.uint8)).resize((32, 32), Image.BILINEAR)
    digit.save(folder / "digit.png")
    sketch = Image.new("RGB", (500, 400), "white")
    draw = ImageDraw.Draw(sketch)
    for _ in range(30):
        draw.line([tuple(rng.integers(0, 400, 2)) for _ in range(4)], fill=(20, 20, 20), width=4)
    sketch.save(folder / "sketch.jpg", quality=90)
    return [str(folder / "digit.png"), str(folder / "sketch.jpg")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--engine", default=str(HERE), help="checkout whose engine is timed")
    parser.add_argument("--baseline", default=None, help="a second checkout, timed in the same rounds")
    args = parser.parse_args()
    engines = {"this": args.engine} | ({"baseline": args.baseline} if args.baseline else {})
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_images(Path(tmp))
        times: dict[tuple[str, str], list[float]] = {}
        for r in range(args.rounds):
            for name, root in engines.items():
                out = subprocess.run([sys.executable, "-c", TIMED, root, *paths], check=True,
                                     capture_output=True, text=True).stdout
                for line in out.splitlines():
                    path, us = line.rsplit(" ", 1)
                    times.setdefault((name, Path(path).name), []).append(float(us))
            print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
    print("| engine | image | us/image (median) | min | max |\n|---|---|---:|---:|---:|")
    for (name, image), us in times.items():
        print(f"| {name} | {image} | {statistics.median(us):.1f} | {min(us):.1f} | {max(us):.1f} |")


if __name__ == "__main__":
    main()
