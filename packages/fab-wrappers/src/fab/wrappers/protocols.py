"""What a strategy and a precision look like to the wrappers.

fab-wrappers imports nothing of fab: fab-core's ``Strategy`` and ``Precision`` satisfy these
protocols structurally, and mypy checks that where fab-core builds the wrappers.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.nn import Module
from torch.optim import Optimizer


class PrecisionLike(Protocol):
    def forward_context(self) -> AbstractContextManager[object]: ...

    def convert_input(self, data: Any) -> Any: ...

    def convert_output(self, data: Any) -> Any: ...

    def forward_is_identity(self) -> bool:
        """True when a forward needs no context and no conversion: the wrapper then calls the
        model directly."""
        ...

    @property
    def requires_fabric_backward(self) -> bool:
        """True when ``loss.backward()`` would be wrong and ``fabric.backward(loss)`` is needed."""
        ...


class StrategyLike(Protocol):
    @property
    def precision(self) -> PrecisionLike: ...

    @property
    def root_device(self) -> torch.device: ...

    @property
    def requires_fabric_backward(self) -> bool:
        """True when the strategy (or its precision) needs ``fabric.backward(loss)``."""
        ...

    def optimizer_step(self, optimizer: Optimizer, **kwargs: Any) -> Any: ...

    def batch_to_device(self, batch: Any, device: torch.device | None = None) -> Any: ...

    def backward(
        self, tensor: Tensor, module: Module | None, *args: Any, **kwargs: Any
    ) -> None: ...
