"""DDP on CPU with gloo under `torchrun --nproc_per_node=2`: same update as one big batch, exact
validation, and a failing rank takes the whole job down quickly instead of hanging."""
import json
import subprocess
import sys
import time

import torch

from tests.conftest import ROOT, digits_recipe


def torchrun(args, timeout=240):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


def train_args(digits_dir, out, batch_size):  # SGD: Adam would amplify float-order noise in tiny grads
    return ["train.py", "--no-progress", "model=test_vit", f"data_dir='{digits_dir}/train'",  # no batch-norm
            f"train_csv='{digits_dir}/train.csv'", "image_size=32", f"batch_size={batch_size}", "epochs=1",
            "num_workers=0", "optimizer=SGD", "lr=0.05", f"output_dir='{out}'"]


def last_weights(out):
    return torch.load(next(out.glob("*/*/fold0/last.pt")), weights_only=True)["model"]


def test_two_ranks_of_batch_b_equal_one_process_of_batch_2b(digits_dir, tmp_path):
    two = torchrun(train_args(digits_dir, tmp_path / "two", 16))
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, *train_args(digits_dir, tmp_path / "one", 32)], cwd=ROOT,
                         capture_output=True, text=True, timeout=240)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = last_weights(tmp_path / "two"), last_weights(tmp_path / "one")
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5), name
    assert two.stdout.count("epoch   1/1") == 1  # rank 1 prints nothing


def test_validation_over_two_ranks_equals_one(trained_run, tmp_path):
    ckpt = trained_run / "fold0" / "best.pt"
    two = torchrun([str(ROOT / "tests" / "ddp_script.py"), "evaluate", str(ckpt), str(tmp_path / "two.json")])
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "tests/ddp_script.py", "evaluate", str(ckpt), str(tmp_path / "one.json")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("two.json", "one.json"))
    n_val = len((trained_run / "fold0" / "val_predictions.csv").read_text().splitlines()) - 1
    assert a["n"] == b["n"] == n_val  # every validation row once: none padded in, none dropped
    assert a["acc"] == b["acc"] and abs(a["loss"] - b["loss"]) < 1e-6
    assert torch.allclose(torch.tensor(a["probs"]), torch.tensor(b["probs"]), atol=1e-6)


def test_a_failing_rank_stops_every_rank_quickly_with_its_error(digits_dir, tmp_path):
    start = time.time()
    run = torchrun([str(ROOT / "tests" / "ddp_script.py"), "fail", *train_args(digits_dir, tmp_path, 16)[1:]],
                   timeout=180)
    assert run.returncode != 0
    assert time.time() - start < 120
    assert "boom from rank 1" in run.stdout + run.stderr


def test_images_resident_on_each_rank_train_as_the_device_canvas_does(digits_dir, tmp_path):
    """Under torchrun each rank holds its images on its device and warps the batches its sampler gives it,
    with the same draws as the canvas path (the pixels are the same, so the weights are)."""
    runs = {}
    for path, keys in (("canvas", ["augment_on='device'", "cache='none'"]), ("resident", ["cache='device'"])):
        run = torchrun(train_args(digits_dir, tmp_path / path, 16) + keys + ["random_erase=0.3", "flip='hv'"])
        assert run.returncode == 0, run.stderr[-3000:]
        assert ("images resident on the device" in run.stdout) == (path == "resident")
        runs[path] = last_weights(tmp_path / path)
    for name in runs["canvas"]:
        assert torch.allclose(runs["canvas"][name], runs["resident"][name], atol=1e-6), name
