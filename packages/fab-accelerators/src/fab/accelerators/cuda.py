"""The cuda accelerator (also registered as ``gpu``): NVIDIA GPUs through ``torch.cuda``.

Nothing here initializes CUDA until ``setup_device``: availability and the device count come from
``torch.cuda.device_count()``, which asks NVML where it can and so leaves a later ``fork`` safe
(see torch's note on poisoned forks). ``setup_device`` runs in the process that uses the device,
after any launcher has started its processes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch

from fab.accelerators.device_parser import parse_cuda_devices
from fab.core.accelerators.accelerator import Accelerator

__all__ = ["CUDAAccelerator"]


class CUDAAccelerator(Accelerator):
    """NVIDIA GPUs. ``devices`` takes what Lightning Fabric takes for GPUs: a count (``2``,
    ``"2"``), all of them (``-1``, ``"-1"``, ``"auto"``) or indices (``[0, 2]``, ``"0,2"``,
    ``"1,"``); ``parse_devices`` turns each into a list of indices."""

    #: Above cpu (0) and mps (10): a machine with a CUDA GPU uses it under ``accelerator="auto"``.
    auto_priority: ClassVar[int] = 20
    distributed_backend: ClassVar[str] = "nccl"

    def setup_device(self, device: torch.device) -> None:
        """Make ``device`` this process's current CUDA device (this initializes CUDA)."""
        _check_cuda_device(device)
        count = torch.cuda.device_count()
        if count == 0:
            raise RuntimeError(
                f"cannot set up {device}: no CUDA device is available here "
                "(torch.cuda.device_count() is 0)"
            )
        if device.index is None:
            return  # 'cuda' without an index is the current device already
        if device.index >= count:
            raise ValueError(
                f"cannot set up {device}: only {count} CUDA device{'' if count == 1 else 's'} "
                f"{'is' if count == 1 else 'are'} visible to this process (indices 0 to "
                f"{count - 1}; CUDA_VISIBLE_DEVICES limits them)"
            )
        torch.cuda.set_device(device)

    def teardown(self) -> None:
        """Give the caching allocator's unused memory back to the driver."""
        if _cuda_initialized():
            torch.cuda.empty_cache()

    @staticmethod
    def parse_devices(devices: Any) -> list[int]:
        """The CUDA device indices ``devices`` selects, checked against the visible devices."""
        return parse_cuda_devices(devices, torch.cuda.device_count())

    @staticmethod
    def get_parallel_devices(devices: Any) -> list[torch.device]:
        """``torch.device("cuda", i)`` for each index (``devices`` as ``parse_devices`` takes or
        returns it)."""
        return [torch.device("cuda", index) for index in CUDAAccelerator.parse_devices(devices)]

    @staticmethod
    def auto_device_count() -> int:
        """Every visible CUDA device (``devices="auto"``)."""
        return torch.cuda.device_count()

    @staticmethod
    def is_available() -> bool:
        """Whether a CUDA device is visible. Does not initialize CUDA."""
        return torch.cuda.device_count() > 0

    def get_device_stats(self, device: torch.device) -> dict[str, Any]:
        """``torch.cuda.memory_stats(device)``; empty before CUDA is initialized in this process."""
        _check_cuda_device(device)
        if not _cuda_initialized():
            return {}
        return torch.cuda.memory_stats(device)


def _cuda_initialized() -> bool:
    """``torch.cuda.is_initialized()``, which torch leaves unannotated."""
    is_initialized: Callable[[], bool] = torch.cuda.is_initialized
    return is_initialized()


def _check_cuda_device(device: torch.device) -> None:
    if not isinstance(device, torch.device) or device.type != "cuda":
        raise ValueError(
            f"the cuda accelerator got device {device!r}; expected a cuda device such as "
            "torch.device('cuda', 0)"
        )
