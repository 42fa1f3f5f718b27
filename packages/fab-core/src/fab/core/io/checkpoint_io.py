"""How checkpoints are written and read. Strategies delegate file I/O to a CheckpointIO."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch

PathLike = str | Path


class CheckpointIO(ABC):
    """Writes and reads one checkpoint (a dict of tensors and plain data) at a path."""

    @abstractmethod
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: PathLike, storage_options: Any | None = None
    ) -> None:
        """Write ``checkpoint`` to ``path``. Must never leave a truncated file at ``path``, nor
        destroy the checkpoint that was there, when it fails."""

    @abstractmethod
    def load_checkpoint(
        self,
        path: PathLike,
        map_location: str | torch.device | None = None,
        weights_only: bool = True,
    ) -> dict[str, Any]:
        """Read the checkpoint at ``path``. ``weights_only`` refuses pickles that would run code."""

    @abstractmethod
    def remove_checkpoint(self, path: PathLike) -> None:
        """Delete the checkpoint at ``path``."""

    def teardown(self) -> None:
        """Release resources (open files, background writers)."""
