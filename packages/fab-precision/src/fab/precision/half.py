"""``16-true`` and ``bf16-true``: everything in half precision (float16 or bfloat16)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Literal

import torch
from torch.nn import Module

from fab.core.precision import Precision, default_dtype_context
from fab.precision._utils import convert_floating, convert_module_floating

HalfName = Literal["16-true", "bf16-true"]
_DTYPES: dict[str, torch.dtype] = {"16-true": torch.float16, "bf16-true": torch.bfloat16}


class HalfPrecision(Precision):
    """Half precision without a float32 copy of the weights: parameters, buffers and
    floating-point inputs in float16 (``"16-true"``) or bfloat16 (``"bf16-true"``).

    Half the memory of ``32-true`` for weights, gradients and optimizer state, at the cost of
    numerical range and precision (bfloat16 keeps float32's range; float16 does not and has no
    loss scaling here, so prefer ``bf16-true``, or ``16-mixed`` for training in float16).

    - ``convert_module`` casts the model's floating-point parameters and buffers to the dtype;
      complex, integer and boolean ones stay as they are (torch has no complex bfloat16, and a
      complex tensor cast to a real dtype would lose its imaginary part).
    - ``Fabric.init_module``, ``Fabric.init_tensor`` and every forward of a wrapped model run with
      torch's default dtype set to it (restored afterwards), so tensors created there match.
    - Floating-point inputs of a wrapped model's forward are cast to the dtype; floating-point
      outputs back to torch's default dtype (float32 unless the program changed it).

    Args:
        precision: ``"16-true"`` (float16, the default, as in Lightning) or ``"bf16-true"``.
    """

    def __init__(self, precision: HalfName = "16-true") -> None:
        if precision not in _DTYPES:
            raise ValueError(
                f"HalfPrecision(precision={precision!r}): expected '16-true' or 'bf16-true'"
            )
        # The base class declares `precision` as a class variable; Lightning's API sets it per
        # instance, as here.
        self.precision = precision
        self.dtype: torch.dtype = _DTYPES[precision]

    def convert_module(self, module: Module) -> Module:
        return convert_module_floating(module, self.dtype)

    def tensor_init_context(self) -> AbstractContextManager[object]:
        return default_dtype_context(self.dtype)

    def module_init_context(self) -> AbstractContextManager[object]:
        return default_dtype_context(self.dtype)

    def forward_context(self) -> AbstractContextManager[object]:
        return default_dtype_context(self.dtype)

    def convert_input(self, data: Any) -> Any:
        return convert_floating(data, self.dtype)

    def convert_output(self, data: Any) -> Any:
        return convert_floating(data, torch.get_default_dtype())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(precision={self.precision!r})"


def float16_true() -> HalfPrecision:
    """The ``16-true`` entry point: ``HalfPrecision("16-true")``."""
    return HalfPrecision("16-true")


def bfloat16_true() -> HalfPrecision:
    """The ``bf16-true`` entry point: ``HalfPrecision("bf16-true")``."""
    return HalfPrecision("bf16-true")
