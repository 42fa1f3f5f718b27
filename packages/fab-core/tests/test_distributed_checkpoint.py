"""Checkpoint directories (torch.distributed.checkpoint) in one process: what fab-core reads and
writes for any strategy, ``fab consolidate``, and atomic saves that survive a ``kill -9``.

The multi-process side (FSDP and tensor parallel saving on 2 and 4 processes) is tested in
fab-strategies; here the directory is written by one process, which is a world of one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fab.core import Fabric
from fab.core.cli import main as fab_main
from fab.core.distributed_checkpoint import (
    DistributedCheckpointError,
    checkpoint_state,
    consolidate,
    is_distributed_checkpoint,
    save_directory,
)

pytestmark = pytest.mark.timeout(120)


def _trained() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    for step in range(3):
        x = torch.randn(5, 4, generator=torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        optimizer.step()
    return model, optimizer


def _save(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
    state = {"model": model, "optimizer": optimizer, "step": step, "meta": {"lr": [0.01]}}
    save_directory(path, checkpoint_state(state, full=False))


def test_fabric_on_one_device_loads_a_directory_and_resumes(tmp_path: Path) -> None:
    model, optimizer = _trained()
    _save(tmp_path / "ckpt", model, optimizer, step=3)
    assert is_distributed_checkpoint(tmp_path / "ckpt")

    fabric = Fabric(accelerator="cpu", devices=1)
    torch.manual_seed(1)
    fresh = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    wrapped, fresh_optimizer = fabric.setup(fresh, torch.optim.AdamW(fresh.parameters(), lr=0.01))
    state: dict[str, Any] = {"model": wrapped, "optimizer": fresh_optimizer, "step": 0}
    rest = fabric.load(tmp_path / "ckpt", state)

    assert rest == {"meta": {"lr": [0.01]}}
    assert state["step"] == 3
    for a, b in zip(fresh.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)
    # the optimizer state came back too: the next step is the same
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(9))
    for m, o in ((model, optimizer), (wrapped, fresh_optimizer)):
        o.zero_grad()
        m(x).pow(2).mean().backward()
        o.step()
    for a, b in zip(fresh.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_directory_without_state_loads_whole(tmp_path: Path) -> None:
    model, optimizer = _trained()
    _save(tmp_path / "ckpt", model, optimizer, step=3)
    everything = Fabric(accelerator="cpu", devices=1).load(tmp_path / "ckpt")
    assert sorted(everything) == ["meta", "model", "optimizer", "step"]
    assert torch.equal(everything["model"]["0.weight"], model[0].weight)


def test_strict_load_of_a_directory_names_what_is_missing(tmp_path: Path) -> None:
    model, optimizer = _trained()
    _save(tmp_path / "ckpt", model, optimizer, step=3)
    fabric = Fabric(accelerator="cpu", devices=1)
    state: dict[str, Any] = {"model": model, "epoch": 7}
    with pytest.raises(KeyError, match=r"epoch.*strict=False"):
        fabric.load(tmp_path / "ckpt", state)
    fabric.load(tmp_path / "ckpt", state, strict=False)
    assert state["epoch"] == 7


def test_an_optimizer_without_its_model_is_refused_with_a_fix(tmp_path: Path) -> None:
    _, optimizer = _trained()
    with pytest.raises(ValueError, match="same save/load call"):
        checkpoint_state({"optimizer": optimizer}, full=False)


def test_fab_consolidate_writes_one_file_torch_load_reads(tmp_path: Path) -> None:
    model, optimizer = _trained()
    _save(tmp_path / "ckpt", model, optimizer, step=3)
    out = tmp_path / "whole.pt"
    assert fab_main(["consolidate", str(tmp_path / "ckpt"), "--output_file", str(out)]) == 0
    checkpoint = torch.load(out, weights_only=True)
    assert sorted(checkpoint) == ["meta", "model", "optimizer", "step"]
    fresh = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    fresh.load_state_dict(checkpoint["model"])  # the model's own keys
    assert torch.equal(fresh[2].weight, model[2].weight)
    # the default output sits beside the folder; an existing output is not overwritten
    assert fab_main(["consolidate", str(tmp_path / "ckpt")]) == 0
    assert (tmp_path / "ckpt.consolidated").is_file()
    assert fab_main(["consolidate", str(tmp_path / "ckpt")]) == 2


def test_fab_consolidate_refuses_what_is_not_a_checkpoint_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert fab_main(["consolidate", str(tmp_path)]) == 2
    assert ".metadata" in capsys.readouterr().err


def test_consolidate_is_weights_only(tmp_path: Path) -> None:
    save_directory(tmp_path / "ckpt", {"bad": _RunsCode()})
    with pytest.raises(DistributedCheckpointError, match="print was not an allowed global"):
        consolidate(tmp_path / "ckpt", tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


class _RunsCode:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("this ran at load time",))


_SAVER = textwrap.dedent(
    """
    import sys, time, torch
    from fab.core.distributed_checkpoint import save_directory

    class Stall:
        def __reduce__(self):
            print("inside the save", flush=True)
            time.sleep(600)
            return (int, (0,))

    path = sys.argv[1]
    save_directory(path, {"w": torch.full((1000,), 1.0), "step": 1})
    print("first save done", flush=True)
    save_directory(path, {"w": torch.full((1000,), 2.0), "step": 2, "stall": Stall()})
    """
)


def test_a_kill_9_during_a_save_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "ckpt"
    process = subprocess.Popen(
        [sys.executable, "-c", _SAVER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline().strip(), process.stdout.readline().strip()]
        assert lines == ["first save done", "inside the save"]
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=30)
    assert [p for p in tmp_path.iterdir() if ".partial-" in p.name]  # it died mid-save
    loaded = Fabric(accelerator="cpu", devices=1).load(path)
    assert loaded["step"] == 1
    assert torch.equal(loaded["w"], torch.full((1000,), 1.0))
    # the next save completes and removes what the killed one left
    save_directory(path, {"w": torch.full((1000,), 3.0), "step": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert Fabric(accelerator="cpu", devices=1).load(path)["step"] == 3


@pytest.mark.parametrize("full", [True, False])
def test_checkpoint_state_follows_saves_filter_rules(full: bool) -> None:
    """The same filter rules as every other save: an entry filtered to nothing is left out, a
    filter on a key the state lacks is a ValueError, one that is not a dict a TypeError."""
    from fab.core.distributed_checkpoint import checkpoint_state

    model = torch.nn.Linear(2, 2)
    state = {"model": model, "step": 3}
    kept = checkpoint_state(state, full, {"model": lambda name, _: name == "weight"})
    assert set(kept["model"]) == {"weight"}
    assert "model" not in checkpoint_state(state, full, {"model": lambda name, _: False})
    with pytest.raises(ValueError, match="missing"):
        checkpoint_state(state, full, {"missing": lambda name, _: True})
    with pytest.raises(TypeError):
        checkpoint_state(state, full, [("model", lambda name, _: True)])  # type: ignore[arg-type]
