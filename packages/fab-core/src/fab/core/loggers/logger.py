"""The Logger base class: where ``fabric.log`` and ``fabric.log_dict`` send metrics.

Every logger, fab's and third parties', gets three behaviours from this class without writing
them itself (they are applied to the subclass's own ``log_metrics``, ``log_hyperparams``,
``log_graph``, ``save`` and ``finalize`` when the subclass is defined):

- **Rank zero only.** On any process other than global rank 0 those methods do nothing and
  return None. A logger that records on every process sets ``log_on_every_rank = True``.
- **Plain numbers.** ``log_metrics`` receives floats and ints: a one-element tensor (or a NumPy
  scalar) is detached and turned into a Python number; a tensor of several elements is refused.
- **Steps.** ``log_metrics`` always receives a step: the one given, or one more than the last step
  this logger recorded (0 first).

A guarded method that calls another (``finalize`` calling ``save``, a subclass calling
``super().log_metrics``) runs the checks once, at the outermost call.
"""

from __future__ import annotations

import functools
import threading
from abc import ABC, abstractmethod
from argparse import Namespace
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from torch import Tensor
from torch.nn import Module

from fab.core.utilities.rank_zero import rank_zero_only

#: The methods that run on rank zero only, with their arguments made plain.
GUARDED_METHODS = ("log_metrics", "log_hyperparams", "log_graph", "save", "finalize")

_active = threading.local()  # ids of the loggers inside a guarded call, on this thread


class Logger(ABC):
    """A metrics sink (CSV, TensorBoard, a third party's), registered in ``fab.loggers``.

    Subclasses implement ``name``, ``version``, ``log_metrics`` and ``log_hyperparams``; those
    that write files also ``root_dir`` (the folder every version lives under) and ``log_dir`` (this
    run's folder), and those that buffer ``save`` (flush) and ``finalize`` (flush and close).
    """

    #: Record on every process instead of on global rank 0 only.
    log_on_every_rank: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in GUARDED_METHODS:
            method = cls.__dict__.get(name)
            if callable(method) and not getattr(method, "__fab_guarded__", False):
                setattr(cls, name, _guard(name, method))

    @property
    @abstractmethod
    def name(self) -> str | None:
        """The experiment's name."""

    @property
    @abstractmethod
    def version(self) -> int | str | None:
        """The run's version within the experiment."""

    @property
    def root_dir(self) -> str | None:
        """The directory every version of the experiment lives under, if the logger writes files."""
        return None

    @property
    def log_dir(self) -> str | None:
        """The directory this run writes to, if the logger writes files."""
        return None

    @property
    def group_separator(self) -> str:
        """Separates a metric's group from its name (``train/loss``)."""
        return "/"

    @abstractmethod
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record ``metrics`` at ``step`` (always given by the time an implementation runs)."""

    @abstractmethod
    def log_hyperparams(
        self, params: Mapping[str, Any] | Namespace, *args: Any, **kwargs: Any
    ) -> None:
        """Record the run's hyperparameters."""

    def log_graph(self, model: Module, input_array: Any | None = None) -> None:
        """Record the model's graph, where the logger can show one."""

    def save(self) -> None:
        """Flush what is buffered."""

    def finalize(self, status: str) -> None:
        """The run ended with ``status`` ("success", "failed", ...): flush and close. Logging
        afterwards is allowed and opens the logger's files again."""
        self.save()


def to_number(value: Any) -> Any:
    """A one-element tensor or NumPy scalar as a Python number; anything else unchanged."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"can only log a tensor with one element, got shape {tuple(value.shape)}"
            )
        return value.detach().cpu().item()
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():  # a NumPy scalar or 0-d array
        return item()
    return value


def metrics_to_numbers(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` with every value passed through ``to_number``."""
    return {str(key): to_number(value) for key, value in metrics.items()}


def _global_rank() -> int:
    return int(rank_zero_only.rank)  # type: ignore[attr-defined]


def _guard(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def guarded(self: Logger, *args: Any, **kwargs: Any) -> Any:
        active: set[int] = _active.__dict__.setdefault("ids", set())
        if id(self) in active:  # called from another guarded method of this logger
            return method(self, *args, **kwargs)
        if not self.log_on_every_rank and _global_rank() != 0:
            return None
        if name == "log_metrics":
            args, kwargs = _with_numbers_and_step(self, args, kwargs)
        active.add(id(self))
        try:
            return method(self, *args, **kwargs)
        finally:
            active.discard(id(self))

    guarded.__fab_guarded__ = True  # type: ignore[attr-defined]
    return guarded


def _with_numbers_and_step(
    logger: Logger, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``log_metrics``' arguments as ``(metrics, step, *rest)``: numbers, and a step always."""
    kwargs = dict(kwargs)
    metrics = args[0] if args else kwargs.pop("metrics")
    step = args[1] if len(args) > 1 else kwargs.pop("step", None)
    if step is None:
        step = getattr(logger, "_fab_next_step", 0)
    step = int(to_number(step))
    object.__setattr__(logger, "_fab_next_step", step + 1)
    return (metrics_to_numbers(metrics), step, *args[2:]), kwargs
