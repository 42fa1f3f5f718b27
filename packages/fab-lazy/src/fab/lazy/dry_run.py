"""Lazy shapes: infer the shapes of a model's lazy modules from example inputs without computing
anything, then allocate and initialize them for real, where and in the dtype they were created.

The forward runs on the meta device: the example inputs and every parameter and buffer that is
already initialized are replaced by meta tensors for the duration of the call (the model's own
tensors are not touched), and each lazy tensor is swapped, object kept, for a lazy one on the meta
device. The lazy modules' own hooks then infer their shapes as in a real first forward. Afterwards
each inferred tensor gets memory on its original device and dtype, and its module's
``reset_parameters()`` initializes it: the same shapes and initialization as a real first forward.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn import Module, Parameter
from torch.nn.parameter import is_lazy

from fab.lazy._tensors import swap, uninitialized_like
from fab.lazy.materializing import _Owned, initialize
from fab.lazy.shapes import LazyModuleError, describe_uninitialized


def infer_shapes(module: Module, *args: Any, **kwargs: Any) -> Module:
    """Run ``module(*args, **kwargs)`` as a dry run on the meta device so that every lazy module
    (``LazyLinear``, ``LazyConv2d``, ``LazyBatchNorm1d``, ...) infers its shapes, then allocate
    those parameters and buffers on their device, in their dtype, and initialize them with their
    module's ``reset_parameters()``. The inputs may be on any device (only their shapes and dtypes
    are read); no parameter value or running statistic changes.

    A model created on the meta device stays there (its lazy modules just get their shapes).
    Raises :class:`fab.lazy.LazyModuleError` naming the modules the inputs did not reach, or when
    the forward cannot run on the meta device (it reads values: ``.item()``, data-dependent
    control flow); a real forward with a real batch initializes lazy modules in that case.
    Returns ``module``.
    """
    lazy = _lazy_tensors(module)
    if not lazy:
        return module
    # the lazy tensors' own placement, to restore after the meta run
    placement = {id(t): (t.device, t.dtype) for t in lazy}
    for tensor in lazy:
        swap(tensor, uninitialized_like(tensor, "meta", tensor.dtype))
    substitutes = {
        name: torch.empty_like(t, device="meta")
        for name, t in (*module.named_parameters(), *module.named_buffers())
        if not is_lazy(t)
    }
    error: Exception | None = None
    try:
        from torch.func import functional_call

        with torch.no_grad():
            functional_call(module, substitutes, _to_meta(args), _to_meta(kwargs), strict=False)
    except Exception as exc:  # restore the model first, then report
        error = exc
    owned = _place(lazy, placement)
    initialize(module, owned, init_fn=None)
    if error is not None:
        raise LazyModuleError(
            f"the dry run of {type(module).__name__} on the meta device failed: {error}. Lazy "
            "modules still uninitialized: "
            f"{describe_uninitialized(module) or 'none'}. Fix: run one forward with a real batch "
            "instead (lazy modules initialize on their first forward)"
        ) from error
    remaining = describe_uninitialized(module)
    if remaining:
        raise LazyModuleError(
            f"the example inputs did not reach these lazy modules: {remaining}. Fix: give "
            "infer_shapes inputs whose forward uses them, or run a real forward that does"
        )
    return module


def _lazy_tensors(module: Module) -> list[Tensor]:
    seen: dict[int, Tensor] = {}
    for t in (*module.parameters(), *module.buffers()):
        if is_lazy(t):
            seen.setdefault(id(t), t)
    return list(seen.values())


def _place(
    lazy: list[Tensor], placement: dict[int, tuple[torch.device, torch.dtype]]
) -> list[_Owned]:
    """Give each formerly lazy tensor its device and dtype back: real memory when it got a shape
    (returned, to be initialized), an uninitialized tensor again when the run did not reach it."""
    owned = []
    for tensor in lazy:
        device, dtype = placement[id(tensor)]
        replacement: Tensor
        if is_lazy(tensor):
            replacement = uninitialized_like(tensor, device, dtype)
        elif device.type == "meta":
            continue  # a model created on meta: the shape is all there is to give
        else:
            replacement = torch.empty(tensor.shape, device=device, dtype=dtype)
            if isinstance(tensor, Parameter):
                replacement = Parameter(replacement, requires_grad=tensor.requires_grad)
        swap(tensor, replacement)
        if not is_lazy(tensor):
            entry = _Owned(tensor, storage=tensor.untyped_storage().data_ptr())
            entry.written = tensor.numel() == 0
            owned.append(entry)
    return owned


def _to_meta(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return torch.empty_like(obj, device="meta")
    if isinstance(obj, dict):
        return {key: _to_meta(value) for key, value in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a namedtuple
        return type(obj)(*(_to_meta(value) for value in obj))
    if isinstance(obj, list | tuple):
        return type(obj)(_to_meta(value) for value in obj)
    return obj
