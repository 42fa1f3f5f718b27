"""The Strategy base class: how a model, its optimizers and its data are spread over processes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

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
from fab.core.precision.precision import Precision, PrecisionContext
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


class ModelSetup(NamedTuple):
    """What ``Strategy.setup`` returns."""

    #: What a forward call runs: the strategy's wrapper (DDP), the sharded model, or the model.
    forward_module: Module
    #: The optimizers, pointed at the parameters ``forward_module`` trains.
    optimizers: list[Optimizer]
    #: The model as the user knows it after set-up (converted by the precision, sharded in place
    #: where the strategy shards): its names are the checkpoint's, surgery hooks go on it.
    module: Module


class Strategy(ABC):
    """Places the model and data, runs backward and optimizer steps, communicates, checkpoints.

    A strategy owns the accelerator, the precision and the checkpoint I/O of a run; Fabric talks
    only to the strategy. Multi-process strategies (fab-strategies) add a cluster environment and a
    launcher; sharded ones (FSDP, tensor parallel) override ``setup`` (the set-up order),
    ``module_init_context`` and the checkpoint methods.
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
        #: Whether ``connect_precision`` ran for the current precision.
        self._precision_connected = False
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
        self._precision_connected = False

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

    def connect_precision(self) -> None:
        """Tell the precision where this process computes (``Precision.connect``), once: ``setup``
        calls it before it sets the first model up, when this process's device is known (after
        ``launch``). A strategy that needs something from the connected precision (FSDP: its
        ``MixedPrecisionPolicy``) overrides it and calls ``super().connect_precision()`` first."""
        if self._precision_connected:
            return
        self.precision.connect(PrecisionContext(device=self.root_device))
        self._precision_connected = True

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
        """Undo ``setup_environment`` (destroy process groups, release devices and plugins).

        ``Fabric.launch`` arranges for it to run once when the process ends (at exit, or when a
        spawned or forked process's function returns; :func:`fab.core.launchers.at_process_end`),
        so an override runs too; call the base's from it."""
        self.precision.teardown()
        if self.accelerator is not None:
            self.accelerator.teardown()
        if self._checkpoint_io is not None:
            self._checkpoint_io.teardown()

    # -- models, optimizers, data --------------------------------------------------------------

    def setup(
        self, module: Module, optimizers: list[Optimizer], move_to_device: bool = True
    ) -> ModelSetup:
        """Set a model up with its optimizers (``Fabric.setup`` and ``setup_module`` call this).

        The order: the precision converts the model; unless ``move_to_device`` is False,
        parameters still on the meta device get memory and their initialization
        (``materialize_module``) and the model moves to this process's device
        (``module_to_device``); ``setup_module`` wraps it; ``setup_optimizer`` takes each
        optimizer. A sharding strategy overrides the whole method, in the order torch needs
        (parallelize on meta, allocate the shards, then point the optimizers at them). Before
        anything, the precision learns this process's device (``connect_precision``)."""
        self.connect_precision()
        module = self.precision.convert_module(module)
        if move_to_device:
            self.materialize_module(module)
            self.module_to_device(module)
        forward_module = self.setup_module(module)
        return ModelSetup(forward_module, [self.setup_optimizer(o) for o in optimizers], module)

    def setup_module(self, module: Module) -> Module:
        """Wrap the model for this strategy (DDP, ...) and return what forward should call.

        ``setup`` has converted it to the precision's dtype and, unless asked not to, moved it
        with ``module_to_device`` before."""
        return module

    def setup_optimizer(self, optimizer: Optimizer) -> Optimizer:
        return optimizer

    def module_to_device(self, module: Module) -> None:
        module.to(self.root_device)

    def materialize_module(self, module: Module) -> None:
        """Give the parameters still on the meta device (a model built under
        ``torch.device("meta")`` or ``fab.lazy.meta_init``, or under
        ``init_module(empty_init=True)`` where ``empty_init_on_meta``) memory on ``root_device``
        and initialize them (``reset_parameters``; see :func:`fab.lazy.materialize`), keeping
        the Parameter objects, ties and real buffers.
        Called by ``setup`` after the precision converted the model and before
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
                "fabric.load_raw into the model fills these tensors, and setup then has nothing "
                "to initialize), or call "
                "fab.lazy.materialize(model, fabric.device, init_fn=...) before setup"
            ) from err

    @property
    def empty_init_on_meta(self) -> bool:
        """Whether ``init_module(empty_init=True)`` creates parameters on the meta device (no
        memory at all), for strategies that materialize each shard after sharding.

        False here: the parameters get real memory on ``root_device`` that is never initialized
        (:class:`fab.lazy.skip_init`), as in Lightning, so any ordinary load
        (``model.load_state_dict``, ``fabric.load``) copies into the model's own memory, and an
        optimizer created before the load trains the loaded values. The pages of memory that
        nothing wrote yet cost nothing, so loading a checkpoint into such a model through
        ``fabric.load`` still peaks at about the model's size."""
        return False

    def module_init_context(self, empty_init: bool | None = None) -> AbstractContextManager[object]:
        """Active in ``Fabric.init_module``: new parameters get this process's device and the
        precision's dtype. With ``empty_init``, they are not initialized: allocated and left as
        they are (:class:`fab.lazy.skip_init`), or, where ``empty_init_on_meta``, created on the
        meta device (:func:`fab.lazy.meta_init`; buffers stay real), for weights that a
        checkpoint will fill."""
        stack = ExitStack()
        stack.enter_context(torch.device(self.root_device))
        if empty_init:
            stack.enter_context(lazy.meta_init() if self.empty_init_on_meta else lazy.skip_init())
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
        """Run backward through the precision, as Lightning's strategies do: ``pre_backward``
        (its return value is not used), ``backward`` (which scales the loss where the precision
        needs it), ``post_backward``."""
        precision = self.precision
        precision.pre_backward(tensor, module)
        precision.backward(tensor, module, *args, **kwargs)
        precision.post_backward(tensor, module)

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
        """Stack ``tensor`` from every process along a new first dimension (of the group's
        size); where this process is the only one, return ``tensor`` itself."""

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
        (``fab.lazy.load_into``): parameters still on the meta device take the checkpoint's
        tensors, moved to this process's device; the others (``init_module(empty_init=True)``'s
        included) are copied into in place, one tensor at a time, the file's pages given back
        after each. The Parameter objects and the model's dtypes are kept."""
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
        self,
        path: str | Path,
        state: Module | Optimizer | dict[str, Any] | None = None,
        strict: bool = True,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Read the checkpoint at ``path`` into ``state``'s objects in place; return what is left.

        ``state`` is a dict of objects (models, optimizers, anything with ``load_state_dict``, and
        plain values, which are replaced); ``None`` or ``{}`` returns the whole checkpoint; a model
        or an optimizer takes the file as its raw state dict (``{}`` is returned). The file is
        read weights-only unless ``weights_only=False`` (``None`` means fab's default, True).
        A directory written by a sharded strategy (torch.distributed.checkpoint) is read too,
        whatever world size wrote it.
        """
        from fab.core import distributed_checkpoint as dcp_files

        if not isinstance(state, Module | Optimizer) and dcp_files.is_distributed_checkpoint(
            dcp_files.resolve(path)
        ):
            checkpoint = dcp_files.load_directory(
                path, state, strict=strict, weights_only=weights_only is not False
            )
            precision_state = checkpoint.pop(PRECISION_STATE_KEY, None)
            if precision_state is not None:
                self.precision.load_state_dict(precision_state)
            return checkpoint
        checkpoint = self.checkpoint_io.load_checkpoint(
            path, map_location="cpu", weights_only=weights_only is not False
        )
        if isinstance(state, Module | Optimizer):
            self._load_raw_state(state, checkpoint, strict)
            return {}
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

    def load_raw(
        self,
        path: str | Path,
        obj: Module | Optimizer,
        strict: bool = True,
        weights_only: bool | None = None,
    ) -> None:
        """Load a plain state dict (not a Fabric checkpoint) at ``path`` into ``obj`` in place."""
        self.load_checkpoint(path, obj, strict=strict, weights_only=weights_only)

    def _load_raw_state(
        self, obj: Module | Optimizer, state_dict: dict[str, Any], strict: bool
    ) -> None:
        if isinstance(obj, Module):
            self.load_module_state_dict(obj, state_dict, strict=strict)
        else:
            obj.load_state_dict(state_dict)

    def _convert_state(self, state: dict[str, Any], filters: StateFilter) -> dict[str, Any]:
        """The checkpoint of ``state``: models and optimizers become state dicts; a filtered
        entry keeps the items its filter accepts, and is left out when it accepts none."""
        check_state_filter(state, filters)
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
                if not value:
                    continue
            converted[key] = value
        return converted


def check_state_filter(state: dict[str, Any], filter: object) -> None:
    """Raise as Lightning does for a ``save(filter=...)`` that is not a dict of callables whose keys
    are keys of ``state``: ``TypeError`` for the types, ``ValueError`` for unknown keys."""
    if not isinstance(filter, dict):
        raise TypeError(
            f"filter must be a dict mapping keys of the state to callables (name, value) -> bool, "
            f"got {filter!r}"
        )
    unknown = sorted(set(filter) - set(state), key=str)
    if unknown:
        raise ValueError(
            f"filter has keys {unknown} that are not in the state {sorted(state, key=str)}; "
            "give a filter only for entries of the state"
        )
    for key, keep in filter.items():
        if not callable(keep):
            raise TypeError(
                f"filter[{key!r}] must be a callable (name, value) -> bool, got {keep!r}"
            )
