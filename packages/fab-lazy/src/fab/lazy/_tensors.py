"""Typed wrappers of the few torch calls fab-lazy needs that torch leaves untyped."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import Parameter
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter


def swap(tensor: Tensor, replacement: Tensor) -> None:
    """Give ``tensor`` the contents of ``replacement``, keeping the Python object (and with it
    every reference: an optimizer's, a tied module's)."""
    torch.utils.swap_tensors(tensor, replacement)  # type: ignore[no-untyped-call]


def uninitialized_like(tensor: Tensor, device: torch.device | str, dtype: torch.dtype) -> Tensor:
    """A new uninitialized (lazy) parameter or buffer, as ``tensor`` is one, on ``device``."""
    cls = UninitializedParameter if isinstance(tensor, Parameter) else UninitializedBuffer
    return cls(  # type: ignore[call-arg]
        requires_grad=tensor.requires_grad, device=device, dtype=dtype
    )
