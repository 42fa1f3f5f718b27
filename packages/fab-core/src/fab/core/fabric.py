"""Fabric: the object a training script talks to."""

from __future__ import annotations

import functools
import inspect
import sys
import warnings
from collections.abc import Callable, Generator, Iterable, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor
from torch.nn import Module
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader

from fab.core import cli_settings, registry
from fab.core.accelerators.accelerator import Accelerator
from fab.core.connector import AcceleratorArg, PluginArg, PrecisionArg, StrategyArg, connect
from fab.core.launchers import at_process_end
from fab.core.loggers.logger import Logger, metrics_to_numbers
from fab.core.optimizer_pairs import pair
from fab.core.strategies.direct_calls import backward_is_direct, optimizer_step_is_direct
from fab.core.strategies.strategy import ReduceOp, StateFilter, Strategy, check_state_filter
from fab.core.utilities.apply_func import apply_to_tensors
from fab.core.utilities.rank_zero import rank_zero_only, rank_zero_warn
from fab.core.utilities.seed import add_worker_init_fn
from fab.core.utilities.seed import seed_everything as _seed_everything
from fab.wrappers import (
    FabricDataLoader,
    FabricModule,
    FabricOptimizer,
    fabric_backward,
    is_wrapped,
    rewrap_compiled,
    unwrap,
    unwrap_compiled,
)


class Fabric:
    """Accelerates a PyTorch training loop that the user keeps writing themselves.

    Args:
        accelerator: ``"auto"``, a registered name (``"cpu"``, ``"cuda"``, a third party's) or an
            ``Accelerator``.
        strategy: ``"auto"``, a registered name (``"single_device"``, ``"ddp"``, ...) or a
            ``Strategy``.
        devices: how many devices (or which): an int, a list of indices, ``"0,1"``, -1 or
            ``"auto"``.
        num_nodes: how many machines.
        precision: ``"32-true"`` (default), ``"bf16-mixed"``, ... or an alias (16, "bf16", ...).
        plugins: Precision, CheckpointIO or ClusterEnvironment instances.
        callbacks: objects whose methods ``call`` invokes; factories registered in the
            ``fab.callbacks`` entry-point group are added to every Fabric.
        loggers: loggers (a ``Logger``, or any object with Lightning's logger interface:
            ``log_metrics(metrics, step)`` is what Fabric calls) or registered logger names.

    Every argument is keyword-only, as in Lightning.
    """

    def __init__(
        self,
        *,
        accelerator: AcceleratorArg = "auto",
        strategy: StrategyArg = "auto",
        devices: Any = "auto",
        num_nodes: int = 1,
        precision: PrecisionArg = None,
        plugins: PluginArg | Iterable[PluginArg] | None = None,
        callbacks: Any | list[Any] | None = None,
        loggers: Logger | str | Iterable[Logger | str] | Any | None = None,
    ) -> None:
        self._strategy = connect(accelerator, strategy, devices, num_nodes, precision, plugins)
        self._callbacks = _as_list(callbacks) + _entry_point_callbacks()
        self._loggers = [_resolve_logger(lg) for lg in _as_list(loggers)]
        self._launched = False
        # Whether fabric.backward may call tensor.backward directly (strategies/direct_calls.py):
        # decided when a model is set up, so a strategy or precision changed before then counts.
        self._direct_backward = False
        if cli_settings.started_by_fab_run():
            # `fab run` (torchrun) started every process: set this one up now, as Lightning's
            # Fabric does under `fabric run`, so the script needs no launch() (one is harmless).
            self._run_in_process(None, (), {})
        if type(self).run is not Fabric.run:
            # A subclass's run() is the training: calling it launches the processes first and
            # runs it in each (rank 0's result comes back), as with launch(fn).
            self.run = functools.partial(self.launch, type(self).run)  # type: ignore[method-assign]

    # -- properties ----------------------------------------------------------------------------

    @property
    def accelerator(self) -> Accelerator:
        accelerator = self._strategy.accelerator
        assert accelerator is not None, "the connector always sets the accelerator"
        return accelerator

    @property
    def strategy(self) -> Strategy:
        return self._strategy

    @property
    def device(self) -> torch.device:
        return self._strategy.root_device

    @property
    def global_rank(self) -> int:
        return self._strategy.global_rank

    @property
    def local_rank(self) -> int:
        return self._strategy.local_rank

    @property
    def node_rank(self) -> int:
        return self._strategy.node_rank

    @property
    def world_size(self) -> int:
        return self._strategy.world_size

    @property
    def is_global_zero(self) -> bool:
        return self._strategy.is_global_zero

    @property
    def loggers(self) -> list[Logger]:
        return list(self._loggers)

    @property
    def logger(self) -> Logger:
        if not self._loggers:
            raise AttributeError("this Fabric has no logger; pass loggers=... to Fabric()")
        return self._loggers[0]

    # -- processes -----------------------------------------------------------------------------

    def launch(self, function: Callable[..., Any] | None = None, *args: Any, **kwargs: Any) -> Any:
        """Start the processes of the run (none on one device) and prepare each; with a
        ``function``, call ``function(fabric, *args, **kwargs)`` in each and return rank 0's
        result."""
        if function is not None:
            _check_launch_function(function)
        if self._launched:  # already set up (by `fab run`, or an earlier launch)
            return function(self, *args, **kwargs) if function is not None else None
        launcher = self._strategy.launcher
        if launcher is None:
            return self._run_in_process(function, args, kwargs)
        if function is None and launcher.requires_function:
            raise TypeError(
                f"strategy {type(self._strategy).__name__} starts new processes that run only "
                "the function given to launch(), and none was given: put the training in a "
                "function that takes the Fabric first, and call fabric.launch(train) (or use "
                "strategy='ddp', which runs the whole script in every process)"
            )
        # A bound method, not a closure: a launcher that spawns processes pickles it.
        return launcher.launch(self._run_in_process, function, args, kwargs)

    def _run_in_process(
        self,
        function: Callable[..., Any] | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Prepare this process, then call ``function(self, *args, **kwargs)``. The strategy's
        ``teardown`` runs when this process ends (``at_process_end``)."""
        self._strategy.setup_environment()
        at_process_end(self._strategy.teardown)
        self._launched = True
        rank_zero_only.rank = self.global_rank  # type: ignore[attr-defined]
        return function(self, *args, **kwargs) if function is not None else None

    def _validate_launched(self, method: str) -> None:
        """A strategy of several processes needs ``launch()`` first: before it, the processes do
        not exist or do not know each other, and collectives would silently act alone."""
        if not self._launched and self._strategy.launch_required:
            raise RuntimeError(
                f"Fabric.{method}() was called before Fabric.launch(): strategy "
                f"{type(self._strategy).__name__} runs several processes, which "
                "launch() starts and connects. Call fabric.launch() first (or "
                "fabric.launch(fn) and do the work in fn), or start the script with `fab run`"
            )

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Override in a subclass with the training; ``fabric.run(...)`` then launches the
        processes and calls it in each, as ``launch(fn)`` does, returning rank 0's result."""
        raise NotImplementedError(
            "subclass Fabric and override run(), or pass a function to launch()"
        )

    # -- setup ---------------------------------------------------------------------------------

    def setup(
        self,
        module: Module,
        *optimizers: Optimizer,
        scheduler: LRScheduler | None = None,
        move_to_device: bool = True,
        _reapply_compile: bool = True,
    ) -> Any:
        """Set up a model and its optimizers; returns the wrapped model, or (model, *optimizers),
        or (model, *optimizers, scheduler) when a ``scheduler`` is given (returned as it is: it
        keeps stepping the optimizer it was built on, whose wrapper shares its state).

        A ``torch.compile``d model is set up uncompiled and compiled again around what the
        strategy returns, with the same settings; with ``_reapply_compile=False`` the compiled
        module itself is set up. Callbacks' ``on_after_setup(fabric, module)`` runs at the end."""
        self._validate_launched("setup")
        self._check_setup_module(module)
        for optimizer in optimizers:
            self._check_setup_optimizer(optimizer)
        original, compiled_with = unwrap_compiled(module) if _reapply_compile else (module, None)
        done = self._strategy.setup(original, list(optimizers), move_to_device)
        self._direct_backward = backward_is_direct(self._strategy)
        forward_module = rewrap_compiled(done.forward_module, compiled_with)
        wrapped = FabricModule(forward_module, self._strategy, original_module=done.module)
        fabric_optimizers = [self._wrap_optimizer(o) for o in done.optimizers]
        pair(done.module, done.optimizers)
        self.call("on_after_setup", fabric=self, module=wrapped)
        if not fabric_optimizers:
            return wrapped
        if scheduler is not None:
            return (wrapped, *fabric_optimizers, scheduler)
        return (wrapped, *fabric_optimizers)

    def setup_module(
        self, module: Module, move_to_device: bool = True, _reapply_compile: bool = True
    ) -> FabricModule:
        """Set up a model without optimizers (for inference, or to create the optimizers after
        sharding); set them up with ``setup_optimizers``."""
        self._validate_launched("setup_module")
        self._check_setup_module(module)
        original, compiled_with = unwrap_compiled(module) if _reapply_compile else (module, None)
        done = self._strategy.setup(original, [], move_to_device)
        self._direct_backward = backward_is_direct(self._strategy)
        forward_module = rewrap_compiled(done.forward_module, compiled_with)
        return FabricModule(forward_module, self._strategy, original_module=done.module)

    def setup_optimizers(self, *optimizers: Optimizer) -> Any:
        self._validate_launched("setup_optimizers")
        if not optimizers:
            raise ValueError("setup_optimizers needs at least one optimizer")
        for optimizer in optimizers:
            self._check_setup_optimizer(optimizer)
        wrapped = [self._wrap_optimizer(self._strategy.setup_optimizer(o)) for o in optimizers]
        return wrapped[0] if len(wrapped) == 1 else tuple(wrapped)

    def setup_dataloaders(
        self,
        *dataloaders: DataLoader[Any],
        use_distributed_sampler: bool = True,
        move_to_device: bool = True,
    ) -> Any:
        self._validate_launched("setup_dataloaders")
        if not dataloaders:
            raise ValueError("setup_dataloaders needs at least one DataLoader")
        wrapped = []
        for loader in dataloaders:
            if is_wrapped(loader):
                raise ValueError("this DataLoader is already set up by Fabric")
            if not isinstance(loader, DataLoader):
                raise TypeError(f"setup_dataloaders takes DataLoaders, got {type(loader).__name__}")
            processed = self._strategy.process_dataloader(
                loader, use_distributed_sampler=use_distributed_sampler
            )
            add_worker_init_fn(processed, self.global_rank)
            device = self.device if move_to_device else None
            wrapped.append(FabricDataLoader(processed, self._strategy, device))
        return wrapped[0] if len(wrapped) == 1 else tuple(wrapped)

    def _wrap_optimizer(self, optimizer: Optimizer) -> FabricOptimizer:
        direct = optimizer_step_is_direct(self._strategy)
        return FabricOptimizer(optimizer, self._strategy, self._callbacks, direct_step=direct)

    def _check_setup_module(self, module: Module) -> None:
        if is_wrapped(module):
            raise ValueError(
                "this model is already set up by Fabric; set up the original model once"
            )
        if not isinstance(module, Module):
            raise TypeError(f"setup takes a torch.nn.Module, got {type(module).__name__}")

    def _check_setup_optimizer(self, optimizer: Optimizer) -> None:
        if is_wrapped(optimizer):
            raise ValueError("this optimizer is already set up by Fabric")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"expected a torch.optim.Optimizer, got {type(optimizer).__name__}")

    # -- steps ---------------------------------------------------------------------------------

    def backward(
        self, tensor: Tensor, *args: Any, model: FabricModule | None = None, **kwargs: Any
    ) -> None:
        """``tensor.backward()`` the way the precision and strategy need it (loss scaling, ...)."""
        with fabric_backward():
            if self._direct_backward:  # what strategy.backward would do, without its calls
                tensor.backward(*args, **kwargs)  # type: ignore[no-untyped-call]
            else:
                module = unwrap(model) if model is not None else None
                self._strategy.backward(tensor, module, *args, **kwargs)

    def clip_gradients(
        self,
        module: Module,
        optimizer: Optimizer,
        clip_val: float | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        error_if_nonfinite: bool = True,
    ) -> Tensor | None:
        if (clip_val is None) == (max_norm is None):
            raise ValueError(
                "give exactly one of clip_val (clip by value) and max_norm (clip by norm)"
            )
        module, optimizer = unwrap(module), unwrap(optimizer)
        if max_norm is not None:
            return self._strategy.clip_gradients_norm(
                module,
                optimizer,
                max_norm,
                norm_type=norm_type,
                error_if_nonfinite=error_if_nonfinite,
            )
        assert clip_val is not None
        self._strategy.clip_gradients_value(module, optimizer, clip_val)
        return None

    def autocast(self) -> AbstractContextManager[object]:
        """The precision's forward context, for computations outside a wrapped forward."""
        return self._strategy.precision.forward_context()

    def init_tensor(self) -> AbstractContextManager[object]:
        return self._strategy.tensor_init_context()

    def init_module(self, empty_init: bool | None = None) -> AbstractContextManager[object]:
        """Create the model's parameters directly on the device, in the precision's dtype. With
        ``empty_init=True`` they are not initialized (as in Lightning): allocated on the device but
        never written, for weights that a checkpoint fills (``model.load_state_dict``,
        ``fabric.load``, ``fabric.load_raw``, all copying into the model's own memory; nothing
        initializes them later). Buffers computed in ``__init__`` keep their values (except what
        is only filled in place, ``torch.empty(n).fill_(x)``). A strategy that
        shards the model (``Strategy.empty_init_on_meta``) creates them on the meta device
        instead and allocates each rank's shards in ``setup``. See docs/fabric.md."""
        return self._strategy.module_init_context(empty_init=empty_init)

    def sharded_model(self) -> AbstractContextManager[object]:
        """Deprecated: use ``init_module``."""
        warnings.warn(
            "Fabric.sharded_model() is deprecated; use Fabric.init_module()",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._strategy.module_sharded_context()

    def to_device(self, obj: Any) -> Any:
        """Move a module, a tensor or a collection of tensors to this process's device."""
        if isinstance(obj, Module):
            self._strategy.module_to_device(obj)
            return obj
        return self._strategy.batch_to_device(obj)

    # -- communication ---------------------------------------------------------------------------

    def barrier(self, name: str | None = None) -> None:
        self._validate_launched("barrier")
        self._strategy.barrier(name=name)

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        self._validate_launched("broadcast")
        return self._strategy.broadcast(obj, src=src)

    def all_gather(self, data: Any, group: Any | None = None, sync_grads: bool = False) -> Any:
        """Gather ``data`` (a tensor, a Python number, or a collection of them) from every
        process: each tensor comes back with a new first dimension of the world's size; on one
        process, as it is. Numbers become tensors on ``fabric.device`` first."""
        self._validate_launched("all_gather")
        return apply_to_tensors(
            _numbers_to_tensors(data, self.device),
            lambda t: self._strategy.all_gather(t, group=group, sync_grads=sync_grads),
        )

    def all_reduce(self, data: Any, group: Any | None = None, reduce_op: ReduceOp = "mean") -> Any:
        """Reduce ``data`` (a tensor, a Python number, or a collection of them) over every
        process; tensors are reduced in place. Numbers become tensors on ``fabric.device``
        first."""
        self._validate_launched("all_reduce")
        return apply_to_tensors(
            _numbers_to_tensors(data, self.device),
            lambda t: self._strategy.all_reduce(t, group=group, reduce_op=reduce_op),
        )

    @contextmanager
    def rank_zero_first(self, local: bool = False) -> Generator[None, None, None]:
        """Rank 0 (of the node with ``local=True``) runs the block first, the others after it."""
        rank = self.local_rank if local else self.global_rank
        if rank > 0:
            self.barrier("rank_zero_first")
        yield
        if rank == 0:
            self.barrier("rank_zero_first")

    def no_backward_sync(
        self, module: Module, enabled: bool = True
    ) -> AbstractContextManager[object]:
        """Skip gradient synchronization inside the block (gradient accumulation). On one process
        there is nothing to skip. ``module`` is what ``setup`` returned, also when it was
        compiled with ``torch.compile`` before or after ``setup``."""
        module, _ = unwrap_compiled(module)
        if not isinstance(module, FabricModule):
            raise TypeError(
                "no_backward_sync takes the model returned by fabric.setup, got "
                f"{type(module).__name__}: set the model up first (model = fabric.setup(model))"
            )
        forward_module, _ = unwrap_compiled(module.forward_module)
        return self._strategy.no_backward_sync(forward_module, enabled)

    # -- checkpoints ----------------------------------------------------------------------------

    def save(
        self, path: str | Path, state: dict[str, Any], filter: StateFilter | None = None
    ) -> None:
        """Save ``state`` (models, optimizers and anything with ``state_dict``, plus plain data).

        ``filter`` maps keys of ``state`` to ``(name, value) -> bool``: only the items of that
        entry's state dict it accepts are saved, and an entry it empties is left out."""
        self._validate_launched("save")
        if filter is not None:
            check_state_filter(state, filter)
        self._strategy.save_checkpoint(
            path, {k: unwrap(v) for k, v in state.items()}, filter=filter
        )
        self.barrier("save")

    def load(
        self,
        path: str | Path,
        state: dict[str, Any] | None = None,
        strict: bool = True,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Restore ``state``'s objects in place from ``path``; return what the checkpoint has beyond
        them (everything, without ``state``).

        The file is read lazily and weights-only (``fab.lazy.lazy_load``): tensors are
        memory-mapped and read when used. ``weights_only=False`` reads a file holding other
        Python objects, running the code its pickle names: only for files you trust (``None`` is
        fab's default, True). A model is loaded in place (``fab.lazy.load_into``): its memory is
        copied into one tensor at a time (parameters still on the meta device take the
        checkpoint's tensors instead); its dtypes and Parameter objects are kept."""
        self._validate_launched("load")
        unwrapped = {k: unwrap(v) for k, v in (state or {}).items()}
        remainder = self._strategy.load_checkpoint(
            path, unwrapped, strict=strict, weights_only=weights_only
        )
        if state is not None:
            for key, value in unwrapped.items():  # plain values are replaced, not restored in place
                if not isinstance(value, Module | Optimizer) and not hasattr(
                    value, "load_state_dict"
                ):
                    state[key] = value
        self.barrier("load")
        return remainder

    def load_raw(
        self,
        path: str | Path,
        obj: Module | Optimizer,
        strict: bool = True,
        weights_only: bool | None = None,
    ) -> None:
        """Load a plain state dict (not a Fabric checkpoint: a ``torch.save``'d state dict or a
        ``.safetensors`` file) into a model or optimizer, lazily as ``load`` does."""
        self._validate_launched("load_raw")
        self._strategy.load_raw(path, unwrap(obj), strict=strict, weights_only=weights_only)

    # -- logging and callbacks --------------------------------------------------------------------

    def log(self, name: str, value: Any, step: int | None = None) -> None:
        """Send one metric to every logger (on the global-zero process only)."""
        self.log_dict({name: value}, step=step)

    def log_dict(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Send ``metrics`` to every logger (on the global-zero process only): one-element
        tensors become Python numbers, and without a ``step`` each logger uses one more than the
        last step it recorded."""
        if not self.is_global_zero or not self._loggers:
            return
        values = metrics_to_numbers(metrics)
        for logger in self._loggers:
            logger.log_metrics(values, step=step)

    def call(self, hook_name: str, *args: Any, **kwargs: Any) -> None:
        """Call ``hook_name`` on every callback that has it, passing only the keyword arguments its
        signature accepts (all of them where the signature cannot be read). A callback whose
        ``hook_name`` is not callable is skipped with a warning."""
        for callback in self._callbacks:
            method = getattr(callback, hook_name, None)
            if method is None:
                continue
            if not callable(method):
                rank_zero_warn(
                    f"skipped the callback {type(callback).__name__}.{hook_name}: it is not "
                    f"callable (it is a {type(method).__name__})",
                    stacklevel=4,
                )
                continue
            method(*args, **_accepted_kwargs(method, kwargs))

    def print(self, *args: Any, **kwargs: Any) -> None:
        """``print`` on the global-zero process only."""
        if self.is_global_zero:
            print(*args, **kwargs)

    @staticmethod
    def seed_everything(
        seed: int | None = None, workers: bool | None = None, verbose: bool = True
    ) -> int:
        """Seed python, numpy and torch; unlike the module-level function, data-loader workers are
        seeded too unless ``workers=False`` (as in Lightning)."""
        return _seed_everything(seed, workers=True if workers is None else workers, verbose=verbose)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def _entry_point_callbacks() -> list[Any]:
    """The callbacks of every ``fab.callbacks`` factory. One that fails is skipped with a
    warning: a broken third-party callback must not stop a run that never asked for it."""
    callbacks = []
    for name in registry.CALLBACKS.names():
        try:
            callbacks.append(registry.CALLBACKS.create(name))
        except Exception as err:
            warnings.warn(
                f"skipped the callback plugin '{name}': {err}", registry.PluginWarning, stacklevel=3
            )
    return callbacks


def _resolve_logger(logger: Any) -> Logger:
    """A logger from ``Fabric(loggers=...)``: a name is created from the registry; any object with
    a callable ``log_metrics`` is a logger (duck typing, as Lightning accepts)."""
    if isinstance(logger, str):
        instance: Logger = registry.LOGGERS.create(logger)
        return instance
    if isinstance(logger, Logger) or callable(getattr(logger, "log_metrics", None)):
        return cast(Logger, logger)
    raise TypeError(
        f"loggers takes loggers or registered logger names, got {logger!r}: pass a "
        "fab.core.loggers.Logger, any object with a log_metrics(metrics, step) method, or a "
        f"name ({', '.join(registry.LOGGERS.names())})"
    )


def _check_launch_function(function: object) -> None:
    if not callable(function):
        raise TypeError(
            f"launch takes a function, got {function!r}: pass the function itself, "
            "launch(train), not its result, launch(train())"
        )
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # a builtin or C function: nothing to check
        return
    if not parameters:
        raise TypeError(
            f"the function given to launch ({function!r}) takes no argument; it is called as "
            "function(fabric, *args, **kwargs): give it a first parameter for the Fabric"
        )


def _numbers_to_tensors(data: Any, device: torch.device) -> Any:
    """``data`` with every Python number (and numpy array) in it made a tensor on ``device``, as
    Lightning's collectives do: bool as uint8, int as int32, float as float32."""
    cls = type(data)
    if cls is bool:
        return torch.tensor(data, dtype=torch.uint8, device=device)
    if cls is int:
        return torch.tensor(data, dtype=torch.int32, device=device)
    if cls is float:
        return torch.tensor(data, dtype=torch.float32, device=device)
    if isinstance(data, Tensor) or cls in (str, bytes, type(None)):
        return data
    if isinstance(data, Mapping):
        items = {k: _numbers_to_tensors(v, device) for k, v in data.items()}
        try:
            return type(data)(items)  # type: ignore[call-arg]
        except TypeError:
            return items
    if isinstance(data, tuple) and hasattr(data, "_fields"):  # namedtuple
        return cls(*(_numbers_to_tensors(v, device) for v in data))
    if isinstance(data, list | tuple):
        return cls(_numbers_to_tensors(v, device) for v in data)
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(data, numpy.ndarray):
        return torch.from_numpy(data).to(device)
    return data


def _accepted_kwargs(method: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):  # a builtin, a C extension: give it everything
        return kwargs
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return kwargs
    names = {p.name for p in params}
    return {k: v for k, v in kwargs.items() if k in names}
