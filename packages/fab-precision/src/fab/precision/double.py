"""``64-true``: everything in double precision (float64)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch
from torch.nn import Module

from fab.core.precision import Precision, default_dtype_context
from fab.precision._utils import COMPLEX_OF, convert_floating, convert_module_floating


class DoublePrecision(Precision):
    """Double precision: parameters, buffers and floating-point inputs in float64.

    - ``convert_module`` casts the model's floating-point parameters and buffers to float64,
      and its complex ones to complex128 (two float64s); integer and boolean ones stay.
    - ``Fabric.init_module``, ``Fabric.init_tensor`` and every forward of a wrapped model run with
      torch's default dtype set to float64, so tensors created there are float64 too; the previous
      default is restored afterwards.
    - Floating-point inputs of a wrapped model's forward are cast to float64 (complex inputs to
      complex128), floating-point outputs back to torch's default dtype (float32 unless the
      program changed it; complex outputs to the complex dtype made of it, complex64), so the
      rest of the training loop sees the dtypes it would see without fab.
    """

    precision = "64-true"

    def convert_module(self, module: Module) -> Module:
        return convert_module_floating(module, torch.float64, torch.complex128)

    def tensor_init_context(self) -> AbstractContextManager[object]:
        return default_dtype_context(torch.float64)

    def module_init_context(self) -> AbstractContextManager[object]:
        return default_dtype_context(torch.float64)

    def forward_context(self) -> AbstractContextManager[object]:
        return default_dtype_context(torch.float64)

    def convert_input(self, data: Any) -> Any:
        return convert_floating(data, torch.float64, torch.complex128)

    def convert_output(self, data: Any) -> Any:
        default = torch.get_default_dtype()
        return convert_floating(data, default, COMPLEX_OF.get(default))
