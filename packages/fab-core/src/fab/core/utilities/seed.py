"""Seeding of python, numpy and torch, in the main process and in data-loader workers."""

from __future__ import annotations

import functools
import os
import random
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fab.core.utilities.rank_zero import (
    _rank_from_environment,
    log,
    rank_prefixed_message,
    rank_zero_only,
    rank_zero_warn,
)

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

_MAX_SEED = np.iinfo(np.uint32).max
_MIN_SEED = np.iinfo(np.uint32).min

#: Set by ``seed_everything`` so that later calls, subprocesses and ``reset_seed`` agree.
GLOBAL_SEED_VARIABLE = "FAB_GLOBAL_SEED"
#: "1" when ``seed_everything(workers=True)`` asked data-loader workers to be seeded.
SEED_WORKERS_VARIABLE = "FAB_SEED_WORKERS"
#: Lightning's names of the same two variables. ``seed_everything`` sets them beside fab's, so a
#: program (or a library) that reads them sees the seed; reading prefers fab's variable and falls
#: back to Lightning's, so a process started by Lightning-style tooling with ``PL_GLOBAL_SEED`` set
#: gets that seed.
LIGHTNING_GLOBAL_SEED_VARIABLE = "PL_GLOBAL_SEED"
LIGHTNING_SEED_WORKERS_VARIABLE = "PL_SEED_WORKERS"


def _read_variable(fab_name: str, lightning_name: str) -> tuple[str, str] | None:
    """(name, value) of the first of the two variables that is set and not blank."""
    for name in (fab_name, lightning_name):
        value = os.environ.get(name, "").strip()
        if value:
            return name, value
    return None


def global_seed() -> int | None:
    """The seed that :func:`seed_everything` last set in this process or in a parent process
    (read from ``FAB_GLOBAL_SEED``, else Lightning's ``PL_GLOBAL_SEED``), or None if none was set.

    For code that must follow the global seed on every rank whichever launcher started it (the
    ``DistributedSampler`` that ``setup_dataloaders`` inserts, for example). A value that is not
    an integer raises ``ValueError`` naming the variable.
    """
    found = _read_variable(GLOBAL_SEED_VARIABLE, LIGHTNING_GLOBAL_SEED_VARIABLE)
    if found is None:
        return None
    name, value = found
    try:
        return _as_seed(int(value))
    except ValueError as err:
        raise ValueError(
            f"{name}={value!r} is not an integer in {_MIN_SEED}..{_MAX_SEED}; unset it or set it "
            "to a seed in that range"
        ) from err


def seed_workers_requested() -> bool:
    """Whether the last :func:`seed_everything` asked for seeded data-loader workers
    (``workers=True``): ``FAB_SEED_WORKERS``, else Lightning's ``PL_SEED_WORKERS``, is "1"."""
    found = _read_variable(SEED_WORKERS_VARIABLE, LIGHTNING_SEED_WORKERS_VARIABLE)
    return found is not None and found[1] == "1"


def seed_everything(seed: int | None = None, workers: bool = False, verbose: bool = True) -> int:
    """Seed python's ``random``, numpy and torch (every device) with ``seed``, and return it.

    Without a seed, ``FAB_GLOBAL_SEED`` (set by an earlier call, so subprocesses agree) is used,
    else Lightning's ``PL_GLOBAL_SEED``, else 0; both variables are set to the seed. A seed that
    is not an ``int`` is converted with ``int()`` (numpy integers, "42"); it must lie in
    0..2**32-1. ``workers=True`` sets ``FAB_SEED_WORKERS=1`` (and ``PL_SEED_WORKERS=1``):
    ``Fabric.setup_dataloaders`` then gives every data loader without a ``worker_init_fn``
    :func:`seed_worker`, so each worker of each rank draws different, reproducible random
    numbers.
    """
    if seed is None:
        seed = global_seed()
        if seed is None:
            seed = 0
            if verbose:
                rank_zero_warn(
                    f"no seed given and neither {GLOBAL_SEED_VARIABLE} nor "
                    f"{LIGHTNING_GLOBAL_SEED_VARIABLE} is set; using 0"
                )
    seed = _as_seed(seed)
    if verbose:
        log.info(rank_prefixed_message(f"Seed set to {seed}", _rank_from_environment()))
    for name in (GLOBAL_SEED_VARIABLE, LIGHTNING_GLOBAL_SEED_VARIABLE):
        os.environ[name] = str(seed)
    for name in (SEED_WORKERS_VARIABLE, LIGHTNING_SEED_WORKERS_VARIABLE):
        os.environ[name] = "1" if workers else "0"
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds every device's generator too
    return seed


def _as_seed(seed: object) -> int:
    if isinstance(seed, bool):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    value: int
    if isinstance(seed, int):
        value = seed
    else:
        try:
            value = int(seed)  # type: ignore[call-overload]
        except (TypeError, ValueError) as err:
            raise type(err)(f"seed must be an integer, got {seed!r}") from err
        if isinstance(seed, float) and value != seed:
            raise ValueError(f"seed must be an integer, got {seed!r}")
    if not _MIN_SEED <= value <= _MAX_SEED:
        raise ValueError(f"seed {value} is out of range; accepted: {_MIN_SEED}..{_MAX_SEED}")
    return int(value)


def reset_seed() -> None:
    """Seed everything again with the seed of the last ``seed_everything`` call.

    Reads ``FAB_GLOBAL_SEED`` and ``FAB_SEED_WORKERS`` (else Lightning's ``PL_GLOBAL_SEED`` and
    ``PL_SEED_WORKERS``), so it also works in a process started after that call (a spawned worker,
    a launched rank). Does nothing if no seed was ever set.
    """
    seed = global_seed()
    if seed is None:
        return
    seed_everything(seed, workers=seed_workers_requested(), verbose=False)


def seed_worker(worker_id: int, rank: int | None = None) -> None:
    """Seed python, numpy and torch in a data-loader worker (Lightning's
    ``pl_worker_init_function``).

    Use it as ``DataLoader(..., worker_init_fn=seed_worker)``, or let ``Fabric.setup_dataloaders``
    add it after ``seed_everything(workers=True)``. The three seeds are derived, independently of
    each other, from the worker's base seed (which torch draws from the main process's generator,
    so it follows the global seed and changes each epoch), the global ``rank`` (default:
    ``rank_zero_only.rank``) and ``worker_id``. So the same global seed gives the same numbers on
    every run, while workers, ranks and epochs all draw different ones.
    """
    if rank is None:
        rank = int(rank_zero_only.rank)  # type: ignore[attr-defined]
    # torch seeds worker ``worker_id`` with ``base_seed + worker_id``; take the base seed back so
    # that two workers do not share entropy.
    base_seed = (torch.initial_seed() - worker_id) % 2**64
    sequence = np.random.SeedSequence(base_seed, spawn_key=(rank, worker_id))
    torch_sequence, python_sequence, numpy_sequence = sequence.spawn(3)
    torch.manual_seed(int(torch_sequence.generate_state(1, dtype=np.uint64)[0]))
    high, low = (int(x) for x in python_sequence.generate_state(2, dtype=np.uint64))
    random.seed((high << 64) | low)
    np.random.seed(numpy_sequence.generate_state(4))


#: Lightning's name of :func:`seed_worker` (``lightning.fabric.utilities.seed``).
pl_worker_init_function = seed_worker


def add_worker_init_fn(dataloader: DataLoader[Any], rank: int) -> bool:
    """Give ``dataloader`` ``seed_worker`` (for ``rank``) as its ``worker_init_fn``, if
    ``seed_everything(workers=True)`` asked for it and the loader has none; return whether it did.

    For ``Fabric.setup_dataloaders``: call it on the loader that will be iterated (after any
    re-creation for a distributed sampler). The function is a ``functools.partial`` of a module
    function, so loaders whose workers are spawned can pickle it.
    """
    if not seed_workers_requested() or dataloader.worker_init_fn is not None:
        return False
    dataloader.worker_init_fn = functools.partial(seed_worker, rank=rank)
    return True
