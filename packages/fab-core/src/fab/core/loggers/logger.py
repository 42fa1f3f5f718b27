"""The Logger base class: where ``fabric.log`` and ``fabric.log_dict`` send metrics."""

from __future__ import annotations

from abc import ABC, abstractmethod
from argparse import Namespace
from collections.abc import Mapping
from typing import Any

from torch.nn import Module


class Logger(ABC):
    """A metrics sink (CSV, TensorBoard, a third party's), registered in ``fab.loggers``.

    Fabric calls it on the global-zero process only, with plain numbers (tensors detached and
    converted) and a step that it counts when the user gives none.
    """

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
        """Record ``metrics`` at ``step``."""

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
        """The run ended with ``status`` ("success", "failed", ...): flush and close."""
        self.save()
