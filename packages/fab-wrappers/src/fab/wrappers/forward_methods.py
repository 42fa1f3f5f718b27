"""Methods other than ``forward`` that run the model, under a strategy that wraps it.

A strategy such as DDP or FSDP does its work in the ``forward`` of its wrapper (synchronizing
gradients, gathering sharded parameters). A method like ``generate`` that calls ``self(...)`` on the
original model skips that wrapper. FabricModule therefore

- routes a method marked with ``mark_forward_method`` through the strategy's wrapper
  (``call_as_forward``): the model's ``forward`` is pointed at the method for one call of the
  wrapper, and put back in a ``finally`` block;
- refuses any other method of the model that runs its layers (``guard_method``): while it runs,
  every submodule has a forward pre-hook that raises, and every hook is removed when the method
  returns or raises. Methods that do not run layers (helpers reading parameters) work as usual.

Neither is used when the strategy does not wrap the model: the model's methods are returned as
they are.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from torch.nn import Module
from torch.utils.hooks import RemovableHandle

#: The bound method of the model that a redirecting or guarding function stands for, so that
#: ``mark_forward_method(model.generate)`` accepts what ``model.generate`` returns.
BOUND_METHOD = "__fab_bound_method__"

_NO_OWN_FORWARD = object()


def call_as_forward(
    original: Module,
    run_forward: Callable[..., Any],
    method: Callable[..., Any],
) -> Callable[..., Any]:
    """A function that runs ``method`` of ``original`` through ``run_forward`` (the strategy's
    wrapper of ``original``, with the precision's conversions), as if it were ``forward``."""

    def redirected(*args: Any, **kwargs: Any) -> Any:
        own_forward = _point_forward_at(original, method)
        try:
            return run_forward(*args, **kwargs)
        finally:
            _restore_forward(original, own_forward)

    return _stands_for(redirected, method)


def _point_forward_at(original: Module, method: Callable[..., Any]) -> object:
    """Make ``original.forward`` call ``method`` once; return what to restore."""
    own_forward = original.__dict__.get("forward", _NO_OWN_FORWARD)

    def forward(*args: Any, **kwargs: Any) -> Any:
        # Inside the method, self(...) must reach the model's real forward again.
        _restore_forward(original, own_forward)
        return method(*args, **kwargs)

    original.__dict__["forward"] = forward
    return own_forward


def _restore_forward(original: Module, own_forward: object) -> None:
    if own_forward is _NO_OWN_FORWARD:
        original.__dict__.pop("forward", None)
    else:
        original.__dict__["forward"] = own_forward


def guard_method(
    original: Module, name: str, method: Callable[..., Any], wrapper_name: str
) -> Callable[..., Any]:
    """A function that runs ``method`` but raises if it calls any layer of ``original``."""

    def refuse(module: Module, args: Any) -> None:
        raise RuntimeError(
            f"{type(original).__name__}.{name}() runs the model's layers outside of forward, "
            f"so it skips what {wrapper_name} does around forward (gradient synchronization, "
            "gathering sharded parameters). Mark it as a forward method after fabric.setup: "
            f"model.mark_forward_method({name!r}), and Fabric routes it through {wrapper_name}."
        )

    def guarded(*args: Any, **kwargs: Any) -> Any:
        handles: list[RemovableHandle] = []
        try:
            for module in original.modules():
                handles.append(module.register_forward_pre_hook(refuse))
            return method(*args, **kwargs)
        finally:
            for handle in handles:
                handle.remove()

    return _stands_for(guarded, method)


def _stands_for(function: Callable[..., Any], method: Callable[..., Any]) -> Callable[..., Any]:
    functools.update_wrapper(function, method)
    setattr(function, BOUND_METHOD, method)
    return function
