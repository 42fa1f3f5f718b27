"""ShardedStrategy: what the sharded strategies (``fsdp``, ``model_parallel``) share.

The processes are started and connected as for ``ddp`` (a ``DDPStrategy`` does it, by
composition). A subclass says how to parallelize a model (``parallelize``) and holds a
:class:`~fab.strategies.layout.Layout`; this class owns the set-up order around it:

1. on the meta device when the model was created under ``init_module(empty_init=True)``
   (a real model first takes global rank 0's values), ``parallelize`` the model;
2. allocate each rank's shards and initialize them as an eager construction would have
   (:mod:`fab.strategies.sharded_init`);
3. point the optimizers given to ``setup`` at the sharded parameters (by parameter name).

Checkpoints are a directory of shards or one full file (:mod:`fab.strategies.sharded_checkpoint`).
"""

from __future__ import annotations

import weakref
from abc import abstractmethod
from collections.abc import Generator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor
from torch.nn import Module
from torch.optim import Optimizer

from fab.core.accelerators.accelerator import Accelerator
from fab.core.environments import ClusterEnvironment
from fab.core.io.checkpoint_io import CheckpointIO
from fab.core.precision.precision import Precision
from fab.core.strategies.strategy import (
    PRECISION_STATE_KEY,
    ModelSetup,
    StateFilter,
    StrategyContext,
)
from fab.lazy import has_meta, require_initialized
from fab.strategies import sharded_checkpoint
from fab.strategies.ddp import DEFAULT_TIMEOUT, DDPStrategy, StartMethod
from fab.strategies.layout import Layout
from fab.strategies.parallel import ParallelStrategy
from fab.strategies.sharded_init import broadcast_from_rank_zero, materialize_sharded

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh

StateDictType = Literal["full", "sharded"]
#: The random number generator's state when each module was created under empty init.
_INIT_RNG: weakref.WeakKeyDictionary[Module, Tensor] = weakref.WeakKeyDictionary()


class ShardedStrategy(ParallelStrategy):
    """The base of the strategies whose models are split over the processes."""

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
    ) -> None:
        super().__init__(
            accelerator=accelerator,
            parallel_devices=parallel_devices,
            cluster_environment=cluster_environment,
            checkpoint_io=checkpoint_io,
            precision=precision,
        )
        self._processes = DDPStrategy(
            accelerator=accelerator,
            parallel_devices=parallel_devices,
            cluster_environment=cluster_environment,
            checkpoint_io=checkpoint_io,
            precision=precision,
            process_group_backend=process_group_backend,
            timeout=timeout,
            start_method=start_method,
        )
        self._mesh: DeviceMesh | None = None
        #: The parameters of the models set up so far, by id (what optimizers may update);
        #: created on first use (a weak mapping cannot be pickled for a spawned launch).
        self._set_up_params: weakref.WeakValueDictionary[int, Tensor] | None = None

    # -- what a subclass says -----------------------------------------------------------------

    @property
    @abstractmethod
    def layout(self) -> Layout:
        """The named degrees of parallelism (validated against the world size at launch)."""

    @abstractmethod
    def parallelize(self, module: Module) -> Module:
        """Shard ``module`` over ``device_mesh`` (on the meta device or real) and return it."""

    @property
    @abstractmethod
    def checkpoint_format(self) -> StateDictType:
        """What ``save`` writes: ``"sharded"`` (a directory) or ``"full"`` (one file)."""

    # -- processes ------------------------------------------------------------------------------

    @property
    def start_method(self) -> StartMethod:
        return self._processes.start_method

    @property
    def process_group_backend(self) -> str:
        return self._processes.process_group_backend

    def connect(self, context: StrategyContext) -> None:
        self._processes.connect(context)
        self._cluster_environment = self._processes.cluster_environment
        super().connect(context)

    def configure_launcher(self) -> None:
        self._processes.configure_launcher()
        self._launcher = self._processes.launcher

    def setup_environment(self) -> None:
        self._processes.setup_environment()
        self.layout.check_world_size(self.world_size)

    def teardown(self) -> None:
        self._mesh = None
        self._processes.teardown()

    # -- layout ---------------------------------------------------------------------------------

    @property
    def device_mesh(self) -> DeviceMesh:
        """The layout's ``DeviceMesh`` (built on first use, after ``launch``)."""
        if self._mesh is None:
            self._mesh = self.layout.build_mesh(self.root_device.type)
        return self._mesh

    def process_group(self, name: str) -> Any:
        """As ``ParallelStrategy.process_group``, from the device mesh: the group of this
        process along the named dimension (``"data_parallel"`` also spans both data dimensions
        of hybrid FSDP). Collective on first use (it may build the device mesh): call it on every
        process."""
        layout = self.layout
        dims = layout.dimensions_of(name)
        if len(dims) == len(layout.names):
            return super().process_group(name)
        if len(dims) == 1:
            return self.device_mesh.get_group(dims[0])
        raise ValueError(  # no layout of fab's has this today
            f"group={name!r} spans the dimensions {[layout.names[d] for d in dims]} of "
            f"{dict(layout.dimensions)}, which form no single group of the device mesh; "
            "pass a ProcessGroup"
        )

    # -- models ---------------------------------------------------------------------------------

    @property
    def empty_init_on_meta(self) -> bool:
        """True: ``setup`` allocates only this rank's shards after sharding."""
        return True

    def module_init_context(self, empty_init: bool | None = None) -> AbstractContextManager[object]:
        """With ``empty_init=True``, parameters are created on the meta device (buffers stay
        real) and ``setup`` allocates only this rank's shards; the random number generator's
        state is recorded so that the shards get the values an eager construction would have."""
        context = super().module_init_context(empty_init)
        if not empty_init:
            return context
        stack = ExitStack()
        stack.enter_context(_recording_init_rng())
        stack.enter_context(context)
        return stack

    def materialize_module(self, module: Module) -> None:
        """Nothing before sharding: ``setup`` allocates each rank's shards after it."""

    def module_to_device(self, module: Module) -> None:
        """Move what is real to this process's device; meta tensors wait for sharding."""
        device = self.root_device
        module._apply(lambda t: t if t.is_meta else t.to(device))  # type: ignore[no-untyped-call]

    def setup(
        self, module: Module, optimizers: list[Optimizer], move_to_device: bool = True
    ) -> ModelSetup:
        """The order torch needs: the precision learns this process's device
        (``connect_precision``, once) and converts the model; what is real moves to this
        process's device (meta tensors wait); ``setup_module`` parallelizes it and allocates each
        rank's shards; the optimizers, which were built on the model's parameters before
        sharding, are pointed at the sharded parameters (by parameter name)."""
        for optimizer in optimizers:
            if optimizer.state:
                raise ValueError(
                    f"{type(optimizer).__name__} already has state (it stepped, or a checkpoint "
                    "was loaded into it) for parameters that sharding replaces; set it up before "
                    "its first step, and load checkpoints with fabric.load after setup"
                )
        names = {id(p): name for name, p in module.named_parameters(remove_duplicate=False)}
        for index, optimizer in enumerate(optimizers):
            unknown = [p for g in optimizer.param_groups for p in g["params"] if id(p) not in names]
            if unknown:
                raise ValueError(
                    f"optimizer {index} ({type(optimizer).__name__}) updates {len(unknown)} "
                    "tensors that are not parameters of the model given to setup; build it "
                    "from model.parameters()"
                )
        self.connect_precision()
        module = self.precision.convert_module(module)
        if move_to_device:
            self.module_to_device(module)
        sharded = self.setup_module(module)
        by_name = dict(sharded.named_parameters(remove_duplicate=False))
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                group["params"] = [by_name[names[id(p)]] for p in group["params"]]
        # the model is sharded in place: it is both what a call runs and the user's model
        return ModelSetup(sharded, optimizers, sharded)

    def setup_module(self, module: Module) -> Module:
        """Parallelize the model; a model on the meta device is then allocated shard by shard
        and initialized; a real one takes global rank 0's values first, so that every rank
        starts equal. Returns the parallelized model."""
        require_initialized(module, f"{type(self).__name__}.setup_module")
        on_meta = has_meta(module)
        if not on_meta:
            broadcast_from_rank_zero(module)
        rng_state = _init_rng_of(module)
        module = self.parallelize(module)
        if on_meta:
            materialize_sharded(module, self.root_device, rng_state)
        if self._set_up_params is None:
            self._set_up_params = weakref.WeakValueDictionary()
        self._set_up_params.update((id(p), p) for p in module.parameters())
        return module

    def setup_optimizer(self, optimizer: Optimizer) -> Optimizer:
        """An optimizer of a sharded model must be built after ``setup_module`` (on the sharded
        parameters), or given to ``setup`` with its model."""
        known = self._set_up_params if self._set_up_params is not None else {}
        stale = [
            p for g in optimizer.param_groups for p in g["params"] if known.get(id(p)) is not p
        ]
        if stale:
            raise ValueError(
                f"{type(optimizer).__name__} updates {len(stale)} parameters that are not those of "
                "a model set up by this strategy: it was built before the model was set up (and "
                "sharding replaced the parameters). Either create it after "
                "`model = fabric.setup_module(model)` from model.parameters(), or pass both to "
                "`fabric.setup(model, optimizer)`, which rebinds it"
            )
        return optimizer

    def no_backward_sync(self, module: Module, enabled: bool = True) -> AbstractContextManager[Any]:
        """Inside the block, backward keeps this rank's unsharded gradients and skips their
        reduction over the data-parallel ranks (gradient accumulation); the first backward after
        the block synchronizes them all."""
        from torch.distributed.fsdp import FSDPModule

        if not enabled:
            return nullcontext()
        sharded = [sub for sub in module.modules() if isinstance(sub, FSDPModule)]
        if not sharded:
            raise TypeError(
                "no_backward_sync needs a model set up by this strategy with fully_shard applied "
                f"(an FSDPModule), got {type(module).__name__} with none inside"
            )
        return _no_gradient_sync(sharded)

    def clip_gradients_norm(
        self,
        module: Module,
        optimizer: Optimizer,
        max_norm: float,
        norm_type: float = 2.0,
        error_if_nonfinite: bool = True,
    ) -> Tensor:
        """Clip by the norm of the whole (sharded) gradient; returns that norm, whole."""
        from torch.distributed.tensor import DTensor

        norm = super().clip_gradients_norm(
            module, optimizer, max_norm, norm_type=norm_type, error_if_nonfinite=error_if_nonfinite
        )
        return norm.full_tensor() if isinstance(norm, DTensor) else norm

    # -- checkpoints ----------------------------------------------------------------------------

    def save_checkpoint(
        self,
        path: str | Path,
        state: dict[str, Any],
        storage_options: Any | None = None,
        filter: StateFilter | None = None,
    ) -> None:
        """``checkpoint_format`` ``"sharded"``: every process writes its shards into the
        directory ``path``; ``"full"``: the whole tensors are gathered on global rank 0, which
        writes one file. Atomic either way: the previous checkpoint at ``path`` survives a
        failed save."""
        if storage_options is not None:
            raise TypeError(
                f"{type(self).__name__}.save_checkpoint does not take storage_options (the "
                "checkpoint is written by torch.distributed.checkpoint); pass a CheckpointIO "
                "plugin instead"
            )
        if PRECISION_STATE_KEY in state:
            raise ValueError(f"'{PRECISION_STATE_KEY}' is a key fab reserves; rename that entry")
        self._on_every_process(
            f"saving the checkpoint to {path}",
            lambda: sharded_checkpoint.save(self, path, state, filter, self.checkpoint_format),
        )

    def load_checkpoint(
        self,
        path: str | Path,
        state: Module | Optimizer | dict[str, Any] | None = None,
        strict: bool = True,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Read a sharded directory (written at any world size) or a full file into ``state``'s
        objects in place; return what the checkpoint has beyond them. A model or an optimizer
        as ``state`` takes a plain, whole state dict (``load_raw``): each rank keeps its part."""
        safe = weights_only is not False
        remainder: dict[str, Any] | None = self._on_every_process(
            f"loading the checkpoint {path}",
            lambda: sharded_checkpoint.load(self, path, state, strict, safe),
        )
        return remainder or {}


@contextmanager
def _no_gradient_sync(modules: list[Any]) -> Generator[None, None, None]:
    for module in modules:
        module.set_requires_gradient_sync(False, recurse=False)
    try:
        yield
    finally:
        for module in modules:
            module.set_requires_gradient_sync(True, recurse=False)


@contextmanager
def _recording_init_rng() -> Generator[None, None, None]:
    """Record the random number generator's state for every module that registers a parameter
    inside the block."""
    from torch.nn.modules.module import register_module_parameter_registration_hook

    state = torch.random.get_rng_state()

    def record(module: Module, name: str, param: Any) -> None:
        _INIT_RNG.setdefault(module, state)

    handle = register_module_parameter_registration_hook(record)
    try:
        yield
    finally:
        handle.remove()


def _init_rng_of(module: Module) -> Tensor | None:
    """The recorded state of the earliest-created module of ``module`` (post order)."""
    for sub in module.modules():
        state = _INIT_RNG.get(sub)
        if state is not None:
            return state
    return None
