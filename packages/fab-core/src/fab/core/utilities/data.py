"""Data-loader helpers: how many workers a process can use, and what a loader can tell about its
length (Lightning's ``lightning.fabric.utilities.data``)."""

from __future__ import annotations

import os
from collections.abc import Sized
from typing import TypeGuard

from torch.utils.data import IterableDataset

# AttributeDict lives in attribute_dict.py; importable from here too, as from Lightning's
# ``lightning.fabric.utilities.data``.
from fab.core.utilities.attribute_dict import AttributeDict

__all__ = [
    "AttributeDict",
    "has_iterable_dataset",
    "has_len",
    "sized_len",
    "suggested_max_num_workers",
]


def _available_cpus() -> int:
    """The CPUs this process may run on: its affinity mask where the OS has one (Linux, so
    ``taskset`` and cgroup cpusets count), else every CPU of the machine."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def suggested_max_num_workers(local_world_size: int) -> int:
    """The ``num_workers`` to give each data loader: this machine's CPUs split among its
    ``local_world_size`` processes, minus one for the process itself, and at least 1.

    Example::

        DataLoader(dataset, num_workers=suggested_max_num_workers(fabric.world_size // num_nodes))
    """
    if isinstance(local_world_size, bool) or not isinstance(local_world_size, int):
        raise TypeError(
            f"local_world_size must be an int (processes on this machine), got {local_world_size!r}"
        )
    if local_world_size < 1:
        raise ValueError(
            "local_world_size must be at least 1 (processes on this machine), "
            f"got {local_world_size}"
        )
    return max(1, _available_cpus() // local_world_size - 1)


def has_iterable_dataset(dataloader: object) -> bool:
    """Whether ``dataloader`` has a ``dataset`` attribute that is an ``IterableDataset``."""
    return isinstance(getattr(dataloader, "dataset", None), IterableDataset)


def sized_len(dataloader: object) -> int | None:
    """``len(dataloader)``, or None where it has no length (``TypeError``/``NotImplementedError``:
    an iterable dataset without ``__len__``)."""
    try:
        return len(dataloader)  # type: ignore[arg-type]
    except (TypeError, NotImplementedError):
        return None


def has_len(dataloader: object) -> TypeGuard[Sized]:
    """Whether ``len(dataloader)`` works. Warns (on rank 0) when the length is 0, and when an
    ``IterableDataset`` defines one: with several workers each yields the whole dataset unless
    it shards itself, so the length may not be the number of batches seen."""
    from fab.core.utilities.rank_zero import rank_zero_warn

    length = sized_len(dataloader)
    if length == 0:
        rank_zero_warn(
            f"`{type(dataloader).__name__}` has length 0: it yields nothing. Check the dataset "
            "and the batch size (with drop_last=True a dataset smaller than one batch is empty)"
        )
    if length is not None and has_iterable_dataset(dataloader):
        rank_zero_warn(
            "the IterableDataset of this loader defines __len__: with several workers each "
            "worker iterates the whole dataset unless the dataset splits itself among them "
            "(torch.utils.data.get_worker_info), so the length may not match what is yielded"
        )
    return length is not None
