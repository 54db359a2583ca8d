"""The decode-once cache: same tensors as decoding, never a stale or foreign store, one shared copy."""
import gc
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from engine.data.stores.image_cache import cache_short_side, image_loader, open_store, cache_folder_name, store_settings
from engine.data.batches.loader import ImageDataset
from engine.data.batches.loader import build_datasets
from engine.recipe import load_recipe

SIZE = 32  # image_size of the tests: images are pre-resized to a shorter side of 36 px


@pytest.fixture(autouse=True)
def disk_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SKETCHBOOK_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def write_image(path, seed, size, mode="RGB", fmt="PNG"):
    rng = np.random.default_rng(seed)
    w, h = size
    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    pixels[h // 3: h // 2, :] = 0  # a stroke, so resizing has edges to get right
    Image.fromarray(pixels).convert(mode).save(path, fmt)


@pytest.fixture
def data(tmp_path):
    """24 images of varied sizes and kinds (RGB, grayscale, JPEG), most larger than the cached size."""
    root = tmp_path / "data"
    root.mkdir()
    rows = []
    for i in range(24):
        kind = [("RGB", "PNG", ".png"), ("L", "PNG", ".png"), ("RGB", "JPEG", ".jpg")][i % 3]
        path = root / f"{i}{kind[2]}"
        write_image(path, i, (20 + 7 * i, 90 - 2 * i), kind[0], kind[1])
        rows.append((str(path), i % 2))
    return root, pd.DataFrame(rows, columns=["path", "target"])


def recipe_for(root, **changes):
    return load_recipe(None, {"data_dir": str(root), "image_size": SIZE, "model": "test_resnet", **changes})


def all_items(ds: Dataset, epoch: int) -> torch.Tensor:
    return torch.stack([ds[(epoch, i)][0] for i in range(len(ds))])


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_cached_and_uncached_pipelines_give_identical_tensors(data, mode):
    root, table = data
    train, val = table.iloc[:16], table.iloc[16:]
    plain = build_datasets(recipe_for(root, cache="none"), train, val, 0.875, fold=0)
    cached = build_datasets(recipe_for(root, cache=mode), train, val, 0.875, fold=0)
    for plain_ds, cached_ds in zip(plain, cached):  # train (random crops, flips, affine), then eval
        for epoch in (0, 3):
            assert torch.equal(all_items(plain_ds, epoch), all_items(cached_ds, epoch))
    shapes = [cached[0].loader(i).shape for i in range(16)]
    assert min(min(s[1:]) for s in shapes) < 36 and max(min(s[1:]) for s in shapes) == 36  # resize happened


def test_cache_for_other_resize_or_data_is_not_used(data, disk_cache):
    root, table = data
    paths = list(table["path"])
    small = open_store("disk", str(root), cache_short_side(SIZE, 0.875)).ensure(paths, 1, False)
    assert max(min(small(i).shape[1:]) for i in range(len(paths))) == 36
    recipe = recipe_for(root, cache="disk", image_size=48)
    expected = image_loader(recipe_for(root, cache="none", image_size=48), paths, 0.875)
    # a foreign store (built for 36 px) sitting where the 54 px store belongs is detected and rebuilt
    bigger = disk_cache / cache_folder_name(store_settings(str(root), cache_short_side(48, 0.875)))
    shutil.copytree(disk_cache / cache_folder_name(store_settings(str(root), 36)), bigger)
    messages = []
    store = open_store("disk", str(root), cache_short_side(48, 0.875), messages.append)
    loader = store.ensure(paths, 1, False)
    assert any("other settings" in m for m in messages)
    assert all(torch.equal(loader(i), expected(i)) for i in range(len(paths)))
    assert all(torch.equal(image_loader(recipe, paths, 0.875)(i), expected(i)) for i in range(len(paths)))
    # a copy of the data in another folder gets a store of its own
    other = root.parent / "other"
    shutil.copytree(root, other)
    write_image(other / "0.png", 99, (20, 90))
    other_paths = [str(other / os.path.basename(p)) for p in paths]
    fresh = image_loader(recipe_for(other, cache="disk"), other_paths, 0.875)
    assert not torch.equal(fresh(0), small(0)) and torch.equal(fresh(1), small(1))


def test_changed_image_invalidates_only_its_entry(data, disk_cache):
    root, table = data
    paths = list(table["path"])
    recipe = recipe_for(root, cache="disk")
    before = image_loader(recipe, paths, 0.875)
    old = [before(i) for i in range(len(paths))]
    write_image(paths[4], 1234, (48, 82))  # same file name and size class, other content
    decoded = []
    store = open_store("disk", str(root), cache_short_side(SIZE, 0.875))
    store.decode = lambda p, decode=store.decode: decoded.append(p) or decode(p)
    after = store.ensure(paths, 1, False)
    assert decoded == [paths[4]]  # only the changed image is decoded again
    assert not torch.equal(after(4), old[4])
    assert torch.equal(after(4), image_loader(recipe_for(root, cache="none"), paths, 0.875)(4))
    assert all(torch.equal(after(i), old[i]) for i in range(len(paths)) if i != 4)


class ReadEverything(Dataset):
    """Item k < 2n reads cached image k // 2, so each of 2 workers (alternate batches) reads every image;
    items k >= 2n read nothing (a pass that only reports the worker's pid)."""

    def __init__(self, loader, n):
        self.loader, self.n = loader, n

    def __len__(self):
        return 4 * self.n

    def __getitem__(self, k):
        image = self.loader(k // 2) if k < 2 * self.n else torch.zeros(3, 600, 600, dtype=torch.uint8)
        return torch.tensor([os.getpid(), int(image.view(-1)[::4096].sum())])  # no big temporaries


def private_kib(pid: int) -> int:
    """Memory only this process holds (USS): private pages, from /proc/<pid>/smaps_rollup."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return sum(int(line.split()[1]) for line in f if line.startswith(("Private_Clean", "Private_Dirty")))


def mapping_kib(pid: int, file: str) -> dict:
    """Rss, Pss, Shared_* and Private_* of the pages `pid` has mapped from `file` (/proc/<pid>/smaps)."""
    totals, inside = {}, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and len(parts) >= 5:  # a mapping's header line: address perms offset dev inode [path]
                inside = parts[-1] == file
            elif inside and len(parts) == 3 and parts[2] == "kB":
                totals[parts[0].rstrip(":")] = totals.get(parts[0].rstrip(":"), 0) + int(parts[1])
    return totals


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs Linux /proc/<pid>/smaps")
def test_dataloader_workers_share_the_memory_cache(tmp_path):
    root = tmp_path / "big"
    root.mkdir()
    paths = []
    for i in range(16):  # 16 x 3 x 600 x 600 = 17 MB of pixels, below the 685 px cache size
        paths.append(str(root / f"{i}.png"))
        ramp = np.add.outer(np.arange(600), np.arange(600) * (i + 1)).astype(np.uint8)
        Image.fromarray(ramp).convert("RGB").save(paths[-1], compress_level=1)
    loader = image_loader(recipe_for(root, cache="memory", image_size=600), paths, 0.875)
    cache_kib = sum(loader(i).numel() for i in range(len(paths))) / 1024
    order = list(range(2 * len(paths), 4 * len(paths)))  # first pass: workers start, read nothing
    dl = DataLoader(ReadEverything(loader, len(paths)), batch_size=1, num_workers=2, persistent_workers=True,
                    sampler=order)
    gc.collect()
    gc.disable()  # a forked worker's private memory also grows when the parent writes pages they share (gc does)
    pids = {int(row[0, 0]) for row in dl}
    before = {pid: private_kib(pid) for pid in pids}
    order[:] = range(2 * len(paths))  # second pass: each worker reads every cached image
    assert {int(row[0, 0]) for row in dl} == pids and len(pids) == 2
    pss = 0
    for pid in pids:  # while the persistent workers are alive
        assert private_kib(pid) - before[pid] < 0.3 * cache_kib  # no private copy of the cache
        mem = mapping_kib(pid, loader.data_file)
        assert mem["Rss"] > 0.95 * cache_kib  # every cached byte this worker read is resident ...
        assert mem["Private_Clean"] + mem["Private_Dirty"] < 0.05 * cache_kib  # ... in pages the other worker has too
        pss += mem["Pss"]
    gc.enable()
    assert pss < 1.1 * cache_kib  # so both workers together hold one copy, not two
    del dl



def test_cache_decode_processes_die_on_sigterm_even_when_the_trainer_catches_it():
    """The trainer builds its cache after arming its SIGTERM handler; a forked decoder that kept that handler
    would outlive Pool.terminate (seen as a hung two-node resume), so each decoder restores the default."""
    import signal
    from engine.data.stores import image_store
    from engine.system import preemption
    threads = torch.get_num_threads()
    preemption.install()
    try:
        image_store._init_worker()  # what each forked decode process runs first
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        preemption.uninstall()
        torch.set_num_threads(threads)
