"""FabricDataLoader moves batches, sets the sampler's epoch once per pass, and reads through."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, Sampler, TensorDataset

from fab.wrappers import FabricDataLoader, unwrap

from .conftest import RecordingStrategy


class EpochSampler(Sampler[int]):
    def __init__(self) -> None:
        self.epochs: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def __iter__(self) -> Iterator[int]:
        return iter(range(4))

    def __len__(self) -> int:
        return 4


class Stream(IterableDataset[torch.Tensor]):
    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(torch.arange(3.0))


def test_dataloader_moves_batches_and_sets_the_epoch(strategy: RecordingStrategy) -> None:
    sampler = EpochSampler()
    loader = DataLoader(TensorDataset(torch.arange(4.0)), batch_size=2, sampler=sampler)
    wrapped = FabricDataLoader(loader, strategy, device=torch.device("cpu"))
    assert len(wrapped) == 2
    list(wrapped)
    list(wrapped)
    assert sampler.epochs == [0, 1]
    assert len(strategy.moved) == 4
    assert unwrap(wrapped) is loader


def test_set_epoch_numbers_the_next_pass(strategy: RecordingStrategy) -> None:
    """A resumed run says which epoch it is at; the samplers get that number, then the next."""
    sampler = EpochSampler()
    loader = FabricDataLoader(
        DataLoader(TensorDataset(torch.arange(4.0)), sampler=sampler), strategy
    )
    loader.set_epoch(5)
    list(loader)
    list(loader)
    loader.set_epoch(2)
    list(loader)
    assert sampler.epochs == [5, 6, 2]
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="non-negative int"):
            loader.set_epoch(bad)  # type: ignore[arg-type]


def test_a_batch_sampler_with_set_epoch_gets_it_once_per_pass(
    strategy: RecordingStrategy,
) -> None:
    class EpochBatchSampler(EpochSampler):
        def __iter__(self) -> Iterator[list[int]]:  # type: ignore[override]
            return iter([[0, 1], [2, 3]])

    batch_sampler = EpochBatchSampler()
    loader = DataLoader(TensorDataset(torch.arange(4.0)), batch_sampler=batch_sampler)
    wrapped = FabricDataLoader(loader, strategy)
    list(wrapped)
    list(wrapped)
    assert batch_sampler.epochs == [0, 1]


def test_attribute_reads_go_to_the_loader(strategy: RecordingStrategy) -> None:
    dataset = TensorDataset(torch.arange(4.0))
    loader = DataLoader(dataset, batch_size=2, drop_last=True)
    wrapped = FabricDataLoader(loader, strategy)
    assert wrapped.batch_size == 2
    assert wrapped.dataset is dataset
    assert wrapped.drop_last
    with pytest.raises(AttributeError):
        wrapped.missing


def test_len_of_a_loader_without_length_raises_type_error(strategy: RecordingStrategy) -> None:
    loader = DataLoader(Stream(), batch_size=2)
    with pytest.raises(TypeError):
        len(loader)
    wrapped = FabricDataLoader(loader, strategy)
    with pytest.raises(TypeError):
        len(wrapped)
    assert [b.tolist() for b in wrapped] == [[0.0, 1.0], [2.0]]


def test_dataloader_without_device_leaves_batches_alone(strategy: RecordingStrategy) -> None:
    loader = DataLoader(TensorDataset(torch.arange(4.0)), batch_size=2)
    assert len(list(FabricDataLoader(loader, strategy))) == 2
    assert strategy.moved == []


def test_wrapping_twice_is_refused(strategy: RecordingStrategy) -> None:
    wrapped = FabricDataLoader(DataLoader(TensorDataset(torch.arange(4.0))), strategy)
    with pytest.raises(TypeError, match="already set up"):
        FabricDataLoader(wrapped, strategy)  # type: ignore[arg-type]
