"""Checkpoints written in the background: frozen at submit, on disk after the wait, errors not lost."""
import pytest
import torch

from engine import checkpoint


def test_a_background_write_keeps_the_values_of_submit_time_and_is_on_disk_after_the_wait(tmp_path):
    weights = torch.zeros(1000)
    state = {"model": {"w": weights}, "again": {"w": weights}, "epoch": 1}
    checkpoint.save_in_background([(state, tmp_path / "best.pt"), (state, tmp_path / "last.pt")])
    weights.add_(1)  # training goes on changing the live tensors
    checkpoint.wait_for_writes()
    for name in ("best.pt", "last.pt"):
        saved = torch.load(tmp_path / name, weights_only=True)
        assert saved["epoch"] == 1 and saved["model"]["w"].abs().sum() == 0 and saved["again"]["w"].abs().sum() == 0
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: no temporary file left


def test_a_failed_background_write_raises_at_the_next_wait(tmp_path):
    (tmp_path / "a_file").write_text("x")
    checkpoint.save_in_background([({"w": torch.ones(2)}, tmp_path / "a_file" / "last.pt")])  # parent is a file
    with pytest.raises(OSError):
        checkpoint.wait_for_writes()
    checkpoint.wait_for_writes()  # reported once; the writer works again
    checkpoint.save_in_background([({"w": torch.ones(2)}, tmp_path / "last.pt")])
    checkpoint.wait_for_writes()
    assert torch.equal(torch.load(tmp_path / "last.pt", weights_only=True)["w"], torch.ones(2))
