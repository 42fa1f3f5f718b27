"""The mps accelerator on a machine that is not an Apple silicon Mac; availability is faked where
a test needs it."""

from __future__ import annotations

import platform
from typing import Any

import pytest
import torch

from fab.accelerators import CUDAAccelerator, MPSAccelerator
from fab.core.accelerators import Accelerator, CPUAccelerator


@pytest.fixture
def fake_apple_silicon(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this machine look like an arm64 Mac whose torch has MPS."""
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)


def test_class_attributes() -> None:
    assert issubclass(MPSAccelerator, Accelerator)
    assert MPSAccelerator.distributed_backend == "gloo"
    assert (
        CPUAccelerator.auto_priority < MPSAccelerator.auto_priority < CUDAAccelerator.auto_priority
    )


def test_unavailable_here() -> None:
    assert MPSAccelerator.is_available() is False
    assert MPSAccelerator.auto_device_count() == 0
    assert MPSAccelerator().get_device_stats(torch.device("mps", 0)) == {}
    MPSAccelerator().teardown()


@pytest.mark.usefixtures("fake_apple_silicon")
def test_available_on_apple_silicon_with_mps() -> None:
    assert MPSAccelerator.is_available() is True
    assert MPSAccelerator.auto_device_count() == 1


@pytest.mark.parametrize(
    ("system", "machine", "backend"),
    [("Darwin", "x86_64", True), ("Linux", "arm64", True), ("Darwin", "arm64", False)],
)
def test_unavailable_unless_arm64_macos_and_the_backend(
    monkeypatch: pytest.MonkeyPatch, system: str, machine: str, backend: bool
) -> None:
    monkeypatch.setattr(platform, "system", lambda: system)
    monkeypatch.setattr(platform, "machine", lambda: machine)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: backend)
    assert MPSAccelerator.is_available() is False


@pytest.mark.parametrize("devices", [1, "1", -1, "-1", "auto", [0], (0,), "0,"])
def test_every_accepted_form_is_the_one_device(devices: object) -> None:
    assert MPSAccelerator.parse_devices(devices) == [0]
    assert MPSAccelerator.get_parallel_devices(devices) == [torch.device("mps", 0)]
    assert MPSAccelerator.get_parallel_devices(MPSAccelerator.parse_devices(devices)) == [
        torch.device("mps", 0)
    ]


@pytest.mark.parametrize(
    ("devices", "error", "message"),
    [
        (2, ValueError, "an Apple GPU is one MPS device"),
        ([1], ValueError, "asks for the MPS device 1"),
        ("0,1", ValueError, "asks for the MPS device 1"),
        (0, ValueError, "selects no MPS device"),
        (False, TypeError, "is a bool"),
    ],
)
def test_other_values_are_refused(devices: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        MPSAccelerator.parse_devices(devices)


@pytest.mark.parametrize("device", [torch.device("cpu"), torch.device("cuda", 0), "mps"])
def test_setup_device_refuses_other_devices(device: Any) -> None:
    with pytest.raises(ValueError, match="the mps accelerator got device"):
        MPSAccelerator().setup_device(device)


def test_setup_device_refuses_a_second_mps_index() -> None:
    with pytest.raises(ValueError, match="MPS has one device"):
        MPSAccelerator().setup_device(torch.device("mps", 1))


def test_setup_device_where_mps_is_unavailable_says_so() -> None:
    with pytest.raises(RuntimeError, match="MPS is not available here"):
        MPSAccelerator().setup_device(torch.device("mps", 0))


@pytest.mark.usefixtures("fake_apple_silicon")
def test_setup_device_accepts_the_mps_device() -> None:
    MPSAccelerator().setup_device(torch.device("mps", 0))
    MPSAccelerator().setup_device(torch.device("mps"))


@pytest.mark.usefixtures("fake_apple_silicon")
def test_stats_and_teardown_use_torch_mps(monkeypatch: pytest.MonkeyPatch) -> None:
    emptied: list[bool] = []
    monkeypatch.setattr(torch.mps, "current_allocated_memory", lambda: 1)
    monkeypatch.setattr(torch.mps, "driver_allocated_memory", lambda: 2)
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: 3)
    monkeypatch.setattr(torch.mps, "empty_cache", lambda: emptied.append(True))
    accelerator = MPSAccelerator()
    assert accelerator.get_device_stats(torch.device("mps", 0)) == {
        "current_allocated_memory": 1,
        "driver_allocated_memory": 2,
        "recommended_max_memory": 3,
    }
    accelerator.teardown()
    assert emptied == [True]


def test_stats_refuse_a_device_that_is_not_mps() -> None:
    with pytest.raises(ValueError, match="the mps accelerator got device"):
        MPSAccelerator().get_device_stats(torch.device("cpu"))
