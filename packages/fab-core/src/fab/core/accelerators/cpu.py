"""The cpu accelerator: fab-core's fallback, always available."""

from __future__ import annotations

from typing import Any

import torch

from fab.core.accelerators.accelerator import Accelerator


class CPUAccelerator(Accelerator):
    """Runs on the CPU. ``devices`` is the number of processes (each on the CPU)."""

    auto_priority = 0
    distributed_backend = "gloo"

    def setup_device(self, device: torch.device) -> None:
        if device.type != "cpu":
            raise ValueError(f"the cpu accelerator got device {device}; expected a cpu device")

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
        return True


def parse_cpu_devices(devices: Any) -> int:
    """``devices`` for the cpu accelerator: a positive number of processes (int or digit string),
    or ``"auto"`` for one.

    ``-1`` ("every device") is refused, as Lightning refuses it on the CPU: there is no count of
    CPU devices to take, and silently running one process would hide the mistake.
    """
    if devices == "auto":
        return 1
    if isinstance(devices, bool):
        raise TypeError(f"devices={devices!r} is a bool; expected a positive int or 'auto'")
    if isinstance(devices, str) and devices.strip().isdigit():
        devices = int(devices.strip())
    if isinstance(devices, int) and devices > 0:
        return devices
    if devices == -1 or (isinstance(devices, str) and devices.strip() == "-1"):
        raise ValueError(
            f"devices={devices!r} ('every device') is not valid for the cpu accelerator: give "
            "the number of processes as a positive int (or a string of one), or 'auto' for one. "
            "-1 is for GPU accelerators."
        )
    raise ValueError(
        f"devices={devices!r} is not valid for the cpu accelerator: give the number of processes "
        "as a positive int (or a string of one), or 'auto'. Device indices (lists, '0,1') are for "
        "GPU accelerators."
    )
