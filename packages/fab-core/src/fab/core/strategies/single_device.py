"""The single_device strategy: one process, one device. fab-core's fallback."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from fab.core.accelerators.accelerator import Accelerator
from fab.core.io.checkpoint_io import CheckpointIO
from fab.core.precision.precision import Precision
from fab.core.strategies.strategy import ReduceOp, Strategy, StrategyContext


class SingleDeviceStrategy(Strategy):
    """Everything on one device in the current process. Collectives have nothing to exchange:
    ``all_gather`` returns the tensor itself (no leading dimension of size 1, as in Lightning),
    reductions are the identity."""

    def __init__(
        self,
        device: torch.device | str | int | None = None,
        accelerator: Accelerator | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision: Precision | None = None,
    ) -> None:
        super().__init__(accelerator=accelerator, checkpoint_io=checkpoint_io, precision=precision)
        self._root_device = torch.device(device) if device is not None else None

    def connect(self, context: StrategyContext) -> None:
        super().connect(context)
        if len(context.parallel_devices) != 1 or context.num_nodes != 1:
            raise ValueError(
                f"the single_device strategy runs one process on one device, but "
                f"{len(context.parallel_devices)} device(s) on {context.num_nodes} node(s) were "
                "asked for; use a multi-process strategy such as 'ddp' (fab-strategies)"
            )
        if self._root_device is None:
            self._root_device = context.parallel_devices[0]

    @property
    def root_device(self) -> torch.device:
        return self._root_device if self._root_device is not None else torch.device("cpu")

    def all_gather(
        self, tensor: Tensor, group: Any | None = None, sync_grads: bool = False
    ) -> Tensor:
        return tensor

    def all_reduce(
        self, tensor: Tensor, group: Any | None = None, reduce_op: ReduceOp = "mean"
    ) -> Tensor:
        if reduce_op not in ("mean", "sum", "max", "min"):
            raise ValueError(f"reduce_op={reduce_op!r}; accepted: 'mean', 'sum', 'max', 'min'")
        return tensor

    def barrier(self, name: str | None = None) -> None:
        pass

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        if src != 0:
            raise ValueError(f"src={src}, but the only process has rank 0")
        return obj
