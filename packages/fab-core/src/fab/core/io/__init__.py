"""Checkpoint I/O: the CheckpointIO base class and the atomic single-file implementation."""

from fab.core.io.checkpoint_io import CheckpointIO
from fab.core.io.torch_io import TorchCheckpointIO, UnsafeCheckpointError, atomic_torch_save

__all__ = ["CheckpointIO", "TorchCheckpointIO", "UnsafeCheckpointError", "atomic_torch_save"]
