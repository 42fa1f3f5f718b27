"""A run resumed from a checkpoint in a new process ends with exactly the weights of a run that was
never interrupted (the README's main job, docs/examples/train_cpu.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "train_cpu.py"


def train(out: Path, *args: str) -> None:
    command = [sys.executable, str(EXAMPLE), "--epochs", "5", "--out", str(out), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(tmp_path: Path) -> None:
    train(tmp_path / "straight")
    train(tmp_path / "resumed", "--stop-after", "2")
    interrupted = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert interrupted["epoch"] == 2
    train(tmp_path / "resumed", "--resume")

    straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert straight["epoch"] == resumed["epoch"] == 5
    assert straight["model"].keys() == resumed["model"].keys()
    for name, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][name]), name
    # And the weights did move away from the interrupted ones.
    assert not torch.equal(interrupted["model"]["0.weight"], resumed["model"]["0.weight"])
