"""FabricDataLoader: a data loader that moves its batches to the device."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

from fab.wrappers.protocols import StrategyLike


class FabricDataLoader:
    """Iterates the wrapped loader, moving every batch to ``device`` through the strategy, and
    calls ``set_epoch`` on samplers that have it, once per pass."""

    def __init__(
        self,
        dataloader: DataLoader[Any],
        strategy: StrategyLike,
        device: torch.device | None = None,
    ) -> None:
        if isinstance(dataloader, FabricDataLoader):
            raise TypeError("this data loader is already set up by Fabric")
        self._dataloader = dataloader
        self._strategy = strategy
        self._device = device
        self._epoch = 0

    @property
    def device(self) -> torch.device | None:
        """Where batches are moved to; None leaves them where the loader puts them."""
        return self._device

    @property
    def dataloader(self) -> DataLoader[Any]:
        return self._dataloader

    def set_epoch(self, epoch: int) -> None:
        """Number the next pass ``epoch`` (the following ones ``epoch + 1``, ...): what its
        samplers' ``set_epoch`` get, so a resumed run shuffles its epochs as an uninterrupted
        one did. Without it, passes are numbered from 0 in each process."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"set_epoch({epoch!r}): expected a non-negative int")
        self._epoch = epoch

    def __len__(self) -> int:
        """The number of batches of one pass; a TypeError for a loader that has no length (one
        over an ``IterableDataset`` without ``__len__``), as ``len(DataLoader)`` raises."""
        return len(self._dataloader)

    def __iter__(self) -> Iterator[Any]:
        for sampler in _samplers(self._dataloader):
            sampler.set_epoch(self._epoch)
        self._epoch += 1
        if self._device is None:
            yield from self._dataloader
            return
        for batch in self._dataloader:
            yield self._strategy.batch_to_device(batch, self._device)

    def __getattr__(self, name: str) -> Any:
        # Called only for names the wrapper does not have: batch_size, dataset, sampler, ...
        try:
            dataloader = self.__dict__["_dataloader"]
        except KeyError:
            raise AttributeError(name) from None
        return getattr(dataloader, name)

    def __repr__(self) -> str:
        return f"FabricDataLoader({self._dataloader!r}, device={self._device})"


def _samplers(dataloader: DataLoader[Any]) -> list[Any]:
    """The loader's samplers that have ``set_epoch`` (a DistributedSampler, for one), each once."""
    batch_sampler = getattr(dataloader, "batch_sampler", None)
    candidates = (
        getattr(dataloader, "sampler", None),
        batch_sampler,
        getattr(batch_sampler, "sampler", None),
    )
    found: list[Any] = []
    for candidate in candidates:
        if callable(getattr(candidate, "set_epoch", None)) and all(
            candidate is not seen for seen in found
        ):
            found.append(candidate)
    return found
