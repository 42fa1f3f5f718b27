"""DDPStrategy: data parallel training with torch's DistributedDataParallel, one process per device.

Registered as ``ddp`` (the script re-run for every rank: "popen"), ``ddp_spawn``, ``ddp_fork`` and
``ddp_notebook`` (fork), ``ddp_find_unused_parameters_true``; and ``dp``, which falls back to
``ddp`` (see :func:`dp`).
"""

from __future__ import annotations

import atexit
import os
import warnings
from collections.abc import Generator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import timedelta
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch.nn import Module
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, RandomSampler

from fab.core.accelerators.accelerator import Accelerator
from fab.core.environments import ClusterEnvironment
from fab.core.io.checkpoint_io import CheckpointIO
from fab.core.precision.precision import Precision
from fab.core.utilities.rank_zero import rank_zero_only
from fab.strategies.launchers.multiprocessing import MultiProcessingLauncher
from fab.strategies.parallel import ParallelStrategy

StartMethod = Literal["popen", "spawn", "fork"]
#: torch's default for a process group that is not NCCL.
DEFAULT_TIMEOUT = timedelta(minutes=30)


class DDPStrategy(ParallelStrategy):
    """Replicate the model in every process and average gradients in backward.

    Args:
        start_method: how the processes are started: ``"popen"`` (the script re-run for every
            rank, as torchrun does), ``"spawn"`` or ``"fork"`` (``torch.multiprocessing``).
        process_group_backend: ``"gloo"``, ``"nccl"``, ...; the accelerator's
            ``distributed_backend`` by default.
        timeout: the process group's timeout for collectives.
        ddp_kwargs: passed to :class:`torch.nn.parallel.DistributedDataParallel`.
    """

    def __init__(
        self,
        accelerator: Accelerator | None = None,
        parallel_devices: list[torch.device] | None = None,
        cluster_environment: ClusterEnvironment | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision: Precision | None = None,
        process_group_backend: str | None = None,
        timeout: timedelta | None = DEFAULT_TIMEOUT,
        start_method: StartMethod = "popen",
        **ddp_kwargs: Any,
    ) -> None:
        super().__init__(
            accelerator=accelerator,
            parallel_devices=parallel_devices,
            cluster_environment=cluster_environment,
            checkpoint_io=checkpoint_io,
            precision=precision,
        )
        if start_method not in ("popen", "spawn", "fork"):
            raise ValueError(f"start_method={start_method!r}; accepted: 'popen', 'spawn', 'fork'")
        self._start_method: StartMethod = start_method
        self._process_group_backend = process_group_backend
        self._timeout = timeout
        self._ddp_kwargs = ddp_kwargs

    @property
    def start_method(self) -> StartMethod:
        return self._start_method

    @property
    def process_group_backend(self) -> str:
        if self._process_group_backend is not None:
            return self._process_group_backend
        if self.accelerator is not None:
            return self.accelerator.distributed_backend
        return "gloo"

    # -- processes ------------------------------------------------------------------------------

    def configure_launcher(self) -> None:
        if self.cluster_environment.creates_processes_externally:
            return  # torchrun, srun, mpirun or fab's launcher started every process already
        if self._start_method in ("spawn", "fork"):
            self._launcher = MultiProcessingLauncher(
                self.cluster_environment,
                num_processes=self.num_processes,
                num_nodes=self.num_nodes,
                start_method=self._start_method,
            )
            return
        if self.num_processes * self.num_nodes > 1:
            raise NotImplementedError(
                "strategy 'ddp' (start_method='popen', the script re-run for every rank) is not "
                "available yet in fab-strategies. Use strategy='ddp_spawn' (or 'ddp_fork'), or "
                "start the processes yourself with torchrun (or `fab run`): "
                f"torchrun --nproc-per-node={self.num_processes} your_script.py"
            )

    def setup_environment(self) -> None:
        env = self.cluster_environment
        env.set_global_rank(self.node_rank * self.num_processes + self.local_rank)
        env.set_world_size(self.num_nodes * self.num_processes)
        super().setup_environment()
        rank_zero_only.rank = self.global_rank  # type: ignore[attr-defined]
        if not dist.is_available():
            raise RuntimeError("torch.distributed is not available in this build of torch")
        if dist.is_initialized():
            return
        os.environ["MASTER_ADDR"] = env.main_address
        os.environ["MASTER_PORT"] = str(env.main_port)
        kwargs: dict[str, Any] = {}
        if self._timeout is not None:
            kwargs["timeout"] = self._timeout
        dist.init_process_group(
            self.process_group_backend,
            rank=self.global_rank,
            world_size=self.world_size,
            **kwargs,
        )
        # A gloo group that is never destroyed makes some processes abort at exit.
        atexit.register(_destroy_process_group)

    def teardown(self) -> None:
        _destroy_process_group()
        self.cluster_environment.teardown()
        super().teardown()

    # -- models and data ------------------------------------------------------------------------

    def setup_module(self, module: Module) -> Module:
        device_ids = [self.root_device.index] if self.root_device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids, **self._ddp_kwargs)

    def no_backward_sync(self, module: Module, enabled: bool = True) -> AbstractContextManager[Any]:
        """Skip the gradient all-reduce in backward inside the block (gradient accumulation)."""
        if not enabled:
            return nullcontext()
        if not isinstance(module, DistributedDataParallel):
            raise TypeError(
                "no_backward_sync needs the model set up by this strategy (wrapped in "
                f"DistributedDataParallel), got {type(module).__name__}"
            )
        return _no_sync(module)

    def process_dataloader(
        self, dataloader: DataLoader[Any], use_distributed_sampler: bool = True
    ) -> DataLoader[Any]:
        """With ``use_distributed_sampler``, re-create the loader with a DistributedSampler that
        gives this rank its share; the shuffling follows the original sampler (a RandomSampler
        shuffles) and every other argument of the loader is kept."""
        if not use_distributed_sampler or self.world_size <= 1:
            return dataloader
        if isinstance(dataloader.dataset, IterableDataset):
            return dataloader
        if isinstance(dataloader.sampler, DistributedSampler):
            return dataloader
        if dataloader.batch_sampler is not None and not _is_default_batch_sampler(dataloader):
            raise TypeError(
                f"this DataLoader has a custom batch_sampler ({type(dataloader.batch_sampler)}) "
                "that fab cannot split across processes; shard it yourself and pass "
                "use_distributed_sampler=False"
            )
        sampler: DistributedSampler[Any] = DistributedSampler(
            dataloader.dataset,
            num_replicas=self.world_size,
            rank=self.global_rank,
            shuffle=isinstance(dataloader.sampler, RandomSampler),
            drop_last=dataloader.drop_last,
        )
        return _recreate(dataloader, sampler)


@contextmanager
def _no_sync(module: DistributedDataParallel) -> Generator[None, None, None]:
    with module.no_sync():
        yield


def _destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _is_default_batch_sampler(loader: DataLoader[Any]) -> bool:
    from torch.utils.data import BatchSampler

    return type(loader.batch_sampler) is BatchSampler


#: DataLoader arguments kept when it is re-created (sampler, batch_sampler and shuffle are
#: replaced).
_LOADER_ARGS = (
    "num_workers",
    "collate_fn",
    "pin_memory",
    "timeout",
    "worker_init_fn",
    "multiprocessing_context",
    "generator",
    "prefetch_factor",
    "persistent_workers",
    "pin_memory_device",
    "in_order",
)


def _recreate(loader: DataLoader[Any], sampler: DistributedSampler[Any]) -> DataLoader[Any]:
    kwargs: dict[str, Any] = {
        name: getattr(loader, name) for name in _LOADER_ARGS if hasattr(loader, name)
    }
    if kwargs.get("num_workers", 0) == 0:
        kwargs.pop("prefetch_factor", None)
        kwargs["persistent_workers"] = False
    if not kwargs.get("pin_memory_device"):
        kwargs.pop("pin_memory_device", None)
    return type(loader)(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        drop_last=loader.drop_last,
        **kwargs,
    )


# -- registered factories ----------------------------------------------------------------------


def ddp_spawn() -> DDPStrategy:
    return DDPStrategy(start_method="spawn")


def ddp_fork() -> DDPStrategy:
    return DDPStrategy(start_method="fork")


def ddp_find_unused_parameters_true() -> DDPStrategy:
    return DDPStrategy(find_unused_parameters=True)


def dp() -> DDPStrategy:
    """``strategy="dp"``: fab does not implement torch's DataParallel (single process, several
    GPUs, deprecated by torch in favour of DDP). Like Lightning Fabric on the CPU ("'dp' is not
    supported on CPUs, hence setting strategy='ddp'"), it warns and falls back to ``ddp``, on
    every accelerator."""
    warnings.warn(
        "strategy='dp' (torch.nn.DataParallel) is not supported by fab, hence using "
        "strategy='ddp' (DistributedDataParallel, one process per device) instead",
        UserWarning,
        stacklevel=2,
    )
    return DDPStrategy()
