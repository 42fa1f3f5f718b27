"""FabricModule: the model as the user sees it after ``fabric.setup``."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.nn import Module, Parameter

from fab.wrappers.backward_guard import BackwardCheck
from fab.wrappers.compiled import unwrap_compiled
from fab.wrappers.forward_methods import BOUND_METHOD, call_as_forward, guard_method
from fab.wrappers.protocols import PrecisionLike, StrategyLike

# Attributes that live on the wrapper itself; everything else is read from and written to the
# original module. (Module's own bookkeeping, set by Module.__init__, lives on the wrapper too.)
_OWN_ATTRIBUTES = frozenset(
    {
        "_forward_module",
        "_original_module",
        "_strategy",
        "_precision",
        "_forward_call",
        "_run_forward",
        "_backward_check",
        "_forward_methods",
        "_converts",
        "_redirects",
        "_guards",
    }
)


class FabricModule(Module):
    """Wraps a model set up by Fabric, transparently.

    Calls go to ``forward_module`` (the strategy's wrapper, a DDP module for example, or the model
    itself); attribute reads and writes, ``state_dict``, ``named_parameters`` and
    ``named_modules`` go to the original model, so checkpoints have no wrapper prefixes. A call
    does only what the precision and strategy need: when the precision changes nothing and no
    ``fabric.backward`` is required, calling the wrapper is calling ``forward_module``.

    A model compiled with ``torch.compile`` may be given as either module: the compiled module is
    called, and the state dict is the uncompiled model's (no ``_orig_mod.`` prefix).
    """

    _forward_module: Module
    _original_module: Module
    _strategy: StrategyLike
    _precision: PrecisionLike
    _forward_call: Module
    _run_forward: Callable[..., Any]
    _backward_check: BackwardCheck | None
    _forward_methods: set[str]
    _converts: bool
    _redirects: bool
    _guards: bool

    def __init__(
        self,
        forward_module: Module,
        strategy: StrategyLike,
        original_module: Module | None = None,
    ) -> None:
        super().__init__()
        original, _ = unwrap_compiled(
            forward_module if original_module is None else original_module
        )
        precision = strategy.precision
        Module.__setattr__(self, "_forward_module", forward_module)
        Module.__setattr__(self, "_original_module", original)
        own = {
            "_strategy": strategy,
            "_precision": precision,
            "_forward_call": forward_module,  # an unregistered alias, read on every call
            "_forward_methods": set(),
            "_converts": not precision.forward_is_identity(),
            # The strategy's wrapper (or torch.compile) stands between the wrapper and the model:
            # marked methods are routed through it.
            "_redirects": forward_module is not original,
            # The strategy itself wraps the model: unmarked methods that run layers are refused.
            "_guards": unwrap_compiled(forward_module)[0] is not original,
            "_backward_check": _backward_check(strategy, precision),
        }
        for name, value in own.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_run_forward", self._select_forward())

    # -- calling ------------------------------------------------------------------------------

    @property
    def module(self) -> Module:
        """The original model, as the user built it."""
        return self._original_module

    @property
    def forward_module(self) -> Module:
        """What a call runs: the strategy's wrapper (a DDP module, for example), the sharded model,
        or the model itself, compiled where the user compiled it."""
        return self._forward_module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Module.__call__ costs about a microsecond; skip it unless the wrapper itself has hooks
        # or was compiled in place with Module.compile().
        if (
            self._forward_pre_hooks
            or self._forward_hooks
            or self._backward_pre_hooks
            or self._backward_hooks
            or self._compiled_call_impl is not None
        ):
            return Module.__call__(self, *args, **kwargs)
        return self._run_forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._run_forward(*args, **kwargs)

    def _select_forward(self) -> Callable[..., Any]:
        """The function a call runs: the module itself when the precision changes nothing and no
        backward check is needed, otherwise a closure with everything it needs bound locally
        (attribute lookups on every call add up to a microsecond)."""
        call = self._forward_call
        check = self._backward_check
        if not self._converts:
            if check is None:
                return call
            attach = check.attach

            def checked_forward(*args: Any, **kwargs: Any) -> Any:
                return attach(call(*args, **kwargs))

            return checked_forward
        precision = self._precision
        convert_input = precision.convert_input
        convert_output = precision.convert_output
        context = precision.forward_context

        def converted_forward(*args: Any, **kwargs: Any) -> Any:
            args, kwargs = convert_input((args, kwargs))
            with context():
                output = call(*args, **kwargs)
            output = convert_output(output)
            return output if check is None else check.attach(output)

        return converted_forward

    def __getstate__(self) -> dict[str, Any]:
        # The call closure is rebuilt for the copy (deepcopy, pickling for spawned processes).
        return {k: v for k, v in self.__dict__.items() if k != "_run_forward"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # type: ignore[no-untyped-call]
        object.__setattr__(self, "_run_forward", self._select_forward())

    def mark_forward_method(self, method: str | Callable[..., Any]) -> None:
        """Mark a method other than ``forward`` that runs the model, so that calling it on this
        wrapper goes through the strategy's wrapper (DDP, FSDP) like ``forward`` does.

        Takes the method's name or the method itself (``model.mark_forward_method(model.generate)``
        with ``model`` this wrapper or the original model).
        """
        self._forward_methods.add(_method_name(self, self._original_module, method))

    # -- transparency -------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """The device the model's parameters are on (the strategy's device if it has none)."""
        for parameter in self._original_module.parameters():
            return parameter.device
        for buffer in self._original_module.buffers():
            return buffer.device
        return self._strategy.root_device

    @property
    def training(self) -> bool:
        """The original model's mode (``train()`` and ``eval()`` set it on every module)."""
        original = self.__dict__.get("_modules", {}).get("_original_module")
        return True if original is None else bool(original.training)

    @training.setter
    def training(self, mode: bool) -> None:
        original = self.__dict__.get("_modules", {}).get("_original_module")
        if original is not None:  # Module.__init__ sets the default before there is an original
            original.training = mode

    def __getattr__(self, name: str) -> Any:
        modules = self.__dict__.get("_modules")
        if name in _OWN_ATTRIBUTES or modules is None or "_original_module" not in modules:
            return super().__getattr__(name)
        original: Module = modules["_original_module"]
        attr = getattr(original, name)
        if not self._redirects or not inspect.ismethod(attr) or attr.__self__ is not original:
            return attr
        if name in self._forward_methods:
            return call_as_forward(original, self._run_forward, attr)
        if self._guards:
            return guard_method(original, name, attr, type(self._forward_call).__name__)
        return attr

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _OWN_ATTRIBUTES or name in self.__dict__ or not self._has_original():
            super().__setattr__(name, value)
        else:
            setattr(self._original_module, name, value)

    def __delattr__(self, name: str) -> None:
        if name in _OWN_ATTRIBUTES or name in self.__dict__ or not self._has_original():
            super().__delattr__(name)
        else:
            delattr(self._original_module, name)

    def _has_original(self) -> bool:
        return "_original_module" in self.__dict__.get("_modules", {})

    def __dir__(self) -> list[str]:
        own = super().__dir__()  # type: ignore[no-untyped-call]
        return sorted(set(own) | set(dir(self._original_module)))

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self._original_module.state_dict(*args, **kwargs)

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        return self._original_module.load_state_dict(state_dict, strict=strict, assign=assign)

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        return self._original_module.named_parameters(prefix, recurse, remove_duplicate)

    def named_buffers(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Tensor]]:
        return self._original_module.named_buffers(prefix, recurse, remove_duplicate)

    def named_modules(
        self, memo: set[Module] | None = None, prefix: str = "", remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Module]]:
        yield from self._original_module.named_modules(memo, prefix, remove_duplicate)

    def __repr__(self) -> str:
        return f"FabricModule({self._original_module!r})"


def _backward_check(strategy: StrategyLike, precision: PrecisionLike) -> BackwardCheck | None:
    """A check on forward outputs when ``loss.backward()`` would be wrong, else None."""
    if precision.requires_fabric_backward:
        return BackwardCheck(f"the precision {type(precision).__name__}")
    if strategy.requires_fabric_backward:
        return BackwardCheck(f"the strategy {type(strategy).__name__}")
    return None


def _method_name(wrapper: Module, original: Module, method: str | Callable[..., Any]) -> str:
    if isinstance(method, str):
        name = method
    else:
        bound = getattr(method, BOUND_METHOD, method)  # what wrapper.generate returned
        name = getattr(bound, "__name__", "")
        owner = getattr(bound, "__self__", None)
        if owner is None or not name:
            raise TypeError(
                "mark_forward_method takes a method name or a bound method of the model, "
                f"got {method!r}"
            )
        if owner is not original and owner is not wrapper:
            raise ValueError(
                f"{name} is a method of a {type(owner).__name__}, not of the model this "
                f"wrapper holds ({type(original).__name__})"
            )
    if name == "forward":
        raise ValueError(
            "forward is the model's forward already; mark other methods, like generate"
        )
    attr = getattr(original, name, None)
    if attr is None or not callable(attr) or not hasattr(type(original), name):
        raise AttributeError(f"{type(original).__name__} has no method {name!r} to mark")
    return name
