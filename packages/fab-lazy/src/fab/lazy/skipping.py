"""Allocate parameters without initializing them: memory is reserved, no random numbers drawn.

For models whose weights a checkpoint will overwrite. Torch initializes parameters in
``reset_parameters`` (through ``torch.nn.init``) and in model code with in-place tensor methods
(``.normal_()``, ``.zero_()``); both are skipped inside ``skip_init()``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

#: In-place methods that only write initial values into a tensor.
_TENSOR_INITS = frozenset(
    {
        "uniform_",
        "normal_",
        "fill_",
        "zero_",
        "random_",
        "bernoulli_",
        "exponential_",
        "geometric_",
        "log_normal_",
        "cauchy_",
    }
)
#: torch.nn.init functions, which dispatch through torch functions before calling the methods.
_NN_INITS = frozenset(
    name for name in dir(torch.nn.init) if name.endswith("_") and not name.startswith("_")
)


class skip_init(TorchFunctionMode):
    """Inside the block, initializing a tensor in place returns it unchanged (its memory holds
    whatever was there). Everything else runs normally."""

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Sequence[type],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        # torch.nn.init functions pass their tensor by keyword when they dispatch.
        target = args[0] if args else kwargs.get("tensor")
        if isinstance(target, torch.Tensor) and (
            (name in _NN_INITS and getattr(func, "__module__", None) == "torch.nn.init")
            or (name in _TENSOR_INITS and _is_tensor_method(func))
        ):
            return target
        return func(*args, **kwargs)


def _is_tensor_method(func: Callable[..., Any]) -> bool:
    return getattr(torch.Tensor, getattr(func, "__name__", ""), None) is func
