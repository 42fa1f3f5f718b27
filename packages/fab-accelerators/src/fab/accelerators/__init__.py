"""Accelerators for fab: cuda (also ``gpu``) and mps, with the base class and the cpu fallback
(from fab-core) under the names users know.

fab-core finds the accelerators through the ``fab.accelerators`` entry points this distribution
registers (``cuda``, ``gpu``, ``mps``); importing this package initializes no device runtime.
"""

from fab.accelerators.cuda import CUDAAccelerator
from fab.accelerators.mps import MPSAccelerator
from fab.core.accelerators import Accelerator, CPUAccelerator

__all__ = ["Accelerator", "CPUAccelerator", "CUDAAccelerator", "MPSAccelerator"]
