"""A run resumed from a checkpoint in new processes ends with exactly the weights of a run that was
never interrupted: the README's main job, docs/examples/train_digits.py, on two processes under
strategy "ddp" (the default).

Bit-for-bit equality holds across processes because nothing in a step depends on timing: every
process draws the same per-epoch order from the seed and the epoch (not from how many epochs this
process has run), and gloo's all-reduce of the gradients sums two values, which gives the same
bits in either order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "train_digits.py"
EPOCHS = 4


def train(out: Path, *args: str) -> str:
    command = [sys.executable, str(EXAMPLE), "--epochs", str(EPOCHS), "--out", str(out), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=100)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.distributed
@pytest.mark.timeout(300)
def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(tmp_path: Path) -> None:
    straight_out = train(tmp_path / "straight")
    train(tmp_path / "resumed", "--stop-after", "2")
    interrupted = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert interrupted["epoch"] == 2
    resumed_out = train(tmp_path / "resumed", "--resume")
    assert "resumed from" in resumed_out

    straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert straight["epoch"] == resumed["epoch"] == EPOCHS
    assert straight["model"].keys() == resumed["model"].keys()
    for name, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][name]), name
    for index, moments in straight["optimizer"]["state"].items():
        for key, value in moments.items():
            assert torch.equal(value, resumed["optimizer"]["state"][index][key]), (index, key)
    assert straight["schedule"] == resumed["schedule"]
    # The weights did move on from the interrupted ones, and both runs report the same accuracy.
    first = next(iter(straight["model"]))
    assert not torch.equal(interrupted["model"][first], resumed["model"][first])
    final = next(line for line in straight_out.splitlines() if line.startswith("test accuracy"))
    assert final.split(" after")[0] in resumed_out
