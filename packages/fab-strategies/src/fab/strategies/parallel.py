"""ParallelStrategy: the base of every strategy whose processes talk over torch.distributed."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn import Module
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from fab.core.accelerators.accelerator import Accelerator
from fab.core.environments import ClusterEnvironment
from fab.core.io.checkpoint_io import CheckpointIO
from fab.core.precision.precision import Precision
from fab.core.strategies.strategy import ReduceOp, StateFilter, Strategy, StrategyContext
from fab.strategies.dataloaders import shard_dataloader
from fab.strategies.environments.detect import detect_environment
from fab.strategies.layout import DATA_PARALLEL, Layout
from fab.wrappers import unwrap_compiled

_T = TypeVar("_T")

_REDUCE_OPS = {
    "sum": dist.ReduceOp.SUM,
    "max": dist.ReduceOp.MAX,
    "min": dist.ReduceOp.MIN,
}


class ParallelStrategy(Strategy):
    """Several processes, one per device, whose ranks come from a cluster environment.

    The environment is the one given in ``Fabric(plugins=...)``, else the one
    :func:`~fab.strategies.detect_environment` finds (fab's own when no scheduler is detected).
    Collectives use the default process group unless a ``group`` is given; before the group exists
    (or in a world of one process) they behave as on a single process.
    """

    def __init__(
        self,
        accelerator: Accelerator | None = None,
        parallel_devices: list[torch.device] | None = None,
        cluster_environment: ClusterEnvironment | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision: Precision | None = None,
    ) -> None:
        super().__init__(accelerator=accelerator, checkpoint_io=checkpoint_io, precision=precision)
        self.parallel_devices = list(parallel_devices) if parallel_devices is not None else None
        self._cluster_environment = cluster_environment
        self.num_nodes = 1

    def connect(self, context: StrategyContext) -> None:
        super().connect(context)
        if self.parallel_devices is None:
            self.parallel_devices = list(context.parallel_devices)
        self.num_nodes = context.num_nodes
        if self._cluster_environment is None:
            self._cluster_environment = context.cluster_environment or detect_environment()
        self._cluster_environment.validate_settings(self.num_processes, self.num_nodes)

    @property
    def cluster_environment(self) -> ClusterEnvironment:
        if self._cluster_environment is None:
            self._cluster_environment = detect_environment()
        return self._cluster_environment

    @cluster_environment.setter
    def cluster_environment(self, environment: ClusterEnvironment) -> None:
        self._cluster_environment = environment

    @property
    def launch_required(self) -> bool:
        return True

    @property
    def num_processes(self) -> int:
        """Processes per node: one per device."""
        return len(self.parallel_devices) if self.parallel_devices else 1

    @property
    def root_device(self) -> torch.device:
        devices = self.parallel_devices or [torch.device("cpu")]
        return devices[self.local_rank % len(devices)]

    @property
    def world_size(self) -> int:
        return self.cluster_environment.world_size()

    @property
    def global_rank(self) -> int:
        return self.cluster_environment.global_rank()

    @property
    def local_rank(self) -> int:
        return self.cluster_environment.local_rank()

    @property
    def node_rank(self) -> int:
        return self.cluster_environment.node_rank()

    @property
    def layout(self) -> Layout:
        """The named degrees of parallelism. Here every process holds the whole model and takes
        its own batch: one ``data_parallel`` dimension of the world's size (DDP). Sharded
        strategies add model-parallel dimensions, whose processes share a batch."""
        return Layout(((DATA_PARALLEL, self.world_size),))

    @property
    def distributed_sampler_kwargs(self) -> dict[str, Any] | None:
        """How many different batches a step sees (``num_replicas``) and which one is this
        process's (``rank``), as the layout says: the world size and global rank under DDP,
        the data-parallel degree and rank under tensor parallel. ``process_dataloader`` shards
        the data by it."""
        layout = self.layout
        return {
            "num_replicas": layout.data_parallel_size,
            "rank": layout.data_parallel_rank(self.global_rank),
        }

    def process_dataloader(
        self, dataloader: DataLoader[Any], use_distributed_sampler: bool = True
    ) -> DataLoader[Any]:
        """With ``use_distributed_sampler``, re-create the loader so that this process iterates
        its share, as ``distributed_sampler_kwargs`` says: a DistributedSampler for the default
        samplers, the user's own sampler or batch sampler sharded otherwise (see
        :mod:`fab.strategies.dataloaders`). The processes that hold parts of one model replica
        (tensor parallel) take the same share."""
        kwargs = self.distributed_sampler_kwargs
        if kwargs is None:  # a subclass whose processes all take the whole data
            return dataloader
        return shard_dataloader(
            dataloader,
            num_replicas=kwargs["num_replicas"],
            rank=kwargs["rank"],
            use_distributed_sampler=use_distributed_sampler,
        )

    # -- collectives ----------------------------------------------------------------------------

    @staticmethod
    def _distributed() -> bool:
        return dist.is_available() and dist.is_initialized()

    def process_group(self, name: str) -> Any:
        """The process group of the layout's dimension ``name`` (``"data_parallel"``,
        ``"tensor_parallel"``, ...) that this process belongs to: a collective given
        ``group=name`` runs over it. ``"data_parallel"`` names every process that takes its own
        batch. Here, with one dimension (DDP), that is the whole world; strategies with a device
        mesh return the mesh's group. A name the layout does not have raises ``ValueError``
        listing the accepted ones."""
        layout = self.layout
        dims = layout.dimensions_of(name)
        if len(dims) == len(layout.names):
            return dist.group.WORLD
        raise ValueError(
            f"group={name!r} is part of the layout {dict(layout.dimensions)}, and "
            f"{type(self).__name__} has no device mesh to take its group from; pass a ProcessGroup"
        )

    def _group(self, group: Any | None) -> Any | None:
        """A layout dimension's name as its process group; anything else as it is."""
        if not isinstance(group, str):
            return group
        if not self._distributed():  # one process: nothing to exchange; the name is checked
            self.layout.dimensions_of(group)
            return None
        return self.process_group(group)

    def all_gather(
        self, tensor: Tensor, group: Any | None = None, sync_grads: bool = False
    ) -> Tensor:
        """Every process's ``tensor``, stacked along a new first dimension, over the whole world
        by default (as Lightning); ``group`` may be a ProcessGroup or name a layout dimension
        (``"data_parallel"``, see ``process_group``)."""
        group = self._group(group)
        if not self._distributed():  # one process: the tensor itself, as on single_device
            return tensor
        group = group if group is not None else dist.group.WORLD
        if sync_grads:
            from torch.distributed.nn.functional import all_gather as differentiable_all_gather

            with warnings.catch_warnings():  # deprecated for DTensor users; right for a tensor
                warnings.simplefilter("ignore", FutureWarning)
                gathered = differentiable_all_gather(  # type: ignore[no-untyped-call]
                    tensor.contiguous(), group=group
                )
            return torch.stack(list(gathered))
        size = dist.get_world_size(group)
        parts = [torch.empty_like(tensor).contiguous() for _ in range(size)]
        with torch.no_grad():
            dist.all_gather(parts, tensor.contiguous(), group=group)
        return torch.stack(parts)

    def all_reduce(
        self, tensor: Tensor, group: Any | None = None, reduce_op: ReduceOp = "mean"
    ) -> Tensor:
        """Reduce ``tensor`` over the whole world by default (as Lightning: a mean over every
        process; under tensor parallel the processes of one group hold the same loss, so that
        mean is the data-parallel one); ``group`` may be a ProcessGroup or name a layout
        dimension: ``fabric.all_reduce(rows, group="data_parallel", reduce_op="sum")`` counts
        each batch once."""
        if reduce_op not in ("mean", "sum", "max", "min"):
            raise ValueError(f"reduce_op={reduce_op!r}; accepted: 'mean', 'sum', 'max', 'min'")
        group = self._group(group)
        if not self._distributed():
            return tensor
        group = group if group is not None else dist.group.WORLD
        op = dist.ReduceOp.SUM if reduce_op == "mean" else _REDUCE_OPS[reduce_op]
        dist.all_reduce(tensor, op=op, group=group)
        if reduce_op == "mean":
            size = dist.get_world_size(group)
            if tensor.is_floating_point() or tensor.is_complex():
                tensor.div_(size)
            else:  # an integer tensor cannot hold the mean in place
                tensor = tensor / size
        return tensor

    def barrier(self, name: str | None = None) -> None:
        if not self._distributed():
            return
        if dist.get_backend() == "nccl" and torch.cuda.is_available():
            dist.barrier(device_ids=[self.root_device.index or 0])
        else:
            dist.barrier()

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        if not self._distributed():
            if src != 0:
                raise ValueError(f"src={src}, but the only process has rank 0")
            return obj
        holder = [obj]
        dist.broadcast_object_list(holder, src=src)
        return holder[0]

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        if not self._distributed():
            return decision
        votes = torch.tensor(int(decision), device=self.root_device)
        votes = self.all_reduce(votes, reduce_op="sum")
        count = int(votes.item())
        return count == self.world_size if all else count > 0

    # -- checkpoints ----------------------------------------------------------------------------

    def get_module_state_dict(self, module: Module) -> dict[str, Any]:
        """The model's own keys, without DistributedDataParallel's ``module.`` prefix."""
        return super().get_module_state_dict(_unwrap_ddp(module))

    def load_module_state_dict(
        self, module: Module, state_dict: dict[str, Any], strict: bool = True
    ) -> None:
        super().load_module_state_dict(_unwrap_ddp(module), state_dict, strict=strict)

    def save_checkpoint(
        self,
        path: str | Path,
        state: dict[str, Any],
        storage_options: Any | None = None,
        filter: StateFilter | None = None,
    ) -> None:
        """Every process converts ``state``; global rank 0 alone writes the file. Every process
        returns once the file is written, and if the save failed on any process (rank 0 could not
        write), it raises on every process instead of leaving the others waiting."""
        self._on_every_process(
            f"saving the checkpoint to {path}",
            lambda: super(ParallelStrategy, self).save_checkpoint(
                path, state, storage_options=storage_options, filter=filter
            ),
        )

    def load_checkpoint(
        self,
        path: str | Path,
        state: Module | Optimizer | dict[str, Any] | None = None,
        strict: bool = True,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Every process reads ``path`` and restores its own replica in place (``load_raw`` comes
        here too). If that fails on any process (a missing file, a file that only some processes
        can see), it raises on every process."""
        remainder: dict[str, Any] | None = self._on_every_process(
            f"loading the checkpoint {path}",
            lambda: super(ParallelStrategy, self).load_checkpoint(
                path, state, strict=strict, weights_only=weights_only
            ),
        )
        return remainder or {}

    def _on_every_process(self, action: str, call: Callable[[], _T]) -> _T | None:
        """Collective: run ``call`` here; return its result on every process when it succeeded
        on all of them; otherwise raise on every process: its own error where it happened, a
        ``RuntimeError`` naming the rank that failed (and its error) on the others."""
        error: Exception | None = None
        result: _T | None = None
        try:
            result = call()
        except Exception as err:
            error = err
        if not self._distributed():
            if error is not None:
                raise error
            return result
        if not self.reduce_boolean_decision(error is None, all=True):
            _raise_failure(self.global_rank, self.world_size, error, action)
        return result


def _raise_failure(rank: int, world_size: int, error: Exception | None, action: str) -> NoReturn:
    """Exchange the failures' messages (every process is here) and raise."""
    mine = None if error is None else f"{type(error).__name__}: {error}"
    messages: list[str | None] = [None] * world_size
    dist.all_gather_object(messages, mine)
    if error is not None:
        raise error
    failed = [(r, message) for r, message in enumerate(messages) if message is not None]
    details = "; ".join(f"global rank {r}: {message}" for r, message in failed)
    raise RuntimeError(f"{action} failed on another process ({details})")


def _unwrap_ddp(module: Module) -> Module:
    """The model under DistributedDataParallel and ``torch.compile`` layers, in either order."""
    module = unwrap_compiled(module)[0]
    if isinstance(module, DistributedDataParallel):
        module = unwrap_compiled(module.module)[0]
    return module
