"""setup_dataloaders under several processes keeps the user's samplers and batch samplers.

The wrappers and the choice of what to do are checked in this process with ``num_replicas`` and
``rank`` given directly; the whole path through ``Fabric`` is checked once with two real
processes over gloo (``ddp_spawn``, so every function run there is at module level).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    Sampler,
    TensorDataset,
    WeightedRandomSampler,
)

from fab.core import Fabric
from fab.strategies import DDPStrategy, FabEnvironment
from fab.strategies.dataloaders import ShardedBatchSampler, ShardedSampler, shard_dataloader

# -- samplers a user might write -----------------------------------------------------------------


class EpochShuffle(Sampler[int]):
    """A permutation of ``range(size)`` seeded by ``seed + epoch``; records every ``set_epoch``."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0
        self.epochs: list[int] = []

    def order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.size, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.order(self.epoch))

    def __len__(self) -> int:
        return self.size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.epochs.append(epoch)


#: Batches of uneven sizes, as a sampler bucketing by length makes them.
BUCKETS = [[0, 1, 2], [3, 4], [5, 6, 7, 8], [9], [10, 11]]


class Buckets(Sampler[list[int]]):
    """Yields :data:`BUCKETS`, reversed in odd epochs; records every ``set_epoch``."""

    def __init__(self) -> None:
        self.epoch = 0
        self.epochs: list[int] = []

    def __iter__(self) -> Iterator[list[int]]:
        batches = BUCKETS if self.epoch % 2 == 0 else BUCKETS[::-1]
        return iter([list(batch) for batch in batches])

    def __len__(self) -> int:
        return len(BUCKETS)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.epochs.append(epoch)


class Endless(Sampler[int]):
    """A sampler with no length (it could go on forever)."""

    def __iter__(self) -> Iterator[int]:
        return iter(range(4))


class EndlessBatches(Sampler[list[int]]):
    def __iter__(self) -> Iterator[list[int]]:
        return iter([[0, 1], [2, 3]])


class Stream(IterableDataset[int]):
    def __iter__(self) -> Iterator[int]:
        return iter(range(4))


def _collate_ints(batch: list[tuple[torch.Tensor]]) -> list[int]:
    return [int(item[0]) for item in batch]


def _dataset(size: int = 12) -> TensorDataset:
    return TensorDataset(torch.arange(size))


def _indices(loader: DataLoader[Any]) -> list[int]:
    return [int(i) for batch in loader for i in batch[0]]


def _interleave(shards: list[list[Any]]) -> list[Any]:
    """The sequence that ``shards[r] == sequence[r::len(shards)]`` were taken from."""
    return [shard[i] for i in range(len(shards[0])) for shard in shards]


# -- the wrappers --------------------------------------------------------------------------------


@pytest.mark.parametrize("num_replicas", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [0, 1, 2, 5, 7, 8])
@pytest.mark.parametrize("drop_last", [False, True])
def test_sharded_sampler_splits_like_distributed_sampler(
    num_replicas: int, size: int, drop_last: bool
) -> None:
    dataset = _dataset(size)
    reference: list[list[int]] = [
        list(DistributedSampler(dataset, num_replicas, rank, shuffle=False, drop_last=drop_last))
        for rank in range(num_replicas)
    ]
    sequence = [10 * i for i in range(size)]  # what the user's sampler yields
    shards = [
        ShardedSampler(sequence, num_replicas, rank, drop_last=drop_last)
        for rank in range(num_replicas)
    ]
    assert [list(shard) for shard in shards] == [[10 * i for i in ref] for ref in reference]
    assert [len(shard) for shard in shards] == [len(ref) for ref in reference]


def test_sharded_sampler_keeps_the_users_sequence_and_forwards_set_epoch() -> None:
    user = EpochShuffle(11, seed=3)
    shards = [ShardedSampler(user, 2, rank) for rank in range(2)]
    for epoch in (0, 1):
        for shard in shards:
            shard.set_epoch(epoch)
        got = [list(shard) for shard in shards]
        assert [len(g) for g in got] == [len(s) for s in shards] == [6, 6]
        expected = user.order(epoch)
        assert _interleave(got) == [*expected, expected[0]]  # one index repeated to make 12
    assert user.epochs == [0, 0, 1, 1]
    assert shards[0].epoch == 1
    assert user.order(0) != user.order(1)


def test_sharded_batch_sampler_keeps_batches_whole_and_pads_by_wrapping_around() -> None:
    shards = [ShardedBatchSampler(Buckets(), 2, rank) for rank in range(2)]
    assert [list(shard) for shard in shards] == [
        [BUCKETS[0], BUCKETS[2], BUCKETS[4]],
        [BUCKETS[1], BUCKETS[3], BUCKETS[0]],
    ]
    assert [len(shard) for shard in shards] == [3, 3]
    three = [list(ShardedBatchSampler(BUCKETS, 3, rank)) for rank in range(3)]
    assert three == [[BUCKETS[0], BUCKETS[3]], [BUCKETS[1], BUCKETS[4]], [BUCKETS[2], BUCKETS[0]]]
    many = [list(ShardedBatchSampler(BUCKETS[:1], 3, rank)) for rank in range(3)]
    assert many == [[BUCKETS[0]]] * 3


def test_sharded_batch_sampler_forwards_set_epoch() -> None:
    user = Buckets()
    shard = ShardedBatchSampler(user, 2, 0)
    shard.set_epoch(1)
    assert user.epochs == [1]
    assert list(shard) == [BUCKETS[4], BUCKETS[2], BUCKETS[0]]


def test_wrappers_reject_bad_ranks_and_samplers_without_length() -> None:
    with pytest.raises(ValueError, match="rank=2 of num_replicas=2"):
        ShardedSampler(range(4), 2, 2)
    with pytest.raises(ValueError, match="num_replicas=0"):
        ShardedBatchSampler(BUCKETS, 0, 0)
    with pytest.raises(TypeError, match="Endless which has no __len__"):
        ShardedSampler(Endless(), 2, 0)
    with pytest.raises(TypeError, match="EndlessBatches which has no __len__"):
        ShardedBatchSampler(EndlessBatches(), 2, 0)


# -- what shard_dataloader does with each kind of loader -----------------------------------------


@pytest.mark.parametrize("shuffle", [False, True])
def test_default_samplers_get_a_distributed_sampler(shuffle: bool) -> None:
    loader = DataLoader(_dataset(), batch_size=3, shuffle=shuffle, drop_last=True)
    new = shard_dataloader(loader, num_replicas=2, rank=1)
    assert isinstance(new.sampler, DistributedSampler)
    assert (new.sampler.num_replicas, new.sampler.rank) == (2, 1)
    assert new.sampler.shuffle is shuffle
    assert new.sampler.drop_last
    assert (new.batch_size, new.drop_last) == (3, True)


def test_an_explicit_default_batch_sampler_keeps_its_batch_size_and_shuffling() -> None:
    dataset = _dataset()
    loader = DataLoader(dataset, batch_sampler=BatchSampler(RandomSampler(dataset), 5, True))
    new = shard_dataloader(loader, num_replicas=2, rank=0)
    assert isinstance(new.sampler, DistributedSampler)
    assert new.sampler.shuffle
    assert (new.batch_size, new.drop_last) == (5, True)
    assert [len(batch[0]) for batch in new] == [5]


def test_a_random_sampler_with_replacement_is_kept_and_sharded() -> None:
    dataset = _dataset()
    sampler = RandomSampler(dataset, replacement=True, num_samples=7)
    new = shard_dataloader(DataLoader(dataset, sampler=sampler), num_replicas=2, rank=0)
    assert isinstance(new.sampler, ShardedSampler)
    assert new.sampler.sampler is sampler
    assert len(new) == 4


def test_a_custom_sampler_is_wrapped_not_replaced() -> None:
    dataset = _dataset(10)
    sampler = WeightedRandomSampler([0.0] * 5 + [1.0] * 5, num_samples=9)
    loader = DataLoader(dataset, batch_size=2, sampler=sampler, drop_last=True)
    shards = [shard_dataloader(loader, num_replicas=2, rank=rank) for rank in range(2)]
    for rank, new in enumerate(shards):
        assert isinstance(new.sampler, ShardedSampler)
        assert new.sampler.sampler is sampler
        assert (new.sampler.rank, new.sampler.drop_last) == (rank, True)
        assert (new.batch_size, new.drop_last, len(new)) == (2, True, 2)
        torch.manual_seed(0)  # the same draw on every "rank"
        assert all(i >= 5 for i in _indices(new))  # the weights are kept


def test_a_sampler_in_an_explicit_default_batch_sampler_is_wrapped() -> None:
    user = EpochShuffle(12)
    loader = DataLoader(_dataset(), batch_sampler=BatchSampler(user, 4, False))
    new = shard_dataloader(loader, num_replicas=2, rank=0)
    assert isinstance(new.sampler, ShardedSampler)
    assert new.sampler.sampler is user
    assert new.batch_size == 4
    assert _indices(new) == user.order(0)[0::2]


def test_a_custom_batch_sampler_is_sharded_by_batch() -> None:
    loader = DataLoader(_dataset(), batch_sampler=Buckets(), collate_fn=_collate_ints)
    shards = [shard_dataloader(loader, num_replicas=2, rank=rank) for rank in range(2)]
    assert [list(new) for new in shards] == [
        [BUCKETS[0], BUCKETS[2], BUCKETS[4]],
        [BUCKETS[1], BUCKETS[3], BUCKETS[0]],
    ]
    for new in shards:
        assert isinstance(new.batch_sampler, ShardedBatchSampler)
        assert new.batch_sampler.batch_sampler is loader.batch_sampler
        assert new.collate_fn is _collate_ints
        assert new.batch_size is None
        assert len(new) == 3


def test_other_loader_arguments_are_kept() -> None:
    generator = torch.Generator()

    def init(worker_id: int) -> None:
        del worker_id

    loader = DataLoader(
        _dataset(),
        batch_size=2,
        sampler=EpochShuffle(12),
        num_workers=1,
        collate_fn=_collate_ints,
        pin_memory=True,
        timeout=7.0,
        worker_init_fn=init,
        generator=generator,
        prefetch_factor=3,
        persistent_workers=True,
    )
    new = shard_dataloader(loader, num_replicas=2, rank=1)
    assert isinstance(new.sampler, ShardedSampler)
    for name in ("num_workers", "collate_fn", "pin_memory", "timeout", "worker_init_fn"):
        assert getattr(new, name) == getattr(loader, name), name
    assert new.generator is generator
    assert (new.prefetch_factor, new.persistent_workers) == (3, True)


@pytest.mark.parametrize(
    "loader",
    [
        DataLoader(Stream(), batch_size=2),
        DataLoader(_dataset(), sampler=DistributedSampler(_dataset(), num_replicas=2, rank=0)),
        DataLoader(_dataset(), sampler=ShardedSampler(range(12), 2, 0)),
        DataLoader(_dataset(), batch_sampler=ShardedBatchSampler(BUCKETS, 2, 0)),
    ],
    ids=["iterable-dataset", "distributed-sampler", "sharded-sampler", "sharded-batch-sampler"],
)
def test_loaders_that_need_nothing_are_left_alone(loader: DataLoader[Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert shard_dataloader(loader, num_replicas=2, rank=0) is loader


def test_nothing_changes_without_distributed_sampler_or_on_one_process() -> None:
    loader = DataLoader(_dataset(), batch_sampler=EndlessBatches())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert shard_dataloader(loader, 2, 0, use_distributed_sampler=False) is loader
        assert shard_dataloader(loader, 1, 0) is loader


@pytest.mark.parametrize(
    ("loader", "kind"),
    [
        (DataLoader(_dataset(4), sampler=Endless()), "its sampler (Endless)"),
        (DataLoader(_dataset(4), batch_sampler=EndlessBatches()), "batch sampler (EndlessBatches)"),
    ],
    ids=["sampler", "batch-sampler"],
)
def test_a_sampler_without_length_is_left_alone_with_a_warning(
    loader: DataLoader[Any], kind: str
) -> None:
    with pytest.warns(UserWarning, match=r"left this DataLoader as it is") as record:
        assert shard_dataloader(loader, num_replicas=2, rank=0) is loader
    message = str(record[0].message)
    assert kind in message
    assert "has no __len__" in message
    assert "use_distributed_sampler=False" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning per run: rank 0's
        assert shard_dataloader(loader, num_replicas=2, rank=1) is loader


class NamedLoader(DataLoader[Any]):
    """A subclass with an argument of its own that it keeps under the same name."""

    def __init__(self, dataset: Any, name: str, **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.name = name


class ForgetfulLoader(DataLoader[Any]):
    """A subclass with an argument of its own that it does not keep."""

    def __init__(self, dataset: Any, scale: float, **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.factor = scale


def test_a_loader_subclass_is_re_created_with_its_own_arguments() -> None:
    loader = NamedLoader(_dataset(), "train", batch_size=2, sampler=EpochShuffle(12))
    new = shard_dataloader(loader, num_replicas=2, rank=0)
    assert type(new) is NamedLoader
    assert new.name == "train"
    assert isinstance(new.sampler, ShardedSampler)


def test_a_loader_subclass_that_cannot_be_re_created_raises_a_clear_error() -> None:
    loader = ForgetfulLoader(_dataset(), 2.0, batch_size=2, shuffle=True)
    with pytest.raises(TypeError) as error:
        shard_dataloader(loader, num_replicas=2, rank=0)
    message = str(error.value)
    assert "ForgetfulLoader" in message
    assert "'scale'" in message
    assert "use_distributed_sampler=False" in message


def test_the_ddp_strategy_delegates_to_shard_dataloader() -> None:
    strategy = DDPStrategy()
    environment = FabEnvironment()
    environment.set_world_size(2)
    environment.set_global_rank(1)
    strategy.cluster_environment = environment
    loader = DataLoader(_dataset(), batch_sampler=Buckets())
    new = strategy.process_dataloader(loader)
    assert isinstance(new.batch_sampler, ShardedBatchSampler)
    assert (new.batch_sampler.num_replicas, new.batch_sampler.rank) == (2, 1)
    assert strategy.process_dataloader(loader, use_distributed_sampler=False) is loader


class _PairsShareABatch(DDPStrategy):
    """A strategy whose processes take the data in pairs (as tensor-parallel ranks do)."""

    @property
    def distributed_sampler_kwargs(self) -> dict[str, Any] | None:
        return {"num_replicas": self.world_size // 2, "rank": self.global_rank // 2}


class _NoSharding(DDPStrategy):
    @property
    def distributed_sampler_kwargs(self) -> dict[str, Any] | None:
        return None


def test_the_data_is_sharded_as_the_strategys_distributed_sampler_kwargs_say() -> None:
    environment = FabEnvironment()
    environment.set_world_size(4)
    environment.set_global_rank(3)
    loader = DataLoader(_dataset(), batch_sampler=Buckets())
    paired = _PairsShareABatch()
    paired.cluster_environment = environment
    new = paired.process_dataloader(loader)
    assert isinstance(new.batch_sampler, ShardedBatchSampler)
    assert (new.batch_sampler.num_replicas, new.batch_sampler.rank) == (2, 1)
    whole = _NoSharding()
    whole.cluster_environment = environment
    assert whole.process_dataloader(loader) is loader


# -- two real processes --------------------------------------------------------------------------


def _run_two_epochs(fabric: Fabric) -> dict[str, Any]:
    """Runs in each process: a custom sampler, a weighted sampler and a custom batch sampler, each
    set up by Fabric and iterated for two epochs; every rank's view is sent to rank 0."""
    out: dict[str, Any] = {}

    user = EpochShuffle(11, seed=5)
    loader = fabric.setup_dataloaders(DataLoader(_dataset(11), batch_size=2, sampler=user))
    out["custom_len"] = len(loader)
    out["custom"] = [[int(i) for batch in loader for i in batch[0]] for _ in range(2)]
    out["custom_epochs"] = list(user.epochs)

    fabric.seed_everything(7)  # every rank draws the same weighted sample
    weighted = WeightedRandomSampler([0.0] * 4 + [1.0] * 8, num_samples=15)
    loader = fabric.setup_dataloaders(DataLoader(_dataset(), batch_size=4, sampler=weighted))
    out["weighted_len"] = len(loader)
    out["weighted"] = [int(i) for batch in loader for i in batch[0]]

    buckets = Buckets()
    loader = fabric.setup_dataloaders(
        DataLoader(_dataset(), batch_sampler=buckets, collate_fn=_collate_ints)
    )
    out["buckets_len"] = len(loader)
    out["buckets"] = [[[int(i) for i in batch] for batch in loader] for _ in range(2)]
    out["buckets_epochs"] = list(buckets.epochs)

    # every batch is a step of training: a rank with one batch more would wait here forever
    steps = sum(1 for _ in loader)
    most = fabric.all_reduce(torch.tensor(float(steps)), reduce_op="max")
    out["steps_agree"] = bool(most == steps)

    theirs = fabric.broadcast(out, src=1)
    return {"ranks": [out, theirs] if fabric.global_rank == 0 else [theirs, out]}


@pytest.mark.distributed
@pytest.mark.timeout(120)
@pytest.mark.usefixtures("no_orphan_processes")
def test_two_processes_share_custom_samplers_and_batch_samplers() -> None:
    fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp_spawn")
    first, second = fabric.launch(_run_two_epochs)["ranks"]

    # a custom sampler: every rank the same number of batches, the user's order dealt out
    user = EpochShuffle(11, seed=5)
    assert first["custom_len"] == second["custom_len"] == math.ceil(6 / 2)
    for epoch in (0, 1):
        mine, theirs = first["custom"][epoch], second["custom"][epoch]
        assert len(mine) == len(theirs) == 6
        expected = user.order(epoch)
        assert _interleave([mine, theirs]) == [*expected, expected[0]]
        assert set(mine[:5]).isdisjoint(theirs[:5])
        assert set(mine) | set(theirs) == set(range(11))
    assert first["custom"][0] != first["custom"][1]  # set_epoch reshuffled
    assert first["custom_epochs"] == second["custom_epochs"] == [0, 1]

    # a weighted sampler: its weights are kept (never a zero-weight index), 15 draws padded to 16
    assert first["weighted_len"] == second["weighted_len"] == 2
    mine, theirs = first["weighted"], second["weighted"]
    assert len(mine) == len(theirs) == 8
    assert all(i >= 4 for i in mine + theirs)
    drawn = _interleave([mine, theirs])
    assert drawn[15] == drawn[0]

    # a custom batch sampler: its batches whole, dealt out by batch, reversed in epoch 1
    assert first["buckets_len"] == second["buckets_len"] == 3
    assert first["buckets"][0] == [BUCKETS[0], BUCKETS[2], BUCKETS[4]]
    assert second["buckets"][0] == [BUCKETS[1], BUCKETS[3], BUCKETS[0]]
    assert first["buckets"][1] == [BUCKETS[4], BUCKETS[2], BUCKETS[0]]
    assert second["buckets"][1] == [BUCKETS[3], BUCKETS[1], BUCKETS[4]]
    assert first["buckets_epochs"] == second["buckets_epochs"] == [0, 1]
    assert first["steps_agree"]
    assert second["steps_agree"]
