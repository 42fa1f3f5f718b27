"""``Precision.connect``: the strategy tells its precision, once, where the process computes."""

from __future__ import annotations

import torch
from torch import nn

from fab.core import Fabric
from fab.core.precision import Precision, PrecisionContext


class RecordingPrecision(Precision):
    """``32-true`` that records what it was told in ``connect``."""

    def __init__(self) -> None:
        self.contexts: list[PrecisionContext] = []
        self.conversions = 0

    def connect(self, context: PrecisionContext) -> None:
        self.contexts.append(context)

    def convert_module(self, module: nn.Module) -> nn.Module:
        assert self.contexts, "convert_module ran before the precision was connected"
        self.conversions += 1
        return module


def test_the_strategy_connects_the_precision_once_before_the_first_model() -> None:
    precision = RecordingPrecision()
    fabric = Fabric(accelerator="cpu", devices=1, precision=precision)
    assert precision.contexts == []  # not at construction: the device may not be known yet
    model = nn.Linear(3, 2)
    fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    fabric.setup_module(nn.Linear(2, 1))
    assert precision.contexts == [PrecisionContext(device=fabric.device)]
    assert precision.conversions == 2


def test_a_precision_set_on_the_strategy_later_is_connected_too() -> None:
    fabric = Fabric(accelerator="cpu", devices=1)
    fabric.setup_module(nn.Linear(3, 2))
    precision = RecordingPrecision()
    fabric.strategy.precision = precision
    fabric.setup_module(nn.Linear(3, 2))
    assert precision.contexts == [PrecisionContext(device=torch.device("cpu"))]


def test_a_precision_that_does_not_override_connect_trains_as_before() -> None:
    class Counting(Precision):  # a third party's precision written before connect existed
        steps = 0

        def optimizer_step(self, optimizer: torch.optim.Optimizer, **kwargs: object) -> object:
            type(self).steps += 1
            return optimizer.step()

    fabric = Fabric(accelerator="cpu", devices=1, precision=Counting())
    model = nn.Linear(3, 1)
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    before = model.weight.detach().clone()
    fabric.backward(model(torch.ones(2, 3)).sum())
    optimizer.step()
    assert Counting.steps == 1
    assert not torch.equal(before, model.weight)
