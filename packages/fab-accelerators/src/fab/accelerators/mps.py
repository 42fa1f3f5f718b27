"""The mps accelerator: the GPU of Apple silicon Macs through ``torch.mps``.

MPS has exactly one device, ``torch.device("mps", 0)``. Processes on it use the gloo backend
(there is no NCCL on macOS).
"""

from __future__ import annotations

import platform
from typing import Any, ClassVar

import torch

from fab.accelerators.device_parser import parse_mps_devices
from fab.core.accelerators.accelerator import Accelerator

__all__ = ["MPSAccelerator"]


class MPSAccelerator(Accelerator):
    """The Apple silicon GPU. ``devices`` may be ``1``, ``"1"``, ``-1``, ``"-1"``, ``"auto"``,
    ``[0]`` or ``"0,"``: all of them select the one device."""

    #: Above cpu (0), below cuda (20). No machine has both, so the order between them decides
    #: nothing; cuda is asked first only because CUDA machines are the common case.
    auto_priority: ClassVar[int] = 10
    distributed_backend: ClassVar[str] = "gloo"

    def setup_device(self, device: torch.device) -> None:
        """Check that ``device`` is the MPS device; MPS has no current device to set."""
        if not isinstance(device, torch.device) or device.type != "mps":
            raise ValueError(
                f"the mps accelerator got device {device!r}; expected torch.device('mps', 0)"
            )
        if device.index not in (None, 0):
            raise ValueError(f"cannot set up {device}: MPS has one device, torch.device('mps', 0)")
        if not MPSAccelerator.is_available():
            raise RuntimeError(
                f"cannot set up {device}: MPS is not available here (it needs an Apple silicon Mac "
                "and a torch build with MPS)"
            )

    def teardown(self) -> None:
        """Give the MPS allocator's unused memory back."""
        if MPSAccelerator.is_available():
            torch.mps.empty_cache()

    @staticmethod
    def parse_devices(devices: Any) -> list[int]:
        """Always ``[0]`` for the accepted forms; anything else raises."""
        return parse_mps_devices(devices)

    @staticmethod
    def get_parallel_devices(devices: Any) -> list[torch.device]:
        """``[torch.device("mps", 0)]``."""
        return [torch.device("mps", index) for index in parse_mps_devices(devices)]

    @staticmethod
    def auto_device_count() -> int:
        """1 where MPS is available, else 0."""
        return 1 if MPSAccelerator.is_available() else 0

    @staticmethod
    def is_available() -> bool:
        """An Apple silicon Mac (arm64 macOS) whose torch build supports MPS."""
        return (
            platform.system() == "Darwin"
            and platform.machine() == "arm64"
            and torch.backends.mps.is_available()
        )

    def get_device_stats(self, device: torch.device) -> dict[str, Any]:
        """Memory of the MPS allocator, in bytes: what tensors hold, what the driver holds, and
        what Metal recommends at most; empty where MPS is not available."""
        if not isinstance(device, torch.device) or device.type != "mps":
            raise ValueError(
                f"the mps accelerator got device {device!r}; expected torch.device('mps', 0)"
            )
        if not MPSAccelerator.is_available():
            return {}
        return {
            "current_allocated_memory": torch.mps.current_allocated_memory(),
            "driver_allocated_memory": torch.mps.driver_allocated_memory(),
            "recommended_max_memory": torch.mps.recommended_max_memory(),
        }
