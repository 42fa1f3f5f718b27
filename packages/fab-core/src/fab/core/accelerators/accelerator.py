"""The Accelerator base class: one kind of device (cpu, cuda, mps, a third party's)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch


class Accelerator(ABC):
    """A kind of device that fab can place models and data on.

    Subclasses are registered under a name in the ``fab.accelerators`` entry-point group.
    ``accelerator="auto"`` asks every registered accelerator ``is_available()``, highest
    ``auto_priority`` first, and takes the first that answers True.
    """

    #: Higher wins in ``accelerator="auto"``; cpu is 0, GPUs are above it.
    auto_priority: ClassVar[int] = 0
    #: The torch.distributed backend processes on this device use by default.
    distributed_backend: ClassVar[str] = "gloo"

    @abstractmethod
    def setup_device(self, device: torch.device) -> None:
        """Make ``device`` current for this process (``torch.cuda.set_device`` and the like)."""

    def teardown(self) -> None:
        """Release what ``setup_device`` took."""

    @staticmethod
    @abstractmethod
    def parse_devices(devices: Any) -> Any:
        """Turn the user's ``devices`` (int, list, ``"0,1"``, ``-1``, ``"auto"``) into this
        accelerator's canonical form (a count or a list of indices)."""

    @staticmethod
    @abstractmethod
    def get_parallel_devices(devices: Any) -> list[torch.device]:
        """The ``torch.device`` of every local process, from ``parse_devices``' result."""

    @staticmethod
    @abstractmethod
    def auto_device_count() -> int:
        """How many devices ``devices="auto"`` uses."""

    @staticmethod
    @abstractmethod
    def is_available() -> bool:
        """Whether this accelerator can run here. Must not initialize the device runtime."""

    def get_device_stats(self, device: torch.device) -> dict[str, Any]:
        """Device statistics to log (memory and the like); empty where there are none."""
        return {}
