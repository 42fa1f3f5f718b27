"""Checkpoints are written atomically and read weights-only."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fab.core import Fabric
from fab.core.io import TorchCheckpointIO, UnsafeCheckpointError
from fab.core.io.temporary_files import _host


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


# -- file mode ------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_a_new_checkpoint_gets_the_mode_the_umask_gives_torch_save(
    tmp_path: Path, umask: int
) -> None:
    old = os.umask(umask)
    try:
        torch.save({"step": 1}, tmp_path / "by_torch.pt")
        Fabric(accelerator="cpu", devices=1).save(tmp_path / "by_fab.pt", {"step": 1})
    finally:
        os.umask(old)
    assert _mode(tmp_path / "by_fab.pt") == _mode(tmp_path / "by_torch.pt") == 0o666 & ~umask


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
def test_overwriting_a_checkpoint_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    io = TorchCheckpointIO()
    io.save_checkpoint({"step": 1}, path)
    path.chmod(0o640)
    io.save_checkpoint({"step": 2}, path)
    assert _mode(path) == 0o640
    assert io.load_checkpoint(path) == {"step": 2}


# -- a save killed with kill -9 ---------------------------------------------------------------

KILLED_SAVER = """
import os, sys, threading
import torch
from fab.core import Fabric

fabric = Fabric(accelerator="cpu", devices=1)
path = sys.argv[1]
fabric.save(path, {"step": 1, "w": torch.ones(4)})
stop = threading.Event()

def fsync_then_hang(fd):
    print("writing", flush=True)  # torch.save has written the temporary file: now kill me
    stop.wait()

os.fsync = fsync_then_hang
fabric.save(path, {"step": 2, "w": torch.zeros(1_000_000)})
"""


@pytest.mark.skipif(os.name == "nt", reason="kill -9")
def test_a_save_killed_with_kill_9_is_cleaned_up_by_the_next_save(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    saver = subprocess.Popen(
        [sys.executable, "-c", KILLED_SAVER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert saver.stdout is not None
        assert saver.stdout.readline().strip() == "writing", saver.stderr
        saver.send_signal(signal.SIGKILL)
    finally:
        saver.kill()
        saver.communicate(timeout=60)
    left = [p for p in tmp_path.iterdir() if p != path]
    assert len(left) == 1
    assert left[0].name.startswith(".ckpt.pt.")  # hidden, beside the checkpoint
    assert left[0].stat().st_size > 4_000_000  # as large as the checkpoint it was writing

    fabric = Fabric(accelerator="cpu", devices=1)
    assert fabric.load(path)["step"] == 1  # the previous checkpoint survived the kill
    fabric.save(path, {"step": 3})
    assert sorted(tmp_path.iterdir()) == [path]  # the next save removed the abandoned file
    assert fabric.load(path) == {"step": 3}


def test_a_save_in_progress_elsewhere_is_left_alone(tmp_path: Path) -> None:
    """A temporary file of a running process (another save to the same place) is not touched."""
    path = tmp_path / "ckpt.pt"
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        in_progress = tmp_path / f".ckpt.pt.fab-{_host()}-{running.pid}-0123abcd.tmp"
        in_progress.write_bytes(b"half a checkpoint")
        TorchCheckpointIO().save_checkpoint({"step": 1}, path)
        assert in_progress.exists()
    finally:
        running.kill()
        running.wait()
    TorchCheckpointIO().save_checkpoint({"step": 2}, path)
    assert not in_progress.exists()  # its process is gone now


# -- damaged files, through Fabric ------------------------------------------------------------


def _damaged_files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.pt"
    Fabric(accelerator="cpu", devices=1).save(good, {"model": torch.nn.Linear(64, 64)})
    data = good.read_bytes()
    files = {
        "is empty": b"",
        "is truncated": data[: len(data) // 2],
        "is not a checkpoint": os.urandom(2048),
    }
    paths = {}
    for what, content in files.items():
        paths[what] = tmp_path / f"{what.replace(' ', '_')}.pt"
        paths[what].write_bytes(content)
    return paths


@pytest.mark.parametrize("what", ["is empty", "is truncated", "is not a checkpoint"])
def test_fabric_load_names_the_file_and_what_is_wrong(tmp_path: Path, what: str) -> None:
    path = _damaged_files(tmp_path)[what]
    fabric = Fabric(accelerator="cpu", devices=1)
    model = fabric.setup(torch.nn.Linear(64, 64))
    with pytest.raises(ValueError, match=f"{path.name} {what}") as info:
        fabric.load(path, {"model": model})
    assert "weights_only=False" not in str(info.value)
    with pytest.raises(ValueError, match=f"{path.name} {what}"):
        fabric.load_raw(path, model)
