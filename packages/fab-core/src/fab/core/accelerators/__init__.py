"""Accelerator base class and the cpu fallback. GPU accelerators live in fab-accelerators."""

from fab.core.accelerators.accelerator import Accelerator
from fab.core.accelerators.cpu import CPUAccelerator
from fab.core.registry import ACCELERATOR_REGISTRY

__all__ = ["ACCELERATOR_REGISTRY", "Accelerator", "CPUAccelerator"]
