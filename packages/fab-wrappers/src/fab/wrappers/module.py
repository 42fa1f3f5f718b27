"""FabricModule: the model as the user sees it after ``fabric.setup``."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.nn import Module, Parameter

from fab.wrappers.protocols import StrategyLike

# Attributes that live on the wrapper itself; everything else is read from and written to the
# original module.
_OWN_ATTRIBUTES = frozenset(
    {"_forward_module", "_original_module", "_strategy", "_forward_methods", "_run_forward"}
)


class FabricModule(Module):
    """Wraps a model set up by Fabric, transparently.

    Calls go to ``forward_module`` (the strategy's wrapper, a DDP module for example, or the model
    itself); attribute reads and writes, ``state_dict`` and ``named_parameters`` go to the
    original model, so checkpoints have no wrapper prefixes. A forward does only what the precision
    needs: under 32-true it is one call.
    """

    def __init__(
        self,
        forward_module: Module,
        strategy: StrategyLike,
        original_module: Module | None = None,
    ) -> None:
        super().__init__()
        self._forward_module = forward_module
        self._original_module = original_module if original_module is not None else forward_module
        self._strategy = strategy
        self._forward_methods: set[str] = set()
        # A plain attribute (object.__setattr__), so that a module returned by _select_forward is
        # not registered as a child.
        object.__setattr__(self, "_run_forward", self._select_forward())

    # -- calling ------------------------------------------------------------------------------

    @property
    def module(self) -> Module:
        """The original model, as the user built it."""
        return self._original_module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._run_forward(*args, **kwargs)

    def _select_forward(self) -> Callable[..., Any]:
        precision = self._strategy.precision
        module = self._forward_module
        if precision.forward_is_identity():
            return module

        def precise_forward(*args: Any, **kwargs: Any) -> Any:
            args, kwargs = precision.convert_input((args, kwargs))
            with precision.forward_context():
                output = module(*args, **kwargs)
            return precision.convert_output(output)

        return precise_forward

    def mark_forward_method(self, method: str | Callable[..., Any]) -> None:
        """Mark a method other than ``forward`` that runs the model, so that calling it goes
        through the strategy's wrapper (DDP, FSDP) like ``forward`` does."""
        name = _method_name(self._original_module, method)
        self._forward_methods.add(name)

    # -- transparency -------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """The device the model's parameters are on (the strategy's device if it has none)."""
        for parameter in self._original_module.parameters():
            return parameter.device
        for buffer in self._original_module.buffers():
            return buffer.device
        return self._strategy.root_device

    def __getattr__(self, name: str) -> Any:
        if name in _OWN_ATTRIBUTES:
            return super().__getattr__(name)
        original = super().__getattr__("_original_module")
        return getattr(original, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _OWN_ATTRIBUTES or "_original_module" not in self._modules:
            super().__setattr__(name, value)
        else:
            setattr(self._original_module, name, value)

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

    def __repr__(self) -> str:
        return f"FabricModule({self._original_module!r})"


def _method_name(module: Module, method: str | Callable[..., Any]) -> str:
    if isinstance(method, str):
        name = method
    else:
        name = getattr(method, "__name__", "")
        if getattr(method, "__self__", None) is None or not name:
            raise TypeError(
                "mark_forward_method takes a method name or a bound method of the model, "
                f"got {method!r}"
            )
    if name == "forward":
        raise ValueError(
            "forward is the model's forward already; mark other methods, like generate"
        )
    attr = getattr(module, name, None)
    if attr is None or not callable(attr) or not hasattr(type(module), name):
        raise AttributeError(f"{type(module).__name__} has no method {name!r} to mark")
    return name
