"""Accelerators for fab: the base class and cpu fallback (from fab-core) under the names users know.

GPU accelerators (cuda, mps, and ``gpu`` as an alias) are registered here through the
``fab.accelerators`` entry points.
"""

from fab.core.accelerators import Accelerator, CPUAccelerator

__all__ = ["Accelerator", "CPUAccelerator"]
