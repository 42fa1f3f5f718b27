"""A run resumed from a checkpoint in new processes ends with exactly the weights of a run that was
never interrupted, and its metrics go on in the same log version: the README's main job,
docs/examples/train_digits.py, on two processes under strategy "ddp" (the default).

Bit-for-bit equality holds across processes because nothing in a step depends on timing: every
process draws the same per-epoch order from the seed and the epoch (not from how many epochs this
process has run), and gloo's all-reduce of the gradients sums two values, which gives the same
bits in either order."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "train_digits.py"
EPOCHS = 4


def train(out: Path, *args: str, cwd: Path | None = None) -> str:
    command = [sys.executable, str(EXAMPLE), "--epochs", str(EPOCHS), "--out", str(out), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=100, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def metrics(out: Path) -> list[dict[str, str]]:
    with open(out / "logs" / "version_0" / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def printed_paths(stdout: str) -> dict[str, Path]:
    """What the run says it wrote: ``checkpoint: PATH``, ``metrics: PATH``, ``plot: PATH``."""
    found = re.findall(r"^(checkpoint|metrics|plot): (/\S+)$", stdout, re.MULTILINE)
    return {name: Path(path) for name, path in found}


def tensorboard_steps(out: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "logs" / "version_0"))
    events.Reload()
    return [event.step for event in events.Scalars(tag)]


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

    # The resumed run logged on in the first run's version: one CSV file and one set of
    # TensorBoard curves cover every epoch once, with the numbers of the uninterrupted run.
    assert sorted(p.name for p in (tmp_path / "resumed" / "logs").iterdir()) == ["version_0"]
    steps = [str(epoch) for epoch in range(1, EPOCHS + 1)]
    assert [row["step"] for row in metrics(tmp_path / "resumed")] == steps
    for column in ("train_loss", "test_accuracy", "lr"):
        assert [row[column] for row in metrics(tmp_path / "resumed")] == [
            row[column] for row in metrics(tmp_path / "straight")
        ], column
    assert tensorboard_steps(tmp_path / "resumed", "train_loss") == list(range(1, EPOCHS + 1))
    assert printed_paths(resumed_out)["plot"].read_bytes().startswith(b"\x89PNG")


@pytest.mark.distributed
@pytest.mark.timeout(300)
def test_the_readmes_train_then_resume_from_another_directory_exits_0(tmp_path: Path) -> None:
    """``train`` then ``train --resume`` with nothing left to train (the README's sequence), run
    from another directory with a relative ``--out``: every path it prints exists."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    first = train(Path("../run"), cwd=elsewhere)
    again = train(Path("../run"), "--resume", cwd=elsewhere)
    assert f"after epoch {EPOCHS}" in again
    for stdout in (first, again):
        paths = printed_paths(stdout)
        assert sorted(paths) == ["checkpoint", "metrics", "plot"], stdout
        assert all(path.is_relative_to(tmp_path / "run") for path in paths.values()), stdout
        assert all(path.exists() for path in paths.values()), stdout
    assert [row["step"] for row in metrics(tmp_path / "run")] == [
        str(epoch) for epoch in range(1, EPOCHS + 1)
    ]
    assert sorted(p.name for p in (tmp_path / "run" / "logs").iterdir()) == ["version_0"]
