"""FabricOptimizer: the optimizer as the user sees it after ``fabric.setup``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.optim import Optimizer

from fab.wrappers.protocols import StrategyLike


class FabricOptimizer:
    """Wraps an optimizer so that ``step()`` goes through the strategy and precision.

    The wrapper is an instance of the optimizer's own class (a subclass made for it, so
    ``isinstance(wrapped, torch.optim.AdamW)`` holds) and shares its ``param_groups``, ``state``
    and ``defaults``, so learning-rate schedulers and code that edits ``param_groups`` act on the
    real optimizer.
    """

    _optimizer: Optimizer
    _strategy: StrategyLike

    def __init__(self, optimizer: Optimizer, strategy: StrategyLike) -> None:
        if isinstance(optimizer, FabricOptimizer):
            raise TypeError("this optimizer is already set up by Fabric; set up the original once")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"expected a torch.optim.Optimizer, got {type(optimizer).__name__}")
        # Share the optimizer's attributes (param_groups, state, defaults are the same objects).
        self.__dict__ = {
            k: v for k, v in optimizer.__dict__.items() if k not in ("step", "zero_grad")
        }
        self.__class__ = _wrapper_class(type(optimizer))
        self._optimizer = optimizer
        self._strategy = strategy

    @property
    def optimizer(self) -> Optimizer:
        """The original optimizer."""
        return self._optimizer

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        kwargs = {} if closure is None else {"closure": closure}
        return self._strategy.optimizer_step(self._optimizer, **kwargs)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self._optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._optimizer.load_state_dict(state_dict)
        # load_state_dict may replace state and param_groups: share the new objects.
        self.__dict__.update(
            {k: v for k, v in self._optimizer.__dict__.items() if k not in ("step", "zero_grad")}
        )

    def __repr__(self) -> str:
        return f"FabricOptimizer({self._optimizer!r})"


_WRAPPER_CLASSES: dict[type[Optimizer], type[FabricOptimizer]] = {}


def _wrapper_class(optimizer_class: type[Optimizer]) -> type[FabricOptimizer]:
    cls = _WRAPPER_CLASSES.get(optimizer_class)
    if cls is None:
        cls = type(f"Fabric{optimizer_class.__name__}", (FabricOptimizer, optimizer_class), {})
        _WRAPPER_CLASSES[optimizer_class] = cls
    return cls
