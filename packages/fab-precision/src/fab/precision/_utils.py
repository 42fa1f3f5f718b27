"""Helpers shared by the precisions: converting floating-point tensors, importing optional
libraries with an error that says what to install."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch
from torch import Tensor
from torch.nn import Module

from fab.core.utilities import apply_to_tensors

#: ``tensor.float()`` and its siblings cost about 1 µs less than ``tensor.to(dtype)``.
FLOAT_CASTS: dict[torch.dtype, Callable[[Tensor], Tensor]] = {
    torch.float32: Tensor.float,
    torch.float16: Tensor.half,
    torch.bfloat16: Tensor.bfloat16,
    torch.float64: Tensor.double,
}


#: The complex dtype made of two floats of a floating dtype (float64 -> complex128).
COMPLEX_OF: dict[torch.dtype, torch.dtype] = {
    torch.float64: torch.complex128,
    torch.float32: torch.complex64,
}


def convert_floating(
    data: Any, dtype: torch.dtype, complex_dtype: torch.dtype | None = None
) -> Any:
    """``data`` with every floating-point tensor in it (nested collections included) cast to
    ``dtype``, and every complex tensor to ``complex_dtype`` when one is given; integer, boolean
    and (without ``complex_dtype``) complex tensors and everything else are left as they are.
    A complex tensor never becomes a real one (that would drop its imaginary part)."""
    cast = FLOAT_CASTS.get(dtype)

    def convert(tensor: Tensor) -> Tensor:
        if tensor.is_floating_point():
            if tensor.dtype != dtype:
                return cast(tensor) if cast is not None else tensor.to(dtype)
        elif complex_dtype is not None and tensor.is_complex() and tensor.dtype != complex_dtype:
            return tensor.to(complex_dtype)
        return tensor

    if type(data) is Tensor:  # the common case (a model's output), without the walk
        return convert(data)

    return apply_to_tensors(data, convert)


def convert_module_floating(
    module: Module, dtype: torch.dtype, complex_dtype: torch.dtype | None = None
) -> Module:
    """Cast ``module``'s floating-point parameters and buffers (and their gradients) to
    ``dtype`` in place, and its complex ones to ``complex_dtype`` when one is given; integer,
    boolean and (without ``complex_dtype``) complex tensors are left as they are.

    ``module.to(dtype=...)`` is not used: it casts complex tensors to the real ``dtype``,
    silently dropping their imaginary part. This is what ``Module.double()`` does, for any dtype.
    """

    def convert(tensor: Tensor) -> Tensor:
        if tensor.is_floating_point():
            return tensor.to(dtype)
        if complex_dtype is not None and tensor.is_complex():
            return tensor.to(complex_dtype)
        return tensor

    module._apply(convert)  # type: ignore[no-untyped-call]  # what Module.to and .double use
    return module


def import_optional(module: str, install: str, feature: str) -> ModuleType:
    """Import ``module``, which only an optional library provides.

    Raises ``ModuleNotFoundError`` naming the pip requirement ``install`` when the library is not
    installed. Any other failure while importing it (a broken installation, a missing CUDA
    library) is left as it is, so its cause stays visible.
    """
    top = module.partition(".")[0]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is None or err.name.partition(".")[0] != top:
            raise  # the library is there; something it needs is missing
        raise ModuleNotFoundError(
            f"{feature} needs '{module}' from the '{top}' library, which is not installed "
            f"({err}). Install it with: pip install {install}",
            name=err.name,
        ) from err
