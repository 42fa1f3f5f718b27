"""Accelerator base class and the cpu fallback. GPU accelerators live in fab-accelerators."""

from fab.core.accelerators.accelerator import Accelerator
from fab.core.accelerators.cpu import CPUAccelerator

__all__ = ["Accelerator", "CPUAccelerator"]
