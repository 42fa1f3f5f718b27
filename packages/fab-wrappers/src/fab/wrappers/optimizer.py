"""FabricOptimizer: the optimizer as the user sees it after ``fabric.setup``."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor
from torch.optim import Optimizer

from fab.wrappers.protocols import StrategyLike

if TYPE_CHECKING:
    # Every instance is an Optimizer (of a subclass made for the wrapped optimizer's class, see
    # _wrapper_class), so type checkers see one; at run time the class is swapped in __init__.
    _OptimizerBase = Optimizer
else:
    _OptimizerBase = object


class FabricOptimizer(_OptimizerBase):
    """Wraps an optimizer so that ``step()`` goes through the strategy and precision.

    The wrapper is an instance of the optimizer's own class (of a subclass made for it, so
    ``isinstance(wrapped, torch.optim.AdamW)`` holds and learning-rate schedulers accept it).
    ``param_groups``, ``state`` and ``defaults`` are the real optimizer's, read and written
    through, and every other attribute the wrapper does not set itself is read from the real
    optimizer: schedulers and code that edits ``param_groups`` act on the real optimizer, and a
    scheduler's step counting (it replaces ``step`` on the object it is given) works on the
    wrapper.
    """

    _optimizer: Optimizer
    _strategy: StrategyLike
    _callbacks: Sequence[Any]
    _direct_step: bool = False  # (for wrappers unpickled from before it existed)

    def __init__(
        self,
        optimizer: Optimizer,
        strategy: StrategyLike,
        callbacks: Sequence[Any] | None = None,
        *,
        direct_step: bool = False,
    ) -> None:
        if isinstance(optimizer, FabricOptimizer):
            raise TypeError("this optimizer is already set up by Fabric; set up the original once")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"expected a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self.__class__ = _wrapper_class(type(optimizer))
        self.__dict__["_optimizer"] = optimizer
        self.__dict__["_strategy"] = strategy
        # Fabric's callbacks: their `on_after_optimizer_step` runs after every step (Lightning's)
        self.__dict__["_callbacks"] = callbacks if callbacks is not None else ()
        # The strategy's optimizer_step would only call optimizer.step (Fabric checks that, see
        # fab.core.strategies.direct_calls): step() calls it directly, a few calls fewer a step.
        self.__dict__["_direct_step"] = direct_step

    @property
    def optimizer(self) -> Optimizer:
        """The original optimizer."""
        return self._optimizer

    # -- what goes through the strategy ---------------------------------------------------------

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        if self._direct_step:  # looked up now: a scheduler may have wrapped the optimizer's step
            optimizer = self._optimizer
            output = optimizer.step() if closure is None else optimizer.step(closure=closure)
        elif closure is None:  # the common case, without building and unpacking a kwargs dict
            output = self._strategy.optimizer_step(self._optimizer)
        else:
            output = self._strategy.optimizer_step(self._optimizer, closure=closure)
        if self._callbacks:
            for callback in self._callbacks:
                hook = getattr(callback, "on_after_optimizer_step", None)
                if callable(hook):
                    hook(strategy=self._strategy, optimizer=self._optimizer)
        return output

    # -- what the real optimizer does -----------------------------------------------------------

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self._optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._optimizer.load_state_dict(state_dict)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self._optimizer.add_param_group(param_group)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self._optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self._optimizer.param_groups = value

    @property
    def state(self) -> defaultdict[Tensor, Any]:
        return self._optimizer.state

    @state.setter
    def state(self, value: defaultdict[Tensor, Any]) -> None:
        self._optimizer.state = value

    @property
    def defaults(self) -> dict[str, Any]:
        return self._optimizer.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self._optimizer.defaults = value

    def __getattr__(self, name: str) -> Any:
        # Called only for names the wrapper does not have: hook registries, `_opt_called`, ...
        try:
            optimizer = self.__dict__["_optimizer"]
        except KeyError:
            raise AttributeError(name) from None
        return getattr(optimizer, name)

    def __reduce__(self) -> tuple[type[FabricOptimizer], tuple[Optimizer, StrategyLike]]:
        # Copies and pickles wrap a copy of the real optimizer again (the generated subclass is
        # made anew), instead of running Optimizer.__setstate__ on the wrapper.
        return (FabricOptimizer, (self._optimizer, self._strategy))

    def __repr__(self) -> str:
        return f"FabricOptimizer({self._optimizer!r})"


_WRAPPER_CLASSES: dict[type[Optimizer], type[FabricOptimizer]] = {}


def _wrapper_class(optimizer_class: type[Optimizer]) -> type[FabricOptimizer]:
    cls = _WRAPPER_CLASSES.get(optimizer_class)
    if cls is None:
        cls = type(f"Fabric{optimizer_class.__name__}", (FabricOptimizer, optimizer_class), {})
        _WRAPPER_CLASSES[optimizer_class] = cls
    return cls
