"""Re-create a DataLoader so that one of several processes iterates its share of the data.

:func:`shard_dataloader` is what ``Fabric.setup_dataloaders`` does under a multi-process strategy.
What it does depends on how the loader picks its samples:

- the default samplers (``SequentialSampler``, or ``RandomSampler`` over the whole dataset without
  replacement): a torch ``DistributedSampler``, shuffling when the original did, ``drop_last`` kept,
  seeded with the global seed (the last ``seed_everything``'s, the same on every rank; 0 without
  one, as in torch), so that the shuffle order follows the seed;
- any other sampler (``WeightedRandomSampler``, a class of your own): :class:`ShardedSampler`
  around it, so the user's sampling is kept and each rank takes every ``num_replicas``-th index;
- a batch sampler of your own (bucketing by length, ...): :class:`ShardedBatchSampler` around it,
  so the batches are kept whole and each rank takes every ``num_replicas``-th batch;
- an ``IterableDataset``, a loader already sharded, or ``use_distributed_sampler=False``: the loader
  as it is.

Both wrappers need the wrapped sampler to yield the same sequence on every rank. A sampler that
draws from torch's global random generator (``WeightedRandomSampler`` or ``RandomSampler`` without
a ``generator``) does after ``seed_everything``, which seeds every rank alike, as long as every
rank draws the same random numbers in between; a sampler with its own ``torch.Generator`` seeded
the same on every rank always does.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Iterable, Iterator, Sized
from typing import Any, Protocol, TypeVar

from torch.utils.data import (
    BatchSampler,
    DataLoader,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

from fab.core.utilities import global_seed

__all__ = ["ShardedBatchSampler", "ShardedSampler", "SizedIterable", "shard_dataloader"]

_T = TypeVar("_T")
_T_co = TypeVar("_T_co", covariant=True)


class SizedIterable(Protocol[_T_co]):
    """What the wrappers wrap: a sampler (or any iterable) with a length."""

    def __iter__(self) -> Iterator[_T_co]: ...

    def __len__(self) -> int: ...


#: DataLoader arguments kept when it is re-created (dataset, batch_size, shuffle, sampler,
#: batch_sampler and drop_last are decided by :func:`shard_dataloader`).
_LOADER_ARGS = (
    "num_workers",
    "collate_fn",
    "pin_memory",
    "timeout",
    "worker_init_fn",
    "multiprocessing_context",
    "generator",
    "prefetch_factor",
    "persistent_workers",
    "pin_memory_device",
    "in_order",
)


class ShardedSampler(Sampler[_T]):
    """This rank's share of what ``sampler`` yields: the items at positions ``rank``,
    ``rank + num_replicas``, ... of each pass.

    Like ``DistributedSampler``, the sequence is first made a multiple of ``num_replicas`` long, by
    repeating items from its start or, with ``drop_last``, by dropping its tail, so every rank
    yields ``len(self)`` items. ``set_epoch`` is passed on to ``sampler`` when it has one.
    ``sampler`` must yield the same sequence on every rank (see the module's documentation).
    """

    def __init__(
        self, sampler: Iterable[_T], num_replicas: int, rank: int, drop_last: bool = False
    ) -> None:
        _check_rank(num_replicas, rank)
        if not isinstance(sampler, Sized):
            raise TypeError(
                f"ShardedSampler needs a sampler with a length, got {type(sampler).__qualname__} "
                "which has no __len__"
            )
        self.sampler: SizedIterable[_T] = sampler
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        self.epoch = 0

    def __iter__(self) -> Iterator[_T]:
        return _share(self.sampler, self.num_replicas, self.rank, self.drop_last)

    def __len__(self) -> int:
        total = len(self.sampler)
        if self.drop_last:
            return total // self.num_replicas
        return math.ceil(total / self.num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        _forward_set_epoch(self.sampler, epoch)


class ShardedBatchSampler(Sampler[list[_T]]):
    """This rank's share of the batches ``batch_sampler`` yields, each batch kept whole: batches
    ``rank``, ``rank + num_replicas``, ... of each pass.

    When the number of batches is not a multiple of ``num_replicas``, batches from the start are
    repeated, so every rank yields ``len(self)`` batches (a rank with fewer batches would leave the
    others waiting in a collective). ``set_epoch`` is passed on to ``batch_sampler`` when it has
    one. ``batch_sampler`` must yield the same batches on every rank (see the module's
    documentation).
    """

    def __init__(self, batch_sampler: Iterable[list[_T]], num_replicas: int, rank: int) -> None:
        _check_rank(num_replicas, rank)
        if not isinstance(batch_sampler, Sized):
            raise TypeError(
                "ShardedBatchSampler needs a batch sampler with a length, got "
                f"{type(batch_sampler).__qualname__} which has no __len__"
            )
        self.batch_sampler: SizedIterable[list[_T]] = batch_sampler
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def __iter__(self) -> Iterator[list[_T]]:
        return _share(self.batch_sampler, self.num_replicas, self.rank, drop_last=False)

    def __len__(self) -> int:
        return math.ceil(len(self.batch_sampler) / self.num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        _forward_set_epoch(self.batch_sampler, epoch)


def shard_dataloader(
    dataloader: DataLoader[Any],
    num_replicas: int,
    rank: int,
    use_distributed_sampler: bool = True,
    seed: int | None = None,
) -> DataLoader[Any]:
    """The loader that process ``rank`` of ``num_replicas`` iterates: ``dataloader`` re-created
    with a sampler or batch sampler that gives this rank its share (see the module's
    documentation), every other argument kept; or ``dataloader`` itself when there is nothing to
    do, or nothing fab can do (then with a ``UserWarning`` on rank 0 that says so).

    ``seed`` seeds the ``DistributedSampler``'s shuffling; by default the global seed that
    ``seed_everything`` set in this process or the one that started it
    (:func:`fab.core.utilities.global_seed`), or 0 when none was set.

    Raises ``TypeError`` when ``dataloader`` is of a DataLoader subclass that cannot be re-created
    from its attributes.
    """
    if not use_distributed_sampler or num_replicas <= 1:
        return dataloader
    _check_rank(num_replicas, rank)
    if isinstance(dataloader.dataset, IterableDataset):
        return dataloader  # the dataset decides what each worker and rank reads
    batch_sampler = dataloader.batch_sampler
    if batch_sampler is not None and type(batch_sampler) is not BatchSampler:
        if isinstance(batch_sampler, ShardedBatchSampler):
            return dataloader
        if not isinstance(batch_sampler, Sized):
            _leave_alone(rank, "batch sampler", batch_sampler, "batches")
            return dataloader
        return _recreate(
            dataloader, batch_sampler=ShardedBatchSampler(batch_sampler, num_replicas, rank)
        )
    if batch_sampler is not None:
        # The default BatchSampler: its sampler, batch size and drop_last are the loader's (also
        # when it was given as ``batch_sampler=BatchSampler(...)``, where the loader's are not).
        sampler: Iterable[Any] = batch_sampler.sampler
        batch_size: int | None = batch_sampler.batch_size
        drop_last = batch_sampler.drop_last
    else:
        sampler = dataloader.sampler
        batch_size = dataloader.batch_size  # None: no automatic batching
        drop_last = dataloader.drop_last
    if isinstance(sampler, (DistributedSampler, ShardedSampler)):
        return dataloader
    new_sampler: Sampler[Any]
    if _is_default_sampler(sampler, dataloader.dataset):
        new_sampler = DistributedSampler(
            dataloader.dataset,
            num_replicas=num_replicas,
            rank=rank,
            shuffle=isinstance(sampler, RandomSampler),
            seed=_sampler_seed(seed),
            drop_last=drop_last,
        )
    elif isinstance(sampler, Sized):
        new_sampler = ShardedSampler(sampler, num_replicas, rank, drop_last=drop_last)
    else:
        _leave_alone(rank, "sampler", sampler, "samples")
        return dataloader
    return _recreate(dataloader, sampler=new_sampler, batch_size=batch_size, drop_last=drop_last)


# -- helpers -------------------------------------------------------------------------------------


def _share(items: Iterable[_T], num_replicas: int, rank: int, drop_last: bool) -> Iterator[_T]:
    """Positions ``rank::num_replicas`` of ``items`` made a multiple of ``num_replicas`` long (the
    tail dropped, or the start repeated), read as it comes: only the first ``num_replicas`` items
    and the current round of them are kept."""
    head: list[_T] = []  # what padding repeats
    round_: list[_T] = []
    seen = 0
    for item in items:
        if len(head) < num_replicas:
            head.append(item)
        round_.append(item)
        seen += 1
        if len(round_) == num_replicas:
            yield round_[rank]
            round_ = []
    if not round_ or drop_last:
        return
    if rank < len(round_):
        yield round_[rank]
    else:
        # position seen - len(round_) + rank of the sequence repeated from its start
        yield head[(seen - len(round_) + rank) % seen]


def _sampler_seed(seed: int | None) -> int:
    if seed is not None:
        return seed
    found = global_seed()  # read when the loader is set up, on every rank alike
    return 0 if found is None else found


def _check_rank(num_replicas: int, rank: int) -> None:
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(
            f"rank={rank} of num_replicas={num_replicas}: need num_replicas >= 1 and "
            "0 <= rank < num_replicas"
        )


def _forward_set_epoch(sampler: object, epoch: int) -> None:
    set_epoch = getattr(sampler, "set_epoch", None)
    if callable(set_epoch):
        set_epoch(epoch)


def _is_default_sampler(sampler: Iterable[Any], dataset: object) -> bool:
    """A sampler that a DistributedSampler replaces without changing what is sampled: in order, or
    each sample of the whole dataset once in random order."""
    if type(sampler) is SequentialSampler:
        return sampler.data_source is dataset
    if type(sampler) is RandomSampler:
        return (
            sampler.data_source is dataset
            and not sampler.replacement
            and sampler.num_samples == len(sampler.data_source)
        )
    return False


def _leave_alone(rank: int, kind: str, sampler: object, items: str) -> None:
    if rank != 0:
        return  # one warning for the whole run, not one per process
    warnings.warn(
        f"setup_dataloaders left this DataLoader as it is: its {kind} "
        f"({type(sampler).__qualname__}) has no __len__, so fab cannot give every process the "
        f"same number of {items} (a process that runs out first leaves the others waiting), and "
        "every process will iterate all of it. Shard it yourself (each process yielding its own "
        "part, all of the same length) and pass use_distributed_sampler=False to "
        "setup_dataloaders to silence this warning.",
        UserWarning,
        stacklevel=5,  # _leave_alone, shard_dataloader, process_dataloader, setup_dataloaders
    )


def _recreate(loader: DataLoader[Any], **changes: Any) -> DataLoader[Any]:
    """``type(loader)`` built again over the same dataset with ``changes`` and every other argument
    taken from ``loader``; for a subclass, its own ``__init__`` arguments are taken from the
    loader's attributes of the same names."""
    kwargs: dict[str, Any] = {
        name: getattr(loader, name) for name in _LOADER_ARGS if hasattr(loader, name)
    }
    if kwargs.get("num_workers", 0) == 0:
        kwargs.pop("prefetch_factor", None)
        kwargs["persistent_workers"] = False
    if not kwargs.get("pin_memory_device"):
        kwargs.pop("pin_memory_device", None)
    kwargs.update(changes)
    cls = type(loader)
    if cls is not DataLoader:
        kwargs.update(_subclass_arguments(loader, kwargs))
    try:
        return cls(loader.dataset, **kwargs)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"fab cannot re-create this {cls.__qualname__} with a sampler for each process "
            f"({error}). Pass use_distributed_sampler=False to setup_dataloaders and shard it "
            "yourself (fab.strategies.dataloaders.ShardedSampler or ShardedBatchSampler can do "
            "the sharding)."
        ) from error


def _subclass_arguments(loader: DataLoader[Any], given: dict[str, Any]) -> dict[str, Any]:
    """The arguments that ``type(loader).__init__`` takes beyond DataLoader's, from the loader's
    attributes of the same names; a ``TypeError`` naming the class for a required one that the
    loader has no attribute for."""
    cls = type(loader)
    try:
        parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        return {}  # no signature to read; the call itself says what is wrong
    own = set(inspect.signature(DataLoader.__init__).parameters)
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if parameters and parameters[0].kind in positional:
        parameters = parameters[1:]  # the dataset, passed by position
    found: dict[str, Any] = {}
    missing: list[str] = []
    for parameter in parameters:
        name = parameter.name
        if name in own or name in given:
            continue
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
            if parameter.default is inspect.Parameter.empty:
                missing.append(name)  # cannot be given by name
        elif hasattr(loader, name):
            found[name] = getattr(loader, name)
        elif parameter.default is inspect.Parameter.empty:
            missing.append(name)
    if missing:
        raise TypeError(
            f"fab cannot re-create this {cls.__qualname__} with a sampler for each process: its "
            f"__init__ needs {', '.join(repr(name) for name in missing)}, which the loader does "
            "not keep as attributes of the same names. Pass use_distributed_sampler=False to "
            "setup_dataloaders and shard it yourself (fab.strategies.dataloaders.ShardedSampler "
            "or ShardedBatchSampler can do the sharding), or store those arguments on the loader "
            "under their own names."
        )
    return found
