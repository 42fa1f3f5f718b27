"""ModelParallelStrategy: the user's own parallelization (tensor parallel, FSDP2, both) on a 2-D
mesh named ``("data_parallel", "tensor_parallel")``, as Lightning Fabric's strategy of that name.

Registered as ``model_parallel``. The user's ``parallelize_fn(model, device_mesh)`` applies
``torch.distributed.tensor.parallel.parallelize_module`` over ``device_mesh["tensor_parallel"]``
and ``fully_shard`` over ``device_mesh["data_parallel"]`` and returns the model; the strategy does
the rest in :class:`~fab.strategies.sharded.ShardedStrategy`'s order (meta-device creation,
allocation of each rank's shards with the values of an eager construction, optimizer rebinding,
checkpoints). The ranks of one tensor-parallel group take the same batch.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

import torch
from torch.nn import Module

from fab.core.accelerators.accelerator import Accelerator
from fab.core.environments import ClusterEnvironment
from fab.core.io.checkpoint_io import CheckpointIO
from fab.core.precision.precision import Precision
from fab.strategies.ddp import DEFAULT_TIMEOUT, StartMethod
from fab.strategies.layout import Layout
from fab.strategies.sharded import ShardedStrategy, StateDictType

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh

    from fab.strategies.surgery_layout import MeshSurgeryLayout

Size = int | Literal["auto"]


class ModelParallelStrategy(ShardedStrategy):
    """Tensor parallel and/or FSDP2, applied by the user's ``parallelize_fn``.

    Args:
        parallelize_fn: ``fn(model, device_mesh) -> model``; ``device_mesh`` has the dimensions
            ``"data_parallel"`` and ``"tensor_parallel"``.
        data_parallel_size: how many model replicas (or FSDP shards); ``"auto"``: the number of
            nodes.
        tensor_parallel_size: how many processes split each layer; ``"auto"``: the processes of
            one node.
        save_distributed_checkpoint: save a directory of shards (True) or one full file from
            rank 0 (False).
        start_method: how the processes are started, as for ``DDPStrategy``.
    """

    def __init__(
        self,
        parallelize_fn: Callable[[Module, DeviceMesh], Module],
        data_parallel_size: Size = "auto",
        tensor_parallel_size: Size = "auto",
        save_distributed_checkpoint: bool = True,
        process_group_backend: str | None = None,
        timeout: timedelta | None = DEFAULT_TIMEOUT,
        accelerator: Accelerator | None = None,
        parallel_devices: list[torch.device] | None = None,
        cluster_environment: ClusterEnvironment | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision: Precision | None = None,
        start_method: StartMethod = "popen",
    ) -> None:
        super().__init__(
            accelerator=accelerator,
            parallel_devices=parallel_devices,
            cluster_environment=cluster_environment,
            checkpoint_io=checkpoint_io,
            precision=precision,
            process_group_backend=process_group_backend,
            timeout=timeout,
            start_method=start_method,
        )
        if not callable(parallelize_fn):
            raise TypeError(
                f"parallelize_fn must be a function (model, device_mesh) -> model, got "
                f"{parallelize_fn!r}"
            )
        for name, size in (
            ("data_parallel_size", data_parallel_size),
            ("tensor_parallel_size", tensor_parallel_size),
        ):
            if size != "auto" and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
                raise ValueError(f"{name}={size!r}; accepted: a positive int or 'auto'")
        self._parallelize_fn = parallelize_fn
        self._data_parallel_size = data_parallel_size
        self._tensor_parallel_size = tensor_parallel_size
        self._save_distributed_checkpoint = save_distributed_checkpoint

    @property
    def checkpoint_format(self) -> StateDictType:
        return "sharded" if self._save_distributed_checkpoint else "full"

    @property
    def layout(self) -> Layout:
        """``data_parallel`` x ``tensor_parallel``; an ``"auto"`` size is the number of nodes
        (data) or processes per node (tensor), or what the world size leaves for it."""
        world = self.num_nodes * self.num_processes
        data, tensor = self._data_parallel_size, self._tensor_parallel_size
        if data == "auto" and tensor == "auto":
            data, tensor = self.num_nodes, self.num_processes
        elif data == "auto":
            assert isinstance(tensor, int)
            data = max(1, world // tensor)
        elif tensor == "auto":
            tensor = max(1, world // data)
        assert isinstance(data, int)
        assert isinstance(tensor, int)
        return Layout((("data_parallel", data), ("tensor_parallel", tensor)))

    def parallelize(self, module: Module) -> Module:
        parallelized = self._parallelize_fn(module, self.device_mesh)
        if not isinstance(parallelized, Module):
            raise TypeError(
                "parallelize_fn must return the model (a torch.nn.Module), got "
                f"{type(parallelized).__name__}"
            )
        return parallelized

    def surgery_layout(self, module: Module) -> MeshSurgeryLayout:
        """How model surgery makes ``module``'s activations whole: reassembled from their
        ``DTensor`` placements over the tensor-parallel processes, concatenated along the batch
        over the data-parallel ones (see :mod:`fab.strategies.surgery_layout`)."""
        from fab.strategies.surgery_layout import MeshSurgeryLayout

        return MeshSurgeryLayout(self.device_mesh, self.layout)


__all__ = ["ModelParallelStrategy"]
