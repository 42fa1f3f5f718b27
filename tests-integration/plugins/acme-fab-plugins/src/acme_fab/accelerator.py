"""The ``acme`` accelerator: ACME's (imaginary) device, which runs on the CPU.

Registered as ``acme`` in the ``fab.accelerators`` entry-point group. It is available only where
``ACME_AVAILABLE=1``; there, ``Fabric(accelerator="auto")`` prefers it to ``cpu``.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import torch

from fab.core.accelerators import Accelerator
from fab.core.accelerators.cpu import parse_cpu_devices

#: The environment variable that makes the accelerator available.
AVAILABLE_ENV = "ACME_AVAILABLE"


class AcmeAccelerator(Accelerator):
    """ACME's device. Processes run on the CPU; ``devices`` is the number of processes."""

    #: Above cpu (0), so ``accelerator="auto"`` picks acme where it is available.
    auto_priority: ClassVar[int] = 5
    distributed_backend: ClassVar[str] = "gloo"

    def setup_device(self, device: torch.device) -> None:
        if device.type != "cpu":
            raise ValueError(f"the acme accelerator runs on cpu devices, got {device}")

    @staticmethod
    def parse_devices(devices: Any) -> int:
        return parse_cpu_devices(devices)

    @staticmethod
    def get_parallel_devices(devices: Any) -> list[torch.device]:
        return [torch.device("cpu")] * parse_cpu_devices(devices)

    @staticmethod
    def auto_device_count() -> int:
        return 1

    @staticmethod
    def is_available() -> bool:
        return os.environ.get(AVAILABLE_ENV) == "1"
