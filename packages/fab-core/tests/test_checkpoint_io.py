"""Checkpoints are written atomically and read weights-only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from fab.core.io import TorchCheckpointIO, UnsafeCheckpointError


class Unpicklable:
    def __reduce__(self) -> tuple[object, ...]:
        raise RuntimeError("disk full halfway")


class RunsCode:
    def __reduce__(self) -> tuple[object, ...]:
        return (os.getcwd, ())


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    io = TorchCheckpointIO()
    io.save_checkpoint({"w": torch.arange(3), "step": 7}, tmp_path / "ckpt.pt")
    loaded = io.load_checkpoint(tmp_path / "ckpt.pt")
    assert loaded["step"] == 7
    assert torch.equal(loaded["w"], torch.arange(3))


def test_failed_save_keeps_the_previous_checkpoint_and_leaves_no_temporary_file(
    tmp_path: Path,
) -> None:
    io = TorchCheckpointIO()
    path = tmp_path / "ckpt.pt"
    io.save_checkpoint({"step": 1}, path)
    with pytest.raises(RuntimeError, match="disk full halfway"):
        io.save_checkpoint({"step": 2, "bad": Unpicklable()}, path)
    assert io.load_checkpoint(path) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_checkpoint_that_would_run_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"payload": RunsCode()}, path)
    with pytest.raises(
        UnsafeCheckpointError, match=r"refusing to load .*evil\.pt.*weights_only=False"
    ):
        TorchCheckpointIO().load_checkpoint(path)


def test_missing_checkpoint_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: .*nope\.pt"):
        TorchCheckpointIO().load_checkpoint(tmp_path / "nope.pt")


def test_storage_options_are_refused_by_the_single_file_io(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="takes no storage_options"):
        TorchCheckpointIO().save_checkpoint({}, tmp_path / "c.pt", storage_options={"x": 1})


def test_remove_checkpoint(tmp_path: Path) -> None:
    io = TorchCheckpointIO()
    io.save_checkpoint({}, tmp_path / "c.pt")
    io.remove_checkpoint(tmp_path / "c.pt")
    assert not (tmp_path / "c.pt").exists()
