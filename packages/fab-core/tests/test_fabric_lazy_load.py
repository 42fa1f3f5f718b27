"""Fabric.load / load_raw go through fab.lazy's loader: lazy, memory-mapped, weights-only, and
without a second copy of a model created under init_module(empty_init=True)."""

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


def _rss_anon_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssAnon in /proc/self/status")


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


@linux_only
def test_loading_into_an_empty_init_model_makes_no_copy_of_the_weights(tmp_path: Path) -> None:
    """32 MiB of weights: assigned as views of the memory-mapped file, no anonymous memory."""
    fabric = Fabric(accelerator="cpu")
    width = 2048  # 2048 x 2048 float32 = 16 MiB per layer
    fabric.save(tmp_path / "c.pt", {"model": Net(width)})
    with fabric.init_module(empty_init=True):
        model = Net(width)
    before = _rss_anon_mib()
    fabric.load(tmp_path / "c.pt", {"model": model})
    assert torch.isfinite(model.body.weight.sum())  # every page of the weights read
    grown = _rss_anon_mib() - before
    assert grown < 8, f"loading 16 MiB of weights took {grown:.0f} MiB of anonymous memory"


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
