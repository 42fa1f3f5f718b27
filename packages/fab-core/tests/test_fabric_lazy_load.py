"""Fabric.load / load_raw go through fab.lazy's loader: lazy, memory-mapped, weights-only (unless
asked otherwise), and without a second copy of a model made by init_module(empty_init=True)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from fab.core import Fabric
from fab.core.io import UnsafeCheckpointError

MIB = 1 << 20
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


class Net(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Linear(width, width)
        self.head = nn.Linear(width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(x)))


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_load_into_an_empty_init_model_before_setup_then_train(tmp_path: Path) -> None:
    fabric = Fabric(accelerator="cpu")
    source = Net()
    fabric.save(tmp_path / "c.pt", {"model": source, "step": 3})
    with fabric.init_module(empty_init=True):
        model = Net()
    weight = model.body.weight
    remainder = fabric.load(tmp_path / "c.pt", {"model": model})
    assert remainder == {"step": 3}
    assert model.body.weight is weight
    assert not weight.is_meta
    assert _same(model, source)
    fmodel, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert _same(model, source)  # setup does not re-initialize loaded weights
    fabric.backward(fmodel(torch.randn(4, 8)).sum())
    optimizer.step()
    assert not torch.equal(model.body.weight, source.body.weight)


def test_load_after_setup_copies_in_place_and_the_optimizer_keeps_training(
    tmp_path: Path,
) -> None:
    fabric = Fabric(accelerator="cpu")
    source = Net()
    fabric.save(tmp_path / "c.pt", {"model": source})
    with fabric.init_module(empty_init=True):
        model = Net()
    fmodel, optimizer = fabric.setup(model, torch.optim.Adam(model.parameters(), lr=0.1))
    params = list(model.parameters())
    fabric.load(tmp_path / "c.pt", {"model": fmodel})
    assert list(model.parameters()) == params
    assert all(a is b for a, b in zip(model.parameters(), params, strict=True))
    assert _same(model, source)
    fabric.backward(fmodel(torch.randn(4, 8)).sum())
    optimizer.step()
    assert not torch.equal(model.body.weight, source.body.weight)


class Stack(nn.Module):
    """32 MiB of weights in 32 tensors of 1 MiB."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(512, 512, bias=False) for _ in range(32))


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} in /proc/self/status")


@linux_only
def test_loading_into_an_empty_init_model_peaks_at_about_the_models_size(tmp_path: Path) -> None:
    """The empty-init model's memory was never touched; fabric.load fills it one tensor at a
    time from the memory-mapped file and gives the file's pages back after each: the resident
    size peaks at the model's size plus about one tensor, not twice the model's size."""
    fabric = Fabric(accelerator="cpu")
    source = Stack()
    fabric.save(tmp_path / "c.pt", {"model": source})
    with fabric.init_module(empty_init=True):
        model = Stack()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to now
    except OSError:
        pytest.skip("cannot reset this process's peak resident size")
    before = _status_mib("VmRSS")
    fabric.load(tmp_path / "c.pt", {"model": model})
    peak = _status_mib("VmHWM") - before
    assert _same(model, source)
    assert not any(p.is_meta for p in model.parameters())
    assert peak < 32 * 1.25, f"loading 32 MiB of weights peaked at +{peak:.0f} MiB"


def test_the_model_dtype_is_kept(tmp_path: Path) -> None:
    fabric = Fabric(accelerator="cpu")
    source = Net().to(torch.bfloat16)
    fabric.save(tmp_path / "c.pt", {"model": source})
    with fabric.init_module(empty_init=True):
        model = Net()
    fabric.load(tmp_path / "c.pt", {"model": model})
    assert model.body.weight.dtype == torch.float32
    assert torch.equal(model.body.weight, source.body.weight.float())


def test_a_checkpoint_that_would_run_code_is_refused_by_load_and_load_raw(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "pwned"
    torch.save({"model": Net().state_dict(), "x": _RunsCode(marker)}, tmp_path / "evil.pt")
    fabric = Fabric(accelerator="cpu")
    with pytest.raises(UnsafeCheckpointError, match=r"refusing to load .*evil\.pt"):
        fabric.load(tmp_path / "evil.pt", {"model": Net()})
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pt.*weights_only=False"):
        fabric.load_raw(tmp_path / "evil.pt", Net())
    assert not marker.exists()


class Note:
    """Plain Python data that a weights-only load does not accept."""

    def __init__(self, text: str) -> None:
        self.text = text


class WeightsDict(dict[str, torch.Tensor]):
    """A state dict of a type a weights-only load does not know."""


def test_weights_only_false_loads_what_the_refusal_names(tmp_path: Path) -> None:
    """The refusal says to pass weights_only=False for a trusted file: load and load_raw take it."""
    fabric = Fabric(accelerator="cpu")
    source = Net()
    torch.save({"model": source.state_dict(), "note": Note("trusted")}, tmp_path / "c.pt")
    torch.save(WeightsDict(source.state_dict()), tmp_path / "raw.pt")
    model = Net()
    with pytest.raises(UnsafeCheckpointError, match="weights_only=False"):
        fabric.load(tmp_path / "c.pt", {"model": model})
    with pytest.raises(UnsafeCheckpointError, match="weights_only=False"):
        fabric.load_raw(tmp_path / "raw.pt", model)
    remainder = fabric.load(tmp_path / "c.pt", {"model": model}, weights_only=False)
    assert _same(model, source)
    assert remainder["note"].text == "trusted"
    other = Net()
    fabric.load_raw(tmp_path / "raw.pt", other, weights_only=False)
    assert _same(other, source)


def test_a_nested_checkpoint_restores_what_is_asked_and_returns_the_rest(tmp_path: Path) -> None:
    fabric = Fabric(accelerator="cpu")
    source = Net()
    fmodel, optimizer = fabric.setup(source, torch.optim.Adam(source.parameters()))
    fabric.backward(fmodel(torch.randn(4, 8)).sum())
    optimizer.step()
    fabric.save(tmp_path / "c.pt", {"model": fmodel, "optimizer": optimizer, "step": 1})
    with fabric.init_module(empty_init=True):
        model = Net()
    remainder = fabric.load(tmp_path / "c.pt", {"model": model})
    assert _same(model, source)
    assert set(remainder) == {"optimizer", "step"}
    assert remainder["optimizer"]["state"][0]["exp_avg"].shape == (8, 8)
    other = torch.optim.Adam(model.parameters())
    fabric.load(tmp_path / "c.pt", {"model": model, "optimizer": other}, strict=False)
    assert other.state_dict()["state"][0]["step"] == 1


def test_load_raw_fills_an_empty_init_model_from_a_state_dict(tmp_path: Path) -> None:
    fabric = Fabric(accelerator="cpu")
    source = Net()
    torch.save(source.state_dict(), tmp_path / "w.pt")
    with fabric.init_module(empty_init=True):
        model = Net()
    fabric.load_raw(tmp_path / "w.pt", model)
    assert _same(model, source)
    with pytest.raises(RuntimeError, match=r"Missing key\(s\) in state_dict"):
        fabric.load_raw(tmp_path / "w.pt", nn.Sequential(Net()))


def test_load_raw_reads_safetensors_files(tmp_path: Path) -> None:
    pytest.importorskip("numpy", reason="safetensors needs numpy to write torch tensors")
    safetensors_torch = pytest.importorskip(
        "safetensors.torch", reason="the safetensors package is not installed"
    )
    source = Net()
    safetensors_torch.save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    fabric = Fabric(accelerator="cpu")
    with fabric.init_module(empty_init=True):
        model = Net()
    fabric.load_raw(tmp_path / "w.safetensors", model)
    assert _same(model, source)
