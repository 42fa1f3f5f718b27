"""A strategy and precisions written against fab-wrappers' protocols only (no fab-core)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import pytest
import torch
from torch import Tensor
from torch.nn import Module
from torch.optim import Optimizer


class PlainPrecision:
    def forward_context(self) -> AbstractContextManager[object]:
        return nullcontext()

    def convert_input(self, data: Any) -> Any:
        return data

    def convert_output(self, data: Any) -> Any:
        return data

    def forward_is_identity(self) -> bool:
        return True

    @property
    def requires_fabric_backward(self) -> bool:
        return False


class DoublePrecision(PlainPrecision):
    """Converts float inputs to float64 and records when its forward context is active."""

    def __init__(self) -> None:
        self.active = False

    @contextmanager
    def _context(self) -> Iterator[None]:
        self.active = True
        try:
            yield
        finally:
            self.active = False

    def forward_context(self) -> AbstractContextManager[object]:
        return self._context()

    def convert_input(self, data: Any) -> Any:
        args, kwargs = data
        return tuple(a.double() if isinstance(a, Tensor) else a for a in args), kwargs

    def forward_is_identity(self) -> bool:
        return False


class ScalingPrecision(PlainPrecision):
    """Changes nothing in a forward but needs ``fabric.backward`` (like a loss scaler)."""

    @property
    def requires_fabric_backward(self) -> bool:
        return True


class RecordingStrategy:
    def __init__(self, precision: PlainPrecision | None = None) -> None:
        self._precision = precision or PlainPrecision()
        self.steps = 0
        self.moved: list[Any] = []

    @property
    def precision(self) -> PlainPrecision:
        return self._precision

    @property
    def requires_fabric_backward(self) -> bool:
        return self._precision.requires_fabric_backward

    @property
    def root_device(self) -> torch.device:
        return torch.device("cpu")

    def optimizer_step(self, optimizer: Optimizer, **kwargs: Any) -> Any:
        self.steps += 1
        return optimizer.step(**kwargs)

    def batch_to_device(self, batch: Any, device: torch.device | None = None) -> Any:
        self.moved.append(batch)
        return batch

    def backward(self, tensor: Tensor, module: Module | None, *args: Any, **kwargs: Any) -> None:
        tensor.backward(*args, **kwargs)


class Wrapping(Module):
    """A stand-in for DistributedDataParallel: holds the model, calls it, and counts the calls
    (the work DDP does around forward)."""

    def __init__(self, module: Module) -> None:
        super().__init__()
        self.module = module
        self.calls = 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.module(*args, **kwargs)


@pytest.fixture
def strategy() -> RecordingStrategy:
    return RecordingStrategy()
