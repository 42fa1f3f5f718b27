"""The cuda accelerator on a machine without a GPU: a fake device count stands in for GPUs, and
nothing may initialize CUDA (the autouse fixture in conftest.py checks after every test)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from fab.accelerators import CUDAAccelerator
from fab.core.accelerators import Accelerator, CPUAccelerator

#: The ``cuda_device_count`` fixture (conftest.py): makes ``torch.cuda.device_count()`` answer N.
SetDeviceCount = Callable[[int], None]


def test_class_attributes() -> None:
    assert issubclass(CUDAAccelerator, Accelerator)
    assert CUDAAccelerator.distributed_backend == "nccl"
    assert CUDAAccelerator.auto_priority > CPUAccelerator.auto_priority


def test_unavailable_on_this_machine() -> None:
    assert torch.cuda.device_count() == 0  # the CPU build of torch
    assert CUDAAccelerator.is_available() is False
    assert CUDAAccelerator.auto_device_count() == 0


@pytest.mark.parametrize("count", [1, 2, 8])
def test_availability_and_auto_count_follow_the_device_count(
    cuda_device_count: SetDeviceCount, count: int
) -> None:
    cuda_device_count(count)
    assert CUDAAccelerator.is_available() is True
    assert CUDAAccelerator.auto_device_count() == count


@pytest.mark.parametrize(
    ("devices", "indices"),
    [
        (1, [0]),
        (4, [0, 1, 2, 3]),
        ("2", [0, 1]),
        (-1, [0, 1, 2, 3]),
        ("-1", [0, 1, 2, 3]),
        ("auto", [0, 1, 2, 3]),
        ([3, 1], [3, 1]),
        ((2,), [2]),
        ("0,2", [0, 2]),
        ("3,", [3]),
    ],
)
def test_parse_devices_and_parallel_devices(
    cuda_device_count: SetDeviceCount, devices: object, indices: list[int]
) -> None:
    cuda_device_count(4)
    assert CUDAAccelerator.parse_devices(devices) == indices
    expected = [torch.device("cuda", i) for i in indices]
    assert CUDAAccelerator.get_parallel_devices(CUDAAccelerator.parse_devices(devices)) == expected
    assert CUDAAccelerator.get_parallel_devices(devices) == expected


def test_parse_devices_checks_indices_against_the_visible_devices(
    cuda_device_count: SetDeviceCount,
) -> None:
    cuda_device_count(2)
    with pytest.raises(ValueError, match=r"CUDA device 2, but only 2 CUDA devices are available"):
        CUDAAccelerator.parse_devices([0, 2])
    with pytest.raises(ValueError, match=r"asks for 3 CUDA devices, but only 2"):
        CUDAAccelerator.get_parallel_devices(3)


@pytest.mark.parametrize("devices", [0, "0"])
def test_zero_devices_is_an_error(cuda_device_count: SetDeviceCount, devices: object) -> None:
    cuda_device_count(2)
    with pytest.raises(ValueError, match="selects no CUDA device"):
        CUDAAccelerator.parse_devices(devices)


def test_a_bool_is_a_type_error(cuda_device_count: SetDeviceCount) -> None:
    cuda_device_count(2)
    with pytest.raises(TypeError, match="is a bool"):
        CUDAAccelerator.parse_devices(True)


def test_here_every_request_says_no_device_is_available() -> None:
    for devices in (1, -1, "auto", [0], "0,"):
        with pytest.raises(ValueError, match=r"no CUDA device is available|none is available"):
            CUDAAccelerator.parse_devices(devices)


@pytest.mark.parametrize("device", [torch.device("cpu"), torch.device("mps", 0), "cuda:0"])
def test_setup_device_refuses_a_device_that_is_not_cuda(device: Any) -> None:
    with pytest.raises(ValueError, match=r"the cuda accelerator got device .*expected a cuda"):
        CUDAAccelerator().setup_device(device)


def test_setup_device_without_a_gpu_says_so() -> None:
    with pytest.raises(RuntimeError, match=r"no CUDA device is available here"):
        CUDAAccelerator().setup_device(torch.device("cuda", 0))


def test_setup_device_checks_the_index(cuda_device_count: SetDeviceCount) -> None:
    cuda_device_count(2)
    with pytest.raises(ValueError, match=r"only 2 CUDA devices are visible .*indices 0 to 1"):
        CUDAAccelerator().setup_device(torch.device("cuda", 2))


def test_setup_device_sets_the_current_device(
    cuda_device_count: SetDeviceCount, monkeypatch: pytest.MonkeyPatch
) -> None:
    cuda_device_count(2)
    calls: list[object] = []
    monkeypatch.setattr(torch.cuda, "set_device", calls.append)
    accelerator = CUDAAccelerator()
    accelerator.setup_device(torch.device("cuda", 1))
    accelerator.setup_device(torch.device("cuda"))  # no index: the current device, nothing to set
    assert calls == [torch.device("cuda", 1)]


def test_teardown_and_stats_before_cuda_is_initialized_touch_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fail(*args: object) -> None:
        raise AssertionError("called before CUDA was initialized")

    monkeypatch.setattr(torch.cuda, "empty_cache", fail)
    monkeypatch.setattr(torch.cuda, "memory_stats", fail)
    accelerator = CUDAAccelerator()
    accelerator.teardown()
    assert accelerator.get_device_stats(torch.device("cuda", 0)) == {}


def test_teardown_empties_the_cache_and_stats_are_memory_stats_once_initialized(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emptied: list[bool] = []
    asked: list[object] = []
    stats = {"allocated_bytes.all.current": 512}
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))

    def memory_stats(device: torch.device) -> dict[str, int]:
        asked.append(device)
        return stats

    monkeypatch.setattr(torch.cuda, "memory_stats", memory_stats)
    accelerator = CUDAAccelerator()
    accelerator.teardown()
    assert emptied == [True]
    assert accelerator.get_device_stats(torch.device("cuda", 1)) == stats
    assert asked == [torch.device("cuda", 1)]


def test_stats_refuse_a_device_that_is_not_cuda() -> None:
    with pytest.raises(ValueError, match="expected a cuda device"):
        CUDAAccelerator().get_device_stats(torch.device("cpu"))


def test_no_call_initializes_cuda(cuda_device_count: SetDeviceCount) -> None:
    accelerator = CUDAAccelerator()
    for count in (0, 2):
        cuda_device_count(count)
        CUDAAccelerator.is_available()
        CUDAAccelerator.auto_device_count()
        if count:
            CUDAAccelerator.get_parallel_devices(CUDAAccelerator.parse_devices("auto"))
        accelerator.get_device_stats(torch.device("cuda", 0))
        accelerator.teardown()
        with pytest.raises(ValueError, match="expected a cuda device"):
            accelerator.setup_device(torch.device("cpu"))
        is_initialized: Callable[[], bool] = torch.cuda.is_initialized
        assert not is_initialized()
