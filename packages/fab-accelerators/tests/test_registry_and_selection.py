"""fab-core finds these accelerators through entry points; ``accelerator="auto"`` picks cpu here
and cuda where a GPU is visible, and asking for an unavailable one says so."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import pytest
import torch

from fab.accelerators import CUDAAccelerator, MPSAccelerator
from fab.core import Fabric, registry
from fab.core.accelerators import CPUAccelerator
from fab.core.connector import connect

#: The ``cuda_device_count`` fixture (conftest.py): makes ``torch.cuda.device_count()`` answer N.
SetDeviceCount = Callable[[int], None]

ENTRY_POINTS = {
    "cuda": "fab.accelerators.cuda:CUDAAccelerator",
    "gpu": "fab.accelerators.cuda:CUDAAccelerator",
    "mps": "fab.accelerators.mps:MPSAccelerator",
}


@pytest.mark.parametrize(("name", "target"), ENTRY_POINTS.items())
def test_entry_points_are_found_through_the_registry(name: str, target: str) -> None:
    assert name in registry.ACCELERATORS
    entry = registry.ACCELERATORS.entry(name)
    assert entry.distribution == "fab-accelerators"
    assert entry.target == target
    assert entry.disabled_by is None


def test_gpu_and_cuda_are_the_same_class() -> None:
    assert registry.ACCELERATORS.load("gpu") is registry.ACCELERATORS.load("cuda")
    assert registry.ACCELERATORS.load("cuda") is CUDAAccelerator
    assert registry.ACCELERATORS.load("mps") is MPSAccelerator
    assert type(registry.ACCELERATORS.create("gpu")) is CUDAAccelerator


def test_records_list_them_as_ok() -> None:
    rows = {r.name: r for r in registry.ACCELERATORS.records() if r.name in ENTRY_POINTS}
    assert {n: (r.status, r.distribution) for n, r in rows.items()} == dict.fromkeys(
        ENTRY_POINTS, ("ok", "fab-accelerators")
    )


def test_auto_picks_cpu_here_without_a_warning(recwarn: pytest.WarningsRecorder) -> None:
    fabric = Fabric()
    assert type(fabric.accelerator) is CPUAccelerator
    assert fabric.device == torch.device("cpu")
    assert not [w for w in recwarn if issubclass(w.category, registry.PluginWarning)]


@pytest.mark.parametrize("name", ["cuda", "gpu", "mps"])
def test_asking_for_an_unavailable_accelerator_says_it_is_not_available(name: str) -> None:
    with pytest.raises(RuntimeError, match=f"accelerator '{name}' is installed but not available"):
        Fabric(accelerator=name)


def test_auto_picks_cuda_with_every_visible_device_where_there_is_a_gpu(
    cuda_device_count: SetDeviceCount,
) -> None:
    cuda_device_count(1)
    fabric = Fabric()
    assert type(fabric.accelerator) is CUDAAccelerator
    assert fabric.device == torch.device("cuda", 0)


@pytest.mark.parametrize(
    ("accelerator", "devices", "device"),
    [
        ("auto", 1, torch.device("cuda", 0)),
        ("cuda", [2], torch.device("cuda", 2)),
        ("gpu", "1,", torch.device("cuda", 1)),
        ("cuda", "1", torch.device("cuda", 0)),
    ],
)
def test_devices_select_the_cuda_device(
    cuda_device_count: SetDeviceCount, accelerator: str, devices: object, device: torch.device
) -> None:
    cuda_device_count(4)
    strategy = connect(accelerator=accelerator, devices=devices)
    assert type(strategy.accelerator) is CUDAAccelerator
    assert strategy.root_device == device


def test_cpu_is_still_chosen_by_name_on_a_gpu_machine(cuda_device_count: SetDeviceCount) -> None:
    cuda_device_count(2)
    assert type(Fabric(accelerator="cpu").accelerator) is CPUAccelerator


def test_launch_sets_the_cuda_device(
    cuda_device_count: SetDeviceCount, monkeypatch: pytest.MonkeyPatch
) -> None:
    cuda_device_count(2)
    calls: list[object] = []
    monkeypatch.setattr(torch.cuda, "set_device", calls.append)
    fabric = Fabric(accelerator="cuda", devices=[1])
    fabric.launch()
    assert calls == [torch.device("cuda", 1)]


def test_a_bad_devices_value_fails_in_the_constructor(cuda_device_count: SetDeviceCount) -> None:
    cuda_device_count(2)
    with pytest.raises(ValueError, match=r"asks for the CUDA device 5, but only 2"):
        Fabric(accelerator="cuda", devices=[5])


SELECTION_IN_A_FRESH_PROCESS = """
import json, sys

import fab.accelerators
from fab.core import Fabric, registry

after_import = sorted(m for m in sys.modules if m.startswith(("torch._dynamo", "sympy")))
names = registry.ACCELERATORS.names()
classes = {name: registry.ACCELERATORS.load(name).__name__ for name in names}
fabric = Fabric()

import torch

print(json.dumps({
    "after_import": after_import,
    "names": names,
    "classes": classes,
    "accelerator": type(fabric.accelerator).__name__,
    "heavy": sorted(m for m in sys.modules if m.startswith(("torch._dynamo", "sympy"))),
    "cuda_initialized": torch.cuda.is_initialized(),
}))
"""


def test_import_listing_and_auto_selection_stay_light_in_a_fresh_process() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SELECTION_IN_A_FRESH_PROCESS],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["after_import"] == []
    assert {"cpu", "cuda", "gpu", "mps"} <= set(result["names"])
    assert result["classes"]["gpu"] == result["classes"]["cuda"] == "CUDAAccelerator"
    assert result["accelerator"] == "CPUAccelerator"
    assert result["heavy"] == []
    assert result["cuda_initialized"] is False
