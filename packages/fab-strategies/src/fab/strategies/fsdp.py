"""FSDPStrategy: fully sharded data parallel training on torch's FSDP2 (``fully_shard``).

Registered as ``fsdp`` and ``fsdp_cpu_offload``. It takes the arguments Lightning Fabric users pass
to its ``FSDPStrategy`` and maps them onto FSDP2; unlike Lightning's it runs on the CPU over gloo
as on GPUs over NCCL. The set-up order, the processes and the checkpoints
are :class:`~fab.strategies.sharded.ShardedStrategy`'s; this module maps the arguments onto
``fully_shard`` calls and a layout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, cast

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

#: Which modules get their own ``fully_shard`` (or activation checkpointing): a set of module
#: classes, or a function of the module.
ModulePolicy = set[type[Module]] | Iterable[type[Module]] | Callable[[Module], bool]
ShardingStrategy = Literal[
    "FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD", "_HYBRID_SHARD_ZERO2"
]
_SHARDING_STRATEGIES = (
    "FULL_SHARD",
    "SHARD_GRAD_OP",
    "NO_SHARD",
    "HYBRID_SHARD",
    "_HYBRID_SHARD_ZERO2",
)


class FSDPStrategy(ShardedStrategy):
    """Shard parameters, gradients and optimizer state over the processes (FSDP2).

    Args:
        cpu_offload: keep the parameters, gradients and optimizer state in CPU memory between uses
            (``True``, or torch's ``CPUOffloadPolicy``); on the CPU accelerator nothing moves.
        mixed_precision: torch's ``MixedPrecisionPolicy``; by default the precision plugin
            decides when it is connected (``"bf16-mixed"``/``"16-mixed"``: parameters gathered
            in that dtype, gradients reduced in float32; see :func:`mixed_precision_policy`).
        auto_wrap_policy: which submodules are sharded as a unit of their own (a set of module
            classes, such as ``{Block}``, or a function ``module -> bool``); the root always is.
        activation_checkpointing_policy: which submodules recompute their activations in backward
            (a set of classes or a function, as above). ``activation_checkpointing`` is Lightning's
            older name for a set of classes.
        sharding_strategy: ``"FULL_SHARD"`` (reshard parameters after forward),
            ``"SHARD_GRAD_OP"`` (keep them gathered until backward), ``"NO_SHARD"`` (replicate,
            as DDP), ``"HYBRID_SHARD"`` (shard within a node, replicate across nodes;
            ``device_mesh`` overrides the split) or ``"_HYBRID_SHARD_ZERO2"``. torch's
            ``ShardingStrategy`` members are accepted too.
        state_dict_type: ``"sharded"`` saves a directory written by every process
            (torch.distributed.checkpoint); ``"full"`` saves one file from rank 0 that
            ``torch.load`` reads, with the model's own keys.
        device_mesh: ``(replicas, shard_size)`` for the hybrid strategies, or a ``DeviceMesh``.
        start_method: how the processes are started, as for ``DDPStrategy`` (``"popen"``,
            ``"spawn"``, ``"fork"``).
        **kwargs: passed to every ``fully_shard`` call (e.g. ``reshard_after_forward``).
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
        cpu_offload: bool | Any | None = None,
        mixed_precision: Any | None = None,
        auto_wrap_policy: ModulePolicy | None = None,
        activation_checkpointing: type[Module] | list[type[Module]] | None = None,
        activation_checkpointing_policy: ModulePolicy | None = None,
        sharding_strategy: ShardingStrategy | Any = "FULL_SHARD",
        state_dict_type: StateDictType = "sharded",
        device_mesh: tuple[int, int] | DeviceMesh | None = None,
        start_method: StartMethod = "popen",
        **kwargs: Any,
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
        self.sharding_strategy = _sharding_strategy(sharding_strategy)
        self._state_dict_type = _state_dict_type(state_dict_type)
        self.cpu_offload = cpu_offload
        self.mixed_precision = mixed_precision
        #: The policy ``fully_shard`` gets, settled by ``connect_precision``.
        self._mp_policy: Any | None = None
        self._wrap = _policy(auto_wrap_policy, "auto_wrap_policy")
        if activation_checkpointing is not None and activation_checkpointing_policy is not None:
            raise ValueError(
                "give activation_checkpointing_policy or activation_checkpointing (its older "
                "name), not both"
            )
        if activation_checkpointing is not None and not isinstance(activation_checkpointing, list):
            activation_checkpointing = [activation_checkpointing]
        self._checkpointing = _policy(
            activation_checkpointing_policy or activation_checkpointing,
            "activation_checkpointing_policy",
        )
        self._device_mesh = _check_device_mesh(device_mesh, self.sharding_strategy)
        self._fully_shard_kwargs = kwargs

    # -- processes ------------------------------------------------------------------------------

    @property
    def state_dict_type(self) -> StateDictType:
        """What ``save`` writes: ``"sharded"`` (a directory) or ``"full"`` (one file)."""
        return self._state_dict_type

    @state_dict_type.setter
    def state_dict_type(self, value: StateDictType) -> None:
        self._state_dict_type = _state_dict_type(value)

    @property
    def checkpoint_format(self) -> StateDictType:
        return self._state_dict_type

    # -- layout and models ---------------------------------------------------------------------

    @property
    def layout(self) -> Layout:
        """The data-parallel dimensions: one ``data_parallel`` dimension, or
        ``data_parallel_replicate`` x ``data_parallel_shard`` for the hybrid and no-shard
        strategies."""
        mesh = self._device_mesh
        if mesh is not None and not isinstance(mesh, tuple):
            names = mesh.mesh_dim_names or tuple(f"dim{i}" for i in range(mesh.ndim))
            if mesh.ndim == 1:
                names = ("data_parallel",)
            elif mesh.ndim == 2:
                names = ("data_parallel_replicate", "data_parallel_shard")
            return Layout(tuple(zip(names, mesh.shape, strict=True)))
        world = self.num_nodes * self.num_processes
        if self.sharding_strategy == "NO_SHARD":
            sizes = (world, 1)
        elif self.sharding_strategy in ("HYBRID_SHARD", "_HYBRID_SHARD_ZERO2"):
            sizes = mesh if mesh is not None else (self.num_nodes, self.num_processes)
        else:
            return Layout((("data_parallel", world),))
        return Layout((("data_parallel_replicate", sizes[0]), ("data_parallel_shard", sizes[1])))

    @property
    def device_mesh(self) -> DeviceMesh:
        """The mesh ``fully_shard`` shards over: the one given, or the layout's."""
        if self._device_mesh is not None and not isinstance(self._device_mesh, tuple):
            return self._device_mesh
        return super().device_mesh

    # -- models ---------------------------------------------------------------------------------

    def connect_precision(self) -> None:
        """Connect the precision (it learns this process's device), then settle the
        ``MixedPrecisionPolicy`` every ``fully_shard`` call gets: the ``mixed_precision`` given,
        else the precision's (:func:`mixed_precision_policy`). ``setup`` calls it before each
        model (the precision itself is connected once; a precision set on the strategy
        afterwards is connected again)."""
        super().connect_precision()
        policy = self.mixed_precision
        self._mp_policy = policy if policy is not None else mixed_precision_policy(self.precision)

    @property
    def mp_policy(self) -> Any | None:
        """The ``MixedPrecisionPolicy`` the model's ``fully_shard`` calls get (None: torch's
        default, the parameters' own dtype); settled when the precision is connected."""
        self.connect_precision()
        return self._mp_policy

    def parallelize(self, module: Module) -> Module:
        """Activation checkpointing on the submodules its policy picks, then ``fully_shard`` on
        the submodules the wrap policy picks (children first) and on the root."""
        from torch.distributed._composable.checkpoint_activation import checkpoint
        from torch.distributed.fsdp import fully_shard

        if self._checkpointing is not None:
            for sub in _matching(module, self._checkpointing):
                checkpoint(sub)
        kwargs = self._shard_kwargs()
        if self._wrap is not None:
            for sub in _matching(module, self._wrap):
                fully_shard(sub, **kwargs)
        fully_shard(module, **kwargs)
        return module

    def _shard_kwargs(self) -> dict[str, Any]:
        from torch.distributed.fsdp import CPUOffloadPolicy

        kwargs: dict[str, Any] = {
            "mesh": self.device_mesh,
            "reshard_after_forward": self.sharding_strategy in ("FULL_SHARD", "HYBRID_SHARD"),
        }
        policy = self.mp_policy
        if policy is not None:
            kwargs["mp_policy"] = policy
        if self.cpu_offload is True:
            kwargs["offload_policy"] = CPUOffloadPolicy(pin_memory=torch.cuda.is_available())
        elif self.cpu_offload not in (None, False):
            kwargs["offload_policy"] = self.cpu_offload
        kwargs.update(self._fully_shard_kwargs)
        return kwargs


def mixed_precision_policy(precision: Precision) -> Any | None:
    """FSDP2's ``MixedPrecisionPolicy`` for a precision plugin, by its name
    (``precision.precision``), the one place where fab maps one to the other: ``"bf16-mixed"`` and
    ``"16-mixed"`` (fab's and any third party's of that name) gather the parameters in their
    half dtype for forward and backward and reduce the gradients in float32, while the sharded
    parameters and the optimizer stay float32 (the plugin's autocast stays active too); every
    other precision needs none (``*-true`` converted the model already; a third-party precision
    of another name keeps the parameters' dtype). Give ``FSDPStrategy(mixed_precision=...)``
    to choose another policy."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    dtypes = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
    dtype = dtypes.get(getattr(precision, "precision", ""))
    if dtype is None:
        return None
    return MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)


def _policy(value: ModulePolicy | None, name: str) -> Callable[[Module], bool] | None:
    if value is None:
        return None
    if isinstance(value, type) and issubclass(value, Module):
        value = {value}
    if callable(value) and not isinstance(value, set | frozenset | list | tuple):
        return cast(Callable[[Module], bool], value)
    classes = tuple(value)
    bad = [c for c in classes if not (isinstance(c, type) and issubclass(c, Module))]
    if bad:
        raise TypeError(
            f"{name} takes a set of torch.nn.Module classes or a function module -> bool; "
            f"got {bad!r} in it"
        )
    return _InstanceOf(classes)


class _InstanceOf:
    """A policy that picks the instances of some classes (picklable, for ``ddp_spawn``-style
    launches)."""

    def __init__(self, classes: tuple[type[Module], ...]) -> None:
        self.classes = classes

    def __call__(self, module: Module) -> bool:
        return isinstance(module, self.classes)


def _matching(module: Module, policy: Callable[[Module], bool]) -> list[Module]:
    """The submodules (not the root) the policy picks, children before parents."""
    found: list[Module] = []
    for name, sub in module.named_modules():
        if name and policy(sub):
            found.append(sub)
    return list(reversed(found))


def _state_dict_type(value: Any) -> StateDictType:
    if value not in ("full", "sharded"):
        raise ValueError(
            f"state_dict_type={value!r}; accepted: 'full' (one file from rank 0) or 'sharded' "
            "(a directory written by every process)"
        )
    return cast(StateDictType, value)


def _sharding_strategy(value: Any) -> ShardingStrategy:
    name = getattr(value, "name", value)  # torch's ShardingStrategy enum
    if name not in _SHARDING_STRATEGIES:
        raise ValueError(
            f"sharding_strategy={value!r}; accepted: {', '.join(_SHARDING_STRATEGIES)}"
        )
    return cast(ShardingStrategy, name)


def _check_device_mesh(
    mesh: tuple[int, int] | DeviceMesh | None, strategy: ShardingStrategy
) -> tuple[int, int] | DeviceMesh | None:
    if mesh is None:
        return None
    if isinstance(mesh, tuple):
        if len(mesh) != 2 or not all(isinstance(s, int) and s > 0 for s in mesh):
            raise ValueError(
                f"device_mesh={mesh!r}; give (replicas, shard_size), two positive ints"
            )
        if strategy not in ("HYBRID_SHARD", "_HYBRID_SHARD_ZERO2"):
            raise ValueError(
                f"device_mesh={mesh!r} is for the hybrid strategies; got sharding_strategy="
                f"{strategy!r}. Use sharding_strategy='HYBRID_SHARD'"
            )
    return mesh


def fsdp_cpu_offload() -> FSDPStrategy:
    """``strategy="fsdp_cpu_offload"``."""
    return FSDPStrategy(cpu_offload=True)


__all__ = ["FSDPStrategy", "fsdp_cpu_offload", "mixed_precision_policy"]
