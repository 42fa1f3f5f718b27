"""FabricOptimizer stays an instance of its class; FabricDataLoader moves batches."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

from fab.wrappers import FabricDataLoader, FabricOptimizer, is_wrapped, unwrap

from .conftest import RecordingStrategy


def test_optimizer_is_still_an_instance_of_its_class_and_steps_through_the_strategy(
    strategy: RecordingStrategy,
) -> None:
    param = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.AdamW([param], lr=0.1)
    wrapped = FabricOptimizer(optimizer, strategy)
    assert isinstance(wrapped, torch.optim.AdamW)
    assert wrapped.param_groups is optimizer.param_groups
    assert wrapped.state is optimizer.state
    param.grad = torch.ones(2)
    wrapped.step()
    assert strategy.steps == 1
    assert len(optimizer.state[param]) > 0
    assert is_wrapped(wrapped)
    assert unwrap(wrapped) is optimizer


def test_lr_scheduler_accepts_the_wrapped_optimizer(strategy: RecordingStrategy) -> None:
    param = torch.nn.Parameter(torch.ones(1))
    wrapped = FabricOptimizer(torch.optim.SGD([param], lr=1.0), strategy)
    scheduler = torch.optim.lr_scheduler.StepLR(wrapped, step_size=1, gamma=0.5)
    param.grad = torch.ones(1)
    wrapped.step()
    scheduler.step()
    assert wrapped.param_groups[0]["lr"] == 0.5
    assert wrapped.optimizer.param_groups[0]["lr"] == 0.5


def test_wrapping_twice_is_refused(strategy: RecordingStrategy) -> None:
    wrapped = FabricOptimizer(
        torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=1.0), strategy
    )
    with pytest.raises(TypeError, match="already set up"):
        FabricOptimizer(wrapped, strategy)


class EpochSampler(Sampler[int]):
    def __init__(self) -> None:
        self.epochs: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def __iter__(self) -> Iterator[int]:
        return iter(range(4))

    def __len__(self) -> int:
        return 4


def test_dataloader_moves_batches_and_sets_the_epoch(strategy: RecordingStrategy) -> None:
    sampler = EpochSampler()
    loader = DataLoader(TensorDataset(torch.arange(4.0)), batch_size=2, sampler=sampler)
    wrapped = FabricDataLoader(loader, strategy, device=torch.device("cpu"))
    assert len(wrapped) == 2
    list(wrapped)
    list(wrapped)
    assert sampler.epochs == [0, 1]
    assert len(strategy.moved) == 4
    assert wrapped.batch_size == 2
    assert unwrap(wrapped) is loader


def test_dataloader_without_device_leaves_batches_alone(strategy: RecordingStrategy) -> None:
    loader = DataLoader(TensorDataset(torch.arange(4.0)), batch_size=2)
    assert len(list(FabricDataLoader(loader, strategy))) == 2
    assert strategy.moved == []
