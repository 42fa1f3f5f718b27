"""The Strategy base class: how a model, its optimizers and its data are spread over processes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from torch.nn import Module
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from fab import lazy  # its functions are imported on first use (fab.lazy is PEP 562-lazy)
from fab.core.accelerators.accelerator import Accelerator
from fab.core.environments.environment import ClusterEnvironment
from fab.core.io.checkpoint_io import CheckpointIO
from fab.core.launchers.launcher import Launcher
from fab.core.precision.precision import Precision
from fab.core.utilities.apply_func import move_data_to_device

ReduceOp = Literal["mean", "sum", "max", "min"]
#: Where a checkpoint keeps the precision's state (a GradScaler's).
PRECISION_STATE_KEY = "fab_precision"
#: Filters for ``save``: a key of the state maps to a predicate on (parameter name, value).
StateFilter = dict[str, Callable[[str, Any], bool]]


@dataclass(frozen=True)
class StrategyContext:
    """What the connector resolved from ``Fabric(...)``'s arguments, for ``Strategy.connect``."""

    accelerator: Accelerator
    precision: Precision
    parallel_devices: tuple[torch.device, ...]
    num_nodes: int = 1
    checkpoint_io: CheckpointIO | None = None
    cluster_environment: ClusterEnvironment | None = None


class Strategy(ABC):
    """Places the model and data, runs backward and optimizer steps, communicates, checkpoints.

    A strategy owns the accelerator, the precision and the checkpoint I/O of a run; Fabric talks
    only to the strategy. Multi-process strategies (fab-strategies) add a cluster environment and a
    launcher; sharded ones (FSDP, tensor parallel) override ``setup_module_and_optimizers``,
    ``module_init_context`` and the state-dict methods.
    """

    def __init__(
        self,
        accelerator: Accelerator | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision: Precision | None = None,
    ) -> None:
        self._accelerator = accelerator
        self._checkpoint_io = checkpoint_io
        self._precision = precision
        self._launcher: Launcher | None = None

    # -- plugins -------------------------------------------------------------------------------

    @property
    def accelerator(self) -> Accelerator | None:
        return self._accelerator

    @accelerator.setter
    def accelerator(self, accelerator: Accelerator) -> None:
        self._accelerator = accelerator

    @property
    def checkpoint_io(self) -> CheckpointIO:
        if self._checkpoint_io is None:
            from fab.core.io.torch_io import TorchCheckpointIO

            self._checkpoint_io = TorchCheckpointIO()
        return self._checkpoint_io

    @checkpoint_io.setter
    def checkpoint_io(self, io: CheckpointIO) -> None:
        self._checkpoint_io = io

    @property
    def precision(self) -> Precision:
        if self._precision is None:
            self._precision = Precision()
        return self._precision

    @precision.setter
    def precision(self, precision: Precision) -> None:
        self._precision = precision

    @property
    def launcher(self) -> Launcher | None:
        """How the run's processes are started; None when the current process is the only one."""
        return self._launcher

    # -- where this process is -----------------------------------------------------------------

    @property
    @abstractmethod
    def root_device(self) -> torch.device:
        """The device of this process's model replica."""

    @property
    def world_size(self) -> int:
        return 1

    @property
    def global_rank(self) -> int:
        return 0

    @property
    def local_rank(self) -> int:
        return 0

    @property
    def node_rank(self) -> int:
        return 0

    @property
    def is_global_zero(self) -> bool:
        return self.global_rank == 0

    @property
    def distributed_sampler_kwargs(self) -> dict[str, Any] | None:
        """``num_replicas``/``rank`` for a DistributedSampler; None when data is not split."""
        return None

    @property
    def requires_fabric_backward(self) -> bool:
        """True when ``loss.backward()`` would be wrong and ``fabric.backward(loss)`` is needed."""
        return self.precision.requires_fabric_backward

    # -- lifecycle ------------------------------------------------------------------------------

    def connect(self, context: StrategyContext) -> None:
        """Take what the user did not give this strategy from the connector's choices.

        Called once by Fabric's connector. Subclasses that need more (devices, a cluster
        environment) override it and call ``super().connect(context)``.
        """
        if self._accelerator is None:
            self._accelerator = context.accelerator
        if self._precision is None:
            self._precision = context.precision
        if self._checkpoint_io is None and context.checkpoint_io is not None:
            self._checkpoint_io = context.checkpoint_io

    @property
    def launch_required(self) -> bool:
        """Whether ``Fabric.launch()`` must come before setting up models, data and collectives:
        True for strategies of several processes (they are started and connected there)."""
        return False

    def configure_launcher(self) -> None:
        """Choose ``self._launcher``; called once the accelerator and devices are known."""

    def setup_environment(self) -> None:
        """Prepare this process (device, process group); called from ``Fabric.launch``."""
        if self.accelerator is not None:
            self.accelerator.setup_device(self.root_device)

    def teardown(self) -> None:
        """Undo ``setup_environment`` (destroy process groups, release devices)."""
        self.precision.teardown()
        if self.accelerator is not None:
            self.accelerator.teardown()
        if self._checkpoint_io is not None:
            self._checkpoint_io.teardown()

    # -- models, optimizers, data --------------------------------------------------------------

    def setup_module_and_optimizers(
        self, module: Module, optimizers: list[Optimizer]
    ) -> tuple[Module, list[Optimizer]]:
        """Set up a model with its optimizers. Sharding strategies, whose optimizers must see the
        sharded parameters, override this."""
        module = self.setup_module(module)
        return module, [self.setup_optimizer(optimizer) for optimizer in optimizers]

    def setup_module(self, module: Module) -> Module:
        """Wrap the model for this strategy (DDP, ...) and return what forward should call.

        Fabric has converted it to the precision's dtype and, unless asked not to, moved it with
        ``module_to_device`` before."""
        return module

    def setup_optimizer(self, optimizer: Optimizer) -> Optimizer:
        return optimizer

    def module_to_device(self, module: Module) -> None:
        module.to(self.root_device)

    def materialize_module(self, module: Module) -> None:
        """Give the parameters still on the meta device (``init_module(empty_init=True)``) memory
        on ``root_device`` and initialize them (``reset_parameters``; see
        :func:`fab.lazy.materialize`), keeping the Parameter objects, ties and real buffers.
        Called by ``Fabric.setup`` after the precision converted the model and before
        ``setup_module`` wraps it (DDP then broadcasts rank 0's values). A model with nothing on
        the meta device (loaded from a checkpoint already) is left alone. Sharding strategies
        override it to materialize each shard after sharding instead."""
        if not lazy.has_meta(module):
            return
        try:
            lazy.materialize(module, self.root_device)
        except lazy.MaterializeError as err:
            raise lazy.MaterializeError(
                f"{err}. With Fabric, also: load the checkpoint before setup (fabric.load or "
                "fabric.load_raw into the model from init_module(empty_init=True) fills these "
                "tensors, and setup then has nothing to initialize), or call "
                "fab.lazy.materialize(model, fabric.device, init_fn=...) before setup"
            ) from err

    def module_init_context(self, empty_init: bool | None = None) -> AbstractContextManager[object]:
        """Active in ``Fabric.init_module``: new parameters get this process's device and the
        precision's dtype; with ``empty_init``, they are created on the meta device instead (no
        memory, no initialization; buffers stay real on the device, see
        :func:`fab.lazy.meta_init`), for weights a checkpoint will fill or ``setup`` will
        initialize."""
        stack = ExitStack()
        stack.enter_context(torch.device(self.root_device))
        if empty_init:
            stack.enter_context(lazy.meta_init())
        stack.enter_context(self.precision.module_init_context())
        return stack

    def module_sharded_context(self) -> AbstractContextManager[object]:
        """Active in the deprecated ``Fabric.sharded_model``; only sharding strategies act."""
        return nullcontext()

    def tensor_init_context(self) -> AbstractContextManager[object]:
        """Active in ``Fabric.init_tensor``."""
        stack = ExitStack()
        stack.enter_context(torch.device(self.root_device))
        stack.enter_context(self.precision.tensor_init_context())
        return stack

    def process_dataloader(
        self, dataloader: DataLoader[Any], use_distributed_sampler: bool = True
    ) -> DataLoader[Any]:
        """Return the loader to iterate (a distributed strategy may re-create it, with a
        DistributedSampler when ``use_distributed_sampler``)."""
        return dataloader

    def no_backward_sync(self, module: Module, enabled: bool = True) -> AbstractContextManager[Any]:
        """Inside the block, backward does not synchronize gradients across processes (gradient
        accumulation). ``module`` is what ``setup_module`` returned. Nothing to skip on one
        process."""
        return nullcontext()

    def batch_to_device(self, batch: Any, device: torch.device | None = None) -> Any:
        return move_data_to_device(batch, device if device is not None else self.root_device)

    # -- steps ------------------------------------------------------------------------------

    def backward(self, tensor: Tensor, module: Module | None, *args: Any, **kwargs: Any) -> None:
        tensor = self.precision.pre_backward(tensor, module)
        self.precision.backward(tensor, module, *args, **kwargs)
        self.precision.post_backward(tensor, module)

    def optimizer_step(self, optimizer: Optimizer, **kwargs: Any) -> Any:
        return self.precision.optimizer_step(optimizer, **kwargs)

    def clip_gradients_norm(
        self,
        module: Module,
        optimizer: Optimizer,
        max_norm: float,
        norm_type: float = 2.0,
        error_if_nonfinite: bool = True,
    ) -> Tensor:
        self.precision.unscale_gradients(optimizer)
        parameters = list(self.precision.main_params(optimizer))
        return torch.nn.utils.clip_grad_norm_(
            parameters, max_norm, norm_type=norm_type, error_if_nonfinite=error_if_nonfinite
        )

    def clip_gradients_value(self, module: Module, optimizer: Optimizer, clip_val: float) -> None:
        self.precision.unscale_gradients(optimizer)
        torch.nn.utils.clip_grad_value_(list(self.precision.main_params(optimizer)), clip_val)

    # -- collectives ----------------------------------------------------------------------------

    @abstractmethod
    def all_gather(
        self, tensor: Tensor, group: Any | None = None, sync_grads: bool = False
    ) -> Tensor:
        """Stack ``tensor`` from every process along a new first dimension."""

    @abstractmethod
    def all_reduce(
        self, tensor: Tensor, group: Any | None = None, reduce_op: ReduceOp = "mean"
    ) -> Tensor:
        """Reduce ``tensor`` over every process, in place where possible, and return it."""

    @abstractmethod
    def barrier(self, name: str | None = None) -> None:
        """Wait until every process gets here."""

    @abstractmethod
    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """``obj`` of process ``src``, on every process."""

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        """Combine one boolean per process: True if all (or, with ``all=False``, any) are True."""
        return decision

    # -- checkpoints ----------------------------------------------------------------------------

    def get_module_state_dict(self, module: Module) -> dict[str, Any]:
        return module.state_dict()

    def load_module_state_dict(
        self, module: Module, state_dict: dict[str, Any], strict: bool = True
    ) -> None:
        """Load ``state_dict`` into ``module`` without a second copy in memory
        (``fab.lazy.load_into``): parameters still on the meta device (``init_module(empty_init=
        True)``) take the checkpoint's tensors, moved to this process's device; the others are
        copied into in place. The Parameter objects and the model's dtypes are kept."""
        lazy.load_into(module, state_dict, strict=strict, device=self.root_device)

    def get_optimizer_state(self, optimizer: Optimizer) -> dict[str, Any]:
        return optimizer.state_dict()

    def save_checkpoint(
        self,
        path: str | Path,
        state: dict[str, Any],
        storage_options: Any | None = None,
        filter: StateFilter | None = None,
    ) -> None:
        """Write ``state`` (modules and optimizers become state dicts) from global rank 0.

        The precision's own state (a GradScaler's), when it has one, is saved beside it under
        ``PRECISION_STATE_KEY`` and restored by ``load_checkpoint``."""
        if PRECISION_STATE_KEY in state:
            raise ValueError(f"'{PRECISION_STATE_KEY}' is a key fab reserves; rename that entry")
        checkpoint = self._convert_state(state, filter or {})
        precision_state = self.precision.state_dict()
        if precision_state:
            checkpoint[PRECISION_STATE_KEY] = precision_state
        if self.is_global_zero:
            self.checkpoint_io.save_checkpoint(checkpoint, path, storage_options=storage_options)

    def load_checkpoint(
        self, path: str | Path, state: dict[str, Any] | None = None, strict: bool = True
    ) -> dict[str, Any]:
        """Read the checkpoint at ``path`` into ``state``'s objects in place; return what is left.

        Without ``state``, return the whole checkpoint.
        """
        checkpoint = self.checkpoint_io.load_checkpoint(path, map_location="cpu")
        precision_state = checkpoint.pop(PRECISION_STATE_KEY, None)
        if precision_state is not None:
            self.precision.load_state_dict(precision_state)
        if not state:
            return checkpoint
        missing = [key for key in state if key not in checkpoint]
        if missing and strict:
            raise KeyError(
                f"the checkpoint at {path} has no entry for {missing}; "
                f"it has {sorted(checkpoint)}. "
                "Pass strict=False to load only what is there"
            )
        for key, target in state.items():
            if key not in checkpoint:
                continue
            value = checkpoint.pop(key)
            if isinstance(target, Module):
                self.load_module_state_dict(target, value, strict=strict)
            elif callable(getattr(target, "load_state_dict", None)):
                target.load_state_dict(value)
            else:
                state[key] = value
        return checkpoint

    def load_raw(self, path: str | Path, obj: Module | Optimizer, strict: bool = True) -> None:
        """Load a plain state dict (not a Fabric checkpoint) at ``path`` into ``obj`` in place."""
        state = self.checkpoint_io.load_checkpoint(path, map_location="cpu")
        if isinstance(obj, Module):
            self.load_module_state_dict(obj, state, strict=strict)
        else:
            obj.load_state_dict(state)

    def _convert_state(self, state: dict[str, Any], filters: StateFilter) -> dict[str, Any]:
        unknown = set(filters) - set(state)
        if unknown:
            raise KeyError(
                f"filter has keys {sorted(unknown)} that are not in the state {sorted(state)}"
            )
        converted: dict[str, Any] = {}
        for key, value in state.items():
            if isinstance(value, Module):
                # torch would write the lazy modules' uninitialized parameters, which no
                # weights-only load (fab's default, torch's since 2.6) can read back
                lazy.require_initialized(value, f"saving {key!r}")
                value = self.get_module_state_dict(value)
            elif isinstance(value, Optimizer):
                value = self.get_optimizer_state(value)
            elif hasattr(value, "state_dict") and callable(value.state_dict):
                value = value.state_dict()
            if key in filters and isinstance(value, dict):
                keep = filters[key]
                value = {k: v for k, v in value.items() if keep(k, v)}
            converted[key] = value
        return converted
