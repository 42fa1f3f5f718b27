"""The ``acme_single`` strategy: fab's single-device strategy that records what it was asked to do.

Registered as ``acme_single`` in the ``fab.strategies`` entry-point group.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torch.nn import Module
from torch.optim import Optimizer

from fab.core.strategies import SingleDeviceStrategy, StrategyContext

#: Every call this module's strategies received, in order, as ``(strategy id, event)``; the tests
#: read it to see that the strategy was really used.
EVENTS: list[tuple[int, str]] = []


class AcmeSingleDeviceStrategy(SingleDeviceStrategy):
    """One process on one device, like ``single_device``, recording each step in ``EVENTS``."""

    def _record(self, event: str) -> None:
        EVENTS.append((id(self), event))

    @property
    def events(self) -> list[str]:
        """What this strategy was asked to do, in order."""
        return [event for owner, event in EVENTS if owner == id(self)]

    def connect(self, context: StrategyContext) -> None:
        super().connect(context)
        self._record("connect")

    def setup_module(self, module: Module) -> Module:
        self._record("setup_module")
        return super().setup_module(module)

    def backward(self, tensor: Tensor, module: Module | None, *args: Any, **kwargs: Any) -> None:
        self._record("backward")
        super().backward(tensor, module, *args, **kwargs)

    def optimizer_step(self, optimizer: Optimizer, **kwargs: Any) -> Any:
        self._record("optimizer_step")
        return super().optimizer_step(optimizer, **kwargs)
