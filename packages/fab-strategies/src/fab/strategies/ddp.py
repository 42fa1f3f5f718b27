"""DDPStrategy: data parallel training with torch's DistributedDataParallel, one process per device.

Registered as ``ddp`` (the script re-run for every rank: "popen"), ``ddp_spawn``, ``ddp_fork`` and
``ddp_notebook`` (fork), ``ddp_find_unused_parameters_true``; and ``dp``, which falls back to
``ddp`` (see :func:`dp`).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Generator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import timedelta
from types import FrameType
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch.nn import Module
from torch.nn.parallel import DistributedDataParallel

from fab.core.accelerators.accelerator import Accelerator
from fab.core.environments import ClusterEnvironment
from fab.core.io.checkpoint_io import CheckpointIO
from fab.core.precision.precision import Precision
from fab.core.utilities.rank_zero import rank_zero_only
from fab.lazy import require_initialized
from fab.strategies.launchers._launch_plan import global_rank_of, world_size_of
from fab.strategies.launchers._lifecycle import (
    destroy_process_group_cleanly,
    track_uncaught_exceptions,
)
from fab.strategies.launchers.multiprocessing import MultiProcessingLauncher
from fab.strategies.launchers.subprocess_script import (
    SubprocessScriptLauncher,
    adopt_launcher_lifetime,
)
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
            # torchrun, srun, mpirun or fab's launcher started every process already; a worker
            # that fab started ends with the process that started it.
            adopt_launcher_lifetime()
            return
        if self._start_method in ("spawn", "fork"):
            self._launcher = MultiProcessingLauncher(
                self.cluster_environment,
                num_processes=self.num_processes,
                num_nodes=self.num_nodes,
                start_method=self._start_method,
            )
            return
        if self.num_processes * self.num_nodes > 1:
            self._launcher = SubprocessScriptLauncher(
                self.cluster_environment, num_processes=self.num_processes, num_nodes=self.num_nodes
            )

    def setup_environment(self) -> None:
        env = self.cluster_environment
        env.set_global_rank(global_rank_of(self.node_rank, self.num_processes, self.local_rank))
        env.set_world_size(world_size_of(self.num_processes, self.num_nodes))
        super().setup_environment()
        rank_zero_only.rank = self.global_rank  # type: ignore[attr-defined]
        _share_cpu_threads(self.root_device, self.num_processes)
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
        # A failure is told apart from a clean end when the group is destroyed (teardown).
        track_uncaught_exceptions()

    def teardown(self) -> None:
        """Destroy the process group (after a clean run, once every rank got here: a gloo group
        left to the interpreter's exit makes some processes abort), then release the cluster
        environment and the plugins. ``Fabric`` calls it when the process ends."""
        destroy_process_group_cleanly()
        self.cluster_environment.teardown()
        super().teardown()

    # -- models and data ------------------------------------------------------------------------

    def setup_module(self, module: Module) -> Module:
        # torch's own error names no module ("Modules with uninitialized parameters can't be used
        # with DistributedDataParallel"); this one names them and says what to do
        require_initialized(module, "DistributedDataParallel (strategy 'ddp')")
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


@contextmanager
def _no_sync(module: DistributedDataParallel) -> Generator[None, None, None]:
    with module.no_sync():
        yield


def _share_cpu_threads(device: torch.device, processes_per_node: int) -> None:
    """On the CPU, give each of the node's processes its share of the cores, unless
    ``OMP_NUM_THREADS`` says otherwise: with every process using every core, they keep waiting for
    each other (a 2-process run on 2 cores was ~40x slower). torchrun sets 1 thread per process."""
    if device.type != "cpu" or processes_per_node <= 1 or os.environ.get("OMP_NUM_THREADS"):
        return
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // processes_per_node))


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
    every accelerator. The warning is given once for the run (on global rank 0: the script
    re-run for the other ranks does not repeat it) and points at the user's line that asked for
    the strategy."""
    if rank_zero_only.rank == 0:  # type: ignore[attr-defined]
        warnings.warn(
            "strategy='dp' (torch.nn.DataParallel) is not supported by fab, hence using "
            "strategy='ddp' (DistributedDataParallel, one process per device) instead",
            UserWarning,
            stacklevel=_stacklevel_of_the_caller_outside_fab(),
        )
    return DDPStrategy()


def _stacklevel_of_the_caller_outside_fab() -> int:
    """The ``stacklevel`` that makes a warning given by the function calling this one point at
    the first frame outside fab's packages (the user's ``Fabric(...)`` line), however many of
    fab's frames (the connector, the registry) lie between."""
    import fab

    fab_roots = tuple(os.path.join(os.path.abspath(root), "") for root in fab.__path__)
    frame: FrameType | None = sys._getframe(2)  # the caller of the function that warns
    level = 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(fab_roots):
        frame = frame.f_back
        level += 1
    return level
