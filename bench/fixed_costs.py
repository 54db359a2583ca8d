"""Whole-process wall time of a short training run: `python train.py` vs a bare PyTorch script vs
PyTorch Lightning, each a fresh process, interleaved rounds, medians.

Same work for all: resnet18 (timm, random init), the digits demo at 64 px, batch 64, fp32, AdamW, 2
loader workers, 2 epochs, the worker path's 'light' augmentation, validation after each epoch and the
weights saved once. What differs is what each adds around the loop (the engine: audit, logs,
durable best.pt / last.pt every epoch, the report; Lightning: its default checkpoint).

    python bench/fixed_costs.py                    # 3 rounds
    python bench/fixed_costs.py --rounds 1 --epochs 1 --only engine bare   # smoke test
    python bench/fixed_costs.py --timeline         # one run each, every output line with its time stamp
    python bench/fixed_costs.py --startup          # each command's --help vs importing its body (the late import)
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = dict(model="resnet18", image_size=64, batch_size=64, lr=1e-3, workers=2)


def engine_cmd(data: Path, out: Path, epochs: int) -> list[str]:
    s = SETTINGS
    return [sys.executable, "train.py", "recipes/demo.py", f"data_dir='{data}/train'", f"train_csv='{data}/train.csv'",
            f"test_dir='{data}/test'", f"test_csv='{data}/test.csv'", f"model={s['model']}",
            f"image_size={s['image_size']}", f"batch_size={s['batch_size']}", f"lr={s['lr']}", "precision='fp32'",
            f"num_workers={s['workers']}", f"epochs={epochs}", "augment_on='workers'", f"output_dir='{out}'",
            "--no-progress"]


def bare(data: Path, out: Path, epochs: int, lightning: bool) -> None:
    """The script anyone would write (or its LightningModule twin); runs in its own process."""
    import pandas as pd
    import timm
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, Dataset
    from torchvision.io import decode_image
    from torchvision.transforms import v2

    s = SETTINGS
    table = pd.read_csv(data / "train.csv").sample(frac=1.0, random_state=0)
    n_val = len(table) // 5
    size = s["image_size"]
    train_tf = v2.Compose([v2.RandomResizedCrop(size, scale=(0.6, 1.0), antialias=True), v2.RandomHorizontalFlip(),
                           v2.RandomAffine(degrees=10, translate=(0.06, 0.06), scale=(0.9, 1.1), shear=5, fill=255)])
    eval_tf = v2.Compose([v2.Resize(int(size / 0.875), antialias=True), v2.CenterCrop(size)])

    class Images(Dataset):
        def __init__(self, rows, tf):
            self.paths, self.targets, self.tf = [str(data / "train" / p) for p in rows["image_path"]], list(rows["target"]), tf

        def __len__(self):
            return len(self.paths)

        def __getitem__(self, i):
            return self.tf(decode_image(self.paths[i], mode=torchvision_rgb())), self.targets[i]

    def torchvision_rgb():
        from torchvision.io import ImageReadMode
        return ImageReadMode.RGB

    kw = dict(batch_size=s["batch_size"], num_workers=s["workers"], persistent_workers=True)
    train_dl = DataLoader(Images(table[n_val:], train_tf), shuffle=True, drop_last=True, **kw)
    val_dl = DataLoader(Images(table[:n_val], eval_tf), **kw)
    model = timm.create_model(s["model"], pretrained=False, num_classes=10)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255

    def step(x, y):
        return F.cross_entropy(model((x.float() - mean) / std), y)

    if lightning:
        import lightning as L

        class Module(L.LightningModule):
            def __init__(self):
                super().__init__()
                self.model = model

            def training_step(self, batch, _):
                return step(*batch)

            def validation_step(self, batch, _):
                self.log("val_loss", step(*batch))

            def configure_optimizers(self):
                return torch.optim.AdamW(self.parameters(), lr=s["lr"], weight_decay=0.05)

        L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                  enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(out)).fit(
            Module(), train_dl, val_dl)
        return
    opt = torch.optim.AdamW(model.parameters(), lr=s["lr"], weight_decay=0.05)
    for epoch in range(epochs):
        model.train()
        for x, y in train_dl:
            loss = step(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            correct = sum(int((model((x.float() - mean) / std).argmax(1) == y).sum()) for x, y in val_dl)
        print(f"epoch {epoch + 1} val acc {correct / n_val:.3f}", flush=True)
    torch.save(model.state_dict(), out / "model.pt")


# each command line: its entry, and the body module its entry imports only after the arguments parse
ENTRIES = {"train.py": "engine.train.orchestrator", "predict.py": "engine.predict.command", "cam.py": "engine.cam.command",
           "sweep.py": "engine.sweep.command", "-m engine.explore": "engine.explore.analysis",
           "-m engine.report": "engine.evaluate.report_figures"}


def startup(rounds: int) -> None:
    """What the entries' late imports buy: `--help` (and any argument error) answers in the first column's time;
    importing the command body first would add the second column's."""
    def wall(cmd: list[str]) -> float:
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, capture_output=True, check=True)
        return time.perf_counter() - t0
    rows = {e: ([], []) for e in ENTRIES}
    for _ in range(rounds):  # interleaved: a slow moment of the machine hits every command alike
        for entry, body in ENTRIES.items():
            rows[entry][0].append(wall([sys.executable, *entry.split(), "--help"]))
            rows[entry][1].append(wall([sys.executable, "-c", f"import {body}"]))
    print(f"{'command':<20} {'--help s (median)':>18} {'import body s (median)':>23}")
    for entry, (helps, imports) in rows.items():
        print(f"{entry:<20} {statistics.median(helps):>18.2f} {statistics.median(imports):>23.2f}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--only", nargs="*", default=["engine", "bare", "lightning"])
    p.add_argument("--baseline", type=Path, help="another checkout of the engine, timed as contender 'baseline'")
    p.add_argument("--timeline", action="store_true", help="run each contender once, time-stamping its output lines")
    p.add_argument("--startup", action="store_true", help="each command's --help vs importing its body, medians")
    p.add_argument("--run", choices=["bare", "lightning"], help=argparse.SUPPRESS)  # one contender, in this process
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.run:
        return bare(args.data, args.out, args.epochs, args.run == "lightning")
    if args.startup:
        return startup(args.rounds)
    work = Path(tempfile.mkdtemp(prefix="sketchbook-fixed-"))
    sys.path.insert(0, str(ROOT))
    from engine.data.tables.demo_digits import build_demo_data
    data = build_demo_data(work / "demo")
    commands = {"engine": lambda out: engine_cmd(data, out, args.epochs),
                "bare": lambda out: [sys.executable, __file__, "--run", "bare", "--data", str(data), "--out", str(out),
                                     "--epochs", str(args.epochs)],
                "lightning": lambda out: [sys.executable, __file__, "--run", "lightning", "--data", str(data), "--out",
                                          str(out), "--epochs", str(args.epochs)]}
    if args.baseline:  # e.g. main before this change: same command, run in that checkout
        commands["baseline"] = lambda out: [a for a in engine_cmd(data, out, args.epochs) if "augment_on" not in a]
        args.only.append("baseline")
    names = [n for n in commands if n in args.only]
    if args.timeline:  # where the seconds go: audit, folds, each epoch, the report, the exit
        for name in names:
            print(f"\n{name}:")
            (out := work / f"{name}-timeline").mkdir()
            timeline(commands[name](out), args.baseline if name == "baseline" else ROOT)
        return
    walls, cpus = {n: [] for n in names}, {n: [] for n in names}
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            out = work / f"{name}-{r}"
            out.mkdir()
            t0, cpu0 = time.perf_counter(), children_cpu()
            cwd = args.baseline if name == "baseline" else ROOT
            done = subprocess.run(commands[name](out), cwd=cwd, capture_output=True, text=True)
            walls[name].append(time.perf_counter() - t0)
            cpus[name].append(children_cpu() - cpu0)  # the process and its loader workers, user + system
            if done.returncode:
                sys.exit(f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        print(f"round {r + 1}/{args.rounds}: " + "  ".join(f"{n} {walls[n][-1]:.1f}s" for n in names),
              file=sys.stderr, flush=True)
    base = statistics.median(walls["bare"]) if "bare" in walls else None
    print(f"\nwhole process, {SETTINGS['model']} {SETTINGS['image_size']} px, batch {SETTINGS['batch_size']}, fp32, "
          f"{SETTINGS['workers']} workers, {args.epochs} epochs, {args.rounds} interleaved rounds")
    print(f"{'contender':<10} {'wall s (median)':>16} {'min':>7} {'max':>7} {'vs bare':>8} {'paired':>7} "
          f"{'CPU s (median)':>15}")
    for name in names:
        m = statistics.median(walls[name])
        # paired: the median of each round's ratio, steadier when the machine's speed drifts between rounds
        paired = statistics.median(w / b for w, b in zip(walls[name], walls["bare"])) if base else None
        print(f"{name:<10} {m:>16.1f} {min(walls[name]):>7.1f} {max(walls[name]):>7.1f} "
              f"{(f'{m / base:.3f}x' if base else '-'):>8} {(f'{paired:.3f}x' if base else '-'):>7} "
              f"{statistics.median(cpus[name]):>15.1f}")


def timeline(command: list[str], cwd: Path) -> None:
    """Run `command`, printing each line it writes with the seconds since it started, then its exit."""
    t0 = time.perf_counter()
    with subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}) as process:
        for line in process.stdout:
            print(f"{time.perf_counter() - t0:7.2f}  {line.rstrip()[:110]}", flush=True)
    print(f"{time.perf_counter() - t0:7.2f}  (exit {process.returncode})")


def children_cpu() -> float:
    """User + system CPU seconds of every finished child process (and theirs) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
